//! The HTTP surface: [`router`] builds the whole application from an [`AppState`], so tests
//! drive it with `tower::ServiceExt::oneshot` and no port.
//!
//! Layout: probes (`/healthz`, `/readyz`), documents (`/openapi.json`, `/docs`, `/metrics`),
//! the web UI (`/`, `/ui/...`), the browser login (`/oidc/...`), and `/api/v1/...` behind
//! [`crate::auth::require_role`] (reads need reader, everything else writer).

pub mod checkpoints;
pub mod console;
pub mod disks;
pub mod events;
pub mod host_check;
pub mod inventory;
pub mod jobs;
pub mod maintenance;
pub mod metrics_access;
pub mod migrate;
pub mod nics;
pub mod openapi;
pub mod placement;
pub mod views;
pub mod vm_day2;
pub mod vm_pages;
pub mod vms;
pub mod vms_edit;

use axum::Json;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Router, middleware};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth;
use crate::error::{ApiError, ErrorCode};
use crate::metrics::Metrics;
use crate::state::AppState;
use views::{HealthStatus, HealthView, ReadinessStatus, ReadinessView, StatusView};

/// The one route table of the documented routes that need no authentication: probes,
/// documents, metrics and the web UI's page. [`router`] serves it and [`openapi::document`]
/// describes it, both from this definition.
pub fn public_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(openapi::openapi_json))
        .routes(routes!(openapi::docs_page))
        .routes(routes!(metrics))
        .merge(crate::ui::routes())
}

/// The one route table of `/api/v1`: every route here is behind
/// [`crate::auth::require_role`] (reads need reader, everything else writer).
pub fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(auth::middleware::me))
        .routes(routes!(status))
        .routes(routes!(inventory::clusters))
        .routes(routes!(inventory::hosts))
        .routes(routes!(inventory::host))
        .routes(routes!(inventory::refresh_host))
        .routes(routes!(inventory::refresh_inventory))
        .routes(routes!(inventory::pending_cleanup))
        .routes(routes!(inventory::vms))
        .routes(routes!(inventory::vm))
        .routes(routes!(vms::create))
        .routes(routes!(vms::delete))
        .routes(routes!(vms::action))
        .routes(routes!(migrate::migrate))
        .routes(routes!(placement::placement))
        .routes(routes!(vms::remove_orphan))
        .routes(routes!(vms::adopt_orphan))
        .routes(routes!(vms::provision_job))
        .routes(routes!(vms_edit::patch_vm))
        .routes(routes!(disks::list))
        .routes(routes!(disks::add))
        .routes(routes!(disks::expand))
        .routes(routes!(disks::detach))
        .routes(routes!(console::console))
        .routes(routes!(jobs::list))
        .routes(routes!(jobs::get))
        .routes(routes!(jobs::logs))
        .routes(routes!(jobs::cancel))
        .routes(routes!(events::stream))
        .routes(routes!(checkpoints::list, checkpoints::create))
        .routes(routes!(
            checkpoints::get,
            checkpoints::rename,
            checkpoints::delete
        ))
        .routes(routes!(checkpoints::apply))
        .routes(routes!(nics::list, nics::add))
        .routes(routes!(nics::get, nics::change, nics::remove))
        .routes(routes!(maintenance::enter))
        .routes(routes!(maintenance::resume))
        .routes(routes!(maintenance::start_run, maintenance::list_runs))
        .routes(routes!(maintenance::get_run))
        .routes(routes!(maintenance::cancel_run))
}

/// Every route under `/api/v1` as (method, path template), read from [`api_routes`].
pub fn api_route_list() -> Vec<(Method, String)> {
    openapi::routes_of(&api_routes().into_openapi())
}

/// The application.
pub fn router(state: AppState) -> Router {
    router_with_mcp(state, None)
}

