//! Tests of the configuration: every variable, its problems, secret files and HOSTS_FILE.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "aetherv-config-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Valid fleet configuration: two hosts, credentials and OIDC.
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

/// `base` with `extra` applied on top (an empty value unsets).
fn vars(base: &[(&str, &str)], extra: &[(&str, &str)]) -> HashMap<String, String> {
    let mut map: HashMap<String, String> = base
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    for (k, v) in extra {
        map.insert((*k).to_owned(), (*v).to_owned());
    }
    map
}

/// Loads as a build with the demo fleet does (whatever this build's features).
fn load_in(map: &HashMap<String, String>, secrets: &Path) -> Result<Config, Vec<String>> {
    Config::parse(&|name| map.get(name).cloned(), secrets, true)
}

fn load(base: &[(&str, &str)], extra: &[(&str, &str)]) -> Result<Config, Vec<String>> {
    let empty = TempDir::new();
    load_in(&vars(base, extra), &empty.0)
}

fn config(extra: &[(&str, &str)]) -> Result<Config, Vec<String>> {
    load(&[], extra)
}

fn fleet_hosts(c: &Config) -> &[HostTarget] {
    match &c.mode {
        Mode::Fleet(h) => h,
        Mode::Demo(_) => panic!("expected fleet mode"),
    }
}

/// Asserts that loading fails with exactly one problem, starting with `var`, and returns it.
fn one_problem(result: Result<Config, Vec<String>>, var: &str) -> String {
    let problems = result.expect_err("expected a configuration error");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].starts_with(&format!("{var}: ")), "{problems:?}");
    problems[0].clone()
}

fn oidc(c: &Config) -> &OidcSettings {
    match &c.auth {
        AuthConfig::Oidc(o) => o,
        other @ AuthConfig::Disabled(_) => panic!("expected OIDC, got {other:?}"),
    }
}

#[test]
fn no_hosts_means_demo_mode_with_defaults() {
    let c = config(&[]).unwrap();
    let Mode::Demo(demo) = &c.mode else {
        panic!("expected demo mode");
    };
    assert_eq!(
        *demo,
        DemoConfig {
            hosts: 5,
            vms_per_host: 8,
            clusters: 2,
            password: None,
            guest_agent: None,
            migration_ms_per_gib: 100,
        }
    );
    assert!(c.hosts().is_empty());
    assert_eq!(c.install_directory, DEFAULT_INSTALL_DIRECTORY);
    assert_eq!(c.listen_addr.to_string(), DEFAULT_LISTEN_ADDR);
    assert_eq!(c.public_url, None);
    assert_eq!(c.log_format, LogFormat::Text);
    assert_eq!(c.log_level, "info");
    assert_eq!(c.refresh_interval, Duration::from_secs(30));
    assert_eq!(c.job_concurrency, 4);
    assert_eq!(c.job_concurrency_per_host, 2);
    assert_eq!(c.job_history, 1000);
    assert!(matches!(c.auth, AuthConfig::Disabled(DisabledReason::Demo)));
    // Whitespace counts as unset.
    assert!(config(&[("HYPERV_HOSTS", " ")]).unwrap().mode.is_demo());
}

#[test]
fn no_hosts_without_the_demo_fleet_is_one_problem() {
    let empty = TempDir::new();
    let map = vars(&[], &[("DEMO_HOSTS", "3")]);
    let problems = Config::parse(&|name| map.get(name).cloned(), &empty.0, false).unwrap_err();
    assert_eq!(problems, vec![NO_DEMO_FLEET.to_owned()]);
    assert!(NO_DEMO_FLEET.starts_with("HYPERV_HOSTS, HOSTS_FILE: "));
    assert!(NO_DEMO_FLEET.contains("no demo fleet"));
    assert!(!NO_DEMO_FLEET.contains('\n'));

    // Other problems are still reported, one line each.
    let map = vars(&[], &[("LOG_LEVEL", "loud")]);
    let problems = Config::parse(&|name| map.get(name).cloned(), &empty.0, false).unwrap_err();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].starts_with("LOG_LEVEL: "), "{problems:?}");
    assert_eq!(problems[1], NO_DEMO_FLEET);

    // Hosts work the same with or without the demo fleet.
    let map = vars(FLEET, &[]);
    let c = Config::parse(&|name| map.get(name).cloned(), &empty.0, false).unwrap();
    assert_eq!(fleet_hosts(&c).len(), 2);
}

#[test]
fn the_build_decides_whether_no_hosts_means_demo() {
    let empty = TempDir::new();
    let result = Config::from_sources(&|_| None, &empty.0);
    if DEMO_AVAILABLE {
        assert!(result.unwrap().mode.is_demo());
    } else {
        assert_eq!(result.unwrap_err(), vec![NO_DEMO_FLEET.to_owned()]);
    }
}

#[test]
fn hosts_with_credentials() {
    let c = load(
        FLEET,
        &[("WINRM_USE_TLS", "true"), ("WINRM_TRANSPORT", "basic")],
    )
    .unwrap();
    let hosts = fleet_hosts(&c);
    assert_eq!(hosts.len(), 2);
    assert_eq!(hosts[1].endpoint, "https://hv02.lab.example:5986/wsman");
    assert_eq!(hosts[0].transport, Transport::Basic);
    assert_eq!(hosts[0].user, "LAB\\svc");
    assert_eq!(hosts[0].password.expose(), "winrm-pw-123");
    assert_eq!(hosts[0].cluster, None);
    assert!(!format!("{hosts:?}").contains("winrm-pw-123"));
}

