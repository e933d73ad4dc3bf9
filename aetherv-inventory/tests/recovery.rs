//! Outages as the operator sees them: the retry delay is capped near 30 s, `last_error` is one
//! line naming each cause once, and the log has exactly one WARN line per change between
//! connected and disconnected.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aetherv_hyperv::ops::HostReader;
use aetherv_inventory::{RefreshConfig, Refresher, backoff, error_text};
use common::{FakeHost, vm};
use tokio_util::sync::CancellationToken;

#[test]
fn the_default_retry_delay_is_capped_at_30_s() {
    let c = RefreshConfig::default();
    let delays: Vec<u64> = (1..=8).map(|f| backoff(&c, f).as_secs()).collect();
    assert_eq!(delays, [5, 10, 20, 30, 30, 30, 30, 30]);
}

#[test]
fn last_error_names_each_cause_once() {
    let winrm = aetherv_winrm::Error::Transport {
        endpoint: "http://10.0.0.5:5985/wsman".to_owned(),
        source: aetherv_winrm::http::TransportError::Connect("connection refused".to_owned()),
    };
    let host = aetherv_hyperv::Error::WinRm {
        host: "hv01".to_owned(),
        source: Box::new(winrm),
    };
    let error = aetherv_inventory::Error::Host {
        host: "hv01".to_owned(),
        source: Arc::new(host),
    };
    assert_eq!(
        error_text(&error),
        "refresh of host \"hv01\" failed: host hv01: http://10.0.0.5:5985/wsman: cannot connect: connection refused"
    );
}

/// Collects what the subscriber writes.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Capture {
    fn lines(&self, needle: &str) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }
}

#[tokio::test(start_paused = true)]
async fn each_transition_is_logged_once_at_warn() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(capture.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let host = Arc::new(FakeHost::new("hv1", vec![vm(1, "web", 2)]));
    let source: BTreeMap<String, Arc<dyn HostReader>> =
        BTreeMap::from([("hv1".to_owned(), host.clone() as Arc<dyn HostReader>)]);
    let config = RefreshConfig {
        interval: Duration::from_secs(10),
        host_timeout: Duration::from_secs(3),
        backoff_initial: Duration::from_secs(1),
        backoff_max: Duration::from_secs(2),
        ..RefreshConfig::default()
    };
    let refresher = Refresher::start(&source, config, CancellationToken::new());
    let inventory = refresher.handle();
    inventory.refresh_host("hv1").await.unwrap();

    // Down for a minute: many failed retries, one line.
    host.set(|b| b.fail = Some("the host is gone".to_owned()));
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(
        inventory
            .snapshot()
            .host("hv1")
            .unwrap()
            .consecutive_failures
            > 5
    );
    // Back: many successful refreshes, one line.
    host.set(|b| b.fail = None);
    tokio::time::sleep(Duration::from_secs(60)).await;
    refresher.shutdown().await;

    let down = capture.lines("host disconnected");
    assert_eq!(down.len(), 1, "{down:?}");
    assert!(down[0].contains("WARN"), "{}", down[0]);
    assert!(
        down[0].contains("hv1") && down[0].contains("the host is gone"),
        "{}",
        down[0]
    );
    let up = capture.lines("host is connected again");
    assert_eq!(up.len(), 1, "{up:?}");
    assert!(up[0].contains("WARN") && up[0].contains("hv1"), "{}", up[0]);
    let first = capture.lines("host connected");
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(first[0].contains("INFO"), "{}", first[0]);
}

/// A host that is down for 100 s from a failed refresh on is connected again at most one
/// capped retry delay (30 s) after it comes back (with the former 300 s cap: 55 s). Paused
/// tokio time: the number is the schedule's, not the machine's.
#[tokio::test(start_paused = true)]
async fn a_host_back_from_a_100_s_outage_is_connected_within_the_retry_cap() {
    let host = Arc::new(FakeHost::new("hv1", vec![vm(1, "web", 2)]));
    let source: BTreeMap<String, Arc<dyn HostReader>> =
        BTreeMap::from([("hv1".to_owned(), host.clone() as Arc<dyn HostReader>)]);
    let config = RefreshConfig::default();
    let cap = config.backoff_max;
    let refresher = Refresher::start(&source, config, CancellationToken::new());
    let inventory = refresher.handle();
    inventory.refresh_host("hv1").await.unwrap();

    host.set(|b| b.fail = Some("connection refused".to_owned()));
    inventory.refresh_host("hv1").await.unwrap_err();
    tokio::time::sleep(Duration::from_secs(100)).await;
    host.set(|b| b.fail = None);
    let back = tokio::time::Instant::now();
    while !inventory.snapshot().host("hv1").unwrap().is_connected() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = back.elapsed();
    eprintln!(
        "measured: connected {:.1} s after a 100 s outage ended",
        took.as_secs_f64()
    );
    assert!(took <= cap, "{took:?}");
    refresher.shutdown().await;
}
