//! The OIDC browser login: authorization code flow with PKCE (S256), `state` and `nonce`.
//!
//! `GET /oidc/login?return_to=/path` sends the browser to the issuer; the state, nonce, PKCE
//! verifier and return path travel in a signed, HttpOnly, 10-minute cookie (`aetherv_login`).
//! `GET /oidc/callback` checks the state, exchanges the code at the token endpoint
//! (`client_secret_post`), validates the ID token with the [`Validator`]
//! (audience = client id) and its nonce, then sets the signed session cookie
//! (`aetherv_session`, until the ID token expires and at most `SESSION_MAX_AGE`) and returns
//! to the saved path. `GET`/`POST /oidc/logout` end the session on this replica, clear the
//! cookie and send the browser to the issuer's `end_session_endpoint` when it has one.
//!
//! Errors answer `login_failed` (400 for a broken or forged callback, 401 when the issuer's
//! answer is not acceptable), never echoing the code, tokens or the client secret.

use std::sync::Arc;
use std::time::Duration;

use aetherv_winrm::Secret;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::sync::Mutex;

use super::Principal;
use super::middleware::{Authenticator, oidc_error};
use super::oidc::{
    ErrorKind, HttpPolicy, IdToken, OidcError, ProviderMetadata, ReqwestFetcher, Validator,
};
use super::session::{
    EndedSessions, LOGIN_COOKIE, LOGIN_LIFETIME, Purpose, SESSION_COOKIE, SESSION_LIFETIME,
    SessionClaims, SessionKey, ShortKeyError, clear_cookie, cookie, decode_session_claims,
    encode_session, principal_of, set_cookie, unix_now,
};
use crate::error::{ApiError, ErrorCode};

/// Where the browser login starts.
pub const LOGIN_PATH: &str = "/oidc/login";
/// Where the issuer sends the browser back.
pub const CALLBACK_PATH: &str = "/oidc/callback";
/// Where the browser session ends.
pub const LOGOUT_PATH: &str = "/oidc/logout";

/// Largest token endpoint answer accepted, in bytes.
const MAX_TOKEN_RESPONSE_BYTES: usize = 256 * 1024;

/// What the browser login needs.
#[derive(Debug, Clone)]
pub struct LoginConfig {
    /// The issuer URL (`OIDC_ISSUER_URL`).
    pub issuer_url: String,
    /// The client id (`OIDC_CLIENT_ID`); also the ID token's audience.
    pub client_id: String,
    /// The client secret, sent to the token endpoint (`client_secret_post`).
    pub client_secret: Secret,
    /// The callback URL registered at the issuer, e.g. `https://aetherv.example/oidc/callback`.
    /// When it is https, cookies are marked `Secure`.
    pub redirect_url: String,
    /// Scopes to ask for; `openid` is added when missing.
    pub scopes: Vec<String>,
    /// The key that signs cookies (at least 32 bytes); a random one when `None`, so sessions end
    /// when the process restarts.
    pub session_key: Option<Secret>,
    /// The key that signed cookies before the last rotation (`SESSION_KEY_PREVIOUS`): its
    /// sessions are still accepted until they expire. Rotating without it ends every session.
    pub previous_session_key: Option<Secret>,
    /// The longest a session lasts (`SESSION_MAX_AGE`); it never outlives the ID token.
    pub session_max_age: Duration,
    /// Which issuer URLs may be used (https, or http on loopback unless relaxed).
    pub http_policy: HttpPolicy,
}

impl LoginConfig {
    /// A configuration with the default session lifetime, no previous key and the strict
    /// [`HttpPolicy`].
    #[must_use]
    pub fn new(
        issuer_url: String,
        client_id: String,
        client_secret: Secret,
        redirect_url: String,
        scopes: Vec<String>,
        session_key: Option<Secret>,
    ) -> Self {
        Self {
            issuer_url,
            client_id,
            client_secret,
            redirect_url,
            scopes,
            session_key,
            previous_session_key: None,
            session_max_age: SESSION_LIFETIME,
            http_policy: HttpPolicy::default(),
        }
    }
}

