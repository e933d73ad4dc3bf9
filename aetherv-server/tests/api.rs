//! The REST API through `aetherv_server::api::router`, driven with `tower::ServiceExt::oneshot`
//! (no port) over mock Hyper-V hosts and a real inventory refresher.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aetherv_hyperv::ops::{
    ClusterRole, DeletedVm, GoldenImage, HostCall, HostFacts, HostReply, HyperVHost, Inventory,
    MockHyperVHost, PowerAction, PowerOutcome, ProvisioningIso, RemovedPath, StorageLocation,
    VirtualSwitch, Vm, VmId, VmNic, VmState,
};
use aetherv_hyperv::psjson::Timestamp;
use aetherv_inventory::{CancellationToken, RefreshConfig, Refresher};
use aetherv_server::api::views::ServerMode;
use aetherv_server::api::{api_route_list, openapi, router};
use aetherv_server::auth::Authenticator;
use aetherv_server::auth::oidc::{OidcConfig, ReqwestFetcher, RoleNames, Validator};
use aetherv_server::jobs::{FollowItem, HostMap, JobQueue, JobStatus, NoObserver, QueueConfig};
use aetherv_server::metrics::Metrics;
use aetherv_server::state::{AppState, Readiness, ServerInfo};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::{Notify, oneshot};
use tokio::time::timeout;
use tower::ServiceExt;

mod support;
use support::contract::{self, sse_events};

/// Upper bound of every wait.
const WAIT: Duration = Duration::from_secs(10);
/// The guest password used in provisioning requests; it must never come back.
const SECRET: &str = "Gu3st-Pa55word!";

// ---------------------------------------------------------------------------------------------
// Fixture: two mock hosts with fixed facts and VMs behind a real refresher

fn id(n: u128) -> VmId {
    VmId(uuid::Uuid::from_u128(n))
}

const WEB: u128 = 0x101; // hv01, Running
const DB: u128 = 0x102; // hv01, Off
const APP: u128 = 0x103; // hv01, Paused
const BUILD: u128 = 0x201; // hv02, Running
const TEST: u128 = 0x202; // hv02, Off

fn vm(n: u128, name: &str, state: VmState, notes: &str, ips: &[&str]) -> Vm {
    Vm {
        id: id(n),
        name: name.to_owned(),
        state,
        generation: 2,
        version: Some("10.0".to_owned()),
        path: Some(format!("C:\\VMs\\{name}")),
        processor_count: 2,
        memory_startup_bytes: 4 << 30,
        memory_assigned_bytes: if state == VmState::Off { 0 } else { 4 << 30 },
        memory_minimum_bytes: 0,
        memory_maximum_bytes: 0,
        dynamic_memory: false,
        uptime: if state == VmState::Running {
            Duration::from_secs(3600)
        } else {
            Duration::ZERO
        },
        creation_time: Some(Timestamp::from_unix_millis(1_690_000_000_000)),
        notes: notes.to_owned(),
        clustered: false,
        disks: Vec::new(),
        dvd_drives: Vec::new(),
        nics: vec![VmNic {
            name: "Network Adapter".to_owned(),
            switch_name: Some("External".to_owned()),
            vlan_id: None,
            mac_address: format!("00155D{:06X}", n),
            ip_addresses: ips.iter().map(|s| (*s).to_owned()).collect(),
            ..VmNic::default()
        }],
        integration_services: Default::default(),
        config: Default::default(),
        checkpoints: Vec::new(),
        merge_percent: None,
    }
}

fn facts(name: &str, cluster: Option<&str>) -> HostFacts {
    HostFacts {
        name: name.to_owned(),
        fqdn: format!("{name}.lab.example"),
        cluster: cluster.map(str::to_owned),
        os_version: Some("10.0.20348".to_owned()),
        logical_processors: 16,
        memory_total_bytes: 64 << 30,
        memory_available_bytes: 48 << 30,
        vm_path: "C:\\VMs".to_owned(),
        storage: vec![StorageLocation {
            path: "C:\\".to_owned(),
            capacity_bytes: 1 << 40,
            free_bytes: 1 << 39,
            shared: false,
        }],
        switches: vec![VirtualSwitch {
            name: "External".to_owned(),
            switch_type: "External".to_owned(),
        }],
        images: vec![
            GoldenImage {
                name: "Ubuntu 24.04".to_owned(),
                os_family: "linux".to_owned(),
                path: "C:\\Images\\ubuntu.vhdx".to_owned(),
                size_bytes: 1000,
                max_size_bytes: Some(64 << 30),
                root: Some("C:\\Images".to_owned()),
            },
            GoldenImage {
                name: "Windows Server 2022 Datacenter".to_owned(),
                os_family: "windows".to_owned(),
                path: "C:\\Images\\ws2022.vhdx".to_owned(),
                size_bytes: 1000,
                max_size_bytes: None,
                root: Some("C:\\Images".to_owned()),
            },
        ],
        provisioning_isos: vec![ProvisioningIso {
            os_family: "linux".to_owned(),
            path: "C:\\ISO\\linux.iso".to_owned(),
            size_bytes: 10,
            version: Some("1.0.0".to_owned()),
        }],
        scripts_version: Some("abc123".to_owned()),
        host_resources: None,
        maintenance: None,
        cluster_node_state: None,
    }
}

/// A call inside a mock that blocks until the test opens the gate (mockall answers
/// synchronously, so it blocks the worker thread; tests using it run multi-threaded).
#[derive(Clone)]
struct Gate {
    entered: Arc<Notify>,
    release: Arc<Mutex<Option<oneshot::Receiver<()>>>>,
}

impl Gate {
    fn pass(&self) {
        let rx = self.release.lock().unwrap().take();
        self.entered.notify_one();
        if let Some(rx) = rx {
            let _ = tokio::task::block_in_place(|| futures::executor::block_on(rx));
        }
    }

    async fn entered(&self) {
        timeout(WAIT, self.entered.notified())
            .await
            .expect("the gated host call started");
    }
}

/// The state behind one mock host: its VMs (changed by power and delete calls), the calls
/// that change something, and an optional gate for the next power call.
#[derive(Clone)]
struct FakeHost {
    name: String,
    vms: Arc<Mutex<Vec<Vm>>>,
    calls: Arc<Mutex<Vec<String>>>,
    gate: Arc<Mutex<Option<Gate>>>,
}

impl FakeHost {
    fn new(name: &str, vms: Vec<Vm>) -> Self {
        Self {
            name: name.to_owned(),
            vms: Arc::new(Mutex::new(vms)),
            calls: Arc::new(Mutex::new(Vec::new())),
            gate: Arc::new(Mutex::new(None)),
        }
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    /// Makes the next power call on this host block until the sender is used (or dropped).
    fn arm(&self) -> (Gate, oneshot::Sender<()>) {
        let (tx, rx) = oneshot::channel();
        let gate = Gate {
            entered: Arc::new(Notify::new()),
            release: Arc::new(Mutex::new(Some(rx))),
        };
        *self.gate.lock().unwrap() = Some(gate.clone());
        (gate, tx)
    }

    /// A host whose VM list follows the power and delete calls; copies and registrations
    /// fail (disk full), and every mutating call is recorded in `calls`.
    fn mock(&self, cluster: Option<&str>) -> MockHyperVHost {
        let name = self.name.clone();
        let mut host = MockHyperVHost::new();
        host.expect_host_name().return_const(name.clone());
        let (n, c) = (name.clone(), cluster.map(str::to_owned));
        let (vms, calls, gate) = (
            Arc::clone(&self.vms),
            Arc::clone(&self.calls),
            Arc::clone(&self.gate),
        );
        host.expect_call().returning(move |call| {
            let unknown = |id: VmId| aetherv_hyperv::Error::UnknownVm {
                host: n.clone(),
                vm: id.to_string(),
            };
            let refuse = |operation: &'static str| aetherv_hyperv::Error::ScriptFailed {
                host: n.clone(),
                operation,
                code: "DiskFull".to_owned(),
                message: "not enough space on the volume".to_owned(),
            };
            let record = |line: String| calls.lock().unwrap().push(line);
            match call {
                HostCall::Facts => Ok(HostReply::Facts(Box::new(facts(&n, c.as_deref())))),
                HostCall::Inventory => Ok(HostReply::Inventory(Inventory {
                    host: n.clone(),
                    collected_at: Timestamp::from_unix_millis(1_700_000_000_000),
                    vms: vms.lock().unwrap().clone(),
                    digest: None,
                    unchanged: false,
                })),
                HostCall::Vm(id) => vms
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|v| v.id == id)
                    .cloned()
                    .map(|vm| HostReply::Vm(Box::new(vm)))
                    .ok_or_else(|| unknown(id)),
                HostCall::Power(id, action) => {
                    record(format!("power {id} {}", action.as_str()));
                    let armed = gate.lock().unwrap().take();
                    if let Some(gate) = armed {
                        gate.pass();
                    }
                    let mut vms = vms.lock().unwrap();
                    let vm = vms
                        .iter_mut()
                        .find(|v| v.id == id)
                        .ok_or_else(|| unknown(id))?;
                    let previous_state = vm.state;
                    vm.state = match action {
                        PowerAction::Start | PowerAction::Resume | PowerAction::Restart => {
                            VmState::Running
                        }
                        PowerAction::Shutdown | PowerAction::TurnOff => VmState::Off,
                        PowerAction::Save => VmState::Saved,
                        PowerAction::Pause => VmState::Paused,
                    };
                    Ok(HostReply::Power(PowerOutcome {
                        id,
                        name: vm.name.clone(),
                        previous_state,
                        state: vm.state,
                    }))
                }
                HostCall::DeleteVm { id, .. } => {
                    record(format!("delete_vm {id}"));
                    let mut vms = vms.lock().unwrap();
                    let at = vms
                        .iter()
                        .position(|v| v.id == id)
                        .ok_or_else(|| unknown(id))?;
                    let removed = vms.remove(at);
                    Ok(HostReply::Deleted(DeletedVm {
                        id,
                        name: removed.name,
                        removed_paths: Vec::new(),
                        kept_paths: Vec::new(),
                    }))
                }
                HostCall::CopyImage(request) => {
                    record(format!("copy_image {}", request.vm_name));
                    Err(refuse("copy_image"))
                }
                HostCall::CopyIso(_) => {
                    record("copy_provisioning_iso".to_owned());
                    Err(refuse("copy_provisioning_iso"))
                }
                HostCall::RegisterVm(spec) => {
                    record(format!("register_vm {}", spec.name));
                    Err(refuse("register_vm"))
                }
                HostCall::RemovePath(path) => {
                    record(format!("remove_path {path}"));
                    Ok(HostReply::RemovedPath(RemovedPath {
                        path,
                        removed: false,
                    }))
                }
                HostCall::RemoveClusterRole(id) => Ok(HostReply::ClusterRole(ClusterRole {
                    id,
                    clustered: false,
                    group: None,
                })),
                HostCall::SetVmNotes(id, notes) => {
                    record(format!("set_vm_notes {id} {notes}"));
                    let mut vms = vms.lock().unwrap();
                    let vm = vms
                        .iter_mut()
                        .find(|v| v.id == id)
                        .ok_or_else(|| unknown(id))?;
                    vm.notes = notes.clone();
                    Ok(HostReply::NotesSet(aetherv_hyperv::ops::VmNotes {
                        id,
                        notes,
                    }))
                }
                other => panic!("the API tests never ask for {other:?}"),
            }
        });
        host
    }
}

