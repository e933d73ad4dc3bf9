//! The provisioning pipeline as a sans-IO [`Workflow`]: a validated job request becomes a
//! running, configured guest, or a clear failure that leaves nothing behind.
//!
//! Steps ([`steps`]), each a host call with its own timeout:
//!
//! 1. **Pre-checks**: host facts (the host is reachable; the golden image exists; a
//!    `disk_size_gb` is not below its virtual size; a provisioning ISO for the guest's OS
//!    family exists; enough memory is available), then the inventory (the VM name is free on
//!    the host).
//!    The network and storage are resolved against the host's definitions
//!    ([`crate::resources::resolve`]).
//! 2. **Copy image** into a new VM folder (under the storage class's folder, or the host's
//!    default VM path; expanded to `disk_size_gb` before the VM exists), then **copy the
//!    provisioning ISO** into it.
//! 3. **Register the VM** (memory, CPU, VHDX, ISO, the resolved switch and VLAN, the firmware of
//!    [`ProvisionConfig::boot`] for its OS family and image, started), its notes set to the
//!    job marker ([`marker`]) so that leftovers are findable after a crash.
//! 4. **Wait for the guest's key**: set `hlvmm.meta.version` and the host state
//!    `waitingforpublickey`, then poll the guest's KVP items until it publishes its public key
//!    and `waitingforaeskey` (or the key timeout passes).
//! 5. **Publish** the encrypted data ([`ProvisioningPayload::build`] over
//!    [`guest_data`]) and then `provisioningdatapublished`, in one ordered write.
//! 6. **Wait for the guest** to report `provisioningapplied` (or `provisioningfailed` with its
//!    reason).
//! 7. **Clean up after the guest**, once it reported `provisioningapplied` (the seed's rule:
//!    keys deleted after the guest retrieved them, nothing left on the host): remove every
//!    host-written `hlvmm.*` KVP item ([`steps::REMOVE_KEYS`]), eject the provisioning ISO and
//!    remove the DVD drive that held it ([`steps::REMOVE_DVD`]; a generation 1 IDE drive of a
//!    running VM is only ejected, as Hyper-V cannot remove it then), and delete the ISO copy in
//!    the VM folder ([`steps::REMOVE_ISO`]) — in that order, as a file in a DVD drive cannot
//!    be deleted. What could not be removed does not fail the job (the VM is provisioned); it
//!    is logged at error level and listed in [`Provisioned::cleanup`].
//! 8. **Cluster role**, when `vm_clustered` is set.
//! 9. **Mark provisioned** ([`steps::MARK_PROVISIONED`]): the notes marker becomes
//!    [`provisioned_marker`], so that a restarted server tells a finished VM from a half-made
//!    one (an orphan still carries [`marker`]). A failure here is logged at error level and
//!    does not undo the VM.
//!
//! On a failure or a cancellation, every artifact created so far is removed in reverse order
//! (cluster role; VM, turned off, then deleted with its disks, which takes its KVP items and
//! DVD drive with it; then the ISO copy, now free; VHDX copy; VM folder).
//! When a creating call's outcome is unknown (timeout, transport failure, cancellation while it
//! was in flight) the artifact it may have made is removed too: the VM is looked up by its
//! notes marker, the folder by the path the host would have used. The job's error lists what
//! was removed and, loudly, what could not be.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use aetherv_hyperv::ops::{
    BootSettings, CopiedImage, CopyImageRequest, CopyIsoRequest, GuestKvp, HostFacts, HyperVHost,
    PowerAction, RegisterVmSpec, VmId,
};
use tokio_util::sync::CancellationToken;

use crate::boot::BootPolicy;
use crate::error::{Error, Result};
use crate::job::{
    self, Action, Artifact, CallError, CleanupEntry, CleanupOutcome, CleanupReport, Compensation,
    Event, EventLog, HostCall, HostReply, JobEvent, JobId, LogLevel, StepCall, StepEnd, Workflow,
};
use crate::kvp::{
    GuestPublicKey, GuestState, HostState, ProvisioningPayload, guest_data, keys, version_item,
};
use crate::resources::{HostDefinitions, Placement, PlacementRequest, ResolveError, resolve};
use crate::schema::{OsFamily, ProvisionValues, Validated};

/// Step names, as progress events and errors report them.
pub mod steps {
    /// Host facts and inventory checks.
    pub const PRE_CHECKS: &str = "Provisioning.PreChecks";
    /// Golden image copy.
    pub const COPY_IMAGE: &str = "Provisioning.CopyImage";
    /// Provisioning ISO copy.
    pub const COPY_ISO: &str = "Provisioning.CopyProvisioningISO";
    /// VM registration and start.
    pub const REGISTER_VM: &str = "Provisioning.RegisterVM";
    /// KVP handshake start and wait for the guest's public key.
    pub const WAIT_FOR_KEY: &str = "Provisioning.WaitForProvisioningKey";
    /// Encrypted data publication.
    pub const PUBLISH: &str = "Provisioning.PublishProvisioningData";
    /// Wait for the guest to apply the data.
    pub const WAIT_FOR_GUEST: &str = "Provisioning.WaitForGuest";
    /// Removal of the host-written `hlvmm.*` KVP items once the guest applied the data.
    pub const REMOVE_KEYS: &str = "Provisioning.RemoveProvisioningKeys";
    /// Ejection and removal of the DVD drive holding the provisioning ISO.
    pub const REMOVE_DVD: &str = "Provisioning.RemoveDvdDrive";
    /// Deletion of the ISO copy in the VM folder.
    pub const REMOVE_ISO: &str = "Provisioning.RemoveProvisioningISO";
    /// Cluster role.
    pub const CLUSTER_ROLE: &str = "Provisioning.AddClusterRole";
    /// The VM's notes marker becomes the provisioned marker ([`super::provisioned_marker`]),
    /// so that a restarted server does not take the finished VM for an orphan.
    pub const MARK_PROVISIONED: &str = "Provisioning.MarkProvisioned";
    /// Compensation after a failure or cancellation.
    pub const COMPENSATE: &str = "Provisioning.Compensate";
    /// The job finished.
    pub const DONE: &str = "Provisioning.Done";
}

/// Prefix of every KVP item this project writes to a guest (`hlvmm.`).
pub const KVP_PREFIX: &str = keys::PREFIX;

/// Prefix of the VM notes marker.
pub const MARKER_PREFIX: &str = "aetherv-job:";

