//! Running simulated fleets: one WS-Man endpoint per host over a shared model.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aetherv_winrm::Secret;
use aetherv_winrm::server::ServerCounters;
use uuid::Uuid;

use crate::endpoint::{Endpoint, EndpointConfig};
use crate::error::{Error, Result};
use crate::faults::{Fault, FaultPlan, FaultRule, Trigger};
use crate::generate::FleetSpec;
use crate::guest::KeySource;
use crate::guest_bridge::{BridgeOptions, GuestBridge};
use crate::host::HostRuntime;
use crate::model::{Fleet, Host, NewVm, PowerAction, SimVm};
use crate::scripts::ScriptRegistry;
use crate::state::SimState;
use aetherv_hyperv::protocol::DEFAULT_INSTALL_DIRECTORY;

/// The account every simulated host accepts.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// User name (matched case-insensitively, with or without a domain).
    pub user: String,
    /// Password.
    pub password: Secret,
}

impl Credentials {
    /// Credentials for `user`.
    pub fn new(user: impl Into<String>, password: impl Into<Secret>) -> Self {
        Self {
            user: user.into(),
            password: password.into(),
        }
    }
}

/// How to serve a simulated fleet.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Where to listen. Port 0 gives every host its own free port; a fixed port P gives the
    /// hosts P, P+1, ... in fleet order (unless [`SimOptions::ip_per_host`]).
    pub listen: SocketAddr,
    /// Give every host its own IPv4 address instead of its own port: host `i` (from 0)
    /// listens on the address of `listen` plus `i`, on `listen`'s port (e.g. `127.1.0.1`,
    /// `127.1.0.2`, ... on loopback), so many hosts can be named by address alone.
    pub ip_per_host: bool,
    /// Serve HTTPS with a self-signed certificate per host (Basic and NTLM accepted).
    pub tls: bool,
    /// Accept unsealed SOAP over plain HTTP (Windows' `AllowUnencrypted=true`).
    pub allow_unencrypted: bool,
    /// Latency added to every request on every host (on top of any per-host plan).
    pub latency: Option<Duration>,
    /// Fault plans by host name.
    pub fault_plans: BTreeMap<String, FaultPlan>,
    /// Where guest agents of new VMs get their RSA keys.
    pub keys: KeySource,
    /// Host script emulations.
    pub scripts: ScriptRegistry,
    /// The hosts' script install directory.
    pub install_directory: String,
    /// Upper bound on how long a Receive waits for output (the server's default otherwise).
    pub max_receive_wait: Option<Duration>,
    /// Names of VMs (case-insensitive) whose guest never runs a provisioning agent once
    /// created, like a golden image without one: the host's KVP items go unanswered.
    pub silent_guests: BTreeSet<String>,
    /// How long simulated moves take (proportional to memory and files).
    pub migration: crate::migration::MigrationTiming,
    /// Accept Kerberos too (feature `kerberos`), with the acceptor keytab of the environment
    /// (`KRB5_KTNAME`).
    #[cfg(feature = "kerberos")]
    pub kerberos: bool,
    /// With `tls`: require TLS channel bindings from every client (NTLM's
    /// `MsvAvChannelBindings`, Kerberos' GSSAPI bindings), like Windows'
    /// `CbtHardeningLevel=Strict`. Default off (`Relaxed`: checked when sent).
    pub require_channel_bindings: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            ip_per_host: false,
            tls: false,
            allow_unencrypted: false,
            latency: None,
            fault_plans: BTreeMap::new(),
            keys: KeySource::Shared,
            scripts: ScriptRegistry::builtin(),
            install_directory: DEFAULT_INSTALL_DIRECTORY.to_owned(),
            max_receive_wait: None,
            silent_guests: BTreeSet::new(),
            migration: crate::migration::MigrationTiming::default(),
            #[cfg(feature = "kerberos")]
            kerberos: false,
            require_channel_bindings: false,
        }
    }
}

/// One running simulated host.
pub struct SimHost {
    name: String,
    fqdn: String,
    runtime: Arc<HostRuntime>,
    endpoint: Endpoint,
    latency: Option<Duration>,
}

impl std::fmt::Debug for SimHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHost")
            .field("name", &self.name)
            .field("endpoint", &self.endpoint())
            .finish_non_exhaustive()
    }
}

fn with_latency(plan: FaultPlan, latency: Option<Duration>) -> FaultPlan {
    match latency {
        Some(l) if !l.is_zero() => {
            let mut plan = plan;
            plan.rules.insert(
                0,
                FaultRule {
                    fault: Fault::Latency {
                        base: l,
                        jitter: Duration::ZERO,
                    },
                    trigger: Trigger::Always,
                    action: None,
                },
            );
            plan
        }
        _ => plan,
    }
}

