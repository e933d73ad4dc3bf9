//! The one part of the document written by hand: the provisioning bodies of
//! `POST /api/v1/vms/create` and `POST /api/v1/jobs/provision`. `aetherv-provision` parses them
//! leniently (JSON or YAML, integers as strings of digits, `"true"`/`"false"`, empty strings
//! as "not given", all-or-none groups) rather than through a serde type, so there is no Rust
//! type to derive their schema from.

use serde_json::{Map, Value, json};

/// The component schemas of the provisioning bodies.
pub fn schemas() -> Vec<(&'static str, Value)> {
    vec![
        (
            "CreateVmRequest",
            one_target(
                values_schema(
                    "The flat create body: schema v1 values at the top level, the host in \
                     `hyperv_host`, or the cluster to place the VM in as `target_cluster` \
                     (exactly one of the two).",
                    &[
                        ("hyperv_host", host_field()),
                        ("target_cluster", cluster_field()),
                    ],
                ),
                "hyperv_host",
            ),
        ),
        (
            "ProvisionValues",
            values_schema("What to create and how to configure the guest.", &[]),
        ),
        (
            "ProvisionJobRequest",
            json!({
                "type": "object",
                "description": "A provisioning job in the job schema (v1)",
                "properties": {
                    "schema_version": { "type": "integer", "const": 1 },
                    "target_host": host_field(),
                    "target_cluster": cluster_field(),
                    "values": { "$ref": "#/components/schemas/ProvisionValues" },
                },
                "required": ["schema_version", "values"],
                "oneOf": [
                    { "required": ["target_host"] },
                    { "required": ["target_cluster"] },
                ],
                "additionalProperties": false,
            }),
        ),
    ]
}

/// The request body of the operation `operation_id`, when it is a provisioning one.
pub fn request_body(operation_id: &str) -> Option<Value> {
    let schema = |name: &str| json!({ "$ref": format!("#/components/schemas/{name}") });
    let (name, description) = match operation_id {
        "createVm" => ("CreateVmRequest", "The flat body, as JSON or YAML"),
        "provisionVm" => (
            "ProvisionJobRequest",
            "A job in the job schema v1, as JSON or YAML",
        ),
        _ => return None,
    };
    Some(json!({
        "required": true,
        "description": description,
        "content": {
            "application/json": { "schema": schema(name) },
            "application/yaml": { "schema": schema(name) },
        },
    }))
}

/// Integer fields accept numbers or strings of digits.
fn int_field(min: i64, max: i64, description: &str) -> Value {
    json!({
        "type": ["integer", "string"],
        "minimum": min,
        "maximum": max,
        "pattern": "^[0-9]+$",
        "description": description,
    })
}

fn text_field(description: &str) -> Value {
    json!({ "type": ["string", "null"], "description": description })
}

fn secret_field(description: &str) -> Value {
    json!({
        "type": "string",
        "format": "password",
        "writeOnly": true,
        "description": description,
    })
}

/// The schema-v1 values (without the host), required first.
fn value_fields() -> Vec<(&'static str, Value)> {
    vec![
        (
            "vm_name",
            json!({
                "type": "string",
                "minLength": 1,
                "maxLength": 64,
                "pattern": "^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?$",
                "description": "1–64 ASCII letters, digits and hyphens, no leading or trailing \
                    hyphen; for Windows guests at most 15 characters and not only digits (it \
                    becomes the computer name)",
            }),
        ),
        (
            "image_name",
            json!({
                "type": "string",
                "minLength": 1,
                "maxLength": 255,
                "description": "Golden image name; no `/`, `\\`, `..` or control characters. \
                    Decides the OS family unless `os_family` is given",
            }),
        ),
        ("gb_ram", int_field(1, 512, "Memory in GiB (1–512)")),
        ("cpu_cores", int_field(1, 64, "Virtual processors (1–64)")),
        (
            "disk_size_gb",
            json!({
                "type": ["integer", "string", "null"],
                "minimum": 1,
                "maximum": 65536,
                "pattern": "^[0-9]*$",
                "description": "System disk size in GiB (1–65536): the copied image is \
                    expanded to it before the first boot; not smaller than the image's virtual \
                    size (422 naming both). The image's own size when not given",
            }),
        ),
        (
            "guest_la_uid",
            json!({
                "type": "string",
                "minLength": 1,
                "maxLength": 32,
                "description": "Guest local administrator. Windows: at most 20 characters, none \
                    of `\" / \\ [ ] : ; | = , + * ? < > @`. Linux: at most 32 characters, no \
                    whitespace, `:` or `/`",
            }),
        ),
        (
            "guest_la_pw",
            secret_field("Guest local administrator password (secret)"),
        ),
        (
            "vlan_id",
            json!({
                "type": ["integer", "string", "null"],
                "minimum": 0,
                "maximum": 4094,
                "pattern": "^[0-9]*$",
                "description": "Access VLAN, 0–4094 (0 means untagged)",
            }),
        ),
        (
            "vm_clustered",
            json!({
                "anyOf": [
                    { "type": ["boolean", "null"] },
                    {
                        "type": "string",
                        "pattern": "^\\s*([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee]|[Yy][Ee][Ss]|[Nn][Oo])?\\s*$",
                    },
                ],
                "default": false,
                "description": "Make the VM a highly available cluster role: true/false, or the \
                    strings \"Yes\"/\"No\" (case-insensitive). Defaults to true with \
                    `target_cluster`, where false is refused.",
            }),
        ),
        (
            "network",
            json!({
                "type": ["string", "null"],
                "maxLength": 64,
                "description": "Named network of the target host (switch and VLAN). Without \
                    it: the host's default network, else its only External switch; several \
                    External switches and no default is a 422 listing the candidates. \
                    `vlan_id` overrides the network's VLAN",
            }),
        ),
        (
            "storage_class",
            json!({
                "type": ["string", "null"],
                "maxLength": 64,
                "description": "Named storage class of the target host: the VM's folder is \
                    created below its folder. The host's default VM path without it",
            }),
        ),
        (
            "os_family",
            json!({
                "type": ["string", "null"],
                "enum": ["windows", "linux", "", null],
                "description": "Overrides the detection from `image_name` (case-insensitive)",
            }),
        ),
        (
            "guest_v4_ipaddr",
            text_field("Static IPv4: the address (group: static IPv4)"),
        ),
        (
            "guest_v4_cidrprefix",
            json!({
                "type": ["integer", "string", "null"],
                "minimum": 0,
                "maximum": 32,
                "pattern": "^[0-9]*$",
                "description": "Static IPv4: prefix length 0–32",
            }),
        ),
        (
            "guest_v4_defaultgw",
            text_field(
                "Static IPv4: default gateway, inside the subnet and not the address itself",
            ),
        ),
        ("guest_v4_dns1", text_field("Static IPv4: first DNS server")),
        (
            "guest_v4_dns2",
            text_field("Static IPv4 (optional member): second DNS server"),
        ),
        (
            "guest_net_dnssuffix",
            text_field("Static IPv4 (optional member): DNS suffix"),
        ),
        (
            "guest_domain_jointarget",
            text_field("Domain join (Windows): the domain to join"),
        ),
        (
            "guest_domain_joinuid",
            text_field("Domain join (Windows): the account that joins"),
        ),
        (
            "guest_domain_joinpw",
            json!({
                "type": ["string", "null"],
                "format": "password",
                "writeOnly": true,
                "description": "Domain join (Windows): the account's password (secret)",
            }),
        ),
        (
            "guest_domain_joinou",
            text_field("Domain join (Windows, optional member): the OU for the computer account"),
        ),
        (
            "cnf_ansible_ssh_user",
            text_field("Ansible SSH (Linux): the user to create"),
        ),
        (
            "cnf_ansible_ssh_key",
            text_field("Ansible SSH (Linux): one OpenSSH public key line (never a private key)"),
        ),
    ]
}

