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
};
use super::vm_pages;
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
#[derive(Debug, Default, Deserialize, IntoParams, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct VmQuery {
    /// Only VMs on this host (case-insensitive); empty means any.
    pub host: Option<String>,
    /// Only VMs on hosts of this cluster (case-insensitive); empty means any.
    pub cluster: Option<String>,
    /// Only VMs in this Hyper-V state (case-insensitive); empty means any.
    #[param(value_type = Option<VmStateName>)]
    pub state: Option<String>,
    /// Case-insensitive substring of the name, id, notes or an IP address; empty means any.
    pub q: Option<String>,
    /// VMs per page, 1 to 1000 (default 100), or `all` for every matching VM in one answer.
    #[param(value_type = Option<String>, example = "100", pattern = "^([0-9]+|all)$")]
    pub limit: Option<String>,
    /// The `next_cursor` of the previous page (same `sort` and filters).
    pub cursor: Option<String>,
    /// Sort column, `-` in front for descending: `name` (default), `state`, `host`,
    /// `cluster`, `processor_count`, `memory_startup_bytes`, `memory_assigned_bytes`,
    /// `uptime_seconds`, `ip_addresses`, `id`. Text sorts naturally (`app-2` before
    /// `app-10`), ignoring case; ties go by name, then id.
    pub sort: Option<String>,
    /// Comma-separated VM fields to return (`id` always comes too); empty means all.
    pub fields: Option<String>,
}

