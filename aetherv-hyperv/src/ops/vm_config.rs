//! Day-2 settings of a VM: the inventory fields that editing and disk operations need
//! (firmware, vTPM, automatic actions, disk identity), the requests of those operations, and
//! Hyper-V's rules about when they are allowed ([`check_settings_change`],
//! [`check_disk_resize`], [`check_disk_detach`], [`first_free_scsi_slot`]). The API checks the
//! rules before it queues a job; the simulator enforces the same rules on its own, as a host
//! would.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::types::{Vm, VmDisk, VmId, VmState};

/// What Hyper-V does with a VM when the host starts (`Set-VM -AutomaticStartAction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AutomaticStartAction {
    /// `Nothing`: the VM stays off.
    Nothing,
    /// `StartIfRunning`: start it if it ran when the host stopped.
    StartIfRunning,
    /// `Start`: always start it.
    Start,
}

impl AutomaticStartAction {
    /// Every value.
    pub const ALL: [Self; 3] = [Self::Nothing, Self::StartIfRunning, Self::Start];

    /// Hyper-V's name (`Nothing`, `StartIfRunning`, `Start`).
    pub fn hyperv_name(self) -> &'static str {
        match self {
            Self::Nothing => "Nothing",
            Self::StartIfRunning => "StartIfRunning",
            Self::Start => "Start",
        }
    }

    /// Parses Hyper-V's name (any case) or Windows PowerShell 5.1's enum number (2, 3, 4).
    pub fn from_host(value: &serde_json::Value) -> Option<Self> {
        match value {
            serde_json::Value::Number(n) => match n.as_u64()? {
                2 => Some(Self::Nothing),
                3 => Some(Self::StartIfRunning),
                4 => Some(Self::Start),
                _ => None,
            },
            serde_json::Value::String(s) => Self::ALL.into_iter().find(|a| {
                a.hyperv_name().eq_ignore_ascii_case(s.trim())
                    || serde_json::to_value(a)
                        .ok()
                        .as_ref()
                        .and_then(|v| v.as_str())
                        == Some(s.trim())
            }),
            _ => None,
        }
    }
}

/// What Hyper-V does with a running VM when the host shuts down (`Set-VM
/// -AutomaticStopAction`). The API names them like the power actions that do the same:
/// `stop` (Hyper-V's `TurnOff`), `save`, `shutdown` (`ShutDown`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AutomaticStopAction {
    /// `TurnOff`: cut the power (the `stop` power action).
    #[serde(rename = "stop")]
    TurnOff,
    /// `Save`: save the VM's state.
    #[serde(rename = "save")]
    Save,
    /// `ShutDown`: shut the guest down through the integration service.
    #[serde(rename = "shutdown")]
    ShutDown,
}

impl AutomaticStopAction {
    /// Every value.
    pub const ALL: [Self; 3] = [Self::TurnOff, Self::Save, Self::ShutDown];

    /// Hyper-V's name (`TurnOff`, `Save`, `ShutDown`).
    pub fn hyperv_name(self) -> &'static str {
        match self {
            Self::TurnOff => "TurnOff",
            Self::Save => "Save",
            Self::ShutDown => "ShutDown",
        }
    }

    /// Parses Hyper-V's name (any case) or Windows PowerShell 5.1's enum number (2, 3, 4).
    pub fn from_host(value: &serde_json::Value) -> Option<Self> {
        match value {
            serde_json::Value::Number(n) => match n.as_u64()? {
                2 => Some(Self::TurnOff),
                3 => Some(Self::Save),
                4 => Some(Self::ShutDown),
                _ => None,
            },
            serde_json::Value::String(s) => Self::ALL.into_iter().find(|a| {
                a.hyperv_name().eq_ignore_ascii_case(s.trim())
                    || serde_json::to_value(a)
                        .ok()
                        .as_ref()
                        .and_then(|v| v.as_str())
                        == Some(s.trim())
            }),
            _ => None,
        }
    }
}

