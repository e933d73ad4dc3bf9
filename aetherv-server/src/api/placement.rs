//! Placement: which hosts can take a VM of a given size, ranked, with the figures behind the
//! ranking and each refusal. One evaluation serves provisioning's `target_cluster`
//! ([`super::vms`]), `POST /api/v1/placement`, the candidates of a migration, and a host drain:
//! members from the configuration and the inventory (`cluster_members` or every managed
//! host), candidates from the inventory snapshot, the caller's own refusals, then
//! [`aetherv_inventory::placement::rank`]. Hosts that are not connected or are in maintenance
//! never rank.

use aetherv_hyperv::ops::HostFacts;
use aetherv_inventory::placement::{Candidate, Demand, Ranking, candidates, rank};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::vms::parse_json_body;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::state::AppState;

/// The member hosts of `cluster`: the configuration's hosts of that cluster and the hosts
/// whose facts name it (configured names first). An unknown cluster is a 404 naming `field`
/// and listing the known clusters.
///
/// # Errors
///
/// [`ApiError`] 404 for an unknown cluster.
pub(crate) fn cluster_members(
    state: &AppState,
    cluster: &str,
    field: &str,
) -> ApiResult<Vec<String>> {
    let snapshot = state.inventory.snapshot();
    let mut members: Vec<String> = state
        .clusters
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case(cluster))
        .flat_map(|(_, hosts)| hosts.iter().cloned())
        .collect();
    for host in snapshot.hosts() {
        if host
            .cluster()
            .is_some_and(|c| c.eq_ignore_ascii_case(cluster))
            && !members.iter().any(|m| m.eq_ignore_ascii_case(&host.name))
        {
            members.push(host.name.to_string());
        }
    }
    if members.is_empty() {
        let mut known: Vec<String> = state.clusters.keys().cloned().collect();
        for c in snapshot.clusters() {
            if !known.iter().any(|k| k.eq_ignore_ascii_case(&c.name)) {
                known.push(c.name.clone());
            }
        }
        known.sort();
        return Err(ApiError::not_found("cluster", cluster)
            .with_field(field)
            .with_message_suffix(&format!(
                "; known clusters: {}",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            )));
    }
    Ok(members)
}

/// Every host this server manages.
pub(crate) fn all_hosts(state: &AppState) -> Vec<String> {
    state.jobs.hosts().keys().cloned().collect()
}

/// Judges `members` for `demand`: candidates from the current inventory, `unfit` adds the
/// caller's own reason against a host (given its facts), then the one ranking.
pub(crate) fn evaluate(
    state: &AppState,
    members: &[String],
    demand: &Demand,
    unfit: impl Fn(&str, Option<&HostFacts>) -> Option<String>,
) -> (Vec<Candidate>, Ranking) {
    let snapshot = state.inventory.snapshot();
    let mut found = candidates(&snapshot, members.iter().map(String::as_str), demand);
    for candidate in &mut found {
        let facts = snapshot
            .host(&candidate.host)
            .and_then(|h| h.facts.as_deref());
        if let Some(reason) = unfit(&candidate.host, facts) {
            candidate.unfit = Some(reason);
        }
    }
    let ranking = rank(&found, demand);
    (found, ranking)
}

/// The body of `POST /api/v1/placement`: a VM's size.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PlacementRequest)]
pub struct PlacementBody {
    /// The VM's memory in bytes (startup memory, or what a running VM holds).
    pub memory_bytes: u64,
    /// Bytes its disk takes on the host's storage, when it needs room there.
    #[serde(default)]
    pub disk_bytes: Option<u64>,
    /// A golden image the host must have.
    #[serde(default)]
    pub image: Option<String>,
    /// Only the members of this cluster; every managed host otherwise.
    #[serde(default)]
    pub cluster: Option<String>,
    /// Hosts to leave out (e.g. the host a VM moves away from).
    #[serde(default)]
    pub exclude: Vec<String>,
}

/// One host that can take the VM.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = PlacementCandidate)]
pub struct CandidateView {
    /// The host.
    pub host: String,
    /// Its place, from 1 (the choice).
    pub rank: usize,
    /// Memory available for VMs now.
    pub memory_available_bytes: u64,
    /// Memory left once the VM is there (the ranking key).
    pub memory_after_bytes: u64,
    /// Free bytes of its roomiest storage location, when known.
    pub storage_free_bytes: Option<u64>,
}

/// One host that cannot take the VM.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = PlacementRefusal)]
pub struct RefusalView {
    /// The host.
    pub host: String,
    /// Why, as a code: `not_connected`, `in_maintenance`, `no_facts`, `no_image`, `memory`,
    /// `storage`, `unfit`.
    pub reason: String,
    /// Why, in words (with the figure: memory available, free storage).
    pub message: String,
}

