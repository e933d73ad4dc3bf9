//! The simulator's mutable state: the fleet plus one guest agent per VM that still has its
//! provisioning agent running. Every change that a guest could notice (KVP writes, power
//! changes) goes through here so the agent reacts at once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use uuid::Uuid;

use crate::deploy::HostFiles;
use crate::error::{Error, Result};
use crate::guest::{GuestAgent, KeySource};
use crate::model::{
    ControllerType, Fleet, NewVm, OsFamily, PowerAction, SimVm, VmState, check_kvp_item,
};

use tracked::TrackedFleet;

/// The fleet behind a change counter, in its own module so that nothing, not even
/// [`SimState`], reaches the fleet without going through it.
mod tracked {
    use crate::model::Fleet;

    /// The fleet and a count of the times it was lent out for a change: the only way to change
    /// it is [`TrackedFleet::get_mut`], so a value remembered with a generation is still valid
    /// while the generation is the same.
    #[derive(Debug, Clone)]
    pub(super) struct TrackedFleet {
        fleet: Fleet,
        generation: u64,
    }

    impl TrackedFleet {
        pub(super) fn new(fleet: Fleet) -> Self {
            Self {
                fleet,
                generation: 0,
            }
        }

        pub(super) fn get(&self) -> &Fleet {
            &self.fleet
        }

        pub(super) fn get_mut(&mut self) -> &mut Fleet {
            self.generation = self.generation.wrapping_add(1);
            &mut self.fleet
        }

        pub(super) fn generation(&self) -> u64 {
            self.generation
        }
    }
}

/// The fleet and its guest agents.
#[derive(Debug, Clone)]
pub struct SimState {
    fleet: TrackedFleet,
    /// Each host's last inventory digest, with the fleet generation it was computed at
    /// (see [`SimState::cached_digest`]).
    digests: BTreeMap<String, (u64, String)>,
    agents: BTreeMap<Uuid, GuestAgent>,
    keys: KeySource,
    files: BTreeMap<String, HostFiles>,
    loose_files: BTreeMap<(String, String), LooseFile>,
    /// Lowercase names of VMs whose guest runs no provisioning agent.
    silent: BTreeSet<String>,
    /// Guests of this OS family created from now on are served by a guest bridge
    /// ([`crate::guest_bridge`]) instead of a simulated agent.
    bridged_os: Option<OsFamily>,
    /// VMs whose guest side a guest bridge serves.
    bridged: BTreeSet<Uuid>,
    /// Failover cluster node states (paused nodes, drained roles).
    cluster_nodes: crate::maintenance::ClusterNodes,
    /// Lowercase names of hosts that are down or frozen: no VM can migrate to them.
    unreachable: BTreeSet<String>,
    /// The latest migration job of each VM ([`crate::migration`]).
    pub(crate) migrations: BTreeMap<Uuid, crate::migration::Migration>,
    /// How long moves take.
    pub(crate) migration_timing: crate::migration::MigrationTiming,
}

/// A file a host script created that no VM uses (yet): a copied golden image before its VM is
/// registered, a copied provisioning ISO, a disk kept when its VM was deleted. Keyed by host
/// and lowercase path. Loose files do not count against storage free space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LooseFile {
    /// Full path as created.
    pub path: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// The golden image the file was copied from, for copied VHDXs.
    pub image: Option<String>,
    /// Virtual (maximum) size of a VHDX, when the file is one and its size is known.
    pub max_size_bytes: Option<u64>,
}

impl SimState {
    /// State over `fleet`; agents of VMs created later get keys from `keys`.
    ///
    /// Generated VMs count as provisioned long ago: they have no agent running.
    pub fn new(fleet: Fleet, keys: KeySource) -> Self {
        Self {
            fleet: TrackedFleet::new(fleet),
            digests: BTreeMap::new(),
            agents: BTreeMap::new(),
            keys,
            files: BTreeMap::new(),
            loose_files: BTreeMap::new(),
            silent: BTreeSet::new(),
            bridged_os: None,
            bridged: BTreeSet::new(),
            cluster_nodes: crate::maintenance::ClusterNodes::default(),
            unreachable: BTreeSet::new(),
            migrations: BTreeMap::new(),
            migration_timing: crate::migration::MigrationTiming::default(),
        }
    }

    /// Marks `host` down (or frozen) or back: other hosts cannot reach it meanwhile.
    pub fn set_unreachable(&mut self, host: &str, down: bool) {
        if down {
            self.unreachable.insert(host.to_ascii_lowercase());
        } else {
            self.unreachable.remove(&host.to_ascii_lowercase());
        }
    }

