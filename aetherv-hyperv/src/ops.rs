//! Typed Hyper-V host operations.
//!
//! [`HyperVHost`] is the boundary the layers above use (provisioning, inventory, the server):
//! one method, [`HyperVHost::call`], takes a [`HostCall`] (the one list of operations) and
//! answers with a typed [`HostReply`] or a typed [`Error`]; callers never see PowerShell text
//! or raw JSON. [`HyperVHostExt`] adds a typed method per operation over it, [`HostReader`]
//! is the read-only view an inventory needs, and [`layer`] holds the generic middleware
//! (timeouts, retries of reads, and any [`layer::Middleware`] such as metrics or the
//! deployment gate). [`WinRmHyperVHost`] implements it over a
//! [`crate::executor::PowerShellExecutor`] by running one deployed host script per operation
//! (`assets/powershell/<Name>.ps1`) with the request as one JSON document on stdin; the mock
//! `MockHyperVHost` (feature `mock`) stands in for it in tests of the layers above.
//!
//! # Operations and their scripts
//!
//! | Operation | Script ([`scripts`]) | Request on stdin | `data` of the result |
//! |---|---|---|---|
//! | [`HyperVHostExt::facts`] | `Get-HostFacts` | `{}` | [`HostFacts`] |
//! | [`HyperVHostExt::inventory`] | `Get-Inventory` | `{}` | [`Inventory`] |
//! | [`HyperVHostExt::vm`] | `Get-Inventory` | `{"ids":["<guid>"]}` | [`Inventory`] with one VM |
//! | [`HyperVHostExt::power`] | `Set-VmPowerState` | `{"id","action"}` | [`PowerOutcome`] |
//! | [`HyperVHostExt::delete_vm`] | `Remove-ManagedVm` | `{"id","delete_disks"}` | [`DeletedVm`] |
//! | [`HyperVHostExt::kvp_read_guest`] | `Get-VmKvp` | `{"id"}` | [`GuestKvp`] |
//! | [`HyperVHostExt::kvp_write_host`] | `Set-VmKvp` | `{"id","items":[{"name","value"}]}` (in order) | `{"id","written"}` |
//! | [`HyperVHostExt::kvp_remove_host`] | `Remove-VmKvp` | `{"id","keys":[...]}` | `{"id","removed":[...]}` |
//! | [`HyperVHostExt::copy_image`] (Provisioning.CopyImage) | `Copy-GoldenImage` | [`CopyImageRequest`] | [`CopiedImage`] |
//! | [`HyperVHostExt::copy_provisioning_iso`] (Provisioning.CopyProvisioningISO) | `Copy-ProvisioningIso` | [`CopyIsoRequest`] | [`CopiedIso`] |
//! | [`HyperVHostExt::register_vm`] (Provisioning.RegisterVM) | `Register-ManagedVm` | [`RegisterVmSpec`] | [`Vm`] |
//! | [`HyperVHostExt::add_cluster_role`] | `Add-VmClusterRole` | `{"id"}` | [`ClusterRole`] |
//! | [`HyperVHostExt::remove_cluster_role`] | `Remove-VmClusterRole` | `{"id"}` | [`ClusterRole`] |
//! | [`HyperVHostExt::compare_vm`] | `Test-VmMigration` | `{"id"}` + [`MigrationTarget`] | [`MigrationCheck`] |
//! | [`HyperVHostExt::move_vm`] | `Move-ManagedVm` | `{"id"}` + [`MigrationTarget`] | [`Migrated`] |
//! | [`HyperVHostExt::remove_path`] (compensation) | `Remove-VmPath` | `{"path"}` | [`RemovedPath`] |
//! | `HostCall::KvpRemoveHostPrefix` (cleanup after provisioning) | `Remove-VmKvp` | `{"id","prefix"}` | `{"id","removed":[...]}` |
//! | [`HyperVHostExt::remove_dvd_drive`] (cleanup after provisioning) | `Remove-VmDvdDrive` | `{"id","path"}` | [`DvdDriveRemoved`] |
//! | [`HyperVHostExt::set_vm_notes`] (adopting an orphan) | `Set-VmNotes` | `{"id","notes"}` | [`VmNotes`] |
//! | [`HyperVHostExt::set_vm_settings`] (editing a VM) | `Set-ManagedVmSettings` | `{"id"}` + [`VmSettingsChange`] | [`Vm`] |
//! | [`HyperVHostExt::create_vhd`] (adding a disk) | `New-ManagedVhd` | [`CreateVhdRequest`] | [`CreatedVhd`] |
//! | [`HyperVHostExt::attach_vm_disk`] | `Add-ManagedVmDisk` | `{"id","path"}` | [`VmDiskChanged`] |
//! | [`HyperVHostExt::resize_vm_disk`] | `Resize-ManagedVmDisk` | `{"id","controller_type","controller_number","controller_location","size_bytes"}` | [`VmDiskChanged`] |
//! | [`HyperVHostExt::detach_vm_disk`] | `Remove-ManagedVmDisk` | `{"id","controller_type","controller_number","controller_location","delete_file"}` | [`VmDiskDetached`] |
//! | [`HyperVHostExt::change_checkpoint`] | `Update-VmCheckpoint` | `{"id","action",…}` ([`CheckpointChange`]) | [`CheckpointChanged`] |
//! | [`HyperVHostExt::change_network_adapter`] | `Update-VmNetworkAdapter` | `{"id","action",…}` ([`NicChange`]) | [`NicChanged`] |
//! | [`HyperVHostExt::set_maintenance`] | `Set-HostMaintenance` | `{"record":{…},"cluster_node"}` ([`MaintenanceChange`]) | [`MaintenanceSet`] |
//! | [`HyperVHostExt::move_cluster_role`] | `Move-VmClusterRole` | `{"id","node","migration_type"}` ([`ClusterMove`]) | [`Migrated`] |
//! | [`HyperVHostExt::migration_status`] | `Get-VmMigration` | `{"id"}` | [`MigrationProgress`] |
//! | [`HyperVHostExt::cancel_migration`] | `Stop-VmMigration` | `{"id"}` | [`MigrationCancel`] |
//!
//! Provisioning.WaitForProvisioningKey and Provisioning.PublishProvisioningData are the
//! pipeline's loops over [`HyperVHostExt::kvp_read_guest`] and [`HyperVHostExt::kvp_write_host`].
//! Every script dot-sources `AethervCommon.ps1` (deployed next to it) for the result protocol
//! and the one VM shape.
//!
//! # Errors
//!
//! A script failure `{"ok":false,"error":{"code","message","details"}}` becomes the matching
//! [`Error`] variant: `VmNotFound` → [`Error::UnknownVm`], `VmExists` → [`Error::VmExists`],
//! `InvalidVmState` → [`Error::InvalidVmState`], `InsufficientMemory` →
//! [`Error::InsufficientMemory`], `InsufficientStorage` → [`Error::InsufficientStorage`],
//! `ImageNotFound` → [`Error::UnknownImage`], `SharedDisk` → [`Error::SharedDisk`],
//! `MigrationIncompatible` → [`Error::MigrationIncompatible`] (`MigrationCancelled` and
//! `MigrationFailed` stay [`Error::ScriptFailed`] with that code); any other code →
//! [`Error::ScriptFailed`] with the host, the operation, the code and the message. Output
//! without a well-formed result (e.g. powershell.exe's "-File ... does not exist" when the
//! scripts are not deployed; its stderr is quoted), or data of the wrong shape, is
//! [`Error::OperationOutput`]. Arguments that cannot be right are refused before anything is
//! sent ([`Error::InvalidRequest`]: VM names with path characters, relative or wildcard paths,
//! KVP items over Hyper-V's 511/2047-byte limits, memory not a multiple of 2 MiB, VLANs
//! outside 1..=4094, `remove_path` on a volume or top-level folder).
//!
//! The simulator's emulations carry `details` as the `data` of a failed result (the
//! [`crate::protocol::ScriptFailure`] type has no details field); both places are read.

