//! The API's error answer: `{"error": {"code", "message", "field"?, "details"?}}` with the
//! matching HTTP status. Every handler error and every middleware refusal goes through
//! [`ApiError`], so clients see one shape everywhere.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// Every `code` the API answers with; the OpenAPI document lists exactly these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: the body cannot be read at all.
    MalformedBody,
    /// 400: a query parameter is unusable (`field` names it).
    BadQuery,
    /// 400: a request the framework refused before a handler ran.
    BadRequest,
    /// 400/401: the browser login's callback failed.
    LoginFailed,
    /// 401: no token, or a bad or expired one.
    Unauthenticated,
    /// 403: the caller's role is too low, or a cross-site browser request.
    Forbidden,
    /// 404: no such route, host, VM, job or action.
    NotFound,
    /// 405: the route does not accept the method.
    MethodNotAllowed,
    /// 409: a VM with this name is already on the host.
    VmExists,
    /// 409: another job works on the VM.
    VmBusy,
    /// 409: the VM's state does not allow the request.
    InvalidState,
    /// 409: the job has already finished.
    JobFinished,
    /// 409: the VM's host is disconnected and its inventory stale.
    HostDisconnected,
    /// 409: several VMs on the host have the name.
    AmbiguousName,
    /// 409: the VM is not orphaned (an orphan action needs an orphaned VM).
    NotOrphaned,
    /// 409: no host of the target cluster can take the VM (the message states the best
    /// figure found).
    NoEligibleHost,
    /// 409: the setting changes only while the VM is Off.
    RequiresOff,
    /// 409: a running VM's memory may only be resized within its dynamic range.
    MemoryOutsideDynamicRange,
    /// 409: a running VM's dynamic range may only widen (minimum down, maximum up).
    MemoryRangeNarrowed,
    /// 409: Secure Boot and the vTPM exist only on generation 2 VMs.
    Generation1Firmware,
    /// 409: a disk never shrinks (the message names both sizes).
    DiskShrink,
    /// 409: an IDE disk of a VM that is not Off can be neither resized nor detached.
    IdeDiskRunning,
    /// 409: only a VHDX on SCSI is resized while the VM runs.
    OnlineResizeNeedsVhdx,
    /// 409: a shared disk is never detached.
    SharedDisk,
    /// 409: the disk is the VM's last boot disk and `force` is not set.
    LastBootDisk,
    /// 409: every SCSI location of the VM is taken.
    NoFreeScsiSlot,
    /// 409: the VM cannot move to the target (Compare-VM's incompatibilities, each one in
    /// `details`); nothing moved.
    MigrationIncompatible,
    /// 413: the body is over the limit.
    PayloadTooLarge,
    /// 414: the request URI is longer than the HTTP layer takes (65,534 bytes).
    UriTooLong,
    /// 431: the request's header fields are more or larger than the HTTP layer takes.
    HeadersTooLarge,
    /// 415: the body's media type is not accepted.
    UnsupportedMediaType,
    /// 421: the `Host` header names none of this server's names (DNS rebinding guard).
    HostNotAllowed,
    /// 422: a field failed validation (`field`, `details`).
    InvalidField,
    /// 500: a server fault.
    Internal,
    /// 503: the server is still starting.
    NotReady,
    /// 503: too many jobs are waiting.
    QueueFull,
    /// 503: the issuer's signing keys or endpoints cannot be reached.
    AuthUnavailable,
    /// Any other client error status the framework produced.
    Error,
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The serde name is the one the API sends.
        match serde_json::to_value(self) {
            Ok(serde_json::Value::String(name)) => f.write_str(&name),
            _ => write!(f, "{self:?}"),
        }
    }
}

/// One invalid field, as listed in `details` of a 422.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldProblem {
    /// The field's path as submitted, e.g. `values.gb_ram`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// An error answer. Messages never contain secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable machine-readable code.
    pub code: ErrorCode,
    /// A human-readable explanation.
    pub message: String,
    /// The input field at fault, when there is one.
    pub field: Option<String>,
    /// Every invalid field (422), or every incompatibility of a refused migration (409).
    pub details: Vec<FieldProblem>,
}

/// Every error answer: `{"error": {...}}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// The stable machine-readable code.
    pub code: ErrorCode,
    /// A human-readable explanation.
    pub message: String,
    /// The input field (or query parameter) at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Every invalid field (422), or every incompatibility of a refused migration (409
    /// `migration_incompatible`); the first is repeated in `field`/`message`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<FieldProblem>,
}

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            details: Vec::new(),
        }
    }

    /// Names the field at fault.
    #[must_use]
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Appends `suffix` to the message.
    #[must_use]
    pub fn with_message_suffix(mut self, suffix: &str) -> Self {
        self.message.push_str(suffix);
        self
    }

    /// 400 `malformed_body`: the body cannot be read at all.
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::MalformedBody, message)
    }

    /// 400 `bad_query`: a query parameter is unusable.
    pub fn bad_query(field: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::BadQuery, message).with_field(field)
    }

    /// 422 `invalid_field` for one field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidField,
            message,
        )
        .with_field(field)
    }

    /// 422 `invalid_field` for several fields; the first is repeated in `field`/`message`.
    pub fn invalid_fields(problems: Vec<FieldProblem>) -> Self {
        let (field, message) = problems.first().map_or_else(
            || (None, "invalid request".to_owned()),
            |p| (Some(p.field.clone()), format!("{}: {}", p.field, p.message)),
        );
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: ErrorCode::InvalidField,
            message,
            field,
            details: problems,
        }
    }

    /// 404 `not_found` for a `kind` (`host`, `VM`, `job`) named `what`.
    pub fn not_found(kind: &str, what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("{kind} {what:?} not found"),
        )
    }

    /// 409 with `code` (`vm_exists`, `vm_busy`, `invalid_state`, `job_finished`).
    pub fn conflict(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// 401 `unauthenticated`.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthenticated,
            message,
        )
    }

    /// 403 `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message)
    }

    /// 503 `not_ready`.
    pub fn not_ready(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::NotReady,
            message,
        )
    }

    /// 500 `internal`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            message,
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
                field: self.field,
                details: self.details,
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// Handler result.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn error_shape() {
        let e = ApiError::invalid_fields(vec![
            FieldProblem {
                field: "gb_ram".into(),
                message: "must be 1-512".into(),
            },
            FieldProblem {
                field: "vm_name".into(),
                message: "required".into(),
            },
        ]);
        let r = e.into_response();
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "invalid_field");
        assert_eq!(v["error"]["field"], "gb_ram");
        assert_eq!(v["error"]["details"][1]["field"], "vm_name");
        let plain = ApiError::not_found("VM", "x").into_response();
        let body = axum::body::to_bytes(plain.into_body(), 1 << 20)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(v["error"].get("field").is_none());
        assert!(v["error"].get("details").is_none());
    }
}
