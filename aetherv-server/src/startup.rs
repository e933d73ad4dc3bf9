//! Composition: from a [`Config`] to a running [`Server`] — the hosts (real WinRM hosts, or
//! the embedded simulated demo fleet with the `demo` feature), the inventory refresher, the
//! job queue, authentication, metrics and the router.
//!
//! Start-up order: the HTTP server can answer as soon as [`Server::start`] returns (probes
//! say "not ready"). Every host is a stack of generic layers over its
//! [`WinRmHyperVHost`]: per-operation [`Timeouts`], a [`DeployGate`] that makes sure the host
//! scripts are deployed (version check, one command when current) before the first operation
//! reaches the host (retrying on the next operation if deployment failed),
//! [`FailFast`] (a host that stops answering a probe is marked within seconds and its calls
//! fail at once; see [`crate::recovery`]), and [`Metered`](crate::metrics::Metered) metrics. The refresher's first pass therefore deploys, then loads facts and inventory; the server becomes ready when
//! every host has answered or failed once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aetherv_hyperv::WinRmExecutor;
use aetherv_hyperv::deploy::{Bundle, DeployGate, DeployOptions, Deployer};
use aetherv_hyperv::ops::layer::{
    FailFast, HealthConfig, HostHealth, Layered, RetryReads, Timeouts,
};
use aetherv_hyperv::ops::{HyperVHost, ImageRoots, WinRmHyperVHost};
use aetherv_inventory::{CancellationToken, HostStatus, RefreshConfig, Refresher};
use aetherv_provision::provision::ProvisionConfig;
use aetherv_winrm::Client;
use axum::Router;

use crate::api::views::ServerMode;
use crate::auth::Authenticator;
use crate::auth::oidc::{OidcConfig, ReqwestFetcher, Validator};
use crate::config::{AuthConfig, Config, HostTarget, Mode, Transport};
#[cfg(feature = "demo")]
use crate::demo::DemoFleet;
use crate::jobs::{HostMap, JobObserver, JobQueue, JobStatus, JobType, QueueConfig};
use crate::metrics::{Metrics, metered};
use crate::recovery::Recovery;
use crate::state::{AppState, Readiness, ServerInfo};

/// Job metrics go to the Prometheus registry; what a failed job left behind goes to the
/// cleanup retry list.
struct MetricsObserver(Arc<Metrics>, Arc<Recovery>);

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
    fn left_behind(
        &self,
        job: &str,
        host: &str,
        report: &aetherv_provision::job::CleanupReport,
    ) -> Option<String> {
        self.1.left_behind(job, host, report)
    }
}

