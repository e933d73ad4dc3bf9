//! VM migration: the one reusable run of a move (check, move, progress, cancellation,
//! cleanup), used by the `migrate` job and by any workflow that moves VMs (a host drain).
//!
//! [`migrate`] takes the source host (and the destination host, for moves between hosts),
//! a [`MigrationPlan`] and a cancellation token, and reports [`MigrationEvent`]s:
//!
//! 1. **Check.** Compare-VM ([`HostCall::CompareVm`](aetherv_hyperv::ops::HostCall::CompareVm)) on the source; incompatibilities end
//!    the run with [`MigrationError::Incompatible`] before anything moves.
//! 2. **Move.** One blocking host call: `Move-VM` (live; shared-nothing with its storage;
//!    `Move-VMStorage` for a storage move), or the cluster's own
//!    `Move-ClusterVirtualMachineRole` for a clustered VM (live or quick). A quick move of a
//!    standalone VM is save, move with storage, start on the destination.
//! 3. **Progress.** While the move runs, the source's migration job (`Msvm_MigrationJob`,
//!    [`HostCall::MigrationStatus`](aetherv_hyperv::ops::HostCall::MigrationStatus)) is read every [`MigrationSettings::poll_interval`]; its
//!    percent complete is the run's progress.
//! 4. **Cancel.** A cancellation asks the host to cancel the job ([`HostCall::CancelMigration`](aetherv_hyperv::ops::HostCall::CancelMigration)).
//!    Before the switch-over the move then fails and the VM keeps running on the source
//!    ([`MigrationError::Cancelled`]); after it, the host refuses and the run follows the move
//!    to its end (it then succeeds, saying so in the log).
//! 5. **Cleanup.** After a failed or cancelled move the run finds the VM: still on the source
//!    (then files a move with storage copied into the destination folder are removed, a VM
//!    left registered on the destination too is removed there without its disks, and a VM
//!    a quick move saved is started again), or on the destination (the move did complete; the
//!    run succeeds). What could not be removed is reported, never hidden.

use std::sync::Arc;
use std::time::Duration;

use aetherv_hyperv::Error as HostError;
use aetherv_hyperv::ops::{
    ClusterMigrationType, ClusterMove, HyperVHost, HyperVHostExt, Incompatibility, Migrated,
    MigrationCheck, MigrationTarget, PowerAction, VmId, VmState,
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::model::LineLevel;
use crate::record::error_chain;

/// How a VM moves (the API's `mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema, schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum MigrationMode {
    /// The VM keeps running while its memory moves to another host; a clustered VM moves
    /// within its cluster (`Move-ClusterVirtualMachineRole -MigrationType Live`), a standalone
    /// one with `Move-VM` (its storage must be reachable from the destination).
    Live,
    /// Only the VM's files move, to another folder (or storage class) on the same host
    /// (`Move-VMStorage`); the VM keeps running.
    Storage,
    /// Host and storage together (`Move-VM -IncludeStorage`), for standalone hosts.
    SharedNothing,
    /// Save, move, resume: a clustered VM with `-MigrationType Quick`; a standalone one is
    /// saved, moved with its storage and started on the destination.
    Quick,
}

impl MigrationMode {
    /// Every mode, in the API's order.
    pub const ALL: [Self; 4] = [Self::Live, Self::Storage, Self::SharedNothing, Self::Quick];

    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Storage => "storage",
            Self::SharedNothing => "shared_nothing",
            Self::Quick => "quick",
        }
    }

    /// Parses the API name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == name)
    }

    /// Whether the VM's files move (and may need cleaning up in the destination folder).
    pub fn moves_storage(self, clustered: bool) -> bool {
        match self {
            Self::Storage | Self::SharedNothing => true,
            Self::Quick => !clustered,
            Self::Live => false,
        }
    }
}

/// What to move where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationPlan {
    /// The VM.
    pub vm: VmId,
    /// Its name (for messages).
    pub vm_name: String,
    /// The host it runs on now.
    pub source_host: String,
    /// The host it moves to (the source host for a storage move).
    pub target_host: String,
    /// How.
    pub mode: MigrationMode,
    /// The folder its files move to (storage moves, and moves with storage; default: the
    /// destination's VM folder `<VirtualMachinePath>\<vm name>`).
    pub destination_path: Option<String>,
    /// Whether the VM is a cluster role (it then moves with the cluster's own role move).
    pub clustered: bool,
}

