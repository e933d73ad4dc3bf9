//! The deletion pipeline as a sans-IO [`Workflow`].
//!
//! Steps ([`steps`]): look the VM up; refuse (with [`Error::VmNotOff`], naming the state) a VM
//! that is not Off unless the request is forced; turn it off; remove its cluster role when it
//! is clustered; delete it, with its disks when asked (the host refuses disks another VM uses
//! or shared VHDX/VHD Set disks with [`aetherv_hyperv::Error::SharedDisk`], surfaced as is);
//! verify it is gone from the inventory.
//!
//! Nothing is compensated: deletion only removes things. A failure says in which step it
//! stopped.

use std::sync::Arc;
use std::time::Duration;

use aetherv_hyperv::ops::{HyperVHost, PowerAction, VmId, VmState};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::job::{
    self, Action, CallError, Event, EventLog, HostCall, HostReply, JobEvent, LogLevel, StepCall,
    Workflow,
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
    /// Disk files left in place.
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
    Done,
}

impl Phase {
    fn step(self) -> &'static str {
        match self {
            Self::NotStarted | Self::Lookup => steps::LOOKUP,
            Self::Stop => steps::STOP,
            Self::RemoveRole => steps::REMOVE_CLUSTER_ROLE,
            Self::Delete => steps::DELETE,
            Self::Verify | Self::Done => steps::VERIFY,
        }
    }

    fn percent(self) -> u8 {
        match self {
            Self::NotStarted | Self::Lookup => 5,
            Self::Stop => 20,
            Self::RemoveRole => 40,
            Self::Delete => 60,
            Self::Verify => 90,
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
                self.phase = Phase::Done;
                self.log
                    .progress(steps::VERIFY, 100, "the VM is gone".to_owned());
                Action::Done
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
