//! Network adapters and checkpoints of a VM: what the inventory reports about them, the
//! changes [`super::HostCall::NetworkAdapterChange`] and [`super::HostCall::CheckpointChange`]
//! send, and what those operations answer.
//!
//! Ids are Hyper-V's: a checkpoint's id is its `Id` GUID; a network adapter's id is the GUID
//! that ends its Hyper-V `Id` (`Microsoft:<VM GUID>\<adapter GUID>`), which stays the same
//! for the adapter's whole life.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::types::{VmId, VmNic, VmState};
use crate::psjson::{self, Timestamp};

/// Hyper-V's highest access VLAN id.
pub const MAX_VLAN_ID: u16 = 4094;

/// What kind of checkpoint (Hyper-V's `SnapshotType`, folded to what an operator chooses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum CheckpointKind {
    /// A standard checkpoint: disks, memory and device state.
    Standard,
    /// A production checkpoint: an application-consistent (VSS / file system freeze) image of
    /// the disks without memory; applying it leaves the VM off.
    Production,
    /// Anything else Hyper-V reports (replica, planned or missing checkpoints).
    Other,
}

impl CheckpointKind {
    /// From Hyper-V's `SnapshotType` name as the host script writes it: `Standard`;
    /// `Recovery` and `AppConsistentReplica` are application-consistent images
    /// (production); the rest are replica bookkeeping.
    pub fn from_snapshot_type(name: &str) -> Self {
        match name {
            "Standard" | "standard" => Self::Standard,
            "Production" | "production" | "Recovery" | "AppConsistentReplica" => Self::Production,
            _ => Self::Other,
        }
    }

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Standard => "standard",
            Self::Production => "production",
            Self::Other => "other",
        }
    }
}

/// One checkpoint of a VM, as the inventory script reports it (`Get-VMSnapshot`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmCheckpoint {
    /// Hyper-V's checkpoint id (`Id`).
    pub id: Uuid,
    /// Its name.
    #[serde(default, deserialize_with = "psjson::null_as_default")]
    pub name: String,
    /// The checkpoint it was taken after (`ParentSnapshotId`); `None` for a root.
    #[serde(default)]
    pub parent_id: Option<Uuid>,
    /// When it was taken.
    #[serde(default)]
    pub creation_time: Option<Timestamp>,
    /// Hyper-V's `SnapshotType` name (`Standard`, `Recovery`, …).
    #[serde(default, deserialize_with = "psjson::null_as_default")]
    pub snapshot_type: String,
    /// The VM state the checkpoint captured (a standard checkpoint of a running VM holds its
    /// memory and applies as Saved; everything else applies as Off).
    #[serde(default)]
    pub vm_state: Option<VmState>,
}

impl VmCheckpoint {
    /// Standard or production.
    pub fn kind(&self) -> CheckpointKind {
        CheckpointKind::from_snapshot_type(&self.snapshot_type)
    }
}

/// A change to a VM's checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
#[non_exhaustive]
pub enum CheckpointChange {
    /// `Checkpoint-VM -SnapshotName`: a new checkpoint of the VM's configured type.
    Create {
        /// Its name.
        name: String,
    },
    /// `Restore-VMSnapshot`: the VM must be Off or Saved (Hyper-V's rule); with `turn_off`
    /// the script turns a running VM off first.
    Apply {
        /// The checkpoint.
        checkpoint: Uuid,
        /// Turn the VM off first when it is not Off or Saved.
        turn_off: bool,
    },
    /// `Rename-VMSnapshot`.
    Rename {
        /// The checkpoint.
        checkpoint: Uuid,
        /// The new name.
        name: String,
    },
    /// `Remove-VMSnapshot` (`-IncludeAllChildSnapshots` for a subtree). Hyper-V then merges
    /// the differencing disks in the background; [`super::Vm::merge_percent`] follows it.
    Remove {
        /// The checkpoint.
        checkpoint: Uuid,
        /// Remove its descendants too.
        subtree: bool,
    },
}

impl CheckpointChange {
    /// The checkpoint the change names, if it names one.
    pub fn checkpoint(&self) -> Option<Uuid> {
        match self {
            Self::Create { .. } => None,
            Self::Apply { checkpoint, .. }
            | Self::Rename { checkpoint, .. }
            | Self::Remove { checkpoint, .. } => Some(*checkpoint),
        }
    }

    /// What the change does, for messages ("create", "apply", …).
    pub fn verb(&self) -> &'static str {
        match self {
            Self::Create { .. } => "create a checkpoint of",
            Self::Apply { .. } => "apply a checkpoint to",
            Self::Rename { .. } => "rename a checkpoint of",
            Self::Remove { .. } => "delete a checkpoint of",
        }
    }
}

