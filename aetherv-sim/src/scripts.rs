//! Emulations of the project's host scripts.
//!
//! The real scripts (`aetherv-hyperv/assets/powershell/<Name>.ps1`) arrive later. The
//! simulated host recognises a script by its file name in
//! `powershell.exe ... -File <install directory>\<Name>.ps1` (see [`aetherv_hyperv::protocol`]), reads
//! the JSON request from stdin, runs the emulation registered under `<Name>` against the fleet
//! model, and prints the result document between the marker lines; the exit code is 0 for
//! `ok: true` and 1 otherwise. A name with no emulation behaves like a missing file.
//!
//! # Adding an emulation when a script lands
//!
//! 1. Write a function `fn(&mut ScriptContext<'_>, &serde_json::Value) -> ScriptResult` that
//!    reads the same request the script reads and returns the same `data` shape the script
//!    prints (keep both in one place: the script's doc comment is the contract).
//! 2. Register it in [`ScriptRegistry::builtin`] under the script's file name, or at run time
//!    with [`ScriptRegistry::register`] / [`crate::SimOptions::scripts`].
//! 3. Mutations go through [`ScriptContext::state_mut`] (KVP writes through
//!    [`crate::SimState::set_host_kvp`] so guest agents react).
//!
//! Built in: every operation script of [`aetherv_hyperv::ops::scripts`] (emulations in [`ops`]), plus
//! [`INVENTORY`], the former name of `Get-Inventory`, kept as an alias for existing callers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::model::{Host, SimVm, rfc3339};
use crate::state::SimState;
use aetherv_hyperv::protocol::ScriptResult;

/// Script name of the host facts emulation.
pub const GET_HOST_FACTS: &str = "Get-HostFacts";
/// Former script name of the VM inventory emulation (an alias of
/// [`aetherv_hyperv::ops::scripts::GET_INVENTORY`]).
pub const INVENTORY: &str = "Inventory";

pub mod ops;
pub mod vm_edit;

/// What an emulation can see and change.
#[derive(Debug)]
pub struct ScriptContext<'a> {
    state: &'a mut SimState,
    host: String,
    now: SystemTime,
    install_directory: String,
    migration_fault: Option<u8>,
    waits_for: Option<PendingMove>,
}

/// A script that blocks on a migration job (`Move-VM` and friends wait for the host's
/// `Msvm_MigrationJob`): the command ends when the job ends, with `data` on success.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingMove {
    /// The VM that moves.
    pub vm: uuid::Uuid,
    /// The host it moves to (named in failures).
    pub destination: String,
    /// The script's `data` when the move completes.
    pub data: Value,
}

impl PendingMove {
    /// The script's result once the move has ended, `None` while it runs.
    pub fn result(&self, state: &SimState) -> Option<ScriptResult> {
        use crate::migration::MigrationState;
        let details = json!({ "vm": self.vm.to_string(), "destination": self.destination });
        match state.migration(self.vm).map(|m| &m.state) {
            Some(MigrationState::Running) => None,
            Some(MigrationState::Completed) => Some(ScriptResult::success(self.data.clone())),
            Some(MigrationState::Cancelled) => Some(ops::fail(
                "MigrationCancelled",
                "The operation was cancelled: the virtual machine migration was cancelled before \
                 its switch-over; the virtual machine keeps running on the source host.",
                details,
            )),
            Some(MigrationState::Failed(message)) => {
                Some(ops::fail("MigrationFailed", message.clone(), details))
            }
            None => Some(ops::fail(
                "MigrationFailed",
                "The migration job disappeared.",
                details,
            )),
        }
    }
}

impl<'a> ScriptContext<'a> {
    /// A context for a script running on `host` at `now`.
    pub fn new(state: &'a mut SimState, host: &str, now: SystemTime) -> Self {
        Self {
            state,
            host: host.to_owned(),
            now,
            install_directory: aetherv_hyperv::protocol::DEFAULT_INSTALL_DIRECTORY.to_owned(),
            migration_fault: None,
            waits_for: None,
        }
    }

