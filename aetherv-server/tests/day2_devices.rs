//! Checkpoints and network adapters end to end through the demo server: every answer is
//! checked against the OpenAPI document, every change runs as a job against the simulated
//! host, and every refusal rule is tested twice: the API refuses it with a 409 (or 422)
//! naming the rule, and the host itself (called directly, past the API's check) refuses it
//! too, so removing either check fails a test.
//!
//! The bound only keeps a broken build from hanging the run; nothing asserts speed.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aetherv_hyperv::ops::{
    CheckpointChange, HyperVHost, HyperVHostExt, MacSetting, NicChange, NicSettings, VmId,
};
use aetherv_server::config::Config;
use aetherv_server::startup::Server;
use axum::Router;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

mod support;
use support::contract;

const BOUND: Duration = Duration::from_secs(120);

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

/// Runs a mutation and expects its job to succeed; returns the job.
async fn run_ok(app: &Router, method: Method, path: &str, body: Option<Value>) -> Value {
    let (status, accepted) = call(app, method, path, body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{path}: {accepted}");
    let job = job_until_done(app, accepted["job_id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{path}: {job}");
    job
}

fn refused(status: StatusCode, body: &Value, want: StatusCode, code: &str, words: &str) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(words), "{words:?} not in {message:?}");
}

