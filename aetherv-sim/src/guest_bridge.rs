//! The guest bridge: a simulated VM whose guest side is a real guest agent process (the
//! `aetherv-guest` binary) instead of the simulated [`crate::guest::GuestAgent`].
//!
//! [`SimFleet::start_guest_bridge`](crate::SimFleet::start_guest_bridge) marks the VMs of one
//! OS family created from then on as bridged ([`SimState::set_bridged_guests`]): they get no
//! simulated agent. A background thread then, for every bridged VM whose KVP service is
//! reachable (Running, KVP integration service on):
//!
//! - starts the agent once, with `--root <work>/<vm>/root --pool-dir <work>/<vm>/pool
//!   --version-file <work>/<vm>/version` (the version file holds the VM's provisioning ISO
//!   version, as the ISO's bootstrap installs it);
//! - mirrors the VM's host-to-guest items into `pool/.kvp_pool_0` (as `hv_kvp_daemon` does),
//!   and the agent's `pool/.kvp_pool_1` items back into the VM's guest-to-host pool.
//!
//! Pool files are written with `aetherv-guest`'s own pool code, under the daemon's lock.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use aetherv_guest::pool::KvpPool;
use uuid::Uuid;

use crate::model::OsFamily;
use crate::state::SimState;

/// Changes the host-to-guest items on their way into the pool file (a test hook, e.g. to
/// tamper with the checksum in transit).
pub type Transform = Arc<dyn Fn(&mut BTreeMap<String, String>) + Send + Sync>;

/// How to run bridged guests.
#[derive(Clone)]
pub struct BridgeOptions {
    /// The guest agent binary.
    pub program: PathBuf,
    /// Each bridged VM gets `<work_dir>/<vm name>-<vm id>/` (root, pool, version, agent.log).
    pub work_dir: PathBuf,
    /// Which guests are bridged.
    pub os: OsFamily,
    /// How often items are mirrored (and the agent's `--poll-ms`).
    pub poll: Duration,
    /// The version written to the agent's version file instead of the VM's ISO version.
    pub version_override: Option<String>,
    /// Applied to the host's items before they are written to `.kvp_pool_0`.
    pub transform: Option<Transform>,
}

impl std::fmt::Debug for BridgeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgeOptions")
            .field("program", &self.program)
            .field("work_dir", &self.work_dir)
            .field("os", &self.os)
            .field("poll", &self.poll)
            .field("version_override", &self.version_override)
            .field("transform", &self.transform.is_some())
            .finish()
    }
}

impl BridgeOptions {
    /// Bridges Linux guests to `program`, working under `work_dir`, mirroring every 50 ms.
    pub fn new(program: impl Into<PathBuf>, work_dir: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            work_dir: work_dir.into(),
            os: OsFamily::Linux,
            poll: Duration::from_millis(50),
            version_override: None,
            transform: None,
        }
    }
}

/// One bridged VM's agent and mirror state.
struct Slot {
    dir: PathBuf,
    child: Option<Child>,
    last_host: Option<BTreeMap<String, String>>,
    last_guest: Option<BTreeMap<String, String>>,
}

/// A running bridge; stop it with [`GuestBridge::shutdown`] (dropping it also stops it and
/// kills the agents).
pub struct GuestBridge {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    work_dir: PathBuf,
}

impl std::fmt::Debug for GuestBridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestBridge")
            .field("work_dir", &self.work_dir)
            .finish_non_exhaustive()
    }
}

/// What the bridge needs of one VM, read under the state lock.
struct VmView {
    id: Uuid,
    host: String,
    name: String,
    reachable: bool,
    host_items: BTreeMap<String, String>,
    version: Option<String>,
}