    /// The same context for a script deployed in `dir` (the host's install directory).
    #[must_use]
    pub fn in_directory(mut self, dir: &str) -> Self {
        dir.clone_into(&mut self.install_directory);
        self
    }

    /// The install directory the script runs from.
    pub fn install_directory(&self) -> &str {
        &self.install_directory
    }

    /// Fault injection: moves started by this script run fail at this percentage
    /// ([`crate::faults::Fault::FailMigration`]).
    pub fn with_migration_fault(mut self, at_percent: Option<u8>) -> Self {
        self.migration_fault = at_percent;
        self
    }

    /// The injected migration failure of this run, if any.
    pub fn migration_fault(&self) -> Option<u8> {
        self.migration_fault
    }

    /// Makes the command wait for a move before it answers (the emulation's own result is
    /// then ignored).
    pub fn wait_for(&mut self, pending: PendingMove) {
        self.waits_for = Some(pending);
    }

    /// The move this run waits for, if any.
    pub fn pending(&mut self) -> Option<PendingMove> {
        self.waits_for.take()
    }

    /// Name of the host the script runs on.
    pub fn host_name(&self) -> &str {
        &self.host
    }

    /// The time the script runs at.
    pub fn now(&self) -> SystemTime {
        self.now
    }

    /// The simulator state.
    pub fn state(&self) -> &SimState {
        self.state
    }

    /// Mutable simulator state.
    pub fn state_mut(&mut self) -> &mut SimState {
        self.state
    }

    /// The host the script runs on.
    pub fn host(&self) -> Result<&Host> {
        self.state
            .fleet()
            .host(&self.host)
            .ok_or_else(|| Error::UnknownHost {
                host: self.host.clone(),
            })
    }
}

/// An emulated host script.
pub trait ScriptEmulator: Send + Sync {
    /// Runs the script for one request (the parsed stdin document).
    fn run(&self, ctx: &mut ScriptContext<'_>, request: &Value) -> ScriptResult;

    /// What the script prints for one request: [`ScriptEmulator::run`]'s result, rendered. An
    /// emulation with large answers writes the same text without building a JSON tree.
    fn output(&self, ctx: &mut ScriptContext<'_>, request: &Value) -> RenderedResult {
        RenderedResult::from(&self.run(ctx, request))
    }
}

/// A script's printed result: the stdout text of its result document and whether it
/// succeeded (the exit code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedResult {
    /// Whether the result is `ok`.
    pub ok: bool,
    /// The stdout text ([`ScriptResult::render`]'s form).
    pub stdout: String,
}

impl RenderedResult {
    /// A successful result carrying `data`, written straight from it (a failure if `data`
    /// cannot be written).
    pub fn success<T: serde::Serialize + ?Sized>(data: &T) -> Self {
        let (stdout, ok) = aetherv_hyperv::protocol::render_success(data);
        Self { ok, stdout }
    }
}

impl From<&ScriptResult> for RenderedResult {
    fn from(result: &ScriptResult) -> Self {
        Self {
            ok: result.ok,
            stdout: result.render(),
        }
    }
}

/// `Inventory` and `Get-Inventory`: a whole list is written as text straight from the fleet
/// model ([`inventory_output`]); `Get-Inventory` also reads single VMs by id
/// ([`ops::get_inventory`]).
struct InventoryScript {
    /// Whether the request may name VMs by id (`Get-Inventory`).
    by_id: bool,
}

impl ScriptEmulator for InventoryScript {
    fn run(&self, ctx: &mut ScriptContext<'_>, request: &Value) -> ScriptResult {
        if self.by_id {
            ops::get_inventory(ctx, request)
        } else {
            inventory(ctx, request)
        }
    }

