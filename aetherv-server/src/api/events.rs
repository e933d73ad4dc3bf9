//! `GET /api/v1/events`: inventory changes and job status changes as Server-Sent Events.
//!
//! VM changes are coalesced per VM over [`COALESCE_WINDOW`]: within a window a VM yields at
//! most one event, its net change ([`Coalescer`]), and `vm_changed` carries only the fields
//! that changed. A client can subscribe to one host or one VM (`?host=`, `?vm_id=`).

use std::collections::HashMap;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use aetherv_hyperv::ops::VmId;
use aetherv_inventory::InventoryVm;
use aetherv_inventory::store::{Change, Event as InventoryEvent, Notification, Subscription};
use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio::time::Instant;
use utoipa::IntoParams;

use super::views::{
    self, HelloEvent, HostDisconnectedEvent, HostEvent, ResyncEvent, VmChangedEvent, VmEvent,
    VmRemovedEvent,
};
use crate::error::{ApiError, ApiResult};
use crate::jobs::JobNotice;
use crate::state::AppState;

/// How long VM changes are gathered before they are sent, one event per VM.
pub const COALESCE_WINDOW: Duration = Duration::from_millis(250);

/// VMs with pending changes one stream holds at most; beyond, it sends `resync` instead
/// (bounded memory per subscriber).
pub const MAX_PENDING_VMS: usize = 20_000;

fn data(name: &str, value: &impl Serialize) -> Event {
    Event::default()
        .event(name)
        .data(serde_json::to_string(value).unwrap_or_default())
}

/// Query of `GET /api/v1/events`: both optional, combined with AND.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only events of this host (case-insensitive): its VMs, its connection, its jobs.
    pub host: Option<String>,
    /// Only events of this VM: its changes and its jobs.
    #[param(value_type = Option<String>, format = Uuid)]
    pub vm_id: Option<String>,
}

/// Which events a stream sends.
#[derive(Debug, Clone, Default)]
struct Scope {
    host: Option<String>,
    vm: Option<VmId>,
}

impl Scope {
    fn of(query: EventsQuery) -> ApiResult<Self> {
        let blank = |v: Option<String>| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
        let vm = match blank(query.vm_id) {
            None => None,
            Some(s) => Some(
                s.parse::<VmId>()
                    .map_err(|_| ApiError::bad_query("vm_id", format!("{s:?} is not a VM id")))?,
            ),
        };
        Ok(Self {
            host: blank(query.host),
            vm,
        })
    }

    fn host_matches(&self, host: &str) -> bool {
        self.host
            .as_deref()
            .is_none_or(|h| h.eq_ignore_ascii_case(host))
    }

    fn vm_matches(&self, vm: &InventoryVm) -> bool {
        self.vm.is_none_or(|id| id == vm.vm.id) && self.host_matches(&vm.host)
    }

    fn job_matches(&self, notice: &JobNotice) -> bool {
        self.host_matches(&notice.target_host) && self.vm.is_none_or(|id| notice.vm_id == Some(id))
    }

    fn host_only(&self, host: &str) -> bool {
        self.vm.is_none() && self.host_matches(host)
    }
}

/// A VM's changes within one window.
#[derive(Debug)]
struct Pending {
    /// The state before the window, `None` when the VM appeared in it.
    before: Option<Arc<InventoryVm>>,
    /// The latest state, `None` when the VM is gone.
    latest: Option<Arc<InventoryVm>>,
    generation: u64,
}

/// One VM's net change over a window.
#[derive(Debug, PartialEq)]
pub enum Net {
    /// The VM appeared (and is still there).
    Added(Arc<InventoryVm>),
    /// The VM changed from the first to the second.
    Changed(Arc<InventoryVm>, Arc<InventoryVm>),
    /// The VM is gone (it existed before the window).
    Removed(Arc<InventoryVm>),
}

/// Gathers VM changes and gives one net change per VM, in the order the VMs first changed.
#[derive(Debug, Default)]
pub struct Coalescer {
    pending: HashMap<VmId, Pending>,
    order: Vec<VmId>,
}

impl Coalescer {
    /// Adds one VM change (other events are ignored). Returns whether it was a VM change.
    pub fn add(&mut self, generation: u64, event: &InventoryEvent) -> bool {
        let (id, before, latest) = match event {
            InventoryEvent::VmAdded { vm } => (vm.vm.id, None, Some(vm.clone())),
            InventoryEvent::VmChanged { before, after } => {
                (after.vm.id, Some(before.clone()), Some(after.clone()))
            }
            InventoryEvent::VmRemoved { vm } => (vm.vm.id, Some(vm.clone()), None),
            _ => return false,
        };
        match self.pending.get_mut(&id) {
            Some(p) => {
                p.latest = latest;
                p.generation = generation;
            }
            None => {
                self.order.push(id);
                self.pending.insert(
                    id,
                    Pending {
                        before,
                        latest,
                        generation,
                    },
                );
            }
        }
        true
    }

