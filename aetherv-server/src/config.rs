//! Configuration from environment variables and secret files.
//!
//! Every variable is described in `aetherv-server/CONFIGURATION.md`. [`Config::from_env`] reads
//! the process environment; [`Config::from_sources`] takes any lookup function and secrets
//! directory, which is what the tests use.
//!
//! Secret-capable variables (`WINRM_PASSWORD`, `OIDC_CLIENT_SECRET`, `SESSION_KEY`,
//! `AETHERV_DEMO_PASSWORD`, `METRICS_TOKEN`, and `WINRM_USERNAME`) may also come from the file `<dir>/NAME`
//! (trailing whitespace trimmed). The variable wins over the file; both set to different values
//! is an error naming the variable and the file, never the values.
//!
//! With no hosts configured, a build with the `demo` feature runs the simulated demo fleet;
//! a build without it refuses ([`NO_DEMO_FLEET`]).
//!
//! Layout: this module holds the types and the general variables; `sources` reads variables
//! and secret files, `fleet` builds the hosts (with `hosts_file` parsing `HOSTS_FILE`), `auth`
//! the authentication settings.
//!
//! Invalid configuration yields every problem at once, one message per problem, each starting
//! with the variable it concerns (`WINRM_PORT: expected a port number, got "x"`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aetherv_hyperv::protocol::DEFAULT_INSTALL_DIRECTORY;
use aetherv_provision::boot::{BootPolicy, BootRule};
use aetherv_provision::resources::HostDefinitions;
use aetherv_winrm::Secret;
use serde::Deserialize;

mod auth;
mod fleet;
mod hosts_file;
mod maintenance;
mod sources;
#[cfg(test)]
mod tests;

use auth::auth;
pub use auth::{
    AuthConfig, DisabledReason, LoginSettings, MIN_SESSION_KEY_BYTES, OIDC_CALLBACK_PATH,
    OidcSettings,
};
use fleet::fleet;
pub use maintenance::{AlertmanagerConfig, MaintenanceConfig, Matcher};
use sources::Sources;

/// Where secret files are read from unless `SECRETS_DIR` says otherwise.
pub const DEFAULT_SECRETS_DIR: &str = "/run/secrets";

/// The listen address unless `LISTEN_ADDR` says otherwise.
pub const DEFAULT_LISTEN_ADDR: &str = "127.0.0.1:8000";

/// Whether this build has the simulated demo fleet (the `demo` cargo feature).
pub const DEMO_AVAILABLE: bool = cfg!(feature = "demo");

/// The problem reported when no hosts are configured and this build has no demo fleet.
pub const NO_DEMO_FLEET: &str = "HYPERV_HOSTS, HOSTS_FILE: no hosts configured, and this build \
     has no demo fleet (it was built without the `demo` feature); set HYPERV_HOSTS or HOSTS_FILE";