/// The VM notes marker of the VM a job creates: `aetherv-job:<job id>`.
pub fn marker(job: &JobId) -> String {
    format!("{MARKER_PREFIX}{job}")
}

/// Prefix of the notes marker of a VM whose provisioning finished.
pub const PROVISIONED_PREFIX: &str = "aetherv-provisioned:";

/// The notes marker a provisioned VM keeps: `aetherv-provisioned:<job id>`. It replaces
/// [`marker`] as the job's last step: a VM still carrying [`marker`] after its job is gone is
/// half made (an orphan), one carrying this one is finished, and both tell deletion that this
/// project created the VM's folder.
pub fn provisioned_marker(job: &JobId) -> String {
    format!("{PROVISIONED_PREFIX}{job}")
}

/// Whether VM notes are one of this project's markers ([`marker`] or
/// [`provisioned_marker`]).
pub fn is_project_marker(notes: &str) -> bool {
    // The marker is the first line; the user's own notes may follow it (see [`split_notes`]).
    let notes = notes.lines().next().unwrap_or_default().trim();
    [MARKER_PREFIX, PROVISIONED_PREFIX].iter().any(|prefix| {
        notes
            .strip_prefix(prefix)
            .is_some_and(|id| !id.is_empty() && !id.contains(char::is_whitespace))
    })
}

/// Splits VM notes into the project's marker (the first line, when it is one of
/// [`marker`]/[`provisioned_marker`]) and the user's notes (the rest, or everything).
pub fn split_notes(notes: &str) -> (Option<&str>, &str) {
    let (first, rest) = notes.split_once('\n').unwrap_or((notes, ""));
    if is_project_marker(first) {
        (Some(first.trim()), rest)
    } else {
        (None, notes)
    }
}

/// VM notes made of the project's `marker` line (if any) and the user's notes: the inverse of
/// [`split_notes`].
pub fn join_notes(marker: Option<&str>, user: &str) -> String {
    match marker {
        Some(m) if user.is_empty() => m.to_owned(),
        Some(m) => format!("{m}\n{user}"),
        None => user.to_owned(),
    }
}

/// Timeouts and knobs of the provisioning pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionConfig {
    /// Timeout of ordinary host calls (facts, inventory, register, KVP reads and writes,
    /// cluster role).
    pub step_timeout: Duration,
    /// Timeout of the image and ISO copies.
    pub copy_timeout: Duration,
    /// How long the guest has to publish its public key after the handshake starts.
    pub key_timeout: Duration,
    /// How long the guest has to apply the data once published.
    pub apply_timeout: Duration,
    /// Pause between polls of the guest's KVP items.
    pub poll_interval: Duration,
    /// Timeout of each compensation call.
    pub compensation_timeout: Duration,
    /// `hlvmm.meta.version` to publish; the provisioning ISO's version when `None`.
    pub agent_version: Option<String>,
    /// Named networks and storage classes by host name (lowercase) from the server's
    /// configuration; joined with the host's own resources file ([`crate::resources`]).
    pub resources: BTreeMap<String, HostDefinitions>,
    /// Firmware settings per OS family and image name pattern (Secure Boot, template, vTPM).
    pub boot: BootPolicy,
}

impl Default for ProvisionConfig {
    fn default() -> Self {
        Self {
            step_timeout: Duration::from_secs(120),
            copy_timeout: Duration::from_secs(30 * 60),
            key_timeout: Duration::from_secs(10 * 60),
            apply_timeout: Duration::from_secs(30 * 60),
            poll_interval: Duration::from_secs(2),
            compensation_timeout: Duration::from_secs(120),
            agent_version: None,
            resources: BTreeMap::new(),
            boot: BootPolicy::default(),
        }
    }
}

/// A successfully provisioned VM.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Provisioned {
    /// The job.
    pub job: JobId,
    /// The host.
    pub host: String,
    /// The VM's id.
    pub vm_id: VmId,
    /// The VM's name.
    pub vm_name: String,
    /// The guest OS family.
    pub os_family: OsFamily,
    /// The VM folder.
    pub vm_folder: String,
    /// Whether the VM is a cluster role.
    pub clustered: bool,
    /// What the cleanup after the guest applied its configuration removed (KVP items, DVD
    /// drive, ISO copy) and, loudly, what it could not.
    pub cleanup: CleanupReport,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    NotStarted,
    Facts,
    Inventory,
    CopyImage,
    CopyIso,
    Register,
    BeginHandshake,
    PollKey,
    KeyWait,
    Publish,
    PollGuest,
    GuestWait,
    RemoveKeys,
    RemoveDvd,
    RemoveIso,
    ClusterRole,
    MarkProvisioned,
    Compensating,
    Done,
}

impl Phase {
    fn step(self) -> &'static str {
        match self {
            Self::NotStarted | Self::Facts | Self::Inventory => steps::PRE_CHECKS,
            Self::CopyImage => steps::COPY_IMAGE,
            Self::CopyIso => steps::COPY_ISO,
            Self::Register => steps::REGISTER_VM,
            Self::BeginHandshake | Self::PollKey | Self::KeyWait => steps::WAIT_FOR_KEY,
            Self::Publish => steps::PUBLISH,
            Self::PollGuest | Self::GuestWait => steps::WAIT_FOR_GUEST,
            Self::RemoveKeys => steps::REMOVE_KEYS,
            Self::RemoveDvd => steps::REMOVE_DVD,
            Self::RemoveIso => steps::REMOVE_ISO,
            Self::ClusterRole => steps::CLUSTER_ROLE,
            Self::MarkProvisioned => steps::MARK_PROVISIONED,
            Self::Compensating => steps::COMPENSATE,
            Self::Done => steps::DONE,
        }
    }

    fn percent(self) -> u8 {
        match self {
            Self::NotStarted | Self::Facts => 2,
            Self::Inventory => 5,
            Self::CopyImage => 10,
            Self::CopyIso => 30,
            Self::Register => 40,
            Self::BeginHandshake | Self::PollKey | Self::KeyWait => 50,
            Self::Publish => 65,
            Self::PollGuest | Self::GuestWait => 75,
            Self::RemoveKeys => 85,
            Self::RemoveDvd => 88,
            Self::RemoveIso => 90,
            Self::ClusterRole => 92,
            Self::MarkProvisioned => 96,
            Self::Done => 100,
            // Compensation never moves the bar: a failed job stays where it stopped.
            Self::Compensating => 0,
        }
    }
}

