//! Host maintenance routes: drain a host (`POST /api/v1/hosts/{hostname}/maintenance`),
//! bring it back (`.../resume`), and maintenance runs over several hosts
//! (`/api/v1/maintenance-runs`). Every check that can fail is made before a job is queued;
//! the jobs themselves are in `aetherv_jobs` (drain, resume, maintenance_run).

use aetherv_hyperv::ops::{HostMaintenance, HostState, VmId, effective_state};
use aetherv_inventory::Snapshot;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::vms::{accepted, ensure_ready, parse_json_body, submit_error};
use crate::error::{ApiError, ApiResult, ErrorBody, ErrorCode};
use crate::jobs::maintenance::{DrainRequest, Evacuate, ResumeRequest, RunRequest};
use crate::jobs::{JobFilter, JobType, JobView, JobWork, NewJob};
use crate::state::AppState;

/// The longest reason or ticket accepted.
pub const MAX_TEXT: usize = 1024;
/// The most live migrations one drain runs at once.
pub const MAX_PARALLEL: u32 = 16;

/// What a drain does with the host's running VMs.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Deserialize,
    Serialize,
    ToSchema,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum EvacuateMode {
    /// Live-migrate them to hosts placement chooses; a VM that cannot move stays and the
    /// drain ends `failed_drain`.
    #[default]
    Live,
    /// Live-migrate them, and shut down (guest shutdown) what cannot move.
    Shutdown,
    /// Move nothing: only mark the host, so placement sends it no new VMs.
    None,
}

impl From<EvacuateMode> for Evacuate {
    fn from(mode: EvacuateMode) -> Self {
        match mode {
            EvacuateMode::Live => Self::Live,
            EvacuateMode::Shutdown => Self::Shutdown,
            EvacuateMode::None => Self::None,
        }
    }
}

/// The body of `POST /api/v1/hosts/{hostname}/maintenance`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = MaintenanceRequest)]
pub struct MaintenanceBody {
    /// What to do with running VMs (default `live`).
    #[serde(default)]
    pub evacuate: EvacuateMode,
    /// Live migrations at once (1-16, default 2).
    #[serde(default)]
    pub max_parallel: Option<u32>,
    /// VM ids to leave alone.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Why (at most 1024 characters; kept on the host and in the job).
    #[serde(default)]
    pub reason: Option<String>,
    /// The change ticket (at most 1024 characters).
    #[serde(default)]
    pub ticket: Option<String>,
}

/// The body of `POST /api/v1/hosts/{hostname}/resume`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ResumeRequest)]
pub struct ResumeBody {
    /// Move each VM the drain moved back to this host (default false).
    #[serde(default)]
    pub failback: bool,
}

/// The body of `POST /api/v1/maintenance-runs`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = MaintenanceRunRequest)]
pub struct RunBody {
    /// The hosts, in order (at least one, each once).
    pub hosts: Vec<String>,
    /// Hosts of one cluster out of service at once (default 1). Never the last active host
    /// of a cluster, never below `MAINTENANCE_SPARE_MEMORY_GIB` available on the others.
    #[serde(default)]
    pub max_per_cluster: Option<u32>,
    /// How each host is drained (default `live`).
    #[serde(default)]
    pub evacuate: EvacuateMode,
    /// Live migrations at once per host (1-16, default 2).
    #[serde(default)]
    pub max_parallel: Option<u32>,
    /// Why.
    #[serde(default)]
    pub reason: Option<String>,
    /// The change ticket.
    #[serde(default)]
    pub ticket: Option<String>,
}

/// A host's maintenance as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = HostMaintenance)]
pub struct MaintenanceView {
    /// The host's state.
    #[schema(value_type = String, example = "maintenance")]
    pub state: String,
    /// Since when (RFC 3339).
    pub since: Option<String>,
    /// Why.
    pub reason: Option<String>,
    /// The change ticket.
    pub ticket: Option<String>,
    /// Who asked.
    pub requested_by: Option<String>,
    /// The job that set the state.
    pub job: Option<String>,
    /// The failover cluster node's state, where clustered.
    pub cluster_node_state: Option<String>,
    /// The Alertmanager silence of the window.
    pub silence_id: Option<String>,
    /// Per VM, where it went.
    pub vms: Vec<VmOriginView>,
}

