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
//! | `target_host` / `hyperv_host` | required; host name or address, no whitespace, at most 253 characters |
//! | `vm_name` | required; 1–64 ASCII letters, digits and hyphens, no leading or trailing hyphen; for Windows guests at most 15 characters and not only digits (it becomes the computer name) |
//! | `image_name` | required; at most 255 characters, no `/`, `\`, `..` or control characters (it names a file on cluster storage); decides the OS family |
//! | `gb_ram` | required integer 1–512 |
//! | `cpu_cores` | required integer 1–64 |
//! | `guest_la_uid` | required; on Windows at most 20 characters and none of `" / \ [ ] : ; \| = , + * ? < > @`; on Linux at most 32 characters, no whitespace, `:` or `/` |
//! | `guest_la_pw` | required secret |
//! | `vlan_id` | optional integer 0–4094 (0 means untagged) |
//! | `vm_clustered` | optional boolean, default false |
//! | `os_family` | optional `windows` or `linux`; overrides detection from `image_name` |
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
//! KVP limit of [`MAX_VALUE_CHARS`] characters and contain no
//! control characters.
//!
//! # Errors
//!
//! Validation reports every problem it finds at once, each a [`FieldError`]. Problems the
//! parser meets (malformed JSON/YAML, unknown or duplicate fields, `values` not being a mapping)
//! stop parsing and are reported alone, naming the field where the parser knows it. Type
//! mismatches in field values (a string where a number belongs) are validation problems and are
//! reported together with the rest. Messages never contain secret values.

use std::fmt;
use std::net::Ipv4Addr;

use aetherv_winrm::Secret;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::error::{Error, FieldError, Result};
use crate::kvp::MAX_VALUE_CHARS;

/// The only schema version this crate accepts.
pub const SCHEMA_VERSION: u32 = 1;

pub use aetherv_hyperv::os::{LINUX_IMAGE_PREFIXES, WINDOWS_IMAGE_PREFIXES};

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

/// Parses an explicit `os_family` (`windows` or `linux`, case-insensitive).
fn parse_os_family(s: &str) -> std::result::Result<OsFamily, FieldError> {
    OsFamily::parse(s).ok_or_else(|| {
        FieldError::new(
            "os_family",
            format!("must be \"windows\" or \"linux\", got {}", quoted(s.trim())),
        )
    })
}

/// A validated provisioning job: where to create the VM and how to configure it.
///
/// `Debug` never shows secrets (they are [`Secret`]s), and serialising it — including
/// [`JobRequest::redacted`] — writes every secret as `"***"`, so the serialised form is safe for
/// job records and API responses but cannot be used to re-submit the job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobRequest {
    /// Always [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The Hyper-V host (or cluster node) to create the VM on.
    pub target_host: String,
    /// What to create and how to configure the guest.
    pub values: ProvisionValues,
}

/// The validated `values` of a job. Groups are `Some` only when given and applicable to
/// [`os_family`](Self::os_family), so a consumer never sees half a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProvisionValues {
    /// VM name; also the guest's host name.
    pub vm_name: String,
    /// Golden image to copy.
    pub image_name: String,
    /// Memory in GiB (1–512).
    pub gb_ram: u32,
    /// Virtual processors (1–64).
    pub cpu_cores: u32,
    /// Local administrator account name.
    pub guest_la_uid: String,
    /// Local administrator password.
    #[serde(serialize_with = "redact")]
    pub guest_la_pw: Secret,
    /// Static IPv4 configuration; DHCP when `None`.
    #[serde(flatten)]
    pub static_ipv4: Option<StaticIpv4>,
    /// Access VLAN of the network adapter (0 means untagged); none when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vlan_id: Option<u16>,
    /// Active Directory domain join (Windows guests only).
    #[serde(flatten)]
    pub domain_join: Option<DomainJoin>,
    /// Account for Ansible to log in with (Linux guests only).
    #[serde(flatten)]
    pub ansible_ssh: Option<AnsibleSsh>,
    /// Whether to add the VM as a failover cluster role.
    pub vm_clustered: bool,
    /// The guest OS family: `os_family` if given, otherwise detected from `image_name`.
    pub os_family: OsFamily,
}

/// The static IPv4 group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StaticIpv4 {
    /// The guest's address.
    pub guest_v4_ipaddr: Ipv4Addr,
    /// Prefix length of the subnet (0–32).
    pub guest_v4_cidrprefix: u8,
    /// Default gateway, inside the subnet.
    pub guest_v4_defaultgw: Ipv4Addr,
    /// Primary DNS server.
    pub guest_v4_dns1: Ipv4Addr,
    /// Secondary DNS server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_v4_dns2: Option<Ipv4Addr>,
    /// DNS search suffix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_net_dnssuffix: Option<String>,
}

/// The domain join group (Windows guests).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DomainJoin {
    /// Domain to join, e.g. `corp.example`.
    pub guest_domain_jointarget: String,
    /// Account allowed to join computers to the domain.
    pub guest_domain_joinuid: String,
    /// Its password.
    #[serde(serialize_with = "redact")]
    pub guest_domain_joinpw: Secret,
    /// Organisational unit for the computer account; the domain's default when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_domain_joinou: Option<String>,
}

/// The Ansible SSH group (Linux guests). The key is a public key and not a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AnsibleSsh {
    /// User to create for Ansible.
    pub cnf_ansible_ssh_user: String,
    /// OpenSSH public key line authorised for that user.
    pub cnf_ansible_ssh_key: String,
}

fn redact<S: Serializer>(_: &Secret, serializer: S) -> std::result::Result<S::Ok, S::Error> {
    serializer.serialize_str("***")
}

