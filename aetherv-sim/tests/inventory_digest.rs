//! The simulated `Get-Inventory` digest: a host remembers it between refreshes and forgets it
//! on any change to the fleet, so an unchanged host answers `since` without building its VMs'
//! documents and a changed one never answers with a stale digest. The answer written as text
//! straight from the model is the JSON-tree answer.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime};

use aetherv_sim::devices::Merge;
use aetherv_sim::model::{PowerAction, VmState};
use aetherv_sim::scripts::{inventory, inventory_output};
use aetherv_sim::{FleetSpec, KeySource, ScriptContext, ScriptRegistry, SimState};
use serde_json::{Value, json};

const HOST: &str = "hv01";

fn state() -> SimState {
    let spec = FleetSpec {
        hosts: 1,
        vms_per_host: 12,
        clusters: 0,
        seed: 5,
        ..FleetSpec::default()
    };
    SimState::new(
        aetherv_sim::Fleet::generate(spec).unwrap(),
        KeySource::Generate,
    )
}

/// `Get-Inventory` with `request` at `now`: the answer's data.
fn run(state: &mut SimState, request: &Value, now: SystemTime) -> Value {
    let result = inventory(&mut ScriptContext::new(state, HOST, now), request);
    assert!(result.ok, "{:?}", result.error);
    result.data.unwrap()
}

fn digest(answer: &Value) -> String {
    answer["digest"].as_str().unwrap().to_owned()
}

#[test]
fn an_unchanged_host_answers_from_its_remembered_digest() {
    let mut state = state();
    let now = SystemTime::now();
    let full = run(&mut state, &json!({}), now);
    let d = digest(&full);
    assert_eq!(full["vms"].as_array().unwrap().len(), 12);
    assert_eq!(state.cached_digest(HOST), Some(d.as_str()));

    let later = now + Duration::from_secs(3600);
    let again = run(&mut state, &json!({ "since": d }), later);
    assert_eq!(again["unchanged"], true);
    assert_eq!(again["vms"], json!([]));
    assert_eq!(digest(&again), d);

    // The remembered digest is the one the host computes afresh at that time.
    let mut fresh = self::state();
    assert_eq!(fresh.cached_digest(HOST), None);
    assert_eq!(digest(&run(&mut fresh, &json!({}), later)), d);

    // An older digest still gets the whole list.
    let stale = run(&mut state, &json!({ "since": "0".repeat(64) }), later);
    assert_eq!(stale["unchanged"], false);
    assert_eq!(stale["vms"].as_array().unwrap().len(), 12);
}

#[test]
fn every_change_to_the_fleet_forgets_the_digest() {
    let mut state = state();
    let now = SystemTime::now();
    let d0 = digest(&run(&mut state, &json!({}), now));

    // Through the state's own operations.
    let off = state
        .fleet()
        .host(HOST)
        .unwrap()
        .vms
        .iter()
        .find(|v| v.state == VmState::Off)
        .unwrap()
        .name
        .clone();
    state.power(HOST, &off, PowerAction::Start, now).unwrap();
    assert_eq!(state.cached_digest(HOST), None);
    let changed = run(
        &mut state,
        &json!({ "since": d0 }),
        now + Duration::from_secs(1),
    );
    assert_eq!(changed["unchanged"], false);
    let d1 = digest(&changed);
    assert_ne!(d1, d0);

    // Through plain mutable access to the fleet, even for a field only the document shows.
    let name = state.fleet().host(HOST).unwrap().vms[0].name.clone();
    state.fleet_mut().vm_mut(HOST, &name).unwrap().notes = "changed by hand".into();
    assert_eq!(state.cached_digest(HOST), None);
    let changed = run(
        &mut state,
        &json!({ "since": d1 }),
        now + Duration::from_secs(2),
    );
    assert_eq!(changed["unchanged"], false);
    assert_ne!(digest(&changed), d1);
}