const REQUIRED_VALUES: &[&str] = &[
    "vm_name",
    "image_name",
    "gb_ram",
    "cpu_cores",
    "guest_la_uid",
    "guest_la_pw",
];

/// The all-or-none groups: (required members, optional members).
pub(super) const GROUPS: &[(&[&str], &[&str])] = &[
    (
        &[
            "guest_v4_ipaddr",
            "guest_v4_cidrprefix",
            "guest_v4_defaultgw",
            "guest_v4_dns1",
        ],
        &["guest_v4_dns2", "guest_net_dnssuffix"],
    ),
    (
        &[
            "guest_domain_jointarget",
            "guest_domain_joinuid",
            "guest_domain_joinpw",
        ],
        &["guest_domain_joinou"],
    ),
    (&["cnf_ansible_ssh_user", "cnf_ansible_ssh_key"], &[]),
];

const VALUE_RULES: &str = "Groups are all-or-none: giving any member of static IPv4 \
    (`guest_v4_*`, `guest_net_dnssuffix`), domain join (`guest_domain_*`, Windows only) or \
    Ansible SSH (`cnf_ansible_ssh_*`, Linux only) requires the group's required members; \
    fields of a group that does not apply to the guest's OS family are dropped with a warning. \
    `null`, empty and whitespace-only strings mean \"not given\"; integers may be strings of \
    digits and booleans the strings \"true\"/\"false\". Unknown fields are refused.";

/// An object schema over the schema-v1 values plus `extra` fields (required).
fn values_schema(description: &str, extra: &[(&str, Value)]) -> Value {
    let mut props = Map::new();
    let mut required: Vec<Value> = Vec::new();
    for (name, schema) in extra {
        props.insert((*name).to_owned(), schema.clone());
        required.push(Value::from(*name));
    }
    for (name, schema) in value_fields() {
        props.insert(name.to_owned(), schema);
    }
    required.extend(REQUIRED_VALUES.iter().map(|n| Value::from(*n)));
    let mut dependent = Map::new();
    for (members, optional) in GROUPS {
        for member in members.iter().chain(optional.iter()) {
            let others: Vec<Value> = members
                .iter()
                .filter(|m| *m != member)
                .map(|m| Value::from(*m))
                .collect();
            dependent.insert((*member).to_owned(), Value::Array(others));
        }
    }
    json!({
        "type": "object",
        "description": format!("{description} {VALUE_RULES}"),
        "properties": props,
        "required": required,
        "dependentRequired": dependent,
        "additionalProperties": false,
    })
}

/// `schema` with `host` and `target_cluster` not required each, but exactly one of them.
fn one_target(mut schema: Value, host: &str) -> Value {
    if let Some(required) = schema["required"].as_array_mut() {
        required.retain(|r| r != host && r != "target_cluster");
    }
    schema["oneOf"] = json!([
        { "required": [host] },
        { "required": ["target_cluster"] },
    ]);
    schema
}

fn cluster_field() -> Value {
    json!({
        "type": "string",
        "minLength": 1,
        "maxLength": 253,
        "pattern": "^\\S+$",
        "description": "A failover cluster (from the hosts' facts or `HOSTS_FILE`): the server \
            places the VM on its connected member with the most memory available that fits \
            the VM and its disk. Instead of the host field; implies `vm_clustered`.",
    })
}

fn host_field() -> Value {
    json!({
        "type": "string",
        "minLength": 1,
        "maxLength": 253,
        "pattern": "^\\S+$",
        "description": "The Hyper-V host (or cluster node): host name or address, no whitespace",
    })
}
