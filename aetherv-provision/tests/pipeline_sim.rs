//! The provisioning and deletion pipelines end to end: `WinRmHyperVHost` over real WinRM
//! (NTLM + message encryption) against the simulated fleet and its guest agents.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aetherv_hyperv::ops::layer::{Layered, Middleware};
use aetherv_hyperv::ops::{BootSettings, SecureBootTemplate};
use aetherv_hyperv::ops::{HostCall, HostReply, HyperVHost, WinRmHyperVHost};
use aetherv_hyperv::protocol::DEFAULT_INSTALL_DIRECTORY;
use aetherv_hyperv::{OsFamily, WinRmExecutor};
use aetherv_provision::Error;
use aetherv_provision::boot::{BootPolicy, BootRule};
use aetherv_provision::delete::{DeleteRequest, delete};
use aetherv_provision::job::{JobEvent, JobId, discard};
use aetherv_provision::kvp::keys;
use aetherv_provision::provision::{ProvisionConfig, Provisioned, provision, steps};
use aetherv_provision::resources::{HostDefinitions, NetworkDef};
use aetherv_provision::schema::{JobRequest, Validated};
use aetherv_sim::{Credentials, Fault, FaultPlan, FleetSpec, SimFleet, SimOptions, Trigger};
use aetherv_winrm::Client;
use serde_json::json;
use tokio_util::sync::CancellationToken;

const USER: &str = "Administrator";
const PASSWORD: &str = "Sim-P@ss1";
const LA_PW: &str = "Adm1n-pw-never-shown";
const JOIN_PW: &str = "J0in-pw-never-shown";
const BOUND: Duration = Duration::from_secs(120);

async fn bounded<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, f)
        .await
        .expect("did not finish within its bound")
}

async fn fleet(hosts: usize, clusters: usize) -> SimFleet {
    let spec = FleetSpec {
        hosts,
        vms_per_host: 2,
        clusters,
        seed: 5,
        ..FleetSpec::default()
    };
    bounded(SimFleet::start(
        spec,
        Credentials::new(USER, PASSWORD),
        SimOptions::default(),
    ))
    .await
    .unwrap()
}

fn ops(sim: &SimFleet, name: &str) -> Arc<dyn HyperVHost> {
    let host = sim.host(name).expect("generated host");
    let client = Client::builder(&host.endpoint())
        .ntlm(format!("LAB\\{USER}"), PASSWORD)
        .operation_timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    Arc::new(WinRmHyperVHost::new(WinRmExecutor::new(
        client,
        name,
        DEFAULT_INSTALL_DIRECTORY,
    )))
}

fn windows_job(host: &str, name: &str, clustered: bool) -> Validated {
    JobRequest::from_json(
        &json!({
            "schema_version": 1,
            "target_host": host,
            "values": {
                "vm_name": name,
                "image_name": "Windows Server 2022 Datacenter",
                "gb_ram": 2,
                "cpu_cores": 2,
                "guest_la_uid": "Administrator",
                "guest_la_pw": LA_PW,
                "guest_v4_ipaddr": "10.20.30.40",
                "guest_v4_cidrprefix": 24,
                "guest_v4_defaultgw": "10.20.30.1",
                "guest_v4_dns1": "10.20.0.53",
                "guest_v4_dns2": "10.20.0.54",
                "guest_net_dnssuffix": "corp.example",
                "vlan_id": 120,
                "guest_domain_jointarget": "corp.example",
                "guest_domain_joinuid": "svc-join",
                "guest_domain_joinpw": JOIN_PW,
                "guest_domain_joinou": "OU=Servers,DC=corp,DC=example",
                "vm_clustered": clustered
            }
        })
        .to_string(),
    )
    .unwrap()
}

const SSH_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx3c2VjcmV0bm90cmVhbGx5YWtleWF0YWxs ansible@ctl";

fn linux_job(host: &str, name: &str) -> Validated {
    linux_job_with(host, name, json!({}))
}

