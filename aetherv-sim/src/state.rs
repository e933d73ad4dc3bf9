//! The simulator's mutable state: the fleet plus one guest agent per VM that still has its
//! provisioning agent running. Every change that a guest could notice (KVP writes, power
//! changes) goes through here so the agent reacts at once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use uuid::Uuid;

use crate::deploy::HostFiles;
use crate::error::Result;
use crate::guest::{GuestAgent, KeySource};
use crate::model::{Fleet, NewVm, PowerAction, SimVm, check_kvp_item};

/// The fleet and its guest agents.
#[derive(Debug, Clone)]
pub struct SimState {
    fleet: Fleet,
    agents: BTreeMap<Uuid, GuestAgent>,
    keys: KeySource,
    files: BTreeMap<String, HostFiles>,
    loose_files: BTreeMap<(String, String), LooseFile>,
    /// Lowercase names of VMs whose guest runs no provisioning agent.
    silent: BTreeSet<String>,
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
}

impl SimState {
    /// State over `fleet`; agents of VMs created later get keys from `keys`.
    ///
    /// Generated VMs count as provisioned long ago: they have no agent running.
    pub fn new(fleet: Fleet, keys: KeySource) -> Self {
        Self {
            fleet,
            agents: BTreeMap::new(),
            keys,
            files: BTreeMap::new(),
            loose_files: BTreeMap::new(),
            silent: BTreeSet::new(),
        }
    }

    /// VMs created later with one of these names (case-insensitive) get no guest agent: the
    /// guest never answers the host's KVP items, as a golden image without the agent.
    pub fn set_silent_guests(&mut self, names: impl IntoIterator<Item = String>) {
        self.silent = names.into_iter().map(|n| n.to_ascii_lowercase()).collect();
    }

    /// The fleet.
    pub fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    /// Mutable access to the fleet. Changes made here do not wake guest agents; call
    /// [`SimState::drive_agent`] afterwards if a guest should notice.
    pub fn fleet_mut(&mut self) -> &mut Fleet {
        &mut self.fleet
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
        let id = self.fleet.vm(host, vm)?.id;
        self.agents.insert(id, agent);
        self.drive_agent(host, vm)
    }

    /// Lets the VM's agent react to the current KVP pools.
    pub fn drive_agent(&mut self, host: &str, vm: &str) -> Result<()> {
        let v = self.fleet.vm_mut(host, vm)?;
        if let Some(agent) = self.agents.get_mut(&v.id) {
            agent.drive(v);
        }
        Ok(())
    }

    /// Writes a host-to-guest KVP item (`Add-/Set-VMKeyValuePair` semantics: creates or
    /// replaces) and lets the guest react.
    pub fn set_host_kvp(&mut self, host: &str, vm: &str, key: &str, value: &str) -> Result<()> {
        check_kvp_item(key, value)?;
        let v = self.fleet.vm_mut(host, vm)?;
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
        let v = self.fleet.vm_mut(host, vm)?;
        let existed = v.kvp.host_to_guest.remove(key).is_some();
        self.drive_agent(host, vm)?;
        Ok(existed)
    }

    /// Creates a VM from a golden image (see [`Fleet::create_vm`]) with a fresh guest agent of
    /// the image's OS family and the provisioning ISO's version (none for a silent guest, see
    /// [`SimState::set_silent_guests`]).
    pub fn create_vm(&mut self, host: &str, spec: &NewVm, now: SystemTime) -> Result<Uuid> {
        let id = self.fleet.create_vm(host, spec, now)?;
        let vm = self.fleet.vm(host, &id.to_string())?;
        if self.silent.contains(&vm.name.to_ascii_lowercase()) {
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
        self.fleet.power(host, vm, action, now)?;
        self.drive_agent(host, vm)
    }

    /// Removes an Off VM and its agent.
    pub fn remove_vm(&mut self, host: &str, vm: &str) -> Result<SimVm> {
        let removed = self.fleet.remove_vm(host, vm)?;
        self.agents.remove(&removed.id);
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
