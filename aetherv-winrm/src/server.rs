//! The WS-Management endpoint (feature `server`): a WinRM listener with Windows semantics.
//!
//! [`WsmanServer::bind`] starts an HTTP (or, with [`TlsConfig`], HTTPS) listener that serves
//! `POST /wsman` the way the WinRM service of a default Windows Server does:
//!
//! - **Authentication.** A request without valid credentials gets `401` with
//!   `WWW-Authenticate: Negotiate` and `WWW-Authenticate: NTLM` (plus `Basic realm="WSMAN"`
//!   over TLS only). Raw NTLMSSP tokens are accepted under both the `Negotiate` and the `NTLM`
//!   scheme. SPNEGO-wrapped tokens and Kerberos get the same `401` unless
//!   `ServerConfig::kerberos` (feature `kerberos`) is on: then `Kerberos` tokens and
//!   non-NTLMSSP `Negotiate` tokens are accepted with the keytab of `KRB5_KTNAME` (one leg,
//!   the mutual-authentication token in `WWW-Authenticate` of the `200`), and
//!   `multipart/encrypted` bodies of either protocol (`HTTP-Kerberos-session-encrypted`,
//!   `HTTP-SPNEGO-session-encrypted`) are unwrapped with the GSS context and answered in kind.
//!   NTLM authenticates the TCP connection: NEGOTIATE gets `401` with the CHALLENGE under the
//!   scheme the client used, AUTHENTICATE authenticates the connection (an empty AUTHENTICATE
//!   request gets `200` with an empty body, as pywinrm and this crate's client expect, a
//!   non-empty one is processed). Refused credentials get a fresh `401`. Basic (TLS only) is
//!   checked on every request. User names match case-insensitively, with or without a
//!   `DOMAIN\` prefix or an `@domain` suffix.
//! - **Message encryption.** Over plain HTTP a connection authenticated with NTLM must send
//!   `multipart/encrypted` bodies sealed with its NTLM session, unless
//!   [`ServerConfig::allow_unencrypted`] is set. Responses to sealed requests are sealed.
//!   A plaintext SOAP body that Windows would refuse is answered with `401` and the challenge
//!   list, and the connection loses its authentication: that is what Windows' WinRM service
//!   sends for unencrypted messages when `AllowUnencrypted=false` (seen in wire captures of
//!   NTLM clients without sealing; pywinrm reports it as "the specified credentials were
//!   rejected by the server"). A sealed body on a connection without an NTLM session also gets
//!   `401`. Over HTTPS plaintext is always accepted.
//! - **The shell protocol.** Create, Command, Send, Receive, Signal and Delete of the `cmd`
//!   resource, with shells that belong to the *user* (a shell created on one connection can be
//!   used on another connection of the same user), uppercase GUIDs for shell and command ids,
//!   `MaxShellsPerUser`, the Windows faults for unknown shells and commands, and Receives that
//!   wait for output up to the request's `OperationTimeout` (answering `w:TimedOut`
//!   otherwise) and return as much output as fits both the client's `MaxEnvelopeSize` and
//!   [`ServerConfig::max_envelope_size`]. Malformed envelopes get `w:SchemaValidationError`
//!   and unknown actions `a:ActionNotSupported`, with HTTP 500 (sealed when the connection
//!   seals). Faults carry the DNS host name as `Machine`.
//!
//! Commands are run by a [`CommandHandler`] as tokio tasks: stdin arrives on a channel and
//! output goes to an [`OutputSink`] with back-pressure. A terminate signal, a shell Delete or
//! an idle shell timing out aborts the handler's future.
//!
//! The protocol logic is sans-IO: a per-connection state machine (authentication, unsealing,
//! sealing) that takes a request and returns either a response or a SOAP envelope to
//! dispatch, the shared shell table, and a pure output chunker. A thin hyper/tokio layer
//! accepts connections, reads bodies, asks the [`Interceptor`] (fault injection), and writes
//! responses. [`ServerHandle::go_down`] and [`ServerHandle::come_up`] simulate a host outage
//! while keeping the shells.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::envelope::{DEFAULT_MAX_ENVELOPE_SIZE, Stream, WsmanFault};
use crate::ntlm::AcceptorIdentity;
use crate::secret::Secret;

mod chunker;
mod connection;
mod listener;
mod shells;
mod tls;

pub use listener::{ServerHandle, WsmanServer};
pub use tls::TlsConfig;

/// Default `MaxShellsPerUser` of Windows.
pub const DEFAULT_MAX_SHELLS_PER_USER: usize = 30;

