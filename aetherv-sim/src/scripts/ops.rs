//! Emulations of the operation scripts in `assets/powershell/` (see [`aetherv_hyperv::ops`] for the
//! request and result shapes; each function's doc names its script).
//!
//! Model notes: copied images and ISOs (and disks kept when a VM is deleted) are
//! [`LooseFile`]s in [`SimState`] until a VM uses them; they do not count against storage
//! free space. Moves (Compare-VM, Move-VM, cluster role moves, the migration job) are in
//! [`migrate`].

use serde_json::{Value, json};
use uuid::Uuid;

use super::{ScriptContext, vm_json};
use crate::error::Error;
use crate::model::{BootSettings, Host, NewVm, PowerAction, SimVm, path_is_under};
use crate::state::{LooseFile, SimState};
use aetherv_hyperv::protocol::{ScriptFailure, ScriptResult};

pub mod devices;
pub mod migrate;

pub use migrate::{move_managed_vm, test_vm_migration};

pub(crate) type Step<T> = std::result::Result<T, ScriptResult>;

/// A failure with a `details` object. The real scripts write it as `error.details`;
/// [`ScriptFailure`] has no such field, so the emulation carries it as the failed result's
/// `data`, which [`aetherv_hyperv::ops`] reads as well.
pub(crate) fn fail(code: &str, message: impl Into<String>, details: Value) -> ScriptResult {
    ScriptResult {
        ok: false,
        data: (!details.is_null()).then_some(details),
        error: Some(ScriptFailure {
            code: code.to_owned(),
            message: message.into(),
        }),
    }
}

pub(crate) fn invalid(message: impl Into<String>, field: &str) -> ScriptResult {
    fail("InvalidRequest", message, json!({ "field": field }))
}

pub(super) fn from_error(e: &Error) -> ScriptResult {
    match e {
        Error::UnknownVm { vm, .. } => fail("VmNotFound", e.to_string(), json!({ "vm": vm })),
        Error::VmExists { vm, .. } => fail("VmExists", e.to_string(), json!({ "name": vm })),
        Error::UnknownImage { image, .. } => {
            fail("ImageNotFound", e.to_string(), json!({ "image": image }))
        }
        Error::InvalidVmState { vm, state, .. } => fail(
            "InvalidVmState",
            e.to_string(),
            json!({ "vm": vm, "state_name": state }),
        ),
        Error::InsufficientMemory {
            vm,
            required,
            available,
            ..
        } => fail(
            "InsufficientMemory",
            e.to_string(),
            json!({ "vm": vm, "required_bytes": required, "available_bytes": available }),
        ),
        Error::InsufficientStorage {
            location,
            required,
            available,
            ..
        } => fail(
            "InsufficientStorage",
            e.to_string(),
            json!({ "location": location, "required_bytes": required, "available_bytes": available }),
        ),
        Error::Invalid { what, .. } => {
            fail("InvalidRequest", e.to_string(), json!({ "field": what }))
        }
        _ => fail("HostError", e.to_string(), Value::Null),
    }
}

pub(super) fn str_field<'a>(request: &'a Value, name: &str) -> Step<&'a str> {
    match request.get(name).and_then(Value::as_str) {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(invalid(format!("the request has no '{name}'"), name)),
    }
}

pub(super) fn opt_str<'a>(request: &'a Value, name: &str) -> Option<&'a str> {
    request.get(name).and_then(Value::as_str)
}

fn host_name(ctx: &ScriptContext<'_>) -> Step<String> {
    ctx.host()
        .map(|h| h.name.clone())
        .map_err(|e| fail("HostNotFound", e.to_string(), Value::Null))
}

/// The VM with the request's `id` (a GUID; names are not accepted).
pub(super) fn vm_by_id(ctx: &ScriptContext<'_>, request: &Value) -> Step<(String, SimVm)> {
    let raw = str_field(request, "id")?;
    let id = Uuid::parse_str(raw.trim().trim_matches(['{', '}']))
        .map_err(|_| invalid("the VM id is not a GUID", "id"))?;
    let host = ctx
        .host()
        .map_err(|e| fail("HostNotFound", e.to_string(), Value::Null))?;
    host.vms
        .iter()
        .find(|v| v.id == id)
        .cloned()
        .map(|vm| (host.name.clone(), vm))
        .ok_or_else(|| {
            fail(
                "VmNotFound",
                format!("no VM with id {id} on host {}", host.name),
                json!({ "vm": id.to_string() }),
            )
        })
}

