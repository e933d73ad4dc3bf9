//! The simulated fleet: clusters, hosts, VMs and their KVP pools, as plain data with pure
//! operations. Nothing here performs I/O or reads the clock: time is passed in.
//!
//! Accounting rules (they hold for generated fleets and after every operation):
//! - Host memory: `memory_total = memory_reserved + Σ assigned(VM) + memory_available`, where only
//!   VMs whose state holds memory (Running, Paused and the transitional states) have a non-zero
//!   assigned amount; Off and Saved VMs hold none.
//! - Storage: a location's free space is its capacity minus its reserved (unmodelled) bytes
//!   minus the files under its path anywhere in the fleet (VM disks, golden images, ISOs).
//!   Cluster shared volumes are counted once for the whole cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use uuid::Uuid;

use crate::error::{Error, Result};
use crate::rng::SimRng;

/// One gibibyte.
pub const GIB: u64 = 1 << 30;

/// The integration service that carries KVP items; a guest agent only sees KVP while it is on.
pub const KVP_SERVICE: &str = "Key-Value Pair Exchange";

/// Integration services of a generation 2 VM, with Hyper-V's defaults (Guest Service
/// Interface is off by default).
pub const INTEGRATION_SERVICES: [(&str, bool); 6] = [
    ("Guest Service Interface", false),
    ("Heartbeat", true),
    (KVP_SERVICE, true),
    ("Shutdown", true),
    ("Time Synchronization", true),
    ("VSS", true),
];

/// Guest operating system family (aetherv-hyperv's one definition, [`aetherv_hyperv::os::OsFamily`]).
pub use aetherv_hyperv::os::OsFamily;

/// A VM's state: Hyper-V's numeric `VMState`, the same type the typed host API reads from
/// the host scripts.
pub use aetherv_hyperv::ops::VmState;

/// The generation 2 firmware settings of a VM (Secure Boot, its template, vTPM): the typed
/// host API's type; [`BootSettings::boots`] is the rule the simulated guests follow.
pub use aetherv_hyperv::ops::{BootSettings, SecureBootTemplate};

/// The power actions the model applies: the typed host API's actions (see
/// [`Fleet::power`] for what each does to the model).
pub use aetherv_hyperv::ops::PowerAction;

/// Whether a VM holds host memory in `state` (every state but Off, Saved, FastSaved,
/// Hibernated and the unnamed ones).
pub fn holds_memory(state: VmState) -> bool {
    !matches!(
        state,
        VmState::Off
            | VmState::Saved
            | VmState::FastSaved
            | VmState::Hibernated
            | VmState::Other
            | VmState::Code(_)
    )
}

/// A cluster of hosts sharing cluster shared volumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// Cluster name, e.g. `hvclu01`.
    pub name: String,
    /// Fully qualified cluster name.
    pub fqdn: String,
    /// Member host names.
    pub hosts: Vec<String>,
}

/// A volume or folder VMs can be placed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageLocation {
    /// Path, e.g. `C:\ClusterStorage\Volume1` or `D:\`.
    pub path: String,
    /// Capacity in bytes.
    pub capacity_bytes: u64,
    /// Bytes used by things the model does not track (OS, logs, other files).
    pub reserved_bytes: u64,
    /// Whether this is a cluster shared volume (visible to every host in the cluster).
    pub shared: bool,
}

/// A location's capacity and current free space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageStatus {
    /// Path.
    pub path: String,
    /// Capacity in bytes.
    pub capacity_bytes: u64,
    /// Free bytes.
    pub free_bytes: u64,
    /// Whether this is a cluster shared volume.
    pub shared: bool,
}

/// Kind of virtual switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwitchType {
    /// Bound to a physical NIC or team.
    External,
    /// Host and VMs only.
    Internal,
    /// VMs only.
    Private,
}

impl SwitchType {
    /// Hyper-V's name for the type.
    pub fn name(self) -> &'static str {
        match self {
            Self::External => "External",
            Self::Internal => "Internal",
            Self::Private => "Private",
        }
    }
}

/// The Hyper-V id of a VM's `index`th generated adapter (`Microsoft:<VM>\<adapter>`; the
/// adapter GUID is derived from the VM's, so it is stable for a seed).
pub fn adapter_id(vm: Uuid, index: u8) -> String {
    let mut bytes = *vm.as_bytes();
    bytes[15] ^= 0xa5 ^ index;
    bytes[0] ^= 0x5a;
    let adapter = uuid::Builder::from_random_bytes(bytes).into_uuid();
    format!(
        "Microsoft:{}\\{}",
        vm.hyphenated().to_string().to_ascii_uppercase(),
        adapter.hyphenated().to_string().to_ascii_uppercase()
    )
}

/// A Hyper-V virtual switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualSwitch {
    /// Switch name.
    pub name: String,
    /// Switch type.
    pub switch_type: SwitchType,
}

/// A golden image: a sysprepped/cloud-init VHDX that new VMs are copied from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoldenImage {
    /// Display name, e.g. `Windows Server 2022 Datacenter` (decides the OS family).
    pub name: String,
    /// OS family.
    pub os_family: OsFamily,
    /// VHDX path.
    pub path: String,
    /// File size in bytes.
    pub size_bytes: u64,
    /// Maximum (virtual) disk size in bytes.
    pub max_size_bytes: u64,
}

