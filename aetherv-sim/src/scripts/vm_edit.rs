//! Emulations of the day-2 scripts: `Set-ManagedVmSettings`, `New-ManagedVhd`,
//! `Add-ManagedVmDisk`, `Resize-ManagedVmDisk` and `Remove-ManagedVmDisk` (the scripts' doc
//! comments are the contract). Hyper-V's rules are enforced here on their own, as the host
//! would, so a test proves the API refuses what the host would refuse:
//!
//! - processor count, dynamic memory on/off, Secure Boot, the vTPM and the automatic stop
//!   action change only while the VM is Off; a processor count above the host's logical
//!   processors is refused;
//! - a running VM's memory changes only with dynamic memory on, within its range (minimum
//!   only down, maximum only up, startup within them); Saved and Paused VMs change no memory;
//! - a VHDX never shrinks; an IDE disk is neither resized nor detached unless the VM is Off;
//! - a new disk goes to the first free location of the VM's SCSI controllers (64 each; a
//!   generation 2 VM has controller 0, a generation 1 VM only the controllers its SCSI devices
//!   show), and a file attached to another VM is refused;
//! - a shared disk is never detached.

use serde_json::{Value, json};

use super::ops::{Step, fail, from_error, invalid, run, state_details, str_field, vm_by_id};
use super::{ScriptContext, vm_json};
use crate::model::{ControllerType, DiskType, SimVm, VirtualDisk};
use crate::state::LooseFile;
use aetherv_hyperv::ops::{AutomaticStartAction, AutomaticStopAction, VmState};
use aetherv_hyperv::protocol::ScriptResult;

const MIB: u64 = 1 << 20;

fn disk_json(d: &VirtualDisk) -> Value {
    json!({
        "path": d.path,
        "controller_type": d.controller_type.name(),
        "controller_number": d.controller_number,
        "controller_location": d.controller_location,
        "disk_type": d.disk_type.name(),
        "max_size_bytes": d.max_size_bytes,
        "file_size_bytes": d.file_size_bytes,
        "shared": d.shared,
    })
}

fn opt_u64(request: &Value, name: &str) -> Step<Option<u64>> {
    match request.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| invalid(format!("'{name}' must be a non-negative integer"), name)),
    }
}

fn opt_bool(request: &Value, name: &str) -> Step<Option<bool>> {
    match request.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(invalid(format!("'{name}' must be true or false"), name)),
    }
}

fn refuse_state(vm: &SimVm, what: &str) -> ScriptResult {
    fail(
        "InvalidVmState",
        format!(
            "{what} of VM {} change only while it is Off; it is {}",
            vm.name,
            vm.state.name()
        ),
        state_details(vm),
    )
}