/// Where one VM of a drained host went.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = VmOrigin)]
pub struct VmOriginView {
    /// The VM.
    #[schema(value_type = String, format = Uuid)]
    pub vm_id: VmId,
    /// Its name.
    pub vm_name: String,
    /// `migrated`, `moved_by_cluster`, `shut_down`, `left_behind`, `excluded` or
    /// `failed_back`.
    pub disposition: String,
    /// The host it went to.
    pub moved_to: Option<String>,
    /// Why it did not move.
    pub reason: Option<String>,
}

/// The maintenance view of `record` (the state file) and the node state.
pub fn maintenance_view(
    record: Option<&HostMaintenance>,
    node_state: Option<&str>,
) -> MaintenanceView {
    let state = effective_state(record, node_state);
    MaintenanceView {
        state: state.as_str().to_owned(),
        since: record.and_then(|r| r.since.clone()),
        reason: record.and_then(|r| r.reason.clone()),
        ticket: record.and_then(|r| r.ticket.clone()),
        requested_by: record.and_then(|r| r.requested_by.clone()),
        job: record.and_then(|r| r.job.clone()),
        cluster_node_state: node_state.map(str::to_owned),
        silence_id: record.and_then(|r| r.silence_id.clone()),
        vms: record
            .map(|r| {
                r.vms
                    .iter()
                    .map(|o| VmOriginView {
                        vm_id: o.vm_id,
                        vm_name: o.vm_name.clone(),
                        disposition: o.disposition.as_str().to_owned(),
                        moved_to: o.moved_to.clone(),
                        reason: o.reason.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// A maintenance run.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = MaintenanceRun)]
pub struct RunView {
    /// The run (its job id).
    #[schema(format = Uuid)]
    pub id: String,
    /// The run's job.
    pub job: JobView,
    /// Per host: status (`pending`, `draining`, `in_maintenance`, `done`, `failed`,
    /// `skipped`, `cancelled`), the drain job, what it waits for, and its log.
    pub hosts: Vec<serde_json::Value>,
}

/// The runs.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = MaintenanceRunList)]
pub struct RunListView {
    /// Newest first.
    pub runs: Vec<RunView>,
}

fn run_view(job: JobView) -> RunView {
    let hosts = job
        .result
        .as_ref()
        .and_then(|r| r.get("hosts"))
        .and_then(|h| h.as_array())
        .cloned()
        .unwrap_or_default();
    RunView {
        id: job.id.clone(),
        job,
        hosts,
    }
}

fn check_text(field: &str, text: Option<&String>) -> ApiResult<Option<String>> {
    let Some(text) = text.map(|t| t.trim()).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    if text.chars().count() > MAX_TEXT || text.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            field,
            format!("at most {MAX_TEXT} characters without control characters"),
        ));
    }
    Ok(Some(text.to_owned()))
}

fn check_parallel(value: Option<u32>) -> ApiResult<usize> {
    match value {
        None => Ok(2),
        Some(n) if (1..=MAX_PARALLEL).contains(&n) => Ok(n as usize),
        Some(n) => Err(ApiError::invalid(
            "max_parallel",
            format!("must be 1 to {MAX_PARALLEL}, got {n}"),
        )),
    }
}

/// The configured name of `name` (case-insensitive) and its state.
fn host_of(state: &AppState, snapshot: &Snapshot, name: &str) -> ApiResult<(String, HostState)> {
    let (configured, _) = state
        .jobs
        .host(name)
        .ok_or_else(|| ApiError::not_found("host", name))?;
    let host = snapshot
        .hosts()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .ok_or_else(|| ApiError::not_found("host", name))?;
    if !host.is_connected() {
        return Err(ApiError::conflict(
            ErrorCode::HostDisconnected,
            format!(
                "host {configured} is not connected{}",
                host.last_error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ),
        ));
    }
    let facts = host.facts.as_deref();
    let current = facts.map_or(HostState::Active, |f| {
        effective_state(f.maintenance.as_ref(), f.cluster_node_state.as_deref())
    });
    Ok((configured.to_owned(), current))
}

fn drain_request(
    evacuate: EvacuateMode,
    max_parallel: Option<u32>,
    exclude: &[String],
    reason: Option<String>,
    ticket: Option<String>,
) -> ApiResult<DrainRequest> {
    let exclude = exclude
        .iter()
        .map(|id| {
            id.trim()
                .parse::<VmId>()
                .map_err(|_| ApiError::invalid("exclude", format!("{id:?} is not a VM id")))
        })
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(DrainRequest {
        evacuate: evacuate.into(),
        max_parallel: check_parallel(max_parallel)?,
        exclude,
        reason,
        ticket,
    })
}

/// `POST /api/v1/hosts/{hostname}/maintenance`.
#[utoipa::path(post, path = "/api/v1/hosts/{hostname}/maintenance", tag = "maintenance",
    operation_id = "enterMaintenance", summary = "Drain a host into maintenance",
    description = "Queues a drain job: the host is marked `draining` (on the host itself), a \
        clustered host's node is paused with drain, each remaining running VM is live-migrated \
        to the host placement chooses (at most `max_parallel` at once), what cannot move is \
        shut down only with `evacuate: shutdown`. The job result records per VM where it \
        went; the host ends `maintenance`, or `failed_drain` naming the VMs left behind. An \
        Alertmanager silence and webhook events go out when configured.",
    params(("hostname" = String, Path, description = "Host name as configured (case-insensitive)")),
    request_body(content = MaintenanceBody, content_type = "application/json"),
    responses(
        (status = 202, description = "The drain was queued", body = super::views::AcceptedView,
            headers(("Location" = String, description = "The job's URL"))),
        (status = 400, description = "`malformed_body`: the body is not JSON", body = ErrorBody),
        (status = 404, description = "`not_found`: unknown host", body = ErrorBody),
        (status = 409, description = "`invalid_state`: the host is draining or resuming, or \
            another maintenance job holds it; `host_disconnected`", body = ErrorBody),
        (status = 422, description = "`invalid_field`: a field is unusable (named)",
            body = ErrorBody),
        (status = 503, description = "`not_ready`; `queue_full`", body = ErrorBody),
    ))]
pub async fn enter(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    ensure_ready(&state)?;
    let request: MaintenanceBody = if body.iter().all(u8::is_ascii_whitespace) {
        MaintenanceBody::default()
    } else {
        parse_json_body(&body)?
    };
    let reason = check_text("reason", request.reason.as_ref())?;
    let ticket = check_text("ticket", request.ticket.as_ref())?;
    let drain = drain_request(
        request.evacuate,
        request.max_parallel,
        &request.exclude,
        reason.clone(),
        ticket.clone(),
    )?;
    let snapshot = state.inventory.snapshot();
    let (host, current) = host_of(&state, &snapshot, &name)?;
    if matches!(current, HostState::Draining | HostState::Resuming) {
        return Err(ApiError::conflict(
            ErrorCode::InvalidState,
            format!("host {host} is {current}; wait for its job to end"),
        ));
    }
    let job = state
        .jobs
        .submit(NewJob {
            requested_by: crate::audit::caller().with_reason(reason.clone(), ticket.clone()),
            parameters: json!({
                "evacuate": request.evacuate,
                "max_parallel": drain.max_parallel,
                "exclude": drain.exclude,
                "reason": reason,
                "ticket": ticket,
            }),
            work: JobWork::Drain(drain),
            host,
            vm_id: None,
            vm_name: None,
        })
        .map_err(|e| submit_error(e, "hostname"))?;
    Ok(accepted(&job))
}

/// `POST /api/v1/hosts/{hostname}/resume`.
#[utoipa::path(post, path = "/api/v1/hosts/{hostname}/resume", tag = "maintenance",
    operation_id = "resumeHost", summary = "Bring a host back from maintenance",
    description = "Queues a resume job: the host's cluster node is resumed, with `failback` \
        each VM the drain moved goes back (their origins are kept on the host, so this works \
        after a server restart), VMs the drain shut down are started again, the host becomes \
        `active` and its Alertmanager silence is expired.",
    params(("hostname" = String, Path, description = "Host name as configured (case-insensitive)")),
    request_body(content = ResumeBody, content_type = "application/json"),
    responses(
        (status = 202, description = "The resume was queued", body = super::views::AcceptedView,
            headers(("Location" = String, description = "The job's URL"))),
        (status = 400, description = "`malformed_body`: the body is not JSON", body = ErrorBody),
        (status = 404, description = "`not_found`: unknown host", body = ErrorBody),
        (status = 409, description = "`invalid_state`: the host is active with nothing to \
            move back, or draining; `host_disconnected`", body = ErrorBody),
        (status = 422, description = "`invalid_field`: a field is unusable (named)",
            body = ErrorBody),
        (status = 503, description = "`not_ready`; `queue_full`", body = ErrorBody),
    ))]