    fn output(&self, ctx: &mut ScriptContext<'_>, request: &Value) -> RenderedResult {
        if self.by_id && !ops::requested_ids(request).is_empty() {
            RenderedResult::from(&ops::get_inventory(ctx, request))
        } else {
            inventory_output(ctx, request)
        }
    }
}

impl<F> ScriptEmulator for F
where
    F: Fn(&mut ScriptContext<'_>, &Value) -> ScriptResult + Send + Sync,
{
    fn run(&self, ctx: &mut ScriptContext<'_>, request: &Value) -> ScriptResult {
        self(ctx, request)
    }
}

/// Script emulations by name (case-insensitive).
#[derive(Clone, Default)]
pub struct ScriptRegistry {
    scripts: BTreeMap<String, (String, Arc<dyn ScriptEmulator>)>,
}

impl std::fmt::Debug for ScriptRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl ScriptRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The built-in emulations: every script of [`aetherv_hyperv::ops::scripts::ALL`] and the
    /// [`INVENTORY`] alias.
    pub fn builtin() -> Self {
        use aetherv_hyperv::ops::scripts as s;
        let mut registry = Self::new();
        registry.register(GET_HOST_FACTS, get_host_facts);
        registry.register(INVENTORY, InventoryScript { by_id: false });
        registry.register(s::GET_INVENTORY, InventoryScript { by_id: true });
        registry.register(s::SET_VM_POWER_STATE, ops::set_vm_power_state);
        registry.register(s::REMOVE_MANAGED_VM, ops::remove_managed_vm);
        registry.register(s::GET_VM_KVP, ops::get_vm_kvp);
        registry.register(s::SET_VM_KVP, ops::set_vm_kvp);
        registry.register(s::REMOVE_VM_KVP, ops::remove_vm_kvp);
        registry.register(s::COPY_GOLDEN_IMAGE, ops::copy_golden_image);
        registry.register(s::COPY_PROVISIONING_ISO, ops::copy_provisioning_iso);
        registry.register(s::REGISTER_MANAGED_VM, ops::register_managed_vm);
        registry.register(s::ADD_VM_CLUSTER_ROLE, ops::add_vm_cluster_role);
        registry.register(s::REMOVE_VM_CLUSTER_ROLE, ops::remove_vm_cluster_role);
        registry.register(s::TEST_VM_MIGRATION, ops::test_vm_migration);
        registry.register(s::MOVE_MANAGED_VM, ops::move_managed_vm);
        registry.register(s::REMOVE_VM_PATH, ops::remove_vm_path);
        registry.register(s::REMOVE_VM_DVD_DRIVE, ops::remove_vm_dvd_drive);
        registry.register(s::SET_VM_NOTES, ops::set_vm_notes);
        registry.register(s::SET_MANAGED_VM_SETTINGS, vm_edit::set_managed_vm_settings);
        registry.register(s::NEW_MANAGED_VHD, vm_edit::new_managed_vhd);
        registry.register(s::ADD_MANAGED_VM_DISK, vm_edit::add_managed_vm_disk);
        registry.register(s::RESIZE_MANAGED_VM_DISK, vm_edit::resize_managed_vm_disk);
        registry.register(s::REMOVE_MANAGED_VM_DISK, vm_edit::remove_managed_vm_disk);
        registry.register(s::UPDATE_VM_CHECKPOINT, ops::devices::update_vm_checkpoint);
        registry.register(s::MOVE_VM_CLUSTER_ROLE, ops::migrate::move_vm_cluster_role);
        registry.register(s::GET_VM_MIGRATION, ops::migrate::get_vm_migration);
        registry.register(s::STOP_VM_MIGRATION, ops::migrate::stop_vm_migration);
        registry.register(
            s::SET_HOST_MAINTENANCE,
            crate::maintenance::set_host_maintenance,
        );
        registry.register(
            s::UPDATE_VM_NETWORK_ADAPTER,
            ops::devices::update_vm_network_adapter,
        );
        registry
    }

    /// Registers (or replaces) the emulation of script `name`.
    pub fn register(&mut self, name: &str, emulator: impl ScriptEmulator + 'static) {
        self.scripts.insert(
            name.to_ascii_lowercase(),
            (name.to_owned(), Arc::new(emulator)),
        );
    }

    /// The emulation of script `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn ScriptEmulator>> {
        self.scripts
            .get(&name.to_ascii_lowercase())
            .map(|(_, e)| Arc::clone(e))
    }

    /// Registered script names.
    pub fn names(&self) -> Vec<String> {
        self.scripts.values().map(|(n, _)| n.clone()).collect()
    }
}

