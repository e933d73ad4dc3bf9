//! [`ClientBuilder`]: the client's configuration, checked once when the client is built.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;

use super::pool::Inner;
use super::{Client, Stats};
use crate::auth::Auth;
use crate::envelope::ShellOptions;
use crate::error::{Error, Result};
use crate::secret::Secret;
use crate::shell::ShellPolicy;
use crate::transport::{Connector, HttpConnector, HttpOptions, TlsOptions};

/// Whether SOAP bodies are sealed with NTLM message encryption.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EncryptionMode {
    /// Seal over plain HTTP with NTLM; rely on TLS over HTTPS (what Windows expects).
    #[default]
    Auto,
    /// Always seal (requires NTLM), even inside TLS.
    Always,
    /// Never seal: only for listeners configured with `AllowUnencrypted=true`, or HTTPS.
    Never,
}

impl std::str::FromStr for EncryptionMode {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "always" => Ok(Self::Always),
            "never" => Ok(Self::Never),
            other => Err(format!(
                "unknown encryption mode {other:?} (expected auto, always or never)"
            )),
        }
    }
}

/// Builds a [`Client`]. Start with [`Client::builder`].
#[derive(Clone)]
pub struct ClientBuilder {
    endpoint: String,
    auth: Option<Auth>,
    encryption: EncryptionMode,
    tls: TlsOptions,
    allow_basic_over_http: bool,
    connect_timeout: Duration,
    operation_timeout: Duration,
    request_timeout: Option<Duration>,
    max_envelope_size: u32,
    max_shells: usize,
    policy: ShellPolicy,
    shell: ShellOptions,
    locale: String,
    connector: Option<Arc<dyn Connector>>,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("endpoint", &self.endpoint)
            .field("auth", &self.auth)
            .field("encryption", &self.encryption)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    pub(super) fn new(endpoint: &str) -> Self {
        Self {
            endpoint: endpoint.to_owned(),
            auth: None,
            encryption: EncryptionMode::Auto,
            tls: TlsOptions::default(),
            allow_basic_over_http: false,
            connect_timeout: Duration::from_secs(10),
            operation_timeout: Duration::from_secs(20),
            request_timeout: None,
            max_envelope_size: 153_600,
            max_shells: 4,
            policy: ShellPolicy::default(),
            shell: ShellOptions::default(),
            locale: "en-US".to_owned(),
            connector: None,
        }
    }

    /// Authenticate with NTLM (`user`, `DOMAIN\user` or `user@domain`).
    pub fn ntlm(mut self, username: impl Into<String>, password: impl Into<Secret>) -> Self {
        self.auth = Some(Auth::Ntlm {
            username: username.into(),
            password: password.into(),
        });
        self
    }

    /// Authenticate with Kerberos (feature `kerberos`), with message encryption over plain HTTP unless
    /// [`encryption`](Self::encryption) says otherwise.
    #[cfg(feature = "kerberos")]
    pub fn kerberos(mut self, auth: crate::kerberos::KerberosAuth) -> Self {
        self.auth = Some(Auth::Kerberos(auth));
        self
    }

    /// Authenticate with HTTP Basic (local accounts; HTTPS only unless
    /// [`allow_basic_over_http`](Self::allow_basic_over_http)).
    pub fn basic(mut self, username: impl Into<String>, password: impl Into<Secret>) -> Self {
        self.auth = Some(Auth::Basic {
            username: username.into(),
            password: password.into(),
        });
        self
    }

    /// Message encryption mode (default [`EncryptionMode::Auto`]).
    pub fn encryption(mut self, mode: EncryptionMode) -> Self {
        self.encryption = mode;
        self
    }