pub(super) fn state_details(vm: &SimVm) -> Value {
    json!({
        "vm": vm.id.to_string(),
        "name": vm.name,
        "state": vm.state.code(),
        "state_name": vm.state.name(),
    })
}

pub(crate) fn run(step: impl FnOnce() -> Step<Value>) -> ScriptResult {
    match step() {
        Ok(data) => ScriptResult::success(data),
        Err(failure) => failure,
    }
}

/// `Get-Inventory`: every VM, or `{"ids":[...]}` (VmNotFound when one is missing); the legacy
/// `{"vm":"<name or id>"}` form is still understood.
pub fn get_inventory(ctx: &mut ScriptContext<'_>, request: &Value) -> ScriptResult {
    let ids = requested_ids(request);
    if ids.is_empty() {
        return super::inventory(ctx, request);
    }
    let now = ctx.now();
    run(|| {
        let host = ctx
            .host()
            .map_err(|e| fail("HostNotFound", e.to_string(), Value::Null))?;
        let mut vms = Vec::new();
        for raw in &ids {
            let id = Uuid::parse_str(raw.trim().trim_matches(['{', '}']))
                .map_err(|_| invalid("the VM id is not a GUID", "ids"))?;
            let vm = host.vms.iter().find(|v| v.id == id).ok_or_else(|| {
                fail(
                    "VmNotFound",
                    format!("no VM with id {id} on host {}", host.name),
                    json!({ "vm": id.to_string() }),
                )
            })?;
            vms.push(vm_json(vm, now));
        }
        Ok(json!({
            "host": host.name,
            "collected_at": crate::model::rfc3339(now),
            "vms": vms,
        }))
    })
}

/// The VM ids a `Get-Inventory` request names (`ids`: a list or one id); none for the whole
/// list.
pub(crate) fn requested_ids(request: &Value) -> Vec<String> {
    match request.get("ids") {
        Some(Value::Array(ids)) => ids
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        Some(Value::String(one)) => vec![one.clone()],
        _ => Vec::new(),
    }
}

/// `Set-VmPowerState`: `{"id","action"}` with the allowed-state table of
/// [`aetherv_hyperv::ops::PowerAction`]; restart is turn off + start, shutdown needs the Shutdown
/// integration service.
pub fn set_vm_power_state(ctx: &mut ScriptContext<'_>, request: &Value) -> ScriptResult {
    run(|| {
        let action: PowerAction =
            serde_json::from_value(request.get("action").cloned().unwrap_or(Value::Null))
                .map_err(|_| invalid("unknown power action", "action"))?;
        let (host, vm) = vm_by_id(ctx, request)?;
        let before = vm.state;
        if !action.allowed_from(before) {
            return Err(fail(
                "InvalidVmState",
                format!(
                    "VM {} is {}; cannot {}",
                    vm.name,
                    before.name(),
                    action.verb()
                ),
                state_details(&vm),
            ));
        }
        let id = vm.id.to_string();
        let now = ctx.now();
        let state = ctx.state_mut();
        if action == PowerAction::Shutdown && !vm.integration_service_enabled("Shutdown") {
            return Err(fail(
                "GuestShutdownUnavailable",
                format!(
                    "the Shutdown integration service of {} is not enabled; turn the VM off instead",
                    vm.name
                ),
                state_details(&vm),
            ));
        }
        state
            .power(&host, &id, action, now)
            .map_err(|e| from_error(&e))?;
        let after = ctx
            .state()
            .fleet()
            .vm(&host, &id)
            .map(|v| v.state)
            .map_err(|e| from_error(&e))?;
        Ok(json!({
            "id": id,
            "name": vm.name,
            "previous_state": before.code(),
            "previous_state_name": before.name(),
            "state": after.code(),
            "state_name": after.name(),
        }))
    })
}

