//! `POST /api/v1/vms/{id}/actions/migrate`: moves a VM to another host (`live`,
//! `shared_nothing`, `quick`) or its files to another folder or storage class on its host
//! (`storage`). Compare-VM runs first on the VM's host; its incompatibilities come back as a
//! 409 `migration_incompatible` listing each one (in `details`) before anything moves.
//! `?dry_run=true` runs only the check and answers its result. Otherwise a `migrate` job is
//! queued ([`crate::jobs::migration`]): it checks again, moves (a clustered VM with the
//! cluster's own role move), reports the host's migration job as progress, can be cancelled
//! before the switch-over, and cleans up the destination after a failure.

use aetherv_hyperv::ops::{HostCall, MigrationTarget};
use aetherv_inventory::InventoryVm;
use aetherv_inventory::placement::{Demand, Refusal, candidates, rank};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use super::placement::cluster_members;
use super::views::AcceptedView;
use super::vm_day2::live_vm;
use super::vms::{ensure_ready, parse_json_body, submit_vm_job};
use crate::error::{ApiError, ApiResult, ErrorBody, ErrorCode, FieldProblem};
use crate::jobs::migration::{MigrationMode, MigrationPlan};
use crate::jobs::{JobWork, MigrationError};
use crate::state::AppState;

/// The body of `POST /api/v1/vms/{id}/actions/migrate`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = MigrateRequest)]
pub struct MigrateBody {
    /// The host the VM moves to (`live`, `shared_nothing`, `quick`); for `storage` it may
    /// only name the VM's own host.
    #[serde(default)]
    pub target_host: Option<String>,
    /// How it moves.
    pub mode: MigrationMode,
    /// The folder its files move to (`storage`, `shared_nothing`, a standalone `quick`);
    /// default for a move to another host: the destination's VM folder plus the VM's name.
    #[serde(default)]
    pub destination_path: Option<String>,
    /// A storage class of the destination host instead of a path (its folder plus the VM's
    /// name).
    #[serde(default)]
    pub storage_class: Option<String>,
}

/// The query of `POST /api/v1/vms/{id}/actions/migrate`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MigrateQuery {
    /// Only run the compatibility check and answer its result; nothing moves.
    #[serde(default)]
    pub dry_run: Option<bool>,
}

/// One incompatibility, in the host's words.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = MigrationIncompatibility)]
pub struct IncompatibilityView {
    /// What prevents the move.
    pub message: String,
    /// Hyper-V's message id, when it gives one.
    pub message_id: Option<i64>,
}

/// The compatibility check of a migration (`?dry_run=true`, and the MCP tool
/// `check_migration`).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = MigrationCheck)]
pub struct MigrationCheckView {
    /// The VM.
    #[schema(format = Uuid)]
    pub vm_id: String,
    /// Its name.
    pub vm_name: String,
    /// Where it runs.
    pub source_host: String,
    /// Where it would move (its own host for `storage`).
    pub target_host: String,
    /// How.
    pub mode: MigrationMode,
    /// The folder its files would move to, when they move.
    pub destination_path: Option<String>,
    /// Whether it is a cluster role (moved with the cluster's role move).
    pub clustered: bool,
    /// Whether it can move.
    pub compatible: bool,
    /// What prevents it.
    pub incompatibilities: Vec<IncompatibilityView>,
}

