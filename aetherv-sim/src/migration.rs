//! The simulated host's migration service: moves that take time, with Hyper-V's rules.
//!
//! A move (`Move-VM`, `Move-VMStorage`, `Move-ClusterVirtualMachineRole`) registers a
//! [`Migration`] in [`crate::SimState`] and the calling script waits for it to end, as the
//! real cmdlets block on the host's `Msvm_MigrationJob`. Meanwhile other sessions read the job
//! (`Get-VmMigration`) or cancel it (`Stop-VmMigration`). Time drives it:
//!
//! - a move takes [`MigrationTiming::duration`]: proportional to the VM's assigned memory for
//!   a live move (its memory is copied while it runs), to its disk files for a storage move,
//!   both for a shared-nothing move (scaled so tests stay fast; the scale is configurable);
//! - the job can be cancelled until its switch-over ([`MigrationTiming::switch_over_percent`]);
//!   after that it is no longer `Cancellable` and finishes;
//! - the VM runs on the source until the switch-over; a cancelled or failed move leaves it
//!   running there, unchanged;
//! - a move that fails halfway (fault injection, [`crate::faults::Fault::FailMigration`])
//!   leaves what a real failed storage copy leaves: the partly copied disk files in the
//!   destination folder (loose files the product must clean up), never a half-moved VM;
//! - a quick move (cluster `-MigrationType Quick`) saves the VM, moves it and resumes it.
//!
//! State changes are applied lazily by [`crate::SimState::advance_migrations`], which every
//! script run calls first, so a move also completes when nobody waits for it any more (as
//! Hyper-V's migration goes on when the PowerShell process that started it ends).

use std::time::{Duration, SystemTime};

use uuid::Uuid;

/// How long simulated moves take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigrationTiming {
    /// Time per GiB of memory a live move copies.
    pub per_memory_gib: Duration,
    /// Time per GiB of disk files a storage move copies.
    pub per_storage_gib: Duration,
    /// The shortest move.
    pub minimum: Duration,
    /// The percentage at which the job reaches its switch-over (no longer cancellable).
    pub switch_over_percent: u8,
}

impl Default for MigrationTiming {
    fn default() -> Self {
        Self {
            per_memory_gib: Duration::from_millis(60),
            per_storage_gib: Duration::from_millis(10),
            minimum: Duration::from_millis(300),
            switch_over_percent: 90,
        }
    }
}

impl MigrationTiming {
    /// Timing with `per_memory_gib` per GiB of memory (storage at a sixth of it) and the
    /// default minimum and switch-over.
    pub fn per_memory_gib(per_gib: Duration) -> Self {
        Self {
            per_memory_gib: per_gib,
            per_storage_gib: per_gib / 6,
            ..Self::default()
        }
    }

    /// How long moving `memory_bytes` of memory and `storage_bytes` of files takes.
    pub fn duration(&self, memory_bytes: u64, storage_bytes: u64) -> Duration {
        const GIB: f64 = (1u64 << 30) as f64;
        let memory = self.per_memory_gib.mul_f64(memory_bytes as f64 / GIB);
        let storage = self.per_storage_gib.mul_f64(storage_bytes as f64 / GIB);
        (memory + storage).max(self.minimum)
    }
}

/// What kind of move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveKind {
    /// `Move-VM` without storage: the VM's files stay where they are (shared storage).
    Host,
    /// `Move-VM -IncludeStorage`: memory and files (shared-nothing).
    HostWithStorage,
    /// `Move-VMStorage`: the files, to another folder of the same host.
    Storage,
    /// `Move-ClusterVirtualMachineRole -MigrationType Live`.
    ClusterLive,
    /// `Move-ClusterVirtualMachineRole -MigrationType Quick`: save, move, resume.
    ClusterQuick,
}

/// Where a migration job is (`Msvm_MigrationJob.JobState`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MigrationState {
    /// Copying (job state 4).
    Running,
    /// Done (7): the VM is on the destination.
    Completed,
    /// Cancelled before its switch-over (8): the VM stayed on the source.
    Cancelled,
    /// Failed (10) with Hyper-V's message: the VM stayed on the source.
    Failed(String),
}

impl MigrationState {
    /// The CIM job state number.
    pub fn job_state(&self) -> u16 {
        match self {
            Self::Running => 4,
            Self::Completed => 7,
            Self::Cancelled => 8,
            Self::Failed(_) => 10,
        }
    }
}

