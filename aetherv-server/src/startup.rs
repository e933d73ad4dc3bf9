//! Composition: from a [`Config`] to a running [`Server`] — the hosts (real WinRM hosts, or
//! the embedded simulated demo fleet), the inventory refresher, the job queue, authentication,
//! metrics and the router.
//!
//! Start-up order: the HTTP server can answer as soon as [`Server::start`] returns (probes
//! say "not ready"). Every host is a [`MeteredHost`] whose [`DeployGate`] makes sure the host
//! scripts are deployed (version check, one command when current) before the first operation
//! reaches the host, retrying on the next operation if deployment failed. The refresher's
//! first pass therefore deploys, then loads facts and inventory; the server becomes ready when
//! every host has answered or failed once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aetherv_hyperv::WinRmExecutor;
use aetherv_hyperv::deploy::{Bundle, DeployOptions, Deployer};
use aetherv_hyperv::ops::{HyperVHost, WinRmHyperVHost};
use aetherv_inventory::{CancellationToken, HostStatus, RefreshConfig, Refresher};
use aetherv_provision::provision::ProvisionConfig;
use aetherv_sim::{Credentials, FleetSpec, SimFleet, SimOptions};
use aetherv_winrm::{Client, Secret};
use async_trait::async_trait;
use axum::Router;
use rand::Rng as _;

use crate::auth::Authenticator;
use crate::auth::oidc::{OidcConfig, ReqwestFetcher, Validator};
use crate::config::{AuthConfig, Config, DemoConfig, HostTarget, Mode, Transport};
use crate::jobs::{HostMap, JobObserver, JobQueue, JobStatus, JobType, QueueConfig};
use crate::metrics::{Gate, MeteredHost, Metrics};
use crate::state::{AppState, Readiness, ServerInfo};

/// The WinRM user of the simulated demo hosts.
pub const DEMO_USER: &str = "aetherv-demo";

/// The gate of every host: its scripts are deployed (version checked; one command when they
/// are current) before its first operation, and again after a failed attempt.
pub struct DeployGate {
    host: String,
    executor: WinRmExecutor,
    deployer: Arc<Deployer>,
    bundle: Arc<Bundle>,
    deployed: AtomicBool,
    lock: tokio::sync::Mutex<()>,
}

impl DeployGate {
    /// A gate deploying `bundle` through `executor` to `host`.
    pub fn new(
        host: impl Into<String>,
        executor: WinRmExecutor,
        deployer: Arc<Deployer>,
        bundle: Arc<Bundle>,
    ) -> Self {
        Self {
            host: host.into(),
            executor,
            deployer,
            bundle,
            deployed: AtomicBool::new(false),
            lock: tokio::sync::Mutex::new(()),
        }
    }
}