/// Why a [`LoginFlow`] cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginSetupError {
    /// The session key is too short.
    #[error(transparent)]
    ShortKey(#[from] ShortKeyError),
    /// The redirect URL is not an absolute http(s) URL.
    #[error("oidc redirect url is not an absolute http(s) url")]
    BadRedirectUrl,
}

/// The browser login: configuration, cookie key and the cached discovery document.
pub struct LoginFlow {
    issuer_url: String,
    client_id: String,
    client_secret: Secret,
    redirect_url: String,
    scope: String,
    secure_cookies: bool,
    key: SessionKey,
    previous_key: Option<SessionKey>,
    session_max_age: Duration,
    ended: EndedSessions,
    http: reqwest::Client,
    fetcher: ReqwestFetcher,
    metadata: Mutex<Option<Arc<ProviderMetadata>>>,
}

impl std::fmt::Debug for LoginFlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginFlow")
            .field("issuer_url", &self.issuer_url)
            .field("client_id", &self.client_id)
            .field("redirect_url", &self.redirect_url)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// The state of one login attempt, kept in the signed login cookie.
#[derive(Debug, Serialize, Deserialize)]
struct Pending {
    state: String,
    nonce: String,
    verifier: String,
    return_to: String,
    exp: u64,
}

/// `?return_to=` of the login route.
#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    /// Local path to return to after the login.
    #[serde(default)]
    pub return_to: Option<String>,
}

/// The issuer's answer on the callback route.
#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    /// The authorization code.
    #[serde(default)]
    pub code: Option<String>,
    /// The state we sent.
    #[serde(default)]
    pub state: Option<String>,
    /// An OAuth error code, when the issuer refused.
    #[serde(default)]
    pub error: Option<String>,
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    id_token: Option<String>,
}

#[derive(Deserialize)]
struct TokenError {
    #[serde(default)]
    error: Option<String>,
}

impl LoginFlow {
    /// A login flow that talks to the issuer with `http` (build it with
    /// [`HttpPolicy::client`] so redirects cannot downgrade to plain http).
    pub fn new(config: LoginConfig, http: reqwest::Client) -> Result<Self, LoginSetupError> {
        let key = match &config.session_key {
            Some(secret) => SessionKey::new(secret.expose().as_bytes())?,
            None => SessionKey::random(),
        };
        let previous_key = match &config.previous_session_key {
            Some(secret) => Some(SessionKey::new(secret.expose().as_bytes())?),
            None => None,
        };
        let redirect =
            url::Url::parse(&config.redirect_url).map_err(|_| LoginSetupError::BadRedirectUrl)?;
        let secure_cookies = match redirect.scheme() {
            "https" => true,
            "http" => false,
            _ => return Err(LoginSetupError::BadRedirectUrl),
        };
        let mut scopes: Vec<&str> = config
            .scopes
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .collect();
        if !scopes.contains(&"openid") {
            scopes.insert(0, "openid");
        }
        let scope = scopes.join(" ");
        Ok(Self {
            issuer_url: config.issuer_url,
            client_id: config.client_id,
            client_secret: config.client_secret,
            redirect_url: config.redirect_url,
            scope,
            secure_cookies,
            key,
            previous_key,
            session_max_age: config.session_max_age,
            ended: EndedSessions::default(),
            fetcher: ReqwestFetcher::with_client(http.clone(), config.http_policy),
            http,
            metadata: Mutex::new(None),
        })
    }

    /// The key that signs the session and login cookies.
    #[must_use]
    pub fn session_key(&self) -> &SessionKey {
        &self.key
    }

    /// The session a cookie value holds: signed by the current key or, until it expires, by
    /// the previous one; not ended by logout on this replica.
    fn session(&self, value: &str, now: u64) -> Option<SessionClaims> {
        let claims = decode_session_claims(&self.key, value, now).or_else(|| {
            self.previous_key
                .as_ref()
                .and_then(|key| decode_session_claims(key, value, now))
        })?;
        (!self.ended.is_ended(&claims.sid)).then_some(claims)
    }

    /// The caller a session cookie value names, if the session is valid at `now`: genuine,
    /// signed by the current or previous key, not expired and not ended by logout.
    #[must_use]
    pub fn session_principal(&self, value: &str, now: u64) -> Option<Principal> {
        principal_of(self.session(value, now)?)
    }

