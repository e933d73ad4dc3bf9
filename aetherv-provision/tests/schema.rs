//! Job schema v1: table-driven validation tests, JSON and YAML inputs, the flat create body,
//! warnings, and secret handling (Debug, errors, redacted view).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;

use aetherv_provision::schema::{BodyFormat, JobRequest, OsFamily, Validated};
use aetherv_provision::{Error, FieldError};
use serde_json::{Value, json};

const LA_PW: &str = "Adm1n-pw-never-shown";
const JOIN_PW: &str = "J0in-pw-never-shown";

fn windows_job() -> Value {
    json!({
        "schema_version": 1,
        "target_host": "hv01.corp.example",
        "values": {
            "vm_name": "web-01",
            "image_name": "Windows Server 2022 Datacenter",
            "gb_ram": 8,
            "cpu_cores": 4,
            "guest_la_uid": "Administrator",
            "guest_la_pw": LA_PW,
            "guest_v4_ipaddr": "10.20.30.40",
            "guest_v4_cidrprefix": 24,
            "guest_v4_defaultgw": "10.20.30.1",
            "guest_v4_dns1": "10.20.0.53",
            "guest_v4_dns2": "10.20.0.54",
            "guest_net_dnssuffix": "corp.example",
            "vlan_id": 120,
            "guest_domain_jointarget": "corp.example",
            "guest_domain_joinuid": "svc-join",
            "guest_domain_joinpw": JOIN_PW,
            "guest_domain_joinou": "OU=Servers,DC=corp,DC=example",
            "vm_clustered": true
        }
    })
}

const SSH_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx3c2VjcmV0bm90cmVhbGx5YWtleWF0YWxs ansible@ctl";

fn linux_job() -> Value {
    json!({
        "schema_version": 1,
        "target_host": "hv02",
        "values": {
            "vm_name": "db-primary-0001",
            "image_name": "Ubuntu 24.04 LTS",
            "gb_ram": 16,
            "cpu_cores": 8,
            "guest_la_uid": "admin",
            "guest_la_pw": LA_PW,
            "cnf_ansible_ssh_user": "ansible",
            "cnf_ansible_ssh_key": SSH_KEY
        }
    })
}

fn values(job: &mut Value) -> &mut serde_json::Map<String, Value> {
    job["values"].as_object_mut().unwrap()
}

fn set(job: &mut Value, field: &str, value: Value) {
    values(job).insert(field.to_owned(), value);
}

fn remove(job: &mut Value, fields: &[&str]) {
    for field in fields {
        values(job).remove(*field);
    }
}

fn errors_of(result: Result<Validated, Error>) -> Vec<FieldError> {
    match result {
        Ok(v) => panic!("expected errors, got {v:?}"),
        Err(e) => e.field_errors().expect("an InvalidRequest error").to_vec(),
    }
}

struct Row {
    name: &'static str,
    base: fn() -> Value,
    mutate: fn(&mut Value),
    field: &'static str,
    fragment: &'static str,
}

