//! Validation of the two document shapes: the host, the required and ranged fields, the image
//! name, and the order in which problems are reported.

use super::check::{Check, Got};
use super::groups::{RawDomain, RawIpv4, RawSsh, domain_group, ssh_group, static_ipv4_group};
use super::os::{drop_group, read_override, resolve};
use super::parse::BODY;
use super::raw::{RawJob, RawValues, Scalar};
use super::rules::{local_admin_rules, vm_name_rules};
use super::{
    JobRequest, MAX_HOST_NAME, MAX_IMAGE_NAME, OsFamily, ProvisionValues, SCHEMA_VERSION, Validated,
};
use crate::error::{Error, Result};

pub(super) fn validate_job(raw: RawJob) -> Result<Validated> {
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
    let target = target(
        &mut check,
        "target_host",
        raw.target_host,
        raw.target_cluster,
    );
    check.prefix = "values.";
    let values = match raw.values {
        Some(mut values) => {
            if values.hyperv_host.take().is_some() {
                check.fail(
                    "hyperv_host",
                    "unknown field; the job schema takes the host as target_host",
                );
            }
            if values.target_cluster.take().is_some() {
                check.fail(
                    "target_cluster",
                    "unknown field here; the job schema takes target_cluster at the top level, \
                     next to schema_version",
                );
            }
            let clustered = explicit_clustered(&values.vm_clustered);
            validate_values(&mut check, values).map(|v| (v, clustered))
        }
        None => {
            check.prefix = "";
            check.fail("values", "is required");
            None
        }
    };
    check.prefix = "values.";
    finish_target(check, target, values)
}

