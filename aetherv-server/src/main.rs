//! The aetherv server binary.
//!
//! The REST API, web UI, job queue and authentication are not built yet. Today the binary runs
//! the fleet check the server will run at start-up: for every host it deploys the host scripts
//! (when the host's version differs) and loads the host facts and the full VM inventory through
//! the typed Hyper-V API, then prints one line per host.
//!
//! With no hosts configured (`HYPERV_HOSTS` unset) it starts the embedded demo fleet: simulated
//! Hyper-V hosts (2 clusters, 5 hosts, 40 VMs) served over real WinRM with NTLM and message
//! encryption on loopback, and keeps them running until Ctrl-C so other clients can connect.
//!
//! Configuration (environment): `HYPERV_HOSTS` (comma list), `WINRM_USERNAME`, `WINRM_PASSWORD`,
//! `WINRM_TRANSPORT` (`ntlm` or `basic`), `WINRM_USE_TLS`, `WINRM_PORT`, `WINRM_CA_FILE`,
//! `WINRM_INSECURE`, `HOST_INSTALL_DIRECTORY`, `LOG_LEVEL`. In demo mode the WinRM password is
//! `AETHERV_DEMO_PASSWORD` when set (so you can point your own clients at the fleet), else random.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use aetherv_hyperv::WinRmExecutor;
use aetherv_hyperv::deploy::{Bundle, DeployOptions, DeployOutcome, Deployer};
use aetherv_hyperv::ops::{HyperVHost, VmState, WinRmHyperVHost};
use aetherv_hyperv::sim::{Credentials, FleetSpec, SimFleet, SimOptions};
use aetherv_winrm::{Client, Secret};
use rand::Rng as _;

mod config;

use config::{Config, HostTarget, Transport};

/// One host's result.
struct HostReport {
    host: String,
    cluster: Option<String>,
    deploy: DeployOutcome,
    vms: usize,
    running: usize,
    off: usize,
    memory_available: u64,
    memory_total: u64,
    seconds: f64,
}

fn main() -> ExitCode {
    let log_level = std::env::var("LOG_LEVEL").unwrap_or_else(|_| "info".to_owned());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(format!("warn,aetherv={log_level}"))
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(problems) => {
            for p in problems {
                eprintln!("error: {p}");
            }
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(config))
}