/// The application with the MCP endpoint of [`crate::mcp`] at `/mcp` when `mcp` is given
/// and its mode is not off (authenticated like the API, behind the same outer layers).
pub fn router_with_mcp(state: AppState, mcp: Option<crate::mcp::guard::McpConfig>) -> Router {
    let mcp = mcp.and_then(|config| crate::mcp::routes(state.clone(), config));
    let (api, _) = api_routes().split_for_parts();
    let api = api
        .route_layer(middleware::from_fn_with_state(
            state.auth.clone(),
            auth::require_role,
        ))
        .layer(DefaultBodyLimit::max(vms::MAX_BODY_BYTES));
    let (public, _) = public_routes().split_for_parts();
    let login = match state.auth.login() {
        Some(_) => auth::login::routes().with_state(state.auth.clone()),
        None => Router::new(),
    };
    let mut app = Router::new().merge(api).merge(public);
    if let Some(mcp) = mcp {
        app = app.merge(mcp);
    }
    app.fallback(not_found)
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

/// `app` behind the `Host` check of [`host_check`]: requests naming none of the server's
/// names are answered 421 before any route runs.
pub fn with_host_check(app: Router, policy: host_check::HostPolicy) -> Router {
    app.layer(middleware::from_fn_with_state(
        Arc::new(policy),
        host_check::refuse_unknown_host,
    ))
}

/// `app` with `/metrics` behind the bearer `token` (`METRICS_TOKEN`; see [`metrics_access`]).
pub fn with_metrics_token(app: Router, token: metrics_access::MetricsToken) -> Router {
    app.layer(middleware::from_fn_with_state(
        Arc::new(token),
        metrics_access::require_metrics_token,
    ))
}

/// `app` answering 404 for `/metrics` (served on `METRICS_LISTEN_ADDR` instead).
pub fn without_metrics(app: Router) -> Router {
    app.layer(middleware::from_fn(
        async |request: Request, next: Next| -> Response {
            if request.uri().path() == metrics_access::METRICS_PATH {
                return not_found(request.uri().clone()).await.into_response();
            }
            next.run(request).await
        },
    ))
}

/// The router of the separate metrics listener: `GET /metrics` and JSON 404/405 otherwise.
pub fn metrics_router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route(
            metrics_access::METRICS_PATH,
            axum::routing::get(crate::metrics::handler),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(metrics)
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
        StatusCode::BAD_REQUEST => ErrorCode::BadRequest,
        StatusCode::NOT_FOUND => ErrorCode::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
        StatusCode::UNPROCESSABLE_ENTITY => ErrorCode::InvalidField,
        s if s.is_server_error() => ErrorCode::Internal,
        _ => ErrorCode::Error,
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

/// `GET /healthz`.
#[utoipa::path(get, path = "/healthz", tag = "probes", operation_id = "healthz",
    summary = "Liveness probe", description = "Answers 200 while the process runs.",
    responses((status = 200, description = "The process runs", body = HealthView)))]
async fn healthz() -> Json<HealthView> {
    Json(HealthView {
        status: HealthStatus::Ok,
    })
}

/// `GET /readyz`.
#[utoipa::path(get, path = "/readyz", tag = "probes", operation_id = "readyz",
    summary = "Readiness probe",
    description = "Ready once the artifacts are in place and the first inventory is loaded \
        (every host answered or failed once). By default it stays ready when hosts disconnect \
        later: the API still serves the last known inventory and jobs, and restarting the pod \
        would not bring a host back. With `READYZ_STRICT=true` it also needs at least one \
        connected host.",
    responses(
        (status = 200, description = "Ready (`status` is `ready`)", body = ReadinessView),
        (status = 503, description = "Not ready yet (`status` is `not_ready`, `reason` says why)",
            body = ReadinessView),
    ))]
async fn readyz(State(state): State<AppState>) -> Response {
    let check = state.readiness.check().and_then(|()| {
        // Strict mode: serving without any host to act on counts as not ready.
        let snapshot = state.inventory.snapshot();
        let total = snapshot.hosts().count();
        if state.readiness.is_strict() && !snapshot.hosts().any(|h| h.is_connected()) {
            Err(format!(
                "no host is connected ({total} configured); READYZ_STRICT is on"
            ))
        } else {
            Ok(())
        }
    });
    match check {
        Ok(()) => Json(ReadinessView {
            status: ReadinessStatus::Ready,
            reason: None,
            mode: state.info.mode,
        })
        .into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(ReadinessView {
                status: ReadinessStatus::NotReady,
                reason: Some(reason),
                mode: state.info.mode,
            }),
        )
            .into_response(),
    }
}

/// `GET /metrics`.
#[utoipa::path(get, path = "/metrics", tag = "probes", operation_id = "metrics",
    summary = "Prometheus metrics",
    description = "Jobs, host operations, inventory refreshes and HTTP requests in the \
        OpenMetrics text format.",
    responses((status = 200, description = "OpenMetrics text", body = String,
        content_type = "application/openmetrics-text"),
        (status = 401, description = "`unauthenticated`: `METRICS_TOKEN` is set and the \
            request lacks `Authorization: Bearer` with it", body = crate::error::ErrorBody)))]
async fn metrics(state: State<Arc<Metrics>>) -> Response {
    crate::metrics::handler(state).await
}

/// `GET /api/v1/status`.
#[utoipa::path(get, path = "/api/v1/status", tag = "session", operation_id = "getStatus",
    summary = "Server status",
    description = "Mode, readiness, version and counts of hosts, VMs and jobs.",
    responses((status = 200, description = "Server status", body = StatusView)))]
async fn status(State(state): State<AppState>) -> Json<StatusView> {
    let snapshot = state.inventory.snapshot();
    let (queued, running) = state.jobs.active_counts();
    let ready = state.readiness.check();
    Json(StatusView {
        mode: state.info.mode,
        version: state.info.version.to_owned(),
        ready: ready.is_ok(),
        reason: ready.err(),
        hosts: snapshot.hosts().count(),
        vms: snapshot.vm_count(),
        jobs_running: running,
        jobs_queued: queued,
    })
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found("route", uri.path())
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::MethodNotAllowed,
        "this route does not accept that method",
    )
}
