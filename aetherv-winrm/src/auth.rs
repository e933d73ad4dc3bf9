//! Per-connection authentication and message protection, sans-IO.
//!
//! [`ConnectionAuth`] holds what one HTTP connection knows about its security context. The
//! client asks it for the next request to send and hands it every response:
//!
//! - **Basic**: every request carries `Authorization: Basic …`; no handshake.
//! - **NTLM** (offered under the `Negotiate` or `NTLM` scheme): a two-request handshake with
//!   empty bodies (NEGOTIATE → 401 with CHALLENGE → AUTHENTICATE → 200) authenticates the
//!   connection; later requests carry no header. With sealing on, every SOAP body is sealed
//!   with the NTLM session and framed as `multipart/encrypted` (see [`crate::framing`]), and
//!   every response body is unsealed and its signature checked.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;

use crate::channel_bindings::ChannelBindings;
use crate::framing::{self, FramingError};
use crate::http::{HttpRequest, HttpResponse};
use crate::ntlm::{AuthenticateInputs, NtlmCredentials, NtlmError, NtlmInitiator, NtlmSession};
use crate::secret::Secret;

/// SOAP content type for unencrypted bodies.
pub const SOAP_CONTENT_TYPE: &str = "application/soap+xml;charset=UTF-8";

/// Credentials and method.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Auth {
    /// HTTP Basic (local accounts only on Windows; refused over plain HTTP unless allowed).
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: Secret,
    },
    /// NTLMv2, with message encryption when sealing is on.
    Ntlm {
        /// `user`, `DOMAIN\user` or `user@domain`.
        username: String,
        /// Password.
        password: Secret,
    },
    /// Kerberos (`Kerberos` or `Negotiate` scheme), with message encryption when sealing is on.
    #[cfg(feature = "kerberos")]
    Kerberos(crate::kerberos::KerberosAuth),
}

impl Auth {
    /// The user name (never the password), for error messages.
    pub fn username(&self) -> &str {
        match self {
            Auth::Basic { username, .. } | Auth::Ntlm { username, .. } => username,
            #[cfg(feature = "kerberos")]
            Auth::Kerberos(kerberos) => kerberos.principal_label(),
        }
    }

    /// Whether the method authenticates the connection with a handshake (NTLM, Kerberos).
    pub fn has_handshake(&self) -> bool {
        !matches!(self, Auth::Basic { .. })
    }
}

/// Why authentication or message protection failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The server refused the credentials.
    #[error("credentials refused")]
    Refused,
    /// The server's 401 offered no scheme this client can use.
    #[error("server offers no supported authentication scheme (offered: {offered})")]
    NoSupportedScheme {
        /// The schemes the server offered, comma separated.
        offered: String,
    },
    /// An NTLM message could not be produced, parsed or verified.
    #[error(transparent)]
    Ntlm(#[from] NtlmError),
    /// An encrypted body was malformed.
    #[error(transparent)]
    Framing(#[from] FramingError),
    /// The server answered in plaintext on a connection that must be encrypted.
    #[error("server answered in plaintext ({content_type}) on an encrypted connection")]
    Plaintext {
        /// The content type the server sent.
        content_type: String,
    },
    /// The server sent an encrypted body on a connection without an NTLM session.
    #[error("server sent an encrypted body but no NTLM session is established")]
    NoSession,
    /// A Kerberos step failed.
    #[cfg(feature = "kerberos")]
    #[error(transparent)]
    Kerberos(#[from] crate::kerberos::KerberosError),
    /// The client asked for a step that does not fit the current state.
    #[error("authentication step out of order: {0}")]
    OutOfOrder(&'static str),
}

enum State {
    Unauthenticated,
    Negotiating(Box<NtlmInitiator>),
    Established(Option<Box<NtlmSession>>),
    #[cfg(feature = "kerberos")]
    KerberosNegotiating(Box<crate::kerberos::KerberosInitiator>),
    #[cfg(feature = "kerberos")]
    KerberosEstablished(Option<Box<crate::kerberos::GssSession>>),
}

/// The security context of one connection.
pub struct ConnectionAuth {
    auth: Auth,
    seal: bool,
    state: State,
    channel_bindings: Option<ChannelBindings>,
    /// The Kerberos method while this connection uses its NTLM fallback.
    #[cfg(feature = "kerberos")]
    fallen_back: Option<Auth>,
}

impl std::fmt::Debug for ConnectionAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Unauthenticated => "unauthenticated",
            State::Negotiating(_) => "negotiating",
            State::Established(_) => "established",
            #[cfg(feature = "kerberos")]
            State::KerberosNegotiating(_) => "kerberos negotiating",
            #[cfg(feature = "kerberos")]
            State::KerberosEstablished(_) => "kerberos established",
        };
        f.debug_struct("ConnectionAuth")
            .field("user", &self.auth.username())
            .field("seal", &self.seal)
            .field("state", &state)
            .finish()
    }
}