/// One compensation call.
#[derive(Debug, Clone, PartialEq)]
enum Undo {
    RemoveRole(VmId),
    TurnOff(VmId, String),
    DeleteVm(VmId, String),
    FindMarked(String),
    RemovePath(Artifact, String),
    RemoveKeys(VmId, String),
    RemoveDvd(VmId, String),
}

impl Undo {
    fn artifact(&self) -> Artifact {
        match self {
            Self::RemoveRole(vm) => Artifact::ClusterRole { vm: *vm },
            Self::TurnOff(id, name) | Self::DeleteVm(id, name) => Artifact::Vm {
                id: *id,
                name: name.clone(),
            },
            Self::FindMarked(marker) => Artifact::MarkedVm {
                marker: marker.clone(),
            },
            Self::RemovePath(artifact, _) => artifact.clone(),
            Self::RemoveKeys(vm, prefix) => Artifact::KvpItems {
                vm: *vm,
                prefix: prefix.clone(),
            },
            Self::RemoveDvd(vm, path) => Artifact::DvdDrive {
                vm: *vm,
                path: path.clone(),
            },
        }
    }

    fn call(&self) -> HostCall {
        match self {
            Self::RemoveRole(vm) => HostCall::RemoveClusterRole(*vm),
            Self::TurnOff(id, _) => HostCall::Power(*id, PowerAction::TurnOff),
            Self::DeleteVm(id, _) => HostCall::DeleteVm {
                id: *id,
                delete_disks: true,
            },
            Self::FindMarked(_) => HostCall::Inventory,
            Self::RemovePath(_, path) => HostCall::RemovePath(path.clone()),
            Self::RemoveKeys(vm, prefix) => HostCall::KvpRemoveHostPrefix(*vm, prefix.clone()),
            Self::RemoveDvd(vm, path) => HostCall::RemoveDvdDrive {
                vm: *vm,
                path: path.clone(),
            },
        }
    }

    fn for_artifact(artifact: &Artifact) -> Vec<Self> {
        match artifact {
            Artifact::ClusterRole { vm } => vec![Self::RemoveRole(*vm)],
            Artifact::Vm { id, name } => {
                vec![
                    Self::TurnOff(*id, name.clone()),
                    Self::DeleteVm(*id, name.clone()),
                ]
            }
            Artifact::MarkedVm { marker } => vec![Self::FindMarked(marker.clone())],
            Artifact::Iso { path } | Artifact::Vhdx { path } | Artifact::VmFolder { path } => {
                vec![Self::RemovePath(artifact.clone(), path.clone())]
            }
            Artifact::KvpItems { vm, prefix } => vec![Self::RemoveKeys(*vm, prefix.clone())],
            Artifact::DvdDrive { vm, path } => vec![Self::RemoveDvd(*vm, path.clone())],
        }
    }
}

enum Ending {
    Failed(&'static str, Error),
    Cancelled(&'static str),
}

/// The provisioning state machine (see the module docs). Feed it [`Event`]s; run it with
/// [`crate::job::run`] or [`provision`].
pub struct ProvisionMachine {
    job: JobId,
    host: String,
    values: ProvisionValues,
    warnings: Vec<String>,
    config: ProvisionConfig,
    phase: Phase,
    log: EventLog,
    image_path: String,
    disk_size_bytes: Option<u64>,
    iso_source: String,
    agent_version: String,
    boot: Option<BootSettings>,
    placement: Placement,
    expected_root: String,
    copied: Option<CopiedImage>,
    iso_copy: Option<String>,
    vm: Option<VmId>,
    deadline: Duration,
    last_guest_state: Option<String>,
    created: Vec<Artifact>,
    undo: VecDeque<Undo>,
    current_undo: Option<Undo>,
    cleanup: CleanupReport,
    after_guest: CleanupReport,
    ending: Option<Ending>,
    clustered: bool,
    percent: u8,
}

impl std::fmt::Debug for ProvisionMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProvisionMachine")
            .field("job", &self.job)
            .field("host", &self.host)
            .field("vm", &self.values.vm_name)
            .field("phase", &self.phase)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

impl ProvisionMachine {
    /// A machine for the validated request `request`, run as job `job`. The request's
    /// warnings go to the job log when it starts.
    pub fn new(job: JobId, request: &Validated, config: ProvisionConfig) -> Self {
        Self {
            job,
            host: request.request.target_host.clone(),
            values: request.request.values.clone(),
            warnings: request.warnings.clone(),
            config,
            phase: Phase::NotStarted,
            log: EventLog::default(),
            image_path: String::new(),
            disk_size_bytes: None,
            iso_source: String::new(),
            agent_version: String::new(),
            boot: None,
            placement: Placement::default(),
            expected_root: String::new(),
            copied: None,
            iso_copy: None,
            vm: None,
            deadline: Duration::ZERO,
            last_guest_state: None,
            created: Vec::new(),
            undo: VecDeque::new(),
            current_undo: None,
            cleanup: CleanupReport::default(),
            after_guest: CleanupReport::default(),
            ending: None,
            clustered: false,
            percent: 0,
        }
    }

    /// The step the machine is in.
    pub fn step(&self) -> &'static str {
        self.phase.step()
    }

    /// The artifacts created so far, in creation order.
    pub fn created(&self) -> &[Artifact] {
        &self.created
    }

    /// The cleanup so far.
    pub fn cleanup(&self) -> &CleanupReport {
        &self.cleanup
    }

    fn enter(&mut self, phase: Phase, message: impl Into<String>) {
        self.phase = phase;
        self.percent = self.percent.max(phase.percent());
        self.log.progress(phase.step(), self.percent, message);
    }

    fn call(&self, call: HostCall) -> Action {
        let timeout = match call {
            HostCall::CopyImage(_) | HostCall::CopyIso(_) => self.config.copy_timeout,
            _ => self.config.step_timeout,
        };
        Action::CallHost(StepCall {
            step: self.phase.step(),
            call,
            timeout,
        })
    }

    fn expected_folder(&self, facts_vm_path: &str) -> String {
        format!(
            "{}\\{}",
            facts_vm_path.trim_end_matches('\\'),
            self.values.vm_name
        )
    }

    /// The steps this request runs, in order (the cluster role only when asked for).
    fn plan(&self) -> Vec<&'static str> {
        let mut plan = vec![
            steps::PRE_CHECKS,
            steps::COPY_IMAGE,
            steps::COPY_ISO,
            steps::REGISTER_VM,
            steps::WAIT_FOR_KEY,
            steps::PUBLISH,
            steps::WAIT_FOR_GUEST,
            steps::REMOVE_KEYS,
            steps::REMOVE_DVD,
            steps::REMOVE_ISO,
        ];
        if self.values.vm_clustered {
            plan.push(steps::CLUSTER_ROLE);
        }
        plan.push(steps::MARK_PROVISIONED);
        plan
    }