    /// Whether `host` is down or frozen.
    pub fn is_unreachable(&self, host: &str) -> bool {
        self.unreachable.contains(&host.to_ascii_lowercase())
    }

    /// The failover cluster node states.
    pub fn cluster_nodes(&self) -> &crate::maintenance::ClusterNodes {
        &self.cluster_nodes
    }

    /// The failover cluster node states, to change.
    pub fn cluster_nodes_mut(&mut self) -> &mut crate::maintenance::ClusterNodes {
        &mut self.cluster_nodes
    }

    /// Guests of `os` created from now on get no simulated agent: a guest bridge
    /// ([`crate::guest_bridge`]) serves their KVP pools with a real agent process. `None`
    /// stops bridging new VMs.
    pub fn set_bridged_guests(&mut self, os: Option<OsFamily>) {
        self.bridged_os = os;
    }

    /// The bridged VMs that still exist: `(host name, VM id)`.
    pub fn bridged_vms(&self) -> Vec<(String, Uuid)> {
        self.fleet
            .get()
            .hosts
            .iter()
            .flat_map(|h| {
                h.vms
                    .iter()
                    .filter(|vm| self.bridged.contains(&vm.id))
                    .map(|vm| (h.name.clone(), vm.id))
            })
            .collect()
    }

    /// VMs created later with one of these names (case-insensitive) get no guest agent: the
    /// guest never answers the host's KVP items, as a golden image without the agent.
    pub fn set_silent_guests(&mut self, names: impl IntoIterator<Item = String>) {
        self.silent = names.into_iter().map(|n| n.to_ascii_lowercase()).collect();
    }

    /// The fleet.
    pub fn fleet(&self) -> &Fleet {
        self.fleet.get()
    }

    /// Mutable access to the fleet. Changes made here do not wake guest agents; call
    /// [`SimState::drive_agent`] afterwards if a guest should notice. Every call counts as a
    /// change: it forgets the cached inventory digests.
    pub fn fleet_mut(&mut self) -> &mut Fleet {
        self.fleet.get_mut()
    }

    /// The inventory digest last remembered for `host` ([`SimState::remember_digest`]), if
    /// nobody has had mutable access to the fleet since.
    pub fn cached_digest(&self, host: &str) -> Option<&str> {
        self.digests
            .get(&host.to_ascii_lowercase())
            .filter(|(generation, _)| *generation == self.fleet.generation())
            .map(|(_, digest)| digest.as_str())
    }

    /// Remembers `host`'s inventory digest until the fleet is next lent out for a change.
    /// Only for a digest that time alone cannot change (see [`crate::scripts::inventory`]).
    pub fn remember_digest(&mut self, host: &str, digest: String) {
        let generation = self.fleet.generation();
        self.digests
            .insert(host.to_ascii_lowercase(), (generation, digest));
    }

    /// The deployment file system of `host` (see [`crate::deploy`]), if anything was
    /// ever written to it.
    pub fn host_files(&self, host: &str) -> Option<&HostFiles> {
        self.files.get(&host.to_ascii_lowercase())
    }

    /// Mutable access to the deployment file system of `host` (created empty on first use).
    pub fn host_files_mut(&mut self, host: &str) -> &mut HostFiles {
        self.files.entry(host.to_ascii_lowercase()).or_default()
    }

    /// The guest agent of a VM, if one is running.
    pub fn agent(&self, vm: Uuid) -> Option<&GuestAgent> {
        self.agents.get(&vm)
    }

    /// Installs (or replaces) a guest agent in a VM, e.g. to re-run provisioning on a
    /// generated VM or to inject a specific key.
    pub fn install_agent(&mut self, host: &str, vm: &str, agent: GuestAgent) -> Result<()> {
        let id = self.fleet.get().vm(host, vm)?.id;
        self.agents.insert(id, agent);
        self.drive_agent(host, vm)
    }

    /// Lets the VM's agent react to the current KVP pools.
    pub fn drive_agent(&mut self, host: &str, vm: &str) -> Result<()> {
        let v = self.fleet.get_mut().vm_mut(host, vm)?;
        if let Some(agent) = self.agents.get_mut(&v.id) {
            agent.drive(v);
        }
        Ok(())
    }

    /// Writes a host-to-guest KVP item (`Add-/Set-VMKeyValuePair` semantics: creates or
    /// replaces) and lets the guest react.
    pub fn set_host_kvp(&mut self, host: &str, vm: &str, key: &str, value: &str) -> Result<()> {
        check_kvp_item(key, value)?;
        let v = self.fleet.get_mut().vm_mut(host, vm)?;
        v.kvp.host_to_guest.insert(key.to_owned(), value.to_owned());
        self.drive_agent(host, vm)
    }

