//! The HTTP surface: [`router`] builds the whole application from an [`AppState`], so tests
//! drive it with `tower::ServiceExt::oneshot` and no port.
//!
//! Layout: probes (`/healthz`, `/readyz`), documents (`/openapi.json`, `/docs`, `/metrics`),
//! the web UI (`/`, `/ui/...`), the browser login (`/oidc/...`), and `/api/v1/...` behind
//! [`crate::auth::require_role`] (reads need reader, everything else writer).

pub mod events;
pub mod inventory;
pub mod jobs;
pub mod openapi;
pub mod views;
pub mod vms;

use axum::Json;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Router, middleware};
use serde_json::json;

use crate::auth;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::state::AppState;

/// Every route [`router`] serves under `/api/v1`, as (method, path template).
pub const API_ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/v1/me"),
    ("GET", "/api/v1/status"),
    ("GET", "/api/v1/clusters"),
    ("GET", "/api/v1/hosts"),
    ("GET", "/api/v1/hosts/{hostname}"),
    ("GET", "/api/v1/vms"),
    ("GET", "/api/v1/vms/{id}"),
    ("POST", "/api/v1/vms/create"),
    ("POST", "/api/v1/vms/delete"),
    ("POST", "/api/v1/vms/{id}/actions/{action}"),
    ("POST", "/api/v1/jobs/provision"),
    ("GET", "/api/v1/jobs"),
    ("GET", "/api/v1/jobs/{id}"),
    ("GET", "/api/v1/jobs/{id}/logs"),
    ("POST", "/api/v1/jobs/{id}/cancel"),
    ("GET", "/api/v1/events"),
];

/// The application.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/api/v1/me", get(auth::me))
        .route("/api/v1/status", get(status))
        .route("/api/v1/clusters", get(inventory::clusters))
        .route("/api/v1/hosts", get(inventory::hosts))
        .route("/api/v1/hosts/{hostname}", get(inventory::host))
        .route("/api/v1/vms", get(inventory::vms))
        .route("/api/v1/vms/{id}", get(inventory::vm))
        .route("/api/v1/vms/create", post(vms::create))
        .route("/api/v1/vms/delete", post(vms::delete))
        .route("/api/v1/vms/{id}/actions/{action}", post(vms::action))
        .route("/api/v1/jobs/provision", post(vms::provision_job))
        .route("/api/v1/jobs", get(jobs::list))
        .route("/api/v1/jobs/{id}", get(jobs::get))
        .route("/api/v1/jobs/{id}/logs", get(jobs::logs))
        .route("/api/v1/jobs/{id}/cancel", post(jobs::cancel))
        .route("/api/v1/events", get(events::stream))
        .route_layer(middleware::from_fn_with_state(
            state.auth.clone(),
            auth::require_role,
        ))
        .layer(DefaultBodyLimit::max(vms::MAX_BODY_BYTES));
    let login = match state.auth.login() {
        Some(_) => auth::login::routes().with_state(state.auth.clone()),
        None => Router::new(),
    };
    Router::new()
        .merge(api)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/docs", get(openapi::docs_page))
        .route("/metrics", get(crate::metrics::handler))
        .merge(crate::ui::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.metrics.clone(),
            count_requests,
        ))
        .with_state(state)
        .merge(login)
}

/// Counts requests per route template and status (`aetherv_http_requests_total`).
async fn count_requests(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    metrics.http_request(&route, response.status().as_u16());
    response
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> Response {
    match state.readiness.check() {
        Ok(()) => Json(json!({ "status": "ready" })).into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not_ready", "reason": reason })),
        )
            .into_response(),
    }
}

async fn status(State(state): State<AppState>) -> Json<serde_json::Value> {
    let snapshot = state.inventory.snapshot();
    let (queued, running) = state.jobs.active_counts();
    let ready = state.readiness.check();
    Json(json!({
        "mode": state.info.mode,
        "version": state.info.version,
        "ready": ready.is_ok(),
        "reason": ready.err(),
        "hosts": snapshot.hosts().count(),
        "vms": snapshot.vm_count(),
        "jobs_running": running,
        "jobs_queued": queued,
    }))
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found("route", uri.path())
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not accept that method",
    )
}
