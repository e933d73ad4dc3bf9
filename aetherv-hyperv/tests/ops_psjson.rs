//! The PowerShell JSON parsing module against captured Windows PowerShell 5.1 output shapes
//! (`tests/fixtures/psjson/`).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use aetherv_hyperv::ops::{HostFacts, Inventory, VmId, VmState};
use aetherv_hyperv::protocol::ScriptResult;
use aetherv_hyperv::psjson::{self, Presence, PsVersion, Timestamp};
use serde::Deserialize;

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/psjson")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The parts of a raw `Get-VM | ConvertTo-Json -Depth 1` object this test reads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawVm {
    id: VmId,
    #[serde(deserialize_with = "psjson::enum_code_or_name")]
    state: VmState,
    #[serde(with = "psjson::duration")]
    uptime: Duration,
    creation_time: Timestamp,
    #[serde(default)]
    notes: Presence<String>,
    processor_count: u32,
    memory_startup: u64,
    version: PsVersion,
    /// Truncated below -Depth: the elements are type names.
    #[serde(default, deserialize_with = "psjson::one_or_many")]
    hard_drives: Vec<String>,
    #[serde(default)]
    is_clustered: Presence<bool>,
}

#[derive(Debug, Deserialize)]
struct StateOnly {
    #[serde(rename = "State", deserialize_with = "psjson::enum_code_or_name")]
    state: VmState,
}

#[test]
fn single_get_vm_object_is_a_bare_object() {
    // One VM in the pipeline: ConvertTo-Json writes the object, not a one-element array.
    let vms: Vec<RawVm> = psjson::one_or_many(&mut serde_json::Deserializer::from_str(&fixture(
        "get-vm-single-depth1.json",
    )))
    .unwrap();
    assert_eq!(vms.len(), 1);
    let vm = &vms[0];
    assert_eq!(vm.id.to_string(), "4a6f3c2e-1b7d-4e0f-9a51-3c2d8e7f6a10");
    assert_eq!(vm.state, VmState::Running);
    assert_eq!(vm.uptime, Duration::from_millis(864_012_345));
    assert_eq!(vm.creation_time.to_string(), "2025-06-01T00:00:00Z");
    assert_eq!(vm.notes, Presence::Value("aetherv-job:5d1c9f70".to_owned()));
    assert_eq!(vm.processor_count, 2);
    assert_eq!(vm.memory_startup, 4 << 30);
    assert_eq!(vm.version.to_string(), "10.0");
    assert_eq!(
        vm.hard_drives,
        ["Microsoft.HyperV.PowerShell.HardDiskDrive"]
    );
    assert_eq!(vm.is_clustered, Presence::Value(false));
}

#[test]
fn get_vm_list_with_collapsed_inner_arrays_and_nulls() {
    let vms: Vec<RawVm> = serde_json::from_str(&fixture("get-vm-list-depth1.json")).unwrap();
    assert_eq!(vms.len(), 2);
    // A one-element list property written as a bare string.
    assert_eq!(vms[0].hard_drives.len(), 1);
    assert_eq!(vms[1].hard_drives.len(), 2);
    // Transitional state by number.
    assert_eq!(vms[1].state, VmState::Saving);
    assert!(vms[1].state.is_transitional());
    // /Date(ms+hhmm)/: the milliseconds are UTC, the offset is informational.
    assert_eq!(vms[1].creation_time.to_string(), "2024-06-01T00:00:00Z");
    // null versus missing.
    assert_eq!(vms[0].notes, Presence::Value(String::new()));
    assert_eq!(vms[1].notes, Presence::Null);
    assert!(vms[1].is_clustered.is_missing());
    assert_eq!(vms[1].uptime, Duration::ZERO);
    assert_eq!(vms[1].version.to_string(), "9.0");
}

