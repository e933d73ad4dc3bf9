//! The sans-IO command lifecycle: what a Receive response means, what a fault means, and when
//! a shell should be replaced.
//!
//! The async client asks these types what to do and performs the exchanges; nothing here does
//! I/O or reads the clock.

use bytes::Bytes;

use crate::envelope::{ReceiveOutput, Stream, WsmanFault};

/// A piece of output from a running command, in arrival order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputChunk {
    /// Bytes written to standard output.
    Stdout(Bytes),
    /// Bytes written to standard error (for PowerShell usually CLIXML; see [`crate::clixml`]).
    Stderr(Bytes),
}

/// What the client should do after a fault during an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultAction {
    /// A Receive timed out without output: send the same Receive again.
    PollAgain,
    /// The shell (or command) no longer exists on the host.
    ShellGone,
    /// Any other fault: report it to the caller.
    Fail,
}

/// Classifies a fault received in answer to a request of the given kind.
pub fn classify_fault(fault: &WsmanFault, during_receive: bool) -> FaultAction {
    if during_receive && fault.is_timed_out() {
        FaultAction::PollAgain
    } else if fault.is_shell_gone() {
        FaultAction::ShellGone
    } else {
        FaultAction::Fail
    }
}

/// Tracks one command through its Receive responses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiveTracker {
    command_id: String,
    exit_code: Option<i64>,
    done: bool,
    receives: u64,
}

impl ReceiveTracker {
    /// Starts tracking the command the host identified as `command_id`.
    pub fn new(command_id: impl Into<String>) -> Self {
        Self {
            command_id: command_id.into(),
            exit_code: None,
            done: false,
            receives: 0,
        }
    }

    /// The host's id for the command.
    pub fn command_id(&self) -> &str {
        &self.command_id
    }

    /// Whether the host reported the command as done.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The exit code, once the command is done (Windows always reports one for Done).
    pub fn exit_code(&self) -> Option<i64> {
        self.exit_code
    }

    /// How many Receive responses were applied.
    pub fn receives(&self) -> u64 {
        self.receives
    }

    /// Applies one Receive response, appending its output chunks to `out` in order. Chunks of
    /// other commands and empty chunks are skipped.
    pub fn apply(&mut self, output: ReceiveOutput, out: &mut Vec<OutputChunk>) {
        self.receives += 1;
        for chunk in output.chunks {
            if chunk.data.is_empty() {
                continue;
            }
            if let Some(id) = &chunk.command_id
                && !id.eq_ignore_ascii_case(&self.command_id)
            {
                continue;
            }
            let data = Bytes::from(chunk.data);
            out.push(match chunk.stream {
                Stream::Stdout => OutputChunk::Stdout(data),
                Stream::Stderr => OutputChunk::Stderr(data),
            });
        }
        if let Some(state) = output.state {
            let ours = state
                .command_id
                .as_deref()
                .is_none_or(|id| id.eq_ignore_ascii_case(&self.command_id));
            if ours && state.done {
                self.done = true;
                self.exit_code = Some(state.exit_code.unwrap_or(0));
            }
        }
    }
}

/// When to replace a shell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShellPolicy {
    /// Commands run in one shell before it is deleted and a fresh one created.
    pub max_commands_per_shell: u32,
}

impl Default for ShellPolicy {
    fn default() -> Self {
        // Windows allows about 1000 commands per shell; stay well below.
        Self {
            max_commands_per_shell: 500,
        }
    }
}

/// A shell open on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenShell {
    /// The host's id for the shell.
    pub shell_id: String,
    /// Commands started in it so far.
    pub commands: u32,
}

impl OpenShell {
    /// A newly created shell.
    pub fn new(shell_id: impl Into<String>) -> Self {
        Self {
            shell_id: shell_id.into(),
            commands: 0,
        }
    }

    /// Whether the policy says this shell has served enough commands.
    pub fn exhausted(&self, policy: &ShellPolicy) -> bool {
        self.commands >= policy.max_commands_per_shell
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::envelope::{CommandState, StreamChunk};

    fn chunk(stream: Stream, id: Option<&str>, data: &[u8]) -> StreamChunk {
        StreamChunk {
            stream,
            command_id: id.map(str::to_owned),
            data: data.to_vec(),
            end: false,
        }
    }

    #[test]
    fn tracker_collects_in_order_and_finishes() {
        let mut t = ReceiveTracker::new("ABC");
        let mut out = Vec::new();
        t.apply(
            ReceiveOutput {
                chunks: vec![
                    chunk(Stream::Stdout, Some("abc"), b"one"),
                    chunk(Stream::Stderr, Some("ABC"), b"err"),
                    chunk(Stream::Stdout, Some("OTHER"), b"not ours"),
                    chunk(Stream::Stdout, None, b""),
                ],
                state: Some(CommandState {
                    command_id: Some("ABC".into()),
                    done: false,
                    exit_code: None,
                }),
            },
            &mut out,
        );
        assert!(!t.is_done());
        t.apply(
            ReceiveOutput {
                chunks: vec![chunk(Stream::Stdout, None, b"two")],
                state: Some(CommandState {
                    command_id: Some("ABC".into()),
                    done: true,
                    exit_code: Some(3),
                }),
            },
            &mut out,
        );
        assert!(t.is_done());
        assert_eq!(t.exit_code(), Some(3));
        assert_eq!(t.receives(), 2);
        assert_eq!(
            out,
            vec![
                OutputChunk::Stdout(Bytes::from_static(b"one")),
                OutputChunk::Stderr(Bytes::from_static(b"err")),
                OutputChunk::Stdout(Bytes::from_static(b"two")),
            ]
        );
    }

    #[test]
    fn done_state_of_another_command_is_ignored() {
        let mut t = ReceiveTracker::new("A");
        t.apply(
            ReceiveOutput {
                chunks: vec![],
                state: Some(CommandState {
                    command_id: Some("B".into()),
                    done: true,
                    exit_code: Some(0),
                }),
            },
            &mut Vec::new(),
        );
        assert!(!t.is_done());
    }

    #[test]
    fn faults_are_classified() {
        assert_eq!(
            classify_fault(&WsmanFault::timed_out(), true),
            FaultAction::PollAgain
        );
        assert_eq!(
            classify_fault(&WsmanFault::timed_out(), false),
            FaultAction::Fail
        );
        assert_eq!(
            classify_fault(&WsmanFault::invalid_selectors("gone"), false),
            FaultAction::ShellGone
        );
    }

    #[test]
    fn shell_policy() {
        let policy = ShellPolicy {
            max_commands_per_shell: 2,
        };
        let mut s = OpenShell::new("S");
        assert!(!s.exhausted(&policy));
        s.commands = 2;
        assert!(s.exhausted(&policy));
    }
}
