//! Faults and recovery: hosts that stop answering, and the cleanups they left undone.
//!
//! - Every host has a [`HostHealth`] (its [`FailFast`](aetherv_hyperv::ops::layer::FailFast)
//!   layer marks it unresponsive within seconds of a call hanging). A watcher per host
//!   refreshes the host's inventory entry the moment it is marked (the refresh fails fast, so
//!   the host shows `disconnected` with the reason), probes it every few seconds while it is
//!   marked, and refreshes it again once it answers.
//! - The **cleanup retry list**: when a job's compensation could not remove something
//!   (typically because the host stopped answering), the job ends at once as failed and each
//!   artifact left behind is logged at ERROR and put on this list. The list is worked through
//!   for a host whenever the inventory sees it connected again (and every
//!   [`RETRY_EVERY`] while the host is connected), with the same host calls compensation
//!   uses. `GET /api/v1/cleanup` shows what is still pending.
//!
//! This module consumes the typed [`CleanupReport`] of a failed job (through
//! [`JobObserver::left_behind`](aetherv_jobs::JobObserver::left_behind)); the provisioning
//! state machine itself is not changed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aetherv_hyperv::ops::layer::{HostHealth, Responsiveness};
use aetherv_hyperv::ops::{HostCall, HostReply, HyperVHost, PowerAction, VmId};
use aetherv_inventory::{Event, InventoryHandle, Notification};
use aetherv_provision::job::{Artifact, CleanupReport};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use crate::jobs::rfc3339;

/// How often pending cleanups of connected hosts are tried again (besides right after a host
/// reconnects).
pub const RETRY_EVERY: Duration = Duration::from_secs(60);

/// One artifact a job's cleanup could not remove yet.
#[derive(Debug, Clone)]
struct Pending {
    job: String,
    host: String,
    artifact: Artifact,
    since: SystemTime,
    attempts: u32,
    last_error: String,
    /// Set when the host refused the removal in a way a retry cannot change (the path is
    /// outside what the host script may remove, no removal is known for the artifact): the
    /// item stays listed for a person, and is not retried.
    gave_up: bool,
}

/// An artifact a failed job left behind, waiting for its host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct PendingCleanupView {
    /// The job whose cleanup left it.
    pub job_id: String,
    /// The host it is on.
    pub host: String,
    /// What it is, e.g. `VM web01 (…)` or `folder C:\VMs\web01`.
    pub artifact: String,
    /// When it was left behind (RFC 3339).
    pub since: String,
    /// Removal attempts after the job ended.
    pub retries: u32,
    /// Why the last attempt (or the job's own cleanup) did not remove it.
    pub last_error: String,
    /// Whether it is still retried. `false` when the host refused the removal in a way a retry
    /// cannot change: remove it by hand (the server logged it at ERROR).
    pub retrying: bool,
}

/// `GET /api/v1/cleanup`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PendingCleanupListView {
    /// Oldest first.
    pub pending: Vec<PendingCleanupView>,
}

/// The hosts' health and the cleanup retry list; shared by the server's tasks and handlers.
pub struct Recovery {
    health: BTreeMap<String, HostHealth>,
    hosts: BTreeMap<String, Arc<dyn HyperVHost>>,
    pending: Mutex<Vec<Pending>>,
    /// Held while a retry pass runs (one at a time).
    retrying: tokio::sync::Mutex<()>,
}

impl Default for Recovery {
    fn default() -> Self {
        Self::new(BTreeMap::new(), BTreeMap::new())
    }
}

impl std::fmt::Debug for Recovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recovery")
            .field("hosts", &self.hosts.keys().collect::<Vec<_>>())
            .field("pending", &self.lock().len())
            .finish_non_exhaustive()
    }
}