async fn run(config: Config) -> ExitCode {
    match config.hosts {
        Some(hosts) => {
            let ok = check_fleet(&hosts, &config.install_directory).await;
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        None => demo(&config.install_directory).await,
    }
}

/// Starts the simulated fleet, checks it like a real one, and serves it until Ctrl-C.
async fn demo(install_directory: &str) -> ExitCode {
    let password = match std::env::var("AETHERV_DEMO_PASSWORD") {
        Ok(p) if !p.is_empty() => Secret::new(p),
        _ => {
            let mut rng = rand::thread_rng();
            Secret::new(
                (0..24)
                    .map(|_| char::from(rng.sample(rand::distributions::Alphanumeric)))
                    .collect::<String>(),
            )
        }
    };
    let user = "aetherv-demo";
    let spec = FleetSpec {
        hosts: 5,
        vms_per_host: 8,
        clusters: 2,
        // Fresh hosts: the check deploys the scripts, as it would on a new real host.
        scripts_version: None,
        ..FleetSpec::default()
    };
    let options = SimOptions {
        install_directory: install_directory.to_owned(),
        ..SimOptions::default()
    };
    let fleet = match SimFleet::start(spec, Credentials::new(user, password.clone()), options).await
    {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: cannot start the demo fleet: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        hosts = fleet.hosts().len(),
        "demo mode: no HYPERV_HOSTS configured, serving a simulated Hyper-V fleet on loopback"
    );
    let targets: Vec<HostTarget> = fleet
        .hosts()
        .iter()
        .map(|h| HostTarget {
            name: h.name().to_owned(),
            endpoint: h.endpoint(),
            user: user.to_owned(),
            password: password.clone(),
            transport: Transport::Ntlm,
            ca_file: None,
            insecure: false,
        })
        .collect();
    let ok = check_fleet(&targets, install_directory).await;
    println!();
    for host in fleet.hosts() {
        println!("host={} endpoint={}", host.name(), host.endpoint());
    }
    println!(
        "user={user} password: {}",
        if std::env::var("AETHERV_DEMO_PASSWORD").is_ok() {
            "from AETHERV_DEMO_PASSWORD"
        } else {
            "random (set AETHERV_DEMO_PASSWORD to choose one)"
        }
    );
    println!("Serving the demo fleet until Ctrl-C.");
    let _ = tokio::signal::ctrl_c().await;
    fleet.shutdown().await;
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Deploys and inventories every host concurrently and prints a line per host.
async fn check_fleet(targets: &[HostTarget], install_directory: &str) -> bool {
    let started = Instant::now();
    let deployer = Deployer::new(DeployOptions::default());
    let bundle = Bundle::embedded();
    let checks = targets
        .iter()
        .map(|t| check_host(t, install_directory, &deployer, &bundle));
    let results = futures::future::join_all(checks).await;
    println!(
        "{:<12} {:<10} {:<10} {:>4} {:>8} {:>5} {:>15} {:>7}",
        "HOST", "CLUSTER", "SCRIPTS", "VMS", "RUNNING", "OFF", "MEMORY FREE", "SECONDS"
    );
    let mut ok = true;
    let mut total_vms = 0;
    for (target, result) in targets.iter().zip(results) {
        match result {
            Ok(r) => {
                total_vms += r.vms;
                println!(
                    "{:<12} {:<10} {:<10} {:>4} {:>8} {:>5} {:>6.1}/{:>5.1} GiB {:>7.2}",
                    r.host,
                    r.cluster.as_deref().unwrap_or("-"),
                    match r.deploy {
                        DeployOutcome::UpToDate => "current",
                        DeployOutcome::Deployed => "deployed",
                        DeployOutcome::DeployedByOther => "deployed*",
                        _ => "?",
                    },
                    r.vms,
                    r.running,
                    r.off,
                    gib(r.memory_available),
                    gib(r.memory_total),
                    r.seconds
                );
            }
            Err(e) => {
                ok = false;
                println!("{:<12} error: {e}", target.name);
            }
        }
    }
    println!(
        "{} hosts, {total_vms} VMs in {:.2} s",
        targets.len(),
        started.elapsed().as_secs_f64()
    );
    ok
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 30)
}

async fn check_host(
    target: &HostTarget,
    install_directory: &str,
    deployer: &Deployer,
    bundle: &Bundle,
) -> Result<HostReport, String> {
    let started = Instant::now();
    let mut builder = Client::builder(&target.endpoint)
        .operation_timeout(Duration::from_secs(20))
        .accept_invalid_certs(target.insecure);
    builder = match target.transport {
        Transport::Ntlm => builder.ntlm(&target.user, target.password.clone()),
        Transport::Basic => builder.basic(&target.user, target.password.clone()),
    };
    if let Some(ca) = &target.ca_file {
        builder = builder.ca_file(ca);
    }
    let client = builder.build().map_err(|e| e.to_string())?;
    let executor = WinRmExecutor::new(client, target.name.clone(), install_directory);
    let host = target.name.clone();
    let report = deployer
        .ensure_deployed(&executor, bundle, |p| {
            tracing::debug!(host = %p.host, file = %p.file, percent = p.percent, "deploying");
        })
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(%host, outcome = ?report.outcome, version = %report.version, "host scripts");
    let api = WinRmHyperVHost::new(executor);
    let facts = api.facts().await.map_err(|e| e.to_string())?;
    let inventory = api.inventory().await.map_err(|e| e.to_string())?;
    let count = |state: VmState| inventory.vms.iter().filter(|v| v.state == state).count();
    Ok(HostReport {
        host: facts.name.clone(),
        cluster: facts.cluster.clone(),
        deploy: report.outcome,
        vms: inventory.vms.len(),
        running: count(VmState::Running),
        off: count(VmState::Off),
        memory_available: facts.memory_available_bytes,
        memory_total: facts.memory_total_bytes,
        seconds: started.elapsed().as_secs_f64(),
    })
}
