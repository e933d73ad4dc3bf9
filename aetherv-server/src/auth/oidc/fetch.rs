//! Fetching an issuer's signing keys: the [`JwksFetcher`] seam and its HTTP implementation.

use std::time::Duration;

use async_trait::async_trait;
use jsonwebtoken::jwk::Jwk;
use serde::Deserialize;

use super::OidcError;

/// Path of the OpenID Connect discovery document below the issuer URL.
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

/// Largest discovery document or key set accepted, in bytes.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// Fetches the current JSON Web Key Set of an OIDC issuer.
///
/// The [`Validator`](super::Validator) calls this on first use and again when a token names a key
/// id it does not know (key rotation), at most once per refetch interval.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait JwksFetcher: Send + Sync {
    /// Returns the issuer's signing keys. Keys that cannot be parsed are left out; a failure to
    /// reach or read the issuer is [`OidcError::JwksUnavailable`].
    async fn fetch_jwks(&self, issuer_url: &str) -> Result<Vec<Jwk>, OidcError>;
}

/// [`JwksFetcher`] over HTTP(S): reads `<issuer>/.well-known/openid-configuration`, checks that
/// its `issuer` is the configured one, then reads its `jwks_uri`.
#[derive(Debug, Clone)]
pub struct ReqwestFetcher {
    client: reqwest::Client,
}

impl ReqwestFetcher {
    /// A fetcher with its own client (10 s timeout, no redirects to other schemes).
    pub fn new() -> Result<Self, OidcError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| unavailable(format!("cannot build http client: {e}")))?;
        Ok(Self { client })
    }

    /// A fetcher using the given client (for custom trust roots or proxies).
    #[must_use]
    pub fn with_client(client: reqwest::Client) -> Self {
        Self { client }
    }

    async fn get_json<T: for<'de> Deserialize<'de>>(
        &self,
        url: &str,
        what: &str,
    ) -> Result<T, OidcError> {
        let response = self
            .client
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| unavailable(format!("cannot fetch {what}: {}", e.without_url())))?;
        let status = response.status();
        if !status.is_success() {
            return Err(unavailable(format!(
                "{what} answered http {}",
                status.as_u16()
            )));
        }
        if response
            .content_length()
            .is_some_and(|len| len > MAX_DOCUMENT_BYTES as u64)
        {
            return Err(unavailable(format!("{what} is too large")));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| unavailable(format!("cannot read {what}: {}", e.without_url())))?;
        if body.len() > MAX_DOCUMENT_BYTES {
            return Err(unavailable(format!("{what} is too large")));
        }
        serde_json::from_slice(&body).map_err(|e| unavailable(format!("{what} is not valid: {e}")))
    }
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

/// The endpoints of an issuer's discovery document that the browser login needs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ProviderMetadata {
    /// The issuer identifier; equals the configured issuer URL (up to a trailing slash).
    pub issuer: String,
    /// Where the browser is sent to log in (authorization code flow).
    pub authorization_endpoint: String,
    /// Where an authorization code is exchanged for tokens.
    pub token_endpoint: String,
    /// Where the browser may be sent to end the session at the issuer, when it supports that.
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
}

#[derive(Deserialize)]
struct RawJwkSet {
    keys: Vec<serde_json::Value>,
}

impl ReqwestFetcher {
    /// Reads the issuer's discovery document for the browser login: checks that it names the
    /// configured issuer and that its authorization and token endpoints are http(s) URLs.
    pub async fn fetch_provider_metadata(
        &self,
        issuer_url: &str,
    ) -> Result<ProviderMetadata, OidcError> {
        let base = issuer_url.trim_end_matches('/');
        let discovery_url = format!("{base}{DISCOVERY_PATH}");
        let metadata: ProviderMetadata =
            self.get_json(&discovery_url, "discovery document").await?;
        if metadata.issuer.trim_end_matches('/') != base {
            return Err(unavailable(
                "discovery document names a different issuer".to_owned(),
            ));
        }
        for (name, url) in [
            ("authorization_endpoint", &metadata.authorization_endpoint),
            ("token_endpoint", &metadata.token_endpoint),
        ] {
            if !is_http_url(url) {
                return Err(unavailable(format!(
                    "discovery document has no http(s) {name}"
                )));
            }
        }
        Ok(metadata)
    }
}

fn is_http_url(url: &str) -> bool {
    url.starts_with("https://") || url.starts_with("http://")
}

#[async_trait]
impl JwksFetcher for ReqwestFetcher {
    async fn fetch_jwks(&self, issuer_url: &str) -> Result<Vec<Jwk>, OidcError> {
        let base = issuer_url.trim_end_matches('/');
        let discovery_url = format!("{base}{DISCOVERY_PATH}");
        let discovery: Discovery = self.get_json(&discovery_url, "discovery document").await?;
        if discovery.issuer.trim_end_matches('/') != base {
            return Err(unavailable(
                "discovery document names a different issuer".to_owned(),
            ));
        }
        if !is_http_url(&discovery.jwks_uri) {
            return Err(unavailable(
                "discovery document has no http(s) jwks_uri".to_owned(),
            ));
        }
        let set: RawJwkSet = self.get_json(&discovery.jwks_uri, "key set").await?;
        // One key of a type we do not know must not hide the others.
        Ok(set
            .keys
            .into_iter()
            .filter_map(|key| serde_json::from_value::<Jwk>(key).ok())
            .collect())
    }
}

fn unavailable(reason: String) -> OidcError {
    OidcError::JwksUnavailable(reason)
}
