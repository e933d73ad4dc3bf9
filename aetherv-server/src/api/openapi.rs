//! The OpenAPI 3.1 description of the REST API (`GET /openapi.json`) and the page that renders
//! it (`GET /docs`).
//!
//! [`document`] builds the description once; [`ROUTES`] lists every documented (method, path
//! template) pair so the router's tests can check that what is served is what is documented.
//! The docs page is one self-contained HTML file (inline CSS and script, no external
//! resources) that fetches `/openapi.json` and renders it.

use std::sync::OnceLock;

use axum::Json;
use axum::response::{Html, IntoResponse};
use serde_json::{Map, Value, json};

use crate::auth::session::SESSION_COOKIE;

/// Every documented route as (HTTP method, path template), in the order of the document.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/metrics"),
    ("GET", "/"),
    ("GET", "/api/v1/me"),
    ("GET", "/api/v1/status"),
    ("GET", "/api/v1/clusters"),
    ("GET", "/api/v1/hosts"),
    ("GET", "/api/v1/hosts/{hostname}"),
    ("GET", "/api/v1/vms"),
    ("GET", "/api/v1/vms/{id}"),
    ("POST", "/api/v1/vms/create"),
    ("POST", "/api/v1/jobs/provision"),
    ("POST", "/api/v1/vms/delete"),
    ("POST", "/api/v1/vms/{id}/actions/{action}"),
    ("GET", "/api/v1/jobs"),
    ("GET", "/api/v1/jobs/{id}"),
    ("GET", "/api/v1/jobs/{id}/logs"),
    ("POST", "/api/v1/jobs/{id}/cancel"),
    ("GET", "/api/v1/events"),
];

/// The docs page, rendered in the browser from `/openapi.json`.
const DOCS_HTML: &str = include_str!("docs.html");

/// The OpenAPI 3.1 document (built on first use).
pub fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(build)
}

/// `GET /openapi.json`.
pub async fn openapi_json() -> impl IntoResponse {
    Json(document())
}

/// `GET /docs`: the human-readable API reference.
pub async fn docs_page() -> Html<&'static str> {
    Html(DOCS_HTML)
}

// ---------------------------------------------------------------------------------------------
// Building blocks

/// Hyper-V VM state names (the `state` of a VM and the `state` query filter).
const VM_STATES: &[&str] = &[
    "Other",
    "Running",
    "Off",
    "Stopping",
    "Saved",
    "Paused",
    "Starting",
    "Reset",
    "Saving",
    "Pausing",
    "Resuming",
    "FastSaved",
    "FastSaving",
    "ForceShutdown",
    "ForceReboot",
    "Hibernated",
    "ComponentServicing",
];

/// Power actions of `POST /api/v1/vms/{id}/actions/{action}`.
const ACTIONS: &[&str] = &[
    "start", "shutdown", "stop", "restart", "save", "pause", "resume",
];

/// Job statuses.
const JOB_STATUSES: &[&str] = &["queued", "running", "succeeded", "failed", "cancelled"];

/// Job types.
const JOB_TYPES: &[&str] = &["provision", "delete", "power"];

/// Every error code.
const ERROR_CODES: &[&str] = &[
    "malformed_body",
    "bad_query",
    "unauthenticated",
    "forbidden",
    "not_found",
    "vm_exists",
    "vm_busy",
    "invalid_state",
    "job_finished",
    "unsupported_media_type",
    "invalid_field",
    "not_ready",
    "queue_full",
    "auth_unavailable",
    "method_not_allowed",
    "payload_too_large",
    "host_disconnected",
    "ambiguous_name",
    "bad_request",
    "error",
    "internal",
];

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn string() -> Value {
    json!({ "type": "string" })
}

fn nullable_string() -> Value {
    json!({ "type": ["string", "null"] })
}

fn integer() -> Value {
    json!({ "type": "integer", "minimum": 0 })
}

fn nullable_integer() -> Value {
    json!({ "type": ["integer", "null"], "minimum": 0 })
}

fn boolean() -> Value {
    json!({ "type": "boolean" })
}

fn date_time() -> Value {
    json!({ "type": "string", "format": "date-time" })
}

fn nullable_date_time() -> Value {
    json!({ "type": ["string", "null"], "format": "date-time" })
}

fn uuid() -> Value {
    json!({ "type": "string", "format": "uuid" })
}

fn strings() -> Value {
    json!({ "type": "array", "items": { "type": "string" } })
}

fn array_of(name: &str) -> Value {
    json!({ "type": "array", "items": schema_ref(name) })
}

fn enumeration(values: &[&str]) -> Value {
    json!({ "type": "string", "enum": values })
}

/// An object schema: every listed property is required unless named in `optional`.
fn object(description: &str, properties: &[(&str, Value)], optional: &[&str]) -> Value {
    let mut props = Map::new();
    let mut required = Vec::new();
    for (name, schema) in properties {
        props.insert((*name).to_owned(), schema.clone());
        if !optional.contains(name) {
            required.push(Value::from(*name));
        }
    }
    json!({
        "type": "object",
        "description": description,
        "properties": props,
        "required": required,
    })
}

/// `schema` with a description added.
fn described(mut schema: Value, description: &str) -> Value {
    if let Some(map) = schema.as_object_mut() {
        map.insert("description".to_owned(), Value::from(description));
    }
    schema
}

fn json_response(description: &str, schema: Value) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": schema } },
    })
}

fn error_response(description: &str) -> Value {
    json_response(description, schema_ref("Error"))
}

fn path_param(name: &str, description: &str, schema: Value) -> Value {
    json!({
        "name": name, "in": "path", "required": true, "description": description,
        "schema": schema,
    })
}

fn query_param(name: &str, description: &str, schema: Value) -> Value {
    json!({
        "name": name, "in": "query", "required": false, "description": description,
        "schema": schema,
    })
}

/// Who may call an operation.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    /// No authentication.
    Public,
    /// At least the reader role.
    Reader,
    /// At least the writer role.
    Writer,
}