struct Fixture {
    app: Router,
    state: AppState,
    hv01: FakeHost,
    hv02: FakeHost,
    _refresher: Refresher,
}

async fn fixture() -> Fixture {
    fixture_with(
        QueueConfig::default(),
        Readiness::ready(),
        Authenticator::disabled("test"),
    )
    .await
}

async fn fixture_with(config: QueueConfig, readiness: Readiness, auth: Authenticator) -> Fixture {
    let hv01 = FakeHost::new(
        "hv01",
        vec![
            vm(WEB, "web-01", VmState::Running, "", &["10.0.0.4"]),
            vm(DB, "db-01", VmState::Off, "", &[]),
            vm(
                APP,
                "app-01",
                VmState::Paused,
                "owner: alice",
                &["10.0.0.5"],
            ),
        ],
    );
    let hv02 = FakeHost::new(
        "hv02",
        vec![
            vm(BUILD, "build-01", VmState::Running, "", &["10.0.1.7"]),
            vm(TEST, "test-01", VmState::Off, "", &[]),
        ],
    );
    let mut map = HostMap::new();
    map.insert(
        "hv01".to_owned(),
        Arc::new(hv01.mock(Some("clu01"))) as Arc<dyn HyperVHost>,
    );
    map.insert(
        "hv02".to_owned(),
        Arc::new(hv02.mock(None)) as Arc<dyn HyperVHost>,
    );
    let refresher = Refresher::start(
        &map,
        RefreshConfig {
            interval: Duration::from_secs(3600),
            ..RefreshConfig::default()
        },
        CancellationToken::new(),
    );
    let handle = refresher.handle();
    let refreshed = timeout(WAIT, handle.refresh_all()).await.unwrap();
    assert!(refreshed.iter().all(|(_, r)| r.is_ok()), "{refreshed:?}");
    let jobs = JobQueue::new(
        config,
        Arc::new(map),
        Some(handle.clone()),
        Arc::new(NoObserver),
    );
    let state = AppState {
        inventory: handle,
        jobs,
        auth: Arc::new(auth),
        metrics: Arc::new(Metrics::new()),
        readiness: Arc::new(readiness),
        info: Arc::new(ServerInfo {
            mode: ServerMode::Demo,
            version: "test",
            media: aetherv_server::media::ProvisioningMedia::default(),
        }),
        vm_list_cache: Arc::default(),
        host_resources: Arc::default(),
        recovery: Arc::default(),
        clusters: Arc::default(),
        maintenance: Arc::default(),
    };
    Fixture {
        app: router(state.clone()),
        state,
        hv01,
        hv02,
        _refresher: refresher,
    }
}

// ---------------------------------------------------------------------------------------------
// Requests

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Checks the error shape and code; returns the `error` object.
    fn error(&self, status: StatusCode, code: &str) -> Value {
        assert_eq!(self.status, status, "{}", self.text());
        let v = self.json();
        let error = v["error"].clone();
        assert_eq!(error["code"], code, "{v}");
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{v}"
        );
        error
    }
}

impl Fixture {
    /// Sends `request` and reads the whole answer, which is checked against the OpenAPI
    /// document (status, content type, body schema) before the test sees it.
    async fn send(&self, request: Request<Body>) -> Answer {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let response = timeout(WAIT, self.app.clone().oneshot(request))
            .await
            .expect("the router answers in time")
            .expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let body = timeout(WAIT, axum::body::to_bytes(response.into_body(), 16 << 20))
            .await
            .expect("the body ends in time")
            .expect("a readable body");
        contract::check(&method, &path, status, &headers, &body);
        Answer {
            status,
            headers,
            body,
        }
    }

    /// Sends `request` for an answer that does not end (an event stream): its status and
    /// content type are checked against the OpenAPI document; the caller checks the events it
    /// reads with [`contract::check_stream_events`].
    async fn open(&self, request: Request<Body>) -> axum::response::Response {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let response = timeout(WAIT, self.app.clone().oneshot(request))
            .await
            .expect("the router answers in time")
            .expect("infallible");
        contract::check_head(&method, &path, response.status(), response.headers());
        response
    }

    async fn get(&self, uri: &str) -> Answer {
        self.send(Request::get(uri).body(Body::empty()).unwrap())
            .await
    }

    async fn post(&self, uri: &str, content_type: Option<&str>, body: impl Into<Body>) -> Answer {
        let mut request = Request::post(uri);
        if let Some(ct) = content_type {
            request = request.header(header::CONTENT_TYPE, ct);
        }
        self.send(request.body(body.into()).unwrap()).await
    }

    async fn post_json(&self, uri: &str, body: &Value) -> Answer {
        self.post(uri, Some("application/json"), body.to_string())
            .await
    }

    async fn vms(&self, query: &str) -> Vec<String> {
        let answer = self.get(&format!("/api/v1/vms{query}")).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        let v = answer.json();
        let names: Vec<String> = v["vms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|vm| vm["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(v["total"], names.len());
        let mut sorted = names;
        sorted.sort();
        sorted
    }

    /// Waits until job `id` has ended; returns its record as the API shows it.
    async fn wait_job(&self, id: &str) -> Value {
        let mut follower = self.state.jobs.follow(id).expect("the job exists");
        timeout(WAIT, async {
            while let Some(item) = follower.next().await {
                if matches!(item, FollowItem::End(_)) {
                    break;
                }
            }
        })
        .await
        .expect("the job ends in time");
        let answer = self.get(&format!("/api/v1/jobs/{id}")).await;
        assert_eq!(answer.status, StatusCode::OK);
        answer.json()
    }

    fn job_count(&self) -> usize {
        self.state.jobs.list(&Default::default()).len()
    }
}

/// The accepted job's id, after checking the 202 shape and the Location header.
fn accepted(answer: &Answer) -> String {
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text());
    let v = answer.json();
    assert_eq!(v["status"], "queued", "{v}");
    let job = v["job_id"].as_str().unwrap().to_owned();
    assert_eq!(
        answer.headers.get(header::LOCATION).unwrap(),
        &format!("/api/v1/jobs/{job}")
    );
    job
}

fn create_body(name: &str) -> Value {
    json!({
        "vm_name": name,
        "hyperv_host": "hv01",
        "image_name": "Ubuntu 24.04",
        "gb_ram": 4,
        "cpu_cores": 2,
        "guest_la_uid": "admin",
        "guest_la_pw": SECRET,
    })
}

// ---------------------------------------------------------------------------------------------
// Probes, documents, status

#[tokio::test]
async fn healthz_answers_ok() {
    let fx = fixture().await;
    let answer = fx.get("/healthz").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json(), json!({"status": "ok"}));
}

#[tokio::test]
async fn readyz_says_ready_or_why_not() {
    let fx = fixture().await;
    let answer = fx.get("/readyz").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json(), json!({"status": "ready", "mode": "demo"}));

    let fx = fixture_with(
        QueueConfig::default(),
        Readiness::not_ready("deploying host scripts"),
        Authenticator::disabled("test"),
    )
    .await;
    let answer = fx.get("/readyz").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        answer.json(),
        json!({"status": "not_ready", "reason": "deploying host scripts", "mode": "demo"})
    );
    fx.state.readiness.set_ready();
    assert_eq!(fx.get("/readyz").await.status, StatusCode::OK);
}

#[tokio::test]
async fn status_and_me_describe_the_server_and_the_caller() {
    let fx = fixture().await;
    let v = fx.get("/api/v1/status").await.json();
    assert_eq!(v["mode"], "demo");
    assert_eq!(v["version"], "test");
    assert_eq!(v["ready"], true);
    assert_eq!(v["hosts"], 2);
    assert_eq!(v["vms"], 5);
    assert_eq!(v["jobs_running"], 0);
    assert_eq!(v["jobs_queued"], 0);
    let me = fx.get("/api/v1/me").await;
    assert_eq!(me.status, StatusCode::OK);
    let me = me.json();
    assert_eq!(me["auth_enabled"], false);
    assert_eq!(me["role"], "admin");
    assert_eq!(me["login_url"], Value::Null);
}

