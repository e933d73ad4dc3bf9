//! How callers are authenticated: OIDC bearer tokens and browser login, or authentication
//! off (demo mode, or `AUTH_ENABLED=false` with `ALLOW_DEV_AUTH=true`).

use std::net::SocketAddr;
use std::time::Duration;

use aetherv_winrm::Secret;

use super::random_secret;
use super::sources::Sources;
use crate::auth::oidc::{HttpPolicy, RoleNames, is_loopback};

/// The shortest accepted `SESSION_KEY`, in bytes.
pub const MIN_SESSION_KEY_BYTES: usize = 32;

/// `SESSION_MAX_AGE`'s default, in seconds (8 hours); at most three times this is accepted.
pub const SESSION_LIFETIME_SECS: usize = 8 * 60 * 60;

/// The path, relative to the public URL, of the OIDC redirect (callback) endpoint.
pub const OIDC_CALLBACK_PATH: &str = "/oidc/callback";

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
    /// `OIDC_ALLOW_INSECURE_HTTP`: plain http to a non-loopback issuer (labs only; logged loudly).
    pub allow_insecure_http: bool,
}

impl OidcSettings {
    /// Which issuer URLs the server may use.
    #[must_use]
    pub fn http_policy(&self) -> HttpPolicy {
        HttpPolicy {
            allow_insecure_http: self.allow_insecure_http,
        }
    }

    /// Whether the issuer is reached over plain http on a non-loopback address (allowed only
    /// with `OIDC_ALLOW_INSECURE_HTTP=true`; the server warns at start).
    #[must_use]
    pub fn insecure_issuer(&self) -> bool {
        url::Url::parse(&self.issuer_url).is_ok_and(|u| u.scheme() == "http" && !is_loopback(&u))
    }
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
    /// The key before the last rotation (`SESSION_KEY_PREVIOUS`): its sessions stay valid until
    /// they expire. Rotating `SESSION_KEY` without it ends every session at once.
    pub previous_session_key: Option<Secret>,
    /// The longest a browser session lasts (`SESSION_MAX_AGE`, seconds, default 8 h); a session
    /// also ends when the ID token it was made from expires.
    pub session_max_age: Duration,
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

pub(super) fn auth(
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
    let allow_insecure_http = s.flag("OIDC_ALLOW_INSECURE_HTTP", false);
    let issuer_url = match issuer {
        Some(v) => {
            let url = s.http_url("OIDC_ISSUER_URL", &v, true).unwrap_or_default();
            let policy = HttpPolicy {
                allow_insecure_http,
            };
            if let Ok(parsed) = url::Url::parse(&url)
                && !policy.allows(&parsed)
            {
                s.problem(
                    "OIDC_ISSUER_URL",
                    format_args!(
                        "must be https: {url} uses plain http, so anyone on the network path \
                         could swap the issuer's keys and sign admin tokens (http is allowed \
                         only on loopback, or with OIDC_ALLOW_INSECURE_HTTP=true for labs)"
                    ),
                );
            }
            url
        }
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
        allow_insecure_http,
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
    let previous_session_key = s.secret("SESSION_KEY_PREVIOUS");
    if let Some(key) = &previous_session_key {
        if key.expose().len() < MIN_SESSION_KEY_BYTES {
            s.problem(
                "SESSION_KEY_PREVIOUS",
                format_args!("too short: at least {MIN_SESSION_KEY_BYTES} bytes are needed"),
            );
        }
        if session_key.is_none() {
            s.problem(
                "SESSION_KEY_PREVIOUS",
                "set SESSION_KEY too: the previous key only reads sessions, it never signs them",
            );
        }
    }
    let max_age = s.number(
        "SESSION_MAX_AGE",
        SESSION_LIFETIME_SECS,
        60,
        SESSION_LIFETIME_SECS * 3,
    );
    LoginSettings {
        client_secret,
        redirect_url,
        scopes,
        session_key,
        previous_session_key,
        session_max_age: Duration::from_secs(max_age as u64),
    }
}
