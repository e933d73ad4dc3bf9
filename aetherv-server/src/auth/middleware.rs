//! Request authentication for the HTTP API: who is calling ([`Authenticator`]), what the request
//! needs ([`required_role`]), the middleware that enforces it ([`require_role`]) and the
//! `GET /api/v1/me` handler ([`me`]).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::login::{LOGIN_PATH, LOGOUT_PATH, LoginFlow};
use super::oidc::{ErrorKind, OidcError, Validator};
use super::session::{SESSION_COOKIE, cookie, unix_now};
use super::{Principal, Role};
use crate::api::views::MeView;
use crate::error::{ApiError, ErrorCode};

/// Subject of every caller when authentication is disabled.
pub const ANONYMOUS_SUBJECT: &str = "anonymous";

enum Mode {
    Disabled {
        reason: &'static str,
    },
    Oidc {
        validator: Arc<Validator>,
        login: Option<Arc<LoginFlow>>,
    },
}

/// Decides who a request comes from: a bearer token checked by the OIDC [`Validator`], else the
/// browser session cookie (when browser login is configured). Share it as `Arc<Authenticator>`.
pub struct Authenticator {
    mode: Mode,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.mode {
            Mode::Disabled { reason } => f
                .debug_struct("Authenticator")
                .field("disabled", reason)
                .finish(),
            Mode::Oidc { validator, login } => f
                .debug_struct("Authenticator")
                .field("validator", validator)
                .field("browser_login", &login.is_some())
                .finish(),
        }
    }
}

impl Authenticator {
    /// No authentication: every request is an anonymous admin. `reason` says why (for logs).
    #[must_use]
    pub fn disabled(reason: &'static str) -> Self {
        tracing::warn!(reason, "authentication is disabled; every caller is admin");
        Self {
            mode: Mode::Disabled { reason },
        }
    }

    /// OIDC authentication with `validator`, plus the browser login when `login` is given.
    #[must_use]
    pub fn oidc(validator: Arc<Validator>, login: Option<Arc<LoginFlow>>) -> Self {
        Self {
            mode: Mode::Oidc { validator, login },
        }
    }

    /// Whether requests are authenticated at all.
    #[must_use]
    pub fn enabled(&self) -> bool {
        matches!(self.mode, Mode::Oidc { .. })
    }

    /// Why authentication is disabled, when it is.
    #[must_use]
    pub fn disabled_reason(&self) -> Option<&'static str> {
        match self.mode {
            Mode::Disabled { reason } => Some(reason),
            Mode::Oidc { .. } => None,
        }
    }

    /// The browser login flow, when configured.
    #[must_use]
    pub fn login(&self) -> Option<&Arc<LoginFlow>> {
        match &self.mode {
            Mode::Oidc { login, .. } => login.as_ref(),
            Mode::Disabled { .. } => None,
        }
    }

    /// The token validator, when authentication is enabled.
    #[must_use]
    pub fn validator(&self) -> Option<&Arc<Validator>> {
        match &self.mode {
            Mode::Oidc { validator, .. } => Some(validator),
            Mode::Disabled { .. } => None,
        }
    }

    /// The caller of a request with these headers.
    ///
    /// An `Authorization` header is always what counts when present (a bad token is not
    /// rescued by a session cookie). Errors are 401 `unauthenticated`, 403 `forbidden` (the
    /// token grants no role) or 503 `auth_unavailable` (the issuer's keys cannot be fetched).
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        let (validator, login) = match &self.mode {
            Mode::Disabled { .. } => {
                return Ok(Principal {
                    subject: ANONYMOUS_SUBJECT.to_owned(),
                    name: Some("authentication disabled".to_owned()),
                    role: Role::Admin,
                });
            }
            Mode::Oidc { validator, login } => (validator, login),
        };
        if let Some(value) = headers.get(header::AUTHORIZATION) {
            let value = value.to_str().map_err(|_| {
                ApiError::unauthenticated("authorization header is not a bearer token")
            })?;
            return validator
                .validate_authorization_header(Some(value))
                .await
                .map_err(|e| oidc_error(&e));
        }
        if let Some(login) = login
            && let Some(value) = cookie(headers, SESSION_COOKIE)
            && let Some(principal) = login.session_principal(value, unix_now())
        {
            return Ok(principal);
        }
        Err(ApiError::unauthenticated("missing bearer token or session"))
    }
}

/// The [`ApiError`] for a refused token; the message never contains the token.
#[must_use]
pub fn oidc_error(error: &OidcError) -> ApiError {
    match error.kind() {
        ErrorKind::Unauthorized => ApiError::unauthenticated(error.to_string()),
        ErrorKind::Forbidden => ApiError::forbidden(error.to_string()),
        ErrorKind::ServiceUnavailable => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::AuthUnavailable,
            error.to_string(),
        ),
    }
}

/// The role a request method needs: reader for GET, HEAD and OPTIONS, writer for the rest.
#[must_use]
pub fn required_role(method: &Method) -> Role {
    if method == Method::GET || method == Method::HEAD || method == Method::OPTIONS {
        Role::Reader
    } else {
        Role::Writer
    }
}

/// The role a request needs, by method and path: [`required_role`], except that the orphan
/// actions (`/api/v1/vms/{id}/orphan/...`, which delete or adopt VMs no job owns) need admin,
/// and `POST /api/v1/placement` (which only reads) needs reader.
/// `path` is a request path or a route template; both have the same segments.
#[must_use]
pub fn required_role_at(method: &Method, path: &str) -> Role {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let orphan_action = matches!(segments.as_slice(), ["api", "v1", "vms", _, "orphan", _]);
    // Placement only reads (a POST for its body).
    let placement = method == Method::POST && segments.as_slice() == ["api", "v1", "placement"];
    if orphan_action && method != Method::GET && method != Method::HEAD {
        Role::Admin
    } else if placement {
        Role::Reader
    } else {
        required_role(method)
    }
}

/// Middleware (for `axum::middleware::from_fn_with_state`) that authenticates the request,
/// checks its role against [`required_role_at`] and puts the [`Principal`] into the request's
/// extensions for the handlers.
pub async fn require_role(
    State(auth): State<Arc<Authenticator>>,
    mut request: Request,
    next: Next,
) -> Response {
    let principal = match auth.authenticate(request.headers()).await {
        Ok(principal) => principal,
        Err(error) => return error.into_response(),
    };
    let needed = required_role_at(request.method(), request.uri().path());
    if !principal.role.allows(needed) {
        return ApiError::forbidden(format!(
            "this action needs the {needed} role; you have {}",
            principal.role
        ))
        .into_response();
    }
    request.extensions_mut().insert(principal.clone());
    crate::audit::scope(&principal, next.run(request)).await
}

/// `GET /api/v1/me`: the caller as the server sees it. Mount it behind [`require_role`].
#[utoipa::path(get, path = "/api/v1/me", tag = "session", operation_id = "getMe",
    summary = "The caller",
    description = "Whether authentication is enabled, who is calling and with which role, and \
        where to log in or out.",
    responses((status = 200, description = "The caller", body = MeView)))]
pub async fn me(
    State(auth): State<Arc<Authenticator>>,
    Extension(principal): Extension<Principal>,
) -> Json<MeView> {
    let browser_login = auth.login().is_some();
    Json(MeView {
        auth_enabled: auth.enabled(),
        subject: principal.subject,
        name: principal.name,
        role: principal.role,
        login_url: browser_login.then_some(LOGIN_PATH),
        logout_url: browser_login.then_some(LOGOUT_PATH),
    })
}