pub(super) fn validate_flat(mut raw: RawValues) -> Result<Validated> {
    let mut check = Check {
        prefix: "",
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let target = target(
        &mut check,
        "hyperv_host",
        raw.hyperv_host.take(),
        raw.target_cluster.take(),
    );
    let clustered = explicit_clustered(&raw.vm_clustered);
    let values = validate_values(&mut check, raw).map(|v| (v, clustered));
    finish_target(check, target, values)
}

/// Where the VM goes, as requested: a host, or a cluster whose member the server picks.
#[derive(Debug)]
pub(super) enum Target {
    /// `target_host` / `hyperv_host`.
    Host(String),
    /// `target_cluster`.
    Cluster(String),
}

/// Reads the host field and `target_cluster`: exactly one of them is required.
pub(super) fn target(
    check: &mut Check,
    host_field: &str,
    host: Option<Scalar>,
    cluster: Option<Scalar>,
) -> Option<Target> {
    let host = name_value(check, host_field, host);
    let cluster = name_value(check, "target_cluster", cluster);
    match (host, cluster) {
        (Got::Value(host), Got::Absent) => Some(Target::Host(host)),
        (Got::Absent, Got::Value(cluster)) => Some(Target::Cluster(cluster)),
        (Got::Value(_), Got::Value(_)) => {
            let message = format!("give either {host_field} or target_cluster, not both");
            check.fail(host_field, message.clone());
            check.fail("target_cluster", message);
            None
        }
        (Got::Absent, Got::Absent) => {
            check.fail(
                host_field,
                format!(
                    "is required: give {host_field} (a host) or target_cluster (a cluster whose \
                     best host the server picks)"
                ),
            );
            None
        }
        _ => None,
    }
}

/// `vm_clustered` as given (`None` when absent or unreadable), before validation reads it.
fn explicit_clustered(value: &Option<Scalar>) -> Option<bool> {
    match value {
        Some(Scalar::Bool(b)) => Some(*b),
        Some(Scalar::Str(s)) => {
            let s = s.trim();
            if s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("yes") {
                Some(true)
            } else if s.eq_ignore_ascii_case("false") || s.eq_ignore_ascii_case("no") {
                Some(false)
            } else {
                None
            }
        }
        _ => None,
    }
}

/// [`finish`] for a [`Target`]: a cluster target makes the VM a cluster role (`vm_clustered`
/// defaults to true; an explicit false is a problem) and leaves `target_host` empty until the
/// server places the VM ([`JobRequest::place_on`](super::JobRequest::place_on)).
pub(super) fn finish_target(
    mut check: Check,
    target: Option<Target>,
    values: Option<(ProvisionValues, Option<bool>)>,
) -> Result<Validated> {
    let (host, cluster) = match target {
        Some(Target::Host(host)) => (Some(host), None),
        Some(Target::Cluster(cluster)) => (Some(String::new()), Some(cluster)),
        None => (None, None),
    };
    let values = values.map(|(mut values, clustered)| {
        if cluster.is_some() {
            if clustered == Some(false) {
                check.fail(
                    "vm_clustered",
                    "must not be false with target_cluster: a VM placed in a cluster is a \
                     cluster role; name a host with the host field instead to keep it local",
                );
            }
            values.vm_clustered = true;
        }
        values
    });
    let mut validated = finish(check, host, values)?;
    validated.request.target_cluster = cluster;
    Ok(validated)
}

pub(super) fn finish(
    check: Check,
    host: Option<String>,
    values: Option<ProvisionValues>,
) -> Result<Validated> {
    match (host, values) {
        (Some(target_host), Some(values)) if check.errors.is_empty() => Ok(Validated {
            request: JobRequest {
                schema_version: SCHEMA_VERSION,
                target_host,
                target_cluster: None,
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

/// A host or cluster name: text without whitespace, at most [`MAX_HOST_NAME`] characters.
pub(super) fn name_value(check: &mut Check, name: &str, value: Option<Scalar>) -> Got<String> {
    let value = check.text(name, value);
    match value {
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
    }
}

pub(super) fn validate_values(check: &mut Check, raw: RawValues) -> Option<ProvisionValues> {
    // Read every field first (type problems), then apply the rules.
    let vm_name = check.text("vm_name", raw.vm_name);
    let image_name = check.text("image_name", raw.image_name);
    let gb_ram = check.ranged::<u32>("gb_ram", raw.gb_ram, 1, 512);
    let cpu_cores = check.ranged::<u32>("cpu_cores", raw.cpu_cores, 1, 64);
    let disk_size_gb = check.ranged::<u32>(
        "disk_size_gb",
        raw.disk_size_gb,
        1,
        i128::from(super::MAX_DISK_SIZE_GB),
    );
    let guest_la_uid = check.text("guest_la_uid", raw.guest_la_uid);
    let guest_la_pw = check.secret("guest_la_pw", raw.guest_la_pw);
    let vlan_id = check.ranged::<u16>("vlan_id", raw.vlan_id, 0, 4094);
    let vm_clustered = check.yes_no("vm_clustered", raw.vm_clustered);
    let network = resource_name(check, "network", raw.network);
    let storage_class = resource_name(check, "storage_class", raw.storage_class);
    let os_override = read_override(check, raw.os_family);

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
    // OS family: the override wins; otherwise the image name decides.
    let os_family = resolve(check, &os_override, &image_name);

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
        disk_size_gb: disk_size_gb.value(),
        guest_la_uid: guest_la_uid?,
        guest_la_pw: guest_la_pw?,
        static_ipv4,
        vlan_id,
        domain_join,
        ansible_ssh,
        network,
        storage_class,
        vm_clustered,
        os_family: os_family?,
    })
}

/// A `network` or `storage_class` name: at most [`MAX_RESOURCE_NAME`] characters, no control
/// characters. Whether the host defines it is checked against the host
/// ([`crate::resources::resolve`]).
fn resource_name(check: &mut Check, name: &str, value: Option<Scalar>) -> Option<String> {
    match check.text(name, value) {
        Got::Value(s) if s.chars().count() > MAX_RESOURCE_NAME => {
            check.fail(
                name,
                format!("must be at most {MAX_RESOURCE_NAME} characters"),
            );
            None
        }
        Got::Value(s) if s.chars().any(char::is_control) => {
            check.fail(name, "must not contain control characters");
            None
        }
        other => other.value(),
    }
}

const MAX_RESOURCE_NAME: usize = 64;

/// Field order for sorting problems (last path segment); unknown names sort last.
pub(super) const FIELD_ORDER: &[&str] = &[
    BODY,
    "schema_version",
    "target_host",
    "values",
    "hyperv_host",
    "target_cluster",
    "vm_name",
    "image_name",
    "os_family",
    "gb_ram",
    "cpu_cores",
    "disk_size_gb",
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
    "network",
    "storage_class",
];

pub(super) fn field_rank(field: &str) -> usize {
    let name = field.rsplit('.').next().unwrap_or(field);
    FIELD_ORDER
        .iter()
        .position(|f| *f == name)
        .unwrap_or(FIELD_ORDER.len())
}
