//! The JSON shapes of inventory answers (see `API.md`), built from an inventory snapshot.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use aetherv_hyperv::ops::{PowerAction, VmId, VmState};
use aetherv_inventory::{HostState, HostStatus, InventoryVm, Snapshot};
use serde::Serialize;
use utoipa::ToSchema;

use crate::jobs::{JobAction, rfc3339};
use crate::orphan::JobLedger;

mod answers;
mod facts;
mod media;
pub use answers::*;
pub use facts::*;
pub use media::*;

/// The API names of the actions allowed from `state`.
pub fn allowed_actions(state: VmState) -> Vec<JobAction> {
    PowerAction::ALL
        .into_iter()
        .filter(|a| a.allowed_from(state))
        .map(JobAction::from)
        .collect()
}

/// A VM state Hyper-V names (the `state` filter of the VM list and of VMs). It serialises as
/// the name, and its schema lists the names of aetherv-hyperv's one state table
/// ([`VmState::named`]), so the two cannot drift.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VmStateName(VmState);

impl VmStateName {
    /// The Hyper-V state.
    pub fn state(self) -> VmState {
        self.0
    }

    /// The name of `state`, when Hyper-V names it.
    pub fn of(state: VmState) -> Option<Self> {
        VmState::named().any(|s| s == state).then_some(Self(state))
    }

    /// Parses a state name, ignoring case.
    pub fn parse(name: &str) -> Option<Self> {
        VmState::named()
            .find(|s| s.name().eq_ignore_ascii_case(name))
            .map(Self)
    }
}

impl Serialize for VmStateName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0.name())
    }
}

impl utoipa::PartialSchema for VmStateName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("A VM state Hyper-V names"))
            .enum_values(Some(VmState::named().map(VmState::name)))
            .into()
    }
}

impl ToSchema for VmStateName {}

/// A VM's state: a name Hyper-V gives it, or the number of a state it does not name (e.g. the
/// `*Critical` states 32785..=32796) as a string of digits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum VmStateView {
    /// A named state.
    Named(VmStateName),
    /// An unnamed state's number.
    Code(String),
}

// Written out because the derive cannot put a pattern on the `Code` variant, without which
// every name would also match it and the `oneOf` would be ambiguous.
impl utoipa::PartialSchema for VmStateView {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        use utoipa::openapi::{Ref, RefOr};
        RefOr::T(
            OneOfBuilder::new()
                .description(Some(
                    "A state Hyper-V names, or the number of one it does not name (e.g. the \
                     `*Critical` states 32785..=32796) as a string of digits",
                ))
                .item(Ref::from_schema_name(VmStateName::name()))
                .item(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .pattern(Some("^[0-9]+$")),
                )
                .into(),
        )
    }
}

impl ToSchema for VmStateView {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        schemas.push((
            VmStateName::name().into_owned(),
            <VmStateName as utoipa::PartialSchema>::schema(),
        ));
        <VmStateName as ToSchema>::schemas(schemas);
    }
}

impl From<VmState> for VmStateView {
    fn from(state: VmState) -> Self {
        VmStateName::of(state).map_or_else(|| Self::Code(state.code().to_string()), Self::Named)
    }
}

/// The connection status of a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HostStatusName {
    /// The last refresh succeeded.
    Connected,
    /// The last refresh failed; its VMs are stale.
    Disconnected,
    /// Not refreshed yet.
    Pending,
}

/// A failover cluster.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Cluster)]
pub struct ClusterView {
    /// Name.
    pub name: String,
    /// Member hosts.
    pub hosts: Vec<String>,
    /// VMs on the members.
    pub vm_count: usize,
    /// Members that answer.
    pub connected_hosts: usize,
}

/// A configured Hyper-V host (facts fields are null before the first refresh).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Host)]
pub struct HostView {
    /// Name.
    pub name: String,
    /// Cluster, from the facts.
    pub cluster: Option<String>,
    /// Whether the last refresh succeeded.
    pub status: HostStatusName,
    /// Last successful refresh.
    #[schema(format = DateTime)]
    pub last_seen: Option<String>,
    /// Why the last refresh failed.
    pub last_error: Option<String>,
    /// Duration of the last refresh in milliseconds.
    pub refresh_ms: Option<u64>,
    /// VMs on the host.
    pub vm_count: usize,
    /// VM counts by Hyper-V state name.
    pub vms_by_state: BTreeMap<String, usize>,
    /// Logical processors.
    pub logical_processors: Option<u32>,
    /// Physical memory.
    pub memory_total_bytes: Option<u64>,
    /// Memory available for VMs.
    pub memory_available_bytes: Option<u64>,
    /// Capacity of the storage locations.
    pub storage_total_bytes: Option<u64>,
    /// Free space of the storage locations.
    pub storage_free_bytes: Option<u64>,
    /// Windows version.
    pub os_version: Option<String>,
    /// Installed host script version.
    pub scripts_version: Option<String>,
    /// The host's maintenance state (`active`, `draining`, `maintenance`, `resuming`,
    /// `failed_drain`), read from the host; `active` before its facts are known.
    #[schema(example = "active")]
    pub maintenance_state: String,
}

