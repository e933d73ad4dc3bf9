//! The refresh loop: the single writer of the store, driven by time and by requests.
//!
//! [`Refresher::start`] spawns one task that owns the [`StoreWriter`] and a schedule per host.
//! Host refreshes (facts when due, then the whole inventory in one round trip) run as separate
//! tasks, at most [`RefreshConfig::max_concurrent`] at a time, each bounded by
//! [`RefreshConfig::host_timeout`] (counted from when it gets its turn). Results come back to
//! the loop, which applies whatever has finished in one batch and reschedules: a success after
//! [`RefreshConfig::interval`], a failure after [`backoff`]. Readers and subscribers never wait
//! for any of this ([`crate::store`](mod@crate::store)).
//!
//! Targeted refreshes ([`InventoryHandle::refresh_host`], [`InventoryHandle::refresh_vm`]) go
//! through the same loop and resolve once their result is in the published snapshot. A request
//! for a host whose refresh is already running waits for a fresh one that starts afterwards,
//! so a job that just changed a VM sees the change.
//!
//! Cancelling the token given to [`Refresher::start`] (or [`Refresher::shutdown`]) stops the
//! loop: running host refreshes are dropped, pending requests fail with [`Error::ShutDown`] and
//! subscriptions end.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aetherv_hyperv::ops::{HostFacts, HostReader, HyperVHost, Inventory, ReadOnlyHost, Vm, VmId};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::model::{HostStatus, InventoryVm, Snapshot};
use crate::store::{StoreReader, StoreWriter, Subscription, Update, store};

/// Where the hosts come from. The inventory only reads, so it sees each host through the
/// narrow [`HostReader`]; maps and lists of full [`HyperVHost`]s are adapted with
/// [`ReadOnlyHost`].
pub trait HostSource: Send + Sync {
    /// Every host to keep in the inventory, by name.
    fn hosts(&self) -> BTreeMap<String, Arc<dyn HostReader>>;
}

impl HostSource for BTreeMap<String, Arc<dyn HostReader>> {
    fn hosts(&self) -> BTreeMap<String, Arc<dyn HostReader>> {
        self.clone()
    }
}

impl HostSource for BTreeMap<String, Arc<dyn HyperVHost>> {
    fn hosts(&self) -> BTreeMap<String, Arc<dyn HostReader>> {
        self.iter()
            .map(|(name, h)| {
                let reader: Arc<dyn HostReader> = Arc::new(ReadOnlyHost(h.clone()));
                (name.clone(), reader)
            })
            .collect()
    }
}

impl HostSource for Vec<Arc<dyn HyperVHost>> {
    fn hosts(&self) -> BTreeMap<String, Arc<dyn HostReader>> {
        self.iter()
            .map(|h| {
                let reader: Arc<dyn HostReader> = Arc::new(ReadOnlyHost(h.clone()));
                (h.host_name().to_owned(), reader)
            })
            .collect()
    }
}

impl HostSource for Vec<Arc<dyn HostReader>> {
    fn hosts(&self) -> BTreeMap<String, Arc<dyn HostReader>> {
        self.iter()
            .map(|h| (h.host_name().to_owned(), h.clone()))
            .collect()
    }
}

/// How the refresher paces itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshConfig {
    /// Time between the end of a successful refresh of a host and the start of the next.
    pub interval: Duration,
    /// Upper bound for one host refresh (facts + inventory) or one VM refresh.
    pub host_timeout: Duration,
    /// Host refreshes running at the same time (at least 1).
    pub max_concurrent: usize,
    /// Delay before retrying a host after its first failure; doubles per further failure.
    pub backoff_initial: Duration,
    /// The longest retry delay (30 s by default: a host back from an outage is seen again
    /// within half a minute; a retry of a host that is still down costs one failed
    /// connection, or one probe when the host is frozen).
    pub backoff_max: Duration,
    /// Facts are fetched on every `facts_every`-th successful refresh, and always while a host
    /// is not connected (0 and 1 both mean every refresh).
    pub facts_every: u32,
    /// Changes each subscriber can fall behind before it lags.
    pub event_capacity: usize,
}

