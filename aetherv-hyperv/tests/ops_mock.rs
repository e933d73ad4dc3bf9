//! Every typed operation against a mocked PowerShell executor: the script name and request
//! JSON sent, the typed result parsed, and script failures mapped to typed errors.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use aetherv_hyperv::Error;
use aetherv_hyperv::OsFamily;
use aetherv_hyperv::executor::{MockPowerShellExecutor, ScriptOutput};
use aetherv_hyperv::ops::{
    BootSettings, ClusterMigrationType, ClusterMove, CopyImageRequest, CopyIsoRequest,
    DynamicMemory, HyperVHostExt, MigrationTarget, PowerAction, RegisterVmSpec, SecureBootTemplate,
    VmId, VmState, WinRmHyperVHost, power_checked, scripts,
};
use aetherv_hyperv::protocol::{RESULT_BEGIN, RESULT_END, ScriptResult};
use serde_json::{Value, json};

const ID: &str = "4a6f3c2e-1b7d-4e0f-9a51-3c2d8e7f6a10";

fn id() -> VmId {
    ID.parse().unwrap()
}

fn vm_json(state: u32) -> Value {
    json!({
        "id": ID, "name": "web-01", "state": state, "state_name": "x", "generation": 2,
        "version": "10.0", "path": r"C:\VMs\web-01", "processor_count": 2,
        "memory_startup_bytes": 4294967296u64, "memory_assigned_bytes": 0,
        "memory_minimum_bytes": 4294967296u64, "memory_maximum_bytes": 4294967296u64,
        "dynamic_memory": false, "uptime_seconds": 0, "creation_time": "2025-06-01T00:00:00Z",
        "notes": "aetherv-job:1", "clustered": false,
        "disks": [{"path": r"C:\VMs\web-01\Virtual Hard Disks\web-01.vhdx", "controller_type": "SCSI",
                   "controller_number": 0, "controller_location": 0, "disk_type": "Dynamic",
                   "max_size_bytes": 1, "file_size_bytes": 1}],
        "dvd_drives": [], "network_adapters": [], "integration_services": []
    })
}

fn output(result: &ScriptResult) -> ScriptOutput {
    ScriptOutput {
        stdout: result.render(),
        stderr: String::new(),
        exit_code: if result.ok { 0 } else { 1 },
    }
}

/// The raw document text (for failures with `error.details`, which `ScriptResult` drops).
fn raw_output(document: &Value) -> ScriptOutput {
    ScriptOutput {
        stdout: format!("{RESULT_BEGIN}\r\n{document}\r\n{RESULT_END}\r\n"),
        stderr: String::new(),
        exit_code: 1,
    }
}

/// A host whose executor expects exactly one run of `script` with `request` and answers
/// `answer`.
fn host_expecting(
    script: &'static str,
    request: Value,
    answer: ScriptOutput,
) -> WinRmHyperVHost<MockPowerShellExecutor> {
    let mut executor = MockPowerShellExecutor::new();
    executor.expect_host().return_const("hv01".to_owned());
    executor
        .expect_install_directory()
        .return_const(r"C:\ProgramData\Aetherv\scripts".to_owned());
    executor
        .expect_run_script()
        .withf(move |name, stdin| {
            let sent: Value = serde_json::from_slice(stdin).expect("request is JSON");
            assert_eq!(name, script);
            assert_eq!(sent, request, "request sent to {script}");
            true
        })
        .times(1)
        .returning(move |_, _| Ok(answer.clone()));
    WinRmHyperVHost::new(executor)
}

/// A host whose executor must not be called.
fn host_without_calls() -> WinRmHyperVHost<MockPowerShellExecutor> {
    let mut executor = MockPowerShellExecutor::new();
    executor.expect_host().return_const("hv01".to_owned());
    executor.expect_run_script().times(0);
    WinRmHyperVHost::new(executor)
}

fn ok(data: Value) -> ScriptOutput {
    output(&ScriptResult::success(data))
}

fn failure(code: &str, message: &str, details: Value) -> ScriptOutput {
    raw_output(
        &json!({"ok": false, "error": {"code": code, "message": message, "details": details}}),
    )
}