fn find_token(response: &HttpResponse) -> Option<(&'static str, Vec<u8>)> {
    for value in &response.www_authenticate {
        // A header may list several challenges separated by commas.
        for part in value.split(',') {
            let part = part.trim();
            let (scheme, token) = part.split_once(' ').unwrap_or((part, ""));
            let scheme = if scheme.eq_ignore_ascii_case("Negotiate") {
                "Negotiate"
            } else if scheme.eq_ignore_ascii_case("NTLM") {
                "NTLM"
            } else {
                continue;
            };
            if let Ok(bytes) = STANDARD.decode(token.trim())
                && !bytes.is_empty()
            {
                return Some((scheme, bytes));
            }
        }
    }
    None
}

fn offered_schemes(response: &HttpResponse) -> String {
    let schemes: Vec<&str> = response
        .www_authenticate
        .iter()
        .flat_map(|v| v.split(','))
        .filter_map(|p| p.split_whitespace().next())
        .collect();
    if schemes.is_empty() {
        "none".to_owned()
    } else {
        schemes.join(", ")
    }
}

impl ConnectionAuth {
    /// A fresh context. `seal` turns on NTLM message encryption (ignored for Basic).
    pub fn new(auth: Auth, seal: bool) -> Self {
        let seal = seal && auth.has_handshake();
        Self {
            auth,
            seal,
            state: State::Unauthenticated,
            channel_bindings: None,
            #[cfg(feature = "kerberos")]
            fallen_back: None,
        }
    }

    /// The TLS channel bindings of the connection (HTTPS), sent with the next handshake:
    /// `MsvAvChannelBindings` for NTLM, GSSAPI channel bindings for Kerberos.
    pub fn set_channel_bindings(&mut self, bindings: Option<ChannelBindings>) {
        self.channel_bindings = bindings;
    }

    /// Whether bodies on this connection are sealed.
    pub fn seals(&self) -> bool {
        self.seal
    }

    /// Whether the connection must run the NTLM handshake before sending SOAP.
    pub fn needs_handshake(&self) -> bool {
        match self.auth {
            Auth::Basic { .. } => false,
            #[cfg(feature = "kerberos")]
            Auth::Kerberos(_) => !matches!(self.state, State::KerberosEstablished(_)),
            _ => !matches!(self.state, State::Established(_)),
        }
    }

    /// Forgets the security context (after the server dropped the connection's authentication).
    pub fn reset(&mut self) {
        self.state = State::Unauthenticated;
    }

    /// Before a new handshake: a connection that fell back to NTLM tries Kerberos again.
    pub fn restart(&mut self) {
        #[cfg(feature = "kerberos")]
        if let Some(kerberos) = self.fallen_back.take() {
            self.auth = kerberos;
        }
        self.state = State::Unauthenticated;
    }

