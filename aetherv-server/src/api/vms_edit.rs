//! `PATCH /api/v1/vms/{id}`: changes a VM's processors, memory, notes, automatic actions,
//! Secure Boot and vTPM in one job. Hyper-V's state rules are checked before anything is
//! queued (each refusal a 409 whose code names the rule); the job checks them again against
//! the VM as the host reports it, and the host script (and the simulator) a third time.

use aetherv_hyperv::ops::{
    AutomaticStartAction, AutomaticStopAction, MAX_VM_NOTES_CHARS, VmSettingsChange,
    check_settings_change,
};
use aetherv_provision::provision::{join_notes, split_notes};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use super::views::AcceptedView;
use super::vm_day2::{live_vm, rule_error};
use super::vms::{accepted, content_type, ensure_ready, parse_json_body, submit_error};
use crate::error::{ApiError, ApiResult, ErrorBody, ErrorCode};
use crate::jobs::{JobWork, NewJob};
use crate::state::AppState;

const MIB: u64 = 1 << 20;

/// Body of `PATCH /api/v1/vms/{id}`: only the fields given change. Unknown fields are refused
/// (422 naming the field).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = VmEditRequest)]
pub struct VmEditBody {
    /// Virtual processors (1..=240; only while the VM is Off).
    #[schema(minimum = 1, maximum = 240)]
    processor_count: Option<u32>,
    /// Startup memory in bytes (a multiple of 2 MiB; a running VM only with dynamic memory,
    /// within its range).
    memory_startup_bytes: Option<u64>,
    /// Dynamic memory on or off (only while Off).
    dynamic_memory: Option<bool>,
    /// Dynamic memory minimum in bytes (running: only lower).
    memory_minimum_bytes: Option<u64>,
    /// Dynamic memory maximum in bytes (running: only higher).
    memory_maximum_bytes: Option<u64>,
    /// The VM's notes: the user's text. The project's marker line (`aetherv-provisioned:…`)
    /// is kept apart and stays.
    notes: Option<String>,
    /// `nothing`, `start_if_running` or `start`.
    #[schema(value_type = Option<String>, example = "start_if_running")]
    automatic_start_action: Option<AutomaticStartAction>,
    /// `stop` (turn off), `save` or `shutdown` (only while Off).
    #[schema(value_type = Option<String>, example = "shutdown")]
    automatic_stop_action: Option<AutomaticStopAction>,
    /// Delay before an automatic start, in seconds (up to a day).
    #[schema(maximum = 86400)]
    automatic_start_delay_seconds: Option<u32>,
    /// Secure Boot on or off (generation 2; only while Off).
    secure_boot: Option<bool>,
    /// Virtual TPM on or off (generation 2; only while Off).
    tpm_enabled: Option<bool>,
}

fn check_memory(field: &str, value: Option<u64>) -> ApiResult<()> {
    if let Some(bytes) = value
        && (bytes < 32 * MIB || !bytes.is_multiple_of(2 * MIB) || bytes > 12 << 40)
    {
        return Err(ApiError::invalid(
            field,
            format!("{bytes} bytes must be a multiple of 2 MiB (2097152) from 32 MiB to 12 TiB"),
        ));
    }
    Ok(())
}

/// `PATCH /api/v1/vms/{id}`.
#[utoipa::path(patch, path = "/api/v1/vms/{id}", tag = "jobs", operation_id = "editVm",
    summary = "Edit a VM's settings",
    description = "Queues one edit job that changes the given settings; its log shows each \
        value before and after, its result lists them. Hyper-V's rules are checked first: \
        processor count, dynamic memory on/off, Secure Boot, the vTPM and the automatic stop \
        action change only while the VM is Off (Hyper-V refuses them in Saved and Paused too); \
        a running VM's memory changes only with dynamic memory, within its range (minimum \
        only down, maximum only up). Notes, the automatic start action and its delay change \
        in any state.",
    params(("id" = String, Path, format = Uuid, description = "Hyper-V VM id")),
    request_body(content = VmEditBody, content_type = "application/json"),
    responses(
        (status = 202, description = "The job was queued", body = AcceptedView,
            headers(("Location" = String, description = "The job's URL"))),
        (status = 400, description = "`malformed_body`: the body is not JSON", body = ErrorBody),
        (status = 404, description = "`not_found`: unknown VM", body = ErrorBody),
        (status = 409, description = "`requires_off`: the setting changes only while the VM \
            is Off; `memory_outside_dynamic_range`: a running VM's startup memory outside its \
            dynamic range; `memory_range_narrowed`: a running VM's minimum raised or maximum \
            lowered; `generation1_firmware`: Secure Boot or vTPM on a generation 1 VM; \
            `vm_busy`: another job works on the VM (the message names it); \
            `host_disconnected`: the VM's host is disconnected", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over 256 KiB",
            body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: the body is not JSON",
            body = ErrorBody),
        (status = 422, description = "`invalid_field`: an unknown field, a value of the wrong \
            type or out of range, or no field at all; `field` names it", body = ErrorBody),
        (status = 503, description = "`not_ready`: the server is still starting; `queue_full`: \
            too many jobs are waiting", body = ErrorBody),
    ))]
