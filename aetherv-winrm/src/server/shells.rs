//! The shared shell table: shells owned by users, commands run by the handler as tokio tasks.
//!
//! Bookkeeping (ids, ownership, quotas, idle expiry) happens under one short-lived lock; the
//! waits of Send and Receive happen on the command's own queues outside it. The clock is
//! passed in.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::chunker::PendingOutput;
use super::connection::Principal;
use super::{CommandHandler, CommandIo, CommandRequest, OutputEvent, OutputSink, StdinChunk};
use crate::envelope::{
    RESOURCE_URI_CMD, ReceiveOutput, Request, RequestHeader, Response, ShellOptions, Signal,
    WsmanFault,
};

/// Output events a command may queue before its writes wait for a Receive.
const OUTPUT_QUEUE: usize = 64;
/// Stdin chunks queued for a handler that is not reading yet.
const STDIN_QUEUE: usize = 16;
/// Windows' default shell `IdleTimeOut` (two hours).
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(7200);
/// The exit code of a process ended by Ctrl+C or Ctrl+Break (`STATUS_CONTROL_C_EXIT`).
pub(crate) const CONTROL_C_EXIT: i64 = 0xC000_013A;
/// The exit code reported when a handler ended without returning one (it panicked).
pub(crate) const ABNORMAL_EXIT: i64 = 1;

/// Limits of the table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_shells_per_user: usize,
    pub max_envelope_size: u32,
    pub max_receive_wait: Option<Duration>,
}

/// Events the table reports to the server's counters.
pub(crate) trait Observer: Send + Sync {
    fn shell_created(&self);
    fn command_started(&self);
}

struct Shell {
    owner: String,
    options: ShellOptions,
    commands: HashMap<String, Arc<Command>>,
    last_used: Instant,
}

struct Command {
    task: AbortHandle,
    stdin: tokio::sync::Mutex<Option<mpsc::Sender<StdinChunk>>>,
    output: tokio::sync::Mutex<OutputQueue>,
}

struct OutputQueue {
    rx: mpsc::Receiver<OutputEvent>,
    pending: PendingOutput,
}

impl OutputQueue {
    fn accept(&mut self, event: Option<OutputEvent>) {
        match event {
            Some(OutputEvent::Data(stream, data)) => self.pending.push(stream, data),
            Some(OutputEvent::Exit(code)) => {
                self.pending.exit.get_or_insert(code);
            }
            None => {
                self.pending.exit.get_or_insert(ABNORMAL_EXIT);
            }
        }
    }

    /// Moves queued events into `pending` until `limit` bytes wait or the queue is empty.
    fn drain_ready(&mut self, limit: usize) {
        while self.pending.exit.is_none() && self.pending.bytes < limit {
            match self.rx.try_recv() {
                Ok(event) => self.accept(Some(event)),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => self.accept(None),
            }
        }
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        for command in self.commands.values() {
            command.task.abort();
        }
    }
}

/// All shells of the server.
pub(crate) struct ShellTable {
    shells: Mutex<HashMap<String, Shell>>,
    handler: Arc<dyn CommandHandler>,
    limits: Limits,
    observer: Arc<dyn Observer>,
}

/// A lookup key: ids are uppercase GUIDs, matched case-insensitively.
fn id_key(id: &str) -> String {
    id.trim().to_uppercase()
}

fn new_id() -> String {
    uuid::Uuid::new_v4().hyphenated().to_string().to_uppercase()
}

fn resource_not_found(uri: &str) -> WsmanFault {
    WsmanFault::new(
        "s:Sender",
        Some("w:DestinationUnreachable"),
        "The WS-Management service cannot process the request because the resource URI is not supported.",
    )
    .with_detail(
        WsmanFault::RESOURCE_NOT_FOUND,
        format!("The WS-Management service cannot process the request. The resource URI {uri} was not found."),
    )
}

