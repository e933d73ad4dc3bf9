//! Checkpoint and network adapter jobs: one host call each (not interrupted once sent: the
//! host would finish it anyway; a cancellation before it counts), with before and after in the
//! log. Deleting a checkpoint then follows the merge of differencing disks Hyper-V runs, as
//! the job's progress; a merge cannot be cancelled in Hyper-V, so a cancellation while it
//! runs is logged and the job keeps following it to the end.

use std::sync::Arc;
use std::time::Duration;

use aetherv_hyperv::ops::{
    CheckpointChange, HyperVHost, HyperVHostExt, NicChange, VmCheckpoint, VmId,
};
use tokio_util::sync::CancellationToken;

use super::JobQueue;
use crate::model::{JobStatus, LineLevel};
use crate::record::{Outcome, error_chain};

/// How often a merge is looked at.
const MERGE_POLL: Duration = Duration::from_millis(400);

fn describe_checkpoint(c: &VmCheckpoint) -> String {
    format!("{:?} ({}, {})", c.name, c.id, c.kind().as_str())
}

impl JobQueue {
    fn timed_out(&self, host: &dyn HyperVHost, what: &str) -> (JobStatus, Outcome) {
        (
            JobStatus::Failed,
            Outcome::failure(format!(
                "host {} did not answer within {} s; {what} may still take effect",
                host.host_name(),
                self.shared.config.step_timeout.as_secs()
            )),
        )
    }

    /// Runs a [`crate::JobWork::Checkpoint`].
    pub(super) async fn checkpoint(
        &self,
        id: &str,
        host: Arc<dyn HyperVHost>,
        vm: VmId,
        change: CheckpointChange,
        cancel: &CancellationToken,
    ) -> (JobStatus, Outcome) {
        let step = match &change {
            CheckpointChange::Create { .. } => "Checkpoint.Create",
            CheckpointChange::Apply { .. } => "Checkpoint.Apply",
            CheckpointChange::Rename { .. } => "Checkpoint.Rename",
            CheckpointChange::Remove { .. } => "Checkpoint.Remove",
            _ => "Checkpoint.Change",
        };
        let before = tokio::time::timeout(self.shared.config.step_timeout, host.vm(vm))
            .await
            .ok()
            .and_then(Result::ok);
        if let Some(before) = &before {
            self.line(
                id,
                LineLevel::Info,
                format!(
                    "before: VM {} is {} with {} checkpoint(s)",
                    before.name,
                    before.state.name(),
                    before.checkpoints.len()
                ),
            );
        }
        let plan = match &change {
            CheckpointChange::Create { name } => format!("create checkpoint {name:?}"),
            CheckpointChange::Apply {
                checkpoint,
                turn_off,
            } => format!(
                "apply checkpoint {checkpoint}{}",
                if *turn_off {
                    " (turning the VM off first if it is not Off or Saved)"
                } else {
                    ""
                }
            ),
            CheckpointChange::Rename { checkpoint, name } => {
                format!("rename checkpoint {checkpoint} to {name:?}")
            }
            CheckpointChange::Remove {
                checkpoint,
                subtree,
            } => format!(
                "delete checkpoint {checkpoint}{}",
                if *subtree { " and its subtree" } else { "" }
            ),
            _ => "change a checkpoint".to_owned(),
        };
        self.step(
            id,
            step,
            10,
            format!("{plan} of VM {vm} on host {}", host.host_name()),
        );
        if cancel.is_cancelled() {
            return (JobStatus::Cancelled, Outcome::cancelled_before_start());
        }
        let removing = matches!(change, CheckpointChange::Remove { .. });
        let call = tokio::time::timeout(
            self.shared.config.step_timeout,
            host.change_checkpoint(vm, change),
        )
        .await;
        let changed = match call {
            Ok(Ok(changed)) => changed,
            Ok(Err(e)) => return (JobStatus::Failed, Outcome::failure(error_chain(&e))),
            Err(_) => return self.timed_out(&*host, "the change"),
        };
        let done = match &changed.checkpoint {
            Some(c) => format!("checkpoint {}", describe_checkpoint(c)),
            None => format!("removed checkpoint(s) {:?}", changed.removed),
        };
        self.step(
            id,
            step,
            if removing { 50 } else { 100 },
            format!("{done}; VM is {}", changed.state.name()),
        );
        if removing
            && changed.merging
            && let Err(failed) = self.follow_merge(id, &*host, vm, cancel).await
        {
            return failed;
        }
        if let Ok(Ok(after)) =
            tokio::time::timeout(self.shared.config.step_timeout, host.vm(vm)).await
        {
            self.line(
                id,
                LineLevel::Info,
                format!(
                    "after: VM {} is {} with {} checkpoint(s)",
                    after.name,
                    after.state.name(),
                    after.checkpoints.len()
                ),
            );
        }
        (
            JobStatus::Succeeded,
            Outcome::success(serde_json::to_value(&changed).ok()),
        )
    }

