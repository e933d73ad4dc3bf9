//! Paged lists and scalable events through `aetherv_server::api::router` (no port): cursor
//! walks of `GET /api/v1/vms` and `GET /api/v1/jobs`, sorts (natural names), fields, bounds,
//! and coalesced, scoped `GET /api/v1/events`, over simple in-memory hosts and a real
//! inventory refresher.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aetherv_hyperv::ops::{
    HostCall, HostFacts, HostReply, HyperVHost, Inventory, PowerAction, PowerOutcome, Vm, VmId,
    VmState,
};
use aetherv_hyperv::psjson::Timestamp;
use aetherv_inventory::{CancellationToken, RefreshConfig, Refresher};
use aetherv_server::api::router;
use aetherv_server::api::views::ServerMode;
use aetherv_server::auth::Authenticator;
use aetherv_server::jobs::{HostMap, JobQueue, NoObserver, QueueConfig};
use aetherv_server::metrics::Metrics;
use aetherv_server::state::{AppState, Readiness, ServerInfo};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::time::timeout;
use tower::ServiceExt;

mod support;
use support::contract::{self, sse_events};

const WAIT: Duration = Duration::from_secs(10);

fn id(n: u128) -> VmId {
    VmId(uuid::Uuid::from_u128(n))
}

fn vm(n: u128, name: &str, state: VmState, memory_gib: u64) -> Vm {
    serde_json::from_value(json!({
        "id": id(n).to_string(),
        "name": name,
        "state": state.code(),
        "processor_count": 2,
        "memory_startup_bytes": memory_gib << 30,
        "uptime_seconds": if state == VmState::Running { 100 } else { 0 },
    }))
    .unwrap()
}

fn facts(name: &str) -> HostFacts {
    serde_json::from_value(json!({
        "name": name,
        "fqdn": format!("{name}.lab.example"),
        "logical_processors": 16,
        "memory_total_bytes": 68_719_476_736_u64,
        "memory_available_bytes": 34_359_738_368_u64,
        "vm_path": "C:\\VMs",
    }))
    .unwrap()
}

/// A host whose VM list the test edits; power actions change a VM's state.
#[derive(Clone)]
struct Host {
    name: String,
    vms: Arc<Mutex<Vec<Vm>>>,
}

#[async_trait::async_trait]
impl HyperVHost for Host {
    fn host_name(&self) -> &str {
        &self.name
    }

    async fn call(&self, call: HostCall) -> aetherv_hyperv::Result<HostReply> {
        let unknown = |id: VmId| aetherv_hyperv::Error::UnknownVm {
            host: self.name.clone(),
            vm: id.to_string(),
        };
        match call {
            HostCall::Facts | HostCall::FactsInRoots(_) => {
                Ok(HostReply::Facts(Box::new(facts(&self.name))))
            }
            HostCall::Inventory | HostCall::InventorySince(_) => {
                Ok(HostReply::Inventory(Inventory {
                    host: self.name.clone(),
                    collected_at: Timestamp::from_unix_millis(1_700_000_000_000),
                    vms: self.vms.lock().unwrap().clone(),
                    digest: None,
                    unchanged: false,
                }))
            }
            HostCall::Vm(id) => self
                .vms
                .lock()
                .unwrap()
                .iter()
                .find(|v| v.id == id)
                .cloned()
                .map(|vm| HostReply::Vm(Box::new(vm)))
                .ok_or_else(|| unknown(id)),
            HostCall::Power(id, action) => {
                let mut vms = self.vms.lock().unwrap();
                let vm = vms
                    .iter_mut()
                    .find(|v| v.id == id)
                    .ok_or_else(|| unknown(id))?;
                let previous_state = vm.state;
                vm.state = match action {
                    PowerAction::TurnOff | PowerAction::Shutdown => VmState::Off,
                    PowerAction::Save => VmState::Saved,
                    PowerAction::Pause => VmState::Paused,
                    _ => VmState::Running,
                };
                Ok(HostReply::Power(PowerOutcome {
                    id,
                    name: vm.name.clone(),
                    previous_state,
                    state: vm.state,
                }))
            }
            other => panic!("the paging tests never ask for {other:?}"),
        }
    }
}

