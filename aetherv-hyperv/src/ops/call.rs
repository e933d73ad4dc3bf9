//! The one list of host operations: [`HostCall`] (what to do), [`HostReply`] (what came back)
//! and [`OperationKind`] (which operation, without its arguments).
//!
//! Everything that differs between operations lives here, in one `match` per aspect: the
//! host script that performs it, the JSON request on the script's stdin, the checks made
//! before anything is sent, how the script's `data` becomes a typed reply, a default timeout
//! and whether the operation only reads. Everything that is the same for every operation
//! (running the script, metrics, the deployment gate, timeouts, retries) is generic over
//! [`HostCall`] and lives elsewhere (`ops::winrm`, `ops::layer`).
//!
//! **Adding an operation** touches exactly: a variant of [`HostCall`], [`HostReply`] and
//! [`OperationKind`] plus their arms in this file (and a typed method on
//! [`super::HyperVHostExt`] if callers want one), its script in `assets/powershell/`, its
//! emulation in the simulator, and their tests. See ARCHITECTURE.md, "Adding a host
//! operation".

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::devices::*;
use super::maintenance::*;
use super::scripts;
use super::types::*;
use super::vm_config::*;
use crate::error::{Error, Result};

/// Hyper-V's KVP key limit in bytes.
pub const KVP_MAX_KEY_BYTES: usize = 511;
/// Hyper-V's KVP value limit in bytes.
pub const KVP_MAX_VALUE_BYTES: usize = 2047;
/// The longest VM notes this project writes (characters).
pub const MAX_VM_NOTES_CHARS: usize = 4096;

/// One host operation with its arguments: the single list of what this project does to a
/// Hyper-V host. [`super::HyperVHost::call`] takes one and answers with the matching
/// [`HostReply`].
///
/// `Debug` never shows KVP values (they carry the guest's encrypted configuration).
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub enum HostCall {
    /// Identity, capacity, storage, switches, images, ISOs and script version; images from
    /// the default roots ([`DEFAULT_IMAGE_ROOTS`]).
    Facts,
    /// [`HostCall::Facts`] with the golden images looked for in these roots, in order
    /// (an image name resolves to `<root>\<name>.vhdx`; a name in several roots counts once,
    /// from the first). The same operation and reply as `Facts`.
    FactsInRoots(Vec<String>),
    /// Every VM on the host, in one round trip.
    Inventory,
    /// [`HostCall::Inventory`] for a caller that holds the VM set with this digest (from
    /// [`Inventory::digest`]): when the host's set still has it, the answer is
    /// [`Inventory::unchanged`] with no VMs (a few hundred bytes instead of the whole set).
    InventorySince(String),
    /// One VM by id ([`Error::UnknownVm`] when the host has none).
    Vm(VmId),
    /// A power action (see [`PowerAction`] for the allowed states; the script re-checks the
    /// state when it acts).
    Power(VmId, PowerAction),
    /// Deletes an Off VM, with or without its disks. Deleting disks that another VM also uses
    /// (or shared VHDX/VHD Set disks) is refused with [`Error::SharedDisk`].
    DeleteVm {
        /// The VM.
        id: VmId,
        /// Delete its disks too.
        delete_disks: bool,
    },
    /// The KVP items the guest published (guest-to-host and intrinsic).
    KvpReadGuest(VmId),
    /// Writes (adds or replaces) host-to-guest KVP items, one after the other in the given
    /// order (the guest protocol depends on it: the state item goes last).
    KvpWriteHost(VmId, Vec<(String, String)>),
    /// Removes host-to-guest KVP items; the reply lists the keys that existed.
    KvpRemoveHost(VmId, Vec<String>),
    /// Provisioning.CopyImage: the golden VHDX into a new VM folder.
    CopyImage(CopyImageRequest),
    /// Provisioning.CopyProvisioningISO: the provisioning ISO into the VM folder.
    CopyIso(CopyIsoRequest),
    /// Provisioning.RegisterVM: creates the VM over the copied disk, optionally starts it.
    RegisterVm(Box<RegisterVmSpec>),
    /// Makes the VM a highly available cluster role.
    AddClusterRole(VmId),
    /// Removes the VM's cluster role (the VM stays on the host).
    RemoveClusterRole(VmId),
    /// Checks whether the VM can move (Compare-VM).
    CompareVm(VmId, MigrationTarget),
    /// Live-migrates the VM (Move-VM), with or without its storage.
    MoveVm(VmId, MigrationTarget),
    /// Compensation: removes a file or folder, only below the host's VM folder root.
    RemovePath(String),
    /// Removes every host-to-guest KVP item whose key starts with the prefix (e.g. `hlvmm.`);
    /// the reply lists the keys that existed.
    KvpRemoveHostPrefix(VmId, String),
    /// Ejects the ISO at `path` from the VM's DVD drives and removes those drives (a
    /// generation 1 IDE drive of a running VM is only ejected: Hyper-V cannot remove it then).
    RemoveDvdDrive {
        /// The VM.
        vm: VmId,
        /// The ISO the drives hold.
        path: String,
    },
    /// Replaces a VM's notes (`Set-VM -Notes`; allowed in any VM state), e.g. to clear the
    /// provisioning marker of an adopted orphan.
    SetVmNotes(VmId, String),
    /// Changes a VM's settings (processors, memory, notes, automatic actions, Secure Boot,
    /// vTPM); only the fields set change. The reply is the VM as the host now reports it.
    SetVmSettings(VmId, Box<VmSettingsChange>),
    /// Creates a new blank VHDX (`New-VHD`), dynamic or fixed.
    CreateVhd(CreateVhdRequest),
    /// Attaches an existing virtual disk file to the first free SCSI location of the VM.
    AttachVmDisk {
        /// The VM.
        vm: VmId,
        /// The disk file.
        path: String,
    },
    /// Grows a VM's virtual disk (`Resize-VHD`); never shrinks it.
    ResizeVmDisk {
        /// The VM.
        vm: VmId,
        /// The disk.
        disk: DiskId,
        /// The new virtual size in bytes.
        size_bytes: u64,
    },
    /// Detaches a VM's disk (`Remove-VMHardDiskDrive`), optionally deleting its file.
    DetachVmDisk {
        /// The VM.
        vm: VmId,
        /// The disk.
        disk: DiskId,
        /// Delete the file afterwards.
        delete_file: bool,
    },
    /// Creates, applies, renames or removes a checkpoint of the VM (see [`CheckpointChange`]
    /// for Hyper-V's rules).
    CheckpointChange(VmId, CheckpointChange),
    /// Adds, changes or removes a network adapter of the VM (see [`NicChange`]).
    NetworkAdapterChange(VmId, NicChange),
    /// Writes the host's maintenance state file (`maintenance.json` in the install
    /// directory) and pauses or resumes its failover cluster node (see [`MaintenanceChange`]).
    SetMaintenance(Box<MaintenanceChange>),
    /// Moves a clustered VM's role to another node of its cluster
    /// (`Move-ClusterVirtualMachineRole`), live or quick; sent to the VM's owner node.
    MoveClusterRole(VmId, ClusterMove),
    /// The host's migration job of the VM (`Msvm_MigrationJob`): percent complete, state and
    /// whether it can still be cancelled. Read while a move runs, from another session.
    MigrationStatus(VmId),
    /// Asks the host to cancel the VM's running migration job
    /// (`Msvm_MigrationJob.RequestStateChange(Terminate)`); refused once the job passed its
    /// switch-over (no longer `Cancellable`). The move call then fails and the VM keeps
    /// running on the source.
    CancelMigration(VmId),
}

