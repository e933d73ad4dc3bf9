//! The single-writer store: pure update functions, the published snapshot, change events.
//!
//! [`apply`] turns a snapshot and a batch of [`Update`]s into the next snapshot and the
//! [`Event`]s that describe the difference ([`diff_vms`] for one host's VMs). [`StoreWriter`]
//! (one per store, not `Clone`) runs it and publishes the result through an atomic pointer
//! swap; [`StoreReader`]s load the current `Arc<Snapshot>` without locks and never wait for a
//! refresh in progress.
//!
//! # Events and lagging subscribers
//!
//! Every applied batch that changes something is broadcast as [`Change`]s to every
//! [`Subscription`], through a bounded queue per subscriber (tokio `broadcast`). The writer
//! never waits for a subscriber: one that falls more than the queue's capacity behind loses
//! the oldest events and gets [`Notification::Lagged`] next. It should then resync: take
//! [`StoreReader::snapshot`] and ignore further changes whose generation is not above the
//! snapshot's. To start without gaps, subscribe first, then take the snapshot.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use aetherv_hyperv::ops::{HostFacts, Vm, VmId};
use arc_swap::ArcSwap;
use tokio::sync::broadcast;

use crate::model::{Cluster, HostState, HostStatus, InventoryVm, Snapshot, advanced_uptime};

/// One result for the writer to apply.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Update {
    /// A host the inventory should track (no effect when it is known).
    HostAdded {
        /// Host name.
        host: Arc<str>,
    },
    /// A host to forget, with its VMs.
    HostRemoved {
        /// Host name.
        host: Arc<str>,
    },
    /// A successful host refresh: the complete VM list.
    Refreshed {
        /// Host name.
        host: Arc<str>,
        /// New facts, when this refresh fetched them (`None` keeps the previous ones).
        facts: Option<HostFacts>,
        /// Every VM on the host.
        vms: Vec<Vm>,
        /// When the refresh finished.
        at: SystemTime,
        /// How long it took.
        took: Duration,
    },
    /// A successful host refresh whose VM set still has the digest of the last complete one
    /// ([`aetherv_hyperv::ops::Inventory::unchanged`]): the VMs are kept, and the host's
    /// [`HostState::uptime_advance`] grows by the time since the last successful refresh.
    Unchanged {
        /// Host name.
        host: Arc<str>,
        /// New facts, when this refresh fetched them (`None` keeps the previous ones).
        facts: Option<HostFacts>,
        /// When the refresh finished.
        at: SystemTime,
        /// How long it took.
        took: Duration,
    },
    /// A failed host refresh.
    Failed {
        /// Host name.
        host: Arc<str>,
        /// What went wrong.
        error: String,
        /// When the refresh gave up.
        at: SystemTime,
        /// How long it took.
        took: Duration,
    },
    /// One VM fetched on demand.
    VmRefreshed {
        /// The host it was fetched from.
        host: Arc<str>,
        /// The VM.
        vm: Vm,
    },
    /// The host says it has no VM with this id.
    VmMissing {
        /// The host asked.
        host: Arc<str>,
        /// The VM id.
        id: VmId,
    },
}

/// What changed in the inventory.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A VM appeared.
    VmAdded {
        /// The VM.
        vm: Arc<InventoryVm>,
    },
    /// A VM's reported properties changed, or it moved to another host. Stale flags alone do
    /// not produce this event: they follow [`Event::HostDisconnected`]/[`Event::HostConnected`].
    /// Neither does uptime that only advanced (every refresh of a running VM would otherwise be
    /// a change); an uptime that went back (a restart) does.
    VmChanged {
        /// The previous state.
        before: Arc<InventoryVm>,
        /// The new state.
        after: Arc<InventoryVm>,
    },
    /// A VM disappeared from its host.
    VmRemoved {
        /// The last known state.
        vm: Arc<InventoryVm>,
    },
    /// A host answered after being pending or disconnected; its VMs are current.
    HostConnected {
        /// Host name.
        host: Arc<str>,
    },
    /// A host stopped answering (or never answered); its VMs are kept and flagged stale.
    HostDisconnected {
        /// Host name.
        host: Arc<str>,
        /// Why.
        error: String,
    },
    /// A host was removed from the inventory (its VMs get [`Event::VmRemoved`] first).
    HostRemoved {
        /// Host name.
        host: Arc<str>,
    },
}