async fn start_server() -> Server {
    let env = |name: &str| match name {
        "DEMO_VMS_PER_HOST" => Some("3".to_owned()),
        "AETHERV_DEMO_PASSWORD" => Some("demo-Passw0rd".to_owned()),
        "LISTEN_ADDR" => Some("127.0.0.1:0".to_owned()),
        _ => None,
    };
    let config = Config::from_sources(&env, Path::new("/nonexistent-aetherv-test")).unwrap();
    let server = Server::start(&config).await.unwrap();
    let deadline = Instant::now() + BOUND;
    while server.state().readiness.check().is_err() {
        assert!(
            Instant::now() < deadline,
            "the demo server never became ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server
}

/// A VM of `host` with its id.
async fn vm_on(app: &Router, host: &str) -> (String, Value) {
    let (_, detail) = call(app, Method::GET, &format!("/api/v1/hosts/{host}"), None).await;
    let id = detail["vms"][0]["id"].as_str().unwrap().to_owned();
    let (status, vm) = call(app, Method::GET, &format!("/api/v1/vms/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    (id, vm)
}

/// Brings the VM to `want` (`Running` or `Off`) through power jobs.
async fn power(app: &Router, id: &str, want: &str) {
    let (_, vm) = call(app, Method::GET, &format!("/api/v1/vms/{id}"), None).await;
    if vm["state"] == want {
        return;
    }
    let action = if want == "Running" { "start" } else { "stop" };
    if want == "Running" && vm["state"] != "Off" {
        run_ok(
            app,
            Method::POST,
            &format!("/api/v1/vms/{id}/actions/stop"),
            None,
        )
        .await;
    }
    run_ok(
        app,
        Method::POST,
        &format!("/api/v1/vms/{id}/actions/{action}"),
        None,
    )
    .await;
    let (_, vm) = call(app, Method::GET, &format!("/api/v1/vms/{id}"), None).await;
    assert_eq!(vm["state"], want, "{vm}");
}

fn host_of(server: &Server, name: &str) -> Arc<dyn HyperVHost> {
    Arc::clone(server.state().jobs.host(name).unwrap().1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_are_a_tree_and_follow_hyperv_rules() {
    let server = start_server().await;
    let app = server.router();
    let (id, vm) = vm_on(&app, "hv01").await;
    let vm_id: VmId = id.parse().unwrap();
    let host = host_of(&server, "hv01");
    assert_eq!(vm["checkpoint_count"], 0, "{vm}");
    power(&app, &id, "Running").await;
    let base = format!("/api/v1/vms/{id}/checkpoints");

    // A bad name is a 422 naming the field; nothing is queued.
    let (status, body) = call(&app, Method::POST, &base, Some(json!({ "name": " x" }))).await;
    refused(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        "checkpoint name",
    );
    assert_eq!(body["error"]["field"], "name");

    // Create a root and a child; the job result names the new checkpoint's id.
    let job = run_ok(
        &app,
        Method::POST,
        &base,
        Some(json!({ "name": "before upgrade" })),
    )
    .await;
    let root = job["result"]["checkpoint"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let job = run_ok(
        &app,
        Method::POST,
        &base,
        Some(json!({ "name": "after upgrade" })),
    )
    .await;
    let child = job["result"]["checkpoint"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, tree) = call(&app, Method::GET, &base, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(tree["count"], 2, "{tree}");
    assert_eq!(tree["checkpoints"].as_array().unwrap().len(), 1, "{tree}");
    assert_eq!(tree["checkpoints"][0]["id"], root.as_str());
    assert_eq!(tree["checkpoints"][0]["children"][0]["id"], child.as_str());
    assert_eq!(
        tree["checkpoints"][0]["children"][0]["parent_id"],
        root.as_str()
    );
    assert!(
        tree["checkpoints"][0]["creation_time"].is_string(),
        "{tree}"
    );
    assert!(
        matches!(
            tree["checkpoints"][0]["type"].as_str(),
            Some("standard" | "production")
        ),
        "{tree}"
    );
    let (_, vm) = call(&app, Method::GET, &format!("/api/v1/vms/{id}"), None).await;
    assert_eq!(vm["checkpoint_count"], 2, "{vm}");

    // Rule: a checkpoint applies only to a VM that is Off or Saved.
    let apply = format!("{base}/{root}/apply");
    let (status, body) = call(&app, Method::POST, &apply, Some(json!({}))).await;
    refused(
        status,
        &body,
        StatusCode::CONFLICT,
        "invalid_state",
        "Off or Saved",
    );
    let uuid = root.parse().unwrap();
    let direct = host
        .change_checkpoint(
            vm_id,
            CheckpointChange::Apply {
                checkpoint: uuid,
                turn_off: false,
            },
        )
        .await;
    assert!(
        matches!(direct, Err(aetherv_hyperv::Error::InvalidVmState { .. })),
        "the host applied a checkpoint to a running VM: {direct:?}"
    );
    // With force the VM is turned off first.
    let job = run_ok(&app, Method::POST, &apply, Some(json!({ "force": true }))).await;
    assert!(job["log"].to_string().contains("before") || job["steps"].is_array());
    let (_, vm) = call(&app, Method::GET, &format!("/api/v1/vms/{id}"), None).await;
    assert!(
        matches!(vm["state"].as_str(), Some("Off" | "Saved")),
        "{vm}"
    );

    // Rename.
    run_ok(
        &app,
        Method::PATCH,
        &format!("{base}/{child}"),
        Some(json!({ "name": "renamed" })),
    )
    .await;
    let (_, one) = call(&app, Method::GET, &format!("{base}/{child}"), None).await;
    assert_eq!(one["name"], "renamed", "{one}");

    // Deleting the subtree follows the merge; a second change meanwhile is refused naming
    // the running job.
    let (status, accepted) = call(
        &app,
        Method::DELETE,
        &format!("{base}/{root}?subtree=true"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let job_id = accepted["job_id"].as_str().unwrap().to_owned();
    let (status, body) = call(&app, Method::POST, &base, Some(json!({ "name": "during" }))).await;
    refused(status, &body, StatusCode::CONFLICT, "vm_busy", &job_id);
    let job = job_until_done(&app, &job_id).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let steps: Vec<&str> = job["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(steps.contains(&"Checkpoint.Merge"), "{steps:?}");
    assert_eq!(job["percent"], 100);
    let (_, tree) = call(&app, Method::GET, &base, None).await;
    assert_eq!(tree["count"], 0, "{tree}");

    // Rule: nothing is taken while a merge runs. A removal made on the host directly starts
    // a merge the API has not waited for; the host refuses a new checkpoint, and so does
    // the API once its inventory shows the merge.
    let made = host
        .change_checkpoint(
            vm_id,
            CheckpointChange::Create {
                name: "x".to_owned(),
            },
        )
        .await
        .unwrap();
    let made = made.checkpoint.unwrap().id;
    host.change_checkpoint(
        vm_id,
        CheckpointChange::Remove {
            checkpoint: made,
            subtree: false,
        },
    )
    .await
    .unwrap();
    let direct = host
        .change_checkpoint(
            vm_id,
            CheckpointChange::Create {
                name: "y".to_owned(),
            },
        )
        .await;
    assert!(
        matches!(direct, Err(aetherv_hyperv::Error::InvalidVmState { .. })),
        "the host took a checkpoint during a merge: {direct:?}"
    );
    let (status, _) = call(&app, Method::POST, "/api/v1/hosts/hv01/refresh", None).await;
    assert!(status.is_success());
    let (status, body) = call(&app, Method::POST, &base, Some(json!({ "name": "y" }))).await;
    refused(
        status,
        &body,
        StatusCode::CONFLICT,
        "invalid_state",
        "merging",
    );

    // Unknown checkpoints are 404.
    let (status, _) = call(
        &app,
        Method::GET,
        &format!("{base}/00000000-0000-4000-8000-000000000000"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_adapters_are_added_changed_and_removed_with_hyperv_rules() {
    let server = start_server().await;
    let app = server.router();
    let sim = server.demo_fleet().unwrap();
    // hv03 defines the networks prod (vSwitch-External, VLAN 10) and lab.
    let (id, vm) = vm_on(&app, "hv03").await;
    let vm_id: VmId = id.parse().unwrap();
    let host = host_of(&server, "hv03");
    let first = &vm["network_adapters"][0];
    assert!(first["id"].is_string(), "{vm}");
    assert_eq!(first["mac_type"], "dynamic");
    assert_eq!(first["dhcp_guard"], false);
    let base = format!("/api/v1/vms/{id}/network-adapters");
    let (status, list) = call(&app, Method::GET, &base, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        list.as_array().unwrap().len(),
        vm["network_adapters"].as_array().unwrap().len()
    );

    // Make it a running generation 2 VM.
    sim.with_state(|s| {
        s.fleet_mut().vm_mut("hv03", &id).unwrap().generation = 2;
    });
    power(&app, &id, "Running").await;

    // Bad fields are 422 naming the field.
    for (body, field) in [
        (json!({ "network": "dmz" }), "network"),
        (json!({ "network": "prod", "vlan_id": 5000 }), "vlan_id"),
        (json!({ "network": "prod", "legacy": true }), "legacy"),
        (
            json!({ "network": "prod", "mac_address": "01-00-5E-00-00-01" }),
            "mac_address",
        ),
        (
            json!({ "network": "prod", "maximum_bandwidth_bps": 10, "minimum_bandwidth_bps": 20 }),
            "minimum_bandwidth_bps",
        ),
        (json!({ "network": "prod", "colour": "red" }), "colour"),
    ] {
        let (status, refused_body) = call(&app, Method::POST, &base, Some(body.clone())).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {refused_body}"
        );
        assert_eq!(
            refused_body["error"]["field"], field,
            "{body}: {refused_body}"
        );
    }

    // Rule: a static MAC address needs the VM Off.
    let (status, body) = call(
        &app,
        Method::POST,
        &base,
        Some(json!({ "network": "prod", "mac_address": "00-15-5D-AA-BB-CC" })),
    )
    .await;
    refused(
        status,
        &body,
        StatusCode::CONFLICT,
        "invalid_state",
        "MAC address",
    );

    // A synthetic adapter is hot-added to a running generation 2 VM on a named network.
    let job = run_ok(
        &app,
        Method::POST,
        &base,
        Some(json!({ "network": "prod", "name": "backup", "dhcp_guard": true })),
    )
    .await;
    let adapter = job["result"]["adapter_id"].as_str().unwrap().to_owned();
    let one = format!("{base}/{adapter}");
    let (status, nic) = call(&app, Method::GET, &one, None).await;
    assert_eq!(status, StatusCode::OK, "{nic}");
    assert_eq!(nic["switch_name"], "vSwitch-External", "{nic}");
    assert_eq!(nic["vlan_id"], 10, "{nic}");
    assert_eq!(nic["dhcp_guard"], true, "{nic}");
    assert_eq!(nic["name"], "backup");

    // The host refuses a static MAC on a running VM too.
    let direct = host
        .change_network_adapter(
            vm_id,
            NicChange::Set {
                adapter: adapter.parse().unwrap(),
                settings: NicSettings {
                    mac: Some(MacSetting::Static("00155DAABBCC".to_owned())),
                    ..NicSettings::default()
                },
            },
        )
        .await;
    assert!(
        matches!(direct, Err(aetherv_hyperv::Error::InvalidVmState { .. })),
        "the host changed a MAC address of a running VM: {direct:?}"
    );
    let (status, body) = call(
        &app,
        Method::PATCH,
        &one,
        Some(json!({ "mac_address": "00155DAABBCC" })),
    )
    .await;
    refused(
        status,
        &body,
        StatusCode::CONFLICT,
        "invalid_state",
        "MAC address",
    );

    // Change network, VLAN, guards and bandwidth while it runs.
    run_ok(
        &app,
        Method::PATCH,
        &one,
        Some(json!({
            "network": "lab",
            "vlan_id": 42,
            "mac_spoofing": true,
            "router_guard": true,
            "dhcp_guard": false,
            "maximum_bandwidth_bps": 100_000_000u64,
            "minimum_bandwidth_bps": 10_000_000u64,
        })),
    )
    .await;
    let (_, nic) = call(&app, Method::GET, &one, None).await;
    assert_eq!(nic["switch_name"], "vSwitch-External-B", "{nic}");
    assert_eq!(nic["vlan_id"], 42, "{nic}");
    assert_eq!(nic["mac_spoofing"], true);
    assert_eq!(nic["router_guard"], true);
    assert_eq!(nic["dhcp_guard"], false);
    assert_eq!(nic["maximum_bandwidth_bps"], 100_000_000u64);
    assert_eq!(nic["minimum_bandwidth_bps"], 10_000_000u64);
    run_ok(&app, Method::PATCH, &one, Some(json!({ "vlan_id": null }))).await;
    let (_, nic) = call(&app, Method::GET, &one, None).await;
    assert!(nic["vlan_id"].is_null(), "{nic}");
    let (status, body) = call(&app, Method::PATCH, &one, Some(json!({}))).await;
    refused(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        "changes nothing",
    );

    // Off: a static MAC is accepted.
    power(&app, &id, "Off").await;
    run_ok(
        &app,
        Method::PATCH,
        &one,
        Some(json!({ "mac_address": "00-15-5D-AA-BB-CC" })),
    )
    .await;
    let (_, nic) = call(&app, Method::GET, &one, None).await;
    assert_eq!(nic["mac_address"], "00155DAABBCC", "{nic}");
    assert_eq!(nic["mac_type"], "static");

    // Rule: a generation 1 VM adds and removes adapters only while Off.
    sim.with_state(|s| {
        s.fleet_mut().vm_mut("hv03", &id).unwrap().generation = 1;
    });
    power(&app, &id, "Running").await;
    let (status, body) = call(&app, Method::DELETE, &one, None).await;
    refused(
        status,
        &body,
        StatusCode::CONFLICT,
        "invalid_state",
        "generation 1",
    );
    let (status, body) = call(
        &app,
        Method::POST,
        &base,
        Some(json!({ "network": "prod" })),
    )
    .await;
    refused(
        status,
        &body,
        StatusCode::CONFLICT,
        "invalid_state",
        "generation 1",
    );
    let direct = host
        .change_network_adapter(
            vm_id,
            NicChange::Remove {
                adapter: adapter.parse().unwrap(),
            },
        )
        .await;
    assert!(
        matches!(direct, Err(aetherv_hyperv::Error::InvalidVmState { .. })),
        "the host hot-removed an adapter of a generation 1 VM: {direct:?}"
    );
    // Rule: a legacy adapter only while Off (generation 1).
    let (status, body) = call(
        &app,
        Method::POST,
        &base,
        Some(json!({ "network": "prod", "legacy": true })),
    )
    .await;
    refused(
        status,
        &body,
        StatusCode::CONFLICT,
        "invalid_state",
        "legacy",
    );
    let direct = host
        .change_network_adapter(
            vm_id,
            NicChange::Add {
                name: String::new(),
                legacy: true,
                settings: NicSettings::default(),
            },
        )
        .await;
    assert!(
        matches!(direct, Err(aetherv_hyperv::Error::InvalidVmState { .. })),
        "the host added a legacy adapter to a running VM: {direct:?}"
    );

    // Off, the adapter is removed.
    power(&app, &id, "Off").await;
    run_ok(&app, Method::DELETE, &one, None).await;
    let (status, _) = call(&app, Method::GET, &one, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.shutdown().await;
}
