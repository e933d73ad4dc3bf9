//! Knowing within seconds that a host stopped answering, and failing fast while it does.
//!
//! A frozen host (a hung kernel, a `SIGSTOP`ped service) still accepts TCP connections, so
//! every call sent to it waits for its full time limit. [`HostHealth`] holds one host's
//! [`Responsiveness`], decided by a cheap [`Probe`] with a short deadline (for WinRM: one
//! unauthenticated request on a fresh connection, which any live WinRM service answers, see
//! `aetherv_winrm::Client::probe`). [`FailFast`] is the [`Middleware`] that uses it:
//!
//! - a call that runs longer than [`HealthConfig::slow_after`] starts probing (every
//!   [`HealthConfig::probe_every`]); when a probe fails, the host is marked unresponsive and
//!   every call in flight on it ends with [`Error::HostUnresponsive`] (`sent: true`: it may
//!   still take effect);
//! - while the host is marked, a new call fails at once with [`Error::HostUnresponsive`]
//!   (`sent: false`) as long as the last failed probe is recent; otherwise it probes first
//!   (at most [`HealthConfig::probe_deadline`]) and goes through when the host answers again;
//! - any answer from the host (success or a typed host error) marks it responsive again.
//!
//! Probes are shared: calls that need one at the same time wait for a single probe and a
//! result younger than `probe_every` is reused. Watchers ([`HostHealth::subscribe`]) learn
//! of every change, e.g. to refresh the inventory the moment a host is marked.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::sync::{Mutex, watch};
use tokio::time::Instant;

use super::Middleware;
use crate::error::{Error, Result};
use crate::ops::{HostCall, HostReply, HyperVHost};

/// A cheap check that a host answers at all.
#[async_trait]
pub trait Probe: Send + Sync {
    /// `Ok` when the host answered within `deadline`; else what happened, as one line.
    async fn probe(&self, deadline: Duration) -> std::result::Result<(), String>;
}

/// [`Probe`] over a WinRM client: [`aetherv_winrm::Client::probe`].
#[async_trait]
impl Probe for aetherv_winrm::Client {
    async fn probe(&self, deadline: Duration) -> std::result::Result<(), String> {
        aetherv_winrm::Client::probe(self, deadline)
            .await
            .map_err(|e| e.to_string())
    }
}

/// How quickly a silent host is noticed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// A call running this long starts the probing.
    pub slow_after: Duration,
    /// How long one probe may wait for the host's answer.
    pub probe_deadline: Duration,
    /// Time between probes while a call is slow; a probe result is reused this long.
    pub probe_every: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            slow_after: Duration::from_secs(3),
            probe_deadline: Duration::from_secs(5),
            probe_every: Duration::from_secs(5),
        }
    }
}

/// Whether a host answers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Responsiveness {
    /// The host answered its last call or probe.
    Responsive,
    /// A probe got no answer.
    Unresponsive {
        /// What the probe saw, one line.
        reason: String,
        /// When the host was marked.
        since: SystemTime,
    },
}

impl Responsiveness {
    /// Whether the host is marked unresponsive.
    pub fn is_unresponsive(&self) -> bool {
        matches!(self, Self::Unresponsive { .. })
    }
}

struct LastProbe {
    at: Instant,
    result: std::result::Result<(), String>,
}

struct Inner {
    host: String,
    probe: Arc<dyn Probe>,
    config: HealthConfig,
    state: watch::Sender<Responsiveness>,
    last_probe: Mutex<Option<LastProbe>>,
}

/// One host's responsiveness, shared by its [`FailFast`] layer and whoever watches it.
#[derive(Clone)]
pub struct HostHealth {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for HostHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostHealth")
            .field("host", &self.inner.host)
            .field("state", &*self.inner.state.borrow())
            .finish_non_exhaustive()
    }
}