fn host_or_failure<'a>(ctx: &'a ScriptContext<'_>) -> std::result::Result<&'a Host, ScriptResult> {
    ctx.host()
        .map_err(|e| ScriptResult::failure("HostNotFound", e.to_string()))
}

/// The image roots of a `Get-HostFacts` request (`image_roots`, or its older name
/// `image_directories`), or the script's default list: every shared volume's `DiskImages`
/// and `Images`, then `<VMPath>\Images`.
fn image_roots(host: &Host, request: &Value) -> Vec<String> {
    let given: Vec<String> = ["image_roots", "image_directories"]
        .iter()
        .filter_map(|k| request.get(*k).and_then(Value::as_array))
        .find(|a| !a.is_empty())
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(|r| r.trim_end_matches('\\').to_owned())
                .collect()
        })
        .unwrap_or_default();
    if !given.is_empty() {
        return given;
    }
    let shared: Vec<&str> = host
        .storage
        .iter()
        .filter(|s| s.shared)
        .map(|s| s.path.trim_end_matches('\\'))
        .collect();
    shared
        .iter()
        .map(|p| format!(r"{p}\DiskImages"))
        .chain(shared.iter().map(|p| format!(r"{p}\Images")))
        .chain(std::iter::once(format!(
            r"{}\Images",
            host.vm_path.trim_end_matches('\\')
        )))
        .collect()
}

/// `Get-HostFacts`: the host's identity, capacity, storage, switches, the golden images
/// found in the image roots (each with its root; a name in several roots once, from the
/// first), ISOs, installed script version and the host resources file. Request: `{}` or
/// `{"image_roots": [...]}`.
pub fn get_host_facts(ctx: &mut ScriptContext<'_>, request: &Value) -> ScriptResult {
    let host = match host_or_failure(ctx) {
        Ok(h) => h,
        Err(failure) => return failure,
    };
    let storage = match ctx.state().fleet().storage_status(&host.name) {
        Ok(s) => s,
        Err(e) => return ScriptResult::failure("StorageUnavailable", e.to_string()),
    };
    let mut seen = std::collections::BTreeSet::new();
    let mut images = Vec::new();
    for root in image_roots(host, request) {
        for i in host.images.iter().filter(|i| {
            i.path
                .rsplit_once('\\')
                .is_some_and(|(parent, _)| parent.eq_ignore_ascii_case(&root))
        }) {
            if seen.insert(i.name.to_ascii_lowercase()) {
                images.push(json!({
                    "name": i.name,
                    "os_family": i.os_family.as_str(),
                    "path": i.path,
                    "size_bytes": i.size_bytes,
                    "max_size_bytes": i.max_size_bytes,
                    "root": root,
                }));
            }
        }
    }
    ScriptResult::success(json!({
        "name": host.name,
        "fqdn": host.fqdn,
        "cluster": host.cluster,
        "os_version": host.os_version,
        "logical_processors": host.logical_processors,
        "memory_total_bytes": host.memory_total_bytes,
        "memory_available_bytes": host.memory_available_bytes(),
        "vm_path": host.vm_path,
        "vm_count": host.vms.len(),
        "storage": storage.iter().map(|s| json!({
            "path": s.path,
            "capacity_bytes": s.capacity_bytes,
            "free_bytes": s.free_bytes,
            "shared": s.shared,
        })).collect::<Vec<_>>(),
        "switches": host.switches.iter().map(|s| json!({
            "name": s.name,
            "switch_type": s.switch_type.name(),
        })).collect::<Vec<_>>(),
        "images": images,
        "provisioning_isos": host.isos.iter().map(|i| json!({
            "os_family": i.os_family.as_str(),
            "path": i.path,
            "size_bytes": i.size_bytes,
            "version": (!i.version.is_empty()).then_some(&i.version),
        })).collect::<Vec<_>>(),
        "scripts_version": host.scripts_version,
        "host_resources": host.host_resources.as_ref().map(|text| json!({
            "path": crate::model::HOST_RESOURCES_PATH,
            "text": text,
        })),
        "maintenance": crate::maintenance::state_file(ctx.state(), &host.name, ctx.install_directory()),
        "cluster_node_state": crate::maintenance::node_state(ctx.state(), &host.name),
    }))
}