/// A provisioning ISO carrying the guest agent for one OS family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisioningIso {
    /// OS family the ISO is for.
    pub os_family: OsFamily,
    /// ISO path.
    pub path: String,
    /// File size in bytes.
    pub size_bytes: u64,
    /// Guest agent version on the ISO (compared with `hlvmm.meta.version`).
    pub version: String,
}

/// A Hyper-V host.
#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    /// Short name, e.g. `hv01`.
    pub name: String,
    /// Fully qualified name, e.g. `hv01.lab.example`.
    pub fqdn: String,
    /// Cluster the host belongs to.
    pub cluster: Option<String>,
    /// Windows version, e.g. `10.0.20348`.
    pub os_version: String,
    /// Logical processors.
    pub logical_processors: u32,
    /// The physical processor (live and saved-state moves need a compatible one).
    pub processor: Processor,
    /// Physical memory in bytes.
    pub memory_total_bytes: u64,
    /// Memory kept by the host (root partition, reserve) in bytes.
    pub memory_reserved_bytes: u64,
    /// Storage the host can place VMs on (local volumes and, for clustered hosts, the cluster
    /// shared volumes).
    pub storage: Vec<StorageLocation>,
    /// Default folder for new VMs.
    pub vm_path: String,
    /// Virtual switches.
    pub switches: Vec<VirtualSwitch>,
    /// Golden images reachable from this host.
    pub images: Vec<GoldenImage>,
    /// Provisioning ISOs reachable from this host.
    pub isos: Vec<ProvisioningIso>,
    /// Version of the deployed host scripts, `None` when none are installed.
    pub scripts_version: Option<String>,
    /// The VMs registered on this host.
    pub vms: Vec<SimVm>,
    /// Text of Aether-V's `hostresources.json` (named networks and storage classes) at
    /// [`HOST_RESOURCES_PATH`], when the host has one.
    pub host_resources: Option<String>,
}

/// A host's physical processor, as far as migration compatibility goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Processor {
    /// CPUID vendor (`GenuineIntel`, `AuthenticAMD`).
    pub vendor: String,
    /// Model name, e.g. `Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz`.
    pub model: String,
}

impl Processor {
    /// An Intel processor of this model name.
    pub fn intel(model: &str) -> Self {
        Self {
            vendor: "GenuineIntel".to_owned(),
            model: model.to_owned(),
        }
    }

    /// An AMD processor of this model name.
    pub fn amd(model: &str) -> Self {
        Self {
            vendor: "AuthenticAMD".to_owned(),
            model: model.to_owned(),
        }
    }
}

/// Where Aether-V keeps a host's resources file.
pub const HOST_RESOURCES_PATH: &str = r"C:\ProgramData\Aether-V\hostresources.json";

/// A VM's memory configuration and current assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmMemory {
    /// Startup memory in bytes.
    pub startup_bytes: u64,
    /// Dynamic memory minimum in bytes (equals startup for static memory).
    pub minimum_bytes: u64,
    /// Dynamic memory maximum in bytes (equals startup for static memory).
    pub maximum_bytes: u64,
    /// Whether dynamic memory is enabled.
    pub dynamic: bool,
    /// Memory currently assigned in bytes (0 unless the state holds memory).
    pub assigned_bytes: u64,
}

/// Disk controller type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControllerType {
    /// IDE (generation 1).
    Ide,
    /// SCSI.
    Scsi,
}

impl ControllerType {
    /// Hyper-V's name (`IDE`, `SCSI`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Ide => "IDE",
            Self::Scsi => "SCSI",
        }
    }
}

/// VHD(X) type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskType {
    /// Fixed size.
    Fixed,
    /// Dynamically expanding.
    Dynamic,
    /// Differencing.
    Differencing,
}

impl DiskType {
    /// Hyper-V's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fixed => "Fixed",
            Self::Dynamic => "Dynamic",
            Self::Differencing => "Differencing",
        }
    }
}

/// A virtual hard disk attached to a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualDisk {
    /// VHDX path.
    pub path: String,
    /// Controller type.
    pub controller_type: ControllerType,
    /// Controller number.
    pub controller_number: u32,
    /// Location on the controller.
    pub controller_location: u32,
    /// Disk type.
    pub disk_type: DiskType,
    /// Maximum (virtual) size in bytes.
    pub max_size_bytes: u64,
    /// Current file size in bytes.
    pub file_size_bytes: u64,
    /// Shared (a shared VHDX with persistent reservations, or a VHD Set).
    pub shared: bool,
}

/// A DVD drive with an optional ISO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DvdDrive {
    /// Inserted ISO path.
    pub path: Option<String>,
    /// Controller type.
    pub controller_type: ControllerType,
    /// Controller number.
    pub controller_number: u32,
    /// Location on the controller.
    pub controller_location: u32,
}

/// A VM network adapter.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetworkAdapter {
    /// Adapter name (`Network Adapter`).
    pub name: String,
    /// Connected switch.
    pub switch_name: Option<String>,
    /// Access VLAN, `None` for untagged.
    pub vlan_id: Option<u16>,
    /// MAC address as Hyper-V prints it (12 hex digits, e.g. `00155D010203`).
    pub mac_address: String,
    /// Addresses the guest reports (empty while the VM is off).
    pub ip_addresses: Vec<String>,
    /// Hyper-V's adapter id, `Microsoft:<VM GUID>\<adapter GUID>`.
    pub id: String,
    /// Whether Hyper-V assigns the MAC address.
    pub dynamic_mac: bool,
    /// MAC address spoofing.
    pub mac_spoofing: bool,
    /// DHCP guard.
    pub dhcp_guard: bool,
    /// Router guard.
    pub router_guard: bool,
    /// Bandwidth cap in bits per second (0: none).
    pub maximum_bandwidth_bps: u64,
    /// Bandwidth reservation in bits per second (0: none).
    pub minimum_bandwidth_bps: u64,
    /// A legacy (emulated) adapter.
    pub legacy: bool,
}