impl MigrationPlan {
    /// Whether the VM changes host.
    pub fn changes_host(&self) -> bool {
        self.mode != MigrationMode::Storage
    }

    /// The Compare-VM target of this plan (`destination_path` resolved by the caller).
    fn target(&self, destination_path: Option<String>) -> MigrationTarget {
        let storage = self.mode.moves_storage(self.clustered);
        MigrationTarget {
            destination_host: self.target_host.clone(),
            with_storage: storage && self.mode != MigrationMode::Storage,
            destination_path: if storage { destination_path } else { None },
            storage_only: self.mode == MigrationMode::Storage,
        }
    }
}

/// Timing of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigrationSettings {
    /// How often the host's migration job is read while a move runs.
    pub poll_interval: Duration,
    /// Limit of each short host call (check, progress, cancel, save, start, cleanup); the
    /// move itself is bounded by the host stack's own limit of the operation.
    pub step_timeout: Duration,
}

impl Default for MigrationSettings {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(500),
            step_timeout: Duration::from_secs(120),
        }
    }
}

/// What a run reports while it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MigrationEvent {
    /// The run is in `step` at `percent` (0..=100).
    Progress {
        /// Step name (`Migrate.Check`, `Migrate.Move`, `Migrate.Save`, `Migrate.Start`,
        /// `Migrate.Cleanup`).
        step: &'static str,
        /// How far the whole run is.
        percent: u8,
        /// What happens.
        message: String,
    },
    /// A log line.
    Log {
        /// How important.
        level: LineLevel,
        /// The line.
        message: String,
    },
}

/// A completed move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MigrationDone {
    /// The VM.
    pub vm: VmId,
    /// Where it was.
    pub source_host: String,
    /// Where it is now (the source for a storage move).
    pub target_host: String,
    /// How it moved.
    pub mode: MigrationMode,
    /// The folder its files are in now, for moves with storage.
    pub destination_path: Option<String>,
    /// A cancellation came too late (after the switch-over): the move completed anyway.
    pub cancel_too_late: bool,
}

/// What cleanup after a failed or cancelled move did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MigrationCleanup {
    /// What was removed or restored.
    pub removed: Vec<String>,
    /// What could not be removed, with the reason.
    pub left_behind: Vec<(String, String)>,
}

/// Why a run did not move the VM.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MigrationError {
    /// Compare-VM (or the storage check) found problems; nothing moved.
    #[error("VM {vm} cannot move to {target}: {}", join(incompatibilities))]
    Incompatible {
        /// The VM's name.
        vm: String,
        /// The destination.
        target: String,
        /// Each problem, in the host's words.
        incompatibilities: Vec<Incompatibility>,
    },
    /// Cancelled before the switch-over; the VM is on the source.
    #[error("the move of VM {vm} was cancelled; it keeps running on {source_host}")]
    Cancelled {
        /// The VM's name.
        vm: String,
        /// Where it stays.
        source_host: String,
        /// What cleanup did.
        cleanup: MigrationCleanup,
    },
    /// The move failed; the VM is on the source (or, when `lost` is set, on neither host).
    #[error("moving VM {vm} to {target} failed: {message}")]
    Failed {
        /// The VM's name.
        vm: String,
        /// The destination.
        target: String,
        /// The host's error.
        message: String,
        /// What cleanup did.
        cleanup: MigrationCleanup,
    },
    /// A host the plan names is not managed, or a call could not be made.
    #[error("cannot move VM {vm}: {message}")]
    Invalid {
        /// The VM's name.
        vm: String,
        /// Why.
        message: String,
    },
}

fn join(items: &[Incompatibility]) -> String {
    items
        .iter()
        .map(|i| i.message.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

impl MigrationError {
    /// What cleanup did, for failed and cancelled moves.
    pub fn cleanup(&self) -> Option<&MigrationCleanup> {
        match self {
            Self::Cancelled { cleanup, .. } | Self::Failed { cleanup, .. } => Some(cleanup),
            _ => None,
        }
    }
}

/// The hosts a run talks to.
#[derive(Clone)]
pub struct MigrationHosts {
    /// The VM's host now.
    pub source: Arc<dyn HyperVHost>,
    /// The host it moves to (`None` for a storage move, which stays on the source).
    pub destination: Option<Arc<dyn HyperVHost>>,
}

impl std::fmt::Debug for MigrationHosts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MigrationHosts")
            .field("source", &self.source.host_name())
            .field(
                "destination",
                &self.destination.as_ref().map(|d| d.host_name().to_owned()),
            )
            .finish()
    }
}