/// `Set-ManagedVmSettings`: `{"id", processor_count?, memory_startup_bytes?, dynamic_memory?,
/// memory_minimum_bytes?, memory_maximum_bytes?, notes?, automatic_start_action?,
/// automatic_stop_action?, automatic_start_delay_seconds?, secure_boot?, tpm_enabled?}`;
/// answers the VM after the change.
pub fn set_managed_vm_settings(ctx: &mut ScriptContext<'_>, request: &Value) -> ScriptResult {
    run(|| {
        let (host, vm) = vm_by_id(ctx, request)?;
        let logical = ctx
            .host()
            .map(|h| h.logical_processors)
            .map_err(|e| from_error(&e))?;
        let processors = opt_u64(request, "processor_count")?;
        let startup = opt_u64(request, "memory_startup_bytes")?;
        let dynamic = opt_bool(request, "dynamic_memory")?;
        let minimum = opt_u64(request, "memory_minimum_bytes")?;
        let maximum = opt_u64(request, "memory_maximum_bytes")?;
        let secure_boot = opt_bool(request, "secure_boot")?;
        let tpm = opt_bool(request, "tpm_enabled")?;
        let delay = opt_u64(request, "automatic_start_delay_seconds")?;
        let notes = match request.get("notes") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(invalid("'notes' must be a string", "notes")),
        };
        let start_action = match request.get("automatic_start_action") {
            None | Some(Value::Null) => None,
            Some(v) => Some(AutomaticStartAction::from_host(v).ok_or_else(|| {
                invalid(
                    "automatic_start_action must be Nothing, StartIfRunning or Start",
                    "automatic_start_action",
                )
            })?),
        };
        let stop_action = match request.get("automatic_stop_action") {
            None | Some(Value::Null) => None,
            Some(v) => Some(AutomaticStopAction::from_host(v).ok_or_else(|| {
                invalid(
                    "automatic_stop_action must be TurnOff, Save or ShutDown",
                    "automatic_stop_action",
                )
            })?),
        };

        let off = vm.state == VmState::Off;
        if (secure_boot.is_some() || tpm.is_some()) && vm.generation != 2 {
            return Err(invalid(
                format!(
                    "VM {} is generation 1: it has no Secure Boot or virtual TPM",
                    vm.name
                ),
                "secure_boot",
            ));
        }
        if !off {
            if processors.is_some_and(|p| p != u64::from(vm.processor_count)) {
                return Err(refuse_state(&vm, "the processor count"));
            }
            if dynamic.is_some_and(|d| d != vm.memory.dynamic) {
                return Err(refuse_state(&vm, "dynamic memory (on/off)"));
            }
            if secure_boot.is_some() {
                return Err(refuse_state(&vm, "Secure Boot"));
            }
            if tpm.is_some() {
                return Err(refuse_state(&vm, "the virtual TPM"));
            }
            if stop_action.is_some_and(|a| a != vm.automatic.stop) {
                return Err(refuse_state(&vm, "the automatic stop action"));
            }
        }
        if let Some(p) = processors
            && (p == 0 || p > u64::from(logical))
        {
            return Err(invalid(
                format!(
                    "VM {} cannot have {p} processors: the host has {logical} logical processors",
                    vm.name
                ),
                "processor_count",
            ));
        }
        for (name, value) in [
            ("memory_startup_bytes", startup),
            ("memory_minimum_bytes", minimum),
            ("memory_maximum_bytes", maximum),
        ] {
            if let Some(bytes) = value
                && (bytes < 32 * MIB || !bytes.is_multiple_of(2 * MIB))
            {
                return Err(invalid(
                    format!("{name} {bytes} must be a multiple of 2 MiB from 32 MiB"),
                    name,
                ));
            }
        }
        let memory = vm.memory;
        let changes_memory = startup.is_some_and(|s| s != memory.startup_bytes)
            || minimum.is_some_and(|m| m != memory.minimum_bytes)
            || maximum.is_some_and(|m| m != memory.maximum_bytes);
        let now_dynamic = dynamic.unwrap_or(memory.dynamic);
        let mut new_memory = memory;
        new_memory.dynamic = now_dynamic;
        new_memory.startup_bytes = startup.unwrap_or(memory.startup_bytes);
        if now_dynamic {
            new_memory.minimum_bytes = minimum.unwrap_or(if memory.dynamic {
                memory.minimum_bytes
            } else {
                512 * MIB
            });
            new_memory.maximum_bytes = maximum.unwrap_or(if memory.dynamic {
                memory.maximum_bytes
            } else {
                1 << 40
            });
            if !(new_memory.minimum_bytes <= new_memory.startup_bytes
                && new_memory.startup_bytes <= new_memory.maximum_bytes)
            {
                return Err(invalid(
                    "dynamic memory needs minimum <= startup <= maximum",
                    "memory_startup_bytes",
                ));
            }
        } else {
            new_memory.minimum_bytes = new_memory.startup_bytes;
            new_memory.maximum_bytes = new_memory.startup_bytes;
        }
        if !off && changes_memory {
            if vm.state != VmState::Running || !memory.dynamic {
                return Err(refuse_state(
                    &vm,
                    if memory.dynamic {
                        "the memory"
                    } else {
                        "the static memory"
                    },
                ));
            }
            if new_memory.minimum_bytes > memory.minimum_bytes
                || new_memory.maximum_bytes < memory.maximum_bytes
            {
                return Err(fail(
                    "InvalidVmState",
                    format!(
                        "VM {} is Running: its dynamic memory minimum may only decrease and its maximum only increase",
                        vm.name
                    ),
                    state_details(&vm),
                ));
            }
            new_memory.assigned_bytes = memory
                .assigned_bytes
                .clamp(new_memory.minimum_bytes, new_memory.maximum_bytes);
        }

        let id = vm.id.to_string();
        let now = ctx.now();
        let target = ctx
            .state_mut()
            .fleet_mut()
            .vm_mut(&host, &id)
            .map_err(|e| from_error(&e))?;
        if let Some(p) = processors {
            target.processor_count = u32::try_from(p).unwrap_or(u32::MAX);
        }
        target.memory = new_memory;
        if let Some(n) = notes {
            target.notes = n;
        }
        if let Some(a) = start_action {
            target.automatic.start = a;
        }
        if let Some(a) = stop_action {
            target.automatic.stop = a;
        }
        if let Some(d) = delay {
            target.automatic.start_delay_seconds = u32::try_from(d).unwrap_or(u32::MAX);
        }
        if let Some(b) = secure_boot {
            target.firmware.secure_boot = b;
        }
        if let Some(t) = tpm {
            target.firmware.tpm = t;
        }
        Ok(vm_json(target, now))
    })
}

