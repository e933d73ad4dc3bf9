//! Disks of a VM under `/api/v1/vms/{id}/disks`: list, add a new blank VHDX or attach an
//! existing one (on the first free SCSI location), expand (never shrink), detach (optionally
//! deleting the file; never a shared disk, never the boot disk without `force`). Each change
//! is one job; Hyper-V's rules are checked before it is queued (a 409 whose code names the
//! rule), again by the job against the host's answer, and by the host script.

use aetherv_hyperv::ops::{
    DiskId, VmDisk, check_disk_detach, check_disk_resize, first_free_scsi_slot,
};
use aetherv_provision::resources::{HostDefinitions, parse_host_resources};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use super::views::{AcceptedView, VmDiskView};
use super::vm_day2::{live_vm, rule_error};
use super::vms::{accepted, content_type, ensure_ready, parse_json_body, submit_error};
use crate::error::{ApiError, ApiResult, ErrorBody, ErrorCode};
use crate::jobs::{DiskWork, JobWork, NewJob};
use crate::state::AppState;

const GIB: u64 = 1 << 30;
/// The largest disk: Hyper-V's 64 TiB VHDX limit.
const MAX_GB: u64 = 64 * 1024;

fn json_only(headers: &HeaderMap) -> ApiResult<()> {
    if let Some(hint) = content_type(headers)?
        && !hint.to_ascii_lowercase().contains("json")
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            "send the request as application/json",
        ));
    }
    Ok(())
}

fn parse_disk_id(vm: &aetherv_inventory::InventoryVm, raw: &str) -> ApiResult<(DiskId, VmDisk)> {
    let id: DiskId = raw.parse().map_err(|_| ApiError::not_found("disk", raw))?;
    let disk = vm
        .vm
        .disks
        .iter()
        .find(|d| id.matches(d))
        .cloned()
        .ok_or_else(|| {
            ApiError::not_found("disk", raw).with_message_suffix(&format!(" on VM {}", vm.vm.name))
        })?;
    Ok((id, disk))
}

/// `GET /api/v1/vms/{id}/disks`.
#[utoipa::path(get, path = "/api/v1/vms/{id}/disks", tag = "inventory", operation_id = "listVmDisks",
    summary = "A VM's disks",
    description = "The VM's virtual hard disks with their stable ids (`scsi-0-1`: controller \
        type, number, location), sizes and whether they are shared.",
    params(("id" = String, Path, format = Uuid, description = "Hyper-V VM id")),
    responses(
        (status = 200, description = "The disks", body = [VmDiskView]),
        (status = 404, description = "`not_found`: unknown VM", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<VmDiskView>>> {
    let vm_id = super::inventory::vm_id(&id)?;
    let snapshot = state.inventory.snapshot();
    let vm = snapshot
        .vm(vm_id)
        .ok_or_else(|| ApiError::not_found("VM", &id))?;
    Ok(Json(vm.vm.disks.iter().map(VmDiskView::from).collect()))
}

/// The kind of a new VHDX.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NewDiskType {
    /// Dynamically expanding (the default).
    #[default]
    Dynamic,
    /// Fixed size: all space is allocated now.
    Fixed,
}

/// Body of `POST /api/v1/vms/{id}/disks`: either `size_gb` (a new blank VHDX, with `type` and
/// `storage_class`) or `path` (attach an existing disk file).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = AddDiskRequest)]
pub struct AddDiskBody {
    /// Size of a new disk in GiB (1..=65536).
    #[schema(minimum = 1, maximum = 65536)]
    size_gb: Option<u64>,
    /// `dynamic` (default) or `fixed`, for a new disk.
    #[serde(rename = "type", default)]
    disk_type: Option<NewDiskType>,
    /// Storage class (from the host's definitions) whose folder holds a new disk; the VM's
    /// folder when absent.
    storage_class: Option<String>,
    /// An existing `.vhdx`/`.vhd` file on the host to attach instead.
    path: Option<String>,
}

pub(crate) fn storage_definitions(state: &AppState, host: &str) -> HostDefinitions {
    let configured = state
        .host_resources
        .get(&host.to_ascii_lowercase())
        .cloned()
        .unwrap_or_default();
    let snapshot = state.inventory.snapshot();
    let from_host = snapshot
        .host(host)
        .and_then(|h| h.facts.as_deref())
        .and_then(|f| parse_host_resources(f).ok().flatten());
    match from_host {
        Some(defs) => configured.merged_with(&defs),
        None => configured,
    }
}

/// A free path for a new disk of `vm` in `folder`.
fn new_disk_path(vm: &aetherv_hyperv::ops::Vm, folder: &str) -> String {
    let folder = folder.trim_end_matches('\\');
    (1..)
        .map(|n| format!(r"{folder}\{}-disk{n}.vhdx", vm.name))
        .find(|p| !vm.disks.iter().any(|d| d.path.eq_ignore_ascii_case(p)))
        .unwrap_or_else(|| format!(r"{folder}\{}-disk.vhdx", vm.name))
}

/// `POST /api/v1/vms/{id}/disks`.
#[utoipa::path(post, path = "/api/v1/vms/{id}/disks", tag = "jobs", operation_id = "addVmDisk",
    summary = "Add or attach a disk",
    description = "Queues a disk job. With `size_gb`: creates a blank VHDX (`dynamic` or \
        `fixed`) in the storage class's folder (or the VM's folder) and attaches it to the \
        first free SCSI location; a file that cannot be attached is deleted again. With \
        `path`: attaches that existing file. Either works while the VM runs (SCSI hot-add). \
        The job's result holds the new disk's id (`disk_id`).",
    params(("id" = String, Path, format = Uuid, description = "Hyper-V VM id")),
    request_body(content = AddDiskBody, content_type = "application/json"),
    responses(
        (status = 202, description = "The job was queued", body = AcceptedView,
            headers(("Location" = String, description = "The job's URL"))),
        (status = 400, description = "`malformed_body`: the body is not JSON", body = ErrorBody),
        (status = 404, description = "`not_found`: unknown VM", body = ErrorBody),
        (status = 409, description = "`no_free_scsi_slot`: every SCSI location is taken (or \
            the VM has no SCSI controller); `vm_busy`: another job works on the VM; \
            `host_disconnected`: the VM's host is disconnected", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over 256 KiB",
            body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: the body is not JSON",
            body = ErrorBody),
        (status = 422, description = "`invalid_field`: neither or both of `size_gb` and \
            `path`, a size out of range, an unknown storage class, a path that is not an \
            absolute `.vhdx`/`.vhd` or is attached already; `field` names it", body = ErrorBody),
        (status = 503, description = "`not_ready`: the server is still starting; `queue_full`: \
            too many jobs are waiting", body = ErrorBody),
    ))]
