//! The run command in demo mode: the simulated fleet is deployed and inventoried, then served
//! until interrupted.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

#[test]
fn demo_mode_checks_the_simulated_fleet_and_serves_it() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_aetherv-server"))
        .env_remove("HYPERV_HOSTS")
        .env("AETHERV_DEMO_PASSWORD", "demo-Passw0rd")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let last = line.starts_with("Serving");
            if tx.send(line).is_err() || last {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) {
        let last = line.starts_with("Serving");
        lines.push(line);
        if last {
            break;
        }
    }
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    let text = lines.join("\n");
    assert!(text.contains("5 hosts, 40 VMs"), "{text}");
    let rows: Vec<&String> = lines.iter().filter(|l| l.starts_with("hv0")).collect();
    assert_eq!(rows.len(), 5, "{text}");
    assert!(rows.iter().all(|r| r.contains("deployed")), "{text}");
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("host=hv0")).count(),
        5,
        "{text}"
    );
    assert!(
        !text.contains("demo-Passw0rd"),
        "the password is never printed"
    );
    assert!(status.success(), "{status:?}\n{text}");
}