impl Default for RefreshConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30),
            host_timeout: Duration::from_secs(15),
            max_concurrent: 64,
            backoff_initial: Duration::from_secs(5),
            backoff_max: Duration::from_secs(30),
            facts_every: 10,
            event_capacity: 4096,
        }
    }
}

/// The retry delay after `failures` consecutive failures (≥ 1):
/// `backoff_initial * 2^(failures-1)`, at most `backoff_max`. Pure.
pub fn backoff(config: &RefreshConfig, failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(31);
    config
        .backoff_initial
        .checked_mul(1_u32 << exponent)
        .map_or(config.backoff_max, |d| d.min(config.backoff_max))
}

/// The text of an error and its sources as one line, joined by `: `. Many errors already
/// print their source's text in their own message (`host hv01: <winrm error>`); a source whose
/// text the line already ends with is not repeated, so each cause appears once.
pub fn error_text(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !part.is_empty() && !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

type Reply<T> = oneshot::Sender<Result<T>>;

enum Command {
    RefreshHost {
        host: String,
        /// Read the host's facts too, whenever they were last read.
        facts: bool,
        reply: Reply<()>,
    },
    RefreshVm {
        host: Option<String>,
        id: VmId,
        reply: Reply<Option<Arc<InventoryVm>>>,
    },
}

/// A cloneable handle: snapshots, subscriptions and targeted refreshes.
#[derive(Debug, Clone)]
pub struct InventoryHandle {
    reader: StoreReader,
    commands: mpsc::UnboundedSender<Command>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::RefreshHost { host, .. } => write!(f, "RefreshHost({host})"),
            Self::RefreshVm { id, .. } => write!(f, "RefreshVm({id})"),
        }
    }
}

impl InventoryHandle {
    /// The current snapshot (never waits for a refresh).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.reader.snapshot()
    }

    /// Changes from now on (see [`crate::store`](mod@crate::store) for lagging subscribers).
    pub fn subscribe(&self) -> Subscription {
        self.reader.subscribe()
    }

    /// The store's read handle.
    pub fn reader(&self) -> &StoreReader {
        &self.reader
    }

    /// Refreshes one host now and returns once the result is published: `Ok` when the host
    /// answered, else the error that marked it disconnected.
    pub async fn refresh_host(&self, host: &str) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::RefreshHost {
                host: host.to_owned(),
                facts: false,
                reply,
            })
            .map_err(|_| Error::ShutDown)?;
        rx.await.map_err(|_| Error::ShutDown)?
    }

    /// [`Self::refresh_host`] that reads the host's facts too (capacity, maintenance state),
    /// e.g. after a job changed them.
    pub async fn refresh_host_facts(&self, host: &str) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::RefreshHost {
                host: host.to_owned(),
                facts: true,
                reply,
            })
            .map_err(|_| Error::ShutDown)?;
        rx.await.map_err(|_| Error::ShutDown)?
    }

    /// Refreshes every host now (concurrently, under the bound) and returns each host's result
    /// once all are published.
    pub async fn refresh_all(&self) -> Vec<(String, Result<()>)> {
        let names: Vec<String> = self
            .snapshot()
            .hosts()
            .map(|h| h.name.to_string())
            .collect();
        let mut pending = Vec::with_capacity(names.len());
        for host in names {
            let (reply, rx) = oneshot::channel();
            let sent = self.commands.send(Command::RefreshHost {
                host: host.clone(),
                facts: false,
                reply,
            });
            pending.push((host, sent.is_ok().then_some(rx)));
        }
        let mut results = Vec::with_capacity(pending.len());
        for (host, rx) in pending {
            let result = match rx {
                Some(rx) => rx.await.unwrap_or(Err(Error::ShutDown)),
                None => Err(Error::ShutDown),
            };
            results.push((host, result));
        }
        results
    }

    /// Refreshes one VM the inventory knows, on its host; returns its new state, or `None`
    /// when the host no longer has it (it is removed).
    pub async fn refresh_vm(&self, id: VmId) -> Result<Option<Arc<InventoryVm>>> {
        self.vm_command(None, id).await
    }

    /// Refreshes one VM on a named host, e.g. one a job has just created.
    pub async fn refresh_vm_on(&self, host: &str, id: VmId) -> Result<Option<Arc<InventoryVm>>> {
        self.vm_command(Some(host.to_owned()), id).await
    }

    async fn vm_command(&self, host: Option<String>, id: VmId) -> Result<Option<Arc<InventoryVm>>> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::RefreshVm { host, id, reply })
            .map_err(|_| Error::ShutDown)?;
        rx.await.map_err(|_| Error::ShutDown)?
    }
}