/// One integration service and whether it is enabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntegrationService {
    /// Service name, e.g. `Heartbeat`.
    pub name: String,
    /// Whether it is enabled.
    pub enabled: bool,
}

/// The KVP pools of a VM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KvpPools {
    /// Items the host wrote for the guest (pool 0 inside a Linux guest; `External` in the
    /// Windows guest registry).
    pub host_to_guest: BTreeMap<String, String>,
    /// Items the guest wrote for the host (pool 1; `Guest` in the registry).
    pub guest_to_host: BTreeMap<String, String>,
    /// Items the guest's integration services report by themselves (FQDN, OS name, ...).
    pub guest_intrinsic: BTreeMap<String, String>,
}

/// Maximum KVP key length in bytes (Hyper-V's 512-byte field including its terminator).
pub const KVP_MAX_KEY_BYTES: usize = 511;

/// Maximum KVP value length in bytes (Hyper-V's 2048-byte field including its terminator).
pub const KVP_MAX_VALUE_BYTES: usize = 2047;

/// Checks a KVP item against Hyper-V's size limits.
pub fn check_kvp_item(key: &str, value: &str) -> Result<()> {
    if key.is_empty() || key.len() > KVP_MAX_KEY_BYTES {
        return Err(Error::Invalid {
            what: "KVP key",
            detail: format!("{} bytes (must be 1..={KVP_MAX_KEY_BYTES})", key.len()),
        });
    }
    if value.len() > KVP_MAX_VALUE_BYTES {
        return Err(Error::Invalid {
            what: "KVP value",
            detail: format!(
                "value of {key:?} is {} bytes (at most {KVP_MAX_VALUE_BYTES})",
                value.len()
            ),
        });
    }
    Ok(())
}

/// What a guest agent applied from the provisioning data (no secrets are kept).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppliedProvisioning {
    /// Host name set in the guest.
    pub hostname: Option<String>,
    /// Static IPv4 address with prefix, e.g. `10.0.0.5/24`.
    pub ipv4: Option<String>,
    /// Default gateway.
    pub gateway: Option<String>,
    /// DNS servers.
    pub dns_servers: Vec<String>,
    /// DNS suffix.
    pub dns_suffix: Option<String>,
    /// Local administrator created (the password is never stored).
    pub local_admin: Option<String>,
    /// Domain joined.
    pub domain: Option<String>,
    /// SSH user configured for Ansible (Linux).
    pub ssh_user: Option<String>,
    /// Every `hlvmm.data.*` key the agent decrypted (names only).
    pub keys: Vec<String>,
}

/// What runs inside the VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestInfo {
    /// OS family.
    pub os_family: OsFamily,
    /// The golden image the VM was created from.
    pub image: String,
    /// The guest's computer name.
    pub hostname: String,
    /// Guest agent version installed from the provisioning ISO, if any.
    pub agent_version: Option<String>,
    /// What the agent applied, once provisioning succeeded.
    pub applied: Option<AppliedProvisioning>,
}

/// A virtual machine.
#[derive(Debug, Clone, PartialEq)]
pub struct SimVm {
    /// VM id.
    pub id: Uuid,
    /// VM name.
    pub name: String,
    /// Current state.
    pub state: VmState,
    /// Generation (1 or 2).
    pub generation: u8,
    /// Configuration version, e.g. `10.0`.
    pub version: String,
    /// Folder holding the VM's configuration.
    pub path: String,
    /// Virtual processors.
    pub processor_count: u32,
    /// Processor compatibility mode (`Set-VMProcessor -CompatibilityForMigrationEnabled`):
    /// the VM uses only features common to its vendor's processors, so it can move live to a
    /// host with another model of the same vendor (never to another vendor).
    pub processor_compatibility: bool,
    /// Memory.
    pub memory: VmMemory,
    /// When the VM was created.
    pub created: SystemTime,
    /// When the VM was last started (set while it holds memory).
    pub started: Option<SystemTime>,
    /// Notes (the provisioning job marker lives here).
    pub notes: String,
    /// Whether the VM is a cluster role.
    pub clustered: bool,
    /// Virtual hard disks.
    pub disks: Vec<VirtualDisk>,
    /// DVD drives.
    pub dvd_drives: Vec<DvdDrive>,
    /// Network adapters.
    pub nics: Vec<NetworkAdapter>,
    /// Integration services.
    pub integration_services: Vec<IntegrationService>,
    /// KVP pools.
    pub kvp: KvpPools,
    /// Guest OS information.
    pub guest: GuestInfo,
    /// Firmware settings (generation 2): whether the guest OS gets past Secure Boot.
    pub firmware: BootSettings,
    /// Automatic start and stop actions.
    pub automatic: AutomaticActions,
    /// Checkpoints, the checkpoint type and a running merge.
    pub checkpoints: crate::devices::Checkpoints,
}