#[test]
fn winrm_port_tls_insecure_and_ca_file() {
    let c = load(FLEET, &[]).unwrap();
    assert_eq!(
        fleet_hosts(&c)[0].endpoint,
        "http://hv01.lab.example:5985/wsman"
    );
    assert_eq!(fleet_hosts(&c)[0].transport, Transport::Ntlm);
    let dir = TempDir::new();
    let ca = dir.write("ca.pem", "-----BEGIN CERTIFICATE-----\n");
    let c = load(
        FLEET,
        &[
            ("WINRM_PORT", "15986"),
            ("WINRM_USE_TLS", "yes"),
            ("WINRM_INSECURE", "1"),
            ("WINRM_CA_FILE", ca.to_str().unwrap()),
        ],
    )
    .unwrap();
    let h = &fleet_hosts(&c)[0];
    assert_eq!(h.endpoint, "https://hv01.lab.example:15986/wsman");
    assert!(h.insecure);
    assert_eq!(h.ca_file.as_deref(), Some(ca.as_path()));

    let p = one_problem(load(FLEET, &[("WINRM_PORT", "x")]), "WINRM_PORT");
    assert_eq!(p, "WINRM_PORT: expected a port number, got \"x\"");
    one_problem(load(FLEET, &[("WINRM_PORT", "0")]), "WINRM_PORT");
    one_problem(load(FLEET, &[("WINRM_USE_TLS", "maybe")]), "WINRM_USE_TLS");
    one_problem(load(FLEET, &[("WINRM_INSECURE", "sure")]), "WINRM_INSECURE");
    one_problem(
        load(FLEET, &[("WINRM_TRANSPORT", "credssp")]),
        "WINRM_TRANSPORT",
    );
    one_problem(
        load(FLEET, &[("WINRM_CA_FILE", "/nonexistent/ca.pem")]),
        "WINRM_CA_FILE",
    );
    // A directory is not a CA file.
    one_problem(
        load(FLEET, &[("WINRM_CA_FILE", dir.0.to_str().unwrap())]),
        "WINRM_CA_FILE",
    );
}

#[test]
fn basic_without_tls_is_refused() {
    let p = one_problem(
        load(FLEET, &[("WINRM_TRANSPORT", "basic")]),
        "WINRM_TRANSPORT",
    );
    assert!(p.contains("WINRM_USE_TLS"), "{p}");
    assert!(
        p.contains("hv01.lab.example") && p.contains("hv02.lab.example"),
        "{p}"
    );
}

#[test]
fn credentials_are_required_with_hosts() {
    let problems = load(FLEET, &[("WINRM_USERNAME", ""), ("WINRM_PASSWORD", "")]).unwrap_err();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("WINRM_USERNAME: required"))
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("WINRM_PASSWORD: required"))
    );
}

#[test]
fn every_problem_names_its_variable_and_all_are_reported() {
    let problems = config(&[
        ("HYPERV_HOSTS", "hv01"),
        ("WINRM_TRANSPORT", "credssp"),
        ("WINRM_PORT", "99999"),
        ("WINRM_USE_TLS", "maybe"),
        ("WINRM_CA_FILE", "/nonexistent/ca.pem"),
        ("HOST_INSTALL_DIRECTORY", "/opt/scripts"),
        ("INVENTORY_REFRESH_INTERVAL", "0"),
        ("JOB_CONCURRENCY", "many"),
        ("JOB_CONCURRENCY_PER_HOST", "65"),
        ("JOB_HISTORY", "9"),
        ("LISTEN_ADDR", "everywhere"),
        ("PUBLIC_URL", "aetherv.corp.example"),
        ("LOG_FORMAT", "xml"),
        ("LOG_LEVEL", "loud"),
        ("AUTH_ENABLED", "perhaps"),
    ])
    .unwrap_err();
    for name in [
        "WINRM_TRANSPORT",
        "WINRM_PORT",
        "WINRM_USE_TLS",
        "WINRM_USERNAME",
        "WINRM_PASSWORD",
        "WINRM_CA_FILE",
        "HOST_INSTALL_DIRECTORY",
        "INVENTORY_REFRESH_INTERVAL",
        "JOB_CONCURRENCY",
        "JOB_CONCURRENCY_PER_HOST",
        "JOB_HISTORY",
        "LISTEN_ADDR",
        "PUBLIC_URL",
        "LOG_FORMAT",
        "LOG_LEVEL",
        "AUTH_ENABLED",
        "OIDC_ISSUER_URL",
        "OIDC_CLIENT_ID",
        "OIDC_READER_ROLE",
    ] {
        assert!(
            problems.iter().any(|p| p.starts_with(&format!("{name}: "))
                || (name == "OIDC_READER_ROLE" && p.starts_with(name))),
            "{name} missing from {problems:?}"
        );
    }
    for p in &problems {
        assert!(!p.ends_with('.'), "{p}");
    }
}

#[test]
fn numbers_have_ranges() {
    let c = config(&[
        ("INVENTORY_REFRESH_INTERVAL", "86400"),
        ("JOB_CONCURRENCY", "256"),
        ("JOB_CONCURRENCY_PER_HOST", "1"),
        ("JOB_HISTORY", "100000"),
    ])
    .unwrap();
    assert_eq!(c.refresh_interval, Duration::from_secs(86_400));
    assert_eq!(c.job_concurrency, 256);
    assert_eq!(c.job_concurrency_per_host, 1);
    assert_eq!(c.job_history, 100_000);
    for (var, bad) in [
        ("INVENTORY_REFRESH_INTERVAL", "0"),
        ("INVENTORY_REFRESH_INTERVAL", "86401"),
        ("INVENTORY_REFRESH_INTERVAL", "30s"),
        ("JOB_CONCURRENCY", "0"),
        ("JOB_CONCURRENCY", "257"),
        ("JOB_CONCURRENCY_PER_HOST", "0"),
        ("JOB_CONCURRENCY_PER_HOST", "65"),
        ("JOB_HISTORY", "9"),
        ("JOB_HISTORY", "100001"),
        ("JOB_HISTORY", "-5"),
    ] {
        let p = one_problem(config(&[(var, bad)]), var);
        assert!(p.contains(&format!("{bad:?}")), "{p}");
    }
}

#[test]
fn listen_addr_public_url_and_logging() {
    let c = config(&[
        ("LISTEN_ADDR", "0.0.0.0:9000"),
        ("PUBLIC_URL", "https://aetherv.corp.example/"),
        ("LOG_FORMAT", "JSON"),
        ("LOG_LEVEL", "Debug"),
    ])
    .unwrap();
    assert_eq!(c.listen_addr, "0.0.0.0:9000".parse().unwrap());
    assert_eq!(
        c.public_url.as_deref(),
        Some("https://aetherv.corp.example")
    );
    assert_eq!(c.log_format, LogFormat::Json);
    assert_eq!(c.log_level, "debug");
    assert_eq!(
        config(&[("LOG_FORMAT", "text")]).unwrap().log_format,
        LogFormat::Text
    );
    one_problem(config(&[("LISTEN_ADDR", "localhost")]), "LISTEN_ADDR");
    for bad in [
        "aetherv.corp.example",
        "ftp://x.example",
        "https://x.example/?a=b",
        "https://corp.example/aetherv",
    ] {
        one_problem(config(&[("PUBLIC_URL", bad)]), "PUBLIC_URL");
    }
    one_problem(config(&[("LOG_FORMAT", "xml")]), "LOG_FORMAT");
    one_problem(config(&[("LOG_LEVEL", "verbose")]), "LOG_LEVEL");
}