/// What a checkpoint change did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointChanged {
    /// The VM.
    pub id: VmId,
    /// The checkpoint created, applied or renamed (`None` after a removal).
    #[serde(default)]
    pub checkpoint: Option<VmCheckpoint>,
    /// The checkpoints removed (the one named and, for a subtree, its descendants).
    #[serde(default, deserialize_with = "psjson::one_or_many")]
    pub removed: Vec<Uuid>,
    /// The VM's state afterwards.
    pub state: VmState,
    /// Whether Hyper-V is merging differencing disks now (after a removal).
    #[serde(default)]
    pub merging: bool,
}

/// How an adapter gets its MAC address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", content = "address", rename_all = "lowercase")]
pub enum MacSetting {
    /// Hyper-V assigns one from the host's pool.
    Dynamic,
    /// This address (12 hex digits, upper case, no separators).
    Static(String),
}

/// Bandwidth limits of an adapter in bits per second (`Set-VMNetworkAdapter
/// -MaximumBandwidth/-MinimumBandwidthAbsolute`; 0 removes a limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BandwidthLimits {
    /// The most the adapter may send (0: no limit).
    pub maximum_bps: u64,
    /// The least it is guaranteed (0: no reservation).
    pub minimum_bps: u64,
}

/// The settings of an adapter a change may set; `None` leaves a setting as it is.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct NicSettings {
    /// Connect to this virtual switch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub switch_name: Option<String>,
    /// `Some(None)` untagged, `Some(Some(id))` access VLAN `id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vlan_id: Option<Option<u16>>,
    /// Dynamic or static MAC address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacSetting>,
    /// MAC address spoofing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac_spoofing: Option<bool>,
    /// DHCP guard.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dhcp_guard: Option<bool>,
    /// Router guard.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub router_guard: Option<bool>,
    /// Bandwidth limits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<BandwidthLimits>,
}

impl NicSettings {
    /// Whether the change sets nothing.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// A change to a VM's network adapters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
#[non_exhaustive]
pub enum NicChange {
    /// `Add-VMNetworkAdapter`, then the settings.
    Add {
        /// The adapter's name (`Network Adapter` when empty).
        name: String,
        /// A legacy (emulated) adapter: generation 1 only, and only while the VM is Off.
        legacy: bool,
        /// The settings of the new adapter.
        settings: NicSettings,
    },
    /// `Connect-VMNetworkAdapter`, `Set-VMNetworkAdapterVlan`, `Set-VMNetworkAdapter`.
    Set {
        /// The adapter (the GUID ending its Hyper-V id).
        adapter: Uuid,
        /// What to change.
        settings: NicSettings,
    },
    /// `Remove-VMNetworkAdapter`.
    Remove {
        /// The adapter.
        adapter: Uuid,
    },
}

impl NicChange {
    /// The adapter the change names, if it names one.
    pub fn adapter(&self) -> Option<Uuid> {
        match self {
            Self::Add { .. } => None,
            Self::Set { adapter, .. } | Self::Remove { adapter } => Some(*adapter),
        }
    }

    /// The settings the change sets.
    pub fn settings(&self) -> Option<&NicSettings> {
        match self {
            Self::Add { settings, .. } | Self::Set { settings, .. } => Some(settings),
            Self::Remove { .. } => None,
        }
    }

    /// What the change does, for messages.
    pub fn verb(&self) -> &'static str {
        match self {
            Self::Add { .. } => "add a network adapter to",
            Self::Set { .. } => "change a network adapter of",
            Self::Remove { .. } => "remove a network adapter from",
        }
    }
}

/// What a network adapter change did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicChanged {
    /// The VM.
    pub id: VmId,
    /// The adapter as it is now (`None` after a removal).
    #[serde(default)]
    pub adapter: Option<VmNic>,
    /// The adapter removed.
    #[serde(default)]
    pub removed: Option<Uuid>,
}

/// The GUID that ends a Hyper-V network adapter id (`Microsoft:<VM>\<adapter>`), or the id
/// itself when it is a bare GUID.
pub fn adapter_guid(hyperv_id: &str) -> Option<Uuid> {
    let tail = hyperv_id.rsplit(['\\', '/']).next().unwrap_or(hyperv_id);
    Uuid::parse_str(tail.trim().trim_matches(['{', '}'])).ok()
}

