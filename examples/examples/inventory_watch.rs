//! An inventory cache over a simulated fleet, printing change events as they arrive.
//!
//! ```text
//! cargo run -p aetherv-examples --example inventory_watch
//! ```
//!
//! Starts two simulated Hyper-V hosts on loopback and an [`aetherv_inventory::Refresher`]
//! over them (one `Get-Inventory` command per host and refresh, every second here). A
//! subscriber prints every [`Event`]: first the hosts connecting and their VMs appearing, then
//! the changes this example makes while it watches:
//!
//! - it turns a running VM off through the typed host API and asks the cache to refresh just
//!   that VM (what the server does after a power action);
//! - it creates a VM directly in the simulator's model, as if someone used Hyper-V Manager;
//!   the next periodic refresh notices it.
//!
//! It exits once it has seen the new VM, or after 20 seconds.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use aetherv_hyperv::WinRmExecutor;
use aetherv_hyperv::ops::{HyperVHost, HyperVHostExt, PowerAction, VmState, WinRmHyperVHost};
use aetherv_hyperv::protocol::DEFAULT_INSTALL_DIRECTORY;
use aetherv_inventory::{CancellationToken, Event, Notification, RefreshConfig, Refresher};
use aetherv_sim::{Credentials, FleetSpec, NewVm, SimFleet, SimOptions};
use aetherv_winrm::Client;

const USER: &str = "Administrator";
const PASSWORD: &str = "Example-P@ss1";
const NEW_VM: &str = "created-behind-our-back";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let spec = FleetSpec {
        hosts: 2,
        vms_per_host: 3,
        ..FleetSpec::default()
    };
    let sim = SimFleet::start(
        spec,
        Credentials::new(USER, PASSWORD),
        SimOptions::default(),
    )
    .await?;

    // One typed host per simulated host, by name (the scripts are already installed).
    let mut hosts: BTreeMap<String, Arc<dyn HyperVHost>> = BTreeMap::new();
    for h in sim.hosts() {
        let client = Client::builder(&h.endpoint())
            .ntlm(USER, PASSWORD)
            .build()?;
        let executor = WinRmExecutor::new(client, h.name(), DEFAULT_INSTALL_DIRECTORY);
        hosts.insert(
            h.name().to_owned(),
            Arc::new(WinRmHyperVHost::new(executor)),
        );
    }

    let config = RefreshConfig {
        interval: Duration::from_secs(1),
        ..RefreshConfig::default()
    };
    let refresher = Refresher::start(&hosts, config, CancellationToken::new());
    let inventory = refresher.handle();

    // Print every change as it arrives, until the VM created below shows up.
    let mut changes = inventory.subscribe();
    let watcher = tokio::spawn(async move {
        while let Some(notification) = changes.recv().await {
            match notification {
                Notification::Change(change) => {
                    print_event(change.generation, &change.event);
                    if matches!(&change.event, Event::VmAdded { vm } if vm.vm.name == NEW_VM) {
                        return;
                    }
                }
                Notification::Lagged { missed } => {
                    println!("missed {missed} changes; resync from a snapshot")
                }
                _ => {}
            }
        }
    });

    // Wait until the first refresh is published, then turn a running VM off through the host
    // API and refresh just that VM.
    for (host, result) in inventory.refresh_all().await {
        result.map_err(|e| format!("{host}: {e}"))?;
    }
    let snapshot = inventory.snapshot();
    if let Some(vm) = snapshot
        .vms_on("hv01")
        .find(|vm| vm.vm.state == VmState::Running)
    {
        println!("-- turning {} off through the host API", vm.vm.name);
        hosts["hv01"].power(vm.vm.id, PowerAction::TurnOff).await?;
        inventory.refresh_vm(vm.vm.id).await?;
    }

    // Create a VM directly in the simulator's model; the next periodic refresh finds it.
    let hv02 = sim.host("hv02").ok_or("no simulated host hv02")?;
    let image = hv02
        .host()?
        .images
        .first()
        .map(|i| i.name.clone())
        .ok_or("no golden image")?;
    println!("-- creating {NEW_VM} on hv02 behind the cache's back");
    hv02.create_vm(&NewVm::new(NEW_VM, image))?;

    if tokio::time::timeout(Duration::from_secs(20), watcher)
        .await
        .is_err()
    {
        println!("stopped watching after 20 seconds");
    }
    let snapshot = inventory.snapshot();
    println!(
        "the cache now holds {} VMs on {} hosts",
        snapshot.vm_count(),
        snapshot.hosts().count()
    );
    refresher.shutdown().await;
    sim.shutdown().await;
    Ok(())
}

fn print_event(generation: u64, event: &Event) {
    match event {
        Event::HostConnected { host } => println!("[{generation}] host {host} connected"),
        Event::HostDisconnected { host, error } => {
            println!("[{generation}] host {host} disconnected: {error}")
        }
        Event::HostRemoved { host } => println!("[{generation}] host {host} removed"),
        Event::VmAdded { vm } => println!(
            "[{generation}] + {} on {} ({})",
            vm.vm.name, vm.host, vm.vm.state
        ),
        Event::VmChanged { before, after } => {
            println!(
                "[{generation}] ~ {} on {}: {} -> {}",
                after.vm.name, after.host, before.vm.state, after.vm.state
            );
        }
        Event::VmRemoved { vm } => println!("[{generation}] - {} on {}", vm.vm.name, vm.host),
        other => println!("[{generation}] {other:?}"),
    }
}