#[test]
fn install_directory_must_be_an_absolute_windows_path() {
    let c = config(&[("HOST_INSTALL_DIRECTORY", r"D:\Tools\Aetherv")]).unwrap();
    assert_eq!(c.install_directory, r"D:\Tools\Aetherv");
    for bad in [
        "/opt/aetherv",
        r"Tools\Aetherv",
        "C:",
        r"C:\a|b",
        "C:/x",
        r#"C:\a"b"#,
    ] {
        one_problem(
            config(&[("HOST_INSTALL_DIRECTORY", bad)]),
            "HOST_INSTALL_DIRECTORY",
        );
    }
}

#[test]
fn demo_knobs() {
    let c = config(&[
        ("DEMO_HOSTS", "50"),
        ("DEMO_VMS_PER_HOST", "200"),
        ("DEMO_CLUSTERS", "0"),
        ("AETHERV_DEMO_PASSWORD", "demo-pw-xyz"),
    ])
    .unwrap();
    let Mode::Demo(demo) = &c.mode else {
        panic!("expected demo mode");
    };
    assert_eq!((demo.hosts, demo.vms_per_host, demo.clusters), (50, 200, 0));
    assert_eq!(demo.password.as_ref().unwrap().expose(), "demo-pw-xyz");
    assert!(!format!("{c:?}").contains("demo-pw-xyz"));
    let Mode::Demo(one) = config(&[("DEMO_HOSTS", "1")]).unwrap().mode else {
        panic!("expected demo mode");
    };
    assert_eq!(one.clusters, 1);
    one_problem(config(&[("DEMO_HOSTS", "0")]), "DEMO_HOSTS");
    one_problem(config(&[("DEMO_HOSTS", "251")]), "DEMO_HOSTS");
    one_problem(config(&[("DEMO_VMS_PER_HOST", "201")]), "DEMO_VMS_PER_HOST");
    one_problem(
        config(&[("DEMO_HOSTS", "3"), ("DEMO_CLUSTERS", "4")]),
        "DEMO_CLUSTERS",
    );
    // Ignored with real hosts.
    assert!(load(FLEET, &[("DEMO_HOSTS", "0")]).is_ok());
}

#[test]
fn secret_from_file_only() {
    let secrets = TempDir::new();
    secrets.write("WINRM_PASSWORD", "file-pw-456\n");
    secrets.write("WINRM_USERNAME", "LAB\\filesvc\n");
    let map = vars(FLEET, &[("WINRM_PASSWORD", ""), ("WINRM_USERNAME", "")]);
    let c = load_in(&map, &secrets.0).unwrap();
    assert_eq!(fleet_hosts(&c)[0].password.expose(), "file-pw-456");
    assert_eq!(fleet_hosts(&c)[0].user, "LAB\\filesvc");
}

#[test]
fn secret_from_env_only_and_both_equal() {
    let secrets = TempDir::new();
    let c = load_in(&vars(FLEET, &[]), &secrets.0).unwrap();
    assert_eq!(fleet_hosts(&c)[0].password.expose(), "winrm-pw-123");
    secrets.write("WINRM_PASSWORD", "winrm-pw-123\n");
    let c = load_in(&vars(FLEET, &[]), &secrets.0).unwrap();
    assert_eq!(fleet_hosts(&c)[0].password.expose(), "winrm-pw-123");
}

#[test]
fn secret_in_both_places_with_different_values_is_an_error() {
    let secrets = TempDir::new();
    let file = secrets.write("WINRM_PASSWORD", "file-pw-456\n");
    let p = one_problem(load_in(&vars(FLEET, &[]), &secrets.0), "WINRM_PASSWORD");
    assert!(p.contains(file.to_str().unwrap()), "{p}");
    assert!(
        !p.contains("file-pw-456") && !p.contains("winrm-pw-123"),
        "{p}"
    );
}

#[test]
fn empty_secret_file_counts_as_unset() {
    let secrets = TempDir::new();
    secrets.write("WINRM_PASSWORD", " \n");
    let map = vars(FLEET, &[("WINRM_PASSWORD", "")]);
    one_problem(load_in(&map, &secrets.0), "WINRM_PASSWORD");
}

fn hosts_file(yaml: &str) -> (TempDir, HashMap<String, String>) {
    let dir = TempDir::new();
    let path = dir.write("hosts.yaml", yaml);
    let map = vars(
        FLEET,
        &[("HYPERV_HOSTS", ""), ("HOSTS_FILE", path.to_str().unwrap())],
    );
    (dir, map)
}

#[test]
fn hosts_file_with_clusters_defaults_and_overrides() {
    let dir = TempDir::new();
    dir.write("ca.pem", "ca");
    let (_hosts_dir, map) = hosts_file(&format!(
        r#"
defaults: {{port: 5986, use_tls: true, transport: ntlm}}
clusters:
  - name: prod-a
    hosts: [hv01.corp.example, {{name: hv02.corp.example, port: 5985, use_tls: false}}]
hosts:
  - hv10.corp.example
  - {{name: hv11.corp.example, transport: basic, use_tls: true, ca_file: {ca}, insecure: false, username: other}}
"#,
        ca = dir.0.join("ca.pem").display()
    ));
    let c = load_in(&map, &dir.0).unwrap();
    let hosts = fleet_hosts(&c);
    let names: Vec<_> = hosts.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "hv01.corp.example",
            "hv02.corp.example",
            "hv10.corp.example",
            "hv11.corp.example"
        ]
    );
    assert_eq!(hosts[0].cluster.as_deref(), Some("prod-a"));
    assert_eq!(hosts[0].endpoint, "https://hv01.corp.example:5986/wsman");
    assert_eq!(hosts[1].cluster.as_deref(), Some("prod-a"));
    assert_eq!(hosts[1].endpoint, "http://hv02.corp.example:5985/wsman");
    assert_eq!(hosts[2].cluster, None);
    assert_eq!(hosts[2].endpoint, "https://hv10.corp.example:5986/wsman");
    assert_eq!(hosts[2].user, "LAB\\svc");
    assert_eq!(hosts[3].transport, Transport::Basic);
    assert_eq!(hosts[3].user, "other");
    assert_eq!(
        hosts[3].ca_file.as_deref(),
        Some(dir.0.join("ca.pem").as_path())
    );
    assert!(hosts.iter().all(|h| h.password.expose() == "winrm-pw-123"));
}

