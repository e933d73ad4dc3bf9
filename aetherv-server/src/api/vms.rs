//! Mutating VM routes: create/provision, delete, power actions. Each checks what can be
//! checked before anything runs (the host is managed, the name is free, the VM exists and is
//! in a state that allows the action, no other job holds it) and answers 202 with a job id.

use aetherv_hyperv::ops::HostFacts;
use aetherv_hyperv::ops::VmState;
use aetherv_provision::delete::DeleteRequest;
use aetherv_provision::resources::{HostDefinitions, PlacementRequest, ResolveError, resolve};
use aetherv_provision::schema::{JobRequest, ProvisionValues, Validated, check_disk_size};
use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use super::inventory::vm_id;
use super::views::{AcceptedView, allowed_actions};
use crate::auth::{Principal, Role};
use crate::error::{ApiError, ApiResult, ErrorBody, ErrorCode, FieldProblem};
use crate::jobs::{JobAction, JobView, JobWork, NewJob, SubmitError};
use crate::state::AppState;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

pub(crate) fn ensure_ready(state: &AppState) -> ApiResult<()> {
    state.readiness.check().map_err(|reason| {
        ApiError::not_ready(format!("the server is not ready for changes yet: {reason}"))
    })
}

fn body_text(body: &Bytes) -> ApiResult<&str> {
    std::str::from_utf8(body).map_err(|_| ApiError::malformed("the body is not UTF-8 text"))
}

pub(crate) fn content_type(headers: &HeaderMap) -> ApiResult<Option<&str>> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| ApiError::malformed("the Content-Type header is not text"))?;
    let media = text
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let known = media.is_empty()
        || media.ends_with("json")
        || media.ends_with("yaml")
        || media.ends_with("yml");
    if known {
        Ok(Some(text))
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            format!(
                "Content-Type {media:?} is not supported; send application/json or application/yaml"
            ),
        ))
    }
}

/// Reads a provisioning body with `parse` (flat or job schema): the body is parsed once.
///
/// A YAML body over [`aetherv_provision::schema::MAX_YAML_BYTES`] is refused (413) before any
/// parser runs, after the nesting check: libyaml's cost per byte sets that bound.
///
/// Only when the schema refuses it is the body parsed a second time, into nothing, to tell a
/// body that is not JSON or YAML at all (400) from one whose fields are wrong (422). Both
/// parses are bounded by the nesting check ([`aetherv_provision::schema::check_nesting`]),
/// which the schema runs first: the YAML parser's cost grows with nesting depth times length.
fn read_provisioning_body(
    body: &str,
    hint: Option<&str>,
    parse: fn(&str, Option<&str>) -> aetherv_provision::Result<Validated>,
) -> ApiResult<Validated> {
    use aetherv_provision::schema::{BodyFormat, MAX_YAML_BYTES, check_nesting, yaml_too_large};
    let format = BodyFormat::detect(body, hint);
    if format == BodyFormat::Yaml && body.len() > MAX_YAML_BYTES {
        // Nesting first (the linear scan names the position), then the YAML size bound.
        check_nesting(body)
            .map_err(|e| ApiError::malformed(format!("the body cannot be read: {e}")))?;
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            yaml_too_large(body.len()),
        ));
    }
    parse(body, hint).map_err(|error| {
        check_nesting(body)
            .map_err(|e| ApiError::malformed(format!("the body cannot be read: {e}")))
            .and_then(|()| match format {
                BodyFormat::Json => serde_json::from_str::<serde::de::IgnoredAny>(body)
                    .map(|_| ())
                    .map_err(|e| ApiError::malformed(format!("the body is not valid JSON: {e}"))),
                BodyFormat::Yaml => serde_yaml::from_str::<serde::de::IgnoredAny>(body)
                    .map(|_| ())
                    .map_err(|e| ApiError::malformed(format!("the body is not valid YAML: {e}"))),
            })
            .err()
            .unwrap_or_else(|| schema_error(&error))
    })
}