fn blank(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

fn filter_of(query: &VmQuery) -> ApiResult<VmFilter> {
    let state = match blank(query.state.clone()) {
        None => None,
        Some(s) => Some(VmStateName::parse(&s).map(VmStateName::state).ok_or_else(|| {
            ApiError::bad_query(
                "state",
                format!("unknown VM state {s:?}; use a Hyper-V state name such as Running, Off, Saved or Paused"),
            )
        })?),
    };
    Ok(VmFilter {
        host: blank(query.host.clone()),
        cluster: blank(query.cluster.clone()),
        state,
        q: blank(query.q.clone()).map(|q| q.to_ascii_lowercase()),
    })
}

/// The fields of a VM summary that `fields` may name.
pub const VM_FIELDS: [&str; 14] = [
    "id",
    "name",
    "host",
    "cluster",
    "state",
    "stale",
    "processor_count",
    "memory_startup_bytes",
    "memory_assigned_bytes",
    "uptime_seconds",
    "ip_addresses",
    "clustered",
    "busy_job",
    "orphaned",
];

/// A parsed `GET /api/v1/vms` request.
#[derive(Debug)]
struct ListRequest {
    filter: VmFilter,
    sort: vm_pages::Sort,
    /// `None`: every VM (`limit=all`).
    limit: Option<usize>,
    cursor: Option<String>,
    /// `None`: every field.
    fields: Option<Vec<&'static str>>,
}

impl ListRequest {
    fn of(query: VmQuery) -> ApiResult<Self> {
        let filter = filter_of(&query)?;
        let sort = match blank(query.sort) {
            None => vm_pages::Sort::default(),
            Some(s) => vm_pages::Sort::parse(&s)?,
        };
        let limit = match blank(query.limit) {
            None => Some(vm_pages::DEFAULT_LIMIT),
            Some(s) if s.eq_ignore_ascii_case("all") => None,
            Some(s) => Some(
                s.parse::<usize>()
                    .ok()
                    .filter(|n| (1..=vm_pages::MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_query(
                            "limit",
                            format!(
                                "{s:?} is not a page size; use 1 to {} or all",
                                vm_pages::MAX_LIMIT
                            ),
                        )
                    })?,
            ),
        };
        let fields = match blank(query.fields) {
            None => None,
            Some(list) => {
                let mut chosen = vec!["id"];
                for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    let field = VM_FIELDS.iter().find(|f| **f == name).ok_or_else(|| {
                        ApiError::bad_query(
                            "fields",
                            format!(
                                "unknown VM field {name:?}; use any of {}",
                                VM_FIELDS.join(", ")
                            ),
                        )
                    })?;
                    if !chosen.contains(field) {
                        chosen.push(field);
                    }
                }
                Some(chosen)
            }
        };
        Ok(Self {
            filter,
            sort,
            limit,
            cursor: blank(query.cursor),
            fields,
        })
    }

    /// The form whose answer is cached: every VM, default order and fields.
    fn is_whole_list(&self) -> bool {
        self.limit.is_none()
            && self.filter.is_empty()
            && self.sort == vm_pages::Sort::default()
            && self.cursor.is_none()
            && self.fields.is_none()
    }
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

/// The JSON answer for `request` from `snapshot`.
fn serialise(
    state: &AppState,
    snapshot: &Snapshot,
    request: &ListRequest,
) -> ApiResult<bytes::Bytes> {
    let cursor = request
        .cursor
        .as_deref()
        .map(|c| vm_pages::Cursor::decode(c, request.sort, &request.filter))
        .transpose()?;
    let page = vm_pages::page(
        &state.vm_list_cache.views,
        snapshot,
        &request.filter,
        request.sort,
        cursor.as_ref(),
        request.limit,
    );
    let busy = state.jobs.busy_vms();
    let summaries = page
        .vms
        .iter()
        .map(|(host, vm)| views::vm_summary_on(Some(host), vm, &busy, &state.jobs));
    let failed =
        |e: serde_json::Error| ApiError::internal(format!("cannot serialise the VM list: {e}"));
    // About 320 bytes per summary: one allocation instead of a doubling series of copies.
    let mut body = Vec::with_capacity(page.vms.len().saturating_mul(384).saturating_add(256));
    let written = match &request.fields {
        None => serde_json::to_writer(
            &mut body,
            &VmListView {
                vms: summaries.collect(),
                next_cursor: page.next_cursor,
                total: page.total,
                generation: snapshot.generation(),
            },
        ),
        Some(fields) => {
            let vms: Vec<serde_json::Map<String, serde_json::Value>> = summaries
                .map(|summary| match serde_json::to_value(summary) {
                    Ok(serde_json::Value::Object(mut all)) => {
                        all.retain(|k, _| fields.contains(&k.as_str()));
                        Ok(all)
                    }
                    Ok(_) => Ok(serde_json::Map::new()),
                    Err(e) => Err(e),
                })
                .collect::<Result<_, _>>()
                .map_err(failed)?;
            serde_json::to_writer(
                &mut body,
                &serde_json::json!({
                    "vms": vms,
                    "next_cursor": page.next_cursor,
                    "total": page.total,
                    "generation": snapshot.generation(),
                }),
            )
        }
    };
    written.map(|()| bytes::Bytes::from(body)).map_err(failed)
}

/// `GET /api/v1/vms`: one page of VMs. Sorted views are kept per VM-set generation, so a page
/// costs a binary search and its rows. The whole list (`limit=all` without filters, sort or
/// fields) is serialised and compressed once per inventory change (one request rebuilds it;
/// concurrent ones wait for that result), carries an `ETag`, and is sent gzip-encoded to
/// clients that accept it.
#[utoipa::path(get, path = "/api/v1/vms", tag = "inventory", operation_id = "listVms",
    summary = "List VMs",
    description = "One page of the VMs of every host, filtered by the query parameters (all \
        optional, combined with AND; an empty value is the same as leaving the parameter out), \
        in the order of `sort`. `next_cursor` fetches the next page: cursors stay valid while \
        the inventory changes (the next page starts after the previous page's last VM in the \
        current order), so a walk sees every VM that exists throughout it exactly once. \
        `limit=all` returns every matching VM; without filters, sort and fields that answer \
        carries an `ETag` (send `If-None-Match` for a 304) and is gzip-encoded for clients \
        that accept it.",
    params(VmQuery),
    responses(
        (status = 200, description = "A page of the matching VMs", body = VmListView),
        (status = 304, description = "The whole list has not changed since the `ETag` sent"),
        (status = 400, description = "`bad_query`: a query parameter is unusable or unknown \
            (`field` names it: `limit`, `cursor`, `sort`, `fields`, `state` or `query`)",
            body = ErrorBody),
    ))]
