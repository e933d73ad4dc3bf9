//! The OpenAPI 3.1 description of the REST API (`GET /openapi.json`) and the page that renders
//! it (`GET /docs`).
//!
//! The document is derived, not transcribed: `utoipa` builds the paths from the
//! `#[utoipa::path]` attributes of the handlers that the route tables
//! ([`super::public_routes`], [`super::api_routes`]) register, and the schemas from the view
//! types those handlers serialise (`views`, `jobs`, `error`). [`document`] then adds what the
//! attributes cannot say: the security schemes, the role each `/api/v1` route needs with its
//! 401/403/503 answers (the same rule [`crate::auth::required_role_at`] enforces), the event
//! schemas of the two Server-Sent Event streams, and the provisioning bodies, which are
//! lenient (JSON or YAML, aliases) and written by hand in `openapi/provision.rs`.
//!
//! The docs page is one self-contained HTML file (inline CSS and script, no external
//! resources) that fetches `/openapi.json` and renders it.

pub mod provision;

use std::sync::OnceLock;

use axum::Json;
use axum::http::{HeaderValue, Method, header};
use axum::response::{Html, IntoResponse, Response};
use serde_json::{Value, json};
use utoipa::OpenApi;

use super::views::{
    HelloEvent, HostDisconnectedEvent, HostEvent, JobStatusEventView, ResyncEvent, VmChangedEvent,
    VmEvent, VmRemovedEvent,
};
use crate::auth::required_role_at;
use crate::auth::session::SESSION_COOKIE;
use crate::error::ErrorBody;
use crate::jobs::{JobNotice, JobView, LogLine};

/// The docs page, rendered in the browser from `/openapi.json`.
const DOCS_HTML: &str = include_str!("docs.html");

/// The parts of the document no handler names: the event schemas of the streams and the
/// error shape every route may answer.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "aetherv",
        description = "Hyper-V fleet inventory, VM provisioning and power control. Times are \
            RFC 3339 UTC strings; sizes are bytes. Every error answers \
            `{\"error\": {\"code\", \"message\", \"field\"?}}`. In query strings, an empty \
            value is the same as leaving the parameter out; unknown parameters are refused \
            with 400 `bad_query`."
    ),
    tags(
        (name = "probes", description = "Health, readiness and documents"),
        (name = "session", description = "Who is calling and the server's state"),
        (name = "inventory", description = "Clusters, hosts and VMs (reader)"),
        (name = "jobs", description = "Provisioning, deletion and power jobs (mutations need writer)"),
        (name = "events", description = "Live inventory and job changes"),
        (name = "checkpoints", description = "A VM's checkpoints (changes are jobs; need writer)"),
        (name = "network-adapters", description = "A VM's network adapters (changes are jobs; need writer)"),
        (name = "maintenance", description = "Host maintenance: drain, resume, maintenance runs (changes are jobs; need writer)"),
    ),
    components(schemas(
        ErrorBody,
        JobView,
        LogLine,
        JobStatusEventView,
        JobNotice,
        HelloEvent,
        VmEvent,
        VmChangedEvent,
        VmRemovedEvent,
        HostEvent,
        HostDisconnectedEvent,
        ResyncEvent
    ))
)]
struct ApiDoc;

/// The OpenAPI 3.1 document (built on first use).
pub fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(build)
}

/// `GET /openapi.json`.
#[utoipa::path(get, path = "/openapi.json", tag = "probes", operation_id = "openapi",
    summary = "This OpenAPI document",
    description = "The machine-readable API contract (OpenAPI 3.1).",
    responses((status = 200, description = "The OpenAPI document", body = Object)))]
pub async fn openapi_json() -> impl IntoResponse {
    Json(document())
}

/// `GET /docs`: the human-readable API reference.
#[utoipa::path(get, path = "/docs", tag = "probes", operation_id = "docs",
    summary = "API reference page",
    description = "A self-contained HTML page that renders `/openapi.json`.",
    responses((status = 200, description = "HTML page", body = String, content_type = "text/html")))]
pub async fn docs_page() -> Response {
    let mut response = Html(DOCS_HTML).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if let Ok(policy) = HeaderValue::from_str(docs_content_security_policy()) {
        headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    }
    response
}

