//! The typed values of host operations: what the host scripts return (one flat, explicit JSON
//! shape per script) and what callers send.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::os::OsFamily;
use crate::psjson::{self, PsEnum, Timestamp};

/// A VM's identity: its Hyper-V GUID (`VMId`). Names are not unique across hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VmId(pub Uuid);

impl VmId {
    /// The GUID.
    pub fn uuid(self) -> Uuid {
        self.0
    }
}

impl From<Uuid> for VmId {
    fn from(id: Uuid) -> Self {
        Self(id)
    }
}

impl fmt::Display for VmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for VmId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s.trim().trim_matches(['{', '}'])).map(Self)
    }
}

/// A VM's state, with the numbers of `Microsoft.HyperV.PowerShell.VMState` (what Windows
/// PowerShell 5.1 writes to JSON). Codes from 32768 up are transitional or critical states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum VmState {
    /// 1: a state Hyper-V does not name.
    Other,
    /// 2.
    Running,
    /// 3.
    Off,
    /// 4.
    Stopping,
    /// 6.
    Saved,
    /// 9.
    Paused,
    /// 10.
    Starting,
    /// 11.
    Reset,
    /// 32773 (transitional).
    Saving,
    /// 32776 (transitional).
    Pausing,
    /// 32777 (transitional).
    Resuming,
    /// 32779.
    FastSaved,
    /// 32780 (transitional).
    FastSaving,
    /// 32781 (transitional).
    ForceShutdown,
    /// 32782 (transitional).
    ForceReboot,
    /// 32783.
    Hibernated,
    /// 32784 (transitional).
    ComponentServicing,
    /// Any other code, e.g. the `*Critical` states 32785..=32796.
    Code(u32),
}

const STATE_TABLE: [(VmState, u32, &str); 17] = [
    (VmState::Other, 1, "Other"),
    (VmState::Running, 2, "Running"),
    (VmState::Off, 3, "Off"),
    (VmState::Stopping, 4, "Stopping"),
    (VmState::Saved, 6, "Saved"),
    (VmState::Paused, 9, "Paused"),
    (VmState::Starting, 10, "Starting"),
    (VmState::Reset, 11, "Reset"),
    (VmState::Saving, 32773, "Saving"),
    (VmState::Pausing, 32776, "Pausing"),
    (VmState::Resuming, 32777, "Resuming"),
    (VmState::FastSaved, 32779, "FastSaved"),
    (VmState::FastSaving, 32780, "FastSaving"),
    (VmState::ForceShutdown, 32781, "ForceShutdown"),
    (VmState::ForceReboot, 32782, "ForceReboot"),
    (VmState::Hibernated, 32783, "Hibernated"),
    (VmState::ComponentServicing, 32784, "ComponentServicing"),
];

impl VmState {
    /// Every state Hyper-V names (all but [`VmState::Code`]), in the order of its numbers.
    pub fn named() -> impl Iterator<Item = Self> {
        STATE_TABLE.iter().map(|(state, _, _)| *state)
    }

    /// The numeric value Hyper-V reports.
    pub fn code(self) -> u32 {
        match self {
            Self::Code(c) => c,
            known => STATE_TABLE
                .iter()
                .find(|(s, _, _)| *s == known)
                .map_or(0, |(_, c, _)| *c),
        }
    }

    /// The state for a numeric value.
    pub fn from_code(code: u32) -> Self {
        STATE_TABLE
            .iter()
            .find(|(_, c, _)| *c == code)
            .map_or(Self::Code(code), |(s, _, _)| *s)
    }

    /// Hyper-V's name for the state (`Running`, `Off`, ...); `Code` states print their number.
    pub fn name(self) -> String {
        match self {
            Self::Code(c) => c.to_string(),
            known => STATE_TABLE
                .iter()
                .find(|(s, _, _)| *s == known)
                .map_or_else(String::new, |(_, _, n)| (*n).to_owned()),
        }
    }

    /// Whether the VM is between stable states (Starting, Stopping, Saving, ...): every code
    /// of 32768 and above except the stable `FastSaved`/`Hibernated`, plus 4, 10 and 11.
    pub fn is_transitional(self) -> bool {
        match self {
            Self::Stopping | Self::Starting | Self::Reset => true,
            Self::FastSaved | Self::Hibernated => false,
            other => other.code() >= 32768,
        }
    }
}

