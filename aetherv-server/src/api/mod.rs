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
use axum::http::{Method, StatusCode, Uri, header};
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
        .layer(middleware::from_fn(refuse_cross_site))
        .layer(middleware::map_response(json_errors))
}

/// Refuses state-changing requests that a browser sent from another site (a form or script
/// on another origin riding on the session cookie): `Sec-Fetch-Site` must be `same-origin`
/// or `none` when present, and `Origin`, when present, must name this server's host.
/// Clients that are not browsers send neither header and are not affected.
async fn refuse_cross_site(request: Request, next: Next) -> Response {
    if !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        let headers = request.headers();
        let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
        if let Some(site) = text(header::HeaderName::from_static("sec-fetch-site"))
            && !matches!(site, "same-origin" | "none")
        {
            return cross_site(&format!("Sec-Fetch-Site is {site}"));
        }
        if let Some(origin) = text(header::ORIGIN) {
            let host = text(header::HOST).map(strip_default_port);
            let origin_host = origin
                .split_once("://")
                .map(|(_, rest)| strip_default_port(rest));
            if origin_host.is_none() || origin_host != host {
                return cross_site(&format!("Origin {origin} is not this server"));
            }
        }
    }
    next.run(request).await
}

fn strip_default_port(authority: &str) -> &str {
    let authority = authority.trim_end_matches('/');
    authority
        .strip_suffix(":80")
        .or_else(|| authority.strip_suffix(":443"))
        .unwrap_or(authority)
}

fn cross_site(why: &str) -> Response {
    ApiError::forbidden(format!(
        "cross-site request refused ({why}); use the API from the aetherv UI's own origin or without a browser"
    ))
    .into_response()
}

/// Gives every error answer the API's JSON shape, including the plain-text rejections of
/// axum's extractors and limits (bad path segments, bodies over the limit).
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let code = match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_field",
        s if s.is_server_error() => "internal",
        _ => "error",
    };
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    let replacement = ApiError::new(status, code, message).into_response();
    parts.headers.remove(header::CONTENT_LENGTH);
    let (new_parts, new_body) = replacement.into_parts();
    for (name, value) in &new_parts.headers {
        parts.headers.insert(name, value.clone());
    }
    Response::from_parts(parts, new_body)
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
        Ok(()) => Json(json!({ "status": "ready", "mode": state.info.mode })).into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not_ready", "reason": reason, "mode": state.info.mode })),
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
