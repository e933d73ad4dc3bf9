//! The deletion pipeline as a sans-IO [`Workflow`].
//!
//! Steps ([`steps`]): look the VM up; refuse (with [`Error::VmNotOff`], naming the state) a VM
//! that is not Off unless the request is forced; turn it off; remove its cluster role when it
//! is clustered; delete it, with its disks when asked (the host refuses disks another VM uses
//! or shared VHDX/VHD Set disks with [`aetherv_hyperv::Error::SharedDisk`], surfaced as is);
//! verify it is gone from the inventory; then remove the files provisioning made
//! ([`steps::REMOVE_FILES`]).
//!
//! Files are removed only when this project created them, judged twice: the VM's notes carry
//! one of the project's markers (`aetherv-job:<id>` while provisioning, `aetherv-provisioned:<id>`
//! after; [`crate::provision::is_project_marker`]) **and** its folder has the layout provisioning
//! uses, `<root>\<vm name>` holding every disk of the VM.
//! Then the whole folder goes (with the ISO copy in it) when the disks were deleted, or only
//! the ISO copies in it when the disks were kept. Anything else (an unmarked VM's folder, a
//! folder of another shape, an ISO outside the folder) is kept and listed in
//! [`Deleted::kept_paths`]; the log says why. A file that cannot be removed is logged at
//! error level and kept; the VM itself is gone by then, so the deletion still succeeds.
//!
//! Nothing is compensated: deletion only removes things. A failure says in which step it
//! stopped.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use aetherv_hyperv::ops::{HyperVHost, PowerAction, Vm, VmId, VmState};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::job::{
    self, Action, CallError, Event, EventLog, HostCall, HostReply, JobEvent, LogLevel, StepCall,
    StepEnd, Workflow,
};

/// Step names.
pub mod steps {
    /// Look the VM up and check its state.
    pub const LOOKUP: &str = "Deletion.Lookup";
    /// Turn the VM off (forced deletion).
    pub const STOP: &str = "Deletion.Stop";
    /// Remove the cluster role.
    pub const REMOVE_CLUSTER_ROLE: &str = "Deletion.RemoveClusterRole";
    /// Delete the VM (and its disks when asked).
    pub const DELETE: &str = "Deletion.DeleteVm";
    /// Check the inventory.
    pub const VERIFY: &str = "Deletion.Verify";
    /// Remove the VM folder (or the ISO copies in it) that provisioning created.
    pub const REMOVE_FILES: &str = "Deletion.RemoveFiles";
}

/// What to delete and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteRequest {
    /// The VM.
    pub vm: VmId,
    /// Turn the VM off when it is not Off (otherwise refuse).
    pub force: bool,
    /// Delete its disks too.
    pub delete_disks: bool,
    /// Timeout of each host call.
    pub step_timeout: Duration,
}

impl DeleteRequest {
    /// Deletes `vm` (not forced, disks kept, 2-minute step timeout).
    pub fn new(vm: VmId) -> Self {
        Self {
            vm,
            force: false,
            delete_disks: false,
            step_timeout: Duration::from_secs(120),
        }
    }
}

/// What a deletion did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Deleted {
    /// The VM.
    pub vm: VmId,
    /// Its name.
    pub name: String,
    /// Whether it was turned off first.
    pub stopped: bool,
    /// Whether its cluster role was removed.
    pub cluster_role_removed: bool,
    /// Files deleted.
    pub removed_paths: Vec<String>,
    /// Files and folders left in place: kept disks, and folders or ISOs this project did
    /// not create (or could not remove; the log says why).
    pub kept_paths: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    NotStarted,
    Lookup,
    Stop,
    RemoveRole,
    Delete,
    Verify,
    RemoveFiles,
    Done,
}

/// What deletion may remove besides the VM and its disks, decided from the VM as it was
/// looked up (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Owned {
    /// The VM folder, when marked and laid out as provisioning lays it out.
    folder: Option<String>,
    /// ISO copies inside that folder.
    isos: Vec<String>,
    /// Paths kept, each with the reason.
    kept: Vec<(String, String)>,
}

fn under(path: &str, folder: &str) -> bool {
    let folder = folder.trim_end_matches('\\');
    path.len() > folder.len() + 1
        && path.is_char_boundary(folder.len())
        && path[..folder.len()].eq_ignore_ascii_case(folder)
        && path[folder.len()..].starts_with('\\')
}