impl GuestBridge {
    /// Marks guests of `options.os` created from now on as bridged and starts the mirror
    /// thread over `state`.
    ///
    /// # Errors
    ///
    /// The I/O error if the work directory cannot be created.
    pub fn start(state: Arc<Mutex<SimState>>, options: BridgeOptions) -> std::io::Result<Self> {
        std::fs::create_dir_all(&options.work_dir)?;
        state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set_bridged_guests(Some(options.os));
        let stop = Arc::new(AtomicBool::new(false));
        let work_dir = options.work_dir.clone();
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("sim-guest-bridge".to_owned())
                .spawn(move || bridge_loop(&state, &options, &stop))?
        };
        Ok(Self {
            stop,
            thread: Some(thread),
            work_dir,
        })
    }

    /// The directory of a bridged VM's agent (`root/`, `pool/`, `version`, `agent.log`).
    pub fn vm_dir(&self, name: &str, id: Uuid) -> PathBuf {
        vm_dir(&self.work_dir, name, id)
    }

    /// Stops the mirror thread and kills the agents still running.
    pub fn shutdown(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for GuestBridge {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

fn vm_dir(work: &Path, name: &str, id: Uuid) -> PathBuf {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    work.join(format!("{safe}-{id}"))
}

fn bridge_loop(state: &Mutex<SimState>, options: &BridgeOptions, stop: &AtomicBool) {
    let mut slots: BTreeMap<Uuid, Slot> = BTreeMap::new();
    while !stop.load(Ordering::SeqCst) {
        let views = {
            let state = state.lock().unwrap_or_else(|e| e.into_inner());
            state
                .bridged_vms()
                .into_iter()
                .filter_map(|(host, id)| {
                    let vm = state.fleet().vm(&host, &id.to_string()).ok()?;
                    Some(VmView {
                        id,
                        host,
                        name: vm.name.clone(),
                        reachable: vm.kvp_reachable(),
                        host_items: vm.kvp.host_to_guest.clone(),
                        version: vm.guest.agent_version.clone(),
                    })
                })
                .collect::<Vec<_>>()
        };
        let live: BTreeSet<Uuid> = views.iter().map(|v| v.id).collect();
        // VMs that were removed: stop their agents.
        slots.retain(|id, slot| {
            if live.contains(id) {
                return true;
            }
            kill(slot);
            false
        });
        for view in views {
            if !view.reachable {
                continue;
            }
            let slot = slots.entry(view.id).or_insert_with(|| Slot {
                dir: vm_dir(&options.work_dir, &view.name, view.id),
                child: None,
                last_host: None,
                last_guest: None,
            });
            if let Some(guest_items) = mirror(slot, &view, options) {
                let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
                if let Ok(vm) = state.fleet_mut().vm_mut(&view.host, &view.id.to_string()) {
                    vm.kvp
                        .guest_to_host
                        .retain(|k, _| !k.starts_with(aetherv_kvp::keys::PREFIX));
                    vm.kvp.guest_to_host.extend(guest_items);
                }
            }
        }
        std::thread::sleep(options.poll);
    }
    for slot in slots.values_mut() {
        kill(slot);
    }
}

fn kill(slot: &mut Slot) {
    if let Some(mut child) = slot.child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Starts the agent if needed, mirrors the host's items into pool 0, and returns the agent's
/// `hlvmm.*` items when they changed.
fn mirror(
    slot: &mut Slot,
    view: &VmView,
    options: &BridgeOptions,
) -> Option<BTreeMap<String, String>> {
    if slot.child.is_none() && slot.last_host.is_none() {
        match start_agent(slot, view, options) {
            Ok(child) => slot.child = Some(child),
            Err(e) => {
                tracing::warn!(vm = %view.name, "cannot start the bridged guest agent: {e}");
                slot.last_host = Some(BTreeMap::new());
                return None;
            }
        }
    }
    let pool_dir = slot.dir.join("pool");
    let mut host_items: BTreeMap<String, String> = view
        .host_items
        .iter()
        .filter(|(k, _)| k.starts_with(aetherv_kvp::keys::PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(transform) = &options.transform {
        transform(&mut host_items);
    }
    if slot.last_host.as_ref() != Some(&host_items) {
        let pool = KvpPool::host_to_guest(&pool_dir);
        let removed: Vec<&str> = slot
            .last_host
            .iter()
            .flat_map(|m| m.keys())
            .filter(|k| !host_items.contains_key(*k))
            .map(String::as_str)
            .collect();
        match pool.update(
            host_items.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            &removed,
        ) {
            Ok(()) => slot.last_host = Some(host_items),
            Err(e) => tracing::warn!(vm = %view.name, "cannot write the guest's pool: {e}"),
        }
    }
    let guest = KvpPool::guest_to_host(&pool_dir).read().ok()?;
    let guest: BTreeMap<String, String> = guest
        .into_iter()
        .filter(|(k, _)| k.starts_with(aetherv_kvp::keys::PREFIX))
        .collect();
    if slot.last_guest.as_ref() == Some(&guest) {
        return None;
    }
    slot.last_guest = Some(guest.clone());
    Some(guest)
}

fn start_agent(slot: &Slot, view: &VmView, options: &BridgeOptions) -> std::io::Result<Child> {
    let root = slot.dir.join("root");
    let pool = slot.dir.join("pool");
    std::fs::create_dir_all(&root)?;
    std::fs::create_dir_all(&pool)?;
    let version_file = slot.dir.join("version");
    if let Some(version) = options.version_override.as_ref().or(view.version.as_ref()) {
        std::fs::write(&version_file, format!("{version}\n"))?;
    }
    let log = std::fs::File::create(slot.dir.join("agent.log"))?;
    let poll_ms = options.poll.as_millis().max(1).to_string();
    Command::new(&options.program)
        .arg("run")
        .arg("--root")
        .arg(&root)
        .arg("--pool-dir")
        .arg(&pool)
        .arg("--version-file")
        .arg(&version_file)
        .args(["--poll-ms", &poll_ms])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
}