impl HostHealth {
    /// A host, responsive until a probe says otherwise.
    pub fn new(host: impl Into<String>, probe: Arc<dyn Probe>, config: HealthConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                host: host.into(),
                probe,
                config,
                state: watch::channel(Responsiveness::Responsive).0,
                last_probe: Mutex::new(None),
            }),
        }
    }

    /// The host's name.
    pub fn host(&self) -> &str {
        &self.inner.host
    }

    /// The settings.
    pub fn config(&self) -> &HealthConfig {
        &self.inner.config
    }

    /// The current state.
    pub fn status(&self) -> Responsiveness {
        self.inner.state.borrow().clone()
    }

    /// Every change of state from now on.
    pub fn subscribe(&self) -> watch::Receiver<Responsiveness> {
        self.inner.state.subscribe()
    }

    /// Probes the host now, unless a probe younger than [`HealthConfig::probe_every`] has a
    /// result (then that result counts), and updates the state. Concurrent callers share one
    /// probe.
    ///
    /// # Errors
    ///
    /// What the probe saw when the host did not answer.
    pub async fn check(&self) -> std::result::Result<(), String> {
        self.check_within(self.inner.config.probe_every).await
    }

    /// Probes the host now, whatever the last result was.
    ///
    /// # Errors
    ///
    /// What the probe saw when the host did not answer.
    pub async fn check_now(&self) -> std::result::Result<(), String> {
        self.check_within(Duration::ZERO).await
    }

    async fn check_within(&self, reuse: Duration) -> std::result::Result<(), String> {
        let mut last = self.inner.last_probe.lock().await;
        if let Some(probe) = &*last
            && probe.at.elapsed() < reuse
        {
            return probe.result.clone();
        }
        let deadline = self.inner.config.probe_deadline;
        let result = match tokio::time::timeout(deadline, self.inner.probe.probe(deadline)).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {} s", deadline.as_secs_f64())),
        };
        *last = Some(LastProbe {
            at: Instant::now(),
            result: result.clone(),
        });
        drop(last);
        match &result {
            Ok(()) => self.mark_responsive(),
            Err(reason) => self.mark_unresponsive(reason),
        }
        result
    }

    /// Marks the host answering (a call or probe got an answer).
    pub fn mark_responsive(&self) {
        self.inner.state.send_if_modified(|state| {
            if state.is_unresponsive() {
                *state = Responsiveness::Responsive;
                true
            } else {
                false
            }
        });
    }

    fn mark_unresponsive(&self, reason: &str) {
        self.inner.state.send_if_modified(|state| {
            if state.is_unresponsive() {
                false
            } else {
                *state = Responsiveness::Unresponsive {
                    reason: reason.to_owned(),
                    since: SystemTime::now(),
                };
                true
            }
        });
    }

    /// Ends when a probe found the host silent (checking while the call runs), with the reason.
    async fn watch_call(&self) -> String {
        let mut changes = self.subscribe();
        let watch_state = async {
            loop {
                if let Responsiveness::Unresponsive { reason, .. } = &*changes.borrow_and_update() {
                    return reason.clone();
                }
                if changes.changed().await.is_err() {
                    return std::future::pending().await;
                }
            }
        };
        let probing = async {
            tokio::time::sleep(self.inner.config.slow_after).await;
            loop {
                if let Err(reason) = self.check().await {
                    return reason;
                }
                tokio::time::sleep(self.inner.config.probe_every).await;
            }
        };
        tokio::select! {
            reason = watch_state => reason,
            reason = probing => reason,
        }
    }
}

/// Whether an error is an answer from the host (as opposed to silence or a broken transport).
fn host_answered(error: &Error) -> bool {
    !matches!(
        error,
        Error::WinRm { .. } | Error::Timeout { .. } | Error::HostUnresponsive { .. }
    )
}

/// The [`Middleware`] that fails calls to a silent host fast; see the module documentation.
#[derive(Debug, Clone)]
pub struct FailFast {
    health: HostHealth,
}

impl FailFast {
    /// The layer for the host `health` watches.
    pub fn new(health: HostHealth) -> Self {
        Self { health }
    }

    /// The host's health.
    pub fn health(&self) -> &HostHealth {
        &self.health
    }
}

