//! OIDC validation against a local issuer on 127.0.0.1 serving discovery and JWKS, through the
//! real HTTP fetcher: the token matrix, role mapping and key rotation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aetherv_server::auth::Role;
use aetherv_server::auth::oidc::{
    ErrorKind, OidcConfig, OidcError, ReqwestFetcher, RoleNames, Validator,
};
use axum::Json;
use axum::extract::State;
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs1::{EncodeRsaPrivateKey, EncodeRsaPublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};

const AUDIENCE: &str = "aetherv-client";

struct RsaKey {
    encoding: EncodingKey,
    public_pem: String,
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
                public_pem: public.to_pkcs1_pem(LineEnding::LF).unwrap(),
                n: URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
                e: URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
            }
        };
        [make(), make()]
    })
}

struct EcKey {
    encoding: EncodingKey,
    x: String,
    y: String,
}

fn ec_key() -> &'static EcKey {
    static KEY: OnceLock<EcKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let raw = pair.public_key_raw();
        EcKey {
            encoding: EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(),
            x: URL_SAFE_NO_PAD.encode(&raw[1..33]),
            y: URL_SAFE_NO_PAD.encode(&raw[33..]),
        }
    })
}

fn rsa_jwk(key: &RsaKey, kid: &str) -> Value {
    json!({"kty": "RSA", "n": key.n, "e": key.e, "kid": kid, "use": "sig", "alg": "RS256"})
}

fn ec_jwk(key: &EcKey, kid: &str) -> Value {
    json!({"kty": "EC", "crv": "P-256", "x": key.x, "y": key.y, "kid": kid, "use": "sig"})
}

#[derive(Clone)]
struct IssuerState {
    issuer: String,
    keys: Arc<Mutex<Vec<Value>>>,
    jwks_hits: Arc<AtomicUsize>,
}

struct Issuer {
    state: IssuerState,
}

impl Issuer {
    async fn start(keys: Vec<Value>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let state = IssuerState {
            issuer,
            keys: Arc::new(Mutex::new(keys)),
            jwks_hits: Arc::new(AtomicUsize::new(0)),
        };
        let router = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(|State(s): State<IssuerState>| async move {
                    Json(json!({"issuer": s.issuer, "jwks_uri": format!("{}/jwks", s.issuer)}))
                }),
            )
            .route(
                "/jwks",
                get(|State(s): State<IssuerState>| async move {
                    s.jwks_hits.fetch_add(1, Ordering::SeqCst);
                    let keys = s.keys.lock().unwrap().clone();
                    Json(json!({ "keys": keys }))
                }),
            )
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { state }
    }

    fn url(&self) -> &str {
        &self.state.issuer
    }

    fn set_keys(&self, keys: Vec<Value>) {
        *self.state.keys.lock().unwrap() = keys;
    }

    fn hits(&self) -> usize {
        self.state.jwks_hits.load(Ordering::SeqCst)
    }

    fn validator(&self, min_refetch_interval: Duration) -> Validator {
        let mut config = OidcConfig::new(
            self.url(),
            AUDIENCE,
            RoleNames {
                reader: Some("aetherv-reader".into()),
                writer: Some("aetherv-writer".into()),
                admin: Some("aetherv-admin".into()),
                role_name: Some("aetherv".into()),
            },
        );
        config.min_refetch_interval = min_refetch_interval;
        Validator::new(config, Arc::new(ReqwestFetcher::new().unwrap()))
    }

    fn claims(&self) -> Value {
        json!({
            "iss": self.url(), "aud": AUDIENCE, "sub": "u-42",
            "preferred_username": "alice", "exp": now() + 600, "iat": now(),
            "roles": ["aetherv-reader"],
        })
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .try_into()
        .unwrap()
}

