//! The HTTP edges of issue 20. Host checking against DNS rebinding, against the whole server in demo mode (the mode a
//! rebinding page would target: authentication off): a request whose `Host` names none of
//! the server's names is answered 421 in the JSON error shape before any route runs, probes
//! included; the `PUBLIC_URL` host, `ALLOWED_HOSTS`, `localhost` and IP addresses (the listen
//! address, a pod IP as kubelet sends it) pass. `/metrics` behind `METRICS_TOKEN` or on
//! its own listener (`METRICS_LISTEN_ADDR`).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use aetherv_server::config::Config;
use aetherv_server::startup::Server;
use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt;

async fn call(app: &Router, method: Method, path: &str, host: &str) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host)
        .header("content-type", "application/json")
        .body(Body::from("{}"))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, value)
}

async fn start(extra: &'static [(&'static str, &'static str)]) -> Server {
    let env = move |name: &str| {
        extra
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| (*v).to_owned())
            .or_else(|| match name {
                "DEMO_HOSTS" => Some("1".to_owned()),
                "DEMO_VMS_PER_HOST" => Some("0".to_owned()),
                "DEMO_CLUSTERS" => Some("0".to_owned()),
                "AETHERV_DEMO_PASSWORD" => Some("demo-Passw0rd".to_owned()),
                "LISTEN_ADDR" => Some("127.0.0.1:0".to_owned()),
                _ => None,
            })
    };
    let config = Config::from_sources(&env, Path::new("/nonexistent-aetherv-test")).unwrap();
    Server::start(&config).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebound_host_name_is_refused_on_every_route_in_demo_mode() {
    let server = start(&[]).await;
    let app = server.router();
    for (method, path) in [
        (Method::GET, "/api/v1/vms"),
        (Method::GET, "/api/v1/me"),
        (Method::POST, "/api/v1/hosts/demo-hv01/refresh"),
        (Method::GET, "/"),
        (Method::GET, "/healthz"),
        (Method::GET, "/metrics"),
        (Method::GET, "/no-such-route"),
    ] {
        for host in ["rebind.attacker.example:8000", "rebind.attacker.example"] {
            let (status, body) = call(&app, method.clone(), path, host).await;
            assert_eq!(
                status,
                StatusCode::MISDIRECTED_REQUEST,
                "{method} {path} {host}"
            );
            assert_eq!(body["error"]["code"], "host_not_allowed", "{body}");
            assert!(body["error"]["message"].is_string(), "{body}");
        }
    }
    for host in [
        "localhost:8000",
        "127.0.0.1:8000",
        "[::1]:8000",
        "10.244.1.17:8000",
    ] {
        let (status, body) = call(&app, Method::GET, "/healthz", host).await;
        assert_eq!(status, StatusCode::OK, "{host}: {body}");
        let (status, body) = call(&app, Method::GET, "/api/v1/me", host).await;
        assert_eq!(status, StatusCode::OK, "{host}: {body}");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_url_host_and_allowed_hosts_pass() {
    let server = start(&[
        ("PUBLIC_URL", "http://aetherv.corp.example:8080"),
        ("ALLOWED_HOSTS", "aetherv, aetherv.ops.svc:8000"),
    ])
    .await;
    let app = server.router();
    for host in [
        "aetherv.corp.example:8080",
        "AETHERV.corp.example",
        "aetherv",
        "aetherv.ops.svc:8000",
        "localhost",
    ] {
        let (status, body) = call(&app, Method::GET, "/api/v1/me", host).await;
        assert_eq!(status, StatusCode::OK, "{host}: {body}");
    }
    for host in ["corp.example", "aetherv.corp.example.attacker.example"] {
        let (status, body) = call(&app, Method::GET, "/api/v1/me", host).await;
        assert_eq!(status, StatusCode::MISDIRECTED_REQUEST, "{host}: {body}");
    }
    server.shutdown().await;
}

#[test]
fn allowed_hosts_must_be_host_names() {
    let env = |name: &str| match name {
        "DEMO_HOSTS" => Some("1".to_owned()),
        "AETHERV_DEMO_PASSWORD" => Some("demo-Passw0rd".to_owned()),
        "ALLOWED_HOSTS" => Some("good.example, bad/name".to_owned()),
        _ => None,
    };
    let problems = Config::from_sources(&env, Path::new("/nonexistent-aetherv-test")).unwrap_err();
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("ALLOWED_HOSTS") && p.contains("bad/name")),
        "{problems:?}"
    );
}

async fn get_with(app: &Router, path: &str, authorization: Option<&str>) -> (StatusCode, String) {
    let mut request = Request::builder()
        .method(Method::GET)
        .uri(path)
        .header("host", "127.0.0.1:8000");
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_token_guards_metrics_only() {
    let server = start(&[("METRICS_TOKEN", "m3trics-token-value")]).await;
    let app = server.router();
    for authorization in [
        None,
        Some("Bearer wrong"),
        Some("Bearer m3trics-token-valu"),
        Some("Basic m3trics-token-value"),
    ] {
        let (status, body) = get_with(&app, "/metrics", authorization).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{authorization:?}: {body}"
        );
        let value: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(value["error"]["code"], "unauthenticated");
        assert!(!body.contains("m3trics-token-value"));
    }
    let (status, body) = get_with(&app, "/metrics", Some("Bearer m3trics-token-value")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("aetherv_"), "{body}");
    let (status, _) = get_with(&app, "/healthz", None).await;
    assert_eq!(status, StatusCode::OK);
    server.shutdown().await;

    // Unset: public, as before.
    let server = start(&[]).await;
    let (status, _) = get_with(&server.router(), "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_listen_addr_moves_metrics_off_the_main_listener() {
    let server = start(&[("METRICS_LISTEN_ADDR", "127.0.0.1:0")]).await;
    let (status, body) = get_with(&server.router(), "/metrics", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let value: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(value["error"]["code"], "not_found");
    let (status, _) = get_with(&server.router(), "/healthz", None).await;
    assert_eq!(status, StatusCode::OK);

    let metrics = server.metrics_router();
    let (status, body) = get_with(&metrics, "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("aetherv_"), "{body}");
    let (status, body) = get_with(&metrics, "/api/v1/vms", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    server.shutdown().await;
}
