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

/// Which URLs the server may use to talk to the identity provider.
///
/// Only `https` is allowed for the issuer, its discovery document, key set and endpoints: an
/// attacker on the path of a plain `http` exchange could swap the keys and sign admin tokens.
/// `http` is allowed for loopback addresses (`localhost`, `127.0.0.0/8`, `::1`), and everywhere
/// only with `OIDC_ALLOW_INSECURE_HTTP=true`, meant for labs and logged loudly at start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpPolicy {
    /// `OIDC_ALLOW_INSECURE_HTTP`: plain `http` to any address.
    pub allow_insecure_http: bool,
}

/// The most redirects followed while fetching from the identity provider.
const MAX_REDIRECTS: usize = 5;

impl HttpPolicy {
    /// Whether `url` may be used; `what` names it in the error.
    pub fn check(&self, url: &str, what: &str) -> Result<(), OidcError> {
        let parsed = url::Url::parse(url)
            .map_err(|_| unavailable(format!("{what} is not an absolute URL")))?;
        if self.allows(&parsed) {
            Ok(())
        } else if matches!(parsed.scheme(), "http" | "https") {
            Err(unavailable(format!(
                "{what} {} uses plain http; the identity provider must use https (http is \
                 allowed only on loopback, or with OIDC_ALLOW_INSECURE_HTTP=true for labs)",
                origin_of(&parsed)
            )))
        } else {
            Err(unavailable(format!("{what} is not an http(s) URL")))
        }
    }

    /// Whether `url` may be used.
    #[must_use]
    pub fn allows(&self, url: &url::Url) -> bool {
        match url.scheme() {
            "https" => true,
            "http" => self.allow_insecure_http || is_loopback(url),
            _ => false,
        }
    }

    /// An HTTP client for the identity provider: `timeout` per request, and redirects followed
    /// only to URLs this policy allows (at most five), so an https issuer cannot be downgraded.
    pub fn client(&self, timeout: Duration) -> Result<reqwest::Client, OidcError> {
        let policy = *self;
        reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= MAX_REDIRECTS {
                    attempt.error("too many redirects")
                } else if policy.allows(attempt.url()) {
                    attempt.follow()
                } else {
                    attempt.error("redirect to a plain http URL refused")
                }
            }))
            .build()
            .map_err(|e| unavailable(format!("cannot build http client: {e}")))
    }
}

/// Whether `url`'s host is a loopback name or address.
#[must_use]
pub fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// `scheme://host[:port]` of `url`, for error messages (never a path or query).
fn origin_of(url: &url::Url) -> String {
    url.origin().ascii_serialization()
}

/// [`JwksFetcher`] over HTTP(S): reads `<issuer>/.well-known/openid-configuration`, checks that
/// its `issuer` is the configured one, then reads its `jwks_uri`. Every URL must pass its
/// [`HttpPolicy`].
#[derive(Debug, Clone)]
pub struct ReqwestFetcher {
    client: reqwest::Client,
    policy: HttpPolicy,
}

impl ReqwestFetcher {
    /// A fetcher with its own client (10 s timeout) and the strict [`HttpPolicy`]: https, or
    /// http on loopback only.
    pub fn new() -> Result<Self, OidcError> {
        Self::with_policy(HttpPolicy::default())
    }

    /// A fetcher with its own client (10 s timeout) and `policy`.
    pub fn with_policy(policy: HttpPolicy) -> Result<Self, OidcError> {
        Ok(Self {
            client: policy.client(Duration::from_secs(10))?,
            policy,
        })
    }

    /// A fetcher using the given client (for custom trust roots or proxies) and `policy`.
    #[must_use]
    pub fn with_client(client: reqwest::Client, policy: HttpPolicy) -> Self {
        Self { client, policy }
    }

    async fn get_json<T: for<'de> Deserialize<'de>>(
        &self,
        url: &str,
        what: &str,
    ) -> Result<T, OidcError> {
        self.policy.check(url, what)?;
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
            (
                "authorization_endpoint",
                Some(&metadata.authorization_endpoint),
            ),
            ("token_endpoint", Some(&metadata.token_endpoint)),
            (
                "end_session_endpoint",
                metadata.end_session_endpoint.as_ref(),
            ),
        ] {
            if let Some(url) = url {
                self.policy
                    .check(url, &format!("the discovery document's {name}"))?;
            }
        }
        Ok(metadata)
    }
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
        self.policy
            .check(&discovery.jwks_uri, "the discovery document's jwks_uri")?;
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