fn start_action<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<AutomaticStartAction>, D::Error> {
    match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => AutomaticStartAction::from_host(&v)
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown automatic start action {v}"))),
    }
}

fn stop_action<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<AutomaticStopAction>, D::Error> {
    match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => AutomaticStopAction::from_host(&v)
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown automatic stop action {v}"))),
    }
}

/// The settings of a VM beyond processors and memory that the inventory reports (flattened
/// into [`Vm`]'s document).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmConfig {
    /// Secure Boot (generation 2 only; `None` for generation 1 or when not reported).
    #[serde(default)]
    pub secure_boot: Option<bool>,
    /// The Secure Boot template name (generation 2 only).
    #[serde(default)]
    pub secure_boot_template: Option<String>,
    /// Whether a virtual TPM is enabled (generation 2 only).
    #[serde(default)]
    pub tpm_enabled: Option<bool>,
    /// What the host does with the VM when it starts.
    #[serde(default, deserialize_with = "start_action")]
    pub automatic_start_action: Option<AutomaticStartAction>,
    /// What the host does with the VM when it shuts down.
    #[serde(default, deserialize_with = "stop_action")]
    pub automatic_stop_action: Option<AutomaticStopAction>,
    /// Delay before an automatic start, in seconds.
    #[serde(default)]
    pub automatic_start_delay_seconds: u32,
}

/// A disk's stable id: its place on the VM's controllers, e.g. `scsi-0-1` (controller type,
/// number, location). Unique per VM; it stays the same while the disk stays attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DiskId {
    /// SCSI (`true`) or IDE (`false`).
    pub scsi: bool,
    /// Controller number.
    pub controller_number: u32,
    /// Location on the controller.
    pub controller_location: u32,
}

impl DiskId {
    /// The id of `disk` (`None` when its controller type is neither IDE nor SCSI).
    pub fn of(disk: &VmDisk) -> Option<Self> {
        let scsi = match disk.controller_type.to_ascii_uppercase().as_str() {
            "SCSI" => true,
            "IDE" => false,
            _ => return None,
        };
        Some(Self {
            scsi,
            controller_number: disk.controller_number,
            controller_location: disk.controller_location,
        })
    }

    /// Hyper-V's controller type name (`SCSI`, `IDE`).
    pub fn controller_type(self) -> &'static str {
        if self.scsi { "SCSI" } else { "IDE" }
    }

    /// Whether `disk` sits here.
    pub fn matches(self, disk: &VmDisk) -> bool {
        Self::of(disk) == Some(self)
    }
}

impl fmt::Display for DiskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-{}-{}",
            if self.scsi { "scsi" } else { "ide" },
            self.controller_number,
            self.controller_location
        )
    }
}

impl FromStr for DiskId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not a disk id like scsi-0-1 or ide-0-0");
        let mut parts = s.trim().split('-');
        let scsi = match parts.next().map(str::to_ascii_lowercase).as_deref() {
            Some("scsi") => true,
            Some("ide") => false,
            _ => return Err(bad()),
        };
        let number: u32 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let location: u32 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        if parts.next().is_some() || (scsi && (number > 3 || location > 63)) {
            return Err(bad());
        }
        if !scsi && (number > 1 || location > 1) {
            return Err(bad());
        }
        Ok(Self {
            scsi,
            controller_number: number,
            controller_location: location,
        })
    }
}

impl Serialize for DiskId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DiskId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Locations of one SCSI controller.
pub const SCSI_LOCATIONS: u32 = 64;
/// SCSI controllers a VM can have.
pub const SCSI_CONTROLLERS_MAX: u32 = 4;

