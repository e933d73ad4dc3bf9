//! Unit tests with the mock fetcher: algorithm refusal, caching and refetch rate limiting.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

use super::*;

const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "aetherv";

struct EcKey {
    encoding: EncodingKey,
    x: String,
    y: String,
}

fn ec_key() -> EcKey {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let raw = pair.public_key_raw();
    assert_eq!(raw.len(), 65);
    EcKey {
        encoding: EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(),
        x: URL_SAFE_NO_PAD.encode(&raw[1..33]),
        y: URL_SAFE_NO_PAD.encode(&raw[33..]),
    }
}

fn jwk(key: &EcKey, kid: &str) -> Jwk {
    serde_json::from_value(serde_json::json!({
        "kty": "EC", "crv": "P-256", "x": key.x, "y": key.y, "kid": kid, "use": "sig", "alg": "ES256"
    }))
    .unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(key: &EcKey, kid: &str, roles: serde_json::Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.to_owned());
    let claims = serde_json::json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "user-1", "exp": now() + 300,
        "email": "user@example.test", "roles": roles,
    });
    jsonwebtoken::encode(&header, &claims, &key.encoding).unwrap()
}

fn roles() -> RoleNames {
    RoleNames {
        reader: Some("r".into()),
        writer: Some("w".into()),
        admin: Some("a".into()),
        role_name: Some("aetherv-user".into()),
    }
}

fn validator(fetcher: MockJwksFetcher, interval: Duration) -> Validator {
    let mut config = OidcConfig::new(ISSUER, AUDIENCE, roles());
    config.min_refetch_interval = interval;
    Validator::new(config, Arc::new(fetcher))
}

fn unsigned(header: serde_json::Value) -> String {
    let h = URL_SAFE_NO_PAD.encode(header.to_string());
    let p = URL_SAFE_NO_PAD.encode(r#"{"sub":"x","iss":"https://issuer.test","aud":"aetherv"}"#);
    format!("{h}.{p}.c2ln")
}

#[test]
fn role_names_map_to_the_highest_role() {
    let names = roles();
    assert_eq!(names.highest(["r"]), Some(Role::Reader));
    assert_eq!(names.highest(["r", "w"]), Some(Role::Writer));
    assert_eq!(names.highest(["aetherv-user"]), Some(Role::Writer));
    assert_eq!(names.highest(["w", "a", "r"]), Some(Role::Admin));
    assert_eq!(names.highest(["other"]), None);
    assert_eq!(names.highest([""]), None);
    assert_eq!(RoleNames::default().highest(["", "r"]), None);
}

#[test]
fn error_kinds_and_messages() {
    assert_eq!(OidcError::NoRole.kind(), ErrorKind::Forbidden);
    assert_eq!(OidcError::Expired.kind(), ErrorKind::Unauthorized);
    assert_eq!(
        OidcError::JwksUnavailable("x".into()).kind().http_status(),
        503
    );
    assert_eq!(
        OidcError::UnknownKey.to_string(),
        "token signing key is unknown"
    );
}

#[tokio::test]
async fn refused_algorithms_never_fetch_keys() {
    let mut fetcher = MockJwksFetcher::new();
    fetcher.expect_fetch_jwks().times(0);
    let v = validator(fetcher, DEFAULT_MIN_REFETCH_INTERVAL);
    for alg in [
        "none", "None", "HS256", "HS512", "PS256", "RS384", "ES384", "EdDSA", "",
    ] {
        let t = unsigned(serde_json::json!({"alg": alg, "kid": "k1"}));
        assert_eq!(
            v.validate(&t).await,
            Err(OidcError::UnsupportedAlgorithm),
            "{alg}"
        );
    }
    for bad in ["abc", "a.b", "a.b.c.d", "!!!.e30.c2ln", "e30.e30.c2ln"] {
        let err = v.validate(bad).await.unwrap_err();
        assert!(matches!(err, OidcError::Malformed(_)), "{bad}: {err:?}");
        assert!(!err.to_string().contains(bad) || bad.len() < 4);
    }
    assert_eq!(v.validate("").await, Err(OidcError::MissingToken));
}

#[tokio::test]
async fn valid_token_and_cache_reuse() {
    let key = Arc::new(ec_key());
    let mut fetcher = MockJwksFetcher::new();
    let set = vec![jwk(&key, "k1")];
    fetcher
        .expect_fetch_jwks()
        .times(1)
        .returning(move |_| Ok(set.clone()));
    let v = validator(fetcher, DEFAULT_MIN_REFETCH_INTERVAL);
    for _ in 0..3 {
        let p = v
            .validate(&token(&key, "k1", serde_json::json!("w")))
            .await
            .unwrap();
        assert_eq!(p.role, Role::Writer);
        assert_eq!(p.subject, "user-1");
        assert_eq!(p.name.as_deref(), Some("user@example.test"));
    }
    let none = v
        .validate(&token(&key, "k1", serde_json::json!(["x"])))
        .await;
    assert_eq!(none, Err(OidcError::NoRole));
}

#[tokio::test]
async fn unknown_kid_storm_refetches_once() {
    let key = Arc::new(ec_key());
    let mut fetcher = MockJwksFetcher::new();
    let set = vec![jwk(&key, "k1")];
    fetcher
        .expect_fetch_jwks()
        .times(2) // the first load, then one refetch for the whole storm
        .returning(move |_| Ok(set.clone()));
    let v = Arc::new(validator(fetcher, DEFAULT_MIN_REFETCH_INTERVAL));
    let bad = token(&key, "nope", serde_json::json!("r"));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let v = Arc::clone(&v);
            let bad = bad.clone();
            tokio::spawn(async move { v.validate(&bad).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), Err(OidcError::UnknownKey));
    }
    // The known key still works from the cache.
    let ok = v.validate(&token(&key, "k1", serde_json::json!("r"))).await;
    assert_eq!(ok.map(|p| p.role), Ok(Role::Reader));
}