/// The answer to a [`HostCall`], one variant per operation.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum HostReply {
    /// [`HostCall::Facts`].
    Facts(Box<HostFacts>),
    /// [`HostCall::Inventory`].
    Inventory(Inventory),
    /// [`HostCall::Vm`].
    Vm(Box<Vm>),
    /// [`HostCall::Power`].
    Power(PowerOutcome),
    /// [`HostCall::DeleteVm`]: what deleting the VM removed.
    Deleted(DeletedVm),
    /// [`HostCall::KvpReadGuest`].
    GuestKvp(GuestKvp),
    /// [`HostCall::KvpWriteHost`]: the items were written.
    Written,
    /// [`HostCall::KvpRemoveHost`]: the host keys that existed and were removed.
    KvpRemoved(Vec<String>),
    /// [`HostCall::CopyImage`].
    CopiedImage(CopiedImage),
    /// [`HostCall::CopyIso`].
    CopiedIso(CopiedIso),
    /// [`HostCall::RegisterVm`]: the registered VM.
    Registered(Box<Vm>),
    /// [`HostCall::AddClusterRole`] and [`HostCall::RemoveClusterRole`].
    ClusterRole(ClusterRole),
    /// [`HostCall::CompareVm`].
    MigrationCheck(MigrationCheck),
    /// [`HostCall::MoveVm`].
    Migrated(Migrated),
    /// [`HostCall::RemovePath`].
    RemovedPath(RemovedPath),
    /// [`HostCall::RemoveDvdDrive`].
    DvdDriveRemoved(DvdDriveRemoved),
    /// [`HostCall::SetVmNotes`]: the VM's notes as the host now has them.
    NotesSet(VmNotes),
    /// [`HostCall::SetVmSettings`]: the VM after the change.
    SettingsSet(Box<Vm>),
    /// [`HostCall::CreateVhd`].
    VhdCreated(CreatedVhd),
    /// [`HostCall::AttachVmDisk`].
    DiskAttached(VmDiskChanged),
    /// [`HostCall::ResizeVmDisk`].
    DiskResized(VmDiskChanged),
    /// [`HostCall::DetachVmDisk`].
    DiskDetached(VmDiskDetached),
    /// [`HostCall::CheckpointChange`].
    CheckpointChanged(CheckpointChanged),
    /// [`HostCall::NetworkAdapterChange`].
    NicChanged(NicChanged),
    /// [`HostCall::SetMaintenance`].
    MaintenanceSet(MaintenanceSet),
    /// [`HostCall::MigrationStatus`].
    MigrationProgress(MigrationProgress),
    /// [`HostCall::CancelMigration`].
    MigrationCancel(MigrationCancel),
}

/// Which operation a [`HostCall`] is, without its arguments: the label of metrics, timeouts
/// and logs.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, strum::EnumIter, strum::IntoStaticStr,
)]
#[strum(serialize_all = "snake_case")]
#[non_exhaustive]
pub enum OperationKind {
    /// [`HostCall::Facts`].
    Facts,
    /// [`HostCall::Inventory`].
    Inventory,
    /// [`HostCall::Vm`].
    Vm,
    /// [`HostCall::Power`].
    Power,
    /// [`HostCall::DeleteVm`].
    DeleteVm,
    /// [`HostCall::KvpReadGuest`].
    KvpReadGuest,
    /// [`HostCall::KvpWriteHost`].
    KvpWriteHost,
    /// [`HostCall::KvpRemoveHost`].
    KvpRemoveHost,
    /// [`HostCall::CopyImage`].
    CopyImage,
    /// [`HostCall::CopyIso`].
    CopyIso,
    /// [`HostCall::RegisterVm`].
    RegisterVm,
    /// [`HostCall::AddClusterRole`].
    AddClusterRole,
    /// [`HostCall::RemoveClusterRole`].
    RemoveClusterRole,
    /// [`HostCall::CompareVm`].
    CompareVm,
    /// [`HostCall::MoveVm`].
    MoveVm,
    /// [`HostCall::RemovePath`].
    RemovePath,
    /// [`HostCall::KvpRemoveHostPrefix`].
    KvpRemoveHostPrefix,
    /// [`HostCall::RemoveDvdDrive`].
    RemoveDvdDrive,
    /// [`HostCall::SetVmNotes`].
    SetVmNotes,
    /// [`HostCall::SetVmSettings`].
    SetVmSettings,
    /// [`HostCall::CreateVhd`].
    CreateVhd,
    /// [`HostCall::AttachVmDisk`].
    AttachVmDisk,
    /// [`HostCall::ResizeVmDisk`].
    ResizeVmDisk,
    /// [`HostCall::DetachVmDisk`].
    DetachVmDisk,
    /// [`HostCall::CheckpointChange`].
    CheckpointChange,
    /// [`HostCall::NetworkAdapterChange`].
    NetworkAdapterChange,
    /// [`HostCall::SetMaintenance`].
    SetMaintenance,
    /// [`HostCall::MoveClusterRole`].
    MoveClusterRole,
    /// [`HostCall::MigrationStatus`].
    MigrationStatus,
    /// [`HostCall::CancelMigration`].
    CancelMigration,
}

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);

impl OperationKind {
    /// Every operation, in declaration order.
    pub fn all() -> impl Iterator<Item = Self> {
        <Self as strum::IntoEnumIterator>::iter()
    }

    /// The snake_case name (`"facts"`, `"delete_vm"`, …): metric labels and logs.
    pub fn name(self) -> &'static str {
        self.into()
    }

    /// The host script (file stem under `assets/powershell/`) that performs it.
    pub fn script(self) -> &'static str {
        match self {
            Self::Facts => scripts::GET_HOST_FACTS,
            Self::Inventory | Self::Vm => scripts::GET_INVENTORY,
            Self::Power => scripts::SET_VM_POWER_STATE,
            Self::DeleteVm => scripts::REMOVE_MANAGED_VM,
            Self::KvpReadGuest => scripts::GET_VM_KVP,
            Self::KvpWriteHost => scripts::SET_VM_KVP,
            Self::KvpRemoveHost => scripts::REMOVE_VM_KVP,
            Self::CopyImage => scripts::COPY_GOLDEN_IMAGE,
            Self::CopyIso => scripts::COPY_PROVISIONING_ISO,
            Self::RegisterVm => scripts::REGISTER_MANAGED_VM,
            Self::AddClusterRole => scripts::ADD_VM_CLUSTER_ROLE,
            Self::RemoveClusterRole => scripts::REMOVE_VM_CLUSTER_ROLE,
            Self::CompareVm => scripts::TEST_VM_MIGRATION,
            Self::MoveVm => scripts::MOVE_MANAGED_VM,
            Self::RemovePath => scripts::REMOVE_VM_PATH,
            Self::KvpRemoveHostPrefix => scripts::REMOVE_VM_KVP,
            Self::RemoveDvdDrive => scripts::REMOVE_VM_DVD_DRIVE,
            Self::SetVmNotes => scripts::SET_VM_NOTES,
            Self::SetVmSettings => scripts::SET_MANAGED_VM_SETTINGS,
            Self::CreateVhd => scripts::NEW_MANAGED_VHD,
            Self::AttachVmDisk => scripts::ADD_MANAGED_VM_DISK,
            Self::ResizeVmDisk => scripts::RESIZE_MANAGED_VM_DISK,
            Self::DetachVmDisk => scripts::REMOVE_MANAGED_VM_DISK,
            Self::CheckpointChange => scripts::UPDATE_VM_CHECKPOINT,
            Self::NetworkAdapterChange => scripts::UPDATE_VM_NETWORK_ADAPTER,
            Self::SetMaintenance => scripts::SET_HOST_MAINTENANCE,
            Self::MoveClusterRole => scripts::MOVE_VM_CLUSTER_ROLE,
            Self::MigrationStatus => scripts::GET_VM_MIGRATION,
            Self::CancelMigration => scripts::STOP_VM_MIGRATION,
        }
    }

    /// What error messages call it ("get VM", "copy image", …).
    pub fn describe(self) -> &'static str {
        match self {
            Self::Facts => "facts",
            Self::Inventory => "inventory",
            Self::Vm => "get VM",
            Self::Power => "power",
            Self::DeleteVm => "delete VM",
            Self::KvpReadGuest => "read guest KVP",
            Self::KvpWriteHost => "write host KVP",
            Self::KvpRemoveHost => "remove host KVP",
            Self::CopyImage => "copy image",
            Self::CopyIso => "copy provisioning ISO",
            Self::RegisterVm => "register VM",
            Self::AddClusterRole => "add cluster role",
            Self::RemoveClusterRole => "remove cluster role",
            Self::CompareVm => "compare VM",
            Self::MoveVm => "move VM",
            Self::RemovePath => "remove path",
            Self::KvpRemoveHostPrefix => "remove host KVP by prefix",
            Self::RemoveDvdDrive => "remove DVD drive",
            Self::SetVmNotes => "set VM notes",
            Self::SetVmSettings => "set VM settings",
            Self::CreateVhd => "create virtual disk",
            Self::AttachVmDisk => "attach disk",
            Self::ResizeVmDisk => "resize disk",
            Self::DetachVmDisk => "detach disk",
            Self::CheckpointChange => "change checkpoint",
            Self::NetworkAdapterChange => "change network adapter",
            Self::SetMaintenance => "set maintenance state",
            Self::MoveClusterRole => "move cluster role",
            Self::MigrationStatus => "read migration job",
            Self::CancelMigration => "cancel migration",
        }
    }

    /// Whether it only reads (safe to retry after a transport failure).
    pub fn read_only(self) -> bool {
        matches!(
            self,
            Self::Facts
                | Self::Inventory
                | Self::Vm
                | Self::KvpReadGuest
                | Self::CompareVm
                | Self::MigrationStatus
        )
    }

    /// How long a healthy host may take, used by [`super::layer::Timeouts`]: reads and KVP
    /// items take seconds (PowerShell start-up included), registering a VM under a minute,
    /// copies and migrations move gigabytes, a guest shutdown waits for the guest. A host that
    /// stops answering is noticed long before these by [`super::layer::health`]; the limits
    /// only end calls to a host that answers probes but not the call.
    pub fn default_timeout(self) -> Duration {
        match self {
            Self::Facts | Self::Vm | Self::KvpReadGuest | Self::KvpWriteHost | Self::SetVmNotes => {
                30 * SECOND
            }
            Self::MigrationStatus | Self::CancelMigration => 30 * SECOND,
            Self::KvpRemoveHost | Self::KvpRemoveHostPrefix => 30 * SECOND,
            Self::CompareVm | Self::RemovePath | Self::RemoveDvdDrive => 2 * MINUTE,
            Self::Inventory | Self::RegisterVm => 3 * MINUTE,
            Self::AddClusterRole | Self::RemoveClusterRole => 5 * MINUTE,
            Self::DeleteVm | Self::Power => 10 * MINUTE,
            Self::CopyImage | Self::CopyIso => 60 * MINUTE,
            Self::MoveVm | Self::MoveClusterRole => 240 * MINUTE,
            Self::SetVmSettings | Self::AttachVmDisk | Self::DetachVmDisk => 2 * MINUTE,
            // A fixed VHDX writes all its bytes; growing a fixed one too.
            Self::CreateVhd | Self::ResizeVmDisk => 60 * MINUTE,
            Self::NetworkAdapterChange => 2 * MINUTE,
            Self::CheckpointChange => 30 * MINUTE,
            // A cluster node drain waits until the cluster has moved every role.
            Self::SetMaintenance => 240 * MINUTE,
        }
    }
}

