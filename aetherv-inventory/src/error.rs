//! The crate's error type.

use std::sync::Arc;
use std::time::Duration;

/// What went wrong in the inventory.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The host source has no host of this name.
    #[error("unknown host {host:?}; the inventory only refreshes hosts of its host source")]
    UnknownHost {
        /// The name asked for.
        host: String,
    },
    /// No host in the inventory holds this VM (refresh its host, or name the host).
    #[error("unknown vm {vm}; no host in the inventory reports it, name its host to look it up")]
    UnknownVm {
        /// The VM id.
        vm: String,
    },
    /// A host operation failed.
    #[error("refresh of host {host:?} failed")]
    Host {
        /// Host name.
        host: String,
        /// The typed host API's error.
        #[source]
        source: Arc<aetherv_hyperv::Error>,
    },
    /// A host did not answer within the per-host timeout.
    #[error("refresh of host {host:?} timed out after {after:?}; the host is marked disconnected")]
    Timeout {
        /// Host name.
        host: String,
        /// The timeout.
        after: Duration,
    },
    /// A refresh task ended abnormally (the host implementation panicked).
    #[error("refresh task of host {host:?} ended abnormally: {reason}")]
    TaskFailed {
        /// Host name.
        host: String,
        /// What the runtime said.
        reason: String,
    },
    /// The refresher has shut down (or was cancelled) before the request finished.
    #[error("the inventory refresher has shut down")]
    ShutDown,
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
