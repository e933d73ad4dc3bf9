//! Timing behaviour of the refresh loop with paused tokio time and a fake host: interval,
//! per-host timeout, backoff, the concurrency bound, stale/recovery, targeted refreshes and
//! shutdown.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use aetherv_hyperv::ops::HostReader;
use aetherv_inventory::{
    Error, Event, HostStatus, Notification, RefreshConfig, Refresher, backoff,
};
use common::{FakeHost, id, vm};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

fn config() -> RefreshConfig {
    RefreshConfig {
        interval: Duration::from_secs(10),
        host_timeout: Duration::from_secs(3),
        max_concurrent: 4,
        backoff_initial: Duration::from_secs(1),
        backoff_max: Duration::from_secs(8),
        facts_every: 3,
        event_capacity: 64,
    }
}

fn source(hosts: &[Arc<FakeHost>]) -> BTreeMap<String, Arc<dyn HostReader>> {
    hosts
        .iter()
        .map(|h| (h.name.clone(), h.clone() as Arc<dyn HostReader>))
        .collect()
}

fn offsets(start: Instant, calls: &[Instant]) -> Vec<u64> {
    calls
        .iter()
        .map(|c| c.duration_since(start).as_millis() as u64)
        .collect()
}

#[test]
fn backoff_doubles_up_to_the_cap() {
    let c = config();
    let got: Vec<u64> = (1..=6).map(|f| backoff(&c, f).as_secs()).collect();
    assert_eq!(got, [1, 2, 4, 8, 8, 8]);
    assert_eq!(backoff(&c, u32::MAX), c.backoff_max);
}

