//! The MCP endpoint (`/mcp`, Streamable HTTP, the `rmcp` SDK): tools that let an AI assistant
//! read the inventory and jobs and, in `read_write` mode, start jobs, under the guard rails of
//! [`guard`].
//!
//! Every tool calls the REST handler of the same operation (the same validation, per-VM lock
//! and job submission), and its input schema comes from the REST request's own type (schemars
//! derived next to the serde/utoipa derives), or for `provision_vm` from the schema the OpenAPI
//! document publishes for `POST /api/v1/vms/create`. Callers are authenticated like the REST
//! API (reader for read tools, writer for the others).

pub mod guard;
mod resources;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router, middleware};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    JsonObject, ListResourceTemplatesResult, ListToolsResult, PaginatedRequestParams,
    ProgressNotificationParam, ProgressToken, ReadResourceRequestParams, ReadResourceResponse,
    ServerCapabilities, ServerConfig, Tool, ToolAnnotations,
};
use rmcp::service::{Peer, RequestContext};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{inventory, jobs, migrate, placement, vms};
use crate::auth::{Authenticator, Principal, Role};
use crate::error::ApiError;
use crate::state::AppState;
use guard::{McpConfig, McpMode, RateLimiter, TokenStore};

/// The path of the endpoint.
pub const MCP_PATH: &str = "/mcp";

/// Tracing target of the audit lines (one per tool call).
pub const AUDIT_TARGET: &str = "aetherv::mcp::audit";

/// Default and largest page of `list_vms` and `list_jobs`.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 500;

/// `/mcp` for `state` under `config`, authenticated by `auth`; `None` when `MCP_MODE=off`.
pub fn routes(state: AppState, config: McpConfig) -> Option<Router<AppState>> {
    if config.mode == McpMode::Off {
        return None;
    }
    let auth = state.auth.clone();
    let shared = Arc::new(Shared {
        rate: RateLimiter::new(config.write_rate_per_minute),
        tokens: TokenStore::default(),
        config,
        state,
    });
    let service = StreamableHttpService::new(
        move || Ok(McpServer(Arc::clone(&shared))),
        Arc::new(LocalSessionManager::default()),
        // The server's own `Host` check (`PUBLIC_URL`, `ALLOWED_HOSTS`) runs before this.
        StreamableHttpServerConfig::default()
            .disable_allowed_hosts()
            .with_max_request_body_bytes(vms::MAX_BODY_BYTES),
    );
    Some(
        Router::<AppState>::new()
            .route_service(MCP_PATH, service)
            .layer(middleware::from_fn_with_state(auth, require_reader))
            .layer(axum::extract::DefaultBodyLimit::max(vms::MAX_BODY_BYTES)),
    )
}

/// Authenticates a request to `/mcp` like the REST API and needs at least the reader role;
/// the tools check the writer role themselves.
async fn require_reader(
    State(auth): State<Arc<Authenticator>>,
    mut request: Request,
    next: Next,
) -> Response {
    let principal = match auth.authenticate(request.headers()).await {
        Ok(principal) => principal,
        Err(error) => return error.into_response(),
    };
    if !principal.role.allows(Role::Reader) {
        return ApiError::forbidden(format!(
            "the MCP endpoint needs the reader role; you have {}",
            principal.role
        ))
        .into_response();
    }
    request.extensions_mut().insert(principal);
    next.run(request).await
}

struct Shared {
    config: McpConfig,
    state: AppState,
    tokens: TokenStore,
    rate: RateLimiter,
}

/// The MCP server handler (one per session; they share the guard rails).
#[derive(Clone)]
struct McpServer(Arc<Shared>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
    Destructive,
}

/// Arguments of tools that take none.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

/// Arguments of `list_vms`: the filters of `GET /api/v1/vms` plus paging.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ListVmsArgs {
    /// Only VMs on this host (case-insensitive).
    host: Option<String>,
    /// Only VMs on hosts of this cluster (case-insensitive).
    cluster: Option<String>,
    /// Only VMs in this Hyper-V state (Running, Off, Saved, Paused, ...).
    state: Option<String>,
    /// Case-insensitive substring of the name, id, notes or an IP address.
    q: Option<String>,
    /// Sort column (name, state, host, cluster, processor_count, memory_startup_bytes,
    /// memory_assigned_bytes, uptime_seconds, ip_addresses, id), `-` in front for descending.
    sort: Option<String>,
    /// At most this many VMs (default 50, at most 500).
    limit: Option<u32>,
    /// The `next_cursor` of the previous page (same filters and sort).
    cursor: Option<String>,
}

/// Arguments of `list_jobs`: the filters of `GET /api/v1/jobs` plus paging.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ListJobsArgs {
    /// Only jobs with this status (queued, running, succeeded, failed, cancelled).
    status: Option<String>,
    /// Only jobs of this type.
    #[serde(rename = "type")]
    job_type: Option<String>,
    /// Only jobs on this host (case-insensitive).
    host: Option<String>,
    /// Only jobs on this VM (its id).
    vm_id: Option<String>,
    /// Only jobs this caller asked for (subject or name, case-insensitive; `demo` without
    /// authentication).
    requested_by: Option<String>,
    /// At most this many jobs (default 50, at most 500).
    limit: Option<u32>,
    /// The `next_cursor` of the previous page (same filters).
    cursor: Option<String>,
}

/// Arguments of `get_host`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct HostArgs {
    /// Host name as configured (case-insensitive).
    hostname: String,
}

/// Arguments of `refresh_inventory`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RefreshArgs {
    /// One host to refresh (case-insensitive); every host when left out.
    #[serde(default)]
    hostname: Option<String>,
}

/// Arguments naming one VM.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct VmArgs {
    /// The VM's Hyper-V id (a GUID).
    vm_id: String,
}

/// Arguments naming one job.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct JobArgs {
    /// The job id.
    job_id: String,
}

/// Arguments of `wait_for_job`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct WaitArgs {
    /// The job id.
    job_id: String,
    /// How long to wait for the job to end, in seconds (default 30, at most 120).
    timeout_seconds: Option<u32>,
}

/// Where progress notifications of one request go: the client and its progress token.
type ProgressSink = (Peer<RoleServer>, ProgressToken);

/// Default and longest wait of `wait_for_job`.
const DEFAULT_WAIT_SECONDS: u32 = 30;
const MAX_WAIT_SECONDS: u32 = 120;

/// How often `wait_for_job` looks at the job.
const WAIT_POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// Arguments of `get_job_log`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct JobLogArgs {
    /// The job id.
    job_id: String,
    /// The last this many lines (default 50, at most 500).
    lines: Option<u32>,
}

/// A power action an assistant may apply.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum PowerAction {
    /// Start the VM.
    Start,
    /// Shut the guest OS down cleanly.
    Shutdown,
    /// Restart the VM.
    Restart,
    /// Save the VM's state.
    Save,
    /// Resume a paused VM.
    Resume,
}