/// A MAC address Hyper-V accepts as static: 12 hex digits (separators `-` or `:` allowed),
/// unicast, not all zeros. Returns it as Hyper-V writes it (upper case, no separators).
pub fn normalize_mac(mac: &str) -> std::result::Result<String, String> {
    let digits: String = mac.chars().filter(|c| *c != '-' && *c != ':').collect();
    if digits.len() != 12 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("MAC address {mac:?} must be 12 hexadecimal digits"));
    }
    let upper = digits.to_ascii_uppercase();
    let first = u8::from_str_radix(&upper[..2], 16).map_err(|e| e.to_string())?;
    if first & 1 == 1 {
        return Err(format!(
            "MAC address {mac:?} is a multicast address; a static MAC must be unicast"
        ));
    }
    if upper.chars().all(|c| c == '0') {
        return Err(format!("MAC address {mac:?} is all zeros"));
    }
    Ok(upper)
}

/// Checks a settings change before anything is sent.
pub(crate) fn check_nic_settings(settings: &NicSettings) -> std::result::Result<(), String> {
    if let Some(switch) = &settings.switch_name
        && (switch.trim().is_empty() || switch.len() > 256 || switch.chars().any(char::is_control))
    {
        return Err(format!(
            "switch name {switch:?} must be 1-256 printable characters"
        ));
    }
    if let Some(Some(vlan)) = settings.vlan_id
        && !(1..=MAX_VLAN_ID).contains(&vlan)
    {
        return Err(format!("VLAN {vlan} must be within 1..={MAX_VLAN_ID}"));
    }
    if let Some(MacSetting::Static(mac)) = &settings.mac {
        normalize_mac(mac)?;
    }
    if let Some(b) = settings.bandwidth
        && b.maximum_bps != 0
        && b.minimum_bps > b.maximum_bps
    {
        return Err(format!(
            "minimum bandwidth {} bps is above the maximum {} bps",
            b.minimum_bps, b.maximum_bps
        ));
    }
    Ok(())
}

/// Checks a checkpoint name before anything is sent.
pub(crate) fn check_checkpoint_name(name: &str) -> std::result::Result<(), String> {
    if name.trim().is_empty()
        || name.trim() != name
        || name.chars().count() > 100
        || name.chars().any(char::is_control)
    {
        Err(format!(
            "checkpoint name {name:?} must be 1-100 characters without control characters or surrounding spaces"
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn adapter_ids_are_the_guid_that_ends_hyperv_ids() {
        let guid = "2d6d6f8e-0c1a-4a52-9d6e-3b1d2f4a5b6c";
        let full = format!("Microsoft:0A1B2C3D-0000-4000-8000-000000000001\\{guid}");
        assert_eq!(
            adapter_guid(&full).map(|g| g.to_string()),
            Some(guid.to_owned())
        );
        assert_eq!(
            adapter_guid(guid).map(|g| g.to_string()),
            Some(guid.to_owned())
        );
        assert_eq!(adapter_guid("Microsoft:nonsense"), None);
    }

    #[test]
    fn static_macs_are_unicast_hex() {
        assert_eq!(
            normalize_mac("00-15-5d-01-02-03").as_deref(),
            Ok("00155D010203")
        );
        assert!(normalize_mac("01155D010203").is_err(), "multicast");
        assert!(normalize_mac("000000000000").is_err());
        assert!(normalize_mac("00155D01020").is_err());
        assert!(normalize_mac("00155D01020G").is_err());
    }

    #[test]
    fn settings_are_checked() {
        let vlan = NicSettings {
            vlan_id: Some(Some(4095)),
            ..NicSettings::default()
        };
        assert!(check_nic_settings(&vlan).unwrap_err().contains("4095"));
        let bandwidth = NicSettings {
            bandwidth: Some(BandwidthLimits {
                maximum_bps: 10,
                minimum_bps: 20,
            }),
            ..NicSettings::default()
        };
        assert!(check_nic_settings(&bandwidth).is_err());
        assert!(check_checkpoint_name(" x").is_err());
        assert!(check_checkpoint_name("before upgrade").is_ok());
    }

    #[test]
    fn checkpoint_kinds_fold_hyperv_snapshot_types() {
        assert_eq!(
            CheckpointKind::from_snapshot_type("Standard"),
            CheckpointKind::Standard
        );
        assert_eq!(
            CheckpointKind::from_snapshot_type("Recovery"),
            CheckpointKind::Production
        );
        assert_eq!(
            CheckpointKind::from_snapshot_type("Replica"),
            CheckpointKind::Other
        );
    }
}
