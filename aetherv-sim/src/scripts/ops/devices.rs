//! `Update-VmCheckpoint` and `Update-VmNetworkAdapter`: the requests of
//! [`aetherv_hyperv::ops::CheckpointChange`] and [`aetherv_hyperv::ops::NicChange`] applied to
//! the model with Hyper-V's rules ([`crate::devices`]).

use serde_json::{Value, json};
use uuid::Uuid;

use super::{
    ScriptContext, Step, fail, from_error, invalid, run, state_details, str_field, vm_by_id,
};
use crate::devices::adapter_guid;
use crate::model::{PowerAction, SimVm, VmState};
use crate::scripts::{checkpoint_json, nic_json};
use aetherv_hyperv::protocol::ScriptResult;

fn guid_field(request: &Value, name: &str) -> Step<Uuid> {
    let raw = str_field(request, name)?;
    Uuid::parse_str(raw.trim().trim_matches(['{', '}']))
        .map_err(|_| invalid(format!("the {name} id is not a GUID"), name))
}

fn bool_field(request: &Value, name: &str) -> bool {
    request.get(name).and_then(Value::as_bool).unwrap_or(false)
}

fn checkpoint_of(vm: &SimVm, id: Uuid) -> Step<()> {
    if vm.checkpoints.get(id).is_some() {
        Ok(())
    } else {
        Err(fail(
            "CheckpointNotFound",
            format!("VM {} has no checkpoint {id}", vm.name),
            json!({ "vm": vm.id.to_string(), "checkpoint": id.to_string() }),
        ))
    }
}

/// `Update-VmCheckpoint`: `{"id","action":"create|apply|rename|remove",…}`.
pub fn update_vm_checkpoint(ctx: &mut ScriptContext<'_>, request: &Value) -> ScriptResult {
    run(|| {
        let (host, vm) = vm_by_id(ctx, request)?;
        let id = vm.id.to_string();
        let now = ctx.now();
        let action = str_field(request, "action")?;
        let mut checkpoint = None;
        let mut removed = Vec::new();
        match action {
            "create" => {
                let name = str_field(request, "name")?;
                let created = ctx
                    .state_mut()
                    .fleet_mut()
                    .create_checkpoint(&host, &id, name, now)
                    .map_err(|e| from_error(&e))?;
                checkpoint = Some(created);
            }
            "apply" => {
                let target = guid_field(request, "checkpoint")?;
                checkpoint_of(&vm, target)?;
                if !matches!(vm.state, VmState::Off | VmState::Saved) {
                    if !bool_field(request, "turn_off") {
                        return Err(fail(
                            "InvalidVmState",
                            format!(
                                "a checkpoint applies only to a VM that is Off or Saved; VM {} is {}",
                                vm.name,
                                vm.state.name()
                            ),
                            state_details(&vm),
                        ));
                    }
                    ctx.state_mut()
                        .power(&host, &id, PowerAction::TurnOff, now)
                        .map_err(|e| from_error(&e))?;
                }
                ctx.state_mut()
                    .fleet_mut()
                    .apply_checkpoint(&host, &id, target, now)
                    .map_err(|e| from_error(&e))?;
                checkpoint = Some(target);
            }
            "rename" => {
                let target = guid_field(request, "checkpoint")?;
                checkpoint_of(&vm, target)?;
                let name = str_field(request, "name")?;
                ctx.state_mut()
                    .fleet_mut()
                    .rename_checkpoint(&host, &id, target, name)
                    .map_err(|e| from_error(&e))?;
                checkpoint = Some(target);
            }
            "remove" => {
                let target = guid_field(request, "checkpoint")?;
                checkpoint_of(&vm, target)?;
                removed = ctx
                    .state_mut()
                    .fleet_mut()
                    .remove_checkpoint(&host, &id, target, bool_field(request, "subtree"), now)
                    .map_err(|e| from_error(&e))?;
            }
            other => {
                return Err(invalid(
                    format!("unknown action {other}; create, apply, rename or remove"),
                    "action",
                ));
            }
        }
        let after = ctx
            .state()
            .fleet()
            .vm(&host, &id)
            .map_err(|e| from_error(&e))?;
        let shape = checkpoint
            .and_then(|c| after.checkpoints.get(c))
            .map(checkpoint_json);
        Ok(json!({
            "id": id,
            "checkpoint": shape,
            "removed": removed.iter().map(Uuid::to_string).collect::<Vec<_>>(),
            "state": after.state.code(),
            "merging": after.checkpoints.merge_percent(now).is_some(),
        }))
    })
}

