//! Request authentication and the OIDC browser login against a local issuer on 127.0.0.1
//! (discovery, JWKS and a token endpoint that checks the client secret, code, redirect URI and
//! PKCE verifier): the role matrix through `require_role`, disabled mode, the full login, and
//! logout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use aetherv_server::auth::oidc::{HttpPolicy, OidcConfig, ReqwestFetcher, RoleNames, Validator};
use aetherv_server::auth::{
    Authenticator, LoginConfig, LoginFlow, Principal, Role, login, me, require_role, required_role,
    required_role_at,
};
use aetherv_winrm::Secret;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs1::{EncodeRsaPrivateKey, LineEnding};
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tower::ServiceExt as _;

const CLIENT_ID: &str = "aetherv-web";
const CLIENT_SECRET: &str = "s3cret-client-value";
const REDIRECT: &str = "http://aetherv.test/oidc/callback";

struct RsaKey {
    encoding: EncodingKey,
    n: String,
    e: String,
}

/// Two RSA-2048 keys, generated once per test binary (slow in debug builds).
fn rsa_keys() -> &'static [RsaKey; 2] {
    static KEYS: OnceLock<[RsaKey; 2]> = OnceLock::new();
    KEYS.get_or_init(|| {
        let make = || {
            let private = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
            let public = private.to_public_key();
            RsaKey {
                encoding: EncodingKey::from_rsa_pem(
                    private.to_pkcs1_pem(LineEnding::LF).unwrap().as_bytes(),
                )
                .unwrap(),
                n: URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
                e: URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
            }
        };
        [make(), make()]
    })
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .try_into()
        .unwrap()
}

fn sign(claims: &Value, key: &RsaKey) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("k1".to_owned());
    jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
}

/// What the token endpoint will accept for the next code: the code, the PKCE challenge it was
/// issued for, the nonce to put in the ID token and the roles to grant.
#[derive(Clone, Default)]
struct Grant {
    code: String,
    challenge: String,
    nonce: String,
    roles: Vec<String>,
}

#[derive(Clone)]
struct IssuerState {
    issuer: String,
    grant: Arc<Mutex<Option<Grant>>>,
}

struct Issuer {
    state: IssuerState,
}

async fn token_endpoint(State(s): State<IssuerState>, body: Bytes) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let refuse = |error: &str| {
        axum::response::IntoResponse::into_response((
            StatusCode::BAD_REQUEST,
            Json(json!({"error": error})),
        ))
    };
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
    if field("client_id") != CLIENT_ID || field("client_secret") != CLIENT_SECRET {
        return refuse("invalid_client");
    }
    let Some(grant) = s.grant.lock().unwrap().take() else {
        return refuse("invalid_grant");
    };
    if field("grant_type") != "authorization_code"
        || field("code") != grant.code
        || field("redirect_uri") != REDIRECT
    {
        return refuse("invalid_grant");
    }
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(field("code_verifier").as_bytes()));
    if challenge != grant.challenge {
        return refuse("invalid_grant");
    }
    let claims = json!({
        "iss": s.issuer, "aud": CLIENT_ID, "sub": "u-7", "preferred_username": "bob",
        "exp": now() + 300, "iat": now(), "nonce": grant.nonce, "roles": grant.roles,
    });
    let id_token = sign(&claims, &rsa_keys()[0]);
    axum::response::IntoResponse::into_response(Json(
        json!({"access_token": "opaque", "token_type": "Bearer", "id_token": id_token}),
    ))
}

