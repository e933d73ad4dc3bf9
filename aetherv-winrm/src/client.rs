//! The async WinRM client: a builder, a bounded pool of authenticated connections each with a
//! reusable shell, and commands whose output streams while they run.
//!
//! Cost model (what the protocol core makes possible): one NTLM handshake per connection, one
//! shell per connection reused for up to [`ShellPolicy::max_commands_per_shell`] commands, so a
//! command without stdin costs Command + Receive (+ more Receives for long output) + Signal.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use uuid::Uuid;

use crate::auth::{Auth, AuthError, ConnectionAuth};
use crate::clixml;
use crate::envelope::{
    self, RESOURCE_URI_CMD, Request, RequestHeader, Response, ResponseKind, ShellOptions, Signal,
};
use crate::error::{Error, Result};
use crate::ntlm::AuthenticateInputs;
use crate::powershell;
use crate::secret::Secret;
use crate::shell::{FaultAction, OpenShell, ReceiveTracker, ShellPolicy, classify_fault};
use crate::transport::{
    Connector, HttpConnector, HttpOptions, HttpRequest, HttpResponse, TlsOptions, Transport,
};

pub use crate::shell::OutputChunk;

/// Whether SOAP bodies are sealed with NTLM message encryption.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EncryptionMode {
    /// Seal over plain HTTP with NTLM; rely on TLS over HTTPS (what Windows expects).
    #[default]
    Auto,
    /// Always seal (requires NTLM), even inside TLS.
    Always,
    /// Never seal: only for listeners configured with `AllowUnencrypted=true`, or HTTPS.
    Never,
}

impl std::str::FromStr for EncryptionMode {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "always" => Ok(Self::Always),
            "never" => Ok(Self::Never),
            other => Err(format!(
                "unknown encryption mode {other:?} (expected auto, always or never)"
            )),
        }
    }
}

/// Counters of what a client did, for diagnostics and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// HTTP requests sent (handshake legs included).
    pub requests: u64,
    /// NTLM handshakes run.
    pub handshakes: u64,
    /// Connections opened.
    pub connections: u64,
    /// Shells created on the host.
    pub shells: u64,
    /// Commands started.
    pub commands: u64,
}

#[derive(Debug, Default)]
struct Stats {
    requests: AtomicU64,
    handshakes: AtomicU64,
    connections: AtomicU64,
    shells: AtomicU64,
    commands: AtomicU64,
}

impl Stats {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> ClientStats {
        ClientStats {
            requests: self.requests.load(Ordering::Relaxed),
            handshakes: self.handshakes.load(Ordering::Relaxed),
            connections: self.connections.load(Ordering::Relaxed),
            shells: self.shells.load(Ordering::Relaxed),
            commands: self.commands.load(Ordering::Relaxed),
        }
    }
}

/// Builds a [`Client`]. Start with [`Client::builder`].
#[derive(Clone)]
pub struct ClientBuilder {
    endpoint: String,
    auth: Option<Auth>,
    encryption: EncryptionMode,
    tls: TlsOptions,
    allow_basic_over_http: bool,
    connect_timeout: Duration,
    operation_timeout: Duration,
    request_timeout: Option<Duration>,
    max_envelope_size: u32,
    max_shells: usize,
    policy: ShellPolicy,
    shell: ShellOptions,
    locale: String,
    connector: Option<Arc<dyn Connector>>,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("endpoint", &self.endpoint)
            .field("auth", &self.auth)
            .field("encryption", &self.encryption)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    fn new(endpoint: &str) -> Self {
        Self {
            endpoint: endpoint.to_owned(),
            auth: None,
            encryption: EncryptionMode::Auto,
            tls: TlsOptions::default(),
            allow_basic_over_http: false,
            connect_timeout: Duration::from_secs(10),
            operation_timeout: Duration::from_secs(20),
            request_timeout: None,
            max_envelope_size: 153_600,
            max_shells: 4,
            policy: ShellPolicy::default(),
            shell: ShellOptions::default(),
            locale: "en-US".to_owned(),
            connector: None,
        }
    }

    /// Authenticate with NTLM (`user`, `DOMAIN\user` or `user@domain`).
    pub fn ntlm(mut self, username: impl Into<String>, password: impl Into<Secret>) -> Self {
        self.auth = Some(Auth::Ntlm {
            username: username.into(),
            password: password.into(),
        });
        self
    }