/// A Linux job with `extra` values added.
fn linux_job_with(host: &str, name: &str, extra: serde_json::Value) -> Validated {
    let mut values = json!({
        "vm_name": name,
        "image_name": "Ubuntu 24.04 LTS",
        "gb_ram": 2,
        "cpu_cores": 2,
        "guest_la_uid": "admin",
        "guest_la_pw": LA_PW,
        "cnf_ansible_ssh_user": "ansible",
        "cnf_ansible_ssh_key": SSH_KEY
    });
    if let (Some(values), Some(extra)) = (values.as_object_mut(), extra.as_object()) {
        values.extend(extra.clone());
    }
    JobRequest::from_json(
        &json!({
            "schema_version": 1,
            "target_host": host,
            "values": values
        })
        .to_string(),
    )
    .unwrap()
}

fn config() -> ProvisionConfig {
    ProvisionConfig {
        step_timeout: Duration::from_secs(15),
        copy_timeout: Duration::from_secs(15),
        key_timeout: Duration::from_secs(10),
        apply_timeout: Duration::from_secs(10),
        poll_interval: Duration::from_millis(20),
        compensation_timeout: Duration::from_secs(15),
        ..ProvisionConfig::default()
    }
}

#[derive(Default, Clone)]
struct Collected(Arc<Mutex<Vec<JobEvent>>>);

impl Collected {
    fn sink(&self) -> impl Fn(JobEvent) + Send + Sync + 'static {
        let events = Arc::clone(&self.0);
        move |e| events.lock().unwrap().push(e)
    }

    fn text(&self) -> String {
        format!("{:?}", self.0.lock().unwrap())
    }
}

async fn run(
    host: Arc<dyn HyperVHost>,
    job: &str,
    request: &Validated,
    config: ProvisionConfig,
    cancel: CancellationToken,
) -> (Result<Provisioned, Error>, Collected) {
    let events = Collected::default();
    let sink = events.sink();
    let result = bounded(provision(
        host,
        JobId::from(job),
        request,
        config,
        cancel,
        &sink,
    ))
    .await;
    let text = events.text();
    assert!(
        !text.contains(LA_PW) && !text.contains(JOIN_PW),
        "secret in the job log: {text}"
    );
    if let Err(e) = &result {
        let text = e.to_string();
        assert!(!text.contains(LA_PW) && !text.contains(JOIN_PW), "{text}");
    }
    (result, events)
}

fn vm_root(sim: &SimFleet, host: &str) -> String {
    sim.host(host).unwrap().host().unwrap().vm_path
}

/// Nothing of VM `name` is left on `host`: no VM, no disk, no ISO, no folder content.
fn assert_nothing_left(sim: &SimFleet, host: &str, name: &str, context: &str) {
    let h = sim.host(host).unwrap();
    let vms = h.vms();
    assert!(
        !vms.iter().any(|v| v.name.eq_ignore_ascii_case(name)),
        "{context}: VM {name} left behind"
    );
    let folder = format!("{}\\{name}", vm_root(sim, host).trim_end_matches('\\'));
    assert!(
        !vms.iter().flat_map(|v| &v.disks).any(|d| d
            .path
            .to_ascii_lowercase()
            .contains(&folder.to_ascii_lowercase())),
        "{context}: a disk under {folder} is still attached"
    );
    let loose = sim.with_state(|s| s.loose_path_exists(host, &folder));
    assert!(!loose, "{context}: files under {folder} left behind");
}

