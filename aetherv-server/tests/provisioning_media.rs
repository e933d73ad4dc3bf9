//! The provisioning ISOs: built by `xorriso` from the embedded files and an agent binary
//! (reproducibly: same input, same bytes), deployed to simulated hosts over real WinRM in
//! chunks with the host scripts (sent once, not again while unchanged, again when changed, a
//! hash mismatch a typed error naming the ISO), listed in the host facts with the deployed
//! ISO's version, published with their SHA-256 in `GET /api/v1/hosts/{name}`, and used by a
//! provisioning job (the simulated guest accepts only its ISO's version).
//!
//! Needs `xorriso` (Debian package `xorriso`; `scripts/test` installs it). The bounds only
//! keep a broken build from hanging the run; nothing asserts speed.

#![cfg(feature = "demo")]
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aetherv_hyperv::deploy::{Bundle, DeployOptions, DeployOutcome, Deployer};
use aetherv_hyperv::ops::{HyperVHostExt as _, WinRmHyperVHost};
use aetherv_hyperv::protocol::DEFAULT_INSTALL_DIRECTORY;
use aetherv_hyperv::{Error, WinRmExecutor};
use aetherv_server::config::Config;
use aetherv_server::media::{self, LINUX_ISO, MediaConfig, WINDOWS_ISO};
use aetherv_server::startup::Server;
use aetherv_sim::{Credentials, FleetSpec, SimFleet, SimOptions};
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

mod support;
use support::contract;