    fn start(&mut self) -> Action {
        let plan = self.plan();
        self.log.plan(plan);
        self.log.log(
            LogLevel::Info,
            format!(
                "job {}: provisioning VM {} ({}, image {:?}) on host {}",
                self.job,
                self.values.vm_name,
                self.values.os_family,
                self.values.image_name,
                self.host
            ),
        );
        for warning in std::mem::take(&mut self.warnings) {
            self.log.log(LogLevel::Warn, warning);
        }
        self.enter(Phase::Facts, "checking the host");
        self.call(HostCall::Facts)
    }

    fn pre_check(&self, check: &'static str, detail: String) -> Error {
        Error::PreCheck {
            check,
            host: self.host.clone(),
            detail,
        }
    }

    fn on_facts(&mut self, facts: &HostFacts) -> Result<Action> {
        let image = facts
            .images
            .iter()
            .find(|i| i.name.eq_ignore_ascii_case(&self.values.image_name))
            .ok_or_else(|| {
                let names: Vec<&str> = facts.images.iter().map(|i| i.name.as_str()).collect();
                self.pre_check(
                    "image exists",
                    format!(
                        "no golden image named {:?}; the host has {names:?}",
                        self.values.image_name
                    ),
                )
            })?;
        let family = self.values.os_family.as_str();
        let iso = facts
            .provisioning_isos
            .iter()
            .find(|i| i.os_family.eq_ignore_ascii_case(family))
            .ok_or_else(|| {
                self.pre_check(
                    "provisioning iso",
                    format!("no provisioning ISO for {family} guests; deploy one to the host"),
                )
            })?;
        let version = self
            .config
            .agent_version
            .clone()
            .or_else(|| iso.version.clone())
            .ok_or_else(|| {
                self.pre_check(
                    "provisioning iso",
                    format!(
                        "the {family} provisioning ISO {} has no agent version; configure one",
                        iso.path
                    ),
                )
            })?;
        let disk_size = crate::schema::check_disk_size(
            "disk_size_gb",
            self.values.disk_size_gb,
            &image.name,
            image.max_size_bytes,
        )
        .map_err(|problem| self.pre_check("disk size", problem.message))?;
        let needed = u64::from(self.values.gb_ram) << 30;
        if facts.memory_available_bytes < needed {
            return Err(self.pre_check(
                "enough memory",
                format!(
                    "the VM needs {} GiB, the host has {:.1} GiB available; pick another host or \
                     less memory",
                    self.values.gb_ram,
                    facts.memory_available_bytes as f64 / f64::from(1u32 << 30)
                ),
            ));
        }
        self.image_path = image.path.clone();
        self.disk_size_bytes = disk_size;
        self.iso_source = iso.path.clone();
        self.agent_version = version;
        self.log.log(
            LogLevel::Info,
            format!(
                "host {} is reachable; image {}, ISO {} (agent {})",
                facts.name, image.path, iso.path, self.agent_version
            ),
        );
        let boot = self
            .config
            .boot
            .resolve(&self.host, &image.name, self.values.os_family);
        self.log.log(
            LogLevel::Info,
            format!(
                "firmware: {} ({})",
                boot.settings,
                boot.rule.as_deref().map_or_else(
                    || format!("the {family} default"),
                    |rule| format!("rule for images {rule:?}")
                )
            ),
        );
        if !boot.settings.boots(self.values.os_family) {
            self.log.log(
                LogLevel::Warn,
                format!(
                    "a {family} guest does not pass Secure Boot with the {} template; the guest \
                     will not start and the job will time out waiting for its key",
                    boot.settings.secure_boot_template
                ),
            );
        }
        self.boot = Some(boot.settings);
        let configured = self
            .config
            .resources
            .get(&self.host.to_ascii_lowercase())
            .cloned()
            .unwrap_or_default();
        let request = PlacementRequest {
            network: self.values.network.as_deref(),
            storage_class: self.values.storage_class.as_deref(),
            vlan_id: self.values.vlan_id,
        };
        self.placement = match resolve(&configured, facts, request, "") {
            Ok(placement) => placement,
            Err(ResolveError::Fields(problems)) => {
                let check = if problems.iter().any(|p| p.field == "network") {
                    "network"
                } else {
                    "storage class"
                };
                return Err(self.pre_check(
                    check,
                    problems
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; "),
                ));
            }
            Err(ResolveError::HostResources(e)) => {
                return Err(self.pre_check("host resources", e.to_string()));
            }
        };
        let vlan = self
            .placement
            .vlan_id
            .map(|v| format!(", VLAN {v}"))
            .unwrap_or_default();
        let network = match (&self.placement.network, &self.placement.switch_name) {
            (Some(network), Some(switch)) => format!("{network} (switch {switch}{vlan})"),
            (None, Some(switch)) => format!("switch {switch}{vlan}"),
            _ => "none (the host has no External switch; the adapter stays unconnected)".to_owned(),
        };
        let root = match (
            &self.placement.storage_class,
            &self.placement.destination_root,
        ) {
            (Some(class), Some(root)) => format!("{root} (storage class {class})"),
            _ => format!("{} (the host's default)", facts.vm_path),
        };
        self.log.log(
            LogLevel::Info,
            format!("network: {network}; VM folder root: {root}"),
        );
        // Remembered for compensation of a copy whose outcome is unknown.
        self.expected_root = self
            .placement
            .destination_root
            .clone()
            .unwrap_or_else(|| facts.vm_path.clone());
        self.enter(Phase::Inventory, "checking that the VM name is free");
        Ok(self.call(HostCall::Inventory))
    }

