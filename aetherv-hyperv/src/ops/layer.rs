//! Generic middleware around a [`HyperVHost`]: because every operation passes through
//! [`HyperVHost::call`], concerns that apply to all of them (metrics, the deployment gate,
//! timeouts, retries) are written once, as a [`Middleware`], instead of once per operation.
//!
//! ```
//! # use std::sync::Arc;
//! # use aetherv_hyperv::ops::HyperVHost;
//! use aetherv_hyperv::ops::layer::{Layered, RetryReads, Timeouts};
//!
//! # fn demo(host: Arc<dyn HyperVHost>) -> Arc<dyn HyperVHost> {
//! // Innermost first: a timeout per attempt, then at most one retry of a read.
//! let host = Layered::new(host, Timeouts::default());
//! let host = Layered::new(Arc::new(host), RetryReads::default());
//! Arc::new(host)
//! # }
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{HostCall, HostReply, HyperVHost, OperationKind};
use crate::error::{Error, Result};

pub mod health;

pub use health::{FailFast, HealthConfig, HostHealth, Probe, Responsiveness};

/// One concern wrapped around every call: it receives the call and the next host in the
/// stack and decides what to do (forward, refuse, time, retry).
#[async_trait]
pub trait Middleware: Send + Sync {
    /// Handles `call`, normally by forwarding it to `next`.
    async fn handle(&self, next: &dyn HyperVHost, call: HostCall) -> Result<HostReply>;
}

/// A host with one [`Middleware`] in front of it; itself a [`HyperVHost`], so layers stack.
pub struct Layered<M> {
    inner: Arc<dyn HyperVHost>,
    middleware: M,
}

impl<M> Layered<M> {
    /// `middleware` in front of `inner`.
    pub fn new(inner: Arc<dyn HyperVHost>, middleware: M) -> Self {
        Self { inner, middleware }
    }

    /// The middleware.
    pub fn middleware(&self) -> &M {
        &self.middleware
    }

    /// The host behind the middleware.
    pub fn inner(&self) -> &Arc<dyn HyperVHost> {
        &self.inner
    }
}

impl<M> std::fmt::Debug for Layered<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layered")
            .field("host", &self.inner.host_name())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<M: Middleware> HyperVHost for Layered<M> {
    fn host_name(&self) -> &str {
        self.inner.host_name()
    }

    async fn call(&self, call: HostCall) -> Result<HostReply> {
        self.middleware.handle(self.inner.as_ref(), call).await
    }
}

/// Ends a call that takes longer than its operation's limit with [`Error::Timeout`]: by
/// default [`OperationKind::default_timeout`], overridable per operation.
///
/// An abandoned call may still take effect on the host; callers that create things treat a
/// timeout as "maybe done" (the provisioning pipeline's compensation does).
#[derive(Debug, Clone, Default)]
pub struct Timeouts {
    overrides: BTreeMap<OperationKind, Duration>,
}

impl Timeouts {
    /// Sets the limit for one operation.
    #[must_use]
    pub fn with(mut self, kind: OperationKind, limit: Duration) -> Self {
        self.overrides.insert(kind, limit);
        self
    }

    /// The limit for `kind`.
    pub fn limit(&self, kind: OperationKind) -> Duration {
        self.overrides
            .get(&kind)
            .copied()
            .unwrap_or_else(|| kind.default_timeout())
    }
}

#[async_trait]
impl Middleware for Timeouts {
    async fn handle(&self, next: &dyn HyperVHost, call: HostCall) -> Result<HostReply> {
        let kind = call.kind();
        let limit = self.limit(kind);
        match tokio::time::timeout(limit, next.call(call)).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout {
                host: next.host_name().to_owned(),
                operation: kind.describe(),
                after: limit,
            }),
        }
    }
}

/// Retries read-only operations ([`OperationKind::read_only`]) after a transport failure or
/// a timeout, with a fixed pause; anything that changes the host is never retried (it may
/// have taken effect).
#[derive(Debug, Clone)]
pub struct RetryReads {
    /// Further attempts after the first.
    pub retries: u32,
    /// Pause before each retry.
    pub pause: Duration,
}

