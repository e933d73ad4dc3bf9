//! The `aetherv-hostsim` binary as a process: its `host=... endpoint=...` lines, a client
//! against one of the endpoints, clean shutdown on SIGTERM, and its error contract.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use aetherv_winrm::Client;

const BIN: &str = env!("CARGO_BIN_EXE_aetherv-hostsim");
const BOUND: Duration = Duration::from_secs(60);

/// Kills the process if a test fails before it was stopped.
struct Guard(Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn wait_with_timeout(child: &mut Child, bound: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + bound;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "process did not exit in time"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prints_one_line_per_host_and_serves() {
    let child = Command::new(BIN)
        .args([
            "--hosts",
            "3",
            "--vms-per-host",
            "2",
            "--clusters",
            "1",
            "--listen",
            "127.0.0.1:0",
            "--user",
            "simadmin",
            "--password-env",
            "HOSTSIM_TEST_PASSWORD",
            "--seed",
            "4",
        ])
        .env("HOSTSIM_TEST_PASSWORD", "Pw-For-Tests1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut guard = Guard(Some(child));
    let stdout = guard.0.as_mut().unwrap().stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    for _ in 0..3 {
        lines.push(rx.recv_timeout(BOUND).expect("a host line"));
    }
    let mut endpoints = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let (host, endpoint) = line.split_once(' ').unwrap();
        assert_eq!(host, format!("host=hv{:02}", i + 1));
        let url = endpoint.strip_prefix("endpoint=").unwrap();
        assert!(
            url.starts_with("http://127.0.0.1:") && url.ends_with("/wsman"),
            "{url}"
        );
        endpoints.push(url.to_owned());
    }
    endpoints.dedup();
    assert_eq!(endpoints.len(), 3, "each host has its own port");

    let client = Client::builder(&endpoints[1])
        .ntlm("simadmin", "Pw-For-Tests1")
        .build()
        .unwrap();
    let out = tokio::time::timeout(BOUND, client.run_command("hostname", &[]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.stdout_text(), "hv02\r\n");

    let mut child = guard.0.take().unwrap();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = wait_with_timeout(&mut child, BOUND);
    assert!(exit.success(), "{exit:?}");
}

#[test]
fn errors_are_one_line_with_exit_code_2() {
    let out = Command::new(BIN)
        .args([
            "--hosts",
            "1",
            "--user",
            "u",
            "--password-env",
            "HOSTSIM_SURELY_UNSET_VAR",
        ])
        .env_remove("HOSTSIM_SURELY_UNSET_VAR")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(out.stdout.is_empty());

    let out = Command::new(BIN)
        .args([
            "--hosts",
            "2",
            "--clusters",
            "5",
            "--user",
            "u",
            "--password-env",
            "PATH",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.starts_with("error: invalid fleet spec"), "{stderr}");

    let out = Command::new(BIN).arg("--no-such-flag").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8(out.stderr).unwrap().lines().count(), 1);
}