#[tokio::test]
async fn facts() {
    let host = host_expecting(
        scripts::GET_HOST_FACTS,
        json!({}),
        ok(json!({
            "name": "HV01", "fqdn": "hv01.lab", "cluster": null, "logical_processors": 8,
            "memory_total_bytes": 100, "memory_available_bytes": 50, "vm_path": r"C:\VMs",
            "storage": {"path": "C:", "capacity_bytes": 10, "free_bytes": 5},
            "switches": [{"name": "External", "switch_type": 2}],
            "images": [], "provisioning_isos": [], "scripts_version": "1.2.3"
        })),
    );
    let facts = host.facts().await.unwrap();
    assert_eq!(facts.name, "HV01");
    assert_eq!(facts.storage.len(), 1);
    assert_eq!(facts.switches[0].switch_type, "External");
    assert_eq!(facts.scripts_version.as_deref(), Some("1.2.3"));
}

#[tokio::test]
async fn inventory_is_one_call() {
    let mut second = vm_json(3);
    second["id"] = json!("9e0b7d42-55aa-4c6e-8f3b-2a1d0c9e8b77");
    let host = host_expecting(
        scripts::GET_INVENTORY,
        json!({}),
        ok(
            json!({"host": "HV01", "collected_at": "/Date(1748736000000)/", "vms": [vm_json(2), second]}),
        ),
    );
    let inventory = host.inventory().await.unwrap();
    assert_eq!(inventory.vms.len(), 2);
    assert_eq!(inventory.vms[0].state, VmState::Running);
    assert_eq!(inventory.vms[1].state, VmState::Off);
    assert_eq!(inventory.collected_at.to_string(), "2025-06-01T00:00:00Z");
}