#[test]
fn a_digest_that_time_changes_is_never_remembered() {
    let mut state = state();
    let now = SystemTime::now();
    let name = state.fleet().host(HOST).unwrap().vms[0].name.clone();
    state
        .fleet_mut()
        .vm_mut(HOST, &name)
        .unwrap()
        .checkpoints
        .merge = Some(Merge {
        started: now,
        duration: Duration::from_secs(100),
    });
    let during = run(&mut state, &json!({}), now + Duration::from_secs(10));
    assert_eq!(state.cached_digest(HOST), None);
    // The merge advanced: the same VMs, another digest.
    let later = run(
        &mut state,
        &json!({ "since": digest(&during) }),
        now + Duration::from_secs(50),
    );
    assert_eq!(later["unchanged"], false);
    assert_ne!(digest(&later), digest(&during));
    // Once the merge is over, the digest holds still and is remembered.
    let after = run(&mut state, &json!({}), now + Duration::from_secs(200));
    assert_eq!(state.cached_digest(HOST), Some(digest(&after).as_str()));
}

#[test]
fn the_answer_written_as_text_is_the_tree_answer() {
    let mut state = state();
    let now = SystemTime::now();
    let host = state.fleet().host(HOST).unwrap();
    let (first, second) = (host.vms[0].name.clone(), host.vms[1].name.clone());
    // Every part of a document: checkpoints (one with a parent) and a merge in progress.
    state
        .fleet_mut()
        .create_checkpoint(HOST, &first, "before", now)
        .unwrap();
    state
        .fleet_mut()
        .create_checkpoint(HOST, &first, "after", now)
        .unwrap();
    state
        .fleet_mut()
        .vm_mut(HOST, &second)
        .unwrap()
        .checkpoints
        .merge = Some(Merge {
        started: now,
        duration: Duration::from_secs(100),
    });
    let at = now + Duration::from_secs(30);
    let whole = run(&mut state, &json!({}), at);
    let documents = whole["vms"].as_array().unwrap();
    // Ids are hyphenated lowercase text, as PowerShell's `[guid]` prints them.
    let ids: Vec<String> = state
        .fleet()
        .host(HOST)
        .unwrap()
        .vms
        .iter()
        .map(|vm| vm.id.to_string())
        .collect();
    assert!(
        documents
            .iter()
            .all(|vm| ids.iter().any(|id| vm["id"] == id.as_str()))
    );
    assert!(
        documents
            .iter()
            .any(|vm| vm["checkpoints"][1]["parent_id"].is_string())
    );
    assert!(documents.iter().any(|vm| vm["merge_percent"].is_number()));
    assert!(documents.iter().any(|vm| vm["dvd_drives"][0].is_object()));
    assert!(
        documents
            .iter()
            .any(|vm| vm["network_adapters"][0]["mac_address"].is_string())
    );
    let unchanged = state.cached_digest(HOST).map(str::to_owned);

    let registry = ScriptRegistry::builtin();
    let mut requests = vec![
        json!({}),
        json!({ "since": "an older digest" }),
        json!({ "since": digest(&whole) }),
        json!({ "vm": first }),
        json!({ "vm": "no such VM" }),
    ];
    requests.extend(unchanged.map(|d| json!({ "since": d })));
    for request in &requests {
        for host in [HOST, "no-such-host"] {
            let tree = inventory(&mut ScriptContext::new(&mut state, host, at), request);
            let text = inventory_output(&mut ScriptContext::new(&mut state, host, at), request);
            assert_eq!(text.ok, tree.ok, "{request}");
            let read = aetherv_hyperv::protocol::parse_result("Inventory", &text.stdout).unwrap();
            assert_eq!(read, tree, "{request} on {host}");
            // The registry's emulations print the same (Get-Inventory and its old name).
            for script in ["Get-Inventory", "Inventory"] {
                let emulation = registry.get(script).unwrap();
                let printed =
                    emulation.output(&mut ScriptContext::new(&mut state, host, at), request);
                let read = aetherv_hyperv::protocol::parse_result(script, &printed.stdout).unwrap();
                assert_eq!(read, tree, "{script} {request} on {host}");
            }
        }
    }
}