impl fmt::Display for OperationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What an error message names besides host and operation.
#[derive(Debug, Default)]
pub(crate) struct Subject {
    pub(crate) vm: Option<String>,
    pub(crate) verb: Option<&'static str>,
    pub(crate) destination: Option<String>,
}

impl Subject {
    fn vm(id: VmId) -> Self {
        Self {
            vm: Some(id.to_string()),
            ..Self::default()
        }
    }
}

impl HostCall {
    /// Which operation this is.
    pub fn kind(&self) -> OperationKind {
        match self {
            Self::Facts | Self::FactsInRoots(_) => OperationKind::Facts,
            Self::Inventory | Self::InventorySince(_) => OperationKind::Inventory,
            Self::Vm(_) => OperationKind::Vm,
            Self::Power(..) => OperationKind::Power,
            Self::DeleteVm { .. } => OperationKind::DeleteVm,
            Self::KvpReadGuest(_) => OperationKind::KvpReadGuest,
            Self::KvpWriteHost(..) => OperationKind::KvpWriteHost,
            Self::KvpRemoveHost(..) => OperationKind::KvpRemoveHost,
            Self::CopyImage(_) => OperationKind::CopyImage,
            Self::CopyIso(_) => OperationKind::CopyIso,
            Self::RegisterVm(_) => OperationKind::RegisterVm,
            Self::AddClusterRole(_) => OperationKind::AddClusterRole,
            Self::RemoveClusterRole(_) => OperationKind::RemoveClusterRole,
            Self::CompareVm(..) => OperationKind::CompareVm,
            Self::MoveVm(..) => OperationKind::MoveVm,
            Self::RemovePath(_) => OperationKind::RemovePath,
            Self::KvpRemoveHostPrefix(..) => OperationKind::KvpRemoveHostPrefix,
            Self::RemoveDvdDrive { .. } => OperationKind::RemoveDvdDrive,
            Self::SetVmNotes(..) => OperationKind::SetVmNotes,
            Self::SetVmSettings(..) => OperationKind::SetVmSettings,
            Self::CreateVhd(_) => OperationKind::CreateVhd,
            Self::AttachVmDisk { .. } => OperationKind::AttachVmDisk,
            Self::ResizeVmDisk { .. } => OperationKind::ResizeVmDisk,
            Self::DetachVmDisk { .. } => OperationKind::DetachVmDisk,
            Self::CheckpointChange(..) => OperationKind::CheckpointChange,
            Self::NetworkAdapterChange(..) => OperationKind::NetworkAdapterChange,
            Self::SetMaintenance(_) => OperationKind::SetMaintenance,
            Self::MoveClusterRole(..) => OperationKind::MoveClusterRole,
            Self::MigrationStatus(_) => OperationKind::MigrationStatus,
            Self::CancelMigration(_) => OperationKind::CancelMigration,
        }
    }

    /// The VM the call is about, when it names one by id.
    pub fn vm_id(&self) -> Option<VmId> {
        match self {
            Self::Vm(id)
            | Self::Power(id, _)
            | Self::DeleteVm { id, .. }
            | Self::KvpReadGuest(id)
            | Self::KvpWriteHost(id, _)
            | Self::KvpRemoveHost(id, _)
            | Self::AddClusterRole(id)
            | Self::RemoveClusterRole(id)
            | Self::CompareVm(id, _)
            | Self::MoveVm(id, _)
            | Self::KvpRemoveHostPrefix(id, _)
            | Self::RemoveDvdDrive { vm: id, .. }
            | Self::SetVmNotes(id, _)
            | Self::SetVmSettings(id, _)
            | Self::AttachVmDisk { vm: id, .. }
            | Self::ResizeVmDisk { vm: id, .. }
            | Self::DetachVmDisk { vm: id, .. } => Some(*id),
            Self::CheckpointChange(id, _) | Self::NetworkAdapterChange(id, _) => Some(*id),
            Self::MoveClusterRole(id, _)
            | Self::MigrationStatus(id)
            | Self::CancelMigration(id) => Some(*id),
            Self::Facts
            | Self::FactsInRoots(_)
            | Self::Inventory
            | Self::InventorySince(_)
            | Self::CopyImage(_)
            | Self::CopyIso(_)
            | Self::RegisterVm(_)
            | Self::RemovePath(_)
            | Self::CreateVhd(_)
            | Self::SetMaintenance(_) => None,
        }
    }

