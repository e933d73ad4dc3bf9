//! Artifact deployment against `MockPowerShellExecutor`, with a small in-memory fake of the
//! host side of the deployment helper scripts.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aetherv_hyperv::Error;
use aetherv_hyperv::deploy::{
    Artifact, Bundle, DeployOptions, DeployOutcome, DeployProgress, Deployer, inline_script_name,
    sha256_hex,
};
use aetherv_hyperv::executor::{MockPowerShellExecutor, ScriptOutput};
use aetherv_hyperv::protocol::ScriptResult;
use base64::Engine as _;
use serde_json::{Value, json};

const DIR: &str = r"C:\ProgramData\Aetherv\scripts";

/// The host side: installed files, temp files, the lock, the version file, and a log of
/// what happened in order.
#[derive(Default)]
struct FakeHost {
    version: Option<String>,
    files: BTreeMap<String, Vec<u8>>,
    temps: BTreeMap<String, Vec<u8>>,
    lock: Option<String>,
    corrupt_next: bool,
    fail_step: Option<&'static str>,
    commands: Vec<String>,
    events: Vec<String>,
}

fn ok(data: Value) -> ScriptOutput {
    ScriptOutput {
        stdout: ScriptResult::success(data).render(),
        stderr: String::new(),
        exit_code: 0,
    }
}

impl FakeHost {
    fn handle(&mut self, script: &str, stdin: &[u8]) -> ScriptOutput {
        let name = inline_script_name(script)
            .expect("only deployment helpers run")
            .to_owned();
        self.commands.push(name.clone());
        if self.fail_step == Some(name.as_str()) {
            return ScriptOutput {
                stdout: ScriptResult::failure("DeployFailed", "Access to the path is denied.")
                    .render(),
                stderr: String::new(),
                exit_code: 1,
            };
        }
        let text = String::from_utf8(stdin.to_vec()).unwrap();
        match name.as_str() {
            "Get-DeployVersion" => {
                let req: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(req["dir"], DIR);
                ok(json!({ "version": self.version }))
            }
            "Lock-Deploy" => {
                let req: Value = serde_json::from_str(&text).unwrap();
                if let Some(holder) = &self.lock {
                    return ok(
                        json!({"acquired": false, "holder": holder, "age_seconds": 3,
                        "version": self.version, "hashes": {}}),
                    );
                }
                self.lock = Some(req["token"].as_str().unwrap().to_owned());
                let mut hashes = BTreeMap::new();
                for f in req["files"].as_array().unwrap() {
                    let name = f["name"].as_str().unwrap();
                    if let Some(bytes) = self.files.get(name) {
                        hashes.insert(name.to_owned(), sha256_hex(bytes));
                    }
                }
                ok(
                    json!({"acquired": true, "holder": null, "age_seconds": null,
                    "version": self.version, "hashes": hashes}),
                )
            }
            "Write-DeployChunk" => {
                let mut lines = text.split('\n');
                let req: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
                assert_eq!(self.lock.as_deref(), req["token"].as_str(), "lock held");
                let mut installed = Vec::new();
                for piece in req["pieces"].as_array().unwrap() {
                    let mut bytes = base64::engine::general_purpose::STANDARD
                        .decode(lines.next().unwrap())
                        .unwrap();
                    if self.corrupt_next && !bytes.is_empty() {
                        bytes[0] ^= 0xff;
                        self.corrupt_next = false;
                    }
                    let temp = piece["temp"].as_str().unwrap().to_owned();
                    let content = self.temps.entry(temp.clone()).or_default();
                    assert_eq!(content.len() as u64, piece["offset"].as_u64().unwrap());
                    content.extend_from_slice(&bytes);
                    if let Some(name) = piece["name"].as_str() {
                        let content = self.temps.remove(&temp).unwrap();
                        let actual = sha256_hex(&content);
                        if actual != piece["sha256"].as_str().unwrap() {
                            return ok(json!({"installed": installed,
                                "mismatch": {"name": name, "actual": actual}}));
                        }
                        self.events.push(format!("install {name}"));
                        self.files.insert(name.to_owned(), content);
                        installed.push(name.to_owned());
                    }
                }
                ok(json!({"installed": installed, "mismatch": null}))
            }
            "Complete-Deploy" => {
                let req: Value = serde_json::from_str(&text).unwrap();
                let mine = self.lock.as_deref() == req["token"].as_str();
                if let Some(v) = req["version"].as_str() {
                    assert!(mine);
                    self.version = Some(v.to_owned());
                    self.events.push("version".to_owned());
                }
                if mine {
                    self.lock = None;
                }
                self.temps.clear();
                ok(json!({"released": mine, "version": req["version"]}))
            }
            other => panic!("unexpected helper {other}"),
        }
    }
}

