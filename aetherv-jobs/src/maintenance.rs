//! Host maintenance jobs: what a drain, a resume and a maintenance run are asked to do, and
//! the hooks around them (an Alertmanager silence, state-change events for webhooks) that the
//! server plugs in with [`crate::JobQueue::set_maintenance_hooks`].

use std::future::Future;
use std::pin::Pin;

use aetherv_hyperv::ops::VmId;
use serde::Serialize;

/// What a drain does with the host's running VMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Evacuate {
    /// Live-migrate them (a VM that cannot move stays, and the drain ends `failed_drain`).
    Live,
    /// Live-migrate them, and shut down (guest shutdown) what cannot move.
    Shutdown,
    /// Move nothing: only mark the host (placement then sends it no new VMs).
    None,
}

impl Evacuate {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Shutdown => "shutdown",
            Self::None => "none",
        }
    }
}

/// A drain ([`crate::JobWork::Drain`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainRequest {
    /// What to do with running VMs.
    pub evacuate: Evacuate,
    /// Live migrations at the same time (at least 1).
    pub max_parallel: usize,
    /// VMs left alone.
    pub exclude: Vec<VmId>,
    /// Why (kept in the host's state file).
    pub reason: Option<String>,
    /// The change ticket.
    pub ticket: Option<String>,
}

/// A resume ([`crate::JobWork::Resume`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumeRequest {
    /// Move each VM the drain moved back to this host.
    pub failback: bool,
}

/// A maintenance run over several hosts ([`crate::JobWork::MaintenanceRun`]).
///
/// Hosts are drained in the given order; a host stays in maintenance until it is resumed
/// (`POST /hosts/{name}/resume`), which frees its place for the next host of its cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRequest {
    /// The hosts, in order (configured names).
    pub hosts: Vec<String>,
    /// Hosts of one cluster out of service at once (at least 1; standalone hosts count as
    /// one group).
    pub max_per_cluster: usize,
    /// Memory that must stay available on the cluster's active hosts after a host's running
    /// VMs have moved onto them.
    pub spare_memory_bytes: u64,
    /// How each host is drained.
    pub drain: DrainRequest,
}

/// A maintenance state change, as webhooks receive it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum MaintenanceEventKind {
    /// A drain started (the host is `draining`).
    Started,
    /// One VM moved off the host (or back to it on failback).
    VmMoved,
    /// The host is in `maintenance`.
    InMaintenance,
    /// The drain ended `failed_drain` (or a resume could not move every VM back).
    Failed,
    /// The host is `active` again.
    Resumed,
}

impl MaintenanceEventKind {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::VmMoved => "vm_moved",
            Self::InMaintenance => "in_maintenance",
            Self::Failed => "failed",
            Self::Resumed => "resumed",
        }
    }
}

/// One maintenance event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MaintenanceEvent {
    /// What happened.
    pub event: MaintenanceEventKind,
    /// The host.
    pub host: String,
    /// The job.
    pub job: String,
    /// The host's state after the change (`draining`, `maintenance`, ...).
    pub state: String,
    /// The VM, for `vm_moved`.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = Uuid))]
    pub vm_id: Option<VmId>,
    /// The VM's name, for `vm_moved`.
    pub vm_name: Option<String>,
    /// Where the VM went, for `vm_moved`.
    pub to_host: Option<String>,
    /// A readable line.
    pub message: String,
    /// The reason given for the maintenance.
    pub reason: Option<String>,
    /// The change ticket.
    pub ticket: Option<String>,
    /// Who asked.
    pub requested_by: String,
    /// When (RFC 3339).
    pub at: String,
}

/// A boxed future of the hooks (the crate has no async-trait).
pub type HookFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What happens around maintenance besides the host: configured per deployment.
pub trait MaintenanceHooks: Send + Sync {
    /// Publishes `event` (webhooks). Must return at once: delivery, retries and backoff
    /// happen in the background and never hold the maintenance up.
    fn event(&self, event: MaintenanceEvent);

    /// Creates a silence of `host`'s alerts for the maintenance window; its id, `None` when
    /// no silencing is configured.
    fn silence<'a>(
        &'a self,
        host: &'a str,
        comment: String,
        created_by: String,
    ) -> HookFuture<'a, Result<Option<String>, String>>;

    /// Expires the silence `id` (on resume).
    fn expire<'a>(&'a self, id: &'a str) -> HookFuture<'a, Result<(), String>>;
}

/// No hooks: events go nowhere, no silences.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHooks;

impl MaintenanceHooks for NoHooks {
    fn event(&self, _: MaintenanceEvent) {}

    fn silence<'a>(
        &'a self,
        _: &'a str,
        _: String,
        _: String,
    ) -> HookFuture<'a, Result<Option<String>, String>> {
        Box::pin(async { Ok(None) })
    }

    fn expire<'a>(&'a self, _: &'a str) -> HookFuture<'a, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}
