//! Host maintenance jobs: drain, resume and maintenance runs.
//!
//! The host's state lives on the host (`HostCall::SetMaintenance` writes its state file and
//! acts on the cluster node); the job writes it at each change, so any server reads it back.
//! A drain marks the host `draining`, pauses its cluster node with drain where there is one
//! (the cluster moves its roles), live-migrates each remaining running VM to the host
//! placement chooses (at most `max_parallel` at once), shuts down what cannot move only when
//! asked, records per VM where it went (in the state file too, so failback survives a
//! restart), and ends `maintenance` or `failed_drain` naming the VMs left behind.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aetherv_hyperv::ops::{
    ClusterNodeAction, HostMaintenance, HostState, HyperVHost, HyperVHostExt, MaintenanceChange,
    MaintenanceSet, PowerAction, Vm, VmDisposition, VmOrigin, VmState, effective_state,
};
use aetherv_inventory::Snapshot;
use aetherv_inventory::placement::{self, Demand};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::JobQueue;
use crate::maintenance::{
    DrainRequest, Evacuate, MaintenanceEvent, MaintenanceEventKind, ResumeRequest, RunRequest,
};
use crate::migration::{MigrationMode, MigrationPlan};
use crate::model::{JobStatus, JobWork, LineLevel, NewJob, Requester};
use crate::record::{Outcome, error_chain, rfc3339};

type Ended = (JobStatus, Outcome);

/// How long a hook (silence, expiry) may take before the maintenance goes on without it.
const HOOK_TIMEOUT: Duration = Duration::from_secs(15);

/// Whether a VM in `state` runs (and so must move off a host being drained).
fn is_running(state: VmState) -> bool {
    matches!(
        state,
        VmState::Running | VmState::Paused | VmState::Starting | VmState::Pausing
    )
}

/// The memory a VM needs on its new host.
fn needed_memory(vm: &Vm) -> u64 {
    vm.memory_assigned_bytes.max(vm.memory_startup_bytes)
}

/// The host placement chooses for `vm` leaving `source`: another host of the source's
/// cluster first (its storage is shared), then, for a VM that is not a cluster role, any
/// other host with room for its disks too (storage moves with it). `reserved` is memory
/// already promised to migrations of this drain, which the snapshot does not show yet.
pub(crate) fn choose_target(
    snapshot: &Snapshot,
    source: &str,
    vm: &Vm,
    reserved: &HashMap<String, u64>,
    managed: &[String],
) -> Result<String, String> {
    let cluster = snapshot
        .host(source)
        .and_then(|h| h.facts.as_ref())
        .and_then(|f| f.cluster.clone());
    let others: Vec<&str> = managed
        .iter()
        .map(String::as_str)
        .filter(|h| !h.eq_ignore_ascii_case(source))
        .collect();
    let cluster_of = |h: &str| {
        snapshot
            .host(h)
            .and_then(|s| s.facts.as_ref())
            .and_then(|f| f.cluster.clone())
    };
    let choose = |members: Vec<&str>, disk: Option<u64>| {
        let demand = Demand {
            memory_bytes: needed_memory(vm),
            disk_bytes: disk,
            image: None,
        };
        let mut candidates = placement::candidates(snapshot, members, &demand);
        for c in &mut candidates {
            let promised = reserved
                .iter()
                .find(|(h, _)| h.eq_ignore_ascii_case(&c.host))
                .map_or(0, |(_, bytes)| *bytes);
            c.memory_available_bytes = c.memory_available_bytes.map(|m| m.saturating_sub(promised));
        }
        placement::choose(&candidates, &demand)
    };
    let mut why = Vec::new();
    if let Some(cluster) = &cluster {
        let members: Vec<&str> = others
            .iter()
            .copied()
            .filter(|h| cluster_of(h).as_deref() == Some(cluster.as_str()))
            .collect();
        match choose(members, None) {
            Ok(chosen) => return Ok(chosen.host),
            Err(no) => why.push(format!("in cluster {cluster}: {no}")),
        }
        if vm.clustered {
            return Err(why.join("; "));
        }
    }
    let rest: Vec<&str> = others
        .iter()
        .copied()
        .filter(|h| cluster.is_none() || cluster_of(h) != cluster)
        .collect();
    if rest.is_empty() && !why.is_empty() {
        return Err(why.join("; "));
    }
    let disk: u64 = vm.disks.iter().map(|d| d.file_size_bytes).sum();
    match choose(rest, Some(disk)) {
        Ok(chosen) => Ok(chosen.host),
        Err(no) => {
            why.push(no.to_string());
            Err(why.join("; "))
        }
    }
}

impl JobQueue {
    /// The caller recorded on job `id`.
    fn requester_of(&self, id: &str) -> Requester {
        self.lock()
            .records
            .get(id)
            .map(|r| r.requested_by.clone())
            .unwrap_or_default()
    }

