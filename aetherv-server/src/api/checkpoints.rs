//! `/api/v1/vms/{id}/checkpoints`: a VM's checkpoints as a tree (from the inventory, which
//! collects them with the one inventory script per host), and jobs that create, apply,
//! rename and delete them. Hyper-V's rules are checked before a job is queued, each refusal
//! a 409 naming the rule: a checkpoint applies only to a VM that is Off or Saved (`force`
//! turns it off first); nothing is taken, applied or deleted while a merge runs. The host
//! script and the simulator enforce the same rules.

use std::sync::Arc;

use aetherv_hyperv::ops::{CheckpointChange, CheckpointKind, VmCheckpoint, VmState};
use aetherv_inventory::InventoryVm;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use super::inventory::vm_id;
use super::views::AcceptedView;
use super::vms::{ensure_ready, parse_json_body, submit_vm_job};
use crate::error::{ApiError, ApiResult, ErrorBody, ErrorCode};
use crate::jobs::JobWork;
use crate::state::AppState;

/// A checkpoint with the checkpoints taken after it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Checkpoint)]
pub struct CheckpointView {
    /// Hyper-V's checkpoint id (stable; the path segment of its routes).
    #[schema(format = Uuid)]
    pub id: String,
    /// Its name.
    pub name: String,
    /// The checkpoint it was taken after; null for a root.
    #[schema(format = Uuid)]
    pub parent_id: Option<String>,
    /// When it was taken.
    #[schema(format = DateTime)]
    pub creation_time: Option<String>,
    /// `standard` (disks, memory and devices) or `production` (application-consistent disks
    /// without memory); `other` for replica bookkeeping.
    #[serde(rename = "type")]
    pub kind: CheckpointKindView,
    /// Hyper-V's own `SnapshotType` name.
    pub snapshot_type: String,
    /// The checkpoints taken after this one.
    #[schema(no_recursion)]
    pub children: Vec<CheckpointView>,
}

/// Standard or production.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = CheckpointType)]
pub enum CheckpointKindView {
    /// Disks, memory and device state.
    Standard,
    /// Application-consistent disks, no memory; applying it leaves the VM off.
    Production,
    /// Replica, planned or missing checkpoints.
    Other,
}

impl From<CheckpointKind> for CheckpointKindView {
    fn from(kind: CheckpointKind) -> Self {
        match kind {
            CheckpointKind::Standard => Self::Standard,
            CheckpointKind::Production => Self::Production,
            _ => Self::Other,
        }
    }
}

/// A VM's checkpoints.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = CheckpointTree)]
pub struct CheckpointTreeView {
    /// The VM.
    #[schema(format = Uuid)]
    pub vm_id: String,
    /// How many checkpoints it has.
    pub count: usize,
    /// While Hyper-V merges differencing disks: how far, in percent; null otherwise.
    pub merge_percent: Option<u8>,
    /// The root checkpoints, each with its descendants.
    pub checkpoints: Vec<CheckpointView>,
}

fn node(c: &VmCheckpoint, all: &[VmCheckpoint], depth: usize) -> CheckpointView {
    CheckpointView {
        id: c.id.to_string(),
        name: c.name.clone(),
        parent_id: c.parent_id.map(|p| p.to_string()),
        creation_time: c.creation_time.map(|t| t.to_string()),
        kind: c.kind().into(),
        snapshot_type: c.snapshot_type.clone(),
        // Hyper-V's tree is acyclic; the bound only keeps malformed host data from recursing.
        children: if depth > all.len() {
            Vec::new()
        } else {
            all.iter()
                .filter(|x| x.parent_id == Some(c.id))
                .map(|x| node(x, all, depth + 1))
                .collect()
        },
    }
}

/// The tree of `checkpoints` (a checkpoint whose parent is unknown counts as a root).
pub fn tree(checkpoints: &[VmCheckpoint]) -> Vec<CheckpointView> {
    checkpoints
        .iter()
        .filter(|c| {
            c.parent_id
                .is_none_or(|p| !checkpoints.iter().any(|x| x.id == p))
        })
        .map(|c| node(c, checkpoints, 0))
        .collect()
}

fn find_vm(state: &AppState, id: &str) -> ApiResult<Arc<InventoryVm>> {
    let vm_id = vm_id(id)?;
    let snapshot = state.inventory.snapshot();
    snapshot
        .vm(vm_id)
        .cloned()
        .ok_or_else(|| ApiError::not_found("VM", id))
}

