//! The queue's public data: job types and statuses, what to submit, the records the API shows,
//! the observer of job metrics, and the queue's limits.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use aetherv_hyperv::ops::{
    CheckpointChange, DiskId, HyperVHost, NicChange, PowerAction, VmId, VmSettingsChange,
};
use aetherv_provision::delete::DeleteRequest;
use aetherv_provision::provision::ProvisionConfig;
use aetherv_provision::schema::Validated;
use serde::Serialize;

#[cfg(doc)]
use crate::JobQueue;

/// What kind of job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum JobType {
    /// Create and configure a VM.
    Provision,
    /// Delete a VM.
    Delete,
    /// A power action.
    Power,
    /// Adopt an orphaned VM (its job marker becomes the provisioned marker).
    Adopt,
    /// Change a VM's settings (processors, memory, notes, automatic actions, firmware).
    Edit,
    /// Add, attach, expand or detach a VM's disk.
    Disk,
    /// Create, apply, rename or delete a checkpoint.
    Checkpoint,
    /// Add, change or remove a network adapter.
    #[serde(rename = "network_adapter")]
    NetworkAdapter,
}

impl JobType {
    /// The lowercase name (`provision`, `delete`, `power`, `adopt`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Provision => "provision",
            Self::Delete => "delete",
            Self::Power => "power",
            Self::Adopt => "adopt",
            Self::Edit => "edit",
            Self::Disk => "disk",
            Self::Checkpoint => "checkpoint",
            Self::NetworkAdapter => "network_adapter",
        }
    }

    /// Parses the lowercase name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "provision" => Some(Self::Provision),
            "delete" => Some(Self::Delete),
            "power" => Some(Self::Power),
            "adopt" => Some(Self::Adopt),
            "edit" => Some(Self::Edit),
            "disk" => Some(Self::Disk),
            "checkpoint" => Some(Self::Checkpoint),
            "network_adapter" => Some(Self::NetworkAdapter),
            _ => None,
        }
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Waiting for a slot.
    Queued,
    /// Running.
    Running,
    /// Finished successfully.
    Succeeded,
    /// Finished with an error (after cleaning up what it created).
    Failed,
    /// Cancelled (after cleaning up what it created).
    Cancelled,
}

impl JobStatus {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses the lowercase name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "queued" => Some(Self::Queued),
            "running" => Some(Self::Running),
            "succeeded" => Some(Self::Succeeded),
            "failed" => Some(Self::Failed),
            "cancelled" => Some(Self::Cancelled),
            _ => None,
        }
    }

    /// Whether the job has ended.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// A power action as the API names it, in requests and job records alike (`stop` is
/// Hyper-V's turn-off).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum JobAction {
    /// Start the VM.
    Start,
    /// Shut the guest OS down cleanly.
    Shutdown,
    /// Turn the VM off (like pulling the plug).
    Stop,
    /// Hard restart.
    Restart,
    /// Save the VM's state to disk.
    Save,
    /// Pause the VM in memory.
    Pause,
    /// Resume a paused VM.
    Resume,
}

impl JobAction {
    /// Every action, in the order the API lists them.
    pub const ALL: [Self; 7] = [
        Self::Start,
        Self::Shutdown,
        Self::Stop,
        Self::Restart,
        Self::Save,
        Self::Pause,
        Self::Resume,
    ];

    /// The API name (`start`, `stop`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Shutdown => "shutdown",
            Self::Stop => "stop",
            Self::Restart => "restart",
            Self::Save => "save",
            Self::Pause => "pause",
            Self::Resume => "resume",
        }
    }

    /// Parses the API name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }

    /// The Hyper-V operation.
    pub fn power_action(self) -> PowerAction {
        match self {
            Self::Start => PowerAction::Start,
            Self::Shutdown => PowerAction::Shutdown,
            Self::Stop => PowerAction::TurnOff,
            Self::Restart => PowerAction::Restart,
            Self::Save => PowerAction::Save,
            Self::Pause => PowerAction::Pause,
            Self::Resume => PowerAction::Resume,
        }
    }
}