/// `New-ManagedVhd`: `{"path","size_bytes","fixed"}`; the new file is a loose file until a
/// VM uses it. Refuses an existing path and a path on no storage location.
pub fn new_managed_vhd(ctx: &mut ScriptContext<'_>, request: &Value) -> ScriptResult {
    run(|| {
        let path = str_field(request, "path")?.to_owned();
        let size = opt_u64(request, "size_bytes")?
            .filter(|s| *s > 0 && s.is_multiple_of(MIB))
            .ok_or_else(|| {
                invalid(
                    "'size_bytes' must be a positive multiple of 1 MiB",
                    "size_bytes",
                )
            })?;
        let fixed = opt_bool(request, "fixed")?.unwrap_or(false);
        if !path.to_ascii_lowercase().ends_with(".vhdx") {
            return Err(invalid(format!("{path} is not a .vhdx file"), "path"));
        }
        let host = ctx.host_name().to_owned();
        let host_model = ctx.host().map_err(|e| from_error(&e))?;
        let attached = host_model
            .vms
            .iter()
            .flat_map(|v| &v.disks)
            .any(|d| d.path.eq_ignore_ascii_case(&path));
        if attached || ctx.state().loose_file(&host, &path).is_some() {
            return Err(invalid(format!("the file {path} already exists"), "path"));
        }
        let storage = ctx
            .state()
            .fleet()
            .storage_status(&host)
            .map_err(|e| from_error(&e))?;
        let location = storage
            .iter()
            .filter(|s| crate::model::path_is_under(&path, &s.path))
            .max_by_key(|s| s.path.len())
            .ok_or_else(|| {
                invalid(
                    format!("{path} is on no storage location of host {host}"),
                    "path",
                )
            })?;
        let file_size = if fixed { size } else { 4 * MIB };
        if file_size > location.free_bytes {
            return Err(fail(
                "InsufficientStorage",
                format!("not enough free space for {path}"),
                json!({ "location": location.path, "required_bytes": file_size,
                    "available_bytes": location.free_bytes }),
            ));
        }
        ctx.state_mut().add_loose_file(
            &host,
            LooseFile {
                path: path.clone(),
                size_bytes: file_size,
                image: None,
                max_size_bytes: Some(size),
            },
        );
        Ok(json!({ "path": path, "size_bytes": size, "file_size_bytes": file_size }))
    })
}

