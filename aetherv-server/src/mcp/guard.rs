//! The guard rails of the MCP endpoint: its configuration (`MCP_*` variables), the allow lists,
//! the confirmation tokens of destructive tools, the per-caller rate limit of write tools and
//! the redaction of tool arguments for the audit log.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a confirmation token of a destructive tool stays valid.
pub const CONFIRMATION_TTL: Duration = Duration::from_secs(120);

/// Default of `MCP_WRITE_RATE_PER_MINUTE`.
pub const DEFAULT_WRITE_RATE_PER_MINUTE: u32 = 30;

/// `MCP_MODE`: whether the endpoint exists and whether it may change anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum McpMode {
    /// No `/mcp` route.
    Off,
    /// Only the read tools are listed and callable (the default).
    ReadOnly,
    /// Read, write and destructive tools.
    ReadWrite,
}

/// The endpoint's configuration, from the `MCP_*` variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpConfig {
    /// `MCP_MODE`.
    pub mode: McpMode,
    /// `MCP_ALLOW_HOSTS`: host name patterns write tools may act on.
    pub allow_hosts: AllowList,
    /// `MCP_ALLOW_CLUSTERS`: cluster name patterns write tools may act on.
    pub allow_clusters: AllowList,
    /// `MCP_ALLOW_VMS`: VM name patterns write tools may act on.
    pub allow_vms: AllowList,
    /// `MCP_WRITE_RATE_PER_MINUTE`: write tool calls per caller per minute.
    pub write_rate_per_minute: u32,
}

impl Default for McpConfig {
    fn default() -> Self {
        Self {
            mode: McpMode::ReadOnly,
            allow_hosts: AllowList::any(),
            allow_clusters: AllowList::any(),
            allow_vms: AllowList::any(),
            write_rate_per_minute: DEFAULT_WRITE_RATE_PER_MINUTE,
        }
    }
}

impl McpConfig {
    /// Reads the `MCP_*` variables `env` returns (blank values count as unset).
    ///
    /// # Errors
    ///
    /// One message per unusable variable, starting with its name.
    pub fn from_sources(env: &dyn Fn(&str) -> Option<String>) -> Result<Self, Vec<String>> {
        let get = |name: &str| {
            env(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let mut problems = Vec::new();
        let mut config = Self::default();
        if let Some(mode) = get("MCP_MODE") {
            match mode.to_ascii_lowercase().replace('-', "_").as_str() {
                "off" => config.mode = McpMode::Off,
                "read_only" => config.mode = McpMode::ReadOnly,
                "read_write" => config.mode = McpMode::ReadWrite,
                _ => problems.push(format!(
                    "MCP_MODE: expected off, read_only or read_write, got {mode:?}"
                )),
            }
        }
        for (name, list) in [
            ("MCP_ALLOW_HOSTS", &mut config.allow_hosts),
            ("MCP_ALLOW_CLUSTERS", &mut config.allow_clusters),
            ("MCP_ALLOW_VMS", &mut config.allow_vms),
        ] {
            if let Some(value) = get(name) {
                *list = AllowList::parse(&value);
            }
        }
        if let Some(rate) = get("MCP_WRITE_RATE_PER_MINUTE") {
            match rate.parse::<u32>() {
                Ok(n) if n > 0 => config.write_rate_per_minute = n,
                _ => problems.push(format!(
                    "MCP_WRITE_RATE_PER_MINUTE: expected a positive whole number, got {rate:?}"
                )),
            }
        }
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems)
        }
    }
}

/// Case-insensitive glob patterns (`*` any run of characters, `?` one character).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowList {
    patterns: Vec<String>,
}

impl AllowList {
    /// Allows every name.
    #[must_use]
    pub fn any() -> Self {
        Self {
            patterns: vec!["*".to_owned()],
        }
    }

    /// A comma-separated list of patterns.
    #[must_use]
    pub fn parse(value: &str) -> Self {
        Self {
            patterns: value
                .split(',')
                .map(|p| p.trim().to_ascii_lowercase())
                .filter(|p| !p.is_empty())
                .collect(),
        }
    }

    /// Whether every name is allowed.
    #[must_use]
    pub fn allows_all(&self) -> bool {
        self.patterns.iter().any(|p| p.chars().all(|c| c == '*'))
    }

    /// Whether `name` matches one of the patterns.
    #[must_use]
    pub fn allows(&self, name: &str) -> bool {
        let name: Vec<char> = name.to_ascii_lowercase().chars().collect();
        self.patterns.iter().any(|p| {
            let pattern: Vec<char> = p.chars().collect();
            glob(&pattern, &name)
        })
    }

    /// The patterns, for messages.
    #[must_use]
    pub fn describe(&self) -> String {
        self.patterns.join(", ")
    }
}