fn sign(alg: Algorithm, kid: &str, claims: &Value, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn rs(kid: &str, claims: &Value, key: &RsaKey) -> String {
    sign(Algorithm::RS256, kid, claims, &key.encoding)
}

fn with(mut claims: Value, field: &str, value: Value) -> Value {
    claims[field] = value;
    claims
}

fn without(mut claims: Value, field: &str) -> Value {
    claims.as_object_mut().unwrap().remove(field);
    claims
}

async fn expect_err(v: &Validator, token: &str, expected: OidcError) {
    let err = v.validate(token).await.unwrap_err();
    assert_eq!(err, expected);
    assert!(!err.to_string().contains(token), "message echoes the token");
    let header = format!("Bearer {token}");
    assert_eq!(
        v.validate_authorization_header(Some(&header)).await,
        Err(expected)
    );
}

#[tokio::test]
async fn token_matrix() {
    let [k1, k2] = rsa_keys();
    let issuer = Issuer::start(vec![rsa_jwk(k1, "k1")]).await;
    let v = issuer.validator(Duration::from_secs(30));
    let claims = issuer.claims();

    // Valid token, through the Authorization header.
    let good = rs("k1", &claims, k1);
    let p = v
        .validate_authorization_header(Some(&format!("Bearer {good}")))
        .await
        .unwrap();
    assert_eq!(p.subject, "u-42");
    assert_eq!(p.name.as_deref(), Some("alice"));
    assert_eq!(p.role, Role::Reader);

    // No token, malformed token.
    assert_eq!(
        v.validate_authorization_header(None).await,
        Err(OidcError::MissingToken)
    );
    assert_eq!(
        v.validate_authorization_header(Some("Bearer ")).await,
        Err(OidcError::MissingToken)
    );
    assert!(matches!(
        v.validate("not.a.jwt").await,
        Err(OidcError::Malformed(_))
    ));
    let mut tampered = good.clone();
    tampered.push_str("x.y");
    assert!(matches!(
        v.validate(&tampered).await,
        Err(OidcError::Malformed(_))
    ));
    assert_eq!(OidcError::Malformed("x").kind(), ErrorKind::Unauthorized);

    // Bad signature: signed by another key under the published kid; claims swapped.
    expect_err(&v, &rs("k1", &claims, k2), OidcError::BadSignature).await;
    let parts: Vec<&str> = good.split('.').collect();
    let other = rs("k1", &with(claims.clone(), "sub", json!("root")), k1);
    let other_payload = other.split('.').nth(1).unwrap();
    let spliced = format!("{}.{}.{}", parts[0], other_payload, parts[2]);
    expect_err(&v, &spliced, OidcError::BadSignature).await;

    // Issuer, audience, expiry, not-before.
    let t = rs(
        "k1",
        &with(claims.clone(), "iss", json!("https://evil.test")),
        k1,
    );
    expect_err(&v, &t, OidcError::WrongIssuer).await;
    expect_err(
        &v,
        &rs("k1", &without(claims.clone(), "iss"), k1),
        OidcError::WrongIssuer,
    )
    .await;
    let t = rs(
        "k1",
        &with(claims.clone(), "aud", json!("someone-else")),
        k1,
    );
    expect_err(&v, &t, OidcError::WrongAudience).await;
    let t = rs(
        "k1",
        &with(claims.clone(), "aud", json!(["x", AUDIENCE])),
        k1,
    );
    assert!(
        v.validate(&t).await.is_ok(),
        "audience array containing ours"
    );
    let t = rs("k1", &with(claims.clone(), "exp", json!(now() - 3600)), k1);
    expect_err(&v, &t, OidcError::Expired).await;
    let t = rs("k1", &with(claims.clone(), "exp", json!(now() - 10)), k1);
    assert!(v.validate(&t).await.is_ok(), "within leeway");
    let t = rs("k1", &with(claims.clone(), "nbf", json!(now() + 3600)), k1);
    expect_err(&v, &t, OidcError::NotYetValid).await;
    let t = rs("k1", &without(claims.clone(), "exp"), k1);
    assert!(matches!(v.validate(&t).await, Err(OidcError::Malformed(_))));

    // alg none, and HS256 keyed with the public key (algorithm confusion).
    let h = URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT", "kid": "k1"}).to_string());
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    expect_err(&v, &format!("{h}.{body}."), OidcError::UnsupportedAlgorithm).await;
    for pem in [k1.public_pem.as_bytes(), k1.n.as_bytes()] {
        let t = sign(
            Algorithm::HS256,
            "k1",
            &claims,
            &EncodingKey::from_secret(pem),
        );
        expect_err(&v, &t, OidcError::UnsupportedAlgorithm).await;
    }
    let t = sign(Algorithm::RS384, "k1", &claims, &k1.encoding);
    expect_err(&v, &t, OidcError::UnsupportedAlgorithm).await;

    // Everything above needed one fetch only.
    assert_eq!(issuer.hits(), 1);
}

#[tokio::test]
async fn role_mapping() {
    let [k1, _] = rsa_keys();
    let issuer = Issuer::start(vec![rsa_jwk(k1, "k1")]).await;
    let v = issuer.validator(Duration::from_secs(30));
    let base = without(issuer.claims(), "roles");
    let cases = [
        (json!({"roles": ["aetherv-reader"]}), Ok(Role::Reader)),
        (json!({"roles": "aetherv-writer"}), Ok(Role::Writer)),
        (
            json!({"roles": ["aetherv-reader", "aetherv-admin"]}),
            Ok(Role::Admin),
        ),
        (
            json!({"groups": ["staff", "aetherv-writer"]}),
            Ok(Role::Writer),
        ),
        (json!({"groups": "aetherv-admin"}), Ok(Role::Admin)),
        (
            json!({"roles": ["aetherv-reader"], "groups": ["aetherv-admin"]}),
            Ok(Role::Admin),
        ),
        (json!({"roles": ["aetherv"]}), Ok(Role::Writer)),
        (
            json!({"roles": ["staff"], "groups": []}),
            Err(OidcError::NoRole),
        ),
        (json!({}), Err(OidcError::NoRole)),
    ];
    for (extra, expected) in cases {
        let mut claims = base.clone();
        for (k, val) in extra.as_object().unwrap() {
            claims[k] = val.clone();
        }
        let got = v.validate(&rs("k1", &claims, k1)).await.map(|p| p.role);
        assert_eq!(got, expected, "{extra}");
    }
    assert_eq!(OidcError::NoRole.kind(), ErrorKind::Forbidden);
    assert!(Role::Admin.allows(Role::Writer) && Role::Writer.allows(Role::Reader));

    // email is the fallback name.
    let claims = with(
        without(issuer.claims(), "preferred_username"),
        "email",
        json!("a@x.test"),
    );
    let p = v.validate(&rs("k1", &claims, k1)).await.unwrap();
    assert_eq!(p.name.as_deref(), Some("a@x.test"));
}

#[tokio::test]
async fn es256_accepted() {
    let ec = ec_key();
    let [k1, _] = rsa_keys();
    let issuer = Issuer::start(vec![rsa_jwk(k1, "rsa"), ec_jwk(ec, "ec")]).await;
    let v = issuer.validator(Duration::from_secs(30));
    let claims = issuer.claims();
    let t = sign(Algorithm::ES256, "ec", &claims, &ec.encoding);
    assert_eq!(v.validate(&t).await.map(|p| p.role), Ok(Role::Reader));
    // An ES256 header on the RSA key is refused.
    let t = sign(Algorithm::ES256, "rsa", &claims, &ec.encoding);
    expect_err(&v, &t, OidcError::BadSignature).await;
}

#[tokio::test]
async fn key_rotation() {
    let [k1, k2] = rsa_keys();
    let issuer = Issuer::start(vec![rsa_jwk(k1, "k1")]).await;
    let v = issuer.validator(Duration::from_secs(30));
    let claims = issuer.claims();
    assert!(v.validate(&rs("k1", &claims, k1)).await.is_ok());
    assert_eq!(issuer.hits(), 1);

    // The issuer rotates to k2: a k2 token validates after exactly one refetch.
    issuer.set_keys(vec![rsa_jwk(k2, "k2")]);
    assert!(v.validate(&rs("k2", &claims, k2)).await.is_ok());
    assert_eq!(issuer.hits(), 2);
    assert!(v.validate(&rs("k2", &claims, k2)).await.is_ok());
    assert_eq!(issuer.hits(), 2);

    // The retired key is gone from the cache; an unknown kid fails, and within the interval
    // it does not refetch again.
    expect_err(&v, &rs("k1", &claims, k1), OidcError::UnknownKey).await;
    assert_eq!(issuer.hits(), 2);
    expect_err(&v, &rs("k3", &claims, k1), OidcError::UnknownKey).await;
    assert_eq!(issuer.hits(), 2);

    // With no interval, an unknown kid costs one refetch per attempt and still fails.
    let eager = issuer.validator(Duration::ZERO);
    assert!(eager.validate(&rs("k2", &claims, k2)).await.is_ok());
    let before = issuer.hits();
    expect_err(&eager, &rs("k3", &claims, k1), OidcError::UnknownKey).await;
    assert_eq!(issuer.hits(), before + 2, "one refetch per validate call");
}

#[tokio::test]
async fn unreachable_issuer_is_service_unavailable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let v = Validator::new(
        OidcConfig::new(url, AUDIENCE, RoleNames::default()),
        Arc::new(ReqwestFetcher::new().unwrap()),
    );
    let [k1, _] = rsa_keys();
    let t = rs("k1", &json!({"sub": "x"}), k1);
    let err = v.validate(&t).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ServiceUnavailable);
    assert!(!err.to_string().contains(&t));
    assert!(matches!(
        v.refresh_keys().await,
        Err(OidcError::JwksUnavailable(_))
    ));
}

