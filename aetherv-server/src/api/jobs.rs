//! Job routes: list, detail, live logs (SSE), cancel.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;

use super::views::{AcceptedView, JobListView, JobLogsView, JobStatusEventView};
use crate::error::{ApiError, ApiResult, ErrorBody, ErrorCode};
use crate::jobs::{CancelError, FollowItem, JobFilter, JobStatus, JobType, JobView};
use crate::state::AppState;

/// Query of `GET /api/v1/jobs`: every parameter is optional, they combine with AND, and an
/// empty value is the same as leaving the parameter out. Unknown parameters are refused.
#[derive(Debug, Default, Deserialize, IntoParams, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only jobs with this status; empty means any.
    #[param(value_type = Option<JobStatus>)]
    pub status: Option<String>,
    /// Only jobs of this type; empty means any.
    #[serde(rename = "type")]
    #[param(rename = "type", value_type = Option<JobType>)]
    pub job_type: Option<String>,
    /// Only jobs on this host (case-insensitive); empty means any.
    pub host: Option<String>,
    /// Only jobs on this VM; empty means any.
    #[param(value_type = Option<String>, format = Uuid)]
    pub vm_id: Option<String>,
    /// Only jobs this caller asked for (the caller's subject or name, case-insensitive;
    /// `demo` without authentication); empty means anyone.
    pub requested_by: Option<String>,
    /// Jobs per page, 1 to 1000 (default 100), or `all` for every matching job.
    #[param(value_type = Option<String>, example = "100", pattern = "^([0-9]+|all)$")]
    #[schemars(with = "Option<String>")]
    pub limit: Option<String>,
    /// The `next_cursor` of the previous page (same filters).
    pub cursor: Option<String>,
}

/// Largest page of jobs.
pub const MAX_JOB_LIMIT: usize = 1000;
/// Page of jobs when none is asked for.
pub const DEFAULT_JOB_LIMIT: usize = 100;

/// Where a page of jobs ends: the submission sequence of its last job, and the filters.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct JobCursor {
    #[serde(rename = "v")]
    version: u8,
    #[serde(rename = "f")]
    filters: String,
    #[serde(rename = "b")]
    before: u64,
}

fn job_filter_text(filter: &JobFilter) -> String {
    format!(
        "{:?}|{:?}|{}|{:?}|{}",
        filter.status.map(JobStatus::as_str),
        filter.job_type,
        filter.host.as_deref().unwrap_or_default().to_lowercase(),
        filter.vm_id,
        filter
            .requested_by
            .as_deref()
            .unwrap_or_default()
            .to_lowercase(),
    )
}

fn encode_cursor(filter: &JobFilter, before: u64) -> String {
    use base64::Engine as _;
    let cursor = JobCursor {
        version: 1,
        filters: sha_text(&job_filter_text(filter)),
        before,
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&cursor).unwrap_or_default())
}

/// A short stable digest of the filters (the cursor carries no query text).
fn sha_text(text: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(text.as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn decode_cursor(text: &str, filter: &JobFilter) -> ApiResult<u64> {
    use base64::Engine as _;
    let bad = |message: &str| ApiError::bad_query("cursor", message.to_owned());
    let not_ours =
        "not a cursor of the job list; pass the next_cursor of the previous page unchanged";
    if text.len() > 1024 {
        return Err(bad(not_ours));
    }
    let cursor: JobCursor = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim())
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .filter(|c: &JobCursor| c.version == 1)
        .ok_or_else(|| bad(not_ours))?;
    if cursor.filters != sha_text(&job_filter_text(filter)) {
        return Err(bad(
            "the cursor belongs to a walk with other filters; repeat the filters of the request that returned it",
        ));
    }
    Ok(cursor.before)
}

/// `GET /api/v1/jobs`.
#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", operation_id = "listJobs",
    summary = "List jobs",
    description = "One page of the jobs in the history, newest first (an empty query value is \
        the same as leaving the parameter out). `next_cursor` fetches the next page; a cursor \
        stays valid while jobs are added or leave the history.",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of jobs, newest first", body = JobListView),
        (status = 400, description = "`bad_query`: a query parameter is unusable or unknown \
            (`field` names it)", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<JobListView>> {
    let Query(query) = query.map_err(|e| ApiError::bad_query("query", e.body_text()))?;
    let status = match query.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(JobStatus::parse(s).ok_or_else(|| {
            ApiError::bad_query(
                "status",
                format!(
                    "unknown status {s:?}; use queued, running, succeeded, failed or cancelled"
                ),
            )
        })?),
    };
    let job_type = match query.job_type.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(JobType::parse(s).ok_or_else(|| {
            ApiError::bad_query(
                "type",
                format!(
                    "unknown job type {s:?}; use provision, delete, power, adopt, edit, disk, \
                     checkpoint, network_adapter, drain, resume or maintenance_run"
                ),
            )
        })?),
    };
    let vm_id = match query.vm_id.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(
            s.parse()
                .map_err(|_| ApiError::bad_query("vm_id", format!("{s:?} is not a VM id")))?,
        ),
    };
    let limit = match query
        .limit
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        None => Some(DEFAULT_JOB_LIMIT),
        Some(s) if s.eq_ignore_ascii_case("all") => None,
        Some(s) => Some(
            s.parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_JOB_LIMIT).contains(n))
                .ok_or_else(|| {
                    ApiError::bad_query(
                        "limit",
                        format!("{s:?} is not a page size; use 1 to {MAX_JOB_LIMIT} or all"),
                    )
                })?,
        ),
    };
    let filter = JobFilter {
        status,
        job_type,
        host: query.host.filter(|h| !h.is_empty()),
        vm_id,
        requested_by: query
            .requested_by
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty()),
        limit: None,
    };
    let before = query
        .cursor
        .as_deref()
        .filter(|c| !c.trim().is_empty())
        .map(|c| decode_cursor(c, &filter))
        .transpose()?;
    let page = state.jobs.page(&filter, before, limit);
    Ok(Json(JobListView {
        next_cursor: page.next.map(|n| encode_cursor(&filter, n)),
        jobs: page.jobs,
        total: page.total,
    }))
}