struct Fixture {
    app: Router,
    state: AppState,
    hosts: Vec<Host>,
    _refresher: Refresher,
}

/// Three hosts, `per_host` VMs each, named `app-<n>` with n from 1 (numbers interleaved
/// across hosts so that natural and plain text order differ), varied memory and state.
async fn fixture(per_host: u128) -> Fixture {
    let mut hosts = Vec::new();
    let mut map = HostMap::new();
    for h in 0..3_u128 {
        let vms = (0..per_host)
            .map(|i| {
                let n = i * 3 + h + 1;
                let state = if n % 2 == 0 {
                    VmState::Running
                } else {
                    VmState::Off
                };
                let name = if n % 5 == 0 {
                    format!("App-{n}")
                } else {
                    format!("app-{n}")
                };
                vm(0x1000 + n, &name, state, u64::try_from(n % 4).unwrap())
            })
            .collect();
        let host = Host {
            name: format!("hv{:02}", h + 1),
            vms: Arc::new(Mutex::new(vms)),
        };
        map.insert(
            host.name.clone(),
            Arc::new(host.clone()) as Arc<dyn HyperVHost>,
        );
        hosts.push(host);
    }
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
        QueueConfig::default(),
        Arc::new(map),
        Some(handle.clone()),
        Arc::new(NoObserver),
    );
    let state = AppState {
        inventory: handle,
        jobs,
        auth: Arc::new(Authenticator::disabled("test")),
        metrics: Arc::new(Metrics::new()),
        readiness: Arc::new(Readiness::ready()),
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
        hosts,
        _refresher: refresher,
    }
}

impl Fixture {
    async fn get(&self, uri: &str) -> (StatusCode, Value) {
        let request = Request::get(uri).body(Body::empty()).unwrap();
        let path = request.uri().path().to_owned();
        let response = timeout(WAIT, self.app.clone().oneshot(request))
            .await
            .unwrap()
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), 64 << 20)
            .await
            .unwrap();
        contract::check(&axum::http::Method::GET, &path, status, &headers, &body);
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    async fn ok(&self, uri: &str) -> Value {
        let (status, body) = self.get(uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
        body
    }

    /// Every page of `query` with `limit`, following `next_cursor`.
    async fn walk(&self, query: &str, limit: usize) -> Vec<Value> {
        self.walk_from(query, limit, None).await
    }

    /// Like [`Self::walk`], starting at `cursor` (the `next_cursor` of an earlier page).
    async fn walk_from(&self, query: &str, limit: usize, start: Option<String>) -> Vec<Value> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = start;
        for _ in 0..1000 {
            let mut uri = format!("/api/v1/vms?limit={limit}{query}");
            if let Some(c) = &cursor {
                uri.push_str(&format!("&cursor={c}"));
            }
            let page = self.ok(&uri).await;
            let vms = page["vms"].as_array().unwrap();
            assert!(vms.len() <= limit);
            all.extend(vms.iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return all,
            }
        }
        panic!("the walk does not end");
    }

    async fn refresh_all(&self) {
        let results = timeout(WAIT, self.state.inventory.refresh_all())
            .await
            .unwrap();
        assert!(results.iter().all(|(_, r)| r.is_ok()));
    }
}

fn names(vms: &[Value]) -> Vec<String> {
    vms.iter()
        .map(|v| v["name"].as_str().unwrap().to_owned())
        .collect()
}