#[tokio::test]
async fn discovery_naming_another_issuer_is_refused() {
    let issuer = Issuer::start(vec![]).await;
    // Configure the validator with a different spelling of the issuer than the document states.
    let url = issuer.url().replace("127.0.0.1", "localhost");
    let v = Validator::new(
        OidcConfig::new(url, AUDIENCE, RoleNames::default()),
        Arc::new(ReqwestFetcher::new().unwrap()),
    );
    assert!(matches!(
        v.refresh_keys().await,
        Err(OidcError::JwksUnavailable(_))
    ));
}

#[tokio::test]
async fn an_issuer_written_with_a_trailing_slash_is_the_same_issuer() {
    let [k1, _] = rsa_keys();
    let issuer = Issuer::start(vec![rsa_jwk(k1, "k1")]).await;
    let v = issuer.validator(Duration::from_secs(30));
    // Some providers put the slash in `iss` (Auth0); the configured URL has none.
    let slashed = with(issuer.claims(), "iss", json!(format!("{}/", issuer.url())));
    assert_eq!(
        v.validate(&rs("k1", &slashed, k1)).await.unwrap().subject,
        "u-42"
    );
    // Another issuer is still refused.
    let other = with(
        issuer.claims(),
        "iss",
        json!(format!("{}/other", issuer.url())),
    );
    assert_eq!(
        v.validate(&rs("k1", &other, k1)).await,
        Err(OidcError::WrongIssuer)
    );
}

