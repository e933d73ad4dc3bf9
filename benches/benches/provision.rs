//! Provisioning throughput and orchestration overhead.
//!
//! 50 concurrent provisioning jobs (default; `PROVISION_BENCH_JOBS` to change) across 5
//! simulated Hyper-V hosts, with zero injected latency and guest agents that answer at once.
//! The simulated fleet runs in its own process (`aetherv-hostsim`, built by cargo in release
//! mode on first use), so the CPU time this process uses (from `/proc/self/stat`, utime +
//! stime) is orchestration only: the state machines, KVP encryption, and the WinRM client
//! (NTLM, sealing, SOAP). Reported: total wall time, jobs per second, orchestrator CPU per job
//! (target: under 50 ms), and the simulator's CPU for comparison.
//!
//! Run: `cargo bench -p aetherv-benches --bench provision`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aetherv_hyperv::WinRmExecutor;
use aetherv_hyperv::ops::{HyperVHost, WinRmHyperVHost};
use aetherv_hyperv::protocol::DEFAULT_INSTALL_DIRECTORY;
use aetherv_provision::job::{JobId, discard};
use aetherv_provision::provision::{ProvisionConfig, provision};
use aetherv_provision::schema::{JobRequest, Validated};
use aetherv_winrm::Client;
use tokio_util::sync::CancellationToken;

const HOSTS: usize = 5;
const USER: &str = "benchadmin";
const PASSWORD: &str = "Bench-P@ss1";

struct Sim(Child);

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Builds `aetherv-hostsim` (release) and returns its path.
fn build_hostsim() -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args([
            "build",
            "--release",
            "-p",
            "aetherv-sim",
            "--bin",
            "aetherv-hostsim",
            "--message-format",
            "json",
        ])
        .stderr(Stdio::inherit())
        .output()
        .expect("cargo build of aetherv-hostsim");
    assert!(out.status.success(), "building aetherv-hostsim failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|v| v.get("executable")?.as_str().map(str::to_owned))
        .find(|path| path.contains("aetherv-hostsim"))
        .expect("the hostsim executable path")
}

fn start_sim() -> (Sim, Vec<(String, String)>) {
    let bin = build_hostsim();
    let mut child = Command::new(bin)
        .args([
            "--hosts",
            &HOSTS.to_string(),
            "--vms-per-host",
            "0",
            "--clusters",
            "0",
            "--listen",
            "127.0.0.1:0",
            "--user",
            USER,
            "--password-env",
            "PROVISION_BENCH_PASSWORD",
        ])
        .env("PROVISION_BENCH_PASSWORD", PASSWORD)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn aetherv-hostsim");
    let stdout = child.stdout.take().unwrap();
    let sim = Sim(child);
    let mut hosts = Vec::new();
    for line in BufReader::new(stdout).lines().take(HOSTS) {
        let line = line.unwrap();
        let mut host = None;
        let mut endpoint = None;
        for part in line.split_whitespace() {
            if let Some(v) = part.strip_prefix("host=") {
                host = Some(v.to_owned());
            } else if let Some(v) = part.strip_prefix("endpoint=") {
                endpoint = Some(v.to_owned());
            }
        }
        hosts.push((host.unwrap(), endpoint.unwrap()));
    }
    assert_eq!(hosts.len(), HOSTS);
    (sim, hosts)
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: &str, ticks: f64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // `rest` starts at field 3 (state), so field N is at index N - 3.
    (get(14 - 3) + get(15 - 3)) / ticks
}