    /// VMs with pending changes.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Forgets everything pending.
    pub fn clear(&mut self) {
        self.pending.clear();
        self.order.clear();
    }

    /// The net change of every pending VM (with the generation of its latest change), and
    /// nothing pending afterwards. A VM that appeared and went within the window yields
    /// nothing.
    pub fn drain(&mut self) -> Vec<(u64, Net)> {
        let mut out = Vec::with_capacity(self.order.len());
        for id in self.order.drain(..) {
            let Some(p) = self.pending.remove(&id) else {
                continue;
            };
            let net = match (p.before, p.latest) {
                (None, Some(vm)) => Net::Added(vm),
                (None, None) => continue,
                (Some(before), Some(after)) => Net::Changed(before, after),
                (Some(before), None) => Net::Removed(before),
            };
            out.push((p.generation, net));
        }
        out
    }
}

/// The `vm_changed` data between two summaries: `id`, `name`, `host` and the fields that
/// differ; `None` when nothing differs.
pub fn changed_fields(
    before: &views::VmSummary,
    after: &views::VmSummary,
) -> Option<(serde_json::Map<String, serde_json::Value>, Vec<String>)> {
    let (Ok(serde_json::Value::Object(old)), Ok(serde_json::Value::Object(new))) =
        (serde_json::to_value(before), serde_json::to_value(after))
    else {
        return None;
    };
    let mut changed = Vec::new();
    let mut partial = serde_json::Map::new();
    for (key, value) in new {
        let differs = old.get(&key) != Some(&value);
        if differs {
            changed.push(key.clone());
        }
        if differs || matches!(key.as_str(), "id" | "name" | "host") {
            partial.insert(key, value);
        }
    }
    (!changed.is_empty()).then_some((partial, changed))
}

/// Everything one stream holds between two events it sends.
struct StreamState {
    state: AppState,
    scope: Scope,
    inventory: Subscription,
    jobs: broadcast::Receiver<JobNotice>,
    coalescer: Coalescer,
    /// When the pending VM changes are due.
    due: Option<Instant>,
    /// Events ready to send, in order.
    ready: VecDeque<Event>,
}

impl StreamState {
    /// Moves the pending VM changes into `ready`.
    fn flush(&mut self) {
        self.due = None;
        if self.coalescer.is_empty() {
            return;
        }
        let snapshot = self.state.inventory.snapshot();
        let busy = self.state.jobs.busy_vms();
        let summary = |vm: &InventoryVm| views::vm_summary(&snapshot, vm, &busy, &self.state.jobs);
        for (generation, net) in self.coalescer.drain() {
            let event = match net {
                Net::Added(vm) => data(
                    "vm_added",
                    &VmEvent {
                        generation,
                        vm: summary(&vm),
                    },
                ),
                Net::Removed(vm) => data(
                    "vm_removed",
                    &VmRemovedEvent {
                        generation,
                        id: vm.vm.id,
                        host: vm.host.to_string(),
                    },
                ),
                Net::Changed(before, after) => {
                    match changed_fields(&summary(&before), &summary(&after)) {
                        None => continue,
                        Some((vm, changed)) => data(
                            "vm_changed",
                            &VmChangedEvent {
                                generation,
                                vm,
                                changed,
                            },
                        ),
                    }
                }
            };
            self.ready.push_back(event);
        }
    }

    fn resync(&mut self, missed: u64) {
        self.flush();
        self.ready
            .push_back(data("resync", &ResyncEvent { missed }));
    }

    fn on_inventory(&mut self, change: Change) {
        let generation = change.generation;
        let in_scope = match &change.event {
            InventoryEvent::VmAdded { vm } | InventoryEvent::VmRemoved { vm } => {
                self.scope.vm_matches(vm)
            }
            InventoryEvent::VmChanged { before, after } => {
                self.scope.vm_matches(before) || self.scope.vm_matches(after)
            }
            InventoryEvent::HostConnected { host }
            | InventoryEvent::HostDisconnected { host, .. }
            | InventoryEvent::HostRemoved { host } => self.scope.host_only(host),
            _ => false,
        };
        if !in_scope {
            return;
        }
        if self.coalescer.add(generation, &change.event) {
            if self.coalescer.len() > MAX_PENDING_VMS {
                let missed = self.coalescer.len() as u64;
                self.coalescer.clear();
                self.resync(missed);
            } else if self.due.is_none() {
                self.due = Some(Instant::now() + COALESCE_WINDOW);
            }
            return;
        }
        // A host event: what came before it goes first.
        self.flush();
        let host_event = |host: &str| HostEvent {
            generation,
            host: host.to_owned(),
        };
        let event = match change.event {
            InventoryEvent::HostConnected { host } => data("host_connected", &host_event(&host)),
            InventoryEvent::HostDisconnected { host, error } => data(
                "host_disconnected",
                &HostDisconnectedEvent {
                    generation,
                    host: host.to_string(),
                    error,
                },
            ),
            InventoryEvent::HostRemoved { host } => data("host_removed", &host_event(&host)),
            _ => return,
        };
        self.ready.push_back(event);
    }

