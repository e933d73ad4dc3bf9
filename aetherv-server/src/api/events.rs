//! `GET /api/v1/events`: inventory changes and job status changes as Server-Sent Events.

use std::convert::Infallible;
use std::time::Duration;

use aetherv_inventory::InventoryVm;
use aetherv_inventory::store::{Event as Change, Notification};
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde_json::json;
use tokio::sync::broadcast;

use super::views;
use crate::jobs::JobNotice;
use crate::state::AppState;

/// `GET /api/v1/events`.
pub async fn stream(
    State(state): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>> + Send> {
    // Subscribe before reading the generation, so no change falls between the two.
    let inventory = state.inventory.subscribe();
    let jobs = state.jobs.subscribe();
    let generation = state.inventory.snapshot().generation();
    let hello = Event::default()
        .event("hello")
        .data(json!({ "generation": generation }).to_string());
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
                        Err(broadcast::error::RecvError::Lagged(missed)) => Some(
                            Event::default().event("resync").data(json!({ "missed": missed }).to_string()),
                        ),
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
    Event::default()
        .event("job")
        .data(serde_json::to_string(notice).unwrap_or_default())
}

fn inventory_event(state: &AppState, notification: Notification) -> Option<Event> {
    let change = match notification {
        Notification::Change(change) => change,
        Notification::Lagged { missed } => {
            return Some(
                Event::default()
                    .event("resync")
                    .data(json!({ "missed": missed }).to_string()),
            );
        }
        _ => return None,
    };
    let generation = change.generation;
    let (name, data) = match change.event {
        Change::VmAdded { vm } => ("vm_added", vm_data(state, generation, &vm)),
        Change::VmChanged { after, .. } => ("vm_changed", vm_data(state, generation, &after)),
        Change::VmRemoved { vm } => (
            "vm_removed",
            json!({ "generation": generation, "id": vm.vm.id, "host": vm.host.as_ref() }),
        ),
        Change::HostConnected { host } => (
            "host_connected",
            json!({ "generation": generation, "host": host.as_ref() }),
        ),
        Change::HostDisconnected { host, error } => (
            "host_disconnected",
            json!({ "generation": generation, "host": host.as_ref(), "error": error }),
        ),
        Change::HostRemoved { host } => (
            "host_removed",
            json!({ "generation": generation, "host": host.as_ref() }),
        ),
        _ => return None,
    };
    Some(Event::default().event(name).data(data.to_string()))
}

fn vm_data(state: &AppState, generation: u64, vm: &InventoryVm) -> serde_json::Value {
    let snapshot = state.inventory.snapshot();
    let busy = state
        .jobs
        .busy_job(vm.vm.id)
        .map(|j| (vm.vm.id, j))
        .into_iter()
        .collect();
    json!({ "generation": generation, "vm": views::vm_summary(&snapshot, vm, &busy) })
}
