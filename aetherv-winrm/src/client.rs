//! The async WinRM client: a builder, a bounded pool of authenticated connections each with a
//! reusable shell, and commands whose output streams while they run.
//!
//! Cost model (what the protocol core makes possible): one NTLM handshake per connection, one
//! shell per connection reused for up to
//! [`ShellPolicy::max_commands_per_shell`](crate::shell::ShellPolicy::max_commands_per_shell)
//! commands, so a command without stdin costs Command + Receive (+ more Receives for long
//! output) + Signal.
//!
//! Where things are: [`ClientBuilder`] and [`EncryptionMode`] (the configuration, validated by
//! [`ClientBuilder::build`]) in `builder.rs`; the pool of connections, their authentication and
//! the WS-Man exchange on one connection in `pool.rs`; [`CommandSpec`], [`CommandOutput`] and
//! the streaming [`RunningCommand`] in `command.rs`; [`Client`] itself, which checks a
//! connection out of the pool and starts a command on it, here. This module is feature
//! `client`.

mod builder;
mod command;
mod pool;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tracing::debug;

use crate::envelope::{Request, Response};
use crate::error::{Error, Result};
use crate::powershell;
use crate::shell::{FaultAction, ReceiveTracker, classify_fault};

pub use crate::shell::OutputChunk;
pub use builder::{ClientBuilder, EncryptionMode};
pub use command::{CommandOutput, CommandSpec, RunningCommand};
use pool::{Inner, Session, keeps_connection};

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

    /// Checks that the endpoint answers at all, within `deadline`: one unauthenticated POST
    /// on a fresh connection (so it never waits for a busy shell or pooled connection). Any
    /// HTTP answer, `401` included, proves the WinRM service is alive; no answer in time
    /// (a frozen or hung host still accepts the TCP connection) or a failed connection is
    /// an error. Sends no credentials and runs nothing on the host.
    ///
    /// # Errors
    ///
    /// [`Error::Transport`] when the connection fails or no answer arrives within `deadline`.
    pub async fn probe(&self, deadline: Duration) -> Result<()> {
        let inner = &self.inner;
        let transport_error = |source| Error::Transport {
            endpoint: inner.endpoint.clone(),
            source,
        };
        let transport = inner.connector.connect().map_err(transport_error)?;
        let request = crate::transport::HttpRequest {
            authorization: None,
            content_type: Some("application/soap+xml;charset=UTF-8".to_owned()),
            body: Bytes::new(),
        };
        match tokio::time::timeout(deadline, transport.post(request)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(source)) => Err(transport_error(source)),
            Err(_) => Err(transport_error(crate::transport::TransportError::Timeout(
                deadline,
            ))),
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