    /// Checks arguments that cannot be right before anything is sent
    /// ([`Error::InvalidRequest`] naming `host` and the operation): VM names with path
    /// characters, relative or wildcard paths, disk sizes that are not whole MiB up to 64 TiB, KVP items over Hyper-V's 511/2047-byte limits,
    /// memory not a multiple of 2 MiB, VLANs outside 1..=4094, `remove_path` on a volume or
    /// top-level folder, destination hosts that are not host names.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] saying what is wrong.
    pub fn validate(&self, host: &str) -> Result<()> {
        let operation = self.kind().describe();
        let refuse = |detail: String| Error::InvalidRequest {
            host: host.to_owned(),
            operation,
            detail,
        };
        match self {
            Self::InventorySince(digest) => {
                if digest.is_empty()
                    || digest.len() > 128
                    || !digest.bytes().all(|b| b.is_ascii_hexdigit())
                {
                    return Err(refuse(format!(
                        "inventory digest {digest:?} must be 1..=128 hexadecimal digits"
                    )));
                }
            }
            Self::KvpWriteHost(_, items) => {
                for (key, value) in items {
                    if key.is_empty() || key.len() > KVP_MAX_KEY_BYTES || key.contains('\0') {
                        return Err(refuse(format!(
                            "KVP key {key:?} must be 1..={KVP_MAX_KEY_BYTES} bytes without NUL characters"
                        )));
                    }
                    if value.len() > KVP_MAX_VALUE_BYTES || value.contains('\0') {
                        return Err(refuse(format!(
                            "value of KVP key {key:?} is {} bytes; at most {KVP_MAX_VALUE_BYTES} without NUL characters (split it into chunks)",
                            value.len()
                        )));
                    }
                }
            }
            Self::KvpRemoveHost(_, keys) => {
                if let Some(bad) = keys
                    .iter()
                    .find(|k| k.is_empty() || k.len() > KVP_MAX_KEY_BYTES)
                {
                    return Err(refuse(format!(
                        "KVP key {bad:?} must be 1..={KVP_MAX_KEY_BYTES} bytes"
                    )));
                }
            }
            Self::CopyImage(request) => {
                check_vm_name(&request.vm_name).map_err(refuse)?;
                check_windows_path(&request.image_path).map_err(refuse)?;
                if let Some(root) = &request.destination_root {
                    check_windows_path(root).map_err(refuse)?;
                }
                if let Some(size) = request.disk_size_bytes {
                    check_disk_size(size).map_err(refuse)?;
                }
            }
            Self::CopyIso(request) => {
                check_windows_path(&request.iso_path).map_err(refuse)?;
                check_windows_path(&request.vm_folder).map_err(refuse)?;
            }
            Self::RegisterVm(spec) => check_register(spec).map_err(refuse)?,
            Self::FactsInRoots(roots) => {
                if roots.is_empty() {
                    return Err(refuse("no image roots given".to_owned()));
                }
                for root in roots {
                    check_windows_path(root).map_err(refuse)?;
                }
            }
            Self::CompareVm(_, target) | Self::MoveVm(_, target) => {
                check_target(target).map_err(refuse)?;
            }
            Self::MoveClusterRole(_, to) => {
                check_host_name(&to.node).map_err(refuse)?;
            }
            Self::KvpRemoveHostPrefix(_, prefix) => {
                if prefix.is_empty() || prefix.len() > KVP_MAX_KEY_BYTES || prefix.contains('\0') {
                    return Err(refuse(format!(
                        "KVP key prefix {prefix:?} must be 1..={KVP_MAX_KEY_BYTES} bytes without NUL characters"
                    )));
                }
            }
            Self::RemoveDvdDrive { path, .. } => check_windows_path(path).map_err(refuse)?,
            Self::SetVmNotes(_, notes) => {
                if notes.chars().count() > MAX_VM_NOTES_CHARS || notes.contains('\0') {
                    return Err(refuse(format!(
                        "VM notes must be at most {MAX_VM_NOTES_CHARS} characters without NUL \
                         characters, got {}",
                        notes.chars().count()
                    )));
                }
            }
            Self::SetVmSettings(_, change) => check_settings(change).map_err(refuse)?,
            Self::CreateVhd(request) => {
                check_vhdx_path(&request.path).map_err(refuse)?;
                check_disk_size(request.size_bytes).map_err(refuse)?;
            }
            Self::AttachVmDisk { path, .. } => check_disk_file(path).map_err(refuse)?,
            Self::ResizeVmDisk { size_bytes, .. } => {
                check_disk_size(*size_bytes).map_err(refuse)?
            }
            Self::DetachVmDisk { .. } => {}
            Self::CheckpointChange(_, change) => match change {
                CheckpointChange::Create { name } | CheckpointChange::Rename { name, .. } => {
                    super::devices::check_checkpoint_name(name).map_err(refuse)?;
                }
                CheckpointChange::Apply { .. } | CheckpointChange::Remove { .. } => {}
            },
            Self::NetworkAdapterChange(_, change) => {
                if let NicChange::Add { name, .. } = change
                    && !name.is_empty()
                {
                    check_vm_name(name).map_err(refuse)?;
                }
                if let Some(settings) = change.settings() {
                    super::devices::check_nic_settings(settings).map_err(refuse)?;
                }
                if let NicChange::Set { settings, .. } = change
                    && settings.is_empty()
                {
                    return Err(refuse("the change sets nothing".to_owned()));
                }
            }
            Self::RemovePath(path) => {
                check_windows_path(path).map_err(refuse)?;
                if path.trim_end_matches('\\').matches('\\').count() < 2 {
                    return Err(refuse(format!(
                        "{path:?} is a volume or top-level folder; only paths inside the VM folder root are removed"
                    )));
                }
            }
            Self::SetMaintenance(change) => check_maintenance(&change.record).map_err(refuse)?,
            Self::Facts
            | Self::Inventory
            | Self::Vm(_)
            | Self::Power(..)
            | Self::DeleteVm { .. }
            | Self::KvpReadGuest(_)
            | Self::AddClusterRole(_)
            | Self::RemoveClusterRole(_)
            | Self::MigrationStatus(_)
            | Self::CancelMigration(_) => {}
        }
        Ok(())
    }

    /// The reply, when the call needs no host at all (writing or removing no KVP items).
    pub fn trivial_reply(&self) -> Option<HostReply> {
        match self {
            Self::KvpWriteHost(_, items) if items.is_empty() => Some(HostReply::Written),
            Self::KvpRemoveHost(_, keys) if keys.is_empty() => {
                Some(HostReply::KvpRemoved(Vec::new()))
            }
            _ => None,
        }
    }

    /// The JSON request document the operation's script reads on stdin.
    ///
    /// # Errors
    ///
    /// [`Error::OperationOutput`] if a request type fails to serialize (it cannot, in
    /// practice: they are plain data).
    pub fn request(&self, host: &str) -> Result<Value> {
        let serialize = |value: std::result::Result<Value, serde_json::Error>| {
            value.map_err(|e| Error::OperationOutput {
                host: host.to_owned(),
                operation: self.kind().describe(),
                detail: format!("request could not be serialized: {e}"),
            })
        };
        Ok(match self {
            Self::Facts | Self::Inventory => json!({}),
            Self::InventorySince(digest) => json!({ "since": digest }),
            Self::FactsInRoots(roots) => json!({ "image_roots": roots }),
            Self::Vm(id) => json!({ "ids": [id] }),
            Self::Power(id, action) => json!({ "id": id, "action": action }),
            Self::DeleteVm { id, delete_disks } => {
                json!({ "id": id, "delete_disks": delete_disks })
            }
            Self::KvpReadGuest(id) | Self::AddClusterRole(id) | Self::RemoveClusterRole(id) => {
                json!({ "id": id })
            }
            Self::KvpWriteHost(id, items) => json!({
                "id": id,
                "items": items
                    .iter()
                    .map(|(name, value)| json!({ "name": name, "value": value }))
                    .collect::<Vec<_>>(),
            }),
            Self::KvpRemoveHost(id, keys) => json!({ "id": id, "keys": keys }),
            Self::CopyImage(request) => serialize(serde_json::to_value(request))?,
            Self::CopyIso(request) => serialize(serde_json::to_value(request))?,
            Self::RegisterVm(spec) => serialize(serde_json::to_value(spec))?,
            Self::CompareVm(id, target) | Self::MoveVm(id, target) => json!({
                "id": id,
                "destination_host": target.destination_host.trim(),
                "with_storage": target.with_storage,
                "destination_path": target.destination_path,
                "storage_only": target.storage_only,
            }),
            Self::MoveClusterRole(id, to) => json!({
                "id": id,
                "node": to.node.trim(),
                "migration_type": to.migration_type.as_str(),
            }),
            Self::MigrationStatus(id) | Self::CancelMigration(id) => json!({ "id": id }),
            Self::RemovePath(path) => json!({ "path": path }),
            Self::KvpRemoveHostPrefix(id, prefix) => json!({ "id": id, "prefix": prefix }),
            Self::RemoveDvdDrive { vm, path } => json!({ "id": vm, "path": path }),
            Self::SetVmNotes(id, notes) => json!({ "id": id, "notes": notes }),
            Self::SetVmSettings(id, change) => {
                let mut request = serialize(serde_json::to_value(change))?;
                if let Some(map) = request.as_object_mut() {
                    map.insert("id".to_owned(), json!(id));
                    // The script passes Hyper-V's enum names to Set-VM.
                    if let Some(a) = change.automatic_start_action {
                        map.insert("automatic_start_action".to_owned(), json!(a.hyperv_name()));
                    }
                    if let Some(a) = change.automatic_stop_action {
                        map.insert("automatic_stop_action".to_owned(), json!(a.hyperv_name()));
                    }
                }
                request
            }
            Self::CreateVhd(request) => serialize(serde_json::to_value(request))?,
            Self::AttachVmDisk { vm, path } => json!({ "id": vm, "path": path }),
            Self::ResizeVmDisk {
                vm,
                disk,
                size_bytes,
            } => json!({
                "id": vm,
                "controller_type": disk.controller_type(),
                "controller_number": disk.controller_number,
                "controller_location": disk.controller_location,
                "size_bytes": size_bytes,
            }),
            Self::DetachVmDisk {
                vm,
                disk,
                delete_file,
            } => json!({
                "id": vm,
                "controller_type": disk.controller_type(),
                "controller_number": disk.controller_number,
                "controller_location": disk.controller_location,
                "delete_file": delete_file,
            }),
            Self::CheckpointChange(id, change) => {
                let mut request = serialize(serde_json::to_value(change))?;
                request["id"] = json!(id);
                request
            }
            Self::NetworkAdapterChange(id, change) => {
                let mut request = serialize(serde_json::to_value(change))?;
                request["id"] = json!(id);
                request
            }
            Self::SetMaintenance(change) => serialize(serde_json::to_value(change))?,
        })
    }