/// One operation: the common fields plus the given parameters, body and responses.
struct Op<'a> {
    method: &'a str,
    path: &'a str,
    id: &'a str,
    tag: &'a str,
    summary: &'a str,
    description: &'a str,
    access: Access,
    parameters: Vec<Value>,
    body: Option<Value>,
    responses: Vec<(&'a str, Value)>,
}

impl Op<'_> {
    fn into_value(self) -> Value {
        let mut op = Map::new();
        op.insert("operationId".to_owned(), Value::from(self.id));
        op.insert("summary".to_owned(), Value::from(self.summary));
        op.insert("description".to_owned(), Value::from(self.description));
        op.insert("tags".to_owned(), json!([self.tag]));
        if !self.parameters.is_empty() {
            op.insert("parameters".to_owned(), Value::Array(self.parameters));
        }
        if let Some(body) = self.body {
            op.insert("requestBody".to_owned(), body);
        }
        let mut responses = Map::new();
        for (code, response) in self.responses {
            responses.insert(code.to_owned(), response);
        }
        let role = match self.access {
            Access::Public => {
                op.insert("security".to_owned(), json!([]));
                None
            }
            Access::Reader => Some("reader"),
            Access::Writer => Some("writer"),
        };
        if let Some(role) = role {
            op.insert("x-required-role".to_owned(), Value::from(role));
            responses.insert(
                "401".to_owned(),
                error_response("`unauthenticated`: no token, or a bad or expired token"),
            );
            responses.insert(
                "403".to_owned(),
                error_response(&format!(
                    "`forbidden`: the caller's role is below {role}, or the token grants no role"
                )),
            );
            let unavailable = "`auth_unavailable`: the issuer's signing keys cannot be fetched";
            match responses.get_mut("503") {
                Some(existing) => {
                    let text = existing["description"].as_str().unwrap_or_default();
                    existing["description"] = Value::from(format!("{text}; {unavailable}"));
                }
                None => {
                    responses.insert("503".to_owned(), error_response(unavailable));
                }
            }
        }
        op.insert("responses".to_owned(), Value::Object(responses));
        Value::Object(op)
    }
}

// ---------------------------------------------------------------------------------------------
// The document

fn build() -> Value {
    let mut paths = Map::new();
    for op in operations() {
        let path = op.path.to_owned();
        let method = op.method.to_ascii_lowercase();
        let entry = paths.entry(path).or_insert_with(|| json!({}));
        if let Some(map) = entry.as_object_mut() {
            map.insert(method, op.into_value());
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "aetherv",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Hyper-V fleet inventory, VM provisioning and power control. \
                Times are RFC 3339 UTC strings; sizes are bytes. Every error answers \
                `{\"error\": {\"code\", \"message\", \"field\"?}}`.",
        },
        "tags": [
            { "name": "probes", "description": "Health, readiness and documents" },
            { "name": "session", "description": "Who is calling and the server's state" },
            { "name": "inventory", "description": "Clusters, hosts and VMs (reader)" },
            { "name": "jobs", "description": "Provisioning, deletion and power jobs (mutations need writer)" },
            { "name": "events", "description": "Live inventory and job changes" },
        ],
        "security": [{ "bearer": [] }, { "session": [] }],
        "paths": paths,
        "components": {
            "securitySchemes": {
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
            },
            "schemas": schemas(),
        },
    })
}