impl From<PowerAction> for JobAction {
    fn from(action: PowerAction) -> Self {
        match action {
            PowerAction::Start => Self::Start,
            PowerAction::Shutdown => Self::Shutdown,
            PowerAction::TurnOff => Self::Stop,
            PowerAction::Restart => Self::Restart,
            PowerAction::Save => Self::Save,
            PowerAction::Pause => Self::Pause,
            PowerAction::Resume => Self::Resume,
        }
    }
}

/// The work of a job.
#[derive(Debug, Clone)]
pub enum JobWork {
    /// Provision a VM.
    Provision(Box<Validated>),
    /// Delete a VM.
    Delete(DeleteRequest),
    /// Apply a power action.
    Power {
        /// The VM.
        vm: VmId,
        /// The action.
        action: PowerAction,
    },
    /// Adopt an orphaned VM: replace the job marker in its notes (`aetherv-job:<job>`) with
    /// the provisioned marker of the same job (`aetherv-provisioned:<job>`), so it is no
    /// longer orphaned and deletion still knows this project created its folder.
    Adopt {
        /// The VM.
        vm: VmId,
        /// The provisioning job its marker names.
        job: String,
    },
    /// Change a VM's settings; the log shows each value before and after.
    Edit {
        /// The VM.
        vm: VmId,
        /// What changes.
        change: Box<VmSettingsChange>,
    },
    /// A disk operation on a VM.
    Disk(DiskWork),
    /// Change a VM's checkpoints; a removal follows the merge Hyper-V then runs.
    Checkpoint {
        /// The VM.
        vm: VmId,
        /// The change.
        change: CheckpointChange,
    },
    /// Change a VM's network adapters.
    NetworkAdapter {
        /// The VM.
        vm: VmId,
        /// The change.
        change: NicChange,
    },
}

/// A disk operation ([`JobWork::Disk`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DiskWork {
    /// Create a blank VHDX at `path` and attach it to the first free SCSI location; a file
    /// that could not be attached is deleted again.
    Add {
        /// The VM.
        vm: VmId,
        /// The new file.
        path: String,
        /// Virtual size in bytes.
        size_bytes: u64,
        /// Fixed rather than dynamically expanding.
        fixed: bool,
    },
    /// Attach an existing disk file to the first free SCSI location.
    Attach {
        /// The VM.
        vm: VmId,
        /// The file.
        path: String,
    },
    /// Grow a disk (never shrink).
    Expand {
        /// The VM.
        vm: VmId,
        /// The disk.
        disk: DiskId,
        /// New virtual size in bytes.
        size_bytes: u64,
    },
    /// Detach a disk, optionally deleting its file.
    Detach {
        /// The VM.
        vm: VmId,
        /// The disk.
        disk: DiskId,
        /// Delete the file too.
        delete_file: bool,
        /// Detach even the VM's boot disk.
        force: bool,
    },
}

impl JobWork {
    /// The job type of this work.
    pub fn job_type(&self) -> JobType {
        match self {
            Self::Provision(_) => JobType::Provision,
            Self::Delete(_) => JobType::Delete,
            Self::Power { .. } => JobType::Power,
            Self::Adopt { .. } => JobType::Adopt,
            Self::Edit { .. } => JobType::Edit,
            Self::Disk(_) => JobType::Disk,
            Self::Checkpoint { .. } => JobType::Checkpoint,
            Self::NetworkAdapter { .. } => JobType::NetworkAdapter,
        }
    }
}

/// A job to submit.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// What to do.
    pub work: JobWork,
    /// The host it runs against.
    pub host: String,
    /// The VM's id, when it exists already.
    pub vm_id: Option<VmId>,
    /// The VM's name.
    pub vm_name: Option<String>,
    /// The redacted parameters, for the record.
    pub parameters: serde_json::Value,
}