/// A change of a VM's settings (`Set-VM`, `Set-VMProcessor`, `Set-VMMemory`,
/// `Set-VMFirmware`, `Enable-VMTPM`/`Disable-VMTPM`): only the fields that are set change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSettingsChange {
    /// Virtual processors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processor_count: Option<u32>,
    /// Startup memory (for a running VM with static memory this is a runtime resize).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_startup_bytes: Option<u64>,
    /// Dynamic memory on or off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dynamic_memory: Option<bool>,
    /// Dynamic memory minimum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_minimum_bytes: Option<u64>,
    /// Dynamic memory maximum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_maximum_bytes: Option<u64>,
    /// The whole notes text as the host keeps it (the project's marker line included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    /// Automatic start action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automatic_start_action: Option<AutomaticStartAction>,
    /// Automatic stop action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automatic_stop_action: Option<AutomaticStopAction>,
    /// Automatic start delay in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automatic_start_delay_seconds: Option<u32>,
    /// Secure Boot on or off (generation 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure_boot: Option<bool>,
    /// Virtual TPM on or off (generation 2; enabling adds a new local key protector).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm_enabled: Option<bool>,
}

impl VmSettingsChange {
    /// Whether nothing would change.
    pub fn is_empty(&self) -> bool {
        self.processor_count.is_none()
            && self.memory_startup_bytes.is_none()
            && self.dynamic_memory.is_none()
            && self.memory_minimum_bytes.is_none()
            && self.memory_maximum_bytes.is_none()
            && self.notes.is_none()
            && self.automatic_start_action.is_none()
            && self.automatic_stop_action.is_none()
            && self.automatic_start_delay_seconds.is_none()
            && self.secure_boot.is_none()
            && self.tpm_enabled.is_none()
    }

    /// The change without the fields whose value `vm` already has.
    pub fn without_unchanged(&self, vm: &Vm) -> Self {
        fn keep<T: PartialEq + Copy>(new: Option<T>, old: T) -> Option<T> {
            new.filter(|n| *n != old)
        }
        Self {
            processor_count: keep(self.processor_count, vm.processor_count),
            memory_startup_bytes: keep(self.memory_startup_bytes, vm.memory_startup_bytes),
            dynamic_memory: keep(self.dynamic_memory, vm.dynamic_memory),
            memory_minimum_bytes: keep(self.memory_minimum_bytes, vm.memory_minimum_bytes),
            memory_maximum_bytes: keep(self.memory_maximum_bytes, vm.memory_maximum_bytes),
            notes: self.notes.clone().filter(|n| *n != vm.notes),
            automatic_start_action: self
                .automatic_start_action
                .filter(|a| Some(*a) != vm.config.automatic_start_action),
            automatic_stop_action: self
                .automatic_stop_action
                .filter(|a| Some(*a) != vm.config.automatic_stop_action),
            automatic_start_delay_seconds: keep(
                self.automatic_start_delay_seconds,
                vm.config.automatic_start_delay_seconds,
            ),
            secure_boot: self
                .secure_boot
                .filter(|s| Some(*s) != vm.config.secure_boot),
            tpm_enabled: self
                .tpm_enabled
                .filter(|t| Some(*t) != vm.config.tpm_enabled),
        }
    }
}