pub async fn resume(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    ensure_ready(&state)?;
    let request: ResumeBody = if body.iter().all(u8::is_ascii_whitespace) {
        ResumeBody::default()
    } else {
        parse_json_body(&body)?
    };
    let snapshot = state.inventory.snapshot();
    let (host, current) = host_of(&state, &snapshot, &name)?;
    let pending_vms = snapshot
        .hosts()
        .find(|h| h.name.eq_ignore_ascii_case(&host))
        .and_then(|h| h.facts.as_ref())
        .and_then(|f| f.maintenance.as_ref())
        .is_some_and(|m| !m.vms.is_empty());
    if current == HostState::Draining {
        return Err(ApiError::conflict(
            ErrorCode::InvalidState,
            format!("host {host} is draining; cancel the drain or wait for it to end"),
        ));
    }
    if current == HostState::Active && !(request.failback && pending_vms) {
        return Err(ApiError::conflict(
            ErrorCode::InvalidState,
            format!("host {host} is active; there is nothing to resume"),
        ));
    }
    let job = state
        .jobs
        .submit(NewJob {
            requested_by: crate::audit::caller(),
            parameters: json!({ "failback": request.failback }),
            work: JobWork::Resume(ResumeRequest {
                failback: request.failback,
            }),
            host,
            vm_id: None,
            vm_name: None,
        })
        .map_err(|e| submit_error(e, "hostname"))?;
    Ok(accepted(&job))
}

