//! The typed host operations end to end: `WinRmHyperVHost` over `WinRmExecutor` over
//! aetherv-winrm's client (NTLM + message encryption) against the simulated fleet on
//! loopback. The generated hosts report installed scripts, so `-File <install dir>\<Name>.ps1`
//! reaches the emulations of `assets/powershell/`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::time::Duration;

use aetherv_hyperv::OsFamily;
use std::sync::Arc;

use aetherv_hyperv::ops::layer::Layered;
use aetherv_hyperv::ops::{
    BootSettings, CopyImageRequest, CopyIsoRequest, HyperVHost, HyperVHostExt, ImageRoots,
    MigrationTarget, PowerAction, RegisterVmSpec, SecureBootTemplate, VmId, VmState,
    WinRmHyperVHost,
};
use aetherv_hyperv::protocol::DEFAULT_INSTALL_DIRECTORY;
use aetherv_hyperv::{Error, WinRmExecutor};
use aetherv_kvp::{GuestState, keys};
use aetherv_sim::{
    Credentials, FleetSpec, NewVm, SIM_AGENT_VERSION, SimFleet, SimOptions, host_role,
};
use aetherv_winrm::Client;

const USER: &str = "Administrator";
const PASSWORD: &str = "Sim-P@ss1";
const BOUND: Duration = Duration::from_secs(60);

async fn bounded<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, f)
        .await
        .expect("step did not finish within its bound")
}

