//! The pool: authenticated connections, each with its reusable shell, checked out one caller
//! at a time under a semaphore; and the WS-Man exchange on one connection (handshake,
//! sealing, re-authentication, shell recycling, stdin, terminate).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};
use uuid::Uuid;

use super::Stats;
use crate::auth::{Auth, AuthError, ConnectionAuth};
use crate::envelope::{
    self, RESOURCE_URI_CMD, Request, RequestHeader, Response, ResponseKind, ShellOptions, Signal,
};
use crate::error::{Error, Result};
use crate::ntlm::AuthenticateInputs;
use crate::shell::{OpenShell, ShellPolicy};
use crate::transport::{Connector, HttpRequest, HttpResponse, Transport};

/// What every clone of a [`Client`](super::Client) shares: the configuration, the pool and
/// the counters.
pub(super) struct Inner {
    pub(super) endpoint: String,
    /// The endpoint's host name (the default Kerberos service principal is `HTTP/<host>`).
    #[cfg_attr(not(feature = "kerberos"), allow(dead_code))]
    pub(super) host: String,
    pub(super) auth: Auth,
    pub(super) seal: bool,
    pub(super) connector: Arc<dyn Connector>,
    pub(super) operation_timeout: Duration,
    pub(super) max_envelope_size: u32,
    pub(super) locale: String,
    pub(super) shell: ShellOptions,
    pub(super) policy: ShellPolicy,
    pub(super) permits: Arc<Semaphore>,
    pub(super) idle: Mutex<Vec<Session>>,
    pub(super) stats: Stats,
}

/// One connection with its security context and (once created) its shell.
pub(super) struct Session {
    pub(super) transport: Arc<dyn Transport>,
    pub(super) auth: ConnectionAuth,
    pub(super) shell: Option<OpenShell>,
    /// A request was abandoned mid-flight: the connection and its NTLM sequence numbers can no
    /// longer be trusted.
    pub(super) poisoned: bool,
}

/// Whether a failed Kerberos attempt is worth one more try with fresh credentials.
#[cfg(feature = "kerberos")]
enum Retry {
    Again(Error),
    Fatal(Error),
    /// Kerberos could not produce a token for the host (no ticket for its SPN, no KDC, no
    /// credentials): the NTLM fallback may apply.
    Unavailable(Error),
}

/// A session checked out of the pool together with its concurrency permit.
pub(super) struct Lease {
    pub(super) session: Session,
    pub(super) _permit: OwnedSemaphorePermit,
}

/// Whether an error leaves the connection usable.
pub(super) fn keeps_connection(err: &Error) -> bool {
    matches!(
        err,
        Error::Fault { .. } | Error::Config(_) | Error::HttpStatus { .. }
    )
}

fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    text.trim().to_owned()
}

impl Inner {
    fn auth_error(&self, err: AuthError) -> Error {
        let endpoint = self.endpoint.clone();
        match err {
            AuthError::Refused => Error::AuthenticationFailed {
                endpoint,
                user: self.auth.username().to_owned(),
                detail: "credentials refused".to_owned(),
            },
            AuthError::NoSupportedScheme { .. } => Error::AuthenticationFailed {
                endpoint,
                user: self.auth.username().to_owned(),
                detail: err.to_string(),
            },
            AuthError::Ntlm(source) => Error::Ntlm { endpoint, source },
            AuthError::Framing(source) => Error::Framing { endpoint, source },
            other => Error::AuthenticationFailed {
                endpoint,
                user: self.auth.username().to_owned(),
                detail: other.to_string(),
            },
        }
    }

    fn new_session(&self) -> Result<Session> {
        let transport = self
            .connector
            .connect()
            .map_err(|source| Error::Transport {
                endpoint: self.endpoint.clone(),
                source,
            })?;
        Stats::bump(&self.stats.connections);
        Ok(Session {
            transport,
            auth: ConnectionAuth::new(self.auth.clone(), self.seal),
            shell: None,
            poisoned: false,
        })
    }

    /// Replaces the connection of a session (keeping its shell, which lives on the host).
    fn reconnect(&self, session: &mut Session) -> Result<()> {
        let fresh = self.new_session()?;
        session.transport = fresh.transport;
        session.auth = fresh.auth;
        session.poisoned = false;
        Ok(())
    }