/// Whether `path` is a disk of any VM in the fleet other than `except`.
fn disk_used_elsewhere(state: &SimState, path: &str, except: Uuid) -> bool {
    state
        .fleet()
        .hosts
        .iter()
        .flat_map(|h| &h.vms)
        .filter(|v| v.id != except)
        .flat_map(|v| &v.disks)
        .any(|d| d.path.eq_ignore_ascii_case(path))
}

/// `Remove-ManagedVm`: `{"id","delete_disks"}`; the VM must be Off and not clustered; shared
/// disks (used by another VM, or `.vhds`) are refused when deleting disks. Kept disks become
/// loose files.
pub fn remove_managed_vm(ctx: &mut ScriptContext<'_>, request: &Value) -> ScriptResult {
    run(|| {
        let (host, vm) = vm_by_id(ctx, request)?;
        let delete_disks = request
            .get("delete_disks")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if vm.state != crate::model::VmState::Off {
            return Err(fail(
                "InvalidVmState",
                format!(
                    "VM {} is {}; turn it off before deleting it",
                    vm.name,
                    vm.state.name()
                ),
                state_details(&vm),
            ));
        }
        if vm.clustered {
            return Err(fail(
                "VmClustered",
                format!("VM {} is a cluster role; remove the role first", vm.name),
                json!({ "vm": vm.id.to_string() }),
            ));
        }
        if delete_disks {
            for disk in &vm.disks {
                if disk.path.to_ascii_lowercase().ends_with(".vhds")
                    || disk_used_elsewhere(ctx.state(), &disk.path, vm.id)
                {
                    return Err(fail(
                        "SharedDisk",
                        format!("disk {} of VM {} is shared", disk.path, vm.name),
                        json!({ "vm": vm.id.to_string(), "path": disk.path }),
                    ));
                }
            }
        }
        let state = ctx.state_mut();
        let removed_vm = state
            .remove_vm(&host, &vm.id.to_string())
            .map_err(|e| from_error(&e))?;
        let paths: Vec<String> = removed_vm.disks.iter().map(|d| d.path.clone()).collect();
        if !delete_disks {
            for disk in &removed_vm.disks {
                state.add_loose_file(
                    &host,
                    LooseFile {
                        path: disk.path.clone(),
                        size_bytes: disk.file_size_bytes,
                        image: Some(removed_vm.guest.image.clone()),
                        max_size_bytes: Some(disk.max_size_bytes),
                    },
                );
            }
        }
        let (removed, kept) = if delete_disks {
            (paths, Vec::new())
        } else {
            (Vec::new(), paths)
        };
        Ok(json!({
            "id": vm.id.to_string(),
            "name": vm.name,
            "removed_paths": removed,
            "kept_paths": kept,
        }))
    })
}

/// `Get-VmKvp`: `{"id"}`; the guest's items are only visible while KVP is reachable (running,
/// KVP integration service on), as with `Msvm_KvpExchangeComponent`.
pub fn get_vm_kvp(ctx: &mut ScriptContext<'_>, request: &Value) -> ScriptResult {
    run(|| {
        let (_, vm) = vm_by_id(ctx, request)?;
        let (items, intrinsic) = if vm.kvp_reachable() {
            (vm.kvp.guest_to_host.clone(), vm.kvp.guest_intrinsic.clone())
        } else {
            Default::default()
        };
        Ok(json!({ "id": vm.id.to_string(), "items": items, "intrinsic": intrinsic }))
    })
}

