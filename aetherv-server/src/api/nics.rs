//! `/api/v1/vms/{id}/network-adapters`: a VM's adapters (from the inventory) and jobs that
//! add, change and remove them. A named network (the provisioning networks: `HOSTS_FILE`
//! joined with the host's `hostresources` file) becomes its switch and VLAN. Hyper-V's rules
//! are checked before a job is queued, each refusal a 409 naming the rule: a legacy adapter
//! is added or removed only while the VM is Off; a generation 1 VM adds or removes adapters
//! only while Off (generation 2 hot-plugs synthetic ones); a static MAC address changes only
//! while Off; at most 8 synthetic and 4 legacy adapters. The host script and the simulator
//! enforce the same rules.

use std::sync::Arc;

use aetherv_hyperv::ops::{
    BandwidthLimits, MacSetting, NicChange, NicSettings, VmNic, VmState, adapter_guid,
    normalize_mac,
};
use aetherv_inventory::InventoryVm;
use aetherv_provision::resources::{PlacementRequest, ResolveError, resolve};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use serde::{Deserialize, Deserializer};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use super::inventory::vm_id;
use super::views::{AcceptedView, VmNicView};
use super::vms::{ensure_ready, parse_json_body, submit_vm_job};
use crate::error::{ApiError, ApiResult, ErrorBody, ErrorCode, FieldProblem};
use crate::jobs::JobWork;
use crate::state::AppState;

/// Hyper-V's limit of synthetic adapters per VM.
const MAX_SYNTHETIC: usize = 8;
/// Hyper-V's limit of legacy adapters per VM.
const MAX_LEGACY: usize = 4;

fn find_vm(state: &AppState, id: &str) -> ApiResult<Arc<InventoryVm>> {
    let vm_id = vm_id(id)?;
    state
        .inventory
        .snapshot()
        .vm(vm_id)
        .cloned()
        .ok_or_else(|| ApiError::not_found("VM", id))
}

fn target(state: &AppState, id: &str) -> ApiResult<Arc<InventoryVm>> {
    ensure_ready(state)?;
    let vm = find_vm(state, id)?;
    if vm.stale {
        return Err(ApiError::conflict(
            ErrorCode::HostDisconnected,
            format!("host {} is disconnected; its inventory is stale", vm.host),
        ));
    }
    Ok(vm)
}

fn adapter_of<'a>(vm: &'a InventoryVm, adapter: &str) -> ApiResult<(Uuid, &'a VmNic)> {
    Uuid::parse_str(adapter.trim().trim_matches(['{', '}']))
        .ok()
        .and_then(|id| {
            vm.vm
                .nics
                .iter()
                .find(|n| adapter_guid(&n.id) == Some(id))
                .map(|n| (id, n))
        })
        .ok_or_else(|| {
            ApiError::not_found(
                "network adapter",
                &format!("{adapter} of VM {}", vm.vm.name),
            )
        })
}

fn off_rule(vm: &InventoryVm, rule: &str) -> ApiResult<()> {
    if vm.vm.state == VmState::Off {
        return Ok(());
    }
    Err(ApiError::conflict(
        ErrorCode::InvalidState,
        format!("{rule}; VM {} is {}", vm.vm.name, vm.vm.state.name()),
    ))
}

/// Adding or removing an adapter of a VM that is not Off.
fn hot_plug_rule(vm: &InventoryVm, legacy: bool) -> ApiResult<()> {
    if legacy {
        off_rule(
            vm,
            "Hyper-V adds or removes a legacy network adapter only while the VM is Off",
        )
    } else if vm.vm.generation != 2 {
        off_rule(
            vm,
            "Hyper-V adds or removes network adapters of a generation 1 VM only while it is Off \
             (generation 2 VMs hot-plug synthetic adapters)",
        )
    } else {
        Ok(())
    }
}

const MAC_RULE: &str = "Hyper-V changes the MAC address of an adapter only while the VM is Off";

/// `vlan_id` in a body: absent (leave it), `null` (untagged) or a number.
fn double_option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<u16>>, D::Error> {
    Option::<u16>::deserialize(d).map(Some)
}