    /// Switches this connection to NTLM when its Kerberos method allows the fallback
    /// ([`crate::kerberos::KerberosAuth::ntlm_fallback`], `Negotiate` scheme only); returns
    /// whether it did.
    #[cfg(feature = "kerberos")]
    pub fn fall_back_to_ntlm(&mut self) -> bool {
        let Auth::Kerberos(kerberos) = &self.auth else {
            return false;
        };
        let Some((username, password)) = kerberos.ntlm_fallback.clone() else {
            return false;
        };
        if kerberos.scheme != crate::kerberos::KerberosScheme::Negotiate {
            return false;
        }
        let ntlm = Auth::Ntlm { username, password };
        self.fallen_back = Some(std::mem::replace(&mut self.auth, ntlm));
        self.state = State::Unauthenticated;
        true
    }

    /// Whether this connection uses the NTLM fallback of its Kerberos method.
    #[cfg(feature = "kerberos")]
    pub fn uses_ntlm_fallback(&self) -> bool {
        self.fallen_back.is_some()
    }

    /// The first handshake request: an empty POST with the NTLM NEGOTIATE token.
    pub fn negotiate_request(&mut self) -> Result<HttpRequest, AuthError> {
        let Auth::Ntlm { username, password } = &self.auth else {
            return Err(AuthError::OutOfOrder(
                "Basic authentication has no handshake",
            ));
        };
        let mut initiator =
            NtlmInitiator::new(NtlmCredentials::parse(username, password.clone()), None)
                .with_channel_bindings(self.channel_bindings.as_ref().map(|c| c.ntlm_hash()));
        let token = initiator.negotiate_message();
        self.state = State::Negotiating(Box::new(initiator));
        Ok(HttpRequest {
            authorization: Some(Secret::new(format!("Negotiate {}", STANDARD.encode(token)))),
            content_type: None,
            body: Bytes::new(),
        })
    }

    /// The second handshake request, answering the server's 401 CHALLENGE.
    pub fn authenticate_request(
        &mut self,
        challenge: &HttpResponse,
        inputs: &AuthenticateInputs,
    ) -> Result<HttpRequest, AuthError> {
        let State::Negotiating(_) = &self.state else {
            return Err(AuthError::OutOfOrder("no NEGOTIATE was sent"));
        };
        let Some((scheme, token)) = find_token(challenge) else {
            self.state = State::Unauthenticated;
            return Err(AuthError::NoSupportedScheme {
                offered: offered_schemes(challenge),
            });
        };
        let State::Negotiating(initiator) =
            std::mem::replace(&mut self.state, State::Unauthenticated)
        else {
            return Err(AuthError::OutOfOrder("no NEGOTIATE was sent"));
        };
        let (message, session) = initiator.authenticate_message(&token, inputs)?;
        self.state = State::Established(Some(Box::new(session)));
        // Established only provisionally: `complete` confirms or resets it.
        Ok(HttpRequest {
            authorization: Some(Secret::new(format!(
                "{scheme} {}",
                STANDARD.encode(message)
            ))),
            content_type: None,
            body: Bytes::new(),
        })
    }

    /// Checks the server's answer to AUTHENTICATE.
    pub fn complete(&mut self, response: &HttpResponse) -> Result<(), AuthError> {
        if response.status == 401 {
            self.state = State::Unauthenticated;
            return Err(AuthError::Refused);
        }
        if !self.seal
            && let State::Established(session) = &mut self.state
        {
            *session = None;
        }
        Ok(())
    }

    /// Whether the initial 401 offers Basic (for error messages).
    pub fn offers(response: &HttpResponse, scheme: &str) -> bool {
        response
            .www_authenticate
            .iter()
            .flat_map(|v| v.split(','))
            .filter_map(|p| p.split_whitespace().next())
            .any(|s| s.eq_ignore_ascii_case(scheme))
    }