pub async fn add(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let vm = live_vm(&state, &id)?;
    ensure_ready(&state)?;
    json_only(&headers)?;
    let request: AddDiskBody = parse_json_body(&body)?;
    let v = &vm.vm;
    let (work, parameters) = match (&request.size_gb, &request.path) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(ApiError::invalid(
                "size_gb",
                "give size_gb for a new disk or path for an existing one (not both)",
            ));
        }
        (Some(size_gb), None) => {
            if !(1..=MAX_GB).contains(size_gb) {
                return Err(ApiError::invalid(
                    "size_gb",
                    format!("{size_gb} is outside 1..={MAX_GB} GiB"),
                ));
            }
            let folder = match &request.storage_class {
                Some(name) => {
                    let defs = storage_definitions(&state, &vm.host);
                    let class = defs.storage_class(name).ok_or_else(|| {
                        let names: Vec<&str> = defs
                            .storage_classes
                            .iter()
                            .map(|c| c.name.as_str())
                            .collect();
                        ApiError::invalid(
                            "storage_class",
                            format!(
                                "host {} has no storage class {name:?}; {}",
                                vm.host,
                                if names.is_empty() {
                                    "none are defined for this host".to_owned()
                                } else {
                                    format!("valid storage classes: {}", names.join(", "))
                                }
                            ),
                        )
                    })?;
                    format!(r"{}\{}", class.path.trim_end_matches('\\'), v.name)
                }
                None => {
                    let Some(folder) = v.path.as_deref().filter(|p| !p.is_empty()) else {
                        return Err(ApiError::invalid(
                            "storage_class",
                            "the host reports no folder for this VM; name a storage class",
                        ));
                    };
                    format!(r"{}\Virtual Hard Disks", folder.trim_end_matches('\\'))
                }
            };
            first_free_scsi_slot(v).map_err(|rule| rule_error(&rule))?;
            let fixed = request.disk_type.unwrap_or_default() == NewDiskType::Fixed;
            let path = new_disk_path(v, &folder);
            let parameters = json!({
                "vm_id": v.id,
                "operation": "add",
                "size_gb": size_gb,
                "type": if fixed { "fixed" } else { "dynamic" },
                "storage_class": request.storage_class,
                "path": path,
            });
            (
                DiskWork::Add {
                    vm: v.id,
                    path,
                    size_bytes: size_gb * GIB,
                    fixed,
                },
                parameters,
            )
        }
        (None, Some(path)) => {
            if request.disk_type.is_some() || request.storage_class.is_some() {
                return Err(ApiError::invalid(
                    if request.disk_type.is_some() {
                        "type"
                    } else {
                        "storage_class"
                    },
                    "type and storage_class are for new disks; an existing file is attached as it is",
                ));
            }
            let lower = path.to_ascii_lowercase();
            let absolute = path.len() > 3
                && (path.as_bytes()[1] == b':' || path.starts_with(r"\\"))
                && !path.contains(['*', '?', '"', '<', '>', '|', '/'])
                && !path.split('\\').any(|s| s == "..");
            if !absolute || !(lower.ends_with(".vhdx") || lower.ends_with(".vhd")) {
                return Err(ApiError::invalid(
                    "path",
                    format!("{path:?} is not an absolute path of a .vhdx or .vhd file"),
                ));
            }
            let snapshot = state.inventory.snapshot();
            if let Some(user) = snapshot
                .hosts()
                .filter(|h| h.name.eq_ignore_ascii_case(&vm.host))
                .flat_map(|h| h.vms.values())
                .find(|o| o.vm.disks.iter().any(|d| d.path.eq_ignore_ascii_case(path)))
            {
                return Err(ApiError::invalid(
                    "path",
                    format!("{path} is already attached to VM {}", user.vm.name),
                ));
            }
            first_free_scsi_slot(v).map_err(|rule| rule_error(&rule))?;
            (
                DiskWork::Attach {
                    vm: v.id,
                    path: path.clone(),
                },
                json!({ "vm_id": v.id, "operation": "attach", "path": path }),
            )
        }
    };
    let job = state
        .jobs
        .submit(NewJob {
            requested_by: crate::audit::caller(),
            work: JobWork::Disk(work),
            host: vm.host.to_string(),
            vm_id: Some(v.id),
            vm_name: Some(v.name.clone()),
            parameters,
        })
        .map_err(|e| submit_error(e, "id"))?;
    Ok(accepted(&job))
}