#[tokio::test]
async fn documents_and_metrics_answer() {
    let fx = fixture().await;
    let doc = fx.get("/openapi.json").await;
    assert_eq!(doc.status, StatusCode::OK);
    let doc = doc.json();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    assert!(doc["paths"]["/api/v1/vms"]["get"].is_object());
    let docs = fx.get("/docs").await;
    assert_eq!(docs.status, StatusCode::OK);
    assert!(
        docs.headers
            .get(header::CONTENT_TYPE)
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(docs.text().contains("openapi.json"));
    fx.get("/healthz").await;
    let metrics = fx.get("/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(metrics.text().contains("# EOF"), "{}", metrics.text());
    let ui = fx.get("/").await;
    assert_eq!(ui.status, StatusCode::OK);
}

#[tokio::test]
async fn every_documented_route_is_served_and_every_api_route_is_documented() {
    let fx = fixture().await;
    let api = api_route_list();
    assert!(api.len() >= 16, "{api:?}");
    let documented = openapi::documented_routes();
    for route in &api {
        assert!(
            documented.contains(route),
            "{route:?} is served but not documented"
        );
    }
    for (method, template) in documented {
        // Fill the path parameters with values that name nothing: the route must still be the
        // one that answers (its own 4xx, never the fallback's "route not found" or a 405).
        let path: String = template
            .split('/')
            .map(|s| {
                if s.starts_with('{') {
                    "00000000-0000-0000-0000-000000000000"
                } else {
                    s
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        if template == "/api/v1/events" {
            let response = fx
                .open(Request::get(&path).body(Body::empty()).unwrap())
                .await;
            assert_eq!(response.status(), StatusCode::OK);
            continue;
        }
        let answer = fx
            .send(
                Request::builder()
                    .method(method.clone())
                    .uri(&path)
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from("{}"))
                    .unwrap(),
            )
            .await;
        assert_ne!(
            answer.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {template}"
        );
        if answer.status == StatusCode::NOT_FOUND {
            let message = answer.json()["error"]["message"].clone();
            assert!(
                !message.as_str().unwrap().starts_with("route "),
                "{method} {template} is documented but not served: {message}"
            );
        }
    }
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_answer_json() {
    let fx = fixture().await;
    for uri in ["/api/v1/nothing-here", "/nothing", "/api/v1/vms/x/y/z"] {
        let error = fx.get(uri).await.error(StatusCode::NOT_FOUND, "not_found");
        assert!(
            error["message"].as_str().unwrap().contains("route"),
            "{error}"
        );
    }
    let answer = fx
        .send(
            Request::builder()
                .method(Method::DELETE)
                .uri("/api/v1/vms")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    answer.error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    let answer = fx.post("/healthz", None, "").await;
    answer.error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    // The static segments win over `{id}`: these are POST-only routes, not ids.
    for uri in [
        "/api/v1/vms/create",
        "/api/v1/vms/delete",
        "/api/v1/jobs/provision",
    ] {
        let answer = fx.get(uri).await;
        answer.error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    }
}

// ---------------------------------------------------------------------------------------------
// Inventory

#[tokio::test]
async fn clusters_list_members_and_counts() {
    let fx = fixture().await;
    let answer = fx.get("/api/v1/clusters").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.json(),
        json!({"clusters": [{"name": "clu01", "hosts": ["hv01"], "vm_count": 3, "connected_hosts": 1}]})
    );
}

#[tokio::test]
async fn hosts_list_both_hosts_with_facts_and_counts() {
    let fx = fixture().await;
    let v = fx.get("/api/v1/hosts").await.json();
    let hosts = v["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 2);
    let hv01 = hosts.iter().find(|h| h["name"] == "hv01").unwrap();
    assert_eq!(hv01["cluster"], "clu01");
    assert_eq!(hv01["status"], "connected");
    assert_eq!(hv01["vm_count"], 3);
    assert_eq!(
        hv01["vms_by_state"],
        json!({"Running": 1, "Off": 1, "Paused": 1})
    );
    assert_eq!(hv01["logical_processors"], 16);
    assert_eq!(hv01["memory_available_bytes"], 48u64 << 30);
    assert_eq!(hv01["storage_total_bytes"], 1u64 << 40);
    assert_eq!(hv01["scripts_version"], "abc123");
    assert!(hv01["last_seen"].is_string());
    assert_eq!(hv01["last_error"], Value::Null);
    let hv02 = hosts.iter().find(|h| h["name"] == "hv02").unwrap();
    assert_eq!(hv02["cluster"], Value::Null);
    assert_eq!(hv02["vm_count"], 2);
}

#[tokio::test]
async fn a_host_is_found_case_insensitively_and_unknown_hosts_are_404() {
    let fx = fixture().await;
    for name in ["hv01", "HV01", "Hv01"] {
        let answer = fx.get(&format!("/api/v1/hosts/{name}")).await;
        assert_eq!(answer.status, StatusCode::OK, "{name}: {}", answer.text());
        let v = answer.json();
        assert_eq!(v["name"], "hv01");
        assert_eq!(v["facts"]["fqdn"], "hv01.lab.example");
        assert_eq!(v["facts"]["images"][0]["name"], "Ubuntu 24.04");
        assert_eq!(v["vms"].as_array().unwrap().len(), 3);
    }
    let answer = fx.get("/api/v1/hosts/hv77").await;
    let error = answer.error(StatusCode::NOT_FOUND, "not_found");
    assert!(
        error["message"].as_str().unwrap().contains("hv77"),
        "{error}"
    );
    assert_eq!(
        answer.json().as_object().unwrap().len(),
        1,
        "only the error object"
    );
}

#[tokio::test]
async fn the_vm_list_filters_by_host_cluster_state_and_text() {
    let fx = fixture().await;
    let all = fx.vms("").await;
    assert_eq!(all, ["app-01", "build-01", "db-01", "test-01", "web-01"]);
    assert_eq!(fx.vms("?host=hv02").await, ["build-01", "test-01"]);
    assert_eq!(fx.vms("?host=HV02").await, ["build-01", "test-01"]);
    assert_eq!(
        fx.vms("?cluster=clu01").await,
        ["app-01", "db-01", "web-01"]
    );
    assert_eq!(
        fx.vms("?cluster=CLU01").await,
        ["app-01", "db-01", "web-01"]
    );
    assert!(fx.vms("?cluster=nope").await.is_empty());
    assert_eq!(fx.vms("?state=running").await, ["build-01", "web-01"]);
    assert_eq!(fx.vms("?state=Off").await, ["db-01", "test-01"]);
    assert_eq!(fx.vms("?state=PAUSED").await, ["app-01"]);
    assert_eq!(fx.vms("?state=Off&host=hv01").await, ["db-01"]);
    assert_eq!(fx.vms("?q=WEB").await, ["web-01"]);
    assert_eq!(fx.vms("?q=10.0.1.7").await, ["build-01"]);
    assert_eq!(fx.vms("?q=alice").await, ["app-01"]);
    assert_eq!(fx.vms(&format!("?q={}", id(DB))).await, ["db-01"]);
    assert!(fx.vms("?q=zzz").await.is_empty());
    let error = fx
        .get("/api/v1/vms?state=Flying")
        .await
        .error(StatusCode::BAD_REQUEST, "bad_query");
    assert_eq!(error["field"], "state");
    assert!(
        error["message"].as_str().unwrap().contains("Flying"),
        "{error}"
    );

    let v = fx.get("/api/v1/vms?host=hv01&state=Running").await.json();
    let web = &v["vms"][0];
    assert_eq!(web["id"], id(WEB).to_string());
    assert_eq!(web["host"], "hv01");
    assert_eq!(web["cluster"], "clu01");
    assert_eq!(web["state"], "Running");
    assert_eq!(web["stale"], false);
    assert_eq!(web["uptime_seconds"], 3600);
    assert_eq!(web["ip_addresses"], json!(["10.0.0.4"]));
    assert_eq!(web["busy_job"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cached_vm_list_changes_when_a_job_makes_a_vm_busy() {
    let fx = fixture().await;
    let first = fx.get("/api/v1/vms?limit=all").await;
    let second = fx.get("/api/v1/vms?limit=all").await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.body, second.body, "the same list twice");

    let (gate, release) = fx.hv01.arm();
    let job = accepted(
        &fx.post(&format!("/api/v1/vms/{}/actions/pause", id(WEB)), None, "")
            .await,
    );
    gate.entered().await;
    let busy = fx.get("/api/v1/vms?limit=all").await;
    assert_ne!(busy.body, first.body, "the cached list was served stale");
    let v = busy.json();
    let web = v["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|vm| vm["name"] == "web-01")
        .unwrap()
        .clone();
    assert_eq!(web["busy_job"], job);
    assert_eq!(web["state"], "Running");
    let detail = fx.get(&format!("/api/v1/vms/{}", id(WEB))).await.json();
    assert_eq!(detail["busy_job"], job);

    release.send(()).unwrap();
    let done = fx.wait_job(&job).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let after = fx.get("/api/v1/vms?limit=all").await.json();
    let web = after["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|vm| vm["name"] == "web-01")
        .unwrap()
        .clone();
    assert_eq!(web["busy_job"], Value::Null);
    assert_eq!(web["state"], "Paused");
}

#[tokio::test]
async fn the_vm_list_is_sent_compressed_and_revalidated_by_etag() {
    let fx = fixture().await;
    let plain = fx.get("/api/v1/vms?limit=all").await;
    assert_eq!(plain.status, StatusCode::OK);
    assert!(plain.headers.get(header::CONTENT_ENCODING).is_none());
    let etag = plain.headers.get(header::ETAG).unwrap().clone();

    let zipped = fx
        .send(
            Request::get("/api/v1/vms?limit=all")
                .header(header::ACCEPT_ENCODING, "br;q=1.0, gzip;q=0.8")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(
        zipped.headers.get(header::CONTENT_ENCODING).unwrap(),
        "gzip"
    );
    assert_eq!(zipped.headers.get(header::ETAG).unwrap(), &etag);
    let mut unzipped = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(&zipped.body[..]),
        &mut unzipped,
    )
    .unwrap();
    assert_eq!(unzipped, plain.body.to_vec(), "the same list, compressed");

    let refused = fx
        .send(
            Request::get("/api/v1/vms?limit=all")
                .header(header::ACCEPT_ENCODING, "gzip;q=0")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert!(refused.headers.get(header::CONTENT_ENCODING).is_none());

    let unchanged = fx
        .send(
            Request::get("/api/v1/vms?limit=all")
                .header(header::IF_NONE_MATCH, etag.clone())
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(unchanged.status, StatusCode::NOT_MODIFIED);
    assert!(unchanged.body.is_empty());

    // A change of the busy set makes a new version.
    let job = accepted(
        &fx.post(&format!("/api/v1/vms/{}/actions/pause", id(WEB)), None, "")
            .await,
    );
    fx.wait_job(&job).await;
    let changed = fx
        .send(
            Request::get("/api/v1/vms?limit=all")
                .header(header::IF_NONE_MATCH, etag.clone())
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK);
    assert_ne!(changed.headers.get(header::ETAG).unwrap(), &etag);
}

#[tokio::test]
async fn a_vm_shows_its_details_and_allowed_actions() {
    let fx = fixture().await;
    let answer = fx.get(&format!("/api/v1/vms/{}", id(WEB))).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let v = answer.json();
    assert_eq!(v["name"], "web-01");
    assert_eq!(v["generation"], 2);
    assert_eq!(v["path"], "C:\\VMs\\web-01");
    assert_eq!(v["network_adapters"][0]["switch_name"], "External");
    assert_eq!(
        v["allowed_actions"],
        json!(["shutdown", "stop", "restart", "save", "pause"])
    );
    let db = fx.get(&format!("/api/v1/vms/{}", id(DB))).await.json();
    assert_eq!(db["allowed_actions"], json!(["start"]));
    let app = fx.get(&format!("/api/v1/vms/{}", id(APP))).await.json();
    assert_eq!(app["allowed_actions"], json!(["stop", "save", "resume"]));
    // Braces and upper case are still the same GUID.
    let upper = format!("{{{}}}", id(TEST).to_string().to_uppercase());
    let test = fx.get(&format!("/api/v1/vms/{upper}")).await;
    assert_eq!(test.status, StatusCode::OK, "{}", test.text());
    assert_eq!(test.json()["name"], "test-01");

    fx.get(&format!("/api/v1/vms/{}", id(0x999)))
        .await
        .error(StatusCode::NOT_FOUND, "not_found");
    fx.get("/api/v1/vms/not-a-guid")
        .await
        .error(StatusCode::NOT_FOUND, "not_found");
}

// ---------------------------------------------------------------------------------------------
// Create and provision

#[tokio::test]
async fn create_queues_a_job_with_redacted_parameters() {
    let fx = fixture().await;
    let answer = fx
        .post_json("/api/v1/vms/create", &create_body("new-01"))
        .await;
    let job = accepted(&answer);
    assert!(!answer.text().contains(SECRET));
    let record = fx.get(&format!("/api/v1/jobs/{job}")).await;
    assert_eq!(record.status, StatusCode::OK);
    assert!(!record.text().contains(SECRET), "{}", record.text());
    let v = record.json();
    assert_eq!(v["id"], job);
    assert_eq!(v["type"], "provision");
    assert_eq!(v["target_host"], "hv01");
    assert_eq!(v["vm_name"], "new-01");
    assert_eq!(v["parameters"]["values"]["guest_la_pw"], "***");
    assert_eq!(v["parameters"]["values"]["gb_ram"], 4);
    assert_eq!(v["parameters"]["target_host"], "hv01");

    // The job runs against the mock host (whose copy fails) and ends without the secret.
    let done = fx.wait_job(&job).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert!(
        done["error"].as_str().unwrap().contains("not enough space"),
        "{done}"
    );
    assert!(
        fx.hv01.calls().contains(&"copy_image new-01".to_owned()),
        "{:?}",
        fx.hv01.calls()
    );
    let logs = fx
        .get(&format!("/api/v1/jobs/{job}/logs?follow=false"))
        .await;
    assert_eq!(logs.status, StatusCode::OK);
    assert!(!logs.text().contains(SECRET));
    let list = fx.get("/api/v1/jobs").await;
    assert!(!list.text().contains(SECRET));
}

#[tokio::test]
async fn a_failed_provision_shows_its_failed_step_and_no_full_bar() {
    let fx = fixture().await;
    // The copy fails on the mock host: pre-checks succeeded, the copy failed, compensation ran.
    let job = accepted(
        &fx.post_json("/api/v1/vms/create", &create_body("steps-01"))
            .await,
    );
    let done = fx.wait_job(&job).await;
    assert_eq!(done["status"], "failed", "{done}");
    let steps: Vec<(String, String)> = done["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    // The steps the job planned but never reached are listed as skipped, before the
    // compensation.
    let expected: Vec<(String, String)> = [
        ("Provisioning.PreChecks", "succeeded"),
        ("Provisioning.CopyImage", "failed"),
        ("Provisioning.CopyProvisioningISO", "skipped"),
        ("Provisioning.RegisterVM", "skipped"),
        ("Provisioning.WaitForProvisioningKey", "skipped"),
        ("Provisioning.PublishProvisioningData", "skipped"),
        ("Provisioning.WaitForGuest", "skipped"),
        ("Provisioning.RemoveProvisioningKeys", "skipped"),
        ("Provisioning.RemoveDvdDrive", "skipped"),
        ("Provisioning.RemoveProvisioningISO", "skipped"),
        ("Provisioning.MarkProvisioned", "skipped"),
        ("Provisioning.Compensate", "succeeded"),
    ]
    .iter()
    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
    .collect();
    assert_eq!(steps, expected, "{done}");
    assert!(done["percent"].as_u64().unwrap() < 100, "{done}");

    // A Windows image with no Windows provisioning ISO on the host fails in the pre-checks.
    let mut body = create_body("steps-02");
    body["image_name"] = json!("Windows Server 2022 Datacenter");
    let job = accepted(&fx.post_json("/api/v1/vms/create", &body).await);
    let done = fx.wait_job(&job).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["steps"][0]["name"], "Provisioning.PreChecks", "{done}");
    assert_eq!(done["steps"][0]["status"], "failed", "{done}");
    assert_eq!(done["steps"][1]["name"], "Provisioning.CopyImage", "{done}");
    assert_eq!(done["steps"][1]["status"], "skipped", "{done}");
    assert_eq!(done["steps"][1]["started_at"], Value::Null, "{done}");
    assert!(done["percent"].as_u64().unwrap() < 100, "{done}");
    assert!(
        !fx.hv01.calls().contains(&"copy_image steps-02".to_owned()),
        "{:?}",
        fx.hv01.calls()
    );
}

#[tokio::test]
async fn create_refuses_bodies_it_cannot_read() {
    let fx = fixture().await;
    fx.post(
        "/api/v1/vms/create",
        Some("application/json"),
        "{\"vm_name\": ",
    )
    .await
    .error(StatusCode::BAD_REQUEST, "malformed_body");
    fx.post(
        "/api/v1/vms/create",
        Some("text/html"),
        create_body("new-01").to_string(),
    )
    .await
    .error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    assert_eq!(fx.job_count(), 0);
}

#[tokio::test]
async fn create_names_invalid_fields() {
    let fx = fixture().await;
    let mut body = create_body("new-01");
    body["gb_ram"] = json!(4096);
    let error = fx
        .post_json("/api/v1/vms/create", &body)
        .await
        .error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field");
    assert_eq!(error["field"], "gb_ram");

    let mut body = create_body("bad name!");
    body["gb_ram"] = json!(0);
    body["cpu_cores"] = json!(999);
    let error = fx
        .post_json("/api/v1/vms/create", &body)
        .await
        .error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field");
    let fields: Vec<&str> = error["details"]
        .as_array()
        .expect("details")
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    for field in ["vm_name", "gb_ram", "cpu_cores"] {
        assert!(fields.contains(&field), "{field} missing from {fields:?}");
    }
    assert_eq!(error["field"], error["details"][0]["field"]);
    assert!(!error.to_string().contains(SECRET));
    assert_eq!(fx.job_count(), 0);
}

#[tokio::test]
async fn create_on_an_unknown_host_is_404_naming_the_field() {
    let fx = fixture().await;
    let mut body = create_body("new-01");
    body["hyperv_host"] = json!("hv77");
    let error = fx
        .post_json("/api/v1/vms/create", &body)
        .await
        .error(StatusCode::NOT_FOUND, "not_found");
    assert_eq!(error["field"], "hyperv_host");
    assert!(
        error["message"].as_str().unwrap().contains("hv77"),
        "{error}"
    );
    assert_eq!(fx.job_count(), 0);
}

#[tokio::test]
async fn create_of_an_existing_name_is_409_before_anything_runs() {
    let fx = fixture().await;
    let error = fx
        .post_json("/api/v1/vms/create", &create_body("WEB-01"))
        .await
        .error(StatusCode::CONFLICT, "vm_exists");
    assert!(
        error["message"].as_str().unwrap().contains("web-01"),
        "{error}"
    );
    assert_eq!(fx.job_count(), 0, "no job was queued");
    assert!(fx.hv01.calls().is_empty(), "{:?}", fx.hv01.calls());
    // The same name on the other host is free.
    let mut body = create_body("web-01");
    body["hyperv_host"] = json!("hv02");
    let job = accepted(&fx.post_json("/api/v1/vms/create", &body).await);
    fx.wait_job(&job).await;
    assert!(fx.hv01.calls().is_empty(), "{:?}", fx.hv01.calls());
}

#[tokio::test]
async fn create_with_an_image_the_host_lacks_is_422() {
    let fx = fixture().await;
    let mut body = create_body("new-01");
    body["image_name"] = json!("Ubuntu 22.04");
    let error = fx
        .post_json("/api/v1/vms/create", &body)
        .await
        .error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field");
    assert_eq!(error["field"], "image_name");
    assert!(
        error["message"].as_str().unwrap().contains("Ubuntu 24.04"),
        "names what is available: {error}"
    );
    assert_eq!(fx.job_count(), 0);
}

#[tokio::test]
async fn a_disk_size_below_the_image_is_422_naming_both_sizes() {
    let fx = fixture().await;
    let mut body = create_body("new-01");
    body["disk_size_gb"] = json!(20);
    let error = fx
        .post_json("/api/v1/vms/create", &body)
        .await
        .error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field");
    assert_eq!(error["field"], "disk_size_gb");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("20 GiB") && message.contains("64 GiB"),
        "{error}"
    );
    body["disk_size_gb"] = json!(0);
    let error = fx
        .post_json("/api/v1/vms/create", &body)
        .await
        .error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field");
    assert_eq!(error["field"], "disk_size_gb");
    assert_eq!(fx.job_count(), 0);
    body["disk_size_gb"] = json!("100");
    let job = accepted(&fx.post_json("/api/v1/vms/create", &body).await);
    fx.wait_job(&job).await;
}

#[tokio::test]
async fn unknown_networks_and_storage_classes_are_422_naming_the_field() {
    let fx = fixture().await;
    let mut body = create_body("new-01");
    body["network"] = json!("prod");
    body["storage_class"] = json!("fast");
    let answer = fx.post_json("/api/v1/vms/create", &body).await;
    let error = answer.error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field");
    assert_eq!(error["field"], "network");
    let text = error.to_string();
    assert!(
        text.contains("storage_class"),
        "both fields are named: {text}"
    );
    assert!(text.contains("none are defined"), "{text}");
    assert_eq!(fx.job_count(), 0);
}

#[tokio::test]
async fn provision_jobs_are_accepted_as_json_and_yaml() {
    let fx = fixture().await;
    let doc = json!({
        "schema_version": 1,
        "target_host": "hv01",
        "values": {
            "vm_name": "new-02", "image_name": "Ubuntu 24.04", "gb_ram": 2, "cpu_cores": 1,
            "guest_la_uid": "admin", "guest_la_pw": SECRET
        }
    });
    let job = accepted(&fx.post_json("/api/v1/jobs/provision", &doc).await);
    let v = fx.get(&format!("/api/v1/jobs/{job}")).await;
    assert!(!v.text().contains(SECRET));
    assert_eq!(v.json()["vm_name"], "new-02");

    let yaml = format!(
        "schema_version: 1\ntarget_host: hv02\nvalues:\n  vm_name: new-03\n  image_name: Ubuntu 24.04\n  \
         gb_ram: 2\n  cpu_cores: 1\n  guest_la_uid: admin\n  guest_la_pw: \"{SECRET}\"\n"
    );
    let answer = fx
        .post("/api/v1/jobs/provision", Some("application/yaml"), yaml)
        .await;
    let job = accepted(&answer);
    let v = fx.get(&format!("/api/v1/jobs/{job}")).await;
    assert!(!v.text().contains(SECRET));
    let v = v.json();
    assert_eq!(v["target_host"], "hv02");
    assert_eq!(v["vm_name"], "new-03");
    assert_eq!(v["parameters"]["values"]["guest_la_pw"], "***");

    let mut bad = doc.clone();
    bad["values"]["gb_ram"] = json!(0);
    let error = fx
        .post_json("/api/v1/jobs/provision", &bad)
        .await
        .error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field");
    assert_eq!(error["field"], "values.gb_ram");
    fx.post(
        "/api/v1/jobs/provision",
        Some("application/yaml"),
        "values: [unclosed",
    )
    .await
    .error(StatusCode::BAD_REQUEST, "malformed_body");
}

#[tokio::test]
async fn deeply_nested_bodies_are_refused_naming_the_nesting() {
    let fx = fixture().await;
    // 30,000 nested flow mappings (about 120 KB) cost libyaml seconds of CPU; refused before.
    let mappings = "{a: ".repeat(30_000);
    let lists = "[".repeat(100_000);
    for (path, body) in [
        ("/api/v1/jobs/provision", mappings.clone()),
        ("/api/v1/vms/create", mappings),
        ("/api/v1/jobs/provision", lists.clone()),
        ("/api/v1/vms/create", lists),
    ] {
        let error = fx
            .post(path, Some("application/yaml"), body)
            .await
            .error(StatusCode::BAD_REQUEST, "malformed_body");
        let message = error["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("nesting deeper than 16 levels"),
            "{path}: {message}"
        );
    }
    // JSON: the same bound, the same words.
    let error = fx
        .post(
            "/api/v1/jobs/provision",
            Some("application/json"),
            "[".repeat(100_000),
        )
        .await
        .error(StatusCode::BAD_REQUEST, "malformed_body");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("nesting deeper than 16 levels"),
        "{message}"
    );
}

#[tokio::test]
async fn yaml_bodies_over_the_yaml_bound_are_413_and_json_is_not_bound_by_it() {
    let fx = fixture().await;
    // A plain, well-formed YAML list of 100 KB: over the YAML bound, under the request limit.
    let yaml = "- {name: x, size: 10}\n".repeat(100_000 / 22);
    for path in ["/api/v1/jobs/provision", "/api/v1/vms/create"] {
        let error = fx
            .post(path, Some("application/yaml"), yaml.clone())
            .await
            .error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
        let message = error["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("a YAML document may have at most 64 KiB")
                && message.contains("send it as JSON"),
            "{path}: {message}"
        );
    }
    // The same size as JSON is read (and refused for its fields, not its size).
    let json = format!("{{\"vm_name\": \"{}\"}}", "x".repeat(100_000));
    let error = fx
        .post("/api/v1/vms/create", Some("application/json"), json)
        .await
        .error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field");
    assert!(
        !error["message"]
            .as_str()
            .unwrap_or_default()
            .contains("YAML"),
        "{error}"
    );
}

// ---------------------------------------------------------------------------------------------
// Delete

#[tokio::test]
async fn delete_by_id_or_by_name_and_host() {
    let fx = fixture().await;
    let job = accepted(
        &fx.post_json("/api/v1/vms/delete", &json!({"vm_id": id(DB).to_string()}))
            .await,
    );
    let done = fx.wait_job(&job).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["type"], "delete");
    assert!(fx.hv01.calls().contains(&format!("delete_vm {}", id(DB))));
    fx.get(&format!("/api/v1/vms/{}", id(DB)))
        .await
        .error(StatusCode::NOT_FOUND, "not_found");

    let job = accepted(
        &fx.post_json(
            "/api/v1/vms/delete",
            &json!({"vm_name": "test-01", "hyperv_host": "HV02"}),
        )
        .await,
    );
    let done = fx.wait_job(&job).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["vm_id"], id(TEST).to_string());
    assert!(fx.hv02.calls().contains(&format!("delete_vm {}", id(TEST))));
}

#[tokio::test]
async fn delete_of_a_running_vm_needs_force() {
    let fx = fixture().await;
    let error = fx
        .post_json("/api/v1/vms/delete", &json!({"vm_id": id(WEB).to_string()}))
        .await
        .error(StatusCode::CONFLICT, "invalid_state");
    assert!(
        error["message"].as_str().unwrap().contains("Running"),
        "{error}"
    );
    assert_eq!(fx.job_count(), 0);
    let job = accepted(
        &fx.post_json(
            "/api/v1/vms/delete",
            &json!({"vm_id": id(WEB).to_string(), "force": true}),
        )
        .await,
    );
    let done = fx.wait_job(&job).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["parameters"]["force"], true);
    let calls = fx.hv01.calls();
    assert_eq!(
        calls,
        [
            format!("power {} turn_off", id(WEB)),
            format!("delete_vm {}", id(WEB))
        ]
    );
}

#[tokio::test]
async fn delete_of_unknown_or_unnamed_vms_is_refused() {
    let fx = fixture().await;
    fx.post_json(
        "/api/v1/vms/delete",
        &json!({"vm_id": id(0x999).to_string()}),
    )
    .await
    .error(StatusCode::NOT_FOUND, "not_found");
    fx.post_json(
        "/api/v1/vms/delete",
        &json!({"vm_name": "ghost", "hyperv_host": "hv01"}),
    )
    .await
    .error(StatusCode::NOT_FOUND, "not_found");
    let error = fx
        .post_json("/api/v1/vms/delete", &json!({"force": true}))
        .await
        .error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field");
    assert_eq!(error["field"], "vm_id");
    let error = fx
        .post_json("/api/v1/vms/delete", &json!({"vm_name": "db-01"}))
        .await
        .error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field");
    assert_eq!(error["field"], "hyperv_host");
    fx.post("/api/v1/vms/delete", Some("application/json"), "{")
        .await
        .error(StatusCode::BAD_REQUEST, "malformed_body");
    assert_eq!(fx.job_count(), 0);
    assert!(fx.hv01.calls().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Power actions

#[tokio::test]
async fn an_allowed_action_is_accepted_and_succeeds() {
    let fx = fixture().await;
    let job = accepted(
        &fx.post(&format!("/api/v1/vms/{}/actions/start", id(DB)), None, "")
            .await,
    );
    let done = fx.wait_job(&job).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["type"], "power");
    assert_eq!(done["action"], "start");
    assert_eq!(done["vm_id"], id(DB).to_string());
    assert_eq!(done["percent"], 100);
    assert_eq!(fx.hv01.calls(), [format!("power {} start", id(DB))]);
    // The job refreshed the host before it ended.
    let vm = fx.get(&format!("/api/v1/vms/{}", id(DB))).await.json();
    assert_eq!(vm["state"], "Running");

    let job = accepted(
        &fx.post(&format!("/api/v1/vms/{}/actions/stop", id(BUILD)), None, "")
            .await,
    );
    let done = fx.wait_job(&job).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    // One name for the action: the record says what the request said.
    assert_eq!(done["action"], "stop", "{done}");
    assert_eq!(done["parameters"]["action"], "stop", "{done}");
    assert_eq!(fx.hv02.calls(), [format!("power {} turn_off", id(BUILD))]);
}

#[tokio::test]
async fn an_action_the_state_forbids_is_409_naming_the_state() {
    let fx = fixture().await;
    let error = fx
        .post(&format!("/api/v1/vms/{}/actions/start", id(WEB)), None, "")
        .await
        .error(StatusCode::CONFLICT, "invalid_state");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("Running"), "{message}");
    let error = fx
        .post(&format!("/api/v1/vms/{}/actions/resume", id(DB)), None, "")
        .await
        .error(StatusCode::CONFLICT, "invalid_state");
    assert!(
        error["message"].as_str().unwrap().contains("Off"),
        "{error}"
    );
    assert_eq!(fx.job_count(), 0);
    assert!(fx.hv01.calls().is_empty());
}

#[tokio::test]
async fn unknown_actions_and_vms_are_404() {
    let fx = fixture().await;
    let error = fx
        .post(
            &format!("/api/v1/vms/{}/actions/explode", id(WEB)),
            None,
            "",
        )
        .await
        .error(StatusCode::NOT_FOUND, "not_found");
    assert!(
        error["message"].as_str().unwrap().contains("explode"),
        "{error}"
    );
    // The wire name of turn-off is `stop`.
    fx.post(
        &format!("/api/v1/vms/{}/actions/turn_off", id(WEB)),
        None,
        "",
    )
    .await
    .error(StatusCode::NOT_FOUND, "not_found");
    fx.post(
        &format!("/api/v1/vms/{}/actions/start", id(0x999)),
        None,
        "",
    )
    .await
    .error(StatusCode::NOT_FOUND, "not_found");
    fx.post("/api/v1/vms/garbage/actions/start", None, "")
        .await
        .error(StatusCode::NOT_FOUND, "not_found");
    assert_eq!(fx.job_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_vm_with_a_job_is_busy() {
    let fx = fixture().await;
    let (gate, release) = fx.hv01.arm();
    let job = accepted(
        &fx.post(&format!("/api/v1/vms/{}/actions/pause", id(WEB)), None, "")
            .await,
    );
    gate.entered().await;
    let error = fx
        .post(
            &format!("/api/v1/vms/{}/actions/shutdown", id(WEB)),
            None,
            "",
        )
        .await
        .error(StatusCode::CONFLICT, "vm_busy");
    assert!(error["message"].as_str().unwrap().contains(&job), "{error}");
    fx.post_json(
        "/api/v1/vms/delete",
        &json!({"vm_id": id(WEB).to_string(), "force": true}),
    )
    .await
    .error(StatusCode::CONFLICT, "vm_busy");
    // Other VMs of the host are not affected.
    let other = accepted(
        &fx.post(&format!("/api/v1/vms/{}/actions/start", id(DB)), None, "")
            .await,
    );
    release.send(()).unwrap();
    assert_eq!(fx.wait_job(&job).await["status"], "succeeded");
    assert_eq!(fx.wait_job(&other).await["status"], "succeeded");
    assert_eq!(fx.job_count(), 2);
}

// ---------------------------------------------------------------------------------------------
// Jobs

#[tokio::test]
async fn the_job_list_filters_and_refuses_bad_queries() {
    let fx = fixture().await;
    let a = accepted(
        &fx.post(&format!("/api/v1/vms/{}/actions/start", id(DB)), None, "")
            .await,
    );
    fx.wait_job(&a).await;
    let b = accepted(
        &fx.post_json(
            "/api/v1/vms/delete",
            &json!({"vm_id": id(TEST).to_string()}),
        )
        .await,
    );
    fx.wait_job(&b).await;
    let c = accepted(
        &fx.post_json("/api/v1/vms/create", &create_body("new-01"))
            .await,
    );
    fx.wait_job(&c).await;

    let ids = |v: Value| -> Vec<String> {
        v["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = fx.get("/api/v1/jobs").await;
    assert_eq!(all.status, StatusCode::OK);
    assert_eq!(
        ids(all.json()),
        [c.as_str(), b.as_str(), a.as_str()],
        "newest first"
    );
    assert_eq!(
        ids(fx.get("/api/v1/jobs?status=succeeded").await.json()),
        [b.as_str(), a.as_str()]
    );
    assert_eq!(
        ids(fx.get("/api/v1/jobs?status=failed").await.json()),
        [c.as_str()]
    );
    assert_eq!(
        ids(fx.get("/api/v1/jobs?type=power").await.json()),
        [a.as_str()]
    );
    assert_eq!(
        ids(fx.get("/api/v1/jobs?type=delete").await.json()),
        [b.as_str()]
    );
    assert_eq!(
        ids(fx.get("/api/v1/jobs?host=HV01").await.json()),
        [c.as_str(), a.as_str()]
    );
    assert_eq!(
        ids(fx
            .get(&format!("/api/v1/jobs?vm_id={}", id(TEST)))
            .await
            .json()),
        [b.as_str()]
    );
    assert_eq!(
        ids(fx.get("/api/v1/jobs?limit=1").await.json()),
        [c.as_str()]
    );
    assert!(ids(fx.get("/api/v1/jobs?status=running").await.json()).is_empty());

    let error = fx
        .get("/api/v1/jobs?status=exploded")
        .await
        .error(StatusCode::BAD_REQUEST, "bad_query");
    assert_eq!(error["field"], "status");
    let error = fx
        .get("/api/v1/jobs?type=reboot")
        .await
        .error(StatusCode::BAD_REQUEST, "bad_query");
    assert_eq!(error["field"], "type");
    let error = fx
        .get("/api/v1/jobs?limit=0")
        .await
        .error(StatusCode::BAD_REQUEST, "bad_query");
    assert_eq!(error["field"], "limit");
    fx.get("/api/v1/jobs?vm_id=nope")
        .await
        .error(StatusCode::BAD_REQUEST, "bad_query");
    fx.get("/api/v1/jobs/no-such-job")
        .await
        .error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn job_logs_as_json_and_as_an_event_stream() {
    let fx = fixture().await;
    let job = accepted(
        &fx.post(&format!("/api/v1/vms/{}/actions/start", id(DB)), None, "")
            .await,
    );
    // Followed from the start: the stream ends by itself once the job ends.
    let stream = fx.get(&format!("/api/v1/jobs/{job}/logs")).await;
    assert_eq!(stream.status, StatusCode::OK);
    assert!(
        stream
            .headers
            .get(header::CONTENT_TYPE)
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let text = stream.text();
    let events = sse_events(&text);
    assert!(events.iter().any(|(e, _)| e == "log"), "{text}");
    assert!(events.iter().any(|(e, _)| e == "status"), "{text}");
    let (last, data) = events.last().unwrap();
    assert_eq!(last, "end", "{text}");
    let end: Value = serde_json::from_str(data).unwrap();
    assert_eq!(end["id"], job);
    assert_eq!(end["status"], "succeeded");
    assert_eq!(events.iter().filter(|(e, _)| e == "end").count(), 1);
    let logged: Vec<Value> = events
        .iter()
        .filter(|(e, _)| e == "log")
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    for (i, line) in logged.iter().enumerate() {
        assert_eq!(line["seq"], i, "every line once, in order: {text}");
    }

    let answer = fx
        .get(&format!("/api/v1/jobs/{job}/logs?follow=false"))
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    let v = answer.json();
    assert_eq!(v["status"], "succeeded");
    let lines = v["lines"].as_array().unwrap();
    assert_eq!(lines.len(), logged.len());
    assert_eq!(lines[0]["seq"], 0);
    assert!(lines[0]["at"].is_string() && lines[0]["level"] == "info");
    assert_eq!(lines.last().unwrap()["message"], "job succeeded");

    // A finished job streams its lines and the end at once.
    let again = fx
        .get(&format!("/api/v1/jobs/{job}/logs?follow=true"))
        .await;
    assert_eq!(sse_events(&again.text()).last().unwrap().0, "end");

    fx.get(&format!("/api/v1/jobs/{job}/logs?follow=maybe"))
        .await
        .error(StatusCode::BAD_REQUEST, "bad_query");
    fx.get("/api/v1/jobs/no-such-job/logs")
        .await
        .error(StatusCode::NOT_FOUND, "not_found");
    fx.get("/api/v1/jobs/no-such-job/logs?follow=false")
        .await
        .error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_a_queued_job_then_refuse_a_finished_or_unknown_one() {
    let fx = fixture_with(
        QueueConfig {
            concurrency: 1,
            ..QueueConfig::default()
        },
        Readiness::ready(),
        Authenticator::disabled("test"),
    )
    .await;
    let (gate, release) = fx.hv01.arm();
    let running = accepted(
        &fx.post(&format!("/api/v1/vms/{}/actions/pause", id(WEB)), None, "")
            .await,
    );
    gate.entered().await;
    let queued = accepted(
        &fx.post(&format!("/api/v1/vms/{}/actions/start", id(TEST)), None, "")
            .await,
    );
    let answer = fx
        .post(&format!("/api/v1/jobs/{queued}/cancel"), None, "")
        .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text());
    let v = answer.json();
    assert_eq!(v["job_id"], queued);
    assert_eq!(v["cancel_requested"], true);
    let done = fx.wait_job(&queued).await;
    assert_eq!(done["status"], "cancelled", "{done}");
    assert!(
        done["error"]
            .as_str()
            .unwrap()
            .contains("nothing was changed"),
        "{done}"
    );
    assert!(fx.hv02.calls().is_empty(), "the cancelled job never ran");
    let error = fx
        .post(&format!("/api/v1/jobs/{queued}/cancel"), None, "")
        .await
        .error(StatusCode::CONFLICT, "job_finished");
    assert!(
        error["message"].as_str().unwrap().contains("cancelled"),
        "{error}"
    );
    fx.post("/api/v1/jobs/no-such-job/cancel", None, "")
        .await
        .error(StatusCode::NOT_FOUND, "not_found");

    release.send(()).unwrap();
    assert_eq!(fx.wait_job(&running).await["status"], "succeeded");
    fx.post(&format!("/api/v1/jobs/{running}/cancel"), None, "")
        .await
        .error(StatusCode::CONFLICT, "job_finished");
}

// ---------------------------------------------------------------------------------------------
// Live events

#[tokio::test]
async fn the_event_stream_starts_with_hello() {
    let fx = fixture().await;
    let response = fx
        .open(Request::get("/api/v1/events").body(Body::empty()).unwrap())
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response
            .headers()
            .get(header::CONTENT_TYPE)
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut body = response.into_body().into_data_stream();
    let first = timeout(WAIT, body.next())
        .await
        .expect("a first frame in time")
        .expect("a frame")
        .expect("readable");
    let text = String::from_utf8(first.to_vec()).unwrap();
    assert!(text.starts_with("event: hello\n"), "{text}");
    contract::check_stream_events("/api/v1/events", &text);
    let events = sse_events(&text);
    let hello: Value = serde_json::from_str(&events[0].1).unwrap();
    let generation = fx.state.inventory.snapshot().generation();
    assert_eq!(hello["generation"], generation);

    // A job's status change follows.
    let job = accepted(
        &fx.post(&format!("/api/v1/vms/{}/actions/start", id(DB)), None, "")
            .await,
    );
    let mut seen = String::new();
    timeout(WAIT, async {
        while !seen.contains("event: job") {
            let frame = body.next().await.expect("the stream goes on").unwrap();
            seen.push_str(&String::from_utf8_lossy(&frame));
        }
    })
    .await
    .expect("a job event in time");
    contract::check_stream_events("/api/v1/events", &seen);
    let job_event = sse_events(&seen)
        .into_iter()
        .find(|(e, _)| e == "job")
        .unwrap();
    let notice: Value = serde_json::from_str(&job_event.1).unwrap();
    assert_eq!(notice["id"], job);
    assert_eq!(notice["type"], "power");
    fx.wait_job(&job).await;
}

// ---------------------------------------------------------------------------------------------
// Readiness and authentication

#[tokio::test]
async fn mutations_wait_for_readiness_while_reads_work() {
    let fx = fixture_with(
        QueueConfig::default(),
        Readiness::not_ready("loading the first inventory"),
        Authenticator::disabled("test"),
    )
    .await;
    let error = fx
        .post_json("/api/v1/vms/create", &create_body("new-01"))
        .await
        .error(StatusCode::SERVICE_UNAVAILABLE, "not_ready");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("loading the first inventory"),
        "{error}"
    );
    fx.post_json(
        "/api/v1/jobs/provision",
        &json!({"schema_version": 1, "target_host": "hv01", "values": {}}),
    )
    .await
    .error(StatusCode::SERVICE_UNAVAILABLE, "not_ready");
    fx.post_json("/api/v1/vms/delete", &json!({"vm_id": id(DB).to_string()}))
        .await
        .error(StatusCode::SERVICE_UNAVAILABLE, "not_ready");
    fx.post(&format!("/api/v1/vms/{}/actions/start", id(DB)), None, "")
        .await
        .error(StatusCode::SERVICE_UNAVAILABLE, "not_ready");
    assert_eq!(fx.job_count(), 0);

    assert_eq!(fx.vms("").await.len(), 5);
    assert_eq!(fx.get("/api/v1/hosts").await.status, StatusCode::OK);
    assert_eq!(fx.get("/api/v1/jobs").await.status, StatusCode::OK);
    let status = fx.get("/api/v1/status").await.json();
    assert_eq!(status["ready"], false);
    assert_eq!(status["reason"], "loading the first inventory");

    fx.state.readiness.set_ready();
    let job = accepted(
        &fx.post(&format!("/api/v1/vms/{}/actions/start", id(DB)), None, "")
            .await,
    );
    fx.wait_job(&job).await;
}

#[tokio::test]
async fn without_a_token_the_api_answers_401_but_probes_work() {
    let validator = Validator::new(
        OidcConfig::new("http://127.0.0.1:1", "aetherv", RoleNames::default()),
        Arc::new(ReqwestFetcher::new().unwrap()),
    );
    let fx = fixture_with(
        QueueConfig::default(),
        Readiness::ready(),
        Authenticator::oidc(Arc::new(validator), None),
    )
    .await;
    for answer in [
        fx.get("/api/v1/vms").await,
        fx.get("/api/v1/me").await,
        fx.post(&format!("/api/v1/vms/{}/actions/start", id(DB)), None, "")
            .await,
    ] {
        answer.error(StatusCode::UNAUTHORIZED, "unauthenticated");
        let challenge = answer.headers.get(header::WWW_AUTHENTICATE).unwrap();
        assert!(challenge.to_str().unwrap().starts_with("Bearer"));
    }
    assert_eq!(fx.job_count(), 0);
    assert_eq!(fx.get("/healthz").await.status, StatusCode::OK);
    assert_eq!(fx.get("/readyz").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_status_counts_queued_and_running_jobs() {
    let fx = fixture_with(
        QueueConfig {
            concurrency: 1,
            ..QueueConfig::default()
        },
        Readiness::ready(),
        Authenticator::disabled("test"),
    )
    .await;
    let (gate, release) = fx.hv01.arm();
    let running = accepted(
        &fx.post(&format!("/api/v1/vms/{}/actions/start", id(DB)), None, "")
            .await,
    );
    gate.entered().await;
    let queued = accepted(
        &fx.post(&format!("/api/v1/vms/{}/actions/start", id(TEST)), None, "")
            .await,
    );
    let v = fx.get("/api/v1/status").await.json();
    assert_eq!(
        (v["jobs_running"].as_u64(), v["jobs_queued"].as_u64()),
        (Some(1), Some(1))
    );
    let listed = fx.get("/api/v1/jobs?status=queued").await.json();
    assert_eq!(listed["jobs"][0]["id"], queued);
    release.send(()).unwrap();
    assert_eq!(fx.wait_job(&running).await["status"], "succeeded");
    assert_eq!(fx.wait_job(&queued).await["status"], "succeeded");
    let v = fx.get("/api/v1/status").await.json();
    assert_eq!(
        (v["jobs_running"].as_u64(), v["jobs_queued"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(
        fx.state.jobs.get(&queued).unwrap().status,
        JobStatus::Succeeded
    );
}

#[tokio::test]
async fn cross_site_browser_requests_are_refused() {
    let fx = fixture().await;
    let uri = format!("/api/v1/vms/{}/actions/pause", id(WEB));
    for (name, value) in [
        ("origin", "https://evil.example"),
        ("origin", "null"),
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-site", "same-site"),
    ] {
        let answer = fx
            .send(
                Request::post(&uri)
                    .header(header::HOST, "aetherv.example:8000")
                    .header(name, value)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{name}: {value}");
        assert!(answer.text().contains("cross-site"), "{}", answer.text());
    }
    assert_eq!(fx.job_count(), 0, "nothing was queued");
    // The UI's own requests (same origin) and non-browser clients (no headers) pass.
    let answer = fx
        .send(
            Request::post(&uri)
                .header(header::HOST, "aetherv.example:8000")
                .header("origin", "http://aetherv.example:8000")
                .header("sec-fetch-site", "same-origin")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    accepted(&answer);
    // Reads are never refused.
    let read = fx
        .send(
            Request::get("/api/v1/hosts")
                .header("sec-fetch-site", "cross-site")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(read.status, StatusCode::OK);
}

#[tokio::test]
async fn framework_rejections_answer_in_the_error_shape() {
    let fx = fixture().await;
    let huge = vec![b' '; 300 * 1024];
    let answer = fx
        .post("/api/v1/vms/create", Some("application/json"), huge)
        .await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.json()["error"]["code"], "payload_too_large");
    let answer = fx
        .post(
            "/api/v1/vms/create",
            Some("text/plain"),
            create_body("x1").to_string(),
        )
        .await;
    assert_eq!(answer.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(answer.json()["error"]["code"], "unsupported_media_type");
    let answer = fx.post("/api/v1/vms/%FF/actions/start", None, "").await;
    assert!(answer.status.is_client_error(), "{}", answer.status);
    assert!(answer.json()["error"]["message"].is_string());
}

// ---------------------------------------------------------------------------------------------
// Orphans (VMs marked by a provisioning job this server is not running) and placement

const ORPHAN: u128 = 0x203; // hv02, Running, marked by a job this server never ran

/// Adds a VM to hv02 whose notes mark job `job`, and refreshes hv02.
async fn add_marked_vm(fx: &Fixture, job: &str) {
    fx.hv02.vms.lock().unwrap().push(vm(
        ORPHAN,
        "half-made-01",
        VmState::Running,
        &format!("aetherv-job:{job}"),
        &[],
    ));
    timeout(WAIT, fx.state.inventory.refresh_host("hv02"))
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_marked_by_an_unknown_job_is_orphaned_and_an_admin_removes_it() {
    let fx = fixture().await;
    add_marked_vm(&fx, "7d3c2d4e-0f8e-4a59-9a43-1c7bb1c6a001").await;
    let orphan = id(ORPHAN).to_string();

    // The list, the VM and the metric say so; other VMs are not orphans.
    let list = fx.get("/api/v1/vms").await.json();
    for vm in list["vms"].as_array().unwrap() {
        assert_eq!(vm["orphaned"], vm["id"] == orphan.as_str(), "{vm}");
    }
    let detail = fx.get(&format!("/api/v1/vms/{orphan}")).await.json();
    assert_eq!(detail["orphaned"], true);
    let host = fx.get("/api/v1/hosts/hv02").await.json();
    assert!(
        host["vms"]
            .as_array()
            .unwrap()
            .iter()
            .any(|vm| vm["id"] == orphan.as_str() && vm["orphaned"] == true),
        "{host}"
    );
    let mut counts =
        aetherv_server::orphan::count_by_host(&fx.state.inventory.snapshot(), &fx.state.jobs);
    assert_eq!(counts.remove("hv02"), Some(1));
    assert_eq!(counts.remove("hv01"), Some(0));

    // A VM that is not orphaned is refused; unknown VMs are 404.
    fx.post_json(
        &format!("/api/v1/vms/{}/orphan/remove", id(WEB)),
        &json!({}),
    )
    .await
    .error(StatusCode::CONFLICT, "not_orphaned");
    fx.post_json(
        &format!("/api/v1/vms/{}/orphan/remove", id(0x999)),
        &json!({}),
    )
    .await
    .error(StatusCode::NOT_FOUND, "not_found");

    // Removal is a delete job, forced and with disks; afterwards the VM is gone.
    let answer = fx
        .post_json(&format!("/api/v1/vms/{orphan}/orphan/remove"), &json!({}))
        .await;
    let job = accepted(&answer);
    let done = fx.wait_job(&job).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["type"], "delete");
    assert_eq!(done["parameters"]["delete_disks"], true);
    assert_eq!(
        done["parameters"]["orphan_of_job"],
        "7d3c2d4e-0f8e-4a59-9a43-1c7bb1c6a001"
    );
    let calls = fx.hv02.calls();
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with(&format!("power {orphan} "))),
        "the running orphan is turned off first: {calls:?}"
    );
    assert!(calls.contains(&format!("delete_vm {orphan}")), "{calls:?}");
    fx.get(&format!("/api/v1/vms/{orphan}"))
        .await
        .error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_adopts_an_orphan_which_keeps_the_provisioned_marker() {
    let fx = fixture().await;
    let marked = "7d3c2d4e-0f8e-4a59-9a43-1c7bb1c6a002";
    add_marked_vm(&fx, marked).await;
    let orphan = id(ORPHAN).to_string();
    fx.post_json(&format!("/api/v1/vms/{}/orphan/adopt", id(WEB)), &json!({}))
        .await
        .error(StatusCode::CONFLICT, "not_orphaned");

    let answer = fx
        .post_json(&format!("/api/v1/vms/{orphan}/orphan/adopt"), &json!({}))
        .await;
    let job = accepted(&answer);
    let done = fx.wait_job(&job).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["type"], "adopt");
    assert_eq!(done["parameters"]["orphan_of_job"], marked);
    assert_eq!(done["percent"], 100);
    // The VM stays, with the provisioned marker of the same job, and is no longer orphaned.
    let calls = fx.hv02.calls();
    assert!(
        calls.contains(&format!(
            "set_vm_notes {orphan} aetherv-provisioned:{marked}"
        )),
        "{calls:?}"
    );
    assert!(
        !calls.iter().any(|c| c.starts_with("delete_vm")),
        "{calls:?}"
    );
    let detail = fx.get(&format!("/api/v1/vms/{orphan}")).await.json();
    assert_eq!(detail["orphaned"], false, "{detail}");
    assert_eq!(detail["notes"], format!("aetherv-provisioned:{marked}"));
    // Adopting again is refused: it is not an orphan any more.
    fx.post_json(&format!("/api/v1/vms/{orphan}/orphan/adopt"), &json!({}))
        .await
        .error(StatusCode::CONFLICT, "not_orphaned");
}

#[tokio::test]
async fn a_vm_left_by_a_failed_job_of_this_server_is_orphaned() {
    let fx = fixture().await;
    // A job that fails at once (the mock host's copy fails) is known to the queue. (A VM
    // marked by a job that still runs is not orphaned: tests/orphan_restart.rs.)
    let job = accepted(
        &fx.post_json("/api/v1/vms/create", &create_body("new-01"))
            .await,
    );
    let done = fx.wait_job(&job).await;
    assert_eq!(done["status"], "failed");
    // A failed job's marked VM was left behind: orphaned.
    add_marked_vm(&fx, &job).await;
    let detail = fx.get(&format!("/api/v1/vms/{}", id(ORPHAN))).await.json();
    assert_eq!(detail["orphaned"], true, "{detail}");
}

#[tokio::test]
async fn target_cluster_places_the_vm_on_the_member_with_most_memory() {
    let fx = fixture().await;
    let mut body = create_body("placed-01");
    body.as_object_mut().unwrap().remove("hyperv_host");
    body["target_cluster"] = json!("CLU01");
    let job = accepted(&fx.post_json("/api/v1/vms/create", &body).await);
    let record = fx.get(&format!("/api/v1/jobs/{job}")).await.json();
    assert_eq!(record["target_host"], "hv01", "{record}");
    assert_eq!(record["parameters"]["target_host"], "hv01");
    assert_eq!(record["parameters"]["target_cluster"], "CLU01");
    assert_eq!(record["parameters"]["placement"]["host"], "hv01");
    assert_eq!(
        record["parameters"]["placement"]["memory_available_bytes"],
        48_u64 << 30
    );
    // A VM placed in a cluster is a cluster role.
    assert_eq!(record["parameters"]["values"]["vm_clustered"], true);
    let done = fx.wait_job(&job).await;
    assert!(
        fx.hv01.calls().contains(&"copy_image placed-01".to_owned()),
        "{done}"
    );

    // The job schema takes target_cluster at the top level.
    let doc = json!({
        "schema_version": 1,
        "target_cluster": "clu01",
        "values": {
            "vm_name": "placed-02", "image_name": "Ubuntu 24.04", "gb_ram": 2,
            "cpu_cores": 1, "guest_la_uid": "admin", "guest_la_pw": SECRET,
            "vm_clustered": "Yes",
        },
    });
    let job = accepted(&fx.post_json("/api/v1/jobs/provision", &doc).await);
    assert_eq!(
        fx.get(&format!("/api/v1/jobs/{job}")).await.json()["target_host"],
        "hv01"
    );
}

#[tokio::test]
async fn placement_refuses_unknown_clusters_and_clusters_without_room() {
    let fx = fixture().await;
    let mut body = create_body("placed-01");
    body.as_object_mut().unwrap().remove("hyperv_host");
    body["target_cluster"] = json!("nowhere");
    let error = fx
        .post_json("/api/v1/vms/create", &body)
        .await
        .error(StatusCode::NOT_FOUND, "not_found");
    assert_eq!(error["field"], "target_cluster");
    assert!(
        error["message"].as_str().unwrap().contains("clu01"),
        "{error}"
    );

    body["target_cluster"] = json!("clu01");
    body["gb_ram"] = json!(100);
    let error = fx
        .post_json("/api/v1/vms/create", &body)
        .await
        .error(StatusCode::CONFLICT, "no_eligible_host");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("100 GiB"), "{message}");
    assert!(
        message.contains("the most memory available on a connected host is 48.0 GiB on hv01"),
        "{message}"
    );

    // An image no member has.
    body["gb_ram"] = json!(2);
    body["image_name"] = json!("Ubuntu 99.04");
    let error = fx
        .post_json("/api/v1/vms/create", &body)
        .await
        .error(StatusCode::CONFLICT, "no_eligible_host");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("hv01: golden image missing"),
        "{error}"
    );
    assert_eq!(fx.job_count(), 0);
}

#[tokio::test]
async fn the_target_fields_are_exclusive_and_vm_clustered_takes_yes_and_no() {
    let fx = fixture().await;
    // Neither host nor cluster.
    let mut body = create_body("new-01");
    body.as_object_mut().unwrap().remove("hyperv_host");
    let error = fx
        .post_json("/api/v1/vms/create", &body)
        .await
        .error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field");
    assert_eq!(error["field"], "hyperv_host");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("target_cluster"),
        "{error}"
    );
    // Both.
    let mut body = create_body("new-01");
    body["target_cluster"] = json!("clu01");
    let error = fx
        .post_json("/api/v1/vms/create", &body)
        .await
        .error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field");
    let fields: Vec<&str> = error["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["hyperv_host", "target_cluster"]);
    // A cluster with vm_clustered false.
    let mut body = create_body("new-01");
    body.as_object_mut().unwrap().remove("hyperv_host");
    body["target_cluster"] = json!("clu01");
    body["vm_clustered"] = json!("no");
    let error = fx
        .post_json("/api/v1/vms/create", &body)
        .await
        .error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field");
    assert_eq!(error["field"], "vm_clustered");
    // "Yes"/"No" in any case, with a host.
    for (given, expected) in [("Yes", true), ("NO", false), ("true", true)] {
        let mut body = create_body(&format!("yn-{}", given.to_ascii_lowercase()));
        body["vm_clustered"] = json!(given);
        let job = accepted(&fx.post_json("/api/v1/vms/create", &body).await);
        let record = fx.get(&format!("/api/v1/jobs/{job}")).await.json();
        assert_eq!(
            record["parameters"]["values"]["vm_clustered"], expected,
            "{given}"
        );
        fx.wait_job(&job).await;
    }
    let mut body = create_body("new-01");
    body["vm_clustered"] = json!("maybe");
    let error = fx
        .post_json("/api/v1/vms/create", &body)
        .await
        .error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field");
    assert_eq!(error["field"], "vm_clustered");
}