impl PowerAction {
    fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Shutdown => "shutdown",
            Self::Restart => "restart",
            Self::Save => "save",
            Self::Resume => "resume",
        }
    }
}

/// Arguments of `power_vm`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct PowerArgs {
    /// The VM's Hyper-V id (a GUID).
    vm_id: String,
    /// The power action.
    action: PowerAction,
}

/// Arguments of `delete_vm`: the body of `POST /api/v1/vms/delete` plus the confirmation.
#[derive(Debug, Deserialize, JsonSchema)]
struct DeleteArgs {
    #[serde(flatten)]
    #[allow(dead_code)]
    body: vms::DeleteBody,
    /// The token the first call returned; without it the call only previews.
    confirmation_token: Option<String>,
}

/// Arguments of `turn_off_vm`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct TurnOffArgs {
    /// The VM's Hyper-V id (a GUID).
    vm_id: String,
    /// The token the first call returned; without it the call only previews.
    confirmation_token: Option<String>,
}

/// Arguments of `check_migration` and `migrate_vm`: the VM and the body of
/// `POST /api/v1/vms/{id}/actions/migrate`.
#[derive(Debug, Deserialize, JsonSchema)]
struct MigrateArgs {
    /// The VM's Hyper-V id (a GUID).
    vm_id: String,
    #[serde(flatten)]
    body: migrate::MigrateBody,
}

/// Arguments of `enter_maintenance`: the host and the body of
/// `POST /api/v1/hosts/{hostname}/maintenance` (`evacuate: shutdown` is `evacuate_host`).
#[derive(Debug, Deserialize, JsonSchema)]
struct EnterMaintenanceArgs {
    /// Host name as configured (case-insensitive).
    #[allow(dead_code)]
    hostname: String,
    #[serde(flatten)]
    #[allow(dead_code)]
    body: crate::api::maintenance::MaintenanceBody,
}

/// Arguments of `evacuate_host`: a drain that shuts down what cannot move.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct EvacuateArgs {
    /// Host name as configured (case-insensitive).
    hostname: String,
    /// Live migrations at once (1-16, default 2).
    max_parallel: Option<u32>,
    /// VM ids to leave alone.
    #[serde(default)]
    exclude: Vec<String>,
    /// Why.
    reason: Option<String>,
    /// The change ticket.
    ticket: Option<String>,
    /// The token the first call returned; without it the call only previews.
    confirmation_token: Option<String>,
}

/// Arguments of `resume_host`: the host and the body of `POST /api/v1/hosts/{hostname}/resume`.
#[derive(Debug, Deserialize, JsonSchema)]
struct ResumeHostArgs {
    /// Host name as configured (case-insensitive).
    #[allow(dead_code)]
    hostname: String,
    #[serde(flatten)]
    #[allow(dead_code)]
    body: crate::api::maintenance::ResumeBody,
}

fn schema_of<T: JsonSchema + 'static>() -> Arc<JsonObject> {
    rmcp::handler::server::common::schema_for_type::<T>()
}

/// The input schema of `provision_vm`: the `CreateVmRequest` schema of the OpenAPI document.
fn provision_schema() -> Arc<JsonObject> {
    let schema = crate::api::openapi::provision::schemas()
        .into_iter()
        .find(|(name, _)| *name == "CreateVmRequest")
        .map(|(_, schema)| schema);
    let mut object = match schema {
        Some(Value::Object(map)) => map,
        _ => JsonObject::new(),
    };
    object.insert("type".to_owned(), json!("object"));
    Arc::new(object)
}

fn tool(
    name: &'static str,
    description: &'static str,
    schema: Arc<JsonObject>,
    kind: Kind,
) -> Tool {
    let annotations = ToolAnnotations::new()
        .read_only(kind == Kind::Read)
        .destructive(kind == Kind::Destructive)
        .open_world(false);
    Tool::new(name, description, schema).with_annotations(annotations)
}