impl fmt::Display for VmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl PsEnum for VmState {
    fn from_code(code: i64) -> Option<Self> {
        u32::try_from(code).ok().map(Self::from_code)
    }

    fn from_name(name: &str) -> Option<Self> {
        STATE_TABLE
            .iter()
            .find(|(_, _, n)| n.eq_ignore_ascii_case(name))
            .map(|(s, _, _)| *s)
    }
}

impl Serialize for VmState {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u32(self.code())
    }
}

impl<'de> Deserialize<'de> for VmState {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        psjson::enum_code_or_name(deserializer)
    }
}

/// A power action and the states it is allowed from.
///
/// | Action | Cmdlet on the host | Allowed from |
/// |---|---|---|
/// | `Start` | `Start-VM` | Off, Saved |
/// | `Shutdown` | `Stop-VM -Force` (guest OS shutdown through the Shutdown integration service) | Running |
/// | `TurnOff` | `Stop-VM -TurnOff -Force` (power off, discards a saved state) | Running, Paused, Saved, and any transitional state (to recover a stuck VM) |
/// | `Restart` | `Restart-VM -Force` (a hard reset) | Running |
/// | `Save` | `Save-VM` | Running, Paused |
/// | `Pause` | `Suspend-VM` | Running |
/// | `Resume` | `Resume-VM` | Paused |
///
/// The same table is checked before a request is sent ([`crate::ops::power_checked`]) and
/// again by the host script, which sees the state at the moment it acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerAction {
    /// Start the VM.
    Start,
    /// Shut the guest OS down cleanly.
    Shutdown,
    /// Turn the VM off (like pulling the plug).
    TurnOff,
    /// Hard restart.
    Restart,
    /// Save the VM's state to disk.
    Save,
    /// Pause (suspend) the VM in memory.
    Pause,
    /// Resume a paused VM.
    Resume,
}

impl PowerAction {
    /// Every action.
    pub const ALL: [Self; 7] = [
        Self::Start,
        Self::Shutdown,
        Self::TurnOff,
        Self::Restart,
        Self::Save,
        Self::Pause,
        Self::Resume,
    ];

    /// Whether the action is allowed from `state` (the table on the type).
    pub fn allowed_from(self, state: VmState) -> bool {
        use VmState as S;
        match self {
            Self::Start => matches!(state, S::Off | S::Saved),
            Self::Shutdown | Self::Restart | Self::Pause => state == S::Running,
            Self::TurnOff => {
                matches!(state, S::Running | S::Paused | S::Saved) || state.is_transitional()
            }
            Self::Save => matches!(state, S::Running | S::Paused),
            Self::Resume => state == S::Paused,
        }
    }

    /// The verb used in error messages (`start`, `shut down`, ...).
    pub fn verb(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Shutdown => "shut down",
            Self::TurnOff => "turn off",
            Self::Restart => "restart",
            Self::Save => "save",
            Self::Pause => "pause",
            Self::Resume => "resume",
        }
    }

    /// The name on the wire (`start`, `shutdown`, `turn_off`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Shutdown => "shutdown",
            Self::TurnOff => "turn_off",
            Self::Restart => "restart",
            Self::Save => "save",
            Self::Pause => "pause",
            Self::Resume => "resume",
        }
    }
}

/// A storage location and its free space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageLocation {
    /// Path, e.g. `C:\ClusterStorage\Volume1`.
    pub path: String,
    /// Capacity in bytes.
    pub capacity_bytes: u64,
    /// Free bytes.
    pub free_bytes: u64,
    /// Whether this is a cluster shared volume.
    #[serde(default)]
    pub shared: bool,
}

/// A virtual switch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualSwitch {
    /// Switch name.
    pub name: String,
    /// `External`, `Internal` or `Private` (numbers are mapped to names).
    #[serde(deserialize_with = "switch_type")]
    pub switch_type: String,
}

fn switch_type<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Number(n) => match n.as_u64() {
            Some(0) => "Private".to_owned(),
            Some(1) => "Internal".to_owned(),
            Some(2) => "External".to_owned(),
            _ => n.to_string(),
        },
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    })
}