/// An [`Event`] and the snapshot generation that contains it.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The generation of the snapshot this change produced.
    pub generation: u64,
    /// What changed.
    pub event: Event,
}

/// The events between two VM maps of one host: added, changed (properties differ; the stale
/// flag, and uptime that only advanced, are ignored) and removed VMs, in id order.
pub fn diff_vms(
    before: &BTreeMap<VmId, Arc<InventoryVm>>,
    after: &BTreeMap<VmId, Arc<InventoryVm>>,
) -> Vec<Event> {
    diff_advanced(before, Duration::ZERO, after, Duration::ZERO)
}

/// [`diff_vms`] between maps whose running VMs' uptimes are behind by `before_advance` and
/// `after_advance` ([`HostState::uptime_advance`]).
fn diff_advanced(
    before: &BTreeMap<VmId, Arc<InventoryVm>>,
    before_advance: Duration,
    after: &BTreeMap<VmId, Arc<InventoryVm>>,
    after_advance: Duration,
) -> Vec<Event> {
    let mut events = Vec::new();
    for (id, new) in after {
        match before.get(id) {
            None => events.push(Event::VmAdded { vm: new.clone() }),
            Some(old)
                if old.host != new.host
                    || reported_change((&old.vm, before_advance), (&new.vm, after_advance)) =>
            {
                events.push(Event::VmChanged {
                    before: old.clone(),
                    after: new.clone(),
                });
            }
            Some(_) => {}
        }
    }
    for (id, old) in before {
        if !after.contains_key(id) {
            events.push(Event::VmRemoved { vm: old.clone() });
        }
    }
    events
}

/// Whether `after` differs from `before` by more than an uptime that advanced; each VM comes
/// with the advance its host adds to a running VM's reported uptime.
fn reported_change(
    (before, before_advance): (&Vm, Duration),
    (after, after_advance): (&Vm, Duration),
) -> bool {
    if before == after && before_advance == after_advance {
        return false;
    }
    if advanced_uptime(after, after_advance) < advanced_uptime(before, before_advance) {
        return true;
    }
    let mut same_uptime = after.clone();
    same_uptime.uptime = before.uptime;
    same_uptime != *before
}

