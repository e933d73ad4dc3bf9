//! Orphaned VMs: VMs whose notes carry the provisioning marker (`aetherv-job:<job id>`,
//! [`aetherv_provision::provision::marker`]) of a job this server is not running.
//!
//! A provisioning job writes the marker when it registers the VM, so that what it made can be
//! found again. If the server dies mid-provision, nothing cleans the half-made VM up; after the
//! restart the job queue does not know the job, and the VM is *orphaned*. The rule is a pure
//! function of the VM's notes and what the job queue knows ([`JobLedger`]), so it is judged
//! afresh on every answer: at start, after every inventory refresh, and whenever a job ends.
//!
//! A VM is orphaned when its notes are exactly one marker and the marked job is neither queued,
//! running, nor a provisioning that succeeded in this server's history. An admin either
//! removes it (a delete job, forced, with its disks) or adopts it (see `API.md`).

use std::collections::BTreeMap;
use std::sync::Arc;

use aetherv_hyperv::ops::Vm;
use aetherv_inventory::Snapshot;
use aetherv_provision::provision::MARKER_PREFIX;
use tokio_util::sync::CancellationToken;

use crate::jobs::{JobQueue, JobStatus};
use crate::metrics::Metrics;

/// What the orphan rule needs to know about jobs: the status of a job this server knows.
#[cfg_attr(test, mockall::automock)]
pub trait JobLedger {
    /// The status of job `id`, or `None` when this server does not know it (it ran before a
    /// restart, or it left the history).
    fn job_status(&self, id: &str) -> Option<JobStatus>;
}

impl JobLedger for JobQueue {
    fn job_status(&self, id: &str) -> Option<JobStatus> {
        self.status(id)
    }
}

/// The job id in a VM's notes, when the notes are one provisioning marker.
#[must_use]
pub fn marker_job(notes: &str) -> Option<&str> {
    // The marker is the first line; the user's notes may follow (`provision::split_notes`).
    let first = notes.lines().next().unwrap_or_default();
    let id = first.trim().strip_prefix(MARKER_PREFIX)?.trim();
    let plausible = !id.is_empty()
        && id.len() <= 64
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    plausible.then_some(id)
}

/// Whether a job in `status` (or unknown, `None`) leaves its marked VM orphaned.
#[must_use]
pub fn orphaning(status: Option<JobStatus>) -> bool {
    match status {
        None => true,
        Some(JobStatus::Queued | JobStatus::Running | JobStatus::Succeeded) => false,
        Some(_) => true,
    }
}

/// Whether `vm` is orphaned: its notes mark a job that `ledger` is not running and that did
/// not succeed.
#[must_use]
pub fn is_orphaned(vm: &Vm, ledger: &dyn JobLedger) -> bool {
    marker_job(&vm.notes).is_some_and(|job| orphaning(ledger.job_status(job)))
}

/// Orphaned VMs per host (every host of the snapshot, zero included).
#[must_use]
pub fn count_by_host(snapshot: &Snapshot, ledger: &dyn JobLedger) -> BTreeMap<String, u64> {
    snapshot
        .hosts()
        .map(|host| {
            let count = host
                .vms
                .values()
                .filter(|vm| is_orphaned(&vm.vm, ledger))
                .count();
            (host.name.to_string(), count as u64)
        })
        .collect()
}

/// Keeps the orphan gauge current and logs each VM that becomes orphaned, once: at start,
/// after every inventory change and whenever a job changes status. Ends with `cancel`.
pub async fn watch(
    inventory: aetherv_inventory::InventoryHandle,
    jobs: JobQueue,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    let mut changes = inventory.subscribe();
    let mut notices = jobs.subscribe();
    let mut known = std::collections::BTreeSet::new();
    loop {
        let snapshot = inventory.snapshot();
        let mut now = std::collections::BTreeSet::new();
        for vm in snapshot.vms() {
            if is_orphaned(&vm.vm, &jobs) {
                if !known.contains(&vm.vm.id) {
                    tracing::warn!(
                        host = %vm.host,
                        vm = %vm.vm.name,
                        vm_id = %vm.vm.id,
                        notes = %vm.vm.notes.trim(),
                        "orphaned VM: its provisioning job is not running on this server; an admin can remove or adopt it"
                    );
                }
                now.insert(vm.vm.id);
            }
        }
        known = now;
        for (host, count) in count_by_host(&snapshot, &jobs) {
            metrics.set_orphaned_vms(&host, count);
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            n = changes.recv() => if n.is_none() { return },
            r = notices.recv() => if matches!(r, Err(tokio::sync::broadcast::error::RecvError::Closed)) { return },
        }
        // One scan covers every change until now: wait a moment for the rest of a burst
        // (a host's first refresh adds all its VMs one event each), then drop what queued, so
        // the cost is one scan per burst and not one per VM.
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(RESCAN_DELAY) => {}
        }
        while changes.try_recv().is_some() {}
        while notices.try_recv().is_ok() {}
    }
}

/// How long the orphan watch gathers changes before it scans the inventory again.
const RESCAN_DELAY: std::time::Duration = std::time::Duration::from_millis(500);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_names_the_job() {
        assert_eq!(marker_job("aetherv-job:abc-123"), Some("abc-123"));
        assert_eq!(marker_job("  aetherv-job:abc-123\r\n"), Some("abc-123"));
        assert_eq!(marker_job("aetherv-job:"), None);
        assert_eq!(marker_job("web server, owner: ops"), None);
        assert_eq!(marker_job("see aetherv-job:abc"), None);
        assert_eq!(marker_job("aetherv-job:abc def"), None);
        assert_eq!(marker_job(""), None);
    }

    #[test]
    fn only_jobs_this_server_runs_or_finished_well_keep_a_vm() {
        assert!(orphaning(None));
        assert!(orphaning(Some(JobStatus::Failed)));
        assert!(orphaning(Some(JobStatus::Cancelled)));
        assert!(!orphaning(Some(JobStatus::Queued)));
        assert!(!orphaning(Some(JobStatus::Running)));
        assert!(!orphaning(Some(JobStatus::Succeeded)));
    }

    #[test]
    fn the_ledger_is_asked_about_the_marked_job() {
        let mut vm: Vm = serde_json::from_value(serde_json::json!({
            "id": "6f1c1a52-7d9e-4c4e-9a53-2b0f3c9d8e71",
            "name": "web01",
            "state": 3,
            "processor_count": 2,
            "memory_startup_bytes": 2_147_483_648_u64,
        }))
        .unwrap();
        vm.notes = "aetherv-job:job-1".to_owned();
        let mut ledger = MockJobLedger::new();
        ledger
            .expect_job_status()
            .withf(|id| id == "job-1")
            .times(2)
            .returning({
                let mut answers = vec![Some(JobStatus::Running), None].into_iter();
                move |_| answers.next().flatten()
            });
        assert!(!is_orphaned(&vm, &ledger));
        assert!(is_orphaned(&vm, &ledger));
        vm.notes = "no marker".to_owned();
        assert!(!is_orphaned(&vm, &ledger));
    }
}
