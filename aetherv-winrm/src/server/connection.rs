//! Sans-IO: the security context of one server-side connection.
//!
//! [`ConnectionCore::inbound`] takes an HTTP request and either answers it (handshake legs,
//! refusals) or hands back the plaintext SOAP envelope with the authenticated user;
//! [`ConnectionCore::outbound`] wraps the answer envelope (sealing it when the request was
//! sealed). Randomness and time come in through [`AcceptorInputs`].

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;

use crate::auth::SOAP_CONTENT_TYPE;
use crate::channel_bindings::ChannelBindings;
use crate::framing;
use crate::http::{HttpRequest, HttpResponse};
use crate::ntlm::{AcceptorIdentity, AcceptorInputs, NtlmAcceptor, NtlmSession};
use crate::secret::Secret;

/// The accepted users.
#[derive(Debug, Clone, Default)]
pub(crate) struct Users(Vec<(String, Secret)>);

/// An authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Principal {
    /// The name as configured.
    pub name: String,
    /// The bare name in lower case: what shells are owned by.
    pub key: String,
}

/// `user` of `DOMAIN\user` or `user@domain`.
fn bare(name: &str) -> &str {
    let name = name.rsplit_once('\\').map_or(name, |(_, user)| user);
    name.split_once('@').map_or(name, |(user, _)| user).trim()
}

fn key_of(name: &str) -> String {
    bare(name).to_lowercase()
}

impl Users {
    pub fn new(users: Vec<(String, Secret)>) -> Self {
        Self(users)
    }

    /// The configured user `name` designates (any spelling, case-insensitive).
    fn find(&self, name: &str) -> Option<(Principal, &Secret)> {
        let key = key_of(name);
        if key.is_empty() {
            return None;
        }
        self.0
            .iter()
            .find(|(configured, _)| key_of(configured) == key)
            .map(|(configured, password)| {
                (
                    Principal {
                        name: configured.clone(),
                        key: key.clone(),
                    },
                    password,
                )
            })
    }
}

/// Compares two secrets without stopping at the first difference.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(!x));
    }
    diff == 0
}

enum AuthState {
    /// Nothing established.
    Anonymous,
    /// NEGOTIATE answered; waiting for AUTHENTICATE under `scheme`.
    Challenged(Box<NtlmAcceptor>),
    /// NTLM authenticated the connection.
    Ntlm {
        principal: Principal,
        session: Box<NtlmSession>,
    },
    /// A Kerberos/SPNEGO exchange needs another client token.
    #[cfg(feature = "kerberos")]
    KerberosAccepting(Box<crate::kerberos::KerberosAcceptor>),
    /// Kerberos authenticated the connection.
    #[cfg(feature = "kerberos")]
    Kerberos {
        principal: Principal,
        session: Box<crate::kerberos::GssSession>,
    },
}

/// A SOAP envelope to dispatch.
#[derive(Debug)]
pub(crate) struct SoapRequest {
    /// Who sent it.
    pub principal: Principal,
    /// The plaintext envelope.
    pub xml: Bytes,
    /// It arrived sealed (so the answer must be sealed).
    pub sealed: bool,
}

/// What to do with a request.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// Answer right away.
    Respond {
        /// The answer.
        response: HttpResponse,
        /// The request was an NTLM NEGOTIATE (a handshake started).
        negotiate: bool,
    },
    /// Dispatch the envelope.
    Soap(SoapRequest),
}

/// The security context of one connection.
pub(crate) struct ConnectionCore {
    identity: AcceptorIdentity,
    tls: bool,
    allow_unencrypted: bool,
    state: AuthState,
    /// The TLS channel's bindings (HTTPS only) and whether clients must send them.
    channel_bindings: Option<ChannelBindings>,
    require_channel_bindings: bool,
    /// Accept Kerberos (keytab of the environment).
    #[cfg(feature = "kerberos")]
    kerberos: bool,
    /// The acceptor's final (mutual-authentication) token, sent with the next response.
    #[cfg(feature = "kerberos")]
    pending_token: Option<String>,
}