/// Every tool with its kind.
fn all_tools() -> Vec<(Tool, Kind)> {
    use Kind::{Destructive, Read, Write};
    vec![
        (
            tool(
                "list_clusters",
                "List the clusters (derived from the hosts' facts).",
                schema_of::<NoArgs>(),
                Read,
            ),
            Read,
        ),
        (
            tool(
                "list_hosts",
                "List every configured host with its connection status and capacity.",
                schema_of::<NoArgs>(),
                Read,
            ),
            Read,
        ),
        (
            tool(
                "get_host",
                "One host with its full facts and its VMs.",
                schema_of::<HostArgs>(),
                Read,
            ),
            Read,
        ),
        (
            tool(
                "list_vms",
                "List VMs, filtered (host, cluster, state, q: substring of name, id, notes or IP), sorted (sort, natural name order by default) and paged (limit default 50, at most 500; pass next_cursor as cursor for the next page).",
                schema_of::<ListVmsArgs>(),
                Read,
            ),
            Read,
        ),
        (
            tool(
                "get_vm",
                "One VM with disks, adapters and the power actions its state allows.",
                schema_of::<VmArgs>(),
                Read,
            ),
            Read,
        ),
        (
            tool(
                "list_jobs",
                "List jobs, newest first, filtered by status, type, host or VM (limit default 50, at most 500; pass next_cursor as cursor for the next page).",
                schema_of::<ListJobsArgs>(),
                Read,
            ),
            Read,
        ),
        (
            tool(
                "get_job",
                "One job with its status, steps, error and result; poll it to follow a job.",
                schema_of::<JobArgs>(),
                Read,
            ),
            Read,
        ),
        (
            tool(
                "get_job_log",
                "The last lines of a job's log (default 50, at most 500).",
                schema_of::<JobLogArgs>(),
                Read,
            ),
            Read,
        ),
        (
            tool(
                "check_migration",
                "Check whether a VM can move (Compare-VM on its host): mode live, storage, shared_nothing or quick, target_host, optional destination_path or storage_class. Nothing moves; the answer lists every incompatibility in the host's words.",
                schema_of::<MigrateArgs>(),
                Read,
            ),
            Read,
        ),
        (
            tool(
                "placement",
                "Rank the hosts that can take a VM of this size (memory_bytes, optional disk_bytes, image, cluster, exclude): candidates best first with memory available and left after, and every refused host with its reason.",
                schema_of::<placement::PlacementBody>(),
                Read,
            ),
            Read,
        ),
        (
            tool(
                "wait_for_job",
                "Wait until a job ends, at most timeout_seconds (default 30, at most 120), and answer it as get_job does. With a progress token in the request's _meta, sends a progress notification (percent of 100, with the current step) whenever the job moves.",
                schema_of::<WaitArgs>(),
                Read,
            ),
            Read,
        ),
        (
            tool(
                "provision_vm",
                "Queue a provisioning job (the body of POST /api/v1/vms/create); answers the job id at once, follow it with get_job.",
                provision_schema(),
                Write,
            ),
            Write,
        ),
        (
            tool(
                "power_vm",
                "Queue a power action (start, shutdown, restart, save, resume) on a VM; answers the job id at once.",
                schema_of::<PowerArgs>(),
                Write,
            ),
            Write,
        ),
        (
            tool(
                "migrate_vm",
                "Queue a migration of a VM (the body of POST /api/v1/vms/{id}/actions/migrate plus vm_id): checked first (incompatibilities refuse it), then a migrate job whose id comes back at once; follow it with get_job, cancel it with cancel_job before the switch-over.",
                schema_of::<MigrateArgs>(),
                Write,
            ),
            Write,
        ),
        (
            tool(
                "refresh_inventory",
                "Read hosts' facts and VMs now instead of waiting for the next periodic refresh: one host (hostname) or every host (which needs MCP_ALLOW_HOSTS and MCP_ALLOW_CLUSTERS to allow all). Answers once the hosts have answered: for one host its record (status, last_error), for all how many answered and which did not, with their reasons (complete false: still refreshing after 120 s).",
                schema_of::<RefreshArgs>(),
                Write,
            ),
            Write,
        ),
        (
            tool(
                "cancel_job",
                "Request cancellation of a queued or running job.",
                schema_of::<JobArgs>(),
                Write,
            ),
            Write,
        ),
        (
            tool(
                "enter_maintenance",
                "Drain a host into maintenance: live-migrate its running VMs to hosts placement chooses (evacuate live, default) or only mark it (evacuate none); answers the drain job id at once. A drain that shuts VMs down is evacuate_host.",
                schema_of::<EnterMaintenanceArgs>(),
                Write,
            ),
            Write,
        ),
        (
            tool(
                "resume_host",
                "Bring a host back from maintenance; with failback true, move each VM the drain moved back to it. Answers the job id at once.",
                schema_of::<ResumeHostArgs>(),
                Write,
            ),
            Write,
        ),
        (
            tool(
                "evacuate_host",
                "Drain a host into maintenance and shut down every running VM that cannot be live-migrated away. The first call returns a preview (the VMs it would move or shut down) and a confirmation_token valid 2 minutes; call again with the same arguments and the token to act.",
                schema_of::<EvacuateArgs>(),
                Destructive,
            ),
            Destructive,
        ),
        (
            tool(
                "delete_vm",
                "Delete a VM (by vm_id, or vm_name and hyperv_host). The first call returns a preview and a confirmation_token valid 2 minutes; call again with the same arguments and the token to act.",
                schema_of::<DeleteArgs>(),
                Destructive,
            ),
            Destructive,
        ),
        (
            tool(
                "turn_off_vm",
                "Turn a VM off at once (like pulling the plug). The first call returns a preview and a confirmation_token valid 2 minutes; call again with the same arguments and the token to act.",
                schema_of::<TurnOffArgs>(),
                Destructive,
            ),
            Destructive,
        ),
    ]
}

/// What a tool call ended with.
struct Outcome {
    summary: String,
    content: Value,
    error: bool,
}

impl Outcome {
    fn ok(summary: impl Into<String>, content: Value) -> Self {
        Self {
            summary: summary.into(),
            content,
            error: false,
        }
    }

    fn refused(summary: impl Into<String>) -> Self {
        let summary = summary.into();
        Self {
            content: json!({ "error": { "code": "refused", "message": summary } }),
            summary,
            error: true,
        }
    }

    fn api(error: &ApiError) -> Self {
        let mut body = json!({ "code": error.code, "message": error.message });
        if let Some(field) = &error.field {
            body["field"] = json!(field);
        }
        if !error.details.is_empty() {
            body["details"] = json!(error.details);
        }
        let mut summary = format!(
            "{}: {}",
            to_value(&error.code).as_str().unwrap_or("error"),
            error.message
        );
        if !error.details.is_empty() {
            let fields: Vec<String> = error
                .details
                .iter()
                .map(|p| format!("{}: {}", p.field, p.message))
                .collect();
            summary = format!("{summary} ({})", fields.join("; "));
        }
        Self {
            summary,
            content: json!({ "error": body }),
            error: true,
        }
    }

    fn into_result(self) -> CallToolResult {
        let mut result = if self.error {
            CallToolResult::structured_error(self.content)
        } else {
            CallToolResult::structured(self.content)
        };
        result.content = vec![ContentBlock::text(self.summary)];
        result
    }
}

fn parse<T: serde::de::DeserializeOwned>(arguments: &Value) -> Result<T, Outcome> {
    serde_json::from_value(arguments.clone())
        .map_err(|e| Outcome::refused(format!("invalid arguments: {e}")))
}

/// Reads the JSON body of a handler's answer.
async fn body_json(response: Response) -> Result<Value, Outcome> {
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .map_err(|e| Outcome::refused(format!("cannot read the answer: {e}")))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Outcome::refused(format!("the answer is not JSON: {e}")))
}

fn to_value<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

fn json_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers
}

fn clamp_limit(limit: Option<u32>) -> usize {
    limit.map_or(DEFAULT_LIMIT, |n| (n as usize).clamp(1, MAX_LIMIT))
}

/// One line about a job: id, type, status, percentage, error.
fn job_summary(job: &aetherv_jobs::JobView) -> String {
    format!(
        "job {} ({}): {}, {}%{}",
        job.id,
        to_value(&job.job_type).as_str().unwrap_or_default(),
        job.status.as_str(),
        job.percent,
        job.error
            .as_deref()
            .map_or_else(String::new, |e| format!("; error: {e}"))
    )
}