/// A golden image VHDX that new VMs are copied from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoldenImage {
    /// Display name (file stem), e.g. `Windows Server 2022 Datacenter`.
    pub name: String,
    /// `windows`, `linux` or empty when the name says neither.
    #[serde(default, deserialize_with = "psjson::null_as_default")]
    pub os_family: String,
    /// VHDX path.
    pub path: String,
    /// File size in bytes.
    pub size_bytes: u64,
    /// Virtual (maximum) size in bytes, when known.
    #[serde(default)]
    pub max_size_bytes: Option<u64>,
    /// The image root it was found in (`<root>\<name>.vhdx`), when the host says.
    #[serde(default)]
    pub root: Option<String>,
}

/// The image roots Get-HostFacts searches when it is given none: every cluster shared
/// volume's `DiskImages` and `Images` folders (Aether-V's layout first), then the host's
/// default VM path's `Images` folder.
pub const DEFAULT_IMAGE_ROOTS: [&str; 3] =
    [r"<CSV>\DiskImages", r"<CSV>\Images", r"<VMPath>\Images"];

/// A provisioning ISO (guest agent media).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisioningIso {
    /// `windows` or `linux`.
    pub os_family: String,
    /// ISO path.
    pub path: String,
    /// File size in bytes.
    pub size_bytes: u64,
    /// Guest agent version on the ISO, when known.
    #[serde(default)]
    pub version: Option<String>,
}

/// What a host is and has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostFacts {
    /// Computer name.
    pub name: String,
    /// Fully qualified name.
    pub fqdn: String,
    /// Cluster the host belongs to.
    #[serde(default)]
    pub cluster: Option<String>,
    /// Windows version, e.g. `10.0.20348`.
    #[serde(default)]
    pub os_version: Option<String>,
    /// Logical processors.
    pub logical_processors: u32,
    /// Physical memory in bytes.
    pub memory_total_bytes: u64,
    /// Memory available for VMs in bytes.
    pub memory_available_bytes: u64,
    /// Default folder for new VMs (`VirtualMachinePath`); the root compensation may clean.
    pub vm_path: String,
    /// Storage locations with free space.
    #[serde(default, deserialize_with = "psjson::one_or_many")]
    pub storage: Vec<StorageLocation>,
    /// Virtual switches.
    #[serde(default, deserialize_with = "psjson::one_or_many")]
    pub switches: Vec<VirtualSwitch>,
    /// Golden images.
    #[serde(default, deserialize_with = "psjson::one_or_many")]
    pub images: Vec<GoldenImage>,
    /// Provisioning ISOs.
    #[serde(default, deserialize_with = "psjson::one_or_many")]
    pub provisioning_isos: Vec<ProvisioningIso>,
    /// Installed host script version (`None`: unknown).
    #[serde(default)]
    pub scripts_version: Option<String>,
    /// Aether-V's host resources file (named networks and storage classes), when the host
    /// has one: its path and text, unparsed (the provisioning crate parses it, with a typed
    /// error for a malformed file).
    #[serde(default)]
    pub host_resources: Option<HostResourcesFile>,
    /// The host's maintenance state file (`maintenance.json` in the install directory), when
    /// it has one; no file means the host is active.
    #[serde(default)]
    pub maintenance: Option<super::maintenance::HostMaintenance>,
    /// The failover cluster node's state (`Up`, `Paused`, `Down`, `Joining`), where the host
    /// is clustered.
    #[serde(default)]
    pub cluster_node_state: Option<String>,
}

/// The text of a host resources file (`C:\ProgramData\Aether-V\hostresources.json` or
/// `.yaml`), as the host read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostResourcesFile {
    /// Where it was read.
    pub path: String,
    /// Its text (JSON or YAML).
    pub text: String,
}

/// A virtual hard disk attached to a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmDisk {
    /// VHD(X) path.
    pub path: String,
    /// `IDE` or `SCSI`.
    #[serde(default, deserialize_with = "controller_type")]
    pub controller_type: String,
    /// Controller number.
    #[serde(default)]
    pub controller_number: u32,
    /// Location on the controller.
    #[serde(default)]
    pub controller_location: u32,
    /// `Fixed`, `Dynamic`, `Differencing` (numbers are mapped to names).
    #[serde(default, deserialize_with = "disk_type")]
    pub disk_type: String,
    /// Virtual size in bytes.
    #[serde(default)]
    pub max_size_bytes: u64,
    /// File size in bytes.
    #[serde(default)]
    pub file_size_bytes: u64,
    /// Shared (a shared VHDX with persistent reservations, or a VHD Set).
    #[serde(default)]
    pub shared: bool,
}