/// The SCSI controllers of `vm`: controller 0 on generation 2, plus every controller its SCSI
/// devices use.
fn scsi_controllers(vm: &SimVm) -> u32 {
    let used = vm
        .disks
        .iter()
        .filter(|d| d.controller_type == ControllerType::Scsi)
        .map(|d| d.controller_number + 1)
        .chain(
            vm.dvd_drives
                .iter()
                .filter(|d| d.controller_type == ControllerType::Scsi)
                .map(|d| d.controller_number + 1),
        )
        .max()
        .unwrap_or(0);
    used.max(u32::from(vm.generation == 2)).min(4)
}

/// `Add-ManagedVmDisk`: `{"id","path"}`: the file (a loose VHDX on the host) goes to the first
/// free SCSI location.
pub fn add_managed_vm_disk(ctx: &mut ScriptContext<'_>, request: &Value) -> ScriptResult {
    run(|| {
        let (host, vm) = vm_by_id(ctx, request)?;
        let path = str_field(request, "path")?.to_owned();
        let host_model = ctx.host().map_err(|e| from_error(&e))?;
        if let Some(other) = host_model
            .vms
            .iter()
            .find(|v| v.disks.iter().any(|d| d.path.eq_ignore_ascii_case(&path)))
        {
            return Err(invalid(
                format!("disk {path} is already attached to VM {}", other.name),
                "path",
            ));
        }
        let Some(file) = ctx.state().loose_file(&host, &path).cloned() else {
            return Err(invalid(format!("no disk file {path}"), "path"));
        };
        let Some(max_size) = file.max_size_bytes else {
            return Err(invalid(format!("{path} is not a virtual disk"), "path"));
        };
        let taken = |c: u32, l: u32| {
            vm.disks.iter().any(|d| {
                d.controller_type == ControllerType::Scsi
                    && d.controller_number == c
                    && d.controller_location == l
            }) || vm.dvd_drives.iter().any(|d| {
                d.controller_type == ControllerType::Scsi
                    && d.controller_number == c
                    && d.controller_location == l
            })
        };
        let slot = (0..scsi_controllers(&vm))
            .flat_map(|c| (0..64).map(move |l| (c, l)))
            .find(|(c, l)| !taken(*c, *l));
        let Some((number, location)) = slot else {
            return Err(fail(
                "NoFreeScsiSlot",
                format!("VM {} has no free SCSI location", vm.name),
                json!({ "vm": vm.id.to_string() }),
            ));
        };
        let disk = VirtualDisk {
            path: path.clone(),
            controller_type: ControllerType::Scsi,
            controller_number: number,
            controller_location: location,
            disk_type: if file.size_bytes >= max_size {
                DiskType::Fixed
            } else {
                DiskType::Dynamic
            },
            max_size_bytes: max_size,
            file_size_bytes: file.size_bytes,
            shared: path.to_ascii_lowercase().ends_with(".vhds"),
        };
        let id = vm.id.to_string();
        let state = ctx.state_mut();
        state.remove_loose_files(&host, &path);
        state
            .fleet_mut()
            .vm_mut(&host, &id)
            .map_err(|e| from_error(&e))?
            .disks
            .push(disk.clone());
        Ok(json!({ "id": id, "disk": disk_json(&disk) }))
    })
}

/// The controller place a disk request names.
fn disk_place(request: &Value) -> Step<(ControllerType, u32, u32)> {
    let kind = match str_field(request, "controller_type")?
        .to_ascii_uppercase()
        .as_str()
    {
        "SCSI" => ControllerType::Scsi,
        "IDE" => ControllerType::Ide,
        _ => {
            return Err(invalid(
                "controller_type must be SCSI or IDE",
                "controller_type",
            ));
        }
    };
    let number = opt_u64(request, "controller_number")?
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| {
            invalid(
                "the request has no 'controller_number'",
                "controller_number",
            )
        })?;
    let location = opt_u64(request, "controller_location")?
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| {
            invalid(
                "the request has no 'controller_location'",
                "controller_location",
            )
        })?;
    Ok((kind, number, location))
}