/// A request that passed validation, with the warnings validation produced (fields dropped
/// because they do not apply to the guest's OS family, an `os_family` override that disagrees
/// with the image name). Warnings belong in the job log; they never contain values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validated {
    /// The validated request.
    pub request: JobRequest,
    /// Human-readable warnings, in schema order.
    pub warnings: Vec<String>,
}

impl Validated {
    /// [`JobRequest::redacted`] of the request.
    pub fn redacted(&self) -> serde_json::Value {
        self.request.redacted()
    }
}

/// The document format of a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

impl BodyFormat {
    /// Picks the format from a `Content-Type` value if it names one (`…json` or `…yaml`/
    /// `…yml`, e.g. `application/json; charset=utf-8`, `application/yaml`, `text/x-yaml`),
    /// otherwise from the body: JSON if its first non-whitespace character is `{`, else YAML.
    pub fn detect(body: &str, content_type_hint: Option<&str>) -> Self {
        if let Some(hint) = content_type_hint {
            let media = hint
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            if media.ends_with("json") {
                return Self::Json;
            }
            if media.ends_with("yaml") || media.ends_with("yml") {
                return Self::Yaml;
            }
        }
        if body.trim_start().starts_with('{') {
            Self::Json
        } else {
            Self::Yaml
        }
    }
}

impl JobRequest {
    /// Parses and validates a job-schema document in JSON.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] with every problem found.
    pub fn from_json(body: &str) -> Result<Validated> {
        validate_job(parse_json::<RawJob>(body, Shape::Job)?)
    }

    /// Parses and validates a job-schema document in YAML.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] with every problem found.
    pub fn from_yaml(body: &str) -> Result<Validated> {
        validate_job(parse_yaml::<RawJob>(body, Shape::Job)?)
    }

    /// Parses and validates a job-schema document in the format [`BodyFormat::detect`] picks.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] with every problem found.
    pub fn parse(body: &str, content_type_hint: Option<&str>) -> Result<Validated> {
        match BodyFormat::detect(body, content_type_hint) {
            BodyFormat::Json => Self::from_json(body),
            BodyFormat::Yaml => Self::from_yaml(body),
        }
    }

    /// Parses and validates the flat JSON body of `POST /api/v1/vms/create`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] with every problem found; field paths have no `values.`
    /// prefix.
    pub fn from_flat_json(body: &str) -> Result<Validated> {
        validate_flat(parse_json::<RawValues>(body, Shape::Flat)?)
    }

    /// Parses and validates the flat body of `POST /api/v1/vms/create` written as YAML.
    ///
    /// # Errors
    ///
    /// As [`JobRequest::from_flat_json`].
    pub fn from_flat_yaml(body: &str) -> Result<Validated> {
        validate_flat(parse_yaml::<RawValues>(body, Shape::Flat)?)
    }

    /// Parses and validates a flat body in the format [`BodyFormat::detect`] picks.
    ///
    /// # Errors
    ///
    /// As [`JobRequest::from_flat_json`].
    pub fn parse_flat(body: &str, content_type_hint: Option<&str>) -> Result<Validated> {
        match BodyFormat::detect(body, content_type_hint) {
            BodyFormat::Json => Self::from_flat_json(body),
            BodyFormat::Yaml => Self::from_flat_yaml(body),
        }
    }

    /// The request in job-schema shape as JSON, every secret replaced by `"***"`: safe for job
    /// records, logs and API responses. `os_family` is always present (the resolved family).
    pub fn redacted(&self) -> serde_json::Value {
        // Serialising plain strings, numbers and addresses into a `Value` cannot fail; the
        // fallback only keeps this function total.
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

/// Field name used for problems with the document as a whole.
const BODY: &str = "body";

fn parse_json<T: for<'de> Deserialize<'de>>(body: &str, shape: Shape) -> Result<T> {
    let mut deserializer = serde_json::Deserializer::from_str(body);
    let value = serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|e| parse_error(shape, path_of(e.path()), &e.inner().to_string()))?;
    deserializer
        .end()
        .map_err(|e| parse_error(shape, None, &e.to_string()))?;
    Ok(value)
}

fn parse_yaml<T: for<'de> Deserialize<'de>>(body: &str, shape: Shape) -> Result<T> {
    serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(body))
        .map_err(|e| parse_error(shape, path_of(e.path()), &e.inner().to_string()))
}

/// Which document shape is being parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// `{schema_version, target_host, values}`.
    Job,
    /// The flat create body.
    Flat,
}

/// The parser's path as text without unknown (`?`) segments, `None` at the document root.
fn path_of(path: &serde_path_to_error::Path) -> Option<String> {
    let mut text = path.to_string();
    while let Some(rest) = text.strip_suffix(".?") {
        text.truncate(rest.len());
    }
    (!text.is_empty() && text != "." && text != "?").then_some(text)
}

