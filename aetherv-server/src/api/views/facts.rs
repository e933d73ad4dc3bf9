//! The API's copies of what hosts report about themselves and their VMs' devices. The
//! library types are the hosts' PowerShell shapes; these are the shapes the API promises,
//! and the OpenAPI schemas derive from them.

use aetherv_hyperv::ops::{
    GoldenImage, HostFacts, IntegrationService, ProvisioningIso, StorageLocation, VirtualSwitch,
    VmDisk, VmDvdDrive, VmNic,
};
use serde::Serialize;
use utoipa::ToSchema;

/// What a host is and has.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = HostFacts)]
pub struct HostFactsView {
    /// Host name.
    pub name: String,
    /// Fully qualified name.
    pub fqdn: String,
    /// Failover cluster.
    pub cluster: Option<String>,
    /// Windows version.
    pub os_version: Option<String>,
    /// Logical processors.
    pub logical_processors: u32,
    /// Physical memory.
    pub memory_total_bytes: u64,
    /// Memory available for VMs.
    pub memory_available_bytes: u64,
    /// Default folder for VMs.
    pub vm_path: String,
    /// Storage locations.
    pub storage: Vec<StorageLocationView>,
    /// Virtual switches.
    pub switches: Vec<VirtualSwitchView>,
    /// Golden images.
    pub images: Vec<GoldenImageView>,
    /// Provisioning ISOs (guest agent media).
    pub provisioning_isos: Vec<ProvisioningIsoView>,
    /// Installed host script version.
    pub scripts_version: Option<String>,
}

impl From<&HostFacts> for HostFactsView {
    fn from(f: &HostFacts) -> Self {
        Self {
            name: f.name.clone(),
            fqdn: f.fqdn.clone(),
            cluster: f.cluster.clone(),
            os_version: f.os_version.clone(),
            logical_processors: f.logical_processors,
            memory_total_bytes: f.memory_total_bytes,
            memory_available_bytes: f.memory_available_bytes,
            vm_path: f.vm_path.clone(),
            storage: f.storage.iter().map(StorageLocationView::from).collect(),
            switches: f.switches.iter().map(VirtualSwitchView::from).collect(),
            images: f.images.iter().map(GoldenImageView::from).collect(),
            provisioning_isos: f
                .provisioning_isos
                .iter()
                .map(ProvisioningIsoView::from)
                .collect(),
            scripts_version: f.scripts_version.clone(),
        }
    }
}

/// A storage location.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = StorageLocation)]
pub struct StorageLocationView {
    /// Path.
    pub path: String,
    /// Capacity.
    pub capacity_bytes: u64,
    /// Free space.
    pub free_bytes: u64,
    /// A cluster shared volume.
    pub shared: bool,
}

impl From<&StorageLocation> for StorageLocationView {
    fn from(s: &StorageLocation) -> Self {
        Self {
            path: s.path.clone(),
            capacity_bytes: s.capacity_bytes,
            free_bytes: s.free_bytes,
            shared: s.shared,
        }
    }
}

/// A virtual switch.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = VirtualSwitch)]
pub struct VirtualSwitchView {
    /// Name.
    pub name: String,
    /// `External`, `Internal`, `Private`, or the number of a type Hyper-V does not name.
    pub switch_type: String,
}

impl From<&VirtualSwitch> for VirtualSwitchView {
    fn from(s: &VirtualSwitch) -> Self {
        Self {
            name: s.name.clone(),
            switch_type: s.switch_type.clone(),
        }
    }
}

/// A golden image.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = GoldenImage)]
pub struct GoldenImageView {
    /// Name.
    pub name: String,
    /// `windows`, `linux` or empty.
    pub os_family: String,
    /// Path of the disk.
    pub path: String,
    /// File size.
    pub size_bytes: u64,
    /// Virtual size.
    pub max_size_bytes: Option<u64>,
    /// The image root it was found in (the image is `<root>\<name>.vhdx`).
    pub root: Option<String>,
}

impl From<&GoldenImage> for GoldenImageView {
    fn from(i: &GoldenImage) -> Self {
        Self {
            name: i.name.clone(),
            os_family: i.os_family.clone(),
            path: i.path.clone(),
            size_bytes: i.size_bytes,
            max_size_bytes: i.max_size_bytes,
            root: i.root.clone(),
        }
    }
}

/// A provisioning ISO (guest agent media).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = ProvisioningIso)]
pub struct ProvisioningIsoView {
    /// `windows` or `linux`.
    pub os_family: String,
    /// Path.
    pub path: String,
    /// File size.
    pub size_bytes: u64,
    /// Agent version.
    pub version: Option<String>,
}

impl From<&ProvisioningIso> for ProvisioningIsoView {
    fn from(i: &ProvisioningIso) -> Self {
        Self {
            os_family: i.os_family.clone(),
            path: i.path.clone(),
            size_bytes: i.size_bytes,
            version: i.version.clone(),
        }
    }
}

