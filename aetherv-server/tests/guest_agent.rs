//! End to end with the real Linux guest agent: the demo server provisions Linux VMs whose
//! guest side is the `aetherv-guest` binary, connected to the simulated VM by aetherv-sim's
//! guest bridge (the VM's host-to-guest KVP items mirrored into `.kvp_pool_0`, the agent's
//! `.kvp_pool_1` items mirrored back). The agent runs with `--root` in a temp directory, so
//! it writes the cloud-init seed there instead of running cloud-init.
//!
//! - A full request succeeds and the seed shows the host name, both users, the SSH key and the
//!   static network the request asked for (and never the password).
//! - A checksum tampered with in transit, and an agent of another version, each end the job
//!   `failed` with the guest's own error in the job log.
//!
//! The agent binary is `$AETHERV_GUEST_AGENT`, or `aetherv-guest` next to this test's
//! target directory (built with cargo when missing). The bound only keeps a broken build from
//! hanging the run; nothing asserts speed.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aetherv_server::config::Config;
use aetherv_server::startup::Server;
use aetherv_sim::{BridgeOptions, GuestBridge};
use axum::Router;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

mod support;
use support::contract;

const BOUND: Duration = Duration::from_secs(180);
const GUEST_PW: &str = "Gu3st-pw-never-on-disk";
const SSH_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGd1ZXN0YWdlbnRlbmR0b2VuZHRlc3Q ansible@ctl";

/// The agent binary: `$AETHERV_GUEST_AGENT`, or `<target>/debug/aetherv-guest`, built with
/// cargo first when it is missing.
fn agent_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("AETHERV_GUEST_AGENT") {
        return PathBuf::from(path);
    }
    // This test runs from <target>/debug/deps/.
    let exe = std::env::current_exe().unwrap();
    let debug = exe.parent().and_then(Path::parent).unwrap().to_owned();
    let agent = debug.join("aetherv-guest");
    if !agent.exists() {
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "-p", "aetherv-guest", "--quiet"])
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .status()
            .unwrap();
        assert!(status.success(), "building aetherv-guest failed");
    }
    assert!(agent.exists(), "no agent binary at {}", agent.display());
    agent
}

async fn call(
    app: &Router,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    contract::call_checked(app, method, path, body).await
}