    /// Authenticate with HTTP Basic (local accounts; HTTPS only unless
    /// [`allow_basic_over_http`](Self::allow_basic_over_http)).
    pub fn basic(mut self, username: impl Into<String>, password: impl Into<Secret>) -> Self {
        self.auth = Some(Auth::Basic {
            username: username.into(),
            password: password.into(),
        });
        self
    }

    /// Message encryption mode (default [`EncryptionMode::Auto`]).
    pub fn encryption(mut self, mode: EncryptionMode) -> Self {
        self.encryption = mode;
        self
    }

    /// Trust the CA certificates in this PEM file in addition to the built-in roots.
    pub fn ca_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.tls.ca_file = Some(path.into());
        self
    }

    /// Accept any TLS certificate. Only for lab hosts with self-signed certificates.
    pub fn accept_invalid_certs(mut self, accept: bool) -> Self {
        self.tls.accept_invalid_certs = accept;
        self
    }

    /// Permit Basic authentication over plain HTTP (the password then crosses the network in
    /// clear). Off by default.
    pub fn allow_basic_over_http(mut self, allow: bool) -> Self {
        self.allow_basic_over_http = allow;
        self
    }

    /// TCP connect timeout (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// WS-Man OperationTimeout: how long the host may hold a Receive open waiting for output
    /// (default 20 s). A Receive that times out is simply sent again.
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// HTTP timeout for one exchange (default: OperationTimeout + 10 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// MaxEnvelopeSize announced to the host (default 153600 bytes).
    pub fn max_envelope_size(mut self, bytes: u32) -> Self {
        self.max_envelope_size = bytes;
        self
    }

    /// Maximum concurrent connections (each with its own shell); further callers wait.
    /// Default 4; Windows allows 30 shells per user by default.
    pub fn max_shells(mut self, shells: usize) -> Self {
        self.max_shells = shells;
        self
    }

    /// Commands run in a shell before it is replaced by a fresh one (default 500).
    pub fn max_commands_per_shell(mut self, commands: u32) -> Self {
        self.policy.max_commands_per_shell = commands;
        self
    }

    /// Options for the shells the client creates (codepage 65001 and no profile by default).
    pub fn shell_options(mut self, options: ShellOptions) -> Self {
        self.shell = options;
        self
    }

    /// Use this connector instead of the built-in [`HttpConnector`] (tests, proxies, custom
    /// stacks).
    pub fn connector(mut self, connector: Arc<dyn Connector>) -> Self {
        self.connector = Some(connector);
        self
    }

    /// Validates the configuration and builds the client. No connection is made yet.
    pub fn build(self) -> Result<Client> {
        let config_err = |msg: String| Error::Config(msg);
        let uri: hyper::Uri = self.endpoint.parse().map_err(|e| {
            config_err(format!(
                "endpoint {:?} is not a URL ({e}); expected e.g. http://host:5985/wsman",
                self.endpoint
            ))
        })?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            other => {
                return Err(config_err(format!(
                    "endpoint {:?} has scheme {:?}; use http:// or https:// \
                     (e.g. http://host:5985/wsman)",
                    self.endpoint,
                    other.unwrap_or("none")
                )));
            }
        };
        let Some(authority) = uri.authority().filter(|a| !a.host().is_empty()) else {
            return Err(config_err(format!(
                "endpoint {:?} has no host",
                self.endpoint
            )));
        };
        let path = match uri.path_and_query().map(|p| p.as_str()) {
            None | Some("") | Some("/") => "/wsman",
            Some(p) => p,
        };
        let endpoint = format!(
            "{}://{}{}",
            if https { "https" } else { "http" },
            authority,
            path
        );
        let auth = self
            .auth
            .ok_or_else(|| config_err("no credentials: call .ntlm(..) or .basic(..)".to_owned()))?;
        let is_basic = matches!(auth, Auth::Basic { .. });
        if is_basic && !https && !self.allow_basic_over_http {
            return Err(config_err(
                "Basic authentication over plain HTTP would send the password in clear; \
                 use an https:// endpoint or NTLM, or allow it explicitly"
                    .to_owned(),
            ));
        }
        let seal = match self.encryption {
            EncryptionMode::Auto => !https && !is_basic,
            EncryptionMode::Always => {
                if is_basic {
                    return Err(config_err(
                        "message encryption needs NTLM; Basic cannot encrypt messages".to_owned(),
                    ));
                }
                true
            }
            EncryptionMode::Never => false,
        };
        if self.max_shells == 0 {
            return Err(config_err("max_shells must be at least 1".to_owned()));
        }
        if self.policy.max_commands_per_shell == 0 {
            return Err(config_err(
                "max_commands_per_shell must be at least 1".to_owned(),
            ));
        }
        if self.max_envelope_size < 8192 {
            return Err(config_err(
                "max_envelope_size must be at least 8192 bytes".to_owned(),
            ));
        }
        let request_timeout = self
            .request_timeout
            .unwrap_or(self.operation_timeout + Duration::from_secs(10));
        if request_timeout <= self.operation_timeout {
            return Err(config_err(
                "request_timeout must be longer than operation_timeout".to_owned(),
            ));
        }
        let connector: Arc<dyn Connector> = match self.connector {
            Some(c) => c,
            None => Arc::new(
                HttpConnector::new(HttpOptions {
                    endpoint: endpoint.clone(),
                    connect_timeout: self.connect_timeout,
                    request_timeout,
                    tls: self.tls,
                })
                .map_err(|e| config_err(e.to_string()))?,
            ),
        };
        Ok(Client {
            inner: Arc::new(Inner {
                endpoint,
                auth,
                seal,
                connector,
                operation_timeout: self.operation_timeout,
                max_envelope_size: self.max_envelope_size,
                locale: self.locale,
                shell: self.shell,
                policy: self.policy,
                permits: Arc::new(Semaphore::new(self.max_shells)),
                idle: Mutex::new(Vec::new()),
                stats: Stats::default(),
            }),
        })
    }
}