#[rustfmt::skip]
fn rows() -> Vec<Row> {
    let w: fn() -> Value = windows_job;
    let l: fn() -> Value = linux_job;
    vec![
        // Required fields.
        Row { name: "vm_name required", base: w, mutate: |j| remove(j, &["vm_name"]), field: "values.vm_name", fragment: "is required" },
        Row { name: "vm_name blank is missing", base: w, mutate: |j| set(j, "vm_name", json!("  ")), field: "values.vm_name", fragment: "is required" },
        Row { name: "image_name required", base: w, mutate: |j| remove(j, &["image_name"]), field: "values.image_name", fragment: "is required" },
        Row { name: "gb_ram required", base: w, mutate: |j| remove(j, &["gb_ram"]), field: "values.gb_ram", fragment: "is required" },
        Row { name: "cpu_cores required", base: w, mutate: |j| remove(j, &["cpu_cores"]), field: "values.cpu_cores", fragment: "is required" },
        Row { name: "guest_la_uid required", base: w, mutate: |j| remove(j, &["guest_la_uid"]), field: "values.guest_la_uid", fragment: "is required" },
        Row { name: "guest_la_pw required", base: w, mutate: |j| remove(j, &["guest_la_pw"]), field: "values.guest_la_pw", fragment: "is required" },
        Row { name: "guest_la_pw empty", base: w, mutate: |j| set(j, "guest_la_pw", json!("")), field: "values.guest_la_pw", fragment: "is required" },
        Row { name: "values required", base: w, mutate: |j| { j["values"] = Value::Null; }, field: "values", fragment: "is required" },
        Row { name: "target_host required", base: w, mutate: |j| { j.as_object_mut().unwrap().remove("target_host"); }, field: "target_host", fragment: "is required" },
        Row { name: "target_host without spaces", base: w, mutate: |j| { j["target_host"] = json!("hv 01"); }, field: "target_host", fragment: "without whitespace" },
        Row { name: "target_host or target_cluster", base: w, mutate: |j| { j.as_object_mut().unwrap().remove("target_host"); }, field: "target_host", fragment: "or target_cluster" },
        Row { name: "not both targets", base: w, mutate: |j| { j["target_cluster"] = json!("clu01"); }, field: "target_cluster", fragment: "not both" },
        Row { name: "target_cluster without spaces", base: w, mutate: |j| { j.as_object_mut().unwrap().remove("target_host"); j["target_cluster"] = json!("clu 01"); }, field: "target_cluster", fragment: "without whitespace" },
        Row { name: "target_cluster not in values", base: w, mutate: |j| set(j, "target_cluster", json!("clu01")), field: "values.target_cluster", fragment: "at the top level" },
        Row { name: "target_cluster with vm_clustered false", base: w, mutate: |j| { j.as_object_mut().unwrap().remove("target_host"); j["target_cluster"] = json!("clu01"); set(j, "vm_clustered", json!("No")); }, field: "values.vm_clustered", fragment: "must not be false with target_cluster" },
        // Schema version.
        Row { name: "schema_version required", base: w, mutate: |j| { j.as_object_mut().unwrap().remove("schema_version"); }, field: "schema_version", fragment: "is required" },
        Row { name: "schema_version 2", base: w, mutate: |j| { j["schema_version"] = json!(2); }, field: "schema_version", fragment: "unsupported schema version 2" },
        Row { name: "schema_version text", base: w, mutate: |j| { j["schema_version"] = json!("one"); }, field: "schema_version", fragment: "must be a whole number" },
        // Ranges.
        Row { name: "gb_ram 0", base: w, mutate: |j| set(j, "gb_ram", json!(0)), field: "values.gb_ram", fragment: "must be between 1 and 512, got 0" },
        Row { name: "gb_ram 1024", base: w, mutate: |j| set(j, "gb_ram", json!(1024)), field: "values.gb_ram", fragment: "must be between 1 and 512, got 1024" },
        Row { name: "gb_ram negative", base: w, mutate: |j| set(j, "gb_ram", json!(-4)), field: "values.gb_ram", fragment: "got -4" },
        Row { name: "gb_ram fraction", base: w, mutate: |j| set(j, "gb_ram", json!(4.5)), field: "values.gb_ram", fragment: "must be a whole number, got number 4.5" },
        Row { name: "gb_ram text", base: w, mutate: |j| set(j, "gb_ram", json!("lots")), field: "values.gb_ram", fragment: "must be a whole number, got string \"lots\"" },
        Row { name: "gb_ram list", base: w, mutate: |j| set(j, "gb_ram", json!([4])), field: "values.gb_ram", fragment: "got a list" },
        Row { name: "cpu_cores 0", base: w, mutate: |j| set(j, "cpu_cores", json!(0)), field: "values.cpu_cores", fragment: "must be between 1 and 64, got 0" },
        Row { name: "cpu_cores 65", base: w, mutate: |j| set(j, "cpu_cores", json!(65)), field: "values.cpu_cores", fragment: "must be between 1 and 64, got 65" },
        Row { name: "vlan_id 4095", base: w, mutate: |j| set(j, "vlan_id", json!(4095)), field: "values.vlan_id", fragment: "must be between 0 and 4094, got 4095" },
        Row { name: "vlan_id -1", base: w, mutate: |j| set(j, "vlan_id", json!(-1)), field: "values.vlan_id", fragment: "must be between 0 and 4094, got -1" },
        Row { name: "cidr prefix 33", base: w, mutate: |j| set(j, "guest_v4_cidrprefix", json!(33)), field: "values.guest_v4_cidrprefix", fragment: "must be between 0 and 32, got 33" },
        // Addresses.
        Row { name: "ip not an address", base: w, mutate: |j| set(j, "guest_v4_ipaddr", json!("10.20.30.400")), field: "values.guest_v4_ipaddr", fragment: "must be an IPv4 address" },
        Row { name: "ip multicast", base: w, mutate: |j| set(j, "guest_v4_ipaddr", json!("224.0.0.5")), field: "values.guest_v4_ipaddr", fragment: "must be a unicast host address" },
        Row { name: "ip network address", base: w, mutate: |j| set(j, "guest_v4_ipaddr", json!("10.20.30.0")), field: "values.guest_v4_ipaddr", fragment: "is the network address of 10.20.30.0/24" },
        Row { name: "ip broadcast address", base: w, mutate: |j| set(j, "guest_v4_ipaddr", json!("10.20.30.255")), field: "values.guest_v4_ipaddr", fragment: "is the broadcast address of 10.20.30.0/24" },
        Row { name: "gateway outside subnet", base: w, mutate: |j| set(j, "guest_v4_defaultgw", json!("10.20.31.1")), field: "values.guest_v4_defaultgw", fragment: "must be inside 10.20.30.0/24, the subnet of values.guest_v4_ipaddr, got 10.20.31.1" },
        Row { name: "gateway outside narrow subnet", base: w, mutate: |j| { set(j, "guest_v4_cidrprefix", json!(28)); set(j, "guest_v4_defaultgw", json!("10.20.30.49")); }, field: "values.guest_v4_defaultgw", fragment: "must be inside 10.20.30.32/28" },
        Row { name: "gateway is the address", base: w, mutate: |j| set(j, "guest_v4_defaultgw", json!("10.20.30.40")), field: "values.guest_v4_defaultgw", fragment: "must differ from values.guest_v4_ipaddr" },
        Row { name: "dns1 not an address", base: w, mutate: |j| set(j, "guest_v4_dns1", json!("dns.corp")), field: "values.guest_v4_dns1", fragment: "must be an IPv4 address" },
        Row { name: "dns2 not an address", base: w, mutate: |j| set(j, "guest_v4_dns2", json!("1.2.3")), field: "values.guest_v4_dns2", fragment: "must be an IPv4 address" },
        Row { name: "dns suffix with space", base: w, mutate: |j| set(j, "guest_net_dnssuffix", json!("corp example")), field: "values.guest_net_dnssuffix", fragment: "must not contain whitespace" },
        // All-or-none groups.
        Row { name: "static ip without gateway", base: w, mutate: |j| remove(j, &["guest_v4_defaultgw"]), field: "values.guest_v4_defaultgw", fragment: "is required when any static IPv4 setting is given" },
        Row { name: "static ip without prefix", base: w, mutate: |j| remove(j, &["guest_v4_cidrprefix"]), field: "values.guest_v4_cidrprefix", fragment: "is required when any static IPv4 setting is given" },
        Row { name: "dns suffix alone", base: w, mutate: |j| remove(j, &["guest_v4_ipaddr", "guest_v4_cidrprefix", "guest_v4_defaultgw", "guest_v4_dns1", "guest_v4_dns2"]), field: "values.guest_v4_ipaddr", fragment: "is required when any static IPv4 setting is given" },
        Row { name: "domain join without password", base: w, mutate: |j| remove(j, &["guest_domain_joinpw"]), field: "values.guest_domain_joinpw", fragment: "is required when any domain join setting is given" },
        Row { name: "domain join without target", base: w, mutate: |j| set(j, "guest_domain_jointarget", json!("")), field: "values.guest_domain_jointarget", fragment: "is required when any domain join setting is given" },
        Row { name: "ou alone", base: w, mutate: |j| remove(j, &["guest_domain_jointarget", "guest_domain_joinuid", "guest_domain_joinpw"]), field: "values.guest_domain_joinuid", fragment: "is required when any domain join setting is given" },
        Row { name: "ssh without key", base: l, mutate: |j| remove(j, &["cnf_ansible_ssh_key"]), field: "values.cnf_ansible_ssh_key", fragment: "is required when any Ansible SSH setting is given" },
        Row { name: "ssh without user", base: l, mutate: |j| remove(j, &["cnf_ansible_ssh_user"]), field: "values.cnf_ansible_ssh_user", fragment: "is required when any Ansible SSH setting is given" },
        Row { name: "ssh private key", base: l, mutate: |j| set(j, "cnf_ansible_ssh_key", json!("-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n-----END OPENSSH PRIVATE KEY-----")), field: "values.cnf_ansible_ssh_key", fragment: "looks like a private key" },
        Row { name: "ssh key not a key", base: l, mutate: |j| set(j, "cnf_ansible_ssh_key", json!("hello")), field: "values.cnf_ansible_ssh_key", fragment: "OpenSSH public key line" },
        Row { name: "ssh key two lines", base: l, mutate: |j| set(j, "cnf_ansible_ssh_key", json!(format!("{SSH_KEY}\n{SSH_KEY}"))), field: "values.cnf_ansible_ssh_key", fragment: "single line" },
        // VM name rules.
        Row { name: "vm name 65 chars", base: l, mutate: |j| set(j, "vm_name", json!("a".repeat(65))), field: "values.vm_name", fragment: "must be at most 64 characters, got 65" },
        Row { name: "vm name underscore", base: w, mutate: |j| set(j, "vm_name", json!("web_01")), field: "values.vm_name", fragment: "only letters, digits and hyphens, found '_'" },
        Row { name: "vm name non-ascii", base: w, mutate: |j| set(j, "vm_name", json!("wéb")), field: "values.vm_name", fragment: "only letters, digits and hyphens" },
        Row { name: "vm name leading hyphen", base: w, mutate: |j| set(j, "vm_name", json!("-web")), field: "values.vm_name", fragment: "must not start or end with a hyphen" },
        Row { name: "vm name trailing hyphen", base: l, mutate: |j| set(j, "vm_name", json!("web-")), field: "values.vm_name", fragment: "must not start or end with a hyphen" },
        Row { name: "windows vm name 16 chars", base: w, mutate: |j| set(j, "vm_name", json!("web-0123456789ab")), field: "values.vm_name", fragment: "must be at most 15 characters for a windows guest" },
        Row { name: "windows vm name digits", base: w, mutate: |j| set(j, "vm_name", json!("12345")), field: "values.vm_name", fragment: "must not be only digits" },
        // OS family.
        Row { name: "unknown image", base: w, mutate: |j| set(j, "image_name", json!("FreeBSD 14.1")), field: "values.image_name", fragment: "cannot tell the guest OS family" },
        Row { name: "bad os_family", base: w, mutate: |j| set(j, "os_family", json!("solaris")), field: "values.os_family", fragment: "must be \"windows\" or \"linux\", got \"solaris\"" },
        Row { name: "image path traversal", base: w, mutate: |j| set(j, "image_name", json!("Windows/../../secrets")), field: "values.image_name", fragment: "must not contain" },
        // Accounts.
        Row { name: "windows admin name with @", base: w, mutate: |j| set(j, "guest_la_uid", json!("admin@corp")), field: "values.guest_la_uid", fragment: "must not contain any of" },
        Row { name: "windows admin name 21 chars", base: w, mutate: |j| set(j, "guest_la_uid", json!("a".repeat(21))), field: "values.guest_la_uid", fragment: "at most 20 characters" },
        Row { name: "linux admin name with colon", base: l, mutate: |j| set(j, "guest_la_uid", json!("ad:min")), field: "values.guest_la_uid", fragment: "must not contain whitespace, ':' or '/'" },
        Row { name: "password with newline", base: w, mutate: |j| set(j, "guest_la_pw", json!("line1\nline2")), field: "values.guest_la_pw", fragment: "control characters" },
        Row { name: "password too long for kvp", base: w, mutate: |j| set(j, "guest_la_pw", json!("p".repeat(3001))), field: "values.guest_la_pw", fragment: "at most 3000 characters" },
        Row { name: "ou too long for kvp", base: w, mutate: |j| set(j, "guest_domain_joinou", json!("o".repeat(3001))), field: "values.guest_domain_joinou", fragment: "at most 3000 characters, got 3001" },
        // Types.
        Row { name: "password as number", base: w, mutate: |j| set(j, "guest_la_pw", json!(123_456_789)), field: "values.guest_la_pw", fragment: "must be a string, got a number; quote the value" },
        Row { name: "clustered not a bool", base: w, mutate: |j| set(j, "vm_clustered", json!("maybe")), field: "values.vm_clustered", fragment: "must be true or false, got string \"maybe\"" },
        Row { name: "uid a mapping", base: w, mutate: |j| set(j, "guest_la_uid", json!({"a": 1})), field: "values.guest_la_uid", fragment: "must be a string, got a mapping" },
        // Unknown fields (parser problems: reported alone).
        Row { name: "unknown value field", base: w, mutate: |j| set(j, "gb_rom", json!(4)), field: "values.gb_rom", fragment: "unknown field" },
        Row { name: "unknown top-level field", base: w, mutate: |j| { j["priority"] = json!("high"); }, field: "priority", fragment: "unknown field" },
        Row { name: "hyperv_host in job schema", base: w, mutate: |j| set(j, "hyperv_host", json!("hv03")), field: "values.hyperv_host", fragment: "takes the host as target_host" },
        Row { name: "values not a mapping", base: w, mutate: |j| { j["values"] = json!("vm_name=x"); }, field: "values", fragment: "expected a mapping of provisioning values" },
    ]
}

