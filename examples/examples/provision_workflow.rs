//! A provisioning workflow driven directly, without the server.
//!
//! ```text
//! cargo run -p aetherv-examples --example provision_workflow
//! ```
//!
//! Validates a job request (schema v1) with [`JobRequest`], showing first how an invalid one
//! is refused, then runs [`provision`] against a simulated Hyper-V host over real WinRM. The
//! simulated VM's guest agent answers the KVP handshake (it publishes its public key, receives
//! the encrypted provisioning data and reports it applied), so the job runs every step:
//! pre-checks, image and ISO copies, VM registration, the key exchange, publication and the
//! wait for the guest. Job events (progress and log lines, never secrets) are printed as they
//! come, then the result.

use std::sync::Arc;
use std::time::Duration;

use aetherv_hyperv::WinRmExecutor;
use aetherv_hyperv::ops::{HyperVHost, HyperVHostExt, WinRmHyperVHost};
use aetherv_hyperv::protocol::DEFAULT_INSTALL_DIRECTORY;
use aetherv_provision::job::{JobEvent, JobId};
use aetherv_provision::provision::{ProvisionConfig, provision};
use aetherv_provision::schema::JobRequest;
use aetherv_sim::{Credentials, FleetSpec, SimFleet, SimOptions};
use aetherv_winrm::Client;
use tokio_util::sync::CancellationToken;

const USER: &str = "Administrator";
const PASSWORD: &str = "Example-P@ss1";

/// A Linux VM with an SSH key for Ansible (schema v1, as POST /v1/jobs takes it).
const REQUEST: &str = r#"{
  "schema_version": 1,
  "target_host": "hv01",
  "values": {
    "vm_name": "app-01",
    "image_name": "Ubuntu 24.04 LTS",
    "gb_ram": 2,
    "cpu_cores": 2,
    "guest_la_uid": "admin",
    "guest_la_pw": "Never-Printed-1",
    "cnf_ansible_ssh_user": "ansible",
    "cnf_ansible_ssh_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleKeyNotRealExampleKeyNotReal ansible@ctl"
  }
}"#;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Validation happens before anything touches a host.
    let invalid = REQUEST.replace("\"gb_ram\": 2", "\"gb_ram\": 0");
    if let Err(e) = JobRequest::from_json(&invalid) {
        println!("refused: {e}");
    }
    let request = JobRequest::from_json(REQUEST)?;
    println!("validated (secrets redacted): {}", request.redacted());

    // A simulated host (scripts installed, no VMs yet) and the typed API over WinRM.
    let spec = FleetSpec {
        hosts: 1,
        vms_per_host: 0,
        ..FleetSpec::default()
    };
    let sim = SimFleet::start(
        spec,
        Credentials::new(USER, PASSWORD),
        SimOptions::default(),
    )
    .await?;
    let client = Client::builder(&sim.hosts()[0].endpoint())
        .ntlm(USER, PASSWORD)
        .build()?;
    let host: Arc<dyn HyperVHost> = Arc::new(WinRmHyperVHost::new(WinRmExecutor::new(
        client,
        "hv01",
        DEFAULT_INSTALL_DIRECTORY,
    )));

    // The pipeline reports through a sink; a server would store and stream these events.
    let print = |event: JobEvent| match event {
        JobEvent::Progress { at, progress } => {
            println!(
                "{:>7.2}s {:>3}% {} {}",
                at.as_secs_f64(),
                progress.percent,
                progress.step,
                progress.message
            );
        }
        JobEvent::Log { at, level, message } => {
            println!("{:>7.2}s {level:?}: {message}", at.as_secs_f64())
        }
        JobEvent::StepEnded { at, step, end } => {
            println!("{:>7.2}s {step} {end:?}", at.as_secs_f64())
        }
        _ => {}
    };
    let config = ProvisionConfig {
        poll_interval: Duration::from_millis(100),
        ..ProvisionConfig::default()
    };
    let result = provision(
        Arc::clone(&host),
        JobId::from("example-job-1"),
        &request,
        config,
        CancellationToken::new(),
        &print,
    )
    .await;

    // On failure the pipeline has already removed what it created; the error says what.
    let done = result.map_err(|e| format!("provisioning failed: {e}"))?;
    println!(
        "provisioned {} ({}) on {} in {}",
        done.vm_name, done.vm_id, done.host, done.vm_folder
    );
    let vm = host.vm(done.vm_id).await?;
    println!(
        "{} is {}, {} vCPUs, {} MiB",
        vm.name,
        vm.state,
        vm.processor_count,
        vm.memory_startup_bytes >> 20
    );
    sim.shutdown().await;
    Ok(())
}