fn controller_type<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        Some(serde_json::Value::Number(n)) => match n.as_u64() {
            Some(0) => "IDE".to_owned(),
            Some(1) => "SCSI".to_owned(),
            _ => n.to_string(),
        },
        Some(serde_json::Value::String(s)) => s,
        Some(other) => other.to_string(),
        None => String::new(),
    })
}

fn disk_type<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    // Microsoft.Vhd.PowerShell.VhdType: Unknown 0, Fixed 2, Dynamic 3, Differencing 4.
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        Some(serde_json::Value::Number(n)) => match n.as_u64() {
            Some(2) => "Fixed".to_owned(),
            Some(3) => "Dynamic".to_owned(),
            Some(4) => "Differencing".to_owned(),
            _ => "Unknown".to_owned(),
        },
        Some(serde_json::Value::String(s)) => s,
        Some(other) => other.to_string(),
        None => String::new(),
    })
}

/// A DVD drive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmDvdDrive {
    /// Inserted ISO path.
    #[serde(default)]
    pub path: Option<String>,
    /// `IDE` or `SCSI`.
    #[serde(default, deserialize_with = "controller_type")]
    pub controller_type: String,
    /// Controller number.
    #[serde(default)]
    pub controller_number: u32,
    /// Location on the controller.
    #[serde(default)]
    pub controller_location: u32,
}

/// A network adapter.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VmNic {
    /// Adapter name.
    #[serde(default, deserialize_with = "psjson::null_as_default")]
    pub name: String,
    /// Connected switch.
    #[serde(default)]
    pub switch_name: Option<String>,
    /// Access VLAN; `None` when untagged.
    #[serde(default)]
    pub vlan_id: Option<u16>,
    /// MAC address (12 hex digits).
    #[serde(default, deserialize_with = "psjson::null_as_default")]
    pub mac_address: String,
    /// Addresses the guest reports.
    #[serde(default, deserialize_with = "psjson::one_or_many")]
    pub ip_addresses: Vec<String>,
    /// Hyper-V's adapter id (`Microsoft:<VM GUID>\<adapter GUID>`); empty from hosts whose
    /// scripts predate it.
    #[serde(default, deserialize_with = "psjson::null_as_default")]
    pub id: String,
    /// Whether Hyper-V assigns the MAC address (`DynamicMacAddressEnabled`).
    #[serde(default)]
    pub dynamic_mac: bool,
    /// Whether the guest may send frames with other source MAC addresses.
    #[serde(default)]
    pub mac_spoofing: bool,
    /// Whether DHCP server messages from the guest are dropped.
    #[serde(default)]
    pub dhcp_guard: bool,
    /// Whether router advertisements and redirects from the guest are dropped.
    #[serde(default)]
    pub router_guard: bool,
    /// Bandwidth cap in bits per second (0: none).
    #[serde(default, deserialize_with = "psjson::null_as_default")]
    pub maximum_bandwidth_bps: u64,
    /// Bandwidth reservation in bits per second (0: none).
    #[serde(default, deserialize_with = "psjson::null_as_default")]
    pub minimum_bandwidth_bps: u64,
    /// A legacy (emulated, generation 1) adapter.
    #[serde(default)]
    pub legacy: bool,
}

/// An integration service and whether it is enabled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntegrationService {
    /// Service name, e.g. `Heartbeat`.
    pub name: String,
    /// Whether it is enabled.
    pub enabled: bool,
}

/// How many distinct integration-service lists [`shared_integration_services`] keeps for
/// sharing. Hosts of one Hyper-V version report the same few lists; a list beyond this bound
/// is still returned, only not shared.
const SHARED_SERVICE_LISTS: usize = 64;

/// The integration-service lists seen so far (at most [`SHARED_SERVICE_LISTS`]).
static SERVICE_LISTS: Mutex<Vec<Arc<[IntegrationService]>>> = Mutex::new(Vec::new());