/// `Set-VmKvp`: `{"id","items":[{"name","value"}, ...]}`, written in order; the guest
/// agent reacts after each item.
pub fn set_vm_kvp(ctx: &mut ScriptContext<'_>, request: &Value) -> ScriptResult {
    run(|| {
        let (host, vm) = vm_by_id(ctx, request)?;
        let items = match request.get("items") {
            Some(Value::Array(items)) => items.clone(),
            Some(one @ Value::Object(_)) => vec![one.clone()],
            _ => return Err(invalid("the request has no 'items' list", "items")),
        };
        let mut pairs: Vec<(String, String)> = Vec::with_capacity(items.len());
        for item in &items {
            let name = item
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("a KVP item has no 'name'", "items"))?;
            let value = match item.get("value") {
                Some(Value::String(s)) => s.clone(),
                None | Some(Value::Null) => String::new(),
                Some(other) => other.to_string(),
            };
            pairs.push((name.to_owned(), value));
        }
        let id = vm.id.to_string();
        for (key, value) in &pairs {
            ctx.state_mut()
                .set_host_kvp(&host, &id, key, value)
                .map_err(|e| from_error(&e))?;
        }
        Ok(json!({ "id": id, "written": pairs.len() }))
    })
}

/// `Remove-VmKvp`: `{"id","keys":[...]}` or `{"id","prefix"}` (every existing host item
/// whose name starts with it); returns the keys that existed.
pub fn remove_vm_kvp(ctx: &mut ScriptContext<'_>, request: &Value) -> ScriptResult {
    run(|| {
        let (host, vm) = vm_by_id(ctx, request)?;
        let mut keys: Vec<String> = match request.get("keys") {
            Some(Value::Array(keys)) => keys
                .iter()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect(),
            Some(Value::String(k)) => vec![k.clone()],
            _ => Vec::new(),
        };
        if let Some(prefix) = opt_str(request, "prefix").filter(|p| !p.is_empty()) {
            keys = vm
                .kvp
                .host_to_guest
                .keys()
                .filter(|k| k.starts_with(prefix))
                .cloned()
                .collect();
        }
        let id = vm.id.to_string();
        let mut removed = Vec::new();
        for key in keys {
            if ctx
                .state_mut()
                .remove_host_kvp(&host, &id, &key)
                .map_err(|e| from_error(&e))?
            {
                removed.push(key);
            }
        }
        Ok(json!({ "id": id, "removed": removed }))
    })
}

fn join(folder: &str, leaf: &str) -> String {
    format!("{}\\{leaf}", folder.trim_end_matches('\\'))
}

fn parent(path: &str) -> &str {
    path.trim_end_matches('\\')
        .rsplit_once('\\')
        .map_or(path, |(p, _)| p)
}

fn file_name(path: &str) -> &str {
    path.rsplit('\\').next().unwrap_or(path)
}

/// Free bytes at the storage location holding `path` on `host`.
fn check_space(state: &SimState, host: &str, path: &str, required: u64) -> Step<()> {
    let status = state
        .fleet()
        .storage_status(host)
        .map_err(|e| from_error(&e))?;
    let location = status
        .iter()
        .filter(|s| path_is_under(path, &s.path))
        .max_by_key(|s| s.path.len())
        .ok_or_else(|| {
            fail(
                "InvalidRequest",
                format!("{path} is on no storage location of host {host}"),
                json!({ "path": path }),
            )
        })?;
    if location.free_bytes < required {
        return Err(fail(
            "InsufficientStorage",
            format!("not enough free space for {path}"),
            json!({
                "location": location.path,
                "required_bytes": required,
                "available_bytes": location.free_bytes,
            }),
        ));
    }
    Ok(())
}

fn vm_name_exists(host: &Host, name: &str) -> bool {
    host.vms.iter().any(|v| v.name.eq_ignore_ascii_case(name))
}