/// After a successful provision the VM keeps nothing of its provisioning: no host-written
/// `hlvmm.*` KVP item, no DVD drive, and no ISO copy (nor any other loose file) in its folder.
fn assert_clean_after_success(sim: &SimFleet, host: &str, done: &Provisioned) {
    let vm = sim.host(host).unwrap().vm(&done.vm_id.to_string()).unwrap();
    let left: Vec<&String> = vm
        .kvp
        .host_to_guest
        .keys()
        .filter(|k| k.starts_with("hlvmm."))
        .collect();
    assert!(left.is_empty(), "host KVP items left: {left:?}");
    assert!(
        vm.dvd_drives.is_empty(),
        "DVD drives left: {:?}",
        vm.dvd_drives
    );
    let loose = sim.with_state(|s| s.loose_path_exists(host, &done.vm_folder));
    assert!(!loose, "the ISO copy is still in {}", done.vm_folder);
    assert!(done.cleanup.is_clean(), "{}", done.cleanup);
    assert_eq!(done.cleanup.removed().count(), 3, "{}", done.cleanup);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_windows_vm_with_static_ip_and_domain_join_reaches_applied() {
    let sim = fleet(2, 1).await;
    let host = ops(&sim, "hv01");
    let (result, events) = run(
        host,
        "job-win",
        &windows_job("hv01", "web-01", true),
        config(),
        CancellationToken::new(),
    )
    .await;
    let done = result.unwrap();
    assert!(done.clustered);
    let vm = sim
        .host("hv01")
        .unwrap()
        .vm(&done.vm_id.to_string())
        .unwrap();
    // The job marker became the provisioned marker as the job's last step.
    assert_eq!(vm.notes, "aetherv-provisioned:job-win");
    assert!(vm.clustered);
    assert_eq!(vm.nics[0].vlan_id, Some(120));
    assert_eq!(vm.processor_count, 2);
    assert_eq!(vm.firmware, BootSettings::for_family(OsFamily::Windows));
    assert_eq!(
        vm.kvp.guest_to_host[keys::GUEST_STATE],
        "provisioningapplied"
    );
    let applied = vm.guest.applied.clone().expect("applied");
    assert_eq!(applied.hostname.as_deref(), Some("web-01"));
    assert_eq!(applied.ipv4.as_deref(), Some("10.20.30.40/24"));
    assert_eq!(applied.gateway.as_deref(), Some("10.20.30.1"));
    assert_eq!(applied.dns_servers, ["10.20.0.53", "10.20.0.54"]);
    assert_eq!(applied.domain.as_deref(), Some("corp.example"));
    assert!(applied.ssh_user.is_none());
    // No plaintext secret ever reached the host's KVP pool.
    let pool = format!("{:?}", vm.kvp.host_to_guest);
    assert!(!pool.contains(LA_PW) && !pool.contains(JOIN_PW));
    assert_clean_after_success(&sim, "hv01", &done);
    let text = events.text();
    assert!(
        text.contains("removed host KVP item hlvmm.meta.shared_aes_key"),
        "{text}"
    );
    assert!(text.contains("removed ISO copy"), "{text}");
    for step in [
        steps::PRE_CHECKS,
        steps::COPY_IMAGE,
        steps::COPY_ISO,
        steps::REGISTER_VM,
        steps::WAIT_FOR_KEY,
        steps::PUBLISH,
        steps::WAIT_FOR_GUEST,
        steps::REMOVE_KEYS,
        steps::REMOVE_DVD,
        steps::REMOVE_ISO,
        steps::CLUSTER_ROLE,
    ] {
        assert!(text.contains(step), "no progress for {step}");
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linux_vm_with_an_ssh_key_reaches_applied_and_is_deleted() {
    let sim = fleet(1, 0).await;
    let host = ops(&sim, "hv01");
    let (result, _) = run(
        Arc::clone(&host),
        "job-linux",
        &linux_job("hv01", "db-primary-0001"),
        config(),
        CancellationToken::new(),
    )
    .await;
    let done = result.unwrap();
    assert!(!done.clustered);
    let vm = sim
        .host("hv01")
        .unwrap()
        .vm(&done.vm_id.to_string())
        .unwrap();
    assert!(vm.firmware.secure_boot);
    assert_eq!(
        vm.firmware.secure_boot_template,
        SecureBootTemplate::MicrosoftUefiCertificateAuthority
    );
    let applied = vm.guest.applied.clone().expect("applied");
    assert_eq!(applied.ssh_user.as_deref(), Some("ansible"));
    assert_eq!(applied.hostname.as_deref(), Some("db-primary-0001"));
    assert!(applied.domain.is_none());
    assert_clean_after_success(&sim, "hv01", &done);

    // Deletion: refused while running, then forced.
    let err = bounded(delete(
        Arc::clone(&host),
        DeleteRequest::new(done.vm_id),
        CancellationToken::new(),
        &discard,
    ))
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("is Running") && text.contains("db-primary-0001"),
        "{text}"
    );
    assert!(
        sim.host("hv01")
            .unwrap()
            .vm(&done.vm_id.to_string())
            .is_ok()
    );
    let deleted = bounded(delete(
        Arc::clone(&host),
        DeleteRequest {
            force: true,
            delete_disks: true,
            ..DeleteRequest::new(done.vm_id)
        },
        CancellationToken::new(),
        &discard,
    ))
    .await
    .unwrap();
    assert!(deleted.stopped);
    // The disk, then the VM folder provisioning made (marked VM, `<root>\<name>` layout);
    // the simulator models files, not empty folders, so the emptied folder counts as gone.
    assert_eq!(
        deleted.removed_paths[0],
        format!(
            "{}\\Virtual Hard Disks\\db-primary-0001.vhdx",
            done.vm_folder
        ),
        "{deleted:?}"
    );
    assert!(deleted.kept_paths.is_empty(), "{deleted:?}");
    assert_nothing_left(&sim, "hv01", "db-primary-0001", "deleted");
    sim.shutdown().await;
}

/// The old behaviour (every generation 2 VM with Hyper-V's `MicrosoftWindows` template) is
/// caught: the Linux guest never boots, the job fails waiting for its key and leaves nothing.
/// An image rule turning Secure Boot off for the same image provisions it, with a vTPM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linux_image_with_the_windows_template_never_answers_and_rules_override_per_image() {
    let sim = fleet(1, 0).await;
    let host = ops(&sim, "hv01");
    let old_template = ProvisionConfig {
        boot: BootPolicy {
            global: vec![BootRule {
                image: "*".to_owned(),
                secure_boot: Some(true),
                secure_boot_template: Some(SecureBootTemplate::MicrosoftWindows),
                tpm: None,
            }],
            ..BootPolicy::default()
        },
        key_timeout: Duration::from_millis(600),
        ..config()
    };
    let (result, events) = run(
        Arc::clone(&host),
        "job-old-template",
        &linux_job("hv01", "never-boots"),
        old_template,
        CancellationToken::new(),
    )
    .await;
    let err = result.unwrap_err();
    match &err {
        Error::ProvisionFailed {
            step,
            cause,
            cleanup,
            ..
        } => {
            assert_eq!(*step, steps::WAIT_FOR_KEY, "{err}");
            assert!(matches!(**cause, Error::GuestTimeout { .. }), "{err}");
            assert!(cleanup.is_clean(), "{err}");
        }
        other => panic!("expected a failed provision, got {other}"),
    }
    assert!(
        events.text().contains("does not pass Secure Boot"),
        "{}",
        events.text()
    );
    assert_nothing_left(&sim, "hv01", "never-boots", "old template");

    let mut per_host = BootPolicy::default();
    per_host.hosts.insert(
        "hv01".to_owned(),
        vec![BootRule {
            image: "ubuntu*".to_owned(),
            secure_boot: Some(false),
            secure_boot_template: None,
            tpm: Some(true),
        }],
    );
    let (result, _) = run(
        host,
        "job-rule",
        &linux_job("hv01", "boots-anyway"),
        ProvisionConfig {
            boot: per_host,
            ..config()
        },
        CancellationToken::new(),
    )
    .await;
    let done = result.unwrap();
    let vm = sim
        .host("hv01")
        .unwrap()
        .vm(&done.vm_id.to_string())
        .unwrap();
    assert!(!vm.firmware.secure_boot && vm.firmware.tpm);
    sim.shutdown().await;
}

/// `disk_size_gb` expands the copied disk before the first boot; a size below the image's
/// virtual size (64 GiB for the simulator's Ubuntu image) fails in the pre-checks, naming both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_size_expands_the_copy_and_a_smaller_size_fails_before_copying() {
    let sim = fleet(1, 0).await;
    let host = ops(&sim, "hv01");
    let (result, events) = run(
        Arc::clone(&host),
        "job-disk",
        &linux_job_with("hv01", "big-disk", json!({"disk_size_gb": 100})),
        config(),
        CancellationToken::new(),
    )
    .await;
    let done = result.unwrap();
    let vm = sim
        .host("hv01")
        .unwrap()
        .vm(&done.vm_id.to_string())
        .unwrap();
    assert_eq!(vm.disks[0].max_size_bytes, 100 << 30);
    assert!(events.text().contains("virtual size is 100 GiB"));

    let (result, _) = run(
        host,
        "job-small",
        &linux_job_with("hv01", "small-disk", json!({"disk_size_gb": 20})),
        config(),
        CancellationToken::new(),
    )
    .await;
    let err = result.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(&err, Error::ProvisionFailed { step, .. } if *step == steps::PRE_CHECKS),
        "{text}"
    );
    assert!(text.contains("20 GiB") && text.contains("64 GiB"), "{text}");
    assert_nothing_left(&sim, "hv01", "small-disk", "disk too small");
    sim.shutdown().await;
}

