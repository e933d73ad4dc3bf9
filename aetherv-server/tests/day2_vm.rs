//! Day-2 operations through the demo server: the VM view's settings, `PATCH
//! /api/v1/vms/{id}`, the disk routes and the console details. Each of Hyper-V's refusal
//! rules has a case here against the simulated host (which enforces the same rules on its
//! own), so removing the API's check would turn a 409 into a queued job and fail the test.
//! VMs are put into the state a case needs through the simulator, then the host's inventory
//! is refreshed.
//!
//! Every answer is checked against the OpenAPI document. The bound only keeps a broken build
//! from hanging the run; nothing asserts speed.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use aetherv_hyperv::ops::VmState;
use aetherv_server::config::Config;
use aetherv_server::startup::Server;
use aetherv_sim::{ControllerType, SimFleet};
use axum::Router;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

mod support;
use support::contract;

const BOUND: Duration = Duration::from_secs(120);
const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;
const HOST: &str = "hv01";

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

async fn start() -> Server {
    let env = |name: &str| match name {
        "DEMO_VMS_PER_HOST" => Some("4".to_owned()),
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

/// Changes VM `vm` on the simulated host and refreshes the server's inventory of it.
async fn set_vm(
    app: &Router,
    sim: &SimFleet,
    vm: &str,
    change: impl FnOnce(&mut aetherv_sim::SimVm),
) {
    sim.with_state(|s| change(s.fleet_mut().vm_mut(HOST, vm).unwrap()));
    let (status, body) = call(
        app,
        Method::POST,
        &format!("/api/v1/hosts/{HOST}/refresh"),
        None,
    )
    .await;
    assert!(status.is_success(), "{body}");
}

fn running_dynamic(vm: &mut aetherv_sim::SimVm) {
    vm.state = VmState::Running;
    vm.processor_count = 2;
    vm.memory.dynamic = true;
    vm.memory.startup_bytes = 2 * GIB;
    vm.memory.minimum_bytes = GIB;
    vm.memory.maximum_bytes = 4 * GIB;
    vm.memory.assigned_bytes = 2 * GIB;
}

fn off_static(vm: &mut aetherv_sim::SimVm) {
    vm.state = VmState::Off;
    vm.generation = 2;
    vm.processor_count = 2;
    vm.memory.dynamic = false;
    vm.memory.startup_bytes = 2 * GIB;
    vm.memory.minimum_bytes = 2 * GIB;
    vm.memory.maximum_bytes = 2 * GIB;
    vm.memory.assigned_bytes = 0;
}

async fn refused(
    app: &Router,
    method: Method,
    path: &str,
    body: Option<Value>,
    code: &str,
) -> String {
    let (status, answer) = call(app, method, path, body).await;
    assert_eq!(status, StatusCode::CONFLICT, "{path}: {answer}");
    assert_eq!(answer["error"]["code"], code, "{answer}");
    answer["error"]["message"].as_str().unwrap().to_owned()
}

async fn accepted_job(app: &Router, method: Method, path: &str, body: Option<Value>) -> Value {
    let (status, answer) = call(app, method, path, body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{path}: {answer}");
    job_until_done(app, answer["job_id"].as_str().unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edit_refuses_what_hyperv_refuses_and_logs_before_and_after() {
    let server = start().await;
    let app = server.router();
    let sim = server.demo_fleet().unwrap();
    let vms = sim.host(HOST).unwrap().vms();
    let id = vms[0].id.to_string();
    let path = format!("/api/v1/vms/{id}");

    // The view carries the settings an edit needs.
    set_vm(&app, sim, &id, |vm| {
        running_dynamic(vm);
        vm.generation = 2;
        vm.firmware.tpm = false;
    })
    .await;
    let (_, view) = call(&app, Method::GET, &path, None).await;
    assert_eq!(view["dynamic_memory"], true, "{view}");
    assert_eq!(view["memory_minimum_bytes"], GIB);
    assert_eq!(view["tpm_enabled"], false);
    assert!(view["secure_boot"].is_boolean(), "{view}");
    assert_eq!(view["automatic_start_action"], "start_if_running");
    assert_eq!(view["automatic_stop_action"], "save");
    assert!(
        view["disks"][0]["id"]
            .as_str()
            .unwrap()
            .starts_with("scsi-0-"),
        "{view}"
    );

    // Running: processor count, dynamic memory on/off, Secure Boot, vTPM and the stop action
    // need the VM Off.
    for body in [
        json!({"processor_count": 3}),
        json!({"dynamic_memory": false}),
        json!({"secure_boot": false}),
        json!({"tpm_enabled": true}),
        json!({"automatic_stop_action": "shutdown"}),
    ] {
        let message = refused(
            &app,
            Method::PATCH,
            &path,
            Some(body.clone()),
            "requires_off",
        )
        .await;
        assert!(message.contains("Off"), "{body}: {message}");
    }
    // Running with dynamic memory: only within the range, which may only widen.
    let message = refused(
        &app,
        Method::PATCH,
        &path,
        Some(json!({"memory_startup_bytes": 6 * GIB})),
        "memory_outside_dynamic_range",
    )
    .await;
    assert!(message.contains(&(6 * GIB).to_string()), "{message}");
    refused(
        &app,
        Method::PATCH,
        &path,
        Some(json!({"memory_minimum_bytes": 1536 * MIB})),
        "memory_range_narrowed",
    )
    .await;
    // Within the range it is a runtime resize, and the log shows before and after.
    let job = accepted_job(
        &app,
        Method::PATCH,
        &path,
        Some(
            json!({"memory_startup_bytes": 3 * GIB, "memory_maximum_bytes": 8 * GIB,
            "notes": "owner: team-a", "automatic_start_action": "start"}),
        ),
    )
    .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["type"], "edit", "{job}");
    let log = job_log(&app, job["id"].as_str().unwrap()).await;
    assert!(
        log.contains(&format!("memory_startup_bytes: {} -> {}", 2 * GIB, 3 * GIB)),
        "{log}"
    );
    assert!(
        log.contains(r#"automatic_start_action: \"start_if_running\" -> \"start\""#),
        "{log}"
    );
    let simulated = sim.host(HOST).unwrap().vm(&id).unwrap();
    assert_eq!(simulated.memory.startup_bytes, 3 * GIB);
    assert_eq!(simulated.memory.maximum_bytes, 8 * GIB);

    // Running with static memory: no memory change at all.
    set_vm(&app, sim, &id, |vm| {
        vm.state = VmState::Running;
        vm.memory.dynamic = false;
        vm.memory.minimum_bytes = vm.memory.startup_bytes;
        vm.memory.maximum_bytes = vm.memory.startup_bytes;
    })
    .await;
    refused(
        &app,
        Method::PATCH,
        &path,
        Some(json!({"memory_startup_bytes": 4 * GIB})),
        "requires_off",
    )
    .await;
    // Saved: no processor or memory change either (Hyper-V keeps them with the saved state).
    set_vm(&app, sim, &id, |vm| {
        vm.state = VmState::Saved;
        vm.processor_count = 2;
    })
    .await;
    refused(
        &app,
        Method::PATCH,
        &path,
        Some(json!({"processor_count": 4})),
        "requires_off",
    )
    .await;

    // Generation 1 has no Secure Boot or vTPM, whatever the state.
    set_vm(&app, sim, &id, |vm| {
        off_static(vm);
        vm.generation = 1;
    })
    .await;
    refused(
        &app,
        Method::PATCH,
        &path,
        Some(json!({"secure_boot": true})),
        "generation1_firmware",
    )
    .await;

    // Off: everything changes; the project's marker stays apart from the user's notes.
    set_vm(&app, sim, &id, |vm| {
        off_static(vm);
        vm.notes = "aetherv-provisioned:job-1".to_owned();
    })
    .await;
    let job = accepted_job(
        &app,
        Method::PATCH,
        &path,
        Some(
            json!({"processor_count": 4, "dynamic_memory": true, "memory_minimum_bytes": GIB,
            "memory_maximum_bytes": 4 * GIB, "notes": "db server", "secure_boot": false,
            "tpm_enabled": true, "automatic_stop_action": "shutdown"}),
        ),
    )
    .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(
        job["result"]["changed"]["processor_count"]["before"], 2,
        "{job}"
    );
    assert_eq!(
        job["result"]["changed"]["processor_count"]["after"], 4,
        "{job}"
    );
    let log = job_log(&app, job["id"].as_str().unwrap()).await;
    assert!(log.contains("processor_count: 2 -> 4"), "{log}");
    let (_, view) = call(&app, Method::GET, &path, None).await;
    assert_eq!(view["processor_count"], 4);
    assert_eq!(view["dynamic_memory"], true);
    assert_eq!(view["user_notes"], "db server", "{view}");
    assert_eq!(
        view["project_marker"], "aetherv-provisioned:job-1",
        "{view}"
    );
    assert_eq!(view["tpm_enabled"], true);
    assert_eq!(view["secure_boot"], false);
    assert_eq!(view["automatic_stop_action"], "shutdown");
    assert_eq!(view["orphaned"], false);

    // Bad fields are named.
    for (body, field) in [
        (json!({"processor_count": 0}), "processor_count"),
        (
            json!({"memory_startup_bytes": 1000}),
            "memory_startup_bytes",
        ),
        (json!({"cores": 2}), "cores"),
        (
            json!({"automatic_stop_action": "explode"}),
            "automatic_stop_action",
        ),
        (json!({"notes": "aetherv-job:x"}), "notes"),
        (json!({}), "body"),
    ] {
        let (status, answer) = call(&app, Method::PATCH, &path, Some(body.clone())).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{answer}");
    }

    // A second mutation while the first runs: 409 naming the running job.
    sim.host(HOST).unwrap().set_fault_plan(
        aetherv_sim::FaultPlan::new(1).latency(Duration::from_millis(300), Duration::ZERO),
    );
    let (status, first) = call(&app, Method::PATCH, &path, Some(json!({"notes": "one"}))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    let first_id = first["job_id"].as_str().unwrap();
    let message = refused(
        &app,
        Method::PATCH,
        &path,
        Some(json!({"notes": "two"})),
        "vm_busy",
    )
    .await;
    assert!(message.contains(first_id), "{message}");
    sim.host(HOST).unwrap().clear_faults();
    assert_eq!(job_until_done(&app, first_id).await["status"], "succeeded");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disks_are_added_expanded_and_detached_by_hyperv_rules() {
    let server = start().await;
    let app = server.router();
    let sim = server.demo_fleet().unwrap();
    let vms = sim.host(HOST).unwrap().vms();
    let id = vms[1].id.to_string();
    let base = format!("/api/v1/vms/{id}/disks");
    set_vm(&app, sim, &id, |vm| {
        vm.state = VmState::Running;
        vm.generation = 2;
        vm.disks.truncate(1);
        vm.disks[0].controller_type = ControllerType::Scsi;
        vm.disks[0].controller_number = 0;
        vm.disks[0].controller_location = 0;
        vm.dvd_drives.clear();
    })
    .await;

    // A new dynamic disk goes to the first free SCSI location while the VM runs.
    let job = accepted_job(&app, Method::POST, &base, Some(json!({"size_gb": 10}))).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["type"], "disk");
    assert_eq!(job["result"]["disk_id"], "scsi-0-1", "{job}");
    assert_eq!(job["result"]["disk"]["max_size_bytes"], 10 * GIB);
    let (_, disks) = call(&app, Method::GET, &base, None).await;
    assert_eq!(disks.as_array().unwrap().len(), 2, "{disks}");
    assert_eq!(disks[1]["id"], "scsi-0-1");
    let new_path = disks[1]["path"].as_str().unwrap().to_owned();

    // Never shrink: 409 naming both sizes.
    let message = refused(
        &app,
        Method::POST,
        &format!("{base}/scsi-0-1/expand"),
        Some(json!({"size_gb": 5})),
        "disk_shrink",
    )
    .await;
    assert!(
        message.contains(&(10 * GIB).to_string()) && message.contains(&(5 * GIB).to_string()),
        "{message}"
    );
    // Growing a VHDX on SCSI works online.
    let job = accepted_job(
        &app,
        Method::POST,
        &format!("{base}/scsi-0-1/expand"),
        Some(json!({"size_gb": 20})),
    )
    .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["result"]["disk"]["max_size_bytes"], 20 * GIB, "{job}");
    let log = job_log(&app, job["id"].as_str().unwrap()).await;
    assert!(
        log.contains(&format!("max_size_bytes: {} -> {}", 10 * GIB, 20 * GIB)),
        "{log}"
    );

    // The boot disk needs force; a shared disk is never detached.
    refused(
        &app,
        Method::DELETE,
        &format!("{base}/scsi-0-0"),
        None,
        "last_boot_disk",
    )
    .await;
    set_vm(&app, sim, &id, |vm| vm.disks[1].shared = true).await;
    refused(
        &app,
        Method::DELETE,
        &format!("{base}/scsi-0-1?delete_file=true"),
        None,
        "shared_disk",
    )
    .await;
    set_vm(&app, sim, &id, |vm| vm.disks[1].shared = false).await;
    // Detach and delete the file.
    let job = accepted_job(
        &app,
        Method::DELETE,
        &format!("{base}/scsi-0-1?delete_file=true"),
        None,
    )
    .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["result"]["deleted"], true, "{job}");
    assert!(!sim.with_state(|s| s.loose_path_exists(HOST, &new_path)));
    assert_eq!(sim.host(HOST).unwrap().vm(&id).unwrap().disks.len(), 1);

    // A new disk that cannot be attached is deleted again.
    sim.host(HOST)
        .unwrap()
        .set_fault_plan(aetherv_sim::FaultPlan::new(2).rule(
            aetherv_sim::Fault::FailCommand {
                pattern: "Add-ManagedVmDisk".to_owned(),
                exit_code: 1,
                message: "attach failed".to_owned(),
            },
            aetherv_sim::Trigger::FirstN(1),
        ));
    let job = accepted_job(
        &app,
        Method::POST,
        &base,
        Some(json!({"size_gb": 4, "type": "fixed"})),
    )
    .await;
    sim.host(HOST).unwrap().clear_faults();
    assert_eq!(job["status"], "failed", "{job}");
    assert!(job["error"].as_str().unwrap().contains("deleted"), "{job}");
    let attempted = job["parameters"]["path"].as_str().unwrap().to_owned();
    assert!(
        !sim.with_state(|s| s.loose_path_exists(HOST, &attempted)),
        "{attempted} was left"
    );

    // IDE disks of a running VM are neither resized nor detached; a VM without a SCSI
    // controller takes no new disk.
    set_vm(&app, sim, &id, |vm| {
        vm.generation = 1;
        vm.disks[0].controller_type = ControllerType::Ide;
        vm.disks.push(aetherv_sim::VirtualDisk {
            path: format!(r"{}\data.vhdx", vm.path),
            controller_type: ControllerType::Ide,
            controller_number: 0,
            controller_location: 1,
            disk_type: aetherv_sim::DiskType::Dynamic,
            max_size_bytes: 8 * GIB,
            file_size_bytes: GIB,
            shared: false,
        });
    })
    .await;
    refused(
        &app,
        Method::POST,
        &format!("{base}/ide-0-1/expand"),
        Some(json!({"size_gb": 16})),
        "ide_disk_running",
    )
    .await;
    refused(
        &app,
        Method::DELETE,
        &format!("{base}/ide-0-1"),
        None,
        "ide_disk_running",
    )
    .await;
    refused(
        &app,
        Method::POST,
        &base,
        Some(json!({"size_gb": 1})),
        "no_free_scsi_slot",
    )
    .await;

    // Bad requests name the field; unknown disks are 404.
    for (body, field) in [
        (json!({"size_gb": 0}), "size_gb"),
        (json!({}), "size_gb"),
        (
            json!({"size_gb": 1, "storage_class": "nope"}),
            "storage_class",
        ),
        (json!({"path": "relative.vhdx"}), "path"),
    ] {
        let (status, answer) = call(&app, Method::POST, &base, Some(body.clone())).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{answer}");
    }
    let (status, _) = call(&app, Method::DELETE, &format!("{base}/scsi-3-9"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_details_name_host_id_vmconnect_and_the_guest_address() {
    let server = start().await;
    let app = server.router();
    let sim = server.demo_fleet().unwrap();
    let id = sim.host(HOST).unwrap().vms()[2].id.to_string();
    set_vm(&app, sim, &id, |vm| {
        vm.state = VmState::Running;
        vm.nics[0].ip_addresses = vec!["fe80::5".to_owned(), "10.1.2.3".to_owned()];
    })
    .await;
    let (status, console) = call(
        &app,
        Method::GET,
        &format!("/api/v1/vms/{id}/console"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{console}");
    assert_eq!(console["host"], HOST);
    assert_eq!(console["vm_id"], id.as_str());
    assert_eq!(
        console["vmconnect"],
        format!("vmconnect.exe {HOST} -G {id}")
    );
    assert_eq!(console["rdp_address"], "10.1.2.3");
    set_vm(&app, sim, &id, |vm| {
        vm.state = VmState::Off;
        vm.nics[0].ip_addresses.clear();
    })
    .await;
    let (_, console) = call(
        &app,
        Method::GET,
        &format!("/api/v1/vms/{id}/console"),
        None,
    )
    .await;
    assert_eq!(console["rdp_address"], Value::Null);
    let (status, _) = call(
        &app,
        Method::GET,
        "/api/v1/vms/00000000-0000-0000-0000-000000000000/console",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshing_the_inventory_reads_every_host_and_names_those_that_fail() {
    let server = start().await;
    let app = server.router();
    let sim = server.demo_fleet().unwrap();
    let hosts = sim.hosts().len();
    let (status, list) = call(&app, Method::GET, "/api/v1/vms?limit=all", None).await;
    assert_eq!(status, StatusCode::OK);
    let id = list["vms"][0]["id"].as_str().unwrap().to_owned();
    let on = list["vms"][0]["host"].as_str().unwrap().to_owned();

    // A change made on a host behind the server's back shows after one refresh of everything.
    sim.with_state(|s| s.fleet_mut().vm_mut(&on, &id).unwrap().notes = "seen".into());
    let (status, refreshed) = call(&app, Method::POST, "/api/v1/inventory/refresh", None).await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    assert_eq!(refreshed["hosts"], hosts, "{refreshed}");
    assert_eq!(refreshed["connected"], hosts, "{refreshed}");
    assert_eq!(refreshed["failed"], json!([]), "{refreshed}");
    assert!(refreshed["took_ms"].is_u64(), "{refreshed}");
    assert_eq!(refreshed["complete"], true, "{refreshed}");
    let (_, vm) = call(&app, Method::GET, &format!("/api/v1/vms/{id}"), None).await;
    assert_eq!(vm["notes"], "seen", "{vm}");

    // A host whose inventory fails is named with the reason its record gives.
    let failing = sim.hosts()[1].name().to_owned();
    sim.host(&failing)
        .unwrap()
        .set_fault_plan(aetherv_sim::FaultPlan::new(3).rule(
            aetherv_sim::Fault::FailCommand {
                pattern: "Get-Inventory".to_owned(),
                exit_code: 1,
                message: "inventory broke".to_owned(),
            },
            aetherv_sim::Trigger::Always,
        ));
    let (status, refreshed) = call(&app, Method::POST, "/api/v1/inventory/refresh", None).await;
    sim.host(&failing).unwrap().clear_faults();
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    assert_eq!(refreshed["connected"], hosts - 1, "{refreshed}");
    assert_eq!(refreshed["complete"], true, "{refreshed}");
    let failed = refreshed["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{refreshed}");
    assert_eq!(failed[0]["host"], failing.as_str(), "{refreshed}");
    assert!(
        failed[0]["error"]
            .as_str()
            .unwrap()
            .contains("inventory broke"),
        "{refreshed}"
    );
    server.shutdown().await;
}