/// `Copy-GoldenImage`: `{"image_path","vm_name","destination_root","disk_size_bytes"}`; the
/// image may also be named by its display name. A `disk_size_bytes` below the image's virtual
/// size fails with `DiskTooSmall` before anything is copied; above it, the copy is expanded
/// ([`SimState::resize_vhd`]).
pub fn copy_golden_image(ctx: &mut ScriptContext<'_>, request: &Value) -> ScriptResult {
    run(|| {
        let image_ref = str_field(request, "image_path")?;
        let vm_name = str_field(request, "vm_name")?;
        if vm_name.contains(['\\', '/', ':', '*', '?', '"', '<', '>', '|']) {
            return Err(invalid(
                "the VM name contains characters not allowed in a folder name",
                "vm_name",
            ));
        }
        let host = ctx
            .host()
            .map_err(|e| fail("HostNotFound", e.to_string(), Value::Null))?
            .clone();
        let image = host
            .images
            .iter()
            .find(|i| i.path.eq_ignore_ascii_case(image_ref))
            .or_else(|| host.image(image_ref))
            .cloned()
            .ok_or_else(|| {
                fail(
                    "ImageNotFound",
                    format!("no golden image at {image_ref}"),
                    json!({ "image": image_ref }),
                )
            })?;
        if vm_name_exists(&host, vm_name) {
            return Err(fail(
                "VmExists",
                format!("a VM named {vm_name} already exists"),
                json!({ "name": vm_name }),
            ));
        }
        let root = opt_str(request, "destination_root").unwrap_or(&host.vm_path);
        let folder = join(root, vm_name);
        let in_use = host.vms.iter().any(|v| {
            v.path.eq_ignore_ascii_case(&folder)
                || v.disks.iter().any(|d| path_is_under(&d.path, &folder))
        });
        if in_use || ctx.state().loose_path_exists(&host.name, &folder) {
            return Err(fail(
                "PathExists",
                format!(
                    "the VM folder {folder} already exists; remove the leftover or pick another name"
                ),
                json!({ "path": folder }),
            ));
        }
        let disk_size = request.get("disk_size_bytes").and_then(Value::as_u64);
        if let Some(wanted) = disk_size
            && wanted < image.max_size_bytes
        {
            return Err(fail(
                "DiskTooSmall",
                format!(
                    "the requested disk size of {wanted} bytes is smaller than the virtual size \
                     of image {} ({} bytes); disks are only expanded",
                    image.name, image.max_size_bytes
                ),
                json!({
                    "image": image.path,
                    "requested_bytes": wanted,
                    "image_bytes": image.max_size_bytes,
                }),
            ));
        }
        check_space(ctx.state(), &host.name, &folder, image.size_bytes)?;
        let vhdx = join(
            &join(&folder, "Virtual Hard Disks"),
            &format!("{vm_name}.vhdx"),
        );
        let state = ctx.state_mut();
        state.add_loose_file(
            &host.name,
            LooseFile {
                path: vhdx.clone(),
                size_bytes: image.size_bytes,
                image: Some(image.name.clone()),
                max_size_bytes: Some(image.max_size_bytes),
            },
        );
        let mut virtual_size = image.max_size_bytes;
        if let Some(wanted) = disk_size.filter(|w| *w > image.max_size_bytes) {
            // Like the script: Resize-VHD, and on failure the new folder goes again.
            match state.resize_vhd(&host.name, &vhdx, wanted) {
                Ok(size) => virtual_size = size,
                Err(e) => {
                    state.remove_loose_files(&host.name, &folder);
                    return Err(from_error(&e));
                }
            }
        }
        Ok(json!({
            "vm_folder": folder,
            "vhdx_path": vhdx,
            "size_bytes": image.size_bytes,
            "max_size_bytes": virtual_size,
        }))
    })
}

/// `Copy-ProvisioningIso`: `{"iso_path","vm_folder"}`; the folder must exist (made by
/// `Copy-GoldenImage`).
pub fn copy_provisioning_iso(ctx: &mut ScriptContext<'_>, request: &Value) -> ScriptResult {
    run(|| {
        let iso_path = str_field(request, "iso_path")?;
        let folder = str_field(request, "vm_folder")?;
        let host = host_name(ctx)?;
        let iso = ctx
            .host()
            .ok()
            .and_then(|h| {
                h.isos
                    .iter()
                    .find(|i| i.path.eq_ignore_ascii_case(iso_path))
            })
            .cloned()
            .ok_or_else(|| {
                fail(
                    "IsoNotFound",
                    format!("no provisioning ISO at {iso_path}"),
                    json!({ "path": iso_path }),
                )
            })?;
        if !ctx.state().loose_path_exists(&host, folder) {
            return Err(fail(
                "PathNotFound",
                format!("the VM folder {folder} does not exist"),
                json!({ "path": folder }),
            ));
        }
        check_space(ctx.state(), &host, folder, iso.size_bytes)?;
        let target = join(folder, file_name(&iso.path));
        ctx.state_mut().add_loose_file(
            &host,
            LooseFile {
                path: target.clone(),
                size_bytes: iso.size_bytes,
                image: None,
                max_size_bytes: None,
            },
        );
        Ok(json!({ "iso_path": target, "size_bytes": iso.size_bytes }))
    })
}