/// The answer of `POST /api/v1/placement`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Placement)]
pub struct PlacementView {
    /// The cluster asked for.
    pub cluster: Option<String>,
    /// The memory asked for.
    pub memory_bytes: u64,
    /// The storage asked for.
    pub disk_bytes: Option<u64>,
    /// The image asked for.
    pub image: Option<String>,
    /// The best host, when one can take the VM.
    pub chosen: Option<String>,
    /// The hosts that can take it, best first.
    pub candidates: Vec<CandidateView>,
    /// The hosts that cannot, in host name order.
    pub refused: Vec<RefusalView>,
}

impl PlacementView {
    /// The view of a ranking for `body`.
    pub(crate) fn of(body: &PlacementBody, ranking: &Ranking) -> Self {
        Self {
            cluster: body.cluster.clone(),
            memory_bytes: body.memory_bytes,
            disk_bytes: body.disk_bytes,
            image: body.image.clone(),
            chosen: ranking.ranked.first().map(|r| r.host.clone()),
            candidates: ranking
                .ranked
                .iter()
                .enumerate()
                .map(|(i, r)| CandidateView {
                    host: r.host.clone(),
                    rank: i + 1,
                    memory_available_bytes: r.memory_available_bytes,
                    memory_after_bytes: r.memory_after_bytes,
                    storage_free_bytes: r.storage_free_bytes,
                })
                .collect(),
            refused: ranking
                .refused
                .iter()
                .map(|(host, why)| RefusalView {
                    host: host.clone(),
                    reason: why.code().to_owned(),
                    message: why.to_string(),
                })
                .collect(),
        }
    }
}

const MIB: u64 = 1 << 20;
/// Hyper-V's largest VM memory (12 TiB).
const MAX_MEMORY: u64 = 12 << 40;
/// Hyper-V's largest VHDX (64 TiB).
const MAX_DISK: u64 = 64 << 40;

/// Ranks the hosts for `body` (the handler's work, also called by the MCP tool).
///
/// # Errors
///
/// 422 naming the field for a size outside Hyper-V's limits; 404 for an unknown cluster.
pub(crate) fn place(state: &AppState, body: &PlacementBody) -> ApiResult<PlacementView> {
    if !(32 * MIB..=MAX_MEMORY).contains(&body.memory_bytes) {
        return Err(ApiError::invalid(
            "memory_bytes",
            format!(
                "{} bytes is outside Hyper-V's 32 MiB to 12 TiB",
                body.memory_bytes
            ),
        ));
    }
    if let Some(disk) = body.disk_bytes
        && disk > MAX_DISK
    {
        return Err(ApiError::invalid(
            "disk_bytes",
            format!("{disk} bytes is over the 64 TiB of the largest VHDX"),
        ));
    }
    if let Some(image) = &body.image
        && (image.trim().is_empty() || image.len() > 256)
    {
        return Err(ApiError::invalid(
            "image",
            "the image name must be 1-256 characters",
        ));
    }
    if body.exclude.len() > 1000 {
        return Err(ApiError::invalid("exclude", "at most 1000 hosts"));
    }
    let members = match &body.cluster {
        Some(cluster) => cluster_members(state, cluster, "cluster")?,
        None => all_hosts(state),
    };
    let demand = Demand {
        memory_bytes: body.memory_bytes,
        disk_bytes: body.disk_bytes,
        image: body.image.clone(),
    };
    let (_, ranking) = evaluate(state, &members, &demand, |host, _| {
        body.exclude
            .iter()
            .any(|e| e.eq_ignore_ascii_case(host))
            .then(|| "excluded by the request".to_owned())
    });
    Ok(PlacementView::of(body, &ranking))
}

/// `POST /api/v1/placement`.
#[utoipa::path(post, path = "/api/v1/placement", tag = "placement",
    operation_id = "placement", summary = "Rank the hosts for a VM",
    description = "Ranks the hosts (every managed host, or the members of `cluster`) that can \
        take a VM of this size: connected, not in maintenance, with the image, the memory and \
        the storage. Candidates come best first (most memory available; ties by name) with the \
        figures behind their place; every other host is listed with its refusal. Provisioning \
        with `target_cluster`, a migration's candidates and a host drain use the same ranking. \
        Changes nothing (reader role).",
    request_body(content = PlacementBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The ranking", body = PlacementView),
        (status = 400, description = "`malformed_body`: the body is not JSON", body = ErrorBody),
        (status = 404, description = "`not_found`: unknown cluster (`field`: `cluster`)",
            body = ErrorBody),
        (status = 422, description = "`invalid_field`: a size outside Hyper-V's limits, an \
            unknown field", body = ErrorBody),
    ))]
pub async fn placement(
    State(state): State<AppState>,
    body: Bytes,
) -> ApiResult<Json<PlacementView>> {
    let body: PlacementBody = parse_json_body(&body)?;
    Ok(Json(place(&state, &body)?))
}
