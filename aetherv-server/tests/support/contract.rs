//! Checks every answer a test receives against the served OpenAPI document (`/openapi.json`):
//! the status is documented for the route, the content type is one the route documents for
//! that status, and the body validates against its schema (each Server-Sent Event's data
//! against the schema its event name documents). Answers of undocumented routes (unknown
//! paths, wrong methods, UI assets) must still be errors in the documented error shape.
//!
//! One entry point, [`check`], is called by the request helpers, so a new test gets the
//! check without asking for it.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::Read as _;
use std::sync::{Arc, Mutex, OnceLock};

use aetherv_server::api::openapi;
use axum::http::{HeaderMap, Method, StatusCode, header};
use jsonschema::{Draft, Validator};
use serde_json::{Value, json};

/// The documented (path template, operation) of a request, if any.
fn operation(method: &Method, path: &str) -> Option<(String, &'static Value)> {
    let doc = openapi::document();
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let mut best: Option<(usize, &String, &Value)> = None;
    for (template, item) in doc["paths"].as_object().expect("paths") {
        let parts: Vec<&str> = template.trim_end_matches('/').split('/').collect();
        if parts.len() != segments.len() {
            continue;
        }
        let mut literal = 0;
        let matches = parts.iter().zip(&segments).all(|(t, s)| {
            if t.starts_with('{') && t.ends_with('}') {
                !s.is_empty()
            } else {
                literal += 1;
                t == s
            }
        });
        if matches && best.as_ref().is_none_or(|(n, _, _)| literal > *n) {
            best = Some((literal, template, item));
        }
    }
    let (_, template, item) = best?;
    let op = item.get(method.as_str().to_ascii_lowercase())?;
    Some((template.clone(), op))
}

/// A validator for `schema`, whose `$ref`s point into the document's components.
fn validator(key: &str, schema: &Value) -> Arc<Validator> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<Validator>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(v) = cache.lock().unwrap().get(key) {
        return Arc::clone(v);
    }
    let root = json!({
        "allOf": [schema],
        "components": openapi::document()["components"],
    });
    let built = jsonschema::options()
        .with_draft(Draft::Draft202012)
        .build(&root)
        .unwrap_or_else(|e| panic!("the schema of {key} does not compile: {e}"));
    let built = Arc::new(built);
    cache
        .lock()
        .unwrap()
        .insert(key.to_owned(), Arc::clone(&built));
    built
}

fn validate(key: &str, schema: &Value, instance: &Value) {
    let validator = validator(key, schema);
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{key}: the body does not match the documented schema:\n  {}\nbody: {instance}",
        errors.join("\n  ")
    );
}

fn media_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
}

fn decoded(headers: &HeaderMap, body: &[u8]) -> Vec<u8> {
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    if !gzip {
        return body.to_vec();
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .read_to_end(&mut out)
        .expect("a gzip body");
    out
}

/// Splits an SSE body into (event name, data) pairs; keep-alive comments are skipped.
pub fn sse_events(text: &str) -> Vec<(String, String)> {
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .filter_map(|block| {
            let mut event = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(name) = line.strip_prefix("event: ") {
                    event = Some(name.to_owned());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push_str(d);
                }
            }
            event.map(|e| (e, data))
        })
        .collect()
}