impl Issuer {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let state = IssuerState {
            issuer,
            grant: Arc::new(Mutex::new(None)),
        };
        let router = Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(|State(s): State<IssuerState>| async move {
                    Json(json!({
                        "issuer": s.issuer,
                        "jwks_uri": format!("{}/jwks", s.issuer),
                        "authorization_endpoint": format!("{}/authorize?tenant=t1", s.issuer),
                        "token_endpoint": format!("{}/token", s.issuer),
                        "end_session_endpoint": format!("{}/logout?tenant=t1", s.issuer),
                    }))
                }),
            )
            .route(
                "/jwks",
                get(|| async {
                    let k = &rsa_keys()[0];
                    Json(json!({"keys": [
                        {"kty": "RSA", "n": k.n, "e": k.e, "kid": "k1", "use": "sig", "alg": "RS256"}
                    ]}))
                }),
            )
            .route("/token", post(token_endpoint))
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { state }
    }

    fn url(&self) -> &str {
        &self.state.issuer
    }

    fn validator(&self) -> Arc<Validator> {
        let config = OidcConfig::new(
            self.url(),
            CLIENT_ID,
            RoleNames {
                reader: Some("aetherv-reader".into()),
                writer: Some("aetherv-writer".into()),
                admin: Some("aetherv-admin".into()),
                role_name: None,
            },
        );
        Arc::new(Validator::new(
            config,
            Arc::new(ReqwestFetcher::new().unwrap()),
        ))
    }

    fn login_flow(&self) -> Arc<LoginFlow> {
        let config = LoginConfig::new(
            self.url().to_owned(),
            CLIENT_ID.to_owned(),
            Secret::new(CLIENT_SECRET),
            REDIRECT.to_owned(),
            vec!["openid".into(), "profile".into()],
            Some(Secret::new("0123456789abcdef0123456789abcdef")),
        );
        Arc::new(LoginFlow::new(config, reqwest::Client::new()).unwrap())
    }

    fn token(&self, roles: &[&str]) -> String {
        sign(&self.claims(roles), &rsa_keys()[0])
    }

    fn claims(&self, roles: &[&str]) -> Value {
        json!({
            "iss": self.url(), "aud": CLIENT_ID, "sub": "u-42", "preferred_username": "alice",
            "exp": now() + 600, "iat": now(), "roles": roles,
        })
    }
}

/// A tiny API behind `require_role`, plus `/api/v1/me` and the login routes.
fn app(auth: Arc<Authenticator>) -> Router {
    let api = Router::new()
        .route(
            "/api/v1/things",
            get(|Extension(p): Extension<Principal>| async move { p.subject })
                .post(|Extension(p): Extension<Principal>| async move { p.role.to_string() }),
        )
        .route("/api/v1/me", get(me))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&auth),
            require_role,
        ));
    api.merge(login::routes()).with_state(auth)
}

async fn call(
    app: &Router,
    method: Method,
    uri: &str,
    headers: &[(header::HeaderName, String)],
) -> (StatusCode, HeaderMap, Value) {
    let request_method = method.clone();
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let path = uri.split('?').next().unwrap_or(uri).to_owned();
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    // Answers of documented routes are checked against the OpenAPI document (this test's
    // router adds test-only routes without the application's error layers).
    support::contract::check_documented(&request_method, &path, status, &headers, &body);
    let value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    (status, headers, value)
}

fn bearer(token: &str) -> Vec<(header::HeaderName, String)> {
    vec![(header::AUTHORIZATION, format!("Bearer {token}"))]
}

fn with(mut claims: Value, field: &str, value: Value) -> Value {
    claims[field] = value;
    claims
}

