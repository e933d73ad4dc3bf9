//! A server killed mid-provision leaves a half-made VM behind; restarted, it lists that VM as
//! orphaned (API field, metric) and an admin's cleanup removes it.
//!
//! Loopback only: the simulated host runs in this test process (so it survives the server)
//! with a guest that never answers provisioning, and the server is the `aetherv-server`
//! binary, a separate process configured against it. The provisioning job waits for the guest's
//! key when the server gets SIGKILL (the job names the VM and holds it meanwhile). Every answer
//! is checked against the OpenAPI document.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use aetherv_sim::{Credentials, FleetSpec, SimFleet, SimOptions};
use aetherv_winrm::Secret;
use serde_json::{Value, json};

mod support;
use support::contract;

const BOUND: Duration = Duration::from_secs(120);
const SIM_PASSWORD: &str = "Sim-Passw0rd-orphans";
const GUEST_PW: &str = "Gu3st-pw-orphan-test";
const SILENT_VM: &str = "orphan-web-01";

/// Kills the process when the test ends, however it ends.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Lines of a child's stdout (and stderr, prefixed), read on threads.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    if let Some(stdout) = child.stdout.take() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    if let Some(stderr) = child.stderr.take() {
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(format!("stderr: {line}")).is_err() {
                    break;
                }
            }
        });
    }
    rx
}

/// One simulated host with one ordinary VM, served from this test process (it outlives the
/// server process the test kills); a VM named [`SILENT_VM`] gets no guest agent. Returns the
/// fleet and the host's port.
async fn start_sim() -> (SimFleet, u16) {
    let spec = FleetSpec {
        hosts: 1,
        vms_per_host: 1,
        clusters: 0,
        ..FleetSpec::default()
    };
    let options = SimOptions {
        silent_guests: [SILENT_VM.to_owned()].into_iter().collect(),
        ..SimOptions::default()
    };
    let fleet = SimFleet::start(
        spec,
        Credentials::new("simadmin", Secret::new(SIM_PASSWORD)),
        options,
    )
    .await
    .unwrap();
    let endpoint = fleet.hosts()[0].endpoint();
    let port = endpoint
        .trim_start_matches("http://")
        .split(['/', ':'])
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {endpoint:?}"));
    (fleet, port)
}

/// The server against the simulated host (authentication off: every caller is admin).
fn start_server(port: u16) -> (Proc, String, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_aetherv-server"))
        .env_clear()
        .env("HYPERV_HOSTS", "127.0.0.1")
        .env("WINRM_PORT", port.to_string())
        .env("WINRM_USERNAME", "simadmin")
        .env("WINRM_PASSWORD", SIM_PASSWORD)
        .env("AUTH_ENABLED", "false")
        .env("ALLOW_DEV_AUTH", "true")
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("SECRETS_DIR", "/nonexistent-aetherv-orphan-test")
        .env("LOG_LEVEL", "info")
        .env("INVENTORY_REFRESH_INTERVAL", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = lines_of(&mut child);
    let deadline = Instant::now() + BOUND;
    let base = loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the server prints its URL");
        if let Some(rest) = line.split("web UI ").nth(1) {
            break rest
                .split_whitespace()
                .next()
                .unwrap()
                .trim_end_matches('/')
                .to_owned();
        }
    };
    (Proc(child), base, rx)
}

