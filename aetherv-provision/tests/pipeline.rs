//! The provisioning and deletion state machines driven step by step (pure: no runtime, no
//! host), then through the tokio driver against `MockHyperVHost`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aetherv_hyperv::ops::{
    ClusterRole, CopiedImage, CopiedIso, DeletedVm, DvdDriveRemoved, GuestKvp, HostFacts,
    Inventory, MockHyperVHost, PowerAction, PowerOutcome, RemovedPath, Vm, VmId, VmState,
};
use aetherv_provision::Error;
use aetherv_provision::delete::{DeleteMachine, DeleteRequest, delete};
use aetherv_provision::job::{
    Action, Artifact, CallError, CleanupOutcome, Event, HostCall, HostReply, JobEvent, JobId,
    Workflow,
};
use aetherv_provision::kvp::{GuestPublicKey, KeyFormat, KvpItem, ProvisioningPayload, keys};
use aetherv_provision::provision::{ProvisionConfig, ProvisionMachine, marker, provision, steps};
use aetherv_provision::schema::{JobRequest, Validated};
use rsa::RsaPrivateKey;
use serde_json::json;
use tokio_util::sync::CancellationToken;

const LA_PW: &str = "Adm1n-pw-never-shown";
const JOIN_PW: &str = "J0in-pw-never-shown";

fn private_key() -> &'static RsaPrivateKey {
    static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap())
}

fn windows_request() -> Validated {
    JobRequest::from_json(
        &json!({
            "schema_version": 1,
            "target_host": "hv01",
            "values": {
                "vm_name": "web-01",
                "image_name": "Windows Server 2022 Datacenter",
                "gb_ram": 8,
                "cpu_cores": 4,
                "guest_la_uid": "Administrator",
                "guest_la_pw": LA_PW,
                "guest_v4_ipaddr": "10.20.30.40",
                "guest_v4_cidrprefix": 24,
                "guest_v4_defaultgw": "10.20.30.1",
                "guest_v4_dns1": "10.20.0.53",
                "vlan_id": 120,
                "guest_domain_jointarget": "corp.example",
                "guest_domain_joinuid": "svc-join",
                "guest_domain_joinpw": JOIN_PW,
                "vm_clustered": true
            }
        })
        .to_string(),
    )
    .unwrap()
}

fn facts(available_gib: u64) -> HostFacts {
    serde_json::from_value(json!({
        "name": "hv01",
        "fqdn": "hv01.lab.example",
        "logical_processors": 16,
        "memory_total_bytes": 64u64 << 30,
        "memory_available_bytes": available_gib << 30,
        "vm_path": "C:\\VMs",
        "images": [
            {"name": "Windows Server 2022 Datacenter", "os_family": "windows",
             "path": "C:\\Images\\ws2022.vhdx", "size_bytes": 1000},
            {"name": "Ubuntu 24.04 LTS", "os_family": "linux",
             "path": "C:\\Images\\ubuntu.vhdx", "size_bytes": 1000}
        ],
        "provisioning_isos": [
            {"os_family": "windows", "path": "C:\\ISO\\win.iso", "size_bytes": 10, "version": "1.0.0"},
            {"os_family": "linux", "path": "C:\\ISO\\linux.iso", "size_bytes": 10, "version": "1.0.0"}
        ]
    }))
    .unwrap()
}

fn vm_id() -> VmId {
    VmId(uuid::Uuid::from_u128(0x1234))
}

fn vm(name: &str, state: u32, notes: &str, clustered: bool) -> Vm {
    serde_json::from_value(json!({
        "id": vm_id(),
        "name": name,
        "state": state,
        "processor_count": 4,
        "memory_startup_bytes": 8u64 << 30,
        "notes": notes,
        "clustered": clustered
    }))
    .unwrap()
}

fn inventory(vms: Vec<Vm>) -> Inventory {
    serde_json::from_value(json!({
        "host": "hv01",
        "collected_at": "2026-01-01T00:00:00Z",
        "vms": vms
    }))
    .unwrap()
}

fn copied() -> CopiedImage {
    CopiedImage {
        vm_folder: "C:\\VMs\\web-01".to_owned(),
        vhdx_path: "C:\\VMs\\web-01\\Virtual Hard Disks\\web-01.vhdx".to_owned(),
        size_bytes: 1000,
        max_size_bytes: None,
    }
}