/// A host with its facts and VMs.
#[derive(Debug, Serialize, ToSchema)]
pub struct HostDetail {
    /// The summary.
    #[serde(flatten)]
    pub host: HostView,
    /// Everything the host reported about itself.
    pub facts: Option<HostFactsView>,
    /// The host's maintenance: state, why, who, and where each VM of a drain went.
    pub maintenance: super::maintenance::MaintenanceView,
    /// Its VMs.
    pub vms: Vec<VmSummary>,
    /// The provisioning ISOs this server builds and deploys to every host, with their
    /// SHA-256 and whether this host has them (by its facts).
    pub provisioning_media: Vec<ProvisioningMediaView>,
}

/// A VM in lists.
#[derive(Debug, Serialize, ToSchema)]
pub struct VmSummary {
    /// Hyper-V VM id.
    #[schema(value_type = String, format = Uuid)]
    pub id: VmId,
    /// Name.
    pub name: String,
    /// Host.
    pub host: String,
    /// Cluster of the host.
    pub cluster: Option<String>,
    /// Hyper-V state.
    pub state: VmStateView,
    /// The host's last refresh failed; this is the last known state.
    pub stale: bool,
    /// Virtual processors.
    pub processor_count: u32,
    /// Startup memory.
    pub memory_startup_bytes: u64,
    /// Assigned memory.
    pub memory_assigned_bytes: u64,
    /// Uptime.
    pub uptime_seconds: u64,
    /// Guest-reported addresses of every adapter.
    pub ip_addresses: Vec<String>,
    /// Whether the VM is a cluster role.
    pub clustered: bool,
    /// The job working on the VM, if any.
    #[schema(format = Uuid)]
    pub busy_job: Option<String>,
    /// The VM's notes mark a provisioning job this server is not running (it was left
    /// behind, e.g. by a server that stopped mid-provision); an admin can remove or adopt it.
    pub orphaned: bool,
}

/// A VM with everything the host reported.
#[derive(Debug, Serialize, ToSchema)]
pub struct VmDetail {
    /// The summary.
    #[serde(flatten)]
    pub summary: VmSummary,
    /// Generation (1 or 2).
    pub generation: u8,
    /// Configuration version.
    pub version: Option<String>,
    /// Configuration folder.
    pub path: Option<String>,
    /// Dynamic memory minimum.
    pub memory_minimum_bytes: u64,
    /// Dynamic memory maximum.
    pub memory_maximum_bytes: u64,
    /// Whether dynamic memory is on.
    pub dynamic_memory: bool,
    /// Creation time.
    #[schema(format = DateTime)]
    pub creation_time: Option<String>,
    /// Notes.
    pub notes: String,
    /// Disks.
    pub disks: Vec<VmDiskView>,
    /// DVD drives.
    pub dvd_drives: Vec<VmDvdDriveView>,
    /// Network adapters.
    pub network_adapters: Vec<VmNicView>,
    /// Integration services.
    pub integration_services: Vec<IntegrationServiceView>,
    /// Power actions the state allows (none while the host is disconnected).
    pub allowed_actions: Vec<JobAction>,
    /// The user's notes: `notes` without the project's marker line.
    pub user_notes: String,
    /// The project's marker (`aetherv-provisioned:<job>` or `aetherv-job:<job>`), if the
    /// notes carry one; `PATCH` keeps it.
    pub project_marker: Option<String>,
    /// Secure Boot (generation 2; null for generation 1).
    pub secure_boot: Option<bool>,
    /// The Secure Boot template (generation 2).
    pub secure_boot_template: Option<String>,
    /// Virtual TPM enabled (generation 2; null for generation 1).
    pub tpm_enabled: Option<bool>,
    /// At host start: `nothing`, `start_if_running` or `start` (null when not reported).
    #[schema(value_type = Option<String>)]
    pub automatic_start_action: Option<aetherv_hyperv::ops::AutomaticStartAction>,
    /// At host shutdown: `stop` (turn off), `save` or `shutdown` (null when not reported).
    #[schema(value_type = Option<String>)]
    pub automatic_stop_action: Option<aetherv_hyperv::ops::AutomaticStopAction>,
    /// Delay before an automatic start, in seconds.
    pub automatic_start_delay_seconds: u32,
    /// How many checkpoints the VM has (`GET /api/v1/vms/{id}/checkpoints` lists them).
    pub checkpoint_count: usize,
    /// While Hyper-V merges differencing disks after a checkpoint was deleted: how far, in
    /// percent; null otherwise.
    pub merge_percent: Option<u8>,
}