async fn job_until_done(app: &Router, id: &str) -> Value {
    let deadline = Instant::now() + BOUND;
    loop {
        let (status, job) = call(app, Method::GET, &format!("/api/v1/jobs/{id}"), None).await;
        assert_eq!(status, StatusCode::OK);
        if !matches!(job["status"].as_str(), Some("queued" | "running")) {
            return job;
        }
        assert!(Instant::now() < deadline, "job {id} did not end: {job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn job_log(app: &Router, id: &str) -> String {
    let (status, logs) = call(
        app,
        Method::GET,
        &format!("/api/v1/jobs/{id}/logs?follow=false"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    logs.to_string()
}

fn request(name: &str) -> Value {
    json!({
        "vm_name": name,
        "hyperv_host": "hv01",
        "image_name": "Ubuntu 24.04 LTS",
        "gb_ram": 2,
        "cpu_cores": 2,
        "guest_la_uid": "admin",
        "guest_la_pw": GUEST_PW,
        "guest_v4_ipaddr": "10.20.30.41",
        "guest_v4_cidrprefix": 24,
        "guest_v4_defaultgw": "10.20.30.1",
        "guest_v4_dns1": "10.20.0.53",
        "guest_v4_dns2": "10.20.0.54",
        "guest_net_dnssuffix": "corp.example",
        "cnf_ansible_ssh_user": "ansible",
        "cnf_ansible_ssh_key": SSH_KEY,
    })
}

/// Provisions `name` with `bridge` serving its guest; returns the finished job.
async fn provision(app: &Router, name: &str) -> Value {
    let (status, accepted) =
        call(app, Method::POST, "/api/v1/vms/create", Some(request(name))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    job_until_done(app, accepted["job_id"].as_str().unwrap()).await
}

fn only_dir(work: &Path, name: &str) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(work)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{name}-")))
        })
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs.into_iter().next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_linux_agent_provisions_a_vm_through_the_server() {
    let agent = agent_binary();
    let env = |name: &str| match name {
        "DEMO_VMS_PER_HOST" => Some("1".to_owned()),
        "AETHERV_DEMO_PASSWORD" => Some("demo-Passw0rd".to_owned()),
        "LISTEN_ADDR" => Some("127.0.0.1:0".to_owned()),
        _ => None,
    };
    let config = Config::from_sources(&env, Path::new("/nonexistent-aetherv-test")).unwrap();
    let server = Server::start(&config).await.unwrap();
    let app = server.router();
    let deadline = Instant::now() + BOUND;
    while server.state().readiness.check().is_err() {
        assert!(
            Instant::now() < deadline,
            "the demo server never became ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sim = server.demo_fleet().unwrap();
    let work = tempfile::tempdir().unwrap();
    let start =
        |options: BridgeOptions| -> GuestBridge { sim.start_guest_bridge(options).unwrap() };

    // 1. The real agent applies the request.
    let bridge = start(BridgeOptions::new(&agent, work.path().join("ok")));
    let job = provision(&app, "agent-ok-01").await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert!(!job.to_string().contains(GUEST_PW));
    let log = job_log(&app, job["id"].as_str().unwrap()).await;
    assert!(log.contains("provisioningapplied"), "{log}");
    bridge.shutdown();
    let dir = only_dir(&work.path().join("ok"), "agent-ok-01");
    let seed = dir.join("root/var/lib/cloud/seed/nocloud");
    let user_data = std::fs::read_to_string(seed.join("user-data")).unwrap();
    for needle in [
        "hostname: \"agent-ok-01\"",
        "fqdn: \"agent-ok-01.corp.example\"",
        "- name: \"admin\"",
        "hashed_passwd: \"$6$",
        "- name: \"ansible\"",
        "sudo: \"ALL=(ALL) NOPASSWD:ALL\"",
        &format!("- \"{SSH_KEY}\""),
    ] {
        assert!(
            user_data.contains(needle),
            "{needle} missing from {user_data}"
        );
    }
    let meta = std::fs::read_to_string(seed.join("meta-data")).unwrap();
    assert!(meta.contains("local-hostname: \"agent-ok-01\""), "{meta}");
    let network = std::fs::read_to_string(seed.join("network-config")).unwrap();
    for needle in [
        "- \"10.20.30.41/24\"",
        "via: \"10.20.30.1\"",
        "- \"10.20.0.53\"",
        "- \"10.20.0.54\"",
        "search:\n        - \"corp.example\"",
    ] {
        assert!(network.contains(needle), "{needle} missing from {network}");
    }
    for file in ["user-data", "meta-data", "network-config"] {
        let text = std::fs::read_to_string(seed.join(file)).unwrap();
        assert!(!text.contains(GUEST_PW), "{file}");
    }
    let agent_log = std::fs::read_to_string(dir.join("root/var/log/aetherv-guest.log")).unwrap();
    assert!(!agent_log.contains(GUEST_PW));

    // 2. A checksum tampered with on its way to the guest.
    let mut options = BridgeOptions::new(&agent, work.path().join("tampered"));
    options.transform = Some(Arc::new(|items| {
        if let Some(sum) = items.get_mut(aetherv_kvp::keys::CHECKSUM) {
            *sum = aetherv_kvp::checksum([("guest_host_name", "someone-else")]);
        }
    }));
    let bridge = start(options);
    let job = provision(&app, "agent-tampered-01").await;
    bridge.shutdown();
    assert_eq!(job["status"], "failed", "{job}");
    let log = job_log(&app, job["id"].as_str().unwrap()).await;
    assert!(log.contains("checksum mismatch"), "{log}");

    // 3. An agent from another provisioning ISO version.
    let mut options = BridgeOptions::new(&agent, work.path().join("version"));
    options.version_override = Some("0.0.0-other-iso".to_owned());
    let bridge = start(options);
    let job = provision(&app, "agent-version-01").await;
    bridge.shutdown();
    assert_eq!(job["status"], "failed", "{job}");
    let log = job_log(&app, job["id"].as_str().unwrap()).await;
    assert!(log.contains("version mismatch"), "{log}");
    assert!(log.contains("0.0.0-other-iso"), "{log}");

    server.shutdown().await;
}

/// The documented demo option: `AETHERV_DEMO_GUEST_AGENT` makes the demo's new Linux VMs be
/// served by the real agent (each in its own directory under the system temp directory).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_option_serves_linux_vms_with_the_real_agent() {
    let agent = agent_binary().display().to_string();
    let env = |name: &str| match name {
        "DEMO_HOSTS" => Some("1".to_owned()),
        "DEMO_VMS_PER_HOST" => Some("0".to_owned()),
        "AETHERV_DEMO_PASSWORD" => Some("demo-Passw0rd".to_owned()),
        "AETHERV_DEMO_GUEST_AGENT" => Some(agent.clone()),
        "LISTEN_ADDR" => Some("127.0.0.1:0".to_owned()),
        _ => None,
    };
    let config = Config::from_sources(&env, Path::new("/nonexistent-aetherv-test")).unwrap();
    let server = Server::start(&config).await.unwrap();
    let app = server.router();
    let deadline = Instant::now() + BOUND;
    while server.state().readiness.check().is_err() {
        assert!(
            Instant::now() < deadline,
            "the demo server never became ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let job = provision(&app, "demo-agent-01").await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let work = std::env::temp_dir().join(format!("aetherv-demo-guests-{}", std::process::id()));
    let dir = only_dir(&work, "demo-agent-01");
    let user_data =
        std::fs::read_to_string(dir.join("root/var/lib/cloud/seed/nocloud/user-data")).unwrap();
    assert!(
        user_data.contains("hostname: \"demo-agent-01\""),
        "{user_data}"
    );
    server.shutdown().await;
    assert!(
        !work.exists(),
        "the demo's guest directories are removed at shutdown"
    );

    // A path that is not a file is refused with the variable's name.
    let env = |name: &str| match name {
        "AETHERV_DEMO_GUEST_AGENT" => Some("/nonexistent/aetherv-guest".to_owned()),
        _ => None,
    };
    let err = Config::from_sources(&env, Path::new("/nonexistent-aetherv-test")).unwrap_err();
    assert!(
        err.iter()
            .any(|p| p.starts_with("AETHERV_DEMO_GUEST_AGENT")),
        "{err:?}"
    );
}