/// hv03 of a generated fleet has two External switches and a host resources file (networks
/// `prod` and `lab`, storage class `fast`) without a default network: a request must choose,
/// a named network and storage class place the VM, and HOSTS_FILE-style definitions win.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn networks_and_storage_classes_place_the_vm_and_several_switches_need_a_choice() {
    let sim = fleet(3, 0).await;
    let host = ops(&sim, "hv03");
    let (result, _) = run(
        Arc::clone(&host),
        "job-guess",
        &linux_job("hv03", "no-guess"),
        config(),
        CancellationToken::new(),
    )
    .await;
    let text = result.unwrap_err().to_string();
    assert!(
        text.contains("network") && text.contains("prod") && text.contains("vSwitch-External-B"),
        "{text}"
    );
    assert_nothing_left(&sim, "hv03", "no-guess", "no network chosen");

    let (result, _) = run(
        Arc::clone(&host),
        "job-lab",
        &linux_job_with(
            "hv03",
            "on-lab",
            json!({"network": "lab", "storage_class": "fast"}),
        ),
        config(),
        CancellationToken::new(),
    )
    .await;
    let done = result.unwrap();
    let vm = sim
        .host("hv03")
        .unwrap()
        .vm(&done.vm_id.to_string())
        .unwrap();
    assert_eq!(
        vm.nics[0].switch_name.as_deref(),
        Some("vSwitch-External-B")
    );
    assert_eq!(vm.nics[0].vlan_id, Some(20));
    assert!(vm.path.ends_with(r"\Fast\on-lab"), "{}", vm.path);
    assert!(
        done.vm_folder.ends_with(r"\Fast\on-lab"),
        "{}",
        done.vm_folder
    );

    // The server's definitions win over the host's file; its default network decides, and
    // the request's VLAN wins over the network's.
    let mut resources = std::collections::BTreeMap::new();
    resources.insert(
        "hv03".to_owned(),
        HostDefinitions {
            networks: vec![NetworkDef {
                name: "prod".to_owned(),
                switch: "vSwitch-External-B".to_owned(),
                vlan_id: Some(30),
            }],
            storage_classes: Vec::new(),
            default_network: Some("prod".to_owned()),
        },
    );
    let (result, _) = run(
        host,
        "job-default",
        &linux_job_with("hv03", "on-default", json!({"vlan_id": 99})),
        ProvisionConfig {
            resources,
            ..config()
        },
        CancellationToken::new(),
    )
    .await;
    let done = result.unwrap();
    let vm = sim
        .host("hv03")
        .unwrap()
        .vm(&done.vm_id.to_string())
        .unwrap();
    assert_eq!(
        vm.nics[0].switch_name.as_deref(),
        Some("vSwitch-External-B")
    );
    assert_eq!(vm.nics[0].vlan_id, Some(99));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_at_every_step_leaves_nothing_behind() {
    let sim = fleet(2, 1).await;
    let host = ops(&sim, "hv01");
    // (script, trigger, the step that fails)
    let faults: [(&str, Trigger, &str); 8] = [
        ("Get-HostFacts", Trigger::Always, steps::PRE_CHECKS),
        ("Get-Inventory", Trigger::Always, steps::PRE_CHECKS),
        ("Copy-GoldenImage", Trigger::Always, steps::COPY_IMAGE),
        ("Copy-ProvisioningIso", Trigger::Always, steps::COPY_ISO),
        ("Register-ManagedVm", Trigger::Always, steps::REGISTER_VM),
        ("Set-VmKvp", Trigger::Nth(1), steps::WAIT_FOR_KEY),
        ("Get-VmKvp", Trigger::Always, steps::WAIT_FOR_KEY),
        ("Set-VmKvp", Trigger::Nth(2), steps::PUBLISH),
    ];
    let mut cases: Vec<(String, Fault, Trigger, &str)> = faults
        .iter()
        .map(|(script, trigger, step)| {
            (
                (*script).to_owned(),
                Fault::FailCommand {
                    pattern: (*script).to_owned(),
                    exit_code: 1,
                    message: "injected".to_owned(),
                },
                *trigger,
                *step,
            )
        })
        .collect();
    cases.push((
        "Get-VmKvp#2".to_owned(),
        Fault::FailCommand {
            pattern: "Get-VmKvp".to_owned(),
            exit_code: 1,
            message: "injected".to_owned(),
        },
        Trigger::Nth(2),
        steps::WAIT_FOR_GUEST,
    ));
    cases.push((
        "Add-VmClusterRole".to_owned(),
        Fault::FailCommand {
            pattern: "Add-VmClusterRole".to_owned(),
            exit_code: 1,
            message: "injected".to_owned(),
        },
        Trigger::Always,
        steps::CLUSTER_ROLE,
    ));
    // Hung commands: the step times out and the outcome is unknown.
    for (script, step) in [
        ("Copy-GoldenImage", steps::COPY_IMAGE),
        ("Register-ManagedVm", steps::REGISTER_VM),
    ] {
        cases.push((
            format!("{script} hangs"),
            Fault::HangCommand {
                pattern: script.to_owned(),
            },
            Trigger::Always,
            step,
        ));
    }
    for (i, (label, fault, trigger, step)) in cases.into_iter().enumerate() {
        let name = format!("fault-{i}");
        sim.host("hv01")
            .unwrap()
            .set_fault_plan(FaultPlan::new(1).rule(fault, trigger));
        let config = ProvisionConfig {
            step_timeout: Duration::from_secs(3),
            copy_timeout: Duration::from_secs(3),
            ..config()
        };
        let (result, events) = run(
            Arc::clone(&host),
            &format!("job-fault-{i}"),
            &windows_job("hv01", &name, true),
            config,
            CancellationToken::new(),
        )
        .await;
        sim.host("hv01").unwrap().clear_faults();
        match result {
            Err(Error::ProvisionFailed {
                step: failed,
                cleanup,
                ..
            }) => {
                assert_eq!(failed, step, "{label}: {}", events.text());
                assert!(cleanup.is_clean(), "{label}: {cleanup}");
            }
            other => panic!("{label}: expected a failure, got {other:?}"),
        }
        assert_nothing_left(&sim, "hv01", &name, &label);
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_while_waiting_for_the_guest() {
    let sim = fleet(1, 0).await;
    let host = ops(&sim, "hv01");
    // A guest agent of another version stays silent, so the job waits for the key.
    let config = ProvisionConfig {
        agent_version: Some("9.9.9".to_owned()),
        key_timeout: Duration::from_secs(60),
        ..config()
    };
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        trigger.cancel();
    });
    let (result, _) = run(
        host,
        "job-cancel",
        &linux_job("hv01", "cancel-me"),
        config,
        cancel,
    )
    .await;
    match result {
        Err(Error::Cancelled { step, cleanup, .. }) => {
            assert_eq!(step, steps::WAIT_FOR_KEY);
            assert!(cleanup.is_clean(), "{cleanup}");
            assert!(cleanup.removed().count() >= 2, "{cleanup}");
        }
        other => panic!("expected cancellation, got {other:?}"),
    }
    assert_nothing_left(&sim, "hv01", "cancel-me", "cancelled");
    sim.shutdown().await;
}