/// The settings fields shared by adding and changing an adapter.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NetworkAdapterRequest)]
pub struct NicBody {
    /// Adding only: the adapter's name (default `Network Adapter`).
    #[serde(default)]
    name: Option<String>,
    /// Adding only: a legacy (emulated) adapter; generation 1 only, VM Off.
    #[serde(default)]
    legacy: bool,
    /// A named network of the VM's host (switch and VLAN). Adding without one uses the
    /// host's default network, else its only External switch.
    #[serde(default)]
    network: Option<String>,
    /// Access VLAN (1-4094), overriding the network's; `null` for untagged.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<u16>, minimum = 1, maximum = 4094)]
    vlan_id: Option<Option<u16>>,
    /// `dynamic`, or a static address of 12 hex digits (separators `-`/`:` allowed); needs
    /// the VM Off.
    #[serde(default)]
    mac_address: Option<String>,
    /// MAC address spoofing.
    #[serde(default)]
    mac_spoofing: Option<bool>,
    /// DHCP guard.
    #[serde(default)]
    dhcp_guard: Option<bool>,
    /// Router guard.
    #[serde(default)]
    router_guard: Option<bool>,
    /// Bandwidth cap in bits per second (0 removes it); set together with the minimum
    /// (a missing one keeps the adapter's current value).
    #[serde(default)]
    maximum_bandwidth_bps: Option<u64>,
    /// Bandwidth reservation in bits per second (0 removes it).
    #[serde(default)]
    minimum_bandwidth_bps: Option<u64>,
}

/// Turns a body into settings for `vm` (with `current` the adapter being changed, if any).
fn settings(
    state: &AppState,
    vm: &InventoryVm,
    body: &NicBody,
    current: Option<&VmNic>,
    adding: bool,
) -> ApiResult<NicSettings> {
    let mut settings = NicSettings::default();
    if body.network.is_some() || adding {
        let snapshot = state.inventory.snapshot();
        let facts = snapshot
            .host(&vm.host)
            .and_then(|h| h.facts.clone())
            .ok_or_else(|| {
                ApiError::conflict(
                    ErrorCode::HostDisconnected,
                    format!("host {} has not reported its facts yet", vm.host),
                )
            })?;
        let configured = state
            .host_resources
            .get(&vm.host.to_ascii_lowercase())
            .cloned()
            .unwrap_or_default();
        let request = PlacementRequest {
            network: body.network.as_deref(),
            storage_class: None,
            vlan_id: None,
        };
        let placement = resolve(&configured, &facts, request, "").map_err(|e| match e {
            ResolveError::Fields(problems) => ApiError::invalid_fields(
                problems
                    .into_iter()
                    .map(|p| FieldProblem {
                        field: p.field,
                        message: p.message,
                    })
                    .collect(),
            ),
            ResolveError::HostResources(e) => ApiError::invalid(
                "network",
                format!("{e}; fix the file on the host or define the networks in HOSTS_FILE"),
            ),
        })?;
        if let Some(switch) = placement.switch_name {
            settings.switch_name = Some(switch);
            settings.vlan_id = Some(placement.vlan_id);
        } else if body.network.is_some() {
            return Err(ApiError::invalid(
                "network",
                format!("the network resolves to no switch on host {}", vm.host),
            ));
        }
    }
    if let Some(vlan) = body.vlan_id {
        if let Some(v) = vlan
            && !(1..=4094).contains(&v)
        {
            return Err(ApiError::invalid(
                "vlan_id",
                format!("VLAN {v} is outside 1..=4094 (use null for untagged)"),
            ));
        }
        settings.vlan_id = Some(vlan);
    }
    if let Some(mac) = &body.mac_address {
        let wanted = if mac.eq_ignore_ascii_case("dynamic") {
            MacSetting::Dynamic
        } else {
            MacSetting::Static(normalize_mac(mac).map_err(|e| ApiError::invalid("mac_address", e))?)
        };
        // Making a new adapter dynamic is what Hyper-V does anyway; anything else needs Off.
        if !(adding && wanted == MacSetting::Dynamic) {
            off_rule(vm, MAC_RULE)?;
        }
        settings.mac = Some(wanted);
    }
    settings.mac_spoofing = body.mac_spoofing;
    settings.dhcp_guard = body.dhcp_guard;
    settings.router_guard = body.router_guard;
    if body.maximum_bandwidth_bps.is_some() || body.minimum_bandwidth_bps.is_some() {
        let limits = BandwidthLimits {
            maximum_bps: body
                .maximum_bandwidth_bps
                .unwrap_or_else(|| current.map_or(0, |n| n.maximum_bandwidth_bps)),
            minimum_bps: body
                .minimum_bandwidth_bps
                .unwrap_or_else(|| current.map_or(0, |n| n.minimum_bandwidth_bps)),
        };
        if limits.maximum_bps != 0 && limits.minimum_bps > limits.maximum_bps {
            return Err(ApiError::invalid(
                "minimum_bandwidth_bps",
                format!(
                    "the minimum bandwidth {} bps is above the maximum {} bps",
                    limits.minimum_bps, limits.maximum_bps
                ),
            ));
        }
        settings.bandwidth = Some(limits);
    }
    Ok(settings)
}

fn submit(
    state: &AppState,
    vm: &InventoryVm,
    change: NicChange,
    parameters: serde_json::Value,
) -> ApiResult<Response> {
    submit_vm_job(
        state,
        vm,
        JobWork::NetworkAdapter {
            vm: vm.vm.id,
            change,
        },
        parameters,
    )
}