fn find_disk(vm: &SimVm, place: (ControllerType, u32, u32)) -> Step<&VirtualDisk> {
    vm.disks
        .iter()
        .find(|d| {
            (
                d.controller_type,
                d.controller_number,
                d.controller_location,
            ) == place
        })
        .ok_or_else(|| {
            invalid(
                format!(
                    "VM {} has no disk at {} {}:{}",
                    vm.name,
                    place.0.name(),
                    place.1,
                    place.2
                ),
                "disk",
            )
        })
}

/// `Resize-ManagedVmDisk`: grows the disk at the named place ([`crate::SimState::resize_vhd`]
/// applies Hyper-V's rules: never below the current size, IDE only while Off, VHDX only).
pub fn resize_managed_vm_disk(ctx: &mut ScriptContext<'_>, request: &Value) -> ScriptResult {
    run(|| {
        let (host, vm) = vm_by_id(ctx, request)?;
        let place = disk_place(request)?;
        let size = opt_u64(request, "size_bytes")?
            .ok_or_else(|| invalid("the request has no 'size_bytes'", "size_bytes"))?;
        let disk = find_disk(&vm, place)?.clone();
        if size < disk.max_size_bytes {
            return Err(invalid(
                format!(
                    "disk {} is {} bytes; it cannot shrink to {size}",
                    disk.path, disk.max_size_bytes
                ),
                "size_bytes",
            ));
        }
        if vm.state != VmState::Off && disk.controller_type == ControllerType::Ide {
            return Err(fail(
                "InvalidVmState",
                format!(
                    "disk {} of VM {} can only be resized while the VM is Off (online resize needs a VHDX on SCSI)",
                    disk.path, vm.name
                ),
                state_details(&vm),
            ));
        }
        ctx.state_mut()
            .resize_vhd(&host, &disk.path, size)
            .map_err(|e| from_error(&e))?;
        let id = vm.id.to_string();
        let after = ctx
            .state()
            .fleet()
            .vm(&host, &id)
            .map_err(|e| from_error(&e))?;
        let disk = find_disk(after, place)?;
        Ok(json!({ "id": id, "disk": disk_json(disk) }))
    })
}

/// `Remove-ManagedVmDisk`: detaches the disk at the named place; a kept file becomes a loose
/// file, a deleted one is gone. Refuses shared disks and IDE disks of a VM that is not Off.
pub fn remove_managed_vm_disk(ctx: &mut ScriptContext<'_>, request: &Value) -> ScriptResult {
    run(|| {
        let (host, vm) = vm_by_id(ctx, request)?;
        let place = disk_place(request)?;
        let delete_file = opt_bool(request, "delete_file")?.unwrap_or(false);
        let disk = find_disk(&vm, place)?.clone();
        if disk.shared || disk.path.to_ascii_lowercase().ends_with(".vhds") {
            return Err(fail(
                "SharedDisk",
                format!("disk {} of VM {} is shared", disk.path, vm.name),
                json!({ "vm": vm.id.to_string(), "path": disk.path }),
            ));
        }
        if disk.controller_type == ControllerType::Ide && vm.state != VmState::Off {
            return Err(fail(
                "InvalidVmState",
                format!(
                    "disk {} of VM {} is on IDE: it can only be detached while the VM is Off",
                    disk.path, vm.name
                ),
                state_details(&vm),
            ));
        }
        let id = vm.id.to_string();
        let state = ctx.state_mut();
        state
            .fleet_mut()
            .vm_mut(&host, &id)
            .map_err(|e| from_error(&e))?
            .disks
            .retain(|d| {
                (
                    d.controller_type,
                    d.controller_number,
                    d.controller_location,
                ) != place
            });
        if !delete_file {
            state.add_loose_file(
                &host,
                LooseFile {
                    path: disk.path.clone(),
                    size_bytes: disk.file_size_bytes,
                    image: None,
                    max_size_bytes: Some(disk.max_size_bytes),
                },
            );
        }
        Ok(json!({ "id": id, "path": disk.path, "deleted": delete_file }))
    })
}
