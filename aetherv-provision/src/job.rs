//! The job engine: a job is a typed workflow of host steps with progress, logs, cancellation
//! and compensation, independent of what the steps do.
//!
//! A workflow ([`Workflow`]) is a sans-IO state machine: it is fed [`Event`]s (the start, the
//! result of a host call, the end of a wait, a cancellation) together with the time elapsed
//! since the job started, and answers with the next [`Action`]: call the host
//! ([`Action::CallHost`]), wait ([`Action::Wait`]), undo something it created
//! ([`Action::Compensate`]), or stop ([`Action::Done`]). Progress and log lines accumulate in
//! the machine and are collected with [`Workflow::drain`]. The machine never reads the clock
//! and never touches the network, so tests drive it step by step.
//!
//! [`run`] is the thin tokio driver: it executes each action against an
//! `Arc<dyn HyperVHost>`, bounds every call by the timeout the machine chose, forwards progress
//! and logs to a sink, and turns a [`CancellationToken`] into [`Event::Cancel`]. Compensation
//! calls are never cancelled: once a job is cleaning up, it finishes cleaning up.
//!
//! Host calls are plain data: [`HostCall`], answered by [`HostReply`], is aetherv-hyperv's one
//! list of host operations (re-exported here), so the same engine serves provisioning,
//! deletion and the migration and maintenance workflows to come.
//!
//! Invariant: nothing that passes through this module carries a plaintext secret; KVP items
//! written to hosts are ciphertext, and `Debug` of [`HostCall`] prints KVP keys only.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub use aetherv_hyperv::ops::{HostCall, HostReply};
use aetherv_hyperv::ops::{HyperVHost, VmId};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::error::Result;

/// A job's identity, e.g. a UUID; it appears in the VM notes marker of provisioned VMs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct JobId(pub String);

impl JobId {
    /// A fresh random id (UUID v4).
    pub fn random() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for JobId {
    fn from(id: &str) -> Self {
        Self(id.to_owned())
    }
}

/// How far a job is: the step it is in, an overall percentage and a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Progress {
    /// Step name, e.g. `Provisioning.CopyImage`.
    pub step: &'static str,
    /// 0..=100.
    pub percent: u8,
    /// What is happening.
    pub message: String,
}

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Normal operation.
    Info,
    /// Something the operator should look at (dropped fields, cleanup problems).
    Warn,
    /// A step failed.
    Error,
}

/// How a step ended when it did not succeed (a step that succeeded simply gives way to the
/// next one's progress).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepEnd {
    /// The step failed; the job fails (after compensation).
    Failed,
    /// The job was cancelled during the step.
    Cancelled,
}

/// Something a job reports while it runs. Never contains secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
#[non_exhaustive]
pub enum JobEvent {
    /// Progress moved.
    Progress {
        /// Time since the job started.
        #[serde(with = "millis")]
        at: Duration,
        /// Where the job is.
        progress: Progress,
    },
    /// A log line.
    Log {
        /// Time since the job started.
        #[serde(with = "millis")]
        at: Duration,
        /// Severity.
        level: LogLevel,
        /// The line.
        message: String,
    },
    /// A step ended without succeeding. Progress events after it belong to the compensation.
    #[serde(rename = "step_ended")]
    StepEnded {
        /// Time since the job started.
        #[serde(with = "millis")]
        at: Duration,
        /// The step, e.g. `Provisioning.PreChecks`.
        step: &'static str,
        /// How it ended.
        end: StepEnd,
    },
    /// The job's VM exists on its host from now on (a provisioning job registered it), so the
    /// job can name it while it runs.
    #[serde(rename = "vm_registered")]
    VmRegistered {
        /// Time since the job started.
        #[serde(with = "millis")]
        at: Duration,
        /// The VM's id.
        vm_id: VmId,
    },
    /// The steps the workflow means to run, in order, announced when it starts, so that the
    /// record of a job that ends early can list the steps it skipped.
    Plan {
        /// Time since the job started.
        #[serde(with = "millis")]
        at: Duration,
        /// The step names.
        steps: Vec<&'static str>,
    },
}

