//! Read-only inventory routes: clusters, hosts, VMs.

use std::collections::HashMap;

use aetherv_hyperv::ops::VmId;
use axum::Json;
use axum::extract::{Path, Query, State};
use std::sync::Arc;

use aetherv_inventory::Snapshot;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;

use super::views::{
    self, ClusterListView, HostDetail, HostListView, VmDetail, VmFilter, VmListView, VmStateName,
    VmSummary,
};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::state::{AppState, CachedList};

/// `GET /api/v1/clusters`.
#[utoipa::path(get, path = "/api/v1/clusters", tag = "inventory", operation_id = "listClusters",
    summary = "List clusters", description = "Clusters derived from the hosts' facts.",
    responses((status = 200, description = "Clusters", body = ClusterListView)))]
pub async fn clusters(State(state): State<AppState>) -> Json<ClusterListView> {
    let snapshot = state.inventory.snapshot();
    Json(ClusterListView {
        clusters: views::clusters(&snapshot),
    })
}

/// `GET /api/v1/hosts`.
#[utoipa::path(get, path = "/api/v1/hosts", tag = "inventory", operation_id = "listHosts",
    summary = "List hosts",
    description = "Every configured host with its connection status and capacity \
        (facts fields are null before the first refresh).",
    responses((status = 200, description = "Hosts", body = HostListView)))]
pub async fn hosts(State(state): State<AppState>) -> Json<HostListView> {
    let snapshot = state.inventory.snapshot();
    Json(HostListView {
        hosts: snapshot.hosts().map(|h| views::host_view(h)).collect(),
    })
}

/// `GET /api/v1/hosts/{hostname}`.
#[utoipa::path(get, path = "/api/v1/hosts/{hostname}", tag = "inventory", operation_id = "getHost",
    summary = "One host", description = "The host, its full facts and its VMs.",
    params(("hostname" = String, Path, description = "Host name as configured (case-insensitive)")),
    responses(
        (status = 200, description = "The host", body = HostDetail),
        (status = 404, description = "`not_found`: unknown host", body = ErrorBody),
    ))]
pub async fn host(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<HostDetail>> {
    let snapshot = state.inventory.snapshot();
    let host = snapshot
        .host(&name)
        .or_else(|| {
            snapshot
                .hosts()
                .find(|h| h.name.eq_ignore_ascii_case(&name))
        })
        .ok_or_else(|| ApiError::not_found("host", &name))?;
    let busy = state.jobs.busy_vms();
    let mut detail = views::host_detail(&snapshot, host, &busy, &state.jobs);
    detail.provisioning_media = views::provisioning_media(&state.info.media, host.facts.as_deref());
    Ok(Json(detail))
}

/// Query of `GET /api/v1/vms`: every parameter is optional, they combine with AND, and an
/// empty (or blank) value is the same as leaving the parameter out. Unknown parameters are
/// refused.
#[derive(Debug, Deserialize, IntoParams, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct VmQuery {
    /// Only VMs on this host (case-insensitive); empty means any.
    host: Option<String>,
    /// Only VMs on hosts of this cluster (case-insensitive); empty means any.
    cluster: Option<String>,
    /// Only VMs in this Hyper-V state (case-insensitive); empty means any.
    #[param(value_type = Option<VmStateName>)]
    state: Option<String>,
    /// Case-insensitive substring of the name, id, notes or an IP address; empty means any.
    q: Option<String>,
}

fn filter_of(query: VmQuery) -> ApiResult<VmFilter> {
    let blank = |v: Option<String>| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    let state = match blank(query.state) {
        None => None,
        Some(s) => Some(VmStateName::parse(&s).map(VmStateName::state).ok_or_else(|| {
            ApiError::bad_query(
                "state",
                format!("unknown VM state {s:?}; use a Hyper-V state name such as Running, Off, Saved or Paused"),
            )
        })?),
    };
    Ok(VmFilter {
        host: blank(query.host),
        cluster: blank(query.cluster),
        state,
        q: blank(query.q).map(|q| q.to_ascii_lowercase()),
    })
}

fn json_bytes(body: bytes::Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Whether the client accepts a gzip-encoded answer.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or_default().trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    == Some(0.0)
            });
            name.eq_ignore_ascii_case("gzip") && !refused
        })
}

