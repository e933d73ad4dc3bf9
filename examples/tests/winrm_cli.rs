//! The `winrm` example's command-line contract for local failures: one `error:` line, exit 125.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// `cargo test` builds examples next to the test binaries: target/<profile>/examples/winrm.
fn example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let path = profile_dir.join("examples").join("winrm");
    assert!(path.exists(), "example not built at {}", path.display());
    path
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(example());
    cmd.args(args).env_remove("WINRM_TEST_PASSWORD");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn assert_local_failure(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(lines[0].contains(needle), "{needle:?} not in {stderr}");
    assert!(out.stdout.is_empty());
}

fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn missing_password_variable() {
    let out = run(
        &[
            "--endpoint",
            "http://127.0.0.1:1/wsman",
            "--auth",
            "ntlm",
            "--user",
            "u",
            "--password-env",
            "WINRM_TEST_PASSWORD",
            "--",
            "hostname",
        ],
        &[],
    );
    assert_local_failure(&out, "WINRM_TEST_PASSWORD");
}

#[test]
fn refused_connection() {
    let endpoint = format!("http://127.0.0.1:{}/wsman", closed_port());
    let out = run(
        &[
            "--endpoint",
            &endpoint,
            "--auth",
            "ntlm",
            "--user",
            "u",
            "--password-env",
            "WINRM_TEST_PASSWORD",
            "--",
            "hostname",
        ],
        &[("WINRM_TEST_PASSWORD", "sekrit")],
    );
    assert_local_failure(&out, "cannot connect");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("sekrit"));
}

#[test]
fn basic_over_plain_http_is_refused() {
    let out = run(
        &[
            "--endpoint",
            "http://127.0.0.1:1/wsman",
            "--auth",
            "basic",
            "--user",
            "u",
            "--password-env",
            "WINRM_TEST_PASSWORD",
            "--",
            "hostname",
        ],
        &[("WINRM_TEST_PASSWORD", "sekrit")],
    );
    assert_local_failure(&out, "Basic");
}

#[test]
fn bad_arguments() {
    let out = run(&["--endpoint", "http://h/wsman"], &[]);
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: "));
    let out = run(
        &[
            "--endpoint",
            "ftp://h/wsman",
            "--auth",
            "ntlm",
            "--user",
            "u",
            "--password-env",
            "WINRM_TEST_PASSWORD",
            "--",
            "x",
        ],
        &[("WINRM_TEST_PASSWORD", "p")],
    );
    assert_local_failure(&out, "scheme");
    let out = run(&["--help"], &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("--password-env"));
}

#[test]
fn ntlm_and_basic_need_a_user_and_a_password_variable() {
    let out = run(
        &["--endpoint", "http://h/wsman", "--auth", "ntlm", "--", "x"],
        &[],
    );
    assert_local_failure(&out, "--user and --password-env");
}

#[cfg(feature = "kerberos")]
#[test]
fn kerberos_argument_errors_are_one_line() {
    let out = run(
        &[
            "--endpoint",
            "http://hv01.lab.example/wsman",
            "--auth",
            "kerberos",
            "--keytab",
            "/nonexistent/client.keytab",
            "--user",
            "svc@LAB.EXAMPLE",
            "--",
            "x",
        ],
        &[],
    );
    assert_local_failure(&out, "keytab /nonexistent/client.keytab does not exist");
    let out = run(
        &[
            "--endpoint",
            "http://10.0.0.5/wsman",
            "--auth",
            "negotiate",
            "--",
            "x",
        ],
        &[],
    );
    assert_local_failure(&out, "IP address 10.0.0.5");
    let out = run(
        &[
            "--endpoint",
            "http://hv01.lab.example/wsman",
            "--auth",
            "kerberos",
            "--kdc",
            "dc1.lab.example",
            "--",
            "x",
        ],
        &[],
    );
    assert_local_failure(&out, "realm");
}
