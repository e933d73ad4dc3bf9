//! The `migrate` job and the queue's migration entry points ([`JobQueue::run_migration`],
//! [`JobQueue::check_migration`]), which resolve the plan's hosts by name and refresh both
//! hosts' inventory after a move.

use std::sync::Arc;

use aetherv_hyperv::ops::MigrationCheck;
use tokio_util::sync::CancellationToken;

use super::JobQueue;
use crate::migration::{
    self, MigrationDone, MigrationError, MigrationEvent, MigrationHosts, MigrationPlan,
};
use crate::model::{CleanupView, JobStatus, LeftBehind, LineLevel};
use crate::record::Outcome;

impl JobQueue {
    /// The hosts of `plan`, by name (case-insensitive).
    ///
    /// # Errors
    ///
    /// [`MigrationError::Invalid`] when a host is not managed by this queue.
    pub fn migration_hosts(&self, plan: &MigrationPlan) -> Result<MigrationHosts, MigrationError> {
        let missing = |host: &str| MigrationError::Invalid {
            vm: plan.vm_name.clone(),
            message: format!("host {host:?} is not managed by this server"),
        };
        let source = self
            .host(&plan.source_host)
            .map(|(_, h)| Arc::clone(h))
            .ok_or_else(|| missing(&plan.source_host))?;
        let destination = if plan.changes_host() {
            Some(
                self.host(&plan.target_host)
                    .map(|(_, h)| Arc::clone(h))
                    .ok_or_else(|| missing(&plan.target_host))?,
            )
        } else {
            None
        };
        Ok(MigrationHosts {
            source,
            destination,
        })
    }

    /// The compatibility check of `plan` alone (Compare-VM on the source host, or the volume
    /// check of a storage move); nothing moves.
    ///
    /// # Errors
    ///
    /// [`MigrationError::Invalid`]: an unmanaged host, or the check could not run.
    pub async fn check_migration(
        &self,
        plan: &MigrationPlan,
    ) -> Result<MigrationCheck, MigrationError> {
        let hosts = self.migration_hosts(plan)?;
        migration::check(&hosts, plan, &self.shared.config.migration)
            .await
            .map_err(|message| MigrationError::Invalid {
                vm: plan.vm_name.clone(),
                message,
            })
    }

    /// Moves one VM: the reusable migration of this queue (the `migrate` job runs it, and so
    /// can any workflow that moves VMs, e.g. a host drain, once per VM). Check, move with
    /// progress from the host's migration job, cancellation through `cancel` before the
    /// switch-over (the VM keeps running on the source), cleanup on the destination after a
    /// failure; then both hosts' inventory is refreshed. `events` gets progress and log
    /// lines. The caller holds the VM (a job for it, see [`crate::JobWork::Migrate`]).
    ///
    /// # Errors
    ///
    /// [`MigrationError`]: incompatible (nothing moved), cancelled, failed (the VM is on the
    /// source, what cleanup did is attached), invalid (unmanaged host, check not possible).
    pub async fn run_migration(
        &self,
        plan: &MigrationPlan,
        cancel: &CancellationToken,
        events: &(dyn Fn(MigrationEvent) + Send + Sync),
    ) -> Result<MigrationDone, MigrationError> {
        let hosts = self.migration_hosts(plan)?;
        let result =
            migration::migrate(&hosts, plan, &self.shared.config.migration, cancel, events).await;
        if let Some(inventory) = &self.shared.inventory {
            let mut names = vec![plan.source_host.clone()];
            if plan.changes_host() {
                names.push(plan.target_host.clone());
            }
            for name in names {
                let refreshed = tokio::time::timeout(
                    self.shared.config.refresh_timeout,
                    inventory.refresh_host(&name),
                )
                .await;
                if !matches!(refreshed, Ok(Ok(()))) {
                    tracing::warn!(host = %name, vm = %plan.vm, "inventory refresh after a move failed");
                }
            }
        }
        result
    }

    /// Runs a [`crate::JobWork::Migrate`].
    pub(super) async fn migrate_job(
        &self,
        id: &str,
        plan: &MigrationPlan,
        cancel: &CancellationToken,
    ) -> (JobStatus, Outcome) {
        let queue = self.clone();
        let job = id.to_owned();
        let events = move |event: MigrationEvent| match event {
            MigrationEvent::Progress {
                step,
                percent,
                message,
            } => queue.step(&job, step, percent, message),
            MigrationEvent::Log { level, message } => queue.line(&job, level, message),
        };
        match self.run_migration(plan, cancel, &events).await {
            Ok(done) => {
                if done.cancel_too_late {
                    self.line(
                        id,
                        LineLevel::Warn,
                        "the cancellation came after the switch-over; the VM moved".to_owned(),
                    );
                }
                (
                    JobStatus::Succeeded,
                    Outcome::success(serde_json::to_value(&done).ok()),
                )
            }
            Err(error) => {
                let cleanup = error.cleanup().map(|c| CleanupView {
                    removed: c.removed.clone(),
                    left_behind: c
                        .left_behind
                        .iter()
                        .map(|(artifact, reason)| LeftBehind {
                            artifact: artifact.clone(),
                            reason: reason.clone(),
                        })
                        .collect(),
                });
                let status = match error {
                    MigrationError::Cancelled { .. } => JobStatus::Cancelled,
                    _ => JobStatus::Failed,
                };
                (
                    status,
                    Outcome {
                        error: Some(error.to_string()),
                        cleanup,
                        result: None,
                    },
                )
            }
        }
    }

    /// Waits for job `id` to end and returns its final record (`None` when it is not, or no
    /// longer, in the history). Handy for workflows that submit jobs and wait for them.
    pub async fn wait(&self, id: &str) -> Option<crate::JobView> {
        let mut follower = self.follow(id)?;
        while let Some(item) = follower.next().await {
            if let crate::FollowItem::End(view) = item {
                return Some(*view);
            }
        }
        self.get(id).filter(|v| v.status.is_final())
    }
}
