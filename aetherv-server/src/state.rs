//! The shared state every handler sees.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use aetherv_inventory::InventoryHandle;
use aetherv_provision::resources::HostDefinitions;
use arc_swap::ArcSwapOption;
use axum::extract::FromRef;
use bytes::Bytes;

use crate::api::views::ServerMode;
use crate::auth::Authenticator;
use crate::jobs::JobQueue;
use crate::metrics::Metrics;

/// Whether the server may accept mutating requests, and why not.
#[derive(Debug)]
pub struct Readiness {
    reason: RwLock<Option<String>>,
    /// Strict mode (`READYZ_STRICT`): `/readyz` also needs at least one connected host.
    strict: std::sync::atomic::AtomicBool,
}

impl Readiness {
    /// Not ready, because of `reason`.
    pub fn not_ready(reason: impl Into<String>) -> Self {
        Self {
            reason: RwLock::new(Some(reason.into())),
            strict: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Ready from the start (tests).
    pub fn ready() -> Self {
        Self {
            reason: RwLock::new(None),
            strict: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Turns strict mode on or off: `/readyz` then also needs a connected host.
    pub fn set_strict(&self, strict: bool) {
        self.strict
            .store(strict, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether strict mode is on.
    pub fn is_strict(&self) -> bool {
        self.strict.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Marks the server ready.
    pub fn set_ready(&self) {
        *self
            .reason
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    /// Marks the server not ready because of `reason`.
    pub fn set_not_ready(&self, reason: impl Into<String>) {
        *self
            .reason
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(reason.into());
    }

    /// `Ok` when ready, else the reason.
    pub fn check(&self) -> Result<(), String> {
        match &*self
            .reason
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            None => Ok(()),
            Some(reason) => Err(reason.clone()),
        }
    }
}

/// Static facts about the running server.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// `demo` (embedded simulated fleet) or `fleet`.
    pub mode: ServerMode,
    /// The server's version.
    pub version: &'static str,
    /// The provisioning ISOs built at start (deployed with the host scripts).
    pub media: crate::media::ProvisioningMedia,
}

/// A serialised `GET /api/v1/vms` answer, valid for one inventory generation and one set of
/// busy VMs.
#[derive(Debug)]
pub struct CachedList {
    /// Inventory generation.
    pub generation: u64,
    /// Busy epoch of the job queue.
    pub busy_epoch: u64,
    /// The JSON body.
    pub body: Bytes,
    /// The same body, gzip-compressed (for clients that accept it).
    pub gzip: Bytes,
    /// Entity tag naming this version of the list.
    pub etag: String,
}

/// The unfiltered VM list, serialised (and compressed) once per inventory change; one request
/// rebuilds it while the others wait for the result instead of rebuilding it too.
#[derive(Debug, Default)]
pub struct VmListCache {
    /// The latest serialised list.
    pub current: ArcSwapOption<CachedList>,
    /// Held while the list is rebuilt.
    pub rebuild: tokio::sync::Mutex<()>,
    /// Sorted and filtered views of the VM set, kept per VM-set generation (pages).
    pub views: crate::api::vm_pages::ViewCache,
}

/// Clusters named in the configuration (`HOSTS_FILE`): name → member host names. Placement
/// (`target_cluster`) also counts hosts whose facts name the cluster.
pub type ClusterMap = std::collections::BTreeMap<String, Vec<String>>;

/// Everything the handlers share; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Inventory snapshots, subscriptions and targeted refreshes.
    pub inventory: InventoryHandle,
    /// The job queue (and the managed hosts).
    pub jobs: JobQueue,
    /// Who is calling.
    pub auth: Arc<Authenticator>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Readiness for mutating requests.
    pub readiness: Arc<Readiness>,
    /// Mode and version.
    pub info: Arc<ServerInfo>,
    /// The unfiltered VM list, serialised once per inventory change.
    pub vm_list_cache: Arc<VmListCache>,
    /// Named networks and storage classes from the configuration, by lowercase host name
    /// (checked at submission against the chosen host; see `api::vms`).
    pub host_resources: Arc<BTreeMap<String, HostDefinitions>>,
    /// Hosts' responsiveness and the cleanup retry list.
    pub recovery: Arc<crate::recovery::Recovery>,
    /// Clusters named in the configuration.
    pub clusters: Arc<ClusterMap>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("info", &self.info)
            .field("jobs", &self.jobs)
            .finish_non_exhaustive()
    }
}

impl FromRef<AppState> for Arc<Authenticator> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.auth)
    }
}

impl FromRef<AppState> for Arc<Metrics> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.metrics)
    }
}