const BOUND: Duration = Duration::from_secs(120);
const USER: &str = "Administrator";
const PASSWORD: &str = "Sim-P@ss1";

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("aetherv-media-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A stand-in agent binary of `size` bytes (the ISO only carries it; nothing runs it here).
fn agent(dir: &Path, seed: u32, size: u32) -> PathBuf {
    let path = dir.join(format!("aetherv-guest-{seed}"));
    let data: Vec<u8> = (0..size)
        .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(&path, data).unwrap();
    path
}

fn config(dir: &Path, agent: &Path) -> MediaConfig {
    MediaConfig {
        enabled: true,
        guest_agent: Some(agent.to_owned()),
        output_dir: Some(dir.join("out")),
        ..MediaConfig::default()
    }
}

#[test]
fn isos_are_reproducible_and_versioned_by_content() {
    let dir = scratch("repro");
    let first_agent = agent(&dir, 1, 200_000);
    let a = media::build_all(&config(&dir, &first_agent));
    assert!(a.missing.is_empty(), "{:?}", a.missing);
    assert_eq!(a.built.len(), 2);
    let linux = a.built.iter().find(|i| i.file_name == LINUX_ISO).unwrap();
    assert_eq!(
        linux.files,
        [
            "aetherv-guest",
            "aetherv-guest.service",
            "meta-data",
            "user-data",
            "version"
        ]
    );
    assert_eq!(linux.version.len(), 16);
    assert!(linux.size_bytes > 200_000);
    let windows = a.built.iter().find(|i| i.file_name == WINDOWS_ISO).unwrap();
    assert!(windows.files.iter().any(|f| f == "SetupComplete.cmd"));

    // Built again in another folder: the same bytes.
    std::fs::remove_dir_all(dir.join("out")).unwrap();
    let b = media::build_all(&config(&dir, &first_agent));
    assert_eq!(a.built, b.built);

    // Another agent: another Linux version and hash; the Windows ISO is unchanged.
    let other = media::build_all(&config(&dir, &agent(&dir, 2, 200_000)));
    let linux2 = other
        .built
        .iter()
        .find(|i| i.file_name == LINUX_ISO)
        .unwrap();
    assert_ne!(linux2.version, linux.version);
    assert_ne!(linux2.sha256, linux.sha256);
    let windows2 = other
        .built
        .iter()
        .find(|i| i.file_name == WINDOWS_ISO)
        .unwrap();
    assert_eq!(windows2.sha256, windows.sha256);

    // A source folder replaces a family's embedded files.
    let source = dir.join("source");
    std::fs::create_dir_all(source.join("windows")).unwrap();
    std::fs::write(
        source.join("windows").join("Custom.ps1"),
        "Write-Output 1\r\n",
    )
    .unwrap();
    let mut custom = config(&dir, &first_agent);
    custom.source_dir = Some(source);
    let custom = media::build_windows(&custom).unwrap();
    assert_eq!(custom.files, ["Custom.ps1", "version"]);
    assert_ne!(custom.version, windows.version);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn without_an_agent_there_is_no_linux_iso_and_the_reason_says_so() {
    let dir = scratch("noagent");
    let media = media::build_all(&MediaConfig {
        enabled: true,
        output_dir: Some(dir.join("out")),
        ..MediaConfig::default()
    });
    // The test binary's folder has no aetherv-guest.
    assert!(media.built.iter().all(|i| i.file_name != LINUX_ISO));
    let missing = media
        .missing
        .iter()
        .find(|m| m.file_name == LINUX_ISO)
        .unwrap();
    assert!(
        missing.reason.contains("AETHERV_GUEST_AGENT"),
        "{missing:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

async fn fresh_fleet() -> SimFleet {
    let spec = FleetSpec {
        hosts: 1,
        vms_per_host: 0,
        clusters: 0,
        scripts_version: None,
        ..FleetSpec::default()
    };
    tokio::time::timeout(
        BOUND,
        SimFleet::start(
            spec,
            Credentials::new(USER, PASSWORD),
            SimOptions::default(),
        ),
    )
    .await
    .unwrap()
    .unwrap()
}

fn executor(sim: &SimFleet) -> WinRmExecutor {
    let endpoint = sim.host("hv01").unwrap().endpoint();
    let client = aetherv_winrm::Client::builder(&endpoint)
        .ntlm(USER, PASSWORD)
        .operation_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    WinRmExecutor::new(client, "hv01", DEFAULT_INSTALL_DIRECTORY)
}

fn bundle(media: &media::ProvisioningMedia) -> Bundle {
    media
        .artifacts()
        .unwrap()
        .into_iter()
        .fold(Bundle::embedded(), |b, a| b.with(a).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isos_are_deployed_in_chunks_once_resent_when_changed_and_checked() {
    let dir = scratch("deploy");
    let built = media::build_all(&config(&dir, &agent(&dir, 1, 1_500_000)));
    assert!(built.missing.is_empty(), "{:?}", built.missing);
    let linux = built
        .built
        .iter()
        .find(|i| i.file_name == LINUX_ISO)
        .unwrap()
        .clone();
    let sim = fresh_fleet().await;
    let exec = executor(&sim);
    let deployer = Deployer::new(DeployOptions {
        chunk_size: 256 * 1024,
        ..DeployOptions::default()
    });

    let first = bundle(&built);
    let report = tokio::time::timeout(BOUND, deployer.ensure_deployed(&exec, &first, |_| {}))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.outcome, DeployOutcome::Deployed);
    for name in [
        LINUX_ISO,
        "LinuxProvisioning.iso.version",
        WINDOWS_ISO,
        "WindowsProvisioning.iso.version",
    ] {
        assert!(report.files_written.iter().any(|f| f == name), "{name}");
    }
    // The 1.5 MB ISO needed several commands of at most 256 KiB each.
    assert!(report.commands > 3 + (linux.size_bytes / (256 * 1024)) as u32);

    // The facts list the deployed ISOs with their versions, the deployed ones first.
    let host = WinRmHyperVHost::new(exec.clone());
    let facts = host.facts().await.unwrap();
    let listed = &facts.provisioning_isos[0];
    assert!(
        listed
            .path
            .eq_ignore_ascii_case(&format!("{DEFAULT_INSTALL_DIRECTORY}\\{LINUX_ISO}"))
            || facts.provisioning_isos[1]
                .path
                .eq_ignore_ascii_case(&format!("{DEFAULT_INSTALL_DIRECTORY}\\{LINUX_ISO}")),
        "{:?}",
        facts.provisioning_isos
    );
    let deployed = facts
        .provisioning_isos
        .iter()
        .find(|i| i.path.ends_with(LINUX_ISO))
        .unwrap();
    assert_eq!(deployed.os_family, "linux");
    assert_eq!(deployed.version.as_deref(), Some(linux.version.as_str()));
    assert_eq!(deployed.size_bytes, linux.size_bytes);
    sim.with_state(|s| {
        let file = s
            .host_files("hv01")
            .unwrap()
            .file(&format!("{DEFAULT_INSTALL_DIRECTORY}\\{LINUX_ISO}"))
            .unwrap();
        assert_eq!(file.sha256(), linux.sha256);
    });

    // Unchanged: one command, nothing sent.
    let before = exec.client().stats().commands;
    let again = deployer
        .ensure_deployed(&exec, &first, |_| panic!("nothing to push"))
        .await
        .unwrap();
    assert_eq!(again.outcome, DeployOutcome::UpToDate);
    assert_eq!(exec.client().stats().commands - before, 1);

    // A new agent: only the Linux ISO and its version file travel.
    let rebuilt = media::build_all(&config(&dir, &agent(&dir, 2, 1_500_000)));
    let linux2 = rebuilt
        .built
        .iter()
        .find(|i| i.file_name == LINUX_ISO)
        .unwrap()
        .clone();
    let second = bundle(&rebuilt);
    let report = deployer
        .ensure_deployed(&exec, &second, |_| {})
        .await
        .unwrap();
    assert_eq!(
        report.files_written,
        [LINUX_ISO, "LinuxProvisioning.iso.version"]
    );
    let facts = host.facts().await.unwrap();
    let deployed = facts
        .provisioning_isos
        .iter()
        .find(|i| i.path.ends_with(LINUX_ISO))
        .unwrap();
    assert_eq!(deployed.version.as_deref(), Some(linux2.version.as_str()));

    // A damaged transfer: the host's Get-FileHash differs, the ISO is not installed, the
    // version file still names the previous bundle.
    let third_media = media::build_all(&config(&dir, &agent(&dir, 3, 1_500_000)));
    let third = bundle(&third_media);
    sim.with_state(|s| s.host_files_mut("hv01").corrupt_next_chunks(1));
    let err = deployer
        .ensure_deployed(&exec, &third, |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::DeployHashMismatch { file, .. } if file == LINUX_ISO),
        "{err:?}"
    );
    assert!(err.to_string().contains(LINUX_ISO), "{err}");
    sim.with_state(|s| {
        let file = s
            .host_files("hv01")
            .unwrap()
            .file(&format!("{DEFAULT_INSTALL_DIRECTORY}\\{LINUX_ISO}"))
            .unwrap();
        assert_eq!(
            file.sha256(),
            linux2.sha256,
            "the damaged copy was not installed"
        );
        assert_eq!(
            s.fleet().host("hv01").unwrap().scripts_version.as_deref(),
            Some(second.version())
        );
    });
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_deploys_its_isos_publishes_their_hash_and_provisions_with_their_version() {
    let dir = scratch("server");
    let agent = agent(&dir, 7, 300_000);
    let agent_text = agent.display().to_string();
    let out_text = dir.join("out").display().to_string();
    let env = |name: &str| match name {
        "DEMO_HOSTS" => Some("1".to_owned()),
        "DEMO_CLUSTERS" => Some("0".to_owned()),
        "DEMO_VMS_PER_HOST" => Some("1".to_owned()),
        "AETHERV_DEMO_PASSWORD" => Some("demo-Passw0rd".to_owned()),
        "LISTEN_ADDR" => Some("127.0.0.1:0".to_owned()),
        "AETHERV_GUEST_AGENT" => Some(agent_text.clone()),
        "AETHERV_ISO_OUTPUT_DIR" => Some(out_text.clone()),
        _ => None,
    };
    let config = Config::from_sources(&env, Path::new("/nonexistent-aetherv-test")).unwrap();
    let server = Server::start(&config).await.unwrap();
    let app = server.router();
    let deadline = Instant::now() + BOUND;
    while server.state().readiness.check().is_err() {
        assert!(
            Instant::now() < deadline,
            "the demo server never became ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let built = server.state().info.media.clone();
    let linux = built
        .built
        .iter()
        .find(|i| i.file_name == LINUX_ISO)
        .unwrap()
        .clone();

    let (status, hv01) =
        contract::call_checked(&app, Method::GET, "/api/v1/hosts/hv01", None).await;
    assert_eq!(status, StatusCode::OK);
    let media_view = hv01["provisioning_media"].as_array().unwrap();
    let linux_view = media_view
        .iter()
        .find(|m| m["file_name"] == LINUX_ISO)
        .unwrap();
    assert_eq!(linux_view["built"], true);
    assert_eq!(linux_view["deployed"], true, "{hv01}");
    assert_eq!(linux_view["sha256"], linux.sha256.as_str());
    assert_eq!(linux_view["version"], linux.version.as_str());
    let listed = hv01["facts"]["provisioning_isos"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["os_family"] == "linux")
        .unwrap()
        .clone();
    assert!(
        listed["path"].as_str().unwrap().ends_with(LINUX_ISO),
        "the deployed ISO comes first: {listed}"
    );
    assert_eq!(listed["version"], linux.version.as_str());

    // A Linux VM: the simulated guest carries the deployed ISO's agent version and refuses
    // any other hlvmm.meta.version, so success means the host sent the deployed version.
    let (status, created) = contract::call_checked(
        &app,
        Method::POST,
        "/api/v1/vms/create",
        Some(json!({
            "vm_name": "iso-lin-01",
            "hyperv_host": "hv01",
            "image_name": "Ubuntu 24.04 LTS",
            "gb_ram": 2,
            "cpu_cores": 2,
            "guest_la_uid": "admin",
            "guest_la_pw": "Gu3st-pw-never-shown",
        })),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    let id = created["job_id"].as_str().unwrap().to_owned();
    let job = loop {
        let (_, job): (StatusCode, Value) =
            contract::call_checked(&app, Method::GET, &format!("/api/v1/jobs/{id}"), None).await;
        if !matches!(job["status"].as_str(), Some("queued" | "running")) {
            break job;
        }
        assert!(Instant::now() < deadline + BOUND, "job did not end: {job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(job["status"], "succeeded", "{job}");
    let vm_id = job["vm_id"].as_str().unwrap().to_owned();
    let sim = server.demo_fleet().unwrap();
    let agent_version = sim.with_state(|s| {
        s.fleet()
            .host("hv01")
            .unwrap()
            .vms
            .iter()
            .find(|v| v.id.to_string() == vm_id)
            .map(|v| v.guest.agent_version.clone())
    });
    assert_eq!(agent_version, Some(Some(linux.version.clone())));
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