    /// Writes several host-to-guest items in order, letting the guest react after each.
    pub fn set_host_kvps<'a>(
        &mut self,
        host: &str,
        vm: &str,
        items: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<()> {
        for (key, value) in items {
            self.set_host_kvp(host, vm, key, value)?;
        }
        Ok(())
    }

    /// Removes a host-to-guest KVP item; returns whether it existed.
    pub fn remove_host_kvp(&mut self, host: &str, vm: &str, key: &str) -> Result<bool> {
        let v = self.fleet.get_mut().vm_mut(host, vm)?;
        let existed = v.kvp.host_to_guest.remove(key).is_some();
        self.drive_agent(host, vm)?;
        Ok(existed)
    }

    /// Creates a VM from a golden image (see [`Fleet::create_vm`]) with a fresh guest agent of
    /// the image's OS family and the provisioning ISO's version (none for a silent guest, see
    /// [`SimState::set_silent_guests`]).
    pub fn create_vm(&mut self, host: &str, spec: &NewVm, now: SystemTime) -> Result<Uuid> {
        let id = self.fleet.get_mut().create_vm(host, spec, now)?;
        let vm = self.fleet.get().vm(host, &id.to_string())?;
        if self.silent.contains(&vm.name.to_ascii_lowercase()) {
            return Ok(id);
        }
        if self.bridged_os == Some(vm.guest.os_family) {
            self.bridged.insert(id);
            return Ok(id);
        }
        let agent = GuestAgent::new(
            vm.guest.os_family,
            vm.guest.agent_version.clone(),
            self.keys.clone(),
        );
        self.agents.insert(id, agent);
        Ok(id)
    }

    /// Applies a power operation and lets the guest react (a started guest picks up KVP items
    /// written while it was off).
    pub fn power(
        &mut self,
        host: &str,
        vm: &str,
        action: PowerAction,
        now: SystemTime,
    ) -> Result<()> {
        self.fleet.get_mut().power(host, vm, action, now)?;
        self.drive_agent(host, vm)
    }

    /// Removes an Off VM and its agent.
    pub fn remove_vm(&mut self, host: &str, vm: &str) -> Result<SimVm> {
        let removed = self.fleet.get_mut().remove_vm(host, vm)?;
        self.agents.remove(&removed.id);
        self.bridged.remove(&removed.id);
        Ok(removed)
    }

    /// Records a loose file on `host` (replacing one at the same path).
    pub fn add_loose_file(&mut self, host: &str, file: LooseFile) {
        self.loose_files.insert(
            (host.to_ascii_lowercase(), file.path.to_ascii_lowercase()),
            file,
        );
    }

    /// The loose file at `path` on `host`.
    pub fn loose_file(&self, host: &str, path: &str) -> Option<&LooseFile> {
        self.loose_files
            .get(&(host.to_ascii_lowercase(), path.to_ascii_lowercase()))
    }

    /// Whether a loose file exists at or below `path` on `host`.
    pub fn loose_path_exists(&self, host: &str, path: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.loose_files.iter().any(|((h, p), _)| {
            *h == host && (p.eq_ignore_ascii_case(path) || crate::model::path_is_under(p, path))
        })
    }

    /// `Resize-VHD -Path <path> -SizeBytes <size>` on `host`, with Hyper-V's rules: the file
    /// must exist (a loose VHDX or a VM's disk); a VHDX can be expanded, and shrunk only down to
    /// its minimum size, which here is its current virtual size (the guest's partition fills
    /// the disk); a disk attached to a running VM is resized online only on the SCSI controller
    /// (never on IDE). Returns the new virtual size.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] (`what`: "virtual disk") saying which rule refused it.
    pub fn resize_vhd(&mut self, host: &str, path: &str, size_bytes: u64) -> Result<u64> {
        let refuse = |detail: String| Error::Invalid {
            what: "virtual disk",
            detail,
        };
        if !path.to_ascii_lowercase().ends_with(".vhdx") {
            return Err(refuse(format!("{path} is not a VHDX")));
        }
        if size_bytes == 0 || !size_bytes.is_multiple_of(512) {
            return Err(refuse(format!(
                "{size_bytes} bytes is not a positive multiple of the 512-byte sector"
            )));
        }
        let key = (host.to_ascii_lowercase(), path.to_ascii_lowercase());
        if let Some(file) = self.loose_files.get_mut(&key) {
            let current = file.max_size_bytes.unwrap_or(0);
            if size_bytes < current {
                return Err(refuse(format!(
                    "{path} cannot shrink from {current} to {size_bytes} bytes: below its \
                     minimum size"
                )));
            }
            file.max_size_bytes = Some(size_bytes);
            return Ok(size_bytes);
        }
        let host_name = self
            .fleet
            .get()
            .host(host)
            .map(|h| h.name.clone())
            .ok_or_else(|| Error::UnknownHost {
                host: host.to_owned(),
            })?;
        let attached = self.fleet.get_mut().host_mut(&host_name).and_then(|h| {
            h.vms.iter_mut().find_map(|vm| {
                let running = vm.state != VmState::Off;
                let name = vm.name.clone();
                vm.disks
                    .iter_mut()
                    .find(|d| d.path.eq_ignore_ascii_case(path))
                    .map(|d| (d, running, name))
            })
        });
        let Some((disk, running, vm)) = attached else {
            return Err(refuse(format!(
                "no virtual disk at {path} on host {host_name}"
            )));
        };
        if running && disk.controller_type == ControllerType::Ide {
            return Err(refuse(format!(
                "{path} is attached to the IDE controller of VM {vm}, which is not off; \
                 only SCSI disks are resized online"
            )));
        }
        if size_bytes < disk.max_size_bytes {
            return Err(refuse(format!(
                "{path} cannot shrink from {} to {size_bytes} bytes: below its minimum size",
                disk.max_size_bytes
            )));
        }
        disk.max_size_bytes = size_bytes;
        Ok(size_bytes)
    }