/// Applies a batch of updates to `snapshot`: the next snapshot (generation + 1 when anything
/// changed, else a clone of the input) and the events describing the change. Pure.
pub fn apply(
    snapshot: &Snapshot,
    updates: impl IntoIterator<Item = Update>,
) -> (Snapshot, Vec<Event>) {
    let mut next = snapshot.clone();
    let mut events = Vec::new();
    let mut clusters_dirty = false;
    for update in updates {
        match update {
            Update::HostAdded { host } => {
                if !next.hosts.contains_key(&host) {
                    next.hosts
                        .insert(host.clone(), Arc::new(HostState::pending(host)));
                }
            }
            Update::HostRemoved { host } => {
                if let Some(old) = next.hosts.remove(&host) {
                    for vm in old.vms.values() {
                        unindex(&mut next, vm);
                        events.push(Event::VmRemoved { vm: vm.clone() });
                    }
                    clusters_dirty |= old.cluster().is_some();
                    events.push(Event::HostRemoved { host });
                }
            }
            Update::Refreshed {
                host,
                facts,
                vms,
                at,
                took,
            } => {
                let old = host_or_pending(&next, &host);
                let mut map: BTreeMap<VmId, Arc<InventoryVm>> = BTreeMap::new();
                for vm in vms {
                    let entry = match old.vms.get(&vm.id) {
                        Some(prev) if !prev.stale && prev.vm == vm => prev.clone(),
                        _ => Arc::new(InventoryVm {
                            vm,
                            host: host.clone(),
                            stale: false,
                        }),
                    };
                    map.insert(entry.vm.id, entry);
                }
                let mut state = (*old).clone();
                clusters_dirty |= succeeded(&mut state, &mut events, &host, facts, at, took);
                replace_vms(&mut next, &mut events, state, map, Duration::ZERO);
            }
            Update::Unchanged {
                host,
                facts,
                at,
                took,
            } => {
                let old = host_or_pending(&next, &host);
                let elapsed = old
                    .last_seen
                    .and_then(|seen| at.duration_since(seen).ok())
                    .unwrap_or_default();
                let mut state = (*old).clone();
                clusters_dirty |= succeeded(&mut state, &mut events, &host, facts, at, took);
                // The same VMs with the same names: running VMs' uptimes advance through the
                // host's `uptime_advance` (no VM is copied) and stale flags are cleared, which
                // are no VM events (see `diff_vms`) and leave the indexes as they are.
                state.uptime_advance += elapsed;
                if let Some(vms) = flagged_stale(&old.vms, false) {
                    state.vms = vms;
                }
                next.hosts.insert(host, Arc::new(state));
            }
            Update::Failed {
                host,
                error,
                at,
                took,
            } => {
                let old = host_or_pending(&next, &host);
                let mut state = (*old).clone();
                if state.status != HostStatus::Disconnected {
                    events.push(Event::HostDisconnected {
                        host: host.clone(),
                        error: error.clone(),
                    });
                }
                state.status = HostStatus::Disconnected;
                state.last_attempt = Some(at);
                state.last_error = Some(error);
                state.refresh_duration = Some(took);
                state.consecutive_failures = state.consecutive_failures.saturating_add(1);
                if let Some(vms) = flagged_stale(&old.vms, true) {
                    state.vms = vms;
                }
                next.hosts.insert(host, Arc::new(state));
            }
            Update::VmRefreshed { host, vm } => {
                let old = host_or_pending(&next, &host);
                // The fetched VM's uptime is current: the others take their advance into
                // their own records so the host's advance can start again from zero.
                let mut map = if old.uptime_advance.is_zero() {
                    (*old.vms).clone()
                } else {
                    old.vms
                        .iter()
                        .map(|(id, entry)| {
                            if entry.vm.uptime.is_zero() {
                                return (*id, entry.clone());
                            }
                            let mut entry = (**entry).clone();
                            entry.vm.uptime += old.uptime_advance;
                            (*id, Arc::new(entry))
                        })
                        .collect()
                };
                let stale = old.status == HostStatus::Disconnected;
                match map.get(&vm.id) {
                    Some(prev) if prev.vm == vm && prev.stale == stale => {}
                    _ => {
                        map.insert(
                            vm.id,
                            Arc::new(InventoryVm {
                                vm,
                                host: host.clone(),
                                stale,
                            }),
                        );
                    }
                }
                let state = (*old).clone();
                replace_vms(&mut next, &mut events, state, map, Duration::ZERO);
            }
            Update::VmMissing { host, id } => {
                if let Some(old) = next.hosts.get(&host).cloned()
                    && old.vms.contains_key(&id)
                {
                    let mut map = (*old.vms).clone();
                    map.remove(&id);
                    let state = (*old).clone();
                    let advance = state.uptime_advance;
                    replace_vms(&mut next, &mut events, state, map, advance);
                }
            }
        }
    }
    if clusters_dirty {
        next.clusters = Arc::new(clusters_of(&next));
    }
    if !events.is_empty() || !same_hosts(snapshot, &next) {
        next.generation = snapshot.generation.wrapping_add(1);
    }
    if !events.is_empty() || clusters_dirty {
        next.vms_generation = snapshot.vms_generation.wrapping_add(1);
    }
    (next, events)
}

fn same_hosts(a: &Snapshot, b: &Snapshot) -> bool {
    a.hosts.len() == b.hosts.len()
        && a.hosts
            .iter()
            .zip(b.hosts.iter())
            .all(|((ka, va), (kb, vb))| ka == kb && Arc::ptr_eq(va, vb))
}

/// Records a successful refresh of `host` in `state` (a copy of its previous state): new facts
/// if fetched, connected, seen at `at`, no error. Pushes `HostConnected` when the host was not
/// connected before. Returns whether the host's cluster changed.
fn succeeded(
    state: &mut HostState,
    events: &mut Vec<Event>,
    host: &Arc<str>,
    facts: Option<HostFacts>,
    at: SystemTime,
    took: Duration,
) -> bool {
    let mut cluster_changed = false;
    if let Some(facts) = facts {
        cluster_changed = state.cluster() != facts.cluster.as_deref();
        state.facts = Some(Arc::new(facts));
    }
    if state.status != HostStatus::Connected {
        events.push(Event::HostConnected { host: host.clone() });
    }
    state.status = HostStatus::Connected;
    state.last_seen = Some(at);
    state.last_attempt = Some(at);
    state.last_error = None;
    state.refresh_duration = Some(took);
    state.consecutive_failures = 0;
    cluster_changed
}