/// The inventory shape of one VM (flat, explicit; numeric state as Windows PowerShell 5.1
/// writes it, with its name alongside; times in RFC 3339 UTC), as a JSON tree.
pub fn vm_json(vm: &SimVm, now: SystemTime) -> Value {
    tree(&VmDocument::new(vm, now))
}

/// The inventory shape of one network adapter (`ConvertTo-AethervNicShape`), as a JSON tree.
pub fn nic_json(n: &crate::model::NetworkAdapter) -> Value {
    tree(&NicDocument::new(n))
}

/// The inventory shape of one checkpoint (`ConvertTo-AethervCheckpointShape`), as a JSON tree.
pub fn checkpoint_json(c: &crate::devices::SimCheckpoint) -> Value {
    tree(&CheckpointDocument::new(c))
}

/// A document of this module as a JSON tree. Every document is strings, numbers, booleans,
/// nulls, arrays and maps with text keys, which always convert.
fn tree<T: serde::Serialize>(document: &T) -> Value {
    serde_json::to_value(document).unwrap_or(Value::Null)
}

/// A list of documents written from model records without collecting them first.
struct Documents<'a, T, D> {
    items: &'a [T],
    document: fn(&'a T) -> D,
}

impl<'a, T, D: serde::Serialize> serde::Serialize for Documents<'a, T, D> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.items.iter().map(self.document))
    }
}

/// One VM's inventory document, written straight from the fleet model: the inventory of a
/// simulated host with a hundred VMs is written (twice: digest and answer) on every full
/// refresh, and building a JSON tree first cost the simulators more than writing it.
#[derive(serde::Serialize)]
struct VmDocument<'a> {
    id: uuid::Uuid,
    name: &'a str,
    state: u32,
    state_name: String,
    generation: u8,
    version: &'a str,
    path: &'a str,
    processor_count: u32,
    memory_startup_bytes: u64,
    memory_assigned_bytes: u64,
    memory_minimum_bytes: u64,
    memory_maximum_bytes: u64,
    dynamic_memory: bool,
    uptime_seconds: u64,
    creation_time: String,
    notes: &'a str,
    clustered: bool,
    os_family: &'static str,
    image: &'a str,
    guest_hostname: &'a str,
    guest_fqdn: Option<&'a str>,
    disks: Documents<'a, crate::model::VirtualDisk, DiskDocument<'a>>,
    dvd_drives: Documents<'a, crate::model::DvdDrive, DvdDocument<'a>>,
    network_adapters: Documents<'a, crate::model::NetworkAdapter, NicDocument<'a>>,
    integration_services: Documents<'a, crate::model::IntegrationService, ServiceDocument<'a>>,
    secure_boot: Option<bool>,
    secure_boot_template: Option<&'static str>,
    tpm_enabled: Option<bool>,
    automatic_start_action: &'static str,
    automatic_stop_action: &'static str,
    automatic_start_delay_seconds: u32,
    checkpoints: Documents<'a, crate::devices::SimCheckpoint, CheckpointDocument<'a>>,
    merge_percent: Option<u8>,
    /// Only in the digest's form of the document (see [`inventory_digest`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    started_slot: Option<u64>,
}

