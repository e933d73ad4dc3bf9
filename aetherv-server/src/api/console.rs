//! `GET /api/v1/vms/{id}/console`: what a person needs to open the VM's console — its host,
//! its id, the `vmconnect.exe` command line, and an RDP address once the guest reports one.

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::state::AppState;

/// How to reach a VM's console.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = VmConsole)]
pub struct ConsoleView {
    /// The Hyper-V host that runs the VM.
    pub host: String,
    /// Hyper-V VM id.
    #[schema(format = Uuid)]
    pub vm_id: String,
    /// VM name.
    pub vm_name: String,
    /// Hyper-V's Virtual Machine Connection by id (names are not unique):
    /// `vmconnect.exe <host> -G <vm id>` (usage: `vmconnect.exe [ServerName [VMName | -G VMId]
    /// [-C SnapshotName]]`).
    pub vmconnect: String,
    /// The same by name: `vmconnect.exe <host> "<vm name>"`.
    pub vmconnect_by_name: String,
    /// The first address the guest reports (IPv4 first, no link-local), for RDP or SSH; null
    /// until the guest reports one.
    pub rdp_address: Option<String>,
    /// `rdp_address` as an RDP file line (`full address:s:<address>`), when there is one.
    pub rdp_full_address: Option<String>,
}

/// Quotes an argument for a Windows command line (the VM name may hold spaces).
fn quoted(arg: &str) -> String {
    if !arg.is_empty() && !arg.contains([' ', '\t', '"']) {
        return arg.to_owned();
    }
    format!("\"{}\"", arg.replace('"', "\\\""))
}

/// The address to connect to: IPv4 before IPv6, never link-local.
fn best_address<'a>(addresses: impl Iterator<Item = &'a str> + Clone) -> Option<String> {
    let usable = |a: &&str| {
        let lower = a.to_ascii_lowercase();
        !a.is_empty() && !lower.starts_with("fe80") && !a.starts_with("169.254.")
    };
    addresses
        .clone()
        .filter(usable)
        .find(|a| a.parse::<std::net::Ipv4Addr>().is_ok())
        .or_else(|| {
            addresses
                .filter(usable)
                .find(|a| a.parse::<std::net::IpAddr>().is_ok())
        })
        .map(str::to_owned)
}

/// `GET /api/v1/vms/{id}/console`.
#[utoipa::path(get, path = "/api/v1/vms/{id}/console", tag = "inventory", operation_id = "vmConsole",
    summary = "How to open a VM's console",
    description = "The VM's host and id, the `vmconnect.exe` command line (by id, and by name) \
        and, once the guest reports an address, the address for RDP.",
    params(("id" = String, Path, format = Uuid, description = "Hyper-V VM id")),
    responses(
        (status = 200, description = "The console details", body = ConsoleView),
        (status = 404, description = "`not_found`: unknown VM", body = ErrorBody),
    ))]
pub async fn console(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ConsoleView>> {
    let vm_id = super::inventory::vm_id(&id)?;
    let snapshot = state.inventory.snapshot();
    let vm = snapshot
        .vm(vm_id)
        .ok_or_else(|| ApiError::not_found("VM", &id))?;
    let v = &vm.vm;
    let address = best_address(
        v.nics
            .iter()
            .flat_map(|n| n.ip_addresses.iter().map(String::as_str)),
    );
    Ok(Json(ConsoleView {
        host: vm.host.to_string(),
        vm_id: v.id.to_string(),
        vm_name: v.name.clone(),
        vmconnect: format!("vmconnect.exe {} -G {}", quoted(&vm.host), v.id),
        vmconnect_by_name: format!("vmconnect.exe {} {}", quoted(&vm.host), quoted(&v.name)),
        rdp_full_address: address.as_ref().map(|a| format!("full address:s:{a}")),
        rdp_address: address,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_spaces_are_quoted_and_addresses_chosen() {
        assert_eq!(quoted("web-01"), "web-01");
        assert_eq!(quoted("web 01"), "\"web 01\"");
        let addresses = ["fe80::1", "169.254.1.2", "2001:db8::5", "10.0.0.5"];
        assert_eq!(
            best_address(addresses.iter().copied()),
            Some("10.0.0.5".to_owned())
        );
        assert_eq!(
            best_address(["fe80::1", "2001:db8::5"].iter().copied()),
            Some("2001:db8::5".to_owned())
        );
        assert_eq!(best_address(["fe80::1"].iter().copied()), None);
    }
}
