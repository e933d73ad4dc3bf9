//! OIDC bearer-token validation.
//!
//! A [`Validator`] checks a JWT access or ID token against the configured issuer: the signature
//! with the issuer's published keys (RS256 or ES256 only), then issuer, audience, expiry and
//! not-before. It then maps the `roles` and `groups` claims to a [`Role`] and returns the caller
//! as a [`Principal`].
//!
//! Keys come from a [`JwksFetcher`] (normally [`ReqwestFetcher`], which follows the issuer's
//! discovery document to its `jwks_uri`). They are cached; a token naming an unknown key id
//! triggers one refetch, at most once per [`OidcConfig::min_refetch_interval`], so a flood of
//! tokens with made-up key ids cannot flood the issuer.
//!
//! Error messages never contain the token or any part of it.

mod fetch;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind as JwtErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::Mutex;

pub use fetch::{
    DISCOVERY_PATH, HttpPolicy, JwksFetcher, ProviderMetadata, ReqwestFetcher, is_loopback,
};

/// A validated ID token from the browser login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdToken {
    /// Who logged in, with the role the token grants.
    pub principal: Principal,
    /// The `nonce` claim, to compare with the one the login sent.
    pub nonce: Option<String>,
    /// The `exp` claim, in seconds since the Unix epoch.
    pub expires_at: u64,
}

#[cfg(test)]
pub use fetch::MockJwksFetcher;

use super::{Principal, Role};

/// Default allowance for clock skew when checking `exp` and `nbf`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);

/// Default shortest time between two key refetches caused by unknown key ids.
pub const DEFAULT_MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(30);

/// Default time a fetched key set is trusted before it is fetched again.
pub const DEFAULT_MAX_KEY_AGE: Duration = Duration::from_secs(3600);

/// Shortest time between two fetch attempts after a failed one.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// Longest token accepted, in bytes; real tokens are a few kilobytes.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Why a token was not accepted.
///
/// Messages are short, lowercase and never contain the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OidcError {
    /// No bearer token was presented.
    #[error("missing bearer token")]
    MissingToken,
    /// The token (or the authorization header) is not a well-formed JWT.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The token is signed with an algorithm other than RS256 or ES256 (including `none` and HMAC).
    #[error("unsupported token algorithm")]
    UnsupportedAlgorithm,
    /// The signature does not verify with the issuer's key.
    #[error("invalid token signature")]
    BadSignature,
    /// The `iss` claim is missing or is not the configured issuer.
    #[error("token issuer is not accepted")]
    WrongIssuer,
    /// The `aud` claim is missing or does not contain the configured client id.
    #[error("token audience is not accepted")]
    WrongAudience,
    /// The token's `exp` is in the past (beyond the leeway).
    #[error("token has expired")]
    Expired,
    /// The token's `nbf` is in the future (beyond the leeway).
    #[error("token is not yet valid")]
    NotYetValid,
    /// The token names a key the issuer does not publish, even after refetching its keys.
    #[error("token signing key is unknown")]
    UnknownKey,
    /// The token is valid but grants none of the configured roles.
    #[error("token grants no aetherv role")]
    NoRole,
    /// The issuer's discovery document or key set could not be fetched or read.
    #[error("identity provider keys unavailable: {0}")]
    JwksUnavailable(String),
}

/// How an [`OidcError`] should be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The caller is not authenticated (HTTP 401).
    Unauthorized,
    /// The caller is authenticated but may not do this (HTTP 403).
    Forbidden,
    /// The server cannot check tokens right now (HTTP 503).
    ServiceUnavailable,
}

impl ErrorKind {
    /// The HTTP status code for this kind.
    #[must_use]
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::Unauthorized => 401,
            ErrorKind::Forbidden => 403,
            ErrorKind::ServiceUnavailable => 503,
        }
    }
}

