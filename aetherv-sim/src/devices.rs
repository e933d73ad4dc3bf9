//! Checkpoints and network adapters of simulated VMs, with the rules real Hyper-V applies:
//!
//! - a checkpoint applies only to a VM that is Off or Saved; a standard checkpoint taken of a
//!   running VM holds its memory and applies as Saved, anything else applies as Off;
//! - with the checkpoint type `Production` (New-VM's default) a running VM whose guest can
//!   freeze its file systems (the Backup (volume shadow copy) integration service) gets a
//!   production checkpoint, otherwise Hyper-V falls back to a standard one; `Disabled`
//!   refuses checkpoints;
//! - removing a checkpoint reparents its children (or removes them with the subtree) and
//!   starts a merge of the differencing disks that runs in the background (online, as since
//!   Windows Server 2012); while it runs the VM takes no new checkpoint and applies none;
//! - a legacy network adapter exists only on generation 1 and is added or removed only while
//!   the VM is Off; a synthetic adapter is hot-added or hot-removed only on generation 2
//!   (Windows Server 2016 and later); a VM has at most 8 synthetic and 4 legacy adapters;
//! - a static MAC address (or the switch between dynamic and static) changes only while the
//!   VM is Off; the switch, VLAN, guards and bandwidth change in any state.

use std::time::{Duration, SystemTime};

use uuid::Uuid;

use crate::error::{Error, Result};
use crate::model::{Fleet, NetworkAdapter, SimVm, VmState};

/// How long the simulated merge of one removed checkpoint's differencing disk takes.
pub const MERGE_PER_CHECKPOINT: Duration = Duration::from_millis(1500);
/// Hyper-V's limit of synthetic network adapters per VM.
pub const MAX_SYNTHETIC_ADAPTERS: usize = 8;
/// Hyper-V's limit of legacy network adapters per (generation 1) VM.
pub const MAX_LEGACY_ADAPTERS: usize = 4;

/// A VM's checkpoint type setting (`Set-VM -CheckpointType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CheckpointType {
    /// Production when the guest can, else standard (New-VM's default).
    #[default]
    Production,
    /// Production or fail.
    ProductionOnly,
    /// Always standard.
    Standard,
    /// No checkpoints.
    Disabled,
}

/// One checkpoint of a simulated VM.
#[derive(Debug, Clone, PartialEq)]
pub struct SimCheckpoint {
    /// Its id.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// The checkpoint it was taken after.
    pub parent: Option<Uuid>,
    /// When it was taken.
    pub created: SystemTime,
    /// Whether it is a production checkpoint (no memory).
    pub production: bool,
    /// The VM state it captured.
    pub vm_state: VmState,
    /// The processor count it captured.
    pub processor_count: u32,
    /// The startup memory it captured.
    pub memory_startup_bytes: u64,
    /// The network adapters it captured.
    pub nics: Vec<NetworkAdapter>,
}

impl SimCheckpoint {
    /// Hyper-V's `SnapshotType` name as the inventory script writes it.
    pub fn snapshot_type(&self) -> &'static str {
        if self.production {
            "Recovery"
        } else {
            "Standard"
        }
    }
}

/// A merge of differencing disks in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Merge {
    /// When it started.
    pub started: SystemTime,
    /// How long it takes.
    pub duration: Duration,
}

/// The checkpoints of a VM.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Checkpoints {
    /// Every checkpoint, oldest first.
    pub list: Vec<SimCheckpoint>,
    /// The checkpoint the VM runs from (the parent of the next one).
    pub current: Option<Uuid>,
    /// The VM's checkpoint type.
    pub checkpoint_type: CheckpointType,
    /// The merge running after a removal, if any.
    pub merge: Option<Merge>,
}

impl Checkpoints {
    /// How far the merge is at `now` (percent), or `None` when none runs.
    pub fn merge_percent(&self, now: SystemTime) -> Option<u8> {
        let merge = self.merge?;
        let elapsed = now.duration_since(merge.started).unwrap_or_default();
        if elapsed >= merge.duration || merge.duration.is_zero() {
            return None;
        }
        let percent = elapsed.as_millis() * 100 / merge.duration.as_millis();
        Some(u8::try_from(percent.min(99)).unwrap_or(99))
    }

    /// The checkpoint with this id.
    pub fn get(&self, id: Uuid) -> Option<&SimCheckpoint> {
        self.list.iter().find(|c| c.id == id)
    }

    /// The ids of every checkpoint below `id`.
    pub fn descendants(&self, id: Uuid) -> Vec<Uuid> {
        let mut found = Vec::new();
        let mut frontier = vec![id];
        while let Some(parent) = frontier.pop() {
            for c in self.list.iter().filter(|c| c.parent == Some(parent)) {
                found.push(c.id);
                frontier.push(c.id);
            }
        }
        found
    }
}

/// The GUID ending a simulated adapter's Hyper-V id.
pub fn adapter_guid(nic: &NetworkAdapter) -> Option<Uuid> {
    nic.id
        .rsplit('\\')
        .next()
        .and_then(|g| Uuid::parse_str(g).ok())
}