impl ShellTable {
    pub fn new(
        handler: Arc<dyn CommandHandler>,
        limits: Limits,
        observer: Arc<dyn Observer>,
    ) -> Self {
        Self {
            shells: Mutex::new(HashMap::new()),
            handler,
            limits,
            observer,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Shell>> {
        self.shells.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Shells open now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Deletes every shell, aborting their commands.
    pub fn clear(&self) {
        let drained: Vec<Shell> = self.lock().drain().map(|(_, s)| s).collect();
        drop(drained);
    }

    /// How long a Receive or Send may wait.
    fn wait(&self, header: &RequestHeader) -> Duration {
        match self.limits.max_receive_wait {
            Some(cap) => header.operation_timeout.min(cap),
            None => header.operation_timeout,
        }
    }

    /// Handles one request of `principal`.
    pub async fn handle(
        &self,
        principal: &Principal,
        header: &RequestHeader,
        request: Request,
        now: Instant,
    ) -> Result<Response, Box<WsmanFault>> {
        if !header
            .resource_uri
            .trim()
            .eq_ignore_ascii_case(RESOURCE_URI_CMD)
        {
            return Err(Box::new(resource_not_found(&header.resource_uri)));
        }
        match request {
            Request::Create(options) => self.create(principal, options, now),
            Request::Delete { shell_id } => {
                let removed = {
                    let mut shells = self.lock();
                    self.expire(&mut shells, now);
                    let key = id_key(&shell_id);
                    match shells.get(&key) {
                        Some(shell) if shell.owner == principal.key => shells.remove(&key),
                        _ => None,
                    }
                };
                match removed {
                    Some(shell) => {
                        drop(shell);
                        Ok(Response::Deleted)
                    }
                    None => Err(Box::new(WsmanFault::shell_not_found(&shell_id))),
                }
            }
            Request::Command {
                shell_id,
                command,
                arguments,
                ..
            } => self.command(principal, &shell_id, command, arguments, now),
            Request::Send {
                shell_id,
                command_id,
                data,
                end,
                ..
            } => {
                let command = self.command_of(principal, &shell_id, &command_id, now)?;
                let mut stdin = command.stdin.lock().await;
                if let Some(tx) = stdin.as_ref() {
                    let chunk = StdinChunk {
                        data: data.into(),
                        end,
                    };
                    match tokio::time::timeout(self.wait(header), tx.send(chunk)).await {
                        // Sent, or the handler no longer reads stdin (input is discarded).
                        Ok(_) => {}
                        Err(_) => return Err(Box::new(WsmanFault::timed_out())),
                    }
                }
                if end {
                    *stdin = None;
                }
                Ok(Response::Sent)
            }
            Request::Receive {
                shell_id,
                command_id,
                ..
            } => {
                let command = self.command_of(principal, &shell_id, &command_id, now)?;
                let limit = header.max_envelope_size.min(self.limits.max_envelope_size) as usize;
                let deadline = now + self.wait(header);
                let output = receive(&command, limit, deadline, &id_key(&command_id)).await?;
                Ok(Response::Received(output))
            }
            Request::Signal {
                shell_id,
                command_id,
                signal,
            } => {
                let command = {
                    let mut shells = self.lock();
                    self.expire(&mut shells, now);
                    let shell = owned(&mut shells, principal, &shell_id, now)?;
                    let key = id_key(&command_id);
                    match signal {
                        Signal::Terminate => shell.commands.remove(&key),
                        Signal::CtrlC | Signal::CtrlBreak => shell.commands.get(&key).cloned(),
                    }
                    .ok_or_else(|| Box::new(WsmanFault::command_not_found()))?
                };
                command.task.abort();
                if signal != Signal::Terminate {
                    // Like a console process killed by Ctrl+C: what it wrote stays receivable.
                    let mut output = command.output.lock().await;
                    while output.pending.exit.is_none() {
                        match output.rx.try_recv() {
                            Ok(event) => output.accept(Some(event)),
                            Err(_) => break,
                        }
                    }
                    output.pending.exit.get_or_insert(CONTROL_C_EXIT);
                }
                Ok(Response::Signalled)
            }
        }
    }

    fn create(
        &self,
        principal: &Principal,
        options: ShellOptions,
        now: Instant,
    ) -> Result<Response, Box<WsmanFault>> {
        let mut shells = self.lock();
        self.expire(&mut shells, now);
        let open = shells.values().filter(|s| s.owner == principal.key).count();
        if open >= self.limits.max_shells_per_user {
            let max = u32::try_from(self.limits.max_shells_per_user).unwrap_or(u32::MAX);
            return Err(Box::new(WsmanFault::shell_quota(max)));
        }
        let shell_id = new_id();
        shells.insert(
            shell_id.clone(),
            Shell {
                owner: principal.key.clone(),
                options,
                commands: HashMap::new(),
                last_used: now,
            },
        );
        drop(shells);
        self.observer.shell_created();
        Ok(Response::Created { shell_id })
    }

    fn command(
        &self,
        principal: &Principal,
        shell_id: &str,
        command: String,
        arguments: Vec<String>,
        now: Instant,
    ) -> Result<Response, Box<WsmanFault>> {
        let mut shells = self.lock();
        self.expire(&mut shells, now);
        let shell = owned(&mut shells, principal, shell_id, now)?;
        let command_id = new_id();
        let request = CommandRequest {
            user: principal.name.clone(),
            shell_id: id_key(shell_id),
            command_id: command_id.clone(),
            command,
            arguments,
            environment: shell.options.environment.clone(),
            working_directory: shell.options.working_directory.clone(),
        };
        let (out_tx, out_rx) = mpsc::channel(OUTPUT_QUEUE);
        let (in_tx, in_rx) = mpsc::channel(STDIN_QUEUE);
        let io = CommandIo {
            stdin: in_rx,
            output: OutputSink { tx: out_tx.clone() },
        };
        let handler = Arc::clone(&self.handler);
        let task = tokio::spawn(async move {
            let code = handler.run(request, io).await;
            // The exit code follows everything the handler wrote.
            let _ = out_tx.send(OutputEvent::Exit(code)).await;
        });
        shell.commands.insert(
            command_id.clone(),
            Arc::new(Command {
                task: task.abort_handle(),
                stdin: tokio::sync::Mutex::new(Some(in_tx)),
                output: tokio::sync::Mutex::new(OutputQueue {
                    rx: out_rx,
                    pending: PendingOutput::default(),
                }),
            }),
        );
        drop(shells);
        self.observer.command_started();
        Ok(Response::CommandStarted { command_id })
    }

    fn command_of(
        &self,
        principal: &Principal,
        shell_id: &str,
        command_id: &str,
        now: Instant,
    ) -> Result<Arc<Command>, Box<WsmanFault>> {
        let mut shells = self.lock();
        self.expire(&mut shells, now);
        let shell = owned(&mut shells, principal, shell_id, now)?;
        shell
            .commands
            .get(&id_key(command_id))
            .cloned()
            .ok_or_else(|| Box::new(WsmanFault::command_not_found()))
    }

    /// Deletes shells idle for longer than their `IdleTimeOut`, as Windows does.
    fn expire(&self, shells: &mut HashMap<String, Shell>, now: Instant) {
        shells.retain(|_, shell| {
            let idle = shell.options.idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT);
            now.saturating_duration_since(shell.last_used) <= idle
        });
    }
}

/// The shell `shell_id` if `principal` owns it (another user's shell does not exist for them);
/// marks it used.
fn owned<'a>(
    shells: &'a mut HashMap<String, Shell>,
    principal: &Principal,
    shell_id: &str,
    now: Instant,
) -> Result<&'a mut Shell, Box<WsmanFault>> {
    match shells.get_mut(&id_key(shell_id)) {
        Some(shell) if shell.owner == principal.key => {
            shell.last_used = now;
            Ok(shell)
        }
        _ => Err(Box::new(WsmanFault::shell_not_found(shell_id))),
    }
}