/// What the host does with a VM when it starts or stops (Hyper-V's defaults: start if it was
/// running, save it, no delay).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutomaticActions {
    /// At host start.
    pub start: aetherv_hyperv::ops::AutomaticStartAction,
    /// At host shutdown.
    pub stop: aetherv_hyperv::ops::AutomaticStopAction,
    /// Delay before an automatic start, in seconds.
    pub start_delay_seconds: u32,
}

impl Default for AutomaticActions {
    fn default() -> Self {
        Self {
            start: aetherv_hyperv::ops::AutomaticStartAction::StartIfRunning,
            stop: aetherv_hyperv::ops::AutomaticStopAction::Save,
            start_delay_seconds: 0,
        }
    }
}

impl SimVm {
    /// Whether the guest OS boots with the VM's firmware, as on real Hyper-V: a generation 2
    /// VM with Secure Boot on only starts an OS whose boot loader its template trusts (a Linux
    /// shim is signed by the third-party UEFI CA, which `MicrosoftWindows` does not trust; the
    /// Windows boot manager is not trusted by `MicrosoftUEFICertificateAuthority`). A guest
    /// that does not boot stays in the firmware: no integration services, no KVP, no agent.
    pub fn guest_os_boots(&self) -> bool {
        self.generation != 2 || self.firmware.boots(self.guest.os_family)
    }

    /// Time since the VM started, zero when it does not hold memory.
    pub fn uptime(&self, now: SystemTime) -> Duration {
        match (holds_memory(self.state), self.started) {
            (true, Some(started)) => now.duration_since(started).unwrap_or_default(),
            _ => Duration::ZERO,
        }
    }

    /// Whether the integration service `name` is enabled.
    pub fn integration_service_enabled(&self, name: &str) -> bool {
        self.integration_services
            .iter()
            .any(|s| s.name.eq_ignore_ascii_case(name) && s.enabled)
    }

    /// Whether a guest agent inside can exchange KVP items right now.
    pub fn kvp_reachable(&self) -> bool {
        self.state == VmState::Running
            && self.guest_os_boots()
            && self.integration_service_enabled(KVP_SERVICE)
    }
}

impl Host {
    /// The VM with this name (case-insensitive) or id.
    pub fn vm(&self, name_or_id: &str) -> Option<&SimVm> {
        self.vms.iter().find(|vm| vm_matches(vm, name_or_id))
    }

    /// Mutable access to the VM with this name or id.
    pub fn vm_mut(&mut self, name_or_id: &str) -> Option<&mut SimVm> {
        self.vms.iter_mut().find(|vm| vm_matches(vm, name_or_id))
    }

    /// Memory assigned to VMs, in bytes.
    pub fn memory_assigned_bytes(&self) -> u64 {
        self.vms.iter().map(|vm| vm.memory.assigned_bytes).sum()
    }

    /// Memory available for more VMs, in bytes.
    pub fn memory_available_bytes(&self) -> u64 {
        self.memory_total_bytes
            .saturating_sub(self.memory_reserved_bytes)
            .saturating_sub(self.memory_assigned_bytes())
    }

    /// The golden image with this name (case-insensitive).
    pub fn image(&self, name: &str) -> Option<&GoldenImage> {
        self.images
            .iter()
            .find(|i| i.name.eq_ignore_ascii_case(name.trim()))
    }

    /// Whether `name` (short or fully qualified, case-insensitive) names this host.
    pub fn is_named(&self, name: &str) -> bool {
        let name = name.trim();
        self.name.eq_ignore_ascii_case(name) || self.fqdn.eq_ignore_ascii_case(name)
    }
}

fn vm_matches(vm: &SimVm, name_or_id: &str) -> bool {
    let key = name_or_id.trim();
    vm.name.eq_ignore_ascii_case(key) || Uuid::parse_str(key).is_ok_and(|id| id == vm.id)
}

/// Whether `path` lies under the folder or volume `location` (case-insensitive, Windows
/// separators).
pub fn path_is_under(path: &str, location: &str) -> bool {
    let base = location.trim_end_matches('\\').to_ascii_lowercase();
    let path = path.to_ascii_lowercase();
    path.len() > base.len() && path.starts_with(&base) && path.as_bytes()[base.len()] == b'\\'
}

/// Parameters of a new VM (what Provisioning.CopyImage + RegisterVM do in one step).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewVm {
    /// VM name (unique on the host).
    pub name: String,
    /// Golden image name.
    pub image: String,
    /// Virtual processors.
    pub processor_count: u32,
    /// Startup memory in bytes.
    pub memory_startup_bytes: u64,
    /// Enable dynamic memory (minimum 512 MiB, maximum twice the startup).
    pub dynamic_memory: bool,
    /// Switch for the network adapter; the host's first external switch when `None`.
    pub switch: Option<String>,
    /// Access VLAN.
    pub vlan_id: Option<u16>,
    /// Whether to add the VM as a cluster role.
    pub clustered: bool,
    /// VM notes (e.g. the job marker).
    pub notes: String,
    /// Storage folder; the host's default VM path when `None`.
    pub location: Option<String>,
    /// Firmware; what the product sets for the image's OS family
    /// ([`BootSettings::for_family`]) when `None`. (A VM registered through the host scripts
    /// without firmware settings gets Hyper-V's default instead,
    /// [`BootSettings::hyperv_default`].)
    pub firmware: Option<BootSettings>,
}