pub async fn patch_vm(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let vm = live_vm(&state, &id)?;
    ensure_ready(&state)?;
    if let Some(hint) = content_type(&headers)?
        && !hint.to_ascii_lowercase().contains("json")
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            "send the edit as application/json",
        ));
    }
    let edit: VmEditBody = parse_json_body(&body)?;
    if let Some(count) = edit.processor_count
        && !(1..=240).contains(&count)
    {
        return Err(ApiError::invalid(
            "processor_count",
            format!("{count} is outside 1..=240"),
        ));
    }
    check_memory("memory_startup_bytes", edit.memory_startup_bytes)?;
    check_memory("memory_minimum_bytes", edit.memory_minimum_bytes)?;
    check_memory("memory_maximum_bytes", edit.memory_maximum_bytes)?;
    if let Some(delay) = edit.automatic_start_delay_seconds
        && delay > 86_400
    {
        return Err(ApiError::invalid(
            "automatic_start_delay_seconds",
            format!("{delay} s is over a day"),
        ));
    }
    let (marker, _) = split_notes(&vm.vm.notes);
    let notes = match &edit.notes {
        Some(text) => {
            if text.contains('\0') || aetherv_provision::provision::is_project_marker(text) {
                return Err(ApiError::invalid(
                    "notes",
                    "notes must not contain NUL characters or start with the project's marker",
                ));
            }
            let whole = join_notes(marker, text);
            if whole.chars().count() > MAX_VM_NOTES_CHARS {
                return Err(ApiError::invalid(
                    "notes",
                    format!(
                        "notes are limited to {MAX_VM_NOTES_CHARS} characters (with the project's marker line)"
                    ),
                ));
            }
            Some(whole)
        }
        None => None,
    };
    let v = &vm.vm;
    let change = VmSettingsChange {
        processor_count: edit.processor_count,
        memory_startup_bytes: edit.memory_startup_bytes,
        dynamic_memory: edit.dynamic_memory,
        memory_minimum_bytes: edit.memory_minimum_bytes,
        memory_maximum_bytes: edit.memory_maximum_bytes,
        notes,
        automatic_start_action: edit.automatic_start_action,
        automatic_stop_action: edit.automatic_stop_action,
        automatic_start_delay_seconds: edit.automatic_start_delay_seconds,
        secure_boot: edit.secure_boot,
        tpm_enabled: edit.tpm_enabled,
    };
    if change.is_empty() {
        return Err(ApiError::invalid(
            "body",
            "give at least one setting to change",
        ));
    }
    check_settings_change(v, &change).map_err(|rule| rule_error(&rule))?;
    // Memory bounds as they will be: minimum <= startup <= maximum with dynamic memory.
    let dynamic = edit.dynamic_memory.unwrap_or(v.dynamic_memory);
    if dynamic {
        let startup = edit.memory_startup_bytes.unwrap_or(v.memory_startup_bytes);
        let minimum = edit.memory_minimum_bytes.unwrap_or(v.memory_minimum_bytes);
        let maximum = edit.memory_maximum_bytes.unwrap_or(v.memory_maximum_bytes);
        if minimum > startup || startup > maximum {
            let field = if edit.memory_minimum_bytes.is_some() && minimum > startup {
                "memory_minimum_bytes"
            } else if edit.memory_maximum_bytes.is_some() && startup > maximum {
                "memory_maximum_bytes"
            } else {
                "memory_startup_bytes"
            };
            return Err(ApiError::invalid(
                field,
                format!(
                    "dynamic memory needs minimum <= startup <= maximum; it would be {minimum} <= {startup} <= {maximum}"
                ),
            ));
        }
    }
    let mut parameters = serde_json::to_value(&change).unwrap_or_else(|_| json!({}));
    if let Some(map) = parameters.as_object_mut() {
        // The record shows the user's notes, as given.
        if let Some(text) = &edit.notes {
            map.insert("notes".to_owned(), json!(text));
        }
        map.insert("vm_id".to_owned(), json!(v.id));
    }
    let job = state
        .jobs
        .submit(NewJob {
            requested_by: crate::audit::caller(),
            work: JobWork::Edit {
                vm: v.id,
                change: Box::new(change),
            },
            host: vm.host.to_string(),
            vm_id: Some(v.id),
            vm_name: Some(v.name.clone()),
            parameters,
        })
        .map_err(|e| submit_error(e, "id"))?;
    Ok(accepted(&job))
}