/// `list` as a shared slice: an equal list seen before is returned instead of a new
/// allocation. An inventory of 100,000 VMs otherwise holds 100,000 copies of the same six
/// services (about 280 bytes each).
pub fn shared_integration_services(list: Vec<IntegrationService>) -> Arc<[IntegrationService]> {
    let mut seen = SERVICE_LISTS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(found) = seen.iter().find(|known| known[..] == list[..]) {
        return Arc::clone(found);
    }
    let shared: Arc<[IntegrationService]> = list.into();
    if seen.len() < SHARED_SERVICE_LISTS {
        seen.push(Arc::clone(&shared));
    }
    shared
}

/// Reads a VM's integration services (one or many) into a shared slice.
fn integration_services<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Arc<[IntegrationService]>, D::Error> {
    psjson::one_or_many(d).map(shared_integration_services)
}

/// A VM as the inventory reports it (one flat shape for every script that returns VMs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vm {
    /// Hyper-V VM id.
    pub id: VmId,
    /// Name (not unique across hosts).
    pub name: String,
    /// State (the number; `state_name` in the document is informational).
    pub state: VmState,
    /// Generation (1 or 2).
    #[serde(default)]
    pub generation: u8,
    /// Configuration version, e.g. `10.0`.
    #[serde(default)]
    pub version: Option<String>,
    /// Folder holding the VM's configuration.
    #[serde(default)]
    pub path: Option<String>,
    /// Virtual processors.
    pub processor_count: u32,
    /// Startup memory in bytes.
    pub memory_startup_bytes: u64,
    /// Memory currently assigned in bytes.
    #[serde(default)]
    pub memory_assigned_bytes: u64,
    /// Dynamic memory minimum in bytes.
    #[serde(default)]
    pub memory_minimum_bytes: u64,
    /// Dynamic memory maximum in bytes.
    #[serde(default)]
    pub memory_maximum_bytes: u64,
    /// Whether dynamic memory is enabled.
    #[serde(default)]
    pub dynamic_memory: bool,
    /// Time since start (zero when off).
    #[serde(rename = "uptime_seconds", default, with = "psjson::duration")]
    pub uptime: Duration,
    /// When the VM was created.
    #[serde(default)]
    pub creation_time: Option<Timestamp>,
    /// Notes (carries the provisioning job marker).
    #[serde(default, deserialize_with = "psjson::null_as_default")]
    pub notes: String,
    /// Whether the VM is a cluster role.
    #[serde(default)]
    pub clustered: bool,
    /// Virtual hard disks.
    #[serde(default, deserialize_with = "psjson::one_or_many")]
    pub disks: Vec<VmDisk>,
    /// DVD drives.
    #[serde(default, deserialize_with = "psjson::one_or_many")]
    pub dvd_drives: Vec<VmDvdDrive>,
    /// Network adapters.
    #[serde(
        rename = "network_adapters",
        default,
        deserialize_with = "psjson::one_or_many"
    )]
    pub nics: Vec<VmNic>,
    /// Integration services. Shared between VMs that report the same list (nearly every VM of
    /// a fleet does): see [`shared_integration_services`].
    #[serde(default, deserialize_with = "integration_services")]
    pub integration_services: Arc<[IntegrationService]>,
    /// Firmware, vTPM and automatic actions (flat in the document).
    #[serde(flatten)]
    pub config: super::vm_config::VmConfig,
    /// Checkpoints (`Get-VMSnapshot`, batched for all VMs).
    #[serde(default, deserialize_with = "psjson::one_or_many")]
    pub checkpoints: Vec<super::devices::VmCheckpoint>,
    /// While Hyper-V merges differencing disks (after a checkpoint was deleted): how far it
    /// is, in percent (0 when the host does not say).
    #[serde(default)]
    pub merge_percent: Option<u8>,
}

/// Every VM of one host, collected in one script run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inventory {
    /// Host the inventory came from.
    pub host: String,
    /// When it was collected (host clock).
    pub collected_at: Timestamp,
    /// The VMs (none when [`Inventory::unchanged`]).
    #[serde(default, deserialize_with = "psjson::one_or_many")]
    pub vms: Vec<Vm>,
    /// A digest of the host's VM set (every field of every VM, a running VM's uptime as the
    /// minute it started), to send back with [`super::HostCall::InventorySince`]. `None`
    /// from hosts whose scripts predate it.
    #[serde(default)]
    pub digest: Option<String>,
    /// The VM set still has the digest the caller sent: `vms` is empty and the caller's copy
    /// is current (uptimes advanced by the time passed).
    #[serde(default)]
    pub unchanged: bool,
}