    fn on_reply(&mut self, reply: HostReply, now: Duration) -> Result<Action> {
        match (self.phase, reply) {
            (Phase::Facts, HostReply::Facts(facts)) => self.on_facts(&facts),
            (Phase::Inventory, HostReply::Inventory(inventory)) => {
                if let Some(vm) = inventory
                    .vms
                    .iter()
                    .find(|vm| vm.name.eq_ignore_ascii_case(&self.values.vm_name))
                {
                    return Err(self.pre_check(
                        "name free",
                        format!(
                            "a VM named {} already exists ({}); pick another name",
                            vm.name, vm.id
                        ),
                    ));
                }
                self.enter(Phase::CopyImage, "copying the golden image");
                Ok(self.call(HostCall::CopyImage(CopyImageRequest {
                    image_path: self.image_path.clone(),
                    vm_name: self.values.vm_name.clone(),
                    destination_root: self.placement.destination_root.clone(),
                    disk_size_bytes: self.disk_size_bytes,
                })))
            }
            (Phase::CopyImage, HostReply::CopiedImage(copied)) => {
                self.created.push(Artifact::VmFolder {
                    path: copied.vm_folder.clone(),
                });
                self.created.push(Artifact::Vhdx {
                    path: copied.vhdx_path.clone(),
                });
                self.log.log(
                    LogLevel::Info,
                    format!(
                        "copied the image to {} ({} bytes)",
                        copied.vhdx_path, copied.size_bytes
                    ),
                );
                if let (Some(_), Some(size)) = (self.disk_size_bytes, copied.max_size_bytes) {
                    self.log.log(
                        LogLevel::Info,
                        format!(
                            "the system disk's virtual size is {}",
                            crate::schema::describe_bytes(size)
                        ),
                    );
                }
                let request = CopyIsoRequest {
                    iso_path: self.iso_source.clone(),
                    vm_folder: copied.vm_folder.clone(),
                };
                self.copied = Some(copied);
                self.enter(Phase::CopyIso, "copying the provisioning ISO");
                Ok(self.call(HostCall::CopyIso(request)))
            }
            (Phase::CopyIso, HostReply::CopiedIso(iso)) => {
                self.created.push(Artifact::Iso {
                    path: iso.iso_path.clone(),
                });
                self.log.log(
                    LogLevel::Info,
                    format!("copied the ISO to {}", iso.iso_path),
                );
                self.iso_copy = Some(iso.iso_path);
                let Some(copied) = &self.copied else {
                    return Err(self.unexpected("ISO copy before the image copy"));
                };
                let spec = RegisterVmSpec {
                    name: self.values.vm_name.clone(),
                    vm_folder: copied.vm_folder.clone(),
                    vhdx_path: copied.vhdx_path.clone(),
                    iso_path: self.iso_copy.clone(),
                    processor_count: self.values.cpu_cores,
                    memory_startup_bytes: u64::from(self.values.gb_ram) << 30,
                    dynamic_memory: None,
                    switch_name: self.placement.switch_name.clone(),
                    vlan_id: self.placement.vlan_id,
                    notes: marker(&self.job),
                    start: true,
                    boot: self.boot,
                };
                self.enter(Phase::Register, "registering and starting the VM");
                Ok(self.call(HostCall::RegisterVm(Box::new(spec))))
            }
            (Phase::Register, HostReply::Registered(vm)) => {
                self.created.push(Artifact::Vm {
                    id: vm.id,
                    name: vm.name.clone(),
                });
                self.log.log(
                    LogLevel::Info,
                    format!("registered VM {} ({}), state {}", vm.name, vm.id, vm.state),
                );
                self.vm = Some(vm.id);
                self.log.vm_registered(vm.id);
                self.enter(
                    Phase::BeginHandshake,
                    "asking the guest agent for its public key",
                );
                let items = vec![
                    version_item(&self.agent_version).into_pair(),
                    HostState::WaitingForPublicKey.item().into_pair(),
                ];
                Ok(self.call(HostCall::KvpWriteHost(vm.id, items)))
            }
            (Phase::BeginHandshake, HostReply::Written) => {
                self.deadline = now + self.config.key_timeout;
                self.poll(Phase::PollKey)
            }
            (Phase::PollKey, HostReply::GuestKvp(kvp)) => self.on_key_poll(&kvp, now),
            (Phase::Publish, HostReply::Written) => {
                self.deadline = now + self.config.apply_timeout;
                self.enter(
                    Phase::PollGuest,
                    "waiting for the guest to apply the configuration",
                );
                self.poll(Phase::PollGuest)
            }
            (Phase::PollGuest, HostReply::GuestKvp(kvp)) => self.on_guest_poll(&kvp, now),
            (Phase::ClusterRole, HostReply::ClusterRole(role)) => {
                self.created.push(Artifact::ClusterRole { vm: role.id });
                self.clustered = role.clustered;
                self.log.log(
                    LogLevel::Info,
                    format!(
                        "VM is a cluster role{}",
                        role.group
                            .as_deref()
                            .map(|g| format!(" (group {g})"))
                            .unwrap_or_default()
                    ),
                );
                self.mark_provisioned()
            }
            (_, other) => Err(self.unexpected(&format!("{other:?}"))),
        }
    }

    fn unexpected(&self, detail: &str) -> Error {
        Error::Unexpected {
            step: self.phase.step(),
            detail: detail.chars().take(200).collect(),
        }
    }

    fn vm_id(&self) -> Result<VmId> {
        self.vm.ok_or_else(|| self.unexpected("no VM registered"))
    }

    fn poll(&mut self, phase: Phase) -> Result<Action> {
        self.phase = phase;
        let id = self.vm_id()?;
        Ok(self.call(HostCall::KvpReadGuest(id)))
    }

    fn guest_state(&mut self, kvp: &GuestKvp) -> Option<GuestState> {
        let raw = kvp.items.get(keys::GUEST_STATE)?;
        if self.last_guest_state.as_deref() != Some(raw.as_str()) {
            self.log
                .log(LogLevel::Info, format!("guest state: {}", raw.trim()));
            self.last_guest_state = Some(raw.clone());
        }
        raw.parse().ok()
    }