#[test]
fn hosts_file_unknown_field_names_its_path() {
    let (_dir, map) =
        hosts_file("clusters:\n  - name: prod-a\n    hosts: [hv01, {name: hv02, prt: 5985}]\n");
    let empty = TempDir::new();
    let p = one_problem(load_in(&map, &empty.0), "HOSTS_FILE");
    assert!(
        p.starts_with("HOSTS_FILE: clusters[0].hosts[1].prt: unknown field"),
        "{p}"
    );
    let (_dir, map) = hosts_file("defaults: {tls: true}\nhosts: [hv01]\n");
    let p = one_problem(load_in(&map, &empty.0), "HOSTS_FILE");
    assert!(
        p.starts_with("HOSTS_FILE: defaults.tls: unknown field"),
        "{p}"
    );
    let (_dir, map) = hosts_file("hostz: [hv01]\n");
    let p = one_problem(load_in(&map, &empty.0), "HOSTS_FILE");
    assert!(p.contains("hostz") && p.contains("unknown field"), "{p}");
    let (_dir, map) = hosts_file("hosts: [{name: hv01, transport: credssp}]\n");
    let p = one_problem(load_in(&map, &empty.0), "HOSTS_FILE");
    assert!(p.starts_with("HOSTS_FILE: hosts[0].transport: "), "{p}");
}

#[test]
fn hosts_file_duplicates_and_bad_names() {
    let empty = TempDir::new();
    let (_dir, map) =
        hosts_file("clusters:\n  - name: a\n    hosts: [hv01, HV02]\nhosts: [hv02, hv03]\n");
    let p = one_problem(load_in(&map, &empty.0), "HOSTS_FILE");
    assert!(
        p.contains("hosts[0]") && p.contains("duplicate host"),
        "{p}"
    );
    let (_dir, map) =
        hosts_file("clusters:\n  - {name: a, hosts: [hv01]}\n  - {name: A, hosts: [hv02]}\n");
    let p = one_problem(load_in(&map, &empty.0), "HOSTS_FILE");
    assert!(p.contains("duplicate cluster"), "{p}");
    let p = one_problem(
        load(FLEET, &[("HYPERV_HOSTS", "hv01,hv01")]),
        "HYPERV_HOSTS",
    );
    assert!(p.contains("duplicate host"), "{p}");
    one_problem(
        load(FLEET, &[("HYPERV_HOSTS", "http://hv01")]),
        "HYPERV_HOSTS",
    );
    one_problem(load(FLEET, &[("HYPERV_HOSTS", ",")]), "HYPERV_HOSTS");
}

#[test]
fn hosts_file_problems() {
    let empty = TempDir::new();
    let map = vars(FLEET, &[("HOSTS_FILE", "/nonexistent/hosts.yaml")]);
    let p = one_problem(load_in(&map, &empty.0), "HOSTS_FILE");
    assert!(p.contains("HYPERV_HOSTS"), "{p}");
    let map = vars(
        FLEET,
        &[
            ("HYPERV_HOSTS", ""),
            ("HOSTS_FILE", "/nonexistent/hosts.yaml"),
        ],
    );
    let p = one_problem(load_in(&map, &empty.0), "HOSTS_FILE");
    assert!(p.contains("cannot read /nonexistent/hosts.yaml"), "{p}");
    let (_dir, map) = hosts_file("hosts: []\n");
    one_problem(load_in(&map, &empty.0), "HOSTS_FILE");
    let (_dir, map) = hosts_file("hosts: [{name: hv01, transport: basic}]\n");
    let p = one_problem(load_in(&map, &empty.0), "HOSTS_FILE");
    assert!(p.starts_with("HOSTS_FILE: hosts[0] (hv01): "), "{p}");
    let (_dir, map) = hosts_file("hosts: [{name: hv01, ca_file: /nonexistent/ca.pem}]\n");
    let p = one_problem(load_in(&map, &empty.0), "HOSTS_FILE");
    assert!(p.starts_with("HOSTS_FILE: hosts[0].ca_file: "), "{p}");
    // Basic from the environment, TLS from the file: fine.
    let (_dir, mut map) = hosts_file("defaults: {use_tls: true}\nhosts: [hv01]\n");
    map.insert("WINRM_TRANSPORT".into(), "basic".into());
    assert!(load_in(&map, &empty.0).is_ok());
}

#[test]
fn fleet_auth_requires_oidc() {
    let problems = load(
        FLEET,
        &[
            ("OIDC_ISSUER_URL", ""),
            ("OIDC_CLIENT_ID", ""),
            ("OIDC_ADMIN_ROLE", ""),
        ],
    )
    .unwrap_err();
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(problems[0].starts_with("OIDC_ISSUER_URL: required"));
    assert!(problems[1].starts_with("OIDC_CLIENT_ID: required"));
    assert!(problems[2].starts_with("OIDC_READER_ROLE"));
    one_problem(
        load(FLEET, &[("OIDC_ISSUER_URL", "login.example")]),
        "OIDC_ISSUER_URL",
    );
    let c = load(FLEET, &[]).unwrap();
    let o = oidc(&c);
    assert_eq!(o.issuer_url, "https://login.example.com/realms/aetherv");
    assert_eq!(o.client_id, "aetherv");
    assert_eq!(o.roles.admin.as_deref(), Some("aetherv-admin"));
    assert!(o.login.is_none());
    // OIDC_ROLE_NAME alone is enough.
    let c = load(FLEET, &[("OIDC_ADMIN_ROLE", ""), ("OIDC_ROLE_NAME", "ops")]).unwrap();
    assert_eq!(oidc(&c).roles.role_name.as_deref(), Some("ops"));
}

#[test]
fn auth_can_only_be_disabled_for_development() {
    let p = one_problem(load(FLEET, &[("AUTH_ENABLED", "false")]), "AUTH_ENABLED");
    assert!(p.contains("ALLOW_DEV_AUTH=true"), "{p}");
    let c = load(
        FLEET,
        &[
            ("AUTH_ENABLED", "false"),
            ("ALLOW_DEV_AUTH", "true"),
            ("OIDC_ISSUER_URL", ""),
        ],
    )
    .unwrap();
    assert!(matches!(
        c.auth,
        AuthConfig::Disabled(DisabledReason::DevAuth)
    ));
    one_problem(config(&[("AUTH_ENABLED", "false")]), "AUTH_ENABLED");
    one_problem(config(&[("ALLOW_DEV_AUTH", "maybe")]), "ALLOW_DEV_AUTH");
}