/// Why a job was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// The host is not one the server manages.
    #[error("host {0:?} is not managed by this server")]
    UnknownHost(String),
    /// Another job is working on the same VM.
    #[error("VM {vm} is busy with job {job}")]
    Busy {
        /// The VM (name or id).
        vm: String,
        /// The job holding it.
        job: String,
    },
    /// The queue is shutting down.
    #[error("the job queue is shutting down")]
    ShuttingDown,
    /// Too many jobs are waiting.
    #[error("{0} jobs are already queued; try again when some have finished")]
    QueueFull(usize),
}

/// Why a job could not be cancelled.
///
/// Deliberately exhaustive: an HTTP layer maps each case to its own answer, and a new case
/// should fail its build rather than fall into a catch-all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CancelError {
    /// No such job (or it left the history).
    #[error("job {0:?} not found")]
    NotFound(String),
    /// The job has already ended.
    #[error("job {id} already {}", status.as_str())]
    Finished {
        /// The job.
        id: String,
        /// Its final status.
        status: JobStatus,
    },
}

/// Where one step of a job's timeline is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    /// The job is in this step.
    Running,
    /// The step finished and the job went on.
    Succeeded,
    /// The job failed in this step.
    Failed,
    /// The job was cancelled in this step.
    Cancelled,
    /// The job ended (failed or cancelled) before it reached this step, which it had planned.
    Skipped,
}

/// How important a job log line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum LineLevel {
    /// Progress and outcomes.
    Info,
    /// Something the operator should notice (a cancellation, a retry).
    Warn,
    /// A failure.
    Error,
}

impl LineLevel {
    /// The name in the API (`info`, `warn`, `error`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

impl From<aetherv_provision::job::LogLevel> for LineLevel {
    fn from(level: aetherv_provision::job::LogLevel) -> Self {
        match level {
            aetherv_provision::job::LogLevel::Info => Self::Info,
            aetherv_provision::job::LogLevel::Warn => Self::Warn,
            aetherv_provision::job::LogLevel::Error => Self::Error,
        }
    }
}

/// One step of a job's timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StepRecord {
    /// Step name, e.g. `Provisioning.CopyImage`.
    pub name: String,
    /// Where the step is.
    pub status: StepStatus,
    /// When it started (RFC 3339); `None` for a skipped step.
    pub started_at: Option<String>,
    /// When it ended.
    pub finished_at: Option<String>,
}

/// One log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogLine {
    /// Position in the job's log, from 0.
    pub seq: u64,
    /// Wall-clock time (RFC 3339).
    pub at: String,
    /// How important the line is.
    pub level: LineLevel,
    /// The line.
    pub message: String,
    /// The step the job was in.
    pub step: Option<String>,
    /// The job's percentage at that moment.
    pub percent: u8,
}

/// What cleanup did after a failure or cancellation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CleanupView {
    /// What was removed.
    pub removed: Vec<String>,
    /// What could not be removed and why.
    pub left_behind: Vec<LeftBehind>,
}

/// An artifact compensation could not remove.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LeftBehind {
    /// The artifact.
    pub artifact: String,
    /// Why.
    pub reason: String,
}

/// A job's record as the API shows it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobView {
    /// The job id.
    pub id: String,
    /// The type.
    #[serde(rename = "type")]
    pub job_type: JobType,
    /// The power action (power jobs), as the API names it.
    pub action: Option<JobAction>,
    /// The status.
    pub status: JobStatus,
    /// The host.
    pub target_host: String,
    /// The VM's id (known from the start, or once provisioning registered the VM).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = Uuid))]
    pub vm_id: Option<VmId>,
    /// The VM's name.
    pub vm_name: Option<String>,
    /// The redacted parameters.
    pub parameters: serde_json::Value,
    /// When it was submitted.
    pub created_at: String,
    /// When it started running.
    pub started_at: Option<String>,
    /// When it ended.
    pub finished_at: Option<String>,
    /// 0..=100.
    pub percent: u8,
    /// The current (or last) step.
    pub step: Option<String>,
    /// The latest progress message.
    pub message: Option<String>,
    /// The step timeline.
    pub steps: Vec<StepRecord>,
    /// Why it failed.
    pub error: Option<String>,
    /// What cleanup did.
    pub cleanup: Option<CleanupView>,
    /// What a successful job produced.
    pub result: Option<serde_json::Value>,
    /// Whether cancellation was requested.
    pub cancel_requested: bool,
}