impl std::fmt::Debug for ConnectionCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            AuthState::Anonymous => "anonymous",
            AuthState::Challenged(_) => "challenged",
            AuthState::Ntlm { .. } => "authenticated",
            #[cfg(feature = "kerberos")]
            AuthState::KerberosAccepting(_) => "kerberos accepting",
            #[cfg(feature = "kerberos")]
            AuthState::Kerberos { .. } => "kerberos authenticated",
        };
        f.debug_struct("ConnectionCore")
            .field("tls", &self.tls)
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

/// The NTLM message type of a raw NTLMSSP token.
fn ntlm_message_type(token: &[u8]) -> Option<u32> {
    let rest = token.strip_prefix(b"NTLMSSP\0")?;
    let kind: [u8; 4] = rest.get(..4)?.try_into().ok()?;
    Some(u32::from_le_bytes(kind))
}

fn status(status: u16) -> HttpResponse {
    HttpResponse {
        status,
        ..HttpResponse::default()
    }
}

impl ConnectionCore {
    pub fn new(identity: AcceptorIdentity, tls: bool, allow_unencrypted: bool) -> Self {
        Self {
            identity,
            tls,
            allow_unencrypted,
            state: AuthState::Anonymous,
            channel_bindings: None,
            require_channel_bindings: false,
            #[cfg(feature = "kerberos")]
            kerberos: false,
            #[cfg(feature = "kerberos")]
            pending_token: None,
        }
    }

    /// Checks the clients' channel bindings against `bindings` (those of this connection's
    /// TLS channel; `None` over plain HTTP); `required` refuses clients that send none.
    pub fn with_channel_bindings(
        mut self,
        bindings: Option<ChannelBindings>,
        required: bool,
    ) -> Self {
        self.channel_bindings = bindings;
        self.require_channel_bindings = required;
        self
    }

    /// Accepts Kerberos (`Kerberos` and `Negotiate` schemes) with the acceptor keytab of the
    /// environment.
    #[cfg(feature = "kerberos")]
    pub fn with_kerberos(mut self, on: bool) -> Self {
        self.kerberos = on;
        self
    }

    /// Whether NTLM authenticated this connection.
    #[cfg(test)]
    pub fn is_authenticated(&self) -> bool {
        matches!(self.state, AuthState::Ntlm { .. })
    }

    /// `401` with the schemes on offer; forgets any security context.
    fn refuse(&mut self) -> Inbound {
        self.state = AuthState::Anonymous;
        let mut offers = vec!["Negotiate".to_owned(), "NTLM".to_owned()];
        #[cfg(feature = "kerberos")]
        if self.kerberos {
            offers.insert(1, "Kerberos".to_owned());
            self.pending_token = None;
        }
        if self.tls {
            offers.push("Basic realm=\"WSMAN\"".to_owned());
        }
        Inbound::Respond {
            response: HttpResponse {
                status: 401,
                www_authenticate: offers,
                content_type: None,
                body: Bytes::new(),
            },
            negotiate: false,
        }
    }

