//! `/metrics` behind a bearer token (`METRICS_TOKEN`): [`require_metrics_token`] answers a
//! request to `/metrics` without `Authorization: Bearer <METRICS_TOKEN>` with 401
//! `unauthenticated`. The token is compared through SHA-256 digests in constant time and is
//! never logged or echoed.

use std::sync::Arc;

use aetherv_winrm::Secret;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// The path the token protects.
pub const METRICS_PATH: &str = "/metrics";

/// The SHA-256 digest of the expected token (the token itself is not kept here).
#[derive(Clone)]
pub struct MetricsToken([u8; 32]);

impl std::fmt::Debug for MetricsToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsToken(..)")
    }
}

impl MetricsToken {
    /// The digest of `token`.
    pub fn new(token: &Secret) -> Self {
        Self(Sha256::digest(token.expose().as_bytes()).into())
    }

    /// Whether `presented` is the token, in time independent of where they differ.
    pub fn matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        digest
            .iter()
            .zip(self.0.iter())
            .fold(0_u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

/// Lets a request to [`METRICS_PATH`] through only with the bearer token; other paths pass.
pub async fn require_metrics_token(
    State(token): State<Arc<MetricsToken>>,
    request: Request,
    next: Next,
) -> Response {
    if request.uri().path() != METRICS_PATH {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split_once(' ')
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, t)| t.trim())
        });
    if presented.is_some_and(|t| token.matches(t)) {
        return next.run(request).await;
    }
    ApiError::unauthenticated("/metrics needs Authorization: Bearer with the METRICS_TOKEN value")
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_matches() {
        let token = MetricsToken::new(&Secret::new("s3cret-metrics"));
        assert!(token.matches("s3cret-metrics"));
        assert!(!token.matches("s3cret-metric"));
        assert!(!token.matches("s3cret-metrics "));
        assert!(!token.matches(""));
        assert!(!format!("{token:?}").contains("s3cret"));
    }
}