mod millis {
    use std::time::Duration;

    pub(super) fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u128(d.as_millis())
    }
}

/// Collects the [`JobEvent`]s a machine produces; machines embed one.
#[derive(Debug, Default)]
pub struct EventLog {
    pending: Vec<JobEvent>,
    now: Duration,
}

impl EventLog {
    /// Sets the time stamped on the following events.
    pub fn at(&mut self, now: Duration) {
        self.now = now;
    }

    /// Records progress.
    pub fn progress(&mut self, step: &'static str, percent: u8, message: impl Into<String>) {
        self.pending.push(JobEvent::Progress {
            at: self.now,
            progress: Progress {
                step,
                percent: percent.min(100),
                message: message.into(),
            },
        });
    }

    /// Announces the steps the workflow means to run, in order.
    pub fn plan(&mut self, steps: Vec<&'static str>) {
        self.pending.push(JobEvent::Plan {
            at: self.now,
            steps,
        });
    }

    /// Records that `step` ended without succeeding.
    pub fn step_ended(&mut self, step: &'static str, end: StepEnd) {
        self.pending.push(JobEvent::StepEnded {
            at: self.now,
            step,
            end,
        });
    }

    /// Records that the job's VM now exists, with its id.
    pub fn vm_registered(&mut self, vm_id: VmId) {
        self.pending.push(JobEvent::VmRegistered {
            at: self.now,
            vm_id,
        });
    }

    /// Records a log line.
    pub fn log(&mut self, level: LogLevel, message: impl Into<String>) {
        self.pending.push(JobEvent::Log {
            at: self.now,
            level,
            message: message.into(),
        });
    }

    /// Takes the events recorded since the last call.
    pub fn drain(&mut self) -> Vec<JobEvent> {
        std::mem::take(&mut self.pending)
    }
}

/// Why a host call produced no reply.
#[derive(Debug)]
#[non_exhaustive]
pub enum CallError {
    /// The host answered with an error.
    Host(aetherv_hyperv::Error),
    /// No answer within the step's timeout; whether the call took effect is unknown.
    TimedOut(Duration),
}

impl CallError {
    /// Whether the host definitely did not act: a typed refusal from the host script, as
    /// opposed to a timeout, a transport failure or unreadable output, after which the call may
    /// or may not have taken effect.
    pub fn is_definite(&self) -> bool {
        use aetherv_hyperv::Error as E;
        matches!(
            self,
            Self::Host(
                E::UnknownVm { .. }
                    | E::VmExists { .. }
                    | E::UnknownImage { .. }
                    | E::InvalidVmState { .. }
                    | E::InsufficientMemory { .. }
                    | E::InsufficientStorage { .. }
                    | E::ScriptFailed { .. }
                    | E::InvalidRequest { .. }
                    | E::SharedDisk { .. }
            )
        )
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Host(e) => e.fmt(f),
            Self::TimedOut(after) => write!(f, "no answer within {}s", after.as_secs_f64()),
        }
    }
}

/// What a workflow is told.
// One event is moved per host call (against a WinRM round trip), so the size of a reply
// (an inventory with its digest) costs nothing worth a box at every match.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// The job starts (the first event).
    Start,
    /// The last [`Action::CallHost`] or [`Action::Compensate`] finished.
    Reply(std::result::Result<HostReply, CallError>),
    /// The last [`Action::Wait`] is over.
    WaitElapsed,
    /// The job is cancelled. May arrive while a host call is in flight (the driver abandons
    /// it; its outcome is unknown) or during a wait.
    Cancel,
}

/// A host call the workflow wants made.
#[derive(Debug, Clone, PartialEq)]
pub struct StepCall {
    /// The step it belongs to.
    pub step: &'static str,
    /// The call.
    pub call: HostCall,
    /// How long to wait for the answer.
    pub timeout: Duration,
}