    /// What a failure of this call should name (VM, verb, destination).
    pub(crate) fn subject(&self) -> Subject {
        let mut subject = self.vm_id().map(Subject::vm).unwrap_or_default();
        match self {
            Self::Power(_, action) => subject.verb = Some(action.verb()),
            Self::DeleteVm { .. } => subject.verb = Some("be deleted"),
            Self::CopyImage(request) => subject.vm = Some(request.vm_name.clone()),
            Self::RegisterVm(spec) => {
                subject.vm = Some(spec.name.clone());
                subject.verb = Some("start");
            }
            Self::CompareVm(_, target) => {
                subject.destination = Some(target.destination_host.clone());
            }
            Self::MoveVm(_, target) => {
                subject.destination = Some(target.destination_host.clone());
                subject.verb = Some("be moved");
            }
            Self::CheckpointChange(_, change) => subject.verb = Some(change.verb()),
            Self::NetworkAdapterChange(_, change) => subject.verb = Some(change.verb()),
            Self::MoveClusterRole(_, to) => {
                subject.destination = Some(to.node.clone());
                subject.verb = Some("be moved");
            }
            _ => {}
        }
        subject
    }

    /// Turns the script's `data` into the typed reply, checking that it answers this call.
    ///
    /// # Errors
    ///
    /// [`Error::OperationOutput`] for data of the wrong shape or about another VM;
    /// [`Error::UnknownVm`] when [`HostCall::Vm`] finds no such VM.
    pub fn parse_reply(&self, host: &str, data: Value) -> Result<HostReply> {
        let kind = self.kind();
        let wrong = |detail: String| Error::OperationOutput {
            host: host.to_owned(),
            operation: kind.describe(),
            detail,
        };
        Ok(match self {
            Self::Facts | Self::FactsInRoots(_) => {
                HostReply::Facts(Box::new(parse_data(host, kind, data)?))
            }
            Self::Inventory | Self::InventorySince(_) => {
                HostReply::Inventory(parse_data(host, kind, data)?)
            }
            Self::Vm(id) => {
                let inventory: Inventory = parse_data(host, kind, data)?;
                let vm = inventory
                    .vms
                    .into_iter()
                    .find(|vm| vm.id == *id)
                    .ok_or_else(|| Error::UnknownVm {
                        host: host.to_owned(),
                        vm: id.to_string(),
                    })?;
                HostReply::Vm(Box::new(vm))
            }
            Self::Power(id, _) => {
                let outcome: PowerOutcome = parse_data(host, kind, data)?;
                if outcome.id != *id {
                    return Err(wrong(format!(
                        "asked for VM {id}, the script answered for {}",
                        outcome.id
                    )));
                }
                HostReply::Power(outcome)
            }
            Self::DeleteVm { .. } => HostReply::Deleted(parse_data(host, kind, data)?),
            Self::KvpReadGuest(_) => HostReply::GuestKvp(parse_data(host, kind, data)?),
            Self::KvpWriteHost(..) => {
                let _: KvpWritten = parse_data(host, kind, data)?;
                HostReply::Written
            }
            Self::KvpRemoveHost(..) | Self::KvpRemoveHostPrefix(..) => {
                let removed: KvpRemoved = parse_data(host, kind, data)?;
                HostReply::KvpRemoved(removed.removed)
            }
            Self::CopyImage(_) => HostReply::CopiedImage(parse_data(host, kind, data)?),
            Self::CopyIso(_) => HostReply::CopiedIso(parse_data(host, kind, data)?),
            Self::RegisterVm(_) => HostReply::Registered(Box::new(parse_data(host, kind, data)?)),
            Self::AddClusterRole(_) | Self::RemoveClusterRole(_) => {
                HostReply::ClusterRole(parse_data(host, kind, data)?)
            }
            Self::CompareVm(..) => HostReply::MigrationCheck(parse_data(host, kind, data)?),
            Self::MoveVm(..) | Self::MoveClusterRole(..) => {
                HostReply::Migrated(parse_data(host, kind, data)?)
            }
            Self::MigrationStatus(id) => {
                let progress: MigrationProgress = parse_data(host, kind, data)?;
                if progress.id != *id {
                    return Err(wrong(format!(
                        "asked for VM {id}, the script answered for {}",
                        progress.id
                    )));
                }
                HostReply::MigrationProgress(progress)
            }
            Self::CancelMigration(id) => {
                let cancel: MigrationCancel = parse_data(host, kind, data)?;
                if cancel.id != *id {
                    return Err(wrong(format!(
                        "asked for VM {id}, the script answered for {}",
                        cancel.id
                    )));
                }
                HostReply::MigrationCancel(cancel)
            }
            Self::RemovePath(_) => HostReply::RemovedPath(parse_data(host, kind, data)?),
            Self::RemoveDvdDrive { vm, .. } => {
                let removed: DvdDriveRemoved = parse_data(host, kind, data)?;
                if removed.id != *vm {
                    return Err(wrong(format!(
                        "asked for VM {vm}, the script answered for {}",
                        removed.id
                    )));
                }
                HostReply::DvdDriveRemoved(removed)
            }
            Self::SetVmNotes(id, _) => {
                let set: VmNotes = parse_data(host, kind, data)?;
                if set.id != *id {
                    return Err(wrong(format!(
                        "asked for VM {id}, the script answered for {}",
                        set.id
                    )));
                }
                HostReply::NotesSet(set)
            }
            Self::SetVmSettings(id, _) => {
                let vm: Vm = parse_data(host, kind, data)?;
                if vm.id != *id {
                    return Err(wrong(format!(
                        "asked for VM {id}, the script answered for {}",
                        vm.id
                    )));
                }
                HostReply::SettingsSet(Box::new(vm))
            }
            Self::CreateVhd(_) => HostReply::VhdCreated(parse_data(host, kind, data)?),
            Self::AttachVmDisk { vm, .. } => {
                let changed: VmDiskChanged = parse_data(host, kind, data)?;
                if changed.id != *vm || DiskId::of(&changed.disk).is_none() {
                    return Err(wrong(format!(
                        "asked to attach a disk to VM {vm}, the script answered for {} with controller {:?}",
                        changed.id, changed.disk.controller_type
                    )));
                }
                HostReply::DiskAttached(changed)
            }
            Self::ResizeVmDisk { vm, disk, .. } => {
                let changed: VmDiskChanged = parse_data(host, kind, data)?;
                if changed.id != *vm || !disk.matches(&changed.disk) {
                    return Err(wrong(format!(
                        "asked to resize disk {disk} of VM {vm}, the script answered for another disk"
                    )));
                }
                HostReply::DiskResized(changed)
            }
            Self::DetachVmDisk { vm, .. } => {
                let detached: VmDiskDetached = parse_data(host, kind, data)?;
                if detached.id != *vm {
                    return Err(wrong(format!(
                        "asked for VM {vm}, the script answered for {}",
                        detached.id
                    )));
                }
                HostReply::DiskDetached(detached)
            }
            Self::CheckpointChange(id, _) => {
                let changed: CheckpointChanged = parse_data(host, kind, data)?;
                if changed.id != *id {
                    return Err(wrong(format!(
                        "asked for VM {id}, the script answered for {}",
                        changed.id
                    )));
                }
                HostReply::CheckpointChanged(changed)
            }
            Self::NetworkAdapterChange(id, change) => {
                let changed: NicChanged = parse_data(host, kind, data)?;
                if changed.id != *id {
                    return Err(wrong(format!(
                        "asked for VM {id}, the script answered for {}",
                        changed.id
                    )));
                }
                let answered = match (change, &changed.adapter, changed.removed) {
                    (NicChange::Remove { adapter }, _, Some(removed)) => removed == *adapter,
                    (NicChange::Set { adapter, .. }, Some(nic), _) => {
                        super::devices::adapter_guid(&nic.id) == Some(*adapter)
                    }
                    (NicChange::Add { .. }, Some(nic), _) => {
                        super::devices::adapter_guid(&nic.id).is_some()
                    }
                    _ => false,
                };
                if !answered {
                    return Err(wrong(
                        "the answer does not name the adapter the change was about".to_owned(),
                    ));
                }
                HostReply::NicChanged(changed)
            }
            Self::SetMaintenance(_) => HostReply::MaintenanceSet(parse_data(host, kind, data)?),
        })
    }
}