mod call;
mod devices;
pub mod layer;
mod maintenance;
mod roots;
mod types;
mod vm_config;
mod winrm;

use std::sync::Arc;

use async_trait::async_trait;

pub use self::call::{
    HostCall, HostReply, KVP_MAX_KEY_BYTES, KVP_MAX_VALUE_BYTES, MAX_VM_NOTES_CHARS, OperationKind,
    VHDX_MAX_BYTES,
};
pub use self::devices::*;
pub use self::maintenance::*;
pub use self::roots::ImageRoots;
pub use self::types::*;
pub use self::vm_config::*;
pub use self::winrm::WinRmHyperVHost;
use crate::error::{Error, Result};

/// Host script names (file stems under `assets/powershell/`). Which operation runs which
/// script is [`OperationKind::script`].
pub mod scripts {
    /// Host facts.
    pub const GET_HOST_FACTS: &str = "Get-HostFacts";
    /// Inventory of all VMs (or of the VMs with the given ids).
    pub const GET_INVENTORY: &str = "Get-Inventory";
    /// Power actions.
    pub const SET_VM_POWER_STATE: &str = "Set-VmPowerState";
    /// Delete a VM.
    pub const REMOVE_MANAGED_VM: &str = "Remove-ManagedVm";
    /// Read guest KVP items.
    pub const GET_VM_KVP: &str = "Get-VmKvp";
    /// Write host KVP items.
    pub const SET_VM_KVP: &str = "Set-VmKvp";
    /// Remove host KVP items.
    pub const REMOVE_VM_KVP: &str = "Remove-VmKvp";
    /// Provisioning.CopyImage.
    pub const COPY_GOLDEN_IMAGE: &str = "Copy-GoldenImage";
    /// Provisioning.CopyProvisioningISO.
    pub const COPY_PROVISIONING_ISO: &str = "Copy-ProvisioningIso";
    /// Provisioning.RegisterVM.
    pub const REGISTER_MANAGED_VM: &str = "Register-ManagedVm";
    /// Add the VM's cluster role.
    pub const ADD_VM_CLUSTER_ROLE: &str = "Add-VmClusterRole";
    /// Remove the VM's cluster role.
    pub const REMOVE_VM_CLUSTER_ROLE: &str = "Remove-VmClusterRole";
    /// Compare-VM.
    pub const TEST_VM_MIGRATION: &str = "Test-VmMigration";
    /// Move-VM.
    pub const MOVE_MANAGED_VM: &str = "Move-ManagedVm";
    /// Compensation: remove a file or folder under the VM root.
    pub const REMOVE_VM_PATH: &str = "Remove-VmPath";
    /// Eject and remove the DVD drive holding the provisioning ISO.
    pub const REMOVE_VM_DVD_DRIVE: &str = "Remove-VmDvdDrive";
    /// Set a VM's notes (e.g. clear the provisioning marker when an orphan is adopted).
    pub const SET_VM_NOTES: &str = "Set-VmNotes";
    /// Changes a VM's processors, memory, notes, automatic actions, Secure Boot and vTPM.
    pub const SET_MANAGED_VM_SETTINGS: &str = "Set-ManagedVmSettings";
    /// Creates a blank VHDX.
    pub const NEW_MANAGED_VHD: &str = "New-ManagedVhd";
    /// Attaches a disk file to a VM's first free SCSI location.
    pub const ADD_MANAGED_VM_DISK: &str = "Add-ManagedVmDisk";
    /// Grows a VM's disk.
    pub const RESIZE_MANAGED_VM_DISK: &str = "Resize-ManagedVmDisk";
    /// Detaches a VM's disk, optionally deleting its file.
    pub const REMOVE_MANAGED_VM_DISK: &str = "Remove-ManagedVmDisk";
    /// Create, apply, rename or remove a checkpoint.
    pub const UPDATE_VM_CHECKPOINT: &str = "Update-VmCheckpoint";
    /// Add, change or remove a network adapter.
    pub const UPDATE_VM_NETWORK_ADAPTER: &str = "Update-VmNetworkAdapter";
    /// Writes the host's maintenance state file; pauses or resumes its cluster node.
    pub const SET_HOST_MAINTENANCE: &str = "Set-HostMaintenance";
    /// Move a clustered VM's role to another node (`Move-ClusterVirtualMachineRole`).
    pub const MOVE_VM_CLUSTER_ROLE: &str = "Move-VmClusterRole";
    /// Read the VM's migration job (`Msvm_MigrationJob`).
    pub const GET_VM_MIGRATION: &str = "Get-VmMigration";
    /// Cancel the VM's migration job before its switch-over.
    pub const STOP_VM_MIGRATION: &str = "Stop-VmMigration";
    /// Shared helpers every script dot-sources (not an operation).
    pub const COMMON: &str = "AethervCommon";

