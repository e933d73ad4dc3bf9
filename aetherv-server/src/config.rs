//! Configuration from environment variables and secret files.
//!
//! Every variable is described in `aetherv-server/CONFIGURATION.md`. [`Config::from_env`] reads
//! the process environment; [`Config::from_sources`] takes any lookup function and secrets
//! directory, which is what the tests use.
//!
//! Secret-capable variables (`WINRM_PASSWORD`, `OIDC_CLIENT_SECRET`, `SESSION_KEY`,
//! `AETHERV_DEMO_PASSWORD`, and `WINRM_USERNAME`) may also come from the file `<dir>/NAME`
//! (trailing whitespace trimmed). The variable wins over the file; both set to different values
//! is an error naming the variable and the file, never the values.
//!
//! Invalid configuration yields every problem at once, one message per problem, each starting
//! with the variable it concerns (`WINRM_PORT: expected a port number, got "x"`).

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aetherv_hyperv::protocol::DEFAULT_INSTALL_DIRECTORY;
use aetherv_winrm::Secret;
use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};

use crate::auth::oidc::RoleNames;

/// Where secret files are read from unless `SECRETS_DIR` says otherwise.
pub const DEFAULT_SECRETS_DIR: &str = "/run/secrets";

/// The listen address unless `LISTEN_ADDR` says otherwise.
pub const DEFAULT_LISTEN_ADDR: &str = "127.0.0.1:8000";

/// The shortest accepted `SESSION_KEY`, in bytes.
pub const MIN_SESSION_KEY_BYTES: usize = 32;

/// The path, relative to the public URL, of the OIDC redirect (callback) endpoint.
pub const OIDC_CALLBACK_PATH: &str = "/oidc/callback";

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
    /// Log line format (`LOG_FORMAT`).
    pub log_format: LogFormat,
    /// Log level of our crates, lowercase: error, warn, info, debug or trace (`LOG_LEVEL`).
    pub log_level: String,
    /// Time between full inventory refreshes (`INVENTORY_REFRESH_INTERVAL`).
    pub refresh_interval: Duration,
    /// Jobs running at once across the fleet (`JOB_CONCURRENCY`).
    pub job_concurrency: usize,
    /// Jobs running at once on one host (`JOB_CONCURRENCY_PER_HOST`).
    pub job_concurrency_per_host: usize,
    /// Finished jobs kept in memory (`JOB_HISTORY`).
    pub job_history: usize,
    /// How callers are authenticated.
    pub auth: AuthConfig,
}

/// What the server manages.
#[derive(Debug, Clone)]
pub enum Mode {
    /// No hosts configured: an embedded simulated fleet on loopback.
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
    /// Extra trusted CA file for HTTPS.
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate (testing only).
    pub insecure: bool,
}

/// How to authenticate to the hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// NTLM (message encryption over HTTP, or inside HTTPS).
    Ntlm,
    /// HTTP Basic (HTTPS only).
    Basic,
}

/// Format of log lines on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// How callers are authenticated.
#[derive(Debug, Clone)]
// One value per process: the size difference does not matter and keeps matching simple.
#[allow(clippy::large_enum_variant)]
pub enum AuthConfig {
    /// Every caller is admin; the server says so loudly at start.
    Disabled(DisabledReason),
    /// OIDC bearer tokens, and browser login when configured.
    Oidc(OidcSettings),
}

/// Why authentication is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisabledReason {
    /// Demo mode without `OIDC_ISSUER_URL`.
    Demo,
    /// `AUTH_ENABLED=false` with `ALLOW_DEV_AUTH=true`.
    DevAuth,
}

/// OIDC settings.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    /// The issuer (`OIDC_ISSUER_URL`); its discovery document names the keys.
    pub issuer_url: String,
    /// The client id, also the audience tokens must carry (`OIDC_CLIENT_ID`).
    pub client_id: String,
    /// Role names mapping token claims to reader, writer and admin.
    pub roles: RoleNames,
    /// Browser login (authorization code flow); `None` when `OIDC_CLIENT_SECRET` is unset and
    /// only bearer tokens are accepted.
    pub login: Option<LoginSettings>,
}

/// Browser login settings.
#[derive(Debug, Clone)]
pub struct LoginSettings {
    /// The client secret (`OIDC_CLIENT_SECRET`).
    pub client_secret: Secret,
    /// The redirect URL registered with the issuer, ending in `/oidc/callback`.
    pub redirect_url: String,
    /// Scopes requested at login (`OIDC_SCOPES`); always contains `openid`.
    pub scopes: Vec<String>,
    /// Key signing the session cookie (`SESSION_KEY`, at least 32 bytes); `None` means use
    /// [`LoginSettings::session_key_or_random`].
    pub session_key: Option<Secret>,
}

impl LoginSettings {
    /// The configured session key, or a fresh random one, with a warning that browser
    /// sessions will not survive a restart.
    #[must_use]
    pub fn session_key_or_random(&self) -> Secret {
        if let Some(key) = &self.session_key {
            return key.clone();
        }
        tracing::warn!(
            "SESSION_KEY is not set: using a random session key, so browser sessions do not \
             survive a restart"
        );
        random_secret(48)
    }
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
        let job_concurrency = s.number("JOB_CONCURRENCY", 4, 1, 256);
        let job_concurrency_per_host = s.number("JOB_CONCURRENCY_PER_HOST", 2, 1, 64);
        let job_history = s.number("JOB_HISTORY", 1000, 10, 100_000);

        let hosts_configured = s.get("HYPERV_HOSTS").is_some() || s.get("HOSTS_FILE").is_some();
        let mode = if hosts_configured {
            Mode::Fleet(fleet(&mut s))
        } else {
            Mode::Demo(demo(&mut s))
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
            log_format,
            log_level,
            refresh_interval: Duration::from_secs(refresh as u64),
            job_concurrency,
            job_concurrency_per_host,
            job_history,
            auth,
        })
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

/// The variable source, the secrets directory and the problems found so far.
struct Sources<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    secrets_dir: &'a Path,
    problems: Vec<String>,
}