/// The number in `app-<n>`.
fn number(name: &str) -> u64 {
    name.rsplit('-').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_cursor_walk_sees_every_vm_once_in_natural_name_order() {
    let fx = fixture(40).await;
    let first = fx.ok("/api/v1/vms").await;
    assert_eq!(first["total"], 120);
    assert_eq!(
        first["vms"].as_array().unwrap().len(),
        100,
        "100 by default"
    );
    assert!(first["next_cursor"].is_string());
    assert_eq!(
        first["generation"],
        fx.state.inventory.snapshot().generation()
    );

    let all = fx.walk("", 7).await;
    let ids: Vec<&str> = all.iter().map(|v| v["id"].as_str().unwrap()).collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(ids.len(), 120, "every VM once");
    assert_eq!(unique.len(), 120, "no VM twice");
    let numbers: Vec<u64> = names(&all).iter().map(|n| number(n)).collect();
    let mut sorted = numbers.clone();
    sorted.sort_unstable();
    assert_eq!(
        numbers, sorted,
        "app-2 before app-10, App-5 among them: {numbers:?}"
    );

    let descending = fx.walk("&sort=-name", 11).await;
    let mut reversed = names(&all);
    reversed.reverse();
    assert_eq!(names(&descending), reversed);
}

#[tokio::test]
async fn numeric_and_host_sorts_walk_in_order_with_ties_by_name() {
    let fx = fixture(20).await;
    let by_memory = fx.walk("&sort=memory_startup_bytes", 9).await;
    assert_eq!(by_memory.len(), 60);
    let keys: Vec<(u64, u64)> = by_memory
        .iter()
        .map(|v| {
            (
                v["memory_startup_bytes"].as_u64().unwrap(),
                number(v["name"].as_str().unwrap()),
            )
        })
        .collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    assert_eq!(keys, sorted);

    let by_host = fx.walk("&sort=-host", 13).await;
    let hosts: Vec<&str> = by_host
        .iter()
        .map(|v| v["host"].as_str().unwrap())
        .collect();
    assert_eq!(hosts.first(), Some(&"hv03"));
    assert_eq!(hosts.last(), Some(&"hv01"));
    assert_eq!(
        by_host
            .iter()
            .map(|v| v["id"].clone())
            .collect::<HashSet<_>>()
            .len(),
        60
    );
}

#[tokio::test]
async fn filters_narrow_the_walk_and_total() {
    let fx = fixture(20).await;
    let running = fx.walk("&state=Running&host=HV02", 4).await;
    let expected = fx.state.inventory.snapshot();
    let want: BTreeSet<String> = expected
        .vms_on("hv02")
        .filter(|v| v.vm.state == VmState::Running)
        .map(|v| v.vm.id.to_string())
        .collect();
    let got: BTreeSet<String> = running
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got, want);
    let page = fx.ok("/api/v1/vms?state=Running&host=hv02&limit=2").await;
    assert_eq!(page["total"], want.len());
}

#[tokio::test]
async fn a_cursor_stays_valid_while_the_inventory_changes() {
    let fx = fixture(10).await;
    let page = fx.ok("/api/v1/vms?limit=10").await;
    let seen: Vec<String> = names(page["vms"].as_array().unwrap());
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    // One VM after the cursor goes, one appears; the refresh makes a new generation.
    let gone = {
        let mut vms = fx.hosts[2].vms.lock().unwrap();
        let at = vms
            .iter()
            .position(|v| v.name.eq_ignore_ascii_case("app-30"))
            .unwrap();
        vms.remove(at).name
    };
    fx.hosts[0]
        .vms
        .lock()
        .unwrap()
        .push(vm(0x9999, "app-99", VmState::Off, 1));
    fx.refresh_all().await;
    let rest = fx.walk_from("", 10, Some(cursor)).await;
    let mut all = seen.clone();
    all.extend(names(&rest));
    assert!(!all.contains(&gone));
    assert!(all.contains(&"app-99".to_owned()));
    assert_eq!(all.len(), 30, "every VM present throughout, once: {all:?}");
    assert_eq!(all.iter().collect::<HashSet<_>>().len(), 30);
}

#[tokio::test]
async fn fields_choose_the_columns_and_id_always_comes() {
    let fx = fixture(5).await;
    let page = fx.ok("/api/v1/vms?fields=name,state&limit=3").await;
    for vm in page["vms"].as_array().unwrap() {
        let keys: BTreeSet<&str> = vm.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, BTreeSet::from(["id", "name", "state"]));
    }
}