/// `Register-ManagedVm`: creates the VM over a copied VHDX (see [`aetherv_hyperv::ops::RegisterVmSpec`]);
/// a failed start removes the half-made VM again, as the script does.
pub fn register_managed_vm(ctx: &mut ScriptContext<'_>, request: &Value) -> ScriptResult {
    run(|| {
        let name = str_field(request, "name")?.to_owned();
        let folder = str_field(request, "vm_folder")?.to_owned();
        let vhdx = str_field(request, "vhdx_path")?.to_owned();
        let iso = opt_str(request, "iso_path").map(str::to_owned);
        let processors = request
            .get("processor_count")
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| invalid("the request has no 'processor_count'", "processor_count"))?;
        let memory = request
            .get("memory_startup_bytes")
            .and_then(Value::as_u64)
            .ok_or_else(|| {
                invalid(
                    "the request has no 'memory_startup_bytes'",
                    "memory_startup_bytes",
                )
            })?;
        let dynamic = request
            .get("dynamic_memory")
            .filter(|d| !d.is_null())
            .map(|d| {
                (
                    d.get("minimum_bytes")
                        .and_then(Value::as_u64)
                        .unwrap_or(memory),
                    d.get("maximum_bytes")
                        .and_then(Value::as_u64)
                        .unwrap_or(memory),
                )
            });
        let vlan = request
            .get("vlan_id")
            .and_then(Value::as_u64)
            .and_then(|v| u16::try_from(v).ok());
        let notes = opt_str(request, "notes").unwrap_or_default().to_owned();
        let start = request
            .get("start")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        // No firmware settings: New-VM's defaults (Secure Boot on, MicrosoftWindows).
        let firmware = match request.get("boot").filter(|b| !b.is_null()) {
            None => BootSettings::hyperv_default(),
            Some(boot) => serde_json::from_value::<BootSettings>(boot.clone()).map_err(|e| {
                invalid(
                    format!("Set-VMFirmware refused the firmware settings: {e}"),
                    "boot",
                )
            })?,
        };
        let host = host_name(ctx)?;
        if ctx.host().is_ok_and(|h| vm_name_exists(h, &name)) {
            return Err(fail(
                "VmExists",
                format!("a VM named {name} already exists"),
                json!({ "name": name }),
            ));
        }
        let disk = ctx
            .state()
            .loose_file(&host, &vhdx)
            .cloned()
            .ok_or_else(|| {
                fail(
                    "PathNotFound",
                    format!("no disk at {vhdx}"),
                    json!({ "path": vhdx }),
                )
            })?;
        let image = disk.image.clone().ok_or_else(|| {
            fail(
                "InvalidRequest",
                format!("{vhdx} is not a bootable copy of a golden image"),
                json!({ "path": vhdx }),
            )
        })?;
        if let Some(iso) = &iso
            && ctx.state().loose_file(&host, iso).is_none()
        {
            return Err(fail(
                "IsoNotFound",
                format!("no ISO at {iso}"),
                json!({ "path": iso }),
            ));
        }
        let spec = NewVm {
            name: name.clone(),
            image,
            processor_count: processors,
            memory_startup_bytes: memory,
            dynamic_memory: dynamic.is_some(),
            switch: opt_str(request, "switch_name").map(str::to_owned),
            vlan_id: vlan,
            clustered: false,
            notes,
            location: Some(parent(&folder).to_owned()),
            firmware: Some(firmware),
        };
        let now = ctx.now();
        let state = ctx.state_mut();
        let id = state.create_vm(&host, &spec, now).map_err(|e| match e {
            Error::Invalid { what: "switch", .. } => fail(
                "SwitchNotFound",
                e.to_string(),
                json!({ "switch": spec.switch }),
            ),
            other => from_error(&other),
        })?;
        let id_text = id.to_string();
        if let Ok(vm) = state.fleet_mut().vm_mut(&host, &id_text) {
            vm.path = folder.clone();
            if let Some(d) = vm.disks.first_mut() {
                d.path = disk.path.clone();
                d.file_size_bytes = disk.size_bytes;
                if let Some(size) = disk.max_size_bytes {
                    d.max_size_bytes = size;
                }
            }
            if let Some(dvd) = vm.dvd_drives.first_mut() {
                dvd.path = iso.clone();
            }
            if let Some((min, max)) = dynamic {
                vm.memory.minimum_bytes = min;
                vm.memory.maximum_bytes = max;
            }
            // Like the script: no switch name, no connection.
            if spec.switch.is_none() {
                for nic in &mut vm.nics {
                    nic.switch_name = None;
                }
            }
        }
        state.remove_loose_files(&host, &disk.path);
        if start && let Err(e) = state.power(&host, &id_text, PowerAction::Start, now) {
            // Like the script: remove the half-made VM, keep the copied files for compensation.
            if let Ok(removed) = state.remove_vm(&host, &id_text) {
                for d in removed.disks {
                    state.add_loose_file(
                        &host,
                        LooseFile {
                            path: d.path,
                            size_bytes: d.file_size_bytes,
                            image: Some(removed.guest.image.clone()),
                            max_size_bytes: Some(d.max_size_bytes),
                        },
                    );
                }
            }
            return Err(from_error(&e));
        }
        let vm = state
            .fleet()
            .vm(&host, &id_text)
            .map_err(|e| from_error(&e))?;
        Ok(vm_json(vm, now))
    })
}