async fn bounded<T>(
    limit: Duration,
    what: &str,
    host: &str,
    call: impl std::future::Future<Output = aetherv_hyperv::Result<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(error_chain(&e)),
        Err(_) => Err(format!(
            "host {host} did not answer {what} within {} s",
            limit.as_secs()
        )),
    }
}

/// The Compare-VM check of `plan` (with the destination folder resolved): what
/// `?dry_run=true` answers and what [`migrate`] runs first.
///
/// # Errors
///
/// The host's error as text (unknown VM, host unreachable, timeout).
pub async fn check(
    hosts: &MigrationHosts,
    plan: &MigrationPlan,
    settings: &MigrationSettings,
) -> Result<MigrationCheck, String> {
    let path = destination_folder(hosts, plan, settings).await?;
    let source = &hosts.source;
    bounded(
        settings.step_timeout,
        "the compatibility check",
        source.host_name(),
        source.compare_vm(plan.vm, plan.target(path)),
    )
    .await
}

/// The folder the VM's files move to: the plan's, else `<destination VirtualMachinePath>\<vm>`
/// for moves with storage; `None` for moves without storage.
async fn destination_folder(
    hosts: &MigrationHosts,
    plan: &MigrationPlan,
    settings: &MigrationSettings,
) -> Result<Option<String>, String> {
    if !plan.mode.moves_storage(plan.clustered) {
        return Ok(None);
    }
    if let Some(path) = &plan.destination_path {
        return Ok(Some(path.clone()));
    }
    if plan.mode == MigrationMode::Storage {
        return Err("a storage move needs a destination path or storage class".to_owned());
    }
    let dest = hosts.destination.as_ref().unwrap_or(&hosts.source);
    let facts = bounded(
        settings.step_timeout,
        "its facts",
        dest.host_name(),
        dest.facts(),
    )
    .await?;
    Ok(Some(format!(
        "{}\\{}",
        facts.vm_path.trim_end_matches('\\'),
        plan.vm_name
    )))
}

