//! The day-2 jobs: editing a VM's settings and its disk operations. Each is a few host calls
//! in order, each bounded by the step timeout; the log shows every value before and after;
//! a cancellation counts until the first change is sent (a sent call is not interrupted: the
//! host would finish it anyway). A new disk file that could not be attached is deleted.

use std::future::Future;
use std::sync::Arc;

use aetherv_hyperv::ops::{
    CreateVhdRequest, DiskId, HyperVHost, HyperVHostExt, Vm, VmDisk, VmSettingsChange,
    check_disk_detach, check_disk_resize, check_settings_change,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::JobQueue;
use crate::model::{DiskWork, JobStatus, LineLevel};
use crate::record::{Outcome, error_chain};

type Ended = (JobStatus, Outcome);

fn failed(message: String) -> Ended {
    (JobStatus::Failed, Outcome::failure(message))
}

/// The values of `vm` that a settings change can touch, by request field name.
fn settings_of(vm: &Vm) -> Value {
    json!({
        "processor_count": vm.processor_count,
        "memory_startup_bytes": vm.memory_startup_bytes,
        "dynamic_memory": vm.dynamic_memory,
        "memory_minimum_bytes": vm.memory_minimum_bytes,
        "memory_maximum_bytes": vm.memory_maximum_bytes,
        "notes": vm.notes,
        "automatic_start_action": vm.config.automatic_start_action,
        "automatic_stop_action": vm.config.automatic_stop_action,
        "automatic_start_delay_seconds": vm.config.automatic_start_delay_seconds,
        "secure_boot": vm.config.secure_boot,
        "tpm_enabled": vm.config.tpm_enabled,
    })
}

fn disk_value(id: DiskId, disk: &VmDisk) -> Value {
    json!({
        "id": id,
        "path": disk.path,
        "controller_type": id.controller_type(),
        "controller_number": disk.controller_number,
        "controller_location": disk.controller_location,
        "disk_type": disk.disk_type,
        "max_size_bytes": disk.max_size_bytes,
        "file_size_bytes": disk.file_size_bytes,
        "shared": disk.shared,
    })
}

impl JobQueue {
    /// One host call bounded by the step timeout; the error is the job's message.
    async fn call<T, E: std::error::Error + 'static>(
        &self,
        host: &str,
        what: &str,
        call: impl Future<Output = Result<T, E>>,
    ) -> Result<T, String> {
        match tokio::time::timeout(self.shared.config.step_timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(format!("{what} failed: {}", error_chain(&e))),
            Err(_) => Err(format!(
                "host {host} did not answer {what} within {} s; the change may still take effect",
                self.shared.config.step_timeout.as_secs()
            )),
        }
    }

    pub(super) fn step(&self, id: &str, step: &str, percent: u8, message: String) {
        self.update(id, |r| r.progress(step, percent, message));
    }

    pub(super) fn line(&self, id: &str, level: LineLevel, message: String) {
        self.update(id, |r| r.push_line(level, message));
    }

    /// Changes a VM's settings: reads it, checks Hyper-V's rules against what it is now,
    /// sends the change, and logs each changed value before and after.
    pub(super) async fn edit(
        &self,
        id: &str,
        host: Arc<dyn HyperVHost>,
        vm: aetherv_hyperv::ops::VmId,
        change: VmSettingsChange,
        cancel: &CancellationToken,
    ) -> Ended {
        let host_name = host.host_name().to_owned();
        self.step(
            id,
            "Edit.Read",
            10,
            format!("reading VM {vm} on host {host_name}"),
        );
        let before = match self.call(&host_name, "reading the VM", host.vm(vm)).await {
            Ok(v) => v,
            Err(e) => return failed(e),
        };
        let change = change.without_unchanged(&before);
        if change.is_empty() {
            self.step(
                id,
                "Edit.Apply",
                100,
                format!(
                    "VM {} already has these settings; nothing to change",
                    before.name
                ),
            );
            return (
                JobStatus::Succeeded,
                Outcome::success(Some(json!({ "vm_id": vm, "changed": {} }))),
            );
        }
        if let Err(rule) = check_settings_change(&before, &change) {
            return failed(format!("refused ({}): {rule}", rule.code()));
        }
        if cancel.is_cancelled() {
            return (JobStatus::Cancelled, Outcome::cancelled_before_start());
        }
        let old = settings_of(&before);
        let requested = serde_json::to_value(&change).unwrap_or(Value::Null);
        self.step(
            id,
            "Edit.Apply",
            40,
            format!(
                "changing {} of VM {}",
                requested
                    .as_object()
                    .map(|m| m.keys().cloned().collect::<Vec<_>>().join(", "))
                    .unwrap_or_default(),
                before.name
            ),
        );
        let after = match self
            .call(
                &host_name,
                "changing the settings",
                host.set_vm_settings(vm, change),
            )
            .await
        {
            Ok(v) => v,
            Err(e) => return failed(e),
        };
        let new = settings_of(&after);
        let mut changed = serde_json::Map::new();
        if let Some(fields) = requested.as_object() {
            for field in fields.keys() {
                let was = old.get(field).cloned().unwrap_or(Value::Null);
                let now = new.get(field).cloned().unwrap_or(Value::Null);
                let shown = |v: &Value| {
                    if field == "notes" {
                        format!("{} characters", v.as_str().map_or(0, |s| s.chars().count()))
                    } else {
                        v.to_string()
                    }
                };
                self.line(
                    id,
                    LineLevel::Info,
                    format!("{field}: {} -> {}", shown(&was), shown(&now)),
                );
                changed.insert(field.clone(), json!({ "before": was, "after": now }));
            }
        }
        self.step(
            id,
            "Edit.Apply",
            100,
            format!("VM {} has its new settings", after.name),
        );
        (
            JobStatus::Succeeded,
            Outcome::success(Some(json!({ "vm_id": vm, "changed": changed }))),
        )
    }

    /// A disk operation.
    pub(super) async fn disk(
        &self,
        id: &str,
        host: Arc<dyn HyperVHost>,
        work: DiskWork,
        cancel: &CancellationToken,
    ) -> Ended {
        let host_name = host.host_name().to_owned();
        if cancel.is_cancelled() {
            return (JobStatus::Cancelled, Outcome::cancelled_before_start());
        }
        match work {
            DiskWork::Add {
                vm,
                path,
                size_bytes,
                fixed,
            } => {
                self.step(
                    id,
                    "Disk.Create",
                    10,
                    format!(
                        "creating a {} VHDX of {size_bytes} bytes at {path} on host {host_name}",
                        if fixed { "fixed" } else { "dynamic" }
                    ),
                );
                let request = CreateVhdRequest {
                    path: path.clone(),
                    size_bytes,
                    fixed,
                };
                let created = match tokio::time::timeout(
                    self.shared.config.provision.copy_timeout,
                    host.create_vhd(request),
                )
                .await
                {
                    Ok(Ok(c)) => c,
                    Ok(Err(e)) => {
                        return failed(format!("creating the disk failed: {}", error_chain(&e)));
                    }
                    Err(_) => {
                        return failed(format!(
                            "host {host_name} did not finish creating {path}; the file may exist"
                        ));
                    }
                };
                self.step(
                    id,
                    "Disk.Attach",
                    60,
                    format!(
                        "attaching {} to the first free SCSI location of VM {vm}",
                        created.path
                    ),
                );
                match self
                    .call(
                        &host_name,
                        "attaching the disk",
                        host.attach_vm_disk(vm, created.path.clone()),
                    )
                    .await
                {
                    Ok(attached) => self.attached(id, vm, &attached.disk, true),
                    Err(e) => {
                        // Compensation: the file this job made is deleted again.
                        self.step(
                            id,
                            "Disk.Compensate",
                            90,
                            format!("deleting {} again: it could not be attached", created.path),
                        );
                        let removed = self
                            .call(
                                &host_name,
                                "deleting the new disk",
                                host.remove_path(created.path.clone()),
                            )
                            .await;
                        match removed {
                            Ok(_) => {
                                self.line(id, LineLevel::Info, format!("deleted {}", created.path));
                                failed(format!("{e}; the new disk file was deleted"))
                            }
                            Err(cleanup) => {
                                self.line(
                                    id,
                                    LineLevel::Warn,
                                    format!("left behind {}: {cleanup}", created.path),
                                );
                                failed(format!(
                                    "{e}; the new disk file {} was left behind: {cleanup}",
                                    created.path
                                ))
                            }
                        }
                    }
                }
            }
            DiskWork::Attach { vm, path } => {
                self.step(
                    id,
                    "Disk.Attach",
                    20,
                    format!("attaching {path} to the first free SCSI location of VM {vm}"),
                );
                match self
                    .call(
                        &host_name,
                        "attaching the disk",
                        host.attach_vm_disk(vm, path),
                    )
                    .await
                {
                    Ok(attached) => self.attached(id, vm, &attached.disk, false),
                    Err(e) => failed(e),
                }
            }
            DiskWork::Expand {
                vm,
                disk,
                size_bytes,
            } => {
                self.step(
                    id,
                    "Disk.Read",
                    10,
                    format!("reading VM {vm} on host {host_name}"),
                );
                let before = match self.call(&host_name, "reading the VM", host.vm(vm)).await {
                    Ok(v) => v,
                    Err(e) => return failed(e),
                };
                let Some(current) = before.disks.iter().find(|d| disk.matches(d)) else {
                    return failed(format!("VM {} has no disk {disk}", before.name));
                };
                if let Err(rule) = check_disk_resize(&before, current, size_bytes) {
                    return failed(format!("refused ({}): {rule}", rule.code()));
                }
                let was = current.max_size_bytes;
                self.step(
                    id,
                    "Disk.Expand",
                    40,
                    format!(
                        "growing disk {disk} ({}) of VM {} from {was} to {size_bytes} bytes",
                        current.path, before.name
                    ),
                );
                match self
                    .call(
                        &host_name,
                        "resizing the disk",
                        host.resize_vm_disk(vm, disk, size_bytes),
                    )
                    .await
                {
                    Ok(resized) => {
                        self.line(
                            id,
                            LineLevel::Info,
                            format!("max_size_bytes: {was} -> {}", resized.disk.max_size_bytes),
                        );
                        self.step(
                            id,
                            "Disk.Expand",
                            100,
                            format!("disk {disk} is now {} bytes", resized.disk.max_size_bytes),
                        );
                        (
                            JobStatus::Succeeded,
                            Outcome::success(Some(json!({
                                "vm_id": vm,
                                "disk_id": disk,
                                "disk": disk_value(disk, &resized.disk),
                                "before_bytes": was,
                            }))),
                        )
                    }
                    Err(e) => failed(e),
                }
            }
            DiskWork::Detach {
                vm,
                disk,
                delete_file,
                force,
            } => {
                self.step(
                    id,
                    "Disk.Read",
                    10,
                    format!("reading VM {vm} on host {host_name}"),
                );
                let before = match self.call(&host_name, "reading the VM", host.vm(vm)).await {
                    Ok(v) => v,
                    Err(e) => return failed(e),
                };
                let Some(current) = before.disks.iter().find(|d| disk.matches(d)) else {
                    return failed(format!("VM {} has no disk {disk}", before.name));
                };
                if let Err(rule) = check_disk_detach(&before, current, force) {
                    return failed(format!("refused ({}): {rule}", rule.code()));
                }
                self.step(
                    id,
                    "Disk.Detach",
                    40,
                    format!(
                        "detaching disk {disk} ({}) from VM {}{}",
                        current.path,
                        before.name,
                        if delete_file {
                            " and deleting its file"
                        } else {
                            ""
                        }
                    ),
                );
                match self
                    .call(
                        &host_name,
                        "detaching the disk",
                        host.detach_vm_disk(vm, disk, delete_file),
                    )
                    .await
                {
                    Ok(detached) => {
                        self.step(
                            id,
                            "Disk.Detach",
                            100,
                            format!(
                                "disk {disk} is detached; its file {} was {}",
                                detached.path,
                                if detached.deleted { "deleted" } else { "kept" }
                            ),
                        );
                        (
                            JobStatus::Succeeded,
                            Outcome::success(Some(json!({
                                "vm_id": vm,
                                "disk_id": disk,
                                "path": detached.path,
                                "deleted": detached.deleted,
                            }))),
                        )
                    }
                    Err(e) => failed(e),
                }
            }
        }
    }

    fn attached(
        &self,
        id: &str,
        vm: aetherv_hyperv::ops::VmId,
        disk: &VmDisk,
        created: bool,
    ) -> Ended {
        let Some(disk_id) = DiskId::of(disk) else {
            return failed(format!(
                "the host attached {} on an unknown controller",
                disk.path
            ));
        };
        self.step(
            id,
            "Disk.Attach",
            100,
            format!("disk {disk_id} ({}) is attached to VM {vm}", disk.path),
        );
        (
            JobStatus::Succeeded,
            Outcome::success(Some(json!({
                "vm_id": vm,
                "disk_id": disk_id,
                "disk": disk_value(disk_id, disk),
                "created": created,
            }))),
        )
    }
}
