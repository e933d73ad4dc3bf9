//! VM migration and placement through the demo server against the simulated fleet, which
//! follows Hyper-V's rules on its own (moves take time proportional to memory, Compare-VM
//! refuses a foreign processor or too little memory, cluster roles move with the cluster's own
//! role move, a move failing halfway leaves partly copied files on the target). Each case
//! would fail if the product broke one of those rules: a 409 would become a queued job, a VM
//! would be left half-moved, a clustered VM would be moved with Move-VM (the simulated host
//! refuses it).
//!
//! Every answer is checked against the OpenAPI document. The bound only keeps a broken build
//! from hanging the run; nothing asserts speed.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use aetherv_hyperv::ops::VmState;
use aetherv_server::config::Config;
use aetherv_server::startup::Server;
use aetherv_sim::{Fault, FaultPlan, MigrationState, Processor, SimFleet, Trigger};
use axum::Router;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

mod support;
use support::contract;

const BOUND: Duration = Duration::from_secs(120);
const GIB: u64 = 1 << 30;

async fn call(
    app: &Router,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    contract::call_checked(app, method, path, body).await
}

async fn start(clusters: &str, ms_per_gib: &str) -> Server {
    let clusters = clusters.to_owned();
    let ms = ms_per_gib.to_owned();
    let env = move |name: &str| match name {
        "DEMO_VMS_PER_HOST" => Some("3".to_owned()),
        "DEMO_HOSTS" => Some("4".to_owned()),
        "DEMO_CLUSTERS" => Some(clusters.clone()),
        "DEMO_MIGRATION_MS_PER_GIB" => Some(ms.clone()),
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

async fn refresh(app: &Router, host: &str) {
    let (status, body) = call(
        app,
        Method::POST,
        &format!("/api/v1/hosts/{host}/refresh"),
        None,
    )
    .await;
    assert!(status.is_success(), "{body}");
}

/// A VM on `host` made small and running (so moves are quick), optionally clustered; the
/// server's inventory is refreshed. Returns its id.
async fn prepare_vm(app: &Router, sim: &SimFleet, host: &str, clustered: bool, gib: u64) -> String {
    let id = sim.host(host).unwrap().vms()[0].id.to_string();
    sim.with_state(|s| {
        let vm = s.fleet_mut().vm_mut(host, &id).unwrap();
        vm.state = VmState::Running;
        vm.memory.dynamic = false;
        vm.memory.startup_bytes = gib * GIB;
        vm.memory.minimum_bytes = gib * GIB;
        vm.memory.maximum_bytes = gib * GIB;
        vm.memory.assigned_bytes = gib * GIB;
        vm.clustered = clustered;
        vm.disks.truncate(1);
        if let Some(disk) = vm.disks.first_mut() {
            disk.file_size_bytes = 4 * GIB;
        }
    });
    refresh(app, host).await;
    id
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
        tokio::time::sleep(Duration::from_millis(50)).await;
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

fn migrate_path(id: &str) -> String {
    format!("/api/v1/vms/{id}/actions/migrate")
}

async fn migrate(app: &Router, id: &str, body: Value) -> Value {
    let (status, answer) = call(app, Method::POST, &migrate_path(id), Some(body)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    job_until_done(app, answer["job_id"].as_str().unwrap()).await
}

fn host_of(sim: &SimFleet, id: &str) -> Option<String> {
    sim.snapshot()
        .hosts
        .iter()
        .find(|h| h.vm(id).is_some())
        .map(|h| h.name.clone())
}

/// The demo's first cluster's members, in name order.
fn cluster_hosts(sim: &SimFleet, of: &str) -> Vec<String> {
    let fleet = sim.snapshot();
    let cluster = fleet.host(of).unwrap().cluster.clone();
    let mut hosts: Vec<String> = fleet
        .hosts
        .iter()
        .filter(|h| h.cluster == cluster)
        .map(|h| h.name.clone())
        .collect();
    hosts.sort();
    hosts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_ranks_hosts_with_figures_and_refusals() {
    let server = start("2", "20").await;
    let app = server.router();
    let (status, view) = call(
        &app,
        Method::POST,
        "/api/v1/placement",
        Some(json!({"memory_bytes": 4 * GIB, "image": "Ubuntu 24.04 LTS"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    let candidates = view["candidates"].as_array().unwrap();
    assert_eq!(candidates.len(), 4, "{view}");
    let free: Vec<u64> = candidates
        .iter()
        .map(|c| c["memory_available_bytes"].as_u64().unwrap())
        .collect();
    assert!(free.windows(2).all(|w| w[0] >= w[1]), "{free:?}");
    assert_eq!(view["chosen"], candidates[0]["host"]);
    assert_eq!(
        candidates[0]["memory_after_bytes"].as_u64().unwrap(),
        free[0] - 4 * GIB
    );

    // Memory decides: more than any host has is refused everywhere, with the figure.
    let (_, none) = call(
        &app,
        Method::POST,
        "/api/v1/placement",
        Some(json!({"memory_bytes": 4096 * GIB})),
    )
    .await;
    assert_eq!(none["chosen"], Value::Null);
    assert!(
        none["refused"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["reason"] == "memory" && r["message"].as_str().unwrap().contains("GiB")),
        "{none}"
    );
    // A cluster narrows the members; exclude leaves a host out with its reason.
    let best = view["chosen"].as_str().unwrap().to_owned();
    let (_, narrowed) = call(
        &app,
        Method::POST,
        "/api/v1/placement",
        Some(json!({"memory_bytes": 4 * GIB, "cluster": "hvclu01", "exclude": [best]})),
    )
    .await;
    let members = cluster_hosts(server.demo_fleet().unwrap(), "hv01");
    let total = narrowed["candidates"].as_array().unwrap().len()
        + narrowed["refused"].as_array().unwrap().len();
    assert_eq!(total, members.len(), "{narrowed}");
    assert_ne!(narrowed["chosen"], json!(best));
    // Bad input names the field; an unknown cluster is a 404 naming it.
    let (status, bad) = call(
        &app,
        Method::POST,
        "/api/v1/placement",
        Some(json!({"memory_bytes": 1})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad["error"]["field"], "memory_bytes");
    let (status, bad) = call(
        &app,
        Method::POST,
        "/api/v1/placement",
        Some(json!({"memory_bytes": GIB, "cluster": "nope"})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(bad["error"]["field"], "cluster");

    // Provisioning's target_cluster takes the same choice as the route.
    let (_, chosen) = call(
        &app,
        Method::POST,
        "/api/v1/placement",
        Some(json!({"memory_bytes": 2 * GIB, "cluster": "hvclu01",
                    "image": "Ubuntu 24.04 LTS", "disk_bytes": 8 * GIB})),
    )
    .await;
    let (status, queued) = call(
        &app,
        Method::POST,
        "/api/v1/vms/create",
        Some(json!({"target_cluster": "hvclu01", "vm_name": "placed-01",
                    "image_name": "Ubuntu 24.04 LTS", "gb_ram": 2, "cpu_cores": 1,
                    "guest_la_uid": "admin", "guest_la_pw": "Sup3r-Secret!"})),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
    let (_, job) = call(
        &app,
        Method::GET,
        &format!("/api/v1/jobs/{}", queued["job_id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(job["target_host"], chosen["chosen"], "{job} {chosen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_migration_moves_a_cluster_role_within_its_cluster_with_progress() {
    let server = start("1", "200").await;
    let app = server.router();
    let sim = server.demo_fleet().unwrap();
    let id = prepare_vm(&app, sim, "hv01", true, 8).await;
    let target = cluster_hosts(sim, "hv01")[1].clone();

    // The check alone moves nothing.
    let (status, check) = call(
        &app,
        Method::POST,
        &format!("{}?dry_run=true", migrate_path(&id)),
        Some(json!({"target_host": target, "mode": "live"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{check}");
    assert_eq!(check["compatible"], true, "{check}");
    assert_eq!(check["clustered"], true);
    assert_eq!(host_of(sim, &id).as_deref(), Some("hv01"));

    // A clustered VM never moves shared-nothing.
    let (status, refused) = call(
        &app,
        Method::POST,
        &migrate_path(&id),
        Some(json!({"target_host": target, "mode": "shared_nothing"})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert_eq!(refused["error"]["code"], "invalid_state");

    let job = migrate(&app, &id, json!({"target_host": target, "mode": "live"})).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["type"], "migrate");
    assert_eq!(job["result"]["target_host"], json!(target));
    let log = job_log(&app, job["id"].as_str().unwrap()).await;
    assert!(log.contains("% complete"), "{log}");
    let steps: Vec<&str> = job["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(
        steps.contains(&"Migrate.Check") && steps.contains(&"Migrate.Move"),
        "{steps:?}"
    );
    // The role moved with the VM, which kept running; the API shows the new host.
    let vm = sim.host(&target).unwrap().vm(&id).unwrap();
    assert!(vm.clustered);
    assert_eq!(vm.state, VmState::Running);
    assert!(sim.host("hv01").unwrap().vm(&id).is_err());
    let (_, view) = call(&app, Method::GET, &format!("/api/v1/vms/{id}"), None).await;
    assert_eq!(view["host"], json!(target), "{view}");
    assert_eq!(view["busy_job"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incompatibilities_are_a_409_listing_each_one_before_anything_moves() {
    let server = start("1", "20").await;
    let app = server.router();
    let sim = server.demo_fleet().unwrap();
    let id = prepare_vm(&app, sim, "hv01", true, 8).await;
    let target = cluster_hosts(sim, "hv01")[1].clone();
    // The target gets another vendor's processor and too little memory.
    sim.with_state(|s| {
        let host = s.fleet_mut().host_mut(&target).unwrap();
        host.processor = Processor::amd("AMD EPYC 7763 64-Core Processor");
        host.memory_total_bytes = host.memory_reserved_bytes + host.memory_assigned_bytes() + GIB;
    });
    refresh(&app, &target).await;

    let (status, check) = call(
        &app,
        Method::POST,
        &format!("{}?dry_run=true", migrate_path(&id)),
        Some(json!({"target_host": target, "mode": "live"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(check["compatible"], false, "{check}");
    let (status, refused) = call(
        &app,
        Method::POST,
        &migrate_path(&id),
        Some(json!({"target_host": target, "mode": "live"})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert_eq!(refused["error"]["code"], "migration_incompatible");
    let details = refused["error"]["details"].as_array().unwrap();
    assert_eq!(details.len(), 2, "{refused}");
    let text = refused.to_string();
    assert!(text.contains("processor-specific features"), "{text}");
    assert!(text.contains("Not enough memory"), "{text}");
    // Nothing was queued or moved.
    let (_, jobs) = call(&app, Method::GET, "/api/v1/jobs?type=migrate", None).await;
    assert_eq!(jobs["jobs"].as_array().map_or(0, Vec::len), 0, "{jobs}");
    assert_eq!(host_of(sim, &id).as_deref(), Some("hv01"));

    // A target that is not a node of the VM's cluster, an unknown host, a missing target.
    let (status, bad) = call(
        &app,
        Method::POST,
        &migrate_path(&id),
        Some(json!({"target_host": "nowhere", "mode": "live"})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{bad}");
    assert_eq!(bad["error"]["field"], "target_host");
    let (status, bad) = call(
        &app,
        Method::POST,
        &migrate_path(&id),
        Some(json!({"mode": "live"})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    assert_eq!(bad["error"]["field"], "target_host");
    let (status, bad) = call(
        &app,
        Method::POST,
        &migrate_path(&id),
        Some(json!({"target_host": target, "mode": "teleport"})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_before_the_switch_over_keeps_the_vm_running_on_the_source() {
    // 2 s per GiB: a 16 GiB VM moves for half a minute, plenty of time to cancel.
    let server = start("1", "2000").await;
    let app = server.router();
    let sim = server.demo_fleet().unwrap();
    let id = prepare_vm(&app, sim, "hv01", true, 16).await;
    let target = cluster_hosts(sim, "hv01")[1].clone();
    let (status, answer) = call(
        &app,
        Method::POST,
        &migrate_path(&id),
        Some(json!({"target_host": target, "mode": "live"})),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let job_id = answer["job_id"].as_str().unwrap().to_owned();
    // Wait until the host's migration job runs.
    let deadline = Instant::now() + BOUND;
    loop {
        let running = sim.with_state(|s| {
            s.migration(id.parse().unwrap())
                .is_some_and(|m| m.state == MigrationState::Running)
        });
        if running {
            break;
        }
        assert!(Instant::now() < deadline, "the move never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, _) = call(
        &app,
        Method::POST,
        &format!("/api/v1/jobs/{job_id}/cancel"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let job = job_until_done(&app, &job_id).await;
    assert_eq!(job["status"], "cancelled", "{job}");
    let state = sim.with_state(|s| s.migration(id.parse().unwrap()).unwrap().state.clone());
    assert_eq!(state, MigrationState::Cancelled);
    assert_eq!(host_of(sim, &id).as_deref(), Some("hv01"));
    assert_eq!(
        sim.host("hv01").unwrap().vm(&id).unwrap().state,
        VmState::Running
    );
    let log = job_log(&app, &job_id).await;
    assert!(log.contains("cancel"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_failing_halfway_leaves_no_half_moved_vm_and_no_copies() {
    let server = start("0", "50").await;
    let app = server.router();
    let sim = server.demo_fleet().unwrap();
    let id = prepare_vm(&app, sim, "hv01", false, 4).await;
    sim.host("hv01").unwrap().set_fault_plan(
        FaultPlan::new(7).rule(Fault::FailMigration { at_percent: 50 }, Trigger::Nth(1)),
    );
    let job = migrate(
        &app,
        &id,
        json!({"target_host": "hv02", "mode": "shared_nothing"}),
    )
    .await;
    assert_eq!(job["status"], "failed", "{job}");
    assert!(
        job["error"]
            .as_str()
            .unwrap()
            .contains("failed at migration source"),
        "{job}"
    );
    // The VM runs on the source, nothing is registered on the target, and the partly copied
    // disk the simulated host left there was removed by the job.
    assert_eq!(host_of(sim, &id).as_deref(), Some("hv01"));
    assert_eq!(
        sim.host("hv01").unwrap().vm(&id).unwrap().state,
        VmState::Running
    );
    let folder = job["parameters"]["destination_path"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        !sim.with_state(|s| s.loose_path_exists("hv02", &folder)),
        "copies left in {folder}"
    );
    let removed = job["cleanup"]["removed"].to_string();
    assert!(removed.contains("Virtual Hard Disks"), "{job}");

    // The next try (the fault fired once) moves it with its storage.
    let job = migrate(
        &app,
        &id,
        json!({"target_host": "hv02", "mode": "shared_nothing"}),
    )
    .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let vm = sim.host("hv02").unwrap().vm(&id).unwrap();
    assert!(
        vm.disks[0].path.starts_with(&folder),
        "{}",
        vm.disks[0].path
    );
    assert_eq!(vm.state, VmState::Running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_and_storage_moves() {
    let server = start("0", "20").await;
    let app = server.router();
    let sim = server.demo_fleet().unwrap();
    let id = prepare_vm(&app, sim, "hv01", false, 2).await;

    // Storage: the files move to another folder on the same host; the VM keeps running.
    let root = sim.host("hv01").unwrap().host().unwrap().vm_path;
    let folder = format!(r"{root}\moved\{id}");
    let (status, bad) = call(
        &app,
        Method::POST,
        &migrate_path(&id),
        Some(json!({"mode": "storage"})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    assert_eq!(bad["error"]["field"], "destination_path");
    let job = migrate(
        &app,
        &id,
        json!({"mode": "storage", "destination_path": folder}),
    )
    .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let vm = sim.host("hv01").unwrap().vm(&id).unwrap();
    assert!(
        vm.disks[0].path.starts_with(&folder),
        "{}",
        vm.disks[0].path
    );
    assert_eq!(vm.state, VmState::Running);

    // Quick on a standalone host: saved, moved with its storage, started on the target.
    let job = migrate(&app, &id, json!({"target_host": "hv02", "mode": "quick"})).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let log = job_log(&app, job["id"].as_str().unwrap()).await;
    assert!(log.contains("saving VM"), "{log}");
    let vm = sim.host("hv02").unwrap().vm(&id).unwrap();
    assert_eq!(vm.state, VmState::Running);
    assert!(sim.host("hv01").unwrap().vm(&id).is_err());
}