    /// Authenticates and unseals one request. `inputs` is called for a NEGOTIATE only.
    pub fn inbound(
        &mut self,
        request: &HttpRequest,
        users: &Users,
        inputs: impl FnOnce() -> AcceptorInputs,
    ) -> Inbound {
        let principal = match request.authorization.as_ref().map(Secret::expose) {
            Some(header) => {
                let header = header.trim();
                let (scheme, token) = header
                    .split_once(char::is_whitespace)
                    .unwrap_or((header, ""));
                let token = token.trim();
                #[cfg(feature = "kerberos")]
                if self.kerberos && self.is_kerberos_token(scheme, token) {
                    return match self.kerberos_leg(scheme, token, request.body.is_empty()) {
                        Ok(principal) => self.body(request, principal),
                        Err(answer) => answer,
                    };
                }
                if scheme.eq_ignore_ascii_case("Negotiate") || scheme.eq_ignore_ascii_case("NTLM") {
                    let scheme = if scheme.eq_ignore_ascii_case("NTLM") {
                        "NTLM"
                    } else {
                        "Negotiate"
                    };
                    match self.ntlm_leg(scheme, token, request.body.is_empty(), users, inputs) {
                        Ok(principal) => principal,
                        Err(answer) => return answer,
                    }
                } else if scheme.eq_ignore_ascii_case("Basic") {
                    match self.basic(token, users) {
                        Some(principal) => principal,
                        None => return self.refuse(),
                    }
                } else {
                    return self.refuse();
                }
            }
            None => match &self.state {
                AuthState::Ntlm { principal, .. } => principal.clone(),
                #[cfg(feature = "kerberos")]
                AuthState::Kerberos { principal, .. } => principal.clone(),
                _ => return self.refuse(),
            },
        };
        self.body(request, principal)
    }

    /// Handles a `Negotiate`/`NTLM` header. `Ok` means the connection is authenticated and the
    /// body is to be processed; `Err` is the answer.
    fn ntlm_leg(
        &mut self,
        scheme: &str,
        token: &str,
        empty_body: bool,
        users: &Users,
        inputs: impl FnOnce() -> AcceptorInputs,
    ) -> Result<Principal, Inbound> {
        let Ok(token) = STANDARD.decode(token) else {
            return Err(self.refuse());
        };
        match ntlm_message_type(&token) {
            Some(1) => {
                let mut acceptor = NtlmAcceptor::new(self.identity.clone(), inputs())
                    .with_channel_bindings(
                        self.channel_bindings
                            .as_ref()
                            .map(ChannelBindings::ntlm_hash),
                        self.require_channel_bindings,
                    );
                match acceptor.challenge_message(&token) {
                    Ok(challenge) => {
                        self.state = AuthState::Challenged(Box::new(acceptor));
                        Err(Inbound::Respond {
                            response: HttpResponse {
                                status: 401,
                                www_authenticate: vec![format!(
                                    "{scheme} {}",
                                    STANDARD.encode(challenge)
                                )],
                                content_type: None,
                                body: Bytes::new(),
                            },
                            negotiate: true,
                        })
                    }
                    Err(_) => match self.refuse() {
                        Inbound::Respond { response, .. } => Err(Inbound::Respond {
                            response,
                            negotiate: true,
                        }),
                        other => Err(other),
                    },
                }
            }
            Some(3) => {
                let AuthState::Challenged(acceptor) =
                    std::mem::replace(&mut self.state, AuthState::Anonymous)
                else {
                    return Err(self.refuse());
                };
                let lookup = |_domain: &str, username: &str| {
                    users.find(username).map(|(_, password)| password.clone())
                };
                let (user, session) = match acceptor.accept(&token, &lookup) {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        tracing::debug!(error = %err, "NTLM authentication refused");
                        return Err(self.refuse());
                    }
                };
                let Some((principal, _)) = users.find(&user.username) else {
                    return Err(self.refuse());
                };
                self.state = AuthState::Ntlm {
                    principal: principal.clone(),
                    session: Box::new(session),
                };
                if empty_body {
                    Err(Inbound::Respond {
                        response: status(200),
                        negotiate: false,
                    })
                } else {
                    Ok(principal)
                }
            }
            // Not raw NTLMSSP (SPNEGO, Kerberos) or an unexpected message type.
            _ => Err(self.refuse()),
        }
    }

    /// Checks Basic credentials (TLS only; nothing changes on the connection).
    fn basic(&self, token: &str, users: &Users) -> Option<Principal> {
        if !self.tls {
            return None;
        }
        let decoded = Secret::new(String::from_utf8(STANDARD.decode(token).ok()?).ok()?);
        let (user, password) = decoded.expose().split_once(':')?;
        let (principal, expected) = users.find(user)?;
        same_secret(expected.expose().as_bytes(), password.as_bytes()).then_some(principal)
    }

    /// Unseals (or accepts the plaintext of) an authenticated request.
    fn body(&mut self, request: &HttpRequest, principal: Principal) -> Inbound {
        let encrypted = request
            .content_type
            .as_deref()
            .is_some_and(framing::is_encrypted);
        #[cfg(feature = "kerberos")]
        if let AuthState::Kerberos { .. } = &self.state {
            return self.kerberos_body(request, principal);
        }
        if !encrypted {
            let ntlm_over_http = !self.tls && matches!(self.state, AuthState::Ntlm { .. });
            if ntlm_over_http && !self.allow_unencrypted {
                // Windows refuses unencrypted messages (AllowUnencrypted=false) with 401.
                return self.refuse();
            }
            return Inbound::Soap(SoapRequest {
                principal,
                xml: request.body.clone(),
                sealed: false,
            });
        }
        let AuthState::Ntlm { session, .. } = &mut self.state else {
            return self.refuse();
        };
        let Ok(body) = framing::decode(&request.body) else {
            return Inbound::Respond {
                response: status(400),
                negotiate: false,
            };
        };
        let mut data = body.sealed.to_vec();
        if session.unseal_in_place(body.signature, &mut data).is_err() {
            // The sequence numbers or keys no longer agree: the context is unusable.
            self.state = AuthState::Anonymous;
            return Inbound::Respond {
                response: status(400),
                negotiate: false,
            };
        }
        Inbound::Soap(SoapRequest {
            principal,
            xml: Bytes::from(data),
            sealed: true,
        })
    }

    /// Wraps an answer envelope, sealing it when the request was sealed.
    pub fn outbound(&mut self, status: u16, xml: String, sealed: bool) -> HttpResponse {
        #[cfg(feature = "kerberos")]
        if let Some(response) = self.kerberos_outbound(status, &xml, sealed) {
            return response;
        }
        if sealed && let AuthState::Ntlm { session, .. } = &mut self.state {
            let mut data = xml.into_bytes();
            let length = data.len();
            let signature = session.seal_in_place(&mut data);
            return HttpResponse {
                status,
                www_authenticate: Vec::new(),
                content_type: Some(framing::content_type()),
                body: Bytes::from(framing::encode(&signature, &data, length)),
            };
        }
        HttpResponse {
            status,
            www_authenticate: Vec::new(),
            content_type: Some(SOAP_CONTENT_TYPE.to_owned()),
            body: Bytes::from(xml),
        }
    }
}