/// The process configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Demo (simulated fleet) or fleet (real hosts).
    pub mode: Mode,
    /// Where host scripts are deployed on every host (`HOST_INSTALL_DIRECTORY`).
    pub install_directory: String,
    /// Address the HTTP server listens on (`LISTEN_ADDR`).
    pub listen_addr: SocketAddr,
    /// The URL browsers use to reach the server, without a trailing slash (`PUBLIC_URL`).
    pub public_url: Option<String>,
    /// Extra host names requests may carry in `Host` (`ALLOWED_HOSTS`, comma-separated),
    /// besides the `PUBLIC_URL` host, `localhost` and IP addresses (see
    /// [`crate::api::host_check`]).
    pub allowed_hosts: Vec<String>,
    /// Bearer token `/metrics` requires (`METRICS_TOKEN`, secret-capable); `None`: public.
    pub metrics_token: Option<Secret>,
    /// A separate listener serving only `/metrics` (`METRICS_LISTEN_ADDR`); when set, the main
    /// listener does not serve `/metrics`.
    pub metrics_listen_addr: Option<SocketAddr>,
    /// Log line format (`LOG_FORMAT`).
    pub log_format: LogFormat,
    /// Log level of our crates, lowercase: error, warn, info, debug or trace (`LOG_LEVEL`).
    pub log_level: String,
    /// Time between full inventory refreshes (`INVENTORY_REFRESH_INTERVAL`).
    pub refresh_interval: Duration,
    /// Host refreshes running at once (`INVENTORY_REFRESH_CONCURRENCY`).
    pub refresh_concurrency: usize,
    /// Jobs running at once across the fleet (`JOB_CONCURRENCY`).
    pub job_concurrency: usize,
    /// Jobs running at once on one host (`JOB_CONCURRENCY_PER_HOST`).
    pub job_concurrency_per_host: usize,
    /// Finished jobs kept in memory (`JOB_HISTORY`).
    pub job_history: usize,
    /// How callers are authenticated.
    pub auth: AuthConfig,
    /// Firmware overrides per image name pattern for every host (`AETHERV_IMAGE_BOOT`), tried
    /// after the hosts' own ([`HostTarget::image_boot`]).
    pub image_boot: Vec<BootRule>,
    /// `/readyz` needs at least one connected host (`READYZ_STRICT`, default off).
    pub readyz_strict: bool,
    /// Where the provisioning ISOs built at start come from (`AETHERV_ISO_SOURCE_DIR`,
    /// `AETHERV_GUEST_AGENT`, ...; see [`crate::media`]).
    pub media: crate::media::MediaConfig,
    /// The MCP endpoint's mode and guard rails (`MCP_*`).
    pub mcp: crate::mcp::guard::McpConfig,
    /// The hooks around host maintenance and the spare memory of maintenance runs
    /// (`ALERTMANAGER_*`, `MAINTENANCE_*`).
    pub maintenance: MaintenanceConfig,
}

/// What the server manages.
#[derive(Debug, Clone)]
pub enum Mode {
    /// No hosts configured: an embedded simulated fleet on loopback. Only a build with the
    /// `demo` feature configures it; [`crate::startup::Server::start`] refuses it otherwise.
    Demo(DemoConfig),
    /// Real Hyper-V hosts (`HYPERV_HOSTS` or `HOSTS_FILE`), in configuration order.
    Fleet(Vec<HostTarget>),
}

impl Mode {
    /// Whether this is demo mode.
    #[must_use]
    pub fn is_demo(&self) -> bool {
        matches!(self, Mode::Demo(_))
    }
}

/// Shape of the simulated fleet in demo mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoConfig {
    /// Number of simulated hosts (`DEMO_HOSTS`, 1 to 250).
    pub hosts: usize,
    /// VMs on each simulated host (`DEMO_VMS_PER_HOST`, 0 to 200).
    pub vms_per_host: usize,
    /// Clusters the hosts are split into; 0 for standalone hosts (`DEMO_CLUSTERS`).
    pub clusters: usize,
    /// WinRM password of the simulated hosts (`AETHERV_DEMO_PASSWORD`); random when `None`.
    pub password: Option<Secret>,
    /// The Linux guest agent binary (`AETHERV_DEMO_GUEST_AGENT`): when set, the demo's new
    /// Linux VMs are served by this real agent through aetherv-sim's guest bridge instead of
    /// the simulated agent.
    pub guest_agent: Option<PathBuf>,
    /// Milliseconds a simulated live migration takes per GiB of the VM's memory
    /// (`DEMO_MIGRATION_MS_PER_GIB`, 0 to 60000); files move at a sixth of it per GiB.
    pub migration_ms_per_gib: usize,
}