/// Body of `POST /api/v1/vms/{id}/disks/{disk_id}/expand`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ExpandDiskRequest)]
pub struct ExpandBody {
    /// The new size in GiB; at least the current size.
    #[schema(minimum = 1, maximum = 65536)]
    size_gb: u64,
}

/// `POST /api/v1/vms/{id}/disks/{disk_id}/expand`.
#[utoipa::path(post, path = "/api/v1/vms/{id}/disks/{disk_id}/expand", tag = "jobs",
    operation_id = "expandVmDisk", summary = "Grow a disk",
    description = "Queues a disk job that grows the disk (`Resize-VHD`). A disk never \
        shrinks. While the VM is not Off only a VHDX on SCSI is resized (online resize).",
    params(
        ("id" = String, Path, format = Uuid, description = "Hyper-V VM id"),
        ("disk_id" = String, Path, description = "The disk's id, e.g. `scsi-0-1`"),
    ),
    request_body(content = ExpandBody, content_type = "application/json"),
    responses(
        (status = 202, description = "The job was queued", body = AcceptedView,
            headers(("Location" = String, description = "The job's URL"))),
        (status = 400, description = "`malformed_body`: the body is not JSON", body = ErrorBody),
        (status = 404, description = "`not_found`: unknown VM or disk", body = ErrorBody),
        (status = 409, description = "`disk_shrink`: the size is below the disk's (the message \
            names both); `ide_disk_running`: an IDE disk of a VM that is not Off; \
            `online_resize_needs_vhdx`: a VHD of a VM that is not Off; `vm_busy`: another job \
            works on the VM; `host_disconnected`: the VM's host is disconnected",
            body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over 256 KiB",
            body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: the body is not JSON",
            body = ErrorBody),
        (status = 422, description = "`invalid_field`: `size_gb` missing or out of range",
            body = ErrorBody),
        (status = 503, description = "`not_ready`: the server is still starting; `queue_full`: \
            too many jobs are waiting", body = ErrorBody),
    ))]