#[cfg(feature = "kerberos")]
impl ConnectionCore {
    /// Whether an `Authorization` header carries Kerberos (or SPNEGO) rather than raw NTLM.
    fn is_kerberos_token(&self, scheme: &str, token: &str) -> bool {
        if scheme.eq_ignore_ascii_case("Kerberos") {
            return true;
        }
        if !scheme.eq_ignore_ascii_case("Negotiate") {
            return false;
        }
        if matches!(self.state, AuthState::KerberosAccepting(_)) {
            return true;
        }
        STANDARD
            .decode(token)
            .is_ok_and(|t| !t.is_empty() && ntlm_message_type(&t).is_none())
    }

    /// One Kerberos/SPNEGO leg. `Ok` means authenticated with a body to process.
    fn kerberos_leg(
        &mut self,
        scheme: &str,
        token: &str,
        empty_body: bool,
    ) -> Result<Principal, Inbound> {
        use crate::kerberos::{Accepted, KerberosAcceptor};
        let scheme = if scheme.eq_ignore_ascii_case("Kerberos") {
            "Kerberos"
        } else {
            "Negotiate"
        };
        let Ok(token) = STANDARD.decode(token) else {
            return Err(self.refuse());
        };
        let mut acceptor = match std::mem::replace(&mut self.state, AuthState::Anonymous) {
            AuthState::KerberosAccepting(acceptor) => acceptor,
            _ => Box::new(KerberosAcceptor::new().with_channel_bindings(
                self.channel_bindings.as_ref(),
                self.require_channel_bindings,
            )),
        };
        match acceptor.step(&token) {
            Ok(Accepted::Continue(out)) => {
                self.state = AuthState::KerberosAccepting(acceptor);
                Err(Inbound::Respond {
                    response: HttpResponse {
                        status: 401,
                        www_authenticate: vec![format!("{scheme} {}", STANDARD.encode(out))],
                        content_type: None,
                        body: Bytes::new(),
                    },
                    negotiate: true,
                })
            }
            Ok(Accepted::Done {
                principal,
                session,
                token,
            }) => {
                let principal = Principal {
                    key: key_of(&principal),
                    name: principal,
                };
                self.state = AuthState::Kerberos {
                    principal: principal.clone(),
                    session: Box::new(session),
                };
                let header = token.map(|t| format!("{scheme} {}", STANDARD.encode(t)));
                if empty_body {
                    Err(Inbound::Respond {
                        response: HttpResponse {
                            status: 200,
                            www_authenticate: header.into_iter().collect(),
                            content_type: None,
                            body: Bytes::new(),
                        },
                        negotiate: true,
                    })
                } else {
                    self.pending_token = header;
                    Ok(principal)
                }
            }
            Err(err) => {
                tracing::debug!(error = %err, "kerberos token refused");
                match self.refuse() {
                    Inbound::Respond { response, .. } => Err(Inbound::Respond {
                        response,
                        negotiate: true,
                    }),
                    other => Err(other),
                }
            }
        }
    }