fn owned(vm: &Vm) -> Owned {
    let marked = crate::provision::is_project_marker(&vm.notes);
    let isos: Vec<String> = vm
        .dvd_drives
        .iter()
        .filter_map(|d| d.path.clone())
        .filter(|p| !p.trim().is_empty())
        .collect();
    let Some(folder) = vm.path.clone().filter(|p| !p.trim().is_empty()) else {
        return Owned {
            kept: isos
                .into_iter()
                .map(|p| (p, "the VM has no folder".to_owned()))
                .collect(),
            ..Owned::default()
        };
    };
    let folder = folder.trim_end_matches('\\').to_owned();
    let leaf = folder.rsplit('\\').next().unwrap_or_default();
    let layout = leaf.eq_ignore_ascii_case(&vm.name)
        && folder.matches('\\').count() >= 2
        && vm
            .disks
            .iter()
            .all(|d| d.path.is_empty() || under(&d.path, &folder));
    let why = match (marked, layout) {
        (true, true) => None,
        (false, _) => Some("the VM carries no aetherv marker in its notes; not created by aetherv"),
        (true, false) => Some(
            "the folder is not laid out as provisioning lays it out (<root>\\<vm name> holding the VM's disks)",
        ),
    };
    match why {
        None => {
            let (inside, outside): (Vec<String>, Vec<String>) =
                isos.into_iter().partition(|p| under(p, &folder));
            Owned {
                folder: Some(folder),
                isos: inside,
                kept: outside
                    .into_iter()
                    .map(|p| (p, "the ISO is outside the VM folder".to_owned()))
                    .collect(),
            }
        }
        Some(why) => Owned {
            folder: None,
            isos: Vec::new(),
            kept: std::iter::once(folder)
                .chain(isos)
                .map(|p| (p, why.to_owned()))
                .collect(),
        },
    }
}

impl Phase {
    fn step(self) -> &'static str {
        match self {
            Self::NotStarted | Self::Lookup => steps::LOOKUP,
            Self::Stop => steps::STOP,
            Self::RemoveRole => steps::REMOVE_CLUSTER_ROLE,
            Self::Delete => steps::DELETE,
            Self::Verify | Self::Done => steps::VERIFY,
            Self::RemoveFiles => steps::REMOVE_FILES,
        }
    }

    fn percent(self) -> u8 {
        match self {
            Self::NotStarted | Self::Lookup => 5,
            Self::Stop => 20,
            Self::RemoveRole => 40,
            Self::Delete => 60,
            Self::Verify => 80,
            Self::RemoveFiles => 90,
            Self::Done => 100,
        }
    }
}

/// The deletion state machine (see the module docs).
#[derive(Debug)]
pub struct DeleteMachine {
    host: String,
    request: DeleteRequest,
    phase: Phase,
    log: EventLog,
    result: Deleted,
    clustered: bool,
    owned: Owned,
    removals: VecDeque<String>,
    current_removal: Option<String>,
    error: Option<(&'static str, Error)>,
}

impl DeleteMachine {
    /// A machine deleting `request.vm` on `host` (the name is for messages).
    pub fn new(host: impl Into<String>, request: DeleteRequest) -> Self {
        Self {
            host: host.into(),
            result: Deleted {
                vm: request.vm,
                name: request.vm.to_string(),
                stopped: false,
                cluster_role_removed: false,
                removed_paths: Vec::new(),
                kept_paths: Vec::new(),
            },
            request,
            phase: Phase::NotStarted,
            log: EventLog::default(),
            clustered: false,
            owned: Owned::default(),
            removals: VecDeque::new(),
            current_removal: None,
            error: None,
        }
    }

    fn enter(&mut self, phase: Phase, call: HostCall, message: String) -> Action {
        self.phase = phase;
        self.log.progress(phase.step(), phase.percent(), message);
        Action::CallHost(StepCall {
            step: phase.step(),
            call,
            timeout: self.request.step_timeout,
        })
    }

    fn fail(&mut self, error: Error) -> Action {
        let step = self.phase.step();
        self.log
            .log(LogLevel::Error, format!("{step} failed: {error}"));
        self.log.step_ended(step, StepEnd::Failed);
        self.error = Some((step, error));
        self.phase = Phase::Done;
        Action::Done
    }