/// A status change, as `/api/v1/events` streams it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobNotice {
    /// The job id.
    pub id: String,
    /// The type.
    #[serde(rename = "type")]
    pub job_type: JobType,
    /// The new status.
    pub status: JobStatus,
    /// Its percentage.
    pub percent: u8,
    /// The host.
    pub target_host: String,
    /// The VM id.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = Uuid))]
    pub vm_id: Option<VmId>,
    /// The VM name.
    pub vm_name: Option<String>,
}

/// Filters of [`JobQueue::list`].
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// Only this status.
    pub status: Option<JobStatus>,
    /// Only this type.
    pub job_type: Option<JobType>,
    /// Only this host (case-insensitive).
    pub host: Option<String>,
    /// Only this VM.
    pub vm_id: Option<VmId>,
    /// At most this many (newest first).
    pub limit: Option<usize>,
}

impl JobFilter {
    /// Whether `record` passes every filter but the limit.
    pub(crate) fn matches(&self, record: &crate::record::Record) -> bool {
        self.status.is_none_or(|s| record.status == s)
            && self.job_type.is_none_or(|t| record.job_type == t)
            && self
                .host
                .as_deref()
                .is_none_or(|h| record.host.eq_ignore_ascii_case(h))
            && self.vm_id.is_none_or(|v| record.vm_id == Some(v))
    }
}

/// One page of [`crate::JobQueue::page`].
#[derive(Debug, Clone)]
pub struct JobPage {
    /// The jobs, newest first.
    pub jobs: Vec<JobView>,
    /// The sequence number to pass as `before` for the next page; `None` on the last page.
    pub next: Option<u64>,
    /// Jobs in the history matching the filter (over all pages).
    pub total: usize,
}

/// Receives job metrics (the server's Prometheus registry implements it).
pub trait JobObserver: Send + Sync {
    /// A job moved from `from` (none: it was just created) to `to`.
    fn status(&self, job_type: JobType, from: Option<JobStatus>, to: JobStatus);
    /// A job ended after `duration` of running.
    fn finished(&self, job_type: JobType, status: JobStatus, duration: Duration);
    /// A finished job left the history.
    fn forgotten(&self, job_type: JobType, status: JobStatus);
    /// A provisioning job's cleanup could not remove everything it made on `host` (see
    /// `report.left_behind()`); called once, just before the job ends. A returned line is
    /// added to the job's log (e.g. that the removal is retried later). Does nothing by
    /// default.
    fn left_behind(
        &self,
        _job: &str,
        _host: &str,
        _report: &aetherv_provision::job::CleanupReport,
    ) -> Option<String> {
        None
    }
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoObserver;

impl JobObserver for NoObserver {
    fn status(&self, _: JobType, _: Option<JobStatus>, _: JobStatus) {}
    fn finished(&self, _: JobType, _: JobStatus, _: Duration) {}
    fn forgotten(&self, _: JobType, _: JobStatus) {}
}

/// Queue limits and job timeouts.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// Jobs running at the same time, over all hosts (at least 1).
    pub concurrency: usize,
    /// Jobs running at the same time on one host (at least 1).
    pub per_host: usize,
    /// Finished jobs kept in memory.
    pub history: usize,
    /// Jobs that may wait for a slot at the same time; more are refused.
    pub max_queued: usize,
    /// Timeouts of the provisioning pipeline.
    pub provision: ProvisionConfig,
    /// Timeout of each host call of deletions and power actions.
    pub step_timeout: Duration,
    /// Upper bound of the inventory refresh after a job.
    pub refresh_timeout: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            concurrency: 4,
            per_host: 2,
            history: 1000,
            max_queued: 1000,
            provision: ProvisionConfig::default(),
            step_timeout: Duration::from_secs(120),
            refresh_timeout: Duration::from_secs(60),
        }
    }
}

/// The hosts jobs can run against, by name.
pub type HostMap = BTreeMap<String, Arc<dyn HyperVHost>>;