impl OidcError {
    /// How this error should be answered.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            OidcError::NoRole => ErrorKind::Forbidden,
            OidcError::JwksUnavailable(_) => ErrorKind::ServiceUnavailable,
            _ => ErrorKind::Unauthorized,
        }
    }
}

/// The names of the roles, as they appear in the token's `roles` or `groups` claim.
///
/// A role that is `None` (or empty) is never granted by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleNames {
    /// Grants [`Role::Reader`] (`OIDC_READER_ROLE`).
    pub reader: Option<String>,
    /// Grants [`Role::Writer`] (`OIDC_WRITER_ROLE`).
    pub writer: Option<String>,
    /// Grants [`Role::Admin`] (`OIDC_ADMIN_ROLE`).
    pub admin: Option<String>,
    /// Also grants [`Role::Writer`] (`OIDC_ROLE_NAME`).
    pub role_name: Option<String>,
}

impl RoleNames {
    /// The highest role granted by any of `names`, if any.
    #[must_use]
    pub fn highest<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Option<Role> {
        let is = |configured: &Option<String>, name: &str| {
            configured
                .as_deref()
                .is_some_and(|c| !c.is_empty() && c == name)
        };
        names
            .into_iter()
            .filter_map(|name| {
                if is(&self.admin, name) {
                    Some(Role::Admin)
                } else if is(&self.writer, name) || is(&self.role_name, name) {
                    Some(Role::Writer)
                } else if is(&self.reader, name) {
                    Some(Role::Reader)
                } else {
                    None
                }
            })
            .max()
    }
}

/// What a [`Validator`] accepts.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// The issuer URL (`OIDC_ISSUER_URL`); tokens' `iss` must equal it.
    pub issuer_url: String,
    /// The client id (`OIDC_CLIENT_ID`); tokens' `aud` must contain it.
    pub audience: String,
    /// Which role names grant which [`Role`].
    pub roles: RoleNames,
    /// Allowance for clock skew on `exp` and `nbf`.
    pub leeway: Duration,
    /// Shortest time between two key refetches caused by unknown key ids.
    pub min_refetch_interval: Duration,
    /// How long a fetched key set is trusted before it is fetched again, so a key the issuer
    /// withdrew stops validating tokens (the old set stays in use while the issuer is down).
    pub max_key_age: Duration,
}

impl OidcConfig {
    /// A configuration with the default leeway and refetch interval.
    #[must_use]
    pub fn new(
        issuer_url: impl Into<String>,
        audience: impl Into<String>,
        roles: RoleNames,
    ) -> Self {
        Self {
            issuer_url: issuer_url.into(),
            audience: audience.into(),
            roles,
            leeway: DEFAULT_LEEWAY,
            min_refetch_interval: DEFAULT_MIN_REFETCH_INTERVAL,
            max_key_age: DEFAULT_MAX_KEY_AGE,
        }
    }
}

/// One usable verification key.
struct CachedKey {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

#[derive(Default)]
struct KeyCache {
    keys: Vec<CachedKey>,
    /// When the set was fetched (`None`: never).
    fetched_at: Option<Instant>,
}

impl KeyCache {
    fn from_jwks(jwks: &[Jwk]) -> Self {
        let keys = jwks.iter().filter_map(cached_key).collect();
        Self {
            keys,
            fetched_at: Some(Instant::now()),
        }
    }

    /// The key for `kid` (or, without a kid, the only key for `alg`).
    fn find(&self, kid: Option<&str>, alg: Algorithm) -> Lookup<'_> {
        match kid {
            Some(kid) => match self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)) {
                Some(key) if key.alg == alg => Lookup::Found(&key.key),
                Some(_) => Lookup::WrongAlgorithm,
                None => Lookup::Missing,
            },
            None => {
                let mut candidates = self.keys.iter().filter(|k| k.alg == alg);
                match (candidates.next(), candidates.next()) {
                    (Some(key), None) => Lookup::Found(&key.key),
                    _ => Lookup::Missing,
                }
            }
        }
    }
}