#[test]
fn every_rule_names_its_field() {
    let mut failures = Vec::new();
    for row in rows() {
        let mut job = (row.base)();
        (row.mutate)(&mut job);
        let body = serde_json::to_string(&job).unwrap();
        match JobRequest::from_json(&body) {
            Ok(_) => failures.push(format!("{}: accepted", row.name)),
            Err(e) => {
                let errors = e.field_errors().unwrap_or_default();
                if !errors
                    .iter()
                    .any(|fe| fe.field == row.field && fe.message.contains(row.fragment))
                {
                    failures.push(format!(
                        "{}: expected {} ~ {:?}, got {errors:?}",
                        row.name, row.field, row.fragment
                    ));
                }
                // No message ever carries a secret.
                let text = e.to_string();
                assert!(!text.contains(LA_PW) && !text.contains(JOIN_PW), "{text}");
                assert!(!text.contains("123456789"), "{}: {text}", row.name);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_same_rules_hold_for_yaml() {
    for row in rows() {
        let mut job = (row.base)();
        (row.mutate)(&mut job);
        let body = serde_yaml::to_string(&job).unwrap();
        let errors = errors_of(JobRequest::from_yaml(&body));
        assert!(
            errors
                .iter()
                .any(|fe| fe.field == row.field && fe.message.contains(row.fragment)),
            "{}: expected {} ~ {:?}, got {errors:?}",
            row.name,
            row.field,
            row.fragment
        );
    }
}

#[test]
fn all_problems_are_reported_at_once_in_schema_order() {
    let mut job = windows_job();
    set(&mut job, "vm_name", json!("this-name-is-too-long"));
    set(&mut job, "gb_ram", json!(0));
    set(&mut job, "cpu_cores", json!("many"));
    set(&mut job, "vlan_id", json!(5000));
    remove(&mut job, &["guest_la_pw", "guest_v4_dns1"]);
    job["schema_version"] = json!(3);
    let errors = errors_of(JobRequest::from_json(&job.to_string()));
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "schema_version",
            "values.vm_name",
            "values.gb_ram",
            "values.cpu_cores",
            "values.guest_la_pw",
            "values.guest_v4_dns1",
            "values.vlan_id",
        ],
        "{errors:?}"
    );
}

#[test]
fn a_valid_windows_job_in_json() {
    let v = JobRequest::from_json(&windows_job().to_string()).unwrap();
    assert!(v.warnings.is_empty(), "{:?}", v.warnings);
    let r = &v.request;
    assert_eq!(r.schema_version, 1);
    assert_eq!(r.target_host, "hv01.corp.example");
    let values = &r.values;
    assert_eq!(values.os_family, OsFamily::Windows);
    assert_eq!((values.gb_ram, values.cpu_cores), (8, 4));
    assert_eq!(values.guest_la_pw.expose(), LA_PW);
    assert_eq!(values.vlan_id, Some(120));
    assert!(values.vm_clustered);
    let ip = values.static_ipv4.as_ref().unwrap();
    assert_eq!(ip.guest_v4_ipaddr, Ipv4Addr::new(10, 20, 30, 40));
    assert_eq!(ip.guest_v4_cidrprefix, 24);
    assert_eq!(ip.guest_v4_dns2, Some(Ipv4Addr::new(10, 20, 0, 54)));
    assert_eq!(ip.guest_net_dnssuffix.as_deref(), Some("corp.example"));
    let domain = values.domain_join.as_ref().unwrap();
    assert_eq!(domain.guest_domain_joinpw.expose(), JOIN_PW);
    assert_eq!(
        domain.guest_domain_joinou.as_deref(),
        Some("OU=Servers,DC=corp,DC=example")
    );
    assert!(values.ansible_ssh.is_none());
}

#[test]
fn a_valid_linux_job_in_yaml() {
    let body = format!(
        "schema_version: 1\n\
         target_host: hv02\n\
         values:\n\
         \x20 vm_name: db-primary-0001   # 15+ characters are fine on Linux\n\
         \x20 image_name: rocky linux 9.4\n\
         \x20 gb_ram: \"16\"\n\
         \x20 cpu_cores: 8\n\
         \x20 guest_la_uid: admin\n\
         \x20 guest_la_pw: '{LA_PW}'\n\
         \x20 guest_v4_ipaddr: 192.168.10.20\n\
         \x20 guest_v4_cidrprefix: 22\n\
         \x20 guest_v4_defaultgw: 192.168.11.254\n\
         \x20 guest_v4_dns1: 192.168.8.1\n\
         \x20 guest_v4_dns2: ''\n\
         \x20 vlan_id: 0\n\
         \x20 cnf_ansible_ssh_user: ansible\n\
         \x20 cnf_ansible_ssh_key: {SSH_KEY}\n\
         \x20 vm_clustered: false\n"
    );
    let v = JobRequest::from_yaml(&body).unwrap();
    assert!(v.warnings.is_empty(), "{:?}", v.warnings);
    let values = &v.request.values;
    assert_eq!(values.os_family, OsFamily::Linux);
    assert_eq!(values.vm_name, "db-primary-0001");
    assert_eq!(values.gb_ram, 16, "digit strings are accepted for integers");
    assert_eq!(values.vlan_id, Some(0));
    let ip = values.static_ipv4.as_ref().unwrap();
    assert_eq!(ip.guest_v4_cidrprefix, 22);
    assert_eq!(ip.guest_v4_dns2, None, "an empty string means not given");
    let ssh = values.ansible_ssh.as_ref().unwrap();
    assert_eq!(ssh.cnf_ansible_ssh_key, SSH_KEY);
    assert!(!values.vm_clustered);
    // Same document through the sniffing entry point and with content types.
    assert_eq!(JobRequest::parse(&body, None).unwrap(), v);
    assert_eq!(
        JobRequest::parse(&body, Some("application/yaml")).unwrap(),
        v
    );
    assert_eq!(
        JobRequest::parse(&body, Some("text/x-yaml; charset=utf-8")).unwrap(),
        v
    );
}

#[test]
fn format_detection() {
    assert_eq!(BodyFormat::detect("{}", None), BodyFormat::Json);
    assert_eq!(BodyFormat::detect("  \n{\"a\":1}", None), BodyFormat::Json);
    assert_eq!(BodyFormat::detect("a: 1", None), BodyFormat::Yaml);
    assert_eq!(
        BodyFormat::detect("a: 1", Some("application/json; charset=utf-8")),
        BodyFormat::Json
    );
    assert_eq!(
        BodyFormat::detect("{}", Some("application/x-yaml")),
        BodyFormat::Yaml
    );
    assert_eq!(
        BodyFormat::detect("{}", Some("text/plain")),
        BodyFormat::Json
    );
}

#[test]
fn os_family_detection_is_a_case_insensitive_prefix() {
    let cases = [
        ("Windows Server 2022", Some(OsFamily::Windows)),
        ("windows-11-ent", Some(OsFamily::Windows)),
        ("Microsoft Windows Server 2019", Some(OsFamily::Windows)),
        ("  WINDOWS 10", Some(OsFamily::Windows)),
        ("Ubuntu 22.04", Some(OsFamily::Linux)),
        ("RHEL 9", Some(OsFamily::Linux)),
        ("CentOS Stream 9", Some(OsFamily::Linux)),
        ("Rocky Linux 9", Some(OsFamily::Linux)),
        ("AlmaLinux 9", Some(OsFamily::Linux)),
        ("Oracle Linux 8", Some(OsFamily::Linux)),
        ("debian-12", Some(OsFamily::Linux)),
        ("SUSE Linux Enterprise 15", Some(OsFamily::Linux)),
        ("openSUSE Leap 15.6", Some(OsFamily::Linux)),
        ("Fedora 40", Some(OsFamily::Linux)),
        ("Rocky9", None),
        ("Server 2022 Windows", None),
        ("FreeBSD", None),
        ("", None),
        ("é", None),
    ];
    for (image, expected) in cases {
        assert_eq!(OsFamily::detect(image), expected, "{image}");
    }
}

#[test]
fn os_family_override() {
    // An image that matches neither family is fine with an explicit family.
    let mut job = linux_job();
    set(&mut job, "image_name", json!("FreeBSD-ish custom"));
    set(&mut job, "os_family", json!("Linux"));
    let v = JobRequest::from_json(&job.to_string()).unwrap();
    assert_eq!(v.request.values.os_family, OsFamily::Linux);
    assert!(v.warnings.is_empty());

    // An override that disagrees with the image name wins, with a warning.
    let mut job = windows_job();
    set(&mut job, "os_family", json!("windows"));
    set(&mut job, "image_name", json!("Ubuntu-based appliance"));
    let v = JobRequest::from_json(&job.to_string()).unwrap();
    assert_eq!(v.request.values.os_family, OsFamily::Windows);
    assert_eq!(
        v.warnings,
        ["values.os_family windows overrides linux detected from values.image_name"]
    );
}

#[test]
fn fields_for_the_other_family_are_dropped_with_a_warning() {
    // Windows guest with SSH settings: dropped, even if they would be invalid.
    let mut job = windows_job();
    set(&mut job, "cnf_ansible_ssh_user", json!("ansible"));
    set(&mut job, "cnf_ansible_ssh_key", json!("not a key at all"));
    let v = JobRequest::from_json(&job.to_string()).unwrap();
    assert!(v.request.values.ansible_ssh.is_none());
    assert_eq!(
        v.warnings,
        [
            "ignored values.cnf_ansible_ssh_user, values.cnf_ansible_ssh_key: Ansible SSH \
             applies to linux guests only and this guest is windows"
        ]
    );

    // Linux guest with (partial) domain join settings: dropped, no group error.
    let mut job = linux_job();
    set(&mut job, "guest_domain_jointarget", json!("corp.example"));
    set(&mut job, "guest_domain_joinpw", json!(JOIN_PW));
    let v = JobRequest::from_json(&job.to_string()).unwrap();
    assert!(v.request.values.domain_join.is_none());
    assert_eq!(v.warnings.len(), 1);
    assert!(
        v.warnings[0].starts_with(
            "ignored values.guest_domain_jointarget, values.guest_domain_joinpw: domain join"
        ),
        "{:?}",
        v.warnings
    );
    assert!(!v.warnings[0].contains(JOIN_PW));
    assert!(!format!("{v:?}").contains(JOIN_PW));
}

#[test]
fn a_long_linux_name_is_fine_but_not_on_windows() {
    let mut job = linux_job();
    set(&mut job, "vm_name", json!("a-very-long-linux-vm-name"));
    assert!(JobRequest::from_json(&job.to_string()).is_ok());
    set(&mut job, "vm_name", json!("x".repeat(64)));
    assert!(JobRequest::from_json(&job.to_string()).is_ok());
    let mut job = windows_job();
    set(&mut job, "vm_name", json!("exactly-15-char"));
    assert!(JobRequest::from_json(&job.to_string()).is_ok());
}

#[test]
fn groups_are_optional_and_optional_members_too() {
    let mut job = windows_job();
    remove(
        &mut job,
        &[
            "guest_v4_dns2",
            "guest_net_dnssuffix",
            "guest_domain_joinou",
            "vlan_id",
            "vm_clustered",
        ],
    );
    let v = JobRequest::from_json(&job.to_string()).unwrap();
    let values = &v.request.values;
    assert_eq!(values.static_ipv4.as_ref().unwrap().guest_v4_dns2, None);
    assert_eq!(
        values.domain_join.as_ref().unwrap().guest_domain_joinou,
        None
    );
    assert_eq!(values.vlan_id, None);
    assert!(!values.vm_clustered);

    remove(
        &mut job,
        &[
            "guest_v4_ipaddr",
            "guest_v4_cidrprefix",
            "guest_v4_defaultgw",
            "guest_v4_dns1",
            "guest_domain_jointarget",
            "guest_domain_joinuid",
            "guest_domain_joinpw",
        ],
    );
    let v = JobRequest::from_json(&job.to_string()).unwrap();
    assert!(v.request.values.static_ipv4.is_none());
    assert!(v.request.values.domain_join.is_none());
    // Null and empty strings mean "not given".
    set(&mut job, "guest_v4_ipaddr", Value::Null);
    set(&mut job, "guest_domain_joinpw", json!(""));
    set(&mut job, "vlan_id", json!(""));
    assert!(JobRequest::from_json(&job.to_string()).is_ok());
}

#[test]
fn prefix_edge_cases() {
    // /32 and /31: no network or broadcast address rule; /0 accepts any gateway.
    for (prefix, ip, gateway) in [
        (32, "10.0.0.5", "10.0.0.5"),
        (31, "10.0.0.4", "10.0.0.5"),
        (0, "10.0.0.4", "192.168.1.1"),
    ] {
        let mut job = windows_job();
        set(&mut job, "guest_v4_cidrprefix", json!(prefix));
        set(&mut job, "guest_v4_ipaddr", json!(ip));
        set(&mut job, "guest_v4_defaultgw", json!(gateway));
        let result = JobRequest::from_json(&job.to_string());
        if prefix == 32 {
            // The gateway would be the address itself.
            let errors = errors_of(result);
            assert_eq!(errors[0].field, "values.guest_v4_defaultgw");
        } else {
            assert!(result.is_ok(), "/{prefix}: {result:?}");
        }
    }
}

fn flat_windows() -> Value {
    let job = windows_job();
    let mut flat = job["values"].clone();
    flat["hyperv_host"] = job["target_host"].clone();
    flat
}

#[test]
fn the_flat_create_body_becomes_the_same_request() {
    let from_job = JobRequest::from_json(&windows_job().to_string()).unwrap();
    let from_flat = JobRequest::from_flat_json(&flat_windows().to_string()).unwrap();
    assert_eq!(from_flat, from_job);
    let yaml = serde_yaml::to_string(&flat_windows()).unwrap();
    assert_eq!(JobRequest::from_flat_yaml(&yaml).unwrap(), from_job);
    assert_eq!(JobRequest::parse_flat(&yaml, None).unwrap(), from_job);
}

#[test]
fn flat_body_errors_have_no_values_prefix() {
    let mut flat = flat_windows();
    flat.as_object_mut().unwrap().remove("hyperv_host");
    flat["gb_ram"] = json!(999);
    let errors = errors_of(JobRequest::from_flat_json(&flat.to_string()));
    assert_eq!(
        errors,
        [
            FieldError::new(
                "hyperv_host",
                "is required: give hyperv_host (a host) or target_cluster (a cluster whose best \
                 host the server picks)"
            ),
            FieldError::new("gb_ram", "must be between 1 and 512, got 999"),
        ]
    );
    let mut flat = flat_windows();
    flat["schema_version"] = json!(1);
    let errors = errors_of(JobRequest::from_flat_json(&flat.to_string()));
    assert_eq!(errors[0].field, "schema_version");
    assert!(errors[0].message.starts_with("unknown field"));
}

#[test]
fn malformed_documents_name_the_body_or_the_place() {
    let errors = errors_of(JobRequest::from_json("{\"schema_version\": 1,"));
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].field, "body");
    assert!(errors[0].message.contains("line 1"), "{errors:?}");

    let errors = errors_of(JobRequest::from_json("[1, 2]"));
    assert_eq!(errors[0].field, "body");
    assert!(errors[0].message.contains("expected a job request mapping"));

    let errors = errors_of(JobRequest::from_json("{} trailing"));
    assert_eq!(errors[0].field, "body");

    let errors = errors_of(JobRequest::from_yaml("values: [unclosed"));
    assert_eq!(errors.len(), 1);
    assert!(errors[0].message.contains("line"), "{errors:?}");

    // An empty YAML document is an empty mapping: every required field is missing.
    let errors = errors_of(JobRequest::from_yaml(""));
    assert_eq!(
        errors[0],
        FieldError::new("schema_version", "is required (this service accepts 1)")
    );

    let errors = errors_of(JobRequest::from_json(
        r#"{"values": {"gb_ram": 1, "gb_ram": 2}}"#,
    ));
    assert_eq!(errors[0].field, "values.gb_ram");
    assert!(errors[0].message.contains("more than once"), "{errors:?}");

    // Empty JSON object: every required top-level field at once.
    let errors = errors_of(JobRequest::from_json("{}"));
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["schema_version", "target_host", "values"]);
}