/// The running refresher: owns the loop task.
#[derive(Debug)]
pub struct Refresher {
    handle: InventoryHandle,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl Refresher {
    /// Starts refreshing the hosts of `source` (all of them at once, then on schedule) on the
    /// current tokio runtime. Cancelling `cancel` (or a parent of it) stops the loop.
    pub fn start(
        source: &dyn HostSource,
        config: RefreshConfig,
        cancel: CancellationToken,
    ) -> Self {
        let (mut writer, reader) = store(config.event_capacity);
        let (commands, rx) = mpsc::unbounded_channel();
        let handle = InventoryHandle { reader, commands };
        let hosts = source.hosts();
        // Known hosts are in the first snapshot before this returns (as Pending).
        writer.apply(hosts.keys().map(|name| Update::HostAdded {
            host: name.as_str().into(),
        }));
        let task = tokio::spawn(run(writer, hosts, config, rx, cancel.clone()));
        Self {
            handle,
            cancel,
            task,
        }
    }

    /// A handle for readers and targeted refreshes.
    pub fn handle(&self) -> InventoryHandle {
        self.handle.clone()
    }

    /// Stops the loop and waits for it to end.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        if let Err(e) = self.task.await {
            tracing::warn!(error = %e, "inventory refresher ended abnormally");
        }
    }
}

struct Slot {
    host: Arc<dyn HostReader>,
    next_due: Instant,
    in_flight: bool,
    failures: u32,
    refreshes_until_facts: u32,
    /// The next refresh reads the facts (asked for by [`InventoryHandle::refresh_host_facts`]).
    facts_requested: bool,
    /// The digest of the VM set of the last complete inventory, while the store's copy of
    /// this host's VMs is exactly that inventory (a targeted VM refresh clears it).
    digest: Option<String>,
    /// Waiting for the refresh in flight.
    waiters: Vec<Reply<()>>,
    /// Waiting for a refresh that starts after the one in flight.
    queued: Vec<Reply<()>>,
}

type HostResult = Result<(Option<HostFacts>, Inventory)>;

// One `Done` per finished refresh, moved once through a channel: a box would cost as much.
#[allow(clippy::large_enum_variant)]
enum Done {
    Host {
        name: Arc<str>,
        result: HostResult,
        took: Duration,
    },
    Vm {
        name: Arc<str>,
        id: VmId,
        result: Result<Option<Vm>>,
        reply: Reply<Option<Arc<InventoryVm>>>,
    },
}

struct Loop {
    writer: StoreWriter,
    slots: BTreeMap<Arc<str>, Slot>,
    config: RefreshConfig,
    permits: Arc<Semaphore>,
    tasks: JoinSet<Done>,
    task_hosts: HashMap<tokio::task::Id, Arc<str>>,
}

