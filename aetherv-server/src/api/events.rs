//! `GET /api/v1/events`: inventory changes and job status changes as Server-Sent Events.

use std::convert::Infallible;
use std::time::Duration;

use aetherv_inventory::InventoryVm;
use aetherv_inventory::store::{Event as Change, Notification};
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::Serialize;
use tokio::sync::broadcast;

use super::views::{
    self, HelloEvent, HostDisconnectedEvent, HostEvent, ResyncEvent, VmEvent, VmRemovedEvent,
};
use crate::jobs::JobNotice;
use crate::state::AppState;

fn data(name: &str, value: &impl Serialize) -> Event {
    Event::default()
        .event(name)
        .data(serde_json::to_string(value).unwrap_or_default())
}

/// `GET /api/v1/events`.
#[utoipa::path(get, path = "/api/v1/events", tag = "events", operation_id = "events",
    summary = "Live inventory events",
    description = "Server-Sent Events. `hello` first, then `vm_added`, `vm_changed`, \
        `vm_removed`, `host_connected`, `host_disconnected`, `host_removed`, `resync` (events \
        were missed: reload everything) and `job` (a job's status changed). Keep-alive comments \
        every 15 s.",
    responses((status = 200, description = "An endless event stream", body = String,
        content_type = "text/event-stream")))]
pub async fn stream(
    State(state): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>> + Send> {
    // Subscribe before reading the generation, so no change falls between the two.
    let inventory = state.inventory.subscribe();
    let jobs = state.jobs.subscribe();
    let generation = state.inventory.snapshot().generation();
    let hello = data("hello", &HelloEvent { generation });
    let start = (state, inventory, jobs, Some(hello));
    let events = futures::stream::unfold(
        start,
        |(state, mut inventory, mut jobs, hello)| async move {
            if let Some(hello) = hello {
                return Some((Ok(hello), (state, inventory, jobs, None)));
            }
            loop {
                let stopping = state.jobs.stopping();
                let event = tokio::select! {
                    // The server is shutting down: end the stream so it does not hold the exit.
                    () = stopping.cancelled() => return None,
                    change = inventory.recv() => match change {
                        None => return None,
                        Some(n) => inventory_event(&state, n),
                    },
                    notice = jobs.recv() => match notice {
                        Ok(notice) => Some(job_event(&notice)),
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            Some(data("resync", &ResyncEvent { missed }))
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    },
                };
                if let Some(event) = event {
                    return Some((Ok(event), (state, inventory, jobs, None)));
                }
            }
        },
    );
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

fn job_event(notice: &JobNotice) -> Event {
    data("job", notice)
}

fn inventory_event(state: &AppState, notification: Notification) -> Option<Event> {
    let change = match notification {
        Notification::Change(change) => change,
        Notification::Lagged { missed } => return Some(data("resync", &ResyncEvent { missed })),
        _ => return None,
    };
    let generation = change.generation;
    let host_event = |host: &str| HostEvent {
        generation,
        host: host.to_owned(),
    };
    Some(match change.event {
        Change::VmAdded { vm } => data("vm_added", &vm_data(state, generation, &vm)),
        Change::VmChanged { after, .. } => data("vm_changed", &vm_data(state, generation, &after)),
        Change::VmRemoved { vm } => data(
            "vm_removed",
            &VmRemovedEvent {
                generation,
                id: vm.vm.id,
                host: vm.host.to_string(),
            },
        ),
        Change::HostConnected { host } => data("host_connected", &host_event(&host)),
        Change::HostDisconnected { host, error } => data(
            "host_disconnected",
            &HostDisconnectedEvent {
                generation,
                host: host.to_string(),
                error,
            },
        ),
        Change::HostRemoved { host } => data("host_removed", &host_event(&host)),
        _ => return None,
    })
}

fn vm_data(state: &AppState, generation: u64, vm: &InventoryVm) -> VmEvent {
    let snapshot = state.inventory.snapshot();
    let busy = state
        .jobs
        .busy_job(vm.vm.id)
        .map(|j| (vm.vm.id, j))
        .into_iter()
        .collect();
    VmEvent {
        generation,
        vm: views::vm_summary(&snapshot, vm, &busy, &state.jobs),
    }
}