fn set_clustered(ctx: &mut ScriptContext<'_>, request: &Value, clustered: bool) -> ScriptResult {
    run(|| {
        let (host, vm) = vm_by_id(ctx, request)?;
        let cluster = ctx.host().ok().and_then(|h| h.cluster.clone());
        if clustered {
            if cluster.is_none() {
                return Err(fail(
                    "NotClustered",
                    format!("host {host} has no failover clustering"),
                    json!({ "vm": vm.id.to_string() }),
                ));
            }
            if vm.clustered {
                return Err(fail(
                    "AlreadyClustered",
                    format!("VM {} already is a cluster role", vm.name),
                    json!({ "vm": vm.id.to_string() }),
                ));
            }
        } else if !vm.clustered {
            return Ok(json!({ "id": vm.id.to_string(), "clustered": false, "group": null }));
        }
        let id = vm.id.to_string();
        ctx.state_mut()
            .fleet_mut()
            .vm_mut(&host, &id)
            .map_err(|e| from_error(&e))?
            .clustered = clustered;
        Ok(json!({ "id": id, "clustered": clustered, "group": vm.name }))
    })
}

/// `Add-VmClusterRole`: `{"id"}`; the host must be in a cluster.
pub fn add_vm_cluster_role(ctx: &mut ScriptContext<'_>, request: &Value) -> ScriptResult {
    set_clustered(ctx, request, true)
}

/// `Remove-VmClusterRole`: `{"id"}`; a VM without a role is left as is.
pub fn remove_vm_cluster_role(ctx: &mut ScriptContext<'_>, request: &Value) -> ScriptResult {
    set_clustered(ctx, request, false)
}