/// `vms` with every stale flag set to `stale`, or `None` when every VM has it already (the
/// map is then kept as it is). Only the VMs whose flag changes are copied.
fn flagged_stale(
    vms: &Arc<BTreeMap<VmId, Arc<InventoryVm>>>,
    stale: bool,
) -> Option<Arc<BTreeMap<VmId, Arc<InventoryVm>>>> {
    if vms.values().all(|vm| vm.stale == stale) {
        return None;
    }
    let flagged = vms
        .iter()
        .map(|(id, vm)| {
            if vm.stale == stale {
                return (*id, vm.clone());
            }
            let mut vm = (**vm).clone();
            vm.stale = stale;
            (*id, Arc::new(vm))
        })
        .collect();
    Some(Arc::new(flagged))
}

fn host_or_pending(snapshot: &Snapshot, host: &Arc<str>) -> Arc<HostState> {
    snapshot
        .hosts
        .get(host)
        .cloned()
        .unwrap_or_else(|| Arc::new(HostState::pending(host.clone())))
}

/// Installs `map` as `state`'s VMs, with `advance` as its running VMs' uptime advance: diffs
/// against the old map (and the old advance, still in `state`), keeps the indexes current and
/// takes VMs that moved here off their previous host.
fn replace_vms(
    next: &mut Snapshot,
    events: &mut Vec<Event>,
    mut state: HostState,
    map: BTreeMap<VmId, Arc<InventoryVm>>,
    advance: Duration,
) {
    let host = state.name.clone();
    let old_map = state.vms.clone();
    for event in diff_advanced(&old_map, state.uptime_advance, &map, advance) {
        match &event {
            Event::VmAdded { vm } => {
                let moved_from = next.by_id.get(&vm.vm.id).filter(|h| **h != host).cloned();
                if let Some(from) = moved_from.and_then(|h| take_vm(next, &h, vm.vm.id)) {
                    unindex(next, &from);
                    index(next, vm);
                    events.push(Event::VmChanged {
                        before: from,
                        after: vm.clone(),
                    });
                    continue;
                }
                index(next, vm);
            }
            Event::VmRemoved { vm } => unindex(next, vm),
            Event::VmChanged { before, after } if before.vm.name != after.vm.name => {
                unindex(next, before);
                index(next, after);
            }
            _ => {}
        }
        events.push(event);
    }
    state.vms = Arc::new(map);
    state.uptime_advance = advance;
    next.hosts.insert(host, Arc::new(state));
}

/// Removes a VM from another host's entry (it moved), returning it.
fn take_vm(next: &mut Snapshot, host: &Arc<str>, id: VmId) -> Option<Arc<InventoryVm>> {
    let old = next.hosts.get(host)?.clone();
    let vm = old.vms.get(&id)?.clone();
    let mut state = (*old).clone();
    let mut map = (*old.vms).clone();
    map.remove(&id);
    state.vms = Arc::new(map);
    next.hosts.insert(host.clone(), Arc::new(state));
    Some(vm)
}

fn index(next: &mut Snapshot, vm: &InventoryVm) {
    Arc::make_mut(&mut next.by_id).insert(vm.vm.id, vm.host.clone());
    let by_name = Arc::make_mut(&mut next.by_name);
    let name: &str = &vm.vm.name;
    let ids: Vec<VmId> = by_name
        .get(name)
        .map(|ids| ids.iter().copied().filter(|i| *i != vm.vm.id).collect())
        .unwrap_or_default();
    let mut ids = ids;
    ids.push(vm.vm.id);
    by_name.insert(Arc::from(name), ids.into());
}

fn unindex(next: &mut Snapshot, vm: &InventoryVm) {
    let by_id = Arc::make_mut(&mut next.by_id);
    if by_id.get(&vm.vm.id) == Some(&vm.host) {
        by_id.remove(&vm.vm.id);
    }
    let by_name = Arc::make_mut(&mut next.by_name);
    let name: &str = &vm.vm.name;
    if let Some(ids) = by_name.get(name) {
        let rest: Vec<VmId> = ids.iter().copied().filter(|i| *i != vm.vm.id).collect();
        if rest.is_empty() {
            by_name.remove(name);
        } else {
            by_name.insert(Arc::from(name), rest.into());
        }
    }
}