    /// Unwraps (or accepts the plaintext of) a request on a Kerberos connection.
    fn kerberos_body(&mut self, request: &HttpRequest, principal: Principal) -> Inbound {
        // Windows refuses messages on a context whose ticket has expired: the client must
        // authenticate the connection again.
        if let AuthState::Kerberos { session, .. } = &self.state
            && session.is_expired()
        {
            return self.refuse();
        }
        let protocol = request
            .content_type
            .as_deref()
            .and_then(framing::encrypted_protocol);
        let Some(protocol) = protocol else {
            if !self.tls && !self.allow_unencrypted {
                return self.refuse();
            }
            return Inbound::Soap(SoapRequest {
                principal,
                xml: request.body.clone(),
                sealed: false,
            });
        };
        let AuthState::Kerberos { session, .. } = &mut self.state else {
            return self.refuse();
        };
        let bad_request = Inbound::Respond {
            response: status(400),
            negotiate: false,
        };
        let Ok(body) = framing::decode_gss(&request.body) else {
            return bad_request;
        };
        match session.unwrap(body.signature, body.sealed) {
            Ok(data) if data.len() == body.original_length => {
                session.set_protocol(protocol);
                Inbound::Soap(SoapRequest {
                    principal,
                    xml: Bytes::from(data),
                    sealed: true,
                })
            }
            _ => {
                self.state = AuthState::Anonymous;
                bad_request
            }
        }
    }

