//! The simulated fleet against aetherv-winrm's client over real loopback HTTP(S): the plain
//! command set, the host script emulations, the KVP guest agent behind a running host, and
//! every injected fault kind as a client observes it.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use aetherv_hyperv::ops::PowerAction;
use aetherv_hyperv::protocol::{DEFAULT_INSTALL_DIRECTORY, parse_result, script_arguments};
use aetherv_kvp::{GuestState, keys};
use aetherv_sim::{
    Credentials, Fault, FaultPlan, FleetSpec, NewVm, SIM_AGENT_VERSION, SimFleet, SimOptions,
    Trigger, host_role,
};
use aetherv_winrm::client::CommandSpec;
use aetherv_winrm::{Client, CommandOutput, Error, WsmanFault};

const USER: &str = "Administrator";
const PASSWORD: &str = "Sim-P@ss1";
/// Every step finishes well within this.
const BOUND: Duration = Duration::from_secs(60);

async fn bounded<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, f)
        .await
        .expect("step did not finish within its bound")
}

async fn fleet(hosts: usize, options: SimOptions) -> SimFleet {
    let spec = FleetSpec {
        hosts,
        vms_per_host: 3,
        clusters: 1,
        seed: 11,
        ..FleetSpec::default()
    };
    bounded(SimFleet::start(
        spec,
        Credentials::new(USER, PASSWORD),
        options,
    ))
    .await
    .unwrap()
}

