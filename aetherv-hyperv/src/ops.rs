//! Typed Hyper-V host operations.
//!
//! [`HyperVHost`] is the boundary the layers above use (provisioning, inventory, the server):
//! typed requests in, typed results or typed [`Error`]s out; they never see PowerShell text or
//! raw JSON. [`WinRmHyperVHost`] implements it over a [`crate::executor::PowerShellExecutor`] by running one
//! deployed host script per operation (`assets/powershell/<Name>.ps1`) with the request as one
//! JSON document on stdin; [`MockHyperVHost`] (mockall) stands in for it in tests of the layers
//! above.
//!
//! # Operations and their scripts
//!
//! | Operation | Script ([`scripts`]) | Request on stdin | `data` of the result |
//! |---|---|---|---|
//! | [`HyperVHost::facts`] | `Get-HostFacts` | `{}` | [`HostFacts`] |
//! | [`HyperVHost::inventory`] | `Get-Inventory` | `{}` | [`Inventory`] |
//! | [`HyperVHost::vm`] | `Get-Inventory` | `{"ids":["<guid>"]}` | [`Inventory`] with one VM |
//! | [`HyperVHost::power`] | `Set-VmPowerState` | `{"id","action"}` | [`PowerOutcome`] |
//! | [`HyperVHost::delete_vm`] | `Remove-ManagedVm` | `{"id","delete_disks"}` | [`DeletedVm`] |
//! | [`HyperVHost::kvp_read_guest`] | `Get-VmKvp` | `{"id"}` | [`GuestKvp`] |
//! | [`HyperVHost::kvp_write_host`] | `Set-VmKvp` | `{"id","items":[{"name","value"}]}` (in order) | `{"id","written"}` |
//! | [`HyperVHost::kvp_remove_host`] | `Remove-VmKvp` | `{"id","keys":[...]}` | `{"id","removed":[...]}` |
//! | [`HyperVHost::copy_image`] (Provisioning.CopyImage) | `Copy-GoldenImage` | [`CopyImageRequest`] | [`CopiedImage`] |
//! | [`HyperVHost::copy_provisioning_iso`] (Provisioning.CopyProvisioningISO) | `Copy-ProvisioningIso` | [`CopyIsoRequest`] | [`CopiedIso`] |
//! | [`HyperVHost::register_vm`] (Provisioning.RegisterVM) | `Register-ManagedVm` | [`RegisterVmSpec`] | [`Vm`] |
//! | [`HyperVHost::add_cluster_role`] | `Add-VmClusterRole` | `{"id"}` | [`ClusterRole`] |
//! | [`HyperVHost::remove_cluster_role`] | `Remove-VmClusterRole` | `{"id"}` | [`ClusterRole`] |
//! | [`HyperVHost::compare_vm`] | `Test-VmMigration` | `{"id"}` + [`MigrationTarget`] | [`MigrationCheck`] |
//! | [`HyperVHost::move_vm`] | `Move-ManagedVm` | `{"id"}` + [`MigrationTarget`] | [`Migrated`] |
//! | [`HyperVHost::remove_path`] (compensation) | `Remove-VmPath` | `{"path"}` | [`RemovedPath`] |
//!
//! Provisioning.WaitForProvisioningKey and Provisioning.PublishProvisioningData are the
//! pipeline's loops over [`HyperVHost::kvp_read_guest`] and [`HyperVHost::kvp_write_host`].
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
//! `MigrationIncompatible` → [`Error::MigrationIncompatible`]; any other code →
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

mod types;
mod winrm;

use async_trait::async_trait;

pub use self::types::*;
pub use self::winrm::WinRmHyperVHost;
use crate::error::{Error, Result};

/// Host script names (file stems under `assets/powershell/`), one per operation.
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
    /// Shared helpers every script dot-sources (not an operation).
    pub const COMMON: &str = "AethervCommon";

    /// Every operation script.
    pub const ALL: [&str; 15] = [
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
    ];
}

/// Typed operations on one Hyper-V host.
#[mockall::automock]
#[async_trait]
pub trait HyperVHost: Send + Sync {
    /// The host's name (for messages).
    fn host_name(&self) -> &str;

    /// Identity, capacity, storage, switches, images, ISOs and script version.
    async fn facts(&self) -> Result<HostFacts>;

    /// Every VM on the host, in one round trip.
    async fn inventory(&self) -> Result<Inventory>;

    /// One VM by id ([`Error::UnknownVm`] when the host has none).
    async fn vm(&self, id: VmId) -> Result<Vm>;

    /// Applies a power action (see [`PowerAction`] for the allowed states; the script
    /// re-checks the state when it acts).
    async fn power(&self, id: VmId, action: PowerAction) -> Result<PowerOutcome>;

    /// Deletes an Off VM, with or without its disks. Deleting disks that another VM also
    /// uses (or shared VHDX/VHD Set disks) is refused with [`Error::SharedDisk`].
    async fn delete_vm(&self, id: VmId, delete_disks: bool) -> Result<DeletedVm>;

    /// The KVP items the guest published (guest-to-host and intrinsic).
    async fn kvp_read_guest(&self, id: VmId) -> Result<GuestKvp>;

    /// Writes (adds or replaces) host-to-guest KVP items, one after the other in the given
    /// order (the guest protocol depends on it: the state item goes last).
    async fn kvp_write_host(&self, id: VmId, items: Vec<(String, String)>) -> Result<()>;

    /// Removes host-to-guest KVP items; returns the keys that existed.
    async fn kvp_remove_host(&self, id: VmId, keys: Vec<String>) -> Result<Vec<String>>;

    /// Provisioning.CopyImage.
    async fn copy_image(&self, request: CopyImageRequest) -> Result<CopiedImage>;

    /// Provisioning.CopyProvisioningISO.
    async fn copy_provisioning_iso(&self, request: CopyIsoRequest) -> Result<CopiedIso>;

    /// Provisioning.RegisterVM: creates the VM over the copied disk, optionally starts it.
    async fn register_vm(&self, spec: RegisterVmSpec) -> Result<Vm>;

    /// Makes the VM a highly available cluster role.
    async fn add_cluster_role(&self, id: VmId) -> Result<ClusterRole>;

    /// Removes the VM's cluster role (the VM stays on the host).
    async fn remove_cluster_role(&self, id: VmId) -> Result<ClusterRole>;

    /// Checks whether the VM can move (Compare-VM).
    async fn compare_vm(&self, id: VmId, target: MigrationTarget) -> Result<MigrationCheck>;

    /// Live-migrates the VM (Move-VM), with or without its storage.
    async fn move_vm(&self, id: VmId, target: MigrationTarget) -> Result<Migrated>;

    /// Compensation: removes a file or folder, only below the host's VM folder root.
    async fn remove_path(&self, path: String) -> Result<RemovedPath>;
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