#[tokio::test]
async fn limit_all_is_the_whole_list_with_an_etag() {
    let fx = fixture(40).await;
    let request = Request::get("/api/v1/vms?limit=all")
        .body(Body::empty())
        .unwrap();
    let response = fx.app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().get("etag").is_some());
    let body: Value = serde_json::from_slice(
        &axum::body::to_bytes(response.into_body(), 64 << 20)
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(body["vms"].as_array().unwrap().len(), 120);
    assert_eq!(body["total"], 120);
    assert!(body["next_cursor"].is_null());
    let filtered = fx
        .ok("/api/v1/vms?limit=all&sort=-memory_startup_bytes&host=hv01")
        .await;
    assert_eq!(filtered["vms"].as_array().unwrap().len(), 40);
}

#[tokio::test]
async fn unusable_paging_parameters_are_400_naming_the_field() {
    let fx = fixture(5).await;
    let page = fx.ok("/api/v1/vms?limit=2").await;
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("sort=colour", "sort"),
        ("sort=-", "sort"),
        ("fields=name,colour", "fields"),
        ("cursor=not-a-cursor", "cursor"),
        (&format!("cursor={cursor}&sort=-name") as &str, "cursor"),
        (&format!("cursor={cursor}&host=hv01") as &str, "cursor"),
    ] {
        let (status, body) = fx.get(&format!("/api/v1/vms?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["error"]["code"], "bad_query", "{query}");
        assert_eq!(body["error"]["field"], field, "{query}: {body}");
    }
    assert_eq!(
        fx.ok("/api/v1/vms?limit=1000").await["vms"]
            .as_array()
            .unwrap()
            .len(),
        15
    );
}

#[tokio::test]
async fn the_job_list_pages_newest_first_with_a_cursor() {
    let fx = fixture(3).await;
    let snapshot = fx.state.inventory.snapshot();
    let targets: Vec<VmId> = snapshot.vms().map(|v| v.vm.id).collect();
    let mut submitted = Vec::new();
    for id in &targets {
        let request = Request::post(format!("/api/v1/vms/{id}/actions/save"))
            .body(Body::empty())
            .unwrap();
        let response = fx.app.clone().oneshot(request).await.unwrap();
        if response.status() == StatusCode::ACCEPTED {
            let body: Value = serde_json::from_slice(
                &axum::body::to_bytes(response.into_body(), 1 << 20)
                    .await
                    .unwrap(),
            )
            .unwrap();
            submitted.push(body["job_id"].as_str().unwrap().to_owned());
        }
    }
    assert!(submitted.len() >= 4, "{submitted:?}");
    let mut walked = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = fx
            .ok(&format!("/api/v1/jobs?limit=2&type=power{cursor}"))
            .await;
        assert_eq!(page["total"], submitted.len());
        walked.extend(
            page["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|j| j["id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    let mut newest_first = submitted.clone();
    newest_first.reverse();
    assert_eq!(walked, newest_first);
    // Bounds and foreign cursors.
    let first = fx.ok("/api/v1/jobs?limit=1").await;
    let c = first["next_cursor"].as_str().unwrap().to_owned();
    for (query, field) in [
        ("limit=0".to_owned(), "limit"),
        ("limit=5000".to_owned(), "limit"),
        ("cursor=%21%21".to_owned(), "cursor"),
        (format!("cursor={c}&status=failed"), "cursor"),
    ] {
        let (status, body) = fx.get(&format!("/api/v1/jobs?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["error"]["field"], field, "{query}: {body}");
    }
    let all = fx.ok("/api/v1/jobs?limit=all").await;
    assert_eq!(all["jobs"].as_array().unwrap().len(), submitted.len());
    assert!(all["next_cursor"].is_null());
}

/// Reads events from `body` until `until` holds for the text so far or `within` passes.
async fn read_events(
    body: &mut (impl futures::Stream<Item = Result<axum::body::Bytes, axum::Error>> + Unpin),
    within: Duration,
    until: impl Fn(&str) -> bool,
) -> String {
    let mut seen = String::new();
    let _ = timeout(within, async {
        while !until(&seen) {
            match body.next().await {
                Some(Ok(frame)) => seen.push_str(&String::from_utf8_lossy(&frame)),
                _ => break,
            }
        }
    })
    .await;
    seen
}

#[tokio::test]
async fn vm_events_are_coalesced_per_vm_carry_changed_fields_and_follow_the_scope() {
    let fx = fixture(3).await;
    let watched = fx.hosts[0].vms.lock().unwrap()[0].clone();
    let other = fx.hosts[1].vms.lock().unwrap()[0].clone();
    let open = |uri: String| {
        let app = fx.app.clone();
        async move {
            let response = app
                .oneshot(Request::get(uri).body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            response.into_body().into_data_stream()
        }
    };
    let mut one_vm = open(format!("/api/v1/events?vm_id={}", watched.id)).await;
    let mut one_host = open("/api/v1/events?host=HV02".to_owned()).await;
    let mut everything = open("/api/v1/events".to_owned()).await;
    for body in [&mut one_vm, &mut one_host, &mut everything] {
        let hello = read_events(body, WAIT, |t| t.contains("event: hello")).await;
        assert!(hello.contains("event: hello"), "{hello}");
    }

    // Two changes of the watched VM within the window, one of another host's VM.
    let set_state = |host: usize, id: VmId, state: VmState| {
        let mut vms = fx.hosts[host].vms.lock().unwrap();
        vms.iter_mut().find(|v| v.id == id).unwrap().state = state;
    };
    set_state(0, watched.id, VmState::Paused);
    fx.refresh_all().await;
    set_state(0, watched.id, VmState::Saved);
    set_state(1, other.id, VmState::Saved);
    fx.refresh_all().await;

    let text = read_events(&mut one_vm, Duration::from_secs(2), |t| {
        t.contains("event: vm_changed")
    })
    .await;
    // Anything else that window brings would be here within another window.
    let more = read_events(&mut one_vm, Duration::from_millis(600), |_| false).await;
    let all = format!("{text}{more}");
    contract::check_stream_events("/api/v1/events", &all);
    let changes: Vec<Value> = sse_events(&all)
        .into_iter()
        .filter(|(e, _)| e.starts_with("vm_"))
        .map(|(_, d)| serde_json::from_str(&d).unwrap())
        .collect();
    assert_eq!(changes.len(), 1, "one event for two changes: {all}");
    let change = &changes[0];
    assert_eq!(change["vm"]["id"], watched.id.to_string());
    assert_eq!(change["vm"]["name"], watched.name);
    assert_eq!(change["vm"]["state"], "Saved", "the net change: {change}");
    assert!(
        change["changed"]
            .as_array()
            .unwrap()
            .contains(&json!("state"))
    );
    assert!(
        change["vm"].get("processor_count").is_none(),
        "only changed fields: {change}"
    );

    let host_text = read_events(&mut one_host, Duration::from_secs(2), |t| {
        t.contains("event: vm_changed")
    })
    .await;
    let host_events: Vec<Value> = sse_events(&host_text)
        .into_iter()
        .filter(|(e, _)| e.starts_with("vm_"))
        .map(|(_, d)| serde_json::from_str(&d).unwrap())
        .collect();
    assert_eq!(host_events.len(), 1, "{host_text}");
    assert_eq!(host_events[0]["vm"]["id"], other.id.to_string());

    let every = read_events(&mut everything, Duration::from_secs(2), |t| {
        t.matches("event: vm_changed").count() >= 2
    })
    .await;
    assert_eq!(every.matches("event: vm_changed").count(), 2, "{every}");
}

#[tokio::test]
async fn a_bad_event_scope_is_400_naming_the_field() {
    let fx = fixture(1).await;
    for (query, field) in [("vm_id=nope", "vm_id"), ("colour=red", "query")] {
        let (status, body) = fx.get(&format!("/api/v1/events?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(body["error"]["field"], field, "{body}");
    }
}
