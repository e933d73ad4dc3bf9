//! The small answer documents: probes, status, lists, job acknowledgements and the data of
//! Server-Sent Events. Handlers serialise these types, and the OpenAPI schemas derive from
//! them.

use serde::Serialize;
use utoipa::ToSchema;

use super::{ClusterView, HostView, VmSummary};
use crate::auth::Role;
use crate::jobs::{JobStatus, JobView, LogLine};

/// Liveness.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Health)]
pub struct HealthView {
    /// Always `ok`.
    pub status: HealthStatus,
}

/// The liveness answer's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// The process runs.
    Ok,
}

/// Readiness.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Readiness)]
pub struct ReadinessView {
    /// `ready` or `not_ready`.
    pub status: ReadinessStatus,
    /// Why the server is not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What the server manages: `demo` says loudly that the hosts are simulated.
    pub mode: ServerMode,
}

/// What the server manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ServerMode {
    /// The embedded simulated fleet (feature `demo`; authentication off).
    Demo,
    /// Configured Hyper-V hosts.
    Fleet,
}

/// Whether the server is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReadinessStatus {
    /// Ready for changes.
    Ready,
    /// Still starting.
    NotReady,
}

/// Server status.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Status)]
pub struct StatusView {
    /// `demo` (a simulated fleet) or `fleet`.
    pub mode: ServerMode,
    /// Server version.
    pub version: String,
    /// Whether the server is ready for changes.
    pub ready: bool,
    /// Why it is not ready.
    pub reason: Option<String>,
    /// Configured hosts.
    pub hosts: usize,
    /// Known VMs.
    pub vms: usize,
    /// Running jobs.
    pub jobs_running: usize,
    /// Queued jobs.
    pub jobs_queued: usize,
}

/// The caller.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Me)]
pub struct MeView {
    /// Whether authentication is on.
    pub auth_enabled: bool,
    /// The token's `sub` claim.
    pub subject: String,
    /// The caller's display name.
    pub name: Option<String>,
    /// The caller's role.
    pub role: Role,
    /// Where the browser logs in (when browser login is configured).
    #[schema(examples("/oidc/login"))]
    pub login_url: Option<&'static str>,
    /// Where the browser logs out.
    #[schema(examples("/oidc/logout"))]
    pub logout_url: Option<&'static str>,
}

/// Clusters.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ClusterList)]
pub struct ClusterListView {
    /// Every cluster.
    pub clusters: Vec<ClusterView>,
}

/// Hosts.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = HostList)]
pub struct HostListView {
    /// Every configured host.
    pub hosts: Vec<HostView>,
}

/// One page of the matching VMs.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = VmList)]
pub struct VmListView {
    /// The VMs of this page, in the requested order: each a `VmSummary`, or with `fields`
    /// only those fields and `id`.
    #[schema(schema_with = vm_page_items)]
    pub vms: Vec<VmSummary>,
    /// Pass it as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
    /// How many VMs match the filters (over all pages).
    pub total: usize,
    /// The inventory generation the page was read from (events carry the same number).
    pub generation: u64,
}

/// The items of [`VmListView::vms`]: a whole `VmSummary`, or (with `fields`) an object with
/// `id` and the chosen columns.
fn vm_page_items() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::Ref;
    use utoipa::openapi::schema::{AnyOfBuilder, ArrayBuilder, ObjectBuilder, Type};
    let partial = ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some("Only the columns `fields` named, and `id`"))
        .property("id", ObjectBuilder::new().schema_type(Type::String))
        .required("id");
    ArrayBuilder::new()
        .items(
            AnyOfBuilder::new()
                .item(Ref::from_schema_name("VmSummary"))
                .item(partial),
        )
        .build()
}

/// One page of the matching jobs, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = JobList)]
pub struct JobListView {
    /// The jobs of this page.
    pub jobs: Vec<JobView>,
    /// Pass it as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
    /// How many jobs in the history match the filters (over all pages).
    pub total: usize,
}

/// A job's log so far (`follow=false`).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = JobLogs)]
pub struct JobLogsView {
    /// The lines.
    pub lines: Vec<LogLine>,
    /// The job's status.
    pub status: JobStatus,
}

/// A queued job (202), or one whose cancellation was requested.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Accepted)]
pub struct AcceptedView {
    /// The job.
    #[schema(format = Uuid)]
    pub job_id: String,
    /// Its status.
    pub status: JobStatus,
    /// Present (true) on the answer to a cancellation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_requested: Option<bool>,
}

/// A job's status changed (SSE event `status` of the job log).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = JobStatusEvent)]
pub struct JobStatusEventView {
    /// The status.
    pub status: JobStatus,
    /// Its percentage.
    pub percent: u8,
    /// The current step.
    pub step: Option<String>,
}

/// First event of the event stream (`hello`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HelloEvent {
    /// The inventory generation.
    pub generation: u64,
}

/// A VM appeared or changed (`vm_added`, `vm_changed`).
#[derive(Debug, Serialize, ToSchema)]
pub struct VmEvent {
    /// The inventory generation.
    pub generation: u64,
    /// The VM.
    pub vm: VmSummary,
}

/// What changed on a VM (`vm_changed`): the changes of one VM within the coalescing window,
/// as one event.
#[derive(Debug, Serialize, ToSchema)]
pub struct VmChangedEvent {
    /// The inventory generation of the latest change included.
    pub generation: u64,
    /// A partial VM summary: `id`, `name` and `host` always, and every other field that
    /// changed, with its new value. Merge it into the VM you hold.
    #[schema(value_type = Object)]
    pub vm: serde_json::Map<String, serde_json::Value>,
    /// The names of the fields that changed.
    pub changed: Vec<String>,
}

/// A VM disappeared (`vm_removed`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VmRemovedEvent {
    /// The inventory generation.
    pub generation: u64,
    /// The VM's id.
    #[schema(value_type = String, format = Uuid)]
    pub id: aetherv_hyperv::ops::VmId,
    /// Its host.
    pub host: String,
}

/// A host connected or was removed (`host_connected`, `host_removed`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HostEvent {
    /// The inventory generation.
    pub generation: u64,
    /// The host.
    pub host: String,
}

/// A host's refresh failed (`host_disconnected`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HostDisconnectedEvent {
    /// The inventory generation.
    pub generation: u64,
    /// The host.
    pub host: String,
    /// Why.
    pub error: String,
}

/// Events were missed: reload everything (`resync`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ResyncEvent {
    /// How many.
    pub missed: u64,
}