impl Recovery {
    /// Watches `health` and retries cleanups on `hosts` (the server's host stacks, by name).
    pub fn new(
        health: BTreeMap<String, HostHealth>,
        hosts: BTreeMap<String, Arc<dyn HyperVHost>>,
    ) -> Self {
        Self {
            health,
            hosts,
            pending: Mutex::new(Vec::new()),
            retrying: tokio::sync::Mutex::new(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Pending>> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A host's responsiveness, when the server watches it.
    pub fn health(&self, host: &str) -> Option<Responsiveness> {
        self.health.get(host).map(HostHealth::status)
    }

    /// Records what a failed job's cleanup left behind on `host`: logs each artifact at ERROR
    /// and puts it on the retry list. Returns a line for the job's log when there was any.
    pub fn left_behind(&self, job: &str, host: &str, report: &CleanupReport) -> Option<String> {
        let now = SystemTime::now();
        let mut added = Vec::new();
        for (artifact, why) in report.left_behind() {
            tracing::error!(
                job,
                host,
                artifact = %artifact,
                reason = why,
                "cleanup left an artifact behind; it is removed when the host answers again"
            );
            added.push(Pending {
                job: job.to_owned(),
                host: host.to_owned(),
                artifact: artifact.clone(),
                since: now,
                attempts: 0,
                last_error: why.to_owned(),
                gave_up: false,
            });
        }
        if added.is_empty() {
            return None;
        }
        let names: Vec<String> = added.iter().map(|p| p.artifact.to_string()).collect();
        self.lock().extend(added);
        Some(format!(
            "cleanup pending: {} could not be removed yet; the server removes {} when host {host} \
             answers again (see GET /api/v1/cleanup)",
            names.join(", "),
            if names.len() == 1 { "it" } else { "them" },
        ))
    }

    /// What is still pending, oldest first.
    pub fn pending(&self) -> Vec<PendingCleanupView> {
        self.lock()
            .iter()
            .map(|p| PendingCleanupView {
                job_id: p.job.clone(),
                host: p.host.clone(),
                artifact: p.artifact.to_string(),
                since: rfc3339(p.since),
                retries: p.attempts,
                last_error: p.last_error.clone(),
                retrying: !p.gave_up,
            })
            .collect()
    }

    /// Tries once to remove every pending artifact of `host`; keeps those that are still there.
    pub async fn retry(&self, host: &str) {
        let _one_at_a_time = self.retrying.lock().await;
        let Some(stack) = self.hosts.get(host).cloned() else {
            return;
        };
        let mine: Vec<Pending> = {
            let mut pending = self.lock();
            let (mine, rest) = pending.drain(..).partition(|p: &Pending| p.host == host);
            *pending = rest;
            mine
        };
        if mine.is_empty() {
            return;
        }
        let mut keep = Vec::new();
        for mut item in mine {
            if item.gave_up {
                keep.push(item);
                continue;
            }
            item.attempts = item.attempts.saturating_add(1);
            match remove(stack.as_ref(), &item.artifact).await {
                Ok(()) => tracing::info!(
                    job = %item.job,
                    host,
                    artifact = %item.artifact,
                    "left-behind artifact removed"
                ),
                Err(Failure {
                    text,
                    permanent: true,
                }) => {
                    tracing::error!(
                        job = %item.job,
                        host,
                        artifact = %item.artifact,
                        error = %text,
                        attempts = item.attempts,
                        "left-behind artifact cannot be removed automatically; remove it by hand"
                    );
                    item.last_error = text;
                    item.gave_up = true;
                    keep.push(item);
                }
                Err(Failure { text, .. }) => {
                    tracing::error!(
                        job = %item.job,
                        host,
                        artifact = %item.artifact,
                        error = %text,
                        attempts = item.attempts,
                        "left-behind artifact still there; retrying later"
                    );
                    item.last_error = text;
                    keep.push(item);
                }
            }
        }
        let mut pending = self.lock();
        keep.append(&mut pending);
        keep.sort_by_key(|p| p.since);
        *pending = keep;
    }

    fn hosts_with_pending(&self) -> Vec<String> {
        let mut hosts: Vec<String> = self.lock().iter().map(|p| p.host.clone()).collect();
        hosts.sort();
        hosts.dedup();
        hosts
    }

    /// Starts the background work: one health watcher per host, and the retry loop driven by
    /// the inventory's connection events.
    pub fn spawn(self: &Arc<Self>, inventory: &InventoryHandle, cancel: &CancellationToken) {
        for (name, health) in &self.health {
            tokio::spawn(watch_health(
                name.clone(),
                health.clone(),
                inventory.clone(),
                cancel.child_token(),
            ));
        }
        tokio::spawn(retry_loop(
            Arc::clone(self),
            inventory.clone(),
            cancel.child_token(),
        ));
    }
}

/// Marks the inventory the moment a host stops answering, probes it while it is silent, and
/// refreshes it once it answers again.
async fn watch_health(
    name: String,
    health: HostHealth,
    inventory: InventoryHandle,
    cancel: CancellationToken,
) {
    let mut changes = health.subscribe();
    loop {
        let reason = match &*changes.borrow_and_update() {
            Responsiveness::Unresponsive { reason, .. } => Some(reason.clone()),
            _ => None,
        };
        if let Some(reason) = reason {
            tracing::warn!(host = %name, %reason, "host does not answer; calls to it fail fast until it does");
            // Fails fast (the host is marked), so the inventory shows it disconnected now.
            let _ = inventory.refresh_host(&name).await;
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(health.config().probe_every) => {}
                }
                if health.check_now().await.is_ok() {
                    break;
                }
            }
            let _ = changes.borrow_and_update();
            tracing::warn!(host = %name, "host answers again");
            let _ = inventory.refresh_host(&name).await;
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            changed = changes.changed() => if changed.is_err() { return },
        }
    }
}

/// Retries a host's pending cleanups when it connects again, and periodically.
async fn retry_loop(
    recovery: Arc<Recovery>,
    inventory: InventoryHandle,
    cancel: CancellationToken,
) {
    let mut events = inventory.subscribe();
    let mut tick = tokio::time::interval(RETRY_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let hosts: Vec<String> = tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => connected_with_pending(&recovery, &inventory),
            notification = events.recv() => match notification {
                None => return,
                Some(Notification::Change(change)) => match change.event {
                    Event::HostConnected { host } => vec![host.to_string()],
                    _ => continue,
                },
                Some(_) => connected_with_pending(&recovery, &inventory),
            },
        };
        for host in hosts {
            recovery.retry(&host).await;
        }
    }
}