fn client(endpoint: &str) -> Client {
    Client::builder(endpoint)
        .ntlm(format!("LAB\\{USER}"), PASSWORD)
        .operation_timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// Runs a command, bounded in time.
async fn run(c: &Client, spec: CommandSpec) -> Result<CommandOutput, Error> {
    bounded(c.run(spec)).await
}

async fn cmd(c: &Client, command: &str, args: &[&str]) -> Result<CommandOutput, Error> {
    run(c, CommandSpec::new(command).args(args.iter().copied())).await
}

async fn ps(c: &Client, script: &str) -> Result<CommandOutput, Error> {
    run(c, CommandSpec::powershell(script)).await
}

fn script(name: &str, request: &str) -> CommandSpec {
    CommandSpec::new("powershell.exe")
        .args(script_arguments(DEFAULT_INSTALL_DIRECTORY, name))
        .stdin(request.as_bytes().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_command_set_over_ntlm() {
    let sim = fleet(1, SimOptions::default()).await;
    let host = &sim.hosts()[0];
    let c = client(&host.endpoint());
    assert!(c.encrypts());

    let out = cmd(&c, "echo", &["hello", "world"]).await.unwrap();
    assert_eq!(out.stdout_text(), "hello world\r\n");
    assert_eq!(out.exit_code, 0);
    let out = cmd(&c, "hostname", &[]).await.unwrap();
    assert_eq!(out.stdout_text(), "hv01\r\n");
    let out = cmd(&c, "exit", &["/b", "3"]).await.unwrap();
    assert_eq!(out.exit_code, 3);
    let out = cmd(&c, "ipconfig", &["/all"]).await.unwrap();
    assert_eq!(out.exit_code, 1);
    assert!(
        out.stderr_text()
            .starts_with("'ipconfig' is not recognized as an internal or external command")
    );

    let out = ps(&c, "Write-Output 'one'; Write-Output \"two\"\nexit 4")
        .await
        .unwrap();
    assert_eq!(out.stdout_text(), "one\r\ntwo\r\n");
    assert_eq!(out.exit_code, 4);

    let out = ps(&c, "Write-Output 'before'; Write-Error 'it broke'")
        .await
        .unwrap();
    assert_eq!(out.stdout_text(), "before\r\n");
    assert_eq!(out.exit_code, 1);
    assert!(out.stderr.starts_with(b"#< CLIXML"));
    let err = out.stderr_text();
    assert!(
        err.starts_with("Write-Error 'it broke' : it broke"),
        "{err}"
    );
    assert!(err.contains("WriteErrorException"), "{err}");

    let out = ps(&c, "Get-Nothing").await.unwrap();
    assert_eq!(out.exit_code, 1);
    assert!(
        out.stderr_text()
            .contains("The term 'Get-Nothing' is not recognized as the name of a cmdlet")
    );

    let out = ps(&c, "$env:COMPUTERNAME; hostname").await.unwrap();
    assert_eq!(out.stdout_text(), "HV01\r\nhv01\r\n");

    let text = "Grüße, 東京 ✓ 🚀";
    let out = ps(&c, &format!("Write-Output '{text}'")).await.unwrap();
    assert_eq!(out.stdout_text(), format!("{text}\r\n"));

    let out = run(
        &c,
        CommandSpec::powershell("$input").stdin(format!("line 1\r\n{text}\r\n").into_bytes()),
    )
    .await
    .unwrap();
    assert_eq!(out.stdout_text(), format!("line 1\r\n{text}\r\n"));
    let out = bounded(
        c.run(CommandSpec::powershell("[Console]::In.ReadToEnd()").stdin(b"raw bytes".to_vec())),
    )
    .await
    .unwrap();
    assert_eq!(out.stdout_text(), "raw bytes\r\n");

    let started = Instant::now();
    let out = ps(&c, "Write-Output ('x' * 5000000)").await.unwrap();
    assert_eq!(out.stdout.len(), 5_000_002);
    assert!(out.stdout[..5_000_000].iter().all(|b| *b == b'x'));
    assert!(started.elapsed() < BOUND);

    // A script too long for the command line travels on stdin through the client's bootstrap.
    let long = "Write-Output 'row'\n".repeat(800);
    let out = ps(&c, &long).await.unwrap();
    assert_eq!(out.stdout_text(), "row\r\n".repeat(800));

    bounded(c.close()).await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_scripts_answer_with_result_documents() {
    let sim = fleet(2, SimOptions::default()).await;
    let host = sim.host("hv02.lab.example").unwrap();
    let c = client(&host.endpoint());

    let out = run(&c, script("Get-HostFacts", "{}")).await.unwrap();
    assert_eq!(out.exit_code, 0, "{}", out.stderr_text());
    let facts = parse_result("Get-HostFacts", &out.stdout_text())
        .unwrap()
        .data
        .unwrap();
    let model = host.host().unwrap();
    assert_eq!(facts["name"], "hv02");
    assert_eq!(facts["cluster"], "hvclu01");
    assert_eq!(facts["memory_total_bytes"], model.memory_total_bytes);
    assert_eq!(
        facts["memory_available_bytes"],
        model.memory_available_bytes()
    );
    assert_eq!(facts["scripts_version"], aetherv_sim::SIM_SCRIPTS_VERSION);
    assert!(
        facts["images"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["name"] == "Ubuntu 24.04 LTS")
    );

    let out = run(&c, script("Inventory", "{}")).await.unwrap();
    let inventory = parse_result("Inventory", &out.stdout_text())
        .unwrap()
        .data
        .unwrap();
    let vms = inventory["vms"].as_array().unwrap();
    assert_eq!(vms.len(), 3);
    for (json, vm) in vms.iter().zip(host.vms()) {
        assert_eq!(json["name"], vm.name.as_str());
        assert_eq!(json["id"], vm.id.to_string());
        assert_eq!(json["state"], vm.state.code());
    }

    // A script that has no emulation is a missing file.
    let out = run(&c, script("Remove-Everything", "{}")).await.unwrap();
    assert_eq!(out.exit_code, -196_608);
    assert!(out.stderr_text().contains("does not exist"));

    bounded(c.close()).await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_agent_behind_a_running_host() {
    let sim = fleet(1, SimOptions::default()).await;
    let host = &sim.hosts()[0];
    host.create_vm(&NewVm::new("web-42", "Windows Server 2022 Datacenter"))
        .unwrap();
    host.power("web-42", PowerAction::Start).unwrap();
    for (k, v) in host_role::begin_items(SIM_AGENT_VERSION) {
        host.set_host_kvp("web-42", &k, &v).unwrap();
    }
    let guest = host.guest_kvp("web-42").unwrap();
    assert_eq!(
        guest[keys::GUEST_STATE],
        GuestState::WaitingForAesKey.as_str()
    );
    let data = BTreeMap::from([
        ("guest_host_name".to_owned(), "web-42".to_owned()),
        ("guest_v4_ip_addr".to_owned(), "192.0.2.42".to_owned()),
        ("guest_v4_cidr_prefix".to_owned(), "24".to_owned()),
    ]);
    for (k, v) in host_role::publish_items(&guest[keys::GUEST_PUBLIC_KEY], &data).unwrap() {
        host.set_host_kvp("web-42", &k, &v).unwrap();
    }
    assert_eq!(
        host.guest_kvp("web-42").unwrap()[keys::GUEST_STATE],
        GuestState::ProvisioningApplied.as_str()
    );

    // The applied address shows in the inventory a client reads.
    let c = client(&host.endpoint());
    let out = run(&c, script("Inventory", r#"{"vm":"web-42"}"#))
        .await
        .unwrap();
    let data = parse_result("Inventory", &out.stdout_text())
        .unwrap()
        .data
        .unwrap();
    assert_eq!(
        data["vms"][0]["network_adapters"][0]["ip_addresses"][0],
        "192.0.2.42"
    );
    assert_eq!(data["vms"][0]["state_name"], "Running");
    bounded(c.close()).await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_is_observed() {
    let options = SimOptions {
        latency: Some(Duration::from_millis(120)),
        ..SimOptions::default()
    };
    let sim = fleet(1, options).await;
    let c = client(&sim.hosts()[0].endpoint());
    // Warm up: handshake and shell.
    cmd(&c, "echo", &["warm"]).await.unwrap();
    let before = sim.hosts()[0].counters().requests;
    let started = Instant::now();
    cmd(&c, "echo", &["timed"]).await.unwrap();
    let requests = sim.hosts()[0].counters().requests - before;
    assert!(requests >= 2);
    assert!(
        started.elapsed() >= Duration::from_millis(120) * requests as u32,
        "{requests} requests in {:?}",
        started.elapsed()
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_while_down_then_recovers() {
    let sim = fleet(1, SimOptions::default()).await;
    let host = &sim.hosts()[0];
    let c = client(&host.endpoint());
    cmd(&c, "echo", &["up"]).await.unwrap();

    host.go_down().await;
    let err = cmd(&c, "echo", &["down"]).await.unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err}");
    host.come_up().await.unwrap();
    let out = cmd(&c, "echo", &["back"]).await.unwrap();
    assert_eq!(out.stdout_text(), "back\r\n");

    // The same through the fault plan: the first Command takes the host down for a while.
    host.set_fault_plan(FaultPlan::new(1).rule_on(
        "Command",
        Fault::Outage {
            duration: Duration::from_millis(400),
        },
        Trigger::Nth(1),
    ));
    let err = cmd(&c, "echo", &["x"]).await.unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err}");
    let started = Instant::now();
    let mut refused = 0;
    let out = loop {
        match cmd(&c, "echo", &["recovered"]).await {
            Ok(out) => break out,
            Err(Error::Transport { .. }) if started.elapsed() < Duration::from_secs(20) => {
                refused += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    };
    assert_eq!(out.stdout_text(), "recovered\r\n");
    assert!(refused > 0, "the host was never seen down");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_500_wsman_fault_and_dropped_connection() {
    let sim = fleet(1, SimOptions::default()).await;
    let host = &sim.hosts()[0];
    let c = client(&host.endpoint());
    cmd(&c, "echo", &["warm"]).await.unwrap();

    host.set_fault_plan(FaultPlan::new(1).rule_on(
        "Command",
        Fault::HttpStatus(500),
        Trigger::Nth(1),
    ));
    let err = cmd(&c, "echo", &["a"]).await.unwrap_err();
    assert!(
        matches!(err, Error::HttpStatus { status: 500, .. }),
        "{err}"
    );
    assert_eq!(
        cmd(&c, "echo", &["a"]).await.unwrap().stdout_text(),
        "a\r\n"
    );

    host.set_fault_plan(FaultPlan::new(1).rule_on(
        "Command",
        Fault::WsmanFault(Box::new(WsmanFault::access_denied())),
        Trigger::Nth(1),
    ));
    let err = cmd(&c, "echo", &["b"]).await.unwrap_err();
    let fault = err.fault().expect("a WS-Man fault");
    assert_eq!(fault.wsman_code, Some(WsmanFault::ACCESS_DENIED));
    assert_eq!(
        cmd(&c, "echo", &["b"]).await.unwrap().stdout_text(),
        "b\r\n"
    );

    host.set_fault_plan(FaultPlan::new(1).rule_on(
        "Command",
        Fault::DropConnection,
        Trigger::Nth(1),
    ));
    let err = cmd(&c, "echo", &["c"]).await.unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err}");
    assert_eq!(
        cmd(&c, "echo", &["c"]).await.unwrap().stdout_text(),
        "c\r\n"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_and_hanging_commands() {
    let plan = FaultPlan::new(5)
        .rule(
            Fault::FailCommand {
                pattern: "Get-HostFacts".to_owned(),
                exit_code: 1,
                message: "WMI provider is not responding".to_owned(),
            },
            Trigger::Always,
        )
        .rule(
            Fault::FailCommand {
                pattern: "echo flaky".to_owned(),
                exit_code: 9,
                message: "flaky failed".to_owned(),
            },
            Trigger::Always,
        )
        .rule(
            Fault::HangCommand {
                pattern: "Inventory".to_owned(),
            },
            Trigger::Always,
        );
    let options = SimOptions {
        fault_plans: BTreeMap::from([("hv01".to_owned(), plan)]),
        ..SimOptions::default()
    };
    let sim = fleet(1, options).await;
    let c = client(&sim.hosts()[0].endpoint());

    let out = run(&c, script("Get-HostFacts", "{}")).await.unwrap();
    assert_eq!(out.exit_code, 1);
    let result = parse_result("Get-HostFacts", &out.stdout_text()).unwrap();
    let error = result.error.unwrap();
    assert_eq!(error.code, "SimulatedFailure");
    assert_eq!(error.message, "WMI provider is not responding");

    let out = cmd(&c, "echo", &["flaky"]).await.unwrap();
    assert_eq!(out.exit_code, 9);
    assert_eq!(out.stderr_text().trim(), "flaky failed");

    let err = run(
        &c,
        script("Inventory", "{}").deadline(Duration::from_secs(1)),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Deadline { .. }), "{err}");
    // The host still serves after terminating the hung step.
    assert_eq!(cmd(&c, "echo", &["ok"]).await.unwrap().exit_code, 0);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_basic_auth() {
    let options = SimOptions {
        tls: true,
        ..SimOptions::default()
    };
    let sim = fleet(1, options).await;
    let endpoint = sim.hosts()[0].endpoint();
    assert!(endpoint.starts_with("https://"), "{endpoint}");
    let c = Client::builder(&endpoint)
        .basic(USER, PASSWORD)
        .accept_invalid_certs(true)
        .build()
        .unwrap();
    let out = ps(&c, "Write-Output 'over tls'").await.unwrap();
    assert_eq!(out.stdout_text(), "over tls\r\n");
    let wrong = Client::builder(&endpoint)
        .basic(USER, "wrong")
        .accept_invalid_certs(true)
        .build()
        .unwrap();
    let err = bounded(wrong.run_command("echo", &["x"]))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AuthenticationFailed { .. }), "{err}");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_ports_are_consecutive() {
    // Find a free pair of ports by binding port 0 and trying the next one up.
    let sim = fleet(2, SimOptions::default()).await;
    let base = sim.hosts()[0].local_addr().port();
    sim.shutdown().await;
    let options = SimOptions {
        listen: format!("127.0.0.1:{base}").parse().unwrap(),
        ..SimOptions::default()
    };
    match SimFleet::start(
        FleetSpec::new(2, 1),
        Credentials::new(USER, PASSWORD),
        options,
    )
    .await
    {
        Ok(sim) => {
            let ports: Vec<u16> = sim.hosts().iter().map(|h| h.local_addr().port()).collect();
            assert_eq!(ports, [base, base + 1]);
            sim.shutdown().await;
        }
        // The port above may have been taken meanwhile; that must be a clean error.
        Err(e) => assert!(e.to_string().contains("hv0"), "{e}"),
    }
}

#[tokio::test]
async fn a_frozen_host_accepts_connections_but_answers_nothing_until_it_thaws() {
    let fleet = fleet(1, SimOptions::default()).await;
    let host = &fleet.hosts()[0];
    let c = client(&host.endpoint());
    cmd(&c, "echo", &["up"]).await.unwrap();
    bounded(c.probe(Duration::from_secs(2))).await.unwrap();

    host.freeze();
    // The TCP connection is accepted (unlike an outage), but no request gets an answer.
    tokio::net::TcpStream::connect(host.local_addr())
        .await
        .expect("a frozen host still accepts connections");
    let err = bounded(c.probe(Duration::from_millis(500)))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Transport {
                source: aetherv_winrm::http::TransportError::Timeout(_),
                ..
            }
        ),
        "{err}"
    );
    let waiting = tokio::spawn({
        let c = c.clone();
        async move { c.run(CommandSpec::new("echo").arg("after")).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "a command on a frozen host waits");

    host.thaw();
    let out = bounded(waiting).await.unwrap().unwrap();
    assert_eq!(out.stdout_text(), "after\r\n");
    bounded(c.probe(Duration::from_secs(2))).await.unwrap();
    fleet.shutdown().await;
}
