//! Host maintenance as a Hyper-V host and its failover cluster see it: the state file
//! `maintenance.json` in the install directory (kept in the host's [`crate::deploy`] file
//! system, like any file a script writes there), and the cluster node state.
//!
//! Failover clustering rules the simulator enforces:
//! - `Suspend-ClusterNode -Drain` pauses the node and moves each of its cluster roles (VMs with
//!   `clustered` set) to the Up node of the same cluster with the most memory available that
//!   can hold it (a running VM needs its assigned memory there); a role that fits nowhere
//!   stays and the drain status is `Failed`, the node stays paused.
//! - A paused node accepts no role: a clustered VM cannot be moved to it.
//! - `Resume-ClusterNode -Failback Immediate` moves the roles drained from the node back (where
//!   they still fit); `NoFailback` leaves them where they are.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use uuid::Uuid;

use crate::model::holds_memory;
use crate::scripts::ScriptContext;
use crate::scripts::ops::{fail, invalid, run};
use crate::state::SimState;
use aetherv_hyperv::protocol::ScriptResult;

/// The name of the state file in the install directory.
pub const STATE_FILE: &str = "maintenance.json";

/// The failover cluster's node states and drain memory.
#[derive(Debug, Clone, Default)]
pub struct ClusterNodes {
    /// Lowercase names of paused nodes.
    paused: BTreeSet<String>,
    /// Drain status per lowercase node name (`InProgress` is never observable: a drain here
    /// completes within one script run).
    drain_status: BTreeMap<String, &'static str>,
    /// Roles moved away by a drain: VM id → lowercase node it was drained from.
    drained_from: BTreeMap<Uuid, String>,
}

impl ClusterNodes {
    /// Whether `host`'s cluster node is paused.
    pub fn is_paused(&self, host: &str) -> bool {
        self.paused.contains(&host.to_ascii_lowercase())
    }
}

fn state_path(install_directory: &str) -> String {
    format!("{}\\{STATE_FILE}", install_directory.trim_end_matches('\\'))
}

/// The state file of `host`, parsed, when it has one.
pub fn state_file(state: &SimState, host: &str, install_directory: &str) -> Option<Value> {
    let file = state
        .host_files(host)?
        .file(&state_path(install_directory))?;
    serde_json::from_slice(&file.bytes).ok()
}

/// The cluster node state of `host` (`Up` or `Paused`), `None` for a standalone host.
pub fn node_state(state: &SimState, host: &str) -> Option<&'static str> {
    let h = state.fleet().host(host)?;
    h.cluster.as_ref()?;
    Some(if state.cluster_nodes().is_paused(host) {
        "Paused"
    } else {
        "Up"
    })
}

/// Whether a VM may arrive on `destination` through the cluster: a role never lands on a
/// paused node. `None` when it may, else the refusal (Windows' wording).
pub fn refuses_role(state: &SimState, destination: &str, clustered: bool) -> Option<String> {
    (clustered && state.cluster_nodes().is_paused(destination)).then(|| {
        format!(
            "The cluster node {destination} is paused; a paused node cannot host clustered roles."
        )
    })
}

/// The memory a role needs on its new node: what it holds (at least its startup memory) when
/// it runs, nothing when it is off or saved.
fn needed_memory(v: &crate::model::SimVm) -> u64 {
    if holds_memory(v.state) {
        v.memory.assigned_bytes.max(v.memory.startup_bytes)
    } else {
        0
    }
}

/// Moves `vm` from `from` to `to` in the model (a cluster role move: storage stays).
fn move_role(state: &mut SimState, from: &str, to: &str, vm: Uuid) -> bool {
    let fleet = state.fleet_mut();
    let Some(source) = fleet.host_mut(from) else {
        return false;
    };
    let Some(index) = source.vms.iter().position(|v| v.id == vm) else {
        return false;
    };
    let moved = source.vms.remove(index);
    match fleet.host_mut(to) {
        Some(dest) => {
            dest.vms.push(moved);
            true
        }
        None => {
            if let Some(source) = fleet.host_mut(from) {
                source.vms.insert(index, moved);
            }
            false
        }
    }
}

/// The Up node of `host`'s cluster (not `host`) with the most memory available that can hold
/// `needed` bytes.
fn best_node(state: &SimState, host: &str, needed: u64) -> Option<String> {
    let fleet = state.fleet();
    let cluster = fleet.host(host)?.cluster.clone()?;
    fleet
        .hosts
        .iter()
        .filter(|h| h.cluster.as_ref() == Some(&cluster) && !h.name.eq_ignore_ascii_case(host))
        .filter(|h| !state.cluster_nodes().is_paused(&h.name) && !state.is_unreachable(&h.name))
        .filter(|h| h.memory_available_bytes() >= needed)
        .max_by(|a, b| {
            a.memory_available_bytes()
                .cmp(&b.memory_available_bytes())
                .then_with(|| b.name.cmp(&a.name))
        })
        .map(|h| h.name.clone())
}