/// Something a job created, as compensation and the job result name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Artifact {
    /// The VM's cluster role.
    ClusterRole {
        /// The VM.
        vm: VmId,
    },
    /// A VM (turned off, then deleted with its disks).
    Vm {
        /// Its id.
        id: VmId,
        /// Its name.
        name: String,
    },
    /// A VM that may have been created by a call whose outcome is unknown; found by its notes
    /// marker.
    MarkedVm {
        /// The notes marker.
        marker: String,
    },
    /// A copied provisioning ISO.
    Iso {
        /// Its path.
        path: String,
    },
    /// A copied VHDX.
    Vhdx {
        /// Its path.
        path: String,
    },
    /// The VM folder the image was copied into.
    VmFolder {
        /// Its path.
        path: String,
    },
    /// The host-to-guest KVP items of a VM whose keys start with a prefix (`hlvmm.`).
    KvpItems {
        /// The VM.
        vm: VmId,
        /// The key prefix.
        prefix: String,
    },
    /// The DVD drive of a VM holding an ISO (ejected, then removed).
    DvdDrive {
        /// The VM.
        vm: VmId,
        /// The ISO it held.
        path: String,
    },
}

impl fmt::Display for Artifact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ClusterRole { vm } => write!(f, "cluster role of VM {vm}"),
            Self::Vm { id, name } => write!(f, "VM {name} ({id})"),
            Self::MarkedVm { marker } => write!(f, "any VM marked {marker:?}"),
            Self::Iso { path } => write!(f, "ISO copy {path}"),
            Self::Vhdx { path } => write!(f, "VHDX copy {path}"),
            Self::VmFolder { path } => write!(f, "VM folder {path}"),
            Self::KvpItems { vm, prefix } => write!(f, "host KVP items {prefix}* of VM {vm}"),
            Self::DvdDrive { vm, path } => write!(f, "DVD drive of VM {vm} holding {path}"),
        }
    }
}

/// An undo step the workflow wants made: the artifact it is for, and the host call.
#[derive(Debug, Clone, PartialEq)]
pub struct Compensation {
    /// What is being removed.
    pub artifact: Artifact,
    /// The call that removes it (or a part of it, e.g. turning a VM off first).
    pub call: HostCall,
    /// How long to wait for the answer.
    pub timeout: Duration,
}

/// What the driver should do next.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Action {
    /// Call the host; answer with [`Event::Reply`] (or [`Event::Cancel`]).
    CallHost(StepCall),
    /// Wait; answer with [`Event::WaitElapsed`] (or [`Event::Cancel`]).
    Wait(Duration),
    /// Undo something; answer with [`Event::Reply`]. Not cancellable.
    Compensate(Compensation),
    /// The workflow is finished; collect the result with [`Workflow::finish`].
    Done,
}

/// How one artifact's removal went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", content = "detail", rename_all = "snake_case")]
pub enum CleanupOutcome {
    /// Removed.
    Removed,
    /// Nothing was there (e.g. the VHDX went with its VM).
    AlreadyGone,
    /// Could not be removed; the detail says why. Needs manual cleanup.
    Failed(String),
}

/// One artifact and what compensation did with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CleanupEntry {
    /// The artifact.
    pub artifact: Artifact,
    /// What happened.
    pub outcome: CleanupOutcome,
}

/// Everything compensation did, in the order it did it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CleanupReport {
    /// One entry per artifact.
    pub entries: Vec<CleanupEntry>,
}

impl CleanupReport {
    /// Artifacts that were removed.
    pub fn removed(&self) -> impl Iterator<Item = &Artifact> {
        self.entries
            .iter()
            .filter(|e| e.outcome == CleanupOutcome::Removed)
            .map(|e| &e.artifact)
    }