/// `POST /api/v1/maintenance-runs`.
#[utoipa::path(post, path = "/api/v1/maintenance-runs", tag = "maintenance",
    operation_id = "startMaintenanceRun", summary = "Take several hosts through maintenance",
    description = "Queues a maintenance run: the hosts are drained in order, at most \
        `max_per_cluster` of a cluster out of service at once (hosts already out count), never \
        the last active host of a cluster and never below the configured spare memory on the \
        cluster's other active hosts. A drained host stays in maintenance until it is resumed, \
        which frees its place for the next. Each host's log is kept with the run; cancelling \
        the run cancels its drains.",
    request_body(content = RunBody, content_type = "application/json"),
    responses(
        (status = 202, description = "The run was queued", body = super::views::AcceptedView,
            headers(("Location" = String, description = "The job's URL"))),
        (status = 400, description = "`malformed_body`: the body is not JSON", body = ErrorBody),
        (status = 404, description = "`not_found`: an unknown host", body = ErrorBody),
        (status = 422, description = "`invalid_field`: a field is unusable (named)",
            body = ErrorBody),
        (status = 503, description = "`not_ready`; `queue_full`", body = ErrorBody),
    ))]
pub async fn start_run(State(state): State<AppState>, body: Bytes) -> ApiResult<Response> {
    ensure_ready(&state)?;
    let request: RunBody = parse_json_body(&body)?;
    if request.hosts.is_empty() {
        return Err(ApiError::invalid("hosts", "name at least one host"));
    }
    if request.hosts.len() > 1000 {
        return Err(ApiError::invalid("hosts", "at most 1000 hosts"));
    }
    let mut hosts: Vec<String> = Vec::new();
    for name in &request.hosts {
        let (configured, _) = state
            .jobs
            .host(name)
            .ok_or_else(|| ApiError::not_found("host", name).with_field("hosts"))?;
        if hosts.iter().any(|h| h.eq_ignore_ascii_case(configured)) {
            return Err(ApiError::invalid(
                "hosts",
                format!("host {configured} is named twice"),
            ));
        }
        hosts.push(configured.to_owned());
    }
    let max_per_cluster = match request.max_per_cluster {
        None => 1,
        Some(n) if n >= 1 => n as usize,
        Some(_) => return Err(ApiError::invalid("max_per_cluster", "must be at least 1")),
    };
    let reason = check_text("reason", request.reason.as_ref())?;
    let ticket = check_text("ticket", request.ticket.as_ref())?;
    let drain = drain_request(
        request.evacuate,
        request.max_parallel,
        &[],
        reason.clone(),
        ticket.clone(),
    )?;
    let spare = state.maintenance.spare_memory_bytes;
    let first = hosts[0].clone();
    let job = state
        .jobs
        .submit(NewJob {
            requested_by: crate::audit::caller().with_reason(reason.clone(), ticket.clone()),
            parameters: json!({
                "hosts": hosts,
                "max_per_cluster": max_per_cluster,
                "evacuate": request.evacuate,
                "max_parallel": drain.max_parallel,
                "spare_memory_bytes": spare,
                "reason": reason,
                "ticket": ticket,
            }),
            work: JobWork::MaintenanceRun(RunRequest {
                hosts,
                max_per_cluster,
                spare_memory_bytes: spare,
                drain,
            }),
            host: first,
            vm_id: None,
            vm_name: None,
        })
        .map_err(|e| submit_error(e, "hosts"))?;
    Ok(accepted(&job))
}

