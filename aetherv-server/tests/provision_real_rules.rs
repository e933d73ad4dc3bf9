//! A Linux VM and a Windows VM provisioned through the demo server with everything a real
//! Hyper-V host needs from a request: `target_cluster` (the server chooses the host),
//! `network`, `storage_class` and `disk_size_gb`. The simulated host (which follows Hyper-V's
//! rules: a Linux guest does not boot with the Windows Secure Boot template, a file in a DVD
//! drive cannot be deleted) is then inspected directly: the VM sits on the named network's
//! switch and VLAN, in the storage class's folder, with its disk expanded, the firmware its OS
//! family needs, no host-written `hlvmm.*` item, no DVD drive and no ISO copy, and its notes
//! say it is provisioned (so it is not an orphan).
//!
//! Every answer is checked against the OpenAPI document. The bound only keeps a broken build
//! from hanging the run; nothing asserts speed.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use aetherv_hyperv::ops::SecureBootTemplate;
use aetherv_server::config::Config;
use aetherv_server::startup::Server;
use axum::Router;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

mod support;
use support::contract;

const BOUND: Duration = Duration::from_secs(120);
const GIB: u64 = 1 << 30;
const GUEST_PW: &str = "Gu3st-pw-never-shown";

async fn call(
    app: &Router,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    contract::call_checked(app, method, path, body).await
}

async fn job_until_done(app: &Router, id: &str) -> Value {
    let deadline = Instant::now() + BOUND;
    loop {
        let (status, job) = call(app, Method::GET, &format!("/api/v1/jobs/{id}"), None).await;
        assert_eq!(status, StatusCode::OK);
        if !matches!(job["status"].as_str(), Some("queued" | "running")) {
            return job;
        }
        assert!(Instant::now() < deadline, "job {id} did not end: {job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn request(name: &str, cluster: &str, image: &str, network: &str, disk_gb: u64) -> Value {
    json!({
        "vm_name": name,
        "target_cluster": cluster,
        "image_name": image,
        "gb_ram": 2,
        "cpu_cores": 2,
        "guest_la_uid": "admin",
        "guest_la_pw": GUEST_PW,
        "network": network,
        "storage_class": "fast",
        "disk_size_gb": disk_gb,
        "vm_clustered": "Yes",
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linux_and_windows_vms_with_cluster_network_storage_and_disk_size_leave_nothing_behind() {
    let env = |name: &str| match name {
        "DEMO_VMS_PER_HOST" => Some("2".to_owned()),
        "AETHERV_DEMO_PASSWORD" => Some("demo-Passw0rd".to_owned()),
        "LISTEN_ADDR" => Some("127.0.0.1:0".to_owned()),
        _ => None,
    };
    let config = Config::from_sources(&env, Path::new("/nonexistent-aetherv-test")).unwrap();
    let server = Server::start(&config).await.unwrap();
    let app = server.router();
    let deadline = Instant::now() + BOUND;
    while server.state().readiness.check().is_err() {
        assert!(
            Instant::now() < deadline,
            "the demo server never became ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sim = server.demo_fleet().unwrap();

    // The cluster of the host that defines the networks and the storage class (hv03 in the
    // generated fleet: two External switches, networks prod/lab, storage class fast).
    let (_, hv03) = call(&app, Method::GET, "/api/v1/hosts/hv03", None).await;
    let cluster = hv03["cluster"].as_str().unwrap().to_owned();

    // A cluster request for a network no member defines is refused with each member's reason.
    let (status, refused) = call(
        &app,
        Method::POST,
        "/api/v1/vms/create",
        Some(request(
            "nowhere-01",
            &cluster,
            "Ubuntu 24.04 LTS",
            "dmz",
            64,
        )),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert_eq!(refused["error"]["code"], "no_eligible_host");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("dmz"),
        "{refused}"
    );

    let cases = [
        (
            "lin-real-01",
            "Ubuntu 24.04 LTS",
            "prod",
            ("vSwitch-External", 10u16),
            SecureBootTemplate::MicrosoftUefiCertificateAuthority,
        ),
        (
            "win-real-01",
            "Windows Server 2022 Datacenter",
            "lab",
            ("vSwitch-External-B", 20u16),
            SecureBootTemplate::MicrosoftWindows,
        ),
    ];
    for (name, image, network, (switch, vlan), template) in cases {
        let image_virtual = sim
            .host("hv03")
            .unwrap()
            .host()
            .unwrap()
            .images
            .iter()
            .find(|i| i.name == image)
            .map(|i| i.max_size_bytes)
            .unwrap();
        let disk_gb = image_virtual / GIB + 16;
        let (status, accepted) = call(
            &app,
            Method::POST,
            "/api/v1/vms/create",
            Some(request(name, &cluster, image, network, disk_gb)),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
        let job = job_until_done(&app, accepted["job_id"].as_str().unwrap()).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        assert!(!job.to_string().contains(GUEST_PW));
        // Placement chose the only member that defines the network and the storage class.
        assert_eq!(job["target_host"], "hv03", "{job}");
        assert_eq!(job["parameters"]["placement"]["host"], "hv03", "{job}");
        assert_eq!(job["percent"], 100);
        let steps: Vec<&str> = job["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        for step in [
            "Provisioning.RemoveProvisioningKeys",
            "Provisioning.RemoveDvdDrive",
            "Provisioning.RemoveProvisioningISO",
            "Provisioning.AddClusterRole",
            "Provisioning.MarkProvisioned",
        ] {
            assert!(steps.contains(&step), "{step} missing from {steps:?}");
        }
        let vm_id = job["vm_id"].as_str().unwrap().to_owned();

        // What the host has now.
        let host = sim.host("hv03").unwrap();
        let vm = host.vm(&vm_id).unwrap();
        let left: Vec<&String> = vm
            .kvp
            .host_to_guest
            .keys()
            .filter(|k| k.starts_with("hlvmm."))
            .collect();
        assert!(left.is_empty(), "{name}: host KVP items left: {left:?}");
        assert!(vm.dvd_drives.is_empty(), "{name}: {:?}", vm.dvd_drives);
        assert!(
            vm.path.to_ascii_lowercase().contains(r"\fast\"),
            "{name} is not in the storage class folder: {}",
            vm.path
        );
        let iso_left = sim.with_state(|s| s.loose_path_exists("hv03", &vm.path));
        assert!(!iso_left, "{name}: the ISO copy is still in {}", vm.path);
        assert_eq!(vm.disks.len(), 1);
        assert_eq!(vm.disks[0].max_size_bytes, disk_gb * GIB, "{name}");
        assert_eq!(vm.nics[0].switch_name.as_deref(), Some(switch), "{name}");
        assert_eq!(vm.nics[0].vlan_id, Some(vlan), "{name}");
        assert!(vm.firmware.secure_boot, "{name}");
        assert_eq!(vm.firmware.secure_boot_template, template, "{name}");
        assert!(vm.guest_os_boots());
        assert!(vm.clustered, "{name}");
        assert!(vm.notes.starts_with("aetherv-provisioned:"), "{}", vm.notes);

        // The API agrees, and the VM is not an orphan.
        let (_, view) = call(&app, Method::GET, &format!("/api/v1/vms/{vm_id}"), None).await;
        assert_eq!(view["orphaned"], false, "{view}");
        assert_eq!(view["dvd_drives"], json!([]), "{view}");
    }
    server.shutdown().await;
}