/// `GET /api/v1/vms/{id}/network-adapters`.
#[utoipa::path(get, path = "/api/v1/vms/{id}/network-adapters", tag = "network-adapters",
    operation_id = "listNetworkAdapters", summary = "A VM's network adapters",
    description = "Each adapter with its stable id, switch, VLAN, MAC (static or dynamic), \
        guards and bandwidth limits, from the inventory.",
    params(("id" = String, Path, format = Uuid, description = "Hyper-V VM id")),
    responses(
        (status = 200, description = "The adapters", body = Vec<VmNicView>),
        (status = 404, description = "`not_found`: unknown VM", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<VmNicView>>> {
    let vm = find_vm(&state, &id)?;
    Ok(Json(vm.vm.nics.iter().map(VmNicView::from).collect()))
}

/// `GET /api/v1/vms/{id}/network-adapters/{adapter_id}`.
#[utoipa::path(get, path = "/api/v1/vms/{id}/network-adapters/{adapter_id}",
    tag = "network-adapters", operation_id = "getNetworkAdapter", summary = "One adapter",
    params(
        ("id" = String, Path, format = Uuid, description = "Hyper-V VM id"),
        ("adapter_id" = String, Path, format = Uuid, description = "The adapter's id"),
    ),
    responses(
        (status = 200, description = "The adapter", body = VmNicView),
        (status = 404, description = "`not_found`: unknown VM or adapter", body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    Path((id, adapter)): Path<(String, String)>,
) -> ApiResult<Json<VmNicView>> {
    let vm = find_vm(&state, &id)?;
    let (_, nic) = adapter_of(&vm, &adapter)?;
    Ok(Json(VmNicView::from(nic)))
}

/// `POST /api/v1/vms/{id}/network-adapters`.
#[utoipa::path(post, path = "/api/v1/vms/{id}/network-adapters", tag = "network-adapters",
    operation_id = "addNetworkAdapter", summary = "Add a network adapter",
    description = "Queues a job that adds an adapter on a named network (its switch and VLAN) \
        with the given settings; the job result's `adapter_id` is the new adapter's id. If \
        the settings cannot be applied the host removes the adapter again.",
    params(("id" = String, Path, format = Uuid, description = "Hyper-V VM id")),
    request_body(content = NicBody, content_type = "application/json"),
    responses(
        (status = 202, description = "The job was queued", body = AcceptedView,
            headers(("Location" = String, description = "The job's URL"))),
        (status = 400, description = "`malformed_body`: the body is not JSON", body = ErrorBody),
        (status = 404, description = "`not_found`: unknown VM", body = ErrorBody),
        (status = 409, description = "`invalid_state`: a rule of Hyper-V refuses it in the \
            VM's state (legacy adapters and generation 1 VMs only while Off; a static MAC only \
            while Off) or the VM has Hyper-V's maximum of adapters; `vm_busy`: another job \
            works on the VM (named); `host_disconnected`", body = ErrorBody),
        (status = 422, description = "`invalid_field`: unknown network, VLAN outside 1-4094, \
            bad MAC address, minimum bandwidth above the maximum, a legacy adapter on \
            generation 2, an unusable name; `field` names it", body = ErrorBody),
        (status = 503, description = "`not_ready`; `queue_full`", body = ErrorBody),
    ))]
pub async fn add(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let vm = target(&state, &id)?;
    let request: NicBody = parse_json_body(&body)?;
    let name = request.name.clone().unwrap_or_default();
    if !name.is_empty()
        && (name.trim() != name || name.len() > 100 || name.chars().any(char::is_control))
    {
        return Err(ApiError::invalid(
            "name",
            "an adapter name is 1-100 characters without control characters or surrounding spaces",
        ));
    }
    if request.legacy && vm.vm.generation == 2 {
        return Err(ApiError::invalid(
            "legacy",
            "a generation 2 VM has no legacy network adapters",
        ));
    }
    hot_plug_rule(&vm, request.legacy)?;
    let count = vm
        .vm
        .nics
        .iter()
        .filter(|n| n.legacy == request.legacy)
        .count();
    let limit = if request.legacy {
        MAX_LEGACY
    } else {
        MAX_SYNTHETIC
    };
    if count >= limit {
        return Err(ApiError::conflict(
            ErrorCode::InvalidState,
            format!(
                "Hyper-V allows at most {limit} {} network adapters per VM; VM {} has {count}",
                if request.legacy {
                    "legacy"
                } else {
                    "synthetic"
                },
                vm.vm.name
            ),
        ));
    }
    let settings = settings(&state, &vm, &request, None, true)?;
    let parameters = json!({
        "vm_id": vm.vm.id,
        "action": "add",
        "name": name,
        "legacy": request.legacy,
        "network": request.network,
        "settings": settings,
    });
    submit(
        &state,
        &vm,
        NicChange::Add {
            name,
            legacy: request.legacy,
            settings,
        },
        parameters,
    )
}

/// `PATCH /api/v1/vms/{id}/network-adapters/{adapter_id}`.
#[utoipa::path(patch, path = "/api/v1/vms/{id}/network-adapters/{adapter_id}",
    tag = "network-adapters", operation_id = "changeNetworkAdapter",
    summary = "Change a network adapter",
    description = "Queues a job that changes the adapter's network (switch and VLAN), VLAN, \
        MAC address (static or `dynamic`), MAC spoofing, DHCP guard, router guard or \
        bandwidth limits. Only the fields given change; `name` and `legacy` are refused.",
    params(
        ("id" = String, Path, format = Uuid, description = "Hyper-V VM id"),
        ("adapter_id" = String, Path, format = Uuid, description = "The adapter's id"),
    ),
    request_body(content = NicBody, content_type = "application/json"),
    responses(
        (status = 202, description = "The job was queued", body = AcceptedView,
            headers(("Location" = String, description = "The job's URL"))),
        (status = 400, description = "`malformed_body`: the body is not JSON", body = ErrorBody),
        (status = 404, description = "`not_found`: unknown VM or adapter", body = ErrorBody),
        (status = 409, description = "`invalid_state`: a MAC address change while the VM is \
            not Off; `vm_busy`: another job works on the VM (named); `host_disconnected`",
            body = ErrorBody),
        (status = 422, description = "`invalid_field`: unknown network, VLAN outside 1-4094, \
            bad MAC address, minimum bandwidth above the maximum, `name` or `legacy` given, or \
            nothing to change; `field` names it", body = ErrorBody),
        (status = 503, description = "`not_ready`; `queue_full`", body = ErrorBody),
    ))]