/// The documented response of a request's status, checked to exist; `None` for an
/// undocumented route, after checking the answer is an error in the error shape.
fn documented_response(
    method: &Method,
    path: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> Option<(String, &'static Value)> {
    let what = format!("{method} {path} -> {}", status.as_u16());
    let Some((template, op)) = operation(method, path) else {
        // Undocumented: unknown routes, wrong methods, UI assets, the browser login. Their
        // errors still use the documented error shape.
        if status.is_client_error() || status.is_server_error() {
            assert_eq!(
                media_type(headers).as_deref(),
                Some("application/json"),
                "{what}"
            );
            let error = serde_json::from_slice(&decoded(headers, body)).expect("a JSON error");
            validate(
                "Error",
                &json!({ "$ref": "#/components/schemas/Error" }),
                &error,
            );
        }
        return None;
    };
    let responses = &op["responses"];
    let response = responses
        .get(status.as_str())
        .or_else(|| responses.get("default"))
        .unwrap_or_else(|| {
            panic!(
                "{what}: status {} is not documented for {method} {template} (documented: {:?})",
                status.as_u16(),
                responses.as_object().map(|r| r.keys().collect::<Vec<_>>())
            )
        });
    Some((format!("{method} {template} {}", status.as_u16()), response))
}

/// Checks one complete answer against the document.
pub fn check(method: &Method, path: &str, status: StatusCode, headers: &HeaderMap, body: &[u8]) {
    let Some((key, response)) = documented_response(method, path, status, headers, body) else {
        return;
    };
    let content = &response["content"];
    let Some(media) = content.as_object().filter(|c| !c.is_empty()) else {
        assert!(
            body.is_empty(),
            "{key}: documented without a body, but one came"
        );
        return;
    };
    let actual = media_type(headers).unwrap_or_else(|| panic!("{key}: no Content-Type"));
    let documented = media.get(&actual).unwrap_or_else(|| {
        panic!(
            "{key}: Content-Type {actual} is not documented ({:?})",
            media.keys()
        )
    });
    let body = decoded(headers, body);
    match actual.as_str() {
        "application/json" => {
            let value: Value =
                serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{key}: not JSON ({e})"));
            validate(&format!("{key} {actual}"), &documented["schema"], &value);
        }
        "text/event-stream" => {
            check_events(&key, documented, &String::from_utf8_lossy(&body));
        }
        _ => assert!(
            documented["schema"]["type"] == "string",
            "{key}: {actual} is documented with a non-text schema"
        ),
    }
}

/// Checks an answer like [`check`] when the document describes its route, and accepts any
/// answer otherwise: for test routers that mount documented handlers beside test-only routes
/// and without the application's error layers.
pub fn check_documented(
    method: &Method,
    path: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) {
    if operation(method, path).is_some() {
        check(method, path, status, headers, body);
    }
}

/// Checks the head of a streamed answer (status and content type); its events are checked
/// with [`check_stream_events`].
pub fn check_head(method: &Method, path: &str, status: StatusCode, headers: &HeaderMap) {
    let Some((key, response)) = documented_response(method, path, status, headers, b"") else {
        return;
    };
    let actual = media_type(headers).unwrap_or_else(|| panic!("{key}: no Content-Type"));
    assert!(
        response["content"].get(&actual).is_some(),
        "{key}: Content-Type {actual} is not documented"
    );
}

/// Checks the events of a stream of `GET path` (a 200 `text/event-stream`).
pub fn check_stream_events(path: &str, text: &str) {
    let (template, op) = operation(&Method::GET, path).expect("a documented stream");
    let documented = &op["responses"]["200"]["content"]["text/event-stream"];
    check_events(&format!("GET {template} 200"), documented, text);
}

fn check_events(key: &str, documented: &Value, text: &str) {
    let schemas = documented["x-events"]
        .as_object()
        .unwrap_or_else(|| panic!("{key}: the stream documents no events"));
    for (event, data) in sse_events(text) {
        let schema = schemas
            .get(&event)
            .unwrap_or_else(|| panic!("{key}: event {event} is not documented"));
        let value: Value = serde_json::from_str(&data)
            .unwrap_or_else(|e| panic!("{key}: event {event} is not JSON ({e}): {data}"));
        validate(&format!("{key} event {event}"), schema, &value);
    }
}

/// Sends one request to an in-process router (`app.oneshot`), checks the answer against the
/// OpenAPI document ([`check`]) and returns its status and JSON body (`Null` when empty).
pub async fn call_checked(
    app: &axum::Router,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    use tower::ServiceExt as _;
    let request = axum::http::Request::builder()
        .method(method.clone())
        .uri(path)
        .header("content-type", "application/json")
        .body(body.map_or_else(axum::body::Body::empty, |b| {
            axum::body::Body::from(b.to_string())
        }))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let route = path.split('?').next().unwrap_or(path);
    check(&method, route, status, &headers, &bytes);
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, value)
}