/// One of Hyper-V's rules that a requested change breaks. [`RuleViolation::code`] is the
/// rule's stable name (the API's error code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RuleViolation {
    /// The setting changes only while the VM is off.
    #[error("{setting} of VM {vm} changes only while it is Off; it is {state}")]
    RequiresOff {
        /// What was to change.
        setting: &'static str,
        /// VM name.
        vm: String,
        /// Its state.
        state: String,
    },
    /// A running VM's memory may only be resized within its dynamic range.
    #[error(
        "VM {vm} is {state}: its memory can only be resized within its dynamic range \
         ({minimum} to {maximum} bytes), not to {requested} bytes{hint}"
    )]
    MemoryOutsideDynamicRange {
        /// VM name.
        vm: String,
        /// Its state.
        state: String,
        /// Requested startup memory.
        requested: u64,
        /// Dynamic minimum.
        minimum: u64,
        /// Dynamic maximum.
        maximum: u64,
        /// Extra advice.
        hint: &'static str,
    },
    /// A running VM's dynamic range may only widen (minimum down, maximum up).
    #[error(
        "VM {vm} is {state}: its dynamic memory minimum may only decrease and its maximum only \
         increase while it runs ({what})"
    )]
    MemoryRangeNarrowed {
        /// VM name.
        vm: String,
        /// Its state.
        state: String,
        /// Which bound and how.
        what: String,
    },
    /// Secure Boot and vTPM exist only on generation 2 VMs.
    #[error("VM {vm} is generation 1: it has no UEFI firmware, so no {setting}")]
    Generation1Firmware {
        /// VM name.
        vm: String,
        /// The setting.
        setting: &'static str,
    },
    /// A virtual disk never shrinks.
    #[error(
        "disk {disk} of VM {vm} is {current} bytes; it can only grow, not shrink to {requested} bytes"
    )]
    DiskShrink {
        /// VM name.
        vm: String,
        /// The disk id.
        disk: DiskId,
        /// Current virtual size.
        current: u64,
        /// Requested size.
        requested: u64,
    },
    /// An IDE disk of a running VM can be neither added, removed nor resized.
    #[error(
        "disk {disk} of VM {vm} is on an IDE controller: it cannot be {action} while the VM is {state}"
    )]
    IdeDiskRunning {
        /// VM name.
        vm: String,
        /// The disk id.
        disk: DiskId,
        /// What was to happen.
        action: &'static str,
        /// Its state.
        state: String,
    },
    /// A VHD (not VHDX) cannot be resized while attached to a running VM.
    #[error("disk {disk} of VM {vm} is not a VHDX: it can only be resized while the VM is Off")]
    OnlineResizeNeedsVhdx {
        /// VM name.
        vm: String,
        /// The disk id.
        disk: DiskId,
    },
    /// A shared disk is never detached or deleted by this project.
    #[error("disk {disk} of VM {vm} is shared ({path}); it is never detached here")]
    SharedDisk {
        /// VM name.
        vm: String,
        /// The disk id.
        disk: DiskId,
        /// Its path.
        path: String,
    },
    /// Detaching the VM's boot disk needs `force`.
    #[error(
        "disk {disk} of VM {vm} is its last boot disk; the VM could not boot without it (set force=true to detach it anyway)"
    )]
    LastBootDisk {
        /// VM name.
        vm: String,
        /// The disk id.
        disk: DiskId,
    },
    /// Every location of the VM's SCSI controllers is taken (or it has none).
    #[error("VM {vm} has no free SCSI location ({controllers} controller(s) of 64 locations)")]
    NoFreeScsiSlot {
        /// VM name.
        vm: String,
        /// SCSI controllers it has.
        controllers: u32,
    },
}

impl RuleViolation {
    /// The rule's stable name, as the API reports it.
    pub fn code(&self) -> &'static str {
        match self {
            Self::RequiresOff { .. } => "requires_off",
            Self::MemoryOutsideDynamicRange { .. } => "memory_outside_dynamic_range",
            Self::MemoryRangeNarrowed { .. } => "memory_range_narrowed",
            Self::Generation1Firmware { .. } => "generation1_firmware",
            Self::DiskShrink { .. } => "disk_shrink",
            Self::IdeDiskRunning { .. } => "ide_disk_running",
            Self::OnlineResizeNeedsVhdx { .. } => "online_resize_needs_vhdx",
            Self::SharedDisk { .. } => "shared_disk",
            Self::LastBootDisk { .. } => "last_boot_disk",
            Self::NoFreeScsiSlot { .. } => "no_free_scsi_slot",
        }
    }
}

