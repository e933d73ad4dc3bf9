//! Job routes: list, detail, live logs (SSE), cancel.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::Deserialize;
use serde_json::json;

use crate::error::{ApiError, ApiResult};
use crate::jobs::{CancelError, FollowItem, JobFilter, JobStatus, JobType, JobView};
use crate::state::AppState;

/// Query of `GET /api/v1/jobs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<String>,
    #[serde(rename = "type")]
    job_type: Option<String>,
    host: Option<String>,
    vm_id: Option<String>,
    limit: Option<String>,
}

/// `GET /api/v1/jobs`.
pub async fn list(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<serde_json::Value>> {
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
                format!("unknown job type {s:?}; use provision, delete or power"),
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
    let limit = match query.limit.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(s.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
            ApiError::bad_query("limit", format!("{s:?} is not a positive number"))
        })?),
    };
    let jobs = state.jobs.list(&JobFilter {
        status,
        job_type,
        host: query.host.filter(|h| !h.is_empty()),
        vm_id,
        limit,
    });
    Ok(Json(json!({ "jobs": jobs })))
}

/// `GET /api/v1/jobs/{id}`.
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
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    follow: Option<String>,
}

/// `GET /api/v1/jobs/{id}/logs`: SSE until the job ends, or JSON with `?follow=false`.
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
        return Ok(Json(json!({ "lines": lines, "status": status })).into_response());
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
                    pending.push(Event::default().event("status").data(
                        json!({ "status": status, "percent": percent, "step": step }).to_string(),
                    ));
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
pub async fn cancel(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    match state.jobs.cancel(&id) {
        Ok(view) => Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "job_id": view.id, "status": view.status, "cancel_requested": true })),
        )
            .into_response()),
        Err(CancelError::NotFound(_)) => Err(ApiError::not_found("job", &id)),
        Err(e @ CancelError::Finished { .. }) => Err(ApiError::conflict(
            "job_finished",
            format!("{e}; nothing to cancel"),
        )),
    }
}