fn operations() -> Vec<Op<'static>> {
    let not_ready = || {
        error_response(
            "`not_ready`: the server is still starting (artifacts, first inventory); \
             `queue_full`: too many jobs are waiting",
        )
    };
    let too_large = || error_response("`payload_too_large`: the body is over 256 KiB");
    let malformed =
        || error_response("`malformed_body`: the body is not JSON (or YAML where accepted)");
    let unsupported =
        || error_response("`unsupported_media_type`: the body is neither JSON nor YAML");
    let invalid = || {
        error_response(
            "`invalid_field`: a field failed validation; `field` names it and `details` lists every invalid field",
        )
    };
    let bad_query = || error_response("`bad_query`: a query parameter is unusable");
    let vm_id = || path_param("id", "Hyper-V VM id", uuid());
    let job_id = || path_param("id", "Job id", uuid());
    let accepted = || json_response("The job was queued", schema_ref("Accepted"));
    let provision_responses = || {
        vec![
            ("202", accepted()),
            ("400", malformed()),
            (
                "409",
                error_response("`vm_exists`: a VM with this name is already on the host"),
            ),
            ("413", too_large()),
            ("415", unsupported()),
            ("422", invalid()),
            ("503", not_ready()),
        ]
    };

    vec![
        Op {
            method: "GET",
            path: "/healthz",
            id: "healthz",
            tag: "probes",
            summary: "Liveness probe",
            description: "Answers 200 while the process runs.",
            access: Access::Public,
            parameters: vec![],
            body: None,
            responses: vec![(
                "200",
                json_response("The process runs", schema_ref("Health")),
            )],
        },
        Op {
            method: "GET",
            path: "/readyz",
            id: "readyz",
            tag: "probes",
            summary: "Readiness probe",
            description: "Ready once the artifacts are in place and the first inventory is loaded.",
            access: Access::Public,
            parameters: vec![],
            body: None,
            responses: vec![
                (
                    "200",
                    json_response("Ready (`status` is `ready`)", schema_ref("Readiness")),
                ),
                (
                    "503",
                    json_response(
                        "Not ready yet (`status` is `not_ready`, `reason` says why)",
                        schema_ref("Readiness"),
                    ),
                ),
            ],
        },
        Op {
            method: "GET",
            path: "/openapi.json",
            id: "openapi",
            tag: "probes",
            summary: "This OpenAPI document",
            description: "The machine-readable API contract (OpenAPI 3.1).",
            access: Access::Public,
            parameters: vec![],
            body: None,
            responses: vec![(
                "200",
                json_response("The OpenAPI document", json!({ "type": "object" })),
            )],
        },
        Op {
            method: "GET",
            path: "/docs",
            id: "docs",
            tag: "probes",
            summary: "API reference page",
            description: "A self-contained HTML page that renders `/openapi.json`.",
            access: Access::Public,
            parameters: vec![],
            body: None,
            responses: vec![(
                "200",
                json!({ "description": "HTML page", "content": { "text/html": { "schema": string() } } }),
            )],
        },
        Op {
            method: "GET",
            path: "/metrics",
            id: "metrics",
            tag: "probes",
            summary: "Prometheus metrics",
            description: "Jobs, host operations, inventory refreshes and HTTP requests in the \
                OpenMetrics text format.",
            access: Access::Public,
            parameters: vec![],
            body: None,
            responses: vec![(
                "200",
                json!({
                    "description": "OpenMetrics text",
                    "content": { "application/openmetrics-text": { "schema": string() } },
                }),
            )],
        },
        Op {
            method: "GET",
            path: "/",
            id: "webUi",
            tag: "probes",
            summary: "Web UI",
            description: "The single-page web interface.",
            access: Access::Public,
            parameters: vec![],
            body: None,
            responses: vec![(
                "200",
                json!({ "description": "HTML page", "content": { "text/html": { "schema": string() } } }),
            )],
        },
        Op {
            method: "GET",
            path: "/api/v1/me",
            id: "getMe",
            tag: "session",
            summary: "The caller",
            description: "Whether authentication is enabled, who is calling and with which role, \
                and where to log in or out.",
            access: Access::Reader,
            parameters: vec![],
            body: None,
            responses: vec![("200", json_response("The caller", schema_ref("Me")))],
        },
        Op {
            method: "GET",
            path: "/api/v1/status",
            id: "getStatus",
            tag: "session",
            summary: "Server status",
            description: "Mode, readiness, version and counts of hosts, VMs and jobs.",
            access: Access::Reader,
            parameters: vec![],
            body: None,
            responses: vec![("200", json_response("Server status", schema_ref("Status")))],
        },
        Op {
            method: "GET",
            path: "/api/v1/clusters",
            id: "listClusters",
            tag: "inventory",
            summary: "List clusters",
            description: "Clusters derived from the hosts' facts.",
            access: Access::Reader,
            parameters: vec![],
            body: None,
            responses: vec![("200", json_response("Clusters", schema_ref("ClusterList")))],
        },
        Op {
            method: "GET",
            path: "/api/v1/hosts",
            id: "listHosts",
            tag: "inventory",
            summary: "List hosts",
            description: "Every configured host with its connection status and capacity \
                (facts fields are null before the first refresh).",
            access: Access::Reader,
            parameters: vec![],
            body: None,
            responses: vec![("200", json_response("Hosts", schema_ref("HostList")))],
        },
        Op {
            method: "GET",
            path: "/api/v1/hosts/{hostname}",
            id: "getHost",
            tag: "inventory",
            summary: "One host",
            description: "The host, its full facts and its VMs.",
            access: Access::Reader,
            parameters: vec![path_param("hostname", "Host name as configured", string())],
            body: None,
            responses: vec![
                ("200", json_response("The host", schema_ref("HostDetail"))),
                ("404", error_response("`not_found`: unknown host")),
            ],
        },
        Op {
            method: "GET",
            path: "/api/v1/vms",
            id: "listVms",
            tag: "inventory",
            summary: "List VMs",
            description: "VMs of every host, filtered by the query parameters (all optional, \
                combined with AND).",
            access: Access::Reader,
            parameters: vec![
                query_param("host", "Only VMs on this host", string()),
                query_param("cluster", "Only VMs on hosts of this cluster", string()),
                query_param(
                    "state",
                    "Only VMs in this Hyper-V state (case-insensitive)",
                    enumeration(VM_STATES),
                ),
                query_param(
                    "q",
                    "Case-insensitive substring of the name, id, notes or an IP address",
                    string(),
                ),
            ],
            body: None,
            responses: vec![
                ("200", json_response("Matching VMs", schema_ref("VmList"))),
                ("400", bad_query()),
            ],
        },
        Op {
            method: "GET",
            path: "/api/v1/vms/{id}",
            id: "getVm",
            tag: "inventory",
            summary: "One VM",
            description: "The VM with disks, drives, adapters, integration services and the power \
                actions its state allows.",
            access: Access::Reader,
            parameters: vec![vm_id()],
            body: None,
            responses: vec![
                ("200", json_response("The VM", schema_ref("VmDetail"))),
                ("404", error_response("`not_found`: unknown VM")),
            ],
        },
        Op {
            method: "POST",
            path: "/api/v1/vms/create",
            id: "createVm",
            tag: "jobs",
            summary: "Create a VM",
            description: "Queues a provisioning job from the flat body (job schema v1 values at \
                the top level, the host in `hyperv_host`). A name already on the host answers \
                409 before anything runs.",
            access: Access::Writer,
            parameters: vec![],
            body: Some(json!({
                "required": true,
                "content": { "application/json": { "schema": schema_ref("CreateVmRequest") } },
            })),
            responses: provision_responses(),
        },
        Op {
            method: "POST",
            path: "/api/v1/jobs/provision",
            id: "provisionVm",
            tag: "jobs",
            summary: "Submit a provisioning job",
            description: "Queues a provisioning job in the job schema (v1), as JSON or YAML \
                (`Content-Type: application/yaml`, or detected from the body).",
            access: Access::Writer,
            parameters: vec![],
            body: Some(json!({
                "required": true,
                "content": {
                    "application/json": { "schema": schema_ref("ProvisionJobRequest") },
                    "application/yaml": { "schema": schema_ref("ProvisionJobRequest") },
                },
            })),
            responses: provision_responses(),
        },
        Op {
            method: "POST",
            path: "/api/v1/vms/delete",
            id: "deleteVm",
            tag: "jobs",
            summary: "Delete a VM",
            description: "Queues a delete job for the VM named by id, or by name and host.",
            access: Access::Writer,
            parameters: vec![],
            body: Some(json!({
                "required": true,
                "content": { "application/json": { "schema": schema_ref("DeleteVmRequest") } },
            })),
            responses: vec![
                ("202", accepted()),
                ("400", malformed()),
                ("404", error_response("`not_found`: unknown VM")),
                (
                    "409",
                    error_response(
                        "`vm_busy`: another job works on the VM; `invalid_state`: the VM's state does not allow deleting",
                    ),
                ),
                ("415", unsupported()),
                ("422", invalid()),
                ("503", not_ready()),
            ],
        },
        Op {
            method: "POST",
            path: "/api/v1/vms/{id}/actions/{action}",
            id: "vmAction",
            tag: "jobs",
            summary: "Apply a power action",
            description: "Queues a power job (`stop` turns the VM off).",
            access: Access::Writer,
            parameters: vec![
                vm_id(),
                path_param("action", "The power action", enumeration(ACTIONS)),
            ],
            body: None,
            responses: vec![
                ("202", accepted()),
                ("404", error_response("`not_found`: unknown VM or action")),
                (
                    "409",
                    error_response(
                        "`invalid_state`: the action is not allowed in the VM's current state (named in the message); `vm_busy`: another job works on the VM",
                    ),
                ),
                ("503", not_ready()),
            ],
        },
        Op {
            method: "GET",
            path: "/api/v1/jobs",
            id: "listJobs",
            tag: "jobs",
            summary: "List jobs",
            description: "Jobs in the history, newest first.",
            access: Access::Reader,
            parameters: vec![
                query_param(
                    "status",
                    "Only jobs with this status",
                    enumeration(JOB_STATUSES),
                ),
                query_param("type", "Only jobs of this type", enumeration(JOB_TYPES)),
                query_param("host", "Only jobs on this host", string()),
                query_param("vm_id", "Only jobs on this VM", uuid()),
                query_param(
                    "limit",
                    "At most this many jobs",
                    json!({ "type": "integer", "minimum": 1 }),
                ),
            ],
            body: None,
            responses: vec![
                (
                    "200",
                    json_response("Jobs, newest first", schema_ref("JobList")),
                ),
                ("400", bad_query()),
            ],
        },
        Op {
            method: "GET",
            path: "/api/v1/jobs/{id}",
            id: "getJob",
            tag: "jobs",
            summary: "One job",
            description: "The job with its steps, error, cleanup and result.",
            access: Access::Reader,
            parameters: vec![job_id()],
            body: None,
            responses: vec![
                ("200", json_response("The job", schema_ref("Job"))),
                ("404", error_response("`not_found`: unknown job")),
            ],
        },
        Op {
            method: "GET",
            path: "/api/v1/jobs/{id}/logs",
            id: "jobLogs",
            tag: "jobs",
            summary: "Job log",
            description: "Server-Sent Events: every line so far, then live ones, until the job \
                ends. Events: `log` (a LogLine), `status` whenever the status changes \
                (JobStatusEvent), `end` last (the final Job). With `follow=false` a JSON \
                document of the lines so far instead.",
            access: Access::Reader,
            parameters: vec![
                job_id(),
                query_param(
                    "follow",
                    "`false` answers the lines so far as JSON instead of a stream",
                    json!({ "type": "boolean", "default": true }),
                ),
            ],
            body: None,
            responses: vec![
                (
                    "200",
                    json!({
                        "description": "The log as a stream (default) or as JSON (`follow=false`)",
                        "content": {
                            "text/event-stream": {
                                "schema": string(),
                                "x-events": {
                                    "log": schema_ref("LogLine"),
                                    "status": schema_ref("JobStatusEvent"),
                                    "end": schema_ref("Job"),
                                },
                            },
                            "application/json": { "schema": schema_ref("JobLogs") },
                        },
                    }),
                ),
                ("400", bad_query()),
                ("404", error_response("`not_found`: unknown job")),
            ],
        },
        Op {
            method: "POST",
            path: "/api/v1/jobs/{id}/cancel",
            id: "cancelJob",
            tag: "jobs",
            summary: "Cancel a job",
            description: "Requests cancellation; queued jobs are cancelled at once, running ones \
                at their next step boundary.",
            access: Access::Writer,
            parameters: vec![job_id()],
            body: None,
            responses: vec![
                (
                    "202",
                    json_response("Cancellation requested", schema_ref("Accepted")),
                ),
                ("404", error_response("`not_found`: unknown job")),
                (
                    "409",
                    error_response("`job_finished`: the job has already finished"),
                ),
            ],
        },
        Op {
            method: "GET",
            path: "/api/v1/events",
            id: "events",
            tag: "events",
            summary: "Live inventory events",
            description: "Server-Sent Events. `hello` first, then `vm_added`, `vm_changed`, \
                `vm_removed`, `host_connected`, `host_disconnected`, `host_removed`, `resync` \
                (events were missed: reload everything) and `job` (a job's status changed). \
                Keep-alive comments every 15 s.",
            access: Access::Reader,
            parameters: vec![],
            body: None,
            responses: vec![(
                "200",
                json!({
                    "description": "An endless event stream",
                    "content": {
                        "text/event-stream": {
                            "schema": string(),
                            "x-events": {
                                "hello": schema_ref("HelloEvent"),
                                "vm_added": schema_ref("VmEvent"),
                                "vm_changed": schema_ref("VmEvent"),
                                "vm_removed": schema_ref("VmRemovedEvent"),
                                "host_connected": schema_ref("HostEvent"),
                                "host_disconnected": schema_ref("HostDisconnectedEvent"),
                                "host_removed": schema_ref("HostEvent"),
                                "resync": schema_ref("ResyncEvent"),
                                "job": schema_ref("JobEvent"),
                            },
                        },
                    },
                }),
            )],
        },
    ]
}