impl Sources<'_> {
    /// The variable's value as set (untrimmed), `None` when unset, empty or whitespace.
    fn raw(&self, name: &str) -> Option<String> {
        (self.env)(name).filter(|v| !v.trim().is_empty())
    }

    /// The variable's trimmed value, `None` when unset, empty or whitespace.
    fn get(&self, name: &str) -> Option<String> {
        self.raw(name).map(|v| v.trim().to_owned())
    }

    fn problem(&mut self, name: &str, message: impl fmt::Display) {
        self.problems.push(format!("{name}: {message}"));
    }

    /// A secret-capable variable: the variable, else `<secrets_dir>/NAME`. Never puts the
    /// value into a message.
    fn secret(&mut self, name: &str) -> Option<Secret> {
        let path = self.secrets_dir.join(name);
        let from_file = match std::fs::read_to_string(&path) {
            Ok(text) => Some(text.trim_end().to_owned()).filter(|t| !t.trim().is_empty()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                self.problem(name, format_args!("cannot read {}: {e}", path.display()));
                None
            }
        };
        match (self.raw(name), from_file) {
            (Some(var), Some(file)) => {
                if var.trim_end() != file {
                    self.problem(
                        name,
                        format_args!(
                            "the variable and the file {} hold different values; set only one",
                            path.display()
                        ),
                    );
                }
                Some(Secret::new(var))
            }
            (Some(var), None) => Some(Secret::new(var)),
            (None, Some(file)) => Some(Secret::new(file)),
            (None, None) => None,
        }
    }

    /// A whole number in `min..=max`, `default` when unset.
    fn number(&mut self, name: &str, default: usize, min: usize, max: usize) -> usize {
        let Some(v) = self.get(name) else {
            return default;
        };
        match v.parse::<usize>() {
            Ok(n) if (min..=max).contains(&n) => n,
            _ => {
                self.problem(
                    name,
                    format_args!("expected a whole number from {min} to {max}, got {v:?}"),
                );
                default
            }
        }
    }

    /// A boolean (`true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`), `default` when unset.
    fn flag(&mut self, name: &str, default: bool) -> bool {
        let Some(v) = self.get(name) else {
            return default;
        };
        match v.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => {
                self.problem(name, format_args!("expected true or false, got {v:?}"));
                default
            }
        }
    }

    /// An absolute http(s) URL, returned without a trailing slash when `base` (no query or
    /// fragment allowed then).
    fn http_url(&mut self, name: &str, value: &str, base: bool) -> Option<String> {
        let ok = url::Url::parse(value).ok().filter(|u| {
            matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some_and(|h| !h.is_empty())
                && u.username().is_empty()
                && u.password().is_none()
                && (!base || (u.query().is_none() && u.fragment().is_none()))
        });
        if ok.is_some() {
            Some(if base {
                value.trim_end_matches('/').to_owned()
            } else {
                value.to_owned()
            })
        } else {
            self.problem(
                name,
                format_args!(
                    "expected an absolute http or https URL like https://aetherv.corp.example, \
                     got {value:?}"
                ),
            );
            None
        }
    }
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

fn demo(s: &mut Sources<'_>) -> DemoConfig {
    let hosts = s.number("DEMO_HOSTS", 5, 1, 250);
    let vms_per_host = s.number("DEMO_VMS_PER_HOST", 8, 0, 200);
    let clusters = s.number("DEMO_CLUSTERS", 2.min(hosts), 0, hosts);
    let password = s.secret("AETHERV_DEMO_PASSWORD");
    DemoConfig {
        hosts,
        vms_per_host,
        clusters,
        password,
    }
}

/// Per-host WinRM settings from the environment (`WINRM_*`).
struct EnvDefaults {
    port: Option<u16>,
    use_tls: bool,
    transport: Transport,
    ca_file: Option<PathBuf>,
    insecure: bool,
    username: Option<String>,
}

fn env_defaults(s: &mut Sources<'_>) -> EnvDefaults {
    let transport = match s.get("WINRM_TRANSPORT").map(|v| v.to_ascii_lowercase()) {
        None => Transport::Ntlm,
        Some(t) if t == "ntlm" => Transport::Ntlm,
        Some(t) if t == "basic" => Transport::Basic,
        Some(other) => {
            s.problem(
                "WINRM_TRANSPORT",
                format_args!("expected ntlm or basic, got {other:?}"),
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
    let username = s
        .secret("WINRM_USERNAME")
        .map(|u| u.expose().trim().to_owned());
    EnvDefaults {
        port,
        use_tls,
        transport,
        ca_file,
        insecure,
        username,
    }
}

fn readable_file(path: &Path) -> Result<(), String> {
    match std::fs::File::open(path).and_then(|f| f.metadata()) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(format!("{} is not a regular file", path.display())),
        Err(e) => Err(format!("{} is not a readable file: {e}", path.display())),
    }
}

/// Settings a `HOSTS_FILE` entry or its `defaults` may override.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Overrides {
    port: Option<u16>,
    use_tls: Option<bool>,
    transport: Option<Transport>,
    ca_file: Option<PathBuf>,
    insecure: Option<bool>,
    username: Option<String>,
}

/// One host in `HOSTS_FILE`: a name, or a mapping with a name and overrides.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostSpec {
    name: String,
    port: Option<u16>,
    use_tls: Option<bool>,
    transport: Option<Transport>,
    ca_file: Option<PathBuf>,
    insecure: Option<bool>,
    username: Option<String>,
}