    fn guest_failed(&self, kvp: &GuestKvp) -> Error {
        Error::GuestFailed {
            vm: self.values.vm_name.clone(),
            reason: kvp
                .items
                .get(keys::GUEST_ERROR)
                .map(|r| r.trim().to_owned())
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| "no reason given".to_owned()),
        }
    }

    fn wait_or_time_out(
        &mut self,
        wait: Phase,
        waiting_for: &'static str,
        now: Duration,
    ) -> Result<Action> {
        if now >= self.deadline {
            let started = match wait {
                Phase::KeyWait => self.config.key_timeout,
                _ => self.config.apply_timeout,
            };
            return Err(Error::GuestTimeout {
                vm: self.values.vm_name.clone(),
                waiting_for,
                after: started,
                last_state: self.last_guest_state.clone(),
            });
        }
        self.phase = wait;
        Ok(Action::Wait(self.config.poll_interval))
    }

    fn on_key_poll(&mut self, kvp: &GuestKvp, now: Duration) -> Result<Action> {
        let state = self.guest_state(kvp);
        if state == Some(GuestState::ProvisioningFailed) {
            return Err(self.guest_failed(kvp));
        }
        let key = kvp.items.get(keys::GUEST_PUBLIC_KEY);
        let (Some(GuestState::WaitingForAesKey), Some(key)) = (state, key) else {
            return self.wait_or_time_out(Phase::KeyWait, "its public key", now);
        };
        let key = GuestPublicKey::parse(key)?;
        self.log.log(
            LogLevel::Info,
            format!(
                "guest published a {}-bit RSA key ({:?})",
                key.bits(),
                key.format()
            ),
        );
        self.enter(Phase::Publish, "publishing the encrypted configuration");
        let data = guest_data(&self.values);
        let mut items: Vec<(String, String)> =
            ProvisioningPayload::build(&data, &key, &mut rand::rngs::OsRng)?
                .into_iter()
                .map(|item| item.into_pair())
                .collect();
        let count = items.len();
        items.push(HostState::ProvisioningDataPublished.item().into_pair());
        self.log.log(
            LogLevel::Info,
            format!(
                "publishing {} data values as {count} encrypted KVP items",
                data.len()
            ),
        );
        let id = self.vm_id()?;
        Ok(self.call(HostCall::KvpWriteHost(id, items)))
    }

    fn on_guest_poll(&mut self, kvp: &GuestKvp, now: Duration) -> Result<Action> {
        match self.guest_state(kvp) {
            Some(GuestState::ProvisioningApplied) => {
                self.log
                    .log(LogLevel::Info, "the guest applied the configuration");
                self.enter(
                    Phase::RemoveKeys,
                    format!("removing the host's {KVP_PREFIX}* KVP items"),
                );
                let id = self.vm_id()?;
                Ok(self.call(HostCall::KvpRemoveHostPrefix(id, KVP_PREFIX.to_owned())))
            }
            Some(GuestState::ProvisioningFailed) => Err(self.guest_failed(kvp)),
            _ => self.wait_or_time_out(Phase::GuestWait, "provisioningapplied", now),
        }
    }

    fn after_cleanup(&mut self) -> Result<Action> {
        let level = if self.after_guest.is_clean() {
            LogLevel::Info
        } else {
            LogLevel::Error
        };
        self.log.log(
            level,
            format!("cleanup after the guest: {}", self.after_guest),
        );
        if self.values.vm_clustered {
            self.enter(Phase::ClusterRole, "adding the cluster role");
            let id = self.vm_id()?;
            Ok(self.call(HostCall::AddClusterRole(id)))
        } else {
            self.mark_provisioned()
        }
    }

    /// The last step: the notes marker says the VM is finished.
    fn mark_provisioned(&mut self) -> Result<Action> {
        self.enter(
            Phase::MarkProvisioned,
            "marking the VM as provisioned in its notes",
        );
        let id = self.vm_id()?;
        Ok(self.call(HostCall::SetVmNotes(id, provisioned_marker(&self.job))))
    }

    /// The marker's answer. A failure does not undo a working VM: it is logged, and the VM
    /// keeps the job marker (a restarted server lists it as orphaned, and an admin adopts it).
    fn on_marked(&mut self, result: std::result::Result<HostReply, CallError>) -> Action {
        match result {
            Ok(HostReply::NotesSet(notes)) => self.log.log(
                LogLevel::Info,
                format!("the VM's notes now read {:?}", notes.notes),
            ),
            Ok(other) => self.log.log(
                LogLevel::Error,
                format!(
                    "could not mark the VM as provisioned: unexpected reply {other:?}; it keeps \
                     its job marker, so a restarted server will list it as orphaned (adopt it)"
                ),
            ),
            Err(e) => self.log.log(
                LogLevel::Error,
                format!(
                    "could not mark the VM as provisioned: {e}; it keeps its job marker, so a \
                     restarted server will list it as orphaned (adopt it)"
                ),
            ),
        }
        self.succeed()
    }

    fn record_after_guest(&mut self, artifact: Artifact, outcome: CleanupOutcome) {
        match &outcome {
            CleanupOutcome::Removed => self.log.log(LogLevel::Info, format!("removed {artifact}")),
            CleanupOutcome::AlreadyGone => self
                .log
                .log(LogLevel::Info, format!("{artifact} was already gone")),
            CleanupOutcome::Failed(why) => self.log.log(
                LogLevel::Error,
                format!("COULD NOT REMOVE {artifact}: {why}; remove it by hand"),
            ),
        }
        self.after_guest
            .entries
            .push(CleanupEntry { artifact, outcome });
    }

    /// One reply (or failure) of the cleanup after the guest; failures are recorded, never
    /// fatal, and the next removal follows.
    fn on_after_guest(
        &mut self,
        result: std::result::Result<HostReply, CallError>,
    ) -> Result<Action> {
        let id = self.vm_id()?;
        match (self.phase, result) {
            (Phase::RemoveKeys, result) => {
                let artifact = Artifact::KvpItems {
                    vm: id,
                    prefix: KVP_PREFIX.to_owned(),
                };
                match result {
                    Ok(HostReply::KvpRemoved(keys)) => {
                        for key in &keys {
                            self.log
                                .log(LogLevel::Info, format!("removed host KVP item {key}"));
                        }
                        let outcome = if keys.is_empty() {
                            CleanupOutcome::AlreadyGone
                        } else {
                            CleanupOutcome::Removed
                        };
                        self.record_after_guest(artifact, outcome);
                    }
                    Ok(other) => self.record_after_guest(
                        artifact,
                        CleanupOutcome::Failed(format!("unexpected reply {other:?}")),
                    ),
                    Err(e) => {
                        self.record_after_guest(artifact, CleanupOutcome::Failed(e.to_string()));
                    }
                }
                match self.iso_copy.clone() {
                    Some(path) => {
                        self.enter(
                            Phase::RemoveDvd,
                            format!("ejecting {path} and removing its DVD drive"),
                        );
                        Ok(self.call(HostCall::RemoveDvdDrive { vm: id, path }))
                    }
                    None => self.after_cleanup(),
                }
            }
            (Phase::RemoveDvd, result) => {
                let path = self.iso_copy.clone().unwrap_or_default();
                let artifact = Artifact::DvdDrive {
                    vm: id,
                    path: path.clone(),
                };
                match result {
                    Ok(HostReply::DvdDriveRemoved(dvd)) => {
                        for reason in &dvd.kept {
                            self.log
                                .log(LogLevel::Warn, format!("DVD drive kept: {reason}"));
                        }
                        // An ejected drive that Hyper-V cannot remove yet holds nothing: the
                        // ISO is free, which is what matters.
                        let outcome = if dvd.ejected == 0 {
                            CleanupOutcome::AlreadyGone
                        } else {
                            CleanupOutcome::Removed
                        };
                        self.record_after_guest(artifact, outcome);
                    }
                    Ok(other) => self.record_after_guest(
                        artifact,
                        CleanupOutcome::Failed(format!("unexpected reply {other:?}")),
                    ),
                    Err(e) => {
                        self.record_after_guest(artifact, CleanupOutcome::Failed(e.to_string()));
                    }
                }
                self.enter(Phase::RemoveIso, format!("deleting the ISO copy {path}"));
                Ok(self.call(HostCall::RemovePath(path)))
            }
            (Phase::RemoveIso, result) => {
                let path = self.iso_copy.clone().unwrap_or_default();
                let artifact = Artifact::Iso { path };
                match result {
                    Ok(HostReply::RemovedPath(removed)) => {
                        let outcome = if removed.removed {
                            CleanupOutcome::Removed
                        } else {
                            CleanupOutcome::AlreadyGone
                        };
                        // Compensation of a later failure need not remove it again.
                        self.created.retain(|a| a != &artifact);
                        self.record_after_guest(artifact, outcome);
                    }
                    Ok(other) => self.record_after_guest(
                        artifact,
                        CleanupOutcome::Failed(format!("unexpected reply {other:?}")),
                    ),
                    Err(e) => {
                        self.record_after_guest(artifact, CleanupOutcome::Failed(e.to_string()));
                    }
                }
                self.after_cleanup()
            }
            (phase, _) => Err(Error::Unexpected {
                step: phase.step(),
                detail: "a cleanup reply outside the cleanup".to_owned(),
            }),
        }
    }

    fn succeed(&mut self) -> Action {
        self.enter(Phase::Done, "the VM is provisioned");
        self.log.log(
            LogLevel::Info,
            format!("job {}: VM {} is ready", self.job, self.values.vm_name),
        );
        Action::Done
    }

    /// Records what a call whose outcome is unknown may have created.
    fn note_uncertain(&mut self, phase: Phase) {
        match phase {
            Phase::CopyImage if !self.expected_root.is_empty() => {
                let path = self.expected_folder(&self.expected_root.clone());
                self.log.log(
                    LogLevel::Warn,
                    format!("the image copy's outcome is unknown; will remove {path}"),
                );
                self.created.push(Artifact::VmFolder { path });
            }
            Phase::Register => {
                let marker = marker(&self.job);
                self.log.log(
                    LogLevel::Warn,
                    format!("the VM registration's outcome is unknown; will look for VMs marked {marker:?}"),
                );
                self.created.push(Artifact::MarkedVm { marker });
            }
            // The ISO copy lands in the VM folder, which is removed anyway.
            _ => {}
        }
    }

    fn fail(&mut self, step: &'static str, error: Error) -> Action {
        self.log
            .log(LogLevel::Error, format!("{step} failed: {error}"));
        self.log.step_ended(step, StepEnd::Failed);
        self.ending = Some(Ending::Failed(step, error));
        self.begin_compensation()
    }

    fn on_call_error(&mut self, error: CallError) -> Action {
        let step = self.phase.step();
        if !error.is_definite() {
            self.note_uncertain(self.phase);
        }
        let error = match error {
            CallError::Host(source) => Error::Host {
                step,
                source: Box::new(source),
            },
            CallError::TimedOut(after) => Error::StepTimeout {
                step,
                host: self.host.clone(),
                after,
            },
        };
        self.fail(step, error)
    }

    fn on_cancel(&mut self) -> Action {
        match self.phase {
            Phase::Done => Action::Done,
            Phase::Compensating => self.next_undo_again(),
            phase => {
                let step = phase.step();
                // A call in flight was abandoned: its outcome is unknown.
                if !matches!(phase, Phase::KeyWait | Phase::GuestWait | Phase::NotStarted) {
                    self.note_uncertain(phase);
                }
                self.log
                    .log(LogLevel::Warn, format!("job cancelled during {step}"));
                self.log.step_ended(step, StepEnd::Cancelled);
                self.ending = Some(Ending::Cancelled(step));
                self.begin_compensation()
            }
        }
    }

    fn begin_compensation(&mut self) -> Action {
        self.phase = Phase::Compensating;
        // Reverse creation order: the VM (created after the ISO copy) goes first, taking its
        // KVP items and the DVD drive holding the ISO with it; only then is the ISO copy free
        // to delete (a file in a DVD drive cannot be deleted), then the VHDX and the folder.
        self.undo = self
            .created
            .iter()
            .rev()
            .flat_map(Undo::for_artifact)
            .collect();
        let message = if self.undo.is_empty() {
            "nothing was created; nothing to remove".to_owned()
        } else {
            format!("removing {} created artifacts", self.created.len())
        };
        self.log.progress(steps::COMPENSATE, self.percent, message);
        self.next_undo()
    }

    fn next_undo_again(&self) -> Action {
        match &self.current_undo {
            Some(undo) => self.compensate(undo),
            None => Action::Done,
        }
    }

    fn compensate(&self, undo: &Undo) -> Action {
        Action::Compensate(Compensation {
            artifact: undo.artifact(),
            call: undo.call(),
            timeout: self.config.compensation_timeout,
        })
    }

    fn next_undo(&mut self) -> Action {
        match self.undo.pop_front() {
            Some(undo) => {
                let action = self.compensate(&undo);
                self.current_undo = Some(undo);
                action
            }
            None => {
                self.current_undo = None;
                self.phase = Phase::Done;
                let level = if self.cleanup.is_clean() {
                    LogLevel::Info
                } else {
                    LogLevel::Error
                };
                self.log.log(level, format!("cleanup: {}", self.cleanup));
                Action::Done
            }
        }
    }

    fn record(&mut self, artifact: Artifact, outcome: CleanupOutcome) {
        match &outcome {
            CleanupOutcome::Removed => self.log.log(LogLevel::Info, format!("removed {artifact}")),
            CleanupOutcome::AlreadyGone => self
                .log
                .log(LogLevel::Info, format!("{artifact} was already gone")),
            CleanupOutcome::Failed(why) => self.log.log(
                LogLevel::Error,
                format!("COULD NOT REMOVE {artifact}: {why}; remove it by hand"),
            ),
        }
        self.cleanup
            .entries
            .push(CleanupEntry { artifact, outcome });
    }

    fn on_undo_reply(&mut self, result: std::result::Result<HostReply, CallError>) -> Action {
        use aetherv_hyperv::Error as E;
        let Some(undo) = self.current_undo.take() else {
            return self.next_undo();
        };
        let artifact = undo.artifact();
        match (&undo, result) {
            (Undo::TurnOff(..), Ok(_)) => {}
            (Undo::TurnOff(..), Err(CallError::Host(E::InvalidVmState { .. }))) => {}
            (Undo::TurnOff(id, _), Err(CallError::Host(E::UnknownVm { .. }))) => {
                let id = *id;
                self.undo
                    .retain(|u| !matches!(u, Undo::DeleteVm(other, _) if *other == id));
                self.record(artifact, CleanupOutcome::AlreadyGone);
            }
            (Undo::TurnOff(..), Err(e)) => self.log.log(
                LogLevel::Warn,
                format!("turning off {artifact} failed: {e}; trying to delete it anyway"),
            ),
            (Undo::FindMarked(marker), Ok(HostReply::Inventory(inventory))) => {
                let found: Vec<_> = inventory
                    .vms
                    .iter()
                    .filter(|vm| vm.notes.trim() == marker.as_str())
                    .collect();
                if found.is_empty() {
                    self.record(artifact, CleanupOutcome::AlreadyGone);
                }
                for vm in found {
                    self.log.log(
                        LogLevel::Warn,
                        format!("found VM {} ({}) marked by this job", vm.name, vm.id),
                    );
                    self.undo.push_front(Undo::DeleteVm(vm.id, vm.name.clone()));
                    self.undo.push_front(Undo::TurnOff(vm.id, vm.name.clone()));
                }
            }
            (_, Ok(HostReply::RemovedPath(removed))) => {
                let outcome = if removed.removed {
                    CleanupOutcome::Removed
                } else {
                    CleanupOutcome::AlreadyGone
                };
                self.record(artifact, outcome);
            }
            (Undo::DeleteVm(..), Ok(_)) => {
                self.log.log(
                    LogLevel::Info,
                    format!("the host KVP items ({KVP_PREFIX}*) and DVD drive of {artifact} went with it"),
                );
                self.record(artifact, CleanupOutcome::Removed);
            }
            (_, Ok(_)) => self.record(artifact, CleanupOutcome::Removed),
            (
                Undo::RemoveRole(_)
                | Undo::DeleteVm(..)
                | Undo::RemoveKeys(..)
                | Undo::RemoveDvd(..),
                Err(CallError::Host(E::UnknownVm { .. })),
            ) => {
                self.record(artifact, CleanupOutcome::AlreadyGone);
            }
            (_, Err(e)) => self.record(artifact, CleanupOutcome::Failed(e.to_string())),
        }
        self.next_undo()
    }
}