impl<'a> VmDocument<'a> {
    fn new(vm: &'a SimVm, now: SystemTime) -> Self {
        let gen2 = vm.generation == 2;
        Self {
            id: vm.id,
            name: &vm.name,
            state: vm.state.code(),
            state_name: vm.state.name(),
            generation: vm.generation,
            version: &vm.version,
            path: &vm.path,
            processor_count: vm.processor_count,
            memory_startup_bytes: vm.memory.startup_bytes,
            memory_assigned_bytes: vm.memory.assigned_bytes,
            memory_minimum_bytes: vm.memory.minimum_bytes,
            memory_maximum_bytes: vm.memory.maximum_bytes,
            dynamic_memory: vm.memory.dynamic,
            uptime_seconds: vm.uptime(now).as_secs(),
            creation_time: rfc3339(vm.created),
            notes: &vm.notes,
            clustered: vm.clustered,
            os_family: vm.guest.os_family.as_str(),
            image: &vm.guest.image,
            guest_hostname: &vm.guest.hostname,
            guest_fqdn: vm
                .kvp
                .guest_intrinsic
                .get("FullyQualifiedDomainName")
                .map(String::as_str),
            disks: Documents {
                items: &vm.disks,
                document: DiskDocument::new,
            },
            dvd_drives: Documents {
                items: &vm.dvd_drives,
                document: DvdDocument::new,
            },
            network_adapters: Documents {
                items: &vm.nics,
                document: NicDocument::new,
            },
            integration_services: Documents {
                items: &vm.integration_services,
                document: ServiceDocument::new,
            },
            secure_boot: gen2.then_some(vm.firmware.secure_boot),
            secure_boot_template: gen2.then(|| vm.firmware.secure_boot_template.as_str()),
            tpm_enabled: gen2.then_some(vm.firmware.tpm),
            automatic_start_action: vm.automatic.start.hyperv_name(),
            automatic_stop_action: vm.automatic.stop.hyperv_name(),
            automatic_start_delay_seconds: vm.automatic.start_delay_seconds,
            checkpoints: Documents {
                items: &vm.checkpoints.list,
                document: CheckpointDocument::new,
            },
            merge_percent: vm.checkpoints.merge_percent(now),
            started_slot: None,
        }
    }
}

#[derive(serde::Serialize)]
struct DiskDocument<'a> {
    path: &'a str,
    controller_type: &'static str,
    controller_number: u32,
    controller_location: u32,
    disk_type: &'static str,
    max_size_bytes: u64,
    file_size_bytes: u64,
    shared: bool,
}

impl<'a> DiskDocument<'a> {
    fn new(d: &'a crate::model::VirtualDisk) -> Self {
        Self {
            path: &d.path,
            controller_type: d.controller_type.name(),
            controller_number: d.controller_number,
            controller_location: d.controller_location,
            disk_type: d.disk_type.name(),
            max_size_bytes: d.max_size_bytes,
            file_size_bytes: d.file_size_bytes,
            shared: d.shared,
        }
    }
}

#[derive(serde::Serialize)]
struct DvdDocument<'a> {
    path: Option<&'a str>,
    controller_type: &'static str,
    controller_number: u32,
    controller_location: u32,
}

impl<'a> DvdDocument<'a> {
    fn new(d: &'a crate::model::DvdDrive) -> Self {
        Self {
            path: d.path.as_deref(),
            controller_type: d.controller_type.name(),
            controller_number: d.controller_number,
            controller_location: d.controller_location,
        }
    }
}

#[derive(serde::Serialize)]
struct ServiceDocument<'a> {
    name: &'a str,
    enabled: bool,
}