fn executor(host: &Arc<Mutex<FakeHost>>) -> MockPowerShellExecutor {
    let mut mock = MockPowerShellExecutor::new();
    mock.expect_host().return_const("hv01".to_owned());
    mock.expect_install_directory().return_const(DIR.to_owned());
    let host = Arc::clone(host);
    mock.expect_run_inline()
        .returning(move |script, stdin| Ok(host.lock().unwrap().handle(script, &stdin)));
    mock
}

fn bundle() -> Bundle {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("aetherv-deploy-mock-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let iso = dir.join("linux.iso");
    let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 256) as u8).collect();
    std::fs::write(&iso, data).unwrap();
    Bundle::embedded()
        .with(Artifact::from_bytes("A-Script.ps1", vec![b'a'; 2500]).unwrap())
        .unwrap()
        .with(Artifact::from_bytes("B-Script.ps1", b"Write-Output 1".to_vec()).unwrap())
        .unwrap()
        .with(Artifact::from_file("linux.iso", &iso).unwrap())
        .unwrap()
}

fn options(chunk_size: usize) -> DeployOptions {
    DeployOptions {
        chunk_size,
        lock_wait: Duration::ZERO,
        lock_retry_interval: Duration::from_millis(1),
        ..DeployOptions::default()
    }
}

#[tokio::test]
async fn an_up_to_date_host_costs_exactly_one_command() {
    let bundle = bundle();
    let host = Arc::new(Mutex::new(FakeHost {
        version: Some(bundle.version().to_owned()),
        ..FakeHost::default()
    }));
    let report = Deployer::default()
        .ensure_deployed(&executor(&host), &bundle, |_| {
            panic!("no progress expected")
        })
        .await
        .unwrap();
    assert_eq!(report.outcome, DeployOutcome::UpToDate);
    assert_eq!(report.commands, 1);
    assert_eq!(host.lock().unwrap().commands, ["Get-DeployVersion"]);
}

#[tokio::test]
async fn an_outdated_host_gets_chunks_verified_files_and_the_version_last() {
    let bundle = bundle();
    let host = Arc::new(Mutex::new(FakeHost {
        version: Some("old".to_owned()),
        ..FakeHost::default()
    }));
    let events = Arc::new(Mutex::new(Vec::<DeployProgress>::new()));
    let sink = Arc::clone(&events);
    let report = Deployer::new(options(1000))
        .ensure_deployed(&executor(&host), &bundle, move |p| {
            sink.lock().unwrap().push(p)
        })
        .await
        .unwrap();
    assert_eq!(report.outcome, DeployOutcome::Deployed);
    assert_eq!(report.previous_version.as_deref(), Some("old"));
    assert_eq!(report.bytes_sent, bundle.total_bytes());
    let host = host.lock().unwrap();
    assert_eq!(host.version.as_deref(), Some(bundle.version()));
    assert!(host.lock.is_none() && host.temps.is_empty());
    for a in bundle.artifacts() {
        assert_eq!(
            sha256_hex(&host.files[a.name()]),
            a.sha256(),
            "{}",
            a.name()
        );
    }
    // Every byte travels in commands of at most 1000 bytes.
    let chunks = host
        .commands
        .iter()
        .filter(|c| *c == "Write-DeployChunk")
        .count() as u64;
    assert_eq!(chunks, bundle.total_bytes().div_ceil(1000));
    assert_eq!(host.commands.first().unwrap(), "Get-DeployVersion");
    assert_eq!(host.commands[1], "Lock-Deploy");
    assert_eq!(host.commands.last().unwrap(), "Complete-Deploy");
    assert_eq!(report.commands as usize, host.commands.len());
    // The version file is written after every file was installed.
    assert_eq!(host.events.last().unwrap(), "version");
    assert_eq!(host.events.len(), bundle.artifacts().len() + 1);

    let events = events.lock().unwrap();
    assert!(!events.is_empty());
    for pair in events.windows(2) {
        assert!(pair[0].bytes_done <= pair[1].bytes_done);
        assert!(pair[0].percent <= pair[1].percent);
    }
    let last = events.last().unwrap();
    assert_eq!(
        (last.bytes_done, last.bytes_total, last.percent),
        (bundle.total_bytes(), bundle.total_bytes(), 100)
    );
    assert!(
        events
            .iter()
            .all(|e| e.host == "hv01" && e.file_bytes_done <= e.file_bytes_total)
    );
}