/// Applies the `settings` object of a network adapter request.
fn apply_settings(
    ctx: &mut ScriptContext<'_>,
    host: &str,
    vm: &str,
    adapter: Uuid,
    settings: &Value,
) -> Step<()> {
    let fleet = ctx.state_mut().fleet_mut();
    if let Some(switch) = settings.get("switch_name").and_then(Value::as_str) {
        let known = fleet.host(host).is_some_and(|h| {
            h.switches
                .iter()
                .any(|s| s.name.eq_ignore_ascii_case(switch))
        });
        if !known {
            return Err(fail(
                "SwitchNotFound",
                format!("host {host} has no virtual switch named {switch:?}"),
                json!({ "field": "switch_name", "switch": switch }),
            ));
        }
    }
    if let Some(mac) = settings.get("mac").filter(|m| !m.is_null()) {
        fleet
            .check_mac_change(host, vm)
            .map_err(|e| from_error(&e))?;
        let mode = mac.get("mode").and_then(Value::as_str).unwrap_or_default();
        let nic = fleet
            .network_adapter_mut(host, vm, adapter)
            .map_err(|e| from_error(&e))?;
        match mode {
            "dynamic" => nic.dynamic_mac = true,
            "static" => {
                let address = mac
                    .get("address")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                match aetherv_hyperv::ops::normalize_mac(address) {
                    Ok(normal) => {
                        nic.dynamic_mac = false;
                        nic.mac_address = normal;
                    }
                    Err(e) => return Err(invalid(e, "mac")),
                }
            }
            _ => return Err(invalid("mac mode must be dynamic or static", "mac")),
        }
    }
    let nic = fleet
        .network_adapter_mut(host, vm, adapter)
        .map_err(|e| from_error(&e))?;
    if let Some(switch) = settings.get("switch_name").and_then(Value::as_str) {
        nic.switch_name = Some(switch.to_owned());
    }
    if let Some(vlan) = settings.get("vlan_id") {
        nic.vlan_id = match vlan {
            Value::Null => None,
            v => match v.as_u64().and_then(|n| u16::try_from(n).ok()) {
                Some(id) if (1..=4094).contains(&id) => Some(id),
                _ => return Err(invalid("the VLAN id must be within 1..=4094", "vlan_id")),
            },
        };
    }
    if let Some(b) = settings.get("mac_spoofing").and_then(Value::as_bool) {
        nic.mac_spoofing = b;
    }
    if let Some(b) = settings.get("dhcp_guard").and_then(Value::as_bool) {
        nic.dhcp_guard = b;
    }
    if let Some(b) = settings.get("router_guard").and_then(Value::as_bool) {
        nic.router_guard = b;
    }
    if let Some(bandwidth) = settings.get("bandwidth").filter(|b| !b.is_null()) {
        let max = bandwidth
            .get("maximum_bps")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let min = bandwidth
            .get("minimum_bps")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        if max != 0 && min > max {
            return Err(invalid(
                "the minimum bandwidth must not exceed the maximum",
                "bandwidth",
            ));
        }
        nic.maximum_bandwidth_bps = max;
        nic.minimum_bandwidth_bps = min;
    }
    Ok(())
}

fn adapter_json(ctx: &ScriptContext<'_>, host: &str, vm: &str, adapter: Uuid) -> Step<Value> {
    let v = ctx
        .state()
        .fleet()
        .vm(host, vm)
        .map_err(|e| from_error(&e))?;
    v.nics
        .iter()
        .find(|n| adapter_guid(n) == Some(adapter))
        .map(nic_json)
        .ok_or_else(|| {
            fail(
                "AdapterNotFound",
                format!("VM {} has no network adapter {adapter}", v.name),
                json!({ "vm": vm, "adapter": adapter.to_string() }),
            )
        })
}

/// `Update-VmNetworkAdapter`: `{"id","action":"add|set|remove",…}`.
pub fn update_vm_network_adapter(ctx: &mut ScriptContext<'_>, request: &Value) -> ScriptResult {
    run(|| {
        let (host, vm) = vm_by_id(ctx, request)?;
        let id = vm.id.to_string();
        let settings = request.get("settings").cloned().unwrap_or(Value::Null);
        match str_field(request, "action")? {
            "add" => {
                let name = request
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let legacy = bool_field(request, "legacy");
                let adapter = ctx
                    .state_mut()
                    .fleet_mut()
                    .add_network_adapter(&host, &id, name, legacy)
                    .map_err(|e| from_error(&e))?;
                if let Err(failure) = apply_settings(ctx, &host, &id, adapter, &settings) {
                    // The script removes the adapter it added when its settings fail.
                    if let Ok(v) = ctx.state_mut().fleet_mut().vm_mut(&host, &id) {
                        v.nics.retain(|n| adapter_guid(n) != Some(adapter));
                    }
                    return Err(failure);
                }
                Ok(json!({
                    "id": id,
                    "adapter": adapter_json(ctx, &host, &id, adapter)?,
                    "removed": null,
                }))
            }
            "set" => {
                let adapter = guid_field(request, "adapter")?;
                adapter_json(ctx, &host, &id, adapter)?;
                apply_settings(ctx, &host, &id, adapter, &settings)?;
                Ok(json!({
                    "id": id,
                    "adapter": adapter_json(ctx, &host, &id, adapter)?,
                    "removed": null,
                }))
            }
            "remove" => {
                let adapter = guid_field(request, "adapter")?;
                adapter_json(ctx, &host, &id, adapter)?;
                ctx.state_mut()
                    .fleet_mut()
                    .remove_network_adapter(&host, &id, adapter)
                    .map_err(|e| from_error(&e))?;
                Ok(json!({ "id": id, "adapter": null, "removed": adapter.to_string() }))
            }
            other => Err(invalid(
                format!("unknown action {other}; add, set or remove"),
                "action",
            )),
        }
    })
}
