//! Artifact deployment end to end: `Deployer` → `WinRmExecutor` → aetherv-winrm's client →
//! real WS-Man on loopback → the simulated host's deployment helpers and file system.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::time::Duration;

use aetherv_hyperv::deploy::{
    Artifact, Bundle, DeployOptions, DeployOutcome, Deployer, LOCK_FILE, VERSION_FILE,
};
use aetherv_hyperv::protocol::{DEFAULT_INSTALL_DIRECTORY, parse_result, script_arguments};
use aetherv_hyperv::{Error, WinRmExecutor};
use aetherv_sim::{Credentials, FleetSpec, SimFleet, SimOptions};
use aetherv_winrm::Client;
use aetherv_winrm::client::CommandSpec;

const USER: &str = "Administrator";
const PASSWORD: &str = "Sim-P@ss1";
const BOUND: Duration = Duration::from_secs(60);

async fn bounded<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, f)
        .await
        .expect("finished within its bound")
}

/// A fleet whose hosts have no scripts installed.
async fn fresh_fleet(hosts: usize) -> SimFleet {
    let spec = FleetSpec {
        hosts,
        vms_per_host: 1,
        clusters: 0,
        scripts_version: None,
        ..FleetSpec::default()
    };
    bounded(SimFleet::start(
        spec,
        Credentials::new(USER, PASSWORD),
        SimOptions::default(),
    ))
    .await
    .unwrap()
}