/// A `HostSpec` written either as a bare name or as a mapping.
#[derive(Debug, Clone)]
struct HostEntry(HostSpec);

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
struct ClusterSpec {
    name: String,
    hosts: Vec<HostEntry>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostsFile {
    #[serde(default)]
    defaults: Overrides,
    #[serde(default)]
    clusters: Vec<ClusterSpec>,
    #[serde(default)]
    hosts: Vec<HostEntry>,
}

/// A host to build: where it was written, its cluster and its overrides.
struct Planned {
    origin: String,
    cluster: Option<String>,
    spec: HostSpec,
}

fn read_hosts_file(s: &mut Sources<'_>, file: &Path) -> Option<HostsFile> {
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

fn fleet(s: &mut Sources<'_>) -> Vec<HostTarget> {
    let env = env_defaults(s);
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
                    for (h, HostEntry(spec)) in cluster.hosts.into_iter().enumerate() {
                        planned.push(Planned {
                            origin: format!("HOSTS_FILE: clusters[{c}].hosts[{h}]"),
                            cluster: Some(cname.clone()),
                            spec,
                        });
                    }
                }
                for (h, HostEntry(spec)) in parsed.hosts.into_iter().enumerate() {
                    planned.push(Planned {
                        origin: format!("HOSTS_FILE: hosts[{h}]"),
                        cluster: None,
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
    for Planned {
        origin,
        cluster,
        spec,
    } in planned
    {
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
        let transport = spec
            .transport
            .or(file_defaults.transport)
            .unwrap_or(env.transport);
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
            ca_file,
            insecure: spec
                .insecure
                .or(file_defaults.insecure)
                .unwrap_or(env.insecure),
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
    if password.is_none() {
        s.problem(
            "WINRM_PASSWORD",
            "required when hosts are configured (variable or secret file)",
        );
    }
    hosts
}

fn auth(
    s: &mut Sources<'_>,
    fleet: bool,
    listen_addr: Option<SocketAddr>,
    public_url: Option<&str>,
) -> AuthConfig {
    let enabled = s.flag("AUTH_ENABLED", true);
    let allow_dev = s.flag("ALLOW_DEV_AUTH", false);
    if !enabled {
        if !allow_dev {
            s.problem(
                "AUTH_ENABLED",
                "false turns authentication off and is only allowed for development; \
                 set ALLOW_DEV_AUTH=true as well",
            );
        }
        return AuthConfig::Disabled(DisabledReason::DevAuth);
    }
    let issuer = s.get("OIDC_ISSUER_URL");
    if !fleet && issuer.is_none() {
        return AuthConfig::Disabled(DisabledReason::Demo);
    }
    let issuer_url = match issuer {
        Some(v) => s.http_url("OIDC_ISSUER_URL", &v, true).unwrap_or_default(),
        None => {
            s.problem(
                "OIDC_ISSUER_URL",
                "required when hosts are configured and AUTH_ENABLED is true",
            );
            String::new()
        }
    };
    let client_id = s.get("OIDC_CLIENT_ID").unwrap_or_else(|| {
        s.problem("OIDC_CLIENT_ID", "required when OIDC is used");
        String::new()
    });
    let roles = RoleNames {
        reader: s.get("OIDC_READER_ROLE"),
        writer: s.get("OIDC_WRITER_ROLE"),
        admin: s.get("OIDC_ADMIN_ROLE"),
        role_name: s.get("OIDC_ROLE_NAME"),
    };
    if roles.reader.is_none()
        && roles.writer.is_none()
        && roles.admin.is_none()
        && roles.role_name.is_none()
    {
        s.problem(
            "OIDC_READER_ROLE, OIDC_WRITER_ROLE, OIDC_ADMIN_ROLE, OIDC_ROLE_NAME",
            "set at least one role name, otherwise no token grants any access",
        );
    }
    let login = s
        .secret("OIDC_CLIENT_SECRET")
        .map(|client_secret| login(s, client_secret, listen_addr, public_url));
    AuthConfig::Oidc(OidcSettings {
        issuer_url,
        client_id,
        roles,
        login,
    })
}

fn login(
    s: &mut Sources<'_>,
    client_secret: Secret,
    listen_addr: Option<SocketAddr>,
    public_url: Option<&str>,
) -> LoginSettings {
    let url_var = s.get("OIDC_REDIRECT_URL");
    let uri_var = s.get("OIDC_REDIRECT_URI");
    let explicit = match (url_var, uri_var) {
        (Some(url), Some(uri)) if url != uri => {
            s.problem(
                "OIDC_REDIRECT_URL",
                "OIDC_REDIRECT_URI is also set, to a different value; set only one",
            );
            Some(url)
        }
        (Some(url), _) => Some(url),
        (None, Some(uri)) => Some(uri),
        (None, None) => None,
    };
    let redirect_url = if let Some(url) = explicit {
        s.http_url("OIDC_REDIRECT_URL", &url, false)
            .unwrap_or_default()
    } else if let Some(base) = public_url {
        format!("{base}{OIDC_CALLBACK_PATH}")
    } else {
        match listen_addr {
            Some(addr) if addr.ip().is_loopback() => format!("http://{addr}{OIDC_CALLBACK_PATH}"),
            Some(_) => {
                s.problem(
                    "PUBLIC_URL",
                    "required for browser login (OIDC_CLIENT_SECRET is set) when LISTEN_ADDR is \
                     not a loopback address; or set OIDC_REDIRECT_URL",
                );
                String::new()
            }
            None => String::new(),
        }
    };
    let scopes: Vec<String> = match s.get("OIDC_SCOPES") {
        None => vec!["openid".into(), "profile".into(), "email".into()],
        Some(v) => {
            let mut scopes: Vec<String> = Vec::new();
            for scope in v.split([' ', ',', '\t']).filter(|x| !x.is_empty()) {
                if !scopes.iter().any(|x| x == scope) {
                    scopes.push(scope.to_owned());
                }
            }
            if !scopes.iter().any(|x| x == "openid") {
                s.problem(
                    "OIDC_SCOPES",
                    format_args!("must include openid, got {v:?}"),
                );
            }
            scopes
        }
    };
    let session_key = s.secret("SESSION_KEY");
    if let Some(key) = &session_key
        && key.expose().len() < MIN_SESSION_KEY_BYTES
    {
        s.problem(
            "SESSION_KEY",
            format_args!(
                "too short: at least {MIN_SESSION_KEY_BYTES} bytes are needed (e.g. openssl rand \
                 -base64 48)"
            ),
        );
    }
    LoginSettings {
        client_secret,
        redirect_url,
        scopes,
        session_key,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "aetherv-config-test-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn write(&self, name: &str, content: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, content).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Valid fleet configuration: two hosts, credentials and OIDC.
    const FLEET: &[(&str, &str)] = &[
        ("HYPERV_HOSTS", "hv01.lab.example,hv02.lab.example"),
        ("WINRM_USERNAME", "LAB\\svc"),
        ("WINRM_PASSWORD", "winrm-pw-123"),
        (
            "OIDC_ISSUER_URL",
            "https://login.example.com/realms/aetherv",
        ),
        ("OIDC_CLIENT_ID", "aetherv"),
        ("OIDC_ADMIN_ROLE", "aetherv-admin"),
    ];

    /// `base` with `extra` applied on top (an empty value unsets).
    fn vars(base: &[(&str, &str)], extra: &[(&str, &str)]) -> HashMap<String, String> {
        let mut map: HashMap<String, String> = base
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        for (k, v) in extra {
            map.insert((*k).to_owned(), (*v).to_owned());
        }
        map
    }

    fn load_in(map: &HashMap<String, String>, secrets: &Path) -> Result<Config, Vec<String>> {
        Config::from_sources(&|name| map.get(name).cloned(), secrets)
    }

    fn load(base: &[(&str, &str)], extra: &[(&str, &str)]) -> Result<Config, Vec<String>> {
        let empty = TempDir::new();
        load_in(&vars(base, extra), &empty.0)
    }

    fn config(extra: &[(&str, &str)]) -> Result<Config, Vec<String>> {
        load(&[], extra)
    }

    fn fleet_hosts(c: &Config) -> &[HostTarget] {
        match &c.mode {
            Mode::Fleet(h) => h,
            Mode::Demo(_) => panic!("expected fleet mode"),
        }
    }

    /// Asserts that loading fails with exactly one problem, starting with `var`, and returns it.
    fn one_problem(result: Result<Config, Vec<String>>, var: &str) -> String {
        let problems = result.expect_err("expected a configuration error");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with(&format!("{var}: ")), "{problems:?}");
        problems[0].clone()
    }

    fn oidc(c: &Config) -> &OidcSettings {
        match &c.auth {
            AuthConfig::Oidc(o) => o,
            other @ AuthConfig::Disabled(_) => panic!("expected OIDC, got {other:?}"),
        }
    }

    #[test]
    fn no_hosts_means_demo_mode_with_defaults() {
        let c = config(&[]).unwrap();
        let Mode::Demo(demo) = &c.mode else {
            panic!("expected demo mode");
        };
        assert_eq!(
            *demo,
            DemoConfig {
                hosts: 5,
                vms_per_host: 8,
                clusters: 2,
                password: None
            }
        );
        assert!(c.hosts().is_empty());
        assert_eq!(c.install_directory, DEFAULT_INSTALL_DIRECTORY);
        assert_eq!(c.listen_addr.to_string(), DEFAULT_LISTEN_ADDR);
        assert_eq!(c.public_url, None);
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.log_level, "info");
        assert_eq!(c.refresh_interval, Duration::from_secs(30));
        assert_eq!(c.job_concurrency, 4);
        assert_eq!(c.job_concurrency_per_host, 2);
        assert_eq!(c.job_history, 1000);
        assert!(matches!(c.auth, AuthConfig::Disabled(DisabledReason::Demo)));
        // Whitespace counts as unset.
        assert!(config(&[("HYPERV_HOSTS", " ")]).unwrap().mode.is_demo());
    }

    #[test]
    fn hosts_with_credentials() {
        let c = load(
            FLEET,
            &[("WINRM_USE_TLS", "true"), ("WINRM_TRANSPORT", "basic")],
        )
        .unwrap();
        let hosts = fleet_hosts(&c);
        assert_eq!(hosts.len(), 2);
        assert_eq!(hosts[1].endpoint, "https://hv02.lab.example:5986/wsman");
        assert_eq!(hosts[0].transport, Transport::Basic);
        assert_eq!(hosts[0].user, "LAB\\svc");
        assert_eq!(hosts[0].password.expose(), "winrm-pw-123");
        assert_eq!(hosts[0].cluster, None);
        assert!(!format!("{hosts:?}").contains("winrm-pw-123"));
    }

    #[test]
    fn winrm_port_tls_insecure_and_ca_file() {
        let c = load(FLEET, &[]).unwrap();
        assert_eq!(
            fleet_hosts(&c)[0].endpoint,
            "http://hv01.lab.example:5985/wsman"
        );
        assert_eq!(fleet_hosts(&c)[0].transport, Transport::Ntlm);
        let dir = TempDir::new();
        let ca = dir.write("ca.pem", "-----BEGIN CERTIFICATE-----\n");
        let c = load(
            FLEET,
            &[
                ("WINRM_PORT", "15986"),
                ("WINRM_USE_TLS", "yes"),
                ("WINRM_INSECURE", "1"),
                ("WINRM_CA_FILE", ca.to_str().unwrap()),
            ],
        )
        .unwrap();
        let h = &fleet_hosts(&c)[0];
        assert_eq!(h.endpoint, "https://hv01.lab.example:15986/wsman");
        assert!(h.insecure);
        assert_eq!(h.ca_file.as_deref(), Some(ca.as_path()));

        let p = one_problem(load(FLEET, &[("WINRM_PORT", "x")]), "WINRM_PORT");
        assert_eq!(p, "WINRM_PORT: expected a port number, got \"x\"");
        one_problem(load(FLEET, &[("WINRM_PORT", "0")]), "WINRM_PORT");
        one_problem(load(FLEET, &[("WINRM_USE_TLS", "maybe")]), "WINRM_USE_TLS");
        one_problem(load(FLEET, &[("WINRM_INSECURE", "sure")]), "WINRM_INSECURE");
        one_problem(
            load(FLEET, &[("WINRM_TRANSPORT", "kerberos")]),
            "WINRM_TRANSPORT",
        );
        one_problem(
            load(FLEET, &[("WINRM_CA_FILE", "/nonexistent/ca.pem")]),
            "WINRM_CA_FILE",
        );
        // A directory is not a CA file.
        one_problem(
            load(FLEET, &[("WINRM_CA_FILE", dir.0.to_str().unwrap())]),
            "WINRM_CA_FILE",
        );
    }

    #[test]
    fn basic_without_tls_is_refused() {
        let p = one_problem(
            load(FLEET, &[("WINRM_TRANSPORT", "basic")]),
            "WINRM_TRANSPORT",
        );
        assert!(p.contains("WINRM_USE_TLS"), "{p}");
        assert!(
            p.contains("hv01.lab.example") && p.contains("hv02.lab.example"),
            "{p}"
        );
    }

    #[test]
    fn credentials_are_required_with_hosts() {
        let problems = load(FLEET, &[("WINRM_USERNAME", ""), ("WINRM_PASSWORD", "")]).unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("WINRM_USERNAME: required"))
        );
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("WINRM_PASSWORD: required"))
        );
    }