/// Checks a settings change against Hyper-V's state rules for `vm` as it is now:
/// processor count, static startup memory, turning dynamic memory on or off, Secure Boot, the
/// vTPM and the automatic stop action change only while the VM is Off (Hyper-V refuses them
/// in Saved and Paused states too: the saved memory image depends on them); a running VM
/// with dynamic memory may have its startup memory changed only within its dynamic range,
/// its minimum only lowered and its maximum only raised. Notes, the automatic start action
/// and delay change in any state. Fields equal to the current value are not a change.
///
/// # Errors
///
/// The first [`RuleViolation`] found.
pub fn check_settings_change(vm: &Vm, change: &VmSettingsChange) -> Result<(), RuleViolation> {
    let change = change.without_unchanged(vm);
    let off = vm.state == VmState::Off;
    let state = vm.state.name();
    let requires_off = |setting: &'static str| RuleViolation::RequiresOff {
        setting,
        vm: vm.name.clone(),
        state: vm.state.name(),
    };
    if vm.generation != 2 {
        if change.secure_boot.is_some() {
            return Err(RuleViolation::Generation1Firmware {
                vm: vm.name.clone(),
                setting: "Secure Boot",
            });
        }
        if change.tpm_enabled.is_some() {
            return Err(RuleViolation::Generation1Firmware {
                vm: vm.name.clone(),
                setting: "virtual TPM",
            });
        }
    }
    if off {
        return Ok(());
    }
    if change.processor_count.is_some() {
        return Err(requires_off("the processor count"));
    }
    if change.dynamic_memory.is_some() {
        return Err(requires_off("dynamic memory (on/off)"));
    }
    if change.secure_boot.is_some() {
        return Err(requires_off("Secure Boot"));
    }
    if change.tpm_enabled.is_some() {
        return Err(requires_off("the virtual TPM"));
    }
    if change.automatic_stop_action.is_some() {
        return Err(requires_off("the automatic stop action"));
    }
    let memory_changes = change.memory_startup_bytes.is_some()
        || change.memory_minimum_bytes.is_some()
        || change.memory_maximum_bytes.is_some();
    if !memory_changes {
        return Ok(());
    }
    let running = matches!(vm.state, VmState::Running);
    if !running || !vm.dynamic_memory {
        // Saved/Paused VMs change no memory; a running VM with static memory neither (its
        // startup memory is its whole memory).
        return Err(requires_off(if vm.dynamic_memory {
            "memory"
        } else {
            "static memory"
        }));
    }
    let minimum = change
        .memory_minimum_bytes
        .unwrap_or(vm.memory_minimum_bytes);
    let maximum = change
        .memory_maximum_bytes
        .unwrap_or(vm.memory_maximum_bytes);
    if minimum > vm.memory_minimum_bytes {
        return Err(RuleViolation::MemoryRangeNarrowed {
            vm: vm.name.clone(),
            state: state.clone(),
            what: format!("minimum {} -> {minimum} bytes", vm.memory_minimum_bytes),
        });
    }
    if maximum < vm.memory_maximum_bytes {
        return Err(RuleViolation::MemoryRangeNarrowed {
            vm: vm.name.clone(),
            state: state.clone(),
            what: format!("maximum {} -> {maximum} bytes", vm.memory_maximum_bytes),
        });
    }
    let startup = change
        .memory_startup_bytes
        .unwrap_or(vm.memory_startup_bytes);
    if startup < minimum || startup > maximum {
        return Err(RuleViolation::MemoryOutsideDynamicRange {
            vm: vm.name.clone(),
            state: state.clone(),
            requested: startup,
            minimum,
            maximum,
            hint: "; turn the VM off to change it beyond",
        });
    }
    Ok(())
}

/// Whether `disk` is shared (a VHD Set, or a shared VHDX with persistent reservations).
pub fn disk_is_shared(disk: &VmDisk) -> bool {
    disk.shared || disk.path.to_ascii_lowercase().ends_with(".vhds")
}

/// The disk `vm` boots from as Hyper-V's default boot order has it: IDE 0:0 on generation 1,
/// the first hard disk by controller and location on generation 2.
pub fn boot_disk(vm: &Vm) -> Option<DiskId> {
    let mut ids: Vec<DiskId> = vm.disks.iter().filter_map(DiskId::of).collect();
    ids.sort();
    if vm.generation == 2 {
        ids.into_iter().find(|id| id.scsi)
    } else {
        ids.into_iter()
            .find(|id| !id.scsi && id.controller_number == 0 && id.controller_location == 0)
    }
}