#[tokio::test]
async fn role_matrix() {
    let issuer = Issuer::start().await;
    let auth = Arc::new(Authenticator::oidc(issuer.validator(), None));
    assert!(auth.enabled());
    let app = app(auth);
    let [k1, k2] = rsa_keys();
    for (method, role) in [
        (Method::GET, Role::Reader),
        (Method::HEAD, Role::Reader),
        (Method::OPTIONS, Role::Reader),
        (Method::POST, Role::Writer),
        (Method::PUT, Role::Writer),
        (Method::DELETE, Role::Writer),
        (Method::PATCH, Role::Writer),
    ] {
        assert_eq!(required_role(&method), role, "{method}");
    }

    // No token: 401 with a challenge.
    let (status, headers, body) = call(&app, Method::GET, "/api/v1/things", &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
    assert_eq!(body["error"]["code"], "unauthenticated");
    assert_eq!(body["error"]["message"], "missing bearer token or session");

    // Bad signature, wrong issuer, wrong audience, expired: 401, token never echoed.
    let claims = issuer.claims(&["aetherv-admin"]);
    let bad = [
        sign(&claims, k2),
        sign(&with(claims.clone(), "iss", json!("https://evil.test")), k1),
        sign(&with(claims.clone(), "aud", json!("other")), k1),
        sign(&with(claims.clone(), "exp", json!(now() - 3600)), k1),
        "garbage".to_owned(),
    ];
    for token in &bad {
        let (status, headers, body) =
            call(&app, Method::GET, "/api/v1/things", &bearer(token)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
        assert_eq!(body["error"]["code"], "unauthenticated");
        assert!(!body.to_string().contains(token.as_str()));
    }

    // Reader: GET ok, POST forbidden with a message naming both roles.
    let reader = issuer.token(&["aetherv-reader"]);
    let (status, _, body) = call(&app, Method::GET, "/api/v1/things", &bearer(&reader)).await;
    assert_eq!((status, body), (StatusCode::OK, json!("u-42")));
    let (status, _, body) = call(&app, Method::POST, "/api/v1/things", &bearer(&reader)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "forbidden");
    assert_eq!(
        body["error"]["message"],
        "this action needs the writer role; you have reader"
    );

    // Writer and admin may POST.
    for (role, expected) in [("aetherv-writer", "writer"), ("aetherv-admin", "admin")] {
        let token = issuer.token(&[role]);
        let (status, _, body) = call(&app, Method::POST, "/api/v1/things", &bearer(&token)).await;
        assert_eq!((status, body), (StatusCode::OK, json!(expected)));
    }

    // A valid token granting no role: 403.
    let none = issuer.token(&["staff"]);
    let (status, _, body) = call(&app, Method::GET, "/api/v1/things", &bearer(&none)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "forbidden");

    // /me without browser login: no login/logout urls.
    let (status, _, body) = call(&app, Method::GET, "/api/v1/me", &bearer(&reader)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"auth_enabled": true, "subject": "u-42", "name": "alice", "role": "reader",
               "login_url": null, "logout_url": null})
    );
    // The login routes answer 404 without a login flow.
    let (status, _, _) = call(&app, Method::GET, "/oidc/login", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn orphan_actions_need_the_admin_role() {
    for (method, path, role) in [
        (Method::POST, "/api/v1/vms/{id}/orphan/remove", Role::Admin),
        (
            Method::POST,
            "/api/v1/vms/6f1c1a52-7d9e-4c4e-9a53-2b0f3c9d8e71/orphan/adopt",
            Role::Admin,
        ),
        (Method::GET, "/api/v1/vms/{id}/orphan/remove", Role::Reader),
        (
            Method::POST,
            "/api/v1/vms/{id}/actions/{action}",
            Role::Writer,
        ),
        (Method::POST, "/api/v1/vms/delete", Role::Writer),
        (Method::GET, "/api/v1/vms/{id}", Role::Reader),
    ] {
        assert_eq!(required_role_at(&method, path), role, "{method} {path}");
    }
    let issuer = Issuer::start().await;
    let auth = Arc::new(Authenticator::oidc(issuer.validator(), None));
    let accepted = || async {
        (
            StatusCode::ACCEPTED,
            Json(json!({"job_id": "6f1c1a52-7d9e-4c4e-9a53-2b0f3c9d8e71", "status": "queued"})),
        )
    };
    let app = Router::new()
        .route("/api/v1/vms/{id}/orphan/remove", post(accepted))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&auth),
            require_role,
        ))
        .with_state(auth);
    let uri = "/api/v1/vms/6f1c1a52-7d9e-4c4e-9a53-2b0f3c9d8e71/orphan/remove";
    let writer = issuer.token(&["aetherv-writer"]);
    let (status, _, body) = call(&app, Method::POST, uri, &bearer(&writer)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        body["error"]["message"],
        "this action needs the admin role; you have writer"
    );
    let admin = issuer.token(&["aetherv-admin"]);
    let (status, _, body) = call(&app, Method::POST, uri, &bearer(&admin)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
}

#[tokio::test]
async fn unreachable_issuer_is_503() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let validator = Validator::new(
        OidcConfig::new(url, CLIENT_ID, RoleNames::default()),
        Arc::new(ReqwestFetcher::new().unwrap()),
    );
    let app = app(Arc::new(Authenticator::oidc(Arc::new(validator), None)));
    let token = sign(&json!({"sub": "x"}), &rsa_keys()[0]);
    let (status, _, body) = call(&app, Method::GET, "/api/v1/things", &bearer(&token)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"]["code"], "auth_unavailable");
}