#[tokio::test(start_paused = true)]
async fn hosts_refresh_at_the_interval_and_facts_every_nth_time() {
    let start = Instant::now();
    let host = Arc::new(FakeHost::new("hv1", vec![vm(1, "web", 2)]));
    let refresher = Refresher::start(
        &source(std::slice::from_ref(&host)),
        config(),
        CancellationToken::new(),
    );
    tokio::time::sleep(Duration::from_millis(35_500)).await;
    assert_eq!(offsets(start, &host.calls()), [0, 10_000, 20_000, 30_000]);
    // Facts on the first refresh (not connected yet) and then every third one.
    assert_eq!(host.facts_calls.load(Ordering::SeqCst), 2);
    let snap = refresher.handle().snapshot();
    assert_eq!(snap.vm_count(), 1);
    assert_eq!(snap.host("hv1").unwrap().cluster(), Some("c1"));
    refresher.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_hung_host_times_out_and_backs_off_exponentially() {
    let start = Instant::now();
    let host = Arc::new(FakeHost::new("hv1", vec![vm(1, "web", 2)]));
    let refresher = Refresher::start(
        &source(std::slice::from_ref(&host)),
        config(),
        CancellationToken::new(),
    );
    let inventory = refresher.handle();
    inventory.refresh_host("hv1").await.unwrap();
    let mut changes = inventory.subscribe();

    host.set(|b| b.delay = Duration::from_secs(3600));
    let err = inventory.refresh_host("hv1").await.unwrap_err();
    assert!(
        matches!(err, Error::Timeout { ref host, after } if host == "hv1" && after == Duration::from_secs(3))
    );
    assert_eq!(Instant::now().duration_since(start), Duration::from_secs(3));
    let snap = inventory.snapshot();
    let state = snap.host("hv1").unwrap();
    assert_eq!(state.status, HostStatus::Disconnected);
    assert!(state.last_error.as_deref().unwrap().contains("timed out"));
    assert!(snap.vm(id(1)).unwrap().stale, "kept, flagged stale");
    match changes.recv().await {
        Some(Notification::Change(c)) => {
            assert!(matches!(c.event, Event::HostDisconnected { .. }));
        }
        other => panic!("{other:?}"),
    }

    // Retries after 1 s, 2 s, 4 s, 8 s, 8 s of backoff (each attempt takes the 3 s timeout).
    tokio::time::sleep(Duration::from_secs(50)).await;
    let calls = offsets(start, &host.calls());
    let gaps: Vec<u64> = calls.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(&gaps[1..6], [4_000, 5_000, 7_000, 11_000, 11_000]);
    assert_eq!(
        inventory
            .snapshot()
            .host("hv1")
            .unwrap()
            .consecutive_failures,
        7
    );

    // Recovery clears the flags and the schedule returns to the interval.
    host.set(|b| b.delay = Duration::ZERO);
    inventory.refresh_host("hv1").await.unwrap();
    let snap = inventory.snapshot();
    assert!(snap.host("hv1").unwrap().is_connected());
    assert!(!snap.vm(id(1)).unwrap().stale);
    refresher.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn concurrency_is_bounded() {
    let hosts: Vec<Arc<FakeHost>> = (0..10)
        .map(|n| {
            let h = FakeHost::new(&format!("hv{n:02}"), vec![vm(n, "vm", 2)]);
            h.set(|b| b.delay = Duration::from_secs(1));
            Arc::new(h)
        })
        .collect();
    let start = Instant::now();
    let refresher = Refresher::start(&source(&hosts), config(), CancellationToken::new());
    let inventory = refresher.handle();
    let results = inventory.refresh_all().await;
    assert!(results.iter().all(|(_, r)| r.is_ok()));
    // 10 hosts, 4 at a time, 1 s each: three waves. The initial refresh and the requested one
    // coincide (a request during a refresh waits for the next one, which adds waves).
    let elapsed = Instant::now().duration_since(start);
    assert!(elapsed >= Duration::from_secs(3), "{elapsed:?}");
    // Hosts are separate fakes: read the peak across all of them from the call times.
    let mut calls: Vec<u64> = hosts
        .iter()
        .flat_map(|h| offsets(start, &h.calls()))
        .filter(|t| *t < 3_000)
        .collect();
    calls.sort_unstable();
    assert_eq!(
        calls,
        [0, 0, 0, 0, 1_000, 1_000, 1_000, 1_000, 2_000, 2_000]
    );
    assert_eq!(inventory.snapshot().vm_count(), 10);
    refresher.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_failing_host_does_not_hold_up_the_others_and_recovers() {
    let good = Arc::new(FakeHost::new("good", vec![vm(1, "a", 2)]));
    let bad = Arc::new(FakeHost::new("bad", vec![vm(2, "b", 2), vm(3, "c", 3)]));
    let refresher = Refresher::start(
        &source(&[good.clone(), bad.clone()]),
        config(),
        CancellationToken::new(),
    );
    let inventory = refresher.handle();
    inventory.refresh_all().await;
    bad.set(|b| b.fail = Some("connection refused".to_owned()));
    let err = inventory.refresh_host("bad").await.unwrap_err();
    assert!(err.to_string().contains("\"bad\""), "{err}");
    let snap = inventory.snapshot();
    assert!(snap.host("good").unwrap().is_connected());
    let bad_state = snap.host("bad").unwrap();
    assert!(!bad_state.is_connected());
    assert!(
        bad_state
            .last_error
            .as_deref()
            .unwrap()
            .contains("connection refused")
    );
    assert_eq!(snap.vms_on("bad").filter(|v| v.stale).count(), 2);
    assert!(!snap.vm(id(1)).unwrap().stale);

    bad.set(|b| {
        b.fail = None;
        b.vms.pop();
    });
    // The backoff retry (1 s) brings it back without being asked.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let snap = inventory.snapshot();
    assert!(snap.host("bad").unwrap().is_connected());
    assert_eq!(snap.vms_on("bad").count(), 1);
    assert!(snap.vms().all(|v| !v.stale));
    refresher.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn targeted_refreshes() {
    let host = Arc::new(FakeHost::new("hv1", vec![vm(1, "web", 2)]));
    let refresher = Refresher::start(
        &source(std::slice::from_ref(&host)),
        config(),
        CancellationToken::new(),
    );
    let inventory = refresher.handle();
    inventory.refresh_host("hv1").await.unwrap();
    assert!(matches!(
        inventory.refresh_host("nope").await,
        Err(Error::UnknownHost { .. })
    ));
    assert!(matches!(
        inventory.refresh_vm(id(9)).await,
        Err(Error::UnknownVm { .. })
    ));

    // A VM changes: refresh_vm returns its new state, already published.
    host.set(|b| b.vms = vec![vm(1, "web", 3), vm(2, "new", 2)]);
    let web = inventory.refresh_vm(id(1)).await.unwrap().unwrap();
    assert_eq!(web.vm.state.code(), 3);
    assert_eq!(inventory.snapshot().vm(id(1)).unwrap().vm.state.code(), 3);
    // A VM the inventory does not know yet, on a named host.
    let new = inventory
        .refresh_vm_on("hv1", id(2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(new.vm.name, "new");
    // A VM that is gone is removed.
    host.set(|b| b.vms.clear());
    assert_eq!(inventory.refresh_vm(id(1)).await.unwrap(), None);
    assert!(inventory.snapshot().vm(id(1)).is_none());

    // A request during a refresh waits for a fresh refresh that starts after it.
    host.set(|b| {
        b.delay = Duration::from_secs(1);
        b.vms = vec![vm(7, "late", 2)];
    });
    let first = {
        let inventory = inventory.clone();
        tokio::spawn(async move { inventory.refresh_host("hv1").await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = host.calls().len();
    inventory.refresh_host("hv1").await.unwrap();
    first.await.unwrap().unwrap();
    assert_eq!(host.calls().len(), before + 1);
    assert!(inventory.snapshot().vm(id(7)).is_some());
    refresher.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn cancellation_shuts_down_cleanly() {
    let host = Arc::new(FakeHost::new("hv1", vec![vm(1, "web", 2)]));
    host.set(|b| b.delay = Duration::from_secs(2));
    let cancel = CancellationToken::new();
    let refresher = Refresher::start(
        &source(std::slice::from_ref(&host)),
        config(),
        cancel.child_token(),
    );
    let inventory = refresher.handle();
    let mut changes = inventory.subscribe();
    let pending = {
        let inventory = inventory.clone();
        tokio::spawn(async move { inventory.refresh_host("hv1").await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    cancel.cancel();
    assert!(matches!(pending.await.unwrap(), Err(Error::ShutDown)));
    // The subscription ends once the loop is gone (a pending change may come first).
    while changes.recv().await.is_some() {}
    assert!(matches!(
        inventory.refresh_host("hv1").await,
        Err(Error::ShutDown)
    ));
    // Snapshots stay readable after shutdown.
    assert_eq!(
        inventory.snapshot().host("hv1").unwrap().status,
        HostStatus::Pending
    );
    refresher.shutdown().await;
}