/// One Hyper-V host to manage.
#[derive(Debug, Clone)]
pub struct HostTarget {
    /// Host name as configured (also the DNS name the endpoint uses).
    pub name: String,
    /// The cluster the host belongs to, when `HOSTS_FILE` lists it under one.
    pub cluster: Option<String>,
    /// WS-Man endpoint URL, e.g. `https://hv01.corp.example:5986/wsman`.
    pub endpoint: String,
    /// WinRM user.
    pub user: String,
    /// WinRM password.
    pub password: Secret,
    /// Authentication method.
    pub transport: Transport,
    /// Kerberos settings when `transport` is `kerberos` or `negotiate`.
    pub kerberos: Option<KerberosTarget>,
    /// Extra trusted CA file for HTTPS (a certificate in it byte-identical to the host's is
    /// trusted as a pin).
    pub ca_file: Option<PathBuf>,
    /// SHA-256 fingerprints pinning the host's certificate (`WINRM_CERT_SHA256`, or the
    /// host's or `defaults`' `cert_sha256` in `HOSTS_FILE`): only these are then accepted.
    pub cert_sha256: Vec<aetherv_winrm::transport::CertFingerprint>,
    /// Accept any certificate (testing only).
    pub insecure: bool,
    /// Firmware overrides per image name pattern from `HOSTS_FILE`: the host's own
    /// `image_boot`, then its cluster's, then the file's `defaults`.
    pub image_boot: Vec<BootRule>,
    /// Named networks, storage classes and the default network from `HOSTS_FILE`: the host's
    /// own, then its cluster's, then the file's `defaults` (the first definition of a name
    /// wins). Joined with the host's own resources file at provisioning time.
    pub resources: HostDefinitions,
    /// Where the host's golden images are looked for, in order: `image_roots` of the host,
    /// else its cluster's, else `defaults`', else `AETHERV_IMAGE_ROOTS`; empty for the host
    /// script's default list (each CSV's `DiskImages` and `Images`, then `<VMPath>\Images`).
    pub image_roots: Vec<String>,
}

/// How to authenticate to the hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// NTLM (message encryption over HTTP, or inside HTTPS).
    Ntlm,
    /// HTTP Basic (HTTPS only).
    Basic,
    /// Kerberos (`Authorization: Kerberos`), message encryption over HTTP; needs a server built
    /// with the `kerberos` feature.
    Kerberos,
    /// SPNEGO with Kerberos (`Authorization: Negotiate`); a host Kerberos cannot reach (an IP
    /// address, or at run time no ticket for its SPN) uses NTLM only when
    /// `WINRM_NTLM_FALLBACK=true`.
    Negotiate,
}

/// Kerberos settings of one host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KerberosTarget {
    /// Service principal (default `HTTP/<host>@<realm>`).
    pub spn: Option<String>,
    /// The host's realm (`WINRM_REALM`, or `realm` in `HOSTS_FILE`).
    pub realm: Option<String>,
    /// KDCs of the realm when DNS does not know them (`WINRM_KDC`, or `kdc`).
    pub kdcs: Vec<String>,
    /// Delegate a forwardable TGT to the host (`WINRM_DELEGATE`, or `delegate`).
    pub delegate: bool,
    /// Client keytab file (`WINRM_KEYTAB`).
    pub keytab: Option<PathBuf>,
    /// Client keytab as base64 (`WINRM_KEYTAB_B64`, variable or secret file).
    pub keytab_b64: Option<Secret>,
    /// With `negotiate`: a connection on which Kerberos cannot start (no ticket for the
    /// host's SPN, no KDC reachable) authenticates with NTLM and the WinRM password instead
    /// (`WINRM_NTLM_FALLBACK`). A host that refuses the Kerberos token is never retried with
    /// NTLM.
    pub ntlm_fallback: bool,
}

/// Format of log lines on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A random alphanumeric secret of `len` characters.
pub(crate) fn random_secret(len: usize) -> Secret {
    use rand::Rng as _;
    let mut rng = rand::thread_rng();
    Secret::new(
        (0..len)
            .map(|_| char::from(rng.sample(rand::distributions::Alphanumeric)))
            .collect::<String>(),
    )
}

impl Config {
    /// Reads and checks the process environment, with secret files under `SECRETS_DIR`
    /// (default `/run/secrets`).
    ///
    /// # Errors
    ///
    /// Every problem found, one message each, starting with the variable's name.
    pub fn from_env() -> Result<Config, Vec<String>> {
        let secrets_dir = std::env::var("SECRETS_DIR")
            .ok()
            .filter(|d| !d.trim().is_empty())
            .map_or_else(|| PathBuf::from(DEFAULT_SECRETS_DIR), PathBuf::from);
        Self::from_sources(&|name| std::env::var(name).ok(), &secrets_dir)
    }