fn connected_with_pending(recovery: &Recovery, inventory: &InventoryHandle) -> Vec<String> {
    let snapshot = inventory.snapshot();
    recovery
        .hosts_with_pending()
        .into_iter()
        .filter(|h| snapshot.host(h).is_some_and(|s| s.is_connected()))
        .collect()
}

/// Whether an error means "there is nothing to remove".
fn gone(error: &aetherv_hyperv::Error) -> bool {
    matches!(error, aetherv_hyperv::Error::UnknownVm { .. })
}

/// Why a removal did not happen.
#[derive(Debug)]
struct Failure {
    text: String,
    /// A retry cannot change the answer.
    permanent: bool,
}

impl Failure {
    fn of(error: &aetherv_hyperv::Error) -> Self {
        use aetherv_hyperv::Error as E;
        let permanent = match error {
            // Refused before anything was sent (the request itself is not acceptable).
            E::InvalidRequest { .. } | E::SharedDisk { .. } => true,
            // The script's root check: the path is not one it may ever remove.
            E::ScriptFailed { code, .. } => code == "PathOutsideRoot",
            _ => false,
        };
        Self {
            text: aetherv_inventory::error_text(error),
            permanent,
        }
    }

    fn transient(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            permanent: false,
        }
    }
}

async fn call(host: &dyn HyperVHost, call: HostCall) -> Result<Option<HostReply>, Failure> {
    match host.call(call).await {
        Ok(reply) => Ok(Some(reply)),
        Err(e) if gone(&e) => Ok(None),
        Err(e) => Err(Failure::of(&e)),
    }
}

async fn remove_vm(host: &dyn HyperVHost, id: VmId) -> Result<(), Failure> {
    // Off first (a running VM cannot be deleted); a VM that is already off answers as such.
    match host.call(HostCall::Power(id, PowerAction::TurnOff)).await {
        Err(e) if gone(&e) => return Ok(()),
        Err(aetherv_hyperv::Error::InvalidVmState { .. }) | Ok(_) => {}
        Err(e) => return Err(Failure::of(&e)),
    }
    call(
        host,
        HostCall::DeleteVm {
            id,
            delete_disks: true,
        },
    )
    .await
    .map(drop)
}