/// Corrupts the checksum item on the way to the host (the guest must refuse the data).
struct CorruptChecksum;

#[async_trait::async_trait]
impl Middleware for CorruptChecksum {
    async fn handle(
        &self,
        next: &dyn HyperVHost,
        mut call: HostCall,
    ) -> aetherv_hyperv::Result<HostReply> {
        if let HostCall::KvpWriteHost(_, items) = &mut call {
            for (key, value) in items {
                if key == keys::CHECKSUM {
                    *value = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_owned();
                }
            }
        }
        next.call(call).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_that_reports_failure() {
    let sim = fleet(1, 0).await;
    let host: Arc<dyn HyperVHost> = Arc::new(Layered::new(ops(&sim, "hv01"), CorruptChecksum));
    let (result, events) = run(
        host,
        "job-guest-fails",
        &windows_job("hv01", "bad-sum", false),
        config(),
        CancellationToken::new(),
    )
    .await;
    match result {
        Err(Error::ProvisionFailed {
            step,
            cause,
            cleanup,
            ..
        }) => {
            assert_eq!(step, steps::WAIT_FOR_GUEST);
            match *cause {
                Error::GuestFailed { reason, .. } => {
                    assert!(reason.contains("checksum"), "{reason}");
                }
                other => panic!("{other}"),
            }
            assert!(cleanup.is_clean(), "{cleanup}");
        }
        other => panic!("expected a guest failure, got {other:?}"),
    }
    assert!(events.text().contains("provisioningfailed"));
    assert_nothing_left(&sim, "hv01", "bad-sum", "guest failure");
    sim.shutdown().await;
}

/// Provisions `name` on hv01 and returns it, checked clean.
async fn provisioned(
    sim: &SimFleet,
    host: &Arc<dyn HyperVHost>,
    job: &str,
    name: &str,
) -> Provisioned {
    let (result, _) = run(
        Arc::clone(host),
        job,
        &linux_job("hv01", name),
        config(),
        CancellationToken::new(),
    )
    .await;
    let done = result.unwrap();
    assert_clean_after_success(sim, "hv01", &done);
    done
}

/// Puts an ISO copy back into the VM's folder and a DVD drive holding it, as an older version
/// of this project (or an admin) would have left it.
fn reinsert_iso(sim: &SimFleet, done: &Provisioned) -> String {
    let iso = format!("{}\\aetherv-provisioning-linux.iso", done.vm_folder);
    let id = done.vm_id.to_string();
    let path = iso.clone();
    sim.with_state(move |s| {
        s.add_loose_file(
            "hv01",
            aetherv_sim::LooseFile {
                path: path.clone(),
                size_bytes: 10,
                image: None,
                max_size_bytes: None,
            },
        );
        let vm = s.fleet_mut().vm_mut("hv01", &id).unwrap();
        vm.dvd_drives.push(aetherv_sim::DvdDrive {
            path: Some(path),
            controller_type: aetherv_sim::ControllerType::Scsi,
            controller_number: 0,
            controller_location: 1,
        });
    });
    iso
}

async fn force_delete(
    host: &Arc<dyn HyperVHost>,
    vm: aetherv_hyperv::ops::VmId,
    disks: bool,
) -> aetherv_provision::delete::Deleted {
    bounded(delete(
        Arc::clone(host),
        DeleteRequest {
            force: true,
            delete_disks: disks,
            ..DeleteRequest::new(vm)
        },
        CancellationToken::new(),
        &discard,
    ))
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_removes_the_folder_and_iso_copy_of_a_marked_vm_only() {
    let sim = fleet(1, 0).await;
    let host = ops(&sim, "hv01");

    // Marked and laid out by provisioning: folder and ISO copy go.
    let marked = provisioned(&sim, &host, "job-del-1", "del-marked").await;
    let iso = reinsert_iso(&sim, &marked);
    let deleted = force_delete(&host, marked.vm_id, true).await;
    assert!(
        deleted.removed_paths.contains(&marked.vm_folder),
        "{deleted:?}"
    );
    assert!(deleted.kept_paths.is_empty(), "{deleted:?}");
    assert!(sim.with_state(|s| s.loose_file("hv01", &iso).is_none()));
    assert_nothing_left(&sim, "hv01", "del-marked", "marked VM deleted");

    // Disks kept: the ISO copy goes, the folder (holding the disk) stays.
    let keep = provisioned(&sim, &host, "job-del-2", "del-keep-disks").await;
    let iso = reinsert_iso(&sim, &keep);
    let deleted = force_delete(&host, keep.vm_id, false).await;
    assert!(deleted.removed_paths.contains(&iso), "{deleted:?}");
    assert!(deleted.kept_paths.contains(&keep.vm_folder), "{deleted:?}");
    assert!(sim.with_state(|s| s.loose_file("hv01", &iso).is_none()));
    assert!(sim.with_state(|s| s.loose_path_exists("hv01", &keep.vm_folder)));

    // Unmarked (notes changed by an admin): everything in the folder is kept.
    let unmarked = provisioned(&sim, &host, "job-del-3", "del-unmarked").await;
    let iso = reinsert_iso(&sim, &unmarked);
    let id = unmarked.vm_id.to_string();
    sim.with_state(|s| s.fleet_mut().vm_mut("hv01", &id).unwrap().notes = "hand-made".to_owned());
    let deleted = force_delete(&host, unmarked.vm_id, true).await;
    assert!(
        deleted.kept_paths.contains(&unmarked.vm_folder),
        "{deleted:?}"
    );
    assert!(deleted.kept_paths.contains(&iso), "{deleted:?}");
    assert!(sim.with_state(|s| s.loose_file("hv01", &iso).is_some()));

    // Marked, but its folder is not `<root>\<vm name>` (renamed VM): kept.
    let renamed = provisioned(&sim, &host, "job-del-4", "del-renamed").await;
    let iso = reinsert_iso(&sim, &renamed);
    let id = renamed.vm_id.to_string();
    sim.with_state(|s| {
        s.fleet_mut().vm_mut("hv01", &id).unwrap().name = "renamed-by-admin".to_owned()
    });
    let deleted = force_delete(&host, renamed.vm_id, true).await;
    assert!(
        deleted.kept_paths.contains(&renamed.vm_folder),
        "{deleted:?}"
    );
    assert!(sim.with_state(|s| s.loose_file("hv01", &iso).is_some()));
    sim.shutdown().await;
}

/// The simulator enforces Hyper-V's order: a file in a DVD drive cannot be deleted, so a
/// product that deletes the ISO copy before ejecting it fails to clean up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_iso_before_ejecting_it_is_refused() {
    let sim = fleet(1, 0).await;
    let host = ops(&sim, "hv01");
    let done = provisioned(&sim, &host, "job-order", "order-vm").await;
    let iso = reinsert_iso(&sim, &done);
    let err = bounded(host.call(HostCall::RemovePath(iso.clone())))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("DVD drive"), "{err}");
    assert!(sim.with_state(|s| s.loose_file("hv01", &iso).is_some()));
    let reply = bounded(host.call(HostCall::RemoveDvdDrive {
        vm: done.vm_id,
        path: iso.clone(),
    }))
    .await
    .unwrap();
    assert!(
        matches!(reply, HostReply::DvdDriveRemoved(ref r) if r.removed == 1),
        "{reply:?}"
    );
    let reply = bounded(host.call(HostCall::RemovePath(iso.clone())))
        .await
        .unwrap();
    assert!(
        matches!(reply, HostReply::RemovedPath(ref r) if r.removed),
        "{reply:?}"
    );
    sim.shutdown().await;
}

/// A cleanup step that fails after the guest applied its configuration does not fail (and so
/// does not delete) a working VM: it is reported loudly, and the ISO copy still in the drive is
/// left alone rather than deleted out of order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_dvd_removal_is_reported_and_the_vm_kept() {
    let sim = fleet(1, 0).await;
    let host = ops(&sim, "hv01");
    sim.host("hv01")
        .unwrap()
        .set_fault_plan(FaultPlan::new(1).rule(
            Fault::FailCommand {
                pattern: "Remove-VmDvdDrive".to_owned(),
                exit_code: 1,
                message: "injected".to_owned(),
            },
            Trigger::Always,
        ));
    let (result, events) = run(
        Arc::clone(&host),
        "job-dvd-fails",
        &linux_job("hv01", "dvd-fails"),
        config(),
        CancellationToken::new(),
    )
    .await;
    let done = result.unwrap();
    let vm = sim
        .host("hv01")
        .unwrap()
        .vm(&done.vm_id.to_string())
        .unwrap();
    assert!(
        !vm.kvp.host_to_guest.keys().any(|k| k.starts_with("hlvmm.")),
        "the keys go even when the drive cannot"
    );
    assert_eq!(vm.dvd_drives.len(), 1);
    let iso = vm.dvd_drives[0]
        .path
        .clone()
        .expect("the ISO is still inserted");
    assert!(sim.with_state(|s| s.loose_file("hv01", &iso).is_some()));
    let left: Vec<String> = done
        .cleanup
        .left_behind()
        .map(|(a, _)| a.to_string())
        .collect();
    assert_eq!(left.len(), 2, "{}", done.cleanup);
    assert!(left[0].starts_with("DVD drive"), "{left:?}");
    assert!(left[1].starts_with("ISO copy"), "{left:?}");
    let text = events.text();
    assert!(text.contains("COULD NOT REMOVE DVD drive"), "{text}");
    assert!(text.contains("LEFT BEHIND"), "{text}");
    sim.shutdown().await;
}