/// What to run: a command line, its stdin, and how long it may take.
#[derive(Debug, Clone, Default)]
pub struct CommandSpec {
    command: String,
    arguments: Vec<String>,
    stdin: Option<Bytes>,
    stdin_script: Option<String>,
    deadline: Option<Duration>,
    cancel: Option<CancellationToken>,
    powershell: bool,
}

impl CommandSpec {
    /// A command run through `cmd.exe`, e.g. `CommandSpec::new("ipconfig").arg("/all")`.
    pub fn new(command: impl Into<String>) -> Self {
        Self {
            command: command.into(),
            ..Self::default()
        }
    }

    /// A PowerShell script, run with `-EncodedCommand` (or on stdin when too long for the
    /// Windows command line; see [`crate::powershell`]).
    pub fn powershell(script: &str) -> Self {
        let invocation = powershell::invocation(script);
        Self {
            command: invocation.command,
            arguments: invocation.arguments,
            stdin_script: invocation.stdin_script,
            powershell: true,
            ..Self::default()
        }
    }

    /// Appends one argument.
    pub fn arg(mut self, argument: impl Into<String>) -> Self {
        self.arguments.push(argument.into());
        self
    }

    /// Appends several arguments.
    pub fn args<I, S>(mut self, arguments: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.arguments.extend(arguments.into_iter().map(Into::into));
        self
    }

    /// Bytes to write to the command's stdin, followed by end of input.
    pub fn stdin(mut self, data: impl Into<Bytes>) -> Self {
        self.stdin = Some(data.into());
        self
    }

    /// Overall deadline: after it the command is terminated on the host and
    /// [`Error::Deadline`] returned.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// A token whose cancellation terminates the command and returns [`Error::Cancelled`].
    pub fn cancel_token(mut self, token: CancellationToken) -> Self {
        self.cancel = Some(token);
        self
    }

    /// Whether this runs PowerShell (its stderr is CLIXML).
    pub fn is_powershell(&self) -> bool {
        self.powershell
    }
}

/// The complete result of a command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandOutput {
    /// Everything written to stdout, as received.
    pub stdout: Vec<u8>,
    /// Everything written to stderr, as received (CLIXML for PowerShell).
    pub stderr: Vec<u8>,
    /// The command's exit code.
    pub exit_code: i64,
}

impl CommandOutput {
    /// stdout as text (UTF-8; invalid sequences replaced).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// stderr as readable text: CLIXML is decoded (errors, warnings; progress dropped),
    /// anything else is returned as UTF-8.
    pub fn stderr_text(&self) -> String {
        clixml::decode(&self.stderr)
    }

    /// Whether the exit code is zero.
    pub fn success(&self) -> bool {
        self.exit_code == 0
    }
}

/// A WinRM client for one endpoint. Cheap to clone; clones share connections and shells.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.inner.endpoint)
            .field("user", &self.inner.auth.username())
            .field("seal", &self.inner.seal)
            .finish_non_exhaustive()
    }
}