// ---------------------------------------------------------------------------------------------
// Request bodies (job schema v1)

/// Integer fields accept numbers or strings of digits.
fn int_field(min: i64, max: i64, description: &str) -> Value {
    json!({
        "type": ["integer", "string"],
        "minimum": min,
        "maximum": max,
        "pattern": "^[0-9]+$",
        "description": description,
    })
}

fn text_field(description: &str) -> Value {
    json!({ "type": ["string", "null"], "description": description })
}

fn secret_field(description: &str) -> Value {
    json!({
        "type": "string",
        "format": "password",
        "writeOnly": true,
        "description": description,
    })
}

/// The schema-v1 values (without the host), required first.
fn value_fields() -> Vec<(&'static str, Value)> {
    vec![
        (
            "vm_name",
            json!({
                "type": "string",
                "minLength": 1,
                "maxLength": 64,
                "pattern": "^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?$",
                "description": "1–64 ASCII letters, digits and hyphens, no leading or trailing \
                    hyphen; for Windows guests at most 15 characters and not only digits (it \
                    becomes the computer name)",
            }),
        ),
        (
            "image_name",
            json!({
                "type": "string",
                "minLength": 1,
                "maxLength": 255,
                "description": "Golden image name; no `/`, `\\`, `..` or control characters. \
                    Decides the OS family unless `os_family` is given",
            }),
        ),
        ("gb_ram", int_field(1, 512, "Memory in GiB (1–512)")),
        ("cpu_cores", int_field(1, 64, "Virtual processors (1–64)")),
        (
            "guest_la_uid",
            json!({
                "type": "string",
                "minLength": 1,
                "maxLength": 32,
                "description": "Guest local administrator. Windows: at most 20 characters, none \
                    of `\" / \\ [ ] : ; | = , + * ? < > @`. Linux: at most 32 characters, no \
                    whitespace, `:` or `/`",
            }),
        ),
        (
            "guest_la_pw",
            secret_field("Guest local administrator password (secret)"),
        ),
        (
            "vlan_id",
            json!({
                "type": ["integer", "string", "null"],
                "minimum": 0,
                "maximum": 4094,
                "pattern": "^[0-9]*$",
                "description": "Access VLAN, 0–4094 (0 means untagged)",
            }),
        ),
        (
            "vm_clustered",
            json!({
                "type": ["boolean", "string", "null"],
                "enum": [true, false, "true", "false", "", null],
                "default": false,
                "description": "Make the VM a highly available cluster role",
            }),
        ),
        (
            "os_family",
            json!({
                "type": ["string", "null"],
                "enum": ["windows", "linux", "", null],
                "description": "Overrides the detection from `image_name` (case-insensitive)",
            }),
        ),
        (
            "guest_v4_ipaddr",
            text_field("Static IPv4: the address (group: static IPv4)"),
        ),
        (
            "guest_v4_cidrprefix",
            json!({
                "type": ["integer", "string", "null"],
                "minimum": 0,
                "maximum": 32,
                "pattern": "^[0-9]*$",
                "description": "Static IPv4: prefix length 0–32",
            }),
        ),
        (
            "guest_v4_defaultgw",
            text_field(
                "Static IPv4: default gateway, inside the subnet and not the address itself",
            ),
        ),
        ("guest_v4_dns1", text_field("Static IPv4: first DNS server")),
        (
            "guest_v4_dns2",
            text_field("Static IPv4 (optional member): second DNS server"),
        ),
        (
            "guest_net_dnssuffix",
            text_field("Static IPv4 (optional member): DNS suffix"),
        ),
        (
            "guest_domain_jointarget",
            text_field("Domain join (Windows): the domain to join"),
        ),
        (
            "guest_domain_joinuid",
            text_field("Domain join (Windows): the account that joins"),
        ),
        (
            "guest_domain_joinpw",
            json!({
                "type": ["string", "null"],
                "format": "password",
                "writeOnly": true,
                "description": "Domain join (Windows): the account's password (secret)",
            }),
        ),
        (
            "guest_domain_joinou",
            text_field("Domain join (Windows, optional member): the OU for the computer account"),
        ),
        (
            "cnf_ansible_ssh_user",
            text_field("Ansible SSH (Linux): the user to create"),
        ),
        (
            "cnf_ansible_ssh_key",
            text_field("Ansible SSH (Linux): one OpenSSH public key line (never a private key)"),
        ),
    ]
}