    /// Every operation script (each serves at least one [`super::OperationKind`]; a unit test
    /// checks both directions).
    pub const ALL: [&str; 28] = [
        GET_HOST_FACTS,
        GET_INVENTORY,
        SET_VM_POWER_STATE,
        REMOVE_MANAGED_VM,
        GET_VM_KVP,
        SET_VM_KVP,
        REMOVE_VM_KVP,
        COPY_GOLDEN_IMAGE,
        COPY_PROVISIONING_ISO,
        REGISTER_MANAGED_VM,
        ADD_VM_CLUSTER_ROLE,
        REMOVE_VM_CLUSTER_ROLE,
        TEST_VM_MIGRATION,
        MOVE_MANAGED_VM,
        REMOVE_VM_PATH,
        REMOVE_VM_DVD_DRIVE,
        SET_VM_NOTES,
        SET_MANAGED_VM_SETTINGS,
        NEW_MANAGED_VHD,
        ADD_MANAGED_VM_DISK,
        RESIZE_MANAGED_VM_DISK,
        REMOVE_MANAGED_VM_DISK,
        UPDATE_VM_CHECKPOINT,
        UPDATE_VM_NETWORK_ADAPTER,
        SET_HOST_MAINTENANCE,
        MOVE_VM_CLUSTER_ROLE,
        GET_VM_MIGRATION,
        STOP_VM_MIGRATION,
    ];
}