/// The `/docs` page's policy: it may contact only its own origin (for `/openapi.json`) and
/// run only its own inline script and style, allowed by their SHA-256 hashes; it may not be
/// framed.
fn docs_content_security_policy() -> &'static str {
    static POLICY: OnceLock<String> = OnceLock::new();
    POLICY.get_or_init(|| {
        format!(
            "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; \
             img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'none'; \
             frame-ancestors 'none'",
            inline_hashes(DOCS_HTML, "script"),
            inline_hashes(DOCS_HTML, "style"),
        )
    })
}

/// The CSP sources (`'sha256-...'`) of every inline `<tag>...</tag>` of `page`, or `'none'`.
fn inline_hashes(page: &str, tag: &str) -> String {
    use base64::Engine as _;
    use sha2::{Digest, Sha256};

    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut sources = Vec::new();
    let mut rest = page;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        let digest = Sha256::digest(&after.as_bytes()[..end]);
        sources.push(format!(
            "'sha256-{}'",
            base64::engine::general_purpose::STANDARD.encode(digest)
        ));
        rest = &after[end + close.len()..];
    }
    if sources.is_empty() {
        "'none'".to_owned()
    } else {
        sources.join(" ")
    }
}

/// Every (method, path template) an OpenAPI description has, in its order.
pub fn routes_of(api: &utoipa::openapi::OpenApi) -> Vec<(Method, String)> {
    serde_json::to_value(&api.paths)
        .map(|paths| routes_in(&paths))
        .unwrap_or_default()
}

/// Every documented route as (method, path template).
pub fn documented_routes() -> Vec<(Method, String)> {
    routes_in(&document()["paths"])
}

fn routes_in(paths: &Value) -> Vec<(Method, String)> {
    let mut out = Vec::new();
    for (path, item) in paths.as_object().into_iter().flatten() {
        for method in item.as_object().into_iter().flat_map(|m| m.keys()) {
            if let Ok(method) = Method::from_bytes(method.to_ascii_uppercase().as_bytes()) {
                out.push((method, path.clone()));
            }
        }
    }
    out
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } },
    })
}

fn build() -> Value {
    let mut api = ApiDoc::openapi();
    let protected = super::api_routes().into_openapi();
    let protected_routes = routes_of(&protected);
    api.merge(super::public_routes().into_openapi());
    api.merge(protected);
    let mut doc = serde_json::to_value(&api).unwrap_or_else(|_| json!({}));
    doc["openapi"] = json!("3.1.0");
    doc["info"]["version"] = json!(env!("CARGO_PKG_VERSION"));
    if let Some(info) = doc["info"].as_object_mut() {
        info.remove("license");
        info.remove("contact");
    }
    doc["security"] = json!([{ "bearer": [] }, { "session": [] }]);
    doc["components"]["securitySchemes"] = json!({
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "An OIDC access token from the configured issuer (RS256 or ES256).",
        },
        "session": {
            "type": "apiKey",
            "in": "cookie",
            "name": SESSION_COOKIE,
            "description": "The session cookie set by the web UI's OIDC login.",
        },
    });
    for (name, schema) in provision::schemas() {
        doc["components"]["schemas"][name] = schema;
    }
    let Some(paths) = doc["paths"].as_object_mut() else {
        return doc;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in item.iter_mut() {
            let Ok(parsed) = Method::from_bytes(method.to_ascii_uppercase().as_bytes()) else {
                continue;
            };
            let protected = protected_routes
                .iter()
                .any(|(m, p)| *m == parsed && p == path);
            complete_operation(path, &parsed, op, protected);
        }
    }
    doc
}

