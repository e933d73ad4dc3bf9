//! Fleet mode: the hosts from `HYPERV_HOSTS` or `HOSTS_FILE`, each with its WinRM settings
//! (per host, then the file's `defaults`, then the `WINRM_*` variables) and the credentials.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use aetherv_provision::boot::BootRule;
use aetherv_provision::resources::HostDefinitions;
use aetherv_winrm::transport::CertFingerprint;

use super::hosts_file::{HostEntry, HostSpec, Overrides, definitions, read_hosts_file};
use super::sources::Sources;
use super::{HostTarget, KerberosTarget, Transport};

/// Per-host WinRM settings from the environment (`WINRM_*`).
struct EnvDefaults {
    port: Option<u16>,
    use_tls: bool,
    transport: Transport,
    ca_file: Option<PathBuf>,
    cert_sha256: Vec<CertFingerprint>,
    insecure: bool,
    username: Option<String>,
    kerberos: KerberosTarget,
    ntlm_fallback: bool,
}

/// Fingerprints from a comma-separated list, or why one is not a fingerprint.
fn fingerprints(value: &str) -> Result<Vec<CertFingerprint>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse::<CertFingerprint>()
                .map_err(|e| format!("{e}; got {:?}", v.chars().take(120).collect::<String>()))
        })
        .collect()
}

fn env_defaults(s: &mut Sources<'_>) -> EnvDefaults {
    let transport = match s.get("WINRM_TRANSPORT").map(|v| v.to_ascii_lowercase()) {
        None => Transport::Ntlm,
        Some(t) if t == "ntlm" => Transport::Ntlm,
        Some(t) if t == "basic" => Transport::Basic,
        Some(t) if t == "kerberos" => Transport::Kerberos,
        Some(t) if t == "negotiate" => Transport::Negotiate,
        Some(other) => {
            s.problem(
                "WINRM_TRANSPORT",
                format_args!("expected ntlm, basic, kerberos or negotiate, got {other:?}"),
            );
            Transport::Ntlm
        }
    };
    let use_tls = s.flag("WINRM_USE_TLS", false);
    let insecure = s.flag("WINRM_INSECURE", false);
    let port = s.get("WINRM_PORT").and_then(|p| match p.parse::<u16>() {
        Ok(n) if n > 0 => Some(n),
        _ => {
            s.problem(
                "WINRM_PORT",
                format_args!("expected a port number, got {p:?}"),
            );
            None
        }
    });
    let ca_file = s.get("WINRM_CA_FILE").map(PathBuf::from);
    if let Some(path) = &ca_file
        && let Err(why) = readable_file(path)
    {
        s.problem("WINRM_CA_FILE", why);
    }
    let cert_sha256 = match s.get("WINRM_CERT_SHA256").map(|v| fingerprints(&v)) {
        None => Vec::new(),
        Some(Ok(pins)) => pins,
        Some(Err(why)) => {
            s.problem("WINRM_CERT_SHA256", why);
            Vec::new()
        }
    };
    let username = s
        .secret("WINRM_USERNAME")
        .map(|u| u.expose().trim().to_owned());
    let keytab = s.get("WINRM_KEYTAB").map(PathBuf::from);
    if let Some(path) = &keytab
        && let Err(why) = readable_file(path)
    {
        s.problem("WINRM_KEYTAB", why);
    }
    let keytab_b64 = s.secret("WINRM_KEYTAB_B64");
    if keytab.is_some() && keytab_b64.is_some() {
        s.problem(
            "WINRM_KEYTAB_B64",
            "set either WINRM_KEYTAB or WINRM_KEYTAB_B64, not both",
        );
    }
    let kerberos = KerberosTarget {
        spn: None,
        realm: s.get("WINRM_REALM").filter(|r| !r.is_empty()),
        kdcs: s
            .get("WINRM_KDC")
            .map(|v| {
                v.split(',')
                    .map(|k| k.trim().to_owned())
                    .filter(|k| !k.is_empty())
                    .collect()
            })
            .unwrap_or_default(),
        delegate: s.flag("WINRM_DELEGATE", false),
        keytab,
        keytab_b64,
        ntlm_fallback: false,
    };
    if !kerberos.kdcs.is_empty() && kerberos.realm.is_none() {
        s.problem(
            "WINRM_KDC",
            "needs WINRM_REALM (the realm these KDCs serve)",
        );
    }
    let ntlm_fallback = s.flag("WINRM_NTLM_FALLBACK", false);
    EnvDefaults {
        port,
        use_tls,
        transport,
        ca_file,
        cert_sha256,
        insecure,
        username,
        kerberos,
        ntlm_fallback,
    }
}