fn iso() -> CopiedIso {
    CopiedIso {
        iso_path: "C:\\VMs\\web-01\\provisioning.iso".to_owned(),
        size_bytes: 10,
    }
}

fn guest(items: &[(&str, &str)]) -> GuestKvp {
    GuestKvp {
        items: items
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        intrinsic: Default::default(),
    }
}

fn guest_key_items(format: KeyFormat) -> GuestKvp {
    let public = GuestPublicKey::encode(&private_key().to_public_key(), format).unwrap();
    guest(&[
        (keys::GUEST_PUBLIC_KEY, &public),
        (keys::GUEST_STATE, "waitingforaeskey"),
    ])
}

fn config() -> ProvisionConfig {
    ProvisionConfig {
        poll_interval: Duration::from_millis(10),
        key_timeout: Duration::from_secs(5),
        apply_timeout: Duration::from_secs(5),
        ..ProvisionConfig::default()
    }
}

fn ok(reply: HostReply) -> Event {
    Event::Reply(Ok(reply))
}

fn call(action: &Action) -> &HostCall {
    match action {
        Action::CallHost(step) => &step.call,
        Action::Compensate(comp) => &comp.call,
        other => panic!("expected a host call, got {other:?}"),
    }
}

fn step_of(action: &Action) -> &'static str {
    match action {
        Action::CallHost(step) => step.step,
        other => panic!("expected a step call, got {other:?}"),
    }
}