/// Configuration of a [`WsmanServer`].
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on, e.g. `127.0.0.1:0` for a free port.
    pub listen: SocketAddr,
    /// Accepted users and their passwords. Names match case-insensitively; `DOMAIN\user`,
    /// `user` and `user@domain` all match the bare user name.
    pub users: Vec<(String, Secret)>,
    /// NetBIOS and DNS names the NTLM CHALLENGE announces (the DNS computer name is also the
    /// `Machine` of faults).
    pub identity: AcceptorIdentity,
    /// `Some` serves HTTPS with this certificate; `None` serves plain HTTP.
    pub tls: Option<TlsConfig>,
    /// Accept plaintext SOAP after NTLM over plain HTTP (Windows' `AllowUnencrypted=true`).
    /// Default `false`: such requests are refused with `401`, as Windows does.
    pub allow_unencrypted: bool,
    /// Largest response envelope the server sends (default 153600 bytes); Receive output is
    /// split over several Receives to fit both this and the client's `MaxEnvelopeSize`.
    pub max_envelope_size: u32,
    /// Shells one user may have open at once (default 30); one more gets the quota fault.
    pub max_shells_per_user: usize,
    /// Upper bound on how long a Receive (or a Send waiting for a busy handler) is held before
    /// the `w:TimedOut` fault; `None` uses the request's `OperationTimeout` alone.
    pub max_receive_wait: Option<Duration>,
    /// Accept Kerberos (`Kerberos` and `Negotiate` with SPNEGO or raw Kerberos tokens) with the
    /// acceptor keytab of the environment (`KRB5_KTNAME`), message encryption included.
    /// Any principal with a valid ticket for the server's service principal is accepted.
    #[cfg(feature = "kerberos")]
    pub kerberos: bool,
    /// Require TLS channel bindings (RFC 5929 `tls-server-end-point`) over HTTPS, like
    /// Windows' `CbtHardeningLevel=Strict`: an NTLM AUTHENTICATE without
    /// `MsvAvChannelBindings`, or a Kerberos context without GSSAPI channel bindings, is
    /// refused with `401`. Default `false` (`Relaxed`): bindings are checked when a client
    /// sends them (wrong ones are always refused) and not required. No effect over plain HTTP.
    pub require_channel_bindings: bool,
}

impl ServerConfig {
    /// A configuration with one user and Windows' defaults: plain HTTP, encryption required,
    /// 153600-byte envelopes, 30 shells per user.
    ///
    /// `hostname` names the host in the NTLM CHALLENGE: a DNS name such as
    /// `hv01.lab.example` gives the NetBIOS computer `HV01`, the DNS domain `lab.example` and
    /// the NetBIOS domain `LAB`; a single label such as `hv01` is a workgroup host whose domain
    /// names are its own name.
    pub fn new(listen: SocketAddr, user: &str, password: Secret, hostname: &str) -> Self {
        Self {
            listen,
            users: vec![(user.to_owned(), password)],
            identity: identity_for(hostname),
            tls: None,
            allow_unencrypted: false,
            max_envelope_size: DEFAULT_MAX_ENVELOPE_SIZE,
            max_shells_per_user: DEFAULT_MAX_SHELLS_PER_USER,
            max_receive_wait: None,
            #[cfg(feature = "kerberos")]
            kerberos: false,
            require_channel_bindings: false,
        }
    }
}

/// The NTLM names of a host called `hostname`.
fn identity_for(hostname: &str) -> AcceptorIdentity {
    let hostname = hostname.trim().trim_end_matches('.');
    let netbios =
        |label: &str| -> String { label.chars().take(15).collect::<String>().to_uppercase() };
    match hostname.split_once('.') {
        Some((computer, domain)) => AcceptorIdentity {
            netbios_domain: netbios(domain.split('.').next().unwrap_or(domain)),
            netbios_computer: netbios(computer),
            dns_domain: domain.to_owned(),
            dns_computer: hostname.to_owned(),
        },
        None => AcceptorIdentity {
            netbios_domain: netbios(hostname),
            netbios_computer: netbios(hostname),
            dns_domain: hostname.to_owned(),
            dns_computer: hostname.to_owned(),
        },
    }
}

/// Why the server could not start (or restart).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The listening socket could not be created or bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The certificate or key could not be used for TLS.
    #[error("invalid TLS configuration: {0}")]
    Tls(String),
    /// A self-signed certificate could not be generated.
    #[error("cannot generate a self-signed certificate: {0}")]
    Certificate(String),
    /// The configuration is inconsistent.
    #[error("invalid server configuration: {0}")]
    Config(String),
    /// [`ServerHandle::shutdown`] was called; the server cannot come up again.
    #[error("the server has been shut down")]
    ShutDown,
}