const REQUIRED_VALUES: &[&str] = &[
    "vm_name",
    "image_name",
    "gb_ram",
    "cpu_cores",
    "guest_la_uid",
    "guest_la_pw",
];

/// The all-or-none groups: (required members, optional members).
const GROUPS: &[(&[&str], &[&str])] = &[
    (
        &[
            "guest_v4_ipaddr",
            "guest_v4_cidrprefix",
            "guest_v4_defaultgw",
            "guest_v4_dns1",
        ],
        &["guest_v4_dns2", "guest_net_dnssuffix"],
    ),
    (
        &[
            "guest_domain_jointarget",
            "guest_domain_joinuid",
            "guest_domain_joinpw",
        ],
        &["guest_domain_joinou"],
    ),
    (&["cnf_ansible_ssh_user", "cnf_ansible_ssh_key"], &[]),
];

const VALUE_RULES: &str = "Groups are all-or-none: giving any member of static IPv4 \
    (`guest_v4_*`, `guest_net_dnssuffix`), domain join (`guest_domain_*`, Windows only) or \
    Ansible SSH (`cnf_ansible_ssh_*`, Linux only) requires the group's required members; \
    fields of a group that does not apply to the guest's OS family are dropped with a warning. \
    `null`, empty and whitespace-only strings mean \"not given\"; integers may be strings of \
    digits and booleans the strings \"true\"/\"false\". Unknown fields are refused.";