#[tokio::test]
async fn disabled_mode_allows_everything_as_admin() {
    let auth = Arc::new(Authenticator::disabled("no issuer configured"));
    assert!(!auth.enabled());
    assert!(auth.login().is_none());
    let app = app(auth);
    let (status, _, body) = call(&app, Method::DELETE, "/api/v1/things", &[]).await;
    // The route has no DELETE; getting past the middleware to axum's 405 proves it allowed it.
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    let (status, _, body) = call(&app, Method::POST, "/api/v1/things", &[]).await;
    assert_eq!((status, body), (StatusCode::OK, json!("admin")));
    let (status, _, body) = call(&app, Method::GET, "/api/v1/me", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"auth_enabled": false, "subject": "anonymous", "name": "authentication disabled",
               "role": "admin", "login_url": null, "logout_url": null})
    );
}

/// The `name=value` of a `Set-Cookie` header for `name`, and the whole header.
fn set_cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
}

fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

struct Started {
    login_cookie: String,
    params: HashMap<String, String>,
}

async fn start_login(app: &Router, issuer: &Issuer, return_to: &str) -> Started {
    let uri = format!("/oidc/login?return_to={}", urlencode(return_to));
    let (status, headers, _) = call(app, Method::GET, &uri, &[]).await;
    assert_eq!(status, StatusCode::FOUND);
    let location = url::Url::parse(headers[header::LOCATION].to_str().unwrap()).unwrap();
    assert!(
        location
            .as_str()
            .starts_with(&format!("{}/authorize?", issuer.url()))
    );
    let params: HashMap<String, String> = location.query_pairs().into_owned().collect();
    let set = set_cookie(&headers, "aetherv_login").expect("login cookie");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Lax") && set.contains("Max-Age=600")
    );
    assert!(!set.contains("Secure"), "http redirect url");
    Started {
        login_cookie: cookie_pair(set),
        params,
    }
}

fn urlencode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

fn grant(issuer: &Issuer, started: &Started, code: &str, roles: &[&str]) {
    *issuer.state.grant.lock().unwrap() = Some(Grant {
        code: code.to_owned(),
        challenge: started.params["code_challenge"].clone(),
        nonce: started.params["nonce"].clone(),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
    });
}