fn parse_data<T: DeserializeOwned>(host: &str, kind: OperationKind, data: Value) -> Result<T> {
    serde_json::from_value(data).map_err(|e| Error::OperationOutput {
        host: host.to_owned(),
        operation: kind.describe(),
        detail: format!("{} returned data of the wrong shape: {e}", kind.script()),
    })
}

impl fmt::Debug for HostCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Facts => f.write_str("Facts"),
            Self::FactsInRoots(roots) => write!(f, "FactsInRoots({roots:?})"),
            Self::Inventory => f.write_str("Inventory"),
            Self::InventorySince(digest) => write!(f, "InventorySince({digest})"),
            Self::Vm(id) => write!(f, "Vm({id})"),
            Self::Power(id, action) => write!(f, "Power({id}, {action:?})"),
            Self::DeleteVm { id, delete_disks } => {
                write!(f, "DeleteVm({id}, delete_disks: {delete_disks})")
            }
            Self::KvpReadGuest(id) => write!(f, "KvpReadGuest({id})"),
            Self::KvpWriteHost(id, items) => {
                let keys: Vec<&str> = items.iter().map(|(k, _)| k.as_str()).collect();
                write!(f, "KvpWriteHost({id}, {keys:?})")
            }
            Self::KvpRemoveHost(id, keys) => write!(f, "KvpRemoveHost({id}, {keys:?})"),
            Self::CopyImage(r) => write!(f, "CopyImage({r:?})"),
            Self::CopyIso(r) => write!(f, "CopyIso({r:?})"),
            Self::RegisterVm(spec) => write!(f, "RegisterVm({:?})", spec.name),
            Self::AddClusterRole(id) => write!(f, "AddClusterRole({id})"),
            Self::RemoveClusterRole(id) => write!(f, "RemoveClusterRole({id})"),
            Self::CompareVm(id, target) => write!(f, "CompareVm({id}, {target:?})"),
            Self::MoveVm(id, target) => write!(f, "MoveVm({id}, {target:?})"),
            Self::RemovePath(path) => write!(f, "RemovePath({path:?})"),
            Self::KvpRemoveHostPrefix(id, prefix) => {
                write!(f, "KvpRemoveHostPrefix({id}, {prefix:?})")
            }
            Self::RemoveDvdDrive { vm, path } => write!(f, "RemoveDvdDrive({vm}, {path:?})"),
            Self::SetVmNotes(id, notes) => {
                write!(f, "SetVmNotes({id}, {} characters)", notes.chars().count())
            }
            Self::SetVmSettings(id, change) => {
                // Notes are the user's text: their length only, as for SetVmNotes.
                let mut shown = change.as_ref().clone();
                let notes = shown.notes.take().map(|n| n.chars().count());
                write!(
                    f,
                    "SetVmSettings({id}, {shown:?}, notes: {notes:?} characters)"
                )
            }
            Self::CreateVhd(r) => write!(f, "CreateVhd({r:?})"),
            Self::AttachVmDisk { vm, path } => write!(f, "AttachVmDisk({vm}, {path:?})"),
            Self::ResizeVmDisk {
                vm,
                disk,
                size_bytes,
            } => write!(f, "ResizeVmDisk({vm}, {disk}, {size_bytes})"),
            Self::DetachVmDisk {
                vm,
                disk,
                delete_file,
            } => write!(f, "DetachVmDisk({vm}, {disk}, delete_file: {delete_file})"),
            Self::CheckpointChange(id, change) => write!(f, "CheckpointChange({id}, {change:?})"),
            Self::NetworkAdapterChange(id, change) => {
                write!(f, "NetworkAdapterChange({id}, {change:?})")
            }
            Self::SetMaintenance(change) => write!(
                f,
                "SetMaintenance({}, {} VMs, {:?})",
                change.record.state,
                change.record.vms.len(),
                change.cluster_node
            ),
            Self::MoveClusterRole(id, to) => write!(f, "MoveClusterRole({id}, {to:?})"),
            Self::MigrationStatus(id) => write!(f, "MigrationStatus({id})"),
            Self::CancelMigration(id) => write!(f, "CancelMigration({id})"),
        }
    }
}

#[derive(Deserialize)]
struct KvpWritten {
    #[allow(dead_code)]
    written: u64,
}

#[derive(Deserialize)]
struct KvpRemoved {
    #[serde(default, deserialize_with = "crate::psjson::one_or_many")]
    removed: Vec<String>,
}

/// A VM or folder name Hyper-V and the file system accept.
pub(crate) fn check_vm_name(name: &str) -> std::result::Result<(), String> {
    if name.trim().is_empty()
        || name.trim() != name
        || name.len() > 100
        || name.contains(['\\', '/', ':', '*', '?', '"', '<', '>', '|'])
        || name.chars().any(char::is_control)
        || name == "."
        || name == ".."
    {
        Err(format!(
            "VM name {name:?} must be 1-100 characters without path characters or surrounding spaces"
        ))
    } else {
        Ok(())
    }
}

/// An absolute Windows path (`X:\...` or `\\server\share\...`) without `.`/`..` segments or
/// wildcards.
pub(crate) fn check_windows_path(path: &str) -> std::result::Result<(), String> {
    let bytes = path.as_bytes();
    let drive =
        bytes.len() >= 3 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' && bytes[2] == b'\\';
    let unc = path.starts_with(r"\\") && path.len() > 2;
    if !(drive || unc) {
        return Err(format!("{path:?} is not an absolute Windows path"));
    }
    let rest = if drive {
        path.get(3..).unwrap_or_default()
    } else {
        path.get(2..).unwrap_or_default()
    };
    if rest
        .split('\\')
        .any(|seg| seg == "." || seg == ".." || seg.trim().is_empty() && !seg.is_empty())
        || path.contains(['*', '?', '"', '<', '>', '|', '/'])
        || path.chars().any(char::is_control)
        || path.get(2..).is_some_and(|p| p.contains(':'))
    {
        return Err(format!(
            "{path:?} contains relative segments, wildcards or invalid characters"
        ));
    }
    Ok(())
}