fn clusters_of(snapshot: &Snapshot) -> BTreeMap<String, Cluster> {
    let mut clusters: BTreeMap<String, Cluster> = BTreeMap::new();
    for host in snapshot.hosts.values() {
        if let Some(name) = host.cluster() {
            clusters
                .entry(name.to_owned())
                .or_insert_with(|| Cluster {
                    name: name.to_owned(),
                    hosts: BTreeSet::new(),
                })
                .hosts
                .insert(host.name.clone());
        }
    }
    clusters
}

/// A change or a gap, as a [`Subscription`] yields them.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Notification {
    /// The next change.
    Change(Change),
    /// The subscriber fell behind and `missed` changes were dropped; resync from
    /// [`StoreReader::snapshot`].
    Lagged {
        /// How many changes were lost.
        missed: u64,
    },
}

/// A stream of inventory changes (see the module docs for lagging).
#[derive(Debug)]
pub struct Subscription {
    receiver: broadcast::Receiver<Change>,
}

impl Subscription {
    /// The next notification; `None` once the store's writer is gone (shutdown).
    pub async fn recv(&mut self) -> Option<Notification> {
        match self.receiver.recv().await {
            Ok(change) => Some(Notification::Change(change)),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                Some(Notification::Lagged { missed })
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    /// A notification that is already queued, without waiting.
    pub fn try_recv(&mut self) -> Option<Notification> {
        match self.receiver.try_recv() {
            Ok(change) => Some(Notification::Change(change)),
            Err(broadcast::error::TryRecvError::Lagged(missed)) => {
                Some(Notification::Lagged { missed })
            }
            Err(_) => None,
        }
    }
}

#[derive(Debug)]
struct Shared {
    current: ArcSwap<Snapshot>,
    events: RwLock<Option<broadcast::Sender<Change>>>,
}

/// The one writer of a store.
#[derive(Debug)]
pub struct StoreWriter {
    shared: Arc<Shared>,
    events: broadcast::Sender<Change>,
}

/// A cheap, cloneable read handle of a store.
#[derive(Debug, Clone)]
pub struct StoreReader {
    shared: Arc<Shared>,
}

/// A new, empty store whose subscribers each buffer up to `event_capacity` changes (at least 1).
pub fn store(event_capacity: usize) -> (StoreWriter, StoreReader) {
    let (events, _) = broadcast::channel(event_capacity.max(1));
    let shared = Arc::new(Shared {
        current: ArcSwap::from_pointee(Snapshot::new()),
        events: RwLock::new(Some(events.clone())),
    });
    (
        StoreWriter {
            shared: shared.clone(),
            events,
        },
        StoreReader { shared },
    )
}

impl StoreWriter {
    /// Applies `updates` ([`apply`]), publishes the new snapshot and broadcasts its events.
    /// Returns the published snapshot.
    pub fn apply(&mut self, updates: impl IntoIterator<Item = Update>) -> Arc<Snapshot> {
        let current = self.shared.current.load_full();
        let (next, events) = apply(&current, updates);
        if next.generation == current.generation {
            return current;
        }
        let generation = next.generation;
        let next = Arc::new(next);
        self.shared.current.store(next.clone());
        for event in events {
            // No receivers is fine: nobody is listening.
            let _ = self.events.send(Change { generation, event });
        }
        next
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.current.load_full()
    }

    /// A read handle.
    pub fn reader(&self) -> StoreReader {
        StoreReader {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for StoreWriter {
    fn drop(&mut self) {
        // Subscriptions end once every sender is gone.
        if let Ok(mut events) = self.shared.events.write() {
            events.take();
        }
    }
}

impl StoreReader {
    /// The current snapshot: an atomic load, never waiting for the writer.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.current.load_full()
    }

    /// Subscribes to changes from now on (ends at once when the writer is gone).
    pub fn subscribe(&self) -> Subscription {
        let sender = self
            .shared
            .events
            .read()
            .ok()
            .and_then(|events| events.as_ref().map(broadcast::Sender::subscribe));
        let receiver = sender.unwrap_or_else(|| broadcast::channel(1).1);
        Subscription { receiver }
    }
}
