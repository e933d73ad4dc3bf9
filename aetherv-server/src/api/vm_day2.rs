//! What the day-2 routes (edit, disks, console) share: finding the VM a path names and
//! turning one of Hyper-V's rules ([`RuleViolation`]) into a 409 whose code names the rule.

use std::sync::Arc;

use aetherv_hyperv::ops::RuleViolation;
use aetherv_inventory::InventoryVm;

use super::inventory::vm_id;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::state::AppState;

/// The VM `id` names: known, and its host answering (a 409 `host_disconnected` otherwise).
pub fn live_vm(state: &AppState, id: &str) -> ApiResult<Arc<InventoryVm>> {
    let vm_id = vm_id(id)?;
    let snapshot = state.inventory.snapshot();
    let vm = snapshot
        .vm(vm_id)
        .ok_or_else(|| ApiError::not_found("VM", id))?;
    if vm.stale {
        return Err(ApiError::conflict(
            ErrorCode::HostDisconnected,
            format!("host {} is disconnected; its inventory is stale", vm.host),
        ));
    }
    Ok(Arc::clone(vm))
}

/// The 409 for a broken rule: the code names the rule, the message says what and why.
pub fn rule_error(rule: &RuleViolation) -> ApiError {
    let code = match rule {
        RuleViolation::RequiresOff { .. } => ErrorCode::RequiresOff,
        RuleViolation::MemoryOutsideDynamicRange { .. } => ErrorCode::MemoryOutsideDynamicRange,
        RuleViolation::MemoryRangeNarrowed { .. } => ErrorCode::MemoryRangeNarrowed,
        RuleViolation::Generation1Firmware { .. } => ErrorCode::Generation1Firmware,
        RuleViolation::DiskShrink { .. } => ErrorCode::DiskShrink,
        RuleViolation::IdeDiskRunning { .. } => ErrorCode::IdeDiskRunning,
        RuleViolation::OnlineResizeNeedsVhdx { .. } => ErrorCode::OnlineResizeNeedsVhdx,
        RuleViolation::SharedDisk { .. } => ErrorCode::SharedDisk,
        RuleViolation::LastBootDisk { .. } => ErrorCode::LastBootDisk,
        RuleViolation::NoFreeScsiSlot { .. } => ErrorCode::NoFreeScsiSlot,
        _ => ErrorCode::InvalidState,
    };
    ApiError::conflict(code, rule.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_code_is_the_api_code() {
        let rule = RuleViolation::LastBootDisk {
            vm: "web-01".to_owned(),
            disk: "scsi-0-0".parse().unwrap(),
        };
        let error = rule_error(&rule);
        assert_eq!(error.code.to_string(), rule.code());
        assert!(error.message.contains("force"), "{}", error.message);
        let rule = RuleViolation::DiskShrink {
            vm: "web-01".to_owned(),
            disk: "scsi-0-1".parse().unwrap(),
            current: 20,
            requested: 10,
        };
        assert_eq!(rule_error(&rule).code.to_string(), rule.code());
    }
}