impl NewVm {
    /// A VM with 2 processors and 4 GiB of static memory from `image`.
    pub fn new(name: impl Into<String>, image: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            image: image.into(),
            processor_count: 2,
            memory_startup_bytes: 4 * GIB,
            dynamic_memory: false,
            switch: None,
            vlan_id: None,
            clustered: false,
            notes: String::new(),
            location: None,
            firmware: None,
        }
    }
}

/// The whole simulated estate.
#[derive(Debug, Clone, PartialEq)]
pub struct Fleet {
    /// DNS domain of hosts and clusters.
    pub domain: String,
    /// Clusters.
    pub clusters: Vec<Cluster>,
    /// Hosts (clustered and standalone).
    pub hosts: Vec<Host>,
    /// Seed the fleet was generated from (new VM ids and MACs derive from it).
    pub seed: u64,
    /// How many objects were created after generation (keeps new ids deterministic).
    pub created_objects: u64,
}

impl Fleet {
    /// The host with this short or fully qualified name.
    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.is_named(name))
    }

    /// Mutable access to the host with this name.
    pub fn host_mut(&mut self, name: &str) -> Option<&mut Host> {
        self.hosts.iter_mut().find(|h| h.is_named(name))
    }

    fn host_or_err(&self, name: &str) -> Result<&Host> {
        self.host(name).ok_or_else(|| Error::UnknownHost {
            host: name.to_owned(),
        })
    }

    fn host_mut_or_err(&mut self, name: &str) -> Result<&mut Host> {
        self.host_mut(name).ok_or_else(|| Error::UnknownHost {
            host: name.to_owned(),
        })
    }

    /// The VM `vm` (name or id) on `host`.
    pub fn vm(&self, host: &str, vm: &str) -> Result<&SimVm> {
        let h = self.host_or_err(host)?;
        h.vm(vm).ok_or_else(|| Error::UnknownVm {
            host: h.name.clone(),
            vm: vm.to_owned(),
        })
    }

    /// Mutable access to VM `vm` on `host`.
    pub fn vm_mut(&mut self, host: &str, vm: &str) -> Result<&mut SimVm> {
        let h = self.host_mut_or_err(host)?;
        let host_name = h.name.clone();
        h.vm_mut(vm).ok_or(Error::UnknownVm {
            host: host_name,
            vm: vm.to_owned(),
        })
    }

    /// The cluster with this name.
    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name) || c.fqdn.eq_ignore_ascii_case(name))
    }

    /// Bytes used by known files (VM disks, images, ISOs; each path once) at storage location
    /// `location` of `host`. A shared volume sees the files of every host in the cluster; a
    /// local volume only those of its host.
    pub fn location_used_bytes(&self, host: &Host, location: &StorageLocation) -> u64 {
        let mut files: BTreeMap<String, u64> = BTreeMap::new();
        let hosts = self.hosts.iter().filter(|h| {
            if location.shared {
                h.cluster.is_some() && h.cluster == host.cluster
            } else {
                h.name == host.name
            }
        });
        for h in hosts {
            let images = h.images.iter().map(|i| (&i.path, i.size_bytes));
            let isos = h.isos.iter().map(|i| (&i.path, i.size_bytes));
            let disks = h
                .vms
                .iter()
                .flat_map(|v| &v.disks)
                .map(|d| (&d.path, d.file_size_bytes));
            for (path, size) in images.chain(isos).chain(disks) {
                // A file belongs to the most specific location containing it (a cluster
                // shared volume under C:\ClusterStorage is not part of C:\).
                let owner = host
                    .storage
                    .iter()
                    .filter(|l| path_is_under(path, &l.path))
                    .max_by_key(|l| l.path.len());
                if owner.is_some_and(|l| l.path == location.path) {
                    files.insert(path.to_ascii_lowercase(), size);
                }
            }
        }
        files.values().sum()
    }

    /// Capacity and free space of every storage location of `host`.
    pub fn storage_status(&self, host: &str) -> Result<Vec<StorageStatus>> {
        let h = self.host_or_err(host)?;
        Ok(h.storage
            .iter()
            .map(|loc| StorageStatus {
                path: loc.path.clone(),
                capacity_bytes: loc.capacity_bytes,
                free_bytes: loc
                    .capacity_bytes
                    .saturating_sub(loc.reserved_bytes)
                    .saturating_sub(self.location_used_bytes(h, loc)),
                shared: loc.shared,
            })
            .collect())
    }

    /// Free bytes at the storage location of `host` that contains `path`.
    fn free_bytes_for(&self, host: &str, path: &str) -> Result<(String, u64)> {
        let status = self.storage_status(host)?;
        status
            .into_iter()
            .filter(|s| path_is_under(path, &s.path))
            .max_by_key(|s| s.path.len())
            .map(|s| (s.path, s.free_bytes))
            .ok_or_else(|| Error::Invalid {
                what: "storage path",
                detail: format!("{path} is on no storage location of host {host}"),
            })
    }

    /// An id and MAC for a new object, derived from the fleet seed so runs repeat.
    /// A new object id and MAC address, deterministic per fleet seed.
    pub(crate) fn new_identity(&mut self) -> (Uuid, String) {
        self.next_identity()
    }

    fn next_identity(&mut self) -> (Uuid, String) {
        self.created_objects += 1;
        let mut rng = SimRng::derive(self.seed, 1_000_000 + self.created_objects);
        let mut bytes = [0u8; 16];
        rng.fill(&mut bytes);
        let id = uuid::Builder::from_random_bytes(bytes).into_uuid();
        (id, mac_from(&mut rng))
    }

    /// Creates a VM from a golden image: copies the image into a new VM folder, attaches the
    /// provisioning ISO of the image's OS family and a network adapter, and registers the VM
    /// (Off). Returns the new VM's id.
    pub fn create_vm(&mut self, host: &str, spec: &NewVm, now: SystemTime) -> Result<Uuid> {
        let h = self.host_or_err(host)?;
        let host_name = h.name.clone();
        let name = spec.name.trim();
        if name.is_empty()
            || name.len() > 100
            || name.contains(['\\', '/', ':', '*', '?', '"', '<', '>', '|'])
        {
            return Err(Error::Invalid {
                what: "VM name",
                detail: format!(
                    "{:?} is empty, too long or contains a path character",
                    spec.name
                ),
            });
        }
        if h.vm(name).is_some() {
            return Err(Error::VmExists {
                host: host_name,
                vm: name.to_owned(),
            });
        }
        let image = h
            .image(&spec.image)
            .cloned()
            .ok_or_else(|| Error::UnknownImage {
                host: host_name.clone(),
                image: spec.image.clone(),
            })?;
        if spec.processor_count == 0 || spec.processor_count > h.logical_processors {
            return Err(Error::Invalid {
                what: "processor count",
                detail: format!(
                    "{} (host {host_name} has {} logical processors)",
                    spec.processor_count, h.logical_processors
                ),
            });
        }
        if spec.memory_startup_bytes < 512 * (1 << 20)
            || !spec.memory_startup_bytes.is_multiple_of(2 << 20)
        {
            return Err(Error::Invalid {
                what: "startup memory",
                detail: format!(
                    "{} bytes (must be at least 512 MiB and a multiple of 2 MiB)",
                    spec.memory_startup_bytes
                ),
            });
        }
        let switch = match &spec.switch {
            Some(s) => h
                .switches
                .iter()
                .find(|sw| sw.name.eq_ignore_ascii_case(s))
                .map(|sw| sw.name.clone())
                .ok_or_else(|| Error::Invalid {
                    what: "switch",
                    detail: format!("host {host_name} has no virtual switch {s:?}"),
                })?,
            None => h
                .switches
                .iter()
                .find(|sw| sw.switch_type == SwitchType::External)
                .or(h.switches.first())
                .map(|sw| sw.name.clone())
                .unwrap_or_default(),
        };
        let location = spec.location.clone().unwrap_or_else(|| h.vm_path.clone());
        let folder = format!("{}\\{name}", location.trim_end_matches('\\'));
        let disk_path = format!("{folder}\\Virtual Hard Disks\\{name}.vhdx");
        let iso = h
            .isos
            .iter()
            .find(|i| i.os_family == image.os_family)
            .cloned();
        let (storage, free) = self.free_bytes_for(&host_name, &disk_path)?;
        if free < image.size_bytes {
            return Err(Error::InsufficientStorage {
                host: host_name,
                location: storage,
                required: image.size_bytes,
                available: free,
            });
        }
        let (id, mac) = self.next_identity();
        let memory = static_or_dynamic(spec.memory_startup_bytes, spec.dynamic_memory);
        let vm = SimVm {
            id,
            name: name.to_owned(),
            state: VmState::Off,
            generation: 2,
            version: "10.0".to_owned(),
            path: folder,
            processor_count: spec.processor_count,
            processor_compatibility: false,
            memory,
            created: now,
            started: None,
            notes: spec.notes.clone(),
            clustered: spec.clustered,
            disks: vec![VirtualDisk {
                path: disk_path,
                controller_type: ControllerType::Scsi,
                controller_number: 0,
                controller_location: 0,
                disk_type: DiskType::Dynamic,
                max_size_bytes: image.max_size_bytes,
                file_size_bytes: image.size_bytes,
                shared: false,
            }],
            dvd_drives: vec![DvdDrive {
                path: iso.as_ref().map(|i| i.path.clone()),
                controller_type: ControllerType::Scsi,
                controller_number: 0,
                controller_location: 1,
            }],
            nics: vec![NetworkAdapter {
                name: "Network Adapter".to_owned(),
                switch_name: (!switch.is_empty()).then_some(switch),
                vlan_id: spec.vlan_id,
                mac_address: mac,
                ip_addresses: Vec::new(),
                id: adapter_id(id, 0),
                dynamic_mac: true,
                ..NetworkAdapter::default()
            }],
            integration_services: default_integration_services(),
            kvp: KvpPools::default(),
            guest: GuestInfo {
                os_family: image.os_family,
                image: image.name.clone(),
                hostname: generic_guest_hostname(image.os_family, &id),
                agent_version: iso.map(|i| i.version),
                applied: None,
            },
            firmware: spec
                .firmware
                .unwrap_or_else(|| BootSettings::for_family(image.os_family)),
            automatic: AutomaticActions::default(),
            checkpoints: crate::devices::Checkpoints::default(),
        };
        self.host_mut_or_err(&host_name)?.vms.push(vm);
        Ok(id)
    }

    /// Applies a power action to a VM, with the allowed states of [`PowerAction`]'s table.
    /// Starting checks that the host has the VM's startup memory available; `Shutdown` and
    /// `TurnOff` both end Off (the guest's own shutdown is not modelled; the script
    /// emulation checks the Shutdown integration service first); `Restart` is a turn-off and
    /// a start.
    pub fn power(
        &mut self,
        host: &str,
        vm: &str,
        action: PowerAction,
        now: SystemTime,
    ) -> Result<()> {
        let state = self.vm(host, vm)?.state;
        if !action.allowed_from(state) {
            let v = self.vm(host, vm)?;
            return Err(Error::InvalidVmState {
                host: self.host_or_err(host)?.name.clone(),
                vm: v.name.clone(),
                state: state.name(),
                operation: action.verb(),
            });
        }
        match action {
            PowerAction::Start => self.start(host, vm, now),
            PowerAction::Shutdown | PowerAction::TurnOff => self.turn_off(host, vm),
            PowerAction::Restart => {
                self.turn_off(host, vm)?;
                self.start(host, vm, now)
            }
            PowerAction::Save => {
                let v = self.vm_mut(host, vm)?;
                v.state = VmState::Saved;
                v.memory.assigned_bytes = 0;
                Ok(())
            }
            PowerAction::Pause => {
                self.vm_mut(host, vm)?.state = VmState::Paused;
                Ok(())
            }
            PowerAction::Resume => {
                self.vm_mut(host, vm)?.state = VmState::Running;
                Ok(())
            }
        }
    }

    fn start(&mut self, host: &str, vm: &str, now: SystemTime) -> Result<()> {
        let domain = self.domain.clone();
        let h = self.host_mut_or_err(host)?;
        let available = h.memory_available_bytes();
        let host_name = h.name.clone();
        let v = h.vm_mut(vm).ok_or_else(|| Error::UnknownVm {
            host: host_name.clone(),
            vm: vm.to_owned(),
        })?;
        let required = v.memory.startup_bytes;
        if required > available {
            return Err(Error::InsufficientMemory {
                host: host_name,
                vm: v.name.clone(),
                required,
                available,
            });
        }
        v.state = VmState::Running;
        v.memory.assigned_bytes = required;
        v.started = Some(now);
        // The guest OS reports its intrinsic items only once it has booted.
        if v.guest_os_boots() {
            v.kvp.guest_intrinsic = intrinsic_items(&v.guest, &domain);
        }
        Ok(())
    }

    fn turn_off(&mut self, host: &str, vm: &str) -> Result<()> {
        let v = self.vm_mut(host, vm)?;
        v.state = VmState::Off;
        v.memory.assigned_bytes = 0;
        v.started = None;
        v.kvp.guest_intrinsic.clear();
        for nic in &mut v.nics {
            nic.ip_addresses.clear();
        }
        Ok(())
    }

    /// Removes a VM that is Off, deleting its disks (its files no longer count against
    /// storage). Returns the removed VM.
    pub fn remove_vm(&mut self, host: &str, vm: &str) -> Result<SimVm> {
        let h = self.host_mut_or_err(host)?;
        let host_name = h.name.clone();
        let index = h
            .vms
            .iter()
            .position(|v| vm_matches(v, vm))
            .ok_or_else(|| Error::UnknownVm {
                host: host_name.clone(),
                vm: vm.to_owned(),
            })?;
        let state = h.vms[index].state;
        if state != VmState::Off {
            return Err(Error::InvalidVmState {
                host: host_name,
                vm: h.vms[index].name.clone(),
                state: state.name(),
                operation: "be removed",
            });
        }
        Ok(h.vms.remove(index))
    }

    /// Ejects the media of DVD drive `index` of a VM (Set-VMDvdDrive -Path $null); allowed in
    /// every state, as in Hyper-V.
    pub fn eject_dvd(&mut self, host: &str, vm: &str, index: usize) -> Result<()> {
        let v = self.vm_mut(host, vm)?;
        let name = v.name.clone();
        let drive = v.dvd_drives.get_mut(index).ok_or_else(|| Error::Invalid {
            what: "dvd drive",
            detail: format!("VM {name} has no DVD drive {index}"),
        })?;
        drive.path = None;
        Ok(())
    }

    /// Removes DVD drive `index` of a VM (Remove-VMDvdDrive). Hyper-V's rule: a drive on an
    /// IDE controller (generation 1) cannot be removed while the VM is not Off; a SCSI drive
    /// (generation 2) can be hot-removed.
    pub fn remove_dvd_drive(&mut self, host: &str, vm: &str, index: usize) -> Result<DvdDrive> {
        let v = self.vm_mut(host, vm)?;
        let name = v.name.clone();
        let drive = v.dvd_drives.get(index).ok_or_else(|| Error::Invalid {
            what: "dvd drive",
            detail: format!("VM {name} has no DVD drive {index}"),
        })?;
        if drive.controller_type == ControllerType::Ide && v.state != VmState::Off {
            return Err(Error::InvalidVmState {
                host: host.to_owned(),
                vm: name,
                state: v.state.name(),
                operation: "have an IDE DVD drive removed",
            });
        }
        Ok(v.dvd_drives.remove(index))
    }

    /// The VM of `host` (name, id) whose DVD drive holds a file at or below `path`: Windows
    /// refuses to delete such a file (Remove-Item fails), as the VM's worker process holds it.
    pub fn dvd_holding(&self, host: &str, path: &str) -> Option<(String, Uuid, String)> {
        let h = self.host(host)?;
        h.vms.iter().find_map(|v| {
            v.dvd_drives
                .iter()
                .filter_map(|d| d.path.as_deref())
                .find(|p| p.eq_ignore_ascii_case(path) || path_is_under(p, path))
                .map(|p| (v.name.clone(), v.id, p.to_owned()))
        })
    }

    /// Names of every VM in the fleet, as `(host, vm)` pairs.
    pub fn vm_names(&self) -> BTreeSet<(String, String)> {
        self.hosts
            .iter()
            .flat_map(|h| h.vms.iter().map(move |v| (h.name.clone(), v.name.clone())))
            .collect()
    }
}

