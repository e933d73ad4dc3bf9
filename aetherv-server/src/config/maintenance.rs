//! The hooks around host maintenance (`ALERTMANAGER_*`, `MAINTENANCE_*`): the Alertmanager
//! that silences a host's alerts during its maintenance, the webhooks that hear of every state
//! change, and the spare memory maintenance runs keep.

use std::time::Duration;

use aetherv_winrm::Secret;

use super::sources::Sources;

/// One Alertmanager matcher; `{host}` in the value stands for the host's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    /// The label.
    pub name: String,
    /// The value or regular expression, with `{host}` in it.
    pub value: String,
    /// `=~` rather than `=`.
    pub is_regex: bool,
}

impl Matcher {
    /// The value for `host` (a regular expression gets the host name escaped).
    #[must_use]
    pub fn value_for(&self, host: &str) -> String {
        let host = if self.is_regex {
            host.chars()
                .flat_map(|c| {
                    let special = "\\.+*?()|[]{}^$".contains(c);
                    special
                        .then_some('\\')
                        .into_iter()
                        .chain(std::iter::once(c))
                })
                .collect()
        } else {
            host.to_owned()
        };
        self.value.replace("{host}", &host)
    }
}

/// Alertmanager silences (`ALERTMANAGER_URL`, `ALERTMANAGER_MATCHERS`,
/// `ALERTMANAGER_SILENCE_HOURS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertmanagerConfig {
    /// The Alertmanager's base URL, without a trailing slash.
    pub url: String,
    /// The matchers of a host's silence.
    pub matchers: Vec<Matcher>,
    /// How long a silence lasts unless the host is resumed first.
    pub window: Duration,
}

/// The maintenance hooks and limits.
#[derive(Debug, Clone, Default)]
pub struct MaintenanceConfig {
    /// Silences, when an Alertmanager is configured.
    pub alertmanager: Option<AlertmanagerConfig>,
    /// Webhook URLs (`MAINTENANCE_WEBHOOK_URLS`, comma-separated).
    pub webhook_urls: Vec<String>,
    /// The HMAC-SHA256 key of the webhook signatures (`MAINTENANCE_WEBHOOK_SECRET`,
    /// secret-capable; required with webhooks).
    pub webhook_secret: Option<Secret>,
    /// Memory maintenance runs keep available on a cluster's active hosts
    /// (`MAINTENANCE_SPARE_MEMORY_GIB`, default 0).
    pub spare_memory_bytes: u64,
}

/// Parses `label=value` / `label=~regex` pairs separated by commas.
fn matchers(text: &str) -> Result<Vec<Matcher>, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value, is_regex) = if let Some((n, v)) = part.split_once("=~") {
            (n, v, true)
        } else if let Some((n, v)) = part.split_once('=') {
            (n, v, false)
        } else {
            return Err(format!(
                "expected label=value or label=~regex, got {part:?}"
            ));
        };
        let name = name.trim();
        let valid = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            return Err(format!("{name:?} is not a label name"));
        }
        out.push(Matcher {
            name: name.to_owned(),
            value: value.trim().to_owned(),
            is_regex,
        });
    }
    if out.is_empty() {
        return Err("no matchers given".to_owned());
    }
    Ok(out)
}

pub(super) fn maintenance_config(s: &mut Sources<'_>) -> MaintenanceConfig {
    let alertmanager = s.get("ALERTMANAGER_URL").and_then(|url| {
        let url = s.http_url("ALERTMANAGER_URL", &url, true)?;
        let text = s
            .get("ALERTMANAGER_MATCHERS")
            .unwrap_or_else(|| "host={host}".to_owned());
        let matchers = match matchers(&text) {
            Ok(m) => m,
            Err(e) => {
                s.problem("ALERTMANAGER_MATCHERS", e);
                return None;
            }
        };
        let hours = s.number("ALERTMANAGER_SILENCE_HOURS", 8, 1, 720);
        Some(AlertmanagerConfig {
            url,
            matchers,
            window: Duration::from_secs(hours as u64 * 3600),
        })
    });
    let webhook_urls: Vec<String> = s
        .get("MAINTENANCE_WEBHOOK_URLS")
        .map(|list| {
            list.split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .filter_map(|u| s.http_url("MAINTENANCE_WEBHOOK_URLS", &u, false))
        .collect();
    let webhook_secret = s.secret("MAINTENANCE_WEBHOOK_SECRET");
    if !webhook_urls.is_empty() && webhook_secret.is_none() {
        s.problem(
            "MAINTENANCE_WEBHOOK_SECRET",
            "required with MAINTENANCE_WEBHOOK_URLS (every event is signed with it)",
        );
    }
    let spare = s.number("MAINTENANCE_SPARE_MEMORY_GIB", 0, 0, 1 << 20);
    MaintenanceConfig {
        alertmanager,
        webhook_urls,
        webhook_secret,
        spare_memory_bytes: (spare as u64) << 30,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn matchers_parse_and_escape_the_host_in_regexes() {
        let m = matchers("host={host}, instance=~{host}(:[0-9]+)?").unwrap();
        assert_eq!(m.len(), 2);
        assert!(!m[0].is_regex);
        assert_eq!(m[0].value_for("hv01"), "hv01");
        assert!(m[1].is_regex);
        assert_eq!(m[1].value_for("hv01.lab"), r"hv01\.lab(:[0-9]+)?");
        assert!(matchers("").is_err());
        assert!(matchers("no-equals").is_err());
        assert!(matchers("1abc=x").is_err());
    }
}