pub async fn vms(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<VmQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(query) = query.map_err(|e| ApiError::bad_query("query", e.body_text()))?;
    let request = ListRequest::of(query)?;
    if !request.is_whole_list() {
        let snapshot = state.inventory.snapshot();
        return Ok(json_bytes(serialise(&state, &snapshot, &request)?));
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
    let body = serialise(&state, &snapshot, &request)?;
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

/// How long `POST /api/v1/inventory/refresh` waits for every host before answering 202 (the
/// refreshes go on): as long as one host's refresh may take.
pub const REFRESH_ALL_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// The outcome of refreshing every host.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct FleetRefreshView {
    /// Hosts refreshed (every configured host).
    pub hosts: usize,
    /// Hosts that answered.
    pub connected: usize,
    /// Hosts that did not answer (or, with 202, have not yet), with the reason from their
    /// record.
    pub failed: Vec<HostFailureView>,
    /// How long the whole refresh took, in milliseconds.
    pub took_ms: u64,
    /// Whether every host has answered or failed (`false` with 202: the wait ended first and
    /// the refreshes go on).
    pub complete: bool,
}

/// A host whose refresh failed.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct HostFailureView {
    /// Host name.
    pub host: String,
    /// Why (the host's `last_error`; null while its refresh still runs).
    pub error: Option<String>,
}

/// `POST /api/v1/inventory/refresh`.
#[utoipa::path(post, path = "/api/v1/inventory/refresh", tag = "inventory",
    operation_id = "refreshInventory",
    summary = "Refresh every host now",
    description = "Refreshes every configured host now (as many at a time as \
        `INVENTORY_REFRESH_CONCURRENCY` allows; an unchanged host answers with its digest \
        alone) and answers once all have answered or failed: how many answered, which did not \
        and why, and how long it took. After 120 s it answers 202 with the hosts known so far; \
        the refreshes go on. Needs the writer role.",
    responses(
        (status = 200, description = "Every host refreshed (successfully or not; see `failed`)",
            body = FleetRefreshView),
        (status = 202, description = "Still refreshing after 120 s: `failed` lists the hosts \
            not connected so far", body = FleetRefreshView),
        (status = 503, description = "`not_ready`: the inventory is shutting down", body = ErrorBody),
    ))]
pub async fn refresh_inventory(State(state): State<AppState>) -> ApiResult<Response> {
    let started = std::time::Instant::now();
    let outcome = tokio::time::timeout(REFRESH_ALL_WAIT, state.inventory.refresh_all()).await;
    let took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let snapshot = state.inventory.snapshot();
    // With every result in, the failed ones; after the wait, the hosts not connected so far.
    let (status, hosts, failed): (_, _, Vec<HostFailureView>) = match outcome {
        Ok(results) => {
            if results
                .iter()
                .any(|(_, r)| matches!(r, Err(aetherv_inventory::Error::ShutDown)))
            {
                return Err(ApiError::not_ready("the inventory is shutting down"));
            }
            let failed = results
                .iter()
                .filter(|(_, r)| r.is_err())
                .map(|(host, _)| HostFailureView {
                    host: host.clone(),
                    error: snapshot.host(host).and_then(|h| h.last_error.clone()),
                })
                .collect();
            (StatusCode::OK, results.len(), failed)
        }
        Err(_) => {
            let failed = snapshot
                .hosts()
                .filter(|h| !h.is_connected())
                .map(|h| HostFailureView {
                    host: h.name.to_string(),
                    error: h.last_error.clone(),
                })
                .collect();
            (StatusCode::ACCEPTED, snapshot.hosts().count(), failed)
        }
    };
    let view = FleetRefreshView {
        hosts,
        connected: hosts.saturating_sub(failed.len()),
        failed,
        took_ms,
        complete: status == StatusCode::OK,
    };
    Ok((status, Json(view)).into_response())
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