#[tokio::test]
async fn files_already_in_place_are_not_sent_again() {
    let bundle = bundle();
    let iso = bundle
        .artifacts()
        .iter()
        .find(|a| a.name() == "linux.iso")
        .unwrap();
    let host = Arc::new(Mutex::new(FakeHost::default()));
    host.lock().unwrap().files.insert(
        "linux.iso".to_owned(),
        (0..5000u32).map(|i| (i * 7 % 256) as u8).collect(),
    );
    let report = Deployer::new(options(1 << 20))
        .ensure_deployed(&executor(&host), &bundle, |_| {})
        .await
        .unwrap();
    assert_eq!(report.files_unchanged, ["linux.iso"]);
    assert_eq!(report.bytes_sent, bundle.total_bytes() - iso.size());
    // Small files share one command.
    let host = host.lock().unwrap();
    assert_eq!(
        host.commands
            .iter()
            .filter(|c| *c == "Write-DeployChunk")
            .count(),
        1
    );
}

#[tokio::test]
async fn a_hash_mismatch_is_an_error_and_the_version_is_not_written() {
    let bundle = bundle();
    let host = Arc::new(Mutex::new(FakeHost {
        corrupt_next: true,
        ..FakeHost::default()
    }));
    let err = Deployer::new(options(100_000))
        .ensure_deployed(&executor(&host), &bundle, |_| {})
        .await
        .unwrap_err();
    // The first non-empty piece is corrupted.
    let first = bundle.artifacts().iter().find(|a| a.size() > 0).unwrap();
    match &err {
        Error::DeployHashMismatch {
            host,
            file,
            expected,
            actual,
        } => {
            assert_eq!((host.as_str(), file.as_str()), ("hv01", first.name()));
            assert_eq!(expected, first.sha256());
            assert_ne!(actual, expected);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("hv01") && err.to_string().contains(first.name()));
    let host = host.lock().unwrap();
    assert!(
        host.version.is_none(),
        "no version after a failed deployment"
    );
    assert!(host.lock.is_none(), "the lock is released");
    assert_eq!(host.commands.last().unwrap(), "Complete-Deploy");
}

#[tokio::test]
async fn a_busy_lock_and_a_failing_step_are_typed_errors() {
    let bundle = bundle();
    let host = Arc::new(Mutex::new(FakeHost {
        lock: Some("other-deployer".to_owned()),
        ..FakeHost::default()
    }));
    let err = Deployer::new(options(1000))
        .ensure_deployed(&executor(&host), &bundle, |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::DeployLocked { host, holder, .. } if host == "hv01" && holder == "other-deployer"),
        "{err:?}"
    );
    assert_eq!(
        host.lock().unwrap().lock.as_deref(),
        Some("other-deployer"),
        "not broken"
    );

    let host = Arc::new(Mutex::new(FakeHost {
        fail_step: Some("Write-DeployChunk"),
        ..FakeHost::default()
    }));
    let err = Deployer::new(options(1000))
        .ensure_deployed(&executor(&host), &bundle, |_| {})
        .await
        .unwrap_err();
    match &err {
        Error::DeployFailed {
            host,
            step,
            file,
            code,
            ..
        } => {
            assert_eq!(
                (host.as_str(), *step, code.as_str()),
                ("hv01", "Write-DeployChunk", "DeployFailed")
            );
            assert_eq!(file.as_deref(), Some(bundle.artifacts()[0].name()));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(host.lock().unwrap().lock.is_none());
}

#[tokio::test]
async fn a_changed_local_file_is_caught_before_the_host_accepts_it() {
    let dir = std::env::temp_dir().join(format!("aetherv-deploy-changed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("x.iso");
    std::fs::write(&path, b"original").unwrap();
    let artifact =
        Artifact::from_file_with_hash("x.iso", &path, &sha256_hex(b"0riginal"), 8).unwrap();
    let bundle = Bundle::new([artifact]).unwrap();
    let host = Arc::new(Mutex::new(FakeHost::default()));
    let err = Deployer::new(options(1000))
        .ensure_deployed(&executor(&host), &bundle, |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::ArtifactChanged { ref name, .. } if name == "x.iso"),
        "{err:?}"
    );
    assert!(host.lock().unwrap().files.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}