    pub(super) async fn acquire(self: &Arc<Self>) -> Result<Lease> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| Error::Config("client is shut down".to_owned()))?;
        let idle = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.pop()
        };
        let session = match idle {
            Some(s) => s,
            None => self.new_session()?,
        };
        Ok(Lease {
            session,
            _permit: permit,
        })
    }

    pub(super) fn release(&self, lease: Lease) {
        if lease.session.poisoned {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.push(lease.session);
    }

    async fn post(&self, session: &Session, request: HttpRequest) -> Result<HttpResponse> {
        Stats::bump(&self.stats.requests);
        session
            .transport
            .post(request)
            .await
            .map_err(|source| Error::Transport {
                endpoint: self.endpoint.clone(),
                source,
            })
    }

    async fn handshake(&self, session: &mut Session) -> Result<()> {
        session.auth.restart();
        let https = self
            .endpoint
            .get(..6)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https:"));
        if https {
            let bindings = session
                .transport
                .channel_bindings()
                .await
                .map_err(|source| Error::Transport {
                    endpoint: self.endpoint.clone(),
                    source,
                })?;
            session.auth.set_channel_bindings(bindings);
        }
        #[cfg(feature = "kerberos")]
        if let Auth::Kerberos(_) = &self.auth {
            return self.kerberos_handshake(session).await;
        }
        Stats::bump(&self.stats.handshakes);
        self.ntlm_handshake(session).await
    }

    /// NEGOTIATE, CHALLENGE, AUTHENTICATE: two requests.
    async fn ntlm_handshake(&self, session: &mut Session) -> Result<()> {
        debug!(endpoint = %self.endpoint, "NTLM handshake");
        let negotiate = session
            .auth
            .negotiate_request()
            .map_err(|e| self.auth_error(e))?;
        let challenge = self.post(session, negotiate).await?;
        if challenge.status != 401 {
            return Err(Error::HttpStatus {
                endpoint: self.endpoint.clone(),
                status: challenge.status,
                detail: format!(
                    "expected a 401 NTLM challenge; {}",
                    excerpt(&challenge.body)
                ),
            });
        }
        let inputs = AuthenticateInputs::random(&mut rand::rngs::OsRng, SystemTime::now());
        let authenticate = session
            .auth
            .authenticate_request(&challenge, &inputs)
            .map_err(|e| self.auth_error(e))?;
        let done = self.post(session, authenticate).await?;
        session
            .auth
            .complete(&done)
            .map_err(|e| self.auth_error(e))?;
        if !(200..300).contains(&done.status) {
            session.auth.reset();
            return Err(Error::HttpStatus {
                endpoint: self.endpoint.clone(),
                status: done.status,
                detail: excerpt(&done.body),
            });
        }
        Ok(())
    }

    /// Kerberos: one request with the AP-REQ, answered by `200` with the server's mutual
    /// authentication token (SPNEGO may add legs). A refusal or an expired ticket gets one more
    /// attempt with freshly acquired credentials.
    #[cfg(feature = "kerberos")]
    async fn kerberos_handshake(&self, session: &mut Session) -> Result<()> {
        Stats::bump(&self.stats.handshakes);
        debug!(endpoint = %self.endpoint, "Kerberos handshake");
        let mut fresh = false;
        loop {
            let outcome = self.kerberos_attempt(session, fresh).await;
            match outcome {
                Err(Retry::Again(_)) if !fresh => {
                    debug!(endpoint = %self.endpoint, "Kerberos refused or expired; acquiring fresh credentials");
                    fresh = true;
                }
                Err(Retry::Unavailable(err)) => {
                    if session.auth.fall_back_to_ntlm() {
                        warn!(
                            endpoint = %self.endpoint,
                            error = %err,
                            "Kerberos is unavailable for this host; using NTLM as allowed"
                        );
                        return self.ntlm_handshake(session).await;
                    }
                    return Err(err);
                }
                Err(Retry::Again(err) | Retry::Fatal(err)) => return Err(err),
                Ok(()) => return Ok(()),
            }
        }
    }

    #[cfg(feature = "kerberos")]
    async fn kerberos_attempt(
        &self,
        session: &mut Session,
        fresh: bool,
    ) -> std::result::Result<(), Retry> {
        let retry_if = |err: AuthError| match &err {
            AuthError::Refused => Retry::Again(self.auth_error(err)),
            AuthError::Kerberos(k) if k.is_expired() => Retry::Again(self.auth_error(err)),
            _ => Retry::Fatal(self.auth_error(err)),
        };
        let mut request =
            session
                .auth
                .kerberos_start(&self.host, fresh)
                .map_err(|err| match &err {
                    AuthError::Kerberos(k) if k.is_expired() && !fresh => {
                        Retry::Again(self.auth_error(err))
                    }
                    AuthError::Kerberos(
                        crate::kerberos::KerberosError::Credentials { .. }
                        | crate::kerberos::KerberosError::Context { .. },
                    ) => Retry::Unavailable(self.auth_error(err)),
                    _ => retry_if(err),
                })?;
        // SPNEGO needs at most a few legs; more is a misbehaving server.
        for _ in 0..4 {
            let response = self.post(session, request).await.map_err(Retry::Fatal)?;
            if response.status != 401 && !(200..300).contains(&response.status) {
                session.auth.reset();
                return Err(Retry::Fatal(Error::HttpStatus {
                    endpoint: self.endpoint.clone(),
                    status: response.status,
                    detail: format!(
                        "expected 200 or 401 to the Kerberos token; {}",
                        excerpt(&response.body)
                    ),
                }));
            }
            match session
                .auth
                .kerberos_continue(&response)
                .map_err(retry_if)?
            {
                None => return Ok(()),
                Some(next) => request = next,
            }
        }
        session.auth.reset();
        Err(Retry::Fatal(self.auth_error(AuthError::OutOfOrder(
            "the Kerberos exchange did not finish",
        ))))
    }

    fn header(&self) -> RequestHeader {
        RequestHeader {
            to: self.endpoint.clone(),
            message_id: Uuid::new_v4(),
            resource_uri: RESOURCE_URI_CMD.to_owned(),
            max_envelope_size: self.max_envelope_size,
            operation_timeout: self.operation_timeout,
            locale: self.locale.clone(),
        }
    }

    /// Sends one WS-Man request on the session's connection and parses the answer.
    ///
    /// Authenticates the connection first when needed; a 401 on an established connection
    /// (the server lost the context, e.g. after a silent reconnect) triggers one new handshake.
    pub(super) async fn exchange(
        &self,
        session: &mut Session,
        request: &Request,
    ) -> Result<Response> {
        let xml = envelope::build_request(&self.header(), request);
        let kind = ResponseKind::from(request);
        let ntlm = self.auth.has_handshake();
        let mut attempt = 0;
        loop {
            attempt += 1;
            if session.auth.needs_handshake() {
                self.handshake(session).await?;
            }
            let http = match session.auth.wrap(xml.as_bytes().to_vec()) {
                Ok(http) => http,
                // The Kerberos context outlived its ticket: authenticate the connection again.
                #[cfg(feature = "kerberos")]
                Err(AuthError::Kerberos(e)) if e.is_expired() && attempt == 1 => {
                    debug!(endpoint = %self.endpoint, "Kerberos context expired; re-authenticating");
                    session.auth.reset();
                    continue;
                }
                Err(e) => return Err(self.auth_error(e)),
            };
            session.poisoned = true;
            let response = self.post(session, http).await?;
            session.poisoned = false;
            debug!(endpoint = %self.endpoint, ?kind, status = response.status, "ws-man exchange");
            match response.status {
                401 if ntlm && attempt == 1 => {
                    debug!(endpoint = %self.endpoint, "connection lost its authentication; re-authenticating");
                    session.auth.reset();
                    continue;
                }
                401 if ntlm && !session.auth.seals() && self.endpoint.starts_with("http:") => {
                    // The handshake itself succeeded, so the credentials are fine: a host with
                    // AllowUnencrypted=false answers plaintext SOAP with 401.
                    session.auth.reset();
                    return Err(Error::AuthenticationFailed {
                        endpoint: self.endpoint.clone(),
                        user: self.auth.username().to_owned(),
                        detail: "the host accepted the credentials but refused the unencrypted \
                                 message; it requires message encryption (use encryption auto or \
                                 always)"
                            .to_owned(),
                    });
                }
                401 => {
                    session.auth.reset();
                    return Err(self.auth_error(AuthError::Refused));
                }
                200 | 500 => {
                    let body = session.auth.unwrap(&response).map_err(|e| {
                        session.poisoned = true;
                        self.auth_error(e)
                    })?;
                    return match envelope::parse_response(kind, &body) {
                        Ok(r) if response.status == 200 => Ok(r),
                        Ok(_) => Err(Error::HttpStatus {
                            endpoint: self.endpoint.clone(),
                            status: 500,
                            detail: "server error without a SOAP fault".to_owned(),
                        }),
                        Err(e) if response.status == 500 && body.is_empty() => {
                            drop(e);
                            Err(Error::HttpStatus {
                                endpoint: self.endpoint.clone(),
                                status: 500,
                                detail: "empty response".to_owned(),
                            })
                        }
                        Err(e) => Err(Error::from_envelope(&self.endpoint, e)),
                    };
                }
                status => {
                    let detail = session
                        .auth
                        .unwrap(&response)
                        .map(|b| excerpt(&b))
                        .unwrap_or_else(|_| excerpt(&response.body));
                    return Err(Error::HttpStatus {
                        endpoint: self.endpoint.clone(),
                        status,
                        detail,
                    });
                }
            }
        }
    }

    /// Makes sure the session has a usable shell, replacing an exhausted one.
    pub(super) async fn ensure_shell(&self, session: &mut Session) -> Result<()> {
        if let Some(shell) = session.shell.take_if(|s| s.exhausted(&self.policy)) {
            debug!(endpoint = %self.endpoint, shell = %shell.shell_id, "recycling shell");
            let delete = Request::Delete {
                shell_id: shell.shell_id,
            };
            if let Err(e) = self.exchange(session, &delete).await {
                warn!(endpoint = %self.endpoint, error = %e, "could not delete a recycled shell");
                if !keeps_connection(&e) {
                    self.reconnect(session)?;
                }
            }
        }
        if session.shell.is_none() {
            match self
                .exchange(session, &Request::Create(self.shell.clone()))
                .await?
            {
                Response::Created { shell_id } => {
                    Stats::bump(&self.stats.shells);
                    debug!(endpoint = %self.endpoint, shell = %shell_id, "shell created");
                    session.shell = Some(OpenShell::new(shell_id));
                }
                other => return Err(self.unexpected("CreateResponse", &other)),
            }
        }
        Ok(())
    }

    pub(super) fn unexpected(&self, expected: &str, got: &Response) -> Error {
        Error::Envelope {
            endpoint: self.endpoint.clone(),
            source: crate::envelope::EnvelopeError::Invalid {
                field: "response",
                detail: format!("expected {expected}, got {:?}", ResponseKind::from(got)),
            },
        }
    }

    /// Largest stdin slice per Send so that the base64 envelope fits MaxEnvelopeSize.
    fn stdin_chunk(&self) -> usize {
        ((self.max_envelope_size as usize).saturating_sub(4096) / 4 * 3).max(1024)
    }

    pub(super) async fn send_stdin(
        &self,
        session: &mut Session,
        command_id: &str,
        data: &[u8],
        end: bool,
    ) -> Result<()> {
        let Some(shell) = &session.shell else {
            return Err(Error::Config("no shell for stdin".to_owned()));
        };
        let shell_id = shell.shell_id.clone();
        let chunk = self.stdin_chunk();
        let mut pieces: Vec<&[u8]> = data.chunks(chunk).collect();
        if pieces.is_empty() {
            pieces.push(&[]);
        }
        let last = pieces.len() - 1;
        for (i, piece) in pieces.into_iter().enumerate() {
            let request = Request::Send {
                shell_id: shell_id.clone(),
                command_id: command_id.to_owned(),
                stream: "stdin".to_owned(),
                data: piece.to_vec(),
                end: end && i == last,
            };
            self.exchange(session, &request).await?;
        }
        Ok(())
    }

    /// Terminates a command; used after Done and after cancellation.
    pub(super) async fn terminate(&self, session: &mut Session, command_id: &str) -> Result<()> {
        if session.poisoned {
            self.reconnect(session)?;
        }
        let Some(shell) = &session.shell else {
            return Ok(());
        };
        let request = Request::Signal {
            shell_id: shell.shell_id.clone(),
            command_id: command_id.to_owned(),
            signal: Signal::Terminate,
        };
        match self.exchange(session, &request).await {
            Ok(_) => Ok(()),
            // The command may already be gone; that is what we wanted.
            Err(Error::Fault { fault, .. }) if fault.is_shell_gone() => Ok(()),
            Err(e) => Err(e),
        }
    }
}
