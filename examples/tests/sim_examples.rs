//! Runs the simulator-backed examples (built by `cargo test` next to the test binaries) with no
//! arguments and checks what they print, each within a time bound.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::io::Read as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BOUND: Duration = Duration::from_secs(90);

/// `cargo test` builds examples next to the test binaries: target/<profile>/examples/<name>.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let path = profile_dir.join("examples").join(name);
    assert!(path.exists(), "example not built at {}", path.display());
    path
}

/// Runs an example to completion (killed after [`BOUND`]) and returns its stdout; fails on a
/// non-zero exit.
fn run(name: &str) -> String {
    let mut child = Command::new(example(name))
        .env("RUST_LOG", "off")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).map(|_| s)
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).map(|_| s)
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > BOUND {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("example {name} did not finish within {BOUND:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = out.join().unwrap().unwrap();
    let stderr = err.join().unwrap().unwrap();
    assert!(
        status.success(),
        "{name} failed ({status}):\n{stdout}\n{stderr}"
    );
    stdout
}

fn assert_contains(output: &str, needle: &str) {
    assert!(output.contains(needle), "{needle:?} not in:\n{output}");
}

#[test]
fn hyperv_api_lists_vms_and_starts_one() {
    let out = run("hyperv_api");
    assert_contains(&out, "host scripts: Deployed,");
    assert_contains(&out, "6 VMs on hv01:");
    let listed = out.lines().filter(|l| l.ends_with(" MiB")).count();
    assert_eq!(listed, 6, "{out}");
    let started = out.lines().find(|l| l.starts_with("started ")).expect(&out);
    assert!(started.ends_with(": Off -> Running"), "{out}");
}

#[test]
fn inventory_watch_prints_the_changes_it_makes() {
    let out = run("inventory_watch");
    // The first refresh's events (hosts connecting, their VMs appearing) may in principle be
    // published before the example subscribes; the changes it makes afterwards may not be lost.
    assert!(out.lines().any(|l| l.contains("] + ")), "{out}");
    let turned_off = out
        .lines()
        .find_map(|l| l.strip_prefix("-- turning "))
        .and_then(|l| l.strip_suffix(" off through the host API"))
        .expect(&out);
    assert_contains(&out, &format!("~ {turned_off} on hv01: Running -> Off"));
    assert_contains(&out, "+ created-behind-our-back on hv02 (Off)");
    assert_contains(&out, "the cache now holds 7 VMs on 2 hosts");
}

#[test]
fn provision_workflow_runs_every_step_and_prints_no_secret() {
    let out = run("provision_workflow");
    assert_contains(&out, "refused: ");
    assert_contains(&out, "gb_ram");
    for step in [
        "Provisioning.PreChecks",
        "Provisioning.CopyImage",
        "Provisioning.CopyProvisioningISO",
        "Provisioning.RegisterVM",
        "Provisioning.WaitForProvisioningKey",
        "Provisioning.PublishProvisioningData",
        "Provisioning.WaitForGuest",
    ] {
        assert_contains(&out, step);
    }
    assert_contains(&out, "provisioned app-01 (");
    assert_contains(&out, "app-01 is Running, 2 vCPUs, 2048 MiB");
    assert!(!out.contains("Never-Printed-1"), "secret printed:\n{out}");
}

#[test]
fn kvp_handshake_completes_in_both_key_formats_without_printing_the_secret() {
    for args in [&[][..], &["windows"][..]] {
        let mut child = Command::new(example("kvp_handshake"));
        child.args(args);
        let out = child.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{args:?}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_contains(&stdout, "host→guest hlvmm.meta.shared_aes_key");
        assert_contains(&stdout, "2048 bits");
        assert_contains(&stdout, "provisioningapplied");
        assert!(
            !stdout.contains("never printed"),
            "secret printed:\n{stdout}"
        );
    }
}
