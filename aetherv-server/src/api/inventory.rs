//! Read-only inventory routes: clusters, hosts, VMs.

use std::collections::HashMap;

use aetherv_hyperv::ops::{VmId, VmState};
use axum::Json;
use axum::extract::{Path, Query, State};
use std::sync::Arc;

use aetherv_inventory::Snapshot;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::views::{self, VmFilter, VmSummary};
use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, CachedList};

/// `GET /api/v1/clusters`.
pub async fn clusters(State(state): State<AppState>) -> Json<serde_json::Value> {
    let snapshot = state.inventory.snapshot();
    Json(json!({ "clusters": views::clusters(&snapshot) }))
}

/// `GET /api/v1/hosts`.
pub async fn hosts(State(state): State<AppState>) -> Json<serde_json::Value> {
    let snapshot = state.inventory.snapshot();
    let hosts: Vec<_> = snapshot.hosts().map(|h| views::host_view(h)).collect();
    Json(json!({ "hosts": hosts }))
}

/// `GET /api/v1/hosts/{hostname}`.
pub async fn host(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<views::HostDetail>> {
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
    Ok(Json(views::host_detail(&snapshot, host, &busy)))
}

/// Query of `GET /api/v1/vms`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmQuery {
    host: Option<String>,
    cluster: Option<String>,
    state: Option<String>,
    q: Option<String>,
}

/// Parses a Hyper-V state name (case-insensitive).
pub fn parse_state(name: &str) -> Option<VmState> {
    const CODES: [u32; 17] = [
        1, 2, 3, 4, 6, 9, 10, 11, 32773, 32776, 32777, 32779, 32780, 32781, 32782, 32783, 32784,
    ];
    CODES
        .into_iter()
        .map(VmState::from_code)
        .find(|s| s.name().eq_ignore_ascii_case(name))
}

fn filter_of(query: VmQuery) -> ApiResult<VmFilter> {
    let blank = |v: Option<String>| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    let state = match blank(query.state) {
        None => None,
        Some(s) => Some(parse_state(&s).ok_or_else(|| {
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
        .map(|vm| views::vm_summary(snapshot, vm, &busy))
        .collect();
    serde_json::to_vec(&json!({ "total": list.len(), "vms": list }))
        .map(bytes::Bytes::from)
        .map_err(|e| ApiError::internal(format!("cannot serialise the VM list: {e}")))
}

/// `GET /api/v1/vms`. The unfiltered answer is serialised and compressed once per inventory
/// change (one request rebuilds it; concurrent ones wait for that result), carries an `ETag`,
/// and is sent gzip-encoded to clients that accept it.
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
pub async fn vm(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<views::VmDetail>> {
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
    Ok(Json(views::vm_detail(&snapshot, vm, &busy)))
}