/// One migration job of the simulated fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    /// The VM.
    pub vm: Uuid,
    /// Its name.
    pub vm_name: String,
    /// The host it moves from.
    pub source: String,
    /// The host it moves to (the source for a storage move).
    pub destination: String,
    /// What kind of move.
    pub kind: MoveKind,
    /// The folder its files move to (storage moves).
    pub destination_path: Option<String>,
    /// Memory the destination holds for the VM while the move runs.
    pub reserved_bytes: u64,
    /// When it started.
    pub started: SystemTime,
    /// How long it takes.
    pub duration: Duration,
    /// The switch-over percentage.
    pub switch_over_percent: u8,
    /// Fault injection: the job fails at this percentage.
    pub fail_at_percent: Option<u8>,
    /// Where it is.
    pub state: MigrationState,
    /// When it ended.
    pub ended: Option<SystemTime>,
    /// The percentage when it ended (or now, while it runs).
    pub end_percent: u8,
}

impl Migration {
    /// How far it is at `now` (0..=100).
    pub fn percent(&self, now: SystemTime) -> u8 {
        if self.state != MigrationState::Running {
            return self.end_percent;
        }
        let elapsed = now.duration_since(self.started).unwrap_or_default();
        if self.duration.is_zero() || elapsed >= self.duration {
            return 100;
        }
        let percent = elapsed.as_millis() * 100 / self.duration.as_millis();
        u8::try_from(percent.min(100)).unwrap_or(100)
    }

    /// Whether the job can still be cancelled at `now` (running, before the switch-over).
    pub fn cancellable(&self, now: SystemTime) -> bool {
        self.state == MigrationState::Running && self.percent(now) < self.switch_over_percent
    }

    /// When it reaches `percent`.
    pub fn at_percent(&self, percent: u8) -> SystemTime {
        self.started + self.duration.mul_f64(f64::from(percent.min(100)) / 100.0)
    }
}

/// Joins a Windows folder and a name.
pub(crate) fn join(folder: &str, name: &str) -> String {
    format!("{}\\{name}", folder.trim_end_matches('\\'))
}

/// The last segment of a Windows path.
pub(crate) fn file_name(path: &str) -> &str {
    path.rsplit('\\').next().unwrap_or(path)
}

/// Where a move puts a VM's files: `destination_path`, else the destination's VM folder.
pub(crate) fn storage_folder(destination_path: Option<&str>, vm_path: &str, vm: &str) -> String {
    destination_path.map_or_else(|| join(vm_path, vm), str::to_owned)
}

/// The path a disk gets in `folder`.
pub(crate) fn moved_disk_path(folder: &str, disk: &str) -> String {
    join(&join(folder, "Virtual Hard Disks"), file_name(disk))
}

impl crate::SimState {
    /// How long moves take.
    pub fn migration_timing(&self) -> MigrationTiming {
        self.migration_timing
    }

    /// Sets how long moves take.
    pub fn set_migration_timing(&mut self, timing: MigrationTiming) {
        self.migration_timing = timing;
    }

    /// The latest migration job of `vm` (running or ended).
    pub fn migration(&self, vm: Uuid) -> Option<&Migration> {
        self.migrations.get(&vm)
    }

    /// Memory that running moves to `host` hold there.
    pub fn memory_reserved_for_migrations(&self, host: &str) -> u64 {
        self.migrations
            .values()
            .filter(|m| {
                m.state == MigrationState::Running
                    && m.destination.eq_ignore_ascii_case(host)
                    && !m.source.eq_ignore_ascii_case(host)
            })
            .map(|m| m.reserved_bytes)
            .sum()
    }

    /// Registers a running move (a quick move saves the VM first). Applies nothing else: the
    /// VM stays on the source until [`crate::SimState::advance_migrations`] completes it.
    pub fn start_migration(&mut self, migration: Migration) {
        if migration.kind == MoveKind::ClusterQuick
            && let Ok(vm) = self
                .fleet_mut()
                .vm_mut(&migration.source, &migration.vm.to_string())
        {
            vm.state = crate::model::VmState::Saved;
            vm.memory.assigned_bytes = 0;
        }
        self.migrations.insert(migration.vm, migration);
    }

    /// Cancels `vm`'s running move at `now` (`RequestStateChange(Terminate)`): allowed only
    /// before its switch-over. The VM stays on the source.
    ///
    /// # Errors
    ///
    /// Why it was not cancelled (no running move, past the switch-over).
    pub fn cancel_migration(&mut self, vm: Uuid, now: SystemTime) -> Result<(), String> {
        self.advance_migrations(now);
        let Some(m) = self.migrations.get(&vm) else {
            return Err("no migration of this VM is running".to_owned());
        };
        if m.state != MigrationState::Running {
            return Err("no migration of this VM is running".to_owned());
        }
        if !m.cancellable(now) {
            return Err(
                "the migration reached its switch-over and can no longer be cancelled".to_owned(),
            );
        }
        let m = m.clone();
        self.end_on_source(&m, now, MigrationState::Cancelled);
        Ok(())
    }