enum Lookup<'a> {
    Found(&'a DecodingKey),
    WrongAlgorithm,
    Missing,
}

/// A signing key from the JWKS, if it is one we can use: RSA for RS256, P-256 for ES256.
fn cached_key(jwk: &Jwk) -> Option<CachedKey> {
    if matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
    ) {
        return None;
    }
    let alg = match (&jwk.algorithm, jwk.common.key_algorithm) {
        (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
        (AlgorithmParameters::EllipticCurve(ec), None | Some(KeyAlgorithm::ES256))
            if ec.curve == EllipticCurve::P256 =>
        {
            Algorithm::ES256
        }
        _ => return None,
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(CachedKey {
        kid: jwk.common.key_id.clone(),
        alg,
        key,
    })
}

#[derive(Default)]
struct RefreshState {
    /// Whether a key set was ever fetched successfully.
    loaded: bool,
    /// When an unknown key id last caused a refetch.
    last_refetch: Option<Instant>,
    /// When the last fetch failed, if the last fetch failed.
    last_failure: Option<Instant>,
}

/// Validates OIDC bearer tokens; cheap to share behind an [`Arc`].
pub struct Validator {
    config: OidcConfig,
    fetcher: Arc<dyn JwksFetcher>,
    rs256: Validation,
    es256: Validation,
    keys: ArcSwap<KeyCache>,
    refresh: Mutex<RefreshState>,
}

impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validator")
            .field("issuer_url", &self.config.issuer_url)
            .field("audience", &self.config.audience)
            .field("cached_keys", &self.keys.load().keys.len())
            .finish_non_exhaustive()
    }
}

/// The claims we read beyond those `jsonwebtoken` validates.
#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    preferred_username: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    roles: Option<OneOrMany>,
    #[serde(default)]
    groups: Option<OneOrMany>,
    #[serde(default)]
    nonce: Option<String>,
    /// Checked by the validation itself; kept so a browser session never outlives the token.
    #[serde(default)]
    exp: u64,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn iter(&self) -> impl Iterator<Item = &str> {
        let items: &[String] = match self {
            OneOrMany::One(one) => std::slice::from_ref(one),
            OneOrMany::Many(many) => many,
        };
        items.iter().map(String::as_str)
    }
}

/// The parts of the JOSE header we look at before touching any key.
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

impl Validator {
    /// A validator for `config` that gets keys from `fetcher`. Keys are fetched on first use (or
    /// by [`Validator::refresh_keys`]).
    pub fn new(config: OidcConfig, fetcher: Arc<dyn JwksFetcher>) -> Self {
        // jsonwebtoken requires every allowed algorithm to match the key's family, so there is
        // one validation per algorithm; the token's algorithm is checked against the key first.
        // Issuers differ on a trailing slash (`https://tenant.auth0.com/` has one in `iss`);
        // the configured URL may be written either way, so both spellings of it are accepted.
        let issuer = config.issuer_url.trim_end_matches('/');
        let issuers = [issuer.to_owned(), format!("{issuer}/")];
        let validation_for = |alg: Algorithm| {
            let mut validation = Validation::new(alg);
            validation.set_issuer(&issuers);
            validation.set_audience(&[config.audience.as_str()]);
            validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            validation.validate_exp = true;
            validation.validate_nbf = true;
            validation.leeway = config.leeway.as_secs();
            validation
        };
        let rs256 = validation_for(Algorithm::RS256);
        let es256 = validation_for(Algorithm::ES256);
        Self {
            config,
            fetcher,
            rs256,
            es256,
            keys: ArcSwap::from_pointee(KeyCache::default()),
            refresh: Mutex::new(RefreshState::default()),
        }
    }

    /// The configuration this validator checks against.
    #[must_use]
    pub fn config(&self) -> &OidcConfig {
        &self.config
    }