    /// How long a session made at `now` from an ID token expiring at `token_expires_at` may
    /// last: until the token expires, and never longer than `SESSION_MAX_AGE`.
    #[must_use]
    pub fn session_lifetime(&self, now: u64, token_expires_at: u64) -> Duration {
        let token_left = Duration::from_secs(token_expires_at.saturating_sub(now));
        token_left.min(self.session_max_age)
    }

    /// Whether cookies carry `Secure` (the redirect URL is https).
    #[must_use]
    pub fn secure_cookies(&self) -> bool {
        self.secure_cookies
    }

    /// The issuer's discovery document, fetched once and cached (failures are not cached).
    pub async fn provider_metadata(&self) -> Result<Arc<ProviderMetadata>, OidcError> {
        let mut cached = self.metadata.lock().await;
        if let Some(metadata) = cached.as_ref() {
            return Ok(Arc::clone(metadata));
        }
        let metadata = Arc::new(
            self.fetcher
                .fetch_provider_metadata(&self.issuer_url)
                .await?,
        );
        *cached = Some(Arc::clone(&metadata));
        Ok(metadata)
    }

    /// `GET /oidc/login`: the redirect to the issuer and the login cookie.
    async fn start(&self, return_to: Option<&str>) -> Result<Response, ApiError> {
        let metadata = self.provider_metadata().await.map_err(|e| oidc_error(&e))?;
        let pending = Pending {
            state: random_token(),
            nonce: random_token(),
            verifier: random_token(),
            return_to: safe_return_path(return_to).to_owned(),
            exp: unix_now().saturating_add(LOGIN_LIFETIME.as_secs()),
        };
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(pending.verifier.as_bytes()));
        let mut target = url::Url::parse(&metadata.authorization_endpoint).map_err(|_| {
            unavailable("discovery document has an unusable authorization_endpoint")
        })?;
        target
            .query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.client_id)
            .append_pair("redirect_uri", &self.redirect_url)
            .append_pair("scope", &self.scope)
            .append_pair("state", &pending.state)
            .append_pair("nonce", &pending.nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        let value = self
            .key
            .sign_json(Purpose::Login, &pending)
            .ok_or_else(|| ApiError::internal("cannot encode the login state"))?;
        let mut response = redirect(target.as_str())?;
        response.headers_mut().append(
            header::SET_COOKIE,
            set_cookie(LOGIN_COOKIE, &value, LOGIN_LIFETIME, self.secure_cookies),
        );
        Ok(response)
    }

    /// `GET /oidc/callback`: checks the answer, exchanges the code, sets the session.
    async fn finish(
        &self,
        validator: &Validator,
        headers: &HeaderMap,
        query: CallbackQuery,
    ) -> Result<Response, ApiError> {
        let pending: Pending = cookie(headers, LOGIN_COOKIE)
            .and_then(|value| self.key.verify_json(Purpose::Login, value))
            .filter(|p: &Pending| p.exp > unix_now())
            .ok_or_else(|| {
                bad_request("no login in progress or it has expired; start again at /oidc/login")
            })?;
        if let Some(error) = query.error.as_deref() {
            let code = if is_oauth_error_code(error) {
                error
            } else {
                "unknown_error"
            };
            return Err(bad_request(format!(
                "the identity provider refused the login: {code}"
            )));
        }
        let state = query
            .state
            .as_deref()
            .ok_or_else(|| bad_request("the callback has no state"))?;
        if !constant_time_eq(state.as_bytes(), pending.state.as_bytes()) {
            return Err(bad_request(
                "the callback state does not match the login in progress",
            ));
        }
        let code = query
            .code
            .as_deref()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| bad_request("the callback has no authorization code"))?;
        let login = self.exchange(validator, code, &pending.verifier).await?;
        self.session_response(login, &pending)
    }

    fn session_response(&self, login: LoggedIn, pending: &Pending) -> Result<Response, ApiError> {
        if !login
            .nonce
            .as_deref()
            .is_some_and(|n| constant_time_eq(n.as_bytes(), pending.nonce.as_bytes()))
        {
            return Err(refused("the id token's nonce does not match the login"));
        }
        let now = unix_now();
        let lifetime = self.session_lifetime(now, login.expires_at);
        if lifetime.is_zero() {
            return Err(refused("the id token has already expired"));
        }
        let value = encode_session(&self.key, &login.principal, now, lifetime)
            .ok_or_else(|| ApiError::internal("cannot encode the session"))?;
        tracing::info!(
            subject = %login.principal.subject,
            role = %login.principal.role,
            "browser login"
        );
        let mut response = redirect(&pending.return_to)?;
        let headers = response.headers_mut();
        headers.append(
            header::SET_COOKIE,
            set_cookie(SESSION_COOKIE, &value, lifetime, self.secure_cookies),
        );
        headers.append(
            header::SET_COOKIE,
            clear_cookie(LOGIN_COOKIE, self.secure_cookies),
        );
        Ok(response)
    }

    /// Exchanges `code` at the token endpoint and validates the returned ID token.
    async fn exchange(
        &self,
        validator: &Validator,
        code: &str,
        verifier: &str,
    ) -> Result<LoggedIn, ApiError> {
        let metadata = self.provider_metadata().await.map_err(|e| oidc_error(&e))?;
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.redirect_url.as_str()),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.expose()),
            ("code_verifier", verifier),
        ];
        let response = self
            .http
            .post(&metadata.token_endpoint)
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| {
                unavailable(format!(
                    "cannot reach the token endpoint: {}",
                    e.without_url()
                ))
            })?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| {
            unavailable(format!(
                "cannot read the token endpoint's answer: {}",
                e.without_url()
            ))
        })?;
        if body.len() > MAX_TOKEN_RESPONSE_BYTES {
            return Err(refused("the token endpoint's answer is too large"));
        }
        if !status.is_success() {
            let code = serde_json::from_slice::<TokenError>(&body)
                .ok()
                .and_then(|e| e.error)
                .filter(|e| is_oauth_error_code(e))
                .unwrap_or_else(|| "no error code".to_owned());
            return Err(refused(format!(
                "the token endpoint refused the code: http {} ({code})",
                status.as_u16()
            )));
        }
        let tokens: TokenResponse = serde_json::from_slice(&body)
            .map_err(|_| refused("the token endpoint's answer is not valid json"))?;
        let id_token = tokens
            .id_token
            .ok_or_else(|| refused("the token endpoint returned no id token"))?;
        let IdToken {
            principal,
            nonce,
            expires_at,
        } = validator
            .validate_id_token(&id_token)
            .await
            .map_err(|e| match e.kind() {
                ErrorKind::Unauthorized => refused(format!("the id token is not valid: {e}")),
                ErrorKind::Forbidden | ErrorKind::ServiceUnavailable => oidc_error(&e),
            })?;
        Ok(LoggedIn {
            principal,
            nonce,
            expires_at,
        })
    }

    /// `GET`/`POST /oidc/logout`: ends the session on this replica (a copied cookie stops
    /// working), clears the cookie, and sends the browser to the issuer's
    /// `end_session_endpoint` (RP-initiated logout) when it has one, else to `/`.
    async fn logout(&self, headers: &HeaderMap) -> Result<Response, ApiError> {
        let now = unix_now();
        if let Some(claims) = cookie(headers, SESSION_COOKIE).and_then(|v| self.session(v, now)) {
            self.ended.end(&claims.sid, claims.exp, now);
            tracing::info!(subject = %claims.sub, "browser logout");
        }
        let target = match self.provider_metadata().await {
            Ok(metadata) => metadata
                .end_session_endpoint
                .as_deref()
                .and_then(|endpoint| self.end_session_url(endpoint)),
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "logout: cannot read the issuer's discovery document; the session ends \
                     here only"
                );
                None
            }
        };
        let mut response = redirect(target.as_deref().unwrap_or("/"))?;
        response.headers_mut().append(
            header::SET_COOKIE,
            clear_cookie(SESSION_COOKIE, self.secure_cookies),
        );
        Ok(response)
    }

    /// The RP-initiated logout URL: the issuer's endpoint with our client id and the address
    /// to come back to (the root of the redirect URL's origin).
    fn end_session_url(&self, endpoint: &str) -> Option<String> {
        let mut target = url::Url::parse(endpoint).ok()?;
        let mut back = url::Url::parse(&self.redirect_url).ok()?;
        back.set_path("/");
        back.set_query(None);
        target
            .query_pairs_mut()
            .append_pair("client_id", &self.client_id)
            .append_pair("post_logout_redirect_uri", back.as_str());
        Some(target.into())
    }
}