    fn after_stop(&mut self) -> Action {
        let id = self.request.vm;
        if self.clustered {
            self.enter(
                Phase::RemoveRole,
                HostCall::RemoveClusterRole(id),
                "removing the cluster role".to_owned(),
            )
        } else {
            self.delete()
        }
    }

    fn delete(&mut self) -> Action {
        let id = self.request.vm;
        let what = if self.request.delete_disks {
            "deleting the VM and its disks"
        } else {
            "deleting the VM (keeping its disks)"
        };
        self.enter(
            Phase::Delete,
            HostCall::DeleteVm {
                id,
                delete_disks: self.request.delete_disks,
            },
            what.to_owned(),
        )
    }

    fn on_reply(&mut self, reply: HostReply) -> Result<Action> {
        let id = self.request.vm;
        Ok(match (self.phase, reply) {
            (Phase::Lookup, HostReply::Vm(vm)) => {
                self.result.name = vm.name.clone();
                self.clustered = vm.clustered;
                self.owned = owned(&vm);
                self.log.log(
                    LogLevel::Info,
                    format!(
                        "VM {} ({}) is {}{}",
                        vm.name,
                        vm.id,
                        vm.state,
                        if vm.clustered { ", clustered" } else { "" }
                    ),
                );
                if vm.state == VmState::Off {
                    self.after_stop()
                } else if self.request.force {
                    self.enter(
                        Phase::Stop,
                        HostCall::Power(id, PowerAction::TurnOff),
                        format!("turning off VM {} ({})", vm.name, vm.state),
                    )
                } else {
                    return Err(Error::VmNotOff {
                        host: self.host.clone(),
                        vm: vm.name.clone(),
                        state: vm.state.name(),
                    });
                }
            }
            (Phase::Stop, HostReply::Power(outcome)) => {
                self.result.stopped = true;
                self.log.log(
                    LogLevel::Info,
                    format!("VM turned off (was {})", outcome.previous_state),
                );
                self.after_stop()
            }
            (Phase::RemoveRole, HostReply::ClusterRole(_)) => {
                self.result.cluster_role_removed = true;
                self.delete()
            }
            (Phase::Delete, HostReply::Deleted(deleted)) => {
                for path in &deleted.removed_paths {
                    self.log.log(LogLevel::Info, format!("deleted {path}"));
                }
                for path in &deleted.kept_paths {
                    self.log.log(LogLevel::Info, format!("kept {path}"));
                }
                self.result.removed_paths = deleted.removed_paths;
                self.result.kept_paths = deleted.kept_paths;
                self.enter(
                    Phase::Verify,
                    HostCall::Inventory,
                    "checking the inventory".to_owned(),
                )
            }
            (Phase::Verify, HostReply::Inventory(inventory)) => {
                if inventory.vms.iter().any(|vm| vm.id == id) {
                    return Err(Error::StillPresent {
                        host: self.host.clone(),
                        vm: self.result.name.clone(),
                    });
                }
                self.log.log(LogLevel::Info, "the VM is gone");
                self.plan_removals();
                self.next_removal()
            }
            (Phase::RemoveFiles, HostReply::RemovedPath(removed)) => {
                if removed.removed {
                    self.log
                        .log(LogLevel::Info, format!("removed {}", removed.path));
                    self.result.removed_paths.push(removed.path);
                } else {
                    self.log
                        .log(LogLevel::Info, format!("{} was already gone", removed.path));
                }
                self.next_removal()
            }
            (_, other) => {
                return Err(Error::Unexpected {
                    step: self.phase.step(),
                    detail: format!("{other:?}").chars().take(200).collect(),
                });
            }
        })
    }
}

impl DeleteMachine {
    /// What to remove once the VM is gone (see the module docs); logs what is kept and why.
    fn plan_removals(&mut self) {
        for (path, why) in std::mem::take(&mut self.owned.kept) {
            self.log.log(LogLevel::Info, format!("kept {path}: {why}"));
            self.result.kept_paths.push(path);
        }
        let Some(folder) = self.owned.folder.clone() else {
            return;
        };
        if self.request.delete_disks {
            self.removals.push_back(folder);
        } else {
            self.removals.extend(self.owned.isos.iter().cloned());
            self.log.log(
                LogLevel::Info,
                format!("kept {folder}: it holds the VM's kept disks"),
            );
            self.result.kept_paths.push(folder);
        }
    }

