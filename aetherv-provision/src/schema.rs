//! Job schema v1: parsing (JSON or YAML), validation, OS family detection and the redacted view.
//!
//! # The two accepted shapes
//!
//! The job schema, used for `POST` of a provisioning job:
//!
//! ```json
//! {"schema_version": 1, "target_host": "hv01.corp.example",
//!  "values": {"vm_name": "web-01", "image_name": "Windows Server 2022", "gb_ram": 4,
//!             "cpu_cores": 2, "guest_la_uid": "Administrator", "guest_la_pw": "..."}}
//! ```
//!
//! and the flat body of `POST /api/v1/vms/create`, where the host is `hyperv_host` and the
//! values sit at the top level (no `schema_version`; it is implicitly 1):
//!
//! ```json
//! {"vm_name": "web-01", "hyperv_host": "hv01.corp.example", "image_name": "Ubuntu 24.04",
//!  "gb_ram": 4, "cpu_cores": 2, "guest_la_uid": "admin", "guest_la_pw": "..."}
//! ```
//!
//! Both become the same [`JobRequest`]. Field paths in errors follow the submitted shape:
//! `values.gb_ram` for the job schema, `gb_ram` for the flat body.
//!
//! # Fields and rules
//!
//! | field | rule |
//! | --- | --- |
//! | `schema_version` | required, must be 1 (job schema only) |
//! | `target_host` / `hyperv_host` | host name or address, no whitespace, at most 253 characters; exactly one of it and `target_cluster` is required |
//! | `target_cluster` | a cluster name (same rules); the server picks the member host ([`JobRequest::place_on`]); top level in the job schema; implies `vm_clustered` (an explicit false is an error) |
//! | `vm_name` | required; 1–64 ASCII letters, digits and hyphens, no leading or trailing hyphen; for Windows guests at most 15 characters and not only digits (it becomes the computer name) |
//! | `image_name` | required; at most 255 characters, no `/`, `\`, `..` or control characters (it names a file on cluster storage); decides the OS family |
//! | `gb_ram` | required integer 1–512 |
//! | `cpu_cores` | required integer 1–64 |
//! | `disk_size_gb` | optional integer 1–65536 (GiB): the system disk is expanded to this size before the first boot; not smaller than the image's virtual size |
//! | `guest_la_uid` | required; on Windows at most 20 characters and none of `" / \ [ ] : ; \| = , + * ? < > @`; on Linux at most 32 characters, no whitespace, `:` or `/` |
//! | `guest_la_pw` | required secret |
//! | `vlan_id` | optional integer 0–4094 (0 means untagged) |
//! | `vm_clustered` | optional boolean (also the strings `"Yes"`/`"No"`, case-insensitive), default false (true with `target_cluster`) |
//! | `os_family` | optional `windows` or `linux`; overrides detection from `image_name` |
//! | `network` | optional name (at most 64 characters) of a network defined for the target host; checked against the host ([`crate::resources`]) |
//! | `storage_class` | optional name (at most 64 characters) of a storage class defined for the target host |
//!
//! Groups are all-or-none: giving any member requires the group's required members.
//!
//! | group | required members | optional members | applies to |
//! | --- | --- | --- | --- |
//! | static IPv4 | `guest_v4_ipaddr`, `guest_v4_cidrprefix` (0–32), `guest_v4_defaultgw` (inside the subnet, not the address itself), `guest_v4_dns1` | `guest_v4_dns2`, `guest_net_dnssuffix` | both |
//! | domain join | `guest_domain_jointarget`, `guest_domain_joinuid`, `guest_domain_joinpw` (secret) | `guest_domain_joinou` | Windows |
//! | Ansible SSH | `cnf_ansible_ssh_user`, `cnf_ansible_ssh_key` (one OpenSSH public key line; never a private key) | — | Linux |
//!
//! Fields of a group that does not apply to the guest's OS family are dropped and reported as a
//! warning in [`Validated::warnings`], not as an error.
//!
//! Input conventions: `null`, an empty string and a whitespace-only string all mean "not given"
//! (the old forms send empty strings for unset fields); surrounding whitespace is trimmed from
//! every non-secret text value (never from secrets); integers may be given as JSON/YAML numbers
//! or as strings of digits (the old AWX extra vars were strings); booleans as `true`/`false` or
//! the strings `"true"`/`"false"`. Every text value that is handed to the guest must fit the
//! KVP limit of [`MAX_VALUE_CHARS`](crate::kvp::MAX_VALUE_CHARS) characters and contain no
//! control characters.
//!
//! # Errors
//!
//! Validation reports every problem it finds at once, each a
//! [`FieldError`](crate::error::FieldError). Problems the parser meets (malformed JSON/YAML,
//! unknown or duplicate fields, `values` not being a mapping) stop parsing and are reported
//! alone, naming the field where the parser knows it. Type mismatches in field values (a string
//! where a number belongs) are validation problems and are reported together with the rest.
//! Messages never contain secret values.
//!
//! # Layout
//!
//! - `types`: the public request types ([`JobRequest`], [`ProvisionValues`], the groups,
//!   [`Validated`], [`BodyFormat`]), their entry points and the redacted serialisation.
//! - `parse`: the JSON and YAML body readers and the translation of parser errors.
//! - `raw`: the document as submitted ([`Deserialize`](serde::Deserialize) types that accept
//!   any scalar, so that type problems become validation problems).
//! - `check`: the problem collector and the typed field readers.
//! - `validate`: the two shapes, the required fields and the order of reported problems.
//! - `os`: the OS family (explicit or detected) and the groups dropped for the other family.
//! - `rules`: the VM name and local administrator rules that depend on the OS family.
//! - `disk`: `disk_size_gb` against the image's virtual size ([`check_disk_size`]).
//! - `groups`: the all-or-none groups (static IPv4, domain join, Ansible SSH).
//! - `nesting`: the linear pre-scan bounding `[...]`/`{...}` nesting before a parser runs
//!   ([`check_nesting`]).

mod check;
mod disk;
mod groups;
mod nesting;
mod os;
mod parse;
mod raw;
mod rules;
mod types;
mod validate;

pub use disk::{check_disk_size, describe_bytes};
pub use nesting::{MAX_NESTING, NestingError, check_nesting};
pub use parse::{MAX_YAML_BYTES, yaml_too_large};
pub use types::{
    AnsibleSsh, BodyFormat, DomainJoin, JobRequest, ProvisionValues, StaticIpv4, Validated,
};

/// The only schema version this crate accepts.
pub const SCHEMA_VERSION: u32 = 1;

pub use aetherv_hyperv::os::{LINUX_IMAGE_PREFIXES, WINDOWS_IMAGE_PREFIXES};

/// The largest `disk_size_gb`: a VHDX holds at most 64 TiB.
pub const MAX_DISK_SIZE_GB: u32 = 65_536;

const MAX_VM_NAME: usize = 64;
const MAX_WINDOWS_COMPUTER_NAME: usize = 15;
const MAX_IMAGE_NAME: usize = 255;
const MAX_HOST_NAME: usize = 253;
const MAX_WINDOWS_USER: usize = 20;
const MAX_LINUX_USER: usize = 32;
const WINDOWS_USER_FORBIDDEN: &[char] = &[
    '"', '/', '\\', '[', ']', ':', ';', '|', '=', ',', '+', '*', '?', '<', '>', '@',
];

/// The guest operating system family (one definition, shared with the Hyper-V layer and its
/// simulator).
pub use aetherv_hyperv::OsFamily;