    /// Fetches the issuer's keys now, replacing the cache (for example at startup, so that
    /// readiness can report an unreachable issuer). Not rate-limited.
    pub async fn refresh_keys(&self) -> Result<usize, OidcError> {
        let mut state = self.refresh.lock().await;
        self.fetch_into_cache(&mut state).await
    }

    /// Validates the value of an `Authorization` header (`Bearer <token>`).
    pub async fn validate_authorization_header(
        &self,
        header: Option<&str>,
    ) -> Result<Principal, OidcError> {
        let header = header.map(str::trim).filter(|h| !h.is_empty());
        let Some(header) = header else {
            return Err(OidcError::MissingToken);
        };
        if header.eq_ignore_ascii_case("bearer") {
            return Err(OidcError::MissingToken);
        }
        let (scheme, token) = header.split_once(' ').ok_or(OidcError::Malformed(
            "authorization header is not a bearer token",
        ))?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(OidcError::Malformed(
                "authorization header is not a bearer token",
            ));
        }
        self.validate(token.trim()).await
    }

    /// Validates a bearer token and returns the caller it identifies.
    pub async fn validate(&self, token: &str) -> Result<Principal, OidcError> {
        self.validate_id_token(token)
            .await
            .map(|token| token.principal)
    }

    /// Validates an ID token received in the browser login exactly like [`Validator::validate`]
    /// and also returns its `nonce` claim, which the caller must compare with the nonce it sent,
    /// and its expiry.
    pub async fn validate_id_token(&self, token: &str) -> Result<IdToken, OidcError> {
        if token.is_empty() {
            return Err(OidcError::MissingToken);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(OidcError::Malformed("token is too long"));
        }
        let header = read_header(token)?;
        let alg = match header.alg.as_str() {
            "RS256" => Algorithm::RS256,
            "ES256" => Algorithm::ES256,
            _ => return Err(OidcError::UnsupportedAlgorithm),
        };
        let key = self.key_for(header.kid.as_deref(), alg).await?;
        let validation = if alg == Algorithm::ES256 {
            &self.es256
        } else {
            &self.rs256
        };
        let data = jsonwebtoken::decode::<Claims>(token, &key, validation)
            .map_err(|e| map_jwt_error(e.kind()))?;
        let claims = data.claims;
        let role = self
            .config
            .roles
            .highest(
                claims
                    .roles
                    .iter()
                    .flat_map(OneOrMany::iter)
                    .chain(claims.groups.iter().flat_map(OneOrMany::iter)),
            )
            .ok_or(OidcError::NoRole)?;
        let principal = Principal {
            subject: claims.sub,
            name: claims.preferred_username.or(claims.email),
            role,
        };
        Ok(IdToken {
            principal,
            nonce: claims.nonce,
            expires_at: claims.exp,
        })
    }

    /// The key for `kid`, refetching the key set once (rate-limited) when it is not cached.
    async fn key_for(&self, kid: Option<&str>, alg: Algorithm) -> Result<DecodingKey, OidcError> {
        if let Some(key) = self.cached(kid, alg)? {
            if !self.keys_expired() {
                return Ok(key);
            }
            // The set is older than `max_key_age`: fetch it again (one request refetches; a
            // failure keeps the old set, retried after a pause), so withdrawn keys drop out.
            let mut state = self.refresh.lock().await;
            let may_retry = state
                .last_failure
                .is_none_or(|failed| failed.elapsed() >= RETRY_AFTER_FAILURE);
            if self.keys_expired() && may_retry {
                // Counts as the latest refetch: unknown key ids do not trigger another at once.
                state.last_refetch = Some(Instant::now());
                let _ = self.fetch_into_cache(&mut state).await;
            }
            drop(state);
            return self.cached(kid, alg)?.ok_or(OidcError::UnknownKey);
        }
        let mut state = self.refresh.lock().await;
        // Another request may have refetched while we waited for the lock.
        if let Some(key) = self.cached(kid, alg)? {
            return Ok(key);
        }
        if let Some(failed) = state.last_failure
            && failed.elapsed() < RETRY_AFTER_FAILURE.min(self.config.min_refetch_interval)
        {
            return Err(OidcError::JwksUnavailable("recent fetch failed".to_owned()));
        }
        if state.loaded {
            // Key rotation: one refetch per interval, however many unknown key ids arrive.
            if let Some(last) = state.last_refetch
                && last.elapsed() < self.config.min_refetch_interval
            {
                return Err(OidcError::UnknownKey);
            }
            state.last_refetch = Some(Instant::now());
        }
        self.fetch_into_cache(&mut state).await?;
        drop(state);
        self.cached(kid, alg)?.ok_or(OidcError::UnknownKey)
    }

    fn keys_expired(&self) -> bool {
        self.keys
            .load()
            .fetched_at
            .is_none_or(|at| at.elapsed() >= self.config.max_key_age)
    }

    fn cached(&self, kid: Option<&str>, alg: Algorithm) -> Result<Option<DecodingKey>, OidcError> {
        match self.keys.load().find(kid, alg) {
            Lookup::Found(key) => Ok(Some(key.clone())),
            // The key exists but is for another algorithm: an algorithm-confusion attempt or a
            // broken token; either way the signature cannot be valid.
            Lookup::WrongAlgorithm => Err(OidcError::BadSignature),
            Lookup::Missing => Ok(None),
        }
    }

    async fn fetch_into_cache(&self, state: &mut RefreshState) -> Result<usize, OidcError> {
        match self.fetcher.fetch_jwks(&self.config.issuer_url).await {
            Ok(jwks) => {
                let cache = KeyCache::from_jwks(&jwks);
                let count = cache.keys.len();
                tracing::debug!(keys = count, "fetched oidc signing keys");
                self.keys.store(Arc::new(cache));
                state.loaded = true;
                state.last_failure = None;
                Ok(count)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot fetch oidc signing keys");
                state.last_failure = Some(Instant::now());
                Err(e)
            }
        }
    }
}