    #[test]
    fn every_problem_names_its_variable_and_all_are_reported() {
        let problems = config(&[
            ("HYPERV_HOSTS", "hv01"),
            ("WINRM_TRANSPORT", "kerberos"),
            ("WINRM_PORT", "99999"),
            ("WINRM_USE_TLS", "maybe"),
            ("WINRM_CA_FILE", "/nonexistent/ca.pem"),
            ("HOST_INSTALL_DIRECTORY", "/opt/scripts"),
            ("INVENTORY_REFRESH_INTERVAL", "0"),
            ("JOB_CONCURRENCY", "many"),
            ("JOB_CONCURRENCY_PER_HOST", "65"),
            ("JOB_HISTORY", "9"),
            ("LISTEN_ADDR", "everywhere"),
            ("PUBLIC_URL", "aetherv.corp.example"),
            ("LOG_FORMAT", "xml"),
            ("LOG_LEVEL", "loud"),
            ("AUTH_ENABLED", "perhaps"),
        ])
        .unwrap_err();
        for name in [
            "WINRM_TRANSPORT",
            "WINRM_PORT",
            "WINRM_USE_TLS",
            "WINRM_USERNAME",
            "WINRM_PASSWORD",
            "WINRM_CA_FILE",
            "HOST_INSTALL_DIRECTORY",
            "INVENTORY_REFRESH_INTERVAL",
            "JOB_CONCURRENCY",
            "JOB_CONCURRENCY_PER_HOST",
            "JOB_HISTORY",
            "LISTEN_ADDR",
            "PUBLIC_URL",
            "LOG_FORMAT",
            "LOG_LEVEL",
            "AUTH_ENABLED",
            "OIDC_ISSUER_URL",
            "OIDC_CLIENT_ID",
            "OIDC_READER_ROLE",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(&format!("{name}: "))
                    || (name == "OIDC_READER_ROLE" && p.starts_with(name))),
                "{name} missing from {problems:?}"
            );
        }
        for p in &problems {
            assert!(!p.ends_with('.'), "{p}");
        }
    }

    #[test]
    fn numbers_have_ranges() {
        let c = config(&[
            ("INVENTORY_REFRESH_INTERVAL", "86400"),
            ("JOB_CONCURRENCY", "256"),
            ("JOB_CONCURRENCY_PER_HOST", "1"),
            ("JOB_HISTORY", "100000"),
        ])
        .unwrap();
        assert_eq!(c.refresh_interval, Duration::from_secs(86_400));
        assert_eq!(c.job_concurrency, 256);
        assert_eq!(c.job_concurrency_per_host, 1);
        assert_eq!(c.job_history, 100_000);
        for (var, bad) in [
            ("INVENTORY_REFRESH_INTERVAL", "0"),
            ("INVENTORY_REFRESH_INTERVAL", "86401"),
            ("INVENTORY_REFRESH_INTERVAL", "30s"),
            ("JOB_CONCURRENCY", "0"),
            ("JOB_CONCURRENCY", "257"),
            ("JOB_CONCURRENCY_PER_HOST", "0"),
            ("JOB_CONCURRENCY_PER_HOST", "65"),
            ("JOB_HISTORY", "9"),
            ("JOB_HISTORY", "100001"),
            ("JOB_HISTORY", "-5"),
        ] {
            let p = one_problem(config(&[(var, bad)]), var);
            assert!(p.contains(&format!("{bad:?}")), "{p}");
        }
    }

    #[test]
    fn listen_addr_public_url_and_logging() {
        let c = config(&[
            ("LISTEN_ADDR", "0.0.0.0:9000"),
            ("PUBLIC_URL", "https://aetherv.corp.example/"),
            ("LOG_FORMAT", "JSON"),
            ("LOG_LEVEL", "Debug"),
        ])
        .unwrap();
        assert_eq!(c.listen_addr, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(
            c.public_url.as_deref(),
            Some("https://aetherv.corp.example")
        );
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.log_level, "debug");
        assert_eq!(
            config(&[("LOG_FORMAT", "text")]).unwrap().log_format,
            LogFormat::Text
        );
        one_problem(config(&[("LISTEN_ADDR", "localhost")]), "LISTEN_ADDR");
        for bad in [
            "aetherv.corp.example",
            "ftp://x.example",
            "https://x.example/?a=b",
            "https://corp.example/aetherv",
        ] {
            one_problem(config(&[("PUBLIC_URL", bad)]), "PUBLIC_URL");
        }
        one_problem(config(&[("LOG_FORMAT", "xml")]), "LOG_FORMAT");
        one_problem(config(&[("LOG_LEVEL", "verbose")]), "LOG_LEVEL");
    }

    #[test]
    fn install_directory_must_be_an_absolute_windows_path() {
        let c = config(&[("HOST_INSTALL_DIRECTORY", r"D:\Tools\Aetherv")]).unwrap();
        assert_eq!(c.install_directory, r"D:\Tools\Aetherv");
        for bad in [
            "/opt/aetherv",
            r"Tools\Aetherv",
            "C:",
            r"C:\a|b",
            "C:/x",
            r#"C:\a"b"#,
        ] {
            one_problem(
                config(&[("HOST_INSTALL_DIRECTORY", bad)]),
                "HOST_INSTALL_DIRECTORY",
            );
        }
    }

    #[test]
    fn demo_knobs() {
        let c = config(&[
            ("DEMO_HOSTS", "50"),
            ("DEMO_VMS_PER_HOST", "200"),
            ("DEMO_CLUSTERS", "0"),
            ("AETHERV_DEMO_PASSWORD", "demo-pw-xyz"),
        ])
        .unwrap();
        let Mode::Demo(demo) = &c.mode else {
            panic!("expected demo mode");
        };
        assert_eq!((demo.hosts, demo.vms_per_host, demo.clusters), (50, 200, 0));
        assert_eq!(demo.password.as_ref().unwrap().expose(), "demo-pw-xyz");
        assert!(!format!("{c:?}").contains("demo-pw-xyz"));
        let Mode::Demo(one) = config(&[("DEMO_HOSTS", "1")]).unwrap().mode else {
            panic!("expected demo mode");
        };
        assert_eq!(one.clusters, 1);
        one_problem(config(&[("DEMO_HOSTS", "0")]), "DEMO_HOSTS");
        one_problem(config(&[("DEMO_HOSTS", "251")]), "DEMO_HOSTS");
        one_problem(config(&[("DEMO_VMS_PER_HOST", "201")]), "DEMO_VMS_PER_HOST");
        one_problem(
            config(&[("DEMO_HOSTS", "3"), ("DEMO_CLUSTERS", "4")]),
            "DEMO_CLUSTERS",
        );
        // Ignored with real hosts.
        assert!(load(FLEET, &[("DEMO_HOSTS", "0")]).is_ok());
    }

    #[test]
    fn secret_from_file_only() {
        let secrets = TempDir::new();
        secrets.write("WINRM_PASSWORD", "file-pw-456\n");
        secrets.write("WINRM_USERNAME", "LAB\\filesvc\n");
        let map = vars(FLEET, &[("WINRM_PASSWORD", ""), ("WINRM_USERNAME", "")]);
        let c = load_in(&map, &secrets.0).unwrap();
        assert_eq!(fleet_hosts(&c)[0].password.expose(), "file-pw-456");
        assert_eq!(fleet_hosts(&c)[0].user, "LAB\\filesvc");
    }

    #[test]
    fn secret_from_env_only_and_both_equal() {
        let secrets = TempDir::new();
        let c = load_in(&vars(FLEET, &[]), &secrets.0).unwrap();
        assert_eq!(fleet_hosts(&c)[0].password.expose(), "winrm-pw-123");
        secrets.write("WINRM_PASSWORD", "winrm-pw-123\n");
        let c = load_in(&vars(FLEET, &[]), &secrets.0).unwrap();
        assert_eq!(fleet_hosts(&c)[0].password.expose(), "winrm-pw-123");
    }

    #[test]
    fn secret_in_both_places_with_different_values_is_an_error() {
        let secrets = TempDir::new();
        let file = secrets.write("WINRM_PASSWORD", "file-pw-456\n");
        let p = one_problem(load_in(&vars(FLEET, &[]), &secrets.0), "WINRM_PASSWORD");
        assert!(p.contains(file.to_str().unwrap()), "{p}");
        assert!(
            !p.contains("file-pw-456") && !p.contains("winrm-pw-123"),
            "{p}"
        );
    }

    #[test]
    fn empty_secret_file_counts_as_unset() {
        let secrets = TempDir::new();
        secrets.write("WINRM_PASSWORD", " \n");
        let map = vars(FLEET, &[("WINRM_PASSWORD", "")]);
        one_problem(load_in(&map, &secrets.0), "WINRM_PASSWORD");
    }

    fn hosts_file(yaml: &str) -> (TempDir, HashMap<String, String>) {
        let dir = TempDir::new();
        let path = dir.write("hosts.yaml", yaml);
        let map = vars(
            FLEET,
            &[("HYPERV_HOSTS", ""), ("HOSTS_FILE", path.to_str().unwrap())],
        );
        (dir, map)
    }

    #[test]
    fn hosts_file_with_clusters_defaults_and_overrides() {
        let dir = TempDir::new();
        dir.write("ca.pem", "ca");
        let (_hosts_dir, map) = hosts_file(&format!(
            r#"
defaults: {{port: 5986, use_tls: true, transport: ntlm}}
clusters:
  - name: prod-a
    hosts: [hv01.corp.example, {{name: hv02.corp.example, port: 5985, use_tls: false}}]
hosts:
  - hv10.corp.example
  - {{name: hv11.corp.example, transport: basic, use_tls: true, ca_file: {ca}, insecure: false, username: other}}
"#,
            ca = dir.0.join("ca.pem").display()
        ));
        let c = load_in(&map, &dir.0).unwrap();
        let hosts = fleet_hosts(&c);
        let names: Vec<_> = hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "hv01.corp.example",
                "hv02.corp.example",
                "hv10.corp.example",
                "hv11.corp.example"
            ]
        );
        assert_eq!(hosts[0].cluster.as_deref(), Some("prod-a"));
        assert_eq!(hosts[0].endpoint, "https://hv01.corp.example:5986/wsman");
        assert_eq!(hosts[1].cluster.as_deref(), Some("prod-a"));
        assert_eq!(hosts[1].endpoint, "http://hv02.corp.example:5985/wsman");
        assert_eq!(hosts[2].cluster, None);
        assert_eq!(hosts[2].endpoint, "https://hv10.corp.example:5986/wsman");
        assert_eq!(hosts[2].user, "LAB\\svc");
        assert_eq!(hosts[3].transport, Transport::Basic);
        assert_eq!(hosts[3].user, "other");
        assert_eq!(
            hosts[3].ca_file.as_deref(),
            Some(dir.0.join("ca.pem").as_path())
        );
        assert!(hosts.iter().all(|h| h.password.expose() == "winrm-pw-123"));
    }

    #[test]
    fn hosts_file_unknown_field_names_its_path() {
        let (_dir, map) =
            hosts_file("clusters:\n  - name: prod-a\n    hosts: [hv01, {name: hv02, prt: 5985}]\n");
        let empty = TempDir::new();
        let p = one_problem(load_in(&map, &empty.0), "HOSTS_FILE");
        assert!(
            p.starts_with("HOSTS_FILE: clusters[0].hosts[1].prt: unknown field"),
            "{p}"
        );
        let (_dir, map) = hosts_file("defaults: {tls: true}\nhosts: [hv01]\n");
        let p = one_problem(load_in(&map, &empty.0), "HOSTS_FILE");
        assert!(
            p.starts_with("HOSTS_FILE: defaults.tls: unknown field"),
            "{p}"
        );
        let (_dir, map) = hosts_file("hostz: [hv01]\n");
        let p = one_problem(load_in(&map, &empty.0), "HOSTS_FILE");
        assert!(p.contains("hostz") && p.contains("unknown field"), "{p}");
        let (_dir, map) = hosts_file("hosts: [{name: hv01, transport: kerberos}]\n");
        let p = one_problem(load_in(&map, &empty.0), "HOSTS_FILE");
        assert!(p.starts_with("HOSTS_FILE: hosts[0].transport: "), "{p}");
    }

    #[test]
    fn hosts_file_duplicates_and_bad_names() {
        let empty = TempDir::new();
        let (_dir, map) =
            hosts_file("clusters:\n  - name: a\n    hosts: [hv01, HV02]\nhosts: [hv02, hv03]\n");
        let p = one_problem(load_in(&map, &empty.0), "HOSTS_FILE");
        assert!(
            p.contains("hosts[0]") && p.contains("duplicate host"),
            "{p}"
        );
        let (_dir, map) =
            hosts_file("clusters:\n  - {name: a, hosts: [hv01]}\n  - {name: A, hosts: [hv02]}\n");
        let p = one_problem(load_in(&map, &empty.0), "HOSTS_FILE");
        assert!(p.contains("duplicate cluster"), "{p}");
        let p = one_problem(
            load(FLEET, &[("HYPERV_HOSTS", "hv01,hv01")]),
            "HYPERV_HOSTS",
        );
        assert!(p.contains("duplicate host"), "{p}");
        one_problem(
            load(FLEET, &[("HYPERV_HOSTS", "http://hv01")]),
            "HYPERV_HOSTS",
        );
        one_problem(load(FLEET, &[("HYPERV_HOSTS", ",")]), "HYPERV_HOSTS");
    }

    #[test]
    fn hosts_file_problems() {
        let empty = TempDir::new();
        let map = vars(FLEET, &[("HOSTS_FILE", "/nonexistent/hosts.yaml")]);
        let p = one_problem(load_in(&map, &empty.0), "HOSTS_FILE");
        assert!(p.contains("HYPERV_HOSTS"), "{p}");
        let map = vars(
            FLEET,
            &[
                ("HYPERV_HOSTS", ""),
                ("HOSTS_FILE", "/nonexistent/hosts.yaml"),
            ],
        );
        let p = one_problem(load_in(&map, &empty.0), "HOSTS_FILE");
        assert!(p.contains("cannot read /nonexistent/hosts.yaml"), "{p}");
        let (_dir, map) = hosts_file("hosts: []\n");
        one_problem(load_in(&map, &empty.0), "HOSTS_FILE");
        let (_dir, map) = hosts_file("hosts: [{name: hv01, transport: basic}]\n");
        let p = one_problem(load_in(&map, &empty.0), "HOSTS_FILE");
        assert!(p.starts_with("HOSTS_FILE: hosts[0] (hv01): "), "{p}");
        let (_dir, map) = hosts_file("hosts: [{name: hv01, ca_file: /nonexistent/ca.pem}]\n");
        let p = one_problem(load_in(&map, &empty.0), "HOSTS_FILE");
        assert!(p.starts_with("HOSTS_FILE: hosts[0].ca_file: "), "{p}");
        // Basic from the environment, TLS from the file: fine.
        let (_dir, mut map) = hosts_file("defaults: {use_tls: true}\nhosts: [hv01]\n");
        map.insert("WINRM_TRANSPORT".into(), "basic".into());
        assert!(load_in(&map, &empty.0).is_ok());
    }

    #[test]
    fn fleet_auth_requires_oidc() {
        let problems = load(
            FLEET,
            &[
                ("OIDC_ISSUER_URL", ""),
                ("OIDC_CLIENT_ID", ""),
                ("OIDC_ADMIN_ROLE", ""),
            ],
        )
        .unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("OIDC_ISSUER_URL: required"));
        assert!(problems[1].starts_with("OIDC_CLIENT_ID: required"));
        assert!(problems[2].starts_with("OIDC_READER_ROLE"));
        one_problem(
            load(FLEET, &[("OIDC_ISSUER_URL", "login.example")]),
            "OIDC_ISSUER_URL",
        );
        let c = load(FLEET, &[]).unwrap();
        let o = oidc(&c);
        assert_eq!(o.issuer_url, "https://login.example.com/realms/aetherv");
        assert_eq!(o.client_id, "aetherv");
        assert_eq!(o.roles.admin.as_deref(), Some("aetherv-admin"));
        assert!(o.login.is_none());
        // OIDC_ROLE_NAME alone is enough.
        let c = load(FLEET, &[("OIDC_ADMIN_ROLE", ""), ("OIDC_ROLE_NAME", "ops")]).unwrap();
        assert_eq!(oidc(&c).roles.role_name.as_deref(), Some("ops"));
    }

    #[test]
    fn auth_can_only_be_disabled_for_development() {
        let p = one_problem(load(FLEET, &[("AUTH_ENABLED", "false")]), "AUTH_ENABLED");
        assert!(p.contains("ALLOW_DEV_AUTH=true"), "{p}");
        let c = load(
            FLEET,
            &[
                ("AUTH_ENABLED", "false"),
                ("ALLOW_DEV_AUTH", "true"),
                ("OIDC_ISSUER_URL", ""),
            ],
        )
        .unwrap();
        assert!(matches!(
            c.auth,
            AuthConfig::Disabled(DisabledReason::DevAuth)
        ));
        one_problem(config(&[("AUTH_ENABLED", "false")]), "AUTH_ENABLED");
        one_problem(config(&[("ALLOW_DEV_AUTH", "maybe")]), "ALLOW_DEV_AUTH");
    }

    #[test]
    fn demo_with_issuer_uses_oidc_with_the_same_rules() {
        let c = config(&[
            ("OIDC_ISSUER_URL", "http://127.0.0.1:9999"),
            ("OIDC_CLIENT_ID", "aetherv"),
            ("OIDC_READER_ROLE", "r"),
        ])
        .unwrap();
        assert!(c.mode.is_demo());
        assert_eq!(oidc(&c).issuer_url, "http://127.0.0.1:9999");
        one_problem(
            config(&[
                ("OIDC_ISSUER_URL", "http://127.0.0.1:9999"),
                ("OIDC_READER_ROLE", "r"),
            ]),
            "OIDC_CLIENT_ID",
        );
    }

    #[test]
    fn browser_login_settings() {
        let secret = [("OIDC_CLIENT_SECRET", "client-secret-789")];
        // Loopback listener: the redirect URL is derived from it.
        let c = load(FLEET, &secret).unwrap();
        let login = oidc(&c).login.as_ref().unwrap();
        assert_eq!(login.redirect_url, "http://127.0.0.1:8000/oidc/callback");
        assert_eq!(login.scopes, ["openid", "profile", "email"]);
        assert!(login.session_key.is_none());
        assert_eq!(login.client_secret.expose(), "client-secret-789");
        // Not loopback: PUBLIC_URL is needed.
        let p = one_problem(
            load(FLEET, &[secret[0], ("LISTEN_ADDR", "0.0.0.0:8000")]),
            "PUBLIC_URL",
        );
        assert!(p.contains("OIDC_REDIRECT_URL"), "{p}");
        let c = load(
            FLEET,
            &[
                secret[0],
                ("LISTEN_ADDR", "0.0.0.0:8000"),
                ("PUBLIC_URL", "https://aetherv.corp.example"),
                ("OIDC_SCOPES", "openid groups"),
                ("SESSION_KEY", "0123456789abcdef0123456789abcdef"),
            ],
        )
        .unwrap();
        let login = oidc(&c).login.as_ref().unwrap();
        assert_eq!(
            login.redirect_url,
            "https://aetherv.corp.example/oidc/callback"
        );
        assert_eq!(login.scopes, ["openid", "groups"]);
        assert_eq!(login.session_key_or_random().expose().len(), 32);
        // OIDC_REDIRECT_URL wins over PUBLIC_URL; OIDC_REDIRECT_URI is accepted too.
        for var in ["OIDC_REDIRECT_URL", "OIDC_REDIRECT_URI"] {
            let c = load(
                FLEET,
                &[
                    secret[0],
                    ("PUBLIC_URL", "https://aetherv.corp.example"),
                    (var, "https://other.example/oidc/callback"),
                ],
            )
            .unwrap();
            let login = oidc(&c).login.as_ref().unwrap();
            assert_eq!(login.redirect_url, "https://other.example/oidc/callback");
        }
        one_problem(
            load(FLEET, &[secret[0], ("OIDC_REDIRECT_URL", "/oidc/callback")]),
            "OIDC_REDIRECT_URL",
        );
        one_problem(
            load(FLEET, &[secret[0], ("OIDC_SCOPES", "profile email")]),
            "OIDC_SCOPES",
        );
        let p = one_problem(
            load(FLEET, &[secret[0], ("SESSION_KEY", "short-session-key")]),
            "SESSION_KEY",
        );
        assert!(!p.contains("short-session-key"), "{p}");
        // A generated key is long enough and differs between calls.
        let c = load(FLEET, &secret).unwrap();
        let login = oidc(&c).login.as_ref().unwrap();
        let (a, b) = (login.session_key_or_random(), login.session_key_or_random());
        assert!(a.expose().len() >= MIN_SESSION_KEY_BYTES);
        assert_ne!(a.expose(), b.expose());
    }

    #[test]
    fn client_secret_and_session_key_from_files() {
        let secrets = TempDir::new();
        secrets.write("OIDC_CLIENT_SECRET", "client-secret-789\n");
        secrets.write("SESSION_KEY", "session-key-0123456789abcdef0123456789\n");
        let c = load_in(&vars(FLEET, &[]), &secrets.0).unwrap();
        let login = oidc(&c).login.as_ref().unwrap();
        assert_eq!(login.client_secret.expose(), "client-secret-789");
        assert_eq!(
            login.session_key.as_ref().unwrap().expose(),
            "session-key-0123456789abcdef0123456789"
        );
        let p = one_problem(
            load_in(
                &vars(FLEET, &[("OIDC_CLIENT_SECRET", "other-secret")]),
                &secrets.0,
            ),
            "OIDC_CLIENT_SECRET",
        );
        assert!(
            !p.contains("other-secret") && !p.contains("client-secret-789"),
            "{p}"
        );
    }

    #[test]
    fn debug_never_shows_secrets() {
        let c = load(
            FLEET,
            &[
                ("OIDC_CLIENT_SECRET", "client-secret-789"),
                ("SESSION_KEY", "session-key-0123456789abcdef0123456789"),
            ],
        )
        .unwrap();
        let debug = format!("{c:?}");
        for secret in [
            "winrm-pw-123",
            "client-secret-789",
            "session-key-0123456789abcdef0123456789",
        ] {
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }
        assert!(debug.contains("hv01.lab.example"));
    }
}
