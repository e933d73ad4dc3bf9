//! [`ImageRoots`]: asks a host for its facts with the image roots configured for it, so that
//! every caller of [`HostCall::Facts`] (the inventory, the provisioning pre-checks) sees the
//! same golden images.

use async_trait::async_trait;

use super::layer::Middleware;
use super::{HostCall, HostReply, HyperVHost};
use crate::error::Result;

/// Turns [`HostCall::Facts`] into [`HostCall::FactsInRoots`] with these roots; every other
/// call passes unchanged. No roots: nothing changes (the host's default roots apply,
/// [`super::DEFAULT_IMAGE_ROOTS`]).
#[derive(Debug, Clone, Default)]
pub struct ImageRoots {
    roots: Vec<String>,
}

impl ImageRoots {
    /// Facts calls look for images in `roots`, in order.
    pub fn new(roots: Vec<String>) -> Self {
        Self { roots }
    }

    /// The roots.
    pub fn roots(&self) -> &[String] {
        &self.roots
    }
}

#[async_trait]
impl Middleware for ImageRoots {
    async fn handle(&self, next: &dyn HyperVHost, call: HostCall) -> Result<HostReply> {
        match call {
            HostCall::Facts if !self.roots.is_empty() => {
                next.call(HostCall::FactsInRoots(self.roots.clone())).await
            }
            other => next.call(other).await,
        }
    }
}