/// Adds to one operation what its attribute cannot say.
fn complete_operation(path: &str, method: &Method, op: &mut Value, protected: bool) {
    let id = op["operationId"].as_str().unwrap_or_default().to_owned();
    if let Some(body) = provision::request_body(&id) {
        op["requestBody"] = body;
    }
    let events = match id.as_str() {
        "jobLogs" => Some(json!({
            "log": schema("LogLine"),
            "status": schema("JobStatusEvent"),
            "end": schema("JobView"),
        })),
        "events" => Some(json!({
            "hello": schema("HelloEvent"),
            "vm_added": schema("VmEvent"),
            "vm_changed": schema("VmChangedEvent"),
            "vm_removed": schema("VmRemovedEvent"),
            "host_connected": schema("HostEvent"),
            "host_disconnected": schema("HostDisconnectedEvent"),
            "host_removed": schema("HostEvent"),
            "resync": schema("ResyncEvent"),
            "job": schema("JobNotice"),
        })),
        _ => None,
    };
    if let Some(events) = events {
        // OpenAPI 3.1 reads the stream's `schema` as the schema of one event (`event`, `data`,
        // `id`); `x-events` repeats the data schemas by event name for the docs page.
        let stream = &mut op["responses"]["200"]["content"]["text/event-stream"];
        stream["schema"] = event_schema(&events);
        stream["x-events"] = events;
    }
    let responses = &mut op["responses"];
    // The Host check (`api::host_check`) runs before every route.
    responses["421"] = error_response(
        "`host_not_allowed`: the `Host` header names none of this server's names (`PUBLIC_URL`, \
         `ALLOWED_HOSTS`, `localhost` or an IP address); refused against DNS rebinding",
    );
    if path.contains('{') && responses.get("400").is_none() {
        responses["400"] =
            error_response("`bad_request`: a path segment cannot be decoded (e.g. not UTF-8)");
    }
    if !protected {
        op["security"] = json!([]);
        return;
    }
    let role = required_role_at(method, path).as_str();
    op["x-required-role"] = json!(role);
    let responses = &mut op["responses"];
    responses["401"] = error_response("`unauthenticated`: no token, or a bad or expired token");
    responses["403"] = error_response(&format!(
        "`forbidden`: the caller's role is below {role}, the token grants no role, or a \
         browser sent the request from another site"
    ));
    let unavailable = "`auth_unavailable`: the issuer's signing keys cannot be fetched";
    match responses.get_mut("503") {
        Some(existing) => {
            let text = existing["description"].as_str().unwrap_or_default();
            existing["description"] = Value::from(format!("{text}; {unavailable}"));
        }
        None => responses["503"] = error_response(unavailable),
    }
}

/// The schema of one event of a stream whose events are `events` (name → data schema).
fn event_schema(events: &Value) -> Value {
    let variants: Vec<Value> = events
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, data)| {
            json!({
                "type": "object",
                "properties": {
                    "event": { "const": name },
                    "data": {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": data,
                    },
                    "id": { "type": "string" },
                    "retry": { "type": "integer" },
                },
                "required": ["event", "data"],
            })
        })
        .collect();
    json!({ "oneOf": variants })
}