/// Answers from the cached list: 304 when the client has this version, gzip when it takes it.
fn cached_answer(cached: &CachedList, headers: &HeaderMap) -> Response {
    let etag = HeaderValue::from_str(&cached.etag).ok();
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == cached.etag));
    let mut response = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else if accepts_gzip(headers) {
        let mut r = json_bytes(cached.gzip.clone());
        r.headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        r
    } else {
        json_bytes(cached.body.clone())
    };
    let h = response.headers_mut();
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if let Some(etag) = etag {
        h.insert(header::ETAG, etag);
    }
    response
}

fn gzip(body: &[u8]) -> std::io::Result<bytes::Bytes> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    encoder.write_all(body)?;
    encoder.finish().map(bytes::Bytes::from)
}

fn serialise(state: &AppState, snapshot: &Snapshot, filter: &VmFilter) -> ApiResult<bytes::Bytes> {
    let busy = state.jobs.busy_vms();
    let list: Vec<VmSummary> = snapshot
        .vms()
        .filter(|vm| filter.matches(snapshot, vm))
        .map(|vm| views::vm_summary(snapshot, vm, &busy, &state.jobs))
        .collect();
    serde_json::to_vec(&VmListView {
        total: list.len(),
        vms: list,
    })
    .map(bytes::Bytes::from)
    .map_err(|e| ApiError::internal(format!("cannot serialise the VM list: {e}")))
}

/// `GET /api/v1/vms`. The unfiltered answer is serialised and compressed once per inventory
/// change (one request rebuilds it; concurrent ones wait for that result), carries an `ETag`,
/// and is sent gzip-encoded to clients that accept it.
#[utoipa::path(get, path = "/api/v1/vms", tag = "inventory", operation_id = "listVms",
    summary = "List VMs",
    description = "VMs of every host, filtered by the query parameters (all optional, combined \
        with AND; an empty value is the same as leaving the parameter out). The unfiltered list \
        carries an `ETag` (send `If-None-Match` for a 304) and is gzip-encoded for clients that \
        accept it.",
    params(VmQuery),
    responses(
        (status = 200, description = "Matching VMs", body = VmListView),
        (status = 304, description = "The unfiltered list has not changed since the `ETag` sent"),
        (status = 400, description = "`bad_query`: a query parameter is unusable or unknown \
            (`field` names it)", body = ErrorBody),
    ))]
pub async fn vms(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<VmQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(query) = query.map_err(|e| ApiError::bad_query("query", e.body_text()))?;
    let filter = filter_of(query)?;
    if !filter.is_empty() {
        let snapshot = state.inventory.snapshot();
        return Ok(json_bytes(serialise(&state, &snapshot, &filter)?));
    }
    let cache = &state.vm_list_cache;
    let current = |snapshot: &Snapshot, epoch: u64| {
        cache
            .current
            .load_full()
            .filter(|c| c.generation == snapshot.generation() && c.busy_epoch == epoch)
    };
    let snapshot = state.inventory.snapshot();
    if let Some(cached) = current(&snapshot, state.jobs.busy_epoch()) {
        return Ok(cached_answer(&cached, &headers));
    }
    let _rebuilding = cache.rebuild.lock().await;
    // Another request may have rebuilt it while this one waited.
    let snapshot = state.inventory.snapshot();
    let epoch = state.jobs.busy_epoch();
    if let Some(cached) = current(&snapshot, epoch) {
        return Ok(cached_answer(&cached, &headers));
    }
    let body = serialise(&state, &snapshot, &filter)?;
    let gzip =
        gzip(&body).map_err(|e| ApiError::internal(format!("cannot compress the VM list: {e}")))?;
    let cached = Arc::new(CachedList {
        generation: snapshot.generation(),
        busy_epoch: epoch,
        etag: format!("\"vms-{}-{epoch}\"", snapshot.generation()),
        body,
        gzip,
    });
    cache.current.store(Some(Arc::clone(&cached)));
    Ok(cached_answer(&cached, &headers))
}

/// Parses a VM id path segment; an unusable one is an unknown VM.
pub fn vm_id(id: &str) -> ApiResult<VmId> {
    id.parse::<VmId>()
        .map_err(|_| ApiError::not_found("VM", id))
}