    /// Reads and checks the variables `env` returns (empty or whitespace-only values count as
    /// unset), with secret files under `secrets_dir`.
    ///
    /// # Errors
    ///
    /// Every problem found, one message each, starting with the variable's name.
    pub fn from_sources(
        env: &dyn Fn(&str) -> Option<String>,
        secrets_dir: &Path,
    ) -> Result<Config, Vec<String>> {
        Self::parse(env, secrets_dir, DEMO_AVAILABLE)
    }

    /// [`Config::from_sources`] for a build with (`demo_available`) or without the demo fleet.
    fn parse(
        env: &dyn Fn(&str) -> Option<String>,
        secrets_dir: &Path,
        demo_available: bool,
    ) -> Result<Config, Vec<String>> {
        let mut s = Sources {
            env,
            secrets_dir,
            problems: Vec::new(),
        };
        let install_directory = install_directory(&mut s);
        let listen_addr = match s.get("LISTEN_ADDR") {
            None => SocketAddr::from(([127, 0, 0, 1], 8000)),
            Some(v) => v.parse().unwrap_or_else(|_| {
                s.problem(
                    "LISTEN_ADDR",
                    format!("expected an address like 0.0.0.0:8000, got {v:?}"),
                );
                SocketAddr::from(([127, 0, 0, 1], 8000))
            }),
        };
        let listen_addr_ok = s.problems.iter().all(|p| !p.starts_with("LISTEN_ADDR"));
        let public_url = s
            .get("PUBLIC_URL")
            .and_then(|v| s.http_url("PUBLIC_URL", &v, true))
            .filter(|url| {
                // The UI, its API calls and the login redirects use absolute paths.
                let has_path = url::Url::parse(url).is_ok_and(|u| u.path() != "/");
                if has_path {
                    s.problem(
                        "PUBLIC_URL",
                        format_args!(
                            "must be the server's origin without a path, like https://aetherv.corp.example \
                             (aetherv is served at the root of its host), got {url:?}"
                        ),
                    );
                }
                !has_path
            });
        let allowed_hosts = allowed_hosts(&mut s);
        let metrics_token = s.secret("METRICS_TOKEN");
        let metrics_listen_addr =
            s.get("METRICS_LISTEN_ADDR")
                .and_then(|v| match v.parse::<SocketAddr>() {
                    Ok(addr) if addr == listen_addr && addr.port() != 0 => {
                        s.problem(
                            "METRICS_LISTEN_ADDR",
                            format_args!("must differ from LISTEN_ADDR ({listen_addr})"),
                        );
                        None
                    }
                    Ok(addr) => Some(addr),
                    Err(_) => {
                        s.problem(
                            "METRICS_LISTEN_ADDR",
                            format_args!("expected an address like 0.0.0.0:9100, got {v:?}"),
                        );
                        None
                    }
                });
        let log_format = match s.get("LOG_FORMAT").map(|v| v.to_ascii_lowercase()) {
            None => LogFormat::Text,
            Some(v) if v == "text" => LogFormat::Text,
            Some(v) if v == "json" => LogFormat::Json,
            Some(v) => {
                s.problem("LOG_FORMAT", format!("expected text or json, got {v:?}"));
                LogFormat::Text
            }
        };
        let log_level = match s.get("LOG_LEVEL").map(|v| v.to_ascii_lowercase()) {
            None => "info".to_owned(),
            Some(v) if ["error", "warn", "info", "debug", "trace"].contains(&v.as_str()) => v,
            Some(v) => {
                s.problem(
                    "LOG_LEVEL",
                    format!("expected error, warn, info, debug or trace, got {v:?}"),
                );
                "info".to_owned()
            }
        };
        let refresh = s.number("INVENTORY_REFRESH_INTERVAL", 30, 1, 86_400);
        let refresh_concurrency = s.number("INVENTORY_REFRESH_CONCURRENCY", 256, 1, 4096);
        let job_concurrency = s.number("JOB_CONCURRENCY", 4, 1, 256);
        let job_concurrency_per_host = s.number("JOB_CONCURRENCY_PER_HOST", 2, 1, 64);
        let job_history = s.number("JOB_HISTORY", 1000, 10, 100_000);
        let readyz_strict = s.flag("READYZ_STRICT", false);
        let mcp = crate::mcp::guard::McpConfig::from_sources(env).unwrap_or_else(|problems| {
            s.problems.extend(problems);
            crate::mcp::guard::McpConfig::default()
        });

        let image_boot = image_boot(&mut s);
        let media = media_config(&mut s);
        let maintenance = maintenance::maintenance_config(&mut s);

        let hosts_configured = s.get("HYPERV_HOSTS").is_some() || s.get("HOSTS_FILE").is_some();
        let mode = if hosts_configured {
            Mode::Fleet(fleet(&mut s))
        } else if demo_available {
            Mode::Demo(demo(&mut s))
        } else {
            s.problems.push(NO_DEMO_FLEET.to_owned());
            Mode::Fleet(Vec::new())
        };
        let auth = auth(
            &mut s,
            hosts_configured,
            listen_addr_ok.then_some(listen_addr),
            public_url.as_deref(),
        );

        if !s.problems.is_empty() {
            return Err(s.problems);
        }
        Ok(Config {
            mode,
            install_directory,
            listen_addr,
            public_url,
            allowed_hosts,
            metrics_token,
            metrics_listen_addr,
            log_format,
            log_level,
            refresh_interval: Duration::from_secs(refresh as u64),
            refresh_concurrency,
            job_concurrency,
            job_concurrency_per_host,
            job_history,
            auth,
            image_boot,
            readyz_strict,
            media,
            mcp,
            maintenance,
        })
    }