fn check_register(spec: &RegisterVmSpec) -> std::result::Result<(), String> {
    const MIB: u64 = 1 << 20;
    check_vm_name(&spec.name)?;
    check_windows_path(&spec.vm_folder)?;
    check_windows_path(&spec.vhdx_path)?;
    if let Some(iso) = &spec.iso_path {
        check_windows_path(iso)?;
    }
    if spec.processor_count == 0 {
        return Err("processor count must be at least 1".to_owned());
    }
    if spec.memory_startup_bytes < 512 * MIB || !spec.memory_startup_bytes.is_multiple_of(2 * MIB) {
        return Err(format!(
            "startup memory {} bytes must be at least 512 MiB and a multiple of 2 MiB",
            spec.memory_startup_bytes
        ));
    }
    if let Some(d) = spec.dynamic_memory
        && !(d.minimum_bytes <= spec.memory_startup_bytes
            && spec.memory_startup_bytes <= d.maximum_bytes
            && d.minimum_bytes.is_multiple_of(2 * MIB)
            && d.maximum_bytes.is_multiple_of(2 * MIB))
    {
        return Err(
            "dynamic memory needs minimum <= startup <= maximum, each a multiple of 2 MiB"
                .to_owned(),
        );
    }
    if let Some(vlan) = spec.vlan_id
        && !(1..=4094).contains(&vlan)
    {
        return Err(format!("VLAN {vlan} is outside 1..=4094"));
    }
    Ok(())
}

/// Field checks of a settings change (the state rules are [`check_settings_change`]'s):
/// processors 1..=240, memory a multiple of 2 MiB from 32 MiB, minimum <= startup <= maximum
/// where all are given, notes within [`MAX_VM_NOTES_CHARS`] without NUL, a start delay up to a
/// day.
fn check_settings(change: &VmSettingsChange) -> std::result::Result<(), String> {
    const MIB: u64 = 1 << 20;
    if change.is_empty() {
        return Err("the change sets no field".to_owned());
    }
    if let Some(count) = change.processor_count
        && !(1..=240).contains(&count)
    {
        return Err(format!("processor count {count} is outside 1..=240"));
    }
    for (name, value) in [
        ("startup memory", change.memory_startup_bytes),
        ("minimum memory", change.memory_minimum_bytes),
        ("maximum memory", change.memory_maximum_bytes),
    ] {
        if let Some(bytes) = value
            && (bytes < 32 * MIB || !bytes.is_multiple_of(2 * MIB) || bytes > 12 << 40)
        {
            return Err(format!(
                "{name} {bytes} bytes must be a multiple of 2 MiB from 32 MiB to 12 TiB"
            ));
        }
    }
    if let (Some(min), Some(max)) = (change.memory_minimum_bytes, change.memory_maximum_bytes)
        && min > max
    {
        return Err(format!(
            "minimum memory {min} is above maximum memory {max}"
        ));
    }
    if let Some(notes) = &change.notes
        && (notes.chars().count() > MAX_VM_NOTES_CHARS || notes.contains('\0'))
    {
        return Err(format!(
            "VM notes must be at most {MAX_VM_NOTES_CHARS} characters without NUL characters"
        ));
    }
    if let Some(delay) = change.automatic_start_delay_seconds
        && delay > 86_400
    {
        return Err(format!("automatic start delay {delay} s is over a day"));
    }
    Ok(())
}

/// A virtual disk file path: absolute, ending in `.vhdx` or `.vhd`.
fn check_disk_file(path: &str) -> std::result::Result<(), String> {
    check_windows_path(path)?;
    let lower = path.to_ascii_lowercase();
    if !(lower.ends_with(".vhdx") || lower.ends_with(".vhd")) {
        return Err(format!("{path:?} is not a .vhdx or .vhd file"));
    }
    Ok(())
}

/// A new VHDX path: absolute, ending in `.vhdx`.
fn check_vhdx_path(path: &str) -> std::result::Result<(), String> {
    check_windows_path(path)?;
    if !path.to_ascii_lowercase().ends_with(".vhdx") {
        return Err(format!("{path:?} is not a .vhdx file"));
    }
    Ok(())
}

/// The largest VHDX Hyper-V creates: 64 TiB.
pub const VHDX_MAX_BYTES: u64 = 64 << 40;

/// A virtual disk size `Resize-VHD` accepts: a whole number of MiB up to 64 TiB.
fn check_disk_size(size: u64) -> std::result::Result<(), String> {
    const MIB: u64 = 1 << 20;
    if size == 0 || !size.is_multiple_of(MIB) || size > VHDX_MAX_BYTES {
        return Err(format!(
            "disk size {size} bytes must be a positive multiple of 1 MiB, at most 64 TiB"
        ));
    }
    Ok(())
}

/// The longest reason, ticket or caller text kept in a host's state file.
const MAX_MAINTENANCE_TEXT: usize = 1024;

/// A state file the host can keep: bounded texts without NUL characters, at most 10,000 VMs.
fn check_maintenance(record: &HostMaintenance) -> std::result::Result<(), String> {
    for (name, text) in [
        ("reason", &record.reason),
        ("ticket", &record.ticket),
        ("requested_by", &record.requested_by),
    ] {
        if let Some(text) = text
            && (text.chars().count() > MAX_MAINTENANCE_TEXT || text.contains('\0'))
        {
            return Err(format!(
                "{name} must be at most {MAX_MAINTENANCE_TEXT} characters without NUL characters"
            ));
        }
    }
    if record.vms.len() > 10_000 {
        return Err(format!(
            "{} VMs is more than a host holds",
            record.vms.len()
        ));
    }
    Ok(())
}

fn check_host_name(host: &str) -> std::result::Result<(), String> {
    let name = host.trim();
    let valid = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if valid {
        Ok(())
    } else {
        Err(format!("destination host {host:?} is not a host name"))
    }
}

