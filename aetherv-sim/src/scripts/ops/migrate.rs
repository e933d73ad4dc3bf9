//! Emulations of the migration scripts: `Test-VmMigration` (Compare-VM, or the volume check
//! of a storage move), `Move-ManagedVm` (Move-VM / Move-VMStorage), `Move-VmClusterRole`
//! (Move-ClusterVirtualMachineRole), `Get-VmMigration` and `Stop-VmMigration` (the host's
//! `Msvm_MigrationJob`). The moves themselves take time ([`crate::migration`]).
//!
//! Compare-VM's checks, in Hyper-V's words: the destination exists and is another host and
//! has no VM with the same id; the VM is not already moving; a VM that holds memory fits in
//! the destination's available memory (less what running moves to it hold); a running, paused
//! or saved VM needs a processor of the same vendor, and of the same model unless processor
//! compatibility mode is on; without storage migration the VM's disks are on a cluster shared
//! volume of a cluster both hosts belong to; with it, the destination folder is on a volume of
//! the destination. Move-VM refuses a clustered VM (the cluster moves its roles); a cluster
//! move needs a clustered VM and a node of its cluster.

use serde_json::{Value, json};

use super::{Step, fail, invalid, opt_str, run, str_field, vm_by_id};
use crate::migration::{Migration, MigrationState, MoveKind};
use crate::model::{SimVm, VmState, holds_memory, path_is_under};
use crate::scripts::{PendingMove, ScriptContext};
use crate::state::SimState;
use aetherv_hyperv::protocol::ScriptResult;

struct MoveRequest {
    host: String,
    vm: SimVm,
    destination: String,
    with_storage: bool,
    storage_only: bool,
    destination_path: Option<String>,
}

fn flag(request: &Value, name: &str) -> bool {
    request.get(name).and_then(Value::as_bool).unwrap_or(false)
}

fn move_request(ctx: &ScriptContext<'_>, request: &Value) -> Step<MoveRequest> {
    let (host, vm) = vm_by_id(ctx, request)?;
    let storage_only = flag(request, "storage_only");
    let destination_path = opt_str(request, "destination_path").map(str::to_owned);
    if storage_only && destination_path.is_none() {
        return Err(invalid(
            "the request has no 'destination_path'",
            "destination_path",
        ));
    }
    Ok(MoveRequest {
        destination: if storage_only {
            host.clone()
        } else {
            str_field(request, "destination_host")?.to_owned()
        },
        host,
        vm,
        with_storage: flag(request, "with_storage"),
        storage_only,
        destination_path,
    })
}

const MIB: u64 = 1 << 20;

/// The processor check of a move of `vm` from `source` to `dest`.
fn processor_problem(state: &SimState, vm: &SimVm, source: &str, dest: &str) -> Option<String> {
    // An Off VM has no processor state to carry; any processor runs it.
    if !(holds_memory(vm.state) || vm.state == VmState::Saved) {
        return None;
    }
    let fleet = state.fleet();
    let (from, to) = (fleet.host(source)?, fleet.host(dest)?);
    if from.processor.vendor != to.processor.vendor {
        return Some(format!(
            "The virtual machine '{}' is using processor-specific features not supported on \
             physical computer '{}'. Live and quick migration between processors of different \
             manufacturers ({} and {}) is not supported.",
            vm.name,
            to.name.to_ascii_uppercase(),
            from.processor.vendor,
            to.processor.vendor
        ));
    }
    if from.processor.model != to.processor.model && !vm.processor_compatibility {
        return Some(format!(
            "The virtual machine '{}' is using processor-specific features not supported on \
             physical computer '{}'. To allow for migration of this virtual machine to physical \
             computers with different processors, modify the virtual machine settings to limit \
             the processor features used by the virtual machine.",
            vm.name,
            to.name.to_ascii_uppercase()
        ));
    }
    None
}

/// The bytes of the VM's disk files.
fn files_bytes(vm: &SimVm) -> u64 {
    vm.disks.iter().map(|d| d.file_size_bytes).sum()
}