#[tokio::test]
async fn browser_login_round_trip() {
    let issuer = Issuer::start().await;
    let auth = Arc::new(Authenticator::oidc(
        issuer.validator(),
        Some(issuer.login_flow()),
    ));
    let app = app(auth);

    let started = start_login(&app, &issuer, "/vms?state=Running").await;
    let p = &started.params;
    assert_eq!(p["tenant"], "t1", "existing query of the endpoint kept");
    assert_eq!(p["response_type"], "code");
    assert_eq!(p["client_id"], CLIENT_ID);
    assert_eq!(p["redirect_uri"], REDIRECT);
    assert_eq!(p["scope"], "openid profile");
    assert_eq!(p["code_challenge_method"], "S256");
    assert_eq!(p["code_challenge"].len(), 43);
    assert!(p["state"].len() >= 32 && p["nonce"].len() >= 32);
    assert_ne!(p["state"], p["nonce"]);
    assert!(!p.values().any(|v| v.contains(CLIENT_SECRET)));

    // A wrong state is refused, and nothing is exchanged.
    grant(&issuer, &started, "code-1", &["aetherv-writer"]);
    let cookie = vec![(header::COOKIE, started.login_cookie.clone())];
    let (status, headers, body) = call(
        &app,
        Method::GET,
        "/oidc/callback?code=code-1&state=forged",
        &cookie,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "login_failed");
    assert!(set_cookie(&headers, "aetherv_session").is_none());
    // No login cookie at all.
    let uri = format!("/oidc/callback?code=code-1&state={}", p["state"]);
    let (status, _, body) = call(&app, Method::GET, &uri, &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "login_failed");
    // The issuer reports an error.
    let uri = format!("/oidc/callback?error=access_denied&state={}", p["state"]);
    let (status, _, body) = call(&app, Method::GET, &uri, &cookie).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("access_denied")
    );

    // The right state: session cookie set, login cookie cleared, back to return_to.
    let uri = format!(
        "/oidc/callback?code=code-1&state={}",
        urlencode(&p["state"])
    );
    let (status, headers, body) = call(&app, Method::GET, &uri, &cookie).await;
    assert_eq!(status, StatusCode::FOUND, "{body}");
    assert_eq!(headers[header::LOCATION], "/vms?state=Running");
    let session = set_cookie(&headers, "aetherv_session").expect("session cookie");
    assert!(session.contains("HttpOnly") && session.contains("SameSite=Lax"));
    // The session lasts as long as the ID token (300 s here), not the 8 h maximum.
    assert!(session.contains("Path=/"));
    let max_age: u64 = session
        .split("; ")
        .find_map(|part| part.strip_prefix("Max-Age="))
        .unwrap()
        .parse()
        .unwrap();
    assert!((295..=300).contains(&max_age), "{session}");
    assert!(
        set_cookie(&headers, "aetherv_login")
            .unwrap()
            .contains("Max-Age=0")
    );
    let session_cookie = vec![(header::COOKIE, format!("x=1; {}", cookie_pair(session)))];

    // The session authenticates /me and carries the role; writer may POST.
    let (status, _, body) = call(&app, Method::GET, "/api/v1/me", &session_cookie).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"auth_enabled": true, "subject": "u-7", "name": "bob", "role": "writer",
               "login_url": "/oidc/login", "logout_url": "/oidc/logout"})
    );
    let (status, _, _) = call(&app, Method::POST, "/api/v1/things", &session_cookie).await;
    assert_eq!(status, StatusCode::OK);

    // A tampered session is no session.
    let mut tampered = session_cookie[0].1.clone();
    tampered.push('x');
    let (status, _, _) = call(
        &app,
        Method::GET,
        "/api/v1/me",
        &[(header::COOKIE, tampered)],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Replaying the login cookie with another state fails; with the same state the code is spent.
    let (status, _, body) = call(
        &app,
        Method::GET,
        "/oidc/callback?code=code-1&state=another",
        &cookie,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "login_failed");
    let (status, _, body) = call(&app, Method::GET, &uri, &cookie).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "login_failed");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("invalid_grant")
    );
    assert!(!body.to_string().contains(CLIENT_SECRET));

    // Logout clears the session cookie (GET and POST) and sends the browser to the issuer's
    // end_session_endpoint (RP-initiated logout), which then returns to our root.
    for method in [Method::GET, Method::POST] {
        let (status, headers, _) = call(&app, method, "/oidc/logout", &session_cookie).await;
        assert_eq!(status, StatusCode::FOUND);
        let location = url::Url::parse(headers[header::LOCATION].to_str().unwrap()).unwrap();
        assert!(
            location
                .as_str()
                .starts_with(&format!("{}/logout?", issuer.url())),
            "{location}"
        );
        let q: HashMap<String, String> = location.query_pairs().into_owned().collect();
        assert_eq!(q["tenant"], "t1");
        assert_eq!(q["client_id"], CLIENT_ID);
        assert_eq!(q["post_logout_redirect_uri"], "http://aetherv.test/");
        assert!(
            set_cookie(&headers, "aetherv_session")
                .unwrap()
                .contains("Max-Age=0")
        );
    }
    // A copy of the logged-out cookie no longer works.
    let (status, _, _) = call(&app, Method::GET, "/api/v1/me", &session_cookie).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_issuer_on_plain_http_off_loopback_is_refused() {
    // The issuer runs on loopback (allowed), but its discovery document sends the key set to a
    // plain-http address elsewhere: an attacker on that path could swap the keys.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let doc = json!({
        "issuer": issuer,
        "jwks_uri": "http://keys.invalid/jwks",
        "authorization_endpoint": "https://login.invalid/authorize",
        "token_endpoint": "https://login.invalid/token",
    });
    let router = Router::new().route(
        "/.well-known/openid-configuration",
        get(move || {
            let doc = doc.clone();
            async move { Json(doc) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, router).await });
    let validator = Validator::new(
        OidcConfig::new(
            &issuer,
            CLIENT_ID,
            RoleNames {
                reader: Some("r".into()),
                writer: None,
                admin: None,
                role_name: None,
            },
        ),
        Arc::new(ReqwestFetcher::new().unwrap()),
    );
    let claims = json!({"iss": issuer, "aud": CLIENT_ID, "sub": "u", "exp": now() + 60,
                        "roles": ["r"]});
    let err = validator
        .validate(&sign(&claims, &rsa_keys()[0]))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("jwks_uri") && text.contains("plain http"),
        "{text}"
    );
    assert!(text.contains("http://keys.invalid"), "{text}");

    // Configured to allow it (a lab), the fetch is attempted and fails differently.
    let relaxed = Validator::new(
        OidcConfig::new(
            &issuer,
            CLIENT_ID,
            RoleNames {
                reader: Some("r".into()),
                writer: None,
                admin: None,
                role_name: None,
            },
        ),
        Arc::new(
            ReqwestFetcher::with_policy(HttpPolicy {
                allow_insecure_http: true,
            })
            .unwrap(),
        ),
    );
    let err = relaxed
        .validate(&sign(&claims, &rsa_keys()[0]))
        .await
        .unwrap_err();
    assert!(!err.to_string().contains("plain http"), "{err}");
}

