//! End to end: the refresher over `WinRmHyperVHost` over real WinRM (NTLM + message
//! encryption) against the simulated fleet on loopback, scripts installed. A host goes down
//! (its VMs are kept, flagged stale) and comes back (flags cleared).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aetherv_hyperv::WinRmExecutor;
use aetherv_hyperv::ops::{HyperVHost, VmId, WinRmHyperVHost};
use aetherv_hyperv::protocol::DEFAULT_INSTALL_DIRECTORY;
use aetherv_inventory::{Event, HostStatus, Notification, RefreshConfig, Refresher};
use aetherv_sim::{Credentials, FleetSpec, NewVm, SimFleet, SimOptions};
use aetherv_winrm::Client;
use tokio_util::sync::CancellationToken;

const USER: &str = "Administrator";
const PASSWORD: &str = "Sim-P@ss1";

async fn bounded<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("step did not finish within its bound")
}

fn hosts(sim: &SimFleet) -> BTreeMap<String, Arc<dyn HyperVHost>> {
    sim.hosts()
        .iter()
        .map(|h| {
            let client = Client::builder(&h.endpoint())
                .ntlm(format!("LAB\\{USER}"), PASSWORD)
                .operation_timeout(Duration::from_secs(5))
                .connect_timeout(Duration::from_secs(2))
                .build()
                .unwrap();
            let ops = WinRmHyperVHost::new(WinRmExecutor::new(
                client,
                h.name(),
                DEFAULT_INSTALL_DIRECTORY,
            ));
            (h.name().to_owned(), Arc::new(ops) as Arc<dyn HyperVHost>)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshes_the_fleet_and_survives_a_host_outage() {
    let spec = FleetSpec {
        hosts: 3,
        vms_per_host: 6,
        clusters: 1,
        seed: 6,
        ..FleetSpec::default()
    };
    let sim = bounded(SimFleet::start(
        spec,
        Credentials::new(USER, PASSWORD),
        SimOptions::default(),
    ))
    .await
    .unwrap();
    let config = RefreshConfig {
        interval: Duration::from_secs(3600),
        host_timeout: Duration::from_secs(10),
        backoff_initial: Duration::from_secs(3600),
        backoff_max: Duration::from_secs(3600),
        ..RefreshConfig::default()
    };
    let refresher = Refresher::start(&hosts(&sim), config, CancellationToken::new());
    let inventory = refresher.handle();

    let results = bounded(inventory.refresh_all()).await;
    for (host, result) in &results {
        assert!(result.is_ok(), "{host}: {result:?}");
    }
    let snap = inventory.snapshot();
    assert_eq!(snap.vm_count(), 18);
    assert_eq!(snap.clusters().count(), 1);
    for h in sim.hosts() {
        let state = snap.host(h.name()).unwrap();
        assert!(state.is_connected());
        assert!(state.facts.is_some());
        assert!(state.refresh_duration.is_some());
        for model in h.vms() {
            let vm = snap
                .vm(VmId(model.id))
                .expect("every model VM is in the inventory");
            assert_eq!(vm.vm.name, model.name);
            assert_eq!(&*vm.host, h.name());
            assert!(snap.vms_named(&model.name).any(|v| v.vm.id == vm.vm.id));
        }
    }

    // hv02 goes down: marked disconnected, its VMs kept and flagged stale.
    let mut changes = inventory.subscribe();
    let hv02 = sim.host("hv02").unwrap();
    hv02.go_down().await;
    let err = bounded(inventory.refresh_host("hv02")).await.unwrap_err();
    let snap = inventory.snapshot();
    let state = snap.host("hv02").unwrap();
    assert_eq!(state.status, HostStatus::Disconnected, "{err}");
    assert!(state.last_error.is_some());
    assert_eq!(snap.vms_on("hv02").count(), 6);
    assert!(snap.vms_on("hv02").all(|v| v.stale));
    assert!(snap.vms_on("hv01").all(|v| !v.stale));
    assert_eq!(snap.vm_count(), 18);
    match changes.try_recv() {
        Some(Notification::Change(c)) => assert_eq!(
            c.event,
            Event::HostDisconnected {
                host: "hv02".into(),
                error: state.last_error.clone().unwrap()
            }
        ),
        other => panic!("{other:?}"),
    }

    // It comes back: flags cleared; a VM created meanwhile appears.
    hv02.come_up().await.unwrap();
    let image = hv02.host().unwrap().images[0].name.clone();
    let mut spec = NewVm::new("e2e-new", image);
    spec.memory_startup_bytes = 1 << 30;
    let new_id = VmId(hv02.create_vm(&spec).unwrap());
    bounded(inventory.refresh_host("hv02")).await.unwrap();
    let snap = inventory.snapshot();
    assert!(snap.host("hv02").unwrap().is_connected());
    assert_eq!(snap.host("hv02").unwrap().last_error, None);
    assert!(snap.vms().all(|v| !v.stale));
    assert_eq!(snap.vm_count(), 19);
    assert_eq!(&**snap.host_of(new_id).unwrap(), "hv02");
    let mut events = Vec::new();
    while let Some(Notification::Change(c)) = changes.try_recv() {
        events.push(c.event);
    }
    assert!(events.contains(&Event::HostConnected {
        host: "hv02".into()
    }));
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::VmAdded { vm } if vm.vm.id == new_id))
    );

    // A targeted VM refresh sees a power change.
    let vm = bounded(inventory.refresh_vm(new_id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(vm.vm.name, "e2e-new");

    refresher.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_host_answers_its_digest_in_a_few_hundred_bytes() {
    use aetherv_hyperv::executor::PowerShellExecutor as _;
    use aetherv_hyperv::ops::{HyperVHostExt as _, PowerAction};

    let spec = FleetSpec {
        hosts: 1,
        vms_per_host: 40,
        clusters: 0,
        seed: 9,
        ..FleetSpec::default()
    };
    let sim = bounded(SimFleet::start(
        spec,
        Credentials::new(USER, PASSWORD),
        SimOptions::default(),
    ))
    .await
    .unwrap();
    let sim_host = &sim.hosts()[0];
    let host = hosts(&sim).into_values().next().unwrap();
    let full = bounded(host.inventory()).await.unwrap();
    assert_eq!(full.vms.len(), 40);
    assert!(!full.unchanged);
    let digest = full.digest.clone().expect("the host digests its VM set");

    // The same set: a small answer without VMs, whose digest is the one sent.
    let client = Client::builder(&sim_host.endpoint())
        .ntlm(format!("LAB\\{USER}"), PASSWORD)
        .build()
        .unwrap();
    let executor = WinRmExecutor::new(client, sim_host.name(), DEFAULT_INSTALL_DIRECTORY);
    let request = serde_json::json!({ "since": digest }).to_string();
    let raw = bounded(executor.run_script("Get-Inventory", bytes::Bytes::from(request)))
        .await
        .unwrap();
    assert!(
        raw.stdout.len() < 1024,
        "{} bytes: {}",
        raw.stdout.len(),
        raw.stdout
    );
    let again = bounded(host.inventory_since(&digest)).await.unwrap();
    assert!(again.unchanged);
    assert!(again.vms.is_empty());
    assert_eq!(again.digest.as_deref(), Some(digest.as_str()));

    // A running VM's uptime advancing keeps the digest; a power change does not.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(
        bounded(host.inventory_since(&digest))
            .await
            .unwrap()
            .unchanged
    );
    let vm = sim_host
        .vms()
        .into_iter()
        .find(|v| v.state == aetherv_hyperv::ops::VmState::Off)
        .expect("an Off VM");
    sim_host.power(&vm.name, PowerAction::Start).unwrap();
    let changed = bounded(host.inventory_since(&digest)).await.unwrap();
    assert!(!changed.unchanged);
    assert_eq!(changed.vms.len(), 40);
    assert_ne!(changed.digest, Some(digest));
    sim.shutdown().await;
}
