//! The queue itself: provisioning, deletion and power actions run as jobs with a global and a
//! per-host concurrency bound, one job per VM at a time, live progress and logs, cancellation,
//! a bounded in-memory history, and a targeted inventory refresh of the job's host when it ends.
//!
//! A submitted job is queued at once (its record exists before [`JobQueue::submit`] returns);
//! a task per job waits for a slot on its host, then for a global slot, then runs the workflow
//! of `aetherv-provision` (or the single power call) against the host's
//! [`HyperVHost`]. Waiting jobs start in submission order per host.
//!
//! Records never hold secrets: parameters are the redacted view, and log lines come from the
//! workflows, which never see plaintext secrets outside the payload encryption.
//!
//! Followers ([`JobQueue::follow`]) get every log line from the start and then live ones,
//! without polling: each record carries a `watch` counter bumped on every change.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use aetherv_hyperv::ops::{HyperVHost, HyperVHostExt, VmId};
use aetherv_inventory::InventoryHandle;
use aetherv_provision::job::{JobEvent, JobId, StepEnd};
use tokio::sync::{Semaphore, broadcast, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::model::{
    CancelError, HostMap, JobAction, JobFilter, JobNotice, JobObserver, JobPage, JobStatus,
    JobView, JobWork, LineLevel, LogLine, NewJob, QueueConfig, StepStatus, SubmitError,
};
use crate::record::{Outcome, Record, VmKey, error_chain};

struct Inner {
    records: HashMap<String, Record>,
    /// Sequence numbers and ids in submission order (for the history bound, newest-first
    /// listing and paging).
    order: VecDeque<(u64, String)>,
    /// The sequence number of the next job.
    next_seq: u64,
    busy: HashMap<VmKey, String>,
    host_slots: HashMap<String, Arc<Semaphore>>,
    closed: bool,
}

struct Shared {
    config: QueueConfig,
    hosts: Arc<HostMap>,
    inventory: Option<InventoryHandle>,
    observer: Arc<dyn JobObserver>,
    global: Arc<Semaphore>,
    inner: Mutex<Inner>,
    notices: broadcast::Sender<JobNotice>,
    shutdown: CancellationToken,
    /// Bumped whenever the set of busy VMs changes (caches of VM lists key on it).
    busy_epoch: AtomicU64,
    /// Every job's task, so shutdown can wait for cleanups.
    tasks: TaskTracker,
    /// What happens around maintenance (silences, webhooks).
    hooks: std::sync::RwLock<Arc<dyn crate::maintenance::MaintenanceHooks>>,
}

/// The job queue; cheap to clone.
#[derive(Clone)]
pub struct JobQueue {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for JobQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobQueue")
            .field("config", &self.shared.config)
            .field("hosts", &self.shared.hosts.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// A live view of one job's log: lines so far, then a wait for more.
#[derive(Debug)]
pub struct Follower {
    queue: JobQueue,
    id: String,
    next: usize,
    changed: watch::Receiver<u64>,
}

/// What [`Follower::next`] returns.
#[derive(Debug, Clone)]
pub enum FollowItem {
    /// New log lines, and the job's status and percentage after them.
    Lines {
        /// The lines.
        lines: Vec<LogLine>,
        /// The status.
        status: JobStatus,
        /// The percentage.
        percent: u8,
        /// The step.
        step: Option<String>,
    },
    /// The job has ended and every line was delivered: the final record.
    End(Box<JobView>),
}

impl Follower {
    /// The next batch: new lines (waiting for them if there are none), or the end.
    /// `None` when the job left the history.
    pub async fn next(&mut self) -> Option<FollowItem> {
        loop {
            if self.next == usize::MAX {
                return None;
            }
            // Mark the current value seen before reading, so a change made after the read
            // wakes the wait below.
            self.changed.borrow_and_update();
            {
                let inner = self.queue.lock();
                let record = inner.records.get(&self.id)?;
                if self.next < record.lines.len() {
                    let lines = record.lines[self.next..].to_vec();
                    self.next = record.lines.len();
                    return Some(FollowItem::Lines {
                        lines,
                        status: record.status,
                        percent: record.percent,
                        step: record.step.clone(),
                    });
                }
                if record.status.is_final() {
                    self.next = usize::MAX;
                    return Some(FollowItem::End(Box::new(record.view())));
                }
            }
            if self.changed.changed().await.is_err() {
                return None;
            }
        }
    }
}

impl JobQueue {
    /// A queue running jobs against `hosts`, refreshing `inventory` after each job.
    pub fn new(
        config: QueueConfig,
        hosts: Arc<HostMap>,
        inventory: Option<InventoryHandle>,
        observer: Arc<dyn JobObserver>,
    ) -> Self {
        let (notices, _) = broadcast::channel(1024);
        Self {
            shared: Arc::new(Shared {
                global: Arc::new(Semaphore::new(config.concurrency.max(1))),
                config,
                hosts,
                inventory,
                observer,
                inner: Mutex::new(Inner {
                    records: HashMap::new(),
                    order: VecDeque::new(),
                    next_seq: 1,
                    busy: HashMap::new(),
                    host_slots: HashMap::new(),
                    closed: false,
                }),
                notices,
                shutdown: CancellationToken::new(),
                busy_epoch: AtomicU64::new(0),
                tasks: TaskTracker::new(),
                hooks: std::sync::RwLock::new(Arc::new(crate::maintenance::NoHooks)),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a record half-written in a way that
        // matters more than losing the whole queue, so keep serving.
        self.shared
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Plugs in what happens around maintenance (Alertmanager silences, webhooks); the
    /// default does nothing.
    pub fn set_maintenance_hooks(&self, hooks: Arc<dyn crate::maintenance::MaintenanceHooks>) {
        *self
            .shared
            .hooks
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = hooks;
    }

    pub(crate) fn hooks(&self) -> Arc<dyn crate::maintenance::MaintenanceHooks> {
        Arc::clone(
            &self
                .shared
                .hooks
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// The managed hosts.
    pub fn hosts(&self) -> &HostMap {
        &self.shared.hosts
    }

    /// The host named `name`, case-insensitively, with its configured name.
    pub fn host(&self, name: &str) -> Option<(&str, &Arc<dyn HyperVHost>)> {
        self.shared
            .hosts
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(n, h)| (n.as_str(), h))
    }

    /// Status changes of every job.
    pub fn subscribe(&self) -> broadcast::Receiver<JobNotice> {
        self.shared.notices.subscribe()
    }

    /// The job holding `vm`, if any.
    pub fn busy_job(&self, vm: VmId) -> Option<String> {
        self.lock().busy.get(&VmKey::Id(vm)).cloned()
    }

    /// A counter that changes whenever a VM becomes busy or free.
    pub fn busy_epoch(&self) -> u64 {
        self.shared.busy_epoch.load(Ordering::Relaxed)
    }

    /// Every VM with a job, and the job.
    pub fn busy_vms(&self) -> HashMap<VmId, String> {
        self.lock()
            .busy
            .iter()
            .filter_map(|(k, job)| match k {
                VmKey::Id(id) => Some((*id, job.clone())),
                VmKey::Name(..) | VmKey::Host(_) => None,
            })
            .collect()
    }

    /// Numbers of queued and running jobs.
    pub fn active_counts(&self) -> (usize, usize) {
        let inner = self.lock();
        inner
            .records
            .values()
            .fold((0, 0), |(q, r), rec| match rec.status {
                JobStatus::Queued => (q + 1, r),
                JobStatus::Running => (q, r + 1),
                _ => (q, r),
            })
    }

    /// Queues `job`; it runs when a slot on its host and a global slot are free.
    ///
    /// # Errors
    ///
    /// [`SubmitError::UnknownHost`], [`SubmitError::Busy`] when another job holds the VM (or,
    /// for provisioning, the same name on the same host), [`SubmitError::ShuttingDown`].
    pub fn submit(&self, job: NewJob) -> Result<JobView, SubmitError> {
        let Some((host_name, host)) = self.host(&job.host) else {
            return Err(SubmitError::UnknownHost(job.host));
        };
        let host_name = host_name.to_owned();
        let host = Arc::clone(host);
        let mut keys = Vec::new();
        if let Some(id) = job.vm_id {
            keys.push(VmKey::Id(id));
        }
        // Every job also locks the VM's name on its host, so a power action or deletion cannot
        // reach a VM that a provisioning job is still creating (its id is not known yet).
        if let Some(name) = &job.vm_name {
            keys.push(VmKey::Name(
                host_name.to_ascii_lowercase(),
                name.to_ascii_lowercase(),
            ));
        }
        if job.work.holds_host() {
            keys.push(VmKey::Host(host_name.to_ascii_lowercase()));
        }
        let id = JobId::random().0;
        let job_type = job.work.job_type();
        let cancel = self.shared.shutdown.child_token();
        let (view, slot) =
            {
                let mut inner = self.lock();
                if inner.closed {
                    return Err(SubmitError::ShuttingDown);
                }
                let queued = inner
                    .records
                    .values()
                    .filter(|r| r.status == JobStatus::Queued)
                    .count();
                if queued >= self.shared.config.max_queued.max(1) {
                    return Err(SubmitError::QueueFull(queued));
                }
                if let Some(holder) = keys.iter().find_map(|k| match k {
                    VmKey::Host(_) => inner.busy.get(k),
                    _ => None,
                }) {
                    return Err(SubmitError::HostBusy {
                        host: host_name.clone(),
                        job: holder.clone(),
                    });
                }
                if let Some(holder) = keys.iter().find_map(|k| inner.busy.get(k)) {
                    return Err(SubmitError::Busy {
                        vm: job
                            .vm_name
                            .clone()
                            .or_else(|| job.vm_id.map(|v| v.to_string()))
                            .unwrap_or_default(),
                        job: holder.clone(),
                    });
                }
                for key in &keys {
                    inner.busy.insert(key.clone(), id.clone());
                }
                self.shared.busy_epoch.fetch_add(1, Ordering::Relaxed);
                let slot = Arc::clone(inner.host_slots.entry(host_name.clone()).or_insert_with(
                    || Arc::new(Semaphore::new(self.shared.config.per_host.max(1))),
                ));
                let (changed, _) = watch::channel(0);
                let mut record = Record {
                    id: id.clone(),
                    job_type,
                    action: match &job.work {
                        JobWork::Power { action, .. } => Some(JobAction::from(*action)),
                        _ => None,
                    },
                    status: JobStatus::Queued,
                    host: host_name.clone(),
                    vm_id: job.vm_id,
                    vm_name: job.vm_name.clone(),
                    parameters: job.parameters.clone(),
                    created_at: SystemTime::now(),
                    started_at: None,
                    started: None,
                    finished_at: None,
                    percent: 0,
                    step: None,
                    message: Some("queued".to_owned()),
                    steps: Vec::new(),
                    planned: Vec::new(),
                    error: None,
                    cleanup: None,
                    result: None,
                    cancel: cancel.clone(),
                    lines: Vec::new(),
                    keys,
                    changed,
                    requested_by: job.requested_by.clone(),
                };
                record.audit();
                record.push_line(
                    LineLevel::Info,
                    format!("{} job queued for host {host_name}", job_type.as_str()),
                );
                let view = record.view();
                let seq = inner.next_seq;
                inner.next_seq += 1;
                inner.order.push_back((seq, id.clone()));
                inner.records.insert(id.clone(), record);
                Self::trim_history(
                    &mut inner,
                    self.shared.config.history,
                    &*self.shared.observer,
                );
                (view, slot)
            };
        self.shared
            .observer
            .status(job_type, None, JobStatus::Queued);
        let _ = self.shared.notices.send(JobNotice {
            id: view.id.clone(),
            job_type,
            status: JobStatus::Queued,
            percent: 0,
            target_host: host_name,
            vm_id: view.vm_id,
            vm_name: view.vm_name.clone(),
        });
        tracing::info!(job = %id, r#type = job_type.as_str(), host = %view.target_host, "job queued");
        let queue = self.clone();
        self.shared.tasks.spawn(async move {
            queue.drive(id, job.work, host, slot, cancel).await;
        });
        Ok(view)
    }

    /// Drops the oldest finished jobs beyond `history`.
    fn trim_history(inner: &mut Inner, history: usize, observer: &dyn JobObserver) {
        let mut excess = inner.order.len().saturating_sub(history.max(1));
        let mut i = 0;
        while excess > 0 && i < inner.order.len() {
            let id = &inner.order[i].1;
            // A record someone follows stays until the follower has read its end.
            let finished = inner
                .records
                .get(id)
                .is_none_or(|r| r.status.is_final() && r.changed.receiver_count() == 0);
            if finished {
                if let Some((_, id)) = inner.order.remove(i)
                    && let Some(record) = inner.records.remove(&id)
                {
                    observer.forgotten(record.job_type, record.status);
                }
                excess -= 1;
            } else {
                i += 1;
            }
        }
    }

    /// The status of job `id`, while it is in the history (a cheaper [`JobQueue::get`]).
    pub fn status(&self, id: &str) -> Option<JobStatus> {
        self.lock().records.get(id).map(|r| r.status)
    }

    /// The job `id`.
    pub fn get(&self, id: &str) -> Option<JobView> {
        self.lock().records.get(id).map(Record::view)
    }

    /// Jobs matching `filter`, newest first.
    pub fn list(&self, filter: &JobFilter) -> Vec<JobView> {
        let inner = self.lock();
        inner
            .order
            .iter()
            .rev()
            .filter_map(|(_, id)| inner.records.get(id))
            .filter(|r| filter.matches(r))
            .take(filter.limit.unwrap_or(usize::MAX))
            .map(Record::view)
            .collect()
    }

    /// One page of the jobs matching `filter` (its `limit` is not used), newest first: the
    /// jobs submitted before the job with sequence number `before` (all when `None`), at most
    /// `limit` (all when `None`). [`JobPage::next`] is the `before` of the next page; it stays
    /// valid while jobs are added or leave the history.
    pub fn page(&self, filter: &JobFilter, before: Option<u64>, limit: Option<usize>) -> JobPage {
        let inner = self.lock();
        let limit = limit.unwrap_or(usize::MAX);
        let mut page = JobPage {
            jobs: Vec::new(),
            next: None,
            total: 0,
        };
        let mut last = None;
        for (seq, record) in inner
            .order
            .iter()
            .rev()
            .filter_map(|(seq, id)| Some((*seq, inner.records.get(id)?)))
            .filter(|(_, r)| filter.matches(r))
        {
            page.total += 1;
            if before.is_some_and(|b| seq >= b) {
                continue;
            }
            if page.jobs.len() < limit {
                page.jobs.push(record.view());
                last = Some(seq);
            } else {
                page.next = last;
            }
        }
        page
    }

    /// The log lines of job `id` so far.
    pub fn lines(&self, id: &str) -> Option<(Vec<LogLine>, JobStatus)> {
        self.lock()
            .records
            .get(id)
            .map(|r| (r.lines.clone(), r.status))
    }

    /// Follows job `id`'s log from the first line.
    pub fn follow(&self, id: &str) -> Option<Follower> {
        let inner = self.lock();
        let record = inner.records.get(id)?;
        Some(Follower {
            queue: self.clone(),
            id: id.to_owned(),
            next: 0,
            changed: record.changed.subscribe(),
        })
    }

    /// Requests cancellation of job `id`. A queued job is cancelled at once; a running one
    /// stops at its next step and cleans up what it created.
    ///
    /// # Errors
    ///
    /// [`CancelError::NotFound`], [`CancelError::Finished`].
    pub fn cancel(&self, id: &str) -> Result<JobView, CancelError> {
        {
            let mut inner = self.lock();
            let record = inner
                .records
                .get_mut(id)
                .ok_or_else(|| CancelError::NotFound(id.to_owned()))?;
            if record.status.is_final() {
                return Err(CancelError::Finished {
                    id: id.to_owned(),
                    status: record.status,
                });
            }
            if !record.cancel.is_cancelled() {
                record.cancel.cancel();
                record.push_line(LineLevel::Warn, "cancellation requested".to_owned());
                record.bump();
            }
            if record.status != JobStatus::Queued {
                let view = record.view();
                drop(inner);
                tracing::info!(job = %id, "job cancellation requested");
                return Ok(view);
            }
        }
        // A queued job has not touched its host: it ends now.
        self.complete(id, JobStatus::Cancelled, &Outcome::cancelled_before_start());
        tracing::info!(job = %id, "queued job cancelled");
        self.get(id)
            .ok_or_else(|| CancelError::NotFound(id.to_owned()))
    }

    /// Cancelled when the queue shuts down (long-lived streams end with it).
    pub fn stopping(&self) -> CancellationToken {
        self.shared.shutdown.clone()
    }

    /// Waits (at most `bound`) for every job task to end, e.g. after [`JobQueue::shutdown`],
    /// so cancelled jobs finish cleaning up; `false` when some were still running.
    pub async fn drain(&self, bound: Duration) -> bool {
        self.shared.tasks.close();
        tokio::time::timeout(bound, self.shared.tasks.wait())
            .await
            .is_ok()
    }

    /// Stops accepting jobs and cancels every queued and running one.
    pub fn shutdown(&self) {
        self.lock().closed = true;
        self.shared.shutdown.cancel();
    }

    /// Job `id` has created VM `vm`: the job names it from now on and holds it, so the VM
    /// shows the job as busy and other jobs on it are refused until this one ends.
    fn hold_vm(&self, id: &str, vm: VmId) {
        let mut inner = self.lock();
        let key = VmKey::Id(vm);
        let Some(record) = inner.records.get_mut(id) else {
            return;
        };
        record.vm_id = Some(vm);
        if !record.keys.contains(&key) {
            record.keys.push(key.clone());
        }
        record.bump();
        // A new VM's id is new: no other job can hold it (if one did, it keeps it).
        inner.busy.entry(key).or_insert_with(|| id.to_owned());
        self.shared.busy_epoch.fetch_add(1, Ordering::Relaxed);
    }

    /// Applies `f` to the record of `id` and notifies followers; publishes a notice when the
    /// status changed.
    fn update(&self, id: &str, f: impl FnOnce(&mut Record)) {
        let notice = {
            let mut inner = self.lock();
            let Some(record) = inner.records.get_mut(id) else {
                return;
            };
            let before = record.status;
            f(record);
            record.bump();
            if before != record.status {
                record.audit();
            }
            (before != record.status).then(|| (before, record.notice()))
        };
        if let Some((before, notice)) = notice {
            self.shared
                .observer
                .status(notice.job_type, Some(before), notice.status);
            let _ = self.shared.notices.send(notice);
        }
    }

    async fn drive(
        &self,
        id: String,
        work: JobWork,
        host: Arc<dyn HyperVHost>,
        slot: Arc<Semaphore>,
        cancel: CancellationToken,
    ) {
        // Wait for a host slot, then a global slot; a cancellation while waiting ends the job.
        // A coordinating job (drain, resume, maintenance run) takes no slot: the migrations
        // and child jobs it waits for need them.
        let coordinator = work.is_coordinator();
        let permits = if coordinator {
            (!cancel.is_cancelled()).then_some(None)
        } else {
            tokio::select! {
                biased;
                () = cancel.cancelled() => None,
                permits = async {
                    let host_permit = slot.acquire_owned().await.ok()?;
                    let global = Arc::clone(&self.shared.global).acquire_owned().await.ok()?;
                    Some(Some((host_permit, global)))
                } => permits,
            }
        };
        let Some(_permits) = permits else {
            self.complete(
                &id,
                JobStatus::Cancelled,
                &Outcome::cancelled_before_start(),
            );
            return;
        };
        let mut started = false;
        self.update(&id, |r| {
            // A cancellation may have ended the job while it waited.
            if r.status != JobStatus::Queued {
                return;
            }
            started = true;
            r.status = JobStatus::Running;
            r.started_at = Some(SystemTime::now());
            r.started = Some(tokio::time::Instant::now());
            r.message = Some("running".to_owned());
            r.push_line(LineLevel::Info, "job started".to_owned());
        });
        if !started {
            return;
        }
        let (status, outcome) = self.execute(&id, work, host, cancel).await;
        self.finish(&id, status, outcome).await;
    }

    fn sink(&self, id: &str) -> impl Fn(JobEvent) + Send + Sync + 'static {
        let queue = self.clone();
        let id = id.to_owned();
        move |event| match event {
            JobEvent::Progress { progress, .. } => queue.update(&id, |r| {
                r.progress(progress.step, progress.percent, progress.message);
            }),
            JobEvent::Log { level, message, .. } => queue.update(&id, |r| {
                r.push_line(LineLevel::from(level), message);
            }),
            JobEvent::Plan { steps, .. } => queue.update(&id, |r| r.plan(&steps)),
            JobEvent::VmRegistered { vm_id, .. } => queue.hold_vm(&id, vm_id),
            JobEvent::StepEnded { step, end, .. } => queue.update(&id, |r| {
                r.end_step(
                    step,
                    match end {
                        StepEnd::Failed => StepStatus::Failed,
                        StepEnd::Cancelled => StepStatus::Cancelled,
                    },
                );
            }),
            _ => {}
        }
    }

    async fn execute(
        &self,
        id: &str,
        work: JobWork,
        host: Arc<dyn HyperVHost>,
        cancel: CancellationToken,
    ) -> (JobStatus, Outcome) {
        let sink = self.sink(id);
        match work {
            JobWork::Provision(request) => {
                let result = aetherv_provision::provision::provision(
                    host,
                    JobId(id.to_owned()),
                    &request,
                    self.shared.config.provision.clone(),
                    cancel,
                    &sink,
                )
                .await;
                match result {
                    Ok(done) => {
                        let vm_id = done.vm_id;
                        self.update(id, |r| r.vm_id = Some(vm_id));
                        (
                            JobStatus::Succeeded,
                            Outcome::success(serde_json::to_value(&done).ok()),
                        )
                    }
                    Err(e) => {
                        self.report_left_behind(id, &e);
                        Outcome::from_error(&e)
                    }
                }
            }
            JobWork::Delete(mut request) => {
                request.step_timeout = self.shared.config.step_timeout;
                match aetherv_provision::delete::delete(host, request, cancel, &sink).await {
                    Ok(done) => (
                        JobStatus::Succeeded,
                        Outcome::success(serde_json::to_value(&done).ok()),
                    ),
                    Err(e) => Outcome::from_error(&e),
                }
            }
            JobWork::Power { vm, action } => {
                self.update(id, |r| {
                    r.progress(
                        "Power.Apply",
                        10,
                        format!(
                            "{}: {} VM on host {}",
                            JobAction::from(action).as_str(),
                            action.verb(),
                            host.host_name()
                        ),
                    );
                });
                // A power call is one short host operation: once sent it is not interrupted
                // (the host would finish it anyway); a cancellation before it starts counts.
                if cancel.is_cancelled() {
                    return (JobStatus::Cancelled, Outcome::cancelled_before_start());
                }
                let call =
                    tokio::time::timeout(self.shared.config.step_timeout, host.power(vm, action))
                        .await;
                match call {
                    Ok(Ok(outcome)) => {
                        self.update(id, |r| {
                            r.progress(
                                "Power.Apply",
                                100,
                                format!("VM {} is now {}", outcome.name, outcome.state.name()),
                            );
                        });
                        (
                            JobStatus::Succeeded,
                            Outcome::success(serde_json::to_value(&outcome).ok()),
                        )
                    }
                    Ok(Err(e)) => (JobStatus::Failed, Outcome::failure(error_chain(&e))),
                    Err(_) => (
                        JobStatus::Failed,
                        Outcome::failure(format!(
                            "host {} did not answer within {} s; the action may still take effect",
                            host.host_name(),
                            self.shared.config.step_timeout.as_secs()
                        )),
                    ),
                }
            }
            JobWork::Adopt { vm, job } => self.adopt(id, host, vm, &job, &cancel).await,
            JobWork::Edit { vm, change } => self.edit(id, host, vm, *change, &cancel).await,
            JobWork::Disk(work) => self.disk(id, host, work, &cancel).await,
            JobWork::Checkpoint { vm, change } => {
                self.checkpoint(id, host, vm, change, &cancel).await
            }
            JobWork::NetworkAdapter { vm, change } => {
                self.network_adapter(id, host, vm, change, &cancel).await
            }
            JobWork::Drain(request) => self.drain_host(id, host, request, &cancel).await,
            JobWork::Resume(request) => self.resume(id, host, request, &cancel).await,
            JobWork::MaintenanceRun(request) => self.maintenance_run(id, request, &cancel).await,
            JobWork::Migrate(plan) => self.migrate_job(id, &plan, &cancel).await,
        }
    }

    /// Adopts an orphaned VM: its notes become the provisioned marker of the job that made
    /// it. One short host call, like a power action.
    async fn adopt(
        &self,
        id: &str,
        host: Arc<dyn HyperVHost>,
        vm: VmId,
        job: &str,
        cancel: &CancellationToken,
    ) -> (JobStatus, Outcome) {
        let notes = aetherv_provision::provision::provisioned_marker(&JobId(job.to_owned()));
        self.update(id, |r| {
            r.progress(
                "Adopt.MarkProvisioned",
                10,
                format!(
                    "adopt: the notes of VM {vm} on host {} become {notes:?} (were the marker of job {job})",
                    host.host_name()
                ),
            );
        });
        if cancel.is_cancelled() {
            return (JobStatus::Cancelled, Outcome::cancelled_before_start());
        }
        let call = tokio::time::timeout(
            self.shared.config.step_timeout,
            host.set_vm_notes(vm, notes),
        )
        .await;
        match call {
            Ok(Ok(set)) => {
                self.update(id, |r| {
                    r.progress(
                        "Adopt.MarkProvisioned",
                        100,
                        format!("VM {vm} is adopted; its notes read {:?}", set.notes),
                    );
                });
                (
                    JobStatus::Succeeded,
                    Outcome::success(serde_json::to_value(&set).ok()),
                )
            }
            Ok(Err(e)) => (JobStatus::Failed, Outcome::failure(error_chain(&e))),
            Err(_) => (
                JobStatus::Failed,
                Outcome::failure(format!(
                    "host {} did not answer within {} s; the notes may still change",
                    host.host_name(),
                    self.shared.config.step_timeout.as_secs()
                )),
            ),
        }
    }

    /// Hands what a failed provisioning's cleanup left behind to the observer, and adds its
    /// note to the job's log.
    fn report_left_behind(&self, id: &str, error: &aetherv_provision::Error) {
        use aetherv_provision::Error as E;
        let (host, cleanup) = match error {
            E::ProvisionFailed { host, cleanup, .. } | E::Cancelled { host, cleanup, .. } => {
                (host, cleanup)
            }
            _ => return,
        };
        if cleanup.is_clean() {
            return;
        }
        if let Some(note) = self.shared.observer.left_behind(id, host, cleanup) {
            self.update(id, |r| r.push_line(LineLevel::Warn, note));
        }
    }

    /// Ends a job that ran: refreshes its host's inventory first, so a client that sees the
    /// job end also sees its effect, then completes the record.
    async fn finish(&self, id: &str, status: JobStatus, outcome: Outcome) {
        let host = self.lock().records.get(id).map(|r| r.host.clone());
        if let (Some(host), Some(inventory)) = (host, &self.shared.inventory) {
            let refresh = tokio::time::timeout(
                self.shared.config.refresh_timeout,
                inventory.refresh_host(&host),
            )
            .await;
            match refresh {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(job = %id, %host, error = %e, "inventory refresh after the job failed");
                }
                Err(_) => {
                    tracing::warn!(job = %id, %host, "inventory refresh after the job timed out");
                }
            }
        }
        self.complete(id, status, &outcome);
    }

    /// Marks job `id` ended (unless it already is), frees its VMs and trims the history.
    fn complete(&self, id: &str, status: JobStatus, outcome: &Outcome) {
        // One critical section: the record becomes final and the VM is released together, so
        // whoever is woken by the end of the job (a follower, a status subscriber) already
        // sees the VM free.
        let finished = {
            let mut inner = self.lock();
            let Some(r) = inner.records.get_mut(id) else {
                return;
            };
            if r.status.is_final() {
                return;
            }
            let before = r.status;
            r.status = status;
            r.finished_at = Some(SystemTime::now());
            if status == JobStatus::Succeeded {
                r.percent = 100;
            }
            let clean = outcome
                .cleanup
                .as_ref()
                .is_none_or(|c| c.left_behind.is_empty());
            r.close_steps(status, clean);
            r.error = outcome.error.clone();
            r.cleanup = outcome.cleanup.clone();
            if outcome.result.is_some() {
                r.result = outcome.result.clone();
            }
            let line = match (&outcome.error, status) {
                (_, JobStatus::Succeeded) => (LineLevel::Info, "job succeeded".to_owned()),
                (Some(e), JobStatus::Cancelled) => (LineLevel::Warn, format!("job cancelled: {e}")),
                (None, JobStatus::Cancelled) => (LineLevel::Warn, "job cancelled".to_owned()),
                (Some(e), _) => (LineLevel::Error, format!("job failed: {e}")),
                (None, _) => (LineLevel::Error, "job failed".to_owned()),
            };
            r.message = Some(line.1.clone());
            r.push_line(line.0, line.1);
            r.audit();
            let ran = r.started.map_or(Duration::ZERO, |s| s.elapsed());
            let (job_type, keys) = (r.job_type, r.keys.clone());
            let notice = r.notice();
            for key in keys {
                if inner.busy.get(&key).is_some_and(|holder| holder == id) {
                    inner.busy.remove(&key);
                }
            }
            self.shared.busy_epoch.fetch_add(1, Ordering::Relaxed);
            if let Some(r) = inner.records.get_mut(id) {
                r.bump();
            }
            Self::trim_history(
                &mut inner,
                self.shared.config.history,
                &*self.shared.observer,
            );
            (before, notice, job_type, ran)
        };
        let (before, notice, job_type, ran) = finished;
        self.shared
            .observer
            .status(notice.job_type, Some(before), notice.status);
        let _ = self.shared.notices.send(notice);
        self.shared.observer.finished(job_type, status, ran);
        tracing::info!(job = %id, status = status.as_str(), seconds = ran.as_secs_f64(), "job finished");
    }
}

mod day2;

mod devices;
mod maintenance;
mod migrate;
#[cfg(test)]
mod tests;