#[tokio::test]
async fn unknown_kid_refetches_again_after_the_interval() {
    let key = Arc::new(ec_key());
    let mut fetcher = MockJwksFetcher::new();
    let set = vec![jwk(&key, "k1")];
    fetcher
        .expect_fetch_jwks()
        .times(3)
        .returning(move |_| Ok(set.clone()));
    let v = validator(fetcher, Duration::ZERO);
    let bad = token(&key, "nope", serde_json::json!("r"));
    for _ in 0..3 {
        assert_eq!(v.validate(&bad).await, Err(OidcError::UnknownKey));
    }
}

#[tokio::test]
async fn fetch_failure_is_service_unavailable_and_rate_limited() {
    let key = ec_key();
    let mut fetcher = MockJwksFetcher::new();
    fetcher
        .expect_fetch_jwks()
        .times(1)
        .returning(|_| Err(OidcError::JwksUnavailable("connection refused".into())));
    let v = validator(fetcher, DEFAULT_MIN_REFETCH_INTERVAL);
    let t = token(&key, "k1", serde_json::json!("r"));
    for _ in 0..3 {
        let err = v.validate(&t).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ServiceUnavailable);
        assert!(!err.to_string().contains(&t));
    }
}

#[tokio::test]
async fn key_of_another_algorithm_is_refused() {
    let key = Arc::new(ec_key());
    let mut fetcher = MockJwksFetcher::new();
    let set = vec![jwk(&key, "k1")];
    fetcher
        .expect_fetch_jwks()
        .times(1)
        .returning(move |_| Ok(set.clone()));
    let v = validator(fetcher, DEFAULT_MIN_REFETCH_INTERVAL);
    let t = unsigned(serde_json::json!({"alg": "RS256", "kid": "k1"}));
    assert_eq!(v.validate(&t).await, Err(OidcError::BadSignature));
}

#[tokio::test]
async fn authorization_header_parsing() {
    let mut fetcher = MockJwksFetcher::new();
    fetcher.expect_fetch_jwks().times(0);
    let v = validator(fetcher, DEFAULT_MIN_REFETCH_INTERVAL);
    assert_eq!(
        v.validate_authorization_header(None).await,
        Err(OidcError::MissingToken)
    );
    assert_eq!(
        v.validate_authorization_header(Some("  ")).await,
        Err(OidcError::MissingToken)
    );
    assert!(matches!(
        v.validate_authorization_header(Some("Basic dXNlcjpwdw=="))
            .await,
        Err(OidcError::Malformed(_))
    ));
    assert!(matches!(
        v.validate_authorization_header(Some("bearer not-a-jwt"))
            .await,
        Err(OidcError::Malformed(_))
    ));
}