/// `Suspend-ClusterNode -Drain`: pauses the node and moves its roles; the drain status.
fn suspend_drain(state: &mut SimState, host: &str) -> &'static str {
    let key = host.to_ascii_lowercase();
    state.cluster_nodes_mut().paused.insert(key.clone());
    let roles: Vec<(Uuid, u64)> = state
        .fleet()
        .host(host)
        .map(|h| {
            h.vms
                .iter()
                .filter(|v| v.clustered)
                .map(|v| (v.id, needed_memory(v)))
                .collect()
        })
        .unwrap_or_default();
    let mut status = "Completed";
    for (vm, needed) in roles {
        match best_node(state, host, needed) {
            Some(to) if move_role(state, host, &to, vm) => {
                state
                    .cluster_nodes_mut()
                    .drained_from
                    .insert(vm, key.clone());
            }
            _ => status = "Failed",
        }
    }
    state.cluster_nodes_mut().drain_status.insert(key, status);
    status
}

/// `Resume-ClusterNode`: unpauses the node; with failback, the roles drained from it move
/// back where they still fit.
fn resume(state: &mut SimState, host: &str, failback: bool) {
    let key = host.to_ascii_lowercase();
    state.cluster_nodes_mut().paused.remove(&key);
    state
        .cluster_nodes_mut()
        .drain_status
        .insert(key.clone(), "NotInitiated");
    let drained: Vec<Uuid> = state
        .cluster_nodes()
        .drained_from
        .iter()
        .filter(|(_, from)| **from == key)
        .map(|(vm, _)| *vm)
        .collect();
    for vm in drained {
        state.cluster_nodes_mut().drained_from.remove(&vm);
        if !failback {
            continue;
        }
        let Some((now_on, needed)) = state.fleet().hosts.iter().find_map(|h| {
            h.vms
                .iter()
                .find(|v| v.id == vm)
                .map(|v| (h.name.clone(), needed_memory(v)))
        }) else {
            continue;
        };
        let fits = state
            .fleet()
            .host(host)
            .is_some_and(|h| h.memory_available_bytes() >= needed);
        if fits && !now_on.eq_ignore_ascii_case(host) {
            move_role(state, &now_on, host, vm);
        }
    }
}

/// `Set-HostMaintenance`: `{"record":{state, ...}, "cluster_node"}`; see the script. The
/// cluster node action runs first, then the state file is written (or removed for an
/// `active` record without VMs).
pub fn set_host_maintenance(ctx: &mut ScriptContext<'_>, request: &Value) -> ScriptResult {
    let install_directory = ctx.install_directory().to_owned();
    run(|| {
        let record = request
            .get("record")
            .filter(|r| r.is_object())
            .ok_or_else(|| invalid("the request has no 'record'", "record"))?
            .clone();
        let action = request
            .get("cluster_node")
            .and_then(Value::as_str)
            .unwrap_or("none");
        if !["none", "suspend_drain", "resume", "resume_failback"].contains(&action) {
            return Err(invalid(
                format!("unknown cluster_node action {action}"),
                "cluster_node",
            ));
        }
        let state_name = record.get("state").and_then(Value::as_str).unwrap_or("");
        if ![
            "active",
            "draining",
            "maintenance",
            "resuming",
            "failed_drain",
        ]
        .contains(&state_name)
        {
            return Err(invalid(
                format!("unknown host state {state_name}"),
                "record.state",
            ));
        }
        let host = ctx.host_name().to_owned();
        let clustered = ctx.host().map(|h| h.cluster.is_some()).unwrap_or(false);
        if action != "none" && !clustered {
            return Err(fail(
                "NotClustered",
                format!("host {host} is not a failover cluster node"),
                json!({ "field": "cluster_node" }),
            ));
        }
        let now = ctx.now();
        let state = ctx.state_mut();
        match action {
            "suspend_drain" => {
                suspend_drain(state, &host);
            }
            "resume" => resume(state, &host, false),
            "resume_failback" => resume(state, &host, true),
            _ => {}
        }
        let path = state_path(&install_directory);
        let vms = record
            .get("vms")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        let written = if state_name == "active" && vms == 0 {
            state.host_files_mut(&host).remove(&path);
            Value::Null
        } else {
            let bytes = serde_json::to_vec(&record).map_err(|e| {
                fail(
                    "HostError",
                    format!("the record cannot be written: {e}"),
                    Value::Null,
                )
            })?;
            state.host_files_mut(&host).write(&path, bytes, now);
            record
        };
        let key = host.to_ascii_lowercase();
        Ok(json!({
            "record": written,
            "cluster_node_state": node_state(state, &host),
            "drain_status": clustered.then(|| {
                state.cluster_nodes().drain_status.get(&key).copied().unwrap_or("NotInitiated")
            }),
        }))
    })
}