fn check_target(target: &MigrationTarget) -> std::result::Result<(), String> {
    check_host_name(&target.destination_host)?;
    if let Some(path) = &target.destination_path {
        check_windows_path(path)?;
    }
    if target.storage_only && target.destination_path.is_none() {
        return Err("a storage move needs a destination path".to_owned());
    }
    if target.storage_only && target.with_storage {
        return Err(
            "a storage move stays on its host; with_storage moves to another host".to_owned(),
        );
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn paths_are_checked() {
        assert!(check_windows_path(r"C:\VMs\web01").is_ok());
        assert!(check_windows_path(r"\\fs01\share\x").is_ok());
        assert!(check_windows_path(r"C:\VMs\..\Windows").is_err());
        assert!(check_windows_path(r"VMs\web01").is_err());
        assert!(check_windows_path(r"C:\VMs\*").is_err());
        assert!(check_windows_path(r"C:\VMs\a:b").is_err());
        assert!(check_vm_name("web01").is_ok());
        assert!(check_vm_name("a\\b").is_err());
        assert!(check_vm_name(" x").is_err());
    }

    #[test]
    fn facts_in_roots_is_facts_with_the_roots_in_the_request() {
        let call = HostCall::FactsInRoots(vec![r"C:\ClusterStorage\Volume1\DiskImages".to_owned()]);
        assert_eq!(call.kind(), OperationKind::Facts);
        assert_eq!(
            call.request("hv01").unwrap(),
            json!({ "image_roots": [r"C:\ClusterStorage\Volume1\DiskImages"] })
        );
        assert!(call.validate("hv01").is_ok());
        assert!(HostCall::FactsInRoots(vec![]).validate("hv01").is_err());
        assert!(
            HostCall::FactsInRoots(vec!["relative".to_owned()])
                .validate("hv01")
                .is_err()
        );
    }

    #[test]
    fn disk_sizes_are_whole_mib_up_to_64_tib() {
        assert!(check_disk_size(40 << 30).is_ok());
        assert!(check_disk_size(VHDX_MAX_BYTES).is_ok());
        assert!(check_disk_size(0).is_err());
        assert!(check_disk_size((40 << 30) + 512).is_err());
        assert!(check_disk_size(VHDX_MAX_BYTES + (1 << 20)).is_err());
        let call = HostCall::CopyImage(CopyImageRequest {
            image_path: r"C:\Images\x.vhdx".to_owned(),
            vm_name: "web-01".to_owned(),
            destination_root: None,
            disk_size_bytes: Some(1),
        });
        let err = call.validate("hv01").unwrap_err();
        assert!(err.to_string().contains("disk size"), "{err}");
    }

    #[test]
    fn every_kind_has_a_script_a_name_and_a_timeout() {
        let mut names = BTreeSet::new();
        for kind in OperationKind::all() {
            assert!(scripts::ALL.contains(&kind.script()), "{kind}");
            assert!(names.insert(kind.name()), "duplicate name {kind}");
            assert!(!kind.describe().is_empty());
            assert!(kind.default_timeout() >= SECOND);
        }
        // Every script serves at least one operation.
        for script in scripts::ALL {
            assert!(
                OperationKind::all().any(|k| k.script() == script),
                "{script} serves no operation"
            );
        }
        assert_eq!(OperationKind::DeleteVm.name(), "delete_vm");
    }

    #[test]
    fn debug_never_shows_kvp_values() {
        let call = HostCall::KvpWriteHost(
            VmId(uuid::Uuid::nil()),
            vec![("hlvmm.data.x".to_owned(), "SECRET-CIPHERTEXT".to_owned())],
        );
        let text = format!("{call:?}");
        assert!(text.contains("hlvmm.data.x"));
        assert!(!text.contains("SECRET"));
    }

    #[test]
    fn empty_kvp_calls_need_no_host() {
        let id = VmId(uuid::Uuid::nil());
        assert_eq!(
            HostCall::KvpWriteHost(id, vec![]).trivial_reply(),
            Some(HostReply::Written)
        );
        assert_eq!(
            HostCall::KvpRemoveHost(id, vec![]).trivial_reply(),
            Some(HostReply::KvpRemoved(vec![]))
        );
        assert_eq!(HostCall::Vm(id).trivial_reply(), None);
    }

    #[test]
    fn cleanup_calls_are_checked_and_parsed() {
        let id = VmId(uuid::Uuid::from_u128(1));
        assert!(
            HostCall::KvpRemoveHostPrefix(id, String::new())
                .validate("hv01")
                .is_err()
        );
        assert!(
            HostCall::KvpRemoveHostPrefix(id, "hlvmm.".to_owned())
                .validate("hv01")
                .is_ok()
        );
        let relative = HostCall::RemoveDvdDrive {
            vm: id,
            path: r"web-01\provisioning.iso".to_owned(),
        };
        assert!(relative.validate("hv01").is_err());
        let call = HostCall::RemoveDvdDrive {
            vm: id,
            path: r"C:\VMs\web-01\provisioning.iso".to_owned(),
        };
        assert!(call.validate("hv01").is_ok());
        assert_eq!(call.kind().script(), scripts::REMOVE_VM_DVD_DRIVE);
        assert_eq!(
            call.request("hv01").unwrap(),
            json!({"id": id, "path": r"C:\VMs\web-01\provisioning.iso"})
        );
        // One drive kept (PowerShell writes a one-element array as a bare string).
        let reply = call
            .parse_reply(
                "hv01",
                json!({"id": id, "path": r"C:\VMs\web-01\provisioning.iso",
                    "ejected": 1, "removed": 0, "kept": "IDE drive 1:0 ..."}),
            )
            .unwrap();
        let HostReply::DvdDriveRemoved(removed) = reply else {
            panic!("{reply:?}")
        };
        assert_eq!((removed.ejected, removed.removed), (1, 0));
        assert_eq!(removed.kept.len(), 1);
        let other = json!({"id": uuid::Uuid::from_u128(2), "path": "x", "ejected": 0,
            "removed": 0, "kept": []});
        assert!(call.parse_reply("hv01", other).is_err());
    }

    #[test]
    fn a_power_reply_about_another_vm_is_refused() {
        let asked = VmId(uuid::Uuid::from_u128(1));
        let data = json!({"id": uuid::Uuid::from_u128(2), "name": "web-01",
            "previous_state": 3, "state": 2});
        let err = HostCall::Power(asked, PowerAction::Start)
            .parse_reply("hv01", data)
            .unwrap_err();
        assert!(err.to_string().contains("answered for"), "{err}");
    }

    #[test]
    fn day2_calls_are_checked_sent_and_parsed() {
        let id = VmId(uuid::Uuid::from_u128(9));
        let change = VmSettingsChange {
            processor_count: Some(4),
            automatic_stop_action: Some(AutomaticStopAction::ShutDown),
            notes: Some("secret-ish".to_owned()),
            ..Default::default()
        };
        let call = HostCall::SetVmSettings(id, Box::new(change));
        assert!(call.validate("hv01").is_ok());
        let request = call.request("hv01").unwrap();
        assert_eq!(request["id"], json!(id));
        assert_eq!(request["automatic_stop_action"], "ShutDown");
        assert!(request.get("memory_startup_bytes").is_none());
        assert!(!format!("{call:?}").contains("secret-ish"));
        let empty = HostCall::SetVmSettings(id, Box::default());
        assert!(empty.validate("hv01").is_err());
        let odd = HostCall::SetVmSettings(
            id,
            Box::new(VmSettingsChange {
                memory_startup_bytes: Some((1 << 30) + 1),
                ..Default::default()
            }),
        );
        assert!(odd.validate("hv01").is_err());

        let create = HostCall::CreateVhd(CreateVhdRequest {
            path: r"C:\VMs\web-01\data.vhdx".to_owned(),
            size_bytes: 10 << 30,
            fixed: false,
        });
        assert!(create.validate("hv01").is_ok());
        assert_eq!(create.kind().script(), "New-ManagedVhd");
        let relative = HostCall::CreateVhd(CreateVhdRequest {
            path: "data.vhdx".to_owned(),
            size_bytes: 10 << 30,
            fixed: false,
        });
        assert!(relative.validate("hv01").is_err());

        let disk: DiskId = "scsi-0-1".parse().unwrap();
        let resize = HostCall::ResizeVmDisk {
            vm: id,
            disk,
            size_bytes: 20 << 30,
        };
        assert_eq!(
            resize.request("hv01").unwrap(),
            json!({"id": id, "controller_type": "SCSI", "controller_number": 0,
                "controller_location": 1, "size_bytes": 20u64 << 30})
        );
        let answer = json!({"id": id, "disk": {"path": "x", "controller_type": "SCSI",
            "controller_number": 0, "controller_location": 1, "max_size_bytes": 20u64 << 30}});
        assert!(matches!(
            resize.parse_reply("hv01", answer).unwrap(),
            HostReply::DiskResized(_)
        ));
        let wrong_disk = json!({"id": id, "disk": {"path": "x", "controller_type": "SCSI",
            "controller_number": 0, "controller_location": 2}});
        assert!(resize.parse_reply("hv01", wrong_disk).is_err());
        let detach = HostCall::DetachVmDisk {
            vm: id,
            disk,
            delete_file: true,
        };
        assert!(matches!(
            detach
                .parse_reply("hv01", json!({"id": id, "path": "x", "deleted": true}))
                .unwrap(),
            HostReply::DiskDetached(VmDiskDetached { deleted: true, .. })
        ));
        // Malformed host data is a typed error, never a panic.
        assert!(matches!(
            detach.parse_reply("hv01", json!({"id": 5})),
            Err(Error::OperationOutput { .. })
        ));
    }

    #[test]
    fn set_vm_notes_is_checked_sent_and_parsed() {
        let id = VmId(uuid::Uuid::from_u128(7));
        let call = HostCall::SetVmNotes(id, "aetherv-job:abc".to_owned());
        assert_eq!(call.kind(), OperationKind::SetVmNotes);
        assert_eq!(call.kind().script(), "Set-VmNotes");
        assert!(!call.kind().read_only());
        assert_eq!(call.vm_id(), Some(id));
        assert_eq!(
            call.request("hv01").unwrap(),
            json!({"id": id, "notes": "aetherv-job:abc"})
        );
        assert!(call.validate("hv01").is_ok());
        assert!(
            HostCall::SetVmNotes(id, String::new())
                .validate("hv01")
                .is_ok()
        );
        let too_long = HostCall::SetVmNotes(id, "x".repeat(MAX_VM_NOTES_CHARS + 1));
        assert!(matches!(
            too_long.validate("hv01"),
            Err(Error::InvalidRequest { .. })
        ));
        assert!(
            HostCall::SetVmNotes(id, "a\0b".to_owned())
                .validate("hv01")
                .is_err()
        );
        assert_eq!(
            call.parse_reply("hv01", json!({"id": id, "notes": null}))
                .unwrap(),
            HostReply::NotesSet(VmNotes {
                id,
                notes: String::new()
            })
        );
        let other = json!({"id": uuid::Uuid::from_u128(8), "notes": ""});
        assert!(call.parse_reply("hv01", other).is_err());
        assert_eq!(
            format!("{call:?}"),
            format!("SetVmNotes({id}, 15 characters)")
        );
    }
}