/// One Hyper-V host: the boundary every layer above uses (provisioning, inventory, the
/// server). One method does everything: [`HyperVHost::call`] takes a [`HostCall`] and answers
/// with the matching [`HostReply`]; [`HyperVHostExt`] adds a typed method per operation on
/// top of it. Because every operation passes through one method, metrics, the deployment
/// gate, timeouts and retries are generic [`layer`]s rather than per-operation forwarders.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait HyperVHost: Send + Sync {
    /// The host's name (for messages).
    fn host_name(&self) -> &str;

    /// Performs one operation. The reply is the variant of [`HostReply`] that answers
    /// `call` (implementations must keep to that; [`HyperVHostExt`] reports anything else
    /// as [`Error::OperationOutput`]).
    async fn call(&self, call: HostCall) -> Result<HostReply>;
}

#[async_trait]
impl<T: HyperVHost + ?Sized> HyperVHost for Arc<T> {
    fn host_name(&self) -> &str {
        (**self).host_name()
    }

    async fn call(&self, call: HostCall) -> Result<HostReply> {
        (**self).call(call).await
    }
}

/// The error for a reply that does not answer the call (a `HyperVHost` implementation that
/// broke its contract; the reply itself is not shown, it may be large).
fn mismatched(host: &str, kind: OperationKind, _reply: &HostReply) -> Error {
    Error::OperationOutput {
        host: host.to_owned(),
        operation: kind.describe(),
        detail: format!("the host's reply is not an answer to a {kind} call"),
    }
}

