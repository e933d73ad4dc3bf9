//! Named networks and storage classes (Aether-V's host resources): which switch and VLAN a
//! `network` name means, which folder a `storage_class` name means, and which network a VM
//! gets when the request names none.
//!
//! Definitions come from two places: the server's configuration ([`HostDefinitions`] per
//! host, from `HOSTS_FILE`) and Aether-V's `hostresources.json`/`.yaml` on the host (reported
//! in [`HostFacts::host_resources`], parsed by [`parse_host_resources`] with a typed error).
//! [`HostDefinitions::merged_with`] joins them; the configuration wins on a name clash.
//! [`resolve`] is the pure decision the server makes at submission and the pipeline repeats in
//! its pre-checks.
//!
//! Rules of [`resolve`]:
//! - `network` given: it must be defined (case-insensitive), and its switch must exist on the
//!   host; otherwise a problem on `network` listing the valid names.
//! - `network` not given: the configured default network; else the host's only External
//!   switch; several External switches and no default is a problem on `network` listing the
//!   candidates (no guessing); no External switch leaves the adapter unconnected.
//! - VLAN: the request's `vlan_id` wins over the network's (0 means untagged); otherwise the
//!   network's VLAN applies.
//! - `storage_class` given: it must be defined; its folder becomes the root of the VM folder.
//!   Not given: the host's default VM path.

use aetherv_hyperv::ops::HostFacts;
use serde::Deserialize;

use crate::error::FieldError;

/// A named network: a virtual switch and an optional access VLAN.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkDef {
    /// The name requests use.
    pub name: String,
    /// The Hyper-V virtual switch.
    pub switch: String,
    /// Access VLAN (1–4094); untagged when `None`.
    #[serde(default)]
    pub vlan_id: Option<u16>,
}

/// A named storage class: a folder on the host or a cluster shared volume.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageClassDef {
    /// The name requests use.
    pub name: String,
    /// Absolute Windows folder; VM folders are created below it.
    pub path: String,
}

/// The networks and storage classes of one host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostDefinitions {
    /// Named networks.
    pub networks: Vec<NetworkDef>,
    /// Named storage classes.
    pub storage_classes: Vec<StorageClassDef>,
    /// The network a request without `network` gets.
    pub default_network: Option<String>,
}

impl HostDefinitions {
    /// The network named `name` (case-insensitive).
    pub fn network(&self, name: &str) -> Option<&NetworkDef> {
        self.networks
            .iter()
            .find(|n| n.name.eq_ignore_ascii_case(name.trim()))
    }

    /// The storage class named `name` (case-insensitive).
    pub fn storage_class(&self, name: &str) -> Option<&StorageClassDef> {
        self.storage_classes
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name.trim()))
    }

    /// These definitions plus those of `other` whose names these do not define (these win on
    /// a clash); the default network is this one's, else `other`'s.
    pub fn merged_with(&self, other: &HostDefinitions) -> HostDefinitions {
        let mut merged = self.clone();
        for network in &other.networks {
            if self.network(&network.name).is_none() {
                merged.networks.push(network.clone());
            }
        }
        for class in &other.storage_classes {
            if self.storage_class(&class.name).is_none() {
                merged.storage_classes.push(class.clone());
            }
        }
        if merged.default_network.is_none() {
            merged.default_network.clone_from(&other.default_network);
        }
        merged
    }

    /// Problems with the definitions themselves (empty names, VLANs outside 1–4094, folders
    /// that are not absolute Windows paths, duplicate names, a default that is not defined),
    /// one message each, prefixed with `origin`.
    pub fn problems(&self, origin: &str) -> Vec<String> {
        let mut problems = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, n) in self.networks.iter().enumerate() {
            if n.name.trim().is_empty() || n.switch.trim().is_empty() {
                problems.push(format!(
                    "{origin}networks[{i}]: name and switch are required"
                ));
            }
            if let Some(vlan) = n.vlan_id
                && !(1..=4094).contains(&vlan)
            {
                problems.push(format!(
                    "{origin}networks[{i}].vlan_id: {vlan} is outside 1–4094"
                ));
            }
            if !seen.insert(n.name.trim().to_ascii_lowercase()) {
                problems.push(format!(
                    "{origin}networks[{i}].name: duplicate network {:?}",
                    n.name
                ));
            }
        }
        seen.clear();
        for (i, c) in self.storage_classes.iter().enumerate() {
            if c.name.trim().is_empty() {
                problems.push(format!("{origin}storage_classes[{i}].name: required"));
            }
            if !is_absolute_windows_path(&c.path) {
                problems.push(format!(
                    "{origin}storage_classes[{i}].path: {:?} is not an absolute Windows path",
                    c.path
                ));
            }
            if !seen.insert(c.name.trim().to_ascii_lowercase()) {
                problems.push(format!(
                    "{origin}storage_classes[{i}].name: duplicate storage class {:?}",
                    c.name
                ));
            }
        }
        problems
    }
}

