//! The variable source: environment lookups (empty means unset), secret files under the
//! secrets directory, typed values (numbers, flags, URLs) and the problems found so far.

use std::fmt;
use std::path::Path;

use aetherv_winrm::Secret;

/// The variable source, the secrets directory and the problems found so far.
pub(super) struct Sources<'a> {
    pub(super) env: &'a dyn Fn(&str) -> Option<String>,
    pub(super) secrets_dir: &'a Path,
    pub(super) problems: Vec<String>,
}

impl Sources<'_> {
    /// The variable's value as set (untrimmed), `None` when unset, empty or whitespace.
    pub(super) fn raw(&self, name: &str) -> Option<String> {
        (self.env)(name).filter(|v| !v.trim().is_empty())
    }

    /// The variable's trimmed value, `None` when unset, empty or whitespace.
    pub(super) fn get(&self, name: &str) -> Option<String> {
        self.raw(name).map(|v| v.trim().to_owned())
    }

    pub(super) fn problem(&mut self, name: &str, message: impl fmt::Display) {
        self.problems.push(format!("{name}: {message}"));
    }

    /// A secret-capable variable: the variable, else `<secrets_dir>/NAME`. Never puts the
    /// value into a message.
    pub(super) fn secret(&mut self, name: &str) -> Option<Secret> {
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
    pub(super) fn number(&mut self, name: &str, default: usize, min: usize, max: usize) -> usize {
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
    pub(super) fn flag(&mut self, name: &str, default: bool) -> bool {
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
    pub(super) fn http_url(&mut self, name: &str, value: &str, base: bool) -> Option<String> {
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