/// What a power action did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PowerOutcome {
    /// VM id.
    pub id: VmId,
    /// VM name.
    pub name: String,
    /// State before the action.
    pub previous_state: VmState,
    /// State after the action.
    pub state: VmState,
}

/// What deleting a VM removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletedVm {
    /// VM id.
    pub id: VmId,
    /// VM name.
    pub name: String,
    /// Files deleted (disks when asked for).
    #[serde(default, deserialize_with = "psjson::one_or_many")]
    pub removed_paths: Vec<String>,
    /// Disk files left in place.
    #[serde(default, deserialize_with = "psjson::one_or_many")]
    pub kept_paths: Vec<String>,
}

/// The KVP items a guest published.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestKvp {
    /// Items the guest wrote for the host (`GuestExchangeItems`).
    #[serde(default, deserialize_with = "psjson::null_as_default")]
    pub items: BTreeMap<String, String>,
    /// Items the guest's integration services report (`GuestIntrinsicExchangeItems`).
    #[serde(default, deserialize_with = "psjson::null_as_default")]
    pub intrinsic: BTreeMap<String, String>,
}

/// Provisioning.CopyImage: copy a golden VHDX into a new VM folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyImageRequest {
    /// Path of the golden image (from [`HostFacts::images`]).
    pub image_path: String,
    /// Name of the VM the folder is for (`<root>\<vm_name>\Virtual Hard Disks\<vm_name>.vhdx`).
    pub vm_name: String,
    /// Root folder; the host's `VirtualMachinePath` when `None`.
    #[serde(default)]
    pub destination_root: Option<String>,
    /// Virtual size to expand the copy to (`Resize-VHD`, before the VM first boots); the
    /// image's own size when `None`. Smaller than the image's virtual size fails with
    /// `DiskTooSmall` before anything is copied.
    #[serde(default)]
    pub disk_size_bytes: Option<u64>,
}

/// The copied image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopiedImage {
    /// The new VM folder.
    pub vm_folder: String,
    /// The VHDX in it.
    pub vhdx_path: String,
    /// Its size in bytes.
    pub size_bytes: u64,
    /// Its virtual size in bytes after any expansion, when the host reports it.
    #[serde(default)]
    pub max_size_bytes: Option<u64>,
}

/// Provisioning.CopyProvisioningISO: copy the guest agent ISO into the VM folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyIsoRequest {
    /// Path of the provisioning ISO (from [`HostFacts::provisioning_isos`]).
    pub iso_path: String,
    /// The VM folder (from [`CopiedImage::vm_folder`]).
    pub vm_folder: String,
}

/// The copied ISO.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopiedIso {
    /// Path of the copy.
    pub iso_path: String,
    /// Its size in bytes.
    pub size_bytes: u64,
}

/// Dynamic memory bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DynamicMemory {
    /// Minimum in bytes.
    pub minimum_bytes: u64,
    /// Maximum in bytes.
    pub maximum_bytes: u64,
}

/// Provisioning.RegisterVM: create (register) a generation 2 VM over a copied VHDX.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterVmSpec {
    /// VM name (unique on the host).
    pub name: String,
    /// VM folder (from [`CopiedImage::vm_folder`]).
    pub vm_folder: String,
    /// Boot disk (from [`CopiedImage::vhdx_path`]).
    pub vhdx_path: String,
    /// ISO to insert in a DVD drive (from [`CopiedIso::iso_path`]).
    #[serde(default)]
    pub iso_path: Option<String>,
    /// Virtual processors.
    pub processor_count: u32,
    /// Startup memory in bytes (a multiple of 2 MiB, at least 512 MiB).
    pub memory_startup_bytes: u64,
    /// Dynamic memory bounds; static memory when `None`.
    #[serde(default)]
    pub dynamic_memory: Option<DynamicMemory>,
    /// Switch to connect; the adapter stays unconnected when `None` (the host never guesses
    /// among its switches: the caller resolves the network).
    #[serde(default)]
    pub switch_name: Option<String>,
    /// Access VLAN.
    #[serde(default)]
    pub vlan_id: Option<u16>,
    /// VM notes: the job marker (see DESIGN.md).
    #[serde(default)]
    pub notes: String,
    /// Start the VM once registered.
    #[serde(default)]
    pub start: bool,
    /// Firmware settings applied before the first start; Hyper-V's defaults (Secure Boot on
    /// with the `MicrosoftWindows` template, no vTPM) when `None`, which only Windows boots.
    #[serde(default)]
    pub boot: Option<BootSettings>,
}