/// The VM (known, its host connected) for a change.
fn target(state: &AppState, id: &str) -> ApiResult<Arc<InventoryVm>> {
    ensure_ready(state)?;
    let vm = find_vm(state, id)?;
    if vm.stale {
        return Err(ApiError::conflict(
            ErrorCode::HostDisconnected,
            format!("host {} is disconnected; its inventory is stale", vm.host),
        ));
    }
    Ok(vm)
}

fn checkpoint_of<'a>(vm: &'a InventoryVm, checkpoint: &str) -> ApiResult<&'a VmCheckpoint> {
    let parsed: Option<Uuid> = Uuid::parse_str(checkpoint.trim().trim_matches(['{', '}'])).ok();
    parsed
        .and_then(|id| vm.vm.checkpoints.iter().find(|c| c.id == id))
        .ok_or_else(|| {
            ApiError::not_found("checkpoint", &format!("{checkpoint} of VM {}", vm.vm.name))
        })
}

fn refuse_while_merging(vm: &InventoryVm, what: &str) -> ApiResult<()> {
    match vm.vm.merge_percent {
        Some(percent) => Err(ApiError::conflict(
            ErrorCode::InvalidState,
            format!(
                "cannot {what} VM {}: Hyper-V is merging its differencing disks ({percent}%); \
                 no checkpoint is taken, applied or deleted until the merge ends",
                vm.vm.name
            ),
        )),
        None => Ok(()),
    }
}

fn check_name(name: &str) -> ApiResult<()> {
    if name.trim().is_empty()
        || name.trim() != name
        || name.chars().count() > 100
        || name.chars().any(char::is_control)
    {
        return Err(ApiError::invalid(
            "name",
            "a checkpoint name is 1-100 characters without control characters or surrounding spaces",
        ));
    }
    Ok(())
}

fn submit(
    state: &AppState,
    vm: &InventoryVm,
    change: CheckpointChange,
    parameters: serde_json::Value,
) -> ApiResult<Response> {
    submit_vm_job(
        state,
        vm,
        JobWork::Checkpoint {
            vm: vm.vm.id,
            change,
        },
        parameters,
    )
}

