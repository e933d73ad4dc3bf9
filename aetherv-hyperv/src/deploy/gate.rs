//! [`DeployGate`]: the deployment as a [`Middleware`] in front of a host's operations.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;

use super::{Bundle, Deployer};
use crate::error::Result;
use crate::executor::PowerShellExecutor;
use crate::ops::layer::Middleware;
use crate::ops::{HostCall, HostReply, HyperVHost};

/// Makes sure a host's scripts are deployed (version checked; one command when they are
/// current) before its first operation, and again after a failed attempt: the operation that
/// found the deployment failing gets its error, the next one tries again.
pub struct DeployGate {
    executor: Arc<dyn PowerShellExecutor>,
    deployer: Arc<Deployer>,
    bundle: Arc<Bundle>,
    deployed: AtomicBool,
    lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for DeployGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeployGate")
            .field("host", &self.executor.host())
            .field("deployed", &self.deployed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl DeployGate {
    /// A gate deploying `bundle` through `executor` (the same host the operations go to).
    pub fn new(
        executor: Arc<dyn PowerShellExecutor>,
        deployer: Arc<Deployer>,
        bundle: Arc<Bundle>,
    ) -> Self {
        Self {
            executor,
            deployer,
            bundle,
            deployed: AtomicBool::new(false),
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Deploys unless a previous call already succeeded.
    ///
    /// # Errors
    ///
    /// The deployment's error (the next call tries again).
    pub async fn open(&self) -> Result<()> {
        if self.deployed.load(Ordering::Acquire) {
            return Ok(());
        }
        let _guard = self.lock.lock().await;
        if self.deployed.load(Ordering::Acquire) {
            return Ok(());
        }
        let host = self.executor.host().to_owned();
        let report = self
            .deployer
            .ensure_deployed(self.executor.as_ref(), &self.bundle, |p| {
                tracing::debug!(host = %p.host, file = %p.file, done = p.bytes_done, total = p.bytes_total, "deploying host scripts");
            })
            .await
            .inspect_err(|e| {
                tracing::warn!(%host, error = %e, "deploying the host scripts failed; retrying with the next operation");
            })?;
        tracing::info!(%host, outcome = ?report.outcome, version = %report.version, "host scripts");
        self.deployed.store(true, Ordering::Release);
        Ok(())
    }
}

#[async_trait]
impl Middleware for DeployGate {
    async fn handle(&self, next: &dyn HyperVHost, call: HostCall) -> Result<HostReply> {
        self.open().await?;
        next.call(call).await
    }
}