impl Default for RetryReads {
    fn default() -> Self {
        Self {
            retries: 1,
            pause: Duration::from_millis(500),
        }
    }
}

impl RetryReads {
    fn retryable(error: &Error) -> bool {
        matches!(error, Error::WinRm { .. } | Error::Timeout { .. })
    }
}

#[async_trait]
impl Middleware for RetryReads {
    async fn handle(&self, next: &dyn HyperVHost, call: HostCall) -> Result<HostReply> {
        if !call.kind().read_only() {
            return next.call(call).await;
        }
        let mut attempt = 0;
        loop {
            match next.call(call.clone()).await {
                Err(e) if attempt < self.retries && Self::retryable(&e) => {
                    attempt += 1;
                    tracing::debug!(
                        host = next.host_name(),
                        operation = call.kind().name(),
                        attempt,
                        error = %e,
                        "retrying a read"
                    );
                    tokio::time::sleep(self.pause).await;
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::ops::{HyperVHostExt, MockHyperVHost, VmId};

    fn transport_error() -> Error {
        Error::WinRm {
            host: "hv01".to_owned(),
            source: Box::new(aetherv_winrm::Error::Config("connection reset".to_owned())),
        }
    }

    fn flaky(failures: u32, calls: Arc<AtomicU32>) -> Arc<dyn HyperVHost> {
        let mut host = MockHyperVHost::new();
        host.expect_host_name().return_const("hv01".to_owned());
        host.expect_call().returning(move |call| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            if n < failures {
                Err(transport_error())
            } else {
                match call {
                    HostCall::KvpRemoveHost(..) => Ok(HostReply::KvpRemoved(vec![])),
                    _ => Ok(HostReply::Written),
                }
            }
        });
        Arc::new(host)
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_is_retried_once_after_a_transport_failure() {
        let calls = Arc::new(AtomicU32::new(0));
        let host = Layered::new(flaky(1, calls.clone()), RetryReads::default());
        // The mock answers Written, which is the wrong variant for a read: the point is the
        // number of attempts, and the mismatch proves the second attempt reached the host.
        let err = host.vm(VmId(uuid::Uuid::nil())).await.unwrap_err();
        assert!(matches!(err, Error::OperationOutput { .. }), "{err}");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_is_never_retried() {
        let calls = Arc::new(AtomicU32::new(0));
        let host = Layered::new(flaky(1, calls.clone()), RetryReads::default());
        let err = host
            .kvp_remove_host(VmId(uuid::Uuid::nil()), vec!["k".to_owned()])
            .await
            .unwrap_err();
        assert!(matches!(err, Error::WinRm { .. }), "{err}");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_over_its_limit_times_out_naming_the_operation() {
        let mut host = MockHyperVHost::new();
        host.expect_host_name().return_const("hv01".to_owned());
        host.expect_call().returning(|_| Ok(HostReply::Written));
        struct Slow(Arc<dyn HyperVHost>);
        #[async_trait]
        impl HyperVHost for Slow {
            fn host_name(&self) -> &str {
                self.0.host_name()
            }
            async fn call(&self, call: HostCall) -> Result<HostReply> {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                self.0.call(call).await
            }
        }
        let slow: Arc<dyn HyperVHost> = Arc::new(Slow(Arc::new(host)));
        let timeouts = Timeouts::default().with(OperationKind::Facts, Duration::from_secs(5));
        assert_eq!(timeouts.limit(OperationKind::Facts), Duration::from_secs(5));
        assert_eq!(
            timeouts.limit(OperationKind::CopyImage),
            OperationKind::CopyImage.default_timeout()
        );
        let layered = Layered::new(slow, timeouts);
        let err = layered.facts().await.unwrap_err();
        assert!(
            matches!(err, Error::Timeout { after, .. } if after == Duration::from_secs(5)),
            "{err}"
        );
        assert!(err.to_string().contains("facts"), "{err}");
    }
}