/// A virtual hard disk.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = VmDisk)]
pub struct VmDiskView {
    /// Path.
    pub path: String,
    /// `IDE` or `SCSI` (empty when unknown).
    pub controller_type: String,
    /// Controller number.
    pub controller_number: u32,
    /// Location on the controller.
    pub controller_location: u32,
    /// `Fixed`, `Dynamic`, `Differencing` or `Unknown` (empty when not reported).
    pub disk_type: String,
    /// Virtual size.
    pub max_size_bytes: u64,
    /// File size.
    pub file_size_bytes: u64,
    /// Stable id on the VM: controller type, number and location (`scsi-0-1`); the disk
    /// routes take it. Null for a controller this API does not know.
    pub id: Option<String>,
    /// Shared (a shared VHDX or a VHD Set): never detached or deleted here.
    pub shared: bool,
}

impl From<&VmDisk> for VmDiskView {
    fn from(d: &VmDisk) -> Self {
        Self {
            id: aetherv_hyperv::ops::DiskId::of(d).map(|id| id.to_string()),
            shared: aetherv_hyperv::ops::disk_is_shared(d),
            path: d.path.clone(),
            controller_type: d.controller_type.clone(),
            controller_number: d.controller_number,
            controller_location: d.controller_location,
            disk_type: d.disk_type.clone(),
            max_size_bytes: d.max_size_bytes,
            file_size_bytes: d.file_size_bytes,
        }
    }
}

/// A DVD drive.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = VmDvdDrive)]
pub struct VmDvdDriveView {
    /// Inserted ISO.
    pub path: Option<String>,
    /// `IDE` or `SCSI` (empty when unknown).
    pub controller_type: String,
    /// Controller number.
    pub controller_number: u32,
    /// Location on the controller.
    pub controller_location: u32,
}

impl From<&VmDvdDrive> for VmDvdDriveView {
    fn from(d: &VmDvdDrive) -> Self {
        Self {
            path: d.path.clone(),
            controller_type: d.controller_type.clone(),
            controller_number: d.controller_number,
            controller_location: d.controller_location,
        }
    }
}

/// A network adapter.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = VmNetworkAdapter)]
pub struct VmNicView {
    /// Name.
    pub name: String,
    /// Connected switch.
    pub switch_name: Option<String>,
    /// Access VLAN; null when untagged.
    pub vlan_id: Option<u16>,
    /// MAC address.
    pub mac_address: String,
    /// Guest-reported addresses.
    pub ip_addresses: Vec<String>,
    /// The adapter's stable id: the GUID that ends Hyper-V's adapter id (the path segment
    /// of `/api/v1/vms/{id}/network-adapters/{adapter_id}`); null from hosts whose scripts
    /// predate it.
    #[schema(format = Uuid)]
    pub id: Option<String>,
    /// Hyper-V's full adapter id (`Microsoft:<VM GUID>\<adapter GUID>`).
    pub hyperv_id: String,
    /// `dynamic` (Hyper-V assigns it) or `static`.
    pub mac_type: MacType,
    /// MAC address spoofing.
    pub mac_spoofing: bool,
    /// DHCP guard (drops DHCP server messages from the guest).
    pub dhcp_guard: bool,
    /// Router guard (drops router advertisements and redirects from the guest).
    pub router_guard: bool,
    /// Bandwidth cap in bits per second (0: none).
    pub maximum_bandwidth_bps: u64,
    /// Bandwidth reservation in bits per second (0: none).
    pub minimum_bandwidth_bps: u64,
    /// A legacy (emulated, generation 1) adapter.
    pub legacy: bool,
}

/// How an adapter gets its MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MacType {
    /// Hyper-V assigns it from the host's pool.
    Dynamic,
    /// Set by the operator.
    Static,
}

impl From<&VmNic> for VmNicView {
    fn from(n: &VmNic) -> Self {
        Self {
            name: n.name.clone(),
            switch_name: n.switch_name.clone(),
            vlan_id: n.vlan_id,
            mac_address: n.mac_address.clone(),
            ip_addresses: n.ip_addresses.clone(),
            id: aetherv_hyperv::ops::adapter_guid(&n.id).map(|g| g.to_string()),
            hyperv_id: n.id.clone(),
            mac_type: if n.dynamic_mac {
                MacType::Dynamic
            } else {
                MacType::Static
            },
            mac_spoofing: n.mac_spoofing,
            dhcp_guard: n.dhcp_guard,
            router_guard: n.router_guard,
            maximum_bandwidth_bps: n.maximum_bandwidth_bps,
            minimum_bandwidth_bps: n.minimum_bandwidth_bps,
            legacy: n.legacy,
        }
    }
}

/// An integration service.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = IntegrationService)]
pub struct IntegrationServiceView {
    /// Name.
    pub name: String,
    /// Whether it is on.
    pub enabled: bool,
}

impl From<&IntegrationService> for IntegrationServiceView {
    fn from(s: &IntegrationService) -> Self {
        Self {
            name: s.name.clone(),
            enabled: s.enabled,
        }
    }
}