#[async_trait]
impl Gate for DeployGate {
    async fn open(&self) -> aetherv_hyperv::Result<()> {
        if self.deployed.load(Ordering::Acquire) {
            return Ok(());
        }
        let _guard = self.lock.lock().await;
        if self.deployed.load(Ordering::Acquire) {
            return Ok(());
        }
        let host = &self.host;
        let report = self
            .deployer
            .ensure_deployed(&self.executor, &self.bundle, |p| {
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

/// Job metrics go to the Prometheus registry.
struct MetricsObserver(Arc<Metrics>);

impl JobObserver for MetricsObserver {
    fn status(&self, job_type: JobType, from: Option<JobStatus>, to: JobStatus) {
        self.0
            .job_status(job_type.as_str(), from.map(JobStatus::as_str), to.as_str());
    }
    fn finished(&self, job_type: JobType, status: JobStatus, duration: Duration) {
        self.0
            .job_finished(job_type.as_str(), status.as_str(), duration);
    }
    fn forgotten(&self, job_type: JobType, status: JobStatus) {
        self.0.job_forgotten(job_type.as_str(), status.as_str());
    }
}

/// A running server: state, router, and what must be stopped at the end.
pub struct Server {
    state: AppState,
    refresher: Option<Refresher>,
    fleet: Option<SimFleet>,
    demo_password_chosen: bool,
    cancel: CancellationToken,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

fn random_password() -> Secret {
    let mut rng = rand::thread_rng();
    Secret::new(
        (0..24)
            .map(|_| char::from(rng.sample(rand::distributions::Alphanumeric)))
            .collect::<String>(),
    )
}

/// Starts the simulated demo fleet and returns it with the host targets to manage it.
async fn start_demo(
    demo: &DemoConfig,
    install_directory: &str,
) -> Result<(SimFleet, Vec<HostTarget>), String> {
    let password = demo.password.clone().unwrap_or_else(random_password);
    let spec = FleetSpec {
        hosts: demo.hosts,
        vms_per_host: demo.vms_per_host,
        clusters: demo.clusters,
        // Fresh hosts: the server deploys its scripts, as it would on a new real host.
        scripts_version: None,
        ..FleetSpec::default()
    };
    let options = SimOptions {
        install_directory: install_directory.to_owned(),
        ..SimOptions::default()
    };
    let fleet = SimFleet::start(spec, Credentials::new(DEMO_USER, password.clone()), options)
        .await
        .map_err(|e| format!("cannot start the demo fleet: {e}"))?;
    let targets = fleet
        .hosts()
        .iter()
        .map(|h| HostTarget {
            name: h.name().to_owned(),
            cluster: None,
            endpoint: h.endpoint(),
            user: DEMO_USER.to_owned(),
            password: password.clone(),
            transport: Transport::Ntlm,
            ca_file: None,
            insecure: false,
        })
        .collect();
    Ok((fleet, targets))
}

fn client_for(target: &HostTarget) -> Result<Client, String> {
    let mut builder = Client::builder(&target.endpoint)
        .operation_timeout(Duration::from_secs(60))
        .connect_timeout(Duration::from_secs(10))
        .accept_invalid_certs(target.insecure);
    builder = match target.transport {
        Transport::Ntlm => builder.ntlm(&target.user, target.password.clone()),
        Transport::Basic => builder.basic(&target.user, target.password.clone()),
    };
    if let Some(ca) = &target.ca_file {
        builder = builder.ca_file(ca);
    }
    builder
        .build()
        .map_err(|e| format!("host {}: cannot build the WinRM client: {e}", target.name))
}

fn authenticator(config: &AuthConfig) -> Result<Authenticator, String> {
    match config {
        AuthConfig::Disabled(reason) => Ok(Authenticator::disabled(match reason {
            crate::config::DisabledReason::Demo => "demo mode",
            _ => "AUTH_ENABLED=false with ALLOW_DEV_AUTH=true",
        })),
        AuthConfig::Oidc(settings) => {
            let fetcher = ReqwestFetcher::new()
                .map_err(|e| format!("OIDC_ISSUER_URL: cannot build the HTTP client: {e}"))?;
            let validator = Arc::new(Validator::new(
                OidcConfig::new(
                    settings.issuer_url.clone(),
                    settings.client_id.clone(),
                    settings.roles.clone(),
                ),
                Arc::new(fetcher),
            ));
            let login = match &settings.login {
                None => None,
                Some(login) => Some(Arc::new(
                    crate::auth::login::LoginFlow::new(
                        crate::auth::login::LoginConfig {
                            issuer_url: settings.issuer_url.clone(),
                            client_id: settings.client_id.clone(),
                            client_secret: login.client_secret.clone(),
                            redirect_url: login.redirect_url.clone(),
                            scopes: login.scopes.clone(),
                            session_key: login.session_key.clone(),
                        },
                        reqwest::Client::builder()
                            .timeout(Duration::from_secs(15))
                            .build()
                            .map_err(|e| format!("OIDC: cannot build the HTTP client: {e}"))?,
                    )
                    .map_err(|e| format!("OIDC: {e}"))?,
                )),
            };
            Ok(Authenticator::oidc(validator, login))
        }
    }
}

impl Server {
    /// Builds everything `config` describes and starts the background work (demo fleet,
    /// inventory refresher, readiness watcher). Must run inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// A message naming what could not be started.
    pub async fn start(config: &Config) -> Result<Self, String> {
        let started = Instant::now();
        let (fleet, targets, demo_password_chosen) = match &config.mode {
            Mode::Demo(demo) => {
                let (fleet, targets) = start_demo(demo, &config.install_directory).await?;
                (Some(fleet), targets, demo.password.is_some())
            }
            Mode::Fleet(targets) => (None, targets.clone(), false),
        };
        let metrics = Arc::new(Metrics::new());
        let deployer = Arc::new(Deployer::new(DeployOptions::default()));
        let bundle = Arc::new(Bundle::embedded());
        let mut hosts: HostMap = BTreeMap::new();
        for target in &targets {
            let executor = WinRmExecutor::new(
                client_for(target)?,
                target.name.clone(),
                &config.install_directory,
            );
            let api: Arc<dyn HyperVHost> = Arc::new(WinRmHyperVHost::new(executor.clone()));
            let gate = DeployGate::new(
                target.name.clone(),
                executor,
                Arc::clone(&deployer),
                Arc::clone(&bundle),
            );
            let host: Arc<dyn HyperVHost> =
                Arc::new(MeteredHost::new(api, Arc::clone(&metrics)).with_gate(Arc::new(gate)));
            hosts.insert(target.name.clone(), host);
        }
        let cancel = CancellationToken::new();
        let refresh = RefreshConfig {
            interval: config.refresh_interval,
            // The first refresh of a host also deploys its scripts.
            host_timeout: Duration::from_secs(120),
            ..RefreshConfig::default()
        };
        let refresher = Refresher::start(&hosts, refresh, cancel.child_token());
        let inventory = refresher.handle();
        let demo = config.mode.is_demo();
        let queue = JobQueue::new(
            QueueConfig {
                concurrency: config.job_concurrency,
                per_host: config.job_concurrency_per_host,
                history: config.job_history,
                provision: if demo {
                    ProvisionConfig {
                        poll_interval: Duration::from_millis(250),
                        ..ProvisionConfig::default()
                    }
                } else {
                    ProvisionConfig::default()
                },
                ..QueueConfig::default()
            },
            Arc::new(hosts),
            Some(inventory.clone()),
            Arc::new(MetricsObserver(Arc::clone(&metrics))),
        );
        let auth = Arc::new(authenticator(&config.auth)?);
        let readiness = Arc::new(Readiness::not_ready(
            "deploying host scripts and loading the first inventory",
        ));
        let state = AppState {
            inventory: inventory.clone(),
            jobs: queue,
            auth,
            metrics: Arc::clone(&metrics),
            readiness: Arc::clone(&readiness),
            info: Arc::new(ServerInfo {
                mode: if demo { "demo" } else { "fleet" },
                version: env!("CARGO_PKG_VERSION"),
            }),
            vm_list_cache: Arc::default(),
        };
        tokio::spawn(watch_readiness(
            state.clone(),
            started,
            cancel.child_token(),
        ));
        Ok(Self {
            state,
            refresher: Some(refresher),
            fleet,
            demo_password_chosen,
            cancel,
        })
    }

    /// The shared state.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The application router.
    pub fn router(&self) -> Router {
        crate::api::router(self.state.clone())
    }

    /// The simulated hosts, in demo mode: `(name, WS-Man endpoint)`.
    pub fn demo_hosts(&self) -> Vec<(String, String)> {
        self.fleet
            .as_ref()
            .map(|f| {
                f.hosts()
                    .iter()
                    .map(|h| (h.name().to_owned(), h.endpoint()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether the demo hosts' password was chosen with `AETHERV_DEMO_PASSWORD`.
    pub fn demo_password_chosen(&self) -> bool {
        self.demo_password_chosen
    }

    /// Cancels jobs and waits (at most 45 s) for them to clean up, then stops the refresher
    /// and the demo fleet.
    pub async fn shutdown(mut self) {
        self.state.jobs.shutdown();
        if !self.state.jobs.drain(Duration::from_secs(45)).await {
            tracing::warn!(
                "some jobs were still cleaning up at shutdown; their VMs carry the job marker in their notes"
            );
        }
        self.cancel.cancel();
        if let Some(refresher) = self.refresher.take() {
            refresher.shutdown().await;
        }
        if let Some(fleet) = self.fleet.take() {
            fleet.shutdown().await;
        }
    }
}

/// Marks the server ready once every host has answered or failed once, and keeps the
/// inventory gauges current.
async fn watch_readiness(state: AppState, started: Instant, cancel: CancellationToken) {
    let mut changes = state.inventory.subscribe();
    let mut ready = false;
    loop {
        let snapshot = state.inventory.snapshot();
        let total = snapshot.hosts().count();
        let pending = snapshot
            .hosts()
            .filter(|h| h.status == HostStatus::Pending)
            .count();
        let connected = snapshot.hosts().filter(|h| h.is_connected()).count();
        state
            .metrics
            .set_inventory(connected as u64, total as u64, snapshot.vm_count() as u64);
        if !ready {
            if pending == 0 {
                ready = true;
                state.readiness.set_ready();
                tracing::info!(
                    hosts = total,
                    connected,
                    vms = snapshot.vm_count(),
                    seconds = started.elapsed().as_secs_f64(),
                    "ready"
                );
            } else {
                state.readiness.set_not_ready(format!(
                    "deploying host scripts and loading the first inventory: {} of {total} hosts done",
                    total - pending
                ));
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            n = changes.recv() => if n.is_none() { return },
        }
    }
}