/// Turns a schema error into 400 (the document as a whole) or 422 (named fields).
fn schema_error(error: &aetherv_provision::Error) -> ApiError {
    match error.field_errors() {
        Some([only]) if only.field == "body" => {
            ApiError::malformed(format!("the body cannot be read: {}", only.message))
        }
        Some(errors) => ApiError::invalid_fields(
            errors
                .iter()
                .map(|e| FieldProblem {
                    field: e.field.clone(),
                    message: e.message.clone(),
                })
                .collect(),
        ),
        None => ApiError::malformed(error.to_string()),
    }
}

/// The 202 answer.
pub fn accepted(job: &JobView) -> Response {
    let mut response = (
        StatusCode::ACCEPTED,
        Json(AcceptedView {
            job_id: job.id.clone(),
            status: job.status,
            cancel_requested: None,
        }),
    )
        .into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/api/v1/jobs/{}", job.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// Queues `work` on the VM's host under the VM's lock and answers 202 with the job (a busy VM
/// or a full queue become the matching error, naming `hyperv_host` for an unknown host).
pub(crate) fn submit_vm_job(
    state: &AppState,
    vm: &aetherv_inventory::InventoryVm,
    work: JobWork,
    parameters: serde_json::Value,
) -> ApiResult<Response> {
    let job = state
        .jobs
        .submit(NewJob {
            requested_by: crate::audit::caller(),
            work,
            host: vm.host.to_string(),
            vm_id: Some(vm.vm.id),
            vm_name: Some(vm.vm.name.clone()),
            parameters,
        })
        .map_err(|e| submit_error(e, "hyperv_host"))?;
    Ok(accepted(&job))
}

pub(crate) fn submit_error(error: SubmitError, host_field: &str) -> ApiError {
    match error {
        SubmitError::UnknownHost(host) => ApiError::not_found("host", &host).with_field(host_field),
        SubmitError::Busy { vm, job } => ApiError::conflict(
            ErrorCode::VmBusy,
            format!("VM {vm} is busy with job {job}; wait for it to finish or cancel it"),
        ),
        e @ SubmitError::QueueFull(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::QueueFull,
            e.to_string(),
        ),
        e @ SubmitError::HostBusy { .. } => {
            ApiError::conflict(ErrorCode::InvalidState, e.to_string())
        }
        other => ApiError::not_ready(other.to_string()),
    }
}

/// Checks what depends on the chosen host (call it once the host is known): `network` and
/// `storage_class` against the host's definitions (`configured` from `HOSTS_FILE`, joined
/// with the host's resources file), the default network (several External switches and no
/// default is a 422 listing them), and a `disk_size_gb` below the image's virtual size (a 422
/// naming both sizes). The pipeline checks the same again in its pre-checks, against fresh
/// facts.
fn check_against_host(
    facts: &HostFacts,
    configured: &HostDefinitions,
    values: &ProvisionValues,
    flat: bool,
) -> ApiResult<()> {
    let prefix = if flat { "" } else { "values." };
    let disk_field = format!("{prefix}disk_size_gb");
    let disk_field = disk_field.as_str();
    let request = PlacementRequest {
        network: values.network.as_deref(),
        storage_class: values.storage_class.as_deref(),
        vlan_id: values.vlan_id,
    };
    match resolve(configured, facts, request, prefix) {
        Ok(_) => {}
        Err(ResolveError::Fields(problems)) => {
            return Err(ApiError::invalid_fields(
                problems
                    .into_iter()
                    .map(|p| FieldProblem {
                        field: p.field,
                        message: p.message,
                    })
                    .collect(),
            ));
        }
        Err(ResolveError::HostResources(e)) => {
            return Err(ApiError::invalid(
                format!("{prefix}network"),
                format!("{e}; fix the file on the host or define the networks in HOSTS_FILE"),
            ));
        }
    }
    let image = facts
        .images
        .iter()
        .find(|i| i.name.eq_ignore_ascii_case(&values.image_name));
    if let Some(image) = image {
        check_disk_size(
            disk_field,
            values.disk_size_gb,
            &image.name,
            image.max_size_bytes,
        )
        .map_err(|problem| ApiError::invalid(disk_field, problem.message))?;
    }
    Ok(())
}

/// Places a request that names a cluster: the connected member with the most memory
/// available that fits the VM ([`aetherv_inventory::placement::choose`]). Returns the chosen
/// host and the placement record for the job's parameters.
///
/// Members are the hosts the configuration lists under the cluster and the hosts whose facts
/// name it. An unknown cluster is a 404 naming `target_cluster`; no eligible member is a 409
/// `no_eligible_host` stating the best figure found.
fn place(
    state: &AppState,
    cluster: &str,
    values: &aetherv_provision::schema::ProvisionValues,
) -> ApiResult<(String, serde_json::Value)> {
    use aetherv_inventory::placement::{Demand, choose};
    let snapshot = state.inventory.snapshot();
    let members = super::placement::cluster_members(state, cluster, "target_cluster")?;
    // The copy of the golden image is what the disk takes on the host's storage.
    let disk_bytes = members
        .iter()
        .filter_map(|m| snapshot.host(m))
        .filter_map(|h| h.facts.as_deref())
        .flat_map(|f| f.images.iter())
        .filter(|i| i.name.eq_ignore_ascii_case(&values.image_name))
        .map(|i| i.size_bytes)
        .max();
    // A disk expanded to `disk_size_gb` may grow to that size: room for it is asked for.
    let disk_bytes = match values.disk_size_gb {
        Some(gb) => Some(disk_bytes.unwrap_or(0).max(u64::from(gb) << 30)),
        None => disk_bytes,
    };
    let demand = Demand {
        memory_bytes: u64::from(values.gb_ram) << 30,
        disk_bytes,
        image: Some(values.image_name.clone()),
    };
    // A member must also serve the request's network and storage class (and its disk size
    // must not be below its copy of the image): the same checks as for a named host.
    let (found, _) = super::placement::evaluate(state, &members, &demand, |host, facts| {
        let facts = facts?;
        let configured = state
            .host_resources
            .get(&host.to_ascii_lowercase())
            .cloned()
            .unwrap_or_default();
        check_against_host(facts, &configured, values, true)
            .err()
            .map(|error| {
                if error.details.is_empty() {
                    error.message
                } else {
                    error
                        .details
                        .iter()
                        .map(|p| format!("{}: {}", p.field, p.message))
                        .collect::<Vec<_>>()
                        .join("; ")
                }
            })
    });
    match choose(&found, &demand) {
        Ok(chosen) => {
            tracing::info!(
                cluster,
                host = %chosen.host,
                memory_available_bytes = chosen.memory_available_bytes,
                "placed the VM on the cluster member with the most memory available"
            );
            let record = json!({
                "cluster": cluster,
                "host": chosen.host,
                "memory_available_bytes": chosen.memory_available_bytes,
                "candidates": found.len(),
            });
            Ok((chosen.host, record))
        }
        Err(no_fit) => Err(ApiError::conflict(
            ErrorCode::NoEligibleHost,
            format!(
                "no host of cluster {cluster} can take the VM (it needs {} GiB of memory{}): {no_fit}",
                values.gb_ram,
                disk_bytes.map_or_else(String::new, |d| format!(
                    " and {:.1} GiB of storage",
                    d as f64 / f64::from(1u32 << 30)
                )),
            ),
        )
        .with_field("target_cluster")),
    }
}

/// Checks a validated provisioning request against the inventory and queues it.
fn provision(state: &AppState, mut validated: Validated, flat: bool) -> ApiResult<Response> {
    let (host_field, image_field) = if flat {
        ("hyperv_host", "image_name")
    } else {
        ("target_host", "values.image_name")
    };
    let placement = match validated.request.target_cluster.clone() {
        Some(cluster) if validated.request.needs_placement() => {
            let (host, record) = place(state, &cluster, &validated.request.values)?;
            validated.request.place_on(host);
            Some(record)
        }
        _ => None,
    };
    let host_field = if placement.is_some() {
        "target_cluster"
    } else {
        host_field
    };
    let requested = validated.request.target_host.clone();
    let Some((host_name, _)) = state.jobs.host(&requested) else {
        let known: Vec<&str> = state.jobs.hosts().keys().map(String::as_str).collect();
        return Err(ApiError::not_found("host", &requested)
            .with_field(host_field)
            .with_message_suffix(&format!("; managed hosts: {}", known.join(", "))));
    };
    let host_name = host_name.to_owned();
    let values = &validated.request.values;
    let snapshot = state.inventory.snapshot();
    if let Some(host) = snapshot.host(&host_name) {
        if let Some(existing) = host
            .vms
            .values()
            .find(|vm| vm.vm.name.eq_ignore_ascii_case(&values.vm_name))
        {
            return Err(ApiError::conflict(
                ErrorCode::VmExists,
                format!(
                    "a VM named {} already exists on host {host_name} (id {})",
                    existing.vm.name, existing.vm.id
                ),
            )
            .with_field(if flat { "vm_name" } else { "values.vm_name" }));
        }
        if let Some(facts) = &host.facts
            && !facts
                .images
                .iter()
                .any(|i| i.name.eq_ignore_ascii_case(&values.image_name))
        {
            let names: Vec<&str> = facts.images.iter().map(|i| i.name.as_str()).collect();
            return Err(ApiError::invalid(
                image_field,
                format!(
                    "host {host_name} has no golden image named {:?}; available: {}",
                    values.image_name,
                    names.join(", ")
                ),
            ));
        }
        if let Some(facts) = &host.facts {
            let configured = state
                .host_resources
                .get(&host_name.to_ascii_lowercase())
                .cloned()
                .unwrap_or_default();
            check_against_host(facts, &configured, values, flat)?;
        }
    }
    let mut parameters = validated.redacted();
    if !validated.warnings.is_empty()
        && let Some(map) = parameters.as_object_mut()
    {
        map.insert("warnings".to_owned(), json!(validated.warnings));
    }
    if let Some(record) = placement
        && let Some(map) = parameters.as_object_mut()
    {
        map.insert("placement".to_owned(), record);
    }
    let vm_name = values.vm_name.clone();
    let job = state
        .jobs
        .submit(NewJob {
            requested_by: crate::audit::caller(),
            work: JobWork::Provision(Box::new(validated)),
            host: host_name,
            vm_id: None,
            vm_name: Some(vm_name),
            parameters,
        })
        .map_err(|e| submit_error(e, host_field))?;
    Ok(accepted(&job))
}

/// `POST /api/v1/vms/create` (flat body, JSON or YAML; the body's schema is written by hand in
/// [`super::openapi`], as it accepts YAML and lenient scalars).
#[utoipa::path(post, path = "/api/v1/vms/create", tag = "jobs", operation_id = "createVm",
    summary = "Create a VM",
    description = "Queues a provisioning job from the flat body (job schema v1 values at the top \
        level, the host in `hyperv_host` or a cluster in `target_cluster`), as JSON or YAML. \
        With `target_cluster` the server picks the connected member with the most memory \
        available that fits the VM; the job's `target_host` and `parameters.placement` name \
        it. A name already on the host answers 409 before anything runs.",
    responses(
        (status = 202, description = "The job was queued", body = AcceptedView,
            headers(("Location" = String, description = "The job's URL"))),
        (status = 400, description = "`malformed_body`: the body is not JSON (or YAML where \
            accepted)", body = ErrorBody),
        (status = 404, description = "`not_found`: the host is not managed by this server, or \
            the cluster of `target_cluster` is unknown (`field` names it)", body = ErrorBody),
        (status = 409, description = "`vm_exists`: a VM with this name is already on the host; \
            `vm_busy`: a job works on a VM of that name; `no_eligible_host`: no connected host \
            of `target_cluster` has the memory, storage and image for the VM (the message \
            states the best figure found)", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over 256 KiB, or a YAML \
            body over 64 KiB",
            body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: the body is neither JSON nor \
            YAML", body = ErrorBody),
        (status = 422, description = "`invalid_field`: a field failed validation; `field` names \
            it and `details` lists every invalid field", body = ErrorBody),
        (status = 503, description = "`not_ready`: the server is still starting; `queue_full`: \
            too many jobs are waiting", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    ensure_ready(&state)?;
    let hint = content_type(&headers)?;
    let text = body_text(&body)?;
    let validated = read_provisioning_body(text, hint, JobRequest::parse_flat)?;
    provision(&state, validated, true)
}

/// `POST /api/v1/jobs/provision` (job schema v1, JSON or YAML).
#[utoipa::path(post, path = "/api/v1/jobs/provision", tag = "jobs", operation_id = "provisionVm",
    summary = "Submit a provisioning job",
    description = "Queues a provisioning job in the job schema (v1), as JSON or YAML \
        (`Content-Type: application/yaml`, or detected from the body).",
    responses(
        (status = 202, description = "The job was queued", body = AcceptedView,
            headers(("Location" = String, description = "The job's URL"))),
        (status = 400, description = "`malformed_body`: the body is not JSON (or YAML where \
            accepted)", body = ErrorBody),
        (status = 404, description = "`not_found`: the host is not managed by this server, or \
            the cluster of `target_cluster` is unknown (`field` names it)", body = ErrorBody),
        (status = 409, description = "`vm_exists`: a VM with this name is already on the host; \
            `vm_busy`: a job works on a VM of that name; `no_eligible_host`: no connected host \
            of `target_cluster` has the memory, storage and image for the VM (the message \
            states the best figure found)", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over 256 KiB, or a YAML \
            body over 64 KiB",
            body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: the body is neither JSON nor \
            YAML", body = ErrorBody),
        (status = 422, description = "`invalid_field`: a field failed validation; `field` names \
            it and `details` lists every invalid field", body = ErrorBody),
        (status = 503, description = "`not_ready`: the server is still starting; `queue_full`: \
            too many jobs are waiting", body = ErrorBody),
    ))]
pub async fn provision_job(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    ensure_ready(&state)?;
    let hint = content_type(&headers)?;
    let text = body_text(&body)?;
    let validated = read_provisioning_body(text, hint, JobRequest::parse)?;
    provision(&state, validated, false)
}

/// Body of `POST /api/v1/vms/delete`: the VM by `vm_id`, or by `vm_name` and `hyperv_host`.
/// Unknown fields are refused (422 naming the field).
#[derive(Debug, Deserialize, ToSchema, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = DeleteVmRequest)]
pub struct DeleteBody {
    /// The VM's id.
    #[schema(format = Uuid)]
    vm_id: Option<String>,
    /// The VM's name (with `hyperv_host`; case-insensitive).
    vm_name: Option<String>,
    /// The VM's host (with `vm_name`).
    hyperv_host: Option<String>,
    /// Turn the VM off first if it runs.
    #[serde(default)]
    force: bool,
    /// Also delete the VM's disks.
    #[serde(default)]
    delete_disks: bool,
}

pub(crate) fn parse_json_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_data() {
            let message = inner.to_string();
            let field = message
                .strip_prefix("unknown field `")
                .and_then(|rest| rest.split('`').next())
                .map_or(path, str::to_owned);
            ApiError::invalid(field, message)
        } else {
            ApiError::malformed(format!("the body is not valid JSON: {inner}"))
        }
    })?;
    deserializer
        .end()
        .map_err(|e| ApiError::malformed(format!("the body is not valid JSON: {e}")))?;
    Ok(value)
}