    /// Applies every move whose time has come at `now`: completes it (the VM switches over
    /// to the destination) or, for an injected failure, ends it failed with the VM left on
    /// the source.
    pub fn advance_migrations(&mut self, now: SystemTime) {
        let running: Vec<Migration> = self
            .migrations
            .values()
            .filter(|m| m.state == MigrationState::Running)
            .cloned()
            .collect();
        for m in running {
            if let Some(fail) = m.fail_at_percent
                && now >= m.at_percent(fail)
            {
                let message = format!(
                    "Virtual machine migration operation for '{}' failed at migration source \
                     '{}'. (Virtual machine ID {}) The Virtual Machine Management Service failed \
                     to establish a connection for a Virtual Machine migration with host '{}': \
                     A connection attempt failed because the connected party did not properly \
                     respond after a period of time (0x8007274C).",
                    m.vm_name,
                    m.source.to_ascii_uppercase(),
                    m.vm.to_string().to_ascii_uppercase(),
                    m.destination.to_ascii_uppercase()
                );
                self.leave_partial_copy(&m, fail);
                self.end_on_source(&m, m.at_percent(fail), MigrationState::Failed(message));
                continue;
            }
            if now >= m.started + m.duration {
                let state = match self.switch_over(&m, now) {
                    Ok(()) => MigrationState::Completed,
                    Err(message) => MigrationState::Failed(message),
                };
                if let Some(entry) = self.migrations.get_mut(&m.vm) {
                    entry.state = state;
                    entry.ended = Some(m.started + m.duration);
                    entry.end_percent = 100;
                }
            }
        }
    }

    /// Ends `m` without switching over: the VM stays on the source (a quick move's saved VM
    /// is resumed).
    fn end_on_source(&mut self, m: &Migration, at: SystemTime, state: MigrationState) {
        let percent = m.percent(at);
        if m.kind == MoveKind::ClusterQuick
            && let Ok(vm) = self.fleet_mut().vm_mut(&m.source, &m.vm.to_string())
        {
            vm.state = crate::model::VmState::Running;
            vm.memory.assigned_bytes = m.reserved_bytes;
        }
        if let Some(entry) = self.migrations.get_mut(&m.vm) {
            entry.state = state;
            entry.ended = Some(at);
            entry.end_percent = percent;
        }
    }

    /// What a storage copy that failed at `percent` leaves in the destination folder: the
    /// partly copied disk files (Hyper-V does not always remove them).
    fn leave_partial_copy(&mut self, m: &Migration, percent: u8) {
        if !matches!(m.kind, MoveKind::HostWithStorage | MoveKind::Storage) {
            return;
        }
        let Ok(vm) = self.fleet().vm(&m.source, &m.vm.to_string()) else {
            return;
        };
        let Some(dest) = self.fleet().host(&m.destination) else {
            return;
        };
        let folder = storage_folder(m.destination_path.as_deref(), &dest.vm_path, &vm.name);
        let files: Vec<crate::LooseFile> = vm
            .disks
            .iter()
            .map(|d| crate::LooseFile {
                path: moved_disk_path(&folder, &d.path),
                size_bytes: d.file_size_bytes / 100 * u64::from(percent),
                image: None,
                max_size_bytes: Some(d.max_size_bytes),
            })
            .collect();
        let destination = dest.name.clone();
        for file in files {
            self.add_loose_file(&destination, file);
        }
    }

    /// The switch-over: the VM leaves the source and runs on the destination (its files in
    /// their new folder for moves with storage; a quick move resumes it there).
    fn switch_over(&mut self, m: &Migration, now: SystemTime) -> Result<(), String> {
        let id = m.vm.to_string();
        let fleet = self.fleet_mut();
        let Some(source) = fleet.host_mut(&m.source) else {
            return Err(format!("The source host {} is gone.", m.source));
        };
        let Some(index) = source.vms.iter().position(|v| v.id == m.vm) else {
            return Err(format!(
                "The virtual machine {id} no longer exists on the source host."
            ));
        };
        let mut vm = source.vms.remove(index);
        let Some(dest) = fleet.host_mut(&m.destination) else {
            // Put it back: nothing moved.
            if let Some(source) = fleet.host_mut(&m.source) {
                source.vms.insert(index, vm);
            }
            return Err(format!("The destination host {} is gone.", m.destination));
        };
        if matches!(m.kind, MoveKind::HostWithStorage | MoveKind::Storage) {
            let folder = storage_folder(m.destination_path.as_deref(), &dest.vm_path, &vm.name);
            for disk in &mut vm.disks {
                disk.path = moved_disk_path(&folder, &disk.path);
            }
            vm.path = folder;
        }
        if m.kind == MoveKind::ClusterQuick {
            vm.state = crate::model::VmState::Running;
            vm.memory.assigned_bytes = m.reserved_bytes;
            vm.started = Some(now);
        }
        dest.vms.push(vm);
        Ok(())
    }
}