fn is_absolute_windows_path(path: &str) -> bool {
    let b = path.as_bytes();
    let drive = b.len() >= 3 && b[0].is_ascii_alphabetic() && b[1] == b':' && b[2] == b'\\';
    let unc = path.starts_with(r"\\") && path.len() > 2;
    (drive || unc)
        && !path.get(2..).is_some_and(|p| p.contains(':'))
        && !path.contains(['*', '?', '"', '<', '>', '|', '/'])
        && !path.split('\\').any(|seg| seg == "..")
        && !path.chars().any(char::is_control)
}

/// A host resources file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("host resources file {path} on host {host}: {detail}")]
pub struct HostResourcesError {
    /// The host.
    pub host: String,
    /// The file.
    pub path: String,
    /// What is wrong (with the path inside the document where known).
    pub detail: String,
}

#[derive(Deserialize)]
struct FileDoc {
    #[serde(default)]
    version: Option<u32>,
    #[serde(default)]
    schema_name: Option<String>,
    #[serde(default)]
    storage_classes: Vec<StorageClassDef>,
    #[serde(default)]
    networks: Vec<FileNetwork>,
    #[serde(default)]
    default_network: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    virtual_machines_path: Option<String>,
}

#[derive(Deserialize)]
struct FileNetwork {
    name: String,
    #[serde(default)]
    model: Option<String>,
    configuration: FileNetworkConfiguration,
}

#[derive(Deserialize)]
struct FileNetworkConfiguration {
    virtual_switch: String,
    #[serde(default)]
    vlan_id: Option<u16>,
}

/// Parses Aether-V's host resources document (JSON or YAML: `version` 1, `schema_name`
/// `hostresources`, `storage_classes: [{name, path}]`, `networks: [{name, model: vlan,
/// configuration: {virtual_switch, vlan_id}}]`, optionally `default_network`) from the facts of
/// `host`; `Ok(None)` when the host has no such file.
///
/// # Errors
///
/// [`HostResourcesError`] for a malformed document, naming the place inside it.
pub fn parse_host_resources(
    facts: &HostFacts,
) -> Result<Option<HostDefinitions>, HostResourcesError> {
    let Some(file) = &facts.host_resources else {
        return Ok(None);
    };
    let error = |detail: String| HostResourcesError {
        host: facts.name.clone(),
        path: file.path.clone(),
        detail,
    };
    // A UTF-8 byte order mark is what Windows editors write first.
    let text = file.text.trim_start_matches('\u{feff}');
    // Bounded before the YAML parser, whose cost grows with nesting depth times length.
    crate::schema::check_nesting(text).map_err(|e| error(e.to_string()))?;
    let doc: FileDoc = serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(text))
        .map_err(|e| {
        let path = e.path().to_string();
        if path.is_empty() || path == "." {
            error(e.inner().to_string())
        } else {
            error(format!("{path}: {}", e.inner()))
        }
    })?;
    if let Some(version) = doc.version
        && version != 1
    {
        return Err(error(format!(
            "version {version} is not supported (expected 1)"
        )));
    }
    if let Some(name) = &doc.schema_name
        && !name.eq_ignore_ascii_case("hostresources")
    {
        return Err(error(format!(
            "schema_name {name:?} is not \"hostresources\""
        )));
    }
    let mut networks = Vec::new();
    for (i, n) in doc.networks.into_iter().enumerate() {
        if let Some(model) = &n.model
            && !model.eq_ignore_ascii_case("vlan")
        {
            return Err(error(format!(
                "networks[{i}].model: {model:?} is not supported (expected \"vlan\")"
            )));
        }
        networks.push(NetworkDef {
            name: n.name,
            switch: n.configuration.virtual_switch,
            vlan_id: n.configuration.vlan_id,
        });
    }
    let definitions = HostDefinitions {
        networks,
        storage_classes: doc.storage_classes,
        default_network: doc.default_network,
    };
    if let Some(problem) = definitions.problems("").into_iter().next() {
        return Err(error(problem));
    }
    Ok(Some(definitions))
}