    /// Removes the loose files at or below `path` on `host`; returns how many were removed.
    pub fn remove_loose_files(&mut self, host: &str, path: &str) -> usize {
        let host = host.to_ascii_lowercase();
        let before = self.loose_files.len();
        self.loose_files.retain(|(h, p), _| {
            !(*h == host && (p.eq_ignore_ascii_case(path) || crate::model::path_is_under(p, path)))
        });
        before - self.loose_files.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::generate::FleetSpec;
    use crate::guest::shared_test_key;
    use crate::model::GIB;

    const HOST: &str = "hv01";

    fn state() -> SimState {
        let fleet = Fleet::generate(FleetSpec::new(1, 0)).unwrap();
        SimState::new(fleet, KeySource::Fixed(shared_test_key()))
    }

    #[test]
    fn resize_vhd_follows_hyperv_rules() {
        let mut state = state();
        let now = FleetSpec::default().epoch;
        // A file that does not exist.
        let err = state
            .resize_vhd(HOST, r"D:\nowhere\x.vhdx", 100 * GIB)
            .unwrap_err();
        assert!(err.to_string().contains("no virtual disk"), "{err}");
        // A loose copy grows, never shrinks below its size.
        let path = r"D:\Hyper-V\Virtual Machines\c\Virtual Hard Disks\c.vhdx";
        state.add_loose_file(
            HOST,
            LooseFile {
                path: path.to_owned(),
                size_bytes: 4 * GIB,
                image: Some("Ubuntu 24.04 LTS".to_owned()),
                max_size_bytes: Some(64 * GIB),
            },
        );
        assert_eq!(state.resize_vhd(HOST, path, 80 * GIB).unwrap(), 80 * GIB);
        let err = state.resize_vhd(HOST, path, 70 * GIB).unwrap_err();
        assert!(err.to_string().contains("cannot shrink"), "{err}");
        assert_eq!(
            state.loose_file(HOST, path).unwrap().max_size_bytes,
            Some(80 * GIB)
        );
        assert!(state.resize_vhd(HOST, path, 80 * GIB + 1).is_err());
        // An attached SCSI disk grows online; an IDE one only while the VM is off.
        state
            .create_vm(HOST, &NewVm::new("r-01", "Ubuntu 24.04 LTS"), now)
            .unwrap();
        state.power(HOST, "r-01", PowerAction::Start, now).unwrap();
        let disk = state.fleet().vm(HOST, "r-01").unwrap().disks[0]
            .path
            .clone();
        assert_eq!(state.resize_vhd(HOST, &disk, 96 * GIB).unwrap(), 96 * GIB);
        assert_eq!(
            state.fleet().vm(HOST, "r-01").unwrap().disks[0].max_size_bytes,
            96 * GIB
        );
        state.fleet_mut().vm_mut(HOST, "r-01").unwrap().disks[0].controller_type =
            ControllerType::Ide;
        let err = state.resize_vhd(HOST, &disk, 128 * GIB).unwrap_err();
        assert!(err.to_string().contains("IDE"), "{err}");
        state
            .power(HOST, "r-01", PowerAction::TurnOff, now)
            .unwrap();
        assert!(state.resize_vhd(HOST, &disk, 128 * GIB).is_ok());
    }
}