/// Turns a parser error into a single [`FieldError`]: unknown and duplicate fields are named
/// by their own path, everything else by the path the parser had reached (or `body`).
fn parse_error(shape: Shape, parent: Option<String>, message: &str) -> Error {
    // serde_yaml puts its own path in front of the message ("values: unknown field ...").
    let message = match (&parent, message.split_once(": ")) {
        (Some(parent), Some((head, rest)))
            if parent == head || parent.starts_with(&format!("{head}.")) =>
        {
            rest
        }
        _ => message,
    };
    // The path may or may not already end with the offending field's name.
    let join = |name: &str| match &parent {
        _ if name.is_empty() => match &parent {
            Some(parent) => format!("{parent}.\"\""),
            None => "\"\"".to_owned(),
        },
        Some(parent) if parent == name || parent.ends_with(&format!(".{name}")) => parent.clone(),
        Some(parent) => format!("{parent}.{name}"),
        None => name.to_owned(),
    };
    let error = if let Some(rest) = message.strip_prefix("unknown field `") {
        let (name, tail) = rest.split_once('`').unwrap_or((rest, ""));
        let detail = if name == "hyperv_host" && shape == Shape::Job {
            "; the job schema takes the host as target_host".to_owned()
        } else if shape == Shape::Job {
            // `hyperv_host` is only a field of the flat body.
            tail.replacen("`hyperv_host`, ", "", 1)
        } else {
            tail.to_owned()
        };
        FieldError::new(join(name), format!("unknown field{detail}"))
    } else if let Some(rest) = message.strip_prefix("duplicate field `") {
        let (name, tail) = rest.split_once('`').unwrap_or((rest, ""));
        FieldError::new(join(name), format!("given more than once{tail}"))
    } else {
        FieldError::new(parent.unwrap_or_else(|| BODY.to_owned()), message)
    };
    Error::InvalidRequest {
        errors: vec![error],
    }
}

/// The job schema as submitted, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a job request mapping")]
struct RawJob {
    schema_version: Option<Scalar>,
    target_host: Option<Scalar>,
    values: Option<RawValues>,
}

/// `values` as submitted (also the flat create body, which adds `hyperv_host`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of provisioning values")]
struct RawValues {
    hyperv_host: Option<Scalar>,
    vm_name: Option<Scalar>,
    image_name: Option<Scalar>,
    gb_ram: Option<Scalar>,
    cpu_cores: Option<Scalar>,
    guest_la_uid: Option<Scalar>,
    guest_la_pw: Option<SecretScalar>,
    guest_v4_ipaddr: Option<Scalar>,
    guest_v4_cidrprefix: Option<Scalar>,
    guest_v4_defaultgw: Option<Scalar>,
    guest_v4_dns1: Option<Scalar>,
    guest_v4_dns2: Option<Scalar>,
    guest_net_dnssuffix: Option<Scalar>,
    vlan_id: Option<Scalar>,
    guest_domain_jointarget: Option<Scalar>,
    guest_domain_joinuid: Option<Scalar>,
    guest_domain_joinpw: Option<SecretScalar>,
    guest_domain_joinou: Option<Scalar>,
    cnf_ansible_ssh_user: Option<Scalar>,
    cnf_ansible_ssh_key: Option<Scalar>,
    vm_clustered: Option<Scalar>,
    os_family: Option<Scalar>,
}

