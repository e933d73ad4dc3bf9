//! One job's mutable record (timeline, log lines, the VMs it holds) and how a job ended.

use std::time::SystemTime;

use aetherv_hyperv::ops::VmId;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::model::{
    CleanupView, JobAction, JobNotice, JobStatus, JobType, JobView, LeftBehind, LineLevel, LogLine,
    StepRecord, StepStatus,
};

/// What a running job locks: a VM id, or a host + VM name while provisioning.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum VmKey {
    Id(VmId),
    Name(String, String),
    /// A whole host (lowercase), held by maintenance jobs.
    Host(String),
}

pub(crate) struct Record {
    pub(crate) id: String,
    pub(crate) job_type: JobType,
    pub(crate) action: Option<JobAction>,
    pub(crate) status: JobStatus,
    pub(crate) host: String,
    pub(crate) vm_id: Option<VmId>,
    pub(crate) vm_name: Option<String>,
    pub(crate) parameters: serde_json::Value,
    pub(crate) created_at: SystemTime,
    pub(crate) started_at: Option<SystemTime>,
    pub(crate) started: Option<tokio::time::Instant>,
    pub(crate) finished_at: Option<SystemTime>,
    pub(crate) percent: u8,
    pub(crate) step: Option<String>,
    pub(crate) message: Option<String>,
    pub(crate) steps: Vec<StepRecord>,
    /// The steps the workflow announced ([`JobEvent::Plan`](aetherv_provision::job::JobEvent)).
    pub(crate) planned: Vec<String>,
    pub(crate) error: Option<String>,
    pub(crate) cleanup: Option<CleanupView>,
    pub(crate) result: Option<serde_json::Value>,
    pub(crate) cancel: CancellationToken,
    pub(crate) lines: Vec<LogLine>,
    pub(crate) keys: Vec<VmKey>,
    pub(crate) changed: watch::Sender<u64>,
    pub(crate) requested_by: crate::model::Requester,
}

impl Record {
    pub(crate) fn view(&self) -> JobView {
        JobView {
            id: self.id.clone(),
            job_type: self.job_type,
            action: self.action,
            status: self.status,
            target_host: self.host.clone(),
            vm_id: self.vm_id,
            vm_name: self.vm_name.clone(),
            parameters: self.parameters.clone(),
            created_at: rfc3339(self.created_at),
            started_at: self.started_at.map(rfc3339),
            finished_at: self.finished_at.map(rfc3339),
            percent: self.percent,
            step: self.step.clone(),
            message: self.message.clone(),
            steps: self.steps.clone(),
            error: self.error.clone(),
            cleanup: self.cleanup.clone(),
            result: self.result.clone(),
            cancel_requested: self.cancel.is_cancelled(),
            requested_by: self.requested_by.clone(),
        }
    }

    pub(crate) fn notice(&self) -> JobNotice {
        JobNotice {
            id: self.id.clone(),
            job_type: self.job_type,
            status: self.status,
            percent: self.percent,
            target_host: self.host.clone(),
            vm_id: self.vm_id,
            vm_name: self.vm_name.clone(),
        }
    }

    /// One structured audit line (target `aetherv::audit`) for the record's current status:
    /// who asked, with which roles, why, and what the job is about.
    pub(crate) fn audit(&self) {
        let by = &self.requested_by;
        tracing::info!(
            target: "aetherv::audit",
            job = %self.id,
            r#type = self.job_type.as_str(),
            status = self.status.as_str(),
            host = %self.host,
            vm_id = ?self.vm_id.map(|v| v.to_string()),
            vm_name = ?self.vm_name,
            requested_by = %by.subject,
            requester_name = ?by.name,
            roles = %by.roles.join(","),
            reason = ?by.reason,
            ticket = ?by.ticket,
            error = ?self.error,
            "job {}", self.status.as_str()
        );
    }

    pub(crate) fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub(crate) fn push_line(&mut self, level: LineLevel, message: String) {
        let seq = self.lines.len() as u64;
        self.lines.push(LogLine {
            seq,
            at: rfc3339(SystemTime::now()),
            level,
            message,
            step: self.step.clone(),
            percent: self.percent,
        });
    }

    /// Records a progress event: a new step closes the previous one as succeeded.
    pub(crate) fn progress(&mut self, step: &str, percent: u8, message: String) {
        let now = rfc3339(SystemTime::now());
        if self.step.as_deref() != Some(step) {
            if let Some(last) = self.steps.last_mut()
                && last.finished_at.is_none()
            {
                last.status = StepStatus::Succeeded;
                last.finished_at = Some(now.clone());
            }
            self.steps.push(StepRecord {
                name: step.to_owned(),
                status: StepStatus::Running,
                started_at: Some(now),
                finished_at: None,
            });
            self.step = Some(step.to_owned());
        }
        self.percent = self.percent.max(percent.min(100));
        self.message = Some(message.clone());
        self.push_line(LineLevel::Info, message);
    }