/// Intrinsic KVP items a running guest's integration services publish.
pub(crate) fn intrinsic_items(guest: &GuestInfo, domain: &str) -> BTreeMap<String, String> {
    let fqdn = if guest.hostname == "localhost" || domain.is_empty() {
        guest.hostname.clone()
    } else {
        format!("{}.{domain}", guest.hostname)
    };
    BTreeMap::from([
        ("FullyQualifiedDomainName".to_owned(), fqdn),
        ("OSName".to_owned(), guest.image.clone()),
        (
            "IntegrationServicesVersion".to_owned(),
            "10.0.20348.1".to_owned(),
        ),
    ])
}

pub(crate) fn default_integration_services() -> Vec<IntegrationService> {
    INTEGRATION_SERVICES
        .iter()
        .map(|(name, enabled)| IntegrationService {
            name: (*name).to_owned(),
            enabled: *enabled,
        })
        .collect()
}

pub(crate) fn static_or_dynamic(startup: u64, dynamic: bool) -> VmMemory {
    if dynamic {
        VmMemory {
            startup_bytes: startup,
            minimum_bytes: 512 * (1 << 20),
            maximum_bytes: startup * 2,
            dynamic: true,
            assigned_bytes: 0,
        }
    } else {
        VmMemory {
            startup_bytes: startup,
            minimum_bytes: startup,
            maximum_bytes: startup,
            dynamic: false,
            assigned_bytes: 0,
        }
    }
}