fn readable_file(path: &Path) -> Result<(), String> {
    match std::fs::File::open(path).and_then(|f| f.metadata()) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(format!("{} is not a regular file", path.display())),
        Err(e) => Err(format!("{} is not a readable file: {e}", path.display())),
    }
}

/// A host to build: where it was written, its cluster and its overrides.
struct Planned {
    origin: String,
    cluster: Option<String>,
    /// The cluster's firmware rules (and where they were written).
    cluster_boot: Vec<(String, BootRule)>,
    /// The cluster's networks and storage classes (and where they were written).
    cluster_resources: (String, HostDefinitions),
    /// The cluster's image roots.
    cluster_roots: Option<Vec<String>>,
    spec: HostSpec,
}

/// `AETHERV_IMAGE_ROOTS`: `;`-separated absolute Windows folders.
fn env_image_roots(s: &mut Sources<'_>) -> Option<Vec<String>> {
    let value = s.get("AETHERV_IMAGE_ROOTS")?;
    let roots: Vec<String> = value
        .split(';')
        .map(|r| r.trim().trim_end_matches('\\').to_owned())
        .filter(|r| !r.is_empty())
        .collect();
    for root in &roots {
        if !is_image_root(root) {
            s.problem(
                "AETHERV_IMAGE_ROOTS",
                format_args!("{root:?} is not an absolute Windows folder like C:\\ClusterStorage\\Volume1\\DiskImages"),
            );
        }
    }
    Some(roots)
}

/// An absolute Windows folder (`X:\...` or `\\server\share\...`) without wildcards or `..`.
fn is_image_root(root: &str) -> bool {
    let b = root.as_bytes();
    let drive = b.len() >= 3 && b[0].is_ascii_alphabetic() && b[1] == b':' && b[2] == b'\\';
    let unc = root.starts_with(r"\\") && root.len() > 2;
    (drive || unc)
        && !root.get(2..).is_some_and(|p| p.contains(':'))
        && !root.contains(['*', '?', '"', '<', '>', '|', '/'])
        && !root.split('\\').any(|seg| seg == "..")
        && !root.chars().any(char::is_control)
}