impl Workflow for ProvisionMachine {
    type Output = Provisioned;

    fn handle(&mut self, event: Event, now: Duration) -> Action {
        self.log.at(now);
        match event {
            Event::Start if self.phase == Phase::NotStarted => self.start(),
            Event::Cancel => self.on_cancel(),
            Event::Reply(result) if self.phase == Phase::Compensating => self.on_undo_reply(result),
            Event::Reply(result) if self.phase == Phase::MarkProvisioned => self.on_marked(result),
            Event::Reply(result)
                if matches!(
                    self.phase,
                    Phase::RemoveKeys | Phase::RemoveDvd | Phase::RemoveIso
                ) =>
            {
                let step = self.phase.step();
                self.on_after_guest(result)
                    .unwrap_or_else(|error| self.fail(step, error))
            }
            Event::Reply(Ok(reply)) => {
                let step = self.phase.step();
                match self.on_reply(reply, now) {
                    Ok(action) => action,
                    Err(error) => self.fail(step, error),
                }
            }
            Event::Reply(Err(error)) => self.on_call_error(error),
            Event::WaitElapsed if self.phase == Phase::KeyWait => {
                let step = self.phase.step();
                self.poll(Phase::PollKey)
                    .unwrap_or_else(|error| self.fail(step, error))
            }
            Event::WaitElapsed if self.phase == Phase::GuestWait => {
                let step = self.phase.step();
                self.poll(Phase::PollGuest)
                    .unwrap_or_else(|error| self.fail(step, error))
            }
            other => {
                let step = self.phase.step();
                if self.phase == Phase::Done {
                    return Action::Done;
                }
                let error = self.unexpected(&format!("{other:?}"));
                self.fail(step, error)
            }
        }
    }