/// Drives a machine through pre-checks, copies and registration; returns it waiting for the
/// answer to the handshake write.
fn to_registered(m: &mut ProvisionMachine) {
    let a = m.handle(Event::Start, Duration::ZERO);
    assert_eq!(call(&a), &HostCall::Facts);
    assert_eq!(step_of(&a), steps::PRE_CHECKS);
    let a = m.handle(ok(HostReply::Facts(Box::new(facts(48)))), Duration::ZERO);
    assert_eq!(call(&a), &HostCall::Inventory);
    let a = m.handle(ok(HostReply::Inventory(inventory(vec![]))), Duration::ZERO);
    match call(&a) {
        HostCall::CopyImage(r) => {
            assert_eq!(r.image_path, "C:\\Images\\ws2022.vhdx");
            assert_eq!(r.vm_name, "web-01");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(step_of(&a), steps::COPY_IMAGE);
    let a = m.handle(ok(HostReply::CopiedImage(copied())), Duration::ZERO);
    match call(&a) {
        HostCall::CopyIso(r) => {
            assert_eq!(r.iso_path, "C:\\ISO\\win.iso");
            assert_eq!(r.vm_folder, "C:\\VMs\\web-01");
        }
        other => panic!("{other:?}"),
    }
    let a = m.handle(ok(HostReply::CopiedIso(iso())), Duration::ZERO);
    match call(&a) {
        HostCall::RegisterVm(spec) => {
            assert_eq!(spec.name, "web-01");
            assert_eq!(spec.notes, marker(&JobId::from("job-1")));
            assert_eq!(spec.memory_startup_bytes, 8 << 30);
            assert_eq!(spec.processor_count, 4);
            assert_eq!(spec.vlan_id, Some(120));
            assert_eq!(spec.iso_path.as_deref(), Some(iso().iso_path.as_str()));
            assert!(spec.start);
            // A Windows guest: Secure Boot with the MicrosoftWindows template, set explicitly.
            let boot = spec.boot.expect("firmware settings are always sent");
            assert!(boot.secure_boot && !boot.tpm);
            assert_eq!(
                boot.secure_boot_template,
                aetherv_hyperv::ops::SecureBootTemplate::MicrosoftWindows
            );
        }
        other => panic!("{other:?}"),
    }
    let a = m.handle(
        ok(HostReply::Registered(Box::new(vm("web-01", 2, "", false)))),
        Duration::ZERO,
    );
    match call(&a) {
        HostCall::KvpWriteHost(id, items) => {
            assert_eq!(*id, vm_id());
            assert_eq!(
                items,
                &vec![
                    (keys::VERSION.to_owned(), "1.0.0".to_owned()),
                    (
                        keys::HOST_STATE.to_owned(),
                        "waitingforpublickey".to_owned()
                    ),
                ]
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(step_of(&a), steps::WAIT_FOR_KEY);
}

fn no_secrets(events: &[JobEvent]) {
    let text = format!("{events:?}");
    assert!(!text.contains(LA_PW) && !text.contains(JOIN_PW), "{text}");
}

#[test]
fn a_windows_job_step_by_step() {
    let mut m = ProvisionMachine::new(JobId::from("job-1"), &windows_request(), config());
    to_registered(&mut m);
    let t = Duration::from_millis(100);
    let a = m.handle(ok(HostReply::Written), t);
    assert_eq!(call(&a), &HostCall::KvpReadGuest(vm_id()));
    // Nothing yet: wait the poll interval, then poll again.
    let a = m.handle(ok(HostReply::GuestKvp(guest(&[]))), t);
    assert_eq!(a, Action::Wait(Duration::from_millis(10)));
    let a = m.handle(Event::WaitElapsed, t);
    assert_eq!(call(&a), &HostCall::KvpReadGuest(vm_id()));
    let a = m.handle(
        ok(HostReply::GuestKvp(guest_key_items(
            KeyFormat::CapiPublicKeyBlob,
        ))),
        t,
    );
    assert_eq!(step_of(&a), steps::PUBLISH);
    let HostCall::KvpWriteHost(_, items) = call(&a).clone() else {
        panic!("{a:?}")
    };
    assert_eq!(items[0].0, keys::SHARED_AES_KEY);
    assert_eq!(
        items.last().unwrap(),
        &(
            keys::HOST_STATE.to_owned(),
            "provisioningdatapublished".to_owned()
        )
    );
    assert_eq!(items[items.len() - 2].0, keys::CHECKSUM);
    let text = format!("{items:?}");
    assert!(!text.contains(LA_PW) && !text.contains(JOIN_PW));
    // The guest's half decrypts what was published.
    let kvp: Vec<KvpItem> = items.iter().map(|(k, v)| KvpItem::new(k, v)).collect();
    let guest_key =
        aetherv_provision::kvp::guest::GuestKey::from_rsa(private_key().clone()).unwrap();
    let plain = ProvisioningPayload::decrypt(&kvp, &guest_key, &mut rand::rngs::OsRng).unwrap();
    assert_eq!(plain["guest_la_pw"].expose(), LA_PW);
    assert_eq!(plain["guest_domain_join_pw"].expose(), JOIN_PW);
    assert_eq!(plain["guest_v4_ip_addr"].expose(), "10.20.30.40");
    assert_eq!(plain["guest_host_name"].expose(), "web-01");

    let a = m.handle(ok(HostReply::Written), t);
    assert_eq!(step_of(&a), steps::WAIT_FOR_GUEST);
    let a = m.handle(
        ok(HostReply::GuestKvp(guest(&[(
            keys::GUEST_STATE,
            "applying",
        )]))),
        t,
    );
    assert!(matches!(a, Action::Wait(_)));
    let a = m.handle(Event::WaitElapsed, t);
    let a2 = m.handle(
        ok(HostReply::GuestKvp(guest(&[(
            keys::GUEST_STATE,
            "provisioningapplied",
        )]))),
        t,
    );
    assert_eq!(call(&a), &HostCall::KvpReadGuest(vm_id()));
    // Once applied: every host-written hlvmm.* item, then the DVD drive, then the ISO copy.
    assert_eq!(
        call(&a2),
        &HostCall::KvpRemoveHostPrefix(vm_id(), "hlvmm.".to_owned())
    );
    assert_eq!(step_of(&a2), steps::REMOVE_KEYS);
    let a = m.handle(
        ok(HostReply::KvpRemoved(vec![
            keys::VERSION.to_owned(),
            keys::HOST_STATE.to_owned(),
            keys::SHARED_AES_KEY.to_owned(),
        ])),
        t,
    );
    assert_eq!(
        call(&a),
        &HostCall::RemoveDvdDrive {
            vm: vm_id(),
            path: iso().iso_path
        }
    );
    assert_eq!(step_of(&a), steps::REMOVE_DVD);
    let a = m.handle(
        ok(HostReply::DvdDriveRemoved(DvdDriveRemoved {
            id: vm_id(),
            path: iso().iso_path,
            ejected: 1,
            removed: 1,
            kept: vec![],
        })),
        t,
    );
    assert_eq!(call(&a), &HostCall::RemovePath(iso().iso_path));
    assert_eq!(step_of(&a), steps::REMOVE_ISO);
    let a = m.handle(
        ok(HostReply::RemovedPath(RemovedPath {
            path: iso().iso_path,
            removed: true,
        })),
        t,
    );
    assert_eq!(call(&a), &HostCall::AddClusterRole(vm_id()));
    let a = m.handle(
        ok(HostReply::ClusterRole(ClusterRole {
            id: vm_id(),
            clustered: true,
            group: Some("web-01".to_owned()),
        })),
        t,
    );
    // The last step: the job marker becomes the provisioned marker.
    let job = aetherv_provision::job::JobId("job-1".to_owned());
    assert_eq!(
        call(&a),
        &HostCall::SetVmNotes(
            vm_id(),
            aetherv_provision::provision::provisioned_marker(&job)
        )
    );
    assert_eq!(step_of(&a), steps::MARK_PROVISIONED);
    let done = m.handle(
        ok(HostReply::NotesSet(aetherv_hyperv::ops::VmNotes {
            id: vm_id(),
            notes: aetherv_provision::provision::provisioned_marker(&job),
        })),
        t,
    );
    assert_eq!(done, Action::Done);
    let events = m.drain();
    no_secrets(&events);
    let percents: Vec<u8> = events
        .iter()
        .filter_map(|e| match e {
            JobEvent::Progress { progress, .. } => Some(progress.percent),
            _ => None,
        })
        .collect();
    assert!(percents.windows(2).all(|w| w[0] <= w[1]), "{percents:?}");
    assert_eq!(percents.last(), Some(&100));
    let text = format!("{events:?}");
    assert!(
        text.contains("removed host KVP item hlvmm.meta.version"),
        "{text}"
    );
    assert!(text.contains("removed DVD drive of VM"), "{text}");
    assert!(text.contains("removed ISO copy C:"), "{text}");
    let done = m.finish().unwrap();
    assert_eq!(done.vm_id, vm_id());
    assert!(done.clustered);
    assert_eq!(done.vm_folder, "C:\\VMs\\web-01");
    assert!(done.cleanup.is_clean(), "{}", done.cleanup);
    assert_eq!(done.cleanup.removed().count(), 3, "{}", done.cleanup);
}

/// Feeds compensation replies; returns the calls made in order.
fn compensate(
    m: &mut ProvisionMachine,
    mut a: Action,
    replies: &mut dyn FnMut(&HostCall) -> Event,
) -> Vec<HostCall> {
    let mut calls = Vec::new();
    while let Action::Compensate(comp) = &a {
        calls.push(comp.call.clone());
        let reply = replies(&comp.call);
        a = m.handle(reply, Duration::from_secs(1));
        assert!(calls.len() < 20, "compensation does not end");
    }
    assert_eq!(a, Action::Done);
    calls
}

fn host_ok(call: &HostCall) -> Event {
    ok(match call {
        HostCall::Power(id, _) => HostReply::Power(PowerOutcome {
            id: *id,
            name: "web-01".to_owned(),
            previous_state: VmState::Running,
            state: VmState::Off,
        }),
        HostCall::DeleteVm { id, .. } => HostReply::Deleted(DeletedVm {
            id: *id,
            name: "web-01".to_owned(),
            removed_paths: vec![copied().vhdx_path],
            kept_paths: vec![],
        }),
        HostCall::RemovePath(path) => HostReply::RemovedPath(RemovedPath {
            path: path.clone(),
            removed: !path.ends_with(".vhdx"),
        }),
        HostCall::RemoveClusterRole(id) => HostReply::ClusterRole(ClusterRole {
            id: *id,
            clustered: false,
            group: None,
        }),
        HostCall::Inventory => {
            HostReply::Inventory(inventory(vec![vm("web-01", 2, "aetherv-job:job-1", false)]))
        }
        other => panic!("unexpected compensation call {other:?}"),
    })
}

#[test]
fn a_guest_failure_removes_everything_in_reverse() {
    let mut m = ProvisionMachine::new(JobId::from("job-1"), &windows_request(), config());
    to_registered(&mut m);
    let t = Duration::from_millis(100);
    m.handle(ok(HostReply::Written), t);
    let a = m.handle(
        ok(HostReply::GuestKvp(guest(&[
            (keys::GUEST_STATE, "provisioningfailed"),
            (keys::GUEST_ERROR, "checksum mismatch"),
        ]))),
        t,
    );
    let calls = compensate(&mut m, a, &mut host_ok);
    assert_eq!(
        calls,
        vec![
            HostCall::Power(vm_id(), PowerAction::TurnOff),
            HostCall::DeleteVm {
                id: vm_id(),
                delete_disks: true
            },
            HostCall::RemovePath(iso().iso_path),
            HostCall::RemovePath(copied().vhdx_path),
            HostCall::RemovePath(copied().vm_folder),
        ]
    );
    no_secrets(&m.drain());
    match m.finish().unwrap_err() {
        Error::ProvisionFailed {
            step,
            cause,
            cleanup,
            ..
        } => {
            assert_eq!(step, steps::WAIT_FOR_KEY);
            assert!(
                matches!(&*cause, Error::GuestFailed { reason, .. } if reason == "checksum mismatch")
            );
            assert!(cleanup.is_clean());
            assert_eq!(cleanup.removed().count(), 3, "{cleanup}");
            let vhdx = &cleanup.entries[2];
            assert_eq!(vhdx.outcome, CleanupOutcome::AlreadyGone);
        }
        other => panic!("{other}"),
    }
}

#[test]
fn an_unknown_registration_outcome_is_found_by_its_marker() {
    let mut m = ProvisionMachine::new(JobId::from("job-1"), &windows_request(), config());
    m.handle(Event::Start, Duration::ZERO);
    m.handle(ok(HostReply::Facts(Box::new(facts(48)))), Duration::ZERO);
    m.handle(ok(HostReply::Inventory(inventory(vec![]))), Duration::ZERO);
    m.handle(ok(HostReply::CopiedImage(copied())), Duration::ZERO);
    let a = m.handle(ok(HostReply::CopiedIso(iso())), Duration::ZERO);
    assert_eq!(step_of(&a), steps::REGISTER_VM);
    let a = m.handle(
        Event::Reply(Err(CallError::TimedOut(Duration::from_secs(120)))),
        Duration::from_secs(120),
    );
    let calls = compensate(&mut m, a, &mut host_ok);
    assert_eq!(calls[0], HostCall::Inventory);
    assert_eq!(calls[1], HostCall::Power(vm_id(), PowerAction::TurnOff));
    assert_eq!(
        calls[2],
        HostCall::DeleteVm {
            id: vm_id(),
            delete_disks: true
        }
    );
    assert_eq!(calls.len(), 6);
    let err = m.finish().unwrap_err();
    assert!(
        matches!(&err, Error::ProvisionFailed { cause, .. } if matches!(**cause, Error::StepTimeout { .. })),
        "{err}"
    );
}

#[test]
fn cleanup_failures_are_reported_loudly() {
    let mut m = ProvisionMachine::new(JobId::from("job-1"), &windows_request(), config());
    to_registered(&mut m);
    let a = m.handle(Event::Cancel, Duration::from_secs(1));
    let calls = compensate(&mut m, a, &mut |call| match call {
        HostCall::DeleteVm { .. } => Event::Reply(Err(CallError::TimedOut(Duration::from_secs(1)))),
        other => host_ok(other),
    });
    assert_eq!(calls.len(), 5);
    let err = m.finish().unwrap_err();
    let text = err.to_string();
    match &err {
        Error::Cancelled { step, cleanup, .. } => {
            assert_eq!(*step, steps::WAIT_FOR_KEY);
            let left: Vec<_> = cleanup.left_behind().collect();
            assert_eq!(left.len(), 1, "{cleanup}");
            assert!(matches!(left[0].0, Artifact::Vm { .. }));
        }
        other => panic!("{other}"),
    }
    assert!(text.contains("LEFT BEHIND"), "{text}");
}

#[test]
fn pre_checks_refuse_before_anything_is_created() {
    let cases: Vec<(&str, HostFacts, Option<Inventory>)> = vec![
        ("enough memory", facts(4), None),
        (
            "name free",
            facts(48),
            Some(inventory(vec![vm("WEB-01", 3, "", false)])),
        ),
        (
            "image exists",
            {
                let mut f = facts(48);
                f.images.clear();
                f
            },
            None,
        ),
        (
            "provisioning iso",
            {
                let mut f = facts(48);
                f.provisioning_isos.retain(|i| i.os_family == "linux");
                f
            },
            None,
        ),
    ];
    for (check, facts, inv) in cases {
        let mut m = ProvisionMachine::new(JobId::from("job-1"), &windows_request(), config());
        m.handle(Event::Start, Duration::ZERO);
        let mut a = m.handle(ok(HostReply::Facts(Box::new(facts))), Duration::ZERO);
        if let Some(inv) = inv {
            a = m.handle(ok(HostReply::Inventory(inv)), Duration::ZERO);
        }
        assert_eq!(a, Action::Done, "{check}");
        match m.finish().unwrap_err() {
            Error::ProvisionFailed { cause, cleanup, .. } => {
                assert!(
                    matches!(&*cause, Error::PreCheck { check: c, .. } if *c == check),
                    "{cause}"
                );
                assert!(cleanup.entries.is_empty());
            }
            other => panic!("{other}"),
        }
    }
}

#[test]
fn the_key_wait_times_out() {
    let mut m = ProvisionMachine::new(JobId::from("job-1"), &windows_request(), config());
    to_registered(&mut m);
    m.handle(ok(HostReply::Written), Duration::from_secs(1));
    let a = m.handle(ok(HostReply::GuestKvp(guest(&[]))), Duration::from_secs(7));
    assert!(matches!(a, Action::Compensate(_)));
    compensate(&mut m, a, &mut host_ok);
    let err = m.finish().unwrap_err();
    assert!(
        matches!(&err, Error::ProvisionFailed { cause, .. } if matches!(**cause, Error::GuestTimeout { .. })),
        "{err}"
    );
}

#[test]
fn deletion_refuses_a_running_vm_unless_forced() {
    let mut m = DeleteMachine::new("hv01", DeleteRequest::new(vm_id()));
    let a = m.handle(Event::Start, Duration::ZERO);
    assert_eq!(call(&a), &HostCall::Vm(vm_id()));
    let a = m.handle(
        ok(HostReply::Vm(Box::new(vm("web-01", 2, "", true)))),
        Duration::ZERO,
    );
    assert_eq!(a, Action::Done);
    let err = m.finish().unwrap_err();
    assert!(err.to_string().contains("is Running"), "{err}");

    let request = DeleteRequest {
        force: true,
        delete_disks: true,
        ..DeleteRequest::new(vm_id())
    };
    let mut m = DeleteMachine::new("hv01", request);
    m.handle(Event::Start, Duration::ZERO);
    let a = m.handle(
        ok(HostReply::Vm(Box::new(vm("web-01", 2, "", true)))),
        Duration::ZERO,
    );
    assert_eq!(call(&a), &HostCall::Power(vm_id(), PowerAction::TurnOff));
    let a = m.handle(host_ok(call(&a)), Duration::ZERO);
    assert_eq!(call(&a), &HostCall::RemoveClusterRole(vm_id()));
    let a = m.handle(host_ok(call(&a)), Duration::ZERO);
    assert_eq!(
        call(&a),
        &HostCall::DeleteVm {
            id: vm_id(),
            delete_disks: true
        }
    );
    let a = m.handle(host_ok(call(&a)), Duration::ZERO);
    assert_eq!(call(&a), &HostCall::Inventory);
    let a = m.handle(ok(HostReply::Inventory(inventory(vec![]))), Duration::ZERO);
    assert_eq!(a, Action::Done);
    let deleted = m.finish().unwrap();
    assert!(deleted.stopped && deleted.cluster_role_removed);
    assert_eq!(deleted.removed_paths.len(), 1);
}

// ---- through the driver, against the mock host ----

/// Expects calls of one operation (`kind`) on `host`.
macro_rules! on {
    ($host:expr, $pattern:pat) => {
        $host.expect_call().withf(|c| matches!(c, $pattern))
    };
}

fn mock_success() -> MockHyperVHost {
    let mut host = MockHyperVHost::new();
    host.expect_host_name().return_const("hv01".to_owned());
    on!(host, HostCall::Facts)
        .times(1)
        .returning(|_| Ok(HostReply::Facts(Box::new(facts(48)))));
    on!(host, HostCall::Inventory)
        .times(1)
        .returning(|_| Ok(HostReply::Inventory(inventory(vec![]))));
    on!(host, HostCall::CopyImage(_))
        .times(1)
        .returning(|_| Ok(HostReply::CopiedImage(copied())));
    on!(host, HostCall::CopyIso(_))
        .times(1)
        .returning(|_| Ok(HostReply::CopiedIso(iso())));
    on!(host, HostCall::RegisterVm(_))
        .times(1)
        .returning(|call| match call {
            HostCall::RegisterVm(spec) => Ok(HostReply::Registered(Box::new(vm(
                &spec.name,
                2,
                &spec.notes,
                false,
            )))),
            other => panic!("{other:?}"),
        });
    let state = Arc::new(Mutex::new(0u8));
    let writes = Arc::clone(&state);
    on!(host, HostCall::KvpWriteHost(..))
        .times(2)
        .returning(move |_| {
            *writes.lock().unwrap() += 1;
            Ok(HostReply::Written)
        });
    on!(host, HostCall::KvpReadGuest(_)).returning(move |_| {
        Ok(HostReply::GuestKvp(match *state.lock().unwrap() {
            1 => guest_key_items(KeyFormat::Pkcs1Der),
            _ => guest(&[(keys::GUEST_STATE, "provisioningapplied")]),
        }))
    });
    on!(host, HostCall::KvpRemoveHostPrefix(..))
        .times(1)
        .returning(|_| Ok(HostReply::KvpRemoved(vec![keys::HOST_STATE.to_owned()])));
    on!(host, HostCall::RemoveDvdDrive { .. })
        .times(1)
        .returning(|call| match call {
            HostCall::RemoveDvdDrive { vm, path } => {
                Ok(HostReply::DvdDriveRemoved(DvdDriveRemoved {
                    id: vm,
                    path,
                    ejected: 1,
                    removed: 1,
                    kept: vec![],
                }))
            }
            other => panic!("{other:?}"),
        });
    on!(host, HostCall::RemovePath(_))
        .times(1)
        .returning(|call| match call {
            HostCall::RemovePath(path) => Ok(HostReply::RemovedPath(RemovedPath {
                removed: path == iso().iso_path,
                path,
            })),
            other => panic!("{other:?}"),
        });
    on!(host, HostCall::AddClusterRole(_))
        .times(1)
        .returning(|call| {
            Ok(HostReply::ClusterRole(ClusterRole {
                id: call.vm_id().unwrap(),
                clustered: true,
                group: None,
            }))
        });
    on!(host, HostCall::SetVmNotes(..))
        .times(1)
        .returning(|call| match call {
            HostCall::SetVmNotes(id, notes) => {
                assert!(notes.starts_with("aetherv-provisioned:"), "{notes}");
                Ok(HostReply::NotesSet(aetherv_hyperv::ops::VmNotes {
                    id,
                    notes,
                }))
            }
            other => panic!("{other:?}"),
        });
    host
}

#[tokio::test]
async fn the_driver_runs_a_job_against_the_mock_host() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink_events = Arc::clone(&events);
    let sink = move |e: JobEvent| sink_events.lock().unwrap().push(e);
    let done = provision(
        Arc::new(mock_success()),
        JobId::from("job-1"),
        &windows_request(),
        config(),
        CancellationToken::new(),
        &sink,
    )
    .await
    .unwrap();
    assert!(done.clustered);
    let events = events.lock().unwrap();
    no_secrets(&events);
    assert!(events.iter().any(|e| matches!(e,
        JobEvent::Progress { progress, .. } if progress.step == steps::PUBLISH)));
}

#[tokio::test]
async fn deletion_surfaces_a_shared_disk() {
    let mut host = MockHyperVHost::new();
    host.expect_host_name().return_const("hv01".to_owned());
    on!(host, HostCall::Vm(_))
        .returning(|_| Ok(HostReply::Vm(Box::new(vm("web-01", 3, "", false)))));
    on!(host, HostCall::DeleteVm { .. }).returning(|_| {
        Err(aetherv_hyperv::Error::SharedDisk {
            host: "hv01".to_owned(),
            vm: "web-01".to_owned(),
            path: "C:\\ClusterStorage\\shared.vhdx".to_owned(),
        })
    });
    let request = DeleteRequest {
        delete_disks: true,
        ..DeleteRequest::new(vm_id())
    };
    let err = delete(
        Arc::new(host),
        request,
        CancellationToken::new(),
        &aetherv_provision::job::discard,
    )
    .await
    .unwrap_err();
    match &err {
        Error::DeleteFailed { step, cause, .. } => {
            assert_eq!(*step, aetherv_provision::delete::steps::DELETE);
            assert!(matches!(&**cause, Error::Host { source, .. }
                if matches!(**source, aetherv_hyperv::Error::SharedDisk { .. })));
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("shared.vhdx"), "{err}");
}