/// Removes one artifact with the host calls compensation uses.
async fn remove(host: &dyn HyperVHost, artifact: &Artifact) -> Result<(), Failure> {
    match artifact {
        Artifact::ClusterRole { vm } => {
            call(host, HostCall::RemoveClusterRole(*vm)).await.map(drop)
        }
        Artifact::Vm { id, .. } => remove_vm(host, *id).await,
        Artifact::MarkedVm { marker } => {
            let Some(HostReply::Inventory(inventory)) = call(host, HostCall::Inventory).await?
            else {
                return Err(Failure::transient(
                    "the host's inventory answer was not an inventory",
                ));
            };
            for vm in inventory
                .vms
                .iter()
                .filter(|vm| vm.notes.contains(marker.as_str()))
            {
                remove_vm(host, vm.id).await?;
            }
            Ok(())
        }
        Artifact::Iso { path } | Artifact::Vhdx { path } | Artifact::VmFolder { path } => {
            call(host, HostCall::RemovePath(path.clone()))
                .await
                .map(drop)
        }
        other => Err(Failure {
            text: format!("no removal is known for {other}"),
            permanent: true,
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::io::Write;

    use aetherv_hyperv::ops::MockHyperVHost;
    use aetherv_provision::job::{CleanupEntry, CleanupOutcome};

    use super::*;

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
        type Writer = Capture;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    fn report() -> CleanupReport {
        CleanupReport {
            entries: vec![
                CleanupEntry {
                    artifact: Artifact::Iso {
                        path: r"C:\VMs\web01\provision.iso".to_owned(),
                    },
                    outcome: CleanupOutcome::Removed,
                },
                CleanupEntry {
                    artifact: Artifact::VmFolder {
                        path: r"C:\VMs\web01".to_owned(),
                    },
                    outcome: CleanupOutcome::Failed(
                        "host hv01 does not answer (no answer within 5 s): remove path was not sent"
                            .to_owned(),
                    ),
                },
            ],
        }
    }

    #[test]
    fn every_left_behind_artifact_is_logged_at_error_by_name_and_listed() {
        let capture = Capture::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(capture.clone())
            .with_ansi(false)
            .finish();
        let recovery = Recovery::default();
        let note = tracing::subscriber::with_default(subscriber, || {
            recovery.left_behind("job-1", "hv01", &report())
        });
        let log = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
        assert_eq!(errors.len(), 1, "{log}");
        assert!(errors[0].contains(r"VM folder C:\VMs\web01"), "{log}");
        assert!(
            errors[0].contains("job-1") && errors[0].contains("hv01"),
            "{log}"
        );
        assert_eq!(
            note.unwrap(),
            r"cleanup pending: VM folder C:\VMs\web01 could not be removed yet; the server removes it when host hv01 answers again (see GET /api/v1/cleanup)"
        );
        let pending = recovery.pending();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].artifact, r"VM folder C:\VMs\web01");
        assert_eq!(pending[0].retries, 0);
    }

    #[tokio::test]
    async fn a_retry_removes_what_it_can_and_keeps_the_rest() {
        let mut host = MockHyperVHost::new();
        host.expect_host_name().return_const("hv01".to_owned());
        let mut answers = vec![
            Ok(HostReply::RemovedPath(
                serde_json::from_value(
                    serde_json::json!({"path": r"C:\VMs\web01", "removed": true}),
                )
                .unwrap(),
            )),
            Err(aetherv_hyperv::Error::HostUnresponsive {
                host: "hv01".to_owned(),
                operation: "remove path",
                reason: "no answer within 5 s".to_owned(),
                sent: false,
            }),
        ];
        host.expect_call().times(2).returning(move |call| {
            assert!(matches!(call, HostCall::RemovePath(_)), "{call:?}");
            answers.pop().unwrap()
        });
        let hosts = BTreeMap::from([("hv01".to_owned(), Arc::new(host) as Arc<dyn HyperVHost>)]);
        let recovery = Recovery::new(BTreeMap::new(), hosts);
        recovery.left_behind("job-1", "hv01", &report());
        // Still silent: kept, with the new reason.
        recovery.retry("hv01").await;
        let pending = recovery.pending();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].retries, 1);
        assert!(pending[0].last_error.contains("does not answer"));
        // Back: removed.
        recovery.retry("hv01").await;
        assert!(recovery.pending().is_empty());
    }

    #[tokio::test]
    async fn a_removal_the_host_refuses_for_good_is_listed_once_and_not_retried() {
        let mut host = MockHyperVHost::new();
        host.expect_host_name().return_const("hv01".to_owned());
        // One attempt only: the second retry must not call the host again.
        host.expect_call().times(1).returning(|_| {
            Err(aetherv_hyperv::Error::ScriptFailed {
                host: "hv01".to_owned(),
                operation: "remove path",
                code: "PathOutsideRoot".to_owned(),
                message: r"D:\Fast\web01 is neither below the VM folder root nor inside a CSV"
                    .to_owned(),
            })
        });
        let hosts = BTreeMap::from([("hv01".to_owned(), Arc::new(host) as Arc<dyn HyperVHost>)]);
        let recovery = Recovery::new(BTreeMap::new(), hosts);
        recovery.left_behind("job-1", "hv01", &report());
        assert!(recovery.pending()[0].retrying);
        recovery.retry("hv01").await;
        recovery.retry("hv01").await;
        let pending = recovery.pending();
        assert_eq!(pending.len(), 1, "still listed for a person");
        assert!(!pending[0].retrying);
        assert_eq!(pending[0].retries, 1);
        assert!(
            pending[0].last_error.contains("PathOutsideRoot"),
            "{}",
            pending[0].last_error
        );
    }
}
