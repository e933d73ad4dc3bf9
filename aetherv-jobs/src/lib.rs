//! The aetherv job queue: provisioning, deletion and power actions against Hyper-V hosts run
//! as jobs, with a global and a per-host concurrency bound, one job per VM at a time, live
//! progress and logs, cancellation with cleanup, a bounded in-memory history, and a targeted
//! inventory refresh of the job's host when it ends.
//!
//! It is the queue the aetherv server puts behind its REST API, usable without any HTTP
//! framework: give [`JobQueue::new`] the hosts (any [`aetherv_hyperv::ops::HyperVHost`]: real
//! WinRM hosts, the simulator, or a mock), optionally an [`aetherv_inventory::InventoryHandle`]
//! to refresh after each job, and a [`JobObserver`] for metrics; then [`JobQueue::submit`]
//! jobs, read them with [`JobQueue::get`] / [`JobQueue::list`], stream their logs with
//! [`JobQueue::follow`], and [`JobQueue::cancel`] them.
//!
//! ```no_run
//! use std::collections::BTreeMap;
//! use std::sync::Arc;
//!
//! use aetherv_hyperv::ops::{HyperVHost, PowerAction, VmId};
//! use aetherv_jobs::{HostMap, JobQueue, JobWork, NewJob, NoObserver, QueueConfig};
//!
//! # async fn example(host: Arc<dyn HyperVHost>, vm: VmId) -> Result<(), Box<dyn std::error::Error>> {
//! let mut hosts: HostMap = BTreeMap::new();
//! hosts.insert("hv01".to_owned(), host);
//! let queue = JobQueue::new(QueueConfig::default(), Arc::new(hosts), None, Arc::new(NoObserver));
//! let job = queue.submit(NewJob {
//!     work: JobWork::Power { vm, action: PowerAction::Start },
//!     host: "hv01".to_owned(),
//!     vm_id: Some(vm),
//!     vm_name: None,
//!     parameters: serde_json::json!({ "action": "start" }),
//! })?;
//! let mut follower = queue.follow(&job.id).ok_or("the job left the history")?;
//! while let Some(item) = follower.next().await {
//!     println!("{item:?}");
//! }
//! # Ok(())
//! # }
//! ```
//!
//! The queue runs its jobs as tokio tasks, so it must be created and used inside a tokio
//! runtime. Everything lives in memory: records never hold secrets (parameters are the
//! caller's redacted view, and log lines come from the workflows of `aetherv-provision`).

mod model;
mod queue;
mod record;

pub use model::{
    CancelError, CleanupView, DiskWork, HostMap, JobAction, JobFilter, JobNotice, JobObserver,
    JobPage, JobStatus, JobType, JobView, JobWork, LeftBehind, LineLevel, LogLine, NewJob,
    NoObserver, QueueConfig, StepRecord, StepStatus, SubmitError,
};
pub use queue::{FollowItem, Follower, JobQueue};
pub use record::{error_chain, rfc3339};

/// The README's example, compiled as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