fn status_name(status: HostStatus) -> HostStatusName {
    match status {
        HostStatus::Connected => HostStatusName::Connected,
        HostStatus::Disconnected => HostStatusName::Disconnected,
        _ => HostStatusName::Pending,
    }
}

/// The summary of `host`.
pub fn host_view(host: &HostState) -> HostView {
    let mut vms_by_state = BTreeMap::new();
    for vm in host.vms.values() {
        *vms_by_state.entry(vm.vm.state.name()).or_insert(0) += 1;
    }
    let facts = host.facts.as_deref();
    HostView {
        name: host.name.to_string(),
        cluster: host.cluster().map(str::to_owned),
        status: status_name(host.status),
        last_seen: host.last_seen.map(rfc3339),
        last_error: host.last_error.clone(),
        refresh_ms: host
            .refresh_duration
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        vm_count: host.vms.len(),
        vms_by_state,
        logical_processors: facts.map(|f| f.logical_processors),
        memory_total_bytes: facts.map(|f| f.memory_total_bytes),
        memory_available_bytes: facts.map(|f| f.memory_available_bytes),
        storage_total_bytes: facts.map(|f| f.storage.iter().map(|s| s.capacity_bytes).sum()),
        storage_free_bytes: facts.map(|f| f.storage.iter().map(|s| s.free_bytes).sum()),
        os_version: facts.and_then(|f| f.os_version.clone()),
        scripts_version: facts.and_then(|f| f.scripts_version.clone()),
        maintenance_state: facts
            .map_or(aetherv_hyperv::ops::HostState::Active, |f| {
                aetherv_hyperv::ops::effective_state(
                    f.maintenance.as_ref(),
                    f.cluster_node_state.as_deref(),
                )
            })
            .as_str()
            .to_owned(),
    }
}

/// `host` with its facts and VMs.
pub fn host_detail(
    snapshot: &Snapshot,
    host: &HostState,
    busy: &HashMap<VmId, String>,
    jobs: &dyn JobLedger,
) -> HostDetail {
    HostDetail {
        host: host_view(host),
        facts: host.facts.as_deref().map(HostFactsView::from),
        maintenance: super::maintenance::maintenance_view(
            host.facts.as_deref().and_then(|f| f.maintenance.as_ref()),
            host.facts
                .as_deref()
                .and_then(|f| f.cluster_node_state.as_deref()),
        ),
        vms: host
            .vms
            .values()
            .map(|vm| vm_summary(snapshot, vm, busy, jobs))
            .collect(),
        provisioning_media: Vec::new(),
    }
}

/// Every cluster.
pub fn clusters(snapshot: &Snapshot) -> Vec<ClusterView> {
    snapshot
        .clusters()
        .map(|c| {
            let members: Vec<&Arc<HostState>> =
                c.hosts.iter().filter_map(|h| snapshot.host(h)).collect();
            ClusterView {
                name: c.name.clone(),
                hosts: c.hosts.iter().map(ToString::to_string).collect(),
                vm_count: members.iter().map(|h| h.vms.len()).sum(),
                connected_hosts: members.iter().filter(|h| h.is_connected()).count(),
            }
        })
        .collect()
}

/// The summary of `vm`.
pub fn vm_summary(
    snapshot: &Snapshot,
    vm: &InventoryVm,
    busy: &HashMap<VmId, String>,
    jobs: &dyn JobLedger,
) -> VmSummary {
    vm_summary_on(snapshot.host(&vm.host).map(|h| &**h), vm, busy, jobs)
}