    /// Wraps one SOAP envelope for sending on this connection.
    pub fn wrap(&mut self, soap: Vec<u8>) -> Result<HttpRequest, AuthError> {
        #[cfg(feature = "kerberos")]
        if let Auth::Kerberos(_) = &self.auth {
            return self.kerberos_wrap(soap);
        }
        match (&self.auth, &mut self.state) {
            (Auth::Basic { username, password }, _) => {
                let credentials = format!("{username}:{}", password.expose());
                Ok(HttpRequest {
                    authorization: Some(Secret::new(format!(
                        "Basic {}",
                        STANDARD.encode(credentials.as_bytes())
                    ))),
                    content_type: Some(SOAP_CONTENT_TYPE.to_owned()),
                    body: Bytes::from(soap),
                })
            }
            (Auth::Ntlm { .. }, State::Established(Some(session))) if self.seal => {
                let original_length = soap.len();
                let mut data = soap;
                let signature = session.seal_in_place(&mut data);
                Ok(HttpRequest {
                    authorization: None,
                    content_type: Some(framing::content_type()),
                    body: Bytes::from(framing::encode(&signature, &data, original_length)),
                })
            }
            (Auth::Ntlm { .. }, State::Established(_)) => Ok(HttpRequest {
                authorization: None,
                content_type: Some(SOAP_CONTENT_TYPE.to_owned()),
                body: Bytes::from(soap),
            }),
            _ => Err(AuthError::OutOfOrder("connection not authenticated")),
        }
    }

    /// Extracts the SOAP body of a response, unsealing it when it is encrypted.
    pub fn unwrap(&mut self, response: &HttpResponse) -> Result<Vec<u8>, AuthError> {
        let content_type = response.content_type.as_deref().unwrap_or("");
        #[cfg(feature = "kerberos")]
        if let Auth::Kerberos(_) = &self.auth {
            return self.kerberos_unwrap(response, content_type);
        }
        if framing::is_encrypted(content_type) {
            let State::Established(Some(session)) = &mut self.state else {
                return Err(AuthError::NoSession);
            };
            let body = framing::decode(&response.body)?;
            let mut data = body.sealed.to_vec();
            session.unseal_in_place(body.signature, &mut data)?;
            return Ok(data);
        }
        if self.seal && !response.body.is_empty() {
            return Err(AuthError::Plaintext {
                content_type: if content_type.is_empty() {
                    "no content type".to_owned()
                } else {
                    content_type.to_owned()
                },
            });
        }
        Ok(response.body.to_vec())
    }
}

#[cfg(feature = "kerberos")]
impl ConnectionAuth {
    /// The Kerberos token of a response under `scheme` (or `Negotiate`/`Kerberos`).
    fn kerberos_token(response: &HttpResponse) -> Option<Vec<u8>> {
        response
            .www_authenticate
            .iter()
            .flat_map(|v| v.split(','))
            .find_map(|part| {
                let (scheme, token) = part.trim().split_once(' ')?;
                let known = scheme.eq_ignore_ascii_case("Kerberos")
                    || scheme.eq_ignore_ascii_case("Negotiate");
                if !known {
                    return None;
                }
                STANDARD.decode(token.trim()).ok().filter(|t| !t.is_empty())
            })
    }

    /// The first Kerberos handshake request (an empty POST with the AP-REQ) to `host`.
    /// `fresh_credentials` acquires the client's tickets again first.
    pub fn kerberos_start(
        &mut self,
        host: &str,
        fresh_credentials: bool,
    ) -> Result<HttpRequest, AuthError> {
        let Auth::Kerberos(kerberos) = &self.auth else {
            return Err(AuthError::OutOfOrder("not a Kerberos connection"));
        };
        let (initiator, token) = crate::kerberos::KerberosInitiator::start(
            kerberos,
            host,
            fresh_credentials,
            self.channel_bindings.as_ref(),
        )?;
        let scheme = kerberos.scheme.header_name();
        self.state = State::KerberosNegotiating(Box::new(initiator));
        Ok(HttpRequest {
            authorization: Some(Secret::new(format!("{scheme} {}", STANDARD.encode(token)))),
            content_type: None,
            body: Bytes::new(),
        })
    }