/// The outcome of a code exchange: the caller, the ID token's nonce and its expiry.
struct LoggedIn {
    principal: Principal,
    nonce: Option<String>,
    expires_at: u64,
}

/// The browser login routes (`/oidc/login`, `/oidc/callback`, `/oidc/logout`), with the
/// [`Authenticator`] as state: merge them into the app router before its `.with_state(auth)`,
/// or call `.with_state(auth)` on them directly. Without a configured login flow they answer
/// 404 `not_found`.
pub fn routes() -> Router<Arc<Authenticator>> {
    Router::new()
        .route(LOGIN_PATH, get(login_handler))
        .route(CALLBACK_PATH, get(callback_handler))
        .route(LOGOUT_PATH, get(logout_handler).post(logout_handler))
}

fn flow(auth: &Authenticator) -> Result<(&LoginFlow, &Validator), ApiError> {
    match (auth.login(), auth.validator()) {
        (Some(login), Some(validator)) => Ok((login, validator)),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            "browser login is not configured",
        )),
    }
}

async fn login_handler(
    State(auth): State<Arc<Authenticator>>,
    Query(query): Query<LoginQuery>,
) -> Response {
    match flow(&auth) {
        Ok((login, _)) => login
            .start(query.return_to.as_deref())
            .await
            .unwrap_or_else(IntoResponse::into_response),
        Err(e) => e.into_response(),
    }
}