/// Unwraps the expected reply variant.
macro_rules! expect_reply {
    ($host:expr, $call:expr, $pattern:pat => $value:expr) => {{
        let call = $call;
        let kind = call.kind();
        match $host.call(call).await? {
            $pattern => Ok($value),
            other => Err(mismatched($host.host_name(), kind, &other)),
        }
    }};
}

/// Typed methods over [`HyperVHost::call`], one per operation; implemented for every host.
#[async_trait]
pub trait HyperVHostExt: HyperVHost {
    /// [`HostCall::Facts`].
    async fn facts(&self) -> Result<HostFacts> {
        expect_reply!(self, HostCall::Facts, HostReply::Facts(f) => *f)
    }

    /// [`HostCall::Inventory`].
    async fn inventory(&self) -> Result<Inventory> {
        expect_reply!(self, HostCall::Inventory, HostReply::Inventory(i) => i)
    }

    /// [`HostCall::InventorySince`].
    async fn inventory_since(&self, digest: &str) -> Result<Inventory> {
        expect_reply!(self, HostCall::InventorySince(digest.to_owned()), HostReply::Inventory(i) => i)
    }

    /// [`HostCall::Vm`].
    async fn vm(&self, id: VmId) -> Result<Vm> {
        expect_reply!(self, HostCall::Vm(id), HostReply::Vm(vm) => *vm)
    }

    /// [`HostCall::Power`].
    async fn power(&self, id: VmId, action: PowerAction) -> Result<PowerOutcome> {
        expect_reply!(self, HostCall::Power(id, action), HostReply::Power(o) => o)
    }

    /// [`HostCall::DeleteVm`].
    async fn delete_vm(&self, id: VmId, delete_disks: bool) -> Result<DeletedVm> {
        expect_reply!(self, HostCall::DeleteVm { id, delete_disks }, HostReply::Deleted(d) => d)
    }

    /// [`HostCall::KvpReadGuest`].
    async fn kvp_read_guest(&self, id: VmId) -> Result<GuestKvp> {
        expect_reply!(self, HostCall::KvpReadGuest(id), HostReply::GuestKvp(k) => k)
    }

    /// [`HostCall::KvpWriteHost`].
    async fn kvp_write_host(&self, id: VmId, items: Vec<(String, String)>) -> Result<()> {
        expect_reply!(self, HostCall::KvpWriteHost(id, items), HostReply::Written => ())
    }

    /// [`HostCall::KvpRemoveHost`].
    async fn kvp_remove_host(&self, id: VmId, keys: Vec<String>) -> Result<Vec<String>> {
        expect_reply!(self, HostCall::KvpRemoveHost(id, keys), HostReply::KvpRemoved(k) => k)
    }

    /// [`HostCall::CopyImage`] (Provisioning.CopyImage).
    async fn copy_image(&self, request: CopyImageRequest) -> Result<CopiedImage> {
        expect_reply!(self, HostCall::CopyImage(request), HostReply::CopiedImage(c) => c)
    }

    /// [`HostCall::CopyIso`] (Provisioning.CopyProvisioningISO).
    async fn copy_provisioning_iso(&self, request: CopyIsoRequest) -> Result<CopiedIso> {
        expect_reply!(self, HostCall::CopyIso(request), HostReply::CopiedIso(c) => c)
    }

    /// [`HostCall::RegisterVm`] (Provisioning.RegisterVM).
    async fn register_vm(&self, spec: RegisterVmSpec) -> Result<Vm> {
        expect_reply!(self, HostCall::RegisterVm(Box::new(spec)), HostReply::Registered(vm) => *vm)
    }