fn schema(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    const METHODS: &[&str] = &[
        "get", "put", "post", "delete", "patch", "head", "options", "trace",
    ];

    fn collect_refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    if key == "$ref" {
                        out.push(v.as_str().expect("$ref is a string"));
                    } else {
                        collect_refs(v, out);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
            _ => {}
        }
    }

    /// `schema`, or the schema its `$ref` names.
    fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
        match schema["$ref"].as_str() {
            Some(r) => doc
                .pointer(r.strip_prefix('#').expect("local ref"))
                .expect("the ref resolves"),
            None => schema,
        }
    }

    fn operations_of(doc: &Value) -> Vec<(String, String, &Value)> {
        let mut out = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("path item") {
                assert!(METHODS.contains(&method.as_str()), "{method} on {path}");
                out.push((method.to_ascii_uppercase(), path.clone(), op));
            }
        }
        out
    }

    #[test]
    fn document_is_openapi_3_1_and_round_trips() {
        let doc = document();
        let version = doc["openapi"].as_str().expect("openapi version");
        assert!(version.starts_with("3.1."), "{version}");
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
        let text = serde_json::to_string(doc).expect("serialises");
        let back: Value = serde_json::from_str(&text).expect("parses");
        assert_eq!(&back, doc);
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        assert_eq!(
            doc["components"]["securitySchemes"]["session"]["in"],
            "cookie"
        );
    }

    #[test]
    fn every_ref_resolves() {
        let doc = document();
        let mut refs = Vec::new();
        collect_refs(doc, &mut refs);
        assert!(refs.len() > 50, "only {} refs", refs.len());
        for r in refs {
            let pointer = r.strip_prefix('#').expect("local ref");
            assert!(
                pointer.starts_with("/components/schemas/"),
                "unexpected ref target {r}"
            );
            assert!(doc.pointer(pointer).is_some(), "dangling $ref {r}");
        }
    }

    #[test]
    fn the_document_has_exactly_the_route_tables() {
        let doc = document();
        let documented: BTreeSet<(String, String)> = operations_of(doc)
            .into_iter()
            .map(|(m, p, _)| (m, p))
            .collect();
        let mut tables = routes_of(&crate::api::public_routes().into_openapi());
        tables.extend(crate::api::api_route_list());
        let listed: BTreeSet<(String, String)> = tables
            .iter()
            .map(|(m, p)| (m.as_str().to_owned(), p.clone()))
            .collect();
        assert_eq!(listed.len(), tables.len(), "a route is in the tables twice");
        assert_eq!(documented, listed);
        assert!(listed.contains(&("GET".to_owned(), "/".to_owned())));
        assert!(listed.contains(&("POST".to_owned(), "/api/v1/vms/delete".to_owned())));
        for (method, path) in crate::api::api_route_list() {
            let op = &doc["paths"][&path][method.as_str().to_ascii_lowercase()];
            let expected = if method == Method::GET {
                "reader"
            } else if path == "/api/v1/placement" {
                // A POST that only reads (the ranking of hosts for a VM size).
                "reader"
            } else if path.contains("/orphan/") {
                "admin"
            } else {
                "writer"
            };
            assert_eq!(op["x-required-role"], expected, "{method} {path}");
        }
    }

    #[test]
    fn path_parameters_are_declared() {
        for (method, path, op) in operations_of(document()) {
            let in_template: BTreeSet<&str> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
                .collect();
            let declared: BTreeSet<&str> = op["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .filter(|p| p["in"] == "path")
                        .map(|p| p["name"].as_str().expect("name"))
                        .collect()
                })
                .unwrap_or_default();
            assert_eq!(in_template, declared, "{method} {path}");
        }
    }

    #[test]
    fn operations_are_complete() {
        let doc = document();
        let mut ids = BTreeSet::new();
        for (method, path, op) in operations_of(doc) {
            let id = op["operationId"].as_str().expect("operationId");
            assert!(ids.insert(id.to_owned()), "duplicate operationId {id}");
            assert!(
                op["summary"].as_str().is_some_and(|s| !s.is_empty()),
                "{method} {path} has no summary"
            );
            let responses = op["responses"].as_object().expect("responses");
            assert!(
                responses.keys().any(|c| c.starts_with('2')),
                "{method} {path} has no 2xx response"
            );
            for (code, response) in responses {
                assert!(
                    response["description"].as_str().is_some(),
                    "{method} {path} {code} has no description"
                );
                let is_error = code.starts_with('4') || code.starts_with('5');
                // The readiness probe's 503 is its documented not-ready body, not an error.
                if is_error && path != "/readyz" {
                    assert_eq!(
                        response["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/Error",
                        "{method} {path} {code}"
                    );
                }
            }
            assert!(responses.contains_key("421"), "{method} {path} lacks 421");
            let public = op.get("security").is_some();
            if !public {
                assert!(responses.contains_key("401"), "{method} {path} lacks 401");
                assert!(responses.contains_key("403"), "{method} {path} lacks 403");
                assert!(responses.contains_key("503"), "{method} {path} lacks 503");
            }
        }
    }

    #[test]
    fn bodies_and_enums_follow_the_contract() {
        let doc = document();
        let schemas = &doc["components"]["schemas"];
        let create = &schemas["CreateVmRequest"];
        // The host or the cluster: exactly one of them.
        assert_eq!(
            create["oneOf"],
            json!([{"required": ["hyperv_host"]}, {"required": ["target_cluster"]}])
        );
        for target in ["hyperv_host", "target_cluster"] {
            assert!(create["properties"].get(target).is_some(), "{target}");
        }
        for field in [
            "vm_name",
            "image_name",
            "gb_ram",
            "cpu_cores",
            "guest_la_uid",
            "guest_la_pw",
        ] {
            assert!(
                create["required"]
                    .as_array()
                    .expect("required")
                    .contains(&Value::from(field)),
                "{field} not required"
            );
        }
        for (members, optional) in provision::GROUPS {
            for field in members.iter().chain(optional.iter()) {
                assert!(
                    create["properties"].get(*field).is_some(),
                    "{field} missing"
                );
                assert!(
                    schemas["ProvisionValues"]["properties"]
                        .get(*field)
                        .is_some(),
                    "{field} missing"
                );
            }
        }
        assert_eq!(create["properties"]["gb_ram"]["maximum"], 512);
        assert_eq!(create["properties"]["cpu_cores"]["maximum"], 64);
        assert_eq!(create["properties"]["guest_la_pw"]["writeOnly"], true);
        assert_eq!(
            create["dependentRequired"]["guest_v4_dns2"],
            json!([
                "guest_v4_ipaddr",
                "guest_v4_cidrprefix",
                "guest_v4_defaultgw",
                "guest_v4_dns1"
            ])
        );
        let provision = &doc["paths"]["/api/v1/jobs/provision"]["post"]["requestBody"]["content"];
        assert!(provision.get("application/json").is_some());
        assert!(provision.get("application/yaml").is_some());
        let action = &doc["paths"]["/api/v1/vms/{id}/actions/{action}"]["post"]["parameters"][1];
        assert_eq!(action["name"], "action");
        let actions = resolve(doc, &action["schema"]);
        assert_eq!(
            actions["enum"],
            json!([
                "start", "shutdown", "stop", "restart", "save", "pause", "resume"
            ])
        );
        // The job record names the action the way the request does.
        let job_action = resolve(doc, &schemas["JobView"]["properties"]["action"]);
        let text = job_action.to_string();
        assert!(text.contains("JobAction"), "{text}");
        assert!(!doc.to_string().contains("turn_off"));
        let codes = &schemas["ErrorCode"]["enum"];
        for code in [
            "login_failed",
            "vm_busy",
            "bad_query",
            "auth_unavailable",
            "error",
        ] {
            assert!(
                codes
                    .as_array()
                    .expect("codes")
                    .contains(&Value::from(code)),
                "{code} missing from {codes}"
            );
        }
        let delete = &schemas["DeleteVmRequest"];
        assert_eq!(delete["additionalProperties"], false, "{delete}");
        let list = &doc["paths"]["/api/v1/jobs"]["get"];
        assert!(
            list["description"]
                .as_str()
                .expect("description")
                .contains("empty query value")
        );
        let logs = &doc["paths"]["/api/v1/jobs/{id}/logs"]["get"]["responses"]["200"]["content"];
        assert!(logs["text/event-stream"]["x-events"].get("end").is_some());
        let events = &doc["paths"]["/api/v1/events"]["get"]["responses"]["200"]["content"];
        assert!(
            events["text/event-stream"]["x-events"]
                .get("hello")
                .is_some()
        );
    }

    #[test]
    fn docs_page_is_self_contained() {
        let lower = DOCS_HTML.to_ascii_lowercase();
        assert!(!lower.contains("http://"), "docs.html references http://");
        assert!(!lower.contains("https://"), "docs.html references https://");
        assert!(!lower.contains("innerhtml"), "docs.html uses innerHTML");
        assert!(lower.contains("/openapi.json"));
        assert!(lower.contains("<meta name=\"viewport\""));
    }

    #[tokio::test]
    async fn handlers_answer() {
        use axum::body::to_bytes;
        use axum::http::header;

        let response = openapi_json().await.into_response();
        assert_eq!(
            response
                .headers()
                .get(header::CONTENT_TYPE)
                .map(|v| v.as_bytes()),
            Some(&b"application/json"[..])
        );
        let body = to_bytes(response.into_body(), 1 << 22).await.expect("body");
        let parsed: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(&parsed, document());
        let response = docs_page().await;
        let headers = response.headers().clone();
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
        let policy = headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .expect("ascii");
        assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
        assert!(policy.contains("connect-src 'self'"), "{policy}");
        assert!(!policy.contains("unsafe-inline"), "{policy}");
        // One hash for the page's one inline script and one for its style.
        assert_eq!(policy.matches("'sha256-").count(), 2, "{policy}");
        let body = to_bytes(response.into_body(), 1 << 22).await.expect("body");
        assert!(body.starts_with(b"<!doctype html>"));
    }

    #[test]
    fn inline_hashes_are_the_csp_hashes_of_the_element_text() {
        // printf 'alert(1)' | openssl dgst -sha256 -binary | base64
        assert_eq!(
            inline_hashes("<p><script>alert(1)</script>", "script"),
            "'sha256-bhHHL3z2vDgxUt0W3dWQOrprscmda2Y5pLsLg4GF+pI='"
        );
        assert_eq!(inline_hashes("<p>nothing</p>", "style"), "'none'");
    }
}
