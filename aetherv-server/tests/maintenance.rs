//! Host maintenance against the whole server in demo mode: drains (live migration to the
//! hosts placement chooses, and a failover cluster's own node drain), resume with failback,
//! the host state kept on the host, the Alertmanager silence against a real Alertmanager
//! (Debian's `prometheus-alertmanager`, started here on a free loopback port), signed webhooks
//! checked by a receiver that verifies every signature, the audit of who asked, and a host lost
//! during a drain.
//!
//! The bounds below only keep a broken build from hanging the test run; nothing asserts how
//! fast anything was.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use aetherv_server::config::Config;
use aetherv_server::startup::Server;
use aetherv_sim::model::{NewVm, PowerAction};
use axum::Router;
use axum::http::{HeaderMap, Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

mod support;
use support::contract;

const BOUND: Duration = Duration::from_secs(150);
const GIB: u64 = 1 << 30;

async fn call(
    app: &Router,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    contract::call_checked(app, method, path, body).await
}

async fn wait_for<F>(what: &str, mut f: F)
where
    F: AsyncFnMut() -> bool,
{
    let deadline = Instant::now() + BOUND;
    while !f().await {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn start(extra: &[(&str, String)], hosts: usize, clusters: usize) -> Server {
    let extra: BTreeMap<String, String> = extra
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    let env = move |name: &str| match name {
        "DEMO_HOSTS" => Some(hosts.to_string()),
        "DEMO_VMS_PER_HOST" => Some("0".to_owned()),
        "DEMO_CLUSTERS" => Some(clusters.to_string()),
        "AETHERV_DEMO_PASSWORD" => Some("demo-Passw0rd".to_owned()),
        "LISTEN_ADDR" => Some("127.0.0.1:0".to_owned()),
        other => extra.get(other).cloned(),
    };
    let config = Config::from_sources(&env, Path::new("/nonexistent-aetherv-test")).unwrap();
    let server = Server::start(&config).await.unwrap();
    wait_for("readiness", async || {
        server.state().readiness.check().is_ok()
    })
    .await;
    server
}

/// Creates `count` running VMs of `memory` on `host` straight in the simulated fleet.
fn running_vms(
    server: &Server,
    host: &str,
    count: usize,
    memory: u64,
    clustered: bool,
) -> Vec<Uuid> {
    let sim = server.demo_fleet().unwrap();
    sim.with_state(|s| {
        let image = s.fleet().host(host).unwrap().images[0].name.clone();
        (0..count)
            .map(|i| {
                let mut spec = NewVm::new(format!("{host}-app{i}"), image.clone());
                spec.memory_startup_bytes = memory;
                spec.clustered = clustered;
                let id = s.create_vm(host, &spec, SystemTime::now()).unwrap();
                s.power(host, &id.to_string(), PowerAction::Start, SystemTime::now())
                    .unwrap();
                id
            })
            .collect()
    })
}

/// Where each VM is in the simulated fleet (every host it is registered on).
fn locations(server: &Server, vms: &[Uuid]) -> BTreeMap<Uuid, Vec<String>> {
    server.demo_fleet().unwrap().with_state(|s| {
        vms.iter()
            .map(|id| {
                let on: Vec<String> = s
                    .fleet()
                    .hosts
                    .iter()
                    .filter(|h| h.vms.iter().any(|v| v.id == *id))
                    .map(|h| h.name.clone())
                    .collect();
                (*id, on)
            })
            .collect()
    })
}

/// Sets `host`'s physical memory so that `free` bytes are available for VMs.
fn leave_free(server: &Server, host: &str, free: u64) {
    server.demo_fleet().unwrap().with_state(|s| {
        let h = s.fleet_mut().host_mut(host).unwrap();
        let used: u64 = h.vms.iter().map(|v| v.memory.assigned_bytes).sum();
        h.memory_total_bytes = h.memory_reserved_bytes + used + free;
    });
}

async fn refresh_all(server: &Server) {
    for host in server.state().jobs.hosts().keys() {
        server
            .state()
            .inventory
            .refresh_host_facts(host)
            .await
            .unwrap();
    }
}

async fn finished(app: &Router, job: &str) -> Value {
    let mut last = Value::Null;
    wait_for(&format!("job {job}"), async || {
        let (status, view) = call(app, Method::GET, &format!("/api/v1/jobs/{job}"), None).await;
        assert_eq!(status, StatusCode::OK, "{view}");
        let done = matches!(
            view["status"].as_str(),
            Some("succeeded" | "failed" | "cancelled")
        );
        last = view;
        done
    })
    .await;
    last
}

async fn host_state(app: &Router, host: &str) -> String {
    let (status, view) = call(app, Method::GET, &format!("/api/v1/hosts/{host}"), None).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(
        view["maintenance_state"], view["maintenance"]["state"],
        "{view}"
    );
    view["maintenance_state"].as_str().unwrap().to_owned()
}

async fn post(app: &Router, path: &str, body: Value) -> String {
    let (status, answer) = call(app, Method::POST, path, Some(body)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{path}: {answer}");
    answer["job_id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_with_five_running_vms_is_drained_by_placement_and_failed_back() {
    let server = start(&[], 3, 0).await;
    let app = server.router();
    let vms = running_vms(&server, "hv01", 5, 8 * GIB, false);
    // hv02 has room for two of them only; hv03 for all.
    leave_free(&server, "hv02", 8 * GIB * 2 + GIB);
    leave_free(&server, "hv03", 8 * GIB * 10);
    refresh_all(&server).await;

    let job = post(
        &app,
        "/api/v1/hosts/hv01/maintenance",
        json!({ "evacuate": "live", "max_parallel": 2, "reason": "BIOS update", "ticket": "CHG-1" }),
    )
    .await;
    let done = finished(&app, &job).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["type"], "drain");
    assert_eq!(done["requested_by"]["subject"], "demo");
    assert_eq!(done["requested_by"]["reason"], "BIOS update");
    assert_eq!(done["requested_by"]["ticket"], "CHG-1");

    // Every VM is on another host, exactly once; hv02 took no more than it had memory for.
    let after = locations(&server, &vms);
    let mut per_host: BTreeMap<String, usize> = BTreeMap::new();
    for (vm, on) in &after {
        assert_eq!(on.len(), 1, "VM {vm} is on {on:?}");
        assert_ne!(on[0], "hv01", "VM {vm} stayed");
        *per_host.entry(on[0].clone()).or_default() += 1;
    }
    assert!(
        per_host.get("hv02").copied().unwrap_or(0) <= 2,
        "{per_host:?}"
    );
    // The job's record names where each went, and it agrees with the fleet.
    for origin in done["result"]["vms"].as_array().unwrap() {
        let id: Uuid = origin["vm_id"].as_str().unwrap().parse().unwrap();
        assert_eq!(origin["disposition"], "migrated", "{origin}");
        assert_eq!(
            after[&id],
            vec![origin["moved_to"].as_str().unwrap().to_owned()]
        );
    }
    assert_eq!(host_state(&app, "hv01").await, "maintenance");
    // The state and the origins are on the host itself.
    let file = server
        .demo_fleet()
        .unwrap()
        .with_state(|s| {
            aetherv_sim::maintenance::state_file(
                s,
                "hv01",
                aetherv_hyperv::protocol::DEFAULT_INSTALL_DIRECTORY,
            )
        })
        .expect("the host keeps its state file");
    assert_eq!(file["state"], "maintenance");
    assert_eq!(file["vms"].as_array().unwrap().len(), 5);
    // Placement sends it nothing new; the job list filters by caller.
    let (_, mine) = call(&app, Method::GET, "/api/v1/jobs?requested_by=demo", None).await;
    assert!(
        mine["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["id"] == job)
    );
    let (_, none) = call(&app, Method::GET, "/api/v1/jobs?requested_by=nobody", None).await;
    assert!(none["jobs"].as_array().unwrap().is_empty());

    let resume = post(
        &app,
        "/api/v1/hosts/hv01/resume",
        json!({ "failback": true }),
    )
    .await;
    let done = finished(&app, &resume).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    for (vm, on) in locations(&server, &vms) {
        assert_eq!(on, vec!["hv01".to_owned()], "VM {vm} did not come back");
    }
    assert_eq!(host_state(&app, "hv01").await, "active");
    server.shutdown().await;
}

/// A webhook receiver that checks every signature and records the events.
struct Receiver {
    url: String,
    events: Arc<Mutex<Vec<Value>>>,
    bad: Arc<Mutex<Vec<String>>>,
}

async fn receiver(secret: &'static str) -> Receiver {
    let events = Arc::new(Mutex::new(Vec::new()));
    let bad = Arc::new(Mutex::new(Vec::new()));
    let failures_left = Arc::new(Mutex::new(1u32));
    let (ev, bd) = (Arc::clone(&events), Arc::clone(&bad));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let (ev, bd, fail) = (Arc::clone(&ev), Arc::clone(&bd), Arc::clone(&failures_left));
            async move {
                // The first delivery fails: the sender must retry.
                {
                    let mut left = fail.lock().unwrap();
                    if *left > 0 {
                        *left -= 1;
                        return StatusCode::SERVICE_UNAVAILABLE;
                    }
                }
                let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
                let timestamp: u64 = header("x-aetherv-timestamp").parse().unwrap_or(0);
                let expected = format!(
                    "sha256={}",
                    aetherv_server::hooks::sign(secret.as_bytes(), timestamp, &body)
                );
                if header("x-aetherv-signature") != expected {
                    bd.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&body).into_owned());
                    return StatusCode::UNAUTHORIZED;
                }
                let event: Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(header("x-aetherv-event"), event["event"].as_str().unwrap());
                ev.lock().unwrap().push(event);
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver { url, events, bad }
}

/// A real Alertmanager on a free loopback port, stopped when dropped.
struct Alertmanager {
    url: String,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn alertmanager() -> Alertmanager {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("alertmanager.yml");
    std::fs::write(
        &config,
        "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n",
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new("prometheus-alertmanager")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("prometheus-alertmanager (Debian package prometheus-alertmanager; scripts/test installs it)");
    let url = format!("http://127.0.0.1:{port}");
    let am = Alertmanager {
        url: url.clone(),
        child,
        _dir: dir,
    };
    let client = reqwest::Client::new();
    wait_for("Alertmanager to answer", async || {
        client
            .get(format!("{url}/-/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    am
}

async fn silences(am: &Alertmanager) -> Vec<Value> {
    reqwest::get(format!("{}/api/v2/silences", am.url))
        .await
        .unwrap()
        .json::<Vec<Value>>()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_node_drain_silences_alerts_signs_every_event_and_fails_back() {
    let am = alertmanager().await;
    let hook = receiver("hook-secret-1").await;
    let server = start(
        &[
            ("ALERTMANAGER_URL", am.url.clone()),
            (
                "ALERTMANAGER_MATCHERS",
                "host={host},instance=~{host}(:[0-9]+)?".to_owned(),
            ),
            ("MAINTENANCE_WEBHOOK_URLS", hook.url.clone()),
            ("MAINTENANCE_WEBHOOK_SECRET", "hook-secret-1".to_owned()),
        ],
        3,
        1,
    )
    .await;
    let app = server.router();
    let vms = running_vms(&server, "hv01", 5, 4 * GIB, true);
    // After the drain hv01 has by far the most memory free: only maintenance keeps placement
    // from choosing it.
    leave_free(&server, "hv02", 40 * GIB);
    leave_free(&server, "hv03", 40 * GIB);
    refresh_all(&server).await;

    let job = post(
        &app,
        "/api/v1/hosts/hv01/maintenance",
        json!({ "reason": "firmware", "ticket": "CHG-2" }),
    )
    .await;
    let done = finished(&app, &job).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    // The cluster moved every role off the paused node.
    for (vm, on) in locations(&server, &vms) {
        assert_eq!(on.len(), 1, "{vm}: {on:?}");
        assert_ne!(on[0], "hv01");
    }
    let dispositions: BTreeSet<&str> = done["result"]["vms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["disposition"].as_str().unwrap())
        .collect();
    assert_eq!(dispositions, BTreeSet::from(["moved_by_cluster"]));
    let (_, host) = call(&app, Method::GET, "/api/v1/hosts/hv01", None).await;
    assert_eq!(host["maintenance"]["state"], "maintenance", "{host}");
    assert_eq!(
        host["maintenance"]["cluster_node_state"], "Paused",
        "{host}"
    );
    assert_eq!(host["maintenance"]["ticket"], "CHG-2");

    // The silence exists, for this host, during the maintenance.
    let silence_id = host["maintenance"]["silence_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let active = silences(&am).await;
    let ours = active
        .iter()
        .find(|s| s["id"] == silence_id.as_str())
        .expect("the silence is in Alertmanager");
    assert_eq!(ours["status"]["state"], "active", "{ours}");
    let matchers: BTreeSet<(String, String)> = ours["matchers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_owned(),
                m["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        matchers.contains(&("host".to_owned(), "hv01".to_owned())),
        "{matchers:?}"
    );

    // Placement sends no new VM to a host in maintenance.
    let cluster = host["cluster"].as_str().unwrap().to_owned();
    let image = host["facts"]["images"][0]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, answer) = call(
        &app,
        Method::POST,
        "/api/v1/vms/create",
        Some(json!({
            "target_cluster": cluster, "vm_name": "placed1",
            "image_name": image, "gb_ram": 2, "cpu_cores": 1,
            "guest_la_uid": "admin", "guest_la_pw": "Sup3r-Secret-1!",
        })),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let placed = answer["job_id"].as_str().unwrap().to_owned();
    let (_, record) = call(&app, Method::GET, &format!("/api/v1/jobs/{placed}"), None).await;
    assert_ne!(record["target_host"], "hv01", "{record}");
    let _ = call(
        &app,
        Method::POST,
        &format!("/api/v1/jobs/{placed}/cancel"),
        None,
    )
    .await;
    finished(&app, &placed).await;

    let resume = post(
        &app,
        "/api/v1/hosts/hv01/resume",
        json!({ "failback": true }),
    )
    .await;
    let done = finished(&app, &resume).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    for (vm, on) in locations(&server, &vms) {
        assert_eq!(on, vec!["hv01".to_owned()], "VM {vm} did not come back");
    }
    assert_eq!(host_state(&app, "hv01").await, "active");
    // The silence is expired after the resume.
    let after = silences(&am).await;
    let ours = after
        .iter()
        .find(|s| s["id"] == silence_id.as_str())
        .unwrap();
    assert_eq!(ours["status"]["state"], "expired", "{ours}");

    // Every event arrived, in order, each with a valid signature (the first delivery was
    // refused and retried).
    wait_for("the webhook events", async || {
        hook.events
            .lock()
            .unwrap()
            .iter()
            .any(|e| e["event"] == "resumed")
    })
    .await;
    assert!(
        hook.bad.lock().unwrap().is_empty(),
        "{:?}",
        hook.bad.lock().unwrap()
    );
    let kinds: Vec<String> = hook
        .events
        .lock()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        kinds.first().map(String::as_str),
        Some("started"),
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| *k == "vm_moved").count(),
        5,
        "{kinds:?}"
    );
    assert!(kinds.contains(&"in_maintenance".to_owned()), "{kinds:?}");
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("resumed"),
        "{kinds:?}"
    );
    let started = hook.events.lock().unwrap()[0].clone();
    assert_eq!(started["host"], "hv01");
    assert_eq!(started["ticket"], "CHG-2");
    assert_eq!(started["requested_by"], "demo");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_lost_during_a_drain_ends_failed_drain_naming_the_vms_left_and_loses_none() {
    let server = start(&[], 3, 1).await;
    let app = server.router();
    let vms = running_vms(&server, "hv01", 5, 8 * GIB, true);
    // hv02 takes two; hv03, which would take the rest, is lost once the drain runs.
    leave_free(&server, "hv02", 8 * GIB * 2 + GIB);
    leave_free(&server, "hv03", 8 * GIB * 10);
    refresh_all(&server).await;
    let sim = server.demo_fleet().unwrap();
    let lost = sim.host("hv03").unwrap();

    // hv03 stops answering as the drain starts; the server has not noticed yet (its
    // inventory still shows it connected, with room for the VMs).
    lost.freeze();
    let job = post(&app, "/api/v1/hosts/hv01/maintenance", json!({})).await;
    let done = finished(&app, &job).await;
    lost.thaw();
    assert_eq!(done["status"], "failed", "{done}");
    let left: Vec<String> = done["result"]["left_behind"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let error = done["error"].as_str().unwrap();
    assert!(error.contains("failed_drain"), "{error}");
    for name in &left {
        assert!(
            error.contains(name.as_str()),
            "{error} does not name {name}"
        );
    }
    // No VM is lost or in two places; those not named moved.
    let after = locations(&server, &vms);
    let mut still = 0;
    for (vm, on) in &after {
        assert_eq!(on.len(), 1, "VM {vm} is on {on:?}");
        if on[0] == "hv01" {
            still += 1;
        }
    }
    assert_eq!(still, left.len(), "{after:?} vs {left:?}");
    assert!(still > 0 && still < 5, "{after:?}");
    assert_eq!(host_state(&app, "hv01").await, "failed_drain");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maintenance_run_never_takes_the_last_host_of_a_cluster_and_can_be_cancelled() {
    let server = start(&[], 2, 1).await;
    let app = server.router();
    let run = post(
        &app,
        "/api/v1/maintenance-runs",
        json!({ "hosts": ["hv01", "hv02"], "max_per_cluster": 2, "evacuate": "none", "ticket": "CHG-3" }),
    )
    .await;
    let path = format!("/api/v1/maintenance-runs/{run}");
    let mut view = Value::Null;
    wait_for("hv01 in maintenance and hv02 waiting", async || {
        let (status, v) = call(&app, Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        let hosts = v["hosts"].as_array().cloned().unwrap_or_default();
        let ready = hosts.len() == 2
            && hosts[0]["status"] == "in_maintenance"
            && hosts[1]["status"] == "pending"
            && hosts[1]["waiting"]
                .as_str()
                .is_some_and(|w| w.contains("last active host"));
        view = v;
        ready
    })
    .await;
    assert_eq!(host_state(&app, "hv01").await, "maintenance");
    assert_eq!(host_state(&app, "hv02").await, "active");
    // Each host's log is kept with the run, the drain job's lines included.
    let log = view["hosts"][0]["log"].as_array().unwrap();
    assert!(
        log.iter()
            .any(|l| l.as_str().unwrap().contains("marking host hv01")),
        "{log:?}"
    );
    let (_, list) = call(&app, Method::GET, "/api/v1/maintenance-runs", None).await;
    assert!(
        list["runs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == run.as_str())
    );

    let (status, _) = call(&app, Method::POST, &format!("{path}/cancel"), None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let done = finished(&app, &run).await;
    assert_eq!(done["status"], "cancelled", "{done}");
    let (_, view) = call(&app, Method::GET, &path, None).await;
    assert_eq!(view["hosts"][1]["status"], "cancelled", "{view}");
    assert_eq!(host_state(&app, "hv02").await, "active");
    // A run naming an unknown host is refused before anything starts.
    let (status, error) = call(
        &app,
        Method::POST,
        "/api/v1/maintenance-runs",
        Some(json!({ "hosts": ["hv01", "nope"] })),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{error}");
    assert_eq!(error["error"]["field"], "hosts");
    server.shutdown().await;
}