/// An object schema over the schema-v1 values plus `extra` fields (required).
fn values_schema(description: &str, extra: &[(&str, Value)]) -> Value {
    let mut props = Map::new();
    let mut required: Vec<Value> = Vec::new();
    for (name, schema) in extra {
        props.insert((*name).to_owned(), schema.clone());
        required.push(Value::from(*name));
    }
    for (name, schema) in value_fields() {
        props.insert(name.to_owned(), schema);
    }
    required.extend(REQUIRED_VALUES.iter().map(|n| Value::from(*n)));
    let mut dependent = Map::new();
    for (members, optional) in GROUPS {
        for member in members.iter().chain(optional.iter()) {
            let others: Vec<Value> = members
                .iter()
                .filter(|m| *m != member)
                .map(|m| Value::from(*m))
                .collect();
            dependent.insert((*member).to_owned(), Value::Array(others));
        }
    }
    json!({
        "type": "object",
        "description": format!("{description} {VALUE_RULES}"),
        "properties": props,
        "required": required,
        "dependentRequired": dependent,
        "additionalProperties": false,
    })
}

fn host_field() -> Value {
    json!({
        "type": "string",
        "minLength": 1,
        "maxLength": 253,
        "pattern": "^\\S+$",
        "description": "The Hyper-V host (or cluster node): host name or address, no whitespace",
    })
}

// ---------------------------------------------------------------------------------------------
// Component schemas