async fn callback_handler(
    State(auth): State<Arc<Authenticator>>,
    headers: HeaderMap,
    Query(query): Query<CallbackQuery>,
) -> Response {
    match flow(&auth) {
        Ok((login, validator)) => login
            .finish(validator, &headers, query)
            .await
            .unwrap_or_else(IntoResponse::into_response),
        Err(e) => e.into_response(),
    }
}

async fn logout_handler(State(auth): State<Arc<Authenticator>>, headers: HeaderMap) -> Response {
    match flow(&auth) {
        Ok((login, _)) => login
            .logout(&headers)
            .await
            .unwrap_or_else(IntoResponse::into_response),
        Err(e) => e.into_response(),
    }
}

/// `return_to` if it is a local absolute path (starts with `/`, not `//` or `/\\`, no control
/// characters), else `/`: the login never redirects to another site.
#[must_use]
pub fn safe_return_path(return_to: Option<&str>) -> &str {
    match return_to {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && !path.starts_with("/\\")
                && path.len() <= 2048
                && !path.chars().any(|c| c.is_control() || c == '\\') =>
        {
            path
        }
        _ => "/",
    }
}

/// 32 random bytes, base64url (43 characters).
fn random_token() -> String {
    let mut bytes = [0_u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0_u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether an issuer-supplied OAuth error code is safe to show (short, `[a-z_]` only).
fn is_oauth_error_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= 64
        && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

fn redirect(location: &str) -> Result<Response, ApiError> {
    let location = HeaderValue::from_str(location)
        .map_err(|_| ApiError::internal("redirect target is not a valid header value"))?;
    let mut response = StatusCode::FOUND.into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, location);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// 400 `login_failed`: the callback itself is broken, forged or stale.
fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::LoginFailed, message)
}

/// 401 `login_failed`: the issuer's answer is not acceptable.
fn refused(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::LoginFailed, message)
}