    /// The named networks and storage classes of every host with some, by lowercase host
    /// name (the provisioning pipeline's [`ProvisionConfig::resources`]).
    ///
    /// [`ProvisionConfig::resources`]: aetherv_provision::provision::ProvisionConfig::resources
    #[must_use]
    pub fn host_resources(&self) -> BTreeMap<String, HostDefinitions> {
        self.hosts()
            .iter()
            .filter(|h| h.resources != HostDefinitions::default())
            .map(|h| (h.name.to_ascii_lowercase(), h.resources.clone()))
            .collect()
    }

    /// The firmware rules of the provisioning pipeline: each host's `HOSTS_FILE` rules, then
    /// `AETHERV_IMAGE_BOOT`'s.
    #[must_use]
    pub fn boot_policy(&self) -> BootPolicy {
        BootPolicy {
            hosts: self
                .hosts()
                .iter()
                .filter(|h| !h.image_boot.is_empty())
                .map(|h| (h.name.to_ascii_lowercase(), h.image_boot.clone()))
                .collect(),
            global: self.image_boot.clone(),
        }
    }

    /// The configured hosts; empty in demo mode.
    #[must_use]
    pub fn hosts(&self) -> &[HostTarget] {
        match &self.mode {
            Mode::Fleet(hosts) => hosts,
            Mode::Demo(_) => &[],
        }
    }
}

/// `ALLOWED_HOSTS`: comma-separated host names (`name` or `name:port`), each a DNS name.
fn allowed_hosts(s: &mut Sources<'_>) -> Vec<String> {
    let Some(value) = s.get("ALLOWED_HOSTS") else {
        return Vec::new();
    };
    let mut names = Vec::new();
    for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let name = item.rsplit_once(':').map_or(item, |(name, _)| name);
        let valid = !name.is_empty()
            && name.len() <= 253
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if valid {
            names.push(item.to_owned());
        } else {
            s.problem(
                "ALLOWED_HOSTS",
                format_args!("expected host names like aetherv.corp.example, got {item:?}"),
            );
        }
    }
    names
}

fn install_directory(s: &mut Sources<'_>) -> String {
    let Some(dir) = s.get("HOST_INSTALL_DIRECTORY") else {
        return DEFAULT_INSTALL_DIRECTORY.to_owned();
    };
    let bytes = dir.as_bytes();
    let absolute = bytes.len() >= 3
        && bytes[0].is_ascii_alphabetic()
        && bytes[1] == b':'
        && bytes[2] == b'\\'
        && !dir[2..]
            .chars()
            .any(|c| c.is_control() || matches!(c, '<' | '>' | ':' | '"' | '/' | '|' | '?' | '*'));
    if !absolute {
        s.problem(
            "HOST_INSTALL_DIRECTORY",
            format_args!(
                "expected an absolute Windows path like {DEFAULT_INSTALL_DIRECTORY}, got {dir:?}"
            ),
        );
    }
    dir
}