#[test]
fn demo_with_issuer_uses_oidc_with_the_same_rules() {
    let c = config(&[
        ("OIDC_ISSUER_URL", "http://127.0.0.1:9999"),
        ("OIDC_CLIENT_ID", "aetherv"),
        ("OIDC_READER_ROLE", "r"),
    ])
    .unwrap();
    assert!(c.mode.is_demo());
    assert_eq!(oidc(&c).issuer_url, "http://127.0.0.1:9999");
    one_problem(
        config(&[
            ("OIDC_ISSUER_URL", "http://127.0.0.1:9999"),
            ("OIDC_READER_ROLE", "r"),
        ]),
        "OIDC_CLIENT_ID",
    );
}

#[test]
fn browser_login_settings() {
    let secret = [("OIDC_CLIENT_SECRET", "client-secret-789")];
    // Loopback listener: the redirect URL is derived from it.
    let c = load(FLEET, &secret).unwrap();
    let login = oidc(&c).login.as_ref().unwrap();
    assert_eq!(login.redirect_url, "http://127.0.0.1:8000/oidc/callback");
    assert_eq!(login.scopes, ["openid", "profile", "email"]);
    assert!(login.session_key.is_none());
    assert_eq!(login.client_secret.expose(), "client-secret-789");
    // Not loopback: PUBLIC_URL is needed.
    let p = one_problem(
        load(FLEET, &[secret[0], ("LISTEN_ADDR", "0.0.0.0:8000")]),
        "PUBLIC_URL",
    );
    assert!(p.contains("OIDC_REDIRECT_URL"), "{p}");
    let c = load(
        FLEET,
        &[
            secret[0],
            ("LISTEN_ADDR", "0.0.0.0:8000"),
            ("PUBLIC_URL", "https://aetherv.corp.example"),
            ("OIDC_SCOPES", "openid groups"),
            ("SESSION_KEY", "0123456789abcdef0123456789abcdef"),
        ],
    )
    .unwrap();
    let login = oidc(&c).login.as_ref().unwrap();
    assert_eq!(
        login.redirect_url,
        "https://aetherv.corp.example/oidc/callback"
    );
    assert_eq!(login.scopes, ["openid", "groups"]);
    assert_eq!(login.session_key_or_random().expose().len(), 32);
    // OIDC_REDIRECT_URL wins over PUBLIC_URL; OIDC_REDIRECT_URI is accepted too.
    for var in ["OIDC_REDIRECT_URL", "OIDC_REDIRECT_URI"] {
        let c = load(
            FLEET,
            &[
                secret[0],
                ("PUBLIC_URL", "https://aetherv.corp.example"),
                (var, "https://other.example/oidc/callback"),
            ],
        )
        .unwrap();
        let login = oidc(&c).login.as_ref().unwrap();
        assert_eq!(login.redirect_url, "https://other.example/oidc/callback");
    }
    one_problem(
        load(FLEET, &[secret[0], ("OIDC_REDIRECT_URL", "/oidc/callback")]),
        "OIDC_REDIRECT_URL",
    );
    one_problem(
        load(FLEET, &[secret[0], ("OIDC_SCOPES", "profile email")]),
        "OIDC_SCOPES",
    );
    let p = one_problem(
        load(FLEET, &[secret[0], ("SESSION_KEY", "short-session-key")]),
        "SESSION_KEY",
    );
    assert!(!p.contains("short-session-key"), "{p}");
    // A generated key is long enough and differs between calls.
    let c = load(FLEET, &secret).unwrap();
    let login = oidc(&c).login.as_ref().unwrap();
    let (a, b) = (login.session_key_or_random(), login.session_key_or_random());
    assert!(a.expose().len() >= MIN_SESSION_KEY_BYTES);
    assert_ne!(a.expose(), b.expose());
}

#[test]
fn client_secret_and_session_key_from_files() {
    let secrets = TempDir::new();
    secrets.write("OIDC_CLIENT_SECRET", "client-secret-789\n");
    secrets.write("SESSION_KEY", "session-key-0123456789abcdef0123456789\n");
    let c = load_in(&vars(FLEET, &[]), &secrets.0).unwrap();
    let login = oidc(&c).login.as_ref().unwrap();
    assert_eq!(login.client_secret.expose(), "client-secret-789");
    assert_eq!(
        login.session_key.as_ref().unwrap().expose(),
        "session-key-0123456789abcdef0123456789"
    );
    let p = one_problem(
        load_in(
            &vars(FLEET, &[("OIDC_CLIENT_SECRET", "other-secret")]),
            &secrets.0,
        ),
        "OIDC_CLIENT_SECRET",
    );
    assert!(
        !p.contains("other-secret") && !p.contains("client-secret-789"),
        "{p}"
    );
}

#[test]
fn debug_never_shows_secrets() {
    let c = load(
        FLEET,
        &[
            ("OIDC_CLIENT_SECRET", "client-secret-789"),
            ("SESSION_KEY", "session-key-0123456789abcdef0123456789"),
        ],
    )
    .unwrap();
    let debug = format!("{c:?}");
    for secret in [
        "winrm-pw-123",
        "client-secret-789",
        "session-key-0123456789abcdef0123456789",
    ] {
        assert!(!debug.contains(secret), "{secret} in {debug}");
    }
    assert!(debug.contains("hv01.lab.example"));
}