async fn run(
    writer: StoreWriter,
    hosts: BTreeMap<String, Arc<dyn HostReader>>,
    config: RefreshConfig,
    mut commands: mpsc::UnboundedReceiver<Command>,
    cancel: CancellationToken,
) {
    let now = Instant::now();
    let mut state = Loop {
        writer,
        slots: BTreeMap::new(),
        permits: Arc::new(Semaphore::new(config.max_concurrent.max(1))),
        config,
        tasks: JoinSet::new(),
        task_hosts: HashMap::new(),
    };
    for (name, host) in hosts {
        let name: Arc<str> = name.into();
        state.slots.insert(
            name,
            Slot {
                host,
                next_due: now,
                in_flight: false,
                failures: 0,
                refreshes_until_facts: 0,
                facts_requested: false,
                digest: None,
                waiters: Vec::new(),
                queued: Vec::new(),
            },
        );
    }
    // Finished refreshes wait here until the next batch is applied (see `apply_gap`).
    let mut held = Vec::new();
    let mut apply_at: Option<Instant> = None;
    let mut last_apply = Instant::now();
    let mut last_cost = Duration::ZERO;
    loop {
        let next_due = state
            .slots
            .values()
            .filter(|s| !s.in_flight)
            .map(|s| s.next_due)
            .min();
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            Some(command) = commands.recv() => state.command(command),
            // Before new results, so a steady stream of them cannot hold a batch back.
            () = sleep_until(apply_at), if apply_at.is_some() => {
                let started = Instant::now();
                state.finish(std::mem::take(&mut held));
                last_apply = Instant::now();
                last_cost = last_apply - started;
                apply_at = None;
            }
            Some(joined) = state.tasks.join_next_with_id(), if !state.tasks.is_empty() => {
                held.push(joined);
                while let Some(more) = state.tasks.try_join_next_with_id() {
                    held.push(more);
                }
                if apply_at.is_none() {
                    apply_at = Some(last_apply + apply_gap(last_cost));
                }
            }
            () = sleep_until(next_due), if next_due.is_some() => state.start_due(),
        }
    }
    state.tasks.shutdown().await;
    // Dropping the state drops every pending reply (ShutDown) and the writer (subscriptions end).
}

/// The least time between two applied batches, from what the last one cost: four times its
/// cost, at most [`MAX_APPLY_GAP`]. Applying a batch copies the snapshot's indexes (O(VMs));
/// applying every finished host on its own would make a fleet's first refresh quadratic.
/// With the gap, at most a fifth of the loop's time goes to applying, and a small inventory
/// (cheap batches) applies each result at once.
fn apply_gap(last_cost: Duration) -> Duration {
    (last_cost * 4).min(MAX_APPLY_GAP)
}

/// The longest a finished refresh waits to be applied.
pub const MAX_APPLY_GAP: Duration = Duration::from_millis(250);