    /// One host call bounded by the step timeout; the error is the job's message.
    async fn bounded<T, E: std::error::Error + 'static>(
        &self,
        host: &str,
        what: &str,
        timeout: Duration,
        call: impl Future<Output = Result<T, E>>,
    ) -> Result<T, String> {
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(format!("{what} failed: {}", error_chain(&e))),
            Err(_) => Err(format!(
                "host {host} did not answer {what} within {} s",
                timeout.as_secs()
            )),
        }
    }

    /// Writes the host's state file (and acts on its cluster node).
    async fn write_state(
        &self,
        host: &Arc<dyn HyperVHost>,
        record: &HostMaintenance,
        cluster_node: ClusterNodeAction,
    ) -> Result<MaintenanceSet, String> {
        let timeout = if cluster_node == ClusterNodeAction::None {
            self.shared.config.step_timeout
        } else {
            aetherv_hyperv::ops::OperationKind::SetMaintenance.default_timeout()
        };
        let name = host.host_name().to_owned();
        self.bounded(
            &name,
            "writing the maintenance state",
            timeout,
            host.set_maintenance(MaintenanceChange {
                record: record.clone(),
                cluster_node,
            }),
        )
        .await
    }

    /// Refreshes `host` in the inventory with its facts (state, capacity); failures only log.
    async fn refresh_facts(&self, host: &str) {
        if let Some(inventory) = &self.shared.inventory {
            let refresh = tokio::time::timeout(
                self.shared.config.refresh_timeout,
                inventory.refresh_host_facts(host),
            )
            .await;
            if !matches!(refresh, Ok(Ok(()))) {
                tracing::debug!(%host, "facts refresh after a maintenance change failed");
            }
        }
    }

    fn emit(
        &self,
        id: &str,
        host: &str,
        kind: MaintenanceEventKind,
        state: HostState,
        vm: Option<(&VmOrigin, Option<&str>)>,
        message: String,
    ) {
        let by = self.requester_of(id);
        let event = MaintenanceEvent {
            event: kind,
            host: host.to_owned(),
            job: id.to_owned(),
            state: state.as_str().to_owned(),
            vm_id: vm.map(|(o, _)| o.vm_id),
            vm_name: vm.map(|(o, _)| o.vm_name.clone()),
            to_host: vm.and_then(|(_, to)| to.map(str::to_owned)),
            message,
            reason: by.reason.clone(),
            ticket: by.ticket.clone(),
            requested_by: by.display_name().to_owned(),
            at: rfc3339(SystemTime::now()),
        };
        self.hooks().event(event);
    }

    /// Moves `vm` from `source` to `target` through the one migration entry point: a
    /// `migrate` job (visible, holding the VM, asked for by the drain's caller) that this job
    /// waits for; cancelling the drain cancels it. A cluster role, or a VM moving within its
    /// hosts' cluster (shared storage), moves live; anything else moves live with its storage
    /// (shared nothing).
    async fn migrate_for_drain(
        &self,
        parent: &str,
        source: &str,
        vm: &Vm,
        target: &str,
        cancel: &CancellationToken,
    ) -> Result<(), String> {
        let same_cluster = self.shared.inventory.as_ref().is_some_and(|inventory| {
            let snapshot = inventory.snapshot();
            let cluster = |h: &str| {
                snapshot
                    .hosts()
                    .find(|s| s.name.eq_ignore_ascii_case(h))
                    .and_then(|s| s.facts.as_ref())
                    .and_then(|f| f.cluster.clone())
            };
            cluster(source).is_some() && cluster(source) == cluster(target)
        });
        let mode = if vm.clustered || same_cluster {
            MigrationMode::Live
        } else {
            MigrationMode::SharedNothing
        };
        let plan = MigrationPlan {
            vm: vm.id,
            vm_name: vm.name.clone(),
            source_host: source.to_owned(),
            target_host: target.to_owned(),
            mode,
            destination_path: None,
            clustered: vm.clustered,
        };
        let job = self
            .submit(NewJob {
                parameters: json!({
                    "vm_id": vm.id,
                    "target_host": target,
                    "mode": mode,
                    "maintenance_job": parent,
                }),
                work: JobWork::Migrate(Box::new(plan)),
                host: source.to_owned(),
                vm_id: Some(vm.id),
                vm_name: Some(vm.name.clone()),
                requested_by: self.requester_of(parent),
            })
            .map_err(|e| e.to_string())?;
        self.line(
            parent,
            LineLevel::Info,
            format!(
                "VM {} moves to {target} ({}) in job {}",
                vm.name,
                mode.as_str(),
                job.id
            ),
        );
        let ended = tokio::select! {
            view = self.wait(&job.id) => view,
            () = cancel.cancelled() => {
                let _ = self.cancel(&job.id);
                self.wait(&job.id).await
            }
        };
        match ended {
            Some(view) if view.status == JobStatus::Succeeded => Ok(()),
            Some(view) => Err(format!(
                "migration job {} {}: {}",
                view.id,
                view.status.as_str(),
                view.error.unwrap_or_default()
            )),
            None => Err(format!("migration job {} left the history", job.id)),
        }
    }

    /// A drain: see the module documentation.
    pub(super) async fn drain_host(
        &self,
        id: &str,
        host: Arc<dyn HyperVHost>,
        request: DrainRequest,
        cancel: &CancellationToken,
    ) -> Ended {
        let host_name = host.host_name().to_owned();
        let by = self.requester_of(id);
        let step_timeout = self.shared.config.step_timeout;
        self.step(id, "Drain.Read", 2, format!("reading host {host_name}"));
        let facts = match self
            .bounded(&host_name, "reading the host", step_timeout, host.facts())
            .await
        {
            Ok(f) => f,
            Err(e) => return (JobStatus::Failed, Outcome::failure(e)),
        };
        let previous = facts.maintenance.clone().unwrap_or_default();
        let state_now = effective_state(
            facts.maintenance.as_ref(),
            facts.cluster_node_state.as_deref(),
        );
        if matches!(state_now, HostState::Draining | HostState::Resuming) {
            return (
                JobStatus::Failed,
                Outcome::failure(format!(
                    "host {host_name} is {state_now} (job {}); wait for it to end",
                    previous.job.as_deref().unwrap_or("unknown")
                )),
            );
        }
        let clustered = facts.cluster.is_some() && facts.cluster_node_state.is_some();
        let vms = match self
            .bounded(
                &host_name,
                "reading the VMs",
                step_timeout,
                host.inventory(),
            )
            .await
        {
            Ok(i) => i.vms,
            Err(e) => return (JobStatus::Failed, Outcome::failure(e)),
        };

        // The silence first, so alerts of the drain itself are silenced.
        let mut silence_id = previous.silence_id.clone();
        if silence_id.is_none() {
            let comment = format!(
                "aetherv maintenance of {host_name} (job {id}){}{}",
                by.reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default(),
                by.ticket
                    .as_deref()
                    .map(|t| format!(" [{t}]"))
                    .unwrap_or_default()
            );
            let hooks = self.hooks();
            match tokio::time::timeout(
                HOOK_TIMEOUT,
                hooks.silence(&host_name, comment, by.display_name().to_owned()),
            )
            .await
            {
                Ok(Ok(Some(silence))) => {
                    self.line(
                        id,
                        LineLevel::Info,
                        format!("alerts of {host_name} silenced (Alertmanager silence {silence})"),
                    );
                    silence_id = Some(silence);
                }
                Ok(Ok(None)) => {}
                Ok(Err(e)) => self.line(
                    id,
                    LineLevel::Warn,
                    format!("the Alertmanager silence could not be created: {e}"),
                ),
                Err(_) => self.line(
                    id,
                    LineLevel::Warn,
                    "the Alertmanager silence could not be created in time".to_owned(),
                ),
            }
        }

        // VMs still away from an earlier drain keep their record (for failback).
        let mut origins: Vec<VmOrigin> = previous
            .vms
            .iter()
            .filter(|o| {
                matches!(
                    o.disposition,
                    VmDisposition::Migrated | VmDisposition::MovedByCluster
                ) && !vms.iter().any(|v| v.id == o.vm_id)
            })
            .cloned()
            .collect();
        let mut record = HostMaintenance {
            state: HostState::Draining,
            since: Some(rfc3339(SystemTime::now())),
            reason: by.reason.clone(),
            ticket: by.ticket.clone(),
            requested_by: Some(by.display_name().to_owned()),
            job: Some(id.to_owned()),
            vms: origins.clone(),
            silence_id,
        };
        self.step(
            id,
            "Drain.Mark",
            5,
            format!(
                "marking host {host_name} draining (evacuate: {}, at most {} at once)",
                request.evacuate.as_str(),
                request.max_parallel.max(1)
            ),
        );
        if let Err(e) = self
            .write_state(&host, &record, ClusterNodeAction::None)
            .await
        {
            return (JobStatus::Failed, Outcome::failure(e));
        }
        self.refresh_facts(&host_name).await;
        self.emit(
            id,
            &host_name,
            MaintenanceEventKind::Started,
            HostState::Draining,
            None,
            format!("host {host_name} is draining"),
        );

        let mut cancelled = false;
        let mut remaining = vms;
        if request.evacuate != Evacuate::None && clustered {
            self.step(
                id,
                "Drain.ClusterNode",
                10,
                format!(
                    "pausing cluster node {host_name} with drain (the cluster moves its roles)"
                ),
            );
            match self
                .write_state(&host, &record, ClusterNodeAction::SuspendDrain)
                .await
            {
                Ok(set) => self.line(
                    id,
                    LineLevel::Info,
                    format!(
                        "cluster node {host_name} is {} (drain {})",
                        set.cluster_node_state.as_deref().unwrap_or("unknown"),
                        set.drain_status.as_deref().unwrap_or("unknown")
                    ),
                ),
                Err(e) => self.line(
                    id,
                    LineLevel::Warn,
                    format!("the cluster node drain failed: {e}; moving the VMs one by one"),
                ),
            }
            let after = match self
                .bounded(
                    &host_name,
                    "reading the VMs",
                    step_timeout,
                    host.inventory(),
                )
                .await
            {
                Ok(i) => i.vms,
                Err(e) => {
                    self.line(id, LineLevel::Error, e);
                    remaining.clone()
                }
            };
            let gone: Vec<&Vm> = remaining
                .iter()
                .filter(|v| !after.iter().any(|a| a.id == v.id))
                .collect();
            if let Some(inventory) = &self.shared.inventory {
                for h in self.hosts().keys() {
                    if !gone.is_empty() {
                        let _ = tokio::time::timeout(
                            self.shared.config.refresh_timeout,
                            inventory.refresh_host(h),
                        )
                        .await;
                    }
                }
            }
            let snapshot = self.shared.inventory.as_ref().map(|i| i.snapshot());
            for vm in gone {
                let to = snapshot
                    .as_ref()
                    .and_then(|s| s.host_of(vm.id).map(ToString::to_string));
                let origin = VmOrigin {
                    vm_id: vm.id,
                    vm_name: vm.name.clone(),
                    disposition: VmDisposition::MovedByCluster,
                    moved_to: to.clone(),
                    reason: None,
                };
                self.line(
                    id,
                    LineLevel::Info,
                    format!(
                        "VM {} moved by the cluster to {}",
                        vm.name,
                        to.as_deref().unwrap_or("another node")
                    ),
                );
                self.emit(
                    id,
                    &host_name,
                    MaintenanceEventKind::VmMoved,
                    HostState::Draining,
                    Some((&origin, to.as_deref())),
                    format!("VM {} moved by the cluster", vm.name),
                );
                origins.push(origin);
            }
            remaining = after;
        }

        let (running, idle): (Vec<Vm>, Vec<Vm>) =
            remaining.into_iter().partition(|v| is_running(v.state));
        drop(idle);
        let mut to_move = Vec::new();
        for vm in running {
            if request.exclude.contains(&vm.id) {
                self.line(
                    id,
                    LineLevel::Info,
                    format!("VM {} is excluded and stays", vm.name),
                );
                origins.push(VmOrigin {
                    vm_id: vm.id,
                    vm_name: vm.name.clone(),
                    disposition: VmDisposition::Excluded,
                    moved_to: None,
                    reason: Some("excluded by the request".to_owned()),
                });
            } else if request.evacuate == Evacuate::None {
                // Marking only: running VMs stay and are not counted as left behind.
            } else {
                to_move.push(vm);
            }
        }

        let total = to_move.len().max(1);
        let managed: Vec<String> = self.hosts().keys().cloned().collect();
        let permits = Arc::new(Semaphore::new(request.max_parallel.max(1)));
        let mut reserved: HashMap<String, u64> = HashMap::new();
        let mut moving: Vec<(String, String)> = Vec::new();
        let mut moves = tokio::task::JoinSet::new();
        let mut done = 0usize;
        let mut pending = to_move.into_iter();
        loop {
            if cancel.is_cancelled() {
                cancelled = true;
            }
            let next = if cancelled { None } else { pending.next() };
            let Some(vm) = next else { break };
            // Wait for a free slot, handling moves that end meanwhile.
            let permit = loop {
                tokio::select! {
                    permit = Arc::clone(&permits).acquire_owned() => break permit.ok(),
                    Some(joined) = moves.join_next(), if !moves.is_empty() => {
                        done += 1;
                        self.moved(id, &host, &mut record, &mut origins, &mut reserved, &mut moving, &request, joined, done, total).await;
                    }
                }
            };
            let Some(permit) = permit else { break };
            let snapshot = match &self.shared.inventory {
                Some(inventory) => inventory.snapshot(),
                None => {
                    self.unmovable(
                        id,
                        &host,
                        &request,
                        &mut origins,
                        &vm,
                        "no inventory to place it".to_owned(),
                    )
                    .await;
                    continue;
                }
            };
            let target = match choose_target(&snapshot, &host_name, &vm, &reserved, &managed) {
                Ok(t) => t,
                Err(why) => {
                    drop(permit);
                    self.unmovable(
                        id,
                        &host,
                        &request,
                        &mut origins,
                        &vm,
                        format!("no host can take it: {why}"),
                    )
                    .await;
                    continue;
                }
            };
            *reserved.entry(target.clone()).or_default() += needed_memory(&vm);
            moving.push((vm.name.clone(), target.clone()));
            self.publish_drain(id, &host_name, &origins, &moving);
            self.line(
                id,
                LineLevel::Info,
                format!(
                    "moving VM {} ({} MiB) to {target}",
                    vm.name,
                    needed_memory(&vm) >> 20
                ),
            );
            let queue = self.clone();
            let parent = id.to_owned();
            let source = host_name.clone();
            let cancel = cancel.clone();
            moves.spawn(async move {
                let result = queue
                    .migrate_for_drain(&parent, &source, &vm, &target, &cancel)
                    .await;
                drop(permit);
                (vm, target, result)
            });
        }
        while let Some(joined) = moves.join_next().await {
            done += 1;
            self.moved(
                id,
                &host,
                &mut record,
                &mut origins,
                &mut reserved,
                &mut moving,
                &request,
                joined,
                done,
                total,
            )
            .await;
        }
        if cancelled {
            for vm in pending {
                origins.push(VmOrigin {
                    vm_id: vm.id,
                    vm_name: vm.name.clone(),
                    disposition: VmDisposition::LeftBehind,
                    moved_to: None,
                    reason: Some("the drain was cancelled".to_owned()),
                });
            }
        }

        let left: Vec<String> = origins
            .iter()
            .filter(|o| o.disposition == VmDisposition::LeftBehind)
            .map(|o| o.vm_name.clone())
            .collect();
        let state = if left.is_empty() && !cancelled {
            HostState::Maintenance
        } else {
            HostState::FailedDrain
        };
        record.state = state;
        record.since = Some(rfc3339(SystemTime::now()));
        record.vms = origins.clone();
        self.step(
            id,
            "Drain.Finish",
            99,
            format!("marking host {host_name} {state}"),
        );
        let written = self
            .write_state(&host, &record, ClusterNodeAction::None)
            .await;
        self.refresh_facts(&host_name).await;
        let result = json!({
            "host": host_name,
            "state": state,
            "vms": origins,
            "left_behind": left,
            "silence_id": record.silence_id,
        });
        if let Err(e) = written {
            let message = format!(
                "host {host_name} was lost during the drain: its state could not be written ({e}); VMs not moved: {}",
                if left.is_empty() {
                    "none".to_owned()
                } else {
                    left.join(", ")
                }
            );
            self.emit(
                id,
                &host_name,
                MaintenanceEventKind::Failed,
                HostState::FailedDrain,
                None,
                message.clone(),
            );
            return (
                JobStatus::Failed,
                Outcome {
                    error: Some(message),
                    cleanup: None,
                    result: Some(result),
                },
            );
        }
        if state == HostState::Maintenance {
            self.emit(
                id,
                &host_name,
                MaintenanceEventKind::InMaintenance,
                state,
                None,
                format!("host {host_name} is in maintenance"),
            );
            return (JobStatus::Succeeded, Outcome::success(Some(result)));
        }
        let message = format!(
            "host {host_name} is failed_drain{}: VMs left on the host: {}",
            if cancelled { " (cancelled)" } else { "" },
            if left.is_empty() {
                "none".to_owned()
            } else {
                left.join(", ")
            }
        );
        self.emit(
            id,
            &host_name,
            MaintenanceEventKind::Failed,
            state,
            None,
            message.clone(),
        );
        (
            if cancelled {
                JobStatus::Cancelled
            } else {
                JobStatus::Failed
            },
            Outcome {
                error: Some(message),
                cleanup: None,
                result: Some(result),
            },
        )
    }

    /// Handles one finished migration of a drain.
    #[allow(clippy::too_many_arguments)]
    async fn moved(
        &self,
        id: &str,
        host: &Arc<dyn HyperVHost>,
        record: &mut HostMaintenance,
        origins: &mut Vec<VmOrigin>,
        reserved: &mut HashMap<String, u64>,
        moving: &mut Vec<(String, String)>,
        request: &DrainRequest,
        joined: Result<(Vm, String, Result<(), String>), tokio::task::JoinError>,
        done: usize,
        total: usize,
    ) {
        let (vm, target, result) = match joined {
            Ok(x) => x,
            Err(e) => {
                self.line(
                    id,
                    LineLevel::Error,
                    format!("a migration task failed: {e}"),
                );
                return;
            }
        };
        let host_name = host.host_name().to_owned();
        moving.retain(|(name, to)| !(name == &vm.name && to == &target));
        let percent = u8::try_from(10 + done * 85 / total).unwrap_or(95);
        match result {
            Ok(()) => {
                let origin = VmOrigin {
                    vm_id: vm.id,
                    vm_name: vm.name.clone(),
                    disposition: VmDisposition::Migrated,
                    moved_to: Some(target.clone()),
                    reason: None,
                };
                self.step(
                    id,
                    "Drain.MoveVms",
                    percent,
                    format!("VM {} moved to {target} ({done}/{total})", vm.name),
                );
                self.emit(
                    id,
                    &host_name,
                    MaintenanceEventKind::VmMoved,
                    HostState::Draining,
                    Some((&origin, Some(&target))),
                    format!("VM {} moved from {host_name} to {target}", vm.name),
                );
                origins.push(origin);
                // The origin goes to the host at once, so failback survives a restart.
                record.vms.clone_from(origins);
                if let Err(e) = self
                    .write_state(host, record, ClusterNodeAction::None)
                    .await
                {
                    self.line(
                        id,
                        LineLevel::Warn,
                        format!("the state file could not be updated: {e}"),
                    );
                }
            }
            Err(e) => {
                if let Some(r) = reserved.get_mut(&target) {
                    *r = r.saturating_sub(needed_memory(&vm));
                }
                self.step(
                    id,
                    "Drain.MoveVms",
                    percent,
                    format!("VM {} could not move to {target} ({done}/{total})", vm.name),
                );
                self.unmovable(id, host, request, origins, &vm, e).await;
            }
        }
        self.publish_drain(id, &host_name, origins, moving);
    }

    /// The drain's progress so far as the job's result (the host page shows it live).
    fn publish_drain(
        &self,
        id: &str,
        host: &str,
        origins: &[VmOrigin],
        moving: &[(String, String)],
    ) {
        let result = json!({
            "host": host,
            "state": HostState::Draining,
            "vms": origins,
            "moving": moving
                .iter()
                .map(|(vm, to)| json!({ "vm_name": vm, "to_host": to }))
                .collect::<Vec<_>>(),
        });
        self.update(id, |r| r.result = Some(result));
    }

    /// A VM that cannot move: shut down when the request allows it, else left behind.
    async fn unmovable(
        &self,
        id: &str,
        host: &Arc<dyn HyperVHost>,
        request: &DrainRequest,
        origins: &mut Vec<VmOrigin>,
        vm: &Vm,
        why: String,
    ) {
        let host_name = host.host_name().to_owned();
        if request.evacuate == Evacuate::Shutdown {
            self.line(
                id,
                LineLevel::Warn,
                format!("VM {} cannot move ({why}); shutting it down", vm.name),
            );
            let shut = self
                .bounded(
                    &host_name,
                    "shutting the VM down",
                    self.shared.config.step_timeout,
                    host.power(vm.id, PowerAction::Shutdown),
                )
                .await;
            match shut {
                Ok(_) => {
                    origins.push(VmOrigin {
                        vm_id: vm.id,
                        vm_name: vm.name.clone(),
                        disposition: VmDisposition::ShutDown,
                        moved_to: None,
                        reason: Some(why),
                    });
                    return;
                }
                Err(e) => self.line(id, LineLevel::Error, e),
            }
        } else {
            self.line(
                id,
                LineLevel::Error,
                format!("VM {} cannot move: {why}", vm.name),
            );
        }
        origins.push(VmOrigin {
            vm_id: vm.id,
            vm_name: vm.name.clone(),
            disposition: VmDisposition::LeftBehind,
            moved_to: None,
            reason: Some(why),
        });
    }

    /// A resume: the host (and its cluster node) back to `active`; with failback, each VM the
    /// drain moved goes back; VMs the drain shut down are started again.
    pub(super) async fn resume(
        &self,
        id: &str,
        host: Arc<dyn HyperVHost>,
        request: ResumeRequest,
        cancel: &CancellationToken,
    ) -> Ended {
        let host_name = host.host_name().to_owned();
        let step_timeout = self.shared.config.step_timeout;
        self.step(id, "Resume.Read", 5, format!("reading host {host_name}"));
        let facts = match self
            .bounded(&host_name, "reading the host", step_timeout, host.facts())
            .await
        {
            Ok(f) => f,
            Err(e) => return (JobStatus::Failed, Outcome::failure(e)),
        };
        let mut record = facts.maintenance.clone().unwrap_or_default();
        let paused = facts
            .cluster_node_state
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("Paused"));
        let node_action = match (paused, request.failback) {
            (false, _) => ClusterNodeAction::None,
            (true, true) => ClusterNodeAction::ResumeFailback,
            (true, false) => ClusterNodeAction::Resume,
        };
        record.state = HostState::Resuming;
        record.since = Some(rfc3339(SystemTime::now()));
        record.job = Some(id.to_owned());
        self.step(
            id,
            "Resume.Mark",
            10,
            format!(
                "marking host {host_name} resuming{}",
                if paused {
                    " and resuming its cluster node"
                } else {
                    ""
                }
            ),
        );
        if let Err(e) = self.write_state(&host, &record, node_action).await {
            return (JobStatus::Failed, Outcome::failure(e));
        }
        if let Some(inventory) = &self.shared.inventory {
            for h in self.hosts().keys() {
                let _ = tokio::time::timeout(
                    self.shared.config.refresh_timeout,
                    inventory.refresh_host(h),
                )
                .await;
            }
        }

        let mut stays: Vec<VmOrigin> = Vec::new();
        let mut back: Vec<VmOrigin> = Vec::new();
        let total = record.vms.len().max(1);
        for (i, origin) in record.vms.clone().into_iter().enumerate() {
            let percent = u8::try_from(15 + (i + 1) * 80 / total).unwrap_or(95);
            match origin.disposition {
                VmDisposition::ShutDown => {
                    self.step(
                        id,
                        "Resume.Restart",
                        percent,
                        format!("starting VM {} again", origin.vm_name),
                    );
                    if let Err(e) = self
                        .bounded(
                            &host_name,
                            "starting the VM",
                            step_timeout,
                            host.power(origin.vm_id, PowerAction::Start),
                        )
                        .await
                    {
                        self.line(id, LineLevel::Warn, e);
                    }
                }
                VmDisposition::Migrated | VmDisposition::MovedByCluster if request.failback => {
                    if cancel.is_cancelled() {
                        stays.push(origin);
                        continue;
                    }
                    let snapshot = self.shared.inventory.as_ref().map(|i| i.snapshot());
                    let found = snapshot.as_ref().and_then(|s| {
                        s.vm(origin.vm_id)
                            .map(|v| (v.host.to_string(), v.vm.clone()))
                    });
                    let Some((now_on, vm)) = found else {
                        self.line(
                            id,
                            LineLevel::Warn,
                            format!("VM {} is on no managed host; it stays away", origin.vm_name),
                        );
                        stays.push(origin);
                        continue;
                    };
                    if now_on.eq_ignore_ascii_case(&host_name) {
                        self.step(
                            id,
                            "Resume.Failback",
                            percent,
                            format!("VM {} is back on {host_name}", origin.vm_name),
                        );
                        back.push(origin);
                        continue;
                    }
                    self.step(
                        id,
                        "Resume.Failback",
                        percent,
                        format!("moving VM {} back from {now_on}", origin.vm_name),
                    );
                    match self
                        .migrate_for_drain(id, &now_on, &vm, &host_name, cancel)
                        .await
                    {
                        Ok(()) => {
                            self.emit(
                                id,
                                &host_name,
                                MaintenanceEventKind::VmMoved,
                                HostState::Resuming,
                                Some((&origin, Some(&host_name))),
                                format!("VM {} moved back to {host_name}", origin.vm_name),
                            );
                            back.push(origin);
                        }
                        Err(e) => {
                            self.line(
                                id,
                                LineLevel::Error,
                                format!("VM {} could not move back: {e}", origin.vm_name),
                            );
                            stays.push(origin);
                        }
                    }
                }
                _ => {}
            }
        }

        record.state = HostState::Active;
        record.since = Some(rfc3339(SystemTime::now()));
        let silence = record.silence_id.take();
        record.vms.clone_from(&stays);
        self.step(
            id,
            "Resume.Finish",
            98,
            format!("marking host {host_name} active"),
        );
        if let Err(e) = self
            .write_state(&host, &record, ClusterNodeAction::None)
            .await
        {
            return (JobStatus::Failed, Outcome::failure(e));
        }
        if let Some(silence) = &silence {
            match tokio::time::timeout(HOOK_TIMEOUT, self.hooks().expire(silence)).await {
                Ok(Ok(())) => self.line(
                    id,
                    LineLevel::Info,
                    format!("Alertmanager silence {silence} expired"),
                ),
                Ok(Err(e)) => self.line(
                    id,
                    LineLevel::Warn,
                    format!("Alertmanager silence {silence} could not be expired: {e}"),
                ),
                Err(_) => self.line(
                    id,
                    LineLevel::Warn,
                    format!("Alertmanager silence {silence} could not be expired in time"),
                ),
            }
        }
        for h in self.hosts().keys() {
            self.refresh_facts(h).await;
        }
        let names = |list: &[VmOrigin]| list.iter().map(|o| o.vm_name.clone()).collect::<Vec<_>>();
        let result = json!({
            "host": host_name,
            "state": HostState::Active,
            "failed_back": names(&back),
            "not_moved_back": names(&stays),
        });
        self.emit(
            id,
            &host_name,
            MaintenanceEventKind::Resumed,
            HostState::Active,
            None,
            format!("host {host_name} is active again"),
        );
        if request.failback && !stays.is_empty() {
            return (
                JobStatus::Failed,
                Outcome {
                    error: Some(format!(
                        "host {host_name} is active; VMs not moved back: {}",
                        names(&stays).join(", ")
                    )),
                    cleanup: None,
                    result: Some(result),
                },
            );
        }
        (JobStatus::Succeeded, Outcome::success(Some(result)))
    }

    /// A maintenance run: drains the hosts in order under the per-cluster limit, never the
    /// last active host of a cluster and never below the spare memory; a drained host
    /// stays out until it is resumed, which frees its place. Each host's log is kept with
    /// the run (its drain job and lines); cancelling the run cancels its drains.
    pub(super) async fn maintenance_run(
        &self,
        id: &str,
        request: RunRequest,
        cancel: &CancellationToken,
    ) -> Ended {
        let by = self.requester_of(id);
        let Some(inventory) = self.shared.inventory.clone() else {
            return (
                JobStatus::Failed,
                Outcome::failure("a maintenance run needs the inventory".to_owned()),
            );
        };
        let mut runs: Vec<HostRun> = request
            .hosts
            .iter()
            .map(|h| HostRun::new(h.clone()))
            .collect();
        self.step(
            id,
            "Run.Drain",
            1,
            format!(
                "maintenance run over {} hosts, at most {} per cluster out at once",
                runs.len(),
                request.max_per_cluster.max(1)
            ),
        );
        let limit = request.max_per_cluster.max(1);
        loop {
            let snapshot = inventory.snapshot();
            if cancel.is_cancelled() {
                for run in &mut runs {
                    if let Some(job) = run.drain_job.clone()
                        && run.status == RunStatus::Draining
                    {
                        let _ = self.cancel(&job);
                    }
                    if matches!(run.status, RunStatus::Pending | RunStatus::Draining) {
                        run.note(RunStatus::Cancelled, "the run was cancelled".to_owned());
                    }
                }
                self.publish_run(id, &runs);
                return (
                    JobStatus::Cancelled,
                    Outcome {
                        error: Some("the maintenance run was cancelled".to_owned()),
                        cleanup: None,
                        result: Some(run_result(&runs)),
                    },
                );
            }
            // Follow the drains and the hosts waiting for their resume.
            for run in &mut runs {
                match run.status {
                    RunStatus::Draining => {
                        let Some(job) = run.drain_job.clone() else {
                            continue;
                        };
                        match self.get(&job) {
                            Some(view) if view.status.is_final() => {
                                run.log.extend(
                                    self.lines(&job)
                                        .map(|(lines, _)| lines)
                                        .unwrap_or_default()
                                        .into_iter()
                                        .map(|l| format!("{} {}", l.at, l.message)),
                                );
                                if view.status == JobStatus::Succeeded {
                                    run.note(
                                        RunStatus::InMaintenance,
                                        format!(
                                            "{} is in maintenance; resume it to let the run go on",
                                            run.host
                                        ),
                                    );
                                } else {
                                    run.note(
                                        RunStatus::Failed,
                                        format!(
                                            "the drain of {} ended {}: {}",
                                            run.host,
                                            view.status.as_str(),
                                            view.error.unwrap_or_default()
                                        ),
                                    );
                                }
                            }
                            Some(_) => {}
                            None => run.note(
                                RunStatus::Failed,
                                format!("drain job {job} left the history"),
                            ),
                        }
                    }
                    RunStatus::InMaintenance
                        if host_state(&snapshot, &run.host) == HostState::Active =>
                    {
                        run.note(RunStatus::Done, format!("{} is active again", run.host));
                    }
                    _ => {}
                }
            }
            // Start what the limits allow, in order.
            let order: Vec<usize> = (0..runs.len()).collect();
            for i in order {
                if runs[i].status != RunStatus::Pending {
                    continue;
                }
                let host = runs[i].host.clone();
                match admit(&snapshot, &host, &runs, limit, request.spare_memory_bytes) {
                    Admission::Go => {
                        let submitted = self.submit(NewJob {
                            work: JobWork::Drain(request.drain.clone()),
                            host: host.clone(),
                            vm_id: None,
                            vm_name: None,
                            parameters: json!({
                                "evacuate": request.drain.evacuate,
                                "max_parallel": request.drain.max_parallel,
                                "maintenance_run": id,
                            }),
                            requested_by: by.clone(),
                        });
                        match submitted {
                            Ok(job) => {
                                runs[i].drain_job = Some(job.id.clone());
                                runs[i].note(
                                    RunStatus::Draining,
                                    format!("draining {host} (job {})", job.id),
                                );
                                self.line(
                                    id,
                                    LineLevel::Info,
                                    format!("{host}: drain job {} started", job.id),
                                );
                            }
                            Err(e) => runs[i].note(
                                RunStatus::Failed,
                                format!("the drain of {host} was not accepted: {e}"),
                            ),
                        }
                    }
                    Admission::Wait(why) => runs[i].waiting(why),
                    Admission::Never(why) => {
                        self.line(id, LineLevel::Warn, format!("{host}: skipped: {why}"));
                        runs[i].note(RunStatus::Skipped, why);
                    }
                }
            }
            self.publish_run(id, &runs);
            let finished = runs.iter().filter(|r| r.status.is_final()).count();
            let percent = u8::try_from(1 + finished * 98 / runs.len().max(1)).unwrap_or(99);
            self.update(id, |r| {
                r.percent = r.percent.max(percent);
            });
            if finished == runs.len() {
                break;
            }
            tokio::select! {
                () = cancel.cancelled() => {}
                () = tokio::time::sleep(Duration::from_millis(300)) => {}
            }
        }
        let bad: Vec<String> = runs
            .iter()
            .filter(|r| matches!(r.status, RunStatus::Failed | RunStatus::Skipped))
            .map(|r| format!("{} ({})", r.host, r.status.as_str()))
            .collect();
        if bad.is_empty() {
            (
                JobStatus::Succeeded,
                Outcome::success(Some(run_result(&runs))),
            )
        } else {
            (
                JobStatus::Failed,
                Outcome {
                    error: Some(format!(
                        "hosts not taken through maintenance: {}",
                        bad.join(", ")
                    )),
                    cleanup: None,
                    result: Some(run_result(&runs)),
                },
            )
        }
    }

    fn publish_run(&self, id: &str, runs: &[HostRun]) {
        let result = run_result(runs);
        self.update(id, |r| r.result = Some(result));
    }
}