    fn next_removal(&mut self) -> Action {
        self.current_removal = self.removals.pop_front();
        match self.current_removal.clone() {
            Some(path) => self.enter(
                Phase::RemoveFiles,
                HostCall::RemovePath(path.clone()),
                format!("removing {path}, created by provisioning"),
            ),
            None => {
                let step = self.phase.step();
                self.phase = Phase::Done;
                self.log.progress(step, 100, "the VM is gone".to_owned());
                Action::Done
            }
        }
    }

    /// A removal that failed: logged loudly and kept; the VM is gone, so deletion goes on.
    fn removal_failed(&mut self, error: &CallError) -> Action {
        if let Some(path) = self.current_removal.take() {
            self.log.log(
                LogLevel::Error,
                format!("COULD NOT REMOVE {path}: {error}; remove it by hand"),
            );
            self.result.kept_paths.push(path);
        }
        self.next_removal()
    }
}

impl Workflow for DeleteMachine {
    type Output = Deleted;

    fn handle(&mut self, event: Event, now: Duration) -> Action {
        self.log.at(now);
        match event {
            Event::Start if self.phase == Phase::NotStarted => {
                let id = self.request.vm;
                self.enter(
                    Phase::Lookup,
                    HostCall::Vm(id),
                    format!("looking up VM {id} on host {}", self.host),
                )
            }
            Event::Reply(Ok(reply)) => match self.on_reply(reply) {
                Ok(action) => action,
                Err(error) => self.fail(error),
            },
            Event::Reply(Err(error)) if self.phase == Phase::RemoveFiles => {
                self.removal_failed(&error)
            }
            Event::Reply(Err(error)) => {
                let step = self.phase.step();
                let error = match error {
                    CallError::Host(source) => Error::Host {
                        step,
                        source: Box::new(source),
                    },
                    CallError::TimedOut(after) => Error::StepTimeout {
                        step,
                        host: self.host.clone(),
                        after,
                    },
                };
                self.fail(error)
            }
            Event::Cancel if self.phase != Phase::Done => {
                let step = self.phase.step();
                self.log
                    .log(LogLevel::Warn, format!("cancelled during {step}"));
                self.log.step_ended(step, StepEnd::Cancelled);
                self.error = Some((
                    step,
                    Error::Cancelled {
                        job: crate::job::JobId::from("deletion"),
                        host: self.host.clone(),
                        step,
                        cleanup: crate::job::CleanupReport::default(),
                    },
                ));
                self.phase = Phase::Done;
                Action::Done
            }
            other => {
                if self.phase == Phase::Done {
                    return Action::Done;
                }
                self.fail(Error::Unexpected {
                    step: self.phase.step(),
                    detail: format!("{other:?}"),
                })
            }
        }
    }

    fn drain(&mut self) -> Vec<JobEvent> {
        self.log.drain()
    }

    fn finish(self) -> Result<Deleted> {
        match self.error {
            Some((_, error @ Error::Cancelled { .. })) => Err(error),
            Some((step, cause)) => Err(Error::DeleteFailed {
                host: self.host,
                vm: self.result.name,
                step,
                cause: Box::new(cause),
            }),
            None if self.phase == Phase::Done => Ok(self.result),
            None => Err(Error::Unexpected {
                step: self.phase.step(),
                detail: "finish before the workflow is done".to_owned(),
            }),
        }
    }
}

/// Deletes a VM on `host` per `request`, reporting to `sink`.
///
/// # Errors
///
/// [`Error::DeleteFailed`] naming the step, with the cause ([`Error::VmNotOff`] when the VM is
/// not Off and the request is not forced; [`Error::Host`] with
/// [`aetherv_hyperv::Error::SharedDisk`] when a disk is shared); [`Error::Cancelled`].
pub async fn delete(
    host: Arc<dyn HyperVHost>,
    request: DeleteRequest,
    cancel: CancellationToken,
    sink: &(dyn Fn(JobEvent) + Send + Sync),
) -> Result<Deleted> {
    let machine = DeleteMachine::new(host.host_name().to_owned(), request);
    job::run(machine, host, cancel, sink).await
}
