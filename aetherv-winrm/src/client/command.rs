//! What to run ([`CommandSpec`]), its complete result ([`CommandOutput`]), and a command in
//! flight ([`RunningCommand`]) whose output streams under a deadline and a cancel token.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::pool::{Inner, Lease, keeps_connection};
use crate::clixml;
use crate::envelope::{Request, Response};
use crate::error::{Error, Result};
use crate::powershell;
use crate::shell::{FaultAction, OutputChunk, ReceiveTracker, classify_fault};

/// What to run: a command line, its stdin, and how long it may take.
#[derive(Debug, Clone, Default)]
pub struct CommandSpec {
    pub(super) command: String,
    pub(super) arguments: Vec<String>,
    pub(super) stdin: Option<Bytes>,
    pub(super) stdin_script: Option<String>,
    pub(super) deadline: Option<Duration>,
    pub(super) cancel: Option<CancellationToken>,
    pub(super) powershell: bool,
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

/// A command running on the host. Read its output with [`next_chunk`](Self::next_chunk) or
/// [`collect`](Self::collect).
///
/// Dropping it before the command finished terminates the command in the background.
pub struct RunningCommand {
    pub(super) inner: Arc<Inner>,
    pub(super) lease: Option<Lease>,
    pub(super) tracker: ReceiveTracker,
    pub(super) pending: VecDeque<OutputChunk>,
    pub(super) deadline: Option<(tokio::time::Instant, Duration)>,
    pub(super) cancel: CancellationToken,
    pub(super) finished: bool,
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
