//! The server binary's command line: `--help`, `--version`, `check-config` (valid and invalid
//! environments), unknown arguments, and — without the demo fleet — the refusal to start with
//! no hosts. Every run has a clean environment and must exit on its own.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

/// A valid fleet configuration: two hosts, credentials and OIDC.
const FLEET: &[(&str, &str)] = &[
    ("HYPERV_HOSTS", "hv01.lab.example,hv02.lab.example"),
    ("WINRM_USERNAME", "LAB\\svc"),
    ("WINRM_PASSWORD", "winrm-pw-123"),
    (
        "OIDC_ISSUER_URL",
        "https://login.example.com/realms/aetherv",
    ),
    ("OIDC_CLIENT_ID", "aetherv"),
    ("OIDC_ADMIN_ROLE", "aetherv-admin"),
];

/// Runs the binary with `args` and only the variables `env` (plus an empty secrets directory).
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_aetherv-server"));
    command
        .args(args)
        .env_clear()
        .env("SECRETS_DIR", "/nonexistent-aetherv-cli-test");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[test]
fn help_prints_usage_and_exits() {
    for flag in ["--help", "-h"] {
        let out = run(&[flag], &[("LISTEN_ADDR", "not an address")]);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let stdout = text(&out.stdout);
        assert!(
            stdout.contains("usage: aetherv-server [serve | check-config] [--help] [--version]"),
            "{stdout}"
        );
        assert!(stdout.contains("check-config"), "{stdout}");
        assert!(stdout.contains("CONFIGURATION.md"), "{stdout}");
        assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    }
}

#[test]
fn version_prints_one_line() {
    for flag in ["--version", "-V"] {
        let out = run(&[flag], &[]);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let stdout = text(&out.stdout);
        assert_eq!(stdout.lines().count(), 1, "{stdout}");
        assert!(
            stdout.starts_with(concat!("aetherv-server ", env!("CARGO_PKG_VERSION"), " (")),
            "{stdout}"
        );
        assert_eq!(
            stdout.contains("with the demo fleet"),
            cfg!(feature = "demo"),
            "{stdout}"
        );
    }
}

#[test]
fn unknown_arguments_are_errors_with_a_usage_hint() {
    for args in [
        &["--port", "8000"][..],
        &["bogus"],
        &["check-config", "extra"],
    ] {
        let out = run(args, FLEET);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{args:?}: {}", text(&out.stdout));
        let stderr = text(&out.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        assert!(lines[0].starts_with("error: "), "{stderr}");
        assert!(args.iter().any(|a| lines[0].contains(a)), "{stderr}");
        assert!(
            lines.contains(&"usage: aetherv-server [serve | check-config] [--help] [--version]"),
            "{stderr}"
        );
        assert!(stderr.contains("--help"), "{stderr}");
    }
}

#[test]
fn check_config_summarises_a_valid_configuration() {
    let out = run(&["check-config"], FLEET);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("configuration ok\n"), "{stdout}");
    assert!(
        stdout.contains("mode: fleet, 2 hosts: hv01.lab.example, hv02.lab.example\n"),
        "{stdout}"
    );
    assert!(stdout.contains("authentication: OIDC"), "{stdout}");
    assert!(!stdout.contains("winrm-pw-123"), "{stdout}");
    // Nothing was started: no listening line, no log.
    assert!(!stdout.contains("listening"), "{stdout}");
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}

#[test]
fn check_config_lists_every_problem_and_exits_2() {
    let mut env = FLEET.to_vec();
    env.retain(|(k, _)| *k != "WINRM_PASSWORD");
    env.extend([
        ("WINRM_PORT", "x"),
        ("LOG_LEVEL", "loud"),
        // Would fail to bind if anything were started.
        ("LISTEN_ADDR", "192.0.2.1:1"),
    ]);
    let out = run(&["check-config"], &env);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    for (line, var) in lines
        .iter()
        .zip(["LOG_LEVEL: ", "WINRM_PORT: ", "WINRM_PASSWORD: "])
    {
        assert!(line.starts_with(&format!("error: {var}")), "{stderr}");
    }
}

#[cfg(feature = "demo")]
#[test]
fn check_config_with_no_hosts_describes_the_demo() {
    let out = run(&["check-config"], &[("DEMO_HOSTS", "3")]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = text(&out.stdout);
    assert!(stdout.contains("mode: demo (3 simulated hosts"), "{stdout}");
    assert!(
        stdout.contains("authentication: off (demo mode)"),
        "{stdout}"
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("warning: HYPERV_HOSTS, HOSTS_FILE: no hosts configured"),
        "{stderr}"
    );
}

#[cfg(not(feature = "demo"))]
#[test]
fn without_the_demo_fleet_no_hosts_is_one_error_line() {
    for args in [&["check-config"][..], &[], &["serve"]] {
        let out = run(args, &[("LISTEN_ADDR", "127.0.0.1:0")]);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let stderr = text(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("error: HYPERV_HOSTS, HOSTS_FILE: no hosts configured"),
            "{stderr}"
        );
        assert!(stderr.contains("no demo fleet"), "{stderr}");
    }
}