/// A Hyper-V dynamic MAC (prefix 00-15-5D).
pub(crate) fn mac_from(rng: &mut SimRng) -> String {
    let mut tail = [0u8; 3];
    rng.fill(&mut tail);
    format!("00155D{:02X}{:02X}{:02X}", tail[0], tail[1], tail[2])
}

/// The name a freshly imaged guest has before provisioning renames it.
fn generic_guest_hostname(os: OsFamily, id: &Uuid) -> String {
    let simple = id.simple().to_string().to_ascii_uppercase();
    let tail = simple.get(..7).unwrap_or("0000000");
    match os {
        OsFamily::Windows => format!("WIN-{tail}"),
        OsFamily::Linux => "localhost".to_owned(),
    }
}

/// Formats a time as RFC 3339 UTC with second precision (`2025-06-01T00:00:00Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn states_have_hyperv_codes() {
        for (state, code) in [
            (VmState::Running, 2),
            (VmState::Off, 3),
            (VmState::Saved, 6),
            (VmState::Paused, 9),
            (VmState::Saving, 32773),
        ] {
            assert_eq!(state.code(), code);
            assert_eq!(VmState::from_code(code), state);
        }
        assert!(VmState::Saving.is_transitional());
        assert!(!VmState::Running.is_transitional());
        assert_eq!(VmState::from_code(32790), VmState::Code(32790));
        assert!(!holds_memory(VmState::Saved));
        assert!(holds_memory(VmState::Paused));
    }

    #[test]
    fn os_family_from_image_names() {
        assert_eq!(
            OsFamily::detect("Windows Server 2022 Datacenter"),
            Some(OsFamily::Windows)
        );
        assert_eq!(
            OsFamily::detect("Microsoft Windows 11"),
            Some(OsFamily::Windows)
        );
        assert_eq!(OsFamily::detect("Ubuntu 24.04 LTS"), Some(OsFamily::Linux));
        assert_eq!(OsFamily::detect("Rocky Linux 9"), Some(OsFamily::Linux));
        assert_eq!(OsFamily::detect("FreeBSD 14"), None);
    }

    #[test]
    fn dates_format_as_rfc3339() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_748_736_000)),
            "2025-06-01T00:00:00Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400 + 3661)),
            "2000-02-29T01:01:01Z"
        );
    }

    #[test]
    fn paths_under_locations() {
        assert!(path_is_under(
            r"C:\ClusterStorage\Volume1\VMs\a.vhdx",
            r"C:\ClusterStorage\Volume1"
        ));
        assert!(path_is_under(
            r"c:\clusterstorage\volume1\x",
            r"C:\ClusterStorage\Volume1\"
        ));
        assert!(!path_is_under(
            r"C:\ClusterStorage\Volume10\x",
            r"C:\ClusterStorage\Volume1"
        ));
        assert!(path_is_under(r"D:\Hyper-V\x", r"D:\"));
    }

    #[test]
    fn kvp_limits() {
        assert!(check_kvp_item("k", "v").is_ok());
        assert!(check_kvp_item("", "v").is_err());
        assert!(check_kvp_item("k", &"v".repeat(2048)).is_err());
        assert!(check_kvp_item(&"k".repeat(512), "v").is_err());
    }
}