/// 503 `auth_unavailable`: the issuer cannot be reached.
fn unavailable(message: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::AuthUnavailable,
        message,
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn return_paths_stay_local() {
        assert_eq!(
            safe_return_path(Some("/vms?state=Running")),
            "/vms?state=Running"
        );
        assert_eq!(safe_return_path(Some("/")), "/");
        for bad in [
            "//evil.test",
            "/\\evil.test",
            "https://evil.test",
            "evil",
            "",
            "/a\\b",
            "/a\nb",
        ] {
            assert_eq!(safe_return_path(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(safe_return_path(None), "/");
    }

    #[test]
    fn oauth_error_codes_are_filtered() {
        assert!(is_oauth_error_code("access_denied"));
        assert!(!is_oauth_error_code("<script>"));
        assert!(!is_oauth_error_code(""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn short_session_keys_are_refused() {
        let config = LoginConfig {
            issuer_url: "https://issuer.test".into(),
            client_id: "c".into(),
            client_secret: Secret::new("s"),
            redirect_url: "https://app.test/oidc/callback".into(),
            scopes: vec!["profile".into()],
            session_key: Some(Secret::new("too short")),
            previous_session_key: None,
            session_max_age: SESSION_LIFETIME,
            http_policy: HttpPolicy::default(),
        };
        let err = LoginFlow::new(config.clone(), reqwest::Client::new()).unwrap_err();
        assert_eq!(err, LoginSetupError::ShortKey(ShortKeyError(9)));
        let ok = LoginFlow::new(
            LoginConfig {
                session_key: Some(Secret::new("k".repeat(32))),
                ..config.clone()
            },
            reqwest::Client::new(),
        );
        let ok = ok.unwrap();
        assert!(ok.secure_cookies());
        assert_eq!(ok.scope, "openid profile");
        let debug = format!("{ok:?}");
        assert!(
            !debug.contains("kkkk") && !debug.contains("\"s\""),
            "{debug}"
        );
        let bad = LoginFlow::new(
            LoginConfig {
                redirect_url: "ftp://x".into(),
                session_key: None,
                ..config
            },
            reqwest::Client::new(),
        );
        assert_eq!(bad.unwrap_err(), LoginSetupError::BadRedirectUrl);
    }

    #[test]
    fn rotation_keeps_the_previous_keys_sessions_and_ends_all_without_it() {
        let old = "o".repeat(32);
        let new = "n".repeat(32);
        let base = LoginConfig::new(
            "https://issuer.test".into(),
            "c".into(),
            Secret::new("s"),
            "https://app.test/oidc/callback".into(),
            vec![],
            Some(Secret::new(new.clone())),
        );
        let who = Principal {
            subject: "u-1".into(),
            name: None,
            role: super::super::Role::Admin,
        };
        let now = unix_now();
        let old_cookie = encode_session(
            &SessionKey::new(old.as_bytes()).unwrap(),
            &who,
            now,
            SESSION_LIFETIME,
        )
        .unwrap();
        let rotated = LoginFlow::new(
            LoginConfig {
                previous_session_key: Some(Secret::new(old)),
                ..base.clone()
            },
            reqwest::Client::new(),
        )
        .unwrap();
        assert_eq!(
            rotated.session_principal(&old_cookie, now),
            Some(who.clone())
        );
        let fresh = encode_session(rotated.session_key(), &who, now, SESSION_LIFETIME).unwrap();
        assert_eq!(rotated.session_principal(&fresh, now), Some(who.clone()));
        // Without the previous key, every older session has ended.
        let cut = LoginFlow::new(base, reqwest::Client::new()).unwrap();
        assert_eq!(cut.session_principal(&old_cookie, now), None);
        assert_eq!(cut.session_principal(&fresh, now), Some(who));
    }

    #[test]
    fn a_session_never_outlives_its_token_or_the_maximum() {
        let flow = LoginFlow::new(
            LoginConfig {
                session_max_age: Duration::from_secs(3600),
                ..LoginConfig::new(
                    "https://issuer.test".into(),
                    "c".into(),
                    Secret::new("s"),
                    "https://app.test/oidc/callback".into(),
                    vec![],
                    None,
                )
            },
            reqwest::Client::new(),
        )
        .unwrap();
        assert_eq!(flow.session_lifetime(1000, 1300), Duration::from_secs(300));
        assert_eq!(
            flow.session_lifetime(1000, 100_000),
            Duration::from_secs(3600)
        );
        assert_eq!(flow.session_lifetime(1000, 900), Duration::ZERO);
    }
}