    /// Artifacts that could not be removed, with the reason.
    pub fn left_behind(&self) -> impl Iterator<Item = (&Artifact, &str)> {
        self.entries.iter().filter_map(|e| match &e.outcome {
            CleanupOutcome::Failed(why) => Some((&e.artifact, why.as_str())),
            _ => None,
        })
    }

    /// Whether everything created is gone.
    pub fn is_clean(&self) -> bool {
        self.left_behind().next().is_none()
    }
}

impl fmt::Display for CleanupReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.entries.is_empty() {
            return f.write_str("nothing was created, nothing to remove");
        }
        let removed: Vec<String> = self.removed().map(ToString::to_string).collect();
        if removed.is_empty() {
            f.write_str("removed nothing")?;
        } else {
            write!(f, "removed {}", removed.join(", "))?;
        }
        let left: Vec<String> = self
            .left_behind()
            .map(|(a, why)| format!("{a} ({why})"))
            .collect();
        if !left.is_empty() {
            write!(f, "; LEFT BEHIND, remove by hand: {}", left.join(", "))?;
        }
        Ok(())
    }
}

/// A job as a sans-IO state machine (see the module docs).
pub trait Workflow: Send {
    /// What a successful job returns.
    type Output: Send;

    /// Feeds `event`, which happened `now` after the job started; returns the next action.
    fn handle(&mut self, event: Event, now: Duration) -> Action;

    /// Progress and log lines produced since the last call.
    fn drain(&mut self) -> Vec<JobEvent>;

    /// The job's result, once [`Action::Done`] was returned (an error before).
    ///
    /// # Errors
    ///
    /// The workflow's failure or cancellation, with its cleanup report.
    fn finish(self) -> Result<Self::Output>;
}

/// Runs `workflow` against `host` to the end (see the module docs): every call bounded by its
/// timeout, progress and logs to `sink`, `cancel` delivered as [`Event::Cancel`] once.
///
/// # Errors
///
/// Whatever [`Workflow::finish`] returns.
pub async fn run<W: Workflow>(
    mut workflow: W,
    host: Arc<dyn HyperVHost>,
    cancel: CancellationToken,
    sink: &(dyn Fn(JobEvent) + Send + Sync),
) -> Result<W::Output> {
    let started = tokio::time::Instant::now();
    let mut cancel_sent = false;
    let mut action = workflow.handle(Event::Start, Duration::ZERO);
    loop {
        for event in workflow.drain() {
            sink(event);
        }
        let event = match action {
            Action::Done => break,
            Action::CallHost(step) => {
                let call = tokio::time::timeout(step.timeout, host.call(step.call));
                if cancel_sent {
                    reply(call.await, step.timeout)
                } else {
                    tokio::select! {
                        biased;
                        () = cancel.cancelled() => {
                            cancel_sent = true;
                            Event::Cancel
                        }
                        result = call => reply(result, step.timeout),
                    }
                }
            }
            Action::Compensate(comp) => {
                let call = tokio::time::timeout(comp.timeout, host.call(comp.call));
                reply(call.await, comp.timeout)
            }
            Action::Wait(duration) => {
                if cancel_sent {
                    tokio::time::sleep(duration).await;
                    Event::WaitElapsed
                } else {
                    tokio::select! {
                        biased;
                        () = cancel.cancelled() => {
                            cancel_sent = true;
                            Event::Cancel
                        }
                        () = tokio::time::sleep(duration) => Event::WaitElapsed,
                    }
                }
            }
        };
        action = workflow.handle(event, started.elapsed());
    }
    workflow.finish()
}

fn reply(
    result: std::result::Result<aetherv_hyperv::Result<HostReply>, tokio::time::error::Elapsed>,
    timeout: Duration,
) -> Event {
    Event::Reply(match result {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(e)) => Err(CallError::Host(e)),
        Err(_) => Err(CallError::TimedOut(timeout)),
    })
}

/// A sink that drops every event.
pub fn discard(_: JobEvent) {}