/// The storage-move check: the folder is on a volume of the host with room for the files.
fn storage_problems(state: &SimState, m: &MoveRequest) -> Vec<String> {
    let Some(path) = &m.destination_path else {
        return vec!["A storage move needs a destination path.".to_owned()];
    };
    let Ok(status) = state.fleet().storage_status(&m.host) else {
        return vec![format!("The host {} is gone.", m.host)];
    };
    let Some(volume) = status
        .iter()
        .filter(|s| path_is_under(path, &s.path))
        .max_by_key(|s| s.path.len())
    else {
        return vec![format!(
            "The destination storage path {path} is on no volume of this host."
        )];
    };
    let mut problems = Vec::new();
    if path
        .trim_end_matches('\\')
        .eq_ignore_ascii_case(m.vm.path.trim_end_matches('\\'))
    {
        problems.push(format!(
            "The virtual machine's files are already in {path}."
        ));
    }
    let needed = files_bytes(&m.vm);
    // Moving within one volume needs no room: only the files' names change.
    let same_volume =
        m.vm.disks
            .iter()
            .all(|d| path_is_under(&d.path, &volume.path));
    if !same_volume && volume.free_bytes < needed {
        problems.push(format!(
            "The destination volume {} has {} bytes free; the virtual machine's files need {} \
             bytes.",
            volume.path, volume.free_bytes, needed
        ));
    }
    problems
}

/// Compare-VM's emulated checks; the incompatibility messages.
fn incompatibilities(state: &SimState, m: &MoveRequest) -> Vec<String> {
    if let Some(running) = state.migration(m.vm.id)
        && running.state == MigrationState::Running
    {
        return vec![format!(
            "The operation cannot be performed while the virtual machine '{}' is being migrated \
             to '{}'.",
            m.vm.name, running.destination
        )];
    }
    if m.storage_only {
        return storage_problems(state, m);
    }
    let fleet = state.fleet();
    let Some(dest) = fleet.host(&m.destination) else {
        return vec![format!(
            "The operation failed because the destination host {} could not be reached.",
            m.destination
        )];
    };
    if state.is_unreachable(&dest.name) {
        return vec![format!(
            "The operation failed because the destination host {} could not be reached.",
            dest.name
        )];
    }
    let mut problems = Vec::new();
    if let Some(refusal) = crate::maintenance::refuses_role(state, &dest.name, m.vm.clustered) {
        problems.push(refusal);
    }
    if dest.name.eq_ignore_ascii_case(&m.host) {
        problems.push("The virtual machine is already on the destination host.".to_owned());
    }
    if dest.vms.iter().any(|v| v.id == m.vm.id) {
        problems.push(
            "A virtual machine with the same identifier already exists on the destination host."
                .to_owned(),
        );
    }
    let available = dest
        .memory_available_bytes()
        .saturating_sub(state.memory_reserved_for_migrations(&dest.name));
    if holds_memory(m.vm.state) && available < m.vm.memory.assigned_bytes {
        problems.push(format!(
            "Not enough memory in the system to start the virtual machine '{}' on '{}': it \
             needs {} MB, {} MB is available.",
            m.vm.name,
            dest.name.to_ascii_uppercase(),
            m.vm.memory.assigned_bytes / MIB,
            available / MIB
        ));
    }
    if let Some(problem) = processor_problem(state, &m.vm, &m.host, &dest.name) {
        problems.push(problem);
    }
    if !m.with_storage {
        let source = fleet.host(&m.host);
        let same_cluster = source
            .and_then(|s| s.cluster.as_ref())
            .is_some_and(|c| dest.cluster.as_ref() == Some(c));
        let shared = |path: &str| {
            dest.storage
                .iter()
                .any(|l| l.shared && path_is_under(path, &l.path))
        };
        if !same_cluster || !m.vm.disks.iter().all(|d| shared(&d.path)) {
            problems.push("The virtual machine's storage is not accessible from the destination host; migrate it with its storage.".to_owned());
        }
    } else if let Some(path) = &m.destination_path
        && !dest.storage.iter().any(|l| path_is_under(path, &l.path))
    {
        problems.push(format!(
            "The destination storage path {path} is on no volume of the destination host."
        ));
    }
    problems
}