/// Logs a host's change between answering and not answering, once per change: a host
/// that stops answering, or answers again, at WARN; the first answer of a host at INFO.
fn log_transition(name: &str, before: Option<HostStatus>, result: &HostResult) {
    match (before, result) {
        (Some(HostStatus::Disconnected), Ok(_)) => {
            tracing::warn!(host = %name, "host is connected again");
        }
        (Some(HostStatus::Pending) | None, Ok(_)) => {
            tracing::info!(host = %name, "host connected");
        }
        (Some(HostStatus::Disconnected), Err(_)) => {}
        (_, Err(error)) => {
            tracing::warn!(host = %name, error = %error_text(error), "host disconnected");
        }
        (Some(_), Ok(_)) => {}
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(deadline) = deadline {
        tokio::time::sleep_until(deadline).await;
    }
}

impl Loop {
    fn command(&mut self, command: Command) {
        match command {
            Command::RefreshHost { host, facts, reply } => {
                let Some(name) = self
                    .slots
                    .get_key_value(host.as_str())
                    .map(|(n, _)| n.clone())
                else {
                    let _ = reply.send(Err(Error::UnknownHost { host }));
                    return;
                };
                let Some(slot) = self.slots.get_mut(&name) else {
                    return;
                };
                if facts {
                    slot.facts_requested = true;
                }
                if slot.in_flight {
                    slot.queued.push(reply);
                } else {
                    slot.waiters.push(reply);
                    self.spawn_host(&name);
                }
            }
            Command::RefreshVm { host, id, reply } => {
                let snapshot = self.writer.snapshot();
                let name = match host {
                    Some(h) => h,
                    None => match snapshot.host_of(id) {
                        Some(h) => h.to_string(),
                        None => {
                            let _ = reply.send(Err(Error::UnknownVm { vm: id.to_string() }));
                            return;
                        }
                    },
                };
                let Some((name, slot)) = self.slots.get_key_value(name.as_str()) else {
                    let _ = reply.send(Err(Error::UnknownHost { host: name }));
                    return;
                };
                let name = name.clone();
                let host = slot.host.clone();
                let permits = self.permits.clone();
                let timeout = self.config.host_timeout;
                let task_name = name.clone();
                let handle = self.tasks.spawn(async move {
                    let _permit = permits.acquire_owned().await;
                    let result = match tokio::time::timeout(timeout, host.read_vm(id)).await {
                        Ok(Ok(vm)) => Ok(Some(vm)),
                        Ok(Err(aetherv_hyperv::Error::UnknownVm { .. })) => Ok(None),
                        Ok(Err(source)) => Err(Error::Host {
                            host: task_name.to_string(),
                            source: Arc::new(source),
                        }),
                        Err(_) => Err(Error::Timeout {
                            host: task_name.to_string(),
                            after: timeout,
                        }),
                    };
                    Done::Vm {
                        name: task_name,
                        id,
                        result,
                        reply,
                    }
                });
                self.task_hosts.insert(handle.id(), name);
            }
        }
    }

    fn start_due(&mut self) {
        let now = Instant::now();
        let due: Vec<Arc<str>> = self
            .slots
            .iter()
            .filter(|(_, s)| !s.in_flight && s.next_due <= now)
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            self.spawn_host(&name);
        }
    }

    fn spawn_host(&mut self, name: &Arc<str>) {
        let connected = self
            .writer
            .snapshot()
            .host(name)
            .is_some_and(|h| h.is_connected());
        let Some(slot) = self.slots.get_mut(name) else {
            return;
        };
        slot.in_flight = true;
        let want_facts = !connected
            || slot.refreshes_until_facts == 0
            || std::mem::take(&mut slot.facts_requested);
        let since = slot.digest.clone().filter(|_| connected);
        let host = slot.host.clone();
        let permits = self.permits.clone();
        let timeout = self.config.host_timeout;
        let task_name = name.clone();
        let handle = self.tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let started = Instant::now();
            let work = async {
                let facts = if want_facts {
                    Some(host.read_facts().await?)
                } else {
                    None
                };
                let inventory = match &since {
                    Some(digest) => host.read_inventory_since(digest).await?,
                    None => host.read_inventory().await?,
                };
                Ok::<_, aetherv_hyperv::Error>((facts, inventory))
            };
            let result = match tokio::time::timeout(timeout, work).await {
                Ok(Ok(done)) => Ok(done),
                Ok(Err(source)) => Err(Error::Host {
                    host: task_name.to_string(),
                    source: Arc::new(source),
                }),
                Err(_) => Err(Error::Timeout {
                    host: task_name.to_string(),
                    after: timeout,
                }),
            };
            Done::Host {
                name: task_name,
                result,
                took: started.elapsed(),
            }
        });
        self.task_hosts.insert(handle.id(), name.clone());
    }

    fn finish(&mut self, batch: Vec<Result<(tokio::task::Id, Done), tokio::task::JoinError>>) {
        let at = SystemTime::now();
        let mut updates = Vec::new();
        let mut host_replies: Vec<(Vec<Reply<()>>, Result<()>)> = Vec::new();
        let mut vm_replies = Vec::new();
        let mut again = Vec::new();
        for joined in batch {
            let done = match joined {
                Ok((id, done)) => {
                    self.task_hosts.remove(&id);
                    done
                }
                Err(e) => {
                    let Some(name) = self.task_hosts.remove(&e.id()) else {
                        continue;
                    };
                    Done::Host {
                        result: Err(Error::TaskFailed {
                            host: name.to_string(),
                            reason: e.to_string(),
                        }),
                        name,
                        took: Duration::ZERO,
                    }
                }
            };
            match done {
                Done::Host { name, result, took } => {
                    let Some(slot) = self.slots.get_mut(&name) else {
                        continue;
                    };
                    slot.in_flight = false;
                    let now = Instant::now();
                    let before = self.writer.snapshot().host(&name).map(|h| h.status);
                    log_transition(&name, before, &result);
                    let outcome = match result {
                        Ok((_, inventory))
                            if inventory.unchanged
                                && (slot.digest.is_none() || inventory.digest != slot.digest) =>
                        {
                            // The host compared with a copy this store no longer holds (a VM
                            // refresh changed it meanwhile): read everything now.
                            slot.digest = None;
                            slot.queued.append(&mut slot.waiters);
                            slot.waiters = std::mem::take(&mut slot.queued);
                            again.push(name);
                            continue;
                        }
                        Ok((facts, inventory)) => {
                            slot.refreshes_until_facts = if facts.is_some() {
                                self.config.facts_every.saturating_sub(1)
                            } else {
                                slot.refreshes_until_facts.saturating_sub(1)
                            };
                            slot.failures = 0;
                            slot.next_due = now + self.config.interval;
                            if inventory.unchanged {
                                updates.push(Update::Unchanged {
                                    host: name.clone(),
                                    facts,
                                    at,
                                    took,
                                });
                            } else {
                                slot.digest = inventory.digest;
                                updates.push(Update::Refreshed {
                                    host: name.clone(),
                                    facts,
                                    vms: inventory.vms,
                                    at,
                                    took,
                                });
                            }
                            Ok(())
                        }
                        Err(error) => {
                            slot.digest = None;
                            slot.failures = slot.failures.saturating_add(1);
                            slot.next_due = now + backoff(&self.config, slot.failures);
                            let text = error_text(&error);
                            tracing::debug!(host = %name, error = %text, "host refresh failed");
                            updates.push(Update::Failed {
                                host: name.clone(),
                                error: text,
                                at,
                                took,
                            });
                            Err(error)
                        }
                    };
                    host_replies.push((std::mem::take(&mut slot.waiters), outcome));
                    if !slot.queued.is_empty() {
                        slot.waiters = std::mem::take(&mut slot.queued);
                        again.push(name);
                    }
                }
                Done::Vm {
                    name,
                    id,
                    result,
                    reply,
                } => {
                    // The store's copy of the host is no longer the digested inventory.
                    if result.is_ok()
                        && let Some(slot) = self.slots.get_mut(&name)
                    {
                        slot.digest = None;
                    }
                    match result {
                        Ok(Some(vm)) => {
                            updates.push(Update::VmRefreshed { host: name, vm });
                            vm_replies.push((reply, Ok(Some(id))));
                        }
                        Ok(None) => {
                            updates.push(Update::VmMissing { host: name, id });
                            vm_replies.push((reply, Ok(None)));
                        }
                        Err(e) => vm_replies.push((reply, Err(e))),
                    }
                }
            }
        }
        let snapshot = self.writer.apply(updates);
        for (waiters, outcome) in host_replies {
            for waiter in waiters {
                let _ = waiter.send(outcome.clone());
            }
        }
        for (reply, outcome) in vm_replies {
            let _ = reply.send(outcome.map(|id| id.and_then(|id| snapshot.vm(id).cloned())));
        }
        for name in again {
            self.spawn_host(&name);
        }
    }
}