pub(super) fn fleet(s: &mut Sources<'_>) -> Vec<HostTarget> {
    let env = env_defaults(s);
    let env_roots = env_image_roots(s);
    let password = s.secret("WINRM_PASSWORD");
    let mut planned = Vec::new();
    let mut file_defaults = Overrides::default();
    let mut base_dir = PathBuf::new();
    match (s.get("HYPERV_HOSTS"), s.get("HOSTS_FILE")) {
        (Some(_), Some(_)) => {
            s.problem(
                "HOSTS_FILE",
                "set either HYPERV_HOSTS or HOSTS_FILE, not both",
            );
        }
        (Some(list), None) => {
            for (i, name) in list
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .enumerate()
            {
                planned.push(Planned {
                    origin: format!("HYPERV_HOSTS: entry {}", i + 1),
                    cluster: None,
                    cluster_boot: Vec::new(),
                    cluster_resources: (String::new(), HostDefinitions::default()),
                    cluster_roots: None,
                    spec: HostSpec {
                        name: name.to_owned(),
                        ..HostSpec::default()
                    },
                });
            }
            if planned.is_empty() {
                s.problem("HYPERV_HOSTS", "no host names in the list");
            }
        }
        (None, Some(file)) => {
            let file = PathBuf::from(file);
            base_dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
            if let Some(parsed) = read_hosts_file(s, &file) {
                file_defaults = parsed.defaults;
                let mut clusters = HashSet::new();
                for (c, cluster) in parsed.clusters.into_iter().enumerate() {
                    let cname = cluster.name.trim().to_owned();
                    if cname.is_empty() || cname.contains(char::is_whitespace) {
                        s.problem(
                            "HOSTS_FILE",
                            format_args!(
                                "clusters[{c}].name: {:?} is not a cluster name",
                                cluster.name
                            ),
                        );
                    } else if !clusters.insert(cname.to_ascii_lowercase()) {
                        s.problem(
                            "HOSTS_FILE",
                            format_args!("clusters[{c}].name: duplicate cluster {cname:?}"),
                        );
                    }
                    if cluster.hosts.is_empty() {
                        s.problem(
                            "HOSTS_FILE",
                            format_args!("clusters[{c}].hosts: cluster {cname:?} has no hosts"),
                        );
                    }
                    let cluster_boot: Vec<(String, BootRule)> = cluster
                        .image_boot
                        .into_iter()
                        .enumerate()
                        .map(|(r, rule)| (format!("clusters[{c}].image_boot[{r}]"), rule))
                        .collect();
                    let cluster_resources = (
                        format!("HOSTS_FILE: clusters[{c}]."),
                        definitions(
                            &cluster.networks,
                            &cluster.storage_classes,
                            cluster.default_network.as_ref(),
                        ),
                    );
                    for (h, HostEntry(spec)) in cluster.hosts.into_iter().enumerate() {
                        planned.push(Planned {
                            origin: format!("HOSTS_FILE: clusters[{c}].hosts[{h}]"),
                            cluster: Some(cname.clone()),
                            cluster_boot: cluster_boot.clone(),
                            cluster_resources: cluster_resources.clone(),
                            cluster_roots: cluster.image_roots.clone(),
                            spec,
                        });
                    }
                }
                for (h, HostEntry(spec)) in parsed.hosts.into_iter().enumerate() {
                    planned.push(Planned {
                        origin: format!("HOSTS_FILE: hosts[{h}]"),
                        cluster: None,
                        cluster_boot: Vec::new(),
                        cluster_resources: (String::new(), HostDefinitions::default()),
                        cluster_roots: None,
                        spec,
                    });
                }
                if planned.is_empty() && !s.problems.iter().any(|p| p.starts_with("HOSTS_FILE")) {
                    s.problem(
                        "HOSTS_FILE",
                        format_args!("{} lists no hosts", file.display()),
                    );
                }
                if let Some(ca) = &file_defaults.ca_file {
                    let ca = base_dir.join(ca);
                    if let Err(why) = readable_file(&ca) {
                        s.problem("HOSTS_FILE", format_args!("defaults.ca_file: {why}"));
                    }
                }
            }
        }
        (None, None) => {}
    }

    let mut seen = HashSet::new();
    let mut hosts = Vec::new();
    let mut basic_over_http_env = Vec::new();
    let mut without_user = Vec::new();
    let mut without_kerberos_credentials = Vec::new();
    for (r, rule) in file_defaults.image_boot.iter().enumerate() {
        if let Some(why) = rule.problem() {
            s.problem("HOSTS_FILE", format_args!("defaults.image_boot[{r}].{why}"));
        }
    }
    let file_resources = definitions(
        &file_defaults.networks,
        &file_defaults.storage_classes,
        file_defaults.default_network.as_ref(),
    );
    s.problems
        .extend(file_resources.problems("HOSTS_FILE: defaults."));
    let mut reported_cluster_rules = HashSet::new();
    for Planned {
        origin,
        cluster,
        cluster_boot,
        cluster_resources: (cluster_origin, cluster_resources),
        cluster_roots,
        spec,
    } in planned
    {
        // The first level that sets image_roots decides: host, cluster, defaults, variable.
        // (The variable's roots were checked when it was read.)
        let from_file: Option<Vec<String>> = spec
            .image_roots
            .clone()
            .or(cluster_roots)
            .or_else(|| file_defaults.image_roots.clone())
            .map(|roots| {
                roots
                    .into_iter()
                    .map(|r| r.trim().trim_end_matches('\\').to_owned())
                    .collect()
            });
        for root in from_file.iter().flatten() {
            if !is_image_root(root) {
                s.problems.push(format!(
                    "{origin}: image root {root:?} is not an absolute Windows folder"
                ));
            }
        }
        let image_roots = from_file.or_else(|| env_roots.clone()).unwrap_or_default();
        if reported_cluster_rules.insert(cluster_origin.clone()) {
            s.problems
                .extend(cluster_resources.problems(&cluster_origin));
        }
        let own = definitions(
            &spec.networks,
            &spec.storage_classes,
            spec.default_network.as_ref(),
        );
        s.problems.extend(own.problems(&format!("{origin}.")));
        // The host's own definitions win over its cluster's, which win over the defaults'.
        let resources = own
            .merged_with(&cluster_resources)
            .merged_with(&file_resources);
        if let Some(default) = &resources.default_network
            && resources.network(default).is_none()
        {
            s.problems.push(format!(
                "{origin}: default_network {default:?} is not a network defined for host {}",
                spec.name.trim()
            ));
        }
        for (path, rule) in &cluster_boot {
            if let Some(why) = rule.problem()
                && reported_cluster_rules.insert(path.clone())
            {
                s.problems.push(format!("HOSTS_FILE: {path}.{why}"));
            }
        }
        for (r, rule) in spec.image_boot.iter().enumerate() {
            if let Some(why) = rule.problem() {
                s.problems.push(format!("{origin}.image_boot[{r}].{why}"));
            }
        }
        // The host's own rules, then its cluster's, then the file's defaults.
        let image_boot: Vec<BootRule> = spec
            .image_boot
            .iter()
            .cloned()
            .chain(cluster_boot.into_iter().map(|(_, rule)| rule))
            .chain(file_defaults.image_boot.iter().cloned())
            .collect();
        let name = spec.name.trim().to_owned();
        if name.is_empty() || name.contains(|c: char| c.is_whitespace() || "/@:\\?#".contains(c)) {
            s.problems
                .push(format!("{origin}: {:?} is not a host name", spec.name));
            continue;
        }
        if !seen.insert(name.to_ascii_lowercase()) {
            s.problems
                .push(format!("{origin}: duplicate host {name:?}"));
            continue;
        }
        let ca_file = match &spec.ca_file {
            Some(ca) => {
                let ca = base_dir.join(ca);
                if let Err(why) = readable_file(&ca) {
                    s.problems.push(format!("{origin}.ca_file: {why}"));
                }
                Some(ca)
            }
            None => file_defaults
                .ca_file
                .as_ref()
                .map(|ca| base_dir.join(ca))
                .or_else(|| env.ca_file.clone()),
        };
        let cert_sha256 = match spec
            .cert_sha256
            .as_deref()
            .map(|v| (v, "cert_sha256"))
            .or_else(|| {
                file_defaults
                    .cert_sha256
                    .as_deref()
                    .map(|v| (v, "defaults.cert_sha256"))
            }) {
            None => env.cert_sha256.clone(),
            Some((value, field)) => match fingerprints(value) {
                Ok(pins) => pins,
                Err(why) => {
                    let place = if field == "cert_sha256" {
                        format!("{origin}.cert_sha256")
                    } else {
                        format!("HOSTS_FILE: {field}")
                    };
                    s.problems.push(format!("{place}: {why}"));
                    Vec::new()
                }
            },
        };
        let mut transport = spec
            .transport
            .or(file_defaults.transport)
            .unwrap_or(env.transport);
        let mut kerberos = None;
        if matches!(transport, Transport::Kerberos | Transport::Negotiate) {
            let target = KerberosTarget {
                spn: spec
                    .spn
                    .clone()
                    .map(|v| v.trim().to_owned())
                    .filter(|v| !v.is_empty()),
                realm: spec
                    .realm
                    .clone()
                    .or_else(|| file_defaults.realm.clone())
                    .or_else(|| env.kerberos.realm.clone()),
                kdcs: spec
                    .kdc
                    .clone()
                    .or_else(|| file_defaults.kdc.clone())
                    .unwrap_or_else(|| env.kerberos.kdcs.clone()),
                delegate: spec
                    .delegate
                    .or(file_defaults.delegate)
                    .unwrap_or(env.kerberos.delegate),
                keytab: env.kerberos.keytab.clone(),
                keytab_b64: env.kerberos.keytab_b64.clone(),
                ntlm_fallback: transport == Transport::Negotiate && env.ntlm_fallback,
            };
            let ip = name.parse::<std::net::IpAddr>().is_ok();
            if !cfg!(feature = "kerberos") {
                s.problems.push(format!(
                    "{origin} ({name}): transport {} needs a server built with the kerberos \
                     feature",
                    if transport == Transport::Kerberos {
                        "kerberos"
                    } else {
                        "negotiate"
                    }
                ));
            } else if ip && target.spn.is_none() {
                if transport == Transport::Negotiate && env.ntlm_fallback {
                    transport = Transport::Ntlm;
                } else {
                    s.problems.push(format!(
                        "{origin} ({name}): Kerberos needs the host's DNS name, not an IP \
                         address (use the name, set spn, or allow NTLM with \
                         WINRM_NTLM_FALLBACK=true and transport negotiate)"
                    ));
                }
            } else if target.keytab.is_none() && target.keytab_b64.is_none() && password.is_none() {
                without_kerberos_credentials.push(name.clone());
            }
            if !target.kdcs.is_empty() && target.realm.is_none() {
                s.problems
                    .push(format!("{origin} ({name}): kdc needs realm"));
            }
            if transport != Transport::Ntlm {
                kerberos = Some(target);
            }
        }
        let use_tls = spec
            .use_tls
            .or(file_defaults.use_tls)
            .unwrap_or(env.use_tls);
        if transport == Transport::Basic && !use_tls {
            let from_file = spec.transport.is_some()
                || spec.use_tls.is_some()
                || file_defaults.transport.is_some()
                || file_defaults.use_tls.is_some();
            if from_file {
                s.problems.push(format!(
                    "{origin} ({name}): transport basic sends the password in clear over HTTP; \
                     set use_tls: true"
                ));
            } else {
                basic_over_http_env.push(name.clone());
            }
        }
        let port = spec
            .port
            .or(file_defaults.port)
            .or(env.port)
            .unwrap_or(if use_tls { 5986 } else { 5985 });
        if port == 0 {
            s.problems
                .push(format!("{origin}.port: 0 is not a port number"));
        }
        let user = spec
            .username
            .clone()
            .or_else(|| file_defaults.username.clone())
            .or_else(|| env.username.clone())
            .map(|u| u.trim().to_owned())
            .filter(|u| !u.is_empty());
        let user = user.unwrap_or_else(|| {
            without_user.push(name.clone());
            String::new()
        });
        let scheme = if use_tls { "https" } else { "http" };
        hosts.push(HostTarget {
            endpoint: format!("{scheme}://{name}:{port}/wsman"),
            name,
            cluster,
            user,
            password: password.clone().unwrap_or_default(),
            transport,
            kerberos,
            ca_file,
            cert_sha256,
            insecure: spec
                .insecure
                .or(file_defaults.insecure)
                .unwrap_or(env.insecure),
            image_boot,
            resources,
            image_roots,
        });
    }
    if !basic_over_http_env.is_empty() {
        s.problem(
            "WINRM_TRANSPORT",
            format_args!(
                "basic sends the password in clear over HTTP (to {}); set WINRM_USE_TLS=true",
                basic_over_http_env.join(", ")
            ),
        );
    }
    if !without_user.is_empty() {
        s.problem(
            "WINRM_USERNAME",
            format_args!(
                "required when hosts are configured (no username for {})",
                without_user.join(", ")
            ),
        );
    }
    if !without_kerberos_credentials.is_empty() {
        s.problem(
            "WINRM_KEYTAB",
            format_args!(
                "Kerberos needs a keytab (WINRM_KEYTAB or WINRM_KEYTAB_B64) or a password \
                 (WINRM_PASSWORD); none for {}",
                without_kerberos_credentials.join(", ")
            ),
        );
    }
    let needs_password = hosts
        .iter()
        .any(|h| matches!(h.transport, Transport::Ntlm | Transport::Basic));
    if password.is_none() && needs_password {
        s.problem(
            "WINRM_PASSWORD",
            "required when hosts are configured (variable or secret file)",
        );
    }
    hosts
}