/// Any scalar a field can hold; type checking happens in validation so that a wrong type is
/// one problem among all the others instead of the end of parsing.
#[derive(Debug)]
enum Scalar {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    /// A list or mapping where a scalar belongs.
    Other(&'static str),
}

impl Scalar {
    fn describe(&self) -> String {
        match self {
            Self::Null => "null".to_owned(),
            Self::Bool(b) => format!("boolean {b}"),
            Self::Int(i) => format!("number {i}"),
            Self::Float(f) => format!("number {f}"),
            Self::Str(s) => format!("string {}", quoted(s)),
            Self::Other(kind) => (*kind).to_owned(),
        }
    }
}

/// A secret field as submitted: the string goes straight into a [`Secret`]; for anything else
/// only the kind is kept, so no message can ever echo it.
#[derive(Debug)]
enum SecretScalar {
    Null,
    Str(Secret),
    Other(&'static str),
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, number or boolean")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> std::result::Result<Scalar, E> {
        Ok(Scalar::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<Scalar, E> {
        Ok(Scalar::Int(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<Scalar, E> {
        Ok(Scalar::Int(v.into()))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> std::result::Result<Scalar, E> {
        Ok(Scalar::Int(v))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> std::result::Result<Scalar, E> {
        Ok(i128::try_from(v).map_or(Scalar::Other("a number too large"), Scalar::Int))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<Scalar, E> {
        Ok(Scalar::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Scalar, E> {
        Ok(Scalar::Str(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> std::result::Result<Scalar, E> {
        Ok(Scalar::Str(v))
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> std::result::Result<Scalar, E> {
        Ok(Scalar::Other("bytes"))
    }

    fn visit_none<E: de::Error>(self) -> std::result::Result<Scalar, E> {
        Ok(Scalar::Null)
    }

    fn visit_unit<E: de::Error>(self) -> std::result::Result<Scalar, E> {
        Ok(Scalar::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Scalar, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Scalar, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Scalar, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other("a list"))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Scalar, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other("a mapping"))
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

struct SecretVisitor;

impl<'de> Visitor<'de> for SecretVisitor {
    type Value = SecretScalar;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> std::result::Result<SecretScalar, E> {
        Ok(SecretScalar::Other("a boolean"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> std::result::Result<SecretScalar, E> {
        Ok(SecretScalar::Other("a number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> std::result::Result<SecretScalar, E> {
        Ok(SecretScalar::Other("a number"))
    }

    fn visit_i128<E: de::Error>(self, _: i128) -> std::result::Result<SecretScalar, E> {
        Ok(SecretScalar::Other("a number"))
    }

    fn visit_u128<E: de::Error>(self, _: u128) -> std::result::Result<SecretScalar, E> {
        Ok(SecretScalar::Other("a number"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> std::result::Result<SecretScalar, E> {
        Ok(SecretScalar::Other("a number"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<SecretScalar, E> {
        Ok(SecretScalar::Str(Secret::new(v)))
    }

    fn visit_string<E: de::Error>(self, v: String) -> std::result::Result<SecretScalar, E> {
        Ok(SecretScalar::Str(Secret::new(v)))
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> std::result::Result<SecretScalar, E> {
        Ok(SecretScalar::Other("bytes"))
    }

    fn visit_none<E: de::Error>(self) -> std::result::Result<SecretScalar, E> {
        Ok(SecretScalar::Null)
    }

    fn visit_unit<E: de::Error>(self) -> std::result::Result<SecretScalar, E> {
        Ok(SecretScalar::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> std::result::Result<SecretScalar, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<SecretScalar, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<SecretScalar, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(SecretScalar::Other("a list"))
    }

    fn visit_map<A: MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<SecretScalar, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(SecretScalar::Other("a mapping"))
    }
}

impl<'de> Deserialize<'de> for SecretScalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(SecretVisitor)
    }
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

/// The outcome of reading one field.
enum Got<T> {
    /// Not given (missing, null, empty or blank).
    Absent,
    /// Given but unusable; the problem is already recorded.
    Invalid,
    /// Given and well-typed.
    Value(T),
}

impl<T> Got<T> {
    fn is_given(&self) -> bool {
        !matches!(self, Self::Absent)
    }

    fn value(self) -> Option<T> {
        match self {
            Self::Value(v) => Some(v),
            Self::Absent | Self::Invalid => None,
        }
    }
}

/// Collects problems; `prefix` is `values.` for the job schema and empty for the flat body.
struct Check {
    prefix: &'static str,
    errors: Vec<FieldError>,
    warnings: Vec<String>,
}

impl Check {
    fn path(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn fail(&mut self, name: &str, message: impl Into<String>) {
        let field = self.path(name);
        self.errors.push(FieldError::new(field, message));
    }

    fn text(&mut self, name: &str, value: Option<Scalar>) -> Got<String> {
        match value {
            None | Some(Scalar::Null) => Got::Absent,
            Some(Scalar::Str(s)) => {
                let trimmed = s.trim();
                if trimmed.is_empty() {
                    Got::Absent
                } else {
                    Got::Value(trimmed.to_owned())
                }
            }
            Some(other) => {
                self.fail(name, format!("must be a string, got {}", other.describe()));
                Got::Invalid
            }
        }
    }

    fn secret(&mut self, name: &str, value: Option<SecretScalar>) -> Got<Secret> {
        match value {
            None | Some(SecretScalar::Null) => Got::Absent,
            Some(SecretScalar::Str(s)) if s.expose().trim().is_empty() => Got::Absent,
            Some(SecretScalar::Str(s)) => {
                if s.expose().chars().any(char::is_control) {
                    self.fail(name, "must not contain control characters");
                    Got::Invalid
                } else if s.expose().chars().count() > MAX_VALUE_CHARS {
                    self.fail(
                        name,
                        format!("must be at most {MAX_VALUE_CHARS} characters"),
                    );
                    Got::Invalid
                } else {
                    Got::Value(s)
                }
            }
            Some(SecretScalar::Other(kind)) => {
                // Never echo the value of a secret field, whatever its type.
                self.fail(
                    name,
                    format!("must be a string, got {kind}; quote the value"),
                );
                Got::Invalid
            }
        }
    }

    fn int(&mut self, name: &str, value: Option<Scalar>) -> Got<i128> {
        match value {
            None | Some(Scalar::Null) => Got::Absent,
            Some(Scalar::Int(i)) => Got::Value(i),
            Some(Scalar::Str(s)) if s.trim().is_empty() => Got::Absent,
            Some(Scalar::Str(s)) => match s.trim().parse::<i128>() {
                Ok(i) => Got::Value(i),
                Err(_) => {
                    self.fail(
                        name,
                        format!("must be a whole number, got string {}", quoted(&s)),
                    );
                    Got::Invalid
                }
            },
            Some(other) => {
                self.fail(
                    name,
                    format!("must be a whole number, got {}", other.describe()),
                );
                Got::Invalid
            }
        }
    }

    fn ranged<T: TryFrom<i128>>(
        &mut self,
        name: &str,
        value: Option<Scalar>,
        min: i128,
        max: i128,
    ) -> Got<T> {
        match self.int(name, value) {
            Got::Value(v) if (min..=max).contains(&v) => match T::try_from(v) {
                Ok(v) => Got::Value(v),
                Err(_) => {
                    self.fail(name, format!("must be between {min} and {max}, got {v}"));
                    Got::Invalid
                }
            },
            Got::Value(v) => {
                self.fail(name, format!("must be between {min} and {max}, got {v}"));
                Got::Invalid
            }
            Got::Absent => Got::Absent,
            Got::Invalid => Got::Invalid,
        }
    }

    fn boolean(&mut self, name: &str, value: Option<Scalar>) -> Got<bool> {
        match value {
            None | Some(Scalar::Null) => Got::Absent,
            Some(Scalar::Bool(b)) => Got::Value(b),
            Some(Scalar::Str(s)) if s.trim().is_empty() => Got::Absent,
            Some(Scalar::Str(s)) if s.trim().eq_ignore_ascii_case("true") => Got::Value(true),
            Some(Scalar::Str(s)) if s.trim().eq_ignore_ascii_case("false") => Got::Value(false),
            Some(other) => {
                self.fail(
                    name,
                    format!("must be true or false, got {}", other.describe()),
                );
                Got::Invalid
            }
        }
    }

    fn ipv4(&mut self, name: &str, value: Option<Scalar>) -> Got<Ipv4Addr> {
        match self.text(name, value) {
            Got::Value(s) => match s.parse::<Ipv4Addr>() {
                Ok(ip) => Got::Value(ip),
                Err(_) => {
                    self.fail(
                        name,
                        format!(
                            "must be an IPv4 address such as 192.0.2.10, got {}",
                            quoted(&s)
                        ),
                    );
                    Got::Invalid
                }
            },
            Got::Absent => Got::Absent,
            Got::Invalid => Got::Invalid,
        }
    }

    /// Rules every guest-bound text value follows.
    fn guest_text(&mut self, name: &str, value: Got<String>) -> Got<String> {
        match value {
            Got::Value(s) if s.chars().any(char::is_control) => {
                self.fail(name, "must not contain control characters");
                Got::Invalid
            }
            Got::Value(s) if s.chars().count() > MAX_VALUE_CHARS => {
                self.fail(
                    name,
                    format!(
                        "must be at most {MAX_VALUE_CHARS} characters, got {}",
                        s.chars().count()
                    ),
                );
                Got::Invalid
            }
            other => other,
        }
    }

    /// A guest-bound text value that must be one word (no whitespace) of at most `max`
    /// characters.
    fn word(&mut self, name: &str, value: Option<Scalar>, max: usize) -> Got<String> {
        let value = self.text(name, value);
        match self.guest_text(name, value) {
            Got::Value(s) if s.chars().any(char::is_whitespace) => {
                self.fail(name, "must not contain whitespace");
                Got::Invalid
            }
            Got::Value(s) if s.chars().count() > max => {
                self.fail(
                    name,
                    format!(
                        "must be at most {max} characters, got {}",
                        s.chars().count()
                    ),
                );
                Got::Invalid
            }
            other => other,
        }
    }

    fn require<T>(&mut self, name: &str, value: Got<T>) -> Option<T> {
        if matches!(value, Got::Absent) {
            self.fail(name, "is required");
        }
        value.value()
    }
}

fn validate_job(raw: RawJob) -> Result<Validated> {
    let mut check = Check {
        prefix: "",
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    match check.int("schema_version", raw.schema_version) {
        Got::Absent => check.fail(
            "schema_version",
            format!("is required (this service accepts {SCHEMA_VERSION})"),
        ),
        Got::Value(v) if v != i128::from(SCHEMA_VERSION) => check.fail(
            "schema_version",
            format!("unsupported schema version {v}; this service accepts {SCHEMA_VERSION}"),
        ),
        Got::Value(_) | Got::Invalid => {}
    }
    let host = host_name(&mut check, "target_host", raw.target_host);
    check.prefix = "values.";
    let values = match raw.values {
        Some(mut values) => {
            if values.hyperv_host.take().is_some() {
                check.fail(
                    "hyperv_host",
                    "unknown field; the job schema takes the host as target_host",
                );
            }
            validate_values(&mut check, values)
        }
        None => {
            check.prefix = "";
            check.fail("values", "is required");
            None
        }
    };
    finish(check, host, values)
}

fn validate_flat(mut raw: RawValues) -> Result<Validated> {
    let mut check = Check {
        prefix: "",
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let host = host_name(&mut check, "hyperv_host", raw.hyperv_host.take());
    let values = validate_values(&mut check, raw);
    finish(check, host, values)
}

fn finish(
    check: Check,
    host: Option<String>,
    values: Option<ProvisionValues>,
) -> Result<Validated> {
    match (host, values) {
        (Some(target_host), Some(values)) if check.errors.is_empty() => Ok(Validated {
            request: JobRequest {
                schema_version: SCHEMA_VERSION,
                target_host,
                values,
            },
            warnings: check.warnings,
        }),
        _ => {
            let mut errors = check.errors;
            errors.sort_by_key(|e| field_rank(&e.field));
            Err(Error::InvalidRequest { errors })
        }
    }
}

fn host_name(check: &mut Check, name: &str, value: Option<Scalar>) -> Option<String> {
    let value = check.text(name, value);
    let value = match value {
        Got::Value(s) if s.chars().any(|c| c.is_whitespace() || c.is_control()) => {
            check.fail(name, "must be a host name or address without whitespace");
            Got::Invalid
        }
        Got::Value(s) if s.len() > MAX_HOST_NAME => {
            check.fail(
                name,
                format!(
                    "must be at most {MAX_HOST_NAME} characters, got {}",
                    s.len()
                ),
            );
            Got::Invalid
        }
        other => other,
    };
    check.require(name, value)
}

fn validate_values(check: &mut Check, raw: RawValues) -> Option<ProvisionValues> {
    // Read every field first (type problems), then apply the rules.
    let vm_name = check.text("vm_name", raw.vm_name);
    let image_name = check.text("image_name", raw.image_name);
    let gb_ram = check.ranged::<u32>("gb_ram", raw.gb_ram, 1, 512);
    let cpu_cores = check.ranged::<u32>("cpu_cores", raw.cpu_cores, 1, 64);
    let guest_la_uid = check.text("guest_la_uid", raw.guest_la_uid);
    let guest_la_pw = check.secret("guest_la_pw", raw.guest_la_pw);
    let vlan_id = check.ranged::<u16>("vlan_id", raw.vlan_id, 0, 4094);
    let vm_clustered = check.boolean("vm_clustered", raw.vm_clustered);
    let os_override = match check.text("os_family", raw.os_family) {
        Got::Value(s) => match parse_os_family(&s) {
            Ok(family) => Got::Value(family),
            Err(e) => {
                check.fail("os_family", e.message);
                Got::Invalid
            }
        },
        Got::Absent => Got::Absent,
        Got::Invalid => Got::Invalid,
    };

    // OS family: the override wins; otherwise the image name decides.
    let image_name = match image_name {
        Got::Value(name) => {
            if name.chars().count() > MAX_IMAGE_NAME {
                check.fail(
                    "image_name",
                    format!("must be at most {MAX_IMAGE_NAME} characters"),
                );
                Got::Invalid
            } else if name.chars().any(char::is_control)
                || name.contains(['/', '\\'])
                || name.contains("..")
            {
                check.fail(
                    "image_name",
                    "must not contain '/', '\\', '..' or control characters (it names an image \
                     file on cluster storage)",
                );
                Got::Invalid
            } else {
                Got::Value(name)
            }
        }
        other => other,
    };
    let detected = match &image_name {
        Got::Value(name) => OsFamily::detect(name),
        Got::Absent | Got::Invalid => None,
    };
    let os_family = match (&os_override, detected) {
        (Got::Value(chosen), Some(detected)) => {
            if *chosen != detected {
                check.warnings.push(format!(
                    "{} {chosen} overrides {detected} detected from {}",
                    check.path("os_family"),
                    check.path("image_name")
                ));
            }
            Some(*chosen)
        }
        (Got::Value(chosen), None) => Some(*chosen),
        (_, Some(detected)) => Some(detected),
        (Got::Absent, None) => {
            if matches!(image_name, Got::Value(_)) {
                check.fail(
                    "image_name",
                    format!(
                        "cannot tell the guest OS family from the image name (known prefixes: \
                         {}); set {} to \"windows\" or \"linux\"",
                        WINDOWS_IMAGE_PREFIXES
                            .iter()
                            .chain(LINUX_IMAGE_PREFIXES)
                            .copied()
                            .collect::<Vec<_>>()
                            .join(", "),
                        check.path("os_family")
                    ),
                );
            }
            None
        }
        (Got::Invalid, None) => None,
    };

    let vm_name = vm_name_rules(check, vm_name, os_family);
    let guest_la_uid = local_admin_rules(check, guest_la_uid, os_family);

    let static_ipv4 = static_ipv4_group(
        check,
        RawIpv4 {
            ip: raw.guest_v4_ipaddr,
            prefix: raw.guest_v4_cidrprefix,
            gateway: raw.guest_v4_defaultgw,
            dns1: raw.guest_v4_dns1,
            dns2: raw.guest_v4_dns2,
            suffix: raw.guest_net_dnssuffix,
        },
    );
    let domain = RawDomain {
        target: raw.guest_domain_jointarget,
        uid: raw.guest_domain_joinuid,
        password: raw.guest_domain_joinpw,
        ou: raw.guest_domain_joinou,
    };
    let domain_join = if os_family == Some(OsFamily::Linux) {
        let given = domain.given();
        drop_group(
            check,
            &given,
            "domain join",
            OsFamily::Windows,
            OsFamily::Linux,
        );
        None
    } else {
        domain_group(check, domain)
    };
    let ssh = RawSsh {
        user: raw.cnf_ansible_ssh_user,
        key: raw.cnf_ansible_ssh_key,
    };
    let ansible_ssh = if os_family == Some(OsFamily::Windows) {
        let given = ssh.given();
        drop_group(
            check,
            &given,
            "Ansible SSH",
            OsFamily::Linux,
            OsFamily::Windows,
        );
        None
    } else {
        ssh_group(check, ssh)
    };

    // Required fields last, so that every problem above is already recorded.
    let vm_name = check.require("vm_name", vm_name);
    let image_name = check.require("image_name", image_name);
    let gb_ram = check.require("gb_ram", gb_ram);
    let cpu_cores = check.require("cpu_cores", cpu_cores);
    let guest_la_uid = check.require("guest_la_uid", guest_la_uid);
    let guest_la_pw = check.require("guest_la_pw", guest_la_pw);
    let vlan_id = vlan_id.value();
    let vm_clustered = vm_clustered.value().unwrap_or(false);
    Some(ProvisionValues {
        vm_name: vm_name?,
        image_name: image_name?,
        gb_ram: gb_ram?,
        cpu_cores: cpu_cores?,
        guest_la_uid: guest_la_uid?,
        guest_la_pw: guest_la_pw?,
        static_ipv4,
        vlan_id,
        domain_join,
        ansible_ssh,
        vm_clustered,
        os_family: os_family?,
    })
}

fn vm_name_rules(check: &mut Check, name: Got<String>, family: Option<OsFamily>) -> Got<String> {
    const FIELD: &str = "vm_name";
    let Got::Value(name) = name else {
        return name;
    };
    let before = check.errors.len();
    let len = name.chars().count();
    if len > MAX_VM_NAME {
        check.fail(
            FIELD,
            format!("must be at most {MAX_VM_NAME} characters, got {len}"),
        );
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        check.fail(
            FIELD,
            format!("may contain only letters, digits and hyphens, found {c:?}"),
        );
    }
    if name.starts_with('-') || name.ends_with('-') {
        check.fail(FIELD, "must not start or end with a hyphen");
    }
    if family == Some(OsFamily::Windows) {
        if len > MAX_WINDOWS_COMPUTER_NAME {
            check.fail(
                FIELD,
                format!(
                    "must be at most {MAX_WINDOWS_COMPUTER_NAME} characters for a windows guest \
                     (it becomes the computer name), got {len}"
                ),
            );
        }
        if name.chars().all(|c| c.is_ascii_digit()) {
            check.fail(
                FIELD,
                "must not be only digits for a windows guest (windows refuses numeric computer \
                 names)",
            );
        }
    }
    if check.errors.len() == before {
        Got::Value(name)
    } else {
        Got::Invalid
    }
}

fn local_admin_rules(check: &mut Check, uid: Got<String>, family: Option<OsFamily>) -> Got<String> {
    const FIELD: &str = "guest_la_uid";
    let uid = match check.guest_text(FIELD, uid) {
        Got::Value(uid) => uid,
        other => return other,
    };
    let before = check.errors.len();
    let len = uid.chars().count();
    match family {
        Some(OsFamily::Windows) => {
            if len > MAX_WINDOWS_USER {
                check.fail(
                    FIELD,
                    format!(
                        "must be at most {MAX_WINDOWS_USER} characters for a windows guest, got \
                         {len}"
                    ),
                );
            }
            if uid.contains(WINDOWS_USER_FORBIDDEN) {
                check.fail(
                    FIELD,
                    "must not contain any of \" / \\ [ ] : ; | = , + * ? < > @ for a windows guest",
                );
            }
        }
        Some(OsFamily::Linux) => {
            if len > MAX_LINUX_USER {
                check.fail(
                    FIELD,
                    format!(
                        "must be at most {MAX_LINUX_USER} characters for a linux guest, got {len}"
                    ),
                );
            }
            if uid.contains(|c: char| c.is_whitespace() || c == ':' || c == '/') {
                check.fail(
                    FIELD,
                    "must not contain whitespace, ':' or '/' for a linux guest",
                );
            }
        }
        None => {}
    }
    if check.errors.len() == before {
        Got::Value(uid)
    } else {
        Got::Invalid
    }
}

/// Whether a raw field counts as given (anything but missing, null, empty or blank).
fn given(value: &Option<Scalar>) -> bool {
    match value {
        None | Some(Scalar::Null) => false,
        Some(Scalar::Str(s)) => !s.trim().is_empty(),
        Some(_) => true,
    }
}

fn secret_given(value: &Option<SecretScalar>) -> bool {
    match value {
        None | Some(SecretScalar::Null) => false,
        Some(SecretScalar::Str(s)) => !s.expose().trim().is_empty(),
        Some(SecretScalar::Other(_)) => true,
    }
}

/// Records the warning for a group that does not apply to the guest's OS family.
fn drop_group(
    check: &mut Check,
    given: &[&str],
    group: &str,
    applies_to: OsFamily,
    family: OsFamily,
) {
    if given.is_empty() {
        return;
    }
    let fields = given
        .iter()
        .map(|name| check.path(name))
        .collect::<Vec<_>>()
        .join(", ");
    check.warnings.push(format!(
        "ignored {fields}: {group} applies to {applies_to} guests only and this guest is {family}"
    ));
}

/// Records "is required" for each missing required member of a group that was given.
fn require_members(check: &mut Check, group: &str, missing: &[(&str, bool)]) {
    for (name, is_missing) in missing {
        if *is_missing {
            check.fail(
                name,
                format!("is required when any {group} setting is given"),
            );
        }
    }
}

struct RawIpv4 {
    ip: Option<Scalar>,
    prefix: Option<Scalar>,
    gateway: Option<Scalar>,
    dns1: Option<Scalar>,
    dns2: Option<Scalar>,
    suffix: Option<Scalar>,
}

fn static_ipv4_group(check: &mut Check, raw: RawIpv4) -> Option<StaticIpv4> {
    const IP: &str = "guest_v4_ipaddr";
    const PREFIX: &str = "guest_v4_cidrprefix";
    const GATEWAY: &str = "guest_v4_defaultgw";
    const DNS1: &str = "guest_v4_dns1";
    const DNS2: &str = "guest_v4_dns2";
    const SUFFIX: &str = "guest_net_dnssuffix";
    let before = check.errors.len();
    let ip = check.ipv4(IP, raw.ip);
    let prefix = check.ranged::<u8>(PREFIX, raw.prefix, 0, 32);
    let gateway = check.ipv4(GATEWAY, raw.gateway);
    let dns1 = check.ipv4(DNS1, raw.dns1);
    let dns2 = check.ipv4(DNS2, raw.dns2);
    let suffix = check.word(SUFFIX, raw.suffix, MAX_HOST_NAME);
    let any = [&ip, &gateway, &dns1, &dns2].iter().any(|g| g.is_given())
        || prefix.is_given()
        || suffix.is_given();
    if !any {
        return None;
    }
    require_members(
        check,
        "static IPv4",
        &[
            (IP, !ip.is_given()),
            (PREFIX, !prefix.is_given()),
            (GATEWAY, !gateway.is_given()),
            (DNS1, !dns1.is_given()),
        ],
    );
    let (ip, prefix, gateway, dns1, dns2, suffix) = (
        ip.value(),
        prefix.value(),
        gateway.value(),
        dns1.value(),
        dns2.value(),
        suffix.value(),
    );

    for (name, addr) in [(IP, ip), (GATEWAY, gateway)] {
        if let Some(addr) = addr
            && (addr.is_unspecified()
                || addr.is_loopback()
                || addr.is_multicast()
                || addr.is_broadcast())
        {
            check.fail(name, format!("must be a unicast host address, got {addr}"));
        }
    }
    for (name, addr) in [(DNS1, dns1), (DNS2, dns2)] {
        if let Some(addr) = addr
            && (addr.is_unspecified() || addr.is_multicast() || addr.is_broadcast())
        {
            check.fail(name, format!("must be a unicast address, got {addr}"));
        }
    }
    if let (Some(ip), Some(prefix)) = (ip, prefix) {
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(prefix))
        };
        let network = u32::from(ip) & mask;
        let broadcast = network | !mask;
        let subnet = format!("{}/{prefix}", Ipv4Addr::from(network));
        if prefix <= 30 && u32::from(ip) == network {
            check.fail(IP, format!("is the network address of {subnet}"));
        } else if prefix <= 30 && u32::from(ip) == broadcast {
            check.fail(IP, format!("is the broadcast address of {subnet}"));
        }
        if let Some(gateway) = gateway {
            if u32::from(gateway) & mask != network {
                check.fail(
                    GATEWAY,
                    format!(
                        "must be inside {subnet}, the subnet of {}, got {gateway}",
                        check.path(IP)
                    ),
                );
            } else if gateway == ip {
                check.fail(GATEWAY, format!("must differ from {}", check.path(IP)));
            }
        }
    }
    if check.errors.len() != before {
        return None;
    }
    Some(StaticIpv4 {
        guest_v4_ipaddr: ip?,
        guest_v4_cidrprefix: prefix?,
        guest_v4_defaultgw: gateway?,
        guest_v4_dns1: dns1?,
        guest_v4_dns2: dns2,
        guest_net_dnssuffix: suffix,
    })
}

struct RawDomain {
    target: Option<Scalar>,
    uid: Option<Scalar>,
    password: Option<SecretScalar>,
    ou: Option<Scalar>,
}

impl RawDomain {
    fn given(&self) -> Vec<&'static str> {
        [
            ("guest_domain_jointarget", given(&self.target)),
            ("guest_domain_joinuid", given(&self.uid)),
            ("guest_domain_joinpw", secret_given(&self.password)),
            ("guest_domain_joinou", given(&self.ou)),
        ]
        .into_iter()
        .filter_map(|(name, given)| given.then_some(name))
        .collect()
    }
}

fn domain_group(check: &mut Check, raw: RawDomain) -> Option<DomainJoin> {
    const TARGET: &str = "guest_domain_jointarget";
    const UID: &str = "guest_domain_joinuid";
    const PASSWORD: &str = "guest_domain_joinpw";
    const OU: &str = "guest_domain_joinou";
    let before = check.errors.len();
    let target = check.word(TARGET, raw.target, MAX_HOST_NAME);
    let uid = check.text(UID, raw.uid);
    let uid = check.guest_text(UID, uid);
    let password = check.secret(PASSWORD, raw.password);
    let ou = check.text(OU, raw.ou);
    let ou = check.guest_text(OU, ou);
    if !(target.is_given() || uid.is_given() || password.is_given() || ou.is_given()) {
        return None;
    }
    require_members(
        check,
        "domain join",
        &[
            (TARGET, !target.is_given()),
            (UID, !uid.is_given()),
            (PASSWORD, !password.is_given()),
        ],
    );
    if check.errors.len() != before {
        return None;
    }
    Some(DomainJoin {
        guest_domain_jointarget: target.value()?,
        guest_domain_joinuid: uid.value()?,
        guest_domain_joinpw: password.value()?,
        guest_domain_joinou: ou.value(),
    })
}

struct RawSsh {
    user: Option<Scalar>,
    key: Option<Scalar>,
}

impl RawSsh {
    fn given(&self) -> Vec<&'static str> {
        [
            ("cnf_ansible_ssh_user", given(&self.user)),
            ("cnf_ansible_ssh_key", given(&self.key)),
        ]
        .into_iter()
        .filter_map(|(name, given)| given.then_some(name))
        .collect()
    }
}

/// Algorithm names an OpenSSH public key line may start with.
const SSH_KEY_TYPES: &[&str] = &["ssh-", "ecdsa-sha2-", "sk-ssh-", "sk-ecdsa-sha2-"];

fn ssh_group(check: &mut Check, raw: RawSsh) -> Option<AnsibleSsh> {
    const USER: &str = "cnf_ansible_ssh_user";
    const KEY: &str = "cnf_ansible_ssh_key";
    let before = check.errors.len();
    let user = check.word(USER, raw.user, MAX_LINUX_USER);
    let key = match check.text(KEY, raw.key) {
        Got::Value(key) if key.contains("PRIVATE KEY") => {
            check.fail(
                KEY,
                "looks like a private key; give the public key line (for example the contents \
                 of id_ed25519.pub)",
            );
            Got::Invalid
        }
        Got::Value(key) if key.contains(['\n', '\r']) => {
            check.fail(KEY, "must be a single line");
            Got::Invalid
        }
        other => match check.guest_text(KEY, other) {
            Got::Value(key) => {
                let mut words = key.split_whitespace();
                let algorithm = words.next().unwrap_or_default();
                if SSH_KEY_TYPES.iter().any(|t| algorithm.starts_with(t)) && words.next().is_some()
                {
                    Got::Value(key)
                } else {
                    check.fail(
                        KEY,
                        "must be an OpenSSH public key line such as \"ssh-ed25519 AAAA... \
                         comment\"",
                    );
                    Got::Invalid
                }
            }
            other => other,
        },
    };
    if !(user.is_given() || key.is_given()) {
        return None;
    }
    require_members(
        check,
        "Ansible SSH",
        &[(USER, !user.is_given()), (KEY, !key.is_given())],
    );
    if check.errors.len() != before {
        return None;
    }
    Some(AnsibleSsh {
        cnf_ansible_ssh_user: user.value()?,
        cnf_ansible_ssh_key: key.value()?,
    })
}

/// Field order for sorting problems (last path segment); unknown names sort last.
const FIELD_ORDER: &[&str] = &[
    BODY,
    "schema_version",
    "target_host",
    "values",
    "hyperv_host",
    "vm_name",
    "image_name",
    "os_family",
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
];

fn field_rank(field: &str) -> usize {
    let name = field.rsplit('.').next().unwrap_or(field);
    FIELD_ORDER
        .iter()
        .position(|f| *f == name)
        .unwrap_or(FIELD_ORDER.len())
}

/// A short, quoted rendering of user input for messages (never used for secrets).
fn quoted(s: &str) -> String {
    const MAX: usize = 40;
    if s.chars().count() > MAX {
        let head: String = s.chars().take(MAX).collect();
        format!("{:?}", format!("{head}..."))
    } else {
        format!("{s:?}")
    }
}