/// One command to run, as the client asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRequest {
    /// The user that runs it (the name as configured in [`ServerConfig::users`]).
    pub user: String,
    /// The shell it runs in.
    pub shell_id: String,
    /// Its identifier (uppercase GUID).
    pub command_id: String,
    /// The program or command line.
    pub command: String,
    /// The arguments, in order.
    pub arguments: Vec<String>,
    /// The shell's environment variables, in order.
    pub environment: Vec<(String, String)>,
    /// The shell's working directory, when the client set one.
    pub working_directory: Option<String>,
}

/// One piece of stdin sent by the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StdinChunk {
    /// The bytes (may be empty, typically with `end`).
    pub data: Bytes,
    /// The client closed stdin after this chunk.
    pub end: bool,
}

/// An event on a command's output queue.
#[derive(Debug)]
enum OutputEvent {
    Data(Stream, Bytes),
    Exit(i64),
}

/// Where a [`CommandHandler`] writes output.
///
/// Cloneable. The queue is bounded: a write waits while the client is not collecting output
/// (back-pressure). Writes after the command was terminated are discarded.
#[derive(Debug, Clone)]
pub struct OutputSink {
    tx: mpsc::Sender<OutputEvent>,
}

impl OutputSink {
    /// Writes to standard output.
    pub async fn stdout(&self, data: impl Into<Bytes>) {
        self.write(Stream::Stdout, data.into()).await;
    }

    /// Writes to standard error.
    pub async fn stderr(&self, data: impl Into<Bytes>) {
        self.write(Stream::Stderr, data.into()).await;
    }

    /// Whether the command is gone (terminated or its shell deleted): further writes are
    /// discarded.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    async fn write(&self, stream: Stream, data: Bytes) {
        if data.is_empty() {
            return;
        }
        // A closed queue means the command was terminated; its output is no longer wanted.
        let _ = self.tx.send(OutputEvent::Data(stream, data)).await;
    }
}

/// The I/O of one command: its stdin and its output.
#[derive(Debug)]
pub struct CommandIo {
    /// Stdin chunks in the order the client sent them. The channel closes after a chunk with
    /// `end` (or when the command is terminated).
    pub stdin: mpsc::Receiver<StdinChunk>,
    /// Where to write stdout and stderr.
    pub output: OutputSink,
}

/// Runs the commands clients start.
#[async_trait::async_trait]
pub trait CommandHandler: Send + Sync + 'static {
    /// Runs one command; returns its exit code. Terminate signals cancel the future (drop it).
    async fn run(&self, request: CommandRequest, io: CommandIo) -> i64;
}

/// What the [`Interceptor`] learns about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInfo {
    /// The connection (numbered from 1 in accept order).
    pub connection: u64,
    /// The client's address.
    pub remote: SocketAddr,
    /// The WS-Man action URI when the body could be read (unsealed), `None` for handshake
    /// legs and unreadable bodies.
    pub action: Option<String>,
}

/// What to do with a request (see [`Interceptor`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Intercept {
    /// Process it normally.
    Continue,
    /// Wait this long, then process it normally.
    Delay(Duration),
    /// Answer with this bare HTTP status (no body) instead.
    Status(u16),
    /// Answer with this SOAP fault (HTTP 500, sealed when the request was) instead.
    Fault(WsmanFault),
    /// Close the connection without answering.
    DropConnection,
}

/// Fault injection and observation hook, consulted for every HTTP request after its body was
/// read (and unsealed) and before it is processed.
#[async_trait::async_trait]
pub trait Interceptor: Send + Sync + 'static {
    /// Decides what happens to the request.
    async fn intercept(&self, info: &RequestInfo) -> Intercept;
}

/// What the server has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerCounters {
    /// HTTP requests received (every request, handshake legs and refused ones included).
    pub requests: u64,
    /// TCP connections accepted.
    pub connections: u64,
    /// NTLM handshakes started: NEGOTIATE messages received, whether or not the handshake then
    /// succeeded.
    pub handshakes: u64,
    /// Shells created.
    pub shells: u64,
    /// Commands started.
    pub commands: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_from_host_names() {
        let id = identity_for("hv01.lab.example");
        assert_eq!(id.netbios_computer, "HV01");
        assert_eq!(id.netbios_domain, "LAB");
        assert_eq!(id.dns_domain, "lab.example");
        assert_eq!(id.dns_computer, "hv01.lab.example");
        let id = identity_for("standalone-hyperv-host");
        assert_eq!(id.netbios_computer, "STANDALONE-HYPE");
        assert_eq!(id.netbios_domain, "STANDALONE-HYPE");
        assert_eq!(id.dns_computer, "standalone-hyperv-host");
    }
}