    /// Follows Hyper-V's merge after a checkpoint removal until it ends, as the job's
    /// progress (50–99 %).
    async fn follow_merge(
        &self,
        id: &str,
        host: &dyn HyperVHost,
        vm: VmId,
        cancel: &CancellationToken,
    ) -> Result<(), (JobStatus, Outcome)> {
        let deadline = tokio::time::Instant::now() + self.shared.config.step_timeout;
        let mut warned = false;
        let mut last = None;
        loop {
            if cancel.is_cancelled() && !warned {
                warned = true;
                self.line(
                    id,
                    LineLevel::Warn,
                    "Hyper-V cannot cancel a merge of differencing disks; following it to the end"
                        .to_owned(),
                );
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(self.timed_out(host, "the merge"));
            }
            let read = tokio::time::timeout(deadline - now, host.vm(vm)).await;
            let percent = match read {
                Ok(Ok(v)) => v.merge_percent,
                Ok(Err(e)) => return Err((JobStatus::Failed, Outcome::failure(error_chain(&e)))),
                Err(_) => return Err(self.timed_out(host, "the merge")),
            };
            let Some(percent) = percent else {
                self.step(
                    id,
                    "Checkpoint.Merge",
                    100,
                    "the differencing disks are merged".to_owned(),
                );
                return Ok(());
            };
            if last != Some(percent) {
                last = Some(percent);
                self.step(
                    id,
                    "Checkpoint.Merge",
                    50 + percent.min(100) / 2,
                    format!("merging differencing disks: {percent}%"),
                );
            }
            tokio::time::sleep(MERGE_POLL).await;
        }
    }

    /// Runs a [`crate::JobWork::NetworkAdapter`].
    pub(super) async fn network_adapter(
        &self,
        id: &str,
        host: Arc<dyn HyperVHost>,
        vm: VmId,
        change: NicChange,
        cancel: &CancellationToken,
    ) -> (JobStatus, Outcome) {
        let step = match &change {
            NicChange::Add { .. } => "NetworkAdapter.Add",
            NicChange::Set { .. } => "NetworkAdapter.Set",
            NicChange::Remove { .. } => "NetworkAdapter.Remove",
            _ => "NetworkAdapter.Change",
        };
        if let Some(adapter) = change.adapter()
            && let Ok(Ok(before)) =
                tokio::time::timeout(self.shared.config.step_timeout, host.vm(vm)).await
            && let Some(nic) = before
                .nics
                .iter()
                .find(|n| aetherv_hyperv::ops::adapter_guid(&n.id) == Some(adapter))
        {
            self.line(
                id,
                LineLevel::Info,
                format!("before: {}", describe_nic(nic)),
            );
        }
        self.step(
            id,
            step,
            10,
            format!("{} VM {vm} on host {}", change.verb(), host.host_name()),
        );
        if cancel.is_cancelled() {
            return (JobStatus::Cancelled, Outcome::cancelled_before_start());
        }
        let call = tokio::time::timeout(
            self.shared.config.step_timeout,
            host.change_network_adapter(vm, change),
        )
        .await;
        match call {
            Ok(Ok(changed)) => {
                let after = match (&changed.adapter, changed.removed) {
                    (Some(nic), _) => format!("after: {}", describe_nic(nic)),
                    (None, Some(removed)) => format!("adapter {removed} removed"),
                    (None, None) => "done".to_owned(),
                };
                self.step(id, step, 100, after);
                // The adapter's stable id (the GUID ending Hyper-V's id) next to the reply.
                let adapter_id = changed
                    .adapter
                    .as_ref()
                    .and_then(|nic| aetherv_hyperv::ops::adapter_guid(&nic.id))
                    .or(changed.removed);
                let result = serde_json::to_value(&changed).ok().map(|mut v| {
                    v["adapter_id"] = serde_json::json!(adapter_id);
                    v
                });
                (JobStatus::Succeeded, Outcome::success(result))
            }
            Ok(Err(e)) => (JobStatus::Failed, Outcome::failure(error_chain(&e))),
            Err(_) => self.timed_out(&*host, "the change"),
        }
    }
}

fn describe_nic(nic: &aetherv_hyperv::ops::VmNic) -> String {
    format!(
        "adapter {:?} ({}) on {} VLAN {} MAC {} ({}), MAC spoofing {}, DHCP guard {}, router guard {}, bandwidth max {} / min {} bps",
        nic.name,
        aetherv_hyperv::ops::adapter_guid(&nic.id)
            .map_or_else(|| nic.id.clone(), |g| g.to_string()),
        nic.switch_name.as_deref().unwrap_or("no switch"),
        nic.vlan_id
            .map_or_else(|| "untagged".to_owned(), |v| v.to_string()),
        nic.mac_address,
        if nic.dynamic_mac { "dynamic" } else { "static" },
        on_off(nic.mac_spoofing),
        on_off(nic.dhcp_guard),
        on_off(nic.router_guard),
        nic.maximum_bandwidth_bps,
        nic.minimum_bandwidth_bps,
    )
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}