/// `Remove-VmPath`: `{"path"}`; only strictly below the host's VM path, never a path that
/// holds a VM's disk.
pub fn remove_vm_path(ctx: &mut ScriptContext<'_>, request: &Value) -> ScriptResult {
    run(|| {
        let path = str_field(request, "path")?.to_owned();
        let host = ctx
            .host()
            .map_err(|e| fail("HostNotFound", e.to_string(), Value::Null))?
            .clone();
        if !(path_is_under(&path, &host.vm_path) || inside_csv_volume(&path))
            || path.split('\\').any(|s| s == "..")
        {
            return Err(fail(
                "PathOutsideRoot",
                format!(
                    "{path} is neither below the VM folder root {} nor inside a Cluster Shared \
                     Volume",
                    host.vm_path
                ),
                json!({ "path": path, "root": host.vm_path }),
            ));
        }
        if let Some((vm, id, iso)) = ctx.state().fleet().dvd_holding(&host.name, &path) {
            return Err(fail(
                "PathInUse",
                format!(
                    "{path} holds ISO {iso} inserted in a DVD drive of VM {vm}; eject it first"
                ),
                json!({ "path": path, "vm": id.to_string() }),
            ));
        }
        if let Some((vm, disk)) = host.vms.iter().find_map(|v| {
            v.disks
                .iter()
                .find(|d| d.path.eq_ignore_ascii_case(&path) || path_is_under(&d.path, &path))
                .map(|d| (v, d))
        }) {
            return Err(fail(
                "PathInUse",
                format!("{path} holds disk {} of VM {}", disk.path, vm.name),
                json!({ "path": path, "vm": vm.id.to_string() }),
            ));
        }
        let removed = ctx.state_mut().remove_loose_files(&host.name, &path) > 0;
        Ok(json!({ "path": path, "removed": removed }))
    })
}

/// Whether `path` is strictly inside a Cluster Shared Volume (`C:\ClusterStorage\<volume>\…`),
/// where storage classes put VM folders: the volume itself is never removable.
fn inside_csv_volume(path: &str) -> bool {
    const CSV_ROOT: &str = "c:\\clusterstorage\\";
    let lower = path.to_ascii_lowercase();
    lower.strip_prefix(CSV_ROOT).is_some_and(|rest| {
        rest.trim_end_matches('\\')
            .split('\\')
            .filter(|s| !s.is_empty())
            .count()
            >= 2
    })
}

/// `Remove-VmDvdDrive`: `{"id","path"}`; ejects the ISO from every DVD drive of the VM that
/// holds it, then removes the drive, except an IDE drive (generation 1) of a VM that is not
/// Off, which Hyper-V cannot remove: it stays, empty, and is reported in `kept`.
pub fn remove_vm_dvd_drive(ctx: &mut ScriptContext<'_>, request: &Value) -> ScriptResult {
    run(|| {
        let (host, vm) = vm_by_id(ctx, request)?;
        let path = str_field(request, "path")?.to_owned();
        let id = vm.id.to_string();
        let mut ejected = 0u32;
        let mut removed = 0u32;
        let mut kept = Vec::new();
        // Walk from the end so removals do not shift the drives still to visit.
        for index in (0..vm.dvd_drives.len()).rev() {
            let drive = &vm.dvd_drives[index];
            if !drive
                .path
                .as_deref()
                .is_some_and(|p| p.eq_ignore_ascii_case(&path))
            {
                continue;
            }
            let fleet = ctx.state_mut().fleet_mut();
            fleet
                .eject_dvd(&host, &id, index)
                .map_err(|e| from_error(&e))?;
            ejected += 1;
            let ide = drive.controller_type == crate::model::ControllerType::Ide;
            if ide && vm.state != crate::model::VmState::Off {
                kept.push(format!(
                    "IDE drive {}:{} of a generation 1 VM cannot be removed while the VM runs; it was ejected and left empty",
                    drive.controller_number, drive.controller_location
                ));
                continue;
            }
            fleet
                .remove_dvd_drive(&host, &id, index)
                .map_err(|e| from_error(&e))?;
            removed += 1;
        }
        Ok(json!({
            "id": id,
            "path": path,
            "ejected": ejected,
            "removed": removed,
            "kept": kept,
        }))
    })
}

/// `Set-VmNotes`: `{"id", "notes"}` (missing or null notes clear them). Hyper-V changes a VM's
/// notes in any state, so the state is not checked.
pub fn set_vm_notes(ctx: &mut ScriptContext<'_>, request: &Value) -> ScriptResult {
    run(|| {
        let (host, vm) = vm_by_id(ctx, request)?;
        let notes = match request.get("notes") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(invalid("'notes' must be a string", "notes")),
        };
        let id = vm.id.to_string();
        ctx.state_mut()
            .fleet_mut()
            .vm_mut(&host, &id)
            .map_err(|e| from_error(&e))?
            .notes = notes.clone();
        Ok(json!({ "id": id, "notes": notes }))
    })
}