async fn fleet(hosts: usize, vms_per_host: usize, clusters: usize) -> SimFleet {
    let spec = FleetSpec {
        hosts,
        vms_per_host,
        clusters,
        seed: 23,
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

fn ops(sim: &SimFleet, name: &str) -> WinRmHyperVHost<WinRmExecutor> {
    let host = sim.host(name).expect("generated host");
    let client = Client::builder(&host.endpoint())
        .ntlm(format!("LAB\\{USER}"), PASSWORD)
        .operation_timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    WinRmHyperVHost::new(WinRmExecutor::new(client, name, DEFAULT_INSTALL_DIRECTORY))
}

fn commands(host: &WinRmHyperVHost<WinRmExecutor>) -> u64 {
    host.executor().client().stats().commands
}

fn model_state(sim: &SimFleet, host: &str, id: VmId) -> VmState {
    sim.host(host).unwrap().vm(&id.to_string()).unwrap().state
}

/// Creates an Off VM directly in the model.
fn create_vm(sim: &SimFleet, host: &str, name: &str) -> VmId {
    let h = sim.host(host).unwrap();
    let image = h.host().unwrap().images[0].name.clone();
    let mut spec = NewVm::new(name, image);
    spec.memory_startup_bytes = 1 << 30;
    VmId(h.create_vm(&spec).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_of_many_vms_is_one_command() {
    let sim = fleet(1, 40, 1).await;
    let host = ops(&sim, "hv01");
    let before = commands(&host);
    let inventory = bounded(host.inventory()).await.unwrap();
    assert_eq!(
        commands(&host) - before,
        1,
        "one WinRM command for the inventory"
    );
    assert_eq!(inventory.vms.len(), 40);
    assert_eq!(inventory.host, "hv01");
    let model = sim.host("hv01").unwrap().vms();
    for vm in &inventory.vms {
        let m = model.iter().find(|m| m.id == vm.id.0).expect("in model");
        assert_eq!(vm.name, m.name);
        assert_eq!(vm.state, m.state);
        assert_eq!(vm.processor_count, m.processor_count);
        assert_eq!(vm.disks.len(), m.disks.len());
        assert_eq!(vm.nics.len(), m.nics.len());
        assert!(vm.creation_time.is_some());
    }

    let one = &inventory.vms[7];
    let fetched = bounded(host.vm(one.id)).await.unwrap();
    assert_eq!(fetched.name, one.name);
    let missing = VmId(uuid::Uuid::from_u128(7));
    match bounded(host.vm(missing)).await.unwrap_err() {
        Error::UnknownVm { host, vm } => {
            assert_eq!(host, "hv01");
            assert_eq!(vm, missing.to_string());
        }
        other => panic!("unexpected {other:?}"),
    }

    let facts = bounded(host.facts()).await.unwrap();
    assert_eq!(facts.name, "hv01");
    assert!(facts.cluster.is_some());
    assert!(!facts.images.is_empty());
    assert!(!facts.provisioning_isos.is_empty());
    assert!(!facts.storage.is_empty());
    assert_eq!(
        facts.scripts_version.as_deref(),
        Some(aetherv_sim::SIM_SCRIPTS_VERSION)
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_actions_and_refusals() {
    let sim = fleet(1, 0, 0).await;
    let host = ops(&sim, "hv01");
    let id = create_vm(&sim, "hv01", "power-1");

    // Off: pausing is refused by the script's table.
    match bounded(host.power(id, PowerAction::Pause))
        .await
        .unwrap_err()
    {
        Error::InvalidVmState {
            host,
            state,
            operation,
            ..
        } => {
            assert_eq!(host, "hv01");
            assert_eq!(state, "Off");
            assert_eq!(operation, "pause");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(model_state(&sim, "hv01", id), VmState::Off);

    for (action, expected) in [
        (PowerAction::Start, VmState::Running),
        (PowerAction::Pause, VmState::Paused),
        (PowerAction::Resume, VmState::Running),
        (PowerAction::Save, VmState::Saved),
        (PowerAction::Start, VmState::Running),
        (PowerAction::Restart, VmState::Running),
        (PowerAction::Shutdown, VmState::Off),
        (PowerAction::Start, VmState::Running),
        (PowerAction::TurnOff, VmState::Off),
    ] {
        let outcome = bounded(host.power(id, action)).await.unwrap();
        assert_eq!(outcome.state, expected, "{action:?}");
        assert_eq!(
            model_state(&sim, "hv01", id),
            expected,
            "{action:?} in the model"
        );
    }

    // The local table refuses without a command.
    let vm = bounded(host.vm(id)).await.unwrap();
    let before = commands(&host);
    let err = aetherv_hyperv::ops::power_checked(&host, &vm, PowerAction::Resume)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidVmState { .. }));
    assert_eq!(commands(&host), before);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_with_and_without_disks() {
    let sim = fleet(1, 0, 0).await;
    let host = ops(&sim, "hv01");
    let a = create_vm(&sim, "hv01", "del-a");
    let b = create_vm(&sim, "hv01", "del-b");
    let c = create_vm(&sim, "hv01", "del-c");

    bounded(host.power(a, PowerAction::Start)).await.unwrap();
    assert!(matches!(
        bounded(host.delete_vm(a, true)).await.unwrap_err(),
        Error::InvalidVmState { .. }
    ));
    bounded(host.power(a, PowerAction::TurnOff)).await.unwrap();
    let deleted = bounded(host.delete_vm(a, true)).await.unwrap();
    assert_eq!(deleted.removed_paths.len(), 1);
    assert!(deleted.kept_paths.is_empty());

    let kept = bounded(host.delete_vm(b, false)).await.unwrap();
    assert_eq!(kept.kept_paths.len(), 1);
    assert!(kept.removed_paths.is_empty());
    assert!(sim.host("hv01").unwrap().vm(&b.to_string()).is_err());

    // A disk shared with another VM is not deleted.
    let d = create_vm(&sim, "hv01", "del-d");
    let shared = sim.host("hv01").unwrap().vm(&d.to_string()).unwrap().disks[0]
        .path
        .clone();
    sim.with_state(|s| {
        s.fleet_mut().vm_mut("hv01", &c.to_string()).unwrap().disks[0].path = shared.clone();
    });
    match bounded(host.delete_vm(c, true)).await.unwrap_err() {
        Error::SharedDisk { host, path, .. } => {
            assert_eq!(host, "hv01");
            assert_eq!(path, shared);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(sim.host("hv01").unwrap().vm(&c.to_string()).is_ok());
    assert!(matches!(
        bounded(host.delete_vm(a, false)).await.unwrap_err(),
        Error::UnknownVm { .. }
    ));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notes_are_set_in_any_state_and_cleared() {
    let sim = fleet(1, 0, 0).await;
    let host = ops(&sim, "hv01");
    let a = create_vm(&sim, "hv01", "notes-a");
    let marker = "aetherv-job:6f1c1a52-7d9e-4c4e-9a53-2b0f3c9d8e71";
    let set = bounded(host.set_vm_notes(a, marker.to_owned()))
        .await
        .unwrap();
    assert_eq!((set.id, set.notes.as_str()), (a, marker));
    // Hyper-V changes notes of a running VM too.
    bounded(host.power(a, PowerAction::Start)).await.unwrap();
    let cleared = bounded(host.set_vm_notes(a, String::new())).await.unwrap();
    assert_eq!(cleared.notes, "");
    let vm = bounded(host.vm(a)).await.unwrap();
    assert_eq!((vm.notes.as_str(), vm.state), ("", VmState::Running));
    assert!(matches!(
        bounded(host.set_vm_notes(VmId(uuid_of(0xdead)), String::new()))
            .await
            .unwrap_err(),
        Error::UnknownVm { .. }
    ));
    // Notes that cannot be right are refused before anything is sent.
    let before = commands(&host);
    assert!(matches!(
        bounded(host.set_vm_notes(a, "x\0y".to_owned()))
            .await
            .unwrap_err(),
        Error::InvalidRequest { .. }
    ));
    assert_eq!(commands(&host), before);
    sim.shutdown().await;
}

fn uuid_of(n: u128) -> uuid::Uuid {
    uuid::Uuid::from_u128(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_steps_kvp_cluster_role_and_compensation() {
    let sim = fleet(2, 0, 1).await;
    let host = ops(&sim, "hv01");
    let facts = bounded(host.facts()).await.unwrap();
    let image = facts
        .images
        .iter()
        .find(|i| i.os_family == "linux")
        .expect("a linux image")
        .clone();
    let iso = facts
        .provisioning_isos
        .iter()
        .find(|i| i.os_family == "linux")
        .expect("a linux ISO")
        .clone();

    let copied = bounded(host.copy_image(CopyImageRequest {
        image_path: image.path.clone(),
        vm_name: "prov-1".to_owned(),
        destination_root: None,
        disk_size_bytes: None,
    }))
    .await
    .unwrap();
    assert!(
        copied
            .vhdx_path
            .ends_with(r"\prov-1\Virtual Hard Disks\prov-1.vhdx")
    );
    // The same folder again is refused.
    let again = bounded(host.copy_image(CopyImageRequest {
        image_path: image.path.clone(),
        vm_name: "prov-1".to_owned(),
        destination_root: None,
        disk_size_bytes: None,
    }))
    .await
    .unwrap_err();
    assert!(
        matches!(&again, Error::ScriptFailed { code, operation, .. } if code == "PathExists" && *operation == "copy image"),
        "{again}"
    );

    let iso_copy = bounded(host.copy_provisioning_iso(CopyIsoRequest {
        iso_path: iso.path.clone(),
        vm_folder: copied.vm_folder.clone(),
    }))
    .await
    .unwrap();
    assert!(iso_copy.iso_path.starts_with(&copied.vm_folder));

    let spec = RegisterVmSpec {
        name: "prov-1".to_owned(),
        vm_folder: copied.vm_folder.clone(),
        vhdx_path: copied.vhdx_path.clone(),
        iso_path: Some(iso_copy.iso_path.clone()),
        processor_count: 2,
        memory_startup_bytes: 2 << 30,
        dynamic_memory: None,
        switch_name: None,
        vlan_id: Some(42),
        notes: "aetherv-job:e2e-1".to_owned(),
        start: true,
        boot: Some(BootSettings::for_family(OsFamily::Linux)),
    };
    let vm = bounded(host.register_vm(spec.clone())).await.unwrap();
    assert_eq!(vm.state, VmState::Running);
    assert_eq!(vm.notes, "aetherv-job:e2e-1");
    assert_eq!(vm.nics[0].vlan_id, Some(42));
    assert_eq!(vm.disks[0].path, copied.vhdx_path);
    assert_eq!(
        vm.dvd_drives[0].path.as_deref(),
        Some(iso_copy.iso_path.as_str())
    );
    assert!(matches!(
        bounded(host.register_vm(spec)).await.unwrap_err(),
        Error::VmExists { .. }
    ));

    // KVP: the host starts the handshake, the guest agent answers with its public key.
    let items: Vec<(String, String)> = host_role::begin_items(SIM_AGENT_VERSION);
    bounded(host.kvp_write_host(vm.id, items)).await.unwrap();
    let guest = bounded(host.kvp_read_guest(vm.id)).await.unwrap();
    assert!(
        guest.items.contains_key(keys::GUEST_PUBLIC_KEY),
        "{guest:?}"
    );
    assert_eq!(
        guest.items[keys::GUEST_STATE],
        GuestState::WaitingForAesKey.as_str()
    );
    assert!(!guest.intrinsic.is_empty());
    let removed = bounded(host.kvp_remove_host(
        vm.id,
        vec![
            keys::VERSION.to_owned(),
            "hlvmm.meta.never-written".to_owned(),
        ],
    ))
    .await
    .unwrap();
    assert_eq!(removed, [keys::VERSION]);

    // Cluster role.
    let role = bounded(host.add_cluster_role(vm.id)).await.unwrap();
    assert!(role.clustered);
    assert!(
        sim.host("hv01")
            .unwrap()
            .vm(&vm.id.to_string())
            .unwrap()
            .clustered
    );
    let role = bounded(host.remove_cluster_role(vm.id)).await.unwrap();
    assert!(!role.clustered);

    // Compensation: remove the VM (keeping its disk), then its folder.
    bounded(host.power(vm.id, PowerAction::TurnOff))
        .await
        .unwrap();
    bounded(host.delete_vm(vm.id, false)).await.unwrap();
    let removed = bounded(host.remove_path(copied.vm_folder.clone()))
        .await
        .unwrap();
    assert!(removed.removed);
    let again = bounded(host.remove_path(copied.vm_folder.clone()))
        .await
        .unwrap();
    assert!(!again.removed);
    sim.shutdown().await;
}

/// Copies the first image of `family` on `host` and registers a started VM `name` over it with
/// the firmware `boot`; returns the VM's id.
async fn register_started(
    host: &WinRmHyperVHost<WinRmExecutor>,
    family: &str,
    name: &str,
    boot: Option<BootSettings>,
) -> VmId {
    let facts = bounded(host.facts()).await.unwrap();
    let image = facts
        .images
        .iter()
        .find(|i| i.os_family == family)
        .expect("an image of the family");
    let copied = bounded(host.copy_image(CopyImageRequest {
        image_path: image.path.clone(),
        vm_name: name.to_owned(),
        destination_root: None,
        disk_size_bytes: None,
    }))
    .await
    .unwrap();
    let spec = RegisterVmSpec {
        name: name.to_owned(),
        vm_folder: copied.vm_folder,
        vhdx_path: copied.vhdx_path,
        iso_path: None,
        processor_count: 2,
        memory_startup_bytes: 1 << 30,
        dynamic_memory: None,
        switch_name: None,
        vlan_id: None,
        notes: String::new(),
        start: true,
        boot,
    };
    let vm = bounded(host.register_vm(spec)).await.unwrap();
    assert_eq!(vm.state, VmState::Running);
    vm.id
}

/// Real Hyper-V's rule: a generation 2 VM without firmware settings gets Secure Boot with the
/// `MicrosoftWindows` template, which a Linux shim does not pass: the VM runs, its guest never
/// boots, its agent never answers. The right template (or Secure Boot off) boots it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linux_guests_boot_only_with_a_template_that_trusts_them() {
    let sim = fleet(1, 0, 0).await;
    let host = ops(&sim, "hv01");
    let begin = host_role::begin_items(SIM_AGENT_VERSION);

    let stuck = register_started(&host, "linux", "stuck-1", None).await;
    let model = sim.host("hv01").unwrap().vm(&stuck.to_string()).unwrap();
    assert_eq!(model.firmware, BootSettings::hyperv_default());
    assert!(model.firmware.secure_boot);
    assert!(!model.guest_os_boots());
    bounded(host.kvp_write_host(stuck, begin.clone()))
        .await
        .unwrap();
    let guest = bounded(host.kvp_read_guest(stuck)).await.unwrap();
    assert!(guest.items.is_empty(), "{guest:?}");
    assert!(guest.intrinsic.is_empty(), "{guest:?}");

    let with_tpm = BootSettings {
        tpm: true,
        ..BootSettings::for_family(OsFamily::Linux)
    };
    let booted = register_started(&host, "linux", "boots-1", Some(with_tpm)).await;
    let model = sim.host("hv01").unwrap().vm(&booted.to_string()).unwrap();
    assert_eq!(
        model.firmware.secure_boot_template,
        SecureBootTemplate::MicrosoftUefiCertificateAuthority
    );
    assert!(model.firmware.tpm && model.guest_os_boots());
    bounded(host.kvp_write_host(booted, begin.clone()))
        .await
        .unwrap();
    let guest = bounded(host.kvp_read_guest(booted)).await.unwrap();
    assert!(
        guest.items.contains_key(keys::GUEST_PUBLIC_KEY),
        "{guest:?}"
    );
    assert!(!guest.intrinsic.is_empty());

    let off = BootSettings {
        secure_boot: false,
        ..BootSettings::hyperv_default()
    };
    let unchecked = register_started(&host, "linux", "nosb-1", Some(off)).await;
    bounded(host.kvp_write_host(unchecked, begin.clone()))
        .await
        .unwrap();
    let guest = bounded(host.kvp_read_guest(unchecked)).await.unwrap();
    assert!(
        guest.items.contains_key(keys::GUEST_PUBLIC_KEY),
        "{guest:?}"
    );

    // Windows is the mirror image: the third-party CA template does not boot it.
    let windows = register_started(
        &host,
        "windows",
        "win-stuck",
        Some(BootSettings::for_family(OsFamily::Linux)),
    )
    .await;
    bounded(host.kvp_write_host(windows, begin)).await.unwrap();
    let guest = bounded(host.kvp_read_guest(windows)).await.unwrap();
    assert!(guest.items.is_empty(), "{guest:?}");
    sim.shutdown().await;
}

/// The image roots: a host of the first cluster keeps its images in Aether-V's layout
/// (`<CSV>\DiskImages`), which the default list finds, with each image's root; configured
/// roots (through the `ImageRoots` layer) replace the default list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_images_are_found_in_the_default_and_configured_roots() {
    let sim = fleet(3, 0, 1).await;
    let host: Arc<dyn HyperVHost> = Arc::new(ops(&sim, "hv01"));
    let facts = bounded(host.facts()).await.unwrap();
    assert!(!facts.images.is_empty());
    for image in &facts.images {
        let root = image.root.as_deref().expect("every image names its root");
        assert!(root.ends_with(r"\DiskImages"), "{root}");
        assert_eq!(
            image.path,
            format!(r"{root}\{}", image.path.rsplit('\\').next().unwrap())
        );
    }
    let disk_images = facts.images[0].root.clone().unwrap();
    let elsewhere = Layered::new(
        Arc::clone(&host),
        ImageRoots::new(vec![r"C:\ClusterStorage\Volume1\Images".to_owned()]),
    );
    assert!(bounded(elsewhere.facts()).await.unwrap().images.is_empty());
    let configured = Layered::new(
        Arc::clone(&host),
        ImageRoots::new(vec![r"D:\Nothing".to_owned(), disk_images.clone()]),
    );
    let again = bounded(configured.facts()).await.unwrap();
    assert_eq!(again.images.len(), facts.images.len());
    assert!(
        again
            .images
            .iter()
            .all(|i| i.root.as_deref() == Some(disk_images.as_str()))
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_migration_between_cluster_hosts() {
    let sim = fleet(2, 0, 1).await;
    let hv01 = ops(&sim, "hv01");
    let id = create_vm(&sim, "hv01", "mig-1");
    bounded(hv01.power(id, PowerAction::Start)).await.unwrap();

    let check = bounded(hv01.compare_vm(
        id,
        MigrationTarget {
            destination_host: "hv02".to_owned(),
            with_storage: true,
            destination_path: None,
            storage_only: false,
        },
    ))
    .await
    .unwrap();
    assert!(check.compatible, "{check:?}");
    let nowhere = bounded(hv01.compare_vm(
        id,
        MigrationTarget {
            destination_host: "hv99".to_owned(),
            with_storage: false,
            destination_path: None,
            storage_only: false,
        },
    ))
    .await
    .unwrap();
    assert!(!nowhere.compatible);

    let moved = bounded(hv01.move_vm(
        id,
        MigrationTarget {
            destination_host: "hv02".to_owned(),
            with_storage: true,
            destination_path: None,
            storage_only: false,
        },
    ))
    .await
    .unwrap();
    assert_eq!(moved.destination_host, "hv02");
    assert!(sim.host("hv01").unwrap().vm(&id.to_string()).is_err());
    let hv02 = ops(&sim, "hv02");
    let vm = bounded(hv02.vm(id)).await.unwrap();
    assert_eq!(vm.state, VmState::Running);

    match bounded(hv02.move_vm(
        id,
        MigrationTarget {
            destination_host: "hv99".to_owned(),
            with_storage: false,
            destination_path: None,
            storage_only: false,
        },
    ))
    .await
    .unwrap_err()
    {
        Error::MigrationIncompatible {
            host, destination, ..
        } => {
            assert_eq!(host, "hv02");
            assert_eq!(destination, "hv99");
        }
        other => panic!("unexpected {other:?}"),
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_scripts_are_typed_errors_naming_host_and_operation() {
    let sim = fleet(1, 0, 0).await;
    let host = ops(&sim, "hv01");
    let id = create_vm(&sim, "hv01", "fail-1");

    // A standalone host has no cluster.
    match bounded(host.add_cluster_role(id)).await.unwrap_err() {
        Error::ScriptFailed {
            host,
            operation,
            code,
            message,
        } => {
            assert_eq!(host, "hv01");
            assert_eq!(operation, "add cluster role");
            assert_eq!(code, "NotClustered");
            assert!(!message.is_empty());
        }
        other => panic!("unexpected {other:?}"),
    }
    // Compensation outside the VM root is refused by the script.
    let err = bounded(host.remove_path(r"C:\Windows\System32\drivers".to_owned()))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(&err, Error::ScriptFailed { code, .. } if code == "PathOutsideRoot"),
        "{text}"
    );
    assert!(
        text.contains("hv01") && text.contains("remove path"),
        "{text}"
    );
    // Storage classes put VM folders inside Cluster Shared Volumes: strictly inside a volume is
    // removable (nothing there, so nothing removed), the volume itself never.
    let inside = bounded(host.remove_path(r"C:\ClusterStorage\Volume1\Fast\vm-gone".to_owned()))
        .await
        .unwrap();
    assert!(!inside.removed);
    let err = bounded(host.remove_path(r"C:\ClusterStorage\Volume1".to_owned()))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::ScriptFailed { code, .. } if code == "PathOutsideRoot"),
        "{err}"
    );

    // A host without installed scripts: powershell.exe's -File error arrives as a typed error.
    sim.with_state(|s| s.fleet_mut().host_mut("hv01").unwrap().scripts_version = None);
    let err = bounded(host.inventory()).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::OperationOutput { .. }), "{text}");
    assert!(
        text.contains("hv01") && text.contains("inventory"),
        "{text}"
    );
    sim.shutdown().await;
}

#[test]
fn the_simulator_emulates_every_script() {
    let registry = aetherv_sim::ScriptRegistry::builtin();
    for name in aetherv_hyperv::ops::scripts::ALL {
        assert!(registry.get(name).is_some(), "no emulation of {name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dvd_drives_follow_hyper_v_rules_and_host_kvp_goes_by_prefix() {
    let sim = fleet(1, 0, 0).await;
    let host = ops(&sim, "hv01");
    let h = sim.host("hv01").unwrap();
    let root = h.host().unwrap().vm_path;
    let gen2 = create_vm(&sim, "hv01", "dvd-gen2");
    let gen1 = create_vm(&sim, "hv01", "dvd-gen1");
    let iso2 = format!("{root}\\dvd-gen2\\provisioning.iso");
    let iso1 = format!("{root}\\dvd-gen1\\provisioning.iso");
    let (id2, id1, p2, p1) = (
        gen2.to_string(),
        gen1.to_string(),
        iso2.clone(),
        iso1.clone(),
    );
    sim.with_state(move |s| {
        for (id, path, gen1) in [(id2, p2, false), (id1, p1, true)] {
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
            if gen1 {
                vm.generation = 1;
            }
            vm.dvd_drives = vec![aetherv_sim::DvdDrive {
                path: Some(path),
                controller_type: if gen1 {
                    aetherv_sim::ControllerType::Ide
                } else {
                    aetherv_sim::ControllerType::Scsi
                },
                controller_number: if gen1 { 1 } else { 0 },
                controller_location: if gen1 { 0 } else { 1 },
            }];
        }
    });
    for id in [gen2, gen1] {
        bounded(host.power(id, PowerAction::Start)).await.unwrap();
    }

    // A file in a DVD drive cannot be deleted.
    let err = bounded(host.remove_path(iso2.clone())).await.unwrap_err();
    assert!(err.to_string().contains("DVD drive"), "{err}");

    // Generation 2 (SCSI): ejected and removed while running.
    let removed = bounded(host.remove_dvd_drive(gen2, iso2.clone()))
        .await
        .unwrap();
    assert_eq!((removed.ejected, removed.removed), (1, 1), "{removed:?}");
    assert!(h.vm(&gen2.to_string()).unwrap().dvd_drives.is_empty());
    assert!(
        bounded(host.remove_path(iso2.clone()))
            .await
            .unwrap()
            .removed
    );

    // Generation 1 (IDE) while running: only ejected; the model refuses the removal itself.
    let removed = bounded(host.remove_dvd_drive(gen1, iso1.clone()))
        .await
        .unwrap();
    assert_eq!((removed.ejected, removed.removed), (1, 0), "{removed:?}");
    assert_eq!(removed.kept.len(), 1, "{removed:?}");
    let vm = h.vm(&gen1.to_string()).unwrap();
    assert_eq!(vm.dvd_drives.len(), 1);
    assert_eq!(vm.dvd_drives[0].path, None);
    let id1 = gen1.to_string();
    let refused = sim.with_state(|s| s.fleet_mut().remove_dvd_drive("hv01", &id1, 0));
    assert!(refused.is_err(), "an IDE drive of a running VM was removed");
    assert!(
        bounded(host.remove_path(iso1.clone()))
            .await
            .unwrap()
            .removed
    );
    // Off, the IDE drive goes.
    bounded(host.power(gen1, PowerAction::TurnOff))
        .await
        .unwrap();
    let id1 = gen1.to_string();
    assert!(
        sim.with_state(|s| s.fleet_mut().remove_dvd_drive("hv01", &id1, 0))
            .is_ok()
    );
    // No drive holds it any more: nothing to do.
    let removed = bounded(host.remove_dvd_drive(gen1, iso1.clone()))
        .await
        .unwrap();
    assert_eq!(removed.ejected, 0);

    // Host KVP items by prefix: every hlvmm.* item, nothing else.
    bounded(host.kvp_write_host(
        gen2,
        vec![
            ("hlvmm.meta.version".to_owned(), "1".to_owned()),
            ("hlvmm.data.x".to_owned(), "y".to_owned()),
            ("other.key".to_owned(), "z".to_owned()),
        ],
    ))
    .await
    .unwrap();
    let reply = bounded(aetherv_hyperv::ops::HyperVHost::call(
        &host,
        aetherv_hyperv::ops::HostCall::KvpRemoveHostPrefix(gen2, "hlvmm.".to_owned()),
    ))
    .await
    .unwrap();
    let aetherv_hyperv::ops::HostReply::KvpRemoved(mut keys) = reply else {
        panic!("{reply:?}")
    };
    keys.sort();
    assert_eq!(keys, ["hlvmm.data.x", "hlvmm.meta.version"]);
    let pool = h.vm(&gen2.to_string()).unwrap().kvp.host_to_guest;
    assert_eq!(pool.keys().collect::<Vec<_>>(), ["other.key"]);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_state_file_and_cluster_node_drain() {
    use aetherv_hyperv::ops::{
        ClusterNodeAction, HostMaintenance, HostState, MaintenanceChange, VmDisposition, VmOrigin,
    };
    let sim = fleet(3, 0, 1).await;
    let hv01 = ops(&sim, "hv01");
    // Two running cluster roles on hv01.
    let roles: Vec<VmId> = (0..2)
        .map(|i| {
            let h = sim.host("hv01").unwrap();
            let image = h.host().unwrap().images[0].name.clone();
            let mut spec = NewVm::new(format!("role{i}"), image);
            spec.memory_startup_bytes = 1 << 30;
            spec.clustered = true;
            let id = h.create_vm(&spec).unwrap();
            h.power(&id.to_string(), PowerAction::Start).unwrap();
            VmId(id)
        })
        .collect();
    let facts = bounded(hv01.facts()).await.unwrap();
    assert_eq!(facts.maintenance, None);
    assert_eq!(facts.cluster_node_state.as_deref(), Some("Up"));

    // Pause with drain: the cluster moves both roles, and the file is on the host.
    let record = HostMaintenance {
        state: HostState::Maintenance,
        reason: Some("patching".to_owned()),
        vms: vec![VmOrigin {
            vm_id: roles[0],
            vm_name: "role0".to_owned(),
            disposition: VmDisposition::MovedByCluster,
            moved_to: None,
            reason: None,
        }],
        ..HostMaintenance::default()
    };
    let set = bounded(hv01.set_maintenance(MaintenanceChange {
        record: record.clone(),
        cluster_node: ClusterNodeAction::SuspendDrain,
    }))
    .await
    .unwrap();
    assert_eq!(set.cluster_node_state.as_deref(), Some("Paused"));
    assert_eq!(set.drain_status.as_deref(), Some("Completed"));
    assert_eq!(set.record.as_ref(), Some(&record));
    for id in &roles {
        assert!(
            sim.host("hv01").unwrap().vm(&id.to_string()).is_err(),
            "{id} stayed"
        );
    }
    let facts = bounded(hv01.facts()).await.unwrap();
    assert_eq!(facts.maintenance.as_ref(), Some(&record));
    assert_eq!(facts.cluster_node_state.as_deref(), Some("Paused"));

    // A paused node accepts no role.
    let (now_on, id) = ["hv02", "hv03"]
        .iter()
        .find_map(|h| {
            sim.host(h)
                .unwrap()
                .vm(&roles[0].to_string())
                .ok()
                .map(|_| (h.to_string(), roles[0]))
        })
        .unwrap();
    let check = bounded(ops(&sim, &now_on).compare_vm(
        id,
        MigrationTarget {
            destination_host: "hv01".to_owned(),
            with_storage: false,
            destination_path: None,
            storage_only: false,
        },
    ))
    .await
    .unwrap();
    assert!(!check.compatible, "{check:?}");

    // Resume with failback brings the roles home, and
    // an active record without VMs removes the file.
    let set = bounded(hv01.set_maintenance(MaintenanceChange {
        record: HostMaintenance::default(),
        cluster_node: ClusterNodeAction::ResumeFailback,
    }))
    .await
    .unwrap();
    assert_eq!(set.cluster_node_state.as_deref(), Some("Up"));
    assert_eq!(set.record, None);
    for id in &roles {
        assert!(
            sim.host("hv01").unwrap().vm(&id.to_string()).is_ok(),
            "{id} not back"
        );
    }
    assert_eq!(bounded(hv01.facts()).await.unwrap().maintenance, None);
    sim.shutdown().await;
}