#[test]
fn image_boot_rules_from_hosts_file_levels_and_the_environment() {
    use aetherv_hyperv::OsFamily;
    use aetherv_hyperv::ops::SecureBootTemplate;
    let (_dir, mut map) = hosts_file(
        r#"
defaults:
  image_boot: [{image: "*", tpm: true}]
clusters:
  - name: prod-a
    image_boot: [{image: "ubuntu*", secure_boot: false}]
    hosts:
      - hv01
      - {name: hv02, image_boot: [{image: "ubuntu-22*", secure_boot_template: OpenSourceShieldedVM}]}
hosts: [hv10]
"#,
    );
    map.insert(
        "AETHERV_IMAGE_BOOT".to_owned(),
        r#"[{"image": "rocky*", "secure_boot": false}]"#.to_owned(),
    );
    let empty = TempDir::new();
    let c = load_in(&map, &empty.0).unwrap();
    let hosts = fleet_hosts(&c);
    let patterns = |i: usize| -> Vec<&str> {
        hosts[i]
            .image_boot
            .iter()
            .map(|r| r.image.as_str())
            .collect()
    };
    assert_eq!(patterns(0), ["ubuntu*", "*"]);
    assert_eq!(patterns(1), ["ubuntu-22*", "ubuntu*", "*"]);
    assert_eq!(patterns(2), ["*"]);
    let policy = c.boot_policy();
    assert_eq!(c.image_boot.len(), 1);
    // hv02: its own rule wins and the family default fills the rest.
    let hv02 = policy.resolve("HV02", "ubuntu-22.04", OsFamily::Linux);
    assert_eq!(
        hv02.settings.secure_boot_template,
        SecureBootTemplate::OpenSourceShieldedVm
    );
    assert!(hv02.settings.secure_boot && !hv02.settings.tpm);
    // hv01: the cluster's rule.
    assert!(
        !policy
            .resolve("hv01", "ubuntu-22.04", OsFamily::Linux)
            .settings
            .secure_boot
    );
    // The file's defaults match everything before the environment's rules.
    assert!(
        policy
            .resolve("hv10", "rocky-9", OsFamily::Linux)
            .settings
            .tpm
    );
    // A host outside HOSTS_FILE's rules gets the environment's.
    let other = policy.resolve("elsewhere", "rocky-9", OsFamily::Linux);
    assert!(!other.settings.secure_boot);
}

#[test]
fn bad_image_boot_rules_name_their_path() {
    let empty = TempDir::new();
    let (_dir, map) = hosts_file(
        "hosts:\n  - {name: hv01, image_boot: [{image: x, secure_boot_template: Bogus}]}\n",
    );
    let p = one_problem(load_in(&map, &empty.0), "HOSTS_FILE");
    assert!(
        p.starts_with("HOSTS_FILE: hosts[0].image_boot[0].secure_boot_template: "),
        "{p}"
    );
    let (_dir, map) = hosts_file("defaults: {image_boot: [{image: ' '}]}\nhosts: [hv01]\n");
    let p = one_problem(load_in(&map, &empty.0), "HOSTS_FILE");
    assert!(p.contains("defaults.image_boot[0].image"), "{p}");
    let p = one_problem(
        config(&[("AETHERV_IMAGE_BOOT", "[{image: x, tmp: true}]")]),
        "AETHERV_IMAGE_BOOT",
    );
    assert!(p.contains("unknown field"), "{p}");
    let p = one_problem(
        config(&[("AETHERV_IMAGE_BOOT", "not a list")]),
        "AETHERV_IMAGE_BOOT",
    );
    assert!(p.contains("expected a list"), "{p}");
}

