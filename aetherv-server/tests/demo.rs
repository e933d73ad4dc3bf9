//! End to end over HTTP: the server binary in demo mode (its simulated fleet served over real
//! WinRM on loopback). Provision through the API, follow the SSE log to success, see the VM in
//! the inventory and in the event stream, run a power action, delete it; the password never
//! appears in the output.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod support;
use support::contract;

const GUEST_PW: &str = "Gu3st-pw-never-shown";
const BOUND: Duration = Duration::from_secs(90);

struct Running {
    child: Child,
    base: String,
    stdout: mpsc::Receiver<String>,
    /// What the server printed before its URL.
    banner: Vec<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_aetherv-server"))
        .env_remove("HYPERV_HOSTS")
        .env_remove("HOSTS_FILE")
        .env_remove("OIDC_ISSUER_URL")
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("SECRETS_DIR", "/nonexistent-aetherv-test")
        .env("AETHERV_DEMO_PASSWORD", "demo-Passw0rd")
        .env("LOG_LEVEL", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx2.send(line).is_err() {
                break;
            }
        }
    });
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(format!("stderr: {line}")).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + BOUND;
    let mut banner = Vec::new();
    let base = loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the server prints its URL");
        banner.push(line.clone());
        if let Some(rest) = line.split("web UI ").nth(1) {
            break rest
                .split_whitespace()
                .next()
                .unwrap()
                .trim_end_matches('/')
                .to_owned();
        }
    };
    Running {
        child,
        base,
        stdout: rx,
        banner,
    }
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
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads a Server-Sent Events response until `stop` says so; returns (event, data) pairs. The
/// head and every event read are checked against the OpenAPI document.
async fn read_sse(
    mut response: reqwest::Response,
    mut stop: impl FnMut(&str, &Value) -> bool,
) -> Vec<(String, Value)> {
    let path = response.url().path().to_owned();
    contract::check_head(
        &reqwest::Method::GET,
        &path,
        response.status(),
        response.headers(),
    );
    let mut seen = String::new();
    let mut buffer = String::new();
    let mut events = Vec::new();
    let deadline = Instant::now() + BOUND;
    loop {
        let chunk = tokio::time::timeout_at(deadline.into(), response.chunk())
            .await
            .expect("the stream ended in time")
            .unwrap();
        let Some(chunk) = chunk else {
            contract::check_stream_events(&path, &seen);
            return events;
        };
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            seen.push_str(&frame);
            let mut name = "message".to_owned();
            let mut data = String::new();
            for line in frame.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = n.to_owned();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push_str(d);
                }
            }
            if data.is_empty() {
                continue;
            }
            let value: Value = serde_json::from_str(&data).unwrap();
            let done = stop(&name, &value);
            events.push((name, value));
            if done {
                contract::check_stream_events(&path, &seen);
                return events;
            }
        }
    }
}

/// Reads a whole answer, checks it against the served OpenAPI document (status, content type,
/// body schema) and returns its status and body.
async fn checked(method: reqwest::Method, response: reqwest::Response) -> (u16, Vec<u8>) {
    let status = response.status();
    let path = response.url().path().to_owned();
    let headers = response.headers().clone();
    let body = response.bytes().await.unwrap().to_vec();
    contract::check(&method, &path, status, &headers, &body);
    (status.as_u16(), body)
}

/// A checked answer's status and JSON body.
async fn checked_json(method: reqwest::Method, response: reqwest::Response) -> (u16, Value) {
    let (status, body) = checked(method, response).await;
    (status, serde_json::from_slice(&body).unwrap())
}

async fn get_json(client: &reqwest::Client, url: String) -> Value {
    let response = client.get(&url).send().await.unwrap();
    let (status, body) = checked_json(reqwest::Method::GET, response).await;
    assert!((200..300).contains(&status), "GET {url}: {status}");
    body
}