fn state_error(fleet: &Fleet, host: &str, vm: &SimVm, operation: &'static str) -> Error {
    Error::InvalidVmState {
        host: fleet
            .host(host)
            .map_or_else(|| host.to_owned(), |h| h.name.clone()),
        vm: vm.name.clone(),
        state: vm.state.name().to_owned(),
        operation,
    }
}

impl Fleet {
    /// `Checkpoint-VM`: a new checkpoint named `name` of VM `vm`; returns its id.
    pub fn create_checkpoint(
        &mut self,
        host: &str,
        vm: &str,
        name: &str,
        now: SystemTime,
    ) -> Result<Uuid> {
        let (id, _) = self.new_identity();
        let v = self.vm(host, vm)?;
        if v.checkpoints.merge_percent(now).is_some() {
            return Err(state_error(
                self,
                host,
                v,
                "take a checkpoint while its disks are merging",
            ));
        }
        let running = matches!(v.state, VmState::Running | VmState::Paused);
        let guest_freezes = v.state == VmState::Running
            && v.guest_os_boots()
            && v.integration_service_enabled("VSS");
        let production = match v.checkpoints.checkpoint_type {
            CheckpointType::Disabled => {
                return Err(Error::Invalid {
                    what: "checkpoint",
                    detail: format!("checkpoints are disabled for VM {}", v.name),
                });
            }
            CheckpointType::Standard => false,
            CheckpointType::Production => !running || guest_freezes,
            CheckpointType::ProductionOnly => {
                if running && !guest_freezes {
                    return Err(Error::Invalid {
                        what: "checkpoint",
                        detail: format!(
                            "VM {} allows only production checkpoints and its guest cannot freeze its file systems",
                            v.name
                        ),
                    });
                }
                true
            }
        };
        let checkpoint = SimCheckpoint {
            id,
            name: name.to_owned(),
            parent: v.checkpoints.current,
            created: now,
            production,
            vm_state: if production { VmState::Off } else { v.state },
            processor_count: v.processor_count,
            memory_startup_bytes: v.memory.startup_bytes,
            nics: v.nics.clone(),
        };
        let v = self.vm_mut(host, vm)?;
        v.checkpoints.list.push(checkpoint);
        v.checkpoints.current = Some(id);
        Ok(id)
    }

    /// `Restore-VMSnapshot`: the VM must be Off or Saved; it takes the checkpoint's
    /// configuration and ends Saved (a standard checkpoint of a running VM) or Off.
    pub fn apply_checkpoint(
        &mut self,
        host: &str,
        vm: &str,
        checkpoint: Uuid,
        now: SystemTime,
    ) -> Result<VmState> {
        let v = self.vm(host, vm)?;
        if !matches!(v.state, VmState::Off | VmState::Saved) {
            return Err(state_error(
                self,
                host,
                v,
                "apply a checkpoint (the VM must be Off or Saved)",
            ));
        }
        if v.checkpoints.merge_percent(now).is_some() {
            return Err(state_error(
                self,
                host,
                v,
                "apply a checkpoint while its disks are merging",
            ));
        }
        let c = v
            .checkpoints
            .get(checkpoint)
            .cloned()
            .ok_or_else(|| Error::Invalid {
                what: "checkpoint",
                detail: format!("VM {} has no checkpoint {checkpoint}", v.name),
            })?;
        let v = self.vm_mut(host, vm)?;
        let saved = matches!(
            c.vm_state,
            VmState::Running | VmState::Paused | VmState::Saved
        );
        v.state = if saved { VmState::Saved } else { VmState::Off };
        v.memory.assigned_bytes = 0;
        v.started = None;
        v.processor_count = c.processor_count;
        v.memory.startup_bytes = c.memory_startup_bytes;
        v.nics = c.nics;
        for nic in &mut v.nics {
            nic.ip_addresses.clear();
        }
        v.kvp.guest_intrinsic.clear();
        v.checkpoints.current = Some(checkpoint);
        Ok(v.state)
    }

    /// `Rename-VMSnapshot` (any state).
    pub fn rename_checkpoint(
        &mut self,
        host: &str,
        vm: &str,
        checkpoint: Uuid,
        name: &str,
    ) -> Result<()> {
        let v = self.vm_mut(host, vm)?;
        let vm_name = v.name.clone();
        let c = v
            .checkpoints
            .list
            .iter_mut()
            .find(|c| c.id == checkpoint)
            .ok_or_else(|| Error::Invalid {
                what: "checkpoint",
                detail: format!("VM {vm_name} has no checkpoint {checkpoint}"),
            })?;
        name.clone_into(&mut c.name);
        Ok(())
    }