    /// Handles the server's answer to a Kerberos handshake request: `Ok(None)` when the
    /// connection is authenticated (mutual authentication verified), `Ok(Some(request))` for
    /// another leg (SPNEGO), an error when refused.
    pub fn kerberos_continue(
        &mut self,
        response: &HttpResponse,
    ) -> Result<Option<HttpRequest>, AuthError> {
        let State::KerberosNegotiating(initiator) = &mut self.state else {
            return Err(AuthError::OutOfOrder("no Kerberos token was sent"));
        };
        let token = Self::kerberos_token(response);
        if response.status == 401 && token.is_none() {
            self.state = State::Unauthenticated;
            return Err(AuthError::Refused);
        }
        let next = match initiator.step(token.as_deref()) {
            Ok(next) => next,
            Err(e) => {
                self.state = State::Unauthenticated;
                return Err(e.into());
            }
        };
        if let Some(next) = next {
            let scheme = match &self.auth {
                Auth::Kerberos(k) => k.scheme.header_name(),
                _ => "Negotiate",
            };
            return Ok(Some(HttpRequest {
                authorization: Some(Secret::new(format!("{scheme} {}", STANDARD.encode(next)))),
                content_type: None,
                body: Bytes::new(),
            }));
        }
        let State::KerberosNegotiating(initiator) =
            std::mem::replace(&mut self.state, State::Unauthenticated)
        else {
            return Err(AuthError::OutOfOrder("no Kerberos token was sent"));
        };
        if response.status == 401 {
            return Err(AuthError::Refused);
        }
        let session = initiator.into_session()?;
        // Kept without sealing too: its lifetime says when the connection must authenticate
        // again.
        self.state = State::KerberosEstablished(Some(Box::new(session)));
        Ok(None)
    }

    fn kerberos_wrap(&mut self, soap: Vec<u8>) -> Result<HttpRequest, AuthError> {
        if let State::KerberosEstablished(Some(session)) = &self.state
            && session.is_expired()
        {
            return Err(AuthError::Kerberos(
                crate::kerberos::KerberosError::Message(
                    "the Kerberos context expired with its ticket".to_owned(),
                ),
            ));
        }
        match &mut self.state {
            State::KerberosEstablished(Some(session)) if self.seal => {
                let wrapped = session.wrap(&soap)?;
                Ok(HttpRequest {
                    authorization: None,
                    content_type: Some(framing::content_type_for(session.protocol())),
                    body: Bytes::from(framing::encode_gss(
                        session.protocol(),
                        &wrapped.header,
                        &wrapped.sealed,
                        soap.len(),
                    )),
                })
            }
            State::KerberosEstablished(_) => Ok(HttpRequest {
                authorization: None,
                content_type: Some(SOAP_CONTENT_TYPE.to_owned()),
                body: Bytes::from(soap),
            }),
            _ => Err(AuthError::OutOfOrder("connection not authenticated")),
        }
    }

    fn kerberos_unwrap(
        &mut self,
        response: &HttpResponse,
        content_type: &str,
    ) -> Result<Vec<u8>, AuthError> {
        if framing::encrypted_protocol(content_type).is_some() {
            let State::KerberosEstablished(Some(session)) = &mut self.state else {
                return Err(AuthError::NoSession);
            };
            let body = framing::decode_gss(&response.body)?;
            let data = session.unwrap(body.signature, body.sealed)?;
            if data.len() != body.original_length {
                return Err(AuthError::Framing(FramingError::LengthMismatch {
                    original: body.original_length,
                    sealed: data.len(),
                }));
            }
            return Ok(data);
        }
        if self.seal && !response.body.is_empty() {
            return Err(AuthError::Plaintext {
                content_type: if content_type.is_empty() {
                    "no content type".to_owned()
                } else {
                    content_type.to_owned()
                },
            });
        }
        Ok(response.body.to_vec())
    }
}