/// `POST /api/v1/vms/delete`.
#[utoipa::path(post, path = "/api/v1/vms/delete", tag = "jobs", operation_id = "deleteVm",
    summary = "Delete a VM",
    description = "Queues a delete job for the VM named by id, or by name and host. Unknown \
        fields are refused.",
    request_body(content = DeleteBody, content_type = "application/json"),
    responses(
        (status = 202, description = "The job was queued", body = AcceptedView,
            headers(("Location" = String, description = "The job's URL"))),
        (status = 400, description = "`malformed_body`: the body is not JSON", body = ErrorBody),
        (status = 404, description = "`not_found`: unknown VM", body = ErrorBody),
        (status = 409, description = "`vm_busy`: another job works on the VM; `invalid_state`: \
            the VM runs and `force` is not set; `host_disconnected`: the VM's host is \
            disconnected; `ambiguous_name`: several VMs on the host have the name",
            body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over 256 KiB",
            body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: the body is not JSON",
            body = ErrorBody),
        (status = 422, description = "`invalid_field`: an unknown field, a field of the wrong \
            type, or neither `vm_id` nor `vm_name` with `hyperv_host`; `field` names it",
            body = ErrorBody),
        (status = 503, description = "`not_ready`: the server is still starting; `queue_full`: \
            too many jobs are waiting", body = ErrorBody),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    ensure_ready(&state)?;
    if let Some(hint) = content_type(&headers)?
        && !hint.to_ascii_lowercase().contains("json")
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            "send the delete request as application/json",
        ));
    }
    let request: DeleteBody = parse_json_body(&body)?;
    let snapshot = state.inventory.snapshot();
    let vm = match (&request.vm_id, &request.vm_name, &request.hyperv_host) {
        (Some(id), _, _) => {
            let parsed = id.parse().map_err(|_| {
                ApiError::invalid("vm_id", format!("{id:?} is not a VM id (a GUID)"))
            })?;
            snapshot
                .vm(parsed)
                .ok_or_else(|| ApiError::not_found("VM", id).with_field("vm_id"))?
        }
        (None, Some(name), Some(host)) => {
            // Hyper-V VM names are case-insensitive, as in the create check and job locking.
            let mut matches = snapshot
                .hosts()
                .filter(|h| h.name.eq_ignore_ascii_case(host))
                .flat_map(|h| h.vms.values())
                .filter(|vm| vm.vm.name.eq_ignore_ascii_case(name));
            let found = matches.next().ok_or_else(|| {
                ApiError::not_found("VM", &format!("{name} on host {host}")).with_field("vm_name")
            })?;
            if matches.next().is_some() {
                return Err(ApiError::conflict(
                    ErrorCode::AmbiguousName,
                    format!("host {host} has several VMs named {name}; delete by vm_id"),
                ));
            }
            found
        }
        (None, Some(_), None) => {
            return Err(ApiError::invalid(
                "hyperv_host",
                "required with vm_name (or give vm_id instead)",
            ));
        }
        (None, None, _) => {
            return Err(ApiError::invalid(
                "vm_id",
                "give vm_id, or vm_name and hyperv_host",
            ));
        }
    };
    if vm.stale {
        return Err(ApiError::conflict(
            ErrorCode::HostDisconnected,
            format!("host {} is disconnected; its inventory is stale", vm.host),
        ));
    }
    if vm.vm.state != VmState::Off && !request.force {
        return Err(ApiError::conflict(
            ErrorCode::InvalidState,
            format!(
                "VM {} is {}; shut it down first or set force=true to turn it off before deleting",
                vm.vm.name,
                vm.vm.state.name()
            ),
        ));
    }
    let mut work = DeleteRequest::new(vm.vm.id);
    work.force = request.force;
    work.delete_disks = request.delete_disks;
    let job = state
        .jobs
        .submit(NewJob {
            requested_by: crate::audit::caller(),
            work: JobWork::Delete(work),
            host: vm.host.to_string(),
            vm_id: Some(vm.vm.id),
            vm_name: Some(vm.vm.name.clone()),
            parameters: json!({
                "vm_id": vm.vm.id,
                "vm_name": vm.vm.name,
                "hyperv_host": vm.host.as_ref(),
                "force": request.force,
                "delete_disks": request.delete_disks,
            }),
        })
        .map_err(|e| submit_error(e, "hyperv_host"))?;
    Ok(accepted(&job))
}