/// One line about a refresh of every host: who answered, who did not and why.
fn fleet_refresh_summary(answer: &Value) -> String {
    let hosts = answer["hosts"].as_u64().unwrap_or_default();
    let took = answer["took_ms"].as_u64().unwrap_or_default();
    let failed = answer["failed"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let complete = answer["complete"] != Value::Bool(false);
    if complete && failed.is_empty() {
        return format!("all {hosts} hosts answered in {took} ms");
    }
    let named: Vec<String> = failed
        .iter()
        .take(5)
        .map(|f| {
            let host = f["host"].as_str().unwrap_or_default();
            match f["error"].as_str() {
                Some(error) => format!("{host} ({error})"),
                None => host.to_owned(),
            }
        })
        .collect();
    let more = failed.len().saturating_sub(named.len());
    let more = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    if complete {
        return format!(
            "{} of {hosts} hosts did not answer: {}{more}",
            failed.len(),
            named.join("; ")
        );
    }
    // The server stopped waiting; `failed` lists the hosts not connected so far.
    let down = if failed.is_empty() {
        String::new()
    } else {
        format!(
            "; {} of {hosts} hosts not connected so far: {}{more}",
            failed.len(),
            named.join("; ")
        )
    };
    format!("still refreshing after {took} ms (the refreshes go on){down}")
}

/// The summary of a queued job.
fn accepted(what: &str, answer: &Value) -> Outcome {
    let job = answer["job_id"].as_str().unwrap_or_default();
    Outcome::ok(
        format!("{what}: job {job} queued; follow it with get_job"),
        answer.clone(),
    )
}

impl McpServer {
    fn state(&self) -> &AppState {
        &self.0.state
    }

    /// Refuses a write outside the allow lists.
    fn check_allowed(&self, host: Option<&str>, vm_name: Option<&str>) -> Result<(), Outcome> {
        let config = &self.0.config;
        if let Some(host) = host {
            if !config.allow_hosts.allows(host) {
                return Err(Outcome::refused(format!(
                    "host {host} is outside MCP_ALLOW_HOSTS ({})",
                    config.allow_hosts.describe()
                )));
            }
            let snapshot = self.state().inventory.snapshot();
            let cluster = snapshot
                .hosts()
                .find(|h| h.name.eq_ignore_ascii_case(host))
                .and_then(|h| h.cluster().map(str::to_owned));
            if !config.allow_clusters.allows_all() {
                match cluster {
                    Some(c) if config.allow_clusters.allows(&c) => {}
                    _ => {
                        return Err(Outcome::refused(format!(
                            "host {host} is not in a cluster of MCP_ALLOW_CLUSTERS ({})",
                            config.allow_clusters.describe()
                        )));
                    }
                }
            }
        }
        if let Some(name) = vm_name
            && !config.allow_vms.allows(name)
        {
            return Err(Outcome::refused(format!(
                "VM {name} is outside MCP_ALLOW_VMS ({})",
                config.allow_vms.describe()
            )));
        }
        Ok(())
    }

    /// The VM `id` names, as (name, host, state).
    fn vm_facts(&self, id: &str) -> Result<(String, String, String), Outcome> {
        let vm_id = inventory::vm_id(id).map_err(|e| Outcome::api(&e))?;
        let snapshot = self.state().inventory.snapshot();
        let vm = snapshot
            .vm(vm_id)
            .ok_or_else(|| Outcome::api(&ApiError::not_found("VM", id)))?;
        Ok((
            vm.vm.name.clone(),
            vm.host.to_string(),
            vm.vm.state.name().to_owned(),
        ))
    }

    async fn call(&self, name: &str, args: &Value, caller: &Principal) -> Outcome {
        match self.run(name, args, caller).await {
            Ok(outcome) | Err(outcome) => outcome,
        }
    }

    async fn run(&self, name: &str, args: &Value, caller: &Principal) -> Result<Outcome, Outcome> {
        let state = self.state().clone();
        match name {
            "list_clusters" => {
                parse::<NoArgs>(args)?;
                let Json(view) = inventory::clusters(State(state)).await;
                Ok(Outcome::ok(
                    format!("{} clusters", view.clusters.len()),
                    to_value(&view),
                ))
            }
            "list_hosts" => {
                parse::<NoArgs>(args)?;
                let Json(view) = inventory::hosts(State(state)).await;
                Ok(Outcome::ok(
                    format!("{} hosts", view.hosts.len()),
                    to_value(&view),
                ))
            }
            "get_host" => {
                let a: HostArgs = parse(args)?;
                let Json(view) = inventory::host(State(state), Path(a.hostname.clone()))
                    .await
                    .map_err(|e| Outcome::api(&e))?;
                let value = to_value(&view);
                Ok(Outcome::ok(
                    format!(
                        "host {}: {}",
                        a.hostname,
                        value["status"].as_str().unwrap_or("unknown")
                    ),
                    value,
                ))
            }
            "list_vms" => {
                let a: ListVmsArgs = parse(args)?;
                let limit = clamp_limit(a.limit);
                let query = inventory::VmQuery {
                    host: a.host,
                    cluster: a.cluster,
                    state: a.state,
                    q: a.q,
                    limit: Some(limit.to_string()),
                    cursor: a.cursor,
                    sort: a.sort,
                    fields: None,
                };
                let response = inventory::vms(State(state), HeaderMap::new(), Ok(Query(query)))
                    .await
                    .map_err(|e| Outcome::api(&e))?;
                let list = body_json(response).await?;
                let total = list["total"].as_u64().unwrap_or(0);
                let shown = list["vms"].as_array().map_or(0, Vec::len);
                let next = list["next_cursor"].clone();
                Ok(Outcome::ok(
                    format!(
                        "{shown} of {total} matching VMs{}",
                        if next.is_null() {
                            ""
                        } else {
                            "; more with the next_cursor as cursor"
                        }
                    ),
                    json!({ "total": total, "next_cursor": next, "vms": list["vms"] }),
                ))
            }
            "get_vm" => {
                let a: VmArgs = parse(args)?;
                let Json(view) = inventory::vm(State(state), Path(a.vm_id))
                    .await
                    .map_err(|e| Outcome::api(&e))?;
                let value = to_value(&view);
                Ok(Outcome::ok(
                    format!(
                        "VM {} on {}: {}",
                        value["name"].as_str().unwrap_or_default(),
                        value["host"].as_str().unwrap_or_default(),
                        value["state"].as_str().unwrap_or_default()
                    ),
                    value,
                ))
            }
            "list_jobs" => {
                let a: ListJobsArgs = parse(args)?;
                let query = jobs::ListQuery {
                    status: a.status,
                    job_type: a.job_type,
                    host: a.host,
                    vm_id: a.vm_id,
                    requested_by: a.requested_by,
                    limit: Some(clamp_limit(a.limit).to_string()),
                    cursor: a.cursor,
                };
                let Json(view) = jobs::list(State(state), Ok(Query(query)))
                    .await
                    .map_err(|e| Outcome::api(&e))?;
                Ok(Outcome::ok(
                    format!(
                        "{} of {} matching jobs (newest first){}",
                        view.jobs.len(),
                        view.total,
                        if view.next_cursor.is_some() {
                            "; more with the next_cursor as cursor"
                        } else {
                            ""
                        }
                    ),
                    to_value(&view),
                ))
            }
            "get_job" => {
                let a: JobArgs = parse(args)?;
                let Json(job) = jobs::get(State(state), Path(a.job_id))
                    .await
                    .map_err(|e| Outcome::api(&e))?;
                Ok(Outcome::ok(job_summary(&job), to_value(&job)))
            }
            "get_job_log" => {
                let a: JobLogArgs = parse(args)?;
                let wanted = clamp_limit(a.lines);
                let query: jobs::LogsQuery = parse(&json!({ "follow": "false" }))?;
                let response = jobs::logs(State(state), Path(a.job_id.clone()), Ok(Query(query)))
                    .await
                    .map_err(|e| Outcome::api(&e))?;
                let mut value = body_json(response).await?;
                let lines = value["lines"]
                    .as_array_mut()
                    .map(std::mem::take)
                    .unwrap_or_default();
                let total = lines.len();
                let last: Vec<Value> = lines
                    .into_iter()
                    .skip(total.saturating_sub(wanted))
                    .collect();
                Ok(Outcome::ok(
                    format!(
                        "last {} of {total} log lines of job {} ({})",
                        last.len(),
                        a.job_id,
                        value["status"].as_str().unwrap_or_default()
                    ),
                    json!({ "status": value["status"], "total_lines": total, "lines": last }),
                ))
            }
            "provision_vm" => {
                let host = args.get("hyperv_host").and_then(Value::as_str);
                let cluster = args.get("target_cluster").and_then(Value::as_str);
                let vm_name = args.get("vm_name").and_then(Value::as_str);
                if host.is_none() && !self.0.config.allow_hosts.allows_all() {
                    return Err(Outcome::refused(
                        "MCP_ALLOW_HOSTS restricts hosts: name the host in hyperv_host",
                    ));
                }
                if let Some(cluster) = cluster
                    && !self.0.config.allow_clusters.allows(cluster)
                {
                    return Err(Outcome::refused(format!(
                        "cluster {cluster} is outside MCP_ALLOW_CLUSTERS ({})",
                        self.0.config.allow_clusters.describe()
                    )));
                }
                self.check_allowed(host, Some(vm_name.unwrap_or_default()))?;
                let body = Bytes::from(args.to_string());
                let response = vms::create(State(state), json_headers(), body)
                    .await
                    .map_err(|e| Outcome::api(&e))?;
                let answer = body_json(response).await?;
                Ok(accepted(
                    &format!("provisioning VM {}", vm_name.unwrap_or_default()),
                    &answer,
                ))
            }
            "check_migration" => {
                let a: MigrateArgs = parse(args)?;
                let response = migrate::migrate(
                    State(state),
                    Path(a.vm_id.clone()),
                    Query(migrate::MigrateQuery {
                        dry_run: Some(true),
                    }),
                    Bytes::from(to_value(&a.body).to_string()),
                )
                .await
                .map_err(|e| Outcome::api(&e))?;
                let answer = body_json(response).await?;
                let vm = answer["vm_name"].as_str().unwrap_or_default();
                let target = answer["target_host"].as_str().unwrap_or_default();
                let summary = if answer["compatible"].as_bool() == Some(true) {
                    format!("VM {vm} can move to {target} ({})", a.body.mode.as_str())
                } else {
                    let problems: Vec<&str> = answer["incompatibilities"]
                        .as_array()
                        .map(|l| l.iter().filter_map(|i| i["message"].as_str()).collect())
                        .unwrap_or_default();
                    format!("VM {vm} cannot move to {target}: {}", problems.join("; "))
                };
                Ok(Outcome::ok(summary, answer))
            }
            "placement" => {
                let body: placement::PlacementBody = parse(args)?;
                let Json(view) =
                    placement::placement(State(state), Bytes::from(to_value(&body).to_string()))
                        .await
                        .map_err(|e| Outcome::api(&e))?;
                let summary = match &view.chosen {
                    Some(host) => format!(
                        "best host {host}; {} candidate(s), {} refused",
                        view.candidates.len(),
                        view.refused.len()
                    ),
                    None => format!("no host can take the VM; {} refused", view.refused.len()),
                };
                Ok(Outcome::ok(summary, to_value(&view)))
            }
            "migrate_vm" => {
                let a: MigrateArgs = parse(args)?;
                let (vm, host, _) = self.vm_facts(&a.vm_id)?;
                self.check_allowed(Some(&host), Some(&vm))?;
                if let Some(target) = a.body.target_host.as_deref() {
                    self.check_allowed(Some(target), None)?;
                }
                let response = migrate::migrate(
                    State(state),
                    Path(a.vm_id.clone()),
                    Query(migrate::MigrateQuery::default()),
                    Bytes::from(to_value(&a.body).to_string()),
                )
                .await
                .map_err(|e| Outcome::api(&e))?;
                let answer = body_json(response).await?;
                Ok(accepted(
                    &format!(
                        "moving VM {vm} ({}) to {}",
                        a.body.mode.as_str(),
                        a.body.target_host.as_deref().unwrap_or(&host)
                    ),
                    &answer,
                ))
            }
            "power_vm" => {
                let a: PowerArgs = parse(args)?;
                let (vm, host, _) = self.vm_facts(&a.vm_id)?;
                self.check_allowed(Some(&host), Some(&vm))?;
                let response = vms::action(
                    State(state),
                    Path((a.vm_id.clone(), a.action.as_str().to_owned())),
                )
                .await
                .map_err(|e| Outcome::api(&e))?;
                let answer = body_json(response).await?;
                Ok(accepted(&format!("{} VM {vm}", a.action.as_str()), &answer))
            }
            "refresh_inventory" => {
                let a: RefreshArgs = parse(args)?;
                if let Some(host) = a.hostname {
                    self.check_allowed(Some(&host), None)?;
                    let response = inventory::refresh_host(State(state), Path(host.clone()))
                        .await
                        .map_err(|e| Outcome::api(&e))?;
                    let still_running = response.status() == axum::http::StatusCode::ACCEPTED;
                    let answer = body_json(response).await?;
                    let status = answer["status"].as_str().unwrap_or("unknown");
                    let summary = match answer["last_error"].as_str() {
                        _ if still_running => format!(
                            "host {host} is still refreshing (it goes on); last known status: \
                             {status}"
                        ),
                        Some(error) if status != "connected" => {
                            format!("host {host} refreshed: {status} ({error})")
                        }
                        _ => format!("host {host} refreshed: {status}"),
                    };
                    return Ok(Outcome::ok(summary, answer));
                }
                let config = &self.0.config;
                if !config.allow_hosts.allows_all() || !config.allow_clusters.allows_all() {
                    return Err(Outcome::refused(format!(
                        "refreshing every host needs MCP_ALLOW_HOSTS ({}) and MCP_ALLOW_CLUSTERS \
                         ({}) to allow every host; name one host with hostname",
                        config.allow_hosts.describe(),
                        config.allow_clusters.describe()
                    )));
                }
                let response = inventory::refresh_inventory(State(state))
                    .await
                    .map_err(|e| Outcome::api(&e))?;
                let answer = body_json(response).await?;
                Ok(Outcome::ok(fleet_refresh_summary(&answer), answer))
            }
            "cancel_job" => {
                let a: JobArgs = parse(args)?;
                let job = state
                    .jobs
                    .get(&a.job_id)
                    .ok_or_else(|| Outcome::api(&ApiError::not_found("job", &a.job_id)))?;
                self.check_allowed(Some(&job.target_host), job.vm_name.as_deref())?;
                let response = jobs::cancel(State(state), Path(a.job_id.clone()))
                    .await
                    .map_err(|e| Outcome::api(&e))?;
                let answer = body_json(response).await?;
                Ok(Outcome::ok(
                    format!("cancellation of job {} requested", a.job_id),
                    answer,
                ))
            }
            "delete_vm" => {
                let a: DeleteArgs = parse(args)?;
                let mut body = args.clone();
                if let Some(map) = body.as_object_mut() {
                    map.remove("confirmation_token");
                }
                let (vm, host, vm_state) = self.delete_target(&body)?;
                self.check_allowed(Some(&host), Some(&vm))?;
                let force = body["force"].as_bool().unwrap_or(false);
                let disks = body["delete_disks"].as_bool().unwrap_or(false);
                let what = format!(
                    "delete VM {vm} on host {host} (now {vm_state}){}{}",
                    if force {
                        ", turning it off first if it runs"
                    } else {
                        ""
                    },
                    if disks {
                        ", with its disks"
                    } else {
                        ", keeping its disks"
                    }
                );
                self.confirm(
                    caller,
                    "delete_vm",
                    &body,
                    a.confirmation_token.as_deref(),
                    &what,
                )?;
                let response =
                    vms::delete(State(state), json_headers(), Bytes::from(body.to_string()))
                        .await
                        .map_err(|e| Outcome::api(&e))?;
                let answer = body_json(response).await?;
                Ok(accepted(&format!("deleting VM {vm}"), &answer))
            }
            "turn_off_vm" => {
                let a: TurnOffArgs = parse(args)?;
                let (vm, host, vm_state) = self.vm_facts(&a.vm_id)?;
                self.check_allowed(Some(&host), Some(&vm))?;
                let body = json!({ "vm_id": a.vm_id });
                let what = format!(
                    "turn VM {vm} on host {host} off at once (now {vm_state}); unsaved guest data is lost"
                );
                self.confirm(
                    caller,
                    "turn_off_vm",
                    &body,
                    a.confirmation_token.as_deref(),
                    &what,
                )?;
                let response =
                    vms::action(State(state), Path((a.vm_id.clone(), "stop".to_owned())))
                        .await
                        .map_err(|e| Outcome::api(&e))?;
                let answer = body_json(response).await?;
                Ok(accepted(&format!("turning VM {vm} off"), &answer))
            }
            "enter_maintenance" | "resume_host" => {
                let host = args
                    .get("hostname")
                    .and_then(Value::as_str)
                    .ok_or_else(|| Outcome::refused("invalid arguments: hostname is required"))?
                    .to_owned();
                let mut body = args.clone();
                if let Some(map) = body.as_object_mut() {
                    map.remove("hostname");
                }
                if name == "enter_maintenance" && body["evacuate"].as_str() == Some("shutdown") {
                    return Err(Outcome::refused(
                        "a drain that shuts VMs down is evacuate_host (two calls: preview, then confirm)",
                    ));
                }
                self.check_allowed(Some(&host), None)?;
                let body = Bytes::from(body.to_string());
                let response = if name == "enter_maintenance" {
                    crate::api::maintenance::enter(State(state), Path(host.clone()), body).await
                } else {
                    crate::api::maintenance::resume(State(state), Path(host.clone()), body).await
                }
                .map_err(|e| Outcome::api(&e))?;
                let answer = body_json(response).await?;
                Ok(accepted(
                    &if name == "enter_maintenance" {
                        format!("draining host {host}")
                    } else {
                        format!("resuming host {host}")
                    },
                    &answer,
                ))
            }
            "evacuate_host" => {
                let a: EvacuateArgs = parse(args)?;
                self.check_allowed(Some(&a.hostname), None)?;
                let snapshot = self.state().inventory.snapshot();
                let host = snapshot
                    .hosts()
                    .find(|h| h.name.eq_ignore_ascii_case(&a.hostname))
                    .ok_or_else(|| Outcome::api(&ApiError::not_found("host", &a.hostname)))?;
                let running: Vec<String> = host
                    .vms
                    .values()
                    .filter(|v| {
                        matches!(
                            v.vm.state,
                            aetherv_hyperv::ops::VmState::Running
                                | aetherv_hyperv::ops::VmState::Paused
                        )
                    })
                    .filter(|v| {
                        !a.exclude
                            .iter()
                            .any(|e| e.eq_ignore_ascii_case(&v.vm.id.to_string()))
                    })
                    .map(|v| v.vm.name.clone())
                    .collect();
                let mut body = args.clone();
                if let Some(map) = body.as_object_mut() {
                    map.remove("confirmation_token");
                }
                let what = format!(
                    "drain host {} into maintenance: live-migrate its {} running VMs ({}) and shut down each one that cannot move",
                    host.name,
                    running.len(),
                    if running.is_empty() {
                        "none".to_owned()
                    } else {
                        running.join(", ")
                    }
                );
                self.confirm(
                    caller,
                    "evacuate_host",
                    &body,
                    a.confirmation_token.as_deref(),
                    &what,
                )?;
                let request = json!({
                    "evacuate": "shutdown",
                    "max_parallel": a.max_parallel,
                    "exclude": a.exclude,
                    "reason": a.reason,
                    "ticket": a.ticket,
                });
                let response = crate::api::maintenance::enter(
                    State(state),
                    Path(a.hostname.clone()),
                    Bytes::from(request.to_string()),
                )
                .await
                .map_err(|e| Outcome::api(&e))?;
                let answer = body_json(response).await?;
                Ok(accepted(
                    &format!("evacuating host {}", a.hostname),
                    &answer,
                ))
            }
            other => Err(Outcome::refused(format!("unknown tool {other}"))),
        }
    }

    /// The VM a delete body names, as (name, host, state).
    /// `wait_for_job`: polls the job (through the REST handler) until it ends or the wait is
    /// over, sending a progress notification each time its percentage grows when the caller
    /// asked for them.
    async fn wait_for_job(&self, args: &Value, progress: Option<ProgressSink>) -> Outcome {
        let a: WaitArgs = match parse(args) {
            Ok(a) => a,
            Err(outcome) => return outcome,
        };
        let seconds = a
            .timeout_seconds
            .unwrap_or(DEFAULT_WAIT_SECONDS)
            .clamp(1, MAX_WAIT_SECONDS);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(seconds.into());
        let mut sent: Option<u8> = None;
        loop {
            let job = match jobs::get(State(self.state().clone()), Path(a.job_id.clone())).await {
                Ok(Json(job)) => job,
                Err(e) => return Outcome::api(&e),
            };
            if let Some((peer, token)) = &progress
                && sent.is_none_or(|last| job.percent > last)
            {
                let mut note =
                    ProgressNotificationParam::new(token.clone(), f64::from(job.percent))
                        .with_total(100.0);
                if let Some(step) = job.step.as_deref().or(job.message.as_deref()) {
                    note = note.with_message(step.to_owned());
                }
                // A client that went away only stops receiving notifications.
                if let Err(e) = peer.notify_progress(note).await {
                    tracing::debug!(error = %e, job = %job.id, "progress notification not sent");
                }
                sent = Some(job.percent);
            }
            if job.status.is_final() {
                return Outcome::ok(job_summary(&job), to_value(&job));
            }
            if tokio::time::Instant::now() + WAIT_POLL > deadline {
                return Outcome::ok(
                    format!("still waiting after {seconds} s: {}", job_summary(&job)),
                    to_value(&job),
                );
            }
            tokio::time::sleep(WAIT_POLL).await;
        }
    }

    fn delete_target(&self, body: &Value) -> Result<(String, String, String), Outcome> {
        if let Some(id) = body.get("vm_id").and_then(Value::as_str) {
            return self.vm_facts(id);
        }
        let (Some(name), Some(host)) = (
            body.get("vm_name").and_then(Value::as_str),
            body.get("hyperv_host").and_then(Value::as_str),
        ) else {
            return Err(Outcome::api(&ApiError::invalid(
                "vm_id",
                "give vm_id, or vm_name and hyperv_host",
            )));
        };
        let snapshot = self.state().inventory.snapshot();
        snapshot
            .hosts()
            .filter(|h| h.name.eq_ignore_ascii_case(host))
            .flat_map(|h| h.vms.values())
            .find(|vm| vm.vm.name.eq_ignore_ascii_case(name))
            .map(|vm| {
                (
                    vm.vm.name.clone(),
                    vm.host.to_string(),
                    vm.vm.state.name().to_owned(),
                )
            })
            .ok_or_else(|| {
                Outcome::api(
                    &ApiError::not_found("VM", &format!("{name} on host {host}"))
                        .with_field("vm_name"),
                )
            })
    }

    /// The two-call confirmation: without a token, `Err` with the preview and a new token;
    /// with one, `Ok` once it is redeemed.
    fn confirm(
        &self,
        caller: &Principal,
        tool: &str,
        body: &Value,
        token: Option<&str>,
        what: &str,
    ) -> Result<(), Outcome> {
        let now = Instant::now();
        match token {
            None => {
                let token = self.0.tokens.issue(&caller.subject, tool, body, now);
                Err(Outcome::ok(
                    format!(
                        "preview: this would {what}. Nothing was done. To go ahead, call {tool} again with the same arguments and confirmation_token {token} (valid 2 minutes, once)."
                    ),
                    json!({
                        "preview": what,
                        "confirmation_token": token,
                        "expires_in_seconds": guard::CONFIRMATION_TTL.as_secs(),
                        "done": false,
                    }),
                ))
            }
            Some(token) => self
                .0
                .tokens
                .redeem(token, &caller.subject, tool, body, now)
                .map_err(|e| Outcome::refused(e.to_string())),
        }
    }
}

/// Whether a caller with `role` may call the tool `name` of `kind` in `mode`: read tools need
/// reader (checked at the door), the others `read_write` and writer.
fn gate(name: &str, kind: Kind, mode: McpMode, role: Role) -> Result<(), String> {
    if kind == Kind::Read {
        return Ok(());
    }
    if mode != McpMode::ReadWrite {
        return Err(format!("{name} changes things and MCP_MODE is read_only"));
    }
    if !role.allows(Role::Writer) {
        return Err(format!("{name} needs the writer role; you have {role}"));
    }
    Ok(())
}

fn kind_of(name: &str) -> Option<Kind> {
    all_tools()
        .into_iter()
        .find(|(t, _)| t.name == name)
        .map(|(_, k)| k)
}

fn unknown_arguments(tool: &Tool, args: &Value) -> Vec<String> {
    let Some(properties) = tool
        .input_schema
        .get("properties")
        .and_then(Value::as_object)
    else {
        return Vec::new();
    };
    args.as_object()
        .map(|map| {
            map.keys()
                .filter(|k| !properties.contains_key(*k))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// The arguments as the audit log shows them: provisioning bodies through the provisioning
/// schema's own redaction when they parse, and secret-looking fields masked in every case.
fn audit_arguments(tool: &str, args: &Value) -> Value {
    if tool == "provision_vm"
        && let Ok(validated) = aetherv_provision::schema::JobRequest::parse_flat(
            &args.to_string(),
            Some("application/json"),
        )
    {
        return guard::redact(&validated.redacted());
    }
    guard::redact(args)
}

/// The authenticated caller of an MCP request (put there by [`require_reader`]).
fn caller_of(context: &RequestContext<RoleServer>) -> Result<Principal, ErrorData> {
    context
        .extensions
        .get::<axum::http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<Principal>())
        .cloned()
        .ok_or_else(|| ErrorData::internal_error("the caller is not authenticated", None))
}

impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        let mode = match self.0.config.mode {
            McpMode::ReadWrite => "read_write",
            _ => "read_only",
        };
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .build(),
        )
            .with_server_info(Implementation::new("aetherv", env!("CARGO_PKG_VERSION")))
            .with_instructions(format!(
                "aetherv manages Hyper-V hosts and VMs (mode {mode}). Read tools list and inspect; \
                 tools that start a job answer its id at once: follow it with get_job or \
                 wait_for_job, or read the resource aetherv://jobs/{{id}} (VMs: aetherv://vms/{{id}}). \
                 delete_vm, turn_off_vm and evacuate_host take two calls: a preview with a confirmation_token, \
                 then the same call with the token."
            ))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let write = self.0.config.mode == McpMode::ReadWrite;
        Ok(ListToolsResult::with_all_items(
            all_tools()
                .into_iter()
                .filter(|(_, kind)| write || *kind == Kind::Read)
                .map(|(tool, _)| tool)
                .collect(),
        ))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(
            resources::templates(),
        ))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let caller = caller_of(&context)?;
        let result = resources::read(self.state().clone(), &request.uri).await;
        tracing::info!(
            target: AUDIT_TARGET,
            caller = %caller.subject,
            caller_name = caller.name.as_deref().unwrap_or(""),
            role = %caller.role,
            resource = %request.uri.chars().take(200).collect::<String>(),
            outcome = if result.is_ok() { "ok" } else { "refused_or_failed" },
            "mcp resource read"
        );
        result.map(Into::into)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let caller = caller_of(&context)?;
        let name = request.name.to_string();
        let args = Value::Object(request.arguments.unwrap_or_default());
        let outcome = match all_tools().into_iter().find(|(t, _)| t.name == name) {
            None => Outcome::refused(format!("unknown tool {name}")),
            Some((tool, kind)) => {
                let unknown = unknown_arguments(&tool, &args);
                if let Err(why) = gate(&name, kind, self.0.config.mode, caller.role) {
                    Outcome::refused(why)
                } else if !unknown.is_empty() {
                    Outcome::refused(format!("unknown arguments: {}", unknown.join(", ")))
                } else if kind != Kind::Read
                    && let Err(wait) = self.0.rate.check(&caller.subject, Instant::now())
                {
                    Outcome::refused(format!(
                        "rate limit: at most {} write calls a minute (MCP_WRITE_RATE_PER_MINUTE); try again in {} s",
                        self.0.config.write_rate_per_minute,
                        wait.as_secs().max(1)
                    ))
                } else if name == "wait_for_job" {
                    let progress = context
                        .meta
                        .get_progress_token()
                        .map(|token| (context.peer.clone(), token));
                    self.wait_for_job(&args, progress).await
                } else {
                    crate::audit::scope(&caller, self.call(&name, &args, &caller)).await
                }
            }
        };
        tracing::info!(
            target: AUDIT_TARGET,
            caller = %caller.subject,
            caller_name = caller.name.as_deref().unwrap_or(""),
            role = %caller.role,
            tool = %name,
            kind = ?kind_of(&name),
            arguments = %audit_arguments(&name, &args),
            outcome = if outcome.error { "refused_or_failed" } else { "ok" },
            summary = %outcome.summary,
            "mcp tool call"
        );
        Ok(outcome.into_result().into())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_fleet_refresh_is_summarised_with_the_hosts_that_failed() {
        let all =
            json!({"hosts": 3, "connected": 3, "failed": [], "took_ms": 41, "complete": true});
        assert_eq!(fleet_refresh_summary(&all), "all 3 hosts answered in 41 ms");
        let failed: Vec<Value> = (1..=7)
            .map(|i| json!({"host": format!("hv{i}"), "error": if i == 2 { Value::Null } else { json!(format!("e{i}")) }}))
            .collect();
        let some =
            json!({"hosts": 9, "connected": 2, "failed": failed, "took_ms": 900, "complete": true});
        assert_eq!(
            fleet_refresh_summary(&some),
            "7 of 9 hosts did not answer: hv1 (e1); hv2; hv3 (e3); hv4 (e4); hv5 (e5) and 2 more"
        );
        let mut waiting = some.clone();
        waiting["complete"] = json!(false);
        assert_eq!(
            fleet_refresh_summary(&waiting),
            "still refreshing after 900 ms (the refreshes go on); 7 of 9 hosts not connected so \
             far: hv1 (e1); hv2; hv3 (e3); hv4 (e4); hv5 (e5) and 2 more"
        );
        // Every host connected when the server stopped waiting: still not "all answered".
        let mut connected = all.clone();
        connected["complete"] = json!(false);
        assert_eq!(
            fleet_refresh_summary(&connected),
            "still refreshing after 41 ms (the refreshes go on)"
        );
    }

    #[test]
    fn tool_schemas_come_from_the_rest_types() {
        let tools = all_tools();
        let schema = |name: &str| {
            tools
                .iter()
                .find(|(t, _)| t.name == name)
                .map(|(t, _)| Value::Object((*t.input_schema).clone()))
                .unwrap()
        };
        let delete = schema("delete_vm");
        for field in [
            "vm_id",
            "vm_name",
            "hyperv_host",
            "force",
            "delete_disks",
            "confirmation_token",
        ] {
            assert!(
                delete["properties"].get(field).is_some(),
                "{field}: {delete}"
            );
        }
        let vms = schema("list_vms");
        for field in ["host", "cluster", "state", "q", "limit", "cursor", "sort"] {
            assert!(vms["properties"].get(field).is_some(), "{field}: {vms}");
        }
        let jobs = schema("list_jobs");
        // The REST query takes the limit as text; the schema says what it means: a number.
        assert!(
            jobs["properties"]["limit"].to_string().contains("integer"),
            "{jobs}"
        );
        let provision = schema("provision_vm");
        for field in ["vm_name", "image_name", "hyperv_host", "target_cluster"] {
            assert!(provision["properties"].get(field).is_some(), "{field}");
        }
        assert_eq!(provision["type"], "object");
        // The migration tools take the REST body's fields (a field added there appears here).
        for name in ["check_migration", "migrate_vm"] {
            let migrate = schema(name);
            for field in [
                "vm_id",
                "target_host",
                "mode",
                "destination_path",
                "storage_class",
            ] {
                assert!(
                    migrate["properties"].get(field).is_some(),
                    "{name} {field}: {migrate}"
                );
            }
            let modes = migrate.to_string();
            for mode in ["live", "storage", "shared_nothing", "quick"] {
                assert!(modes.contains(mode), "{name} {mode}: {modes}");
            }
        }
        let placement = schema("placement");
        for field in ["memory_bytes", "disk_bytes", "image", "cluster", "exclude"] {
            assert!(
                placement["properties"].get(field).is_some(),
                "{field}: {placement}"
            );
        }
    }

    #[test]
    fn write_tools_need_read_write_mode_and_the_writer_role() {
        for kind in [Kind::Write, Kind::Destructive] {
            let reader = gate("delete_vm", kind, McpMode::ReadWrite, Role::Reader);
            assert!(
                reader
                    .unwrap_err()
                    .contains("needs the writer role; you have reader")
            );
            assert!(gate("delete_vm", kind, McpMode::ReadWrite, Role::Writer).is_ok());
            assert!(gate("delete_vm", kind, McpMode::ReadWrite, Role::Admin).is_ok());
            let read_only = gate("delete_vm", kind, McpMode::ReadOnly, Role::Admin);
            assert!(read_only.unwrap_err().contains("read_only"));
        }
        assert!(gate("list_vms", Kind::Read, McpMode::ReadOnly, Role::Reader).is_ok());
        // Every write and destructive tool is classified as such.
        for (tool, kind) in all_tools() {
            let writes = [
                "provision_vm",
                "power_vm",
                "migrate_vm",
                "cancel_job",
                "refresh_inventory",
                "delete_vm",
                "turn_off_vm",
                "enter_maintenance",
                "resume_host",
                "evacuate_host",
            ]
            .contains(&tool.name.as_ref());
            assert_eq!(kind != Kind::Read, writes, "{}", tool.name);
            assert_eq!(
                kind == Kind::Destructive,
                ["delete_vm", "turn_off_vm", "evacuate_host"].contains(&tool.name.as_ref()),
                "{}",
                tool.name
            );
        }
    }

    #[test]
    fn audit_of_a_provisioning_call_hides_its_secrets() {
        let args = json!({
            "hyperv_host": "hv1", "vm_name": "web1", "image_name": "Ubuntu 24.04 LTS",
            "gb_ram": 2, "cpu_cores": 2, "guest_la_uid": "admin", "guest_la_pw": "Sup3r-Secret!",
        });
        let text = audit_arguments("provision_vm", &args).to_string();
        assert!(!text.contains("Sup3r-Secret!"), "{text}");
        assert!(text.contains("web1"), "{text}");
        // A body the schema refuses is still masked.
        let mut bad = args.clone();
        bad["gb_ram"] = json!("lots");
        let text = audit_arguments("provision_vm", &bad).to_string();
        assert!(!text.contains("Sup3r-Secret!"), "{text}");
    }
}