#[cfg(all(test, feature = "kerberos"))]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::kerberos::{KerberosAuth, KerberosScheme};

    fn kerberos(scheme: KerberosScheme, fallback: bool) -> Auth {
        let mut auth = KerberosAuth::new(Some("svc@LAB.TEST".to_owned()));
        auth.scheme = scheme;
        if fallback {
            auth.ntlm_fallback = Some(("LAB\\svc".to_owned(), Secret::new("pw")));
        }
        Auth::Kerberos(auth)
    }

    #[test]
    fn ntlm_fallback_only_with_negotiate_and_credentials() {
        let mut plain = ConnectionAuth::new(kerberos(KerberosScheme::Kerberos, true), true);
        assert!(!plain.fall_back_to_ntlm());
        let mut none = ConnectionAuth::new(kerberos(KerberosScheme::Negotiate, false), true);
        assert!(!none.fall_back_to_ntlm());
        let mut allowed = ConnectionAuth::new(kerberos(KerberosScheme::Negotiate, true), true);
        assert!(allowed.fall_back_to_ntlm());
        assert!(allowed.uses_ntlm_fallback());
        assert_eq!(allowed.auth.username(), "LAB\\svc");
        // The connection then speaks NTLM: a NEGOTIATE message, sealed bodies.
        let negotiate = allowed.negotiate_request().unwrap();
        let header = negotiate.authorization.unwrap();
        let token = STANDARD
            .decode(header.expose().trim_start_matches("Negotiate "))
            .unwrap();
        assert!(token.starts_with(b"NTLMSSP\0\x01"));
        assert!(allowed.seals());
        // The next handshake tries Kerberos again.
        allowed.restart();
        assert!(!allowed.uses_ntlm_fallback());
        assert!(matches!(allowed.auth, Auth::Kerberos(_)));
        assert!(allowed.needs_handshake());
    }

    #[test]
    fn channel_bindings_reach_the_ntlm_response() {
        let bindings = ChannelBindings::tls_server_end_point(b"certificate");
        let mut auth = ConnectionAuth::new(
            Auth::Ntlm {
                username: "u".to_owned(),
                password: Secret::new("p"),
            },
            false,
        );
        auth.set_channel_bindings(Some(bindings.clone()));
        let mut acceptor = crate::ntlm::NtlmAcceptor::new(
            crate::ntlm::AcceptorIdentity {
                netbios_domain: "LAB".into(),
                netbios_computer: "HV".into(),
                dns_domain: "lab.test".into(),
                dns_computer: "hv.lab.test".into(),
            },
            crate::ntlm::AcceptorInputs {
                server_challenge: [1; 8],
                timestamp: 1,
            },
        )
        .with_channel_bindings(Some(bindings.ntlm_hash()), true);
        let negotiate = auth.negotiate_request().unwrap();
        let token = |request: &HttpRequest| {
            let header = request.authorization.as_ref().unwrap().expose().to_owned();
            STANDARD.decode(header.split_once(' ').unwrap().1).unwrap()
        };
        let challenge = acceptor.challenge_message(&token(&negotiate)).unwrap();
        let response = HttpResponse {
            status: 401,
            www_authenticate: vec![format!("Negotiate {}", STANDARD.encode(challenge))],
            ..HttpResponse::default()
        };
        let inputs = AuthenticateInputs {
            client_challenge: [2; 8],
            exported_session_key: [3; 16],
            timestamp: 1,
        };
        let authenticate = auth.authenticate_request(&response, &inputs).unwrap();
        let lookup = |_: &str, _: &str| Some(Secret::new("p"));
        acceptor.accept(&token(&authenticate), &lookup).unwrap();
    }
}
