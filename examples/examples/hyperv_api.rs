//! The typed Hyper-V API over real WinRM, against a simulated host.
//!
//! ```text
//! cargo run -p aetherv-examples --example hyperv_api
//! ```
//!
//! Starts one simulated Hyper-V host on loopback (a real WS-Man endpoint: NTLM with message
//! encryption), then does what an embedder does with a real host:
//!
//! 1. builds an [`aetherv_winrm::Client`], a [`WinRmExecutor`] (runs PowerShell on the host)
//!    and a [`WinRmHyperVHost`] (the typed operations);
//! 2. deploys the host scripts with a [`Deployer`] (the simulated host is fresh, like a new
//!    real one; a second run against the same host would send one version check);
//! 3. wraps the host in a [`Timeouts`] layer (every operation gets a time limit);
//! 4. lists the VMs (name, state, memory) and starts one that is Off (when every VM runs, it
//!    turns the first one off first: fine on a simulator, not on a host you care about).
//!
//! Against a real host, the code is the same with its endpoint
//! (`http://hv01.corp.example:5985/wsman`) and credentials instead of the simulator's. A server
//! would rather put a [`aetherv_hyperv::deploy::DeployGate`] layer in front, which deploys
//! before the first operation.

use std::sync::Arc;
use std::time::Duration;

use aetherv_hyperv::WinRmExecutor;
use aetherv_hyperv::deploy::{Bundle, Deployer};
use aetherv_hyperv::ops::layer::{Layered, Timeouts};
use aetherv_hyperv::ops::{
    HyperVHost, HyperVHostExt, OperationKind, PowerAction, VmState, WinRmHyperVHost,
};
use aetherv_hyperv::protocol::DEFAULT_INSTALL_DIRECTORY;
use aetherv_sim::{Credentials, FleetSpec, SimFleet, SimOptions};
use aetherv_winrm::Client;

const USER: &str = "Administrator";
const PASSWORD: &str = "Example-P@ss1";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A simulated host with a few VMs, without the host scripts installed.
    let spec = FleetSpec {
        hosts: 1,
        vms_per_host: 6,
        scripts_version: None,
        ..FleetSpec::default()
    };
    let sim = SimFleet::start(
        spec,
        Credentials::new(USER, PASSWORD),
        SimOptions::default(),
    )
    .await?;
    let endpoint = sim.hosts()[0].endpoint();
    println!("simulated host hv01 at {endpoint}");

    // WinRM client -> PowerShell executor -> typed Hyper-V operations.
    let client = Client::builder(&endpoint)
        .ntlm(USER, PASSWORD)
        .connect_timeout(Duration::from_secs(5))
        .build()?;
    let executor = WinRmExecutor::new(client, "hv01", DEFAULT_INSTALL_DIRECTORY);

    // The operations run deployed scripts: deploy them (verified, once per version).
    let report = Deployer::default()
        .ensure_deployed(&executor, &Bundle::embedded(), |_progress| {})
        .await?;
    println!(
        "host scripts: {:?}, {} files written in {} commands",
        report.outcome,
        report.files_written.len(),
        report.commands
    );

    // One layer: a time limit per operation (defaults per operation kind, one overridden).
    let timeouts = Timeouts::default().with(OperationKind::Power, Duration::from_secs(60));
    let host = Layered::new(Arc::new(WinRmHyperVHost::new(executor)), timeouts);

    let facts = host.facts().await?;
    println!(
        "{}: {} logical processors, {} GiB memory",
        facts.name,
        facts.logical_processors,
        facts.memory_total_bytes >> 30
    );

    let inventory = host.inventory().await?;
    println!("{} VMs on {}:", inventory.vms.len(), host.host_name());
    for vm in &inventory.vms {
        println!(
            "  {:<24} {:<10} {:>6} MiB",
            vm.name,
            vm.state.to_string(),
            vm.memory_startup_bytes >> 20
        );
    }

    // Start a VM that is Off (turning one off first when they all run). `power` refuses an
    // action the VM's state does not allow with `Error::InvalidVmState`.
    let off = inventory.vms.iter().find(|vm| vm.state == VmState::Off);
    let vm = match off {
        Some(vm) => vm,
        None => {
            let vm = inventory.vms.first().ok_or("the host has no VMs")?;
            let outcome = host.power(vm.id, PowerAction::TurnOff).await?;
            println!(
                "turned {} off: {} -> {}",
                outcome.name, outcome.previous_state, outcome.state
            );
            vm
        }
    };
    let outcome = host.power(vm.id, PowerAction::Start).await?;
    println!(
        "started {}: {} -> {}",
        outcome.name, outcome.previous_state, outcome.state
    );

    sim.shutdown().await;
    Ok(())
}