/// The plan of a request: every check that needs no host.
///
/// # Errors
///
/// 404 unknown target host, 409 a target that takes no VMs or a clustered VM asked to leave
/// its cluster, 422 naming the field.
pub(crate) fn plan(
    state: &AppState,
    vm: &InventoryVm,
    body: &MigrateBody,
) -> ApiResult<MigrationPlan> {
    let source = vm.host.to_string();
    let v = &vm.vm;
    let target = match (body.mode, body.target_host.as_deref().map(str::trim)) {
        (MigrationMode::Storage, None) => source.clone(),
        (MigrationMode::Storage, Some(t)) if t.eq_ignore_ascii_case(&source) => source.clone(),
        (MigrationMode::Storage, Some(t)) => {
            return Err(ApiError::invalid(
                "target_host",
                format!(
                    "a storage move stays on the VM's host {source}; {t} is another host (use \
                     shared_nothing)"
                ),
            ));
        }
        (_, None) | (_, Some("")) => {
            return Err(ApiError::invalid(
                "target_host",
                format!("mode {} needs a target host", body.mode.as_str()),
            ));
        }
        (_, Some(t)) => {
            let (name, _) = state
                .jobs
                .host(t)
                .ok_or_else(|| ApiError::not_found("host", t).with_field("target_host"))?;
            if name.eq_ignore_ascii_case(&source) {
                return Err(ApiError::invalid(
                    "target_host",
                    format!(
                        "VM {} already runs on {source}; name another host (or use mode \
                         storage to move its files)",
                        v.name
                    ),
                ));
            }
            name.to_owned()
        }
    };
    if v.clustered && body.mode == MigrationMode::SharedNothing {
        return Err(ApiError::conflict(
            ErrorCode::InvalidState,
            format!(
                "VM {} is a cluster role: it moves within its cluster (live or quick), or its \
                 files move (storage); shared_nothing is for standalone hosts",
                v.name
            ),
        ));
    }
    let snapshot = state.inventory.snapshot();
    if v.clustered && body.mode != MigrationMode::Storage {
        let cluster = snapshot
            .host(&source)
            .and_then(|h| h.cluster())
            .map(str::to_owned);
        let members = match &cluster {
            Some(c) => cluster_members(state, c, "target_host")?,
            None => Vec::new(),
        };
        if !members.iter().any(|m| m.eq_ignore_ascii_case(&target)) {
            return Err(ApiError::invalid(
                "target_host",
                format!(
                    "VM {} is a role of cluster {}; {target} is not one of its nodes ({})",
                    v.name,
                    cluster.as_deref().unwrap_or("(unknown)"),
                    members.join(", ")
                ),
            ));
        }
    }
    // The target must take VMs at all: connected, not in maintenance (memory, processor and
    // storage are the host's own check, Compare-VM).
    if body.mode != MigrationMode::Storage {
        let demand = Demand {
            memory_bytes: 0,
            disk_bytes: None,
            image: None,
        };
        let judged = rank(&candidates(&snapshot, [target.as_str()], &demand), &demand);
        if let Some((_, why)) = judged.refused.first() {
            let code = match why {
                Refusal::NotConnected | Refusal::NoFacts => ErrorCode::HostDisconnected,
                _ => ErrorCode::NoEligibleHost,
            };
            return Err(
                ApiError::conflict(code, format!("host {target} takes no VMs now: {why}"))
                    .with_field("target_host"),
            );
        }
    }
    let path = match (&body.destination_path, &body.storage_class) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "storage_class",
                "give destination_path or storage_class, not both",
            ));
        }
        (Some(path), None) => Some(path.trim().to_owned()),
        (None, Some(class)) => {
            let defs = super::disks::storage_definitions(state, &target);
            let found = defs.storage_class(class).ok_or_else(|| {
                let names: Vec<&str> = defs
                    .storage_classes
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect();
                ApiError::invalid(
                    "storage_class",
                    format!(
                        "host {target} has no storage class {class:?}; {}",
                        if names.is_empty() {
                            "none are defined for this host".to_owned()
                        } else {
                            format!("valid storage classes: {}", names.join(", "))
                        }
                    ),
                )
            })?;
            Some(format!("{}\\{}", found.path.trim_end_matches('\\'), v.name))
        }
        (None, None) => None,
    };
    let moves_storage = body.mode.moves_storage(v.clustered);
    if path.is_some() && !moves_storage {
        return Err(ApiError::invalid(
            if body.destination_path.is_some() {
                "destination_path"
            } else {
                "storage_class"
            },
            format!(
                "a {} move of {} keeps its files where they are",
                body.mode.as_str(),
                if v.clustered {
                    "a clustered VM"
                } else {
                    "this VM"
                }
            ),
        ));
    }
    if body.mode == MigrationMode::Storage && path.is_none() {
        return Err(ApiError::invalid(
            "destination_path",
            "a storage move needs destination_path or storage_class",
        ));
    }
    if let Some(p) = &path {
        // The operation's own argument checks: an absolute Windows path without wildcards.
        let probe = HostCall::CompareVm(
            v.id,
            MigrationTarget {
                destination_host: target.clone(),
                with_storage: false,
                destination_path: Some(p.clone()),
                storage_only: false,
            },
        );
        if let Err(aetherv_hyperv::Error::InvalidRequest { detail, .. }) = probe.validate(&target) {
            return Err(ApiError::invalid(
                if body.destination_path.is_some() {
                    "destination_path"
                } else {
                    "storage_class"
                },
                detail,
            ));
        }
    }
    Ok(MigrationPlan {
        vm: v.id,
        vm_name: v.name.clone(),
        source_host: source,
        target_host: target,
        mode: body.mode,
        destination_path: path,
        clustered: v.clustered,
    })
}

/// Runs the compatibility check of `plan` on its source host.
///
/// # Errors
///
/// 409 `host_disconnected` when the check cannot run.
pub(crate) async fn check(state: &AppState, plan: &MigrationPlan) -> ApiResult<MigrationCheckView> {
    let checked = state
        .jobs
        .check_migration(plan)
        .await
        .map_err(|e| match e {
            MigrationError::Invalid { message, .. } => ApiError::conflict(
                ErrorCode::HostDisconnected,
                format!("the compatibility check could not run: {message}"),
            ),
            other => ApiError::internal(other.to_string()),
        })?;
    let folder = if plan.mode.moves_storage(plan.clustered) {
        plan.destination_path.clone().or_else(|| {
            state
                .inventory
                .snapshot()
                .host(&plan.target_host)
                .and_then(|h| h.facts.as_deref())
                .map(|f| format!("{}\\{}", f.vm_path.trim_end_matches('\\'), plan.vm_name))
        })
    } else {
        None
    };
    Ok(MigrationCheckView {
        vm_id: plan.vm.to_string(),
        vm_name: plan.vm_name.clone(),
        source_host: plan.source_host.clone(),
        target_host: plan.target_host.clone(),
        mode: plan.mode,
        destination_path: folder,
        clustered: plan.clustered,
        compatible: checked.compatible && checked.incompatibilities.is_empty(),
        incompatibilities: checked
            .incompatibilities
            .into_iter()
            .map(|i| IncompatibilityView {
                message: i.message,
                message_id: i.message_id,
            })
            .collect(),
    })
}