#[tokio::test]
async fn login_refuses_bad_answers_and_open_redirects() {
    let issuer = Issuer::start().await;
    let auth = Arc::new(Authenticator::oidc(
        issuer.validator(),
        Some(issuer.login_flow()),
    ));
    let app = app(auth);

    // return_to=//evil ends up at /.
    let started = start_login(&app, &issuer, "//evil.test/x").await;
    grant(&issuer, &started, "code-2", &["aetherv-reader"]);
    let cookie = vec![(header::COOKIE, started.login_cookie.clone())];
    let uri = format!(
        "/oidc/callback?code=code-2&state={}",
        urlencode(&started.params["state"])
    );
    let (status, headers, body) = call(&app, Method::GET, &uri, &cookie).await;
    assert_eq!(status, StatusCode::FOUND, "{body}");
    assert_eq!(headers[header::LOCATION], "/");
    for bad in ["https://evil.test", "/\\evil.test", "evil"] {
        let started = start_login(&app, &issuer, bad).await;
        grant(&issuer, &started, "c", &["aetherv-reader"]);
        let uri = format!(
            "/oidc/callback?code=c&state={}",
            urlencode(&started.params["state"])
        );
        let cookie = vec![(header::COOKIE, started.login_cookie.clone())];
        let (_, headers, _) = call(&app, Method::GET, &uri, &cookie).await;
        assert_eq!(headers[header::LOCATION], "/", "{bad}");
    }

    // A wrong PKCE verifier (the code was issued for another login's challenge) is refused.
    let first = start_login(&app, &issuer, "/").await;
    let second = start_login(&app, &issuer, "/").await;
    grant(&issuer, &first, "code-3", &["aetherv-reader"]);
    let uri = format!(
        "/oidc/callback?code=code-3&state={}",
        urlencode(&second.params["state"])
    );
    let cookie = vec![(header::COOKIE, second.login_cookie.clone())];
    let (status, _, body) = call(&app, Method::GET, &uri, &cookie).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["code"], "login_failed");

    // An ID token whose nonce belongs to another login is refused.
    let started = start_login(&app, &issuer, "/").await;
    *issuer.state.grant.lock().unwrap() = Some(Grant {
        code: "code-4".into(),
        challenge: started.params["code_challenge"].clone(),
        nonce: "someone-elses-nonce".into(),
        roles: vec!["aetherv-admin".into()],
    });
    let uri = format!(
        "/oidc/callback?code=code-4&state={}",
        urlencode(&started.params["state"])
    );
    let cookie = vec![(header::COOKIE, started.login_cookie.clone())];
    let (status, headers, body) = call(&app, Method::GET, &uri, &cookie).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("nonce"));
    assert!(set_cookie(&headers, "aetherv_session").is_none());

    // An ID token granting no role: 403, no session.
    let started = start_login(&app, &issuer, "/").await;
    grant(&issuer, &started, "code-5", &["staff"]);
    let uri = format!(
        "/oidc/callback?code=code-5&state={}",
        urlencode(&started.params["state"])
    );
    let cookie = vec![(header::COOKIE, started.login_cookie.clone())];
    let (status, headers, _) = call(&app, Method::GET, &uri, &cookie).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(set_cookie(&headers, "aetherv_session").is_none());
}