#[test]
fn enums_as_numbers_names_and_numeric_strings() {
    let states: Vec<StateOnly> = serde_json::from_str(&fixture("get-vm-state-names.json")).unwrap();
    let states: Vec<VmState> = states.into_iter().map(|s| s.state).collect();
    assert_eq!(
        states,
        [
            VmState::Running,
            VmState::Off,
            VmState::Saved,
            VmState::Paused,
            VmState::Resuming,
            VmState::Code(32790),
        ]
    );
    assert_eq!(VmState::Code(32790).code(), 32790);
    assert!(VmState::Code(32790).is_transitional());
    assert!(!VmState::FastSaved.is_transitional());
    assert!(serde_json::from_str::<StateOnly>(r#"{"State":"Sideways"}"#).is_err());
    assert!(serde_json::from_str::<StateOnly>(r#"{"State":true}"#).is_err());
}

#[test]
fn versions_as_objects_and_strings() {
    let ps: PsVersion = serde_json::from_str(&fixture("psversion-object.json")).unwrap();
    assert_eq!(ps.to_string(), "5.1.20348.2849");
    let unset: PsVersion = serde_json::from_str(&fixture("version-object-unset.json")).unwrap();
    assert_eq!(unset.to_string(), "10.0");
    assert_eq!(unset.build, None);
    let text: PsVersion = serde_json::from_str(r#""10.0.20348""#).unwrap();
    assert_eq!(text.build, Some(20348));
    assert_eq!(serde_json::to_string(&text).unwrap(), r#""10.0.20348""#);
    assert!(serde_json::from_str::<PsVersion>(r#""ten""#).is_err());
}

#[test]
fn dates_in_every_form() {
    let date: Timestamp = serde_json::from_str(&fixture("get-date.json")).unwrap();
    assert_eq!(date.to_string(), "2025-06-01T00:00:00Z");
    let dates: Vec<Timestamp> = serde_json::from_str(&fixture("dates-iso.json")).unwrap();
    let texts: Vec<String> = dates.iter().map(ToString::to_string).collect();
    assert_eq!(
        texts,
        [
            "2025-06-01T00:00:00Z",
            "2025-06-01T00:00:00Z",
            "2025-06-01T00:00:00.123Z",
            "2025-06-01T00:00:00Z",
            "2025-06-01T00:00:00Z",
        ]
    );
    assert_eq!(dates[0].unix_millis(), 1_748_736_000_000);
    assert!(serde_json::from_str::<Timestamp>(r#""not a date""#).is_err());
}

#[test]
fn time_spans_as_strings_objects_and_seconds() {
    #[derive(Deserialize)]
    struct Span(#[serde(with = "psjson::duration")] Duration);
    let spans: Vec<Span> = serde_json::from_str(&fixture("timespan-strings.json")).unwrap();
    let spans: Vec<Duration> = spans.into_iter().map(|s| s.0).collect();
    assert_eq!(
        spans,
        [
            Duration::ZERO,
            Duration::from_secs(3723),
            Duration::from_millis(864_012_345),
            Duration::from_secs(3 * 86_400 + 4 * 3600 + 5 * 60 + 6),
        ]
    );
    let seconds: Span = serde_json::from_str("12.5").unwrap();
    assert_eq!(seconds.0, Duration::from_millis(12_500));
    let parts: Span =
        serde_json::from_str(r#"{"Days":1,"Hours":2,"Minutes":0,"Seconds":5}"#).unwrap();
    assert_eq!(parts.0, Duration::from_secs(93_605));
    assert!(serde_json::from_str::<Span>(r#"{"Ticks":-1}"#).is_err());
    assert!(serde_json::from_str::<Span>(r#""-00:00:01""#).is_err());
}

#[test]
fn script_documents_with_collapsed_arrays_and_nulls() {
    let result: ScriptResult = serde_json::from_str(&fixture("inventory-one-vm.json")).unwrap();
    let inventory: Inventory = serde_json::from_value(result.data.unwrap()).unwrap();
    assert_eq!(inventory.vms.len(), 1);
    let vm = &inventory.vms[0];
    assert_eq!(vm.state, VmState::Running);
    assert_eq!(vm.notes, "");
    assert_eq!(vm.uptime, Duration::from_secs(864_012));
    assert_eq!(vm.disks.len(), 1);
    assert_eq!(vm.disks[0].disk_type, "Dynamic");
    assert!(vm.dvd_drives.is_empty());
    assert_eq!(vm.nics.len(), 1);
    assert_eq!(vm.nics[0].vlan_id, None);
    assert_eq!(vm.nics[0].ip_addresses, ["10.0.0.5"]);
    assert_eq!(vm.integration_services.len(), 2);

    let result: ScriptResult = serde_json::from_str(&fixture("host-facts.json")).unwrap();
    let facts: HostFacts = serde_json::from_value(result.data.unwrap()).unwrap();
    assert_eq!(facts.switches.len(), 1);
    assert_eq!(facts.images.len(), 2);
    assert_eq!(facts.images[1].max_size_bytes, None);
    assert!(facts.provisioning_isos.is_empty());
    assert_eq!(facts.scripts_version, None);
    assert_eq!(facts.cluster.as_deref(), Some("hvclu01"));
}

#[test]
fn equal_integration_service_lists_are_shared_and_different_ones_are_not() {
    let result: ScriptResult = serde_json::from_str(&fixture("inventory-one-vm.json")).unwrap();
    let data = result.data.unwrap();
    let first: Inventory = serde_json::from_value(data.clone()).unwrap();
    let second: Inventory = serde_json::from_value(data.clone()).unwrap();
    let (a, b) = (&first.vms[0], &second.vms[0]);
    assert_eq!(a.integration_services.len(), 2);
    assert!(
        std::sync::Arc::ptr_eq(&a.integration_services, &b.integration_services),
        "two VMs reporting the same services hold one list"
    );

    let mut changed = data;
    // The fixture's single VM comes collapsed to an object, as PowerShell writes one element.
    changed["vms"]["integration_services"][0]["enabled"] = serde_json::Value::Bool(false);
    let third: Inventory = serde_json::from_value(changed).unwrap();
    let c = &third.vms[0];
    assert!(!std::sync::Arc::ptr_eq(
        &a.integration_services,
        &c.integration_services
    ));
    assert_ne!(a.integration_services, c.integration_services);
    assert!(!c.integration_services[0].enabled);
}

#[test]
fn arrays_wrapped_with_count() {
    // Windows PowerShell 5.1 with extended System.Array type data.
    let result: ScriptResult = serde_json::from_str(&fixture("array-with-count.json")).unwrap();
    let inventory: Inventory = serde_json::from_value(result.data.unwrap()).unwrap();
    assert!(inventory.vms.is_empty());
    #[derive(Deserialize)]
    struct Names {
        #[serde(deserialize_with = "psjson::one_or_many")]
        names: Vec<String>,
    }
    let names: Names = serde_json::from_str(r#"{"names":{"value":["a","b"],"Count":2}}"#).unwrap();
    assert_eq!(names.names, ["a", "b"]);
}

#[test]
fn failure_documents_carry_code_and_message() {
    let result: ScriptResult = serde_json::from_str(&fixture("failure-details.json")).unwrap();
    assert!(!result.ok);
    let failure = result.error.unwrap();
    assert_eq!(failure.code, "InvalidVmState");
    assert!(failure.message.contains("web-01"));
}