    /// The answer on a Kerberos connection (`None` for other connections).
    fn kerberos_outbound(&mut self, status: u16, xml: &str, sealed: bool) -> Option<HttpResponse> {
        let AuthState::Kerberos { session, .. } = &mut self.state else {
            return None;
        };
        let www_authenticate: Vec<String> = self.pending_token.take().into_iter().collect();
        if sealed {
            match session.wrap(xml.as_bytes()) {
                Ok(wrapped) => {
                    return Some(HttpResponse {
                        status,
                        www_authenticate,
                        content_type: Some(framing::content_type_for(session.protocol())),
                        body: Bytes::from(framing::encode_gss(
                            session.protocol(),
                            &wrapped.header,
                            &wrapped.sealed,
                            xml.len(),
                        )),
                    });
                }
                Err(err) => {
                    tracing::warn!(error = %err, "kerberos wrap failed");
                    self.state = AuthState::Anonymous;
                    return Some(HttpResponse {
                        status: 500,
                        ..HttpResponse::default()
                    });
                }
            }
        }
        Some(HttpResponse {
            status,
            www_authenticate,
            content_type: Some(SOAP_CONTENT_TYPE.to_owned()),
            body: Bytes::from(xml.to_owned()),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::auth::{Auth, ConnectionAuth};
    use crate::ntlm::AuthenticateInputs;

    fn identity() -> AcceptorIdentity {
        AcceptorIdentity {
            netbios_domain: "LAB".into(),
            netbios_computer: "HV01".into(),
            dns_domain: "lab.example".into(),
            dns_computer: "hv01.lab.example".into(),
        }
    }

    fn inputs() -> AcceptorInputs {
        AcceptorInputs {
            server_challenge: [7; 8],
            timestamp: 133_000_000_000_000_000,
        }
    }

    fn users() -> Users {
        Users::new(vec![("Admin".into(), Secret::new("S3cret!"))])
    }

    fn respond(inbound: Inbound) -> (HttpResponse, bool) {
        match inbound {
            Inbound::Respond {
                response,
                negotiate,
            } => (response, negotiate),
            Inbound::Soap(s) => panic!("expected a response, got {s:?}"),
        }
    }

    /// Runs the client's handshake against the core; returns the client context.
    fn handshake(
        core: &mut ConnectionCore,
        user: &str,
        password: &str,
        seal: bool,
    ) -> (ConnectionAuth, u16) {
        let mut client = ConnectionAuth::new(
            Auth::Ntlm {
                username: user.into(),
                password: Secret::new(password),
            },
            seal,
        );
        let negotiate = client.negotiate_request().unwrap();
        let (challenge, started) = respond(core.inbound(&negotiate, &users(), inputs));
        assert!(started);
        assert_eq!(challenge.status, 401);
        let authenticate = client
            .authenticate_request(
                &challenge,
                &AuthenticateInputs {
                    client_challenge: [9; 8],
                    exported_session_key: [5; 16],
                    timestamp: 0,
                },
            )
            .unwrap();
        let (done, started) = respond(core.inbound(&authenticate, &users(), inputs));
        assert!(!started);
        let _ = client.complete(&done);
        (client, done.status)
    }

    #[test]
    fn ntlm_handshake_then_sealed_round_trip() {
        let mut core = ConnectionCore::new(identity(), false, false);
        let (mut client, status) = handshake(&mut core, "lab\\ADMIN", "S3cret!", true);
        assert_eq!(status, 200);
        assert!(core.is_authenticated());
        for i in 0..3 {
            let request = client
                .wrap(format!("<hello n='{i}'/>").into_bytes())
                .unwrap();
            let Inbound::Soap(soap) = core.inbound(&request, &users(), || unreachable!()) else {
                panic!("expected soap");
            };
            assert!(soap.sealed);
            assert_eq!(soap.principal.name, "Admin");
            assert_eq!(soap.principal.key, "admin");
            assert_eq!(&soap.xml[..], format!("<hello n='{i}'/>").as_bytes());
            let response = core.outbound(200, format!("<answer n='{i}'/>"), true);
            assert_eq!(
                client.unwrap(&response).unwrap(),
                format!("<answer n='{i}'/>").into_bytes()
            );
        }
    }

    #[test]
    fn wrong_password_and_unknown_users_are_refused() {
        for (user, password) in [("admin", "nope"), ("someone", "S3cret!")] {
            let mut core = ConnectionCore::new(identity(), false, false);
            let (_, status) = handshake(&mut core, user, password, true);
            assert_eq!(status, 401);
            assert!(!core.is_authenticated());
        }
    }

    #[test]
    fn plaintext_after_ntlm_over_http_is_refused_unless_allowed() {
        for allow in [false, true] {
            let mut core = ConnectionCore::new(identity(), false, allow);
            let (mut client, _) = handshake(&mut core, "admin@lab.example", "S3cret!", false);
            let request = client.wrap(b"<plain/>".to_vec()).unwrap();
            match core.inbound(&request, &users(), || unreachable!()) {
                Inbound::Soap(soap) => {
                    assert!(allow);
                    assert!(!soap.sealed);
                }
                Inbound::Respond { response, .. } => {
                    assert!(!allow);
                    assert_eq!(response.status, 401);
                    assert_eq!(response.www_authenticate, ["Negotiate", "NTLM"]);
                    assert!(!core.is_authenticated());
                }
            }
        }
    }

    #[test]
    fn basic_only_over_tls() {
        let header = |creds: &str| HttpRequest {
            authorization: Some(Secret::new(format!("Basic {}", STANDARD.encode(creds)))),
            content_type: Some(SOAP_CONTENT_TYPE.into()),
            body: Bytes::from_static(b"<x/>"),
        };
        let mut http = ConnectionCore::new(identity(), false, false);
        let (r, _) = respond(http.inbound(&header("admin:S3cret!"), &users(), inputs));
        assert_eq!(r.status, 401);
        assert!(!r.www_authenticate.iter().any(|h| h.starts_with("Basic")));

        let mut tls = ConnectionCore::new(identity(), true, false);
        let Inbound::Soap(soap) = tls.inbound(&header("LAB\\admin:S3cret!"), &users(), inputs)
        else {
            panic!("basic over tls refused");
        };
        assert_eq!(soap.principal.name, "Admin");
        let (r, _) = respond(tls.inbound(&header("admin:S3cret"), &users(), inputs));
        assert_eq!(r.status, 401);
        assert!(
            r.www_authenticate
                .contains(&"Basic realm=\"WSMAN\"".to_owned())
        );
        // Basic authenticates one request, not the connection.
        let mut bare = header("admin:S3cret!");
        bare.authorization = None;
        let (r, _) = respond(tls.inbound(&bare, &users(), inputs));
        assert_eq!(r.status, 401);
    }

    #[test]
    fn garbage_tokens_and_sealed_bodies_without_a_session_get_401() {
        let mut core = ConnectionCore::new(identity(), false, false);
        for auth in [
            "Negotiate !!!",
            "Negotiate YIIBhwYGKwYBBQUCoIIBezCCAXeg",
            "Kerberos abc",
            "NTLM",
        ] {
            let request = HttpRequest {
                authorization: Some(Secret::new(auth)),
                content_type: None,
                body: Bytes::new(),
            };
            let (r, negotiate) = respond(core.inbound(&request, &users(), inputs));
            assert_eq!(r.status, 401, "{auth}");
            assert!(!negotiate);
        }
        let sealed = HttpRequest {
            authorization: None,
            content_type: Some(framing::content_type()),
            body: Bytes::from(framing::encode(&[0; 16], b"xyz", 3)),
        };
        let (r, _) = respond(core.inbound(&sealed, &users(), inputs));
        assert_eq!(r.status, 401);
    }

    #[test]
    fn user_name_forms() {
        let users = Users::new(vec![("LAB\\Admin".into(), Secret::new("x"))]);
        for name in [
            "admin",
            "ADMIN",
            "lab\\admin",
            "admin@lab.example",
            "OTHER\\Admin",
        ] {
            assert_eq!(users.find(name).unwrap().0.key, "admin", "{name}");
        }
        assert!(users.find("administrator").is_none());
        assert!(users.find("").is_none());
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"ab"));
        assert!(!same_secret(b"", b"a"));
    }
}