async fn job_until_done(client: &reqwest::Client, base: &str, id: &str) -> Value {
    let deadline = Instant::now() + BOUND;
    loop {
        let job: Value = get_json(client, format!("{base}/api/v1/jobs/{id}")).await;
        let status = job["status"].as_str().unwrap().to_owned();
        if ["succeeded", "failed", "cancelled"].contains(&status.as_str()) {
            return job;
        }
        assert!(Instant::now() < deadline, "job {id} did not finish: {job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_server_provisions_powers_and_deletes_over_http() {
    let mut server = start();
    let base = server.base.clone();
    let client = reqwest::Client::new();
    assert_eq!(
        client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    wait_ready(&client, &base).await;
    assert!(
        server.banner.iter().any(|l| l
            == "=== DEMO MODE: simulated Hyper-V hosts on loopback, authentication off; not for production ==="),
        "{:?}",
        server.banner
    );
    let ready: Value = get_json(&client, format!("{base}/readyz")).await;
    assert_eq!(ready, json!({"status": "ready", "mode": "demo"}));

    let clusters: Value = get_json(&client, format!("{base}/api/v1/clusters")).await;
    assert_eq!(clusters["clusters"].as_array().unwrap().len(), 2);
    let status: Value = get_json(&client, format!("{base}/api/v1/status")).await;
    assert_eq!(status["mode"], "demo");
    assert_eq!(status["hosts"], 5);
    assert_eq!(status["vms"], 40);

    // Follow the inventory while the VM is created.
    let events = client
        .get(format!("{base}/api/v1/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    let watcher = tokio::spawn(read_sse(events, |name, data| {
        name == "vm_added" && data["vm"]["name"] == "e2e-web-01"
    }));

    let created = client
        .post(format!("{base}/api/v1/vms/create"))
        .json(&json!({
            "vm_name": "e2e-web-01",
            "hyperv_host": "hv02",
            "image_name": "Ubuntu 24.04 LTS",
            "gb_ram": 2,
            "cpu_cores": 2,
            "guest_la_uid": "admin",
            "guest_la_pw": GUEST_PW,
            "guest_v4_ipaddr": "10.20.30.41",
            "guest_v4_cidrprefix": 24,
            "guest_v4_defaultgw": "10.20.30.1",
            "guest_v4_dns1": "10.20.0.53"
        }))
        .send()
        .await
        .unwrap();
    assert!(created.headers().contains_key("location"));
    let (status, created) = checked_json(reqwest::Method::POST, created).await;
    assert_eq!(status, 202);
    assert_eq!(created["status"], "queued");
    let job_id = created["job_id"].as_str().unwrap().to_owned();

    // The live log, to the end.
    let logs = client
        .get(format!("{base}/api/v1/jobs/{job_id}/logs"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        logs.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let log = read_sse(logs, |name, _| name == "end").await;
    let (last, end) = log.last().unwrap();
    assert_eq!(last, "end");
    assert_eq!(end["status"], "succeeded", "{end}");
    assert!(log.iter().any(|(n, d)| {
        n == "log"
            && d["message"]
                .as_str()
                .unwrap_or_default()
                .to_ascii_lowercase()
                .contains("publish")
    }));
    let vm_id = end["vm_id"].as_str().unwrap().to_owned();
    assert!(
        end["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "succeeded")
    );
    assert!(!end.to_string().contains(GUEST_PW));

    // Repeating the name is refused before anything runs.
    let again = client
        .post(format!("{base}/api/v1/vms/create"))
        .json(&json!({
            "vm_name": "e2e-web-01", "hyperv_host": "hv02", "image_name": "Ubuntu 24.04 LTS",
            "gb_ram": 2, "cpu_cores": 2, "guest_la_uid": "admin", "guest_la_pw": GUEST_PW
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(checked(reqwest::Method::POST, again).await.0, 409);

    // The VM is in the inventory, and the event stream announced it.
    let vm: Value = get_json(&client, format!("{base}/api/v1/vms/{vm_id}")).await;
    assert_eq!(vm["name"], "e2e-web-01");
    assert_eq!(vm["host"], "hv02");
    assert_eq!(vm["state"], "Running");
    // Nothing of the provisioning stays: the DVD drive with the ISO is gone, and the job
    // removed the hlvmm.* host items, the drive and the ISO copy in named steps.
    assert_eq!(vm["dvd_drives"], json!([]), "{vm}");
    for step in [
        "Provisioning.RemoveProvisioningKeys",
        "Provisioning.RemoveDvdDrive",
        "Provisioning.RemoveProvisioningISO",
    ] {
        assert!(
            end["steps"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["name"] == step),
            "no step {step}: {end}"
        );
    }
    let seen = tokio::time::timeout(BOUND, watcher).await.unwrap().unwrap();
    assert_eq!(seen.first().unwrap().0, "hello");
    assert!(seen.iter().any(|(n, _)| n == "job"));

    // A power action that the state does not allow is refused; one that it allows runs.
    let refused = client
        .post(format!("{base}/api/v1/vms/{vm_id}/actions/start"))
        .send()
        .await
        .unwrap();
    let (status, refused) = checked_json(reqwest::Method::POST, refused).await;
    assert_eq!(status, 409);
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Running")
    );
    let stop = client
        .post(format!("{base}/api/v1/vms/{vm_id}/actions/stop"))
        .send()
        .await
        .unwrap();
    let (status, stop) = checked_json(reqwest::Method::POST, stop).await;
    assert_eq!(status, 202);
    let stopped = job_until_done(&client, &base, stop["job_id"].as_str().unwrap()).await;
    assert_eq!(stopped["status"], "succeeded", "{stopped}");
    let vm: Value = get_json(&client, format!("{base}/api/v1/vms/{vm_id}")).await;
    assert_eq!(vm["state"], "Off");

    // Delete it.
    let deleted = client
        .post(format!("{base}/api/v1/vms/delete"))
        .json(&json!({ "vm_id": vm_id, "delete_disks": true }))
        .send()
        .await
        .unwrap();
    let (status, deleted) = checked_json(reqwest::Method::POST, deleted).await;
    assert_eq!(status, 202);
    let done = job_until_done(&client, &base, deleted["job_id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let gone = client
        .get(format!("{base}/api/v1/vms/{vm_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(checked(reqwest::Method::GET, gone).await.0, 404);

    let metrics = client.get(format!("{base}/metrics")).send().await.unwrap();
    let (_, metrics) = checked(reqwest::Method::GET, metrics).await;
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(metrics.contains("aetherv_jobs_finished_total"));

    // SIGTERM stops it cleanly, even with an event stream open (as a browser tab keeps one);
    // nothing printed the passwords.
    let open_stream = client
        .get(format!("{base}/api/v1/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(open_stream.status(), 200);
    let _ = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not exit after SIGTERM with an event stream open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
    drop(open_stream);
    let mut output = Vec::new();
    while let Ok(line) = server.stdout.recv_timeout(Duration::from_secs(2)) {
        output.push(line);
    }
    let text = output.join("\n");
    assert!(!text.contains(GUEST_PW), "the guest password leaked");
    assert!(!text.contains("demo-Passw0rd"), "the WinRM password leaked");
    let mut rest = String::new();
    let _ = server
        .child
        .stdout
        .take()
        .map(|mut s| s.read_to_string(&mut rest));
}