    /// The next event to send; `None` ends the stream.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some(event);
            }
            let stopping = self.state.jobs.stopping();
            let due = self.due;
            tokio::select! {
                // The server is shutting down: end the stream so it does not hold the exit.
                () = stopping.cancelled() => return None,
                change = self.inventory.recv() => match change {
                    None => return None,
                    Some(Notification::Change(change)) => self.on_inventory(change),
                    Some(Notification::Lagged { missed }) => self.resync(missed),
                    Some(_) => {}
                },
                notice = self.jobs.recv() => match notice {
                    Ok(notice) => {
                        if self.scope.job_matches(&notice) {
                            self.ready.push_back(data("job", &notice));
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => self.resync(missed),
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                () = sleep_until(due), if due.is_some() => self.flush(),
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(deadline) = deadline {
        tokio::time::sleep_until(deadline).await;
    }
}

/// `GET /api/v1/events`.
#[utoipa::path(get, path = "/api/v1/events", tag = "events", operation_id = "events",
    summary = "Live inventory events",
    description = "Server-Sent Events. `hello` first, then `vm_added`, `vm_changed`, \
        `vm_removed`, `host_connected`, `host_disconnected`, `host_removed`, `resync` (events \
        were missed: reload everything) and `job` (a job's status changed). VM events are \
        coalesced per VM over 250 ms: one event per VM and window, its net change; \
        `vm_changed` carries `id`, `name`, `host` and only the fields that changed. `host` \
        and `vm_id` narrow the stream to one host or one VM (its VM, host and job events). \
        Keep-alive comments every 15 s.",
    params(EventsQuery),
    responses(
        (status = 200, description = "An endless event stream", body = String,
            content_type = "text/event-stream"),
        (status = 400, description = "`bad_query`: a query parameter is unusable or unknown \
            (`field` names it)", body = crate::error::ErrorBody),
    ))]
pub async fn stream(
    State(state): State<AppState>,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>> + Send>> {
    let Query(query) = query.map_err(|e| ApiError::bad_query("query", e.body_text()))?;
    let scope = Scope::of(query)?;
    // Subscribe before reading the generation, so no change falls between the two.
    let inventory = state.inventory.subscribe();
    let jobs = state.jobs.subscribe();
    let generation = state.inventory.snapshot().generation();
    let mut ready = VecDeque::new();
    ready.push_back(data("hello", &HelloEvent { generation }));
    let start = StreamState {
        state,
        scope,
        inventory,
        jobs,
        coalescer: Coalescer::default(),
        due: None,
        ready,
    };
    let events = futures::stream::unfold(start, |mut s| async move {
        let event = s.next().await?;
        Some((Ok(event), s))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use aetherv_hyperv::ops::Vm;

    fn vm(id: u128, name: &str, state: u32) -> Arc<InventoryVm> {
        let vm: Vm = serde_json::from_value(serde_json::json!({
            "id": VmId(uuid::Uuid::from_u128(id)).to_string(),
            "name": name,
            "state": state,
        }))
        .unwrap();
        Arc::new(InventoryVm {
            vm,
            host: "hv01".into(),
            stale: false,
        })
    }

    #[test]
    fn a_window_yields_one_net_change_per_vm() {
        let mut c = Coalescer::default();
        let a0 = vm(1, "a", 3);
        let a1 = vm(1, "a", 10);
        let a2 = vm(1, "a", 2);
        let b = vm(2, "b", 3);
        let d = vm(3, "d", 3);
        let d1 = vm(3, "d", 2);
        c.add(
            1,
            &InventoryEvent::VmChanged {
                before: a0.clone(),
                after: a1.clone(),
            },
        );
        c.add(2, &InventoryEvent::VmAdded { vm: b.clone() });
        c.add(
            3,
            &InventoryEvent::VmChanged {
                before: a1,
                after: a2.clone(),
            },
        );
        c.add(
            4,
            &InventoryEvent::VmChanged {
                before: d.clone(),
                after: d1.clone(),
            },
        );
        c.add(5, &InventoryEvent::VmRemoved { vm: d1 });
        let e = vm(4, "e", 3);
        c.add(6, &InventoryEvent::VmAdded { vm: e.clone() });
        c.add(7, &InventoryEvent::VmRemoved { vm: e });
        assert!(!c.add(
            8,
            &InventoryEvent::HostRemoved {
                host: "hv09".into()
            }
        ));
        assert_eq!(
            c.drain(),
            vec![
                (3, Net::Changed(a0, a2)),
                (2, Net::Added(b)),
                (5, Net::Removed(d)),
            ]
        );
        assert!(c.is_empty());
    }
}
