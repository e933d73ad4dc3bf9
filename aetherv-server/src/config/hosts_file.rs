//! `HOSTS_FILE`: the YAML list of hosts, with clusters, file-wide defaults and per-host
//! overrides. Problems name the path inside the file (`clusters[0].hosts[1].port`).

use std::fmt;
use std::path::{Path, PathBuf};

use aetherv_provision::boot::BootRule;
use aetherv_provision::resources::{HostDefinitions, NetworkDef, StorageClassDef};
use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};

use super::Transport;
use super::sources::Sources;

/// Settings a `HOSTS_FILE` entry or its `defaults` may override.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Overrides {
    pub(super) port: Option<u16>,
    pub(super) use_tls: Option<bool>,
    pub(super) transport: Option<Transport>,
    pub(super) ca_file: Option<PathBuf>,
    /// SHA-256 fingerprints pinning the host's certificate, comma-separated.
    pub(super) cert_sha256: Option<String>,
    pub(super) insecure: Option<bool>,
    pub(super) username: Option<String>,
    /// Kerberos realm of the hosts.
    pub(super) realm: Option<String>,
    /// KDCs of that realm.
    pub(super) kdc: Option<Vec<String>>,
    /// Delegate a forwardable TGT (Kerberos).
    pub(super) delegate: Option<bool>,
    /// Firmware overrides per image name pattern, tried after the cluster's and the host's.
    #[serde(default)]
    pub(super) image_boot: Vec<BootRule>,
    /// Named networks (`{name, switch, vlan_id}`).
    #[serde(default)]
    pub(super) networks: Vec<NetworkDef>,
    /// Named storage classes (`{name, path}`).
    #[serde(default)]
    pub(super) storage_classes: Vec<StorageClassDef>,
    /// The network a request without `network` gets.
    #[serde(default)]
    pub(super) default_network: Option<String>,
    /// Where golden images are looked for, in order (replaces, not extends, the next
    /// level's list).
    #[serde(default)]
    pub(super) image_roots: Option<Vec<String>>,
}

/// One host in `HOSTS_FILE`: a name, or a mapping with a name and overrides.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HostSpec {
    pub(super) name: String,
    pub(super) port: Option<u16>,
    pub(super) use_tls: Option<bool>,
    pub(super) transport: Option<Transport>,
    pub(super) ca_file: Option<PathBuf>,
    /// SHA-256 fingerprints pinning the host's certificate, comma-separated.
    pub(super) cert_sha256: Option<String>,
    pub(super) insecure: Option<bool>,
    pub(super) username: Option<String>,
    /// Kerberos service principal of this host (default `HTTP/<name>`).
    pub(super) spn: Option<String>,
    /// Kerberos realm of this host.
    pub(super) realm: Option<String>,
    /// KDCs of that realm.
    pub(super) kdc: Option<Vec<String>>,
    /// Delegate a forwardable TGT to this host (Kerberos).
    pub(super) delegate: Option<bool>,
    /// Firmware overrides per image name pattern for this host, tried first.
    #[serde(default)]
    pub(super) image_boot: Vec<BootRule>,
    /// Named networks (`{name, switch, vlan_id}`).
    #[serde(default)]
    pub(super) networks: Vec<NetworkDef>,
    /// Named storage classes (`{name, path}`).
    #[serde(default)]
    pub(super) storage_classes: Vec<StorageClassDef>,
    /// The network a request without `network` gets.
    #[serde(default)]
    pub(super) default_network: Option<String>,
    /// Where golden images are looked for, in order (replaces, not extends, the next
    /// level's list).
    #[serde(default)]
    pub(super) image_roots: Option<Vec<String>>,
}

/// A `HostSpec` written either as a bare name or as a mapping.
#[derive(Debug, Clone)]
pub(super) struct HostEntry(pub(super) HostSpec);

impl<'de> Deserialize<'de> for HostEntry {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntryVisitor;
        impl<'de> Visitor<'de> for EntryVisitor {
            type Value = HostEntry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a host name or a mapping with name and overrides")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HostEntry, E> {
                Ok(HostEntry(HostSpec {
                    name: v.to_owned(),
                    ..HostSpec::default()
                }))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<HostEntry, A::Error> {
                HostSpec::deserialize(de::value::MapAccessDeserializer::new(map)).map(HostEntry)
            }
        }
        deserializer.deserialize_any(EntryVisitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ClusterSpec {
    pub(super) name: String,
    pub(super) hosts: Vec<HostEntry>,
    /// Firmware overrides per image name pattern for the cluster's hosts.
    #[serde(default)]
    pub(super) image_boot: Vec<BootRule>,
    /// Named networks (`{name, switch, vlan_id}`).
    #[serde(default)]
    pub(super) networks: Vec<NetworkDef>,
    /// Named storage classes (`{name, path}`).
    #[serde(default)]
    pub(super) storage_classes: Vec<StorageClassDef>,
    /// The network a request without `network` gets.
    #[serde(default)]
    pub(super) default_network: Option<String>,
    /// Where golden images are looked for, in order (replaces, not extends, the next
    /// level's list).
    #[serde(default)]
    pub(super) image_roots: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HostsFile {
    #[serde(default)]
    pub(super) defaults: Overrides,
    #[serde(default)]
    pub(super) clusters: Vec<ClusterSpec>,
    #[serde(default)]
    pub(super) hosts: Vec<HostEntry>,
}

pub(super) fn read_hosts_file(s: &mut Sources<'_>, file: &Path) -> Option<HostsFile> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            s.problem(
                "HOSTS_FILE",
                format_args!("cannot read {}: {e}", file.display()),
            );
            return None;
        }
    };
    if text.trim().is_empty() {
        s.problem("HOSTS_FILE", format_args!("{} is empty", file.display()));
        return None;
    }
    if let Err(e) = aetherv_provision::schema::check_nesting(&text) {
        s.problem("HOSTS_FILE", format_args!("{}: {e}", file.display()));
        return None;
    }
    match serde_path_to_error::deserialize::<_, HostsFile>(serde_yaml::Deserializer::from_str(
        &text,
    )) {
        Ok(parsed) => Some(parsed),
        Err(e) => {
            let path = e.path().to_string();
            let message = e.inner().to_string();
            if path.is_empty() || path == "." {
                s.problem("HOSTS_FILE", format_args!("{}: {message}", file.display()));
            } else {
                // serde_yaml prefixes the path of the enclosing mapping; ours is more precise.
                let message = match message.split_once(": ") {
                    Some((prefix, rest)) if path.starts_with(prefix) => rest,
                    _ => message.as_str(),
                };
                s.problem("HOSTS_FILE", format_args!("{path}: {message}"));
            }
            None
        }
    }
}

/// The networks, storage classes and default network written at one level of the file.
pub(super) fn definitions(
    networks: &[NetworkDef],
    storage_classes: &[StorageClassDef],
    default_network: Option<&String>,
) -> HostDefinitions {
    HostDefinitions {
        networks: networks.to_vec(),
        storage_classes: storage_classes.to_vec(),
        default_network: default_network.cloned(),
    }
}