/// Runs one move: check, move with progress, cancellation before the switch-over, cleanup
/// after a failure (see the module documentation). `events` gets the progress and the log.
///
/// # Errors
///
/// [`MigrationError`]: incompatible (nothing moved), cancelled or failed (the VM is on the
/// source; what cleanup did is attached), or invalid (the plan cannot run).
pub async fn migrate(
    hosts: &MigrationHosts,
    plan: &MigrationPlan,
    settings: &MigrationSettings,
    cancel: &CancellationToken,
    events: &(dyn Fn(MigrationEvent) + Send + Sync),
) -> Result<MigrationDone, MigrationError> {
    let invalid = |message: String| MigrationError::Invalid {
        vm: plan.vm_name.clone(),
        message,
    };
    if plan.changes_host() && hosts.destination.is_none() {
        return Err(invalid(format!(
            "host {} is not managed by this server",
            plan.target_host
        )));
    }
    let source = Arc::clone(&hosts.source);
    let progress = |step: &'static str, percent: u8, message: String| {
        events(MigrationEvent::Progress {
            step,
            percent,
            message,
        });
    };
    let log = |level: LineLevel, message: String| events(MigrationEvent::Log { level, message });

    // 1. Check.
    progress(
        "Migrate.Check",
        2,
        format!(
            "checking whether VM {} can move from {} to {} ({})",
            plan.vm_name,
            plan.source_host,
            plan.target_host,
            plan.mode.as_str()
        ),
    );
    let before = bounded(
        settings.step_timeout,
        "the VM",
        source.host_name(),
        source.vm(plan.vm),
    )
    .await
    .map_err(invalid)?;
    let folder = destination_folder(hosts, plan, settings)
        .await
        .map_err(invalid)?;
    // What a move with storage creates in the destination folder: the disks under
    // `Virtual Hard Disks`, and the folder itself when this run chose it.
    let copies = Copies {
        files: folder
            .as_deref()
            .map(|f| {
                before
                    .disks
                    .iter()
                    .map(|d| {
                        let name = d.path.rsplit('\\').next().unwrap_or(&d.path);
                        format!("{}\\Virtual Hard Disks\\{name}", f.trim_end_matches('\\'))
                    })
                    .collect()
            })
            .unwrap_or_default(),
        folder: folder.clone().filter(|_| plan.destination_path.is_none()),
    };
    let target = plan.target(folder.clone());
    let compared = bounded(
        settings.step_timeout,
        "the compatibility check",
        source.host_name(),
        source.compare_vm(plan.vm, target.clone()),
    )
    .await
    .map_err(invalid)?;
    if !compared.compatible || !compared.incompatibilities.is_empty() {
        for i in &compared.incompatibilities {
            log(LineLevel::Error, format!("incompatible: {}", i.message));
        }
        return Err(MigrationError::Incompatible {
            vm: plan.vm_name.clone(),
            target: plan.target_host.clone(),
            incompatibilities: compared.incompatibilities,
        });
    }
    progress(
        "Migrate.Check",
        10,
        format!(
            "VM {} is compatible with {}",
            plan.vm_name, plan.target_host
        ),
    );
    if cancel.is_cancelled() {
        return Err(MigrationError::Cancelled {
            vm: plan.vm_name.clone(),
            source_host: plan.source_host.clone(),
            cleanup: MigrationCleanup::default(),
        });
    }

    // A standalone quick move: save first (a VM that is not running moves as it is).
    let quick_standalone = plan.mode == MigrationMode::Quick && !plan.clustered;
    let mut saved = false;
    if quick_standalone && before.state == VmState::Running {
        progress(
            "Migrate.Save",
            15,
            format!("saving VM {} on {}", plan.vm_name, plan.source_host),
        );
        bounded(
            settings.step_timeout,
            "the save",
            source.host_name(),
            source.power(plan.vm, PowerAction::Save),
        )
        .await
        .map_err(invalid)?;
        saved = true;
    }

    // 2.-4. Move, following the host's job, cancelling when asked.
    let (start, span) = if quick_standalone { (20, 70) } else { (10, 85) };
    progress(
        "Migrate.Move",
        start,
        format!(
            "moving VM {} to {}{}",
            plan.vm_name,
            plan.target_host,
            folder
                .as_deref()
                .map(|f| format!(" (files to {f})"))
                .unwrap_or_default()
        ),
    );
    let call = async {
        if plan.clustered && plan.mode != MigrationMode::Storage {
            let migration_type = if plan.mode == MigrationMode::Quick {
                ClusterMigrationType::Quick
            } else {
                ClusterMigrationType::Live
            };
            source
                .move_cluster_role(
                    plan.vm,
                    ClusterMove {
                        node: plan.target_host.clone(),
                        migration_type,
                    },
                )
                .await
        } else {
            source.move_vm(plan.vm, target.clone()).await
        }
    };
    let (moved, cancel_too_late) = follow_move(
        &*source, plan, settings, cancel, call, start, span, &progress, &log,
    )
    .await;

    match moved {
        Ok(_) => {}
        Err(error) => {
            let cancelled = matches!(&error, HostError::ScriptFailed { code, .. } if code == "MigrationCancelled");
            let message = error_chain(&error);
            log(
                if cancelled {
                    LineLevel::Warn
                } else {
                    LineLevel::Error
                },
                format!("the move ended without switching over: {message}"),
            );
            progress(
                "Migrate.Cleanup",
                start + span,
                format!("looking for VM {} on both hosts", plan.vm_name),
            );
            let found = locate(hosts, plan, settings).await;
            if found == Located::Destination {
                // The host finished the move although the call failed (e.g. the answer was
                // lost after the switch-over): the VM runs on the destination.
                log(
                    LineLevel::Warn,
                    format!(
                        "VM {} is on {} although the move call failed; the move completed",
                        plan.vm_name, plan.target_host
                    ),
                );
            } else {
                let cleanup = clean_up(hosts, plan, settings, &copies, saved, found, &log).await;
                return Err(if cancelled {
                    MigrationError::Cancelled {
                        vm: plan.vm_name.clone(),
                        source_host: plan.source_host.clone(),
                        cleanup,
                    }
                } else {
                    MigrationError::Failed {
                        vm: plan.vm_name.clone(),
                        target: plan.target_host.clone(),
                        message,
                        cleanup,
                    }
                });
            }
        }
    }

    if saved {
        let dest = hosts.destination.as_ref().unwrap_or(&hosts.source);
        progress(
            "Migrate.Start",
            92,
            format!("starting VM {} on {}", plan.vm_name, plan.target_host),
        );
        if let Err(e) = bounded(
            settings.step_timeout,
            "the start",
            dest.host_name(),
            dest.power(plan.vm, PowerAction::Start),
        )
        .await
        {
            log(
                LineLevel::Error,
                format!(
                    "VM {} moved to {} but did not start again: {e}; it is saved there",
                    plan.vm_name, plan.target_host
                ),
            );
            return Err(MigrationError::Failed {
                vm: plan.vm_name.clone(),
                target: plan.target_host.clone(),
                message: format!("moved, but the start on {} failed: {e}", plan.target_host),
                cleanup: MigrationCleanup::default(),
            });
        }
    }
    progress(
        "Migrate.Move",
        100,
        format!(
            "VM {} now runs on {}{}",
            plan.vm_name,
            plan.target_host,
            folder
                .as_deref()
                .map(|f| format!(" with its files in {f}"))
                .unwrap_or_default()
        ),
    );
    Ok(MigrationDone {
        vm: plan.vm,
        source_host: plan.source_host.clone(),
        target_host: plan.target_host.clone(),
        mode: plan.mode,
        destination_path: folder,
        cancel_too_late,
    })
}