fn request(host: &str, i: usize) -> Validated {
    let windows = i.is_multiple_of(2);
    let body = if windows {
        serde_json::json!({
            "schema_version": 1,
            "target_host": host,
            "values": {
                "vm_name": format!("bw{i:03}"),
                "image_name": "Windows Server 2022 Datacenter",
                "gb_ram": 2, "cpu_cores": 2,
                "guest_la_uid": "Administrator", "guest_la_pw": "Bench-LA-pw1",
                "guest_v4_ipaddr": format!("10.1.{}.{}", i / 200, i % 200 + 10),
                "guest_v4_cidrprefix": 16, "guest_v4_defaultgw": "10.1.0.1",
                "guest_v4_dns1": "10.1.0.53",
                "guest_domain_jointarget": "corp.example", "guest_domain_joinuid": "svc-join",
                "guest_domain_joinpw": "Bench-join-pw1"
            }
        })
    } else {
        serde_json::json!({
            "schema_version": 1,
            "target_host": host,
            "values": {
                "vm_name": format!("bench-linux-{i:03}"),
                "image_name": "Ubuntu 24.04 LTS",
                "gb_ram": 2, "cpu_cores": 2,
                "guest_la_uid": "admin", "guest_la_pw": "Bench-LA-pw1",
                "cnf_ansible_ssh_user": "ansible",
                "cnf_ansible_ssh_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx3c2VjcmV0bm90cmVhbGx5YWtleWF0YWxs ansible@ctl"
            }
        })
    };
    JobRequest::from_json(&body.to_string()).unwrap()
}

async fn run_jobs(hosts: &[(String, Arc<dyn HyperVHost>)], first: usize, count: usize) -> usize {
    let config = ProvisionConfig {
        poll_interval: Duration::from_millis(50),
        ..ProvisionConfig::default()
    };
    let mut tasks = Vec::new();
    for i in first..first + count {
        let (name, host) = &hosts[i % hosts.len()];
        let host = Arc::clone(host);
        let request = request(name, i);
        let config = config.clone();
        tasks.push(tokio::spawn(async move {
            provision(
                host,
                JobId(format!("bench-{i}")),
                &request,
                config,
                CancellationToken::new(),
                &discard,
            )
            .await
        }));
    }
    let mut ok = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => eprintln!("job failed: {e}"),
        }
    }
    ok
}

fn main() {
    // `cargo bench` passes `--bench`; anything else (e.g. `cargo test --benches`) only checks
    // that the benchmark builds and starts.
    let jobs: usize = std::env::var("PROVISION_BENCH_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    if !std::env::args().any(|a| a == "--bench") {
        println!("provision: run with `cargo bench -p aetherv-benches --bench provision`");
        return;
    }
    let (sim, endpoints) = start_sim();
    let sim_pid = sim.0.id().to_string();
    let ticks = clock_ticks();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let hosts: Vec<(String, Arc<dyn HyperVHost>)> =
            endpoints
                .iter()
                .map(|(name, endpoint)| {
                    let client = Client::builder(endpoint)
                        .ntlm(format!("LAB\\{USER}"), PASSWORD)
                        .max_shells(jobs.div_ceil(HOSTS).clamp(1, 30))
                        .operation_timeout(Duration::from_secs(30))
                        .build()
                        .unwrap();
                    let host: Arc<dyn HyperVHost> = Arc::new(WinRmHyperVHost::new(
                        WinRmExecutor::new(client, name, DEFAULT_INSTALL_DIRECTORY),
                    ));
                    (name.clone(), host)
                })
                .collect();
        // Warm-up: one job per host (first connections, the simulator's shared guest key).
        let warm = run_jobs(&hosts, 10_000, HOSTS).await;
        assert_eq!(warm, HOSTS, "warm-up jobs failed");

        let cpu_before = cpu_seconds("self", ticks);
        let sim_before = cpu_seconds(&sim_pid, ticks);
        let started = Instant::now();
        let ok = run_jobs(&hosts, 0, jobs).await;
        let wall = started.elapsed();
        let cpu = cpu_seconds("self", ticks) - cpu_before;
        let sim_cpu = cpu_seconds(&sim_pid, ticks) - sim_before;
        assert_eq!(ok, jobs, "some jobs failed");
        println!(
            "provision/{jobs} jobs across {HOSTS} simulated hosts (simulator in its own process)"
        );
        println!(
            "  wall time:              {:>9.1} ms",
            wall.as_secs_f64() * 1e3
        );
        println!(
            "  throughput:             {:>9.1} jobs/s",
            jobs as f64 / wall.as_secs_f64()
        );
        println!(
            "  orchestrator CPU total: {:>9.1} ms  ({:.2} ms per job; target < 50 ms)",
            cpu * 1e3,
            cpu * 1e3 / jobs as f64
        );
        println!(
            "  simulator CPU total:    {:>9.1} ms  ({:.2} ms per job)",
            sim_cpu * 1e3,
            sim_cpu * 1e3 / jobs as f64
        );
    });
    drop(sim);
}