impl SimHost {
    /// Short host name, e.g. `hv01`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Fully qualified host name.
    pub fn fqdn(&self) -> &str {
        &self.fqdn
    }

    /// The endpoint URL, e.g. `http://127.0.0.1:49152/wsman`.
    pub fn endpoint(&self) -> String {
        self.endpoint.handle().endpoint()
    }

    /// The address the endpoint listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint.handle().local_addr()
    }

    /// What the endpoint has served so far.
    pub fn counters(&self) -> ServerCounters {
        self.endpoint.handle().counters()
    }

    /// Replaces this host's fault plan (counting starts over). Fleet-wide latency from
    /// [`SimOptions::latency`] is kept.
    pub fn set_fault_plan(&self, plan: FaultPlan) {
        self.runtime
            .set_fault_plan(with_latency(plan, self.latency));
    }

    /// Removes every fault except the fleet-wide latency.
    pub fn clear_faults(&self) {
        self.set_fault_plan(FaultPlan::default());
    }

    /// Takes the host down: connections are refused (and open ones dropped) until
    /// [`SimHost::come_up`]. Shells and running commands survive, as they would a network
    /// outage.
    pub async fn go_down(&self) {
        self.with_state(|s| s.set_unreachable(&self.name, true));
        self.endpoint.handle().go_down().await;
    }

    /// Freezes the host, as `SIGSTOP` freezes a process or a hung host kernel would: it keeps
    /// accepting connections but answers no request (authentication legs included) until
    /// [`SimHost::thaw`]. Requests already waiting stay open and are answered after the thaw.
    pub fn freeze(&self) {
        self.with_state(|s| s.set_unreachable(&self.name, true));
        self.runtime.set_frozen(true);
    }

    /// Ends a [`SimHost::freeze`]: waiting and new requests are answered again.
    pub fn thaw(&self) {
        self.runtime.set_frozen(false);
        self.with_state(|s| s.set_unreachable(&self.name, false));
    }

    /// Brings the host back after [`SimHost::go_down`].
    pub async fn come_up(&self) -> Result<()> {
        self.with_state(|s| s.set_unreachable(&self.name, false));
        self.endpoint
            .handle()
            .come_up()
            .await
            .map_err(|source| Error::Server {
                host: self.name.clone(),
                source,
            })
    }

    /// Runs `f` with exclusive access to the shared simulator state.
    pub fn with_state<R>(&self, f: impl FnOnce(&mut SimState) -> R) -> R {
        f(&mut self.runtime.lock_state())
    }

    /// A snapshot of this host's model.
    pub fn host(&self) -> Result<Host> {
        self.with_state(|s| {
            s.fleet()
                .host(&self.name)
                .cloned()
                .ok_or_else(|| Error::UnknownHost {
                    host: self.name.clone(),
                })
        })
    }

    /// Snapshots of this host's VMs.
    pub fn vms(&self) -> Vec<SimVm> {
        self.host().map(|h| h.vms).unwrap_or_default()
    }

    /// A snapshot of one VM (by name or id).
    pub fn vm(&self, vm: &str) -> Result<SimVm> {
        self.with_state(|s| s.fleet().vm(&self.name, vm).cloned())
    }

    /// Writes a host-to-guest KVP item; the guest agent reacts at once.
    pub fn set_host_kvp(&self, vm: &str, key: &str, value: &str) -> Result<()> {
        self.with_state(|s| s.set_host_kvp(&self.name, vm, key, value))
    }

    /// The VM's guest-to-host KVP items.
    pub fn guest_kvp(&self, vm: &str) -> Result<BTreeMap<String, String>> {
        self.vm(vm).map(|v| v.kvp.guest_to_host)
    }

    /// Creates a VM from a golden image (Off, with a fresh guest agent).
    pub fn create_vm(&self, spec: &NewVm) -> Result<Uuid> {
        let now = SystemTime::now();
        self.with_state(|s| s.create_vm(&self.name, spec, now))
    }

    /// Applies a power operation to a VM.
    pub fn power(&self, vm: &str, action: PowerAction) -> Result<()> {
        let now = SystemTime::now();
        self.with_state(|s| s.power(&self.name, vm, action, now))
    }
}

/// A running simulated fleet: the shared model and one endpoint per host.
pub struct SimFleet {
    state: Arc<Mutex<SimState>>,
    hosts: Vec<SimHost>,
}

impl std::fmt::Debug for SimFleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimFleet")
            .field("hosts", &self.hosts)
            .finish_non_exhaustive()
    }
}