/// A running server: state, router, and what must be stopped at the end.
pub struct Server {
    state: AppState,
    hosts: crate::api::host_check::HostPolicy,
    metrics_token: Option<crate::api::metrics_access::MetricsToken>,
    metrics_separate: bool,
    mcp: crate::mcp::guard::McpConfig,
    refresher: Option<Refresher>,
    #[cfg(feature = "demo")]
    fleet: Option<DemoFleet>,
    cancel: CancellationToken,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

fn client_for(target: &HostTarget) -> Result<Client, String> {
    let mut builder = Client::builder(&target.endpoint)
        // A Receive waits at most 20 s for output (then it is simply sent again), so one HTTP
        // exchange is bounded by 30 s; a host that stops answering is noticed sooner by the
        // FailFast layer's probe.
        .operation_timeout(Duration::from_secs(20))
        .connect_timeout(Duration::from_secs(10))
        .accept_invalid_certs(target.insecure);
    builder = match target.transport {
        Transport::Ntlm => builder.ntlm(&target.user, target.password.clone()),
        Transport::Basic => builder.basic(&target.user, target.password.clone()),
        Transport::Kerberos | Transport::Negotiate => kerberos_client(builder, target)?,
    };
    if let Some(ca) = &target.ca_file {
        builder = builder.ca_file(ca);
    }
    for pin in &target.cert_sha256 {
        builder = builder.pin_sha256(*pin);
    }
    builder
        .build()
        .map_err(|e| format!("host {}: cannot build the WinRM client: {e}", target.name))
}

/// The Kerberos client of a host: its principal (`WINRM_USERNAME`, with `@REALM` added when it
/// has none), the password unless a keytab is configured, the SPN, realm and delegation.
#[cfg(feature = "kerberos")]
fn kerberos_client(
    builder: aetherv_winrm::ClientBuilder,
    target: &HostTarget,
) -> Result<aetherv_winrm::ClientBuilder, String> {
    use aetherv_winrm::kerberos::{KerberosAuth, KerberosScheme};
    let settings = target.kerberos.clone().unwrap_or_default();
    let user = target.user.trim();
    let principal = match (&settings.realm, user) {
        (_, "") => None,
        (Some(realm), user) if !user.contains('@') => {
            let bare = user.rsplit_once('\\').map_or(user, |(_, u)| u);
            Some(format!("{bare}@{realm}"))
        }
        (_, user) => Some(user.to_owned()),
    };
    let mut auth = KerberosAuth::new(principal);
    if settings.keytab.is_none() && settings.keytab_b64.is_none() && !target.password.is_empty() {
        auth.password = Some(target.password.clone());
    }
    auth.spn = settings.spn;
    auth.realm = settings.realm;
    auth.delegate = settings.delegate;
    if target.transport == Transport::Negotiate {
        auth.scheme = KerberosScheme::Negotiate;
    }
    Ok(builder.kerberos(auth))
}

#[cfg(not(feature = "kerberos"))]
fn kerberos_client(
    _builder: aetherv_winrm::ClientBuilder,
    target: &HostTarget,
) -> Result<aetherv_winrm::ClientBuilder, String> {
    Err(format!(
        "host {}: Kerberos needs a server built with the kerberos feature",
        target.name
    ))
}

/// The process environment MIT krb5 needs for the configured hosts (private `krb5.conf` for
/// the realms with KDC overrides, the client keytab), or `None` when no host uses Kerberos.
#[cfg(feature = "kerberos")]
pub fn kerberos_environment(
    hosts: &[HostTarget],
) -> Result<Option<aetherv_winrm::kerberos::ProcessEnv>, String> {
    use aetherv_winrm::kerberos::{KerberosSettings, ProcessEnv};
    let targets: Vec<_> = hosts.iter().filter_map(|h| h.kerberos.as_ref()).collect();
    let Some(first) = targets.first() else {
        return Ok(None);
    };
    let mut settings = KerberosSettings {
        keytab: first.keytab.clone(),
        keytab_b64: first.keytab_b64.clone(),
        ..KerberosSettings::default()
    };
    for target in &targets {
        let (Some(realm), false) = (&target.realm, target.kdcs.is_empty()) else {
            continue;
        };
        if settings.realm.is_none() {
            settings.realm = Some(realm.clone());
            settings.kdcs = target.kdcs.clone();
        } else if settings.realm.as_ref() != Some(realm)
            && !settings.other_realms.iter().any(|(r, _)| r == realm)
        {
            settings
                .other_realms
                .push((realm.clone(), target.kdcs.clone()));
        }
    }
    let dir = std::env::temp_dir().join(format!("aetherv-krb5-{}", std::process::id()));
    ProcessEnv::prepare(&settings, &dir)
        .map(Some)
        .map_err(|e| format!("WINRM_KEYTAB, WINRM_REALM, WINRM_KDC: {e}"))
}

fn authenticator(config: &AuthConfig) -> Result<Authenticator, String> {
    match config {
        AuthConfig::Disabled(reason) => Ok(Authenticator::disabled(match reason {
            crate::config::DisabledReason::Demo => "demo mode",
            _ => "AUTH_ENABLED=false with ALLOW_DEV_AUTH=true",
        })),
        AuthConfig::Oidc(settings) => {
            let policy = settings.http_policy();
            if settings.insecure_issuer() {
                tracing::warn!(
                    issuer = %settings.issuer_url,
                    "OIDC_ALLOW_INSECURE_HTTP=true: the identity provider is reached over plain \
                     http; anyone on the network path can swap its keys and sign admin tokens. \
                     Use this only in a lab"
                );
            }
            let fetcher = ReqwestFetcher::with_policy(policy)
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
                            previous_session_key: login.previous_session_key.clone(),
                            session_max_age: login.session_max_age,
                            http_policy: policy,
                        },
                        policy
                            .client(Duration::from_secs(15))
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
        #[cfg(feature = "demo")]
        let (fleet, targets) = match &config.mode {
            Mode::Demo(demo) => {
                let (fleet, targets) = DemoFleet::start(demo, &config.install_directory).await?;
                (Some(fleet), targets)
            }
            Mode::Fleet(targets) => (None, targets.clone()),
        };
        #[cfg(not(feature = "demo"))]
        let targets = match &config.mode {
            Mode::Demo(_) => return Err(crate::config::NO_DEMO_FLEET.to_owned()),
            Mode::Fleet(targets) => targets.clone(),
        };
        let metrics = Arc::new(Metrics::new());
        let deployer = Arc::new(Deployer::new(DeployOptions::default()));
        let media = build_media(&config.media).await?;
        let bundle = Arc::new(bundle_with(Bundle::embedded(), &media)?);
        let mut hosts: HostMap = BTreeMap::new();
        let mut health = BTreeMap::new();
        for target in &targets {
            let client = client_for(target)?;
            let host_health = HostHealth::new(
                target.name.clone(),
                Arc::new(client.clone()),
                HealthConfig::default(),
            );
            let executor =
                WinRmExecutor::new(client, target.name.clone(), &config.install_directory);
            // Innermost first: the operation with its time limit, one retry of a failed read,
            // the deployment gate (scripts deployed before the first operation), and the
            // metrics (which count a refused call as a failed one).
            // Facts look for golden images in the host's configured roots.
            let rooted: Arc<dyn HyperVHost> = Arc::new(Layered::new(
                Arc::new(WinRmHyperVHost::new(executor.clone())),
                ImageRoots::new(target.image_roots.clone()),
            ));
            let timed: Arc<dyn HyperVHost> = Arc::new(Layered::new(rooted, Timeouts::default()));
            // A read that failed on the transport (or timed out) is tried once more; a change
            // is never retried (it may have taken effect).
            let api: Arc<dyn HyperVHost> = Arc::new(Layered::new(timed, RetryReads::default()));
            let gate = DeployGate::new(
                Arc::new(executor),
                Arc::clone(&deployer),
                Arc::clone(&bundle),
            );
            let gated: Arc<dyn HyperVHost> = Arc::new(Layered::new(api, gate));
            // A host that stops answering is noticed within seconds (a probe with a short
            // deadline once a call runs long); calls to it then fail fast instead of waiting
            // for their time limits (deployment included).
            let guarded: Arc<dyn HyperVHost> =
                Arc::new(Layered::new(gated, FailFast::new(host_health.clone())));
            hosts.insert(target.name.clone(), metered(guarded, Arc::clone(&metrics)));
            health.insert(target.name.clone(), host_health);
        }
        let recovery = Arc::new(Recovery::new(health, hosts.clone()));
        let cancel = CancellationToken::new();
        let refresh = RefreshConfig {
            interval: config.refresh_interval,
            // The first refresh of a host also deploys its scripts.
            host_timeout: Duration::from_secs(120),
            ..RefreshConfig::default()
        };
        let refresher = Refresher::start(&hosts, refresh, cancel.child_token());
        let inventory = refresher.handle();
        recovery.spawn(&inventory, &cancel);
        let demo = config.mode.is_demo();
        let queue = JobQueue::new(
            QueueConfig {
                concurrency: config.job_concurrency,
                per_host: config.job_concurrency_per_host,
                history: config.job_history,
                provision: if demo {
                    ProvisionConfig {
                        poll_interval: Duration::from_millis(250),
                        boot: config.boot_policy(),
                        resources: config.host_resources(),
                        ..ProvisionConfig::default()
                    }
                } else {
                    ProvisionConfig {
                        boot: config.boot_policy(),
                        resources: config.host_resources(),
                        ..ProvisionConfig::default()
                    }
                },
                // The refresh that ends a job fails fast for a silent host; a slow one is
                // not worth holding the job's slot for longer.
                refresh_timeout: Duration::from_secs(15),
                ..QueueConfig::default()
            },
            Arc::new(hosts),
            Some(inventory.clone()),
            Arc::new(MetricsObserver(Arc::clone(&metrics), Arc::clone(&recovery))),
        );
        let auth = Arc::new(authenticator(&config.auth)?);
        let readiness = Arc::new(Readiness::not_ready(
            "deploying host scripts and loading the first inventory",
        ));
        readiness.set_strict(config.readyz_strict);
        let state = AppState {
            inventory: inventory.clone(),
            jobs: queue,
            auth,
            metrics: Arc::clone(&metrics),
            readiness: Arc::clone(&readiness),
            info: Arc::new(ServerInfo {
                mode: if demo {
                    ServerMode::Demo
                } else {
                    ServerMode::Fleet
                },
                version: env!("CARGO_PKG_VERSION"),
                media,
            }),
            vm_list_cache: Arc::default(),
            host_resources: Arc::new(config.host_resources()),
            recovery,
            clusters: Arc::new(configured_clusters(&targets)),
        };
        tokio::spawn(crate::orphan::watch(
            inventory.clone(),
            state.jobs.clone(),
            Arc::clone(&metrics),
            cancel.child_token(),
        ));
        tokio::spawn(watch_readiness(
            state.clone(),
            started,
            cancel.child_token(),
        ));
        Ok(Self {
            state,
            hosts: crate::api::host_check::HostPolicy::new(
                config.public_url.as_deref(),
                &config.allowed_hosts,
            ),
            metrics_token: config
                .metrics_token
                .as_ref()
                .map(crate::api::metrics_access::MetricsToken::new),
            metrics_separate: config.metrics_listen_addr.is_some(),
            mcp: config.mcp.clone(),
            refresher: Some(refresher),
            #[cfg(feature = "demo")]
            fleet,
            cancel,
        })
    }

    /// The shared state.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The router of the `METRICS_LISTEN_ADDR` listener: `GET /metrics` only (behind
    /// `METRICS_TOKEN` when it is set, and behind the `Host` check).
    pub fn metrics_router(&self) -> Router {
        let app = crate::api::metrics_router(self.state.metrics.clone());
        let app = match &self.metrics_token {
            Some(token) => crate::api::with_metrics_token(app, token.clone()),
            None => app,
        };
        crate::api::with_host_check(app, self.hosts.clone())
    }

    /// The application router, behind the `Host` check (`PUBLIC_URL`, `ALLOWED_HOSTS`), with
    /// `/metrics` behind `METRICS_TOKEN` when it is set, and answering 404 for it when
    /// `METRICS_LISTEN_ADDR` serves it instead.
    pub fn router(&self) -> Router {
        let mut app = crate::api::router_with_mcp(self.state.clone(), Some(self.mcp.clone()));
        if self.metrics_separate {
            app = crate::api::without_metrics(app);
        }
        let app = match &self.metrics_token {
            Some(token) => crate::api::with_metrics_token(app, token.clone()),
            None => app,
        };
        crate::api::with_host_check(app, self.hosts.clone())
    }

    /// The simulated hosts, in demo mode: `(name, WS-Man endpoint)`; empty otherwise.
    #[cfg(feature = "demo")]
    pub fn demo_hosts(&self) -> Vec<(String, String)> {
        self.fleet
            .as_ref()
            .map(DemoFleet::hosts)
            .unwrap_or_default()
    }

    /// The simulated fleet in demo mode (tests inject faults through it).
    #[cfg(feature = "demo")]
    pub fn demo_fleet(&self) -> Option<&aetherv_sim::SimFleet> {
        self.fleet.as_ref().map(DemoFleet::sim)
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
        #[cfg(feature = "demo")]
        if let Some(fleet) = self.fleet.take() {
            fleet.shutdown().await;
        }
    }
}

/// Builds the provisioning ISOs (off the async threads) and says in the log what was built
/// and, for an ISO that was not, why (one line each).
async fn build_media(
    config: &crate::media::MediaConfig,
) -> Result<crate::media::ProvisioningMedia, String> {
    let config = config.clone();
    let media = tokio::task::spawn_blocking(move || crate::media::build_all(&config))
        .await
        .map_err(|e| format!("building the provisioning ISOs failed: {e}"))?;
    for iso in &media.built {
        tracing::info!(
            iso = iso.file_name,
            version = %iso.version,
            sha256 = %iso.sha256,
            size_bytes = iso.size_bytes,
            "built the provisioning ISO; it is deployed to every host with the host scripts"
        );
    }
    for missing in &media.missing {
        tracing::warn!(
            iso = missing.file_name,
            os_family = missing.os_family,
            reason = %missing.reason,
            "the provisioning ISO was not built; hosts need one placed by hand for these guests"
        );
    }
    Ok(media)
}

/// `bundle` plus the deployment artifacts of the built ISOs.
fn bundle_with(bundle: Bundle, media: &crate::media::ProvisioningMedia) -> Result<Bundle, String> {
    media
        .artifacts()
        .map_err(|e| e.to_string())?
        .into_iter()
        .try_fold(bundle, |bundle, artifact| {
            bundle
                .with(artifact)
                .map_err(|e| format!("cannot deploy the provisioning ISOs: {e}"))
        })
}

/// The clusters `targets` name, with their members.
fn configured_clusters(targets: &[crate::config::HostTarget]) -> crate::state::ClusterMap {
    let mut clusters = crate::state::ClusterMap::new();
    for target in targets {
        if let Some(cluster) = &target.cluster {
            clusters
                .entry(cluster.clone())
                .or_default()
                .push(target.name.clone());
        }
    }
    clusters
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
        // Everything queued meanwhile is covered by the next look at the snapshot: one look
        // per burst of changes, not one per VM.
        while changes.try_recv().is_some() {}
    }
}