fn glob(pattern: &[char], name: &[char]) -> bool {
    // Iterative matcher with one backtrack point for the last `*`.
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(c) if *c == '?' || *c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

/// Why a confirmation token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Never issued, already used, or forgotten.
    #[error(
        "the confirmation token is unknown or was already used; call the tool again without it for a new preview"
    )]
    Unknown,
    /// Issued more than two minutes ago.
    #[error("the confirmation token has expired; call the tool again without it for a new preview")]
    Expired,
    /// Issued to another caller, another tool or other arguments.
    #[error(
        "the confirmation token was issued for another caller, tool or arguments; call the tool again without it for a new preview"
    )]
    Mismatch,
}

#[derive(Debug)]
struct Issued {
    binding: String,
    expires: Instant,
}

/// Single-use confirmation tokens of destructive tools, each bound to the caller, the tool and
/// the exact arguments, valid for [`CONFIRMATION_TTL`].
#[derive(Debug, Default)]
pub struct TokenStore {
    tokens: Mutex<HashMap<String, Issued>>,
}

fn binding(caller: &str, tool: &str, arguments: &Value) -> String {
    // serde_json maps are ordered by key, so equal arguments serialise equally.
    format!("{caller}\u{0}{tool}\u{0}{arguments}")
}

impl TokenStore {
    /// Issues a token for `caller` calling `tool` with `arguments` at `now`.
    pub fn issue(&self, caller: &str, tool: &str, arguments: &Value, now: Instant) -> String {
        use rand::RngCore as _;
        let mut bytes = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let token = hex::encode(bytes);
        let mut tokens = self
            .tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        tokens.retain(|_, issued| issued.expires > now);
        tokens.insert(
            token.clone(),
            Issued {
                binding: binding(caller, tool, arguments),
                expires: now + CONFIRMATION_TTL,
            },
        );
        token
    }

    /// Uses `token` for `caller` calling `tool` with `arguments` at `now`. A token is used up
    /// by its first successful redemption; an expired one is forgotten.
    ///
    /// # Errors
    ///
    /// [`TokenError`] says why the token does not allow the call.
    pub fn redeem(
        &self,
        token: &str,
        caller: &str,
        tool: &str,
        arguments: &Value,
        now: Instant,
    ) -> Result<(), TokenError> {
        let mut tokens = self
            .tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let issued = tokens.get(token).ok_or(TokenError::Unknown)?;
        if issued.expires <= now {
            tokens.remove(token);
            return Err(TokenError::Expired);
        }
        if issued.binding != binding(caller, tool, arguments) {
            return Err(TokenError::Mismatch);
        }
        tokens.remove(token);
        Ok(())
    }
}

/// A sliding one-minute window of write tool calls per caller.
#[derive(Debug)]
pub struct RateLimiter {
    per_minute: u32,
    calls: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl RateLimiter {
    /// At most `per_minute` calls per caller in any minute.
    #[must_use]
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            calls: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a call of `caller` at `now`; `Err` with the wait when the caller is over the limit
    /// (a refused call is not counted).
    ///
    /// # Errors
    ///
    /// How long until the caller may call again.
    pub fn check(&self, caller: &str, now: Instant) -> Result<(), Duration> {
        let window = Duration::from_secs(60);
        let mut calls = self
            .calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        calls.retain(|_, times| {
            times
                .back()
                .is_some_and(|t| now.saturating_duration_since(*t) < window)
        });
        let times = calls.entry(caller.to_owned()).or_default();
        while times
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= window)
        {
            times.pop_front();
        }
        if times.len() >= self.per_minute as usize {
            let oldest = times.front().copied().unwrap_or(now);
            return Err(window.saturating_sub(now.saturating_duration_since(oldest)));
        }
        times.push_back(now);
        Ok(())
    }
}

/// Names of argument fields whose values are secret wherever they appear.
const SECRET_WORDS: [&str; 6] = [
    "password",
    "secret",
    "token",
    "key",
    "credential",
    "passphrase",
];