/// A Secure Boot template of Hyper-V (`Set-VMFirmware -SecureBootTemplate`): which signers
/// the VM's UEFI firmware trusts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum SecureBootTemplate {
    /// `MicrosoftWindows`: trusts the Windows production CA only (Hyper-V's default); Windows
    /// boots, Linux shims signed by the third-party UEFI CA do not.
    MicrosoftWindows,
    /// `MicrosoftUEFICertificateAuthority`: trusts the Microsoft third-party UEFI CA, which
    /// signs the shims of the common Linux distributions.
    #[serde(rename = "MicrosoftUEFICertificateAuthority")]
    MicrosoftUefiCertificateAuthority,
    /// `OpenSourceShieldedVM`: the template for shielded Linux VMs (trusts the third-party
    /// UEFI CA as well).
    #[serde(rename = "OpenSourceShieldedVM")]
    OpenSourceShieldedVm,
}

impl SecureBootTemplate {
    /// Every template.
    pub const ALL: [Self; 3] = [
        Self::MicrosoftWindows,
        Self::MicrosoftUefiCertificateAuthority,
        Self::OpenSourceShieldedVm,
    ];

    /// Hyper-V's name of the template.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MicrosoftWindows => "MicrosoftWindows",
            Self::MicrosoftUefiCertificateAuthority => "MicrosoftUEFICertificateAuthority",
            Self::OpenSourceShieldedVm => "OpenSourceShieldedVM",
        }
    }

    /// The template named `name` (case-insensitive).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(name.trim()))
    }

    /// Whether a guest of `family` passes Secure Boot with it: Windows boots through the
    /// Windows boot manager (signed by the Windows production CA), Linux through a shim
    /// signed by the third-party UEFI CA.
    pub fn trusts(self, family: OsFamily) -> bool {
        match self {
            Self::MicrosoftWindows => family == OsFamily::Windows,
            Self::MicrosoftUefiCertificateAuthority | Self::OpenSourceShieldedVm => {
                family == OsFamily::Linux
            }
        }
    }
}

impl fmt::Display for SecureBootTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The generation 2 firmware settings of a new VM (`Set-VMFirmware`, and `Enable-VMTPM` with a
/// local key protector for a vTPM).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BootSettings {
    /// Whether Secure Boot is on.
    pub secure_boot: bool,
    /// The Secure Boot template (used only when `secure_boot` is on).
    pub secure_boot_template: SecureBootTemplate,
    /// Whether the VM gets a virtual TPM (with a new local key protector).
    #[serde(default)]
    pub tpm: bool,
}

impl BootSettings {
    /// Secure Boot on with the template a guest of this family needs
    /// (`MicrosoftWindows` for Windows, `MicrosoftUEFICertificateAuthority` for Linux), no vTPM.
    pub fn for_family(family: OsFamily) -> Self {
        Self {
            secure_boot: true,
            secure_boot_template: match family {
                OsFamily::Windows => SecureBootTemplate::MicrosoftWindows,
                OsFamily::Linux => SecureBootTemplate::MicrosoftUefiCertificateAuthority,
            },
            tpm: false,
        }
    }

    /// What `New-VM` gives a generation 2 VM: Secure Boot on with `MicrosoftWindows`, no vTPM.
    pub fn hyperv_default() -> Self {
        Self::for_family(OsFamily::Windows)
    }

    /// Whether a guest of `family` gets past the firmware with these settings.
    pub fn boots(&self, family: OsFamily) -> bool {
        !self.secure_boot || self.secure_boot_template.trusts(family)
    }
}

impl fmt::Display for BootSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.secure_boot {
            write!(f, "Secure Boot on ({})", self.secure_boot_template)?;
        } else {
            f.write_str("Secure Boot off")?;
        }
        f.write_str(if self.tpm { ", vTPM" } else { ", no vTPM" })
    }
}

/// The cluster role state of a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRole {
    /// VM id.
    pub id: VmId,
    /// Whether the VM is now a cluster role.
    pub clustered: bool,
    /// Cluster group name, when clustered.
    #[serde(default)]
    pub group: Option<String>,
}