fn schemas() -> Value {
    let mut s = Map::new();
    let mut add = |name: &str, schema: Value| {
        s.insert(name.to_owned(), schema);
    };

    add(
        "Error",
        object(
            "Every error answer",
            &[(
                "error",
                object(
                    "What went wrong",
                    &[
                        ("code", enumeration(ERROR_CODES)),
                        ("message", string()),
                        ("field", described(string(), "The input field at fault")),
                        (
                            "details",
                            described(
                                array_of("FieldProblem"),
                                "Every invalid field (422 only); the first is repeated in `field`/`message`",
                            ),
                        ),
                    ],
                    &["field", "details"],
                ),
            )],
            &[],
        ),
    );
    add(
        "FieldProblem",
        object(
            "One invalid field",
            &[("field", string()), ("message", string())],
            &[],
        ),
    );
    add(
        "Health",
        object("Liveness", &[("status", enumeration(&["ok"]))], &[]),
    );
    add(
        "Readiness",
        object(
            "Readiness",
            &[
                ("status", enumeration(&["ready", "not_ready"])),
                ("reason", described(string(), "Why the server is not ready")),
            ],
            &["reason"],
        ),
    );
    add(
        "Me",
        object(
            "The caller",
            &[
                ("auth_enabled", boolean()),
                ("subject", described(string(), "The token's `sub` claim")),
                ("name", nullable_string()),
                ("role", enumeration(&["reader", "writer", "admin"])),
                (
                    "login_url",
                    json!({ "type": ["string", "null"], "examples": ["/oidc/login"] }),
                ),
                (
                    "logout_url",
                    json!({ "type": ["string", "null"], "examples": ["/oidc/logout"] }),
                ),
            ],
            &[],
        ),
    );
    add(
        "Status",
        object(
            "Server status",
            &[
                ("mode", enumeration(&["demo", "fleet"])),
                ("ready", boolean()),
                ("reason", nullable_string()),
                ("version", string()),
                ("hosts", integer()),
                ("vms", integer()),
                ("jobs_running", integer()),
                ("jobs_queued", integer()),
            ],
            &[],
        ),
    );
    add(
        "Cluster",
        object(
            "A failover cluster",
            &[
                ("name", string()),
                ("hosts", strings()),
                ("vm_count", integer()),
                ("connected_hosts", integer()),
            ],
            &[],
        ),
    );
    add(
        "ClusterList",
        object("Clusters", &[("clusters", array_of("Cluster"))], &[]),
    );
    add("Host", host_schema());
    add(
        "HostDetail",
        json!({
            "description": "A host with its facts and VMs",
            "allOf": [
                schema_ref("Host"),
                object(
                    "Facts and VMs",
                    &[
                        ("facts", json!({ "oneOf": [schema_ref("HostFacts"), { "type": "null" }] })),
                        ("vms", array_of("VmSummary")),
                    ],
                    &[],
                ),
            ],
        }),
    );
    add(
        "HostList",
        object("Hosts", &[("hosts", array_of("Host"))], &[]),
    );
    add(
        "HostFacts",
        object(
            "What a host is and has",
            &[
                ("name", string()),
                ("fqdn", string()),
                ("cluster", nullable_string()),
                ("os_version", nullable_string()),
                ("logical_processors", integer()),
                ("memory_total_bytes", integer()),
                ("memory_available_bytes", integer()),
                ("vm_path", string()),
                ("storage", array_of("StorageLocation")),
                ("switches", array_of("VirtualSwitch")),
                ("images", array_of("GoldenImage")),
                ("provisioning_isos", array_of("ProvisioningIso")),
                ("scripts_version", nullable_string()),
            ],
            &[],
        ),
    );
    add(
        "StorageLocation",
        object(
            "A storage location",
            &[
                ("path", string()),
                ("capacity_bytes", integer()),
                ("free_bytes", integer()),
                ("shared", described(boolean(), "A cluster shared volume")),
            ],
            &[],
        ),
    );
    add(
        "VirtualSwitch",
        object(
            "A virtual switch",
            &[
                ("name", string()),
                (
                    "switch_type",
                    enumeration(&["External", "Internal", "Private"]),
                ),
            ],
            &[],
        ),
    );
    add(
        "GoldenImage",
        object(
            "A golden image",
            &[
                ("name", string()),
                (
                    "os_family",
                    described(string(), "`windows`, `linux` or empty"),
                ),
                ("path", string()),
                ("size_bytes", integer()),
                ("max_size_bytes", nullable_integer()),
            ],
            &[],
        ),
    );
    add(
        "ProvisioningIso",
        object(
            "A provisioning ISO (guest agent media)",
            &[
                ("os_family", enumeration(&["windows", "linux"])),
                ("path", string()),
                ("size_bytes", integer()),
                ("version", nullable_string()),
            ],
            &[],
        ),
    );
    add(
        "VmState",
        described(enumeration(VM_STATES), "Hyper-V VM state"),
    );
    add(
        "VmSummary",
        object("A VM in lists", &vm_summary_fields(), &[]),
    );
    add(
        "VmList",
        object(
            "Matching VMs",
            &[("vms", array_of("VmSummary")), ("total", integer())],
            &[],
        ),
    );
    add(
        "VmDetail",
        json!({
            "description": "A VM with everything the inventory knows",
            "allOf": [
                schema_ref("VmSummary"),
                object(
                    "Details",
                    &[
                        ("generation", integer()),
                        ("version", nullable_string()),
                        ("path", nullable_string()),
                        ("memory_minimum_bytes", integer()),
                        ("memory_maximum_bytes", integer()),
                        ("dynamic_memory", boolean()),
                        ("creation_time", nullable_date_time()),
                        ("notes", string()),
                        ("disks", array_of("VmDisk")),
                        ("dvd_drives", array_of("VmDvdDrive")),
                        ("network_adapters", array_of("VmNetworkAdapter")),
                        ("integration_services", array_of("IntegrationService")),
                        (
                            "allowed_actions",
                            json!({ "type": "array", "items": enumeration(ACTIONS) }),
                        ),
                    ],
                    &[],
                ),
            ],
        }),
    );
    add(
        "VmDisk",
        object(
            "A virtual hard disk",
            &[
                ("path", string()),
                ("controller_type", enumeration(&["IDE", "SCSI"])),
                ("controller_number", integer()),
                ("controller_location", integer()),
                (
                    "disk_type",
                    described(string(), "`Fixed`, `Dynamic` or `Differencing`"),
                ),
                ("max_size_bytes", integer()),
                ("file_size_bytes", integer()),
            ],
            &[],
        ),
    );
    add(
        "VmDvdDrive",
        object(
            "A DVD drive",
            &[
                ("path", described(nullable_string(), "Inserted ISO")),
                ("controller_type", enumeration(&["IDE", "SCSI"])),
                ("controller_number", integer()),
                ("controller_location", integer()),
            ],
            &[],
        ),
    );
    add(
        "VmNetworkAdapter",
        object(
            "A network adapter",
            &[
                ("name", string()),
                ("switch_name", nullable_string()),
                (
                    "vlan_id",
                    described(nullable_integer(), "Access VLAN; null when untagged"),
                ),
                ("mac_address", string()),
                ("ip_addresses", strings()),
            ],
            &[],
        ),
    );
    add(
        "IntegrationService",
        object(
            "An integration service",
            &[("name", string()), ("enabled", boolean())],
            &[],
        ),
    );
    add(
        "CreateVmRequest",
        values_schema(
            "The flat create body: schema v1 values at the top level, the host in `hyperv_host`.",
            &[("hyperv_host", host_field())],
        ),
    );
    add(
        "ProvisionValues",
        values_schema("What to create and how to configure the guest.", &[]),
    );
    add(
        "ProvisionJobRequest",
        json!({
            "type": "object",
            "description": "A provisioning job in the job schema (v1)",
            "properties": {
                "schema_version": { "type": "integer", "const": 1 },
                "target_host": host_field(),
                "values": schema_ref("ProvisionValues"),
            },
            "required": ["schema_version", "target_host", "values"],
            "additionalProperties": false,
        }),
    );
    add(
        "DeleteVmRequest",
        json!({
            "type": "object",
            "description": "The VM by `vm_id`, or by `vm_name` and `hyperv_host`",
            "properties": {
                "vm_id": uuid(),
                "vm_name": string(),
                "hyperv_host": string(),
                "force": described(json!({ "type": "boolean", "default": false }), "Turn the VM off first if it runs"),
                "delete_disks": described(json!({ "type": "boolean", "default": false }), "Also delete the VM's disks"),
            },
            "oneOf": [
                { "required": ["vm_id"] },
                { "required": ["vm_name", "hyperv_host"] },
            ],
        }),
    );
    add(
        "Accepted",
        object(
            "A queued (or cancelled) job",
            &[("job_id", uuid()), ("status", enumeration(JOB_STATUSES))],
            &[],
        ),
    );
    add("Job", job_schema());
    add(
        "JobStep",
        object(
            "One step of a job",
            &[
                ("name", string()),
                (
                    "status",
                    enumeration(&["running", "succeeded", "failed", "cancelled"]),
                ),
                ("started_at", date_time()),
                ("finished_at", nullable_date_time()),
            ],
            &[],
        ),
    );
    add(
        "JobCleanup",
        object(
            "What compensation removed and what it left behind",
            &[
                ("removed", strings()),
                (
                    "left_behind",
                    json!({
                        "type": "array",
                        "items": object(
                            "An artifact that could not be removed",
                            &[("artifact", string()), ("reason", string())],
                            &[],
                        ),
                    }),
                ),
            ],
            &[],
        ),
    );
    add("JobList", object("Jobs", &[("jobs", array_of("Job"))], &[]));
    add(
        "LogLine",
        object(
            "One job log line (SSE event `log`)",
            &[
                ("seq", integer()),
                ("at", date_time()),
                ("level", enumeration(&["info", "warn", "error"])),
                ("message", string()),
                ("step", nullable_string()),
                (
                    "percent",
                    json!({ "type": ["integer", "null"], "minimum": 0, "maximum": 100 }),
                ),
            ],
            &[],
        ),
    );
    add(
        "JobLogs",
        object(
            "The log so far (`follow=false`)",
            &[
                ("lines", array_of("LogLine")),
                ("status", enumeration(JOB_STATUSES)),
            ],
            &[],
        ),
    );
    add(
        "JobStatusEvent",
        object(
            "A job's status changed (SSE event `status`)",
            &[
                ("status", enumeration(JOB_STATUSES)),
                (
                    "percent",
                    json!({ "type": ["integer", "null"], "minimum": 0, "maximum": 100 }),
                ),
                ("step", nullable_string()),
            ],
            &[],
        ),
    );
    add(
        "HelloEvent",
        object(
            "First event of the stream",
            &[("generation", integer())],
            &[],
        ),
    );
    add(
        "VmEvent",
        object(
            "A VM appeared or changed (`vm_added`, `vm_changed`)",
            &[("generation", integer()), ("vm", schema_ref("VmSummary"))],
            &[],
        ),
    );
    add(
        "VmRemovedEvent",
        object(
            "A VM disappeared (`vm_removed`)",
            &[
                ("generation", integer()),
                ("id", uuid()),
                ("host", string()),
            ],
            &[],
        ),
    );
    add(
        "HostEvent",
        object(
            "A host connected or was removed (`host_connected`, `host_removed`)",
            &[("generation", integer()), ("host", string())],
            &[],
        ),
    );
    add(
        "HostDisconnectedEvent",
        object(
            "A host's refresh failed (`host_disconnected`)",
            &[
                ("generation", integer()),
                ("host", string()),
                ("error", string()),
            ],
            &[],
        ),
    );
    add(
        "ResyncEvent",
        object(
            "Events were missed: reload everything (`resync`)",
            &[("missed", integer())],
            &[],
        ),
    );
    add(
        "JobEvent",
        object(
            "A job's status changed (`job`)",
            &[
                ("id", uuid()),
                ("type", enumeration(JOB_TYPES)),
                ("status", enumeration(JOB_STATUSES)),
                (
                    "percent",
                    json!({ "type": ["integer", "null"], "minimum": 0, "maximum": 100 }),
                ),
                ("target_host", string()),
                (
                    "vm_id",
                    json!({ "type": ["string", "null"], "format": "uuid" }),
                ),
                ("vm_name", nullable_string()),
            ],
            &[],
        ),
    );
    Value::Object(s)
}