#[async_trait]
impl Middleware for FailFast {
    async fn handle(&self, next: &dyn HyperVHost, call: HostCall) -> Result<HostReply> {
        let kind = call.kind();
        let unresponsive = |reason: String, sent: bool| Error::HostUnresponsive {
            host: next.host_name().to_owned(),
            operation: kind.describe(),
            reason,
            sent,
        };
        if self.health.status().is_unresponsive() {
            // Fails at once while the last failed probe is recent, else probes first.
            if let Err(reason) = self.health.check().await {
                return Err(unresponsive(reason, false));
            }
        }
        tokio::select! {
            result = next.call(call) => {
                match &result {
                    Ok(_) => self.health.mark_responsive(),
                    Err(e) if host_answered(e) => self.health.mark_responsive(),
                    Err(_) => {}
                }
                result
            }
            reason = self.health.watch_call() => {
                tracing::warn!(
                    host = next.host_name(),
                    operation = kind.name(),
                    %reason,
                    "host does not answer; abandoning the call"
                );
                Err(unresponsive(reason, true))
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    use super::*;
    use crate::ops::HyperVHostExt;
    use crate::ops::layer::Layered;

    /// A host that answers at once, or never while `frozen`.
    struct Freezable {
        frozen: Arc<AtomicBool>,
        calls: Arc<AtomicU32>,
    }

    #[async_trait]
    impl HyperVHost for Freezable {
        fn host_name(&self) -> &str {
            "hv01"
        }
        async fn call(&self, _call: HostCall) -> Result<HostReply> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.frozen.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            Ok(HostReply::Written)
        }
    }

    struct FlagProbe {
        frozen: Arc<AtomicBool>,
        probes: Arc<AtomicU32>,
    }

    #[async_trait]
    impl Probe for FlagProbe {
        async fn probe(&self, _deadline: Duration) -> std::result::Result<(), String> {
            self.probes.fetch_add(1, Ordering::SeqCst);
            if self.frozen.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            Ok(())
        }
    }

    struct Fixture {
        host: Layered<FailFast>,
        health: HostHealth,
        frozen: Arc<AtomicBool>,
        calls: Arc<AtomicU32>,
        probes: Arc<AtomicU32>,
    }

    fn fixture() -> Fixture {
        let frozen = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(AtomicU32::new(0));
        let probes = Arc::new(AtomicU32::new(0));
        let health = HostHealth::new(
            "hv01",
            Arc::new(FlagProbe {
                frozen: frozen.clone(),
                probes: probes.clone(),
            }),
            HealthConfig::default(),
        );
        let inner: Arc<dyn HyperVHost> = Arc::new(Freezable {
            frozen: frozen.clone(),
            calls: calls.clone(),
        });
        Fixture {
            host: Layered::new(inner, FailFast::new(health.clone())),
            health,
            frozen,
            calls,
            probes,
        }
    }

    fn write(host: &Layered<FailFast>) -> impl std::future::Future<Output = Result<()>> + '_ {
        host.kvp_write_host(
            crate::ops::VmId(uuid::Uuid::nil()),
            vec![("k".to_owned(), "v".to_owned())],
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_to_a_frozen_host_ends_after_slow_after_plus_one_probe() {
        let f = fixture();
        f.frozen.store(true, Ordering::SeqCst);
        let started = Instant::now();
        let err = write(&f.host).await.unwrap_err();
        // Paused time: exactly the configured slow_after plus the probe deadline.
        let config = HealthConfig::default();
        assert_eq!(started.elapsed(), config.slow_after + config.probe_deadline);
        assert!(
            matches!(&err, Error::HostUnresponsive { sent: true, .. }),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "host hv01 does not answer (no answer within 5 s): write host KVP was abandoned and may still take effect"
        );
        assert!(f.health.status().is_unresponsive());
    }

    #[tokio::test(start_paused = true)]
    async fn while_marked_calls_fail_at_once_without_reaching_the_host() {
        let f = fixture();
        f.frozen.store(true, Ordering::SeqCst);
        write(&f.host).await.unwrap_err();
        let calls = f.calls.load(Ordering::SeqCst);
        let started = Instant::now();
        let err = write(&f.host).await.unwrap_err();
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert!(
            matches!(&err, Error::HostUnresponsive { sent: false, .. }),
            "{err}"
        );
        assert_eq!(
            f.calls.load(Ordering::SeqCst),
            calls,
            "the call was not sent"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_host_that_answers_again_is_used_again() {
        let f = fixture();
        f.frozen.store(true, Ordering::SeqCst);
        write(&f.host).await.unwrap_err();
        f.frozen.store(false, Ordering::SeqCst);
        // The failed probe is still recent: refused without asking.
        assert!(write(&f.host).await.is_err());
        tokio::time::sleep(HealthConfig::default().probe_every).await;
        let probes = f.probes.load(Ordering::SeqCst);
        write(&f.host).await.unwrap();
        assert_eq!(f.probes.load(Ordering::SeqCst), probes + 1);
        assert_eq!(f.health.status(), Responsiveness::Responsive);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_call_to_a_live_host_is_left_alone() {
        struct Slow;
        #[async_trait]
        impl HyperVHost for Slow {
            fn host_name(&self) -> &str {
                "hv01"
            }
            async fn call(&self, _call: HostCall) -> Result<HostReply> {
                tokio::time::sleep(Duration::from_secs(600)).await;
                Ok(HostReply::Written)
            }
        }
        let probes = Arc::new(AtomicU32::new(0));
        let health = HostHealth::new(
            "hv01",
            Arc::new(FlagProbe {
                frozen: Arc::new(AtomicBool::new(false)),
                probes: probes.clone(),
            }),
            HealthConfig::default(),
        );
        let host = Layered::new(Arc::new(Slow), FailFast::new(health.clone()));
        write(&host).await.unwrap();
        assert!(
            probes.load(Ordering::SeqCst) > 1,
            "the slow call was probed"
        );
        assert_eq!(health.status(), Responsiveness::Responsive);
    }

    #[test]
    fn only_silence_and_broken_transports_are_not_answers() {
        assert!(host_answered(&Error::UnknownVm {
            host: "hv01".to_owned(),
            vm: "x".to_owned(),
        }));
        assert!(!host_answered(&Error::Timeout {
            host: "hv01".to_owned(),
            operation: "facts",
            after: Duration::from_secs(1),
        }));
    }
}
