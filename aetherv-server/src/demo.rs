//! The demo fleet (feature `demo`): simulated Hyper-V hosts served over real WinRM (NTLM with
//! message encryption) on loopback, which the server then manages exactly like real hosts.
//!
//! This is the only module that uses the simulator; without the `demo` feature it is not
//! compiled and a server with no hosts configured refuses to start.

use aetherv_sim::{BridgeOptions, Credentials, FleetSpec, GuestBridge, SimFleet, SimOptions};
use aetherv_winrm::Secret;

use crate::config::{DemoConfig, HostTarget, Transport, random_secret};

/// The WinRM user of the simulated demo hosts.
pub const DEMO_USER: &str = "aetherv-demo";

/// A running simulated fleet; stop it with [`DemoFleet::shutdown`].
pub struct DemoFleet {
    fleet: SimFleet,
    /// The real Linux agent serving new Linux VMs (`AETHERV_DEMO_GUEST_AGENT`), and its
    /// work directory (each guest's root and pool files), removed at shutdown.
    bridge: Option<(GuestBridge, std::path::PathBuf)>,
}

impl std::fmt::Debug for DemoFleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoFleet")
            .field("hosts", &self.hosts())
            .finish()
    }
}

impl DemoFleet {
    /// Starts the simulated fleet `demo` describes (fresh hosts: the server deploys its
    /// scripts under `install_directory`, as on a new real host) and returns it with the host
    /// targets that manage it.
    ///
    /// # Errors
    ///
    /// A message saying why the fleet could not start (e.g. no loopback port).
    pub async fn start(
        demo: &DemoConfig,
        install_directory: &str,
    ) -> Result<(Self, Vec<HostTarget>), String> {
        let password: Secret = demo.password.clone().unwrap_or_else(|| random_secret(24));
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
            migration: aetherv_sim::MigrationTiming::per_memory_gib(
                std::time::Duration::from_millis(demo.migration_ms_per_gib as u64),
            ),
            ..SimOptions::default()
        };
        let fleet = SimFleet::start(spec, Credentials::new(DEMO_USER, password.clone()), options)
            .await
            .map_err(|e| format!("cannot start the demo fleet: {e}"))?;
        let bridge = match &demo.guest_agent {
            Some(agent) => {
                let work = std::env::temp_dir()
                    .join(format!("aetherv-demo-guests-{}", std::process::id()));
                let bridge = fleet
                    .start_guest_bridge(BridgeOptions::new(agent, &work))
                    .map_err(|e| {
                        format!(
                            "cannot start the demo guest agent bridge in {}: {e}",
                            work.display()
                        )
                    })?;
                tracing::info!(
                    agent = %agent.display(),
                    work = %work.display(),
                    "demo Linux VMs are served by the real guest agent"
                );
                Some((bridge, work))
            }
            None => None,
        };
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
                kerberos: None,
                ca_file: None,
                cert_sha256: Vec::new(),
                insecure: false,
                image_boot: Vec::new(),
                resources: aetherv_provision::resources::HostDefinitions::default(),
                image_roots: Vec::new(),
            })
            .collect();
        Ok((Self { fleet, bridge }, targets))
    }

    /// The simulated hosts: `(name, WS-Man endpoint)`.
    #[must_use]
    pub fn hosts(&self) -> Vec<(String, String)> {
        self.fleet
            .hosts()
            .iter()
            .map(|h| (h.name().to_owned(), h.endpoint()))
            .collect()
    }

    /// The simulated fleet itself (tests inject faults through it: outages, freezes).
    #[must_use]
    pub fn sim(&self) -> &SimFleet {
        &self.fleet
    }

    /// Stops every simulated host (and the guest agents of the bridge, whose work directory
    /// is removed).
    pub async fn shutdown(self) {
        if let Some((bridge, work)) = self.bridge {
            bridge.shutdown();
            let _ = std::fs::remove_dir_all(work);
        }
        self.fleet.shutdown().await;
    }
}