/// `GET /api/v1/jobs/{id}`.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs", operation_id = "getJob",
    summary = "One job", description = "The job with its steps, error, cleanup and result.",
    params(("id" = String, Path, description = "Job id")),
    responses(
        (status = 200, description = "The job", body = JobView),
        (status = 404, description = "`not_found`: unknown job", body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<JobView>> {
    state
        .jobs
        .get(&id)
        .map(Json)
        .ok_or_else(|| ApiError::not_found("job", &id))
}

/// Query of the logs route.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// `false` (or `0`) answers the lines so far as JSON instead of a stream; empty means true.
    #[param(value_type = Option<bool>, default = true)]
    follow: Option<String>,
}

/// `GET /api/v1/jobs/{id}/logs`: SSE until the job ends, or JSON with `?follow=false`.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/logs", tag = "jobs", operation_id = "jobLogs",
    summary = "Job log",
    description = "Server-Sent Events: every line so far, then live ones, until the job ends. \
        Events: `log` (a LogLine), `status` whenever the status changes (JobStatusEvent), `end` \
        last (the final Job). With `follow=false` a JSON document of the lines so far instead.",
    params(("id" = String, Path, description = "Job id"), LogsQuery),
    responses(
        (status = 200, description = "The log as a stream (default) or as JSON (`follow=false`)",
            content(
                (String = "text/event-stream"),
                (JobLogsView = "application/json"),
            )),
        (status = 400, description = "`bad_query`: `follow` is not a boolean, or an unknown \
            parameter", body = ErrorBody),
        (status = 404, description = "`not_found`: unknown job", body = ErrorBody),
    ))]
pub async fn logs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<LogsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(query) = query.map_err(|e| ApiError::bad_query("query", e.body_text()))?;
    let follow = match query.follow.as_deref() {
        None | Some("true" | "1" | "") => true,
        Some("false" | "0") => false,
        Some(other) => {
            return Err(ApiError::bad_query(
                "follow",
                format!("expected true or false, got {other:?}"),
            ));
        }
    };
    if !follow {
        let (lines, status) = state
            .jobs
            .lines(&id)
            .ok_or_else(|| ApiError::not_found("job", &id))?;
        return Ok(Json(JobLogsView { lines, status }).into_response());
    }
    let follower = state
        .jobs
        .follow(&id)
        .ok_or_else(|| ApiError::not_found("job", &id))?;
    Ok(Sse::new(log_stream(follower, state.jobs.stopping()))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

fn log_stream(
    follower: crate::jobs::Follower,
    stopping: tokio_util::sync::CancellationToken,
) -> impl Stream<Item = Result<Event, Infallible>> + Send {
    let start = (follower, Vec::<Event>::new(), false);
    let stream = futures::stream::unfold(start, |(mut follower, mut pending, done)| async move {
        loop {
            if let Some(event) = pending.pop() {
                return Some((Ok(event), (follower, pending, done)));
            }
            if done {
                return None;
            }
            match follower.next().await {
                None => return None,
                Some(FollowItem::Lines {
                    lines,
                    status,
                    percent,
                    step,
                }) => {
                    // Reversed, because `pending` is popped from the end.
                    let change = JobStatusEventView {
                        status,
                        percent,
                        step,
                    };
                    pending.push(
                        Event::default()
                            .event("status")
                            .data(serde_json::to_string(&change).unwrap_or_default()),
                    );
                    for line in lines.iter().rev() {
                        pending.push(
                            Event::default()
                                .event("log")
                                .id(line.seq.to_string())
                                .data(serde_json::to_string(line).unwrap_or_default()),
                        );
                    }
                }
                Some(FollowItem::End(view)) => {
                    pending.push(
                        Event::default()
                            .event("end")
                            .data(serde_json::to_string(&view).unwrap_or_default()),
                    );
                    return pending
                        .pop()
                        .map(|event| (Ok(event), (follower, pending, true)));
                }
            }
        }
    });
    // The server is shutting down: end the stream so it does not hold the exit.
    futures::StreamExt::take_until(stream, stopping.cancelled_owned())
}

/// `POST /api/v1/jobs/{id}/cancel`.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/cancel", tag = "jobs", operation_id = "cancelJob",
    summary = "Cancel a job",
    description = "Requests cancellation; queued jobs are cancelled at once, running ones at \
        their next step boundary.",
    params(("id" = String, Path, description = "Job id")),
    responses(
        (status = 202, description = "Cancellation requested", body = AcceptedView),
        (status = 404, description = "`not_found`: unknown job", body = ErrorBody),
        (status = 409, description = "`job_finished`: the job has already finished",
            body = ErrorBody),
    ))]
pub async fn cancel(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    match state.jobs.cancel(&id) {
        Ok(view) => Ok((
            StatusCode::ACCEPTED,
            Json(AcceptedView {
                job_id: view.id,
                status: view.status,
                cancel_requested: Some(true),
            }),
        )
            .into_response()),
        Err(CancelError::NotFound(_)) => Err(ApiError::not_found("job", &id)),
        Err(e @ CancelError::Finished { .. }) => Err(ApiError::conflict(
            ErrorCode::JobFinished,
            format!("{e}; nothing to cancel"),
        )),
    }
}