impl<'a> ServiceDocument<'a> {
    fn new(s: &'a crate::model::IntegrationService) -> Self {
        Self {
            name: &s.name,
            enabled: s.enabled,
        }
    }
}

#[derive(serde::Serialize)]
struct NicDocument<'a> {
    name: &'a str,
    switch_name: Option<&'a str>,
    vlan_id: Option<u16>,
    mac_address: &'a str,
    ip_addresses: &'a [String],
    id: &'a str,
    dynamic_mac: bool,
    mac_spoofing: bool,
    dhcp_guard: bool,
    router_guard: bool,
    maximum_bandwidth_bps: u64,
    minimum_bandwidth_bps: u64,
    legacy: bool,
}

impl<'a> NicDocument<'a> {
    fn new(n: &'a crate::model::NetworkAdapter) -> Self {
        Self {
            name: &n.name,
            switch_name: n.switch_name.as_deref(),
            vlan_id: n.vlan_id,
            mac_address: &n.mac_address,
            ip_addresses: &n.ip_addresses,
            id: &n.id,
            dynamic_mac: n.dynamic_mac,
            mac_spoofing: n.mac_spoofing,
            dhcp_guard: n.dhcp_guard,
            router_guard: n.router_guard,
            maximum_bandwidth_bps: n.maximum_bandwidth_bps,
            minimum_bandwidth_bps: n.minimum_bandwidth_bps,
            legacy: n.legacy,
        }
    }
}

#[derive(serde::Serialize)]
struct CheckpointDocument<'a> {
    id: uuid::Uuid,
    name: &'a str,
    parent_id: Option<uuid::Uuid>,
    creation_time: String,
    snapshot_type: &'static str,
    vm_state: u32,
}

impl<'a> CheckpointDocument<'a> {
    fn new(c: &'a crate::devices::SimCheckpoint) -> Self {
        Self {
            id: c.id,
            name: &c.name,
            parent_id: c.parent,
            creation_time: rfc3339(c.created),
            snapshot_type: c.snapshot_type(),
            vm_state: c.vm_state.code(),
        }
    }
}

/// `Inventory`: every VM on the host. Request: `{}` or `{"vm": "<name or id>"}` for one VM
/// (failing with `VmNotFound` when it does not exist), or `{"since": "<digest>"}`: the VM list
/// is left out (`unchanged: true`) when the host's digest is still `since`.
///
/// A host remembers its digest until the fleet next changes ([`SimState::cached_digest`]), so
/// an unchanged host answers `since` without writing its VMs' documents, as a Hyper-V host
/// spends its own CPU and not the server's; a digest that time alone would change (a
/// checkpoint merge in progress) is never remembered. [`inventory_output`] writes the same
/// answer as text without a JSON tree.
pub fn inventory(ctx: &mut ScriptContext<'_>, request: &Value) -> ScriptResult {
    inventory_answer(
        ctx,
        request,
        |answer| ScriptResult::success(tree(answer)),
        |r| r,
    )
}

/// The stdout of [`inventory`] for `request`, the whole list written straight from the fleet
/// model.
pub fn inventory_output(ctx: &mut ScriptContext<'_>, request: &Value) -> RenderedResult {
    inventory_answer(
        ctx,
        request,
        |answer| RenderedResult::success(answer),
        |r| RenderedResult::from(&r),
    )
}

/// The whole-list answer of `Inventory`.
#[derive(serde::Serialize)]
struct InventoryDocument<'a> {
    host: &'a str,
    collected_at: String,
    digest: &'a str,
    unchanged: bool,
    vms: VmDocuments<'a>,
}

/// The documents of a host's VMs at one instant.
struct VmDocuments<'a> {
    vms: &'a [SimVm],
    now: SystemTime,
}

impl serde::Serialize for VmDocuments<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.vms.iter().map(|vm| VmDocument::new(vm, self.now)))
    }
}

