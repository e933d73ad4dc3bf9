//! In-memory inventory of clusters, hosts and VMs, its refresh loop and change events.
//!
//! - [`model`]: the immutable [`Snapshot`] (clusters, [`HostState`]s, [`InventoryVm`]s indexed
//!   by VM id, by host and by name), shared structurally between generations.
//! - [`store`](mod@store): the pure update function [`store::apply`] and diff [`store::diff_vms`], the
//!   single [`StoreWriter`], lock-free [`StoreReader`] snapshots and [`Subscription`]s to
//!   change [`Event`]s (lagging subscribers get [`Notification::Lagged`] and resync).
//! - [`placement`]: the pure choice of a cluster member for a new VM ([`placement::choose`]).
//! - [`refresher`]: the refresh loop over a [`HostSource`]: bounded concurrency, per-host
//!   timeout, interval, exponential backoff, targeted host/VM refreshes, cancellation.
//!
//! A host that fails is marked [`HostStatus::Disconnected`] with its error; its VMs stay in the
//! inventory flagged `stale` until it answers again.
//!
//! ```no_run
//! # async fn demo(hosts: std::collections::BTreeMap<String, std::sync::Arc<dyn aetherv_hyperv::ops::HyperVHost>>) {
//! use aetherv_inventory::{RefreshConfig, Refresher};
//! use tokio_util::sync::CancellationToken;
//!
//! let refresher = Refresher::start(&hosts, RefreshConfig::default(), CancellationToken::new());
//! let inventory = refresher.handle();
//! let mut changes = inventory.subscribe();
//! let _ = inventory.refresh_all().await;
//! println!("{} VMs", inventory.snapshot().vm_count());
//! while let Some(change) = changes.recv().await {
//!     println!("{change:?}");
//! }
//! refresher.shutdown().await;
//! # }
//! ```

pub mod error;
pub mod model;
pub mod placement;
pub mod refresher;
pub mod store;

pub use error::{Error, Result};
pub use model::{Cluster, HostState, HostStatus, InventoryVm, Snapshot};
pub use refresher::{HostSource, InventoryHandle, RefreshConfig, Refresher, backoff, error_text};
pub use store::{
    Change, Event, Notification, StoreReader, StoreWriter, Subscription, Update, store,
};
/// The cancellation token [`Refresher::start`] takes (re-exported from `tokio-util`).
pub use tokio_util::sync::CancellationToken;