/// Runs the move call while reading the host's migration job as progress and asking the
/// host to cancel it when `cancel` fires. Returns the call's result and whether a
/// cancellation came too late.
#[allow(clippy::too_many_arguments)]
async fn follow_move(
    source: &dyn HyperVHost,
    plan: &MigrationPlan,
    settings: &MigrationSettings,
    cancel: &CancellationToken,
    call: impl std::future::Future<Output = aetherv_hyperv::Result<Migrated>>,
    start: u8,
    span: u8,
    progress: &(dyn Fn(&'static str, u8, String) + Send + Sync),
    log: &(dyn Fn(LineLevel, String) + Send + Sync),
) -> (aetherv_hyperv::Result<Migrated>, bool) {
    tokio::pin!(call);
    let mut ticker = tokio::time::interval(settings.poll_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut asked = false;
    let mut too_late = false;
    let mut last = 0u8;
    loop {
        tokio::select! {
            result = &mut call => return (result, too_late),
            () = cancel.cancelled(), if !asked => {
                asked = true;
                log(LineLevel::Warn, format!(
                    "cancellation requested: asking {} to cancel the migration job of VM {}",
                    source.host_name(), plan.vm_name
                ));
                match bounded(settings.step_timeout, "the cancellation", source.host_name(),
                              source.cancel_migration(plan.vm)).await {
                    Ok(c) if c.cancelled => log(LineLevel::Warn,
                        "the host is cancelling the migration; the VM stays on the source".to_owned()),
                    Ok(c) => {
                        too_late = true;
                        log(LineLevel::Warn, format!(
                            "the host did not cancel the migration ({}); following it to its end",
                            c.reason.unwrap_or_else(|| "no reason given".to_owned())
                        ));
                    }
                    Err(e) => log(LineLevel::Warn, format!(
                        "the cancellation could not be sent ({e}); following the migration to its end"
                    )),
                }
            }
            _ = ticker.tick() => {
                let status = tokio::time::timeout(settings.step_timeout, source.migration_status(plan.vm)).await;
                if let Ok(Ok(job)) = status
                    && job.active
                {
                    let done = job.percent_complete.min(100);
                    if done != last {
                        last = done;
                        let percent = start + (u16::from(span) * u16::from(done) / 100) as u8;
                        progress("Migrate.Move", percent, format!(
                            "migration job {done}% complete{}",
                            job.status.map(|s| format!(" ({s})")).unwrap_or_default()
                        ));
                    }
                }
            }
        }
    }
}

/// Where the VM is after a failed move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Located {
    /// Still on the source (the expected case).
    Source,
    /// On the destination only: the move completed.
    Destination,
    /// On both hosts: the destination holds a leftover registration.
    Both,
    /// Not found, or a host did not answer.
    Unknown,
}

async fn locate(
    hosts: &MigrationHosts,
    plan: &MigrationPlan,
    settings: &MigrationSettings,
) -> Located {
    let on = |host: Arc<dyn HyperVHost>| async move {
        match tokio::time::timeout(settings.step_timeout, host.vm(plan.vm)).await {
            Ok(Ok(_)) => Some(true),
            Ok(Err(HostError::UnknownVm { .. })) => Some(false),
            _ => None,
        }
    };
    let source = on(Arc::clone(&hosts.source)).await;
    if !plan.changes_host() {
        return if source == Some(true) {
            Located::Source
        } else {
            Located::Unknown
        };
    }
    let Some(dest) = hosts.destination.clone() else {
        return Located::Unknown;
    };
    match (source, on(dest).await) {
        (Some(true), Some(false)) => Located::Source,
        (Some(true), Some(true)) => Located::Both,
        (Some(false), Some(true)) => Located::Destination,
        _ => Located::Unknown,
    }
}

/// What a move with storage writes on the destination.
#[derive(Debug, Default)]
struct Copies {
    /// The disk files' paths there.
    files: Vec<String>,
    /// The folder, when the run chose it (the VM's own new folder).
    folder: Option<String>,
}

/// Cleans up after a move that did not switch over (see the module documentation).
async fn clean_up(
    hosts: &MigrationHosts,
    plan: &MigrationPlan,
    settings: &MigrationSettings,
    copies: &Copies,
    saved: bool,
    found: Located,
    log: &(dyn Fn(LineLevel, String) + Send + Sync),
) -> MigrationCleanup {
    let mut cleanup = MigrationCleanup::default();
    let dest = hosts.destination.as_ref().unwrap_or(&hosts.source);
    if found == Located::Unknown {
        let why = format!(
            "VM {} was not found on {} (or a host did not answer); nothing was removed",
            plan.vm_name, plan.source_host
        );
        log(LineLevel::Error, why.clone());
        cleanup
            .left_behind
            .push((format!("VM {}", plan.vm_name), why));
        return cleanup;
    }
    if found == Located::Both {
        // The source still runs the VM: the destination's copy is a leftover registration.
        match bounded(
            settings.step_timeout,
            "the removal",
            dest.host_name(),
            dest.delete_vm(plan.vm, false),
        )
        .await
        {
            Ok(_) => {
                let what = format!(
                    "leftover registration of VM {} on {} (disks kept)",
                    plan.vm_name, plan.target_host
                );
                log(LineLevel::Info, format!("removed the {what}"));
                cleanup.removed.push(what);
            }
            Err(e) => {
                log(
                    LineLevel::Error,
                    format!(
                        "could not remove VM {} from {}: {e}",
                        plan.vm_name, plan.target_host
                    ),
                );
                cleanup
                    .left_behind
                    .push((format!("VM {} on {}", plan.vm_name, plan.target_host), e));
            }
        }
    }
    // The source VM's files are never among these (the check refuses a storage move into
    // the VM's own folder, and the host refuses to remove a path that holds a VM's disk).
    for path in copies.files.iter().chain(copies.folder.iter()) {
        match bounded(
            settings.step_timeout,
            "the removal",
            dest.host_name(),
            dest.remove_path(path.clone()),
        )
        .await
        {
            Ok(r) if r.removed => {
                let what = format!("partly copied {path} on {}", dest.host_name());
                log(LineLevel::Info, format!("removed {what}"));
                cleanup.removed.push(what);
            }
            Ok(_) => {}
            Err(e) => {
                log(
                    LineLevel::Error,
                    format!("could not remove {path} on {}: {e}", dest.host_name()),
                );
                cleanup
                    .left_behind
                    .push((format!("{path} on {}", dest.host_name()), e));
            }
        }
    }
    if saved {
        match bounded(
            settings.step_timeout,
            "the start",
            hosts.source.host_name(),
            hosts.source.power(plan.vm, PowerAction::Start),
        )
        .await
        {
            Ok(_) => {
                let what = format!("VM {} started again on {}", plan.vm_name, plan.source_host);
                log(LineLevel::Info, what.clone());
                cleanup.removed.push(what);
            }
            Err(e) => {
                log(
                    LineLevel::Error,
                    format!(
                        "VM {} stays saved on {}: {e}",
                        plan.vm_name, plan.source_host
                    ),
                );
                cleanup
                    .left_behind
                    .push((format!("saved VM {}", plan.vm_name), e));
            }
        }
    }
    cleanup
}