/// Waits for output (or the end) of `command` until `deadline`, then takes what fits `limit`.
async fn receive(
    command: &Command,
    limit: usize,
    deadline: Instant,
    command_id: &str,
) -> Result<ReceiveOutput, Box<WsmanFault>> {
    let mut output = match tokio::time::timeout_at(deadline, command.output.lock()).await {
        Ok(guard) => guard,
        Err(_) => return Err(Box::new(WsmanFault::timed_out())),
    };
    output.drain_ready(limit);
    if output.pending.pieces.is_empty() && output.pending.exit.is_none() {
        match tokio::time::timeout_at(deadline, output.rx.recv()).await {
            Ok(event) => output.accept(event),
            Err(_) => return Err(Box::new(WsmanFault::timed_out())),
        }
        output.drain_ready(limit);
    }
    // Output has arrived but the command is still running: give it a short moment to finish
    // or to fill the envelope, so a quick command's output and its exit travel in one
    // ReceiveResponse instead of two.
    let linger = (Instant::now() + RECEIVE_LINGER).min(deadline);
    while output.pending.exit.is_none() && output.pending.bytes < limit {
        match tokio::time::timeout_at(linger, output.rx.recv()).await {
            Ok(event) => {
                output.accept(event);
                output.drain_ready(limit);
            }
            Err(_) => break,
        }
    }
    output.pending.take(limit, command_id)
}

/// How long a Receive that already has output waits for more output or the command's end.
const RECEIVE_LINGER: Duration = Duration::from_millis(20);