    fn drain(&mut self) -> Vec<JobEvent> {
        self.log.drain()
    }

    fn finish(self) -> Result<Provisioned> {
        match self.ending {
            Some(Ending::Failed(step, cause)) => Err(Error::ProvisionFailed {
                job: self.job,
                host: self.host,
                vm: self.values.vm_name,
                step,
                cause: Box::new(cause),
                cleanup: self.cleanup,
            }),
            Some(Ending::Cancelled(step)) => Err(Error::Cancelled {
                job: self.job,
                host: self.host,
                step,
                cleanup: self.cleanup,
            }),
            None => match (self.phase, self.vm, self.copied) {
                (Phase::Done, Some(vm_id), Some(copied)) => Ok(Provisioned {
                    job: self.job,
                    host: self.host,
                    vm_id,
                    vm_name: self.values.vm_name,
                    os_family: self.values.os_family,
                    vm_folder: copied.vm_folder,
                    clustered: self.clustered,
                    cleanup: self.after_guest,
                }),
                (phase, ..) => Err(Error::Unexpected {
                    step: phase.step(),
                    detail: "finish before the workflow is done".to_owned(),
                }),
            },
        }
    }
}

/// Provisions `request` on `host` as job `job`: runs a [`ProvisionMachine`] with
/// [`crate::job::run`], reporting progress and logs to `sink`.
///
/// # Errors
///
/// [`Error::ProvisionFailed`] or [`Error::Cancelled`], each with the cleanup report.
pub async fn provision(
    host: Arc<dyn HyperVHost>,
    job: JobId,
    request: &Validated,
    config: ProvisionConfig,
    cancel: CancellationToken,
    sink: &(dyn Fn(JobEvent) + Send + Sync),
) -> Result<Provisioned> {
    let machine = ProvisionMachine::new(job, request, config);
    job::run(machine, host, cancel, sink).await
}