    /// `Remove-VMSnapshot` (any state): removes the checkpoint (and with `subtree` its
    /// descendants; otherwise its children move to its parent) and starts the merge.
    /// Returns the removed ids.
    pub fn remove_checkpoint(
        &mut self,
        host: &str,
        vm: &str,
        checkpoint: Uuid,
        subtree: bool,
        now: SystemTime,
    ) -> Result<Vec<Uuid>> {
        let v = self.vm_mut(host, vm)?;
        let vm_name = v.name.clone();
        let c = v
            .checkpoints
            .get(checkpoint)
            .cloned()
            .ok_or_else(|| Error::Invalid {
                what: "checkpoint",
                detail: format!("VM {vm_name} has no checkpoint {checkpoint}"),
            })?;
        let mut removed = vec![checkpoint];
        if subtree {
            removed.extend(v.checkpoints.descendants(checkpoint));
        }
        v.checkpoints.list.retain(|x| !removed.contains(&x.id));
        for child in &mut v.checkpoints.list {
            if child.parent == Some(checkpoint) {
                child.parent = c.parent;
            }
        }
        if v.checkpoints
            .current
            .is_some_and(|cur| removed.contains(&cur))
        {
            v.checkpoints.current = c.parent;
        }
        let pending = v
            .checkpoints
            .merge
            .map(|m| {
                m.duration
                    .saturating_sub(now.duration_since(m.started).unwrap_or_default())
            })
            .unwrap_or_default();
        let count = u32::try_from(removed.len()).unwrap_or(u32::MAX);
        v.checkpoints.merge = Some(Merge {
            started: now,
            duration: pending + MERGE_PER_CHECKPOINT * count,
        });
        Ok(removed)
    }

    /// `Add-VMNetworkAdapter`: returns the new adapter's GUID.
    pub fn add_network_adapter(
        &mut self,
        host: &str,
        vm: &str,
        name: &str,
        legacy: bool,
    ) -> Result<Uuid> {
        let (guid, mac) = self.new_identity();
        let v = self.vm(host, vm)?;
        if legacy && v.generation == 2 {
            return Err(Error::Invalid {
                what: "legacy",
                detail: "a generation 2 VM has no legacy network adapters".to_owned(),
            });
        }
        self.check_hot_plug(host, v, legacy)?;
        let count = v.nics.iter().filter(|n| n.legacy == legacy).count();
        let limit = if legacy {
            MAX_LEGACY_ADAPTERS
        } else {
            MAX_SYNTHETIC_ADAPTERS
        };
        if count >= limit {
            return Err(Error::Invalid {
                what: "network adapter",
                detail: format!(
                    "VM {} already has {count} {} network adapters, Hyper-V's limit",
                    v.name,
                    if legacy { "legacy" } else { "synthetic" }
                ),
            });
        }
        let nic = NetworkAdapter {
            name: if name.is_empty() {
                "Network Adapter".to_owned()
            } else {
                name.to_owned()
            },
            switch_name: None,
            vlan_id: None,
            mac_address: mac,
            ip_addresses: Vec::new(),
            id: format!(
                "Microsoft:{}\\{}",
                v.id.hyphenated().to_string().to_ascii_uppercase(),
                guid.hyphenated().to_string().to_ascii_uppercase()
            ),
            dynamic_mac: true,
            legacy,
            ..NetworkAdapter::default()
        };
        self.vm_mut(host, vm)?.nics.push(nic);
        Ok(guid)
    }

    /// `Remove-VMNetworkAdapter`.
    pub fn remove_network_adapter(&mut self, host: &str, vm: &str, adapter: Uuid) -> Result<()> {
        let v = self.vm(host, vm)?;
        let nic = v
            .nics
            .iter()
            .find(|n| adapter_guid(n) == Some(adapter))
            .ok_or_else(|| Error::Invalid {
                what: "adapter",
                detail: format!("VM {} has no network adapter {adapter}", v.name),
            })?;
        self.check_hot_plug(host, v, nic.legacy)?;
        self.vm_mut(host, vm)?
            .nics
            .retain(|n| adapter_guid(n) != Some(adapter));
        Ok(())
    }

    fn check_hot_plug(&self, host: &str, v: &SimVm, legacy: bool) -> Result<()> {
        if v.state == VmState::Off {
            return Ok(());
        }
        if legacy {
            return Err(state_error(
                self,
                host,
                v,
                "add or remove a legacy network adapter (only while Off)",
            ));
        }
        if v.generation != 2 {
            return Err(state_error(
                self,
                host,
                v,
                "add or remove a network adapter of a generation 1 VM (only while Off)",
            ));
        }
        Ok(())
    }

    /// Mutable access to one adapter, with the rule for MAC address changes checked by the
    /// caller through [`Fleet::check_mac_change`].
    pub fn network_adapter_mut(
        &mut self,
        host: &str,
        vm: &str,
        adapter: Uuid,
    ) -> Result<&mut NetworkAdapter> {
        let v = self.vm_mut(host, vm)?;
        let vm_name = v.name.clone();
        v.nics
            .iter_mut()
            .find(|n| adapter_guid(n) == Some(adapter))
            .ok_or_else(|| Error::Invalid {
                what: "adapter",
                detail: format!("VM {vm_name} has no network adapter {adapter}"),
            })
    }

    /// A MAC address setting changes only while the VM is Off.
    pub fn check_mac_change(&self, host: &str, vm: &str) -> Result<()> {
        let v = self.vm(host, vm)?;
        if v.state != VmState::Off {
            return Err(state_error(
                self,
                host,
                v,
                "change the MAC address of a network adapter (only while Off)",
            ));
        }
        Ok(())
    }
}