    /// Trust the CA certificates in this PEM file in addition to the built-in roots.
    pub fn ca_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.tls.ca_file = Some(path.into());
        self
    }

    /// Pin the host's certificate by its SHA-256 fingerprint (may be called more than once, for a
    /// certificate renewal). With a pin, only a certificate with a pinned fingerprint (or one
    /// byte-identical to a certificate in the CA file) is accepted.
    pub fn pin_sha256(mut self, fingerprint: crate::transport::CertFingerprint) -> Self {
        self.tls.pin_sha256.push(fingerprint);
        self
    }

    /// Accept any TLS certificate. Only for lab hosts with self-signed certificates.
    pub fn accept_invalid_certs(mut self, accept: bool) -> Self {
        self.tls.accept_invalid_certs = accept;
        self
    }

    /// Permit Basic authentication over plain HTTP (the password then crosses the network in
    /// clear). Off by default.
    pub fn allow_basic_over_http(mut self, allow: bool) -> Self {
        self.allow_basic_over_http = allow;
        self
    }

    /// TCP connect timeout (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// WS-Man OperationTimeout: how long the host may hold a Receive open waiting for output
    /// (default 20 s). A Receive that times out is simply sent again.
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// HTTP timeout for one exchange (default: OperationTimeout + 10 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// MaxEnvelopeSize announced to the host (default 153600 bytes).
    pub fn max_envelope_size(mut self, bytes: u32) -> Self {
        self.max_envelope_size = bytes;
        self
    }

    /// Maximum concurrent connections (each with its own shell); further callers wait.
    /// Default 4; Windows allows 30 shells per user by default.
    pub fn max_shells(mut self, shells: usize) -> Self {
        self.max_shells = shells;
        self
    }

    /// Commands run in a shell before it is replaced by a fresh one (default 500).
    pub fn max_commands_per_shell(mut self, commands: u32) -> Self {
        self.policy.max_commands_per_shell = commands;
        self
    }

    /// Options for the shells the client creates (codepage 65001 and no profile by default).
    pub fn shell_options(mut self, options: ShellOptions) -> Self {
        self.shell = options;
        self
    }

    /// Use this connector instead of the built-in [`HttpConnector`] (tests, proxies, custom
    /// stacks).
    pub fn connector(mut self, connector: Arc<dyn Connector>) -> Self {
        self.connector = Some(connector);
        self
    }

    /// Validates the configuration and builds the client. No connection is made yet.
    pub fn build(self) -> Result<Client> {
        let config_err = |msg: String| Error::Config(msg);
        let uri: hyper::Uri = self.endpoint.parse().map_err(|e| {
            config_err(format!(
                "endpoint {:?} is not a URL ({e}); expected e.g. http://host:5985/wsman",
                self.endpoint
            ))
        })?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            other => {
                return Err(config_err(format!(
                    "endpoint {:?} has scheme {:?}; use http:// or https:// \
                     (e.g. http://host:5985/wsman)",
                    self.endpoint,
                    other.unwrap_or("none")
                )));
            }
        };
        let Some(authority) = uri.authority().filter(|a| !a.host().is_empty()) else {
            return Err(config_err(format!(
                "endpoint {:?} has no host",
                self.endpoint
            )));
        };
        let path = match uri.path_and_query().map(|p| p.as_str()) {
            None | Some("") | Some("/") => "/wsman",
            Some(p) => p,
        };
        let endpoint = format!(
            "{}://{}{}",
            if https { "https" } else { "http" },
            authority,
            path
        );
        let auth = self
            .auth
            .ok_or_else(|| config_err("no credentials: call .ntlm(..) or .basic(..)".to_owned()))?;
        let is_basic = matches!(auth, Auth::Basic { .. });
        let host = authority.host().to_owned();
        #[cfg(feature = "kerberos")]
        if let Auth::Kerberos(kerberos) = &auth
            && kerberos.spn.is_none()
            && crate::kerberos::is_ip_address(&host)
        {
            return Err(config_err(format!(
                "Kerberos needs the host's DNS name for its service principal, but the endpoint \
                 names the IP address {host}; use the host name or set the SPN explicitly"
            )));
        }
        if is_basic && !https && !self.allow_basic_over_http {
            return Err(config_err(
                "Basic authentication over plain HTTP would send the password in clear; \
                 use an https:// endpoint or NTLM, or allow it explicitly"
                    .to_owned(),
            ));
        }
        let seal = match self.encryption {
            EncryptionMode::Auto => !https && !is_basic,
            EncryptionMode::Always => {
                if is_basic {
                    return Err(config_err(
                        "message encryption needs NTLM or Kerberos; Basic cannot encrypt messages"
                            .to_owned(),
                    ));
                }
                true
            }
            EncryptionMode::Never => false,
        };
        if self.max_shells == 0 {
            return Err(config_err("max_shells must be at least 1".to_owned()));
        }
        if self.policy.max_commands_per_shell == 0 {
            return Err(config_err(
                "max_commands_per_shell must be at least 1".to_owned(),
            ));
        }
        if self.max_envelope_size < 8192 {
            return Err(config_err(
                "max_envelope_size must be at least 8192 bytes".to_owned(),
            ));
        }
        let request_timeout = self
            .request_timeout
            .unwrap_or(self.operation_timeout + Duration::from_secs(10));
        if request_timeout <= self.operation_timeout {
            return Err(config_err(
                "request_timeout must be longer than operation_timeout".to_owned(),
            ));
        }
        let connector: Arc<dyn Connector> = match self.connector {
            Some(c) => c,
            None => Arc::new(
                HttpConnector::new(HttpOptions {
                    endpoint: endpoint.clone(),
                    connect_timeout: self.connect_timeout,
                    request_timeout,
                    tls: self.tls,
                })
                .map_err(|e| config_err(e.to_string()))?,
            ),
        };
        Ok(Client {
            inner: Arc::new(Inner {
                endpoint,
                host,
                auth,
                seal,
                connector,
                operation_timeout: self.operation_timeout,
                max_envelope_size: self.max_envelope_size,
                locale: self.locale,
                shell: self.shell,
                policy: self.policy,
                permits: Arc::new(Semaphore::new(self.max_shells)),
                idle: Mutex::new(Vec::new()),
                stats: Stats::default(),
            }),
        })
    }
}
