//! A host that freezes during a provisioning (its WinRM service accepts connections but never
//! answers, as under `SIGSTOP`), against the whole server in demo mode: the job ends failed
//! with its cleanup pending instead of waiting out every time limit, the host shows
//! disconnected with a one-line reason, the left-behind artifacts are listed under
//! `GET /api/v1/cleanup`, and once the host thaws a `POST /api/v1/hosts/{name}/refresh` brings
//! it back and the retry list removes them.
//!
//! The bounds below only keep a broken build from hanging the test run; nothing asserts how
//! fast anything was (the numbers are printed for the report).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use aetherv_server::config::Config;
use aetherv_server::startup::Server;
use aetherv_sim::{Fault, FaultPlan, Trigger};
use axum::Router;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

mod support;
use support::contract;

const BOUND: Duration = Duration::from_secs(150);

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_frozen_during_register_vm_fails_the_job_promptly_and_cleanup_waits_for_it() {
    let env = |name: &str| match name {
        "DEMO_HOSTS" => Some("1".to_owned()),
        "DEMO_VMS_PER_HOST" => Some("0".to_owned()),
        "DEMO_CLUSTERS" => Some("0".to_owned()),
        "AETHERV_DEMO_PASSWORD" => Some("demo-Passw0rd".to_owned()),
        "LISTEN_ADDR" => Some("127.0.0.1:0".to_owned()),
        _ => None,
    };
    let config = Config::from_sources(&env, Path::new("/nonexistent-aetherv-test")).unwrap();
    let server = Server::start(&config).await.unwrap();
    let app = server.router();
    wait_for("readiness", async || {
        server.state().readiness.check().is_ok()
    })
    .await;
    let sim = server.demo_fleet().unwrap();
    let host = sim.hosts()[0].name().to_owned();
    let sim_host = sim.host(&host).unwrap();

    // RegisterVM hangs on the host; once it is running, the whole host freezes.
    sim_host.set_fault_plan(FaultPlan::new(1).rule(
        Fault::HangCommand {
            pattern: "Register-ManagedVm".to_owned(),
        },
        Trigger::Always,
    ));
    let (status, accepted) = call(
        &app,
        Method::POST,
        "/api/v1/vms/create",
        Some(json!({
            "vm_name": "frozen-01",
            "hyperv_host": host,
            "image_name": "Ubuntu 24.04 LTS",
            "gb_ram": 2,
            "cpu_cores": 2,
            "guest_la_uid": "admin",
            "guest_la_pw": "Gu3st-pw-never-shown",
        })),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let job = accepted["job_id"].as_str().unwrap().to_owned();
    let job_path = format!("/api/v1/jobs/{job}");
    let mut view = Value::Null;
    wait_for("the RegisterVM step", async || {
        view = call(&app, Method::GET, &job_path, None).await.1;
        view["step"] == "Provisioning.RegisterVM" || view["status"] == "failed"
    })
    .await;
    assert_eq!(view["step"], "Provisioning.RegisterVM", "{view:#}");
    sim_host.freeze();
    let frozen_at = Instant::now();

    wait_for("the job to end", async || {
        view = call(&app, Method::GET, &job_path, None).await.1;
        view["status"] != "running" && view["status"] != "queued"
    })
    .await;
    let failed_after = frozen_at.elapsed();
    eprintln!(
        "measured: job failed {:.1} s after the host froze",
        failed_after.as_secs_f64()
    );
    assert_eq!(view["status"], "failed", "{view}");
    let left = view["cleanup"]["left_behind"].as_array().unwrap();
    assert!(!left.is_empty(), "{view}");
    let (_, logs) = call(
        &app,
        Method::GET,
        &format!("{job_path}/logs?follow=false"),
        None,
    )
    .await;
    let lines: Vec<&str> = logs["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["message"].as_str())
        .collect();
    assert!(
        lines.iter().any(|l| l.starts_with("cleanup pending: ")),
        "{lines:#?}"
    );

    // The host is marked, with one line saying why.
    let host_path = format!("/api/v1/hosts/{host}");
    let mut record = Value::Null;
    wait_for("the host to show disconnected", async || {
        record = call(&app, Method::GET, &host_path, None).await.1;
        record["status"] == "disconnected"
    })
    .await;
    let last_error = record["last_error"].as_str().unwrap();
    assert!(last_error.contains("does not answer"), "{last_error}");
    assert_eq!(
        last_error.matches("does not answer").count(),
        1,
        "{last_error}"
    );

    // With the only host disconnected, /readyz stays ready by default and is not ready in
    // strict mode.
    let (status, ready) = call(&app, Method::GET, "/readyz", None).await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    server.state().readiness.set_strict(true);
    let (status, ready) = call(&app, Method::GET, "/readyz", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{ready}");
    assert_eq!(
        ready["reason"],
        "no host is connected (1 configured); READYZ_STRICT is on"
    );

    // What the job left is on the retry list.
    let (status, pending) = call(&app, Method::GET, "/api/v1/cleanup", None).await;
    assert_eq!(status, StatusCode::OK);
    let pending = pending["pending"].as_array().unwrap().clone();
    assert_eq!(pending.len(), left.len(), "{pending:#?}");
    assert!(
        pending
            .iter()
            .all(|p| p["job_id"] == job.as_str() && p["host"] == host.as_str())
    );

    // The host comes back; a refresh brings it in and the retry list empties.
    sim_host.clear_faults();
    sim_host.thaw();
    let thawed_at = Instant::now();
    let (status, record) = call(
        &app,
        Method::POST,
        &format!("/api/v1/hosts/{host}/refresh"),
        None,
    )
    .await;
    assert!(
        status == StatusCode::OK || status == StatusCode::ACCEPTED,
        "{status} {record}"
    );
    wait_for("the host to be connected", async || {
        call(&app, Method::GET, &host_path, None).await.1["status"] == "connected"
    })
    .await;
    let (status, _) = call(&app, Method::GET, "/readyz", None).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "strict mode is ready with a connected host"
    );
    eprintln!(
        "measured: host connected {:.1} s after it thawed",
        thawed_at.elapsed().as_secs_f64()
    );
    wait_for("the retry list to empty", async || {
        let (_, pending) = call(&app, Method::GET, "/api/v1/cleanup", None).await;
        pending["pending"].as_array().unwrap().is_empty()
    })
    .await;
    assert!(sim_host.vms().iter().all(|vm| vm.name != "frozen-01"));

    let (status, _) = call(
        &app,
        Method::POST,
        "/api/v1/hosts/no-such-host/refresh",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.shutdown().await;
}