pub async fn expand(
    State(state): State<AppState>,
    Path((id, disk_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let vm = live_vm(&state, &id)?;
    let (disk_id, disk) = parse_disk_id(&vm, &disk_id)?;
    ensure_ready(&state)?;
    json_only(&headers)?;
    let request: ExpandBody = parse_json_body(&body)?;
    if !(1..=MAX_GB).contains(&request.size_gb) {
        return Err(ApiError::invalid(
            "size_gb",
            format!("{} is outside 1..={MAX_GB} GiB", request.size_gb),
        ));
    }
    let size_bytes = request.size_gb * GIB;
    check_disk_resize(&vm.vm, &disk, size_bytes).map_err(|rule| rule_error(&rule))?;
    let job = state
        .jobs
        .submit(NewJob {
            requested_by: crate::audit::caller(),
            work: JobWork::Disk(DiskWork::Expand {
                vm: vm.vm.id,
                disk: disk_id,
                size_bytes,
            }),
            host: vm.host.to_string(),
            vm_id: Some(vm.vm.id),
            vm_name: Some(vm.vm.name.clone()),
            parameters: json!({
                "vm_id": vm.vm.id,
                "operation": "expand",
                "disk_id": disk_id,
                "size_gb": request.size_gb,
                "current_bytes": disk.max_size_bytes,
            }),
        })
        .map_err(|e| submit_error(e, "id"))?;
    Ok(accepted(&job))
}

/// Options of `DELETE /api/v1/vms/{id}/disks/{disk_id}`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DetachQuery {
    /// Delete the disk file after detaching it.
    #[serde(default)]
    delete_file: bool,
    /// Detach even the VM's boot disk (or its only disk).
    #[serde(default)]
    force: bool,
}

/// `DELETE /api/v1/vms/{id}/disks/{disk_id}`.
#[utoipa::path(delete, path = "/api/v1/vms/{id}/disks/{disk_id}", tag = "jobs",
    operation_id = "detachVmDisk", summary = "Detach a disk",
    description = "Queues a disk job that detaches the disk (`Remove-VMHardDiskDrive`), and \
        with `delete_file=true` deletes its file. A shared disk is never detached; the VM's \
        boot disk (or only disk) needs `force=true`; an IDE disk needs the VM Off (SCSI \
        disks are hot-removed).",
    params(
        ("id" = String, Path, format = Uuid, description = "Hyper-V VM id"),
        ("disk_id" = String, Path, description = "The disk's id, e.g. `scsi-0-1`"),
        DetachQuery,
    ),
    responses(
        (status = 202, description = "The job was queued", body = AcceptedView,
            headers(("Location" = String, description = "The job's URL"))),
        (status = 400, description = "`bad_query`: an unknown or unusable query parameter",
            body = ErrorBody),
        (status = 404, description = "`not_found`: unknown VM or disk", body = ErrorBody),
        (status = 409, description = "`shared_disk`: the disk is shared; `last_boot_disk`: \
            the VM's boot disk without `force`; `ide_disk_running`: an IDE disk of a VM that \
            is not Off; `vm_busy`: another job works on the VM; `host_disconnected`: the VM's \
            host is disconnected", body = ErrorBody),
        (status = 503, description = "`not_ready`: the server is still starting; `queue_full`: \
            too many jobs are waiting", body = ErrorBody),
    ))]
pub async fn detach(
    State(state): State<AppState>,
    Path((id, disk_id)): Path<(String, String)>,
    query: Result<Query<DetachQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(query) = query
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::BadQuery, e.body_text()))?;
    let vm = live_vm(&state, &id)?;
    let (disk_id, disk) = parse_disk_id(&vm, &disk_id)?;
    ensure_ready(&state)?;
    check_disk_detach(&vm.vm, &disk, query.force).map_err(|rule| rule_error(&rule))?;
    let job = state
        .jobs
        .submit(NewJob {
            requested_by: crate::audit::caller(),
            work: JobWork::Disk(DiskWork::Detach {
                vm: vm.vm.id,
                disk: disk_id,
                delete_file: query.delete_file,
                force: query.force,
            }),
            host: vm.host.to_string(),
            vm_id: Some(vm.vm.id),
            vm_name: Some(vm.vm.name.clone()),
            parameters: json!({
                "vm_id": vm.vm.id,
                "operation": "detach",
                "disk_id": disk_id,
                "path": disk.path,
                "delete_file": query.delete_file,
                "force": query.force,
            }),
        })
        .map_err(|e| submit_error(e, "id"))?;
    Ok(accepted(&job))
}