/// Where a VM should move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationTarget {
    /// Destination host name.
    pub destination_host: String,
    /// Move the storage too (shared-nothing live migration).
    #[serde(default)]
    pub with_storage: bool,
    /// Destination folder for the storage (with `with_storage` or `storage_only`).
    #[serde(default)]
    pub destination_path: Option<String>,
    /// Move only the VM's storage to `destination_path` on its own host (`Move-VMStorage`);
    /// `destination_host` then names the VM's own host. Needs `destination_path`.
    #[serde(default)]
    pub storage_only: bool,
}

/// How a failover cluster moves a VM role between its nodes
/// (`Move-ClusterVirtualMachineRole -MigrationType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ClusterMigrationType {
    /// The VM keeps running (live migration).
    Live,
    /// The VM is saved, moved and resumed.
    Quick,
}

impl ClusterMigrationType {
    /// The cmdlet's value (`Live`, `Quick`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "Live",
            Self::Quick => "Quick",
        }
    }
}

/// A move of a clustered VM's role to another node of its cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMove {
    /// The destination node (host name).
    pub node: String,
    /// Live or quick.
    pub migration_type: ClusterMigrationType,
}

/// The host's migration job of a VM (`Msvm_MigrationJob`), as
/// [`HostCall::MigrationStatus`](super::HostCall::MigrationStatus) reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationProgress {
    /// VM id.
    pub id: VmId,
    /// Whether a migration job of the VM is running (job states New, Starting, Running,
    /// Suspended, Shutting Down).
    pub active: bool,
    /// The job's `PercentComplete` (0 when there is no job).
    #[serde(default)]
    pub percent_complete: u8,
    /// The job's `JobState` (CIM: 2 New … 4 Running, 7 Completed, 8 Terminated, 10 Exception),
    /// when there is a job.
    #[serde(default)]
    pub job_state: Option<u16>,
    /// Whether the job can still be cancelled (false once it reached its switch-over).
    #[serde(default)]
    pub cancellable: bool,
    /// The job's `JobStatus` text.
    #[serde(default)]
    pub status: Option<String>,
    /// The host the VM moves to, when the job names it.
    #[serde(default)]
    pub destination_host: Option<String>,
    /// The job's `ErrorDescription`, when it failed.
    #[serde(default)]
    pub error: Option<String>,
}

/// What [`HostCall::CancelMigration`](super::HostCall::CancelMigration) did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationCancel {
    /// VM id.
    pub id: VmId,
    /// Whether the host accepted the cancellation (the job was running and cancellable).
    pub cancelled: bool,
    /// Why not, when it did not.
    #[serde(default)]
    pub reason: Option<String>,
}

/// One incompatibility `Compare-VM` reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incompatibility {
    /// Message.
    pub message: String,
    /// Message id.
    #[serde(default)]
    pub message_id: Option<i64>,
}

/// The result of `Compare-VM`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationCheck {
    /// Whether the VM can move.
    pub compatible: bool,
    /// What prevents it.
    #[serde(default, deserialize_with = "psjson::one_or_many")]
    pub incompatibilities: Vec<Incompatibility>,
}

/// The result of a move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Migrated {
    /// VM id.
    pub id: VmId,
    /// Host the VM now runs on.
    pub destination_host: String,
    /// Whether storage moved too.
    pub with_storage: bool,
}

/// What `remove_path` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovedPath {
    /// The path.
    pub path: String,
    /// Whether something existed and was removed (false: nothing was there).
    pub removed: bool,
}

/// What `remove_dvd_drive` did with the DVD drives of a VM that held an ISO.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DvdDriveRemoved {
    /// VM id.
    pub id: VmId,
    /// The ISO path the drives held.
    pub path: String,
    /// Drives that held the ISO and were ejected (0: no drive held it).
    pub ejected: u32,
    /// Drives that were removed after ejecting.
    pub removed: u32,
    /// Drives left in place, empty, with the reason (a generation 1 IDE drive cannot be
    /// removed while the VM runs).
    #[serde(default, deserialize_with = "psjson::one_or_many")]
    pub kept: Vec<String>,
}

/// What `set_vm_notes` did: the VM's notes as the host now has them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmNotes {
    /// The VM.
    pub id: VmId,
    /// Its notes.
    #[serde(default, deserialize_with = "psjson::null_as_default")]
    pub notes: String,
}