/// `GET /api/v1/maintenance-runs`.
#[utoipa::path(get, path = "/api/v1/maintenance-runs", tag = "maintenance",
    operation_id = "listMaintenanceRuns", summary = "List maintenance runs",
    description = "The runs in the job history, newest first, each with its hosts and their logs.",
    responses((status = 200, description = "Runs", body = RunListView)))]
pub async fn list_runs(State(state): State<AppState>) -> Json<RunListView> {
    let runs = state
        .jobs
        .list(&JobFilter {
            job_type: Some(JobType::MaintenanceRun),
            ..JobFilter::default()
        })
        .into_iter()
        .map(run_view)
        .collect();
    Json(RunListView { runs })
}

/// `GET /api/v1/maintenance-runs/{id}`.
#[utoipa::path(get, path = "/api/v1/maintenance-runs/{id}", tag = "maintenance",
    operation_id = "getMaintenanceRun", summary = "One maintenance run",
    params(("id" = String, Path, description = "The run's id")),
    responses(
        (status = 200, description = "The run", body = RunView),
        (status = 404, description = "`not_found`: unknown run", body = ErrorBody),
    ))]
pub async fn get_run(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<RunView>> {
    state
        .jobs
        .get(&id)
        .filter(|j| j.job_type == JobType::MaintenanceRun)
        .map(|j| Json(run_view(j)))
        .ok_or_else(|| ApiError::not_found("maintenance run", &id))
}

/// `POST /api/v1/maintenance-runs/{id}/cancel`.
#[utoipa::path(post, path = "/api/v1/maintenance-runs/{id}/cancel", tag = "maintenance",
    operation_id = "cancelMaintenanceRun", summary = "Cancel a maintenance run",
    description = "Stops the run: no further host is drained and the drains running are \
        cancelled (their VMs stay where they are, each host ends `failed_drain` naming them). \
        Hosts already in maintenance stay there until resumed.",
    params(("id" = String, Path, description = "The run's id")),
    responses(
        (status = 202, description = "Cancellation requested", body = super::views::AcceptedView),
        (status = 404, description = "`not_found`: unknown run", body = ErrorBody),
        (status = 409, description = "`job_finished`: the run has ended", body = ErrorBody),
    ))]
pub async fn cancel_run(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    if state
        .jobs
        .get(&id)
        .is_none_or(|j| j.job_type != JobType::MaintenanceRun)
    {
        return Err(ApiError::not_found("maintenance run", &id));
    }
    super::jobs::cancel(State(state), Path(id)).await
}