/// Checks a resize of disk `id` of `vm` to `size_bytes`: never below its current size; an
/// IDE disk only while the VM is Off; online (SCSI, running) only for a VHDX.
///
/// # Errors
///
/// The [`RuleViolation`].
pub fn check_disk_resize(vm: &Vm, disk: &VmDisk, size_bytes: u64) -> Result<(), RuleViolation> {
    let Some(id) = DiskId::of(disk) else {
        return Ok(());
    };
    if size_bytes < disk.max_size_bytes {
        return Err(RuleViolation::DiskShrink {
            vm: vm.name.clone(),
            disk: id,
            current: disk.max_size_bytes,
            requested: size_bytes,
        });
    }
    if vm.state != VmState::Off {
        if !id.scsi {
            return Err(RuleViolation::IdeDiskRunning {
                vm: vm.name.clone(),
                disk: id,
                action: "resized",
                state: vm.state.name(),
            });
        }
        if !disk.path.to_ascii_lowercase().ends_with(".vhdx") {
            return Err(RuleViolation::OnlineResizeNeedsVhdx {
                vm: vm.name.clone(),
                disk: id,
            });
        }
    }
    Ok(())
}

/// Checks detaching disk `id` of `vm`: never a shared disk, never an IDE disk of a VM that
/// is not Off, never the boot disk (or the VM's only disk) without `force`.
///
/// # Errors
///
/// The [`RuleViolation`].
pub fn check_disk_detach(vm: &Vm, disk: &VmDisk, force: bool) -> Result<(), RuleViolation> {
    let Some(id) = DiskId::of(disk) else {
        return Ok(());
    };
    if disk_is_shared(disk) {
        return Err(RuleViolation::SharedDisk {
            vm: vm.name.clone(),
            disk: id,
            path: disk.path.clone(),
        });
    }
    if !id.scsi && vm.state != VmState::Off {
        return Err(RuleViolation::IdeDiskRunning {
            vm: vm.name.clone(),
            disk: id,
            action: "detached",
            state: vm.state.name(),
        });
    }
    if !force && (boot_disk(vm) == Some(id) || vm.disks.len() == 1) {
        return Err(RuleViolation::LastBootDisk {
            vm: vm.name.clone(),
            disk: id,
        });
    }
    Ok(())
}

/// The SCSI controllers `vm` has, as far as the inventory shows: one on generation 2
/// (New-VM adds it), and every controller number a SCSI disk or DVD drive uses.
pub fn scsi_controllers(vm: &Vm) -> u32 {
    let used = vm
        .disks
        .iter()
        .filter(|d| d.controller_type.eq_ignore_ascii_case("SCSI"))
        .map(|d| d.controller_number + 1)
        .chain(
            vm.dvd_drives
                .iter()
                .filter(|d| d.controller_type.eq_ignore_ascii_case("SCSI"))
                .map(|d| d.controller_number + 1),
        )
        .max()
        .unwrap_or(0);
    let base = if vm.generation == 2 { 1 } else { 0 };
    used.max(base).min(SCSI_CONTROLLERS_MAX)
}

/// The first free SCSI location of `vm` (controller, location), in the order Hyper-V's
/// `Add-VMHardDiskDrive` fills them.
///
/// # Errors
///
/// [`RuleViolation::NoFreeScsiSlot`] when every location is taken or the VM has no SCSI
/// controller.
pub fn first_free_scsi_slot(vm: &Vm) -> Result<(u32, u32), RuleViolation> {
    let controllers = scsi_controllers(vm);
    let taken = |c: u32, l: u32| {
        let disk = vm.disks.iter().any(|d| {
            d.controller_type.eq_ignore_ascii_case("SCSI")
                && d.controller_number == c
                && d.controller_location == l
        });
        let dvd = vm.dvd_drives.iter().any(|d| {
            d.controller_type.eq_ignore_ascii_case("SCSI")
                && d.controller_number == c
                && d.controller_location == l
        });
        disk || dvd
    };
    for c in 0..controllers {
        for l in 0..SCSI_LOCATIONS {
            if !taken(c, l) {
                return Ok((c, l));
            }
        }
    }
    Err(RuleViolation::NoFreeScsiSlot {
        vm: vm.name.clone(),
        controllers,
    })
}