#[tokio::test]
async fn vm_by_id_and_unknown_vm() {
    let host = host_expecting(
        scripts::GET_INVENTORY,
        json!({"ids": [ID]}),
        ok(json!({"host": "HV01", "collected_at": "2025-06-01T00:00:00Z", "vms": vm_json(9)})),
    );
    let vm = host.vm(id()).await.unwrap();
    assert_eq!(vm.state, VmState::Paused);
    assert_eq!(vm.disks.len(), 1);

    let host = host_expecting(
        scripts::GET_INVENTORY,
        json!({"ids": [ID]}),
        failure("VmNotFound", "no VM", json!({"vm": ID})),
    );
    match host.vm(id()).await.unwrap_err() {
        Error::UnknownVm { host, vm } => {
            assert_eq!(host, "hv01");
            assert_eq!(vm, ID);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn power_actions_send_their_wire_names() {
    for (action, wire) in [
        (PowerAction::Start, "start"),
        (PowerAction::Shutdown, "shutdown"),
        (PowerAction::TurnOff, "turn_off"),
        (PowerAction::Restart, "restart"),
        (PowerAction::Save, "save"),
        (PowerAction::Pause, "pause"),
        (PowerAction::Resume, "resume"),
    ] {
        assert_eq!(action.as_str(), wire);
        let host = host_expecting(
            scripts::SET_VM_POWER_STATE,
            json!({"id": ID, "action": wire}),
            ok(
                json!({"id": ID, "name": "web-01", "previous_state": 3, "previous_state_name": "Off",
                      "state": 2, "state_name": "Running"}),
            ),
        );
        let outcome = host.power(id(), action).await.unwrap();
        assert_eq!(outcome.previous_state, VmState::Off);
        assert_eq!(outcome.state, VmState::Running);
    }
}

#[tokio::test]
async fn power_refusals() {
    // The script's refusal maps to InvalidVmState with the verb.
    let host = host_expecting(
        scripts::SET_VM_POWER_STATE,
        json!({"id": ID, "action": "pause"}),
        failure(
            "InvalidVmState",
            "VM web-01 is Off; cannot pause",
            json!({"vm": "web-01", "state": 3, "state_name": "Off"}),
        ),
    );
    let err = host.power(id(), PowerAction::Pause).await.unwrap_err();
    match &err {
        Error::InvalidVmState {
            host,
            vm,
            state,
            operation,
        } => {
            assert_eq!(
                (host.as_str(), vm.as_str(), state.as_str()),
                ("hv01", "web-01", "Off")
            );
            assert_eq!(*operation, "pause");
        }
        other => panic!("unexpected {other:?}"),
    }

    // With a known state the table refuses before anything is sent.
    let host = host_without_calls();
    let vm: aetherv_hyperv::ops::Vm = serde_json::from_value(vm_json(3)).unwrap();
    for action in [
        PowerAction::Shutdown,
        PowerAction::Restart,
        PowerAction::Save,
        PowerAction::Pause,
        PowerAction::Resume,
        PowerAction::TurnOff,
    ] {
        let err = power_checked(&host, &vm, action).await.unwrap_err();
        assert!(
            matches!(err, Error::InvalidVmState { .. }),
            "{action:?}: {err}"
        );
    }

    // Memory shortage carries the numbers.
    let host = host_expecting(
        scripts::SET_VM_POWER_STATE,
        json!({"id": ID, "action": "start"}),
        failure(
            "InsufficientMemory",
            "not enough memory",
            json!({"vm": ID, "required_bytes": 8, "available_bytes": 4}),
        ),
    );
    match host.power(id(), PowerAction::Start).await.unwrap_err() {
        Error::InsufficientMemory {
            required,
            available,
            ..
        } => assert_eq!((required, available), (8, 4)),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn power_table() {
    use PowerAction as A;
    use VmState as S;
    let table = [
        (A::Start, vec![S::Off, S::Saved]),
        (A::Shutdown, vec![S::Running]),
        (A::Restart, vec![S::Running]),
        (A::Pause, vec![S::Running]),
        (A::Save, vec![S::Running, S::Paused]),
        (A::Resume, vec![S::Paused]),
        (
            A::TurnOff,
            vec![S::Running, S::Paused, S::Saved, S::Starting, S::Saving],
        ),
    ];
    let states = [
        S::Running,
        S::Off,
        S::Saved,
        S::Paused,
        S::Starting,
        S::Saving,
    ];
    for (action, allowed) in table {
        for state in states {
            assert_eq!(
                action.allowed_from(state),
                allowed.contains(&state),
                "{action:?} from {state:?}"
            );
        }
    }
}

#[tokio::test]
async fn delete_vm_and_shared_disks() {
    let host = host_expecting(
        scripts::REMOVE_MANAGED_VM,
        json!({"id": ID, "delete_disks": true}),
        ok(
            json!({"id": ID, "name": "web-01", "removed_paths": r"C:\VMs\web-01\d.vhdx", "kept_paths": []}),
        ),
    );
    let deleted = host.delete_vm(id(), true).await.unwrap();
    assert_eq!(deleted.removed_paths, [r"C:\VMs\web-01\d.vhdx"]);

    let host = host_expecting(
        scripts::REMOVE_MANAGED_VM,
        json!({"id": ID, "delete_disks": true}),
        failure(
            "SharedDisk",
            "shared",
            json!({"vm": ID, "path": r"C:\CSV\shared.vhds"}),
        ),
    );
    match host.delete_vm(id(), true).await.unwrap_err() {
        Error::SharedDisk { host, path, .. } => {
            assert_eq!(host, "hv01");
            assert_eq!(path, r"C:\CSV\shared.vhds");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn kvp_operations() {
    let host = host_expecting(
        scripts::GET_VM_KVP,
        json!({"id": ID}),
        ok(
            json!({"id": ID, "items": {"hlvmm.meta.guest_provisioning_public_key": "AAAA"}, "intrinsic": null}),
        ),
    );
    let kvp = host.kvp_read_guest(id()).await.unwrap();
    assert_eq!(
        kvp.items["hlvmm.meta.guest_provisioning_public_key"],
        "AAAA"
    );
    assert!(kvp.intrinsic.is_empty());

    // Written in the caller's order (the state item last), not sorted.
    let items = vec![
        ("hlvmm.meta.version".to_owned(), "1.0".to_owned()),
        (
            "hlvmm.meta.host_provisioning_system_state".to_owned(),
            "waitingforpublickey".to_owned(),
        ),
    ];
    let host = host_expecting(
        scripts::SET_VM_KVP,
        json!({"id": ID, "items": [
            {"name": "hlvmm.meta.version", "value": "1.0"},
            {"name": "hlvmm.meta.host_provisioning_system_state", "value": "waitingforpublickey"}
        ]}),
        ok(json!({"id": ID, "written": 2})),
    );
    host.kvp_write_host(id(), items.clone()).await.unwrap();

    let host = host_without_calls();
    let too_long = vec![("k".to_owned(), "v".repeat(2048))];
    let err = host.kvp_write_host(id(), too_long).await.unwrap_err();
    assert!(matches!(err, Error::InvalidRequest { .. }), "{err}");
    assert!(err.to_string().contains("hv01") && err.to_string().contains("write host KVP"));

    let host = host_expecting(
        scripts::REMOVE_VM_KVP,
        json!({"id": ID, "keys": ["a", "b"]}),
        ok(json!({"id": ID, "removed": "a"})),
    );
    let removed = host
        .kvp_remove_host(id(), vec!["a".to_owned(), "b".to_owned()])
        .await
        .unwrap();
    assert_eq!(removed, ["a"]);
}

#[tokio::test]
async fn provisioning_steps() {
    let request = CopyImageRequest {
        image_path: r"C:\CSV\Images\Ubuntu 24.04 LTS.vhdx".to_owned(),
        vm_name: "web-01".to_owned(),
        destination_root: None,
        disk_size_bytes: Some(80 << 30),
    };
    let host = host_expecting(
        scripts::COPY_GOLDEN_IMAGE,
        json!({"image_path": request.image_path, "vm_name": "web-01", "destination_root": null,
               "disk_size_bytes": 80u64 << 30}),
        ok(
            json!({"vm_folder": r"C:\VMs\web-01", "vhdx_path": r"C:\VMs\web-01\Virtual Hard Disks\web-01.vhdx", "size_bytes": 5,
                   "max_size_bytes": 80u64 << 30}),
        ),
    );
    let copied = host.copy_image(request.clone()).await.unwrap();
    assert_eq!(copied.vm_folder, r"C:\VMs\web-01");
    assert_eq!(copied.max_size_bytes, Some(80 << 30));

    let host = host_expecting(
        scripts::COPY_GOLDEN_IMAGE,
        json!({"image_path": request.image_path, "vm_name": "web-01", "destination_root": null,
               "disk_size_bytes": 80u64 << 30}),
        failure(
            "ImageNotFound",
            "no image",
            json!({"image": request.image_path}),
        ),
    );
    assert!(matches!(
        host.copy_image(request).await.unwrap_err(),
        Error::UnknownImage { .. }
    ));

    let iso = CopyIsoRequest {
        iso_path: r"C:\ProgramData\Aetherv\scripts\linux.iso".to_owned(),
        vm_folder: r"C:\VMs\web-01".to_owned(),
    };
    let host = host_expecting(
        scripts::COPY_PROVISIONING_ISO,
        serde_json::to_value(&iso).unwrap(),
        ok(json!({"iso_path": r"C:\VMs\web-01\linux.iso", "size_bytes": 3})),
    );
    assert_eq!(
        host.copy_provisioning_iso(iso).await.unwrap().iso_path,
        r"C:\VMs\web-01\linux.iso"
    );

    let spec = RegisterVmSpec {
        name: "web-01".to_owned(),
        vm_folder: r"C:\VMs\web-01".to_owned(),
        vhdx_path: r"C:\VMs\web-01\Virtual Hard Disks\web-01.vhdx".to_owned(),
        iso_path: Some(r"C:\VMs\web-01\linux.iso".to_owned()),
        processor_count: 2,
        memory_startup_bytes: 4 << 30,
        dynamic_memory: Some(DynamicMemory {
            minimum_bytes: 1 << 30,
            maximum_bytes: 8 << 30,
        }),
        switch_name: None,
        vlan_id: Some(42),
        notes: "aetherv-job:1".to_owned(),
        start: true,
        boot: Some(BootSettings::for_family(OsFamily::Linux)),
    };
    // The firmware travels as Register-ManagedVm.ps1 reads it: Hyper-V's template names.
    let host = host_expecting(
        scripts::REGISTER_MANAGED_VM,
        json!({
            "name": "web-01", "vm_folder": spec.vm_folder, "vhdx_path": spec.vhdx_path,
            "iso_path": spec.iso_path, "processor_count": 2, "memory_startup_bytes": 4u64 << 30,
            "dynamic_memory": {"minimum_bytes": 1u64 << 30, "maximum_bytes": 8u64 << 30},
            "switch_name": null, "vlan_id": 42, "notes": "aetherv-job:1", "start": true,
            "boot": {"secure_boot": true,
                     "secure_boot_template": "MicrosoftUEFICertificateAuthority", "tpm": false}
        }),
        ok(vm_json(2)),
    );
    let vm = host.register_vm(spec.clone()).await.unwrap();
    assert_eq!(vm.id, id());

    let host = host_expecting(
        scripts::REGISTER_MANAGED_VM,
        serde_json::to_value(&spec).unwrap(),
        failure("VmExists", "exists", json!({"name": "web-01"})),
    );
    assert!(matches!(
        host.register_vm(spec.clone()).await.unwrap_err(),
        Error::VmExists { .. }
    ));

    // Refused locally: bad memory, bad VLAN, bad name, relative path.
    let host = host_without_calls();
    for broken in [
        RegisterVmSpec {
            memory_startup_bytes: 1000,
            ..spec.clone()
        },
        RegisterVmSpec {
            vlan_id: Some(5000),
            ..spec.clone()
        },
        RegisterVmSpec {
            name: "a\\b".to_owned(),
            ..spec.clone()
        },
        RegisterVmSpec {
            vhdx_path: r"..\x.vhdx".to_owned(),
            ..spec.clone()
        },
    ] {
        let err = host.register_vm(broken).await.unwrap_err();
        assert!(matches!(err, Error::InvalidRequest { .. }), "{err}");
    }
}

#[test]
fn secure_boot_templates_round_trip_by_their_hyperv_names() {
    for template in SecureBootTemplate::ALL {
        let text = serde_json::to_value(template).unwrap();
        assert_eq!(text, json!(template.as_str()));
        assert_eq!(
            serde_json::from_value::<SecureBootTemplate>(text).unwrap(),
            template
        );
        assert_eq!(
            SecureBootTemplate::parse(&template.as_str().to_lowercase()),
            Some(template)
        );
    }
    assert!(serde_json::from_value::<SecureBootTemplate>(json!("Bogus")).is_err());
    // Each family boots with its own default and not with the other's.
    let windows = BootSettings::for_family(OsFamily::Windows);
    let linux = BootSettings::for_family(OsFamily::Linux);
    assert_eq!(windows, BootSettings::hyperv_default());
    assert!(windows.boots(OsFamily::Windows) && !windows.boots(OsFamily::Linux));
    assert!(linux.boots(OsFamily::Linux) && !linux.boots(OsFamily::Windows));
    let off = BootSettings {
        secure_boot: false,
        ..windows
    };
    assert!(off.boots(OsFamily::Linux) && off.boots(OsFamily::Windows));
}

#[tokio::test]
async fn cluster_roles() {
    let host = host_expecting(
        scripts::ADD_VM_CLUSTER_ROLE,
        json!({"id": ID}),
        ok(json!({"id": ID, "clustered": true, "group": "web-01"})),
    );
    assert!(host.add_cluster_role(id()).await.unwrap().clustered);
    let host = host_expecting(
        scripts::REMOVE_VM_CLUSTER_ROLE,
        json!({"id": ID}),
        ok(json!({"id": ID, "clustered": false, "group": null})),
    );
    assert!(!host.remove_cluster_role(id()).await.unwrap().clustered);
    let host = host_expecting(
        scripts::ADD_VM_CLUSTER_ROLE,
        json!({"id": ID}),
        failure(
            "NotClustered",
            "host hv01 has no failover clustering",
            json!({"vm": ID}),
        ),
    );
    match host.add_cluster_role(id()).await.unwrap_err() {
        Error::ScriptFailed {
            host,
            operation,
            code,
            ..
        } => {
            assert_eq!(host, "hv01");
            assert_eq!(operation, "add cluster role");
            assert_eq!(code, "NotClustered");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn migration() {
    let target = MigrationTarget {
        destination_host: "hv02".to_owned(),
        with_storage: true,
        destination_path: Some(r"D:\VMs\web-01".to_owned()),
        storage_only: false,
    };
    let request = json!({"id": ID, "destination_host": "hv02", "with_storage": true,
                         "destination_path": r"D:\VMs\web-01", "storage_only": false});
    let host = host_expecting(
        scripts::TEST_VM_MIGRATION,
        request.clone(),
        ok(
            json!({"compatible": false, "incompatibilities": {"message": "Could not find Ethernet switch 'Production'.", "message_id": 33012}}),
        ),
    );
    let check = host.compare_vm(id(), target.clone()).await.unwrap();
    assert!(!check.compatible);
    assert_eq!(check.incompatibilities[0].message_id, Some(33012));

    let host = host_expecting(
        scripts::MOVE_MANAGED_VM,
        request.clone(),
        ok(json!({"id": ID, "destination_host": "hv02", "with_storage": true})),
    );
    assert_eq!(
        host.move_vm(id(), target.clone())
            .await
            .unwrap()
            .destination_host,
        "hv02"
    );
    let host = host_expecting(
        scripts::MOVE_MANAGED_VM,
        request,
        failure(
            "MigrationIncompatible",
            "switch missing",
            json!({"vm": ID, "destination": "hv02"}),
        ),
    );
    match host.move_vm(id(), target.clone()).await.unwrap_err() {
        Error::MigrationIncompatible {
            destination,
            detail,
            ..
        } => {
            assert_eq!(destination, "hv02");
            assert_eq!(detail, "switch missing");
        }
        other => panic!("unexpected {other:?}"),
    }
    let host = host_without_calls();
    let bad = MigrationTarget {
        destination_host: "hv02; rm -rf".to_owned(),
        ..target
    };
    assert!(matches!(
        host.move_vm(id(), bad).await.unwrap_err(),
        Error::InvalidRequest { .. }
    ));
}

#[tokio::test]
async fn cluster_moves_and_the_migration_job() {
    let host = host_expecting(
        scripts::MOVE_VM_CLUSTER_ROLE,
        json!({"id": ID, "node": "hv02", "migration_type": "Quick"}),
        ok(json!({"id": ID, "destination_host": "hv02", "with_storage": false})),
    );
    let moved = host
        .move_cluster_role(
            id(),
            ClusterMove {
                node: "hv02".to_owned(),
                migration_type: ClusterMigrationType::Quick,
            },
        )
        .await
        .unwrap();
    assert_eq!(moved.destination_host, "hv02");

    let host = host_expecting(
        scripts::GET_VM_MIGRATION,
        json!({"id": ID}),
        ok(
            json!({"id": ID, "active": true, "percent_complete": 42, "job_state": 4,
                  "cancellable": true, "status": "Job is running", "destination_host": "hv02",
                  "error": null}),
        ),
    );
    let progress = host.migration_status(id()).await.unwrap();
    assert!(progress.active && progress.cancellable);
    assert_eq!(progress.percent_complete, 42);

    let host = host_expecting(
        scripts::STOP_VM_MIGRATION,
        json!({"id": ID}),
        ok(json!({"id": ID, "cancelled": false,
                  "reason": "the migration reached its switch-over and can no longer be cancelled"})),
    );
    let cancel = host.cancel_migration(id()).await.unwrap();
    assert!(!cancel.cancelled);
    assert!(cancel.reason.unwrap().contains("switch-over"));

    // A storage move needs a destination folder; a node must be a host name.
    let host = host_without_calls();
    let storage = MigrationTarget {
        destination_host: "hv01".to_owned(),
        with_storage: false,
        destination_path: None,
        storage_only: true,
    };
    assert!(matches!(
        host.move_vm(id(), storage).await.unwrap_err(),
        Error::InvalidRequest { .. }
    ));
    let bad = ClusterMove {
        node: "hv02 -Force".to_owned(),
        migration_type: ClusterMigrationType::Live,
    };
    assert!(matches!(
        host.move_cluster_role(id(), bad).await.unwrap_err(),
        Error::InvalidRequest { .. }
    ));
}

#[tokio::test]
async fn remove_path() {
    let host = host_expecting(
        scripts::REMOVE_VM_PATH,
        json!({"path": r"C:\VMs\web-01"}),
        ok(json!({"path": r"C:\VMs\web-01", "removed": true})),
    );
    assert!(
        host.remove_path(r"C:\VMs\web-01".to_owned())
            .await
            .unwrap()
            .removed
    );
    let host = host_without_calls();
    for bad in [r"C:\", r"C:\VMs", r"VMs\x", r"C:\VMs\..\Windows\System32"] {
        let err = host.remove_path(bad.to_owned()).await.unwrap_err();
        assert!(matches!(err, Error::InvalidRequest { .. }), "{bad}: {err}");
    }
}

#[tokio::test]
async fn malformed_output_names_host_and_operation() {
    let host = host_expecting(
        scripts::GET_INVENTORY,
        json!({}),
        ScriptOutput {
            stdout: String::new(),
            stderr:
                "The argument 'C:\\x\\Get-Inventory.ps1' to the -File parameter does not exist."
                    .to_owned(),
            exit_code: -196608,
        },
    );
    let err = host.inventory().await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::OperationOutput { .. }), "{text}");
    assert!(
        text.contains("hv01") && text.contains("inventory") && text.contains("-File"),
        "{text}"
    );

    // Data of the wrong shape.
    let host = host_expecting(scripts::GET_HOST_FACTS, json!({}), ok(json!({"name": 5})));
    let err = host.facts().await.unwrap_err();
    assert!(matches!(err, Error::OperationOutput { .. }), "{err}");
}