/// The summary of `vm`, whose host (`None`: not in the snapshot) the caller has looked up.
pub fn vm_summary_on(
    host: Option<&HostState>,
    vm: &InventoryVm,
    busy: &HashMap<VmId, String>,
    jobs: &dyn JobLedger,
) -> VmSummary {
    let v = &vm.vm;
    VmSummary {
        id: v.id,
        name: v.name.clone(),
        host: vm.host.to_string(),
        cluster: host.and_then(|h| h.cluster()).map(str::to_owned),
        state: v.state.into(),
        stale: vm.stale,
        processor_count: v.processor_count,
        memory_startup_bytes: v.memory_startup_bytes,
        memory_assigned_bytes: v.memory_assigned_bytes,
        uptime_seconds: host.map_or(v.uptime, |h| h.uptime(v)).as_secs(),
        ip_addresses: v
            .nics
            .iter()
            .flat_map(|n| n.ip_addresses.iter().cloned())
            .collect(),
        clustered: v.clustered,
        busy_job: busy.get(&v.id).cloned(),
        orphaned: crate::orphan::is_orphaned(v, jobs),
    }
}

/// Everything about `vm`.
pub fn vm_detail(
    snapshot: &Snapshot,
    vm: &InventoryVm,
    busy: &HashMap<VmId, String>,
    jobs: &dyn JobLedger,
) -> VmDetail {
    let v = &vm.vm;
    VmDetail {
        summary: vm_summary(snapshot, vm, busy, jobs),
        generation: v.generation,
        version: v.version.clone(),
        path: v.path.clone(),
        memory_minimum_bytes: v.memory_minimum_bytes,
        memory_maximum_bytes: v.memory_maximum_bytes,
        dynamic_memory: v.dynamic_memory,
        creation_time: v.creation_time.map(|t| t.to_string()),
        notes: v.notes.clone(),
        disks: v.disks.iter().map(VmDiskView::from).collect(),
        dvd_drives: v.dvd_drives.iter().map(VmDvdDriveView::from).collect(),
        network_adapters: v.nics.iter().map(VmNicView::from).collect(),
        integration_services: v
            .integration_services
            .iter()
            .map(IntegrationServiceView::from)
            .collect(),
        allowed_actions: if vm.stale {
            Vec::new()
        } else {
            allowed_actions(v.state)
        },
        user_notes: aetherv_provision::provision::split_notes(&v.notes)
            .1
            .to_owned(),
        project_marker: aetherv_provision::provision::split_notes(&v.notes)
            .0
            .map(str::to_owned),
        secure_boot: v.config.secure_boot,
        secure_boot_template: v.config.secure_boot_template.clone(),
        tpm_enabled: v.config.tpm_enabled,
        automatic_start_action: v.config.automatic_start_action,
        automatic_stop_action: v.config.automatic_stop_action,
        automatic_start_delay_seconds: v.config.automatic_start_delay_seconds,
        checkpoint_count: v.checkpoints.len(),
        merge_percent: v.merge_percent,
    }
}

/// Filters of `GET /api/v1/vms`.
#[derive(Debug, Default, Clone)]
pub struct VmFilter {
    /// Host name (case-insensitive).
    pub host: Option<String>,
    /// Cluster name (case-insensitive).
    pub cluster: Option<String>,
    /// State.
    pub state: Option<VmState>,
    /// Lowercase substring of name, id, notes or an address.
    pub q: Option<String>,
}

impl VmFilter {
    /// Whether no filter is set.
    pub fn is_empty(&self) -> bool {
        self.host.is_none() && self.cluster.is_none() && self.state.is_none() && self.q.is_none()
    }

    /// Whether `vm` passes.
    pub fn matches(&self, snapshot: &Snapshot, vm: &InventoryVm) -> bool {
        if let Some(host) = &self.host
            && !vm.host.eq_ignore_ascii_case(host)
        {
            return false;
        }
        if let Some(cluster) = &self.cluster {
            let in_cluster = snapshot
                .host(&vm.host)
                .and_then(|h| h.cluster())
                .is_some_and(|c| c.eq_ignore_ascii_case(cluster));
            if !in_cluster {
                return false;
            }
        }
        if let Some(state) = self.state
            && vm.vm.state != state
        {
            return false;
        }
        if let Some(q) = &self.q {
            let v = &vm.vm;
            let hit = v.name.to_ascii_lowercase().contains(q)
                || v.id.to_string().contains(q)
                || v.notes.to_ascii_lowercase().contains(q)
                || v.nics
                    .iter()
                    .any(|n| n.ip_addresses.iter().any(|a| a.contains(q.as_str())));
            if !hit {
                return false;
            }
        }
        true
    }
}