/// Answers an `Inventory` request: `whole` turns a whole-list answer into the output, `other`
/// any other result (one VM, the remembered digest, a failure).
fn inventory_answer<T>(
    ctx: &mut ScriptContext<'_>,
    request: &Value,
    whole: impl FnOnce(&InventoryDocument<'_>) -> T,
    other: impl FnOnce(ScriptResult) -> T,
) -> T {
    let now = ctx.now();
    let host = match host_or_failure(ctx) {
        Ok(h) => h,
        Err(failure) => return other(failure),
    };
    if let Some(wanted) = request.get("vm").and_then(Value::as_str) {
        let Some(vm) = host.vm(wanted) else {
            return other(ScriptResult::failure(
                "VmNotFound",
                format!("no VM named {wanted:?} on host {}", host.name),
            ));
        };
        return other(ScriptResult::success(json!({
            "host": host.name,
            "collected_at": rfc3339(now),
            "vms": [vm_json(vm, now)],
        })));
    }
    let since = request.get("since").and_then(Value::as_str);
    if let Some(digest) = ctx.state().cached_digest(&host.name)
        && since == Some(digest)
    {
        return other(ScriptResult::success(json!({
            "host": host.name,
            "collected_at": rfc3339(now),
            "digest": digest,
            "unchanged": true,
            "vms": [],
        })));
    }
    let digest = inventory_digest(&host.vms, now);
    let stable = host.vms.iter().all(|vm| digest_is_stable(vm, now));
    let unchanged = since == Some(digest.as_str());
    let output = whole(&InventoryDocument {
        host: &host.name,
        collected_at: rfc3339(now),
        digest: &digest,
        unchanged,
        vms: VmDocuments {
            vms: if unchanged { &[] } else { &host.vms },
            now,
        },
    });
    if stable {
        let name = host.name.clone();
        ctx.state_mut().remember_digest(&name, digest);
    }
    output
}
/// Whether `vm`'s part of the inventory digest stays the same while the VM is not changed:
/// not while a checkpoint merge advances its `merge_percent`, nor at the instant it started
/// (its start slot is read from its uptime).
fn digest_is_stable(vm: &SimVm, now: SystemTime) -> bool {
    vm.checkpoints.merge_percent(now).is_none()
        && !(vm.started.is_some()
            && vm.uptime(now).is_zero()
            && crate::model::holds_memory(vm.state))
}

/// Length of the slots a running VM's start time is rounded to in the inventory digest.
const STARTED_SLOT_SECONDS: u64 = 600;

/// The inventory digest of `Get-Inventory` (`Get-AethervInventoryDigest`): SHA-256 (hex) of
/// every VM's document, ordered by id, with a running VM's uptime replaced by the ten-minute
/// slot it started in, so uptime that only advances keeps the digest and a restart changes it.
///
/// The documents are written straight into the hash, with no JSON tree, no copy of them and
/// no buffer of the whole text: every simulated host digests all its VMs on every full
/// refresh.
pub fn inventory_digest(vms: &[SimVm], now: SystemTime) -> String {
    use sha2::Digest as _;
    let mut order: Vec<&SimVm> = vms.iter().collect();
    // A UUID's order is its bytes' order, which is also the order of its hyphenated text.
    order.sort_by_key(|vm| vm.id);
    let mut hash = sha2::Sha256::new();
    hash.update(b"[");
    for (n, vm) in order.into_iter().enumerate() {
        if n > 0 {
            hash.update(b",");
        }
        let started_slot = vm
            .started
            .filter(|_| !vm.uptime(now).is_zero())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs() / STARTED_SLOT_SECONDS);
        let document = VmDocument {
            uptime_seconds: 0,
            started_slot: Some(started_slot),
            ..VmDocument::new(vm, now)
        };
        // Writing into a hash cannot fail, and the document always serializes.
        let _ = serde_json::to_writer(&mut hash, &document);
    }
    hash.update(b"]");
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}
