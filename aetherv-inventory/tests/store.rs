//! The store and the diff as pure functions, plus the writer/reader/subscription plumbing.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aetherv_inventory::store::{apply, diff_vms};
use aetherv_inventory::{Event, HostStatus, InventoryVm, Notification, Snapshot, Update, store};
use common::{facts, id, vm};

fn at(s: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(s)
}

fn refreshed(host: &str, vms: Vec<aetherv_hyperv::ops::Vm>, s: u64) -> Update {
    Update::Refreshed {
        host: host.into(),
        facts: None,
        vms,
        at: at(s),
        took: Duration::from_millis(5),
    }
}

fn failed(host: &str, s: u64) -> Update {
    Update::Failed {
        host: host.into(),
        error: "connection refused".to_owned(),
        at: at(s),
        took: Duration::from_millis(1),
    }
}

fn kinds(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            Event::VmAdded { vm } => format!("added {}", vm.vm.name),
            Event::VmChanged { after, .. } => format!("changed {}@{}", after.vm.name, after.host),
            Event::VmRemoved { vm } => format!("removed {}", vm.vm.name),
            Event::HostConnected { host } => format!("up {host}"),
            Event::HostDisconnected { host, .. } => format!("down {host}"),
            Event::HostRemoved { host } => format!("gone {host}"),
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn first_refresh_adds_vms_and_indexes_them() {
    let s0 = Snapshot::new();
    let (s1, events) = apply(
        &s0,
        [refreshed("hv1", vec![vm(1, "web", 2), vm(2, "db", 3)], 10)],
    );
    assert_eq!(s1.generation(), 1);
    assert_eq!(kinds(&events), ["up hv1", "added web", "added db"]);
    let host = s1.host("hv1").unwrap();
    assert_eq!(host.status, HostStatus::Connected);
    assert_eq!(host.last_seen, Some(at(10)));
    assert_eq!(host.refresh_duration, Some(Duration::from_millis(5)));
    assert_eq!(s1.vm_count(), 2);
    assert_eq!(s1.vm(id(2)).unwrap().vm.name, "db");
    assert_eq!(&*s1.vm(id(2)).unwrap().host, "hv1");
    assert_eq!(s1.vms_on("hv1").count(), 2);
    assert_eq!(s1.vms_named("web").count(), 1);
    assert_eq!(s1.vms_named("nope").count(), 0);
    // The input snapshot is untouched.
    assert_eq!(s0.vm_count(), 0);
    assert!(s0.host("hv1").is_none());
}

#[test]
fn unchanged_refresh_shares_everything_and_emits_nothing() {
    let (s1, _) = apply(
        &Snapshot::new(),
        [
            refreshed("hv1", vec![vm(1, "web", 2)], 10),
            refreshed("hv2", vec![vm(2, "db", 2)], 10),
        ],
    );
    let (s2, events) = apply(&s1, [refreshed("hv1", vec![vm(1, "web", 2)], 20)]);
    assert!(events.is_empty());
    assert_eq!(s2.generation(), s1.generation() + 1, "last_seen moved");
    assert!(Arc::ptr_eq(s1.vm(id(1)).unwrap(), s2.vm(id(1)).unwrap()));
    assert!(Arc::ptr_eq(
        s1.host("hv2").unwrap(),
        s2.host("hv2").unwrap()
    ));
    assert_eq!(s2.host("hv1").unwrap().last_seen, Some(at(20)));
}

#[test]
fn uptime_that_only_advanced_is_not_a_change_but_a_restart_is() {
    let mut running = vm(1, "web", 2);
    running.uptime = Duration::from_secs(100);
    let (s1, _) = apply(
        &Snapshot::new(),
        [refreshed("hv1", vec![running.clone()], 1)],
    );
    running.uptime = Duration::from_secs(130);
    let (s2, events) = apply(&s1, [refreshed("hv1", vec![running.clone()], 31)]);
    assert!(kinds(&events).is_empty(), "{:?}", kinds(&events));
    assert_eq!(
        s2.vm(id(1)).unwrap().vm.uptime,
        Duration::from_secs(130),
        "the snapshot still holds the current uptime"
    );
    running.uptime = Duration::from_secs(5);
    let (s3, events) = apply(&s2, [refreshed("hv1", vec![running.clone()], 61)]);
    assert_eq!(kinds(&events), ["changed web@hv1"], "a restart is a change");
    running.uptime = Duration::from_secs(40);
    running.processor_count += 2;
    let (_, events) = apply(&s3, [refreshed("hv1", vec![running], 91)]);
    assert_eq!(
        kinds(&events),
        ["changed web@hv1"],
        "other properties still count"
    );
}

#[test]
fn changes_and_removals_and_renames() {
    let (s1, _) = apply(
        &Snapshot::new(),
        [refreshed(
            "hv1",
            vec![vm(1, "web", 2), vm(2, "db", 2), vm(3, "old", 3)],
            1,
        )],
    );
    let (s2, events) = apply(
        &s1,
        [refreshed(
            "hv1",
            vec![vm(1, "web", 3), vm(2, "db2", 2), vm(4, "new", 3)],
            2,
        )],
    );
    assert_eq!(
        kinds(&events),
        [
            "changed web@hv1",
            "changed db2@hv1",
            "added new",
            "removed old"
        ]
    );
    assert!(s2.vm(id(3)).is_none());
    assert_eq!(s2.vms_named("db").count(), 0);
    assert_eq!(s2.vms_named("db2").count(), 1);
    assert_eq!(s2.vms_named("old").count(), 0);
    assert_eq!(s2.vm_count(), 3);
}

#[test]
fn failure_keeps_vms_stale_and_recovery_clears_them() {
    let (s1, _) = apply(
        &Snapshot::new(),
        [refreshed("hv1", vec![vm(1, "web", 2), vm(2, "db", 2)], 1)],
    );
    let (s2, events) = apply(&s1, [failed("hv1", 2)]);
    assert_eq!(kinds(&events), ["down hv1"]);
    let host = s2.host("hv1").unwrap();
    assert_eq!(host.status, HostStatus::Disconnected);
    assert_eq!(host.last_error.as_deref(), Some("connection refused"));
    assert_eq!(host.last_seen, Some(at(1)));
    assert_eq!(host.last_attempt, Some(at(2)));
    assert_eq!(host.consecutive_failures, 1);
    assert_eq!(s2.vm_count(), 2);
    assert!(s2.vms().all(|v| v.stale));

    let (s3, events) = apply(&s2, [failed("hv1", 3)]);
    assert!(events.is_empty(), "still down: no new event");
    assert_eq!(s3.host("hv1").unwrap().consecutive_failures, 2);
    assert!(Arc::ptr_eq(
        &s2.host("hv1").unwrap().vms,
        &s3.host("hv1").unwrap().vms
    ));

    let (s4, events) = apply(
        &s3,
        [refreshed("hv1", vec![vm(1, "web", 2), vm(2, "db", 2)], 4)],
    );
    assert_eq!(
        kinds(&events),
        ["up hv1"],
        "stale flags alone are no VM change"
    );
    let host = s4.host("hv1").unwrap();
    assert!(host.is_connected());
    assert_eq!(host.last_error, None);
    assert_eq!(host.consecutive_failures, 0);
    assert!(s4.vms().all(|v| !v.stale));
}

#[test]
fn a_host_that_never_answered_is_reported_down_once() {
    let (s1, _) = apply(&Snapshot::new(), [Update::HostAdded { host: "hv1".into() }]);
    assert_eq!(s1.host("hv1").unwrap().status, HostStatus::Pending);
    let (s2, events) = apply(&s1, [failed("hv1", 1)]);
    assert_eq!(kinds(&events), ["down hv1"]);
    assert_eq!(s2.vm_count(), 0);
}

#[test]
fn names_are_not_unique_across_hosts() {
    let (s1, _) = apply(
        &Snapshot::new(),
        [
            refreshed("hv1", vec![vm(1, "web", 2)], 1),
            refreshed("hv2", vec![vm(2, "web", 2)], 1),
        ],
    );
    let mut hosts: Vec<_> = s1.vms_named("web").map(|v| v.host.to_string()).collect();
    hosts.sort();
    assert_eq!(hosts, ["hv1", "hv2"]);
    let (s2, _) = apply(&s1, [refreshed("hv1", vec![], 2)]);
    assert_eq!(s2.vms_named("web").count(), 1);
}

#[test]
fn a_vm_that_moved_changes_host() {
    let (s1, _) = apply(
        &Snapshot::new(),
        [
            refreshed("hv1", vec![vm(1, "web", 2)], 1),
            refreshed("hv2", vec![], 1),
        ],
    );
    let (s2, events) = apply(&s1, [refreshed("hv2", vec![vm(1, "web", 2)], 2)]);
    assert_eq!(kinds(&events), ["changed web@hv2"]);
    assert_eq!(&**s2.host_of(id(1)).unwrap(), "hv2");
    assert_eq!(s2.vms_on("hv1").count(), 0);
    assert_eq!(s2.vm_count(), 1);
    assert_eq!(s2.vms_named("web").count(), 1);
    // The source host's next refresh agrees: nothing more to report.
    let (_, events) = apply(&s2, [refreshed("hv1", vec![], 3)]);
    assert!(events.is_empty());
}

#[test]
fn clusters_come_from_facts() {
    let update = |h: &str, c: Option<&str>| Update::Refreshed {
        host: h.into(),
        facts: Some(facts(h, c)),
        vms: vec![],
        at: at(1),
        took: Duration::ZERO,
    };
    let (s1, _) = apply(
        &Snapshot::new(),
        [
            update("hv1", Some("c1")),
            update("hv2", Some("c1")),
            update("hv3", None),
        ],
    );
    let c1 = s1.cluster("c1").unwrap();
    assert_eq!(c1.hosts.len(), 2);
    assert_eq!(s1.clusters().count(), 1);
    assert_eq!(s1.host("hv1").unwrap().cluster(), Some("c1"));
    // A refresh without facts keeps them.
    let (s2, _) = apply(&s1, [refreshed("hv1", vec![], 2)]);
    assert_eq!(s2.host("hv1").unwrap().cluster(), Some("c1"));
    let (s3, _) = apply(&s2, [update("hv1", Some("c2"))]);
    assert_eq!(s3.cluster("c1").unwrap().hosts.len(), 1);
    assert_eq!(s3.cluster("c2").unwrap().hosts.len(), 1);
}

#[test]
fn host_removal_removes_its_vms() {
    let (s1, _) = apply(
        &Snapshot::new(),
        [refreshed("hv1", vec![vm(1, "web", 2)], 1)],
    );
    let (s2, events) = apply(&s1, [Update::HostRemoved { host: "hv1".into() }]);
    assert_eq!(kinds(&events), ["removed web", "gone hv1"]);
    assert_eq!(s2.vm_count(), 0);
    assert_eq!(s2.vms_named("web").count(), 0);
    assert!(s2.host("hv1").is_none());
}

#[test]
fn targeted_vm_updates() {
    let (s1, _) = apply(
        &Snapshot::new(),
        [refreshed("hv1", vec![vm(1, "web", 2)], 1)],
    );
    let (s2, events) = apply(
        &s1,
        [Update::VmRefreshed {
            host: "hv1".into(),
            vm: vm(1, "web", 3),
        }],
    );
    assert_eq!(kinds(&events), ["changed web@hv1"]);
    let (s3, events) = apply(
        &s2,
        [Update::VmRefreshed {
            host: "hv1".into(),
            vm: vm(5, "fresh", 3),
        }],
    );
    assert_eq!(kinds(&events), ["added fresh"]);
    let (s4, events) = apply(
        &s3,
        [Update::VmMissing {
            host: "hv1".into(),
            id: id(1),
        }],
    );
    assert_eq!(kinds(&events), ["removed web"]);
    assert_eq!(s4.vm_count(), 1);
    let (s5, events) = apply(
        &s4,
        [Update::VmMissing {
            host: "hv1".into(),
            id: id(99),
        }],
    );
    assert!(events.is_empty());
    assert_eq!(s5.generation(), s4.generation(), "nothing changed");
}

#[test]
fn diff_is_pure_and_ignores_stale_flags() {
    let entry = |n: u128, name: &str, state: u32, stale: bool| {
        (
            id(n),
            Arc::new(InventoryVm {
                vm: vm(n, name, state),
                host: "hv1".into(),
                stale,
            }),
        )
    };
    let before: BTreeMap<_, _> = [entry(1, "a", 2, false), entry(2, "b", 2, false)].into();
    let after: BTreeMap<_, _> = [entry(1, "a", 2, true), entry(3, "c", 2, false)].into();
    assert_eq!(kinds(&diff_vms(&before, &after)), ["added c", "removed b"]);
    assert!(diff_vms(&before, &before).is_empty());
    assert_eq!(diff_vms(&BTreeMap::new(), &before).len(), 2);
}

#[tokio::test]
async fn readers_keep_their_snapshot_and_subscribers_see_generations() {
    let (mut writer, reader) = store(16);
    let mut sub = reader.subscribe();
    let held = reader.snapshot();
    writer.apply([refreshed("hv1", vec![vm(1, "web", 2)], 1)]);
    assert_eq!(held.vm_count(), 0, "an old snapshot never changes");
    let now = reader.snapshot();
    assert_eq!(now.vm_count(), 1);
    let mut got = Vec::new();
    while let Some(Notification::Change(c)) = sub.try_recv() {
        assert_eq!(c.generation, now.generation());
        got.push(c.event);
    }
    assert_eq!(kinds(&got), ["up hv1", "added web"]);
    drop(writer);
    assert_eq!(sub.recv().await, None, "subscriptions end with the writer");
    assert_eq!(reader.subscribe().recv().await, None);
}

#[tokio::test]
async fn a_slow_subscriber_lags_instead_of_blocking_the_writer() {
    let (mut writer, reader) = store(2);
    let mut slow = reader.subscribe();
    for n in 0..10_u128 {
        writer.apply([Update::VmRefreshed {
            host: "hv1".into(),
            vm: vm(n, "x", 2),
        }]);
    }
    match slow.recv().await {
        Some(Notification::Lagged { missed }) => assert_eq!(missed, 8),
        other => panic!("expected a lag, got {other:?}"),
    }
    // Resync: the snapshot has everything; the queued changes are not newer than it.
    let snap = reader.snapshot();
    assert_eq!(snap.vm_count(), 10);
    while let Some(Notification::Change(c)) = slow.try_recv() {
        assert!(c.generation <= snap.generation());
    }
}

fn unchanged(host: &str, s: u64) -> Update {
    Update::Unchanged {
        host: host.into(),
        facts: None,
        at: at(s),
        took: Duration::from_millis(5),
    }
}

#[test]
fn unchanged_refreshes_advance_uptime_through_the_host_and_every_path_agrees() {
    let mut web = vm(1, "web", 2);
    web.uptime = Duration::from_secs(100);
    let mut db = vm(2, "db", 3);
    db.uptime = Duration::from_secs(50);
    let off = vm(3, "off", 3);
    let (s1, _) = apply(
        &Snapshot::new(),
        [refreshed(
            "hv1",
            vec![web.clone(), db.clone(), off.clone()],
            10,
        )],
    );
    let (s2, events) = apply(&s1, [unchanged("hv1", 40)]);
    assert!(kinds(&events).is_empty(), "{:?}", kinds(&events));
    let uptime = |s: &Snapshot, n: u128| s.uptime(s.vm(id(n)).unwrap()).as_secs();
    assert_eq!(
        (uptime(&s2, 1), uptime(&s2, 2), uptime(&s2, 3)),
        (130, 80, 0)
    );
    assert!(
        Arc::ptr_eq(&s1.host("hv1").unwrap().vms, &s2.host("hv1").unwrap().vms),
        "no VM record is copied"
    );

    // A full refresh that reports the uptimes advanced as far is no change; one whose uptime
    // went back behind the advance is a restart.
    web.uptime = Duration::from_secs(130);
    db.uptime = Duration::from_secs(20);
    let (s3, events) = apply(
        &s2,
        [refreshed(
            "hv1",
            vec![web.clone(), db.clone(), off.clone()],
            40,
        )],
    );
    assert_eq!(kinds(&events), ["changed db@hv1"]);
    assert_eq!((uptime(&s3, 1), uptime(&s3, 2)), (130, 20));

    // A VM fetched alone after unchanged refreshes: its own uptime is current and the others
    // keep theirs.
    let (s4, _) = apply(&s3, [unchanged("hv1", 100)]);
    let mut fetched = db.clone();
    fetched.uptime = Duration::from_secs(80);
    let (s5, events) = apply(
        &s4,
        [Update::VmRefreshed {
            host: "hv1".into(),
            vm: fetched,
        }],
    );
    assert!(kinds(&events).is_empty(), "{:?}", kinds(&events));
    assert_eq!(
        (uptime(&s5, 1), uptime(&s5, 2), uptime(&s5, 3)),
        (190, 80, 0)
    );

    // A VM gone from the host keeps the others' advance.
    let (s6, _) = apply(&s5, [unchanged("hv1", 110)]);
    let (s7, events) = apply(
        &s6,
        [Update::VmMissing {
            host: "hv1".into(),
            id: id(3),
        }],
    );
    assert_eq!(kinds(&events), ["removed off"]);
    assert_eq!((uptime(&s7, 1), uptime(&s7, 2)), (200, 90));

    // A disconnected host's uptimes stay where it was last seen.
    let (s8, _) = apply(&s7, [failed("hv1", 500)]);
    assert_eq!(uptime(&s8, 1), 200);
}