/// `Test-VmMigration`: `{"id","destination_host","with_storage","destination_path","storage_only"}`.
pub fn test_vm_migration(ctx: &mut ScriptContext<'_>, request: &Value) -> ScriptResult {
    run(|| {
        let m = move_request(ctx, request)?;
        let problems = incompatibilities(ctx.state(), &m);
        Ok(json!({
            "compatible": problems.is_empty(),
            "incompatibilities": problems
                .iter()
                .map(|p| json!({ "message": p, "message_id": 21024 }))
                .collect::<Vec<_>>(),
        }))
    })
}

/// Registers the move and makes the command wait for it.
fn start(ctx: &mut ScriptContext<'_>, m: &MoveRequest, kind: MoveKind) -> Value {
    let timing = ctx.state().migration_timing();
    let memory = if holds_memory(m.vm.state) {
        m.vm.memory.assigned_bytes
    } else {
        0
    };
    let (copied_memory, copied_files) = match kind {
        MoveKind::Host | MoveKind::ClusterLive | MoveKind::ClusterQuick => (memory, 0),
        MoveKind::HostWithStorage => (memory, files_bytes(&m.vm)),
        MoveKind::Storage => (0, files_bytes(&m.vm)),
    };
    let migration = Migration {
        vm: m.vm.id,
        vm_name: m.vm.name.clone(),
        source: m.host.clone(),
        destination: m.destination.clone(),
        kind,
        destination_path: m.destination_path.clone(),
        reserved_bytes: memory,
        started: ctx.now(),
        duration: timing.duration(copied_memory, copied_files),
        switch_over_percent: timing.switch_over_percent,
        fail_at_percent: ctx.migration_fault(),
        state: MigrationState::Running,
        ended: None,
        end_percent: 0,
    };
    ctx.state_mut().start_migration(migration);
    let data = json!({
        "id": m.vm.id.to_string(),
        "destination_host": m.destination,
        "with_storage": m.with_storage || m.storage_only,
    });
    ctx.wait_for(PendingMove {
        vm: m.vm.id,
        destination: m.destination.clone(),
        data: data.clone(),
    });
    data
}

/// `Move-ManagedVm`: runs the Compare-VM checks, then starts the move (Move-VM, or
/// Move-VMStorage with `storage_only`) and waits for it. A clustered VM is refused unless only
/// its storage moves: the cluster moves its roles.
pub fn move_managed_vm(ctx: &mut ScriptContext<'_>, request: &Value) -> ScriptResult {
    run(|| {
        let m = move_request(ctx, request)?;
        let mut problems = incompatibilities(ctx.state(), &m);
        if m.vm.clustered && !m.storage_only {
            problems.push(format!(
                "The virtual machine '{}' is highly available: it is a role of its failover \
                 cluster and moves with the cluster (Move-ClusterVirtualMachineRole).",
                m.vm.name
            ));
        }
        if !problems.is_empty() {
            return Err(fail(
                "MigrationIncompatible",
                problems.join("; "),
                json!({ "vm": m.vm.id.to_string(), "destination": m.destination }),
            ));
        }
        let kind = if m.storage_only {
            MoveKind::Storage
        } else if m.with_storage {
            MoveKind::HostWithStorage
        } else {
            MoveKind::Host
        };
        Ok(start(ctx, &m, kind))
    })
}