fn client(endpoint: &str) -> Client {
    Client::builder(endpoint)
        .ntlm(USER, PASSWORD)
        .operation_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

fn executor(sim: &SimFleet, host: &str) -> WinRmExecutor {
    let endpoint = sim.host(host).unwrap().endpoint();
    WinRmExecutor::new(client(&endpoint), host, DEFAULT_INSTALL_DIRECTORY)
}

/// The embedded scripts plus a 300 KB "ISO" streamed from disk and a small extra script.
fn bundle(tag: &str) -> Bundle {
    let dir = std::env::temp_dir().join(format!("aetherv-deploy-sim-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let iso = dir.join("windows.iso");
    let data: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(&iso, data).unwrap();
    Bundle::embedded()
        .with(Artifact::from_file("windows.iso", &iso).unwrap())
        .unwrap()
        .with(
            Artifact::from_bytes(
                "Extra-Tool.ps1",
                "Write-Output 'ünïcode'\r\n".as_bytes().to_vec(),
            )
            .unwrap(),
        )
        .unwrap()
}

fn options() -> DeployOptions {
    DeployOptions {
        chunk_size: 64 * 1024,
        lock_retry_interval: Duration::from_millis(20),
        ..DeployOptions::default()
    }
}

/// Asserts the host's install directory holds exactly the bundle, its version, no lock and
/// no temp files, and that the model reports the version as installed.
fn assert_installed(sim: &SimFleet, host: &str, bundle: &Bundle) {
    sim.with_state(|s| {
        let files = s.host_files(host).expect("files were written");
        for a in bundle.artifacts() {
            let path = format!("{DEFAULT_INSTALL_DIRECTORY}\\{}", a.name());
            let file = files
                .file(&path)
                .unwrap_or_else(|| panic!("{path} missing"));
            assert_eq!(file.sha256(), a.sha256(), "{path}");
        }
        let version = files
            .file(&format!("{DEFAULT_INSTALL_DIRECTORY}\\{VERSION_FILE}"))
            .unwrap();
        assert_eq!(version.bytes, bundle.version().as_bytes());
        assert!(
            files
                .file(&format!("{DEFAULT_INSTALL_DIRECTORY}\\{LOCK_FILE}"))
                .is_none(),
            "lock released"
        );
        let listed = files.list(DEFAULT_INSTALL_DIRECTORY);
        assert_eq!(
            listed.len(),
            bundle.artifacts().len() + 1,
            "no temp files left"
        );
        assert_eq!(
            s.fleet().host(host).unwrap().scripts_version.as_deref(),
            Some(bundle.version())
        );
    });
}

async fn host_facts(executor: &WinRmExecutor) -> (i64, String) {
    let spec = CommandSpec::new("powershell.exe")
        .args(script_arguments(DEFAULT_INSTALL_DIRECTORY, "Get-HostFacts"))
        .stdin(b"{}".to_vec());
    let out = bounded(executor.client().run(spec)).await.unwrap();
    (out.exit_code, out.stdout_text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fresh_host_is_deployed_once_and_then_runs_its_scripts() {
    let sim = fresh_fleet(1).await;
    let bundle = bundle("fresh");
    let exec = executor(&sim, "hv01");

    let (code, _) = host_facts(&exec).await;
    assert_eq!(code, -196_608, "-File is refused before deployment");

    let deployer = Deployer::new(options());
    let progress = std::sync::Mutex::new(Vec::new());
    let report =
        bounded(deployer.ensure_deployed(&exec, &bundle, |p| progress.lock().unwrap().push(p)))
            .await
            .unwrap();
    assert_eq!(report.outcome, DeployOutcome::Deployed);
    assert_eq!(report.previous_version, None);
    assert_eq!(report.bytes_sent, bundle.total_bytes());
    assert_eq!(report.files_written.len(), bundle.artifacts().len());
    assert!(report.commands >= 3 + (300_000 / (64 * 1024)) as u32);
    let progress = progress.into_inner().unwrap();
    assert!(
        progress
            .windows(2)
            .all(|w| w[0].bytes_done <= w[1].bytes_done)
    );
    assert_eq!(progress.last().unwrap().percent, 100);
    assert_installed(&sim, "hv01", &bundle);

    let (code, stdout) = host_facts(&exec).await;
    assert_eq!(code, 0);
    let facts = parse_result("Get-HostFacts", &stdout)
        .unwrap()
        .data
        .unwrap();
    assert_eq!(facts["scripts_version"], bundle.version());

    // The second call is a no-op: exactly one WinRM command.
    let before = exec.client().stats().commands;
    let again = bounded(deployer.ensure_deployed(&exec, &bundle, |_| panic!("nothing to push")))
        .await
        .unwrap();
    assert_eq!(again.outcome, DeployOutcome::UpToDate);
    assert_eq!(exec.client().stats().commands - before, 1);

    // A new bundle version only sends what changed.
    let changed = bundle
        .clone()
        .with(Artifact::from_bytes("New-Tool.ps1", b"Write-Output 2".to_vec()).unwrap())
        .unwrap();
    let report = bounded(deployer.ensure_deployed(&exec, &changed, |_| {}))
        .await
        .unwrap();
    assert_eq!(report.files_written, ["New-Tool.ps1"]);
    assert_eq!(report.files_unchanged.len(), bundle.artifacts().len());
    assert_installed(&sim, "hv01", &changed);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_deployers_leave_a_consistent_install() {
    let sim = fresh_fleet(1).await;
    let bundle = bundle("race");
    // Two orchestrator instances (separate deployers, so only the host lock serialises them)
    // and two callers sharing one deployer (the in-process lock).
    let (a, b) = (executor(&sim, "hv01"), executor(&sim, "hv01"));
    let (c, d) = (executor(&sim, "hv01"), executor(&sim, "hv01"));
    let shared = Deployer::new(options());
    let (d1, d2) = (Deployer::new(options()), Deployer::new(options()));
    let (ra, rb, rc, rd) = bounded(async {
        tokio::join!(
            d1.ensure_deployed(&a, &bundle, |_| {}),
            d2.ensure_deployed(&b, &bundle, |_| {}),
            shared.ensure_deployed(&c, &bundle, |_| {}),
            shared.ensure_deployed(&d, &bundle, |_| {}),
        )
    })
    .await;
    let outcomes: Vec<DeployOutcome> = [ra, rb, rc, rd]
        .into_iter()
        .map(|r| r.unwrap().outcome)
        .collect();
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == DeployOutcome::Deployed)
            .count(),
        1,
        "{outcomes:?}"
    );
    assert_installed(&sim, "hv01", &bundle);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_chunk_is_detected_and_the_next_deployment_repairs_it() {
    let sim = fresh_fleet(1).await;
    let bundle = bundle("corrupt");
    let exec = executor(&sim, "hv01");
    sim.with_state(|s| s.host_files_mut("hv01").corrupt_next_chunks(1));
    let deployer = Deployer::new(options());
    let err = bounded(deployer.ensure_deployed(&exec, &bundle, |_| {}))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::DeployHashMismatch { host, file, .. }
            if host == "hv01" && bundle.artifacts().iter().any(|a| a.name() == file)),
        "{err:?}"
    );
    sim.with_state(|s| {
        assert_eq!(
            s.fleet().host("hv01").unwrap().scripts_version,
            None,
            "version not written"
        );
        let files = s.host_files("hv01").unwrap();
        assert!(
            files
                .file(&format!("{DEFAULT_INSTALL_DIRECTORY}\\{VERSION_FILE}"))
                .is_none()
        );
        assert!(
            files
                .file(&format!("{DEFAULT_INSTALL_DIRECTORY}\\{LOCK_FILE}"))
                .is_none()
        );
    });
    let (code, _) = host_facts(&exec).await;
    assert_eq!(code, -196_608, "scripts still not runnable");

    let report = bounded(deployer.ensure_deployed(&exec, &bundle, |_| {}))
        .await
        .unwrap();
    assert_eq!(report.outcome, DeployOutcome::Deployed);
    assert_installed(&sim, "hv01", &bundle);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_host_lock_is_broken_and_a_live_one_waited_for() {
    let sim = fresh_fleet(1).await;
    let bundle = bundle("stale");
    let exec = executor(&sim, "hv01");
    let lock = format!("{DEFAULT_INSTALL_DIRECTORY}\\{LOCK_FILE}");
    let long_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    sim.with_state(|s| {
        s.host_files_mut("hv01")
            .write(&lock, b"crashed".to_vec(), long_ago)
    });
    let report = bounded(Deployer::new(options()).ensure_deployed(&exec, &bundle, |_| {}))
        .await
        .unwrap();
    assert_eq!(report.outcome, DeployOutcome::Deployed);
    assert_installed(&sim, "hv01", &bundle);

    let newer = bundle
        .clone()
        .with(Artifact::from_bytes("Later.ps1", b"1".to_vec()).unwrap())
        .unwrap();
    sim.with_state(|s| {
        s.host_files_mut("hv01")
            .write(&lock, b"alive".to_vec(), std::time::SystemTime::now())
    });
    let impatient = Deployer::new(DeployOptions {
        lock_wait: Duration::from_millis(100),
        ..options()
    });
    let err = bounded(impatient.ensure_deployed(&exec, &newer, |_| {}))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::DeployLocked { holder, .. } if holder == "alive"),
        "{err:?}"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_refusing_a_step_is_a_typed_error_and_releases_the_lock() {
    use aetherv_sim::{Fault, FaultPlan, Trigger};
    let sim = fresh_fleet(1).await;
    let bundle = bundle("refused");
    let exec = executor(&sim, "hv01");
    sim.host("hv01")
        .unwrap()
        .set_fault_plan(FaultPlan::new(3).rule(
            Fault::FailCommand {
                pattern: "aetherv-inline: Write-DeployChunk".to_owned(),
                exit_code: 1,
                message: "Access to the path is denied.".to_owned(),
            },
            Trigger::Nth(1),
        ));
    let deployer = Deployer::new(options());
    let err = bounded(deployer.ensure_deployed(&exec, &bundle, |_| {}))
        .await
        .unwrap_err();
    match &err {
        Error::DeployFailed {
            host,
            step,
            message,
            ..
        } => {
            assert_eq!((host.as_str(), *step), ("hv01", "Write-DeployChunk"));
            assert!(
                message.contains("Access to the path is denied."),
                "{message}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    sim.with_state(|s| {
        let files = s.host_files("hv01").unwrap();
        assert!(
            files
                .file(&format!("{DEFAULT_INSTALL_DIRECTORY}\\{LOCK_FILE}"))
                .is_none()
        );
        assert!(
            files.list(DEFAULT_INSTALL_DIRECTORY).is_empty(),
            "temp files removed"
        );
    });
    let report = bounded(deployer.ensure_deployed(&exec, &bundle, |_| {}))
        .await
        .unwrap();
    assert_eq!(report.outcome, DeployOutcome::Deployed);
    assert_installed(&sim, "hv01", &bundle);
    sim.shutdown().await;
}