/// The state of `host` in `snapshot` (from its facts; unknown hosts count as active).
fn host_state(snapshot: &Snapshot, host: &str) -> HostState {
    snapshot
        .host(host)
        .or_else(|| snapshot.hosts().find(|h| h.name.eq_ignore_ascii_case(host)))
        .and_then(|h| h.facts.as_ref())
        .map_or(HostState::Active, |f| {
            effective_state(f.maintenance.as_ref(), f.cluster_node_state.as_deref())
        })
}

fn cluster_of(snapshot: &Snapshot, host: &str) -> Option<String> {
    snapshot
        .hosts()
        .find(|h| h.name.eq_ignore_ascii_case(host))
        .and_then(|h| h.facts.as_ref())
        .and_then(|f| f.cluster.clone())
}

enum Admission {
    Go,
    Wait(String),
    Never(String),
}

/// Whether `host` may be drained now: the per-cluster limit, never the last active host of a
/// cluster, never below the spare memory. `Wait` when another host of the run frees a place
/// later, `Never` when nothing in the run can change the answer.
fn admit(snapshot: &Snapshot, host: &str, runs: &[HostRun], limit: usize, spare: u64) -> Admission {
    let cluster = cluster_of(snapshot, host);
    let members: Vec<&str> = snapshot
        .hosts()
        .filter(|h| cluster_of(snapshot, &h.name) == cluster)
        .map(|h| &*h.name)
        .collect();
    let group = cluster
        .clone()
        .unwrap_or_else(|| "standalone hosts".to_owned());
    // A host this run is draining counts as out before the inventory shows it.
    let taken = |h: &str| {
        runs.iter().any(|r| {
            r.host.eq_ignore_ascii_case(h)
                && matches!(
                    r.status,
                    RunStatus::Draining | RunStatus::InMaintenance | RunStatus::Failed
                )
        })
    };
    let is_out = |h: &str| host_state(snapshot, h) != HostState::Active || taken(h);
    let out = members
        .iter()
        .filter(|h| !h.eq_ignore_ascii_case(host) && is_out(h))
        .count();
    // Hosts of this run in the same group that are out or on their way: they free places.
    let run_out = runs
        .iter()
        .filter(|r| {
            !r.host.eq_ignore_ascii_case(host)
                && matches!(
                    r.status,
                    RunStatus::Draining | RunStatus::InMaintenance | RunStatus::Failed
                )
                && cluster_of(snapshot, &r.host) == cluster
        })
        .count();
    let later = |why: String| {
        if run_out > 0 {
            Admission::Wait(why)
        } else {
            Admission::Never(why)
        }
    };
    if out >= limit {
        return later(format!("{out} hosts of {group} are out (limit {limit})"));
    }
    let active_others: Vec<&str> = members
        .iter()
        .copied()
        .filter(|h| !h.eq_ignore_ascii_case(host) && !is_out(h))
        .collect();
    if cluster.is_some() && active_others.is_empty() {
        return later(format!("{host} is the last active host of {group}"));
    }
    let needed: u64 = snapshot
        .vms_on(host)
        .filter(|v| is_running(v.vm.state))
        .map(|v| needed_memory(&v.vm))
        .sum();
    let available: u64 = active_others
        .iter()
        .filter_map(|h| snapshot.host(h))
        .filter_map(|h| h.facts.as_ref())
        .map(|f| f.memory_available_bytes)
        .sum();
    if available.saturating_sub(needed) < spare {
        return later(format!(
            "draining {host} would leave {} MiB available on the active hosts of {group}, below the spare {} MiB",
            available.saturating_sub(needed) >> 20,
            spare >> 20
        ));
    }
    Admission::Go
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunStatus {
    Pending,
    Draining,
    InMaintenance,
    Done,
    Failed,
    Skipped,
    Cancelled,
}

impl RunStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Draining => "draining",
            Self::InMaintenance => "in_maintenance",
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
            Self::Cancelled => "cancelled",
        }
    }

    /// Whether the run is finished with this host. A failed drain leaves the host out until
    /// it is resumed, like one in maintenance, but the run does not wait for it.
    fn is_final(self) -> bool {
        matches!(
            self,
            Self::Done | Self::Failed | Self::Skipped | Self::Cancelled
        )
    }
}