fn host_schema() -> Value {
    object(
        "A configured Hyper-V host (facts fields are null before the first refresh)",
        &[
            ("name", string()),
            ("cluster", nullable_string()),
            (
                "status",
                enumeration(&["connected", "disconnected", "pending"]),
            ),
            ("last_seen", nullable_date_time()),
            ("last_error", nullable_string()),
            (
                "refresh_ms",
                described(nullable_integer(), "Duration of the last refresh"),
            ),
            ("vm_count", integer()),
            (
                "vms_by_state",
                json!({
                    "type": "object",
                    "description": "VM counts by Hyper-V state name",
                    "additionalProperties": { "type": "integer", "minimum": 0 },
                }),
            ),
            ("logical_processors", nullable_integer()),
            ("memory_total_bytes", nullable_integer()),
            ("memory_available_bytes", nullable_integer()),
            ("storage_total_bytes", nullable_integer()),
            ("storage_free_bytes", nullable_integer()),
            ("os_version", nullable_string()),
            ("scripts_version", nullable_string()),
        ],
        &[],
    )
}

fn vm_summary_fields() -> Vec<(&'static str, Value)> {
    vec![
        ("id", uuid()),
        ("name", string()),
        ("host", string()),
        ("cluster", nullable_string()),
        ("state", schema_ref("VmState")),
        (
            "stale",
            described(
                boolean(),
                "The host's last refresh failed; the data may be old",
            ),
        ),
        ("processor_count", integer()),
        ("memory_startup_bytes", integer()),
        ("memory_assigned_bytes", integer()),
        ("uptime_seconds", integer()),
        ("ip_addresses", strings()),
        ("clustered", boolean()),
        (
            "busy_job",
            json!({
                "type": ["string", "null"],
                "format": "uuid",
                "description": "The job working on the VM, if any",
            }),
        ),
    ]
}

fn job_schema() -> Value {
    object(
        "A job",
        &[
            ("id", uuid()),
            ("type", enumeration(JOB_TYPES)),
            (
                "action",
                json!({
                    "type": ["string", "null"],
                    "enum": ACTIONS.iter().map(|a| Value::from(*a)).chain([Value::Null]).collect::<Vec<_>>(),
                    "description": "The power action (power jobs only)",
                }),
            ),
            ("status", enumeration(JOB_STATUSES)),
            ("target_host", string()),
            (
                "vm_id",
                json!({ "type": ["string", "null"], "format": "uuid" }),
            ),
            ("vm_name", nullable_string()),
            (
                "parameters",
                json!({
                    "type": "object",
                    "description": "The submitted parameters with every secret replaced by `***`",
                }),
            ),
            ("created_at", date_time()),
            ("started_at", nullable_date_time()),
            ("finished_at", nullable_date_time()),
            (
                "percent",
                json!({ "type": "integer", "minimum": 0, "maximum": 100 }),
            ),
            ("step", nullable_string()),
            ("message", nullable_string()),
            ("steps", array_of("JobStep")),
            ("error", nullable_string()),
            (
                "cleanup",
                json!({ "oneOf": [schema_ref("JobCleanup"), { "type": "null" }] }),
            ),
            (
                "result",
                json!({ "type": ["object", "null"], "description": "What the job produced" }),
            ),
            ("cancel_requested", boolean()),
        ],
        &[],
    )
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
    fn routes_and_paths_match_both_ways() {
        let doc = document();
        let documented: BTreeSet<(String, String)> = operations_of(doc)
            .into_iter()
            .map(|(m, p, _)| (m, p))
            .collect();
        let listed: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
            .collect();
        assert_eq!(listed.len(), ROUTES.len(), "duplicate in ROUTES");
        assert_eq!(documented, listed);
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
        for field in [
            "hyperv_host",
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
        for (members, optional) in GROUPS {
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
        assert_eq!(action["schema"]["enum"].as_array().map(Vec::len), Some(7));
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
        let Html(page) = docs_page().await;
        assert!(page.starts_with("<!doctype html>"));
    }
}
