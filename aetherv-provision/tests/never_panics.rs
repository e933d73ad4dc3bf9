//! Property tests: parsing and validation never panic on arbitrary JSON-ish or textual input and
//! never echo a secret. (The KVP protocol's property tests live in aetherv-kvp.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use aetherv_provision::schema::JobRequest;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

const FIELDS: &[&str] = &[
    "schema_version",
    "target_host",
    "values",
    "hyperv_host",
    "vm_name",
    "image_name",
    "gb_ram",
    "cpu_cores",
    "guest_la_uid",
    "guest_la_pw",
    "guest_v4_ipaddr",
    "guest_v4_cidrprefix",
    "guest_v4_defaultgw",
    "guest_v4_dns1",
    "guest_v4_dns2",
    "guest_net_dnssuffix",
    "vlan_id",
    "guest_domain_jointarget",
    "guest_domain_joinuid",
    "guest_domain_joinpw",
    "guest_domain_joinou",
    "cnf_ansible_ssh_user",
    "cnf_ansible_ssh_key",
    "vm_clustered",
    "os_family",
];

const INTERESTING: &[&str] = &[
    "",
    " ",
    "-",
    "1",
    "24",
    "4094",
    "true",
    "windows",
    "linux",
    "Windows Server 2022",
    "Ubuntu 24.04",
    "web-01",
    "10.0.0.1",
    "10.0.0.0",
    "255.255.255.255",
    "corp.example",
    "ssh-ed25519 AAAA x",
    "-----BEGIN OPENSSH PRIVATE KEY-----",
    "é",
    "😀",
    "\u{0}",
];

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(FIELDS).prop_map(str::to_owned),
        1 => "[a-z_]{0,12}",
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(|f| json!(f)),
        prop::sample::select(INTERESTING).prop_map(Value::from),
        ".{0,24}".prop_map(Value::from),
        (0u8..=255, 0u8..=255, 0u8..=255, 0u8..=255)
            .prop_map(|(a, b, c, d)| Value::from(format!("{a}.{b}.{c}.{d}"))),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(name(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn mapping() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map(name(), value(), 0..26).prop_map(|m| m.into_iter().collect())
}

fn job() -> impl Strategy<Value = Value> {
    (
        prop::option::of(value()),
        prop::option::of(value()),
        prop_oneof![
            3 => mapping().prop_map(Value::Object),
            1 => value(),
        ],
        any::<bool>(),
    )
        .prop_map(|(version, host, values, with_values)| {
            let mut doc = Map::new();
            if let Some(v) = version {
                doc.insert("schema_version".into(), v);
            }
            if let Some(h) = host {
                doc.insert("target_host".into(), h);
            }
            if with_values {
                doc.insert("values".into(), values);
            }
            Value::Object(doc)
        })
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

const MARKER: &str = "Zq7-SECRET-";

fn check_outcome(result: Result<aetherv_provision::schema::Validated, aetherv_provision::Error>) {
    match result {
        Ok(validated) => {
            let text = format!("{validated:?} {}", validated.redacted());
            assert!(!text.contains(MARKER), "{text}");
            assert!(validated.request.values.gb_ram >= 1 && validated.request.values.gb_ram <= 512);
            assert!(!validated.request.values.vm_name.is_empty());
        }
        Err(e) => {
            let errors = e.field_errors().expect("only InvalidRequest from parsing");
            assert!(!errors.is_empty());
            assert!(
                errors
                    .iter()
                    .all(|fe| !fe.field.is_empty() && !fe.message.is_empty())
            );
            let text = format!("{e} {e:?}");
            assert!(!text.contains(MARKER), "{text}");
        }
    }
}

fn with_secrets(mut values: Map<String, Value>, suffix: &str) -> Map<String, Value> {
    values.insert(
        "guest_la_pw".into(),
        Value::from(format!("{MARKER}{suffix}")),
    );
    values.insert(
        "guest_domain_joinpw".into(),
        Value::from(format!("{MARKER}{suffix}")),
    );
    values
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn job_documents_never_panic(doc in job()) {
        check_outcome(JobRequest::from_json(&doc.to_string()));
        if let Ok(yaml) = serde_yaml::to_string(&doc) {
            check_outcome(JobRequest::from_yaml(&yaml));
        }
    }

    #[test]
    fn flat_documents_never_panic(values in mapping()) {
        let doc = Value::Object(values);
        check_outcome(JobRequest::from_flat_json(&doc.to_string()));
        if let Ok(yaml) = serde_yaml::to_string(&doc) {
            check_outcome(JobRequest::from_flat_yaml(&yaml));
        }
    }

    #[test]
    fn secrets_are_never_echoed(values in mapping(), suffix in "[a-z0-9|\\\\\"]{0,12}", flat in any::<bool>()) {
        let values = with_secrets(values, &suffix);
        if flat {
            let mut doc = values;
            doc.insert("hyperv_host".into(), Value::from("hv01"));
            check_outcome(JobRequest::from_flat_json(&Value::Object(doc).to_string()));
        } else {
            let doc = json!({"schema_version": 1, "target_host": "hv01", "values": values});
            check_outcome(JobRequest::from_json(&doc.to_string()));
            check_outcome(JobRequest::from_yaml(&serde_yaml::to_string(&doc).unwrap()));
        }
    }

    #[test]
    fn arbitrary_text_never_panics(body in ".{0,200}", hint in prop::option::of(prop::sample::select(vec!["application/json", "application/yaml", "text/plain", ""]))) {
        check_outcome(JobRequest::parse(&body, hint));
        check_outcome(JobRequest::parse_flat(&body, hint));
    }
}