/// `POST /api/v1/vms/{id}/actions/{action}`.
#[utoipa::path(post, path = "/api/v1/vms/{id}/actions/{action}", tag = "jobs",
    operation_id = "vmAction", summary = "Apply a power action",
    description = "Queues a power job (`stop` turns the VM off); the job record names the action \
        the same way.",
    params(
        ("id" = String, Path, format = Uuid, description = "Hyper-V VM id"),
        ("action" = JobAction, Path, description = "The power action"),
    ),
    responses(
        (status = 202, description = "The job was queued", body = AcceptedView,
            headers(("Location" = String, description = "The job's URL"))),
        (status = 404, description = "`not_found`: unknown VM or action", body = ErrorBody),
        (status = 409, description = "`invalid_state`: the action is not allowed in the VM's \
            current state (named in the message); `vm_busy`: another job works on the VM; \
            `host_disconnected`: the VM's host is disconnected", body = ErrorBody),
        (status = 503, description = "`not_ready`: the server is still starting; `queue_full`: \
            too many jobs are waiting", body = ErrorBody),
    ))]
pub async fn action(
    State(state): State<AppState>,
    Path((id, action)): Path<(String, String)>,
) -> ApiResult<Response> {
    let parsed = JobAction::parse(&action).ok_or_else(|| {
        ApiError::not_found("action", &action).with_message_suffix(
            "; actions are start, shutdown, stop, restart, save, pause and resume",
        )
    })?;
    let vm_id = vm_id(&id)?;
    ensure_ready(&state)?;
    let snapshot = state.inventory.snapshot();
    let vm = snapshot
        .vm(vm_id)
        .ok_or_else(|| ApiError::not_found("VM", &id))?;
    if vm.stale {
        return Err(ApiError::conflict(
            ErrorCode::HostDisconnected,
            format!("host {} is disconnected; its inventory is stale", vm.host),
        ));
    }
    if !parsed.power_action().allowed_from(vm.vm.state) {
        let allowed = allowed_actions(vm.vm.state);
        return Err(ApiError::conflict(
            ErrorCode::InvalidState,
            format!(
                "cannot {} VM {}: it is {}; allowed now: {}",
                parsed.power_action().verb(),
                vm.vm.name,
                vm.vm.state.name(),
                if allowed.is_empty() {
                    "none".to_owned()
                } else {
                    allowed
                        .iter()
                        .map(|a| a.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ),
        ));
    }
    let job = state
        .jobs
        .submit(NewJob {
            requested_by: crate::audit::caller(),
            work: JobWork::Power {
                vm: vm_id,
                action: parsed.power_action(),
            },
            host: vm.host.to_string(),
            vm_id: Some(vm_id),
            vm_name: Some(vm.vm.name.clone()),
            parameters: json!({ "vm_id": vm_id, "action": parsed }),
        })
        .map_err(|e| submit_error(e, "hyperv_host"))?;
    Ok(accepted(&job))
}

/// The checks every orphan action makes: the caller is an admin, the server is ready, the VM
/// exists, its host answers, and it is orphaned.
fn orphan_target(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> ApiResult<std::sync::Arc<aetherv_inventory::InventoryVm>> {
    if !principal.role.allows(Role::Admin) {
        return Err(ApiError::forbidden(format!(
            "orphan actions need the admin role; you have {}",
            principal.role
        )));
    }
    let vm_id = vm_id(id)?;
    ensure_ready(state)?;
    let snapshot = state.inventory.snapshot();
    let vm = snapshot
        .vm(vm_id)
        .ok_or_else(|| ApiError::not_found("VM", id))?;
    if vm.stale {
        return Err(ApiError::conflict(
            ErrorCode::HostDisconnected,
            format!("host {} is disconnected; its inventory is stale", vm.host),
        ));
    }
    if !crate::orphan::is_orphaned(&vm.vm, &state.jobs) {
        return Err(ApiError::conflict(
            ErrorCode::NotOrphaned,
            format!(
                "VM {} on host {} is not orphaned: its notes carry no marker of a provisioning job this server is not running",
                vm.vm.name, vm.host
            ),
        ));
    }
    Ok(std::sync::Arc::clone(vm))
}

/// `POST /api/v1/vms/{id}/orphan/remove` (admin).
#[utoipa::path(post, path = "/api/v1/vms/{id}/orphan/remove", tag = "jobs",
    operation_id = "removeOrphan", summary = "Remove an orphaned VM",
    description = "Admin only. Queues a delete job for an orphaned VM (its notes mark a \
        provisioning job this server is not running) that undoes what provisioning made: the VM \
        is turned off, its cluster role removed, and the VM deleted with its disks (and, where \
        deletion removes them, its folder and ISO copy). The job is listed, followed and \
        cancelled like any other.",
    params(("id" = String, Path, format = Uuid, description = "Hyper-V VM id")),
    responses(
        (status = 202, description = "The job was queued", body = AcceptedView,
            headers(("Location" = String, description = "The job's URL"))),
        (status = 403, description = "`forbidden`: the caller is not an admin", body = ErrorBody),
        (status = 404, description = "`not_found`: unknown VM", body = ErrorBody),
        (status = 409, description = "`not_orphaned`: the VM is not orphaned; `vm_busy`: a job \
            works on the VM; `host_disconnected`: the VM's host is disconnected",
            body = ErrorBody),
        (status = 503, description = "`not_ready`: the server is still starting; `queue_full`: \
            too many jobs are waiting", body = ErrorBody),
    ))]
pub async fn remove_orphan(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let vm = orphan_target(&state, &principal, &id)?;
    let mut work = DeleteRequest::new(vm.vm.id);
    work.force = true;
    work.delete_disks = true;
    submit_orphan_job(
        &state,
        &principal,
        &vm,
        JobWork::Delete(work),
        json!({ "force": true, "delete_disks": true }),
        "removing orphaned VM",
    )
}

/// Queues `work` for the orphan `vm` with the parameters every orphan job records (the VM,
/// its host, the marked job, who asked) plus `extra`, and logs `what` at WARN.
fn submit_orphan_job(
    state: &AppState,
    principal: &Principal,
    vm: &aetherv_inventory::InventoryVm,
    work: JobWork,
    extra: serde_json::Value,
    what: &'static str,
) -> ApiResult<Response> {
    let marker_job = crate::orphan::marker_job(&vm.vm.notes).unwrap_or_default();
    let mut parameters = json!({
        "vm_id": vm.vm.id,
        "vm_name": vm.vm.name,
        "hyperv_host": vm.host.as_ref(),
        "orphan_of_job": marker_job,
        "requested_by": principal.subject.clone(),
    });
    if let (Some(map), serde_json::Value::Object(extra)) = (parameters.as_object_mut(), extra) {
        map.extend(extra);
    }
    let job = state
        .jobs
        .submit(NewJob {
            requested_by: crate::audit::caller(),
            work,
            host: vm.host.to_string(),
            vm_id: Some(vm.vm.id),
            vm_name: Some(vm.vm.name.clone()),
            parameters,
        })
        .map_err(|e| submit_error(e, "id"))?;
    tracing::warn!(
        job = %job.id,
        host = %vm.host,
        vm = %vm.vm.name,
        vm_id = %vm.vm.id,
        orphan_of_job = marker_job,
        by = %principal.subject,
        "{what}"
    );
    Ok(accepted(&job))
}

/// `POST /api/v1/vms/{id}/orphan/adopt` (admin).
#[utoipa::path(post, path = "/api/v1/vms/{id}/orphan/adopt", tag = "jobs",
    operation_id = "adoptOrphan", summary = "Adopt an orphaned VM",
    description = "Admin only. Queues an adopt job for an orphaned VM: the job marker in its \
        notes (`aetherv-job:<job>`) is replaced by the provisioned marker of the same job \
        (`aetherv-provisioned:<job>`), so the VM is kept as it is and is no longer orphaned; \
        deletion still knows that this project created its folder. Nothing else on the VM \
        changes: what a half-finished provisioning left (a DVD drive, `hlvmm.*` items) is the \
        adopter's to judge.",
    params(("id" = String, Path, format = Uuid, description = "Hyper-V VM id")),
    responses(
        (status = 202, description = "The job was queued", body = AcceptedView,
            headers(("Location" = String, description = "The job's URL"))),
        (status = 403, description = "`forbidden`: the caller is not an admin", body = ErrorBody),
        (status = 404, description = "`not_found`: unknown VM", body = ErrorBody),
        (status = 409, description = "`not_orphaned`: the VM is not orphaned; `vm_busy`: a job \
            works on the VM; `host_disconnected`: the VM's host is disconnected",
            body = ErrorBody),
        (status = 503, description = "`not_ready`: the server is still starting; `queue_full`: \
            too many jobs are waiting", body = ErrorBody),
    ))]
pub async fn adopt_orphan(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let vm = orphan_target(&state, &principal, &id)?;
    let job = crate::orphan::marker_job(&vm.vm.notes)
        .unwrap_or_default()
        .to_owned();
    submit_orphan_job(
        &state,
        &principal,
        &vm,
        JobWork::Adopt { vm: vm.vm.id, job },
        json!({}),
        "adopting orphaned VM",
    )
}