struct Inner {
    endpoint: String,
    auth: Auth,
    seal: bool,
    connector: Arc<dyn Connector>,
    operation_timeout: Duration,
    max_envelope_size: u32,
    locale: String,
    shell: ShellOptions,
    policy: ShellPolicy,
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<Session>>,
    stats: Stats,
}

/// One connection with its security context and (once created) its shell.
struct Session {
    transport: Arc<dyn Transport>,
    auth: ConnectionAuth,
    shell: Option<OpenShell>,
    /// A request was abandoned mid-flight: the connection and its NTLM sequence numbers can no
    /// longer be trusted.
    poisoned: bool,
}

/// A session checked out of the pool together with its concurrency permit.
struct Lease {
    session: Session,
    _permit: OwnedSemaphorePermit,
}

/// Whether an error leaves the connection usable.
fn keeps_connection(err: &Error) -> bool {
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

    async fn acquire(self: &Arc<Self>) -> Result<Lease> {
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

    fn release(&self, lease: Lease) {
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
        Stats::bump(&self.stats.handshakes);
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
    async fn exchange(&self, session: &mut Session, request: &Request) -> Result<Response> {
        let xml = envelope::build_request(&self.header(), request);
        let kind = ResponseKind::from(request);
        let ntlm = matches!(self.auth, Auth::Ntlm { .. });
        let mut attempt = 0;
        loop {
            attempt += 1;
            if session.auth.needs_handshake() {
                self.handshake(session).await?;
            }
            let http = session
                .auth
                .wrap(xml.as_bytes().to_vec())
                .map_err(|e| self.auth_error(e))?;
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
    async fn ensure_shell(&self, session: &mut Session) -> Result<()> {
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

    fn unexpected(&self, expected: &str, got: &Response) -> Error {
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

    async fn send_stdin(
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
    async fn terminate(&self, session: &mut Session, command_id: &str) -> Result<()> {
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

impl Client {
    /// Starts building a client for `endpoint` (e.g. `http://host:5985/wsman`).
    pub fn builder(endpoint: &str) -> ClientBuilder {
        ClientBuilder::new(endpoint)
    }

    /// The endpoint URL this client talks to.
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    /// Whether SOAP bodies are sealed with NTLM message encryption.
    pub fn encrypts(&self) -> bool {
        self.inner.seal
    }

    /// What the client has done so far.
    pub fn stats(&self) -> ClientStats {
        self.inner.stats.snapshot()
    }

    /// Runs a command through `cmd.exe` and collects its output.
    pub async fn run_command(&self, command: &str, arguments: &[&str]) -> Result<CommandOutput> {
        self.run(CommandSpec::new(command).args(arguments.iter().copied()))
            .await
    }

    /// Runs a PowerShell script and collects its output.
    pub async fn run_powershell(&self, script: &str) -> Result<CommandOutput> {
        self.run(CommandSpec::powershell(script)).await
    }

    /// Runs a command and collects its output.
    pub async fn run(&self, spec: CommandSpec) -> Result<CommandOutput> {
        self.start(spec).await?.collect().await
    }

    /// Starts a command and returns a handle that streams its output.
    ///
    /// Waits for a free connection when [`ClientBuilder::max_shells`] are busy. The stdin
    /// given in the spec is sent before this returns.
    pub async fn start(&self, spec: CommandSpec) -> Result<RunningCommand> {
        if spec.stdin_script.is_some() && spec.stdin.is_some() {
            return Err(Error::Config(format!(
                "the PowerShell script is longer than the Windows command line ({} characters) and \
                 must travel on stdin, so it cannot also be given stdin; deploy it as a file instead",
                powershell::MAX_COMMAND_LINE
            )));
        }
        let inner = &self.inner;
        let mut lease = inner.acquire().await?;
        let started = self.start_on(&mut lease.session, &spec).await;
        let command_id = match started {
            Ok(id) => id,
            Err(e) => {
                if !keeps_connection(&e) {
                    lease.session.poisoned = true;
                }
                inner.release(lease);
                return Err(e);
            }
        };
        let deadline = spec.deadline.map(|d| (tokio::time::Instant::now() + d, d));
        let mut running = RunningCommand {
            inner: Arc::clone(inner),
            lease: Some(lease),
            tracker: ReceiveTracker::new(command_id),
            pending: VecDeque::new(),
            deadline,
            cancel: spec.cancel.unwrap_or_default(),
            finished: false,
        };
        let stdin = match (&spec.stdin_script, &spec.stdin) {
            (Some(script), _) => Some(Bytes::from(script.clone().into_bytes())),
            (None, Some(data)) => Some(data.clone()),
            (None, None) => None,
        };
        if let Some(data) = stdin {
            running.send_stdin(&data, true).await?;
        }
        Ok(running)
    }

    async fn start_on(&self, session: &mut Session, spec: &CommandSpec) -> Result<String> {
        let inner = &self.inner;
        let mut attempt = 0;
        loop {
            attempt += 1;
            inner.ensure_shell(session).await?;
            let Some(shell) = session.shell.as_mut() else {
                return Err(Error::Config("no shell".to_owned()));
            };
            let request = Request::Command {
                shell_id: shell.shell_id.clone(),
                command: spec.command.clone(),
                arguments: spec.arguments.clone(),
                skip_cmd_shell: false,
            };
            shell.commands += 1;
            match inner.exchange(session, &request).await {
                Ok(Response::CommandStarted { command_id }) => {
                    Stats::bump(&inner.stats.commands);
                    return Ok(command_id);
                }
                Ok(other) => return Err(inner.unexpected("CommandResponse", &other)),
                Err(Error::Fault { fault, .. })
                    if attempt == 1 && classify_fault(&fault, false) == FaultAction::ShellGone =>
                {
                    debug!(endpoint = %inner.endpoint, "shell is gone on the host; creating a new one");
                    session.shell = None;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Deletes the shells of idle connections. Commands still running keep theirs.
    pub async fn close(&self) {
        let sessions: Vec<Session> = {
            let mut idle = self.inner.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.drain(..).collect()
        };
        for mut session in sessions {
            if let Some(shell) = session.shell.take() {
                let request = Request::Delete {
                    shell_id: shell.shell_id,
                };
                if let Err(e) = self.inner.exchange(&mut session, &request).await {
                    debug!(endpoint = %self.inner.endpoint, error = %e, "could not delete shell");
                }
            }
        }
    }
}

/// A command running on the host. Read its output with [`next_chunk`](Self::next_chunk) or
/// [`collect`](Self::collect).
///
/// Dropping it before the command finished terminates the command in the background.
pub struct RunningCommand {
    inner: Arc<Inner>,
    lease: Option<Lease>,
    tracker: ReceiveTracker,
    pending: VecDeque<OutputChunk>,
    deadline: Option<(tokio::time::Instant, Duration)>,
    cancel: CancellationToken,
    finished: bool,
}

impl std::fmt::Debug for RunningCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningCommand")
            .field("endpoint", &self.inner.endpoint)
            .field("command_id", &self.tracker.command_id())
            .field("done", &self.tracker.is_done())
            .finish_non_exhaustive()
    }
}

enum Interrupt {
    Cancelled,
    Deadline(Duration),
}

impl RunningCommand {
    /// The host's id for this command.
    pub fn command_id(&self) -> &str {
        self.tracker.command_id()
    }

    /// The exit code, once the command has finished.
    pub fn exit_code(&self) -> Option<i64> {
        self.tracker.exit_code()
    }

    /// Writes to the command's stdin; `end` closes it.
    pub async fn send_stdin(&mut self, data: &[u8], end: bool) -> Result<()> {
        let Some(lease) = self.lease.as_mut() else {
            return Err(Error::Config("the command has already finished".to_owned()));
        };
        let command_id = self.tracker.command_id().to_owned();
        let result = self
            .inner
            .send_stdin(&mut lease.session, &command_id, data, end)
            .await;
        if let Err(e) = &result {
            if !keeps_connection(e) {
                lease.session.poisoned = true;
            }
            self.abort().await;
        }
        result
    }

    /// The next piece of output, or `None` once the command has finished and everything was
    /// returned. Polls the host as needed; a Receive that times out is retried.
    pub async fn next_chunk(&mut self) -> Result<Option<OutputChunk>> {
        loop {
            if let Some(chunk) = self.pending.pop_front() {
                return Ok(Some(chunk));
            }
            if self.tracker.is_done() {
                self.finish().await;
                return Ok(None);
            }
            let Some(lease) = self.lease.as_mut() else {
                return Ok(None);
            };
            let Some(shell) = &lease.session.shell else {
                return Err(Error::Config("no shell".to_owned()));
            };
            let request = Request::Receive {
                shell_id: shell.shell_id.clone(),
                command_id: self.tracker.command_id().to_owned(),
                stream: "stdout stderr".to_owned(),
            };
            let inner = Arc::clone(&self.inner);
            let exchange = inner.exchange(&mut lease.session, &request);
            let deadline = self.deadline;
            let sleeper = async move {
                match deadline {
                    Some((at, _)) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let outcome = tokio::select! {
                r = exchange => Ok(r),
                () = self.cancel.cancelled() => Err(Interrupt::Cancelled),
                () = sleeper => Err(Interrupt::Deadline(deadline.map(|d| d.1).unwrap_or_default())),
            };
            match outcome {
                Ok(Ok(Response::Received(output))) => {
                    let mut chunks = Vec::new();
                    self.tracker.apply(output, &mut chunks);
                    self.pending.extend(chunks);
                }
                Ok(Ok(other)) => {
                    let err = self.inner.unexpected("ReceiveResponse", &other);
                    self.abort().await;
                    return Err(err);
                }
                Ok(Err(Error::Fault { fault, endpoint }))
                    if classify_fault(&fault, true) == FaultAction::PollAgain =>
                {
                    debug!(%endpoint, "receive timed out without output; polling again");
                }
                Ok(Err(e)) => {
                    if !keeps_connection(&e)
                        && let Some(lease) = self.lease.as_mut()
                    {
                        lease.session.poisoned = true;
                    }
                    self.abort().await;
                    return Err(e);
                }
                Err(interrupt) => {
                    self.abort().await;
                    let endpoint = self.inner.endpoint.clone();
                    return Err(match interrupt {
                        Interrupt::Cancelled => Error::Cancelled { endpoint },
                        Interrupt::Deadline(d) => Error::Deadline {
                            endpoint,
                            seconds: d.as_secs_f64(),
                        },
                    });
                }
            }
        }
    }

    /// Reads the command to its end and returns everything it wrote and its exit code.
    pub async fn collect(mut self) -> Result<CommandOutput> {
        let mut output = CommandOutput::default();
        while let Some(chunk) = self.next_chunk().await? {
            match chunk {
                OutputChunk::Stdout(b) => output.stdout.extend_from_slice(&b),
                OutputChunk::Stderr(b) => output.stderr.extend_from_slice(&b),
            }
        }
        output.exit_code = self.tracker.exit_code().unwrap_or(0);
        Ok(output)
    }

    /// After Done: release the command on the host and return the connection to the pool.
    async fn finish(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        if let Some(mut lease) = self.lease.take() {
            let command_id = self.tracker.command_id().to_owned();
            if let Err(e) = self.inner.terminate(&mut lease.session, &command_id).await {
                debug!(endpoint = %self.inner.endpoint, error = %e, "signal after completion failed");
                if !keeps_connection(&e) {
                    lease.session.poisoned = true;
                }
            }
            self.inner.release(lease);
        }
    }

    /// Before Done: terminate the command (on a fresh connection if the current one was
    /// abandoned mid-request) and return the connection to the pool.
    async fn abort(&mut self) {
        self.finished = true;
        if let Some(mut lease) = self.lease.take() {
            let command_id = self.tracker.command_id().to_owned();
            let terminate = self.inner.terminate(&mut lease.session, &command_id);
            match tokio::time::timeout(Duration::from_secs(10), terminate).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    warn!(endpoint = %self.inner.endpoint, error = %e, "could not terminate the command");
                    if !keeps_connection(&e) {
                        lease.session.poisoned = true;
                    }
                }
                Err(_) => {
                    warn!(endpoint = %self.inner.endpoint, "terminating the command timed out");
                    lease.session.poisoned = true;
                }
            }
            self.inner.release(lease);
        }
    }
}

impl Drop for RunningCommand {
    fn drop(&mut self) {
        let Some(mut lease) = self.lease.take() else {
            return;
        };
        let inner = Arc::clone(&self.inner);
        let command_id = self.tracker.command_id().to_owned();
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        handle.spawn(async move {
            let terminate = inner.terminate(&mut lease.session, &command_id);
            match tokio::time::timeout(Duration::from_secs(10), terminate).await {
                Ok(Ok(())) => inner.release(lease),
                _ => debug!(endpoint = %inner.endpoint, "dropped command could not be terminated"),
            }
        });
    }
}