impl SimFleet {
    /// Generates a fleet from `spec` and serves every host.
    pub async fn start(
        spec: FleetSpec,
        credentials: Credentials,
        options: SimOptions,
    ) -> Result<Self> {
        let fleet = Fleet::generate(&spec)?;
        Self::serve(fleet, credentials, options).await
    }

    /// Serves every host of an existing fleet model.
    pub async fn serve(
        fleet: Fleet,
        credentials: Credentials,
        options: SimOptions,
    ) -> Result<Self> {
        let hosts: Vec<(String, String)> = fleet
            .hosts
            .iter()
            .map(|h| (h.name.clone(), h.fqdn.clone()))
            .collect();
        let mut state = SimState::new(fleet, options.keys.clone());
        state.set_silent_guests(options.silent_guests.iter().cloned());
        state.set_migration_timing(options.migration);
        let state = Arc::new(Mutex::new(state));
        let scripts = Arc::new(options.scripts.clone());
        let mut running: Vec<SimHost> = Vec::with_capacity(hosts.len());
        for (index, (name, fqdn)) in hosts.into_iter().enumerate() {
            let listen = if options.ip_per_host {
                let IpAddr::V4(first) = options.listen.ip() else {
                    return Err(Error::Invalid {
                        what: "listen address",
                        detail: "one address per host needs an IPv4 address".to_owned(),
                    });
                };
                let address = u32::from(first)
                    .checked_add(u32::try_from(index).unwrap_or(u32::MAX))
                    .map(Ipv4Addr::from)
                    .ok_or_else(|| Error::Invalid {
                        what: "listen address",
                        detail: format!("{first} + {index} hosts exceeds the IPv4 range"),
                    })?;
                SocketAddr::new(IpAddr::V4(address), options.listen.port())
            } else if options.listen.port() == 0 {
                options.listen
            } else {
                let port =
                    u16::try_from(usize::from(options.listen.port()) + index).map_err(|_| {
                        Error::Invalid {
                            what: "listen port",
                            detail: format!(
                                "port {} + {index} hosts exceeds 65535",
                                options.listen.port()
                            ),
                        }
                    })?;
                SocketAddr::new(options.listen.ip(), port)
            };
            let plan = options.fault_plans.get(&name).cloned().unwrap_or_default();
            let runtime = Arc::new(HostRuntime::new(
                &name,
                Arc::clone(&state),
                with_latency(plan, options.latency),
                Arc::clone(&scripts),
                &options.install_directory,
            ));
            let endpoint = Endpoint::start(
                Arc::clone(&runtime),
                &fqdn,
                EndpointConfig {
                    listen,
                    user: credentials.user.clone(),
                    password: credentials.password.clone(),
                    tls: options.tls,
                    allow_unencrypted: options.allow_unencrypted,
                    max_receive_wait: options.max_receive_wait,
                    #[cfg(feature = "kerberos")]
                    kerberos: options.kerberos,
                    require_channel_bindings: options.require_channel_bindings,
                },
            )
            .await;
            let endpoint = match endpoint {
                Ok(e) => e,
                Err(e) => {
                    for host in running.drain(..) {
                        let SimHost { endpoint, .. } = host;
                        endpoint.shutdown().await;
                    }
                    return Err(e);
                }
            };
            running.push(SimHost {
                name,
                fqdn,
                runtime,
                endpoint,
                latency: options.latency,
            });
        }
        Ok(Self {
            state,
            hosts: running,
        })
    }

    /// The running hosts, in fleet order.
    pub fn hosts(&self) -> &[SimHost] {
        &self.hosts
    }

    /// The host with this short or fully qualified name.
    pub fn host(&self, name: &str) -> Option<&SimHost> {
        self.hosts
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name) || h.fqdn.eq_ignore_ascii_case(name))
    }

    /// Runs `f` with exclusive access to the shared simulator state.
    pub fn with_state<R>(&self, f: impl FnOnce(&mut SimState) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Serves the guests of `options.os` created from now on with a real guest agent process
    /// through a [`GuestBridge`] (see [`crate::guest_bridge`]).
    ///
    /// # Errors
    ///
    /// The I/O error if the bridge's work directory cannot be created.
    pub fn start_guest_bridge(&self, options: BridgeOptions) -> std::io::Result<GuestBridge> {
        GuestBridge::start(Arc::clone(&self.state), options)
    }

    /// A snapshot of the whole model.
    pub fn snapshot(&self) -> Fleet {
        self.with_state(|s| s.fleet().clone())
    }

    /// Stops every endpoint.
    pub async fn shutdown(self) {
        for host in self.hosts {
            host.endpoint.shutdown().await;
        }
    }
}