/// Where a VM goes: its switch and VLAN, and the root of its folder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// The named network used, if any.
    pub network: Option<String>,
    /// The switch to connect; unconnected when `None`.
    pub switch_name: Option<String>,
    /// The access VLAN; untagged when `None`.
    pub vlan_id: Option<u16>,
    /// The storage class used, if any.
    pub storage_class: Option<String>,
    /// The root of the VM folder; the host's default VM path when `None`.
    pub destination_root: Option<String>,
}

/// What a request asks for that [`resolve`] decides on.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlacementRequest<'a> {
    /// The requested network name.
    pub network: Option<&'a str>,
    /// The requested storage class name.
    pub storage_class: Option<&'a str>,
    /// The requested VLAN (0 means untagged).
    pub vlan_id: Option<u16>,
}

/// Decides the network and storage of a VM on the host of `facts` with the server's
/// `configured` definitions for that host (see the module docs). `prefix` is put before the
/// field names of the problems (`""` for the flat body, `"values."` for the job schema).
///
/// # Errors
///
/// [`ResolveError::Fields`]: every problem found, each naming `network` or `storage_class`
/// and listing the valid names; [`ResolveError::HostResources`]: the host's resources file is
/// malformed.
pub fn resolve(
    configured: &HostDefinitions,
    facts: &HostFacts,
    request: PlacementRequest<'_>,
    prefix: &str,
) -> Result<Placement, ResolveError> {
    let from_host = parse_host_resources(facts).map_err(ResolveError::HostResources)?;
    let defs = match &from_host {
        Some(host) => configured.merged_with(host),
        None => configured.clone(),
    };
    let mut problems = Vec::new();
    let mut placement = Placement::default();
    let network_field = format!("{prefix}network");
    let network_names = || -> String {
        if defs.networks.is_empty() {
            "none are defined for this host".to_owned()
        } else {
            format!(
                "valid networks: {}",
                defs.networks
                    .iter()
                    .map(|n| n.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    };
    let has_switch = |name: &str| {
        facts
            .switches
            .iter()
            .any(|s| s.name.eq_ignore_ascii_case(name))
    };
    let chosen = match request.network.map(str::trim).filter(|n| !n.is_empty()) {
        Some(name) => match defs.network(name) {
            Some(n) => Some(n.clone()),
            None => {
                problems.push(FieldError::new(
                    &network_field,
                    format!(
                        "host {} has no network {name:?}; {}",
                        facts.name,
                        network_names()
                    ),
                ));
                None
            }
        },
        None => match &defs.default_network {
            Some(default) => match defs.network(default) {
                Some(n) => Some(n.clone()),
                None => {
                    problems.push(FieldError::new(
                        &network_field,
                        format!(
                            "the default network {default:?} of host {} is not defined; name \
                             one: {}",
                            facts.name,
                            network_names()
                        ),
                    ));
                    None
                }
            },
            None => {
                let external: Vec<&str> = facts
                    .switches
                    .iter()
                    .filter(|s| s.switch_type.eq_ignore_ascii_case("External"))
                    .map(|s| s.name.as_str())
                    .collect();
                match external.as_slice() {
                    [] => None,
                    [only] => Some(NetworkDef {
                        name: String::new(),
                        switch: (*only).to_owned(),
                        vlan_id: None,
                    }),
                    several => {
                        let mut candidates: Vec<String> =
                            defs.networks.iter().map(|n| n.name.clone()).collect();
                        candidates.extend(several.iter().map(|s| format!("switch {s}")));
                        problems.push(FieldError::new(
                            &network_field,
                            format!(
                                "is required: host {} has {} External switches and no default \
                                 network; candidates: {}",
                                facts.name,
                                several.len(),
                                if defs.networks.is_empty() {
                                    several.join(", ")
                                } else {
                                    format!(
                                        "networks {} (External switches: {})",
                                        defs.networks
                                            .iter()
                                            .map(|n| n.name.as_str())
                                            .collect::<Vec<_>>()
                                            .join(", "),
                                        several.join(", ")
                                    )
                                }
                            ),
                        ));
                        None
                    }
                }
            }
        },
    };
    if let Some(network) = chosen {
        if !has_switch(&network.switch) {
            problems.push(FieldError::new(
                &network_field,
                format!(
                    "network {:?} uses switch {:?}, which host {} does not have",
                    network.name, network.switch, facts.name
                ),
            ));
        }
        placement.switch_name = Some(network.switch.clone());
        placement.vlan_id = network.vlan_id;
        placement.network = (!network.name.is_empty()).then_some(network.name);
    }
    // The request's VLAN wins; 0 means untagged.
    if let Some(vlan) = request.vlan_id {
        placement.vlan_id = (vlan != 0).then_some(vlan);
    }
    if let Some(name) = request
        .storage_class
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        match defs.storage_class(name) {
            Some(class) => {
                placement.storage_class = Some(class.name.clone());
                placement.destination_root = Some(class.path.clone());
            }
            None => problems.push(FieldError::new(
                format!("{prefix}storage_class"),
                format!(
                    "host {} has no storage class {name:?}; {}",
                    facts.name,
                    if defs.storage_classes.is_empty() {
                        "none are defined for this host".to_owned()
                    } else {
                        format!(
                            "valid storage classes: {}",
                            defs.storage_classes
                                .iter()
                                .map(|c| c.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    }
                ),
            )),
        }
    }
    if problems.is_empty() {
        Ok(placement)
    } else {
        Err(ResolveError::Fields(problems))
    }
}

/// Why [`resolve`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// The request names something the host does not define (or needs a choice it did not
    /// make): problems on `network`/`storage_class`.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Fields(Vec<FieldError>),
    /// The host's resources file is malformed.
    #[error(transparent)]
    HostResources(HostResourcesError),
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use aetherv_hyperv::ops::HostResourcesFile;
    use serde_json::json;

    use super::*;

    fn facts(switches: &[(&str, &str)], file: Option<&str>) -> HostFacts {
        let mut facts: HostFacts = serde_json::from_value(json!({
            "name": "hv01", "fqdn": "hv01.lab", "logical_processors": 4,
            "memory_total_bytes": 1u64 << 34, "memory_available_bytes": 1u64 << 33,
            "vm_path": "C:\\VMs",
            "switches": switches.iter().map(|(n, t)| json!({"name": n, "switch_type": t}))
                .collect::<Vec<_>>(),
        }))
        .unwrap();
        facts.host_resources = file.map(|text| HostResourcesFile {
            path: r"C:\ProgramData\Aether-V\hostresources.json".to_owned(),
            text: text.to_owned(),
        });
        facts
    }

    const FILE: &str = r#"{"version": 1, "schema_name": "hostresources",
        "storage_classes": [{"name": "fast", "path": "C:\\ClusterStorage\\Volume1\\VMs"}],
        "networks": [{"name": "prod", "model": "vlan",
                      "configuration": {"virtual_switch": "ext-a", "vlan_id": 100}},
                     {"name": "dev", "model": "vlan",
                      "configuration": {"virtual_switch": "ext-b", "vlan_id": 200}}],
        "virtual_machines_path": "C:\\ClusterStorage\\Volume1\\VMs"}"#;

    fn fields(err: ResolveError) -> Vec<FieldError> {
        match err {
            ResolveError::Fields(f) => f,
            other => panic!("{other}"),
        }
    }

    #[test]
    fn one_external_switch_is_the_default_and_several_need_a_choice() {
        let one = facts(&[("ext", "External"), ("int", "Internal")], None);
        let p = resolve(
            &HostDefinitions::default(),
            &one,
            PlacementRequest::default(),
            "",
        )
        .unwrap();
        assert_eq!(p.switch_name.as_deref(), Some("ext"));
        assert_eq!(p.destination_root, None);
        let none = facts(&[("int", "Internal")], None);
        let p = resolve(
            &HostDefinitions::default(),
            &none,
            PlacementRequest::default(),
            "",
        )
        .unwrap();
        assert_eq!(p.switch_name, None);
        let two = facts(&[("ext-a", "External"), ("ext-b", "External")], Some(FILE));
        let err = fields(
            resolve(
                &HostDefinitions::default(),
                &two,
                PlacementRequest::default(),
                "values.",
            )
            .unwrap_err(),
        );
        assert_eq!(err[0].field, "values.network");
        assert!(
            err[0].message.contains("prod") && err[0].message.contains("ext-b"),
            "{}",
            err[0]
        );
    }

    #[test]
    fn named_networks_and_storage_classes_from_the_host_file() {
        let two = facts(&[("ext-a", "External"), ("ext-b", "External")], Some(FILE));
        let request = PlacementRequest {
            network: Some("DEV"),
            storage_class: Some("fast"),
            vlan_id: None,
        };
        let p = resolve(&HostDefinitions::default(), &two, request, "").unwrap();
        assert_eq!(p.switch_name.as_deref(), Some("ext-b"));
        assert_eq!(p.vlan_id, Some(200));
        assert_eq!(p.network.as_deref(), Some("dev"));
        assert_eq!(
            p.destination_root.as_deref(),
            Some(r"C:\ClusterStorage\Volume1\VMs")
        );
        // The request's VLAN wins; 0 is untagged.
        let p = resolve(
            &HostDefinitions::default(),
            &two,
            PlacementRequest {
                vlan_id: Some(0),
                ..request
            },
            "",
        )
        .unwrap();
        assert_eq!(p.vlan_id, None);
        let err = fields(
            resolve(
                &HostDefinitions::default(),
                &two,
                PlacementRequest {
                    network: Some("qa"),
                    storage_class: Some("slow"),
                    vlan_id: None,
                },
                "",
            )
            .unwrap_err(),
        );
        assert_eq!(err.len(), 2);
        assert_eq!(err[0].field, "network");
        assert!(err[0].message.contains("prod, dev"), "{}", err[0]);
        assert_eq!(err[1].field, "storage_class");
        assert!(err[1].message.contains("fast"), "{}", err[1]);
    }

    #[test]
    fn configuration_wins_on_a_name_clash_and_sets_the_default() {
        let two = facts(&[("ext-a", "External"), ("ext-b", "External")], Some(FILE));
        let configured = HostDefinitions {
            networks: vec![NetworkDef {
                name: "Prod".to_owned(),
                switch: "ext-b".to_owned(),
                vlan_id: Some(7),
            }],
            storage_classes: Vec::new(),
            default_network: Some("prod".to_owned()),
        };
        let p = resolve(&configured, &two, PlacementRequest::default(), "").unwrap();
        assert_eq!(p.switch_name.as_deref(), Some("ext-b"));
        assert_eq!(p.vlan_id, Some(7));
        // A network whose switch the host lacks.
        let configured = HostDefinitions {
            networks: vec![NetworkDef {
                name: "gone".to_owned(),
                switch: "nope".to_owned(),
                vlan_id: None,
            }],
            ..HostDefinitions::default()
        };
        let err = fields(
            resolve(
                &configured,
                &two,
                PlacementRequest {
                    network: Some("gone"),
                    ..PlacementRequest::default()
                },
                "",
            )
            .unwrap_err(),
        );
        assert!(err[0].message.contains("nope"), "{}", err[0]);
    }

    #[test]
    fn malformed_host_files_are_typed_errors() {
        for (text, needle) in [
            ("{not json", ""),
            (r#"{"networks": [{"name": "x"}]}"#, "networks[0]"),
            (
                r#"{"networks": [{"name": "x", "model": "vxlan", "configuration": {"virtual_switch": "s"}}]}"#,
                "vxlan",
            ),
            (r#"{"version": 2}"#, "version 2"),
            (
                r#"{"storage_classes": [{"name": "a", "path": "relative"}]}"#,
                "not an absolute",
            ),
            (
                r#"{"networks": [{"name": "x", "configuration": {"virtual_switch": "s", "vlan_id": 99999}}]}"#,
                "networks[0]",
            ),
        ] {
            let f = facts(&[], Some(text));
            let err = parse_host_resources(&f).unwrap_err();
            assert!(err.to_string().contains(needle), "{text}: {err}");
            assert!(err.to_string().contains("hv01"), "{err}");
        }
        let yaml = "version: 1\nnetworks:\n  - name: a\n    model: vlan\n    configuration: {virtual_switch: s}\n";
        let defs = parse_host_resources(&facts(&[], Some(yaml)))
            .unwrap()
            .unwrap();
        assert_eq!(defs.networks[0].switch, "s");
        assert_eq!(parse_host_resources(&facts(&[], None)).unwrap(), None);
    }
}
