//! The public request types of job schema v1, their parsing entry points and the redacted view.

use std::net::Ipv4Addr;

use aetherv_winrm::Secret;
use serde::{Serialize, Serializer};

use super::OsFamily;
#[cfg(doc)]
use super::SCHEMA_VERSION;
use super::parse::{Shape, parse_json, parse_yaml};
use super::raw::{RawJob, RawValues};
use super::validate::{validate_flat, validate_job};
#[cfg(doc)]
use crate::error::Error;
use crate::error::Result;

/// A validated provisioning job: where to create the VM and how to configure it.
///
/// `Debug` never shows secrets (they are [`Secret`]s), and serialising it — including
/// [`JobRequest::redacted`] — writes every secret as `"***"`, so the serialised form is safe for
/// job records and API responses but cannot be used to re-submit the job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobRequest {
    /// Always [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The Hyper-V host (or cluster node) to create the VM on. Empty while a request that
    /// names [`target_cluster`](Self::target_cluster) is not placed yet
    /// ([`JobRequest::place_on`]).
    pub target_host: String,
    /// The cluster to place the VM in, when the request named one instead of a host; the
    /// server picks the member ([`JobRequest::place_on`]). Such a VM is always a cluster role.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_cluster: Option<String>,
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
    /// Size of the VM's system disk in GiB ([`MAX_DISK_SIZE_GB`](super::MAX_DISK_SIZE_GB) at
    /// most); the copied image is expanded to it before the first boot. The image's own size
    /// when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_size_gb: Option<u32>,
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
    /// Named network (switch and VLAN) of the target host; the host's default when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Named storage class (the folder the VM's files go to); the host's default VM path when
    /// `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
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

    /// Whether the request still waits for placement: it names a cluster and no host yet.
    pub fn needs_placement(&self) -> bool {
        self.target_cluster.is_some() && self.target_host.is_empty()
    }

    /// Places the VM on `host` (the member of [`target_cluster`](Self::target_cluster) the
    /// server picked); the cluster stays on record.
    pub fn place_on(&mut self, host: impl Into<String>) {
        self.target_host = host.into();
    }

    /// The request in job-schema shape as JSON, every secret replaced by `"***"`: safe for job
    /// records, logs and API responses. `os_family` is always present (the resolved family).
    pub fn redacted(&self) -> serde_json::Value {
        // Serialising plain strings, numbers and addresses into a `Value` cannot fail; the
        // fallback only keeps this function total.
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}