async fn wait_ready(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + BOUND;
    loop {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await
            && r.status() == 200
        {
            return;
        }
        assert!(Instant::now() < deadline, "the server never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A whole answer checked against the OpenAPI document: status and JSON body.
async fn checked_json(method: reqwest::Method, response: reqwest::Response) -> (u16, Value) {
    let status = response.status();
    let path = response.url().path().to_owned();
    let headers = response.headers().clone();
    let body = response.bytes().await.unwrap().to_vec();
    contract::check(&method, &path, status, &headers, &body);
    (status.as_u16(), serde_json::from_slice(&body).unwrap())
}

async fn get_json(client: &reqwest::Client, url: String) -> (u16, Value) {
    let response = client.get(&url).send().await.unwrap();
    checked_json(reqwest::Method::GET, response).await
}

async fn post_json(client: &reqwest::Client, url: String, body: &Value) -> (u16, Value) {
    let response = client.post(&url).json(body).send().await.unwrap();
    checked_json(reqwest::Method::POST, response).await
}

/// The VMs named `name`.
async fn vms_named(client: &reqwest::Client, base: &str, name: &str) -> Vec<Value> {
    let (status, list) = get_json(client, format!("{base}/api/v1/vms?q={name}")).await;
    assert_eq!(status, 200);
    list["vms"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|vm| vm["name"] == name)
        .cloned()
        .collect()
}

async fn job_until_done(client: &reqwest::Client, base: &str, id: &str) -> Value {
    let deadline = Instant::now() + BOUND;
    loop {
        let (status, job) = get_json(client, format!("{base}/api/v1/jobs/{id}")).await;
        assert_eq!(status, 200);
        if ["succeeded", "failed", "cancelled"].contains(&job["status"].as_str().unwrap()) {
            return job;
        }
        assert!(Instant::now() < deadline, "job {id} did not finish: {job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of `aetherv_orphaned_vms{host="<host>"}`.
async fn orphan_gauge(client: &reqwest::Client, base: &str, host: &str) -> Option<f64> {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("aetherv_orphaned_vms{{host=\"{host}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// The orphan gauge once it shows `want` (the orphan watch rescans at most every 500 ms after
/// a change), or what it shows after 10 s.
async fn orphan_gauge_settles(
    client: &reqwest::Client,
    base: &str,
    host: &str,
    want: f64,
) -> Option<f64> {
    let mut seen = None;
    for _ in 0..100 {
        seen = orphan_gauge(client, base, host).await;
        if seen == Some(want) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_provision_finds_its_orphan_after_a_restart_and_removes_it() {
    let (_sim, port) = start_sim().await;
    let client = reqwest::Client::new();

    // First life: provision a VM whose guest never answers, and wait until the job waits for
    // the guest's key with the VM registered (and marked).
    let (server, base, _log) = start_server(port);
    wait_ready(&client, &base).await;
    let (hosts_status, hosts) = get_json(&client, format!("{base}/api/v1/hosts/127.0.0.1")).await;
    assert_eq!(hosts_status, 200, "{hosts}");
    let image = hosts["facts"]["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_owned())
        .find(|n| n.to_ascii_lowercase().contains("ubuntu"))
        .expect("a Linux golden image");
    let (status, created) = post_json(
        &client,
        format!("{base}/api/v1/vms/create"),
        &json!({
            "vm_name": SILENT_VM,
            "hyperv_host": "127.0.0.1",
            "image_name": image,
            "gb_ram": 2,
            "cpu_cores": 2,
            "guest_la_uid": "admin",
            "guest_la_pw": GUEST_PW,
        }),
    )
    .await;
    assert_eq!(status, 202, "{created}");
    let job_id = created["job_id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + BOUND;
    let vm_id = loop {
        let (_, job) = get_json(&client, format!("{base}/api/v1/jobs/{job_id}")).await;
        assert!(
            matches!(job["status"].as_str(), Some("queued" | "running")),
            "the job must still run: {job}"
        );
        let waiting = job["step"]
            .as_str()
            .is_some_and(|s| s.to_ascii_lowercase().contains("key"));
        if waiting && let [vm] = vms_named(&client, &base, SILENT_VM).await.as_slice() {
            // While its job runs, the VM is not orphaned; the job names it and holds it.
            assert_eq!(vm["orphaned"], false, "{vm}");
            let id = vm["id"].as_str().unwrap().to_owned();
            assert_eq!(vm["busy_job"], job_id.as_str(), "{vm}");
            let (_, job) = get_json(&client, format!("{base}/api/v1/jobs/{job_id}")).await;
            assert_eq!(job["status"], "running", "{job}");
            assert_eq!(job["vm_id"], id.as_str(), "{job}");
            let (status, refused) = post_json(
                &client,
                format!("{base}/api/v1/vms/{id}/actions/save"),
                &json!({}),
            )
            .await;
            assert_eq!(status, 409, "{refused}");
            assert_eq!(refused["error"]["code"], "vm_busy", "{refused}");
            break id;
        }
        assert!(
            Instant::now() < deadline,
            "the job never waited for the key: {job}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (_, detail) = get_json(&client, format!("{base}/api/v1/vms/{vm_id}")).await;
    assert_eq!(detail["notes"], format!("aetherv-job:{job_id}"));
    assert_eq!(
        orphan_gauge_settles(&client, &base, "127.0.0.1", 0.0).await,
        Some(0.0)
    );

    // SIGKILL: no cleanup runs.
    drop(server);

    // Second life: the half-made VM is orphaned.
    let (_server, base, _log) = start_server(port);
    wait_ready(&client, &base).await;
    let vms = vms_named(&client, &base, SILENT_VM).await;
    assert_eq!(
        vms.len(),
        1,
        "the half-made VM is still on the host: {vms:?}"
    );
    assert_eq!(vms[0]["id"], vm_id.as_str());
    assert_eq!(vms[0]["orphaned"], true, "{}", vms[0]);
    assert_eq!(vms[0]["busy_job"], Value::Null);
    let (status, detail) = get_json(&client, format!("{base}/api/v1/vms/{vm_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(detail["orphaned"], true);
    assert_eq!(
        orphan_gauge_settles(&client, &base, "127.0.0.1", 1.0).await,
        Some(1.0)
    );
    let (_, job) = get_json(&client, format!("{base}/api/v1/jobs/{job_id}")).await;
    assert_eq!(job["error"]["code"], "not_found", "{job}");

    // The host's own VM is not orphaned, and the cleanup refuses it.
    let (_, all) = get_json(&client, format!("{base}/api/v1/vms")).await;
    let other = all["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|vm| vm["name"] != SILENT_VM)
        .expect("the generated VM")
        .clone();
    assert_eq!(other["orphaned"], false);
    let (status, refused) = post_json(
        &client,
        format!(
            "{base}/api/v1/vms/{}/orphan/remove",
            other["id"].as_str().unwrap()
        ),
        &json!({}),
    )
    .await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "not_orphaned");

    // The cleanup removes the orphan through a job.
    let (status, accepted) = post_json(
        &client,
        format!("{base}/api/v1/vms/{vm_id}/orphan/remove"),
        &json!({}),
    )
    .await;
    assert_eq!(status, 202, "{accepted}");
    let removal = accepted["job_id"].as_str().unwrap().to_owned();
    let done = job_until_done(&client, &base, &removal).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["type"], "delete");
    assert_eq!(done["parameters"]["orphan_of_job"], job_id.as_str());
    let (status, _) = get_json(&client, format!("{base}/api/v1/vms/{vm_id}")).await;
    assert_eq!(status, 404, "the orphan is gone");
    assert!(vms_named(&client, &base, SILENT_VM).await.is_empty());
    assert_eq!(
        orphan_gauge_settles(&client, &base, "127.0.0.1", 0.0).await,
        Some(0.0)
    );
}