    /// [`HostCall::AddClusterRole`].
    async fn add_cluster_role(&self, id: VmId) -> Result<ClusterRole> {
        expect_reply!(self, HostCall::AddClusterRole(id), HostReply::ClusterRole(r) => r)
    }

    /// [`HostCall::RemoveClusterRole`].
    async fn remove_cluster_role(&self, id: VmId) -> Result<ClusterRole> {
        expect_reply!(self, HostCall::RemoveClusterRole(id), HostReply::ClusterRole(r) => r)
    }

    /// [`HostCall::CompareVm`].
    async fn compare_vm(&self, id: VmId, target: MigrationTarget) -> Result<MigrationCheck> {
        expect_reply!(self, HostCall::CompareVm(id, target), HostReply::MigrationCheck(c) => c)
    }

    /// [`HostCall::MoveVm`].
    async fn move_vm(&self, id: VmId, target: MigrationTarget) -> Result<Migrated> {
        expect_reply!(self, HostCall::MoveVm(id, target), HostReply::Migrated(m) => m)
    }

    /// [`HostCall::MoveClusterRole`].
    async fn move_cluster_role(&self, id: VmId, to: ClusterMove) -> Result<Migrated> {
        expect_reply!(self, HostCall::MoveClusterRole(id, to), HostReply::Migrated(m) => m)
    }

    /// [`HostCall::MigrationStatus`].
    async fn migration_status(&self, id: VmId) -> Result<MigrationProgress> {
        expect_reply!(self, HostCall::MigrationStatus(id), HostReply::MigrationProgress(p) => p)
    }

    /// [`HostCall::CancelMigration`].
    async fn cancel_migration(&self, id: VmId) -> Result<MigrationCancel> {
        expect_reply!(self, HostCall::CancelMigration(id), HostReply::MigrationCancel(c) => c)
    }

    /// [`HostCall::RemovePath`].
    async fn remove_path(&self, path: String) -> Result<RemovedPath> {
        expect_reply!(self, HostCall::RemovePath(path), HostReply::RemovedPath(r) => r)
    }

    /// [`HostCall::RemoveDvdDrive`].
    async fn remove_dvd_drive(&self, vm: VmId, path: String) -> Result<DvdDriveRemoved> {
        expect_reply!(self, HostCall::RemoveDvdDrive { vm, path }, HostReply::DvdDriveRemoved(r) => r)
    }

    /// [`HostCall::SetVmNotes`].
    async fn set_vm_notes(&self, id: VmId, notes: String) -> Result<VmNotes> {
        expect_reply!(self, HostCall::SetVmNotes(id, notes), HostReply::NotesSet(n) => n)
    }

    /// [`HostCall::SetVmSettings`].
    async fn set_vm_settings(&self, id: VmId, change: VmSettingsChange) -> Result<Vm> {
        expect_reply!(self, HostCall::SetVmSettings(id, Box::new(change)), HostReply::SettingsSet(vm) => *vm)
    }

    /// [`HostCall::CreateVhd`].
    async fn create_vhd(&self, request: CreateVhdRequest) -> Result<CreatedVhd> {
        expect_reply!(self, HostCall::CreateVhd(request), HostReply::VhdCreated(c) => c)
    }

    /// [`HostCall::AttachVmDisk`].
    async fn attach_vm_disk(&self, vm: VmId, path: String) -> Result<VmDiskChanged> {
        expect_reply!(self, HostCall::AttachVmDisk { vm, path }, HostReply::DiskAttached(d) => d)
    }

    /// [`HostCall::ResizeVmDisk`].
    async fn resize_vm_disk(
        &self,
        vm: VmId,
        disk: DiskId,
        size_bytes: u64,
    ) -> Result<VmDiskChanged> {
        expect_reply!(self, HostCall::ResizeVmDisk { vm, disk, size_bytes }, HostReply::DiskResized(d) => d)
    }

