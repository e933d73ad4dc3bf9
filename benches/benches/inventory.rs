//! Inventory refresh at fleet scale, against the simulator over real WinRM.
//!
//! A plain `harness = false` main that prints figures:
//! - the time for a full refresh of `HOSTS` simulated hosts with `VMS` VMs each and
//!   `LATENCY_MS` of injected latency on every WS-Man request, all hosts at once (the first
//!   refresh includes each host's TCP connect and NTLM handshake and fetches facts + inventory;
//!   steady-state refreshes reuse the connections and fetch the inventory only);
//! - the heap bytes held by a store of all those VMs, scaled to 10,000 VMs (counted by an
//!   instrumented global allocator around building a store from scratch).
//!
//! `cargo bench -p aetherv-benches --bench inventory` (defaults: 200 hosts, 50 VMs, 20 ms,
//! 3 steady rounds; override with the `HOSTS`, `VMS`, `LATENCY_MS`, `ROUNDS` environment
//! variables). Uses about three file descriptors per host (listener, client and server end of
//! one connection).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::alloc::System;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aetherv_hyperv::WinRmExecutor;
use aetherv_hyperv::ops::{HyperVHost, WinRmHyperVHost};
use aetherv_hyperv::protocol::DEFAULT_INSTALL_DIRECTORY;
use aetherv_inventory::store::apply;
use aetherv_inventory::{RefreshConfig, Refresher, Snapshot, Update};
use aetherv_sim::{Credentials, FleetSpec, SimFleet, SimOptions};
use aetherv_winrm::Client;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tokio_util::sync::CancellationToken;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const USER: &str = "Administrator";
const PASSWORD: &str = "Bench-P@ss1";

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs us too: keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let hosts = env("HOSTS", if quick { 4 } else { 200 }) as usize;
    let vms = env("VMS", if quick { 5 } else { 50 }) as usize;
    let latency = Duration::from_millis(env("LATENCY_MS", 20));
    let rounds = env("ROUNDS", 3);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(hosts, vms, latency, rounds));
}

async fn run(hosts: usize, vms: usize, latency: Duration, rounds: u64) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "inventory refresh: {hosts} hosts x {vms} VMs, {} ms latency per request, {cores} cores",
        latency.as_millis()
    );
    let spec = FleetSpec {
        hosts,
        vms_per_host: vms,
        clusters: hosts.div_ceil(16),
        seed: 200,
        ..FleetSpec::default()
    };
    let options = SimOptions {
        latency: Some(latency),
        ..SimOptions::default()
    };
    let started = Instant::now();
    let sim = SimFleet::start(spec, Credentials::new(USER, PASSWORD), options)
        .await
        .unwrap();
    println!("  fleet started in {:.2?}", started.elapsed());

    let targets: BTreeMap<String, Arc<dyn HyperVHost>> = sim
        .hosts()
        .iter()
        .map(|h| {
            let client = Client::builder(&h.endpoint())
                .ntlm(USER, PASSWORD)
                .operation_timeout(Duration::from_secs(30))
                .connect_timeout(Duration::from_secs(10))
                .build()
                .unwrap();
            let ops = WinRmHyperVHost::new(WinRmExecutor::new(
                client,
                h.name(),
                DEFAULT_INSTALL_DIRECTORY,
            ));
            (h.name().to_owned(), Arc::new(ops) as Arc<dyn HyperVHost>)
        })
        .collect();
    let config = RefreshConfig {
        interval: Duration::from_secs(3600),
        host_timeout: Duration::from_secs(60),
        max_concurrent: hosts.max(1),
        backoff_initial: Duration::from_secs(3600),
        backoff_max: Duration::from_secs(3600),
        ..RefreshConfig::default()
    };
    let refresher = Refresher::start(&targets, config, CancellationToken::new());
    let inventory = refresher.handle();

    let t = Instant::now();
    let results = inventory.refresh_all().await;
    let first = t.elapsed();
    let failed: Vec<_> = results.iter().filter(|(_, r)| r.is_err()).collect();
    assert!(failed.is_empty(), "failed hosts: {failed:?}");
    let snap = inventory.snapshot();
    assert_eq!(snap.vm_count(), hosts * vms);
    println!(
        "  first refresh (connect + NTLM + facts + inventory): {:.0} ms for {} VMs",
        first.as_secs_f64() * 1e3,
        snap.vm_count()
    );
    let mut steady = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let results = inventory.refresh_all().await;
        steady.push(t.elapsed());
        assert!(results.iter().all(|(_, r)| r.is_ok()));
    }
    steady.sort();
    if let (Some(min), Some(max)) = (steady.first(), steady.last()) {
        println!(
            "  steady-state refresh (inventory only), {rounds} rounds: min {:.0} ms, median {:.0} ms, max {:.0} ms",
            min.as_secs_f64() * 1e3,
            steady[steady.len() / 2].as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3
        );
    }
    let slowest = inventory
        .snapshot()
        .hosts()
        .filter_map(|h| h.refresh_duration)
        .max()
        .unwrap_or_default();
    println!(
        "  slowest single host refresh in the last round: {:.0} ms; open fds: {}",
        slowest.as_secs_f64() * 1e3,
        open_fds()
    );

    // Memory: build a store of the same VMs from scratch under the counting allocator.
    let snap = inventory.snapshot();
    let sources: Vec<_> = snap
        .hosts()
        .map(|h| {
            (
                h.name.clone(),
                h.facts.as_deref().cloned(),
                h.vms.values().map(|v| v.vm.clone()).collect::<Vec<_>>(),
            )
        })
        .collect();
    let region = Region::new(GLOBAL);
    let updates: Vec<Update> = sources
        .iter()
        .map(|(host, facts, vms)| Update::Refreshed {
            host: host.clone(),
            facts: facts.clone(),
            vms: vms.clone(),
            at: SystemTime::now(),
            took: Duration::ZERO,
        })
        .collect();
    let (built, events) = apply(&Snapshot::new(), updates);
    drop(events);
    let stats = region.change();
    let held = stats.bytes_allocated as i128 - stats.bytes_deallocated as i128
        + stats.bytes_reallocated as i128;
    let count = built.vm_count().max(1);
    println!(
        "  store memory: {:.1} MB for {} VMs = {:.1} MB per 10,000 VMs ({} bytes per VM, facts of {} hosts included)",
        held as f64 / 1e6,
        built.vm_count(),
        held as f64 / 1e6 * 10_000.0 / count as f64,
        held / count as i128,
        sources.len()
    );
    drop(built);

    refresher.shutdown().await;
    sim.shutdown().await;
}