/// `arguments` with every value under a secret-looking key replaced by `***` (any depth).
/// Confirmation tokens are kept: they are single-use and bound to the caller.
#[must_use]
pub fn redact(arguments: &Value) -> Value {
    match arguments {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let lower = k.to_ascii_lowercase();
                    let secret = lower != "confirmation_token"
                        && (SECRET_WORDS.iter().any(|w| lower.contains(w))
                            || lower == "pw"
                            || lower.ends_with("_pw"));
                    let value = if secret && !v.is_null() {
                        Value::String("***".to_owned())
                    } else {
                        redact(v)
                    };
                    (k.clone(), value)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tokens_are_single_use() {
        let store = TokenStore::default();
        let now = Instant::now();
        let args = json!({"vm_id": "a"});
        let token = store.issue("alice", "delete_vm", &args, now);
        assert_eq!(
            store.redeem(&token, "alice", "delete_vm", &args, now),
            Ok(())
        );
        assert_eq!(
            store.redeem(&token, "alice", "delete_vm", &args, now),
            Err(TokenError::Unknown)
        );
    }

    #[test]
    fn tokens_expire_after_two_minutes() {
        let store = TokenStore::default();
        let now = Instant::now();
        let args = json!({"vm_id": "a"});
        let token = store.issue("alice", "delete_vm", &args, now);
        let later = now + CONFIRMATION_TTL + Duration::from_secs(1);
        assert_eq!(
            store.redeem(&token, "alice", "delete_vm", &args, later),
            Err(TokenError::Expired)
        );
        let fresh = store.issue("alice", "delete_vm", &args, now);
        let almost = now + CONFIRMATION_TTL - Duration::from_secs(1);
        assert_eq!(
            store.redeem(&fresh, "alice", "delete_vm", &args, almost),
            Ok(())
        );
    }

    #[test]
    fn tokens_are_bound_to_caller_tool_and_arguments() {
        let store = TokenStore::default();
        let now = Instant::now();
        let args = json!({"vm_id": "a", "delete_disks": false});
        let token = store.issue("alice", "delete_vm", &args, now);
        assert_eq!(
            store.redeem(&token, "bob", "delete_vm", &args, now),
            Err(TokenError::Mismatch)
        );
        assert_eq!(
            store.redeem(&token, "alice", "turn_off_vm", &args, now),
            Err(TokenError::Mismatch)
        );
        let other = json!({"vm_id": "a", "delete_disks": true});
        assert_eq!(
            store.redeem(&token, "alice", "delete_vm", &other, now),
            Err(TokenError::Mismatch)
        );
        assert_eq!(
            store.redeem("0000", "alice", "delete_vm", &args, now),
            Err(TokenError::Unknown)
        );
        // A refused attempt by someone else does not use the token up.
        assert_eq!(
            store.redeem(&token, "alice", "delete_vm", &args, now),
            Ok(())
        );
    }

    #[test]
    fn rate_limit_is_per_caller_and_slides() {
        let limiter = RateLimiter::new(2);
        let now = Instant::now();
        assert!(limiter.check("alice", now).is_ok());
        assert!(
            limiter
                .check("alice", now + Duration::from_secs(10))
                .is_ok()
        );
        let wait = limiter.check("alice", now + Duration::from_secs(20));
        assert_eq!(wait, Err(Duration::from_secs(40)));
        assert!(limiter.check("bob", now + Duration::from_secs(20)).is_ok());
        assert!(
            limiter
                .check("alice", now + Duration::from_secs(61))
                .is_ok()
        );
        assert!(
            limiter
                .check("alice", now + Duration::from_secs(62))
                .is_err()
        );
    }

    #[test]
    fn redaction_hides_secret_fields_at_any_depth() {
        let args = json!({
            "vm_name": "web1",
            "admin_password": "hunter2",
            "guest_la_pw": "Pw-1",
            "values": {"domain_join_password": "p@ss", "ssh_public_key": "ssh-ed25519 AAA"},
            "list": [{"api_token": "t"}],
            "confirmation_token": "abc",
        });
        let redacted = redact(&args);
        let text = redacted.to_string();
        for secret in ["hunter2", "Pw-1", "p@ss", "ssh-ed25519", "\"t\""] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert_eq!(redacted["vm_name"], "web1");
        assert_eq!(redacted["admin_password"], "***");
        assert_eq!(redacted["confirmation_token"], "abc");
    }

    #[test]
    fn allow_lists_match_globs_case_insensitively() {
        let list = AllowList::parse("web-*, DB?, exact");
        assert!(list.allows("WEB-01"));
        assert!(list.allows("db1"));
        assert!(!list.allows("db12"));
        assert!(list.allows("exact"));
        assert!(!list.allows("exactly"));
        assert!(!list.allows("app-1"));
        assert!(AllowList::any().allows("anything"));
        assert!(AllowList::any().allows_all());
        assert!(!list.allows_all());
        assert!(AllowList::parse("a*b*c").allows("aXbYbZc"));
    }

    #[test]
    fn config_reads_the_variables() {
        let env = |name: &str| match name {
            "MCP_MODE" => Some("read_write".to_owned()),
            "MCP_ALLOW_VMS" => Some("mcp-*".to_owned()),
            "MCP_WRITE_RATE_PER_MINUTE" => Some("5".to_owned()),
            _ => None,
        };
        let config = McpConfig::from_sources(&env).unwrap();
        assert_eq!(config.mode, McpMode::ReadWrite);
        assert!(config.allow_vms.allows("mcp-1"));
        assert!(!config.allow_vms.allows("web"));
        assert!(config.allow_hosts.allows_all());
        assert_eq!(config.write_rate_per_minute, 5);
        assert_eq!(
            McpConfig::from_sources(&|_| None).unwrap(),
            McpConfig::default()
        );
        let bad = |name: &str| match name {
            "MCP_MODE" => Some("yes".to_owned()),
            "MCP_WRITE_RATE_PER_MINUTE" => Some("0".to_owned()),
            _ => None,
        };
        let problems = McpConfig::from_sources(&bad).unwrap_err();
        assert_eq!(problems.len(), 2);
        assert!(problems[0].starts_with("MCP_MODE"));
    }
}