/// A new blank virtual disk (`New-VHD`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateVhdRequest {
    /// Full path of the new `.vhdx` file (must not exist).
    pub path: String,
    /// Virtual size in bytes (a whole number of MiB).
    pub size_bytes: u64,
    /// Fixed size (all space allocated now) rather than dynamically expanding.
    pub fixed: bool,
}

/// What `New-VHD` made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedVhd {
    /// The file.
    pub path: String,
    /// Virtual size.
    pub size_bytes: u64,
    /// File size.
    #[serde(default)]
    pub file_size_bytes: u64,
}

/// A disk after it was attached or resized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmDiskChanged {
    /// The VM.
    pub id: VmId,
    /// The disk as the host now reports it.
    pub disk: VmDisk,
}

/// A disk after it was detached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmDiskDetached {
    /// The VM.
    pub id: VmId,
    /// The file that was attached.
    pub path: String,
    /// Whether the file was deleted.
    #[serde(default)]
    pub deleted: bool,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn disk_ids_round_trip_and_refuse_nonsense() {
        let id: DiskId = "scsi-0-5".parse().unwrap();
        assert_eq!(id.to_string(), "scsi-0-5");
        assert_eq!(id.controller_type(), "SCSI");
        assert_eq!("IDE-0-1".parse::<DiskId>().unwrap().to_string(), "ide-0-1");
        for bad in [
            "",
            "scsi-0",
            "scsi-0-64",
            "scsi-4-0",
            "ide-2-0",
            "sata-0-0",
            "scsi-0-1-2",
        ] {
            assert!(bad.parse::<DiskId>().is_err(), "{bad}");
        }
    }

    fn vm(state: VmState, dynamic: bool) -> Vm {
        serde_json::from_value(serde_json::json!({
            "id": "00000000-0000-0000-0000-000000000001", "name": "web-01",
            "state": state.code(), "generation": 2, "processor_count": 2,
            "memory_startup_bytes": 2u64 << 30, "memory_minimum_bytes": 1u64 << 30,
            "memory_maximum_bytes": 4u64 << 30, "dynamic_memory": dynamic,
            "automatic_stop_action": "Save", "secure_boot": true, "tpm_enabled": false,
            "disks": [
                {"path": r"C:\VMs\web-01\os.vhdx", "controller_type": "SCSI",
                 "controller_number": 0, "controller_location": 0, "max_size_bytes": 20u64 << 30},
                {"path": r"C:\VMs\web-01\data.vhd", "controller_type": 1,
                 "controller_number": 0, "controller_location": 1, "max_size_bytes": 10u64 << 30},
                {"path": r"C:\VMs\shared.vhds", "controller_type": "SCSI",
                 "controller_number": 0, "controller_location": 2, "max_size_bytes": 10u64 << 30}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn settings_rules_follow_hyperv() {
        let running = vm(VmState::Running, true);
        let code = |vm: &Vm, change: VmSettingsChange| {
            check_settings_change(vm, &change).err().map(|e| e.code())
        };
        let cpus = VmSettingsChange {
            processor_count: Some(4),
            ..Default::default()
        };
        assert_eq!(code(&running, cpus.clone()), Some("requires_off"));
        assert_eq!(
            code(&vm(VmState::Saved, true), cpus.clone()),
            Some("requires_off")
        );
        assert_eq!(code(&vm(VmState::Off, true), cpus), None);
        // Unchanged values are no change.
        let same = VmSettingsChange {
            processor_count: Some(2),
            ..Default::default()
        };
        assert_eq!(code(&running, same), None);
        let inside = VmSettingsChange {
            memory_startup_bytes: Some(3 << 30),
            ..Default::default()
        };
        assert_eq!(code(&running, inside.clone()), None);
        assert_eq!(
            code(&vm(VmState::Running, false), inside),
            Some("requires_off")
        );
        let outside = VmSettingsChange {
            memory_startup_bytes: Some(6 << 30),
            ..Default::default()
        };
        assert_eq!(
            code(&running, outside),
            Some("memory_outside_dynamic_range")
        );
        let narrowed = VmSettingsChange {
            memory_maximum_bytes: Some(3 << 30),
            ..Default::default()
        };
        assert_eq!(code(&running, narrowed), Some("memory_range_narrowed"));
        let toggled = VmSettingsChange {
            dynamic_memory: Some(false),
            ..Default::default()
        };
        assert_eq!(code(&running, toggled), Some("requires_off"));
        let tpm = VmSettingsChange {
            tpm_enabled: Some(true),
            ..Default::default()
        };
        assert_eq!(code(&running, tpm.clone()), Some("requires_off"));
        let mut gen1 = vm(VmState::Off, false);
        gen1.generation = 1;
        assert_eq!(code(&gen1, tpm), Some("generation1_firmware"));
        let notes = VmSettingsChange {
            notes: Some("x".to_owned()),
            ..Default::default()
        };
        assert_eq!(code(&running, notes), None);
    }

    #[test]
    fn disk_rules_follow_hyperv() {
        let running = vm(VmState::Running, true);
        let [os, data, shared] = [&running.disks[0], &running.disks[1], &running.disks[2]];
        assert_eq!(DiskId::of(data).unwrap().to_string(), "scsi-0-1");
        let shrink = check_disk_resize(&running, os, 10 << 30).unwrap_err();
        assert_eq!(shrink.code(), "disk_shrink");
        assert!(shrink.to_string().contains(&(20u64 << 30).to_string()));
        assert!(check_disk_resize(&running, os, 30 << 30).is_ok());
        assert_eq!(
            check_disk_resize(&running, data, 20 << 30)
                .unwrap_err()
                .code(),
            "online_resize_needs_vhdx"
        );
        assert_eq!(
            check_disk_detach(&running, shared, true)
                .unwrap_err()
                .code(),
            "shared_disk"
        );
        assert_eq!(
            check_disk_detach(&running, os, false).unwrap_err().code(),
            "last_boot_disk"
        );
        assert!(check_disk_detach(&running, os, true).is_ok());
        assert!(check_disk_detach(&running, data, false).is_ok());
        let mut ide = vm(VmState::Running, false);
        ide.generation = 1;
        ide.disks[0].controller_type = "IDE".to_owned();
        assert_eq!(
            check_disk_detach(&ide, &ide.disks[0], true)
                .unwrap_err()
                .code(),
            "ide_disk_running"
        );
        assert_eq!(first_free_scsi_slot(&running).unwrap(), (0, 3));
        ide.disks.retain(|d| d.controller_type == "IDE");
        assert_eq!(
            first_free_scsi_slot(&ide).unwrap_err().code(),
            "no_free_scsi_slot"
        );
        let mut full = vm(VmState::Off, false);
        full.disks = (0..64)
            .map(|l| VmDisk {
                controller_location: l,
                ..running.disks[0].clone()
            })
            .collect();
        assert_eq!(
            first_free_scsi_slot(&full).unwrap_err().code(),
            "no_free_scsi_slot"
        );
    }

    #[test]
    fn automatic_actions_parse_names_and_numbers() {
        use serde_json::json;
        assert_eq!(
            AutomaticStartAction::from_host(&json!("StartIfRunning")),
            Some(AutomaticStartAction::StartIfRunning)
        );
        assert_eq!(
            AutomaticStartAction::from_host(&json!(4)),
            Some(AutomaticStartAction::Start)
        );
        assert_eq!(
            AutomaticStopAction::from_host(&json!("shutdown")),
            Some(AutomaticStopAction::ShutDown)
        );
        assert_eq!(AutomaticStopAction::from_host(&json!(9)), None);
    }
}