pub async fn change(
    State(state): State<AppState>,
    Path((id, adapter)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    let vm = target(&state, &id)?;
    let request: NicBody = parse_json_body(&body)?;
    let (guid, nic) = adapter_of(&vm, &adapter)?;
    if request.name.is_some() {
        return Err(ApiError::invalid(
            "name",
            "an adapter is not renamed; remove it and add another",
        ));
    }
    if request.legacy {
        return Err(ApiError::invalid(
            "legacy",
            "an adapter does not change between legacy and synthetic",
        ));
    }
    let settings = settings(&state, &vm, &request, Some(nic), false)?;
    if settings.is_empty() {
        return Err(ApiError::invalid(
            "network",
            "the body changes nothing; give network, vlan_id, mac_address, mac_spoofing, \
             dhcp_guard, router_guard or a bandwidth limit",
        ));
    }
    let parameters = json!({
        "vm_id": vm.vm.id,
        "action": "change",
        "adapter_id": guid,
        "network": request.network,
        "settings": settings,
    });
    submit(
        &state,
        &vm,
        NicChange::Set {
            adapter: guid,
            settings,
        },
        parameters,
    )
}

/// `DELETE /api/v1/vms/{id}/network-adapters/{adapter_id}`.
#[utoipa::path(delete, path = "/api/v1/vms/{id}/network-adapters/{adapter_id}",
    tag = "network-adapters", operation_id = "removeNetworkAdapter",
    summary = "Remove a network adapter",
    params(
        ("id" = String, Path, format = Uuid, description = "Hyper-V VM id"),
        ("adapter_id" = String, Path, format = Uuid, description = "The adapter's id"),
    ),
    responses(
        (status = 202, description = "The job was queued", body = AcceptedView,
            headers(("Location" = String, description = "The job's URL"))),
        (status = 404, description = "`not_found`: unknown VM or adapter", body = ErrorBody),
        (status = 409, description = "`invalid_state`: a legacy adapter, or an adapter of a \
            generation 1 VM, while the VM is not Off; `vm_busy`: another job works on the VM \
            (named); `host_disconnected`", body = ErrorBody),
        (status = 503, description = "`not_ready`; `queue_full`", body = ErrorBody),
    ))]
pub async fn remove(
    State(state): State<AppState>,
    Path((id, adapter)): Path<(String, String)>,
) -> ApiResult<Response> {
    let vm = target(&state, &id)?;
    let (guid, nic) = adapter_of(&vm, &adapter)?;
    hot_plug_rule(&vm, nic.legacy)?;
    submit(
        &state,
        &vm,
        NicChange::Remove { adapter: guid },
        json!({ "vm_id": vm.vm.id, "action": "remove", "adapter_id": guid, "adapter_name": nic.name }),
    )
}