    /// [`HostCall::DetachVmDisk`].
    async fn detach_vm_disk(
        &self,
        vm: VmId,
        disk: DiskId,
        delete_file: bool,
    ) -> Result<VmDiskDetached> {
        expect_reply!(self, HostCall::DetachVmDisk { vm, disk, delete_file }, HostReply::DiskDetached(d) => d)
    }

    /// [`HostCall::CheckpointChange`].
    async fn change_checkpoint(
        &self,
        id: VmId,
        change: CheckpointChange,
    ) -> Result<CheckpointChanged> {
        expect_reply!(self, HostCall::CheckpointChange(id, change), HostReply::CheckpointChanged(c) => c)
    }

    /// [`HostCall::NetworkAdapterChange`].
    async fn change_network_adapter(&self, id: VmId, change: NicChange) -> Result<NicChanged> {
        expect_reply!(self, HostCall::NetworkAdapterChange(id, change), HostReply::NicChanged(c) => c)
    }

    /// [`HostCall::SetMaintenance`].
    async fn set_maintenance(&self, change: MaintenanceChange) -> Result<MaintenanceSet> {
        expect_reply!(self, HostCall::SetMaintenance(Box::new(change)), HostReply::MaintenanceSet(m) => m)
    }
}

impl<T: HyperVHost + ?Sized> HyperVHostExt for T {}

/// The read-only view of a host that an inventory needs: facts, the VM list and one VM.
/// Narrower than [`HyperVHost`], so a cache cannot change anything; [`ReadOnlyHost`] adapts
/// any [`HyperVHost`].
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait HostReader: Send + Sync {
    /// The host's name.
    fn host_name(&self) -> &str;

    /// [`HostCall::Facts`].
    async fn read_facts(&self) -> Result<HostFacts>;

    /// [`HostCall::Inventory`].
    async fn read_inventory(&self) -> Result<Inventory>;

    /// [`HostCall::InventorySince`]: the inventory, or [`Inventory::unchanged`] when the
    /// host's VM set still has `digest`. By default the whole inventory.
    async fn read_inventory_since(&self, digest: &str) -> Result<Inventory> {
        let _ = digest;
        self.read_inventory().await
    }

    /// [`HostCall::Vm`].
    async fn read_vm(&self, id: VmId) -> Result<Vm>;
}

/// A [`HyperVHost`] seen through [`HostReader`].
#[derive(Clone)]
pub struct ReadOnlyHost(pub Arc<dyn HyperVHost>);

impl std::fmt::Debug for ReadOnlyHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ReadOnlyHost")
            .field(&self.0.host_name())
            .finish()
    }
}

#[async_trait]
impl HostReader for ReadOnlyHost {
    fn host_name(&self) -> &str {
        self.0.host_name()
    }

    async fn read_facts(&self) -> Result<HostFacts> {
        self.0.facts().await
    }

    async fn read_inventory(&self) -> Result<Inventory> {
        self.0.inventory().await
    }

    async fn read_inventory_since(&self, digest: &str) -> Result<Inventory> {
        self.0.inventory_since(digest).await
    }

    async fn read_vm(&self, id: VmId) -> Result<Vm> {
        self.0.vm(id).await
    }
}

/// Applies `action` to a VM whose state is known (e.g. from the inventory), refusing with
/// [`Error::InvalidVmState`] without calling the host when the table on [`PowerAction`] does
/// not allow it.
pub async fn power_checked<H: HyperVHost + ?Sized>(
    host: &H,
    vm: &Vm,
    action: PowerAction,
) -> Result<PowerOutcome> {
    check_power(host.host_name(), vm, action)?;
    host.power(vm.id, action).await
}

/// The allowed-state check of [`power_checked`].
pub fn check_power(host: &str, vm: &Vm, action: PowerAction) -> Result<()> {
    if action.allowed_from(vm.state) {
        Ok(())
    } else {
        Err(Error::InvalidVmState {
            host: host.to_owned(),
            vm: vm.name.clone(),
            state: vm.state.name(),
            operation: action.verb(),
        })
    }
}