/// One host of a maintenance run, with its log.
struct HostRun {
    host: String,
    status: RunStatus,
    drain_job: Option<String>,
    waiting: Option<String>,
    log: Vec<String>,
}

impl HostRun {
    fn new(host: String) -> Self {
        Self {
            host,
            status: RunStatus::Pending,
            drain_job: None,
            waiting: None,
            log: Vec::new(),
        }
    }

    fn note(&mut self, status: RunStatus, line: String) {
        self.status = status;
        self.waiting = None;
        self.log
            .push(format!("{} {line}", rfc3339(SystemTime::now())));
    }

    fn waiting(&mut self, why: String) {
        if self.waiting.as_deref() != Some(why.as_str()) {
            self.log
                .push(format!("{} waiting: {why}", rfc3339(SystemTime::now())));
            self.waiting = Some(why);
        }
    }
}

fn run_result(runs: &[HostRun]) -> serde_json::Value {
    let hosts: Vec<_> = runs
        .iter()
        .map(|r| {
            json!({
                "host": r.host,
                "status": r.status.as_str(),
                "drain_job": r.drain_job,
                "waiting": r.waiting,
                "log": r.log,
            })
        })
        .collect();
    let counts: BTreeMap<&str, usize> = runs.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r.status.as_str()).or_default() += 1;
        m
    });
    json!({ "hosts": hosts, "counts": counts })
}