/// `GET /api/v1/vms/{id}/checkpoints`.
#[utoipa::path(get, path = "/api/v1/vms/{id}/checkpoints", tag = "checkpoints",
    operation_id = "listCheckpoints", summary = "A VM's checkpoints as a tree",
    description = "Every checkpoint with its creation time, type and parent, nested under \
        the checkpoint it was taken after, from the inventory (no host round trip).",
    params(("id" = String, Path, format = Uuid, description = "Hyper-V VM id")),
    responses(
        (status = 200, description = "The tree", body = CheckpointTreeView),
        (status = 404, description = "`not_found`: unknown VM", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<CheckpointTreeView>> {
    let vm = find_vm(&state, &id)?;
    Ok(Json(CheckpointTreeView {
        vm_id: vm.vm.id.to_string(),
        count: vm.vm.checkpoints.len(),
        merge_percent: vm.vm.merge_percent,
        checkpoints: tree(&vm.vm.checkpoints),
    }))
}

/// `GET /api/v1/vms/{id}/checkpoints/{checkpoint_id}`.
#[utoipa::path(get, path = "/api/v1/vms/{id}/checkpoints/{checkpoint_id}", tag = "checkpoints",
    operation_id = "getCheckpoint", summary = "One checkpoint with its subtree",
    params(
        ("id" = String, Path, format = Uuid, description = "Hyper-V VM id"),
        ("checkpoint_id" = String, Path, format = Uuid, description = "Hyper-V checkpoint id"),
    ),
    responses(
        (status = 200, description = "The checkpoint", body = CheckpointView),
        (status = 404, description = "`not_found`: unknown VM or checkpoint", body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    Path((id, checkpoint)): Path<(String, String)>,
) -> ApiResult<Json<CheckpointView>> {
    let vm = find_vm(&state, &id)?;
    let c = checkpoint_of(&vm, &checkpoint)?;
    Ok(Json(node(c, &vm.vm.checkpoints, 0)))
}

/// The body of `POST /api/v1/vms/{id}/checkpoints`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateCheckpointRequest)]
pub struct CreateBody {
    /// The checkpoint's name (1-100 characters).
    name: String,
}

/// `POST /api/v1/vms/{id}/checkpoints`.
#[utoipa::path(post, path = "/api/v1/vms/{id}/checkpoints", tag = "checkpoints",
    operation_id = "createCheckpoint", summary = "Take a checkpoint",
    description = "Queues a checkpoint job. The checkpoint is of the VM's configured type \
        (Hyper-V's default, Production, falls back to standard when the guest cannot freeze \
        its file systems). The job result's `checkpoint.id` is the new checkpoint's id.",
    params(("id" = String, Path, format = Uuid, description = "Hyper-V VM id")),
    request_body(content = CreateBody, content_type = "application/json"),
    responses(
        (status = 202, description = "The job was queued", body = AcceptedView,
            headers(("Location" = String, description = "The job's URL"))),
        (status = 400, description = "`malformed_body`: the body is not JSON", body = ErrorBody),
        (status = 404, description = "`not_found`: unknown VM", body = ErrorBody),
        (status = 409, description = "`invalid_state`: a merge of differencing disks runs; \
            `vm_busy`: another job works on the VM (named); `host_disconnected`",
            body = ErrorBody),
        (status = 422, description = "`invalid_field`: `name` missing or unusable",
            body = ErrorBody),
        (status = 503, description = "`not_ready`; `queue_full`", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let vm = target(&state, &id)?;
    let request: CreateBody = parse_json_body(&body)?;
    check_name(&request.name)?;
    refuse_while_merging(&vm, "take a checkpoint of")?;
    submit(
        &state,
        &vm,
        CheckpointChange::Create {
            name: request.name.clone(),
        },
        json!({ "vm_id": vm.vm.id, "action": "create", "name": request.name }),
    )
}

/// The body of `POST /api/v1/vms/{id}/checkpoints/{checkpoint_id}/apply`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ApplyCheckpointRequest)]
pub struct ApplyBody {
    /// Turn the VM off first when it is not Off or Saved (its unsaved state is lost).
    #[serde(default)]
    force: bool,
}

/// `POST /api/v1/vms/{id}/checkpoints/{checkpoint_id}/apply`.
#[utoipa::path(post, path = "/api/v1/vms/{id}/checkpoints/{checkpoint_id}/apply",
    tag = "checkpoints", operation_id = "applyCheckpoint", summary = "Apply a checkpoint",
    description = "Queues a job that reverts the VM to the checkpoint. Hyper-V applies a \
        checkpoint only to a VM that is Off or Saved; with `force` the VM is turned off first. \
        Afterwards the VM is Saved (a standard checkpoint of a running VM) or Off. An empty \
        body means `{}`.",
    params(
        ("id" = String, Path, format = Uuid, description = "Hyper-V VM id"),
        ("checkpoint_id" = String, Path, format = Uuid, description = "Hyper-V checkpoint id"),
    ),
    request_body(content = ApplyBody, content_type = "application/json"),
    responses(
        (status = 202, description = "The job was queued", body = AcceptedView,
            headers(("Location" = String, description = "The job's URL"))),
        (status = 400, description = "`malformed_body`: the body is not JSON", body = ErrorBody),
        (status = 404, description = "`not_found`: unknown VM or checkpoint", body = ErrorBody),
        (status = 409, description = "`invalid_state`: the VM is not Off or Saved and `force` \
            is not set, or a merge runs; `vm_busy`: another job works on the VM (named); \
            `host_disconnected`", body = ErrorBody),
        (status = 422, description = "`invalid_field`: an unknown field or a field of the \
            wrong type", body = ErrorBody),
        (status = 503, description = "`not_ready`; `queue_full`", body = ErrorBody),
    ))]
pub async fn apply(
    State(state): State<AppState>,
    Path((id, checkpoint)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    let vm = target(&state, &id)?;
    let request: ApplyBody = if body.iter().all(u8::is_ascii_whitespace) {
        ApplyBody::default()
    } else {
        parse_json_body(&body)?
    };
    let c = checkpoint_of(&vm, &checkpoint)?;
    if !matches!(vm.vm.state, VmState::Off | VmState::Saved) && !request.force {
        return Err(ApiError::conflict(
            ErrorCode::InvalidState,
            format!(
                "Hyper-V applies a checkpoint only to a VM that is Off or Saved; VM {} is {}. \
                 Shut it down or save it first, or set force=true to turn it off",
                vm.vm.name,
                vm.vm.state.name()
            ),
        ));
    }
    refuse_while_merging(&vm, "apply a checkpoint to")?;
    let change = CheckpointChange::Apply {
        checkpoint: c.id,
        turn_off: request.force,
    };
    submit(
        &state,
        &vm,
        change,
        json!({ "vm_id": vm.vm.id, "action": "apply", "checkpoint_id": c.id, "checkpoint_name": c.name, "force": request.force }),
    )
}

/// The body of `PATCH /api/v1/vms/{id}/checkpoints/{checkpoint_id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RenameCheckpointRequest)]
pub struct RenameBody {
    /// The new name (1-100 characters).
    name: String,
}

/// `PATCH /api/v1/vms/{id}/checkpoints/{checkpoint_id}`.
#[utoipa::path(patch, path = "/api/v1/vms/{id}/checkpoints/{checkpoint_id}", tag = "checkpoints",
    operation_id = "renameCheckpoint", summary = "Rename a checkpoint",
    description = "Queues a job that renames the checkpoint (allowed in any VM state).",
    params(
        ("id" = String, Path, format = Uuid, description = "Hyper-V VM id"),
        ("checkpoint_id" = String, Path, format = Uuid, description = "Hyper-V checkpoint id"),
    ),
    request_body(content = RenameBody, content_type = "application/json"),
    responses(
        (status = 202, description = "The job was queued", body = AcceptedView,
            headers(("Location" = String, description = "The job's URL"))),
        (status = 400, description = "`malformed_body`: the body is not JSON", body = ErrorBody),
        (status = 404, description = "`not_found`: unknown VM or checkpoint", body = ErrorBody),
        (status = 409, description = "`vm_busy`: another job works on the VM (named); \
            `host_disconnected`", body = ErrorBody),
        (status = 422, description = "`invalid_field`: `name` missing or unusable",
            body = ErrorBody),
        (status = 503, description = "`not_ready`; `queue_full`", body = ErrorBody),
    ))]
pub async fn rename(
    State(state): State<AppState>,
    Path((id, checkpoint)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    let vm = target(&state, &id)?;
    let request: RenameBody = parse_json_body(&body)?;
    let c = checkpoint_of(&vm, &checkpoint)?;
    check_name(&request.name)?;
    let change = CheckpointChange::Rename {
        checkpoint: c.id,
        name: request.name.clone(),
    };
    submit(
        &state,
        &vm,
        change,
        json!({ "vm_id": vm.vm.id, "action": "rename", "checkpoint_id": c.id, "name": request.name }),
    )
}

/// The query of `DELETE /api/v1/vms/{id}/checkpoints/{checkpoint_id}`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// `true`: delete the checkpoint and every checkpoint taken after it.
    subtree: Option<bool>,
}

/// `DELETE /api/v1/vms/{id}/checkpoints/{checkpoint_id}`.
#[utoipa::path(delete, path = "/api/v1/vms/{id}/checkpoints/{checkpoint_id}", tag = "checkpoints",
    operation_id = "deleteCheckpoint", summary = "Delete a checkpoint or a subtree",
    description = "Queues a job that deletes the checkpoint (its children move to its parent), \
        or with `subtree=true` the checkpoint and its descendants. Hyper-V then merges the \
        differencing disks; the job follows the merge as its progress (step \
        `Checkpoint.Merge`) and ends when it is done. A merge cannot be cancelled.",
    params(
        ("id" = String, Path, format = Uuid, description = "Hyper-V VM id"),
        ("checkpoint_id" = String, Path, format = Uuid, description = "Hyper-V checkpoint id"),
        DeleteQuery,
    ),
    responses(
        (status = 202, description = "The job was queued", body = AcceptedView,
            headers(("Location" = String, description = "The job's URL"))),
        (status = 400, description = "`bad_query`: `subtree` is not true or false",
            body = ErrorBody),
        (status = 404, description = "`not_found`: unknown VM or checkpoint", body = ErrorBody),
        (status = 409, description = "`invalid_state`: a merge runs; `vm_busy`: another job \
            works on the VM (named); `host_disconnected`", body = ErrorBody),
        (status = 503, description = "`not_ready`; `queue_full`", body = ErrorBody),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Path((id, checkpoint)): Path<(String, String)>,
    query: Result<Query<DeleteQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(query) = query.map_err(|e| ApiError::bad_query("subtree", e.body_text()))?;
    let vm = target(&state, &id)?;
    let c = checkpoint_of(&vm, &checkpoint)?;
    refuse_while_merging(&vm, "delete a checkpoint of")?;
    let subtree = query.subtree.unwrap_or(false);
    let change = CheckpointChange::Remove {
        checkpoint: c.id,
        subtree,
    };
    submit(
        &state,
        &vm,
        change,
        json!({ "vm_id": vm.vm.id, "action": "delete", "checkpoint_id": c.id, "checkpoint_name": c.name, "subtree": subtree }),
    )
}