/// `Move-VmClusterRole`: `{"id","node","migration_type"}`; the VM must be a cluster role and
/// the node a member of its host's cluster; the Compare-VM checks of a move without storage
/// apply (memory, processor, shared volume).
pub fn move_vm_cluster_role(ctx: &mut ScriptContext<'_>, request: &Value) -> ScriptResult {
    run(|| {
        let (host, vm) = vm_by_id(ctx, request)?;
        let node = str_field(request, "node")?.to_owned();
        let kind = match str_field(request, "migration_type")? {
            "Live" => MoveKind::ClusterLive,
            "Quick" => MoveKind::ClusterQuick,
            other => {
                return Err(invalid(
                    format!("migration type must be Live or Quick, got {other}"),
                    "migration_type",
                ));
            }
        };
        if !vm.clustered {
            return Err(fail(
                "NotClustered",
                format!("VM {} is not a cluster role; move it with Move-VM", vm.name),
                json!({ "vm": vm.id.to_string() }),
            ));
        }
        let fleet = ctx.state().fleet();
        let cluster = fleet.host(&host).and_then(|h| h.cluster.clone());
        let member = fleet
            .host(&node)
            .filter(|n| n.cluster.is_some() && n.cluster == cluster);
        let Some(member) = member else {
            return Err(fail(
                "MigrationFailed",
                format!(
                    "The node '{node}' is not a member of cluster '{}'.",
                    cluster.unwrap_or_default()
                ),
                json!({ "vm": vm.id.to_string(), "destination": node }),
            ));
        };
        let m = MoveRequest {
            host,
            destination: member.name.clone(),
            vm,
            with_storage: false,
            storage_only: false,
            destination_path: None,
        };
        let problems = incompatibilities(ctx.state(), &m);
        if !problems.is_empty() {
            return Err(fail(
                "MigrationFailed",
                format!(
                    "Move-ClusterVirtualMachineRole: the virtual machine '{}' cannot move to node \
                     '{}': {}",
                    m.vm.name,
                    m.destination,
                    problems.join("; ")
                ),
                json!({ "vm": m.vm.id.to_string(), "destination": m.destination }),
            ));
        }
        Ok(start(ctx, &m, kind))
    })
}

/// The VM id of a request (the VM may have left this host).
fn request_id(request: &Value) -> Step<uuid::Uuid> {
    let raw = str_field(request, "id")?;
    uuid::Uuid::parse_str(raw.trim().trim_matches(['{', '}']))
        .map_err(|_| invalid("the VM id is not a GUID", "id"))
}

/// `Get-VmMigration`: `{"id"}`; the VM's migration job as the source host's
/// `Msvm_MigrationJob` shows it (running, or ended: the host keeps ended jobs for a while).
pub fn get_vm_migration(ctx: &mut ScriptContext<'_>, request: &Value) -> ScriptResult {
    run(|| {
        let id = request_id(request)?;
        let now = ctx.now();
        let host = ctx.host_name().to_owned();
        let job = ctx
            .state()
            .migration(id)
            .filter(|m| m.source.eq_ignore_ascii_case(&host));
        let Some(job) = job else {
            return Ok(json!({
                "id": id.to_string(), "active": false, "percent_complete": 0,
                "job_state": null, "cancellable": false, "status": null,
                "destination_host": null, "error": null,
            }));
        };
        let error = match &job.state {
            MigrationState::Failed(message) => Some(message.clone()),
            _ => None,
        };
        let status = match &job.state {
            MigrationState::Running => "Job is running",
            MigrationState::Completed => "Job completed successfully",
            MigrationState::Cancelled => "Job was stopped",
            MigrationState::Failed(_) => "Job failed",
        };
        Ok(json!({
            "id": id.to_string(),
            "active": job.state == MigrationState::Running,
            "percent_complete": job.percent(now),
            "job_state": job.state.job_state(),
            "cancellable": job.cancellable(now),
            "status": status,
            "destination_host": job.destination,
            "error": error,
        }))
    })
}

/// `Stop-VmMigration`: `{"id"}`; cancels the running job before its switch-over.
pub fn stop_vm_migration(ctx: &mut ScriptContext<'_>, request: &Value) -> ScriptResult {
    run(|| {
        let id = request_id(request)?;
        let now = ctx.now();
        let host = ctx.host_name().to_owned();
        let here = ctx
            .state()
            .migration(id)
            .is_some_and(|m| m.source.eq_ignore_ascii_case(&host));
        let outcome = if here {
            ctx.state_mut().cancel_migration(id, now)
        } else {
            Err("no migration of this VM is running".to_owned())
        };
        Ok(match outcome {
            Ok(()) => json!({ "id": id.to_string(), "cancelled": true, "reason": null }),
            Err(reason) => json!({ "id": id.to_string(), "cancelled": false, "reason": reason }),
        })
    })
}