#[test]
fn debug_never_shows_secrets() {
    let v = JobRequest::from_json(&windows_job().to_string()).unwrap();
    for text in [
        format!("{v:?}"),
        format!("{:?}", v.request),
        format!("{:#?}", v.request.values),
    ] {
        assert!(!text.contains(LA_PW), "{text}");
        assert!(!text.contains(JOIN_PW), "{text}");
        assert!(text.contains("***"));
    }
}

#[test]
fn errors_never_show_secrets_even_with_the_wrong_type() {
    let mut job = windows_job();
    set(&mut job, "guest_la_pw", json!(987_654_321));
    set(&mut job, "guest_domain_joinpw", json!(["hunter2"]));
    let err = JobRequest::from_json(&job.to_string()).unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(!text.contains("987654321"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    let yaml = "schema_version: 1\ntarget_host: h\nvalues:\n  vm_name: a\n  image_name: Windows\n  \
                gb_ram: 1\n  cpu_cores: 1\n  guest_la_uid: a\n  guest_la_pw: 24681357\n";
    let err = JobRequest::from_yaml(yaml).unwrap_err();
    assert!(!format!("{err} {err:?}").contains("24681357"));
}

#[test]
fn the_redacted_view_hides_secrets_and_keeps_the_schema_shape() {
    let v = JobRequest::from_json(&windows_job().to_string()).unwrap();
    let redacted = v.redacted();
    let text = redacted.to_string();
    assert!(!text.contains(LA_PW) && !text.contains(JOIN_PW), "{text}");
    let mut expected = windows_job();
    set(&mut expected, "guest_la_pw", json!("***"));
    set(&mut expected, "guest_domain_joinpw", json!("***"));
    set(&mut expected, "os_family", json!("windows"));
    assert_eq!(redacted, expected);

    // Linux: groups that are absent are absent from the view.
    let v = JobRequest::from_json(&linux_job().to_string()).unwrap();
    let redacted = v.request.redacted();
    assert_eq!(redacted["values"]["guest_la_pw"], "***");
    assert_eq!(redacted["values"]["cnf_ansible_ssh_key"], SSH_KEY);
    assert_eq!(redacted["values"]["vm_clustered"], false);
    assert!(redacted["values"].get("guest_v4_ipaddr").is_none());
    assert!(redacted["values"].get("vlan_id").is_none());
}

#[test]
fn target_cluster_replaces_the_host_and_makes_a_cluster_role() {
    let mut job = windows_job();
    job.as_object_mut().unwrap().remove("target_host");
    job["target_cluster"] = json!("clu01");
    remove(&mut job, &["vm_clustered"]);
    let v = JobRequest::from_json(&job.to_string()).unwrap();
    assert_eq!(v.request.target_cluster.as_deref(), Some("clu01"));
    assert!(v.request.needs_placement());
    assert!(
        v.request.values.vm_clustered,
        "a cluster target implies a cluster role"
    );
    let mut placed = v.request.clone();
    placed.place_on("hv02");
    assert!(!placed.needs_placement());
    let redacted = placed.redacted();
    assert_eq!(redacted["target_host"], "hv02");
    assert_eq!(redacted["target_cluster"], "clu01");
    // A request naming a host has no cluster in its record.
    let host = JobRequest::from_json(&windows_job().to_string()).unwrap();
    assert_eq!(host.request.target_cluster, None);
    assert!(host.request.redacted().get("target_cluster").is_none());

    // The flat body takes it at the top level too.
    let mut flat = flat_windows();
    flat.as_object_mut().unwrap().remove("hyperv_host");
    flat["target_cluster"] = json!("clu01");
    let v = JobRequest::from_flat_json(&flat.to_string()).unwrap();
    assert_eq!(v.request.target_cluster.as_deref(), Some("clu01"));
    flat["hyperv_host"] = json!("hv01");
    let errors = errors_of(JobRequest::from_flat_json(&flat.to_string()));
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["hyperv_host", "target_cluster"]);
}

#[test]
fn vm_clustered_takes_the_seed_yes_and_no() {
    for (given, expected) in [
        (json!("Yes"), true),
        (json!("yes"), true),
        (json!(" YES "), true),
        (json!("No"), false),
        (json!("no"), false),
        (json!("True"), true),
        (json!(false), false),
        (json!(""), false),
    ] {
        let mut job = windows_job();
        set(&mut job, "vm_clustered", given.clone());
        let v = JobRequest::from_json(&job.to_string()).unwrap();
        assert_eq!(v.request.values.vm_clustered, expected, "{given}");
    }
    for bad in [json!("y"), json!("oui"), json!(1)] {
        let mut job = windows_job();
        set(&mut job, "vm_clustered", bad.clone());
        let errors = errors_of(JobRequest::from_json(&job.to_string()));
        assert_eq!(errors[0].field, "values.vm_clustered", "{bad}");
        assert!(
            errors[0].message.contains("\"Yes\" and \"No\""),
            "{errors:?}"
        );
    }
}