/// The 409 of an incompatible check: one `details` entry per incompatibility.
pub(crate) fn incompatible(view: &MigrationCheckView) -> ApiError {
    let mut error = ApiError::conflict(
        ErrorCode::MigrationIncompatible,
        format!(
            "VM {} cannot move to {}: {}",
            view.vm_name,
            view.target_host,
            view.incompatibilities
                .iter()
                .map(|i| i.message.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        ),
    )
    .with_field("target_host");
    error.details = view
        .incompatibilities
        .iter()
        .map(|i| FieldProblem {
            field: "target_host".to_owned(),
            message: i.message.clone(),
        })
        .collect();
    error
}

/// Plans, checks and (unless `dry_run`) queues the migration: the handler's work, also
/// called by the MCP tools.
pub(crate) async fn migrate_vm(
    state: &AppState,
    id: &str,
    body: &MigrateBody,
    dry_run: bool,
) -> ApiResult<Response> {
    if !dry_run {
        ensure_ready(state)?;
    }
    let vm = live_vm(state, id)?;
    let plan = plan(state, &vm, body)?;
    if !dry_run && let Some(job) = state.jobs.busy_job(vm.vm.id) {
        return Err(ApiError::conflict(
            ErrorCode::VmBusy,
            format!(
                "VM {} is busy with job {job}; wait for it to finish or cancel it",
                vm.vm.name
            ),
        ));
    }
    let view = check(state, &plan).await?;
    if dry_run {
        return Ok((StatusCode::OK, Json(view)).into_response());
    }
    if !view.compatible {
        return Err(incompatible(&view));
    }
    let parameters = json!({
        "vm_id": plan.vm,
        "vm_name": plan.vm_name,
        "source_host": plan.source_host,
        "target_host": plan.target_host,
        "mode": plan.mode,
        "destination_path": view.destination_path,
        "storage_class": body.storage_class,
        "clustered": plan.clustered,
    });
    let mut plan = plan;
    plan.destination_path = view.destination_path.clone();
    submit_vm_job(state, &vm, JobWork::Migrate(Box::new(plan)), parameters)
}

/// `POST /api/v1/vms/{id}/actions/migrate`.
#[utoipa::path(post, path = "/api/v1/vms/{id}/actions/migrate", tag = "jobs",
    operation_id = "migrateVm", summary = "Move a VM to another host, or its storage",
    description = "Modes: `live` (the VM keeps running; a clustered VM moves within its \
        cluster with the cluster's role move), `storage` (its files move to `destination_path` \
        or a `storage_class` folder on the same host), `shared_nothing` (host and storage \
        together, standalone hosts), `quick` (save, move, resume). Compare-VM runs first on \
        the VM's host; incompatibilities answer 409 `migration_incompatible` with each one in \
        `details`, before anything moves. With `?dry_run=true` only the check runs and its \
        result is the answer (200). Otherwise a `migrate` job is queued: its progress is the \
        host's migration job; cancelling it before the switch-over leaves the VM running on \
        the source; a failed move leaves nothing on the destination.",
    params(("id" = String, Path, format = Uuid, description = "Hyper-V VM id"), MigrateQuery),
    request_body(content = MigrateBody, content_type = "application/json"),
    responses(
        (status = 200, description = "`dry_run`: the compatibility check", body = MigrationCheckView),
        (status = 202, description = "The job was queued", body = AcceptedView,
            headers(("Location" = String, description = "The job's URL"))),
        (status = 400, description = "`malformed_body`: the body is not JSON; `bad_query`",
            body = ErrorBody),
        (status = 404, description = "`not_found`: unknown VM or target host", body = ErrorBody),
        (status = 409, description = "`migration_incompatible`: Compare-VM's incompatibilities, \
            each in `details`; `vm_busy`; `host_disconnected`: the VM's or the target's host \
            does not answer; `no_eligible_host`: the target takes no VMs (maintenance); \
            `invalid_state`: a clustered VM cannot move shared-nothing", body = ErrorBody),
        (status = 422, description = "`invalid_field`: `target_host`, `mode`, \
            `destination_path` or `storage_class` missing or unusable", body = ErrorBody),
        (status = 503, description = "`not_ready`; `queue_full`", body = ErrorBody),
    ))]
pub async fn migrate(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<MigrateQuery>,
    body: Bytes,
) -> ApiResult<Response> {
    let body: MigrateBody = parse_json_body(&body)?;
    migrate_vm(&state, &id, &body, query.dry_run.unwrap_or(false)).await
}