/// `AETHERV_IMAGE_BOOT`: a YAML (or JSON) list of firmware rules, the shape of `HOSTS_FILE`'s
/// `image_boot`.
fn image_boot(s: &mut Sources<'_>) -> Vec<BootRule> {
    let Some(text) = s.get("AETHERV_IMAGE_BOOT") else {
        return Vec::new();
    };
    let parsed: Result<Vec<BootRule>, _> =
        serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(&text));
    match parsed {
        Ok(rules) => {
            for (r, rule) in rules.iter().enumerate() {
                if let Some(why) = rule.problem() {
                    s.problem("AETHERV_IMAGE_BOOT", format_args!("[{r}].{why}"));
                }
            }
            rules
        }
        Err(e) => {
            let path = e.path().to_string();
            let message = e.inner().to_string();
            s.problem(
                "AETHERV_IMAGE_BOOT",
                format_args!(
                    "expected a list like [{{image: \"ubuntu-*\", secure_boot_template: \
                     MicrosoftUEFICertificateAuthority}}]: {}{message}",
                    if path.is_empty() || path == "." {
                        String::new()
                    } else {
                        format!("{path}: ")
                    }
                ),
            );
            Vec::new()
        }
    }
}

fn demo(s: &mut Sources<'_>) -> DemoConfig {
    let hosts = s.number("DEMO_HOSTS", 5, 1, 250);
    let vms_per_host = s.number("DEMO_VMS_PER_HOST", 8, 0, 200);
    let clusters = s.number("DEMO_CLUSTERS", 2.min(hosts), 0, hosts);
    let password = s.secret("AETHERV_DEMO_PASSWORD");
    let migration_ms_per_gib = s.number("DEMO_MIGRATION_MS_PER_GIB", 100, 0, 60_000);
    let guest_agent = s
        .get("AETHERV_DEMO_GUEST_AGENT")
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    if let Some(agent) = &guest_agent
        && !agent.is_file()
    {
        s.problem(
            "AETHERV_DEMO_GUEST_AGENT",
            format!(
                "{} is not a file (build it: cargo build -p aetherv-guest)",
                agent.display()
            ),
        );
    }
    DemoConfig {
        hosts,
        vms_per_host,
        clusters,
        password,
        guest_agent,
        migration_ms_per_gib,
    }
}

/// The provisioning ISO variables: `AETHERV_PROVISIONING_ISOS` (default on),
/// `AETHERV_ISO_SOURCE_DIR` (must be a folder when set), `AETHERV_GUEST_AGENT` (must be a
/// file when set), `AETHERV_ISO_OUTPUT_DIR` and `AETHERV_XORRISO`.
fn media_config(s: &mut Sources<'_>) -> crate::media::MediaConfig {
    let enabled = s.flag("AETHERV_PROVISIONING_ISOS", true);
    let source_dir = s.get("AETHERV_ISO_SOURCE_DIR").map(PathBuf::from);
    if let Some(dir) = &source_dir
        && !dir.is_dir()
    {
        s.problem(
            "AETHERV_ISO_SOURCE_DIR",
            format_args!("{} is not a folder", dir.display()),
        );
    }
    let guest_agent = s.get("AETHERV_GUEST_AGENT").map(PathBuf::from);
    if let Some(agent) = &guest_agent
        && !agent.is_file()
    {
        s.problem(
            "AETHERV_GUEST_AGENT",
            format_args!("{} is not a file", agent.display()),
        );
    }
    crate::media::MediaConfig {
        enabled,
        source_dir,
        guest_agent,
        output_dir: s.get("AETHERV_ISO_OUTPUT_DIR").map(PathBuf::from),
        xorriso: s.get("AETHERV_XORRISO").map(PathBuf::from),
    }
}
