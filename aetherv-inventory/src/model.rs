//! The inventory model: clusters, hosts and VMs in one immutable [`Snapshot`].
//!
//! A snapshot is never modified; the single writer builds the next one from the previous one
//! ([`crate::store::apply`]). Everything is shared through `Arc`s: a one-host refresh makes a
//! new entry for that host and reuses every other host's entry (and every unchanged VM), and the
//! by-id and by-name indexes are copied only when VMs appear, disappear, move or are renamed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aetherv_hyperv::ops::{HostFacts, Vm, VmId};

/// A VM as the inventory holds it: what the host reported, where, and whether it is current.
#[derive(Debug, Clone, PartialEq)]
pub struct InventoryVm {
    /// Everything the typed host API returned for the VM.
    pub vm: Vm,
    /// The host the VM was last seen on.
    pub host: Arc<str>,
    /// `true` while the host cannot be reached: the VM is the last known state, not current.
    pub stale: bool,
}

/// Whether a host answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HostStatus {
    /// Not refreshed yet.
    Pending,
    /// The last refresh succeeded.
    Connected,
    /// The last refresh failed (see [`HostState::last_error`]); its VMs are stale.
    Disconnected,
}

/// One host as the inventory knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct HostState {
    /// Host name, as the host source names it.
    pub name: Arc<str>,
    /// Facts from the last refresh that fetched them.
    pub facts: Option<Arc<HostFacts>>,
    /// Whether the last refresh succeeded.
    pub status: HostStatus,
    /// When a refresh last succeeded (wall clock of the service).
    pub last_seen: Option<SystemTime>,
    /// When a refresh last finished, successfully or not.
    pub last_attempt: Option<SystemTime>,
    /// Why the last refresh failed (cleared by a successful one).
    pub last_error: Option<String>,
    /// How long the last refresh took.
    pub refresh_duration: Option<Duration>,
    /// Failed refreshes since the last success.
    pub consecutive_failures: u32,
    /// The host's VMs by id, as the host last reported them: a running VM's `uptime` is the
    /// one it had then; [`HostState::uptime`] adds [`HostState::uptime_advance`].
    pub vms: Arc<BTreeMap<VmId, Arc<InventoryVm>>>,
    /// How long the host's running VMs have run since the uptimes in `vms` were reported: an
    /// unchanged refresh advances this instead of copying every running VM.
    pub uptime_advance: Duration,
}

impl HostState {
    /// A host that has not been refreshed yet.
    pub fn pending(name: impl Into<Arc<str>>) -> Self {
        Self {
            name: name.into(),
            facts: None,
            status: HostStatus::Pending,
            last_seen: None,
            last_attempt: None,
            last_error: None,
            refresh_duration: None,
            consecutive_failures: 0,
            vms: Arc::default(),
            uptime_advance: Duration::ZERO,
        }
    }

    /// The uptime of `vm` (one of this host's VMs) when the host was last seen: the reported
    /// uptime of a running VM plus [`HostState::uptime_advance`]; a VM that reported none
    /// (not running) has none.
    pub fn uptime(&self, vm: &Vm) -> Duration {
        advanced_uptime(vm, self.uptime_advance)
    }

    /// Whether the last refresh succeeded.
    pub fn is_connected(&self) -> bool {
        self.status == HostStatus::Connected
    }

    /// The cluster the host belongs to, from its facts.
    pub fn cluster(&self) -> Option<&str> {
        self.facts.as_ref().and_then(|f| f.cluster.as_deref())
    }
}

/// `vm`'s reported uptime advanced by `advance` when it is running (reported a non-zero
/// uptime); zero otherwise.
pub(crate) fn advanced_uptime(vm: &Vm, advance: Duration) -> Duration {
    if vm.uptime.is_zero() {
        Duration::ZERO
    } else {
        vm.uptime + advance
    }
}

/// A failover cluster and its member hosts (from the hosts' facts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// Cluster name.
    pub name: String,
    /// Names of the member hosts the inventory knows.
    pub hosts: BTreeSet<Arc<str>>,
}

/// A consistent, immutable view of the whole inventory.
///
/// Cheap to hold: readers get an `Arc<Snapshot>` and keep it as long as they like; the writer
/// never waits for them.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub(crate) generation: u64,
    pub(crate) vms_generation: u64,
    pub(crate) hosts: BTreeMap<Arc<str>, Arc<HostState>>,
    pub(crate) clusters: Arc<BTreeMap<String, Cluster>>,
    pub(crate) by_id: Arc<HashMap<VmId, Arc<str>>>,
    pub(crate) by_name: Arc<HashMap<Arc<str>, Arc<[VmId]>>>,
}

impl Snapshot {
    /// An empty inventory (generation 0).
    pub fn new() -> Self {
        Self::default()
    }

    /// Increases by one with every applied batch of updates. A change event carries the
    /// generation it produced, so a subscriber that resyncs from a snapshot can skip the events
    /// the snapshot already contains.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Increases with every applied batch that changed what a VM list shows beyond what a
    /// refresh changes silently: a VM added, changed (not only its uptime advancing), removed or
    /// moved, a host connected, disconnected or removed (stale flags), a cluster membership.
    /// Views derived from the VM set (sorted lists) stay valid while it is unchanged; read
    /// the fields that change silently from the snapshot (uptime: [`Snapshot::uptime`]).
    pub fn vms_generation(&self) -> u64 {
        self.vms_generation
    }

    /// Every host, by name.
    pub fn hosts(&self) -> impl Iterator<Item = &Arc<HostState>> + '_ {
        self.hosts.values()
    }

    /// One host by name.
    pub fn host(&self, name: &str) -> Option<&Arc<HostState>> {
        self.hosts.get(name)
    }

    /// Every cluster, by name.
    pub fn clusters(&self) -> impl Iterator<Item = &Cluster> + '_ {
        self.clusters.values()
    }

    /// One cluster by name.
    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters.get(name)
    }

    /// The uptime of `vm` (a VM of this snapshot) when its host was last seen
    /// ([`HostState::uptime`]); the reported uptime if its host is unknown.
    pub fn uptime(&self, vm: &InventoryVm) -> Duration {
        self.hosts
            .get(&vm.host)
            .map_or(vm.vm.uptime, |h| h.uptime(&vm.vm))
    }

    /// One VM by id.
    pub fn vm(&self, id: VmId) -> Option<&Arc<InventoryVm>> {
        let host = self.by_id.get(&id)?;
        self.hosts.get(host)?.vms.get(&id)
    }

    /// Every VM, host by host.
    pub fn vms(&self) -> impl Iterator<Item = &Arc<InventoryVm>> + '_ {
        self.hosts.values().flat_map(|h| h.vms.values())
    }

    /// The VMs of one host (none for an unknown host).
    pub fn vms_on(&self, host: &str) -> impl Iterator<Item = &Arc<InventoryVm>> + '_ {
        self.hosts
            .get(host)
            .into_iter()
            .flat_map(|h| h.vms.values())
    }

    /// The VMs with exactly this name (names are not unique across hosts).
    pub fn vms_named(&self, name: &str) -> impl Iterator<Item = &Arc<InventoryVm>> + '_ {
        self.by_name
            .get(name)
            .into_iter()
            .flat_map(|ids| ids.iter())
            .filter_map(|id| self.vm(*id))
    }

    /// The host a VM is on.
    pub fn host_of(&self, id: VmId) -> Option<&Arc<str>> {
        self.by_id.get(&id)
    }

    /// Number of VMs held.
    pub fn vm_count(&self) -> usize {
        self.by_id.len()
    }
}