#[tokio::test]
async fn a_withdrawn_key_stops_validating_once_the_key_set_is_old() {
    let [k1, k2] = rsa_keys();
    let issuer = Issuer::start(vec![rsa_jwk(k1, "k1"), rsa_jwk(k2, "k2")]).await;
    let mut config = OidcConfig::new(
        issuer.url(),
        AUDIENCE,
        RoleNames {
            reader: Some("aetherv-reader".into()),
            ..RoleNames::default()
        },
    );
    config.max_key_age = Duration::from_millis(200);
    let v = Validator::new(config, Arc::new(ReqwestFetcher::new().unwrap()));
    let claims = issuer.claims();
    assert!(v.validate(&rs("k1", &claims, k1)).await.is_ok());
    assert_eq!(issuer.hits(), 1);

    // The issuer withdraws k1 (say, after a leak). Within the key set's age nothing is fetched.
    issuer.set_keys(vec![rsa_jwk(k2, "k2")]);
    assert!(v.validate(&rs("k1", &claims, k1)).await.is_ok());
    assert_eq!(issuer.hits(), 1);

    // Once the set is older than max_key_age it is fetched again, and k1 is refused.
    tokio::time::sleep(Duration::from_millis(250)).await;
    expect_err(&v, &rs("k1", &claims, k1), OidcError::UnknownKey).await;
    assert_eq!(issuer.hits(), 2);
    assert!(v.validate(&rs("k2", &claims, k2)).await.is_ok());
    assert_eq!(
        issuer.hits(),
        2,
        "the fresh set is used without another fetch"
    );
}