/// Decodes the JOSE header without trusting it; only `alg` and `kid` are used.
fn read_header(token: &str) -> Result<RawHeader, OidcError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(OidcError::Malformed("token is not a signed jwt"));
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| OidcError::Malformed("token header is not base64url"))?;
    serde_json::from_slice(&bytes).map_err(|_| OidcError::Malformed("token header is not valid"))
}

fn map_jwt_error(kind: &JwtErrorKind) -> OidcError {
    match kind {
        JwtErrorKind::InvalidSignature
        | JwtErrorKind::InvalidEcdsaKey
        | JwtErrorKind::InvalidRsaKey(_)
        | JwtErrorKind::InvalidKeyFormat => OidcError::BadSignature,
        JwtErrorKind::InvalidIssuer => OidcError::WrongIssuer,
        JwtErrorKind::InvalidAudience => OidcError::WrongAudience,
        JwtErrorKind::ExpiredSignature => OidcError::Expired,
        JwtErrorKind::ImmatureSignature => OidcError::NotYetValid,
        JwtErrorKind::InvalidAlgorithm
        | JwtErrorKind::MissingAlgorithm
        | JwtErrorKind::UnsupportedAlgorithm
        | JwtErrorKind::InvalidAlgorithmName => OidcError::UnsupportedAlgorithm,
        JwtErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
            "iss" => OidcError::WrongIssuer,
            "aud" => OidcError::WrongAudience,
            "exp" => OidcError::Malformed("token has no expiry"),
            "sub" => OidcError::Malformed("token has no subject"),
            _ => OidcError::Malformed("token lacks a required claim"),
        },
        _ => OidcError::Malformed("token claims are not valid"),
    }
}

#[cfg(test)]
mod tests;