    /// Records the steps the workflow means to run, in order.
    pub(crate) fn plan(&mut self, steps: &[&str]) {
        self.planned = steps.iter().map(|s| (*s).to_owned()).collect();
    }

    /// Lists the planned steps that never started as skipped, after the step that failed or
    /// was cancelled (or at the end when no step says so).
    fn skip_unreached(&mut self) {
        let skipped: Vec<StepRecord> = self
            .planned
            .iter()
            .filter(|name| !self.steps.iter().any(|s| &s.name == *name))
            .map(|name| StepRecord {
                name: name.clone(),
                status: StepStatus::Skipped,
                started_at: None,
                finished_at: None,
            })
            .collect();
        let at = self
            .steps
            .iter()
            .rposition(|s| matches!(s.status, StepStatus::Failed | StepStatus::Cancelled))
            .map_or(self.steps.len(), |i| i + 1);
        self.steps.splice(at..at, skipped);
    }

    /// Records that `step` ended without succeeding (the workflow said so): its record says
    /// failed or cancelled, whatever runs after it (the compensation) cannot overwrite that.
    pub(crate) fn end_step(&mut self, step: &str, status: StepStatus) {
        let now = rfc3339(SystemTime::now());
        match self.steps.iter_mut().rev().find(|s| s.name == step) {
            Some(record) => {
                record.status = status;
                record.finished_at = Some(now);
            }
            None => self.steps.push(StepRecord {
                name: step.to_owned(),
                status,
                started_at: Some(now.clone()),
                finished_at: Some(now),
            }),
        }
    }

    /// Closes the steps still open when the job ends with `status`. When the workflow named
    /// the step that failed or was cancelled ([`Self::end_step`]), the steps open after it are
    /// its compensation: succeeded when `clean` (nothing left behind), failed otherwise.
    /// Without such a step, the last open step takes the job's status. The planned steps
    /// ([`Self::plan`]) a failed or cancelled job never reached are listed as skipped, right
    /// after the step that ended it.
    pub(crate) fn close_steps(&mut self, status: JobStatus, clean: bool) {
        if status != JobStatus::Succeeded {
            self.skip_unreached();
        }
        let now = rfc3339(SystemTime::now());
        let ended = self
            .steps
            .iter()
            .any(|s| matches!(s.status, StepStatus::Failed | StepStatus::Cancelled));
        let last_status = match status {
            JobStatus::Succeeded => StepStatus::Succeeded,
            _ if ended && clean => StepStatus::Succeeded,
            JobStatus::Cancelled if !ended => StepStatus::Cancelled,
            _ => StepStatus::Failed,
        };
        let last_open = self
            .steps
            .iter()
            .rposition(|s| s.finished_at.is_none() && s.status != StepStatus::Skipped);
        for (i, step) in self.steps.iter_mut().enumerate() {
            if step.finished_at.is_none() && step.status != StepStatus::Skipped {
                step.status = if Some(i) == last_open {
                    last_status
                } else {
                    StepStatus::Succeeded
                };
                step.finished_at = Some(now.clone());
            }
        }
    }
}

/// RFC 3339 with milliseconds, UTC.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// An error and its sources, joined by `: ` (skipping sources already in the text).
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// How a job ended.
#[derive(Debug, Clone, Default)]
pub(crate) struct Outcome {
    pub(crate) error: Option<String>,
    pub(crate) cleanup: Option<CleanupView>,
    pub(crate) result: Option<serde_json::Value>,
}

impl Outcome {
    pub(crate) fn success(result: Option<serde_json::Value>) -> Self {
        Self {
            result,
            ..Self::default()
        }
    }

    pub(crate) fn failure(error: String) -> Self {
        Self {
            error: Some(error),
            ..Self::default()
        }
    }

    pub(crate) fn cancelled_before_start() -> Self {
        Self::failure("cancelled before it started; nothing was changed".to_owned())
    }

    pub(crate) fn from_error(error: &aetherv_provision::Error) -> (JobStatus, Self) {
        use aetherv_provision::Error as E;
        let (status, cleanup) = match error {
            E::Cancelled { cleanup, .. } => (JobStatus::Cancelled, Some(cleanup)),
            E::ProvisionFailed { cleanup, .. } => (JobStatus::Failed, Some(cleanup)),
            _ => (JobStatus::Failed, None),
        };
        let cleanup = cleanup.map(|c| CleanupView {
            removed: c.removed().map(ToString::to_string).collect(),
            left_behind: c
                .left_behind()
                .map(|(a, why)| LeftBehind {
                    artifact: a.to_string(),
                    reason: why.to_owned(),
                })
                .collect(),
        });
        (
            status,
            Self {
                error: Some(error_chain(error)),
                cleanup,
                result: None,
            },
        )
    }
}