/// `GET /api/v1/vms/{id}`.
#[utoipa::path(get, path = "/api/v1/vms/{id}", tag = "inventory", operation_id = "getVm",
    summary = "One VM",
    description = "The VM with disks, drives, adapters, integration services and the power \
        actions its state allows.",
    params(("id" = String, Path, format = Uuid, description = "Hyper-V VM id")),
    responses(
        (status = 200, description = "The VM", body = VmDetail),
        (status = 404, description = "`not_found`: unknown VM", body = ErrorBody),
    ))]
pub async fn vm(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<VmDetail>> {
    let vm_id = vm_id(&id)?;
    let snapshot = state.inventory.snapshot();
    let vm = snapshot
        .vm(vm_id)
        .ok_or_else(|| ApiError::not_found("VM", &id))?;
    let busy: HashMap<VmId, String> = state
        .jobs
        .busy_job(vm_id)
        .map(|j| (vm_id, j))
        .into_iter()
        .collect();
    Ok(Json(views::vm_detail(&snapshot, vm, &busy, &state.jobs)))
}

/// How long `POST /api/v1/hosts/{hostname}/refresh` waits for the refresh before answering
/// 202 (the refresh goes on; the host's record shows its result once done).
pub const REFRESH_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// `POST /api/v1/hosts/{hostname}/refresh`.
#[utoipa::path(post, path = "/api/v1/hosts/{hostname}/refresh", tag = "inventory",
    operation_id = "refreshHost",
    summary = "Refresh one host now",
    description = "Reads the host's facts and VMs now instead of waiting for the next scheduled \
        refresh (or the retry of a disconnected host), and answers with the host's record \
        afterwards: `status` and `last_error` say whether it answered. A host marked \
        unresponsive is probed first, so this is the quickest way to bring a host back after \
        an outage. Needs the writer role.",
    params(("hostname" = String, Path, description = "Host name as configured (case-insensitive)")),
    responses(
        (status = 200, description = "Refreshed (successfully or not; see `status`)", body = HostDetail),
        (status = 202, description = "Still refreshing after 20 s; the record is the one before",
            body = HostDetail),
        (status = 404, description = "`not_found`: unknown host", body = ErrorBody),
        (status = 503, description = "`not_ready`: the inventory is shutting down", body = ErrorBody),
    ))]
pub async fn refresh_host(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let name = {
        let snapshot = state.inventory.snapshot();
        snapshot
            .host(&name)
            .or_else(|| {
                snapshot
                    .hosts()
                    .find(|h| h.name.eq_ignore_ascii_case(&name))
            })
            .ok_or_else(|| ApiError::not_found("host", &name))?
            .name
            .to_string()
    };
    let status = match tokio::time::timeout(REFRESH_WAIT, state.inventory.refresh_host(&name)).await
    {
        Err(_) => StatusCode::ACCEPTED,
        Ok(Ok(())) => StatusCode::OK,
        Ok(Err(aetherv_inventory::Error::ShutDown)) => {
            return Err(ApiError::not_ready("the inventory is shutting down"));
        }
        // The failure is in the host's record (`status`, `last_error`).
        Ok(Err(_)) => StatusCode::OK,
    };
    let snapshot = state.inventory.snapshot();
    let host = snapshot
        .host(&name)
        .ok_or_else(|| ApiError::not_found("host", &name))?;
    let busy = state.jobs.busy_vms();
    let mut detail = views::host_detail(&snapshot, host, &busy, &state.jobs);
    detail.provisioning_media = views::provisioning_media(&state.info.media, host.facts.as_deref());
    Ok((status, Json(detail)).into_response())
}

/// `GET /api/v1/cleanup`.
#[utoipa::path(get, path = "/api/v1/cleanup", tag = "inventory", operation_id = "listPendingCleanup",
    summary = "Pending cleanups",
    description = "Artifacts (VMs, copied disks and ISOs, folders, cluster roles) that a failed \
        job could not remove, typically because its host stopped answering. The server removes \
        each when its host answers again (and retries every minute while the host is \
        connected); removed ones leave this list.",
    responses((status = 200, description = "Pending cleanups, oldest first",
        body = crate::recovery::PendingCleanupListView)))]
pub async fn pending_cleanup(
    State(state): State<AppState>,
) -> Json<crate::recovery::PendingCleanupListView> {
    Json(crate::recovery::PendingCleanupListView {
        pending: state.recovery.pending(),
    })
}