#[test]
fn image_roots_come_from_the_first_level_that_sets_them() {
    let (_dir, mut map) = hosts_file(
        r#"
defaults:
  image_roots: ['D:\Images\']
clusters:
  - name: prod-a
    image_roots: ['C:\ClusterStorage\Volume1\DiskImages', 'C:\ClusterStorage\Volume1\Images']
    hosts: [hv01, {name: hv02, image_roots: ['E:\Gold']}]
hosts: [hv10]
"#,
    );
    map.insert(
        "AETHERV_IMAGE_ROOTS".to_owned(),
        r"F:\Env;G:\Env2".to_owned(),
    );
    let empty = TempDir::new();
    let c = load_in(&map, &empty.0).unwrap();
    let hosts = fleet_hosts(&c);
    assert_eq!(
        hosts[0].image_roots,
        [
            r"C:\ClusterStorage\Volume1\DiskImages",
            r"C:\ClusterStorage\Volume1\Images"
        ]
    );
    assert_eq!(hosts[1].image_roots, [r"E:\Gold"]);
    assert_eq!(hosts[2].image_roots, [r"D:\Images"]);

    // Without HOSTS_FILE roots the variable applies; without either, the script's default.
    let (_dir, mut map) = hosts_file("hosts: [hv01]\n");
    map.insert(
        "AETHERV_IMAGE_ROOTS".to_owned(),
        r"F:\Env; G:\Env2\".to_owned(),
    );
    let c = load_in(&map, &empty.0).unwrap();
    assert_eq!(fleet_hosts(&c)[0].image_roots, [r"F:\Env", r"G:\Env2"]);
    let (_dir, map) = hosts_file("hosts: [hv01]\n");
    let c = load_in(&map, &empty.0).unwrap();
    assert!(fleet_hosts(&c)[0].image_roots.is_empty());

    let (_dir, mut map) = hosts_file("hosts: [hv01]\n");
    map.insert("AETHERV_IMAGE_ROOTS".to_owned(), "relative/path".to_owned());
    let p = one_problem(load_in(&map, &empty.0), "AETHERV_IMAGE_ROOTS");
    assert!(p.contains("relative/path"), "{p}");
}

#[test]
fn networks_and_storage_classes_merge_by_level_and_are_checked() {
    let (_dir, map) = hosts_file(
        r#"
defaults:
  networks: [{name: prod, switch: sw-default, vlan_id: 5}]
  storage_classes: [{name: bulk, path: 'D:\Bulk'}]
clusters:
  - name: prod-a
    networks: [{name: prod, switch: sw-cluster}]
    default_network: prod
    hosts:
      - {name: hv01, storage_classes: [{name: fast, path: 'C:\ClusterStorage\Volume1\Fast'}]}
"#,
    );
    let empty = TempDir::new();
    let c = load_in(&map, &empty.0).unwrap();
    let hv01 = &fleet_hosts(&c)[0].resources;
    assert_eq!(hv01.network("PROD").unwrap().switch, "sw-cluster");
    assert_eq!(hv01.default_network.as_deref(), Some("prod"));
    let classes: Vec<&str> = hv01
        .storage_classes
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(classes, ["fast", "bulk"]);
    assert!(c.host_resources().contains_key("hv01"));

    let (_dir, map) = hosts_file(
        "hosts:\n  - {name: hv01, networks: [{name: a, switch: s, vlan_id: 5000}], default_network: b}\n",
    );
    let problems = load_in(&map, &empty.0).unwrap_err();
    assert!(
        problems.iter().any(|p| p.contains("networks[0].vlan_id")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("default_network \"b\"")),
        "{problems:?}"
    );
}

#[test]
fn hosts_file_nesting_too_deep_is_a_problem_not_a_stall() {
    // 30,000 nested flow mappings: the bound refuses the file before the YAML parser runs.
    let (_dir, map) = hosts_file(&format!(
        "hosts: [hv01]\ndefaults: {}",
        "{a: ".repeat(30_000)
    ));
    let empty = TempDir::new();
    let p = one_problem(load_in(&map, &empty.0), "HOSTS_FILE");
    assert!(p.contains("nesting deeper than 16 levels"), "{p}");
    assert!(p.contains("line 2"), "{p}");
}

#[test]
fn the_issuer_must_be_https_unless_loopback_or_explicitly_relaxed() {
    let problem = one_problem(
        load(
            FLEET,
            &[("OIDC_ISSUER_URL", "http://login.corp.example/realms/x")],
        ),
        "OIDC_ISSUER_URL",
    );
    assert!(problem.contains("must be https"), "{problem}");
    for ok in [
        "https://login.corp.example/realms/x",
        "http://127.0.0.1:8080",
        "http://localhost:8080",
        "http://[::1]:8080",
    ] {
        let c = load(FLEET, &[("OIDC_ISSUER_URL", ok)]).unwrap_or_else(|p| panic!("{ok}: {p:?}"));
        assert!(!oidc(&c).insecure_issuer(), "{ok}");
    }
    let c = load(
        FLEET,
        &[
            ("OIDC_ISSUER_URL", "http://login.lab.example"),
            ("OIDC_ALLOW_INSECURE_HTTP", "true"),
        ],
    )
    .unwrap();
    assert!(oidc(&c).insecure_issuer());
    assert!(oidc(&c).http_policy().allow_insecure_http);
}

#[test]
fn session_settings() {
    let secret = [
        ("OIDC_CLIENT_SECRET", "client-secret-1"),
        ("PUBLIC_URL", "https://aetherv.corp.example"),
        ("SESSION_KEY", "0123456789abcdef0123456789abcdef"),
    ];
    let c = load(FLEET, &secret).unwrap();
    let login = oidc(&c).login.as_ref().unwrap();
    assert_eq!(login.session_max_age.as_secs(), 8 * 3600);
    assert!(login.previous_session_key.is_none());
    let mut extra = secret.to_vec();
    extra.push(("SESSION_MAX_AGE", "3600"));
    extra.push(("SESSION_KEY_PREVIOUS", "fedcba9876543210fedcba9876543210"));
    let c = load(FLEET, &extra).unwrap();
    let login = oidc(&c).login.as_ref().unwrap();
    assert_eq!(login.session_max_age.as_secs(), 3600);
    assert!(login.previous_session_key.is_some());
    let problem = one_problem(
        load(
            FLEET,
            &[
                ("OIDC_CLIENT_SECRET", "client-secret-1"),
                ("PUBLIC_URL", "https://aetherv.corp.example"),
                ("SESSION_KEY_PREVIOUS", "fedcba9876543210fedcba9876543210"),
            ],
        ),
        "SESSION_KEY_PREVIOUS",
    );
    assert!(problem.contains("SESSION_KEY too"), "{problem}");
}

#[test]
fn certificate_pins_from_the_environment_and_hosts_file() {
    let empty = TempDir::new();
    let pin = "AB:".repeat(31) + "CD";
    let other = "12".repeat(32);
    let (_dir, mut map) = hosts_file(&format!(
        "defaults: {{cert_sha256: \"{pin}\"}}\nhosts: [hv01, {{name: hv02, cert_sha256: \"{other}, {pin}\"}}]\n"
    ));
    let c = load_in(&map, &empty.0).unwrap();
    let hosts = fleet_hosts(&c);
    assert_eq!(hosts[0].cert_sha256.len(), 1);
    assert_eq!(hosts[0].cert_sha256[0].to_string(), pin);
    assert_eq!(hosts[1].cert_sha256.len(), 2);
    // From the environment, for hosts the file does not pin.
    let (_dir, map2) = hosts_file("hosts: [hv01]\n");
    let mut env = map2.clone();
    env.insert("WINRM_CERT_SHA256".into(), other.clone());
    let c = load_in(&env, &empty.0).unwrap();
    assert_eq!(fleet_hosts(&c)[0].cert_sha256[0].0, [0x12; 32]);
    // Bad values name where they are.
    env.insert("WINRM_CERT_SHA256".into(), "not-a-hash".into());
    let p = one_problem(load_in(&env, &empty.0), "WINRM_CERT_SHA256");
    assert!(p.contains("64 hex digits"), "{p}");
    let (_dir, bad) = hosts_file("hosts: [{name: hv01, cert_sha256: abc}]\n");
    let p = one_problem(load_in(&bad, &empty.0), "HOSTS_FILE");
    assert!(p.starts_with("HOSTS_FILE: hosts[0].cert_sha256: "), "{p}");
    map.insert("WINRM_CERT_SHA256".into(), other);
    // The file's pins win over the environment's.
    let c = load_in(&map, &empty.0).unwrap();
    assert_eq!(fleet_hosts(&c)[0].cert_sha256[0].to_string(), pin);
}

#[cfg(feature = "kerberos")]
mod kerberos {
    use super::*;

    fn kerberos_fleet(extra: &[(&str, &str)]) -> (TempDir, Result<Config, Vec<String>>) {
        let dir = TempDir::new();
        let keytab = dir.write("client.keytab", "\u{5}\u{2}");
        let mut all = vec![
            ("WINRM_TRANSPORT", "kerberos"),
            ("WINRM_USERNAME", "svc-aetherv"),
            ("WINRM_PASSWORD", ""),
            ("WINRM_REALM", "LAB.EXAMPLE"),
            ("WINRM_KDC", "dc1.lab.example, dc2.lab.example:88"),
        ];
        let keytab = keytab.to_str().unwrap().to_owned();
        let keytab_var = [("WINRM_KEYTAB", keytab.as_str())];
        if !extra.iter().any(|(k, _)| *k == "WINRM_KEYTAB") {
            all.extend_from_slice(&keytab_var);
        }
        all.extend_from_slice(extra);
        let result = load_in(&vars(FLEET, &all), &dir.0);
        (dir, result)
    }

    #[test]
    fn keytab_realm_and_kdc_configure_every_host() {
        let (_dir, result) = kerberos_fleet(&[("WINRM_DELEGATE", "true")]);
        let c = result.unwrap();
        let hosts = fleet_hosts(&c);
        assert_eq!(hosts.len(), 2);
        for h in hosts {
            assert_eq!(h.transport, Transport::Kerberos);
            let k = h.kerberos.as_ref().unwrap();
            assert_eq!(k.realm.as_deref(), Some("LAB.EXAMPLE"));
            assert_eq!(k.kdcs, ["dc1.lab.example", "dc2.lab.example:88"]);
            assert!(k.delegate);
            assert!(k.keytab.is_some());
        }
    }

    #[test]
    fn an_ip_address_host_is_one_problem() {
        let (_dir, result) = kerberos_fleet(&[("HYPERV_HOSTS", "10.0.0.5,hv02.lab.example")]);
        let problems = result.unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("10.0.0.5"), "{problems:?}");
        assert!(problems[0].contains("IP address"), "{problems:?}");
        assert!(problems[0].starts_with("HYPERV_HOSTS"), "{problems:?}");
    }

    #[test]
    fn no_keytab_and_no_password_is_one_problem() {
        let (_dir, result) = kerberos_fleet(&[("WINRM_KEYTAB", "")]);
        let p = one_problem(result, "WINRM_KEYTAB");
        assert!(
            p.contains("hv01.lab.example") && p.contains("WINRM_PASSWORD"),
            "{p}"
        );
    }

    #[test]
    fn a_password_is_enough_without_a_keytab() {
        let (_dir, result) =
            kerberos_fleet(&[("WINRM_KEYTAB", ""), ("WINRM_PASSWORD", "kerberos-pw-1")]);
        let c = result.unwrap();
        assert!(
            fleet_hosts(&c)[0]
                .kerberos
                .as_ref()
                .unwrap()
                .keytab
                .is_none()
        );
    }

    #[test]
    fn kdc_without_realm_is_refused() {
        let (_dir, result) = kerberos_fleet(&[("WINRM_REALM", "")]);
        let problems = result.unwrap_err();
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("WINRM_KDC: needs WINRM_REALM")),
            "{problems:?}"
        );
    }

    #[test]
    fn negotiate_falls_back_to_ntlm_only_when_allowed() {
        let hosts = [
            ("HYPERV_HOSTS", "10.0.0.5"),
            ("WINRM_TRANSPORT", "negotiate"),
        ];
        let (_dir, result) = kerberos_fleet(&hosts);
        let problems = result.unwrap_err();
        assert!(
            problems.iter().any(|p| p.contains("IP address")),
            "{problems:?}"
        );
        let mut allowed = hosts.to_vec();
        allowed.push(("WINRM_NTLM_FALLBACK", "true"));
        allowed.push(("WINRM_PASSWORD", "winrm-pw-123"));
        let (_dir, result) = kerberos_fleet(&allowed);
        let c = result.unwrap();
        assert_eq!(fleet_hosts(&c)[0].transport, Transport::Ntlm);
        assert!(fleet_hosts(&c)[0].kerberos.is_none());
    }

    #[test]
    fn negotiate_hosts_carry_the_runtime_ntlm_fallback_only_when_allowed() {
        let hosts = [
            ("HYPERV_HOSTS", "hv01.lab.example"),
            ("WINRM_TRANSPORT", "negotiate"),
            ("WINRM_PASSWORD", "winrm-pw-123"),
        ];
        let (_dir, result) = kerberos_fleet(&hosts);
        let c = result.unwrap();
        assert!(!fleet_hosts(&c)[0].kerberos.as_ref().unwrap().ntlm_fallback);
        let mut allowed = hosts.to_vec();
        allowed.push(("WINRM_NTLM_FALLBACK", "true"));
        let (_dir, result) = kerberos_fleet(&allowed);
        let c = result.unwrap();
        assert_eq!(fleet_hosts(&c)[0].transport, Transport::Negotiate);
        assert!(fleet_hosts(&c)[0].kerberos.as_ref().unwrap().ntlm_fallback);
        // `kerberos` never falls back, whatever the variable says.
        allowed[1] = ("WINRM_TRANSPORT", "kerberos");
        let (_dir, result) = kerberos_fleet(&allowed);
        let c = result.unwrap();
        assert!(!fleet_hosts(&c)[0].kerberos.as_ref().unwrap().ntlm_fallback);
    }

    #[test]
    fn hosts_file_sets_spn_realm_and_delegation_per_host() {
        let dir = TempDir::new();
        let keytab = dir.write("client.keytab", "\u{5}\u{2}");
        let path = dir.write(
            "hosts.yaml",
            "defaults:\n  transport: kerberos\n  realm: LAB.EXAMPLE\n  kdc: [dc1.lab.example]\n\
             hosts:\n  - hv01.lab.example\n  - name: hv02.other.example\n    realm: OTHER.EXAMPLE\n    \
             kdc: [dc9.other.example]\n    spn: HTTP/hv02-alias.other.example\n    delegate: true\n",
        );
        let map = vars(
            FLEET,
            &[
                ("HYPERV_HOSTS", ""),
                ("HOSTS_FILE", path.to_str().unwrap()),
                ("WINRM_KEYTAB", keytab.to_str().unwrap()),
            ],
        );
        let c = load_in(&map, &dir.0).unwrap();
        let hosts = fleet_hosts(&c);
        let first = hosts[0].kerberos.as_ref().unwrap();
        assert_eq!(first.realm.as_deref(), Some("LAB.EXAMPLE"));
        assert!(!first.delegate);
        assert_eq!(first.spn, None);
        let second = hosts[1].kerberos.as_ref().unwrap();
        assert_eq!(second.realm.as_deref(), Some("OTHER.EXAMPLE"));
        assert_eq!(second.kdcs, ["dc9.other.example"]);
        assert_eq!(second.spn.as_deref(), Some("HTTP/hv02-alias.other.example"));
        assert!(second.delegate);
        let env = crate::startup::kerberos_environment(hosts)
            .unwrap()
            .unwrap();
        let names: Vec<&str> = env.vars.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&"KRB5_CONFIG") && names.contains(&"KRB5_CLIENT_KTNAME"));
        let conf_path = &env.vars.iter().find(|(n, _)| n == "KRB5_CONFIG").unwrap().1;
        let conf = std::fs::read_to_string(conf_path).unwrap();
        assert!(
            conf.contains("LAB.EXAMPLE = {") && conf.contains("OTHER.EXAMPLE = {"),
            "{conf}"
        );
        assert!(conf.contains("kdc = dc9.other.example"), "{conf}");
    }
}

#[cfg(not(feature = "kerberos"))]
#[test]
fn kerberos_needs_the_feature() {
    let problems = load(FLEET, &[("WINRM_TRANSPORT", "kerberos")]).unwrap_err();
    assert!(
        problems.iter().any(|p| p.contains("kerberos feature")),
        "{problems:?}"
    );
}
