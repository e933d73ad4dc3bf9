//! The problem collector and the typed field readers: text, secrets, whole numbers in a
//! range, booleans, IPv4 addresses and guest-bound text, each answering a [`Got`].

use std::net::Ipv4Addr;

use aetherv_winrm::Secret;

use super::raw::{Scalar, SecretScalar};
use crate::error::FieldError;
use crate::kvp::MAX_VALUE_CHARS;

/// The outcome of reading one field.
pub(super) enum Got<T> {
    /// Not given (missing, null, empty or blank).
    Absent,
    /// Given but unusable; the problem is already recorded.
    Invalid,
    /// Given and well-typed.
    Value(T),
}

impl<T> Got<T> {
    pub(super) fn is_given(&self) -> bool {
        !matches!(self, Self::Absent)
    }

    pub(super) fn value(self) -> Option<T> {
        match self {
            Self::Value(v) => Some(v),
            Self::Absent | Self::Invalid => None,
        }
    }
}

/// Collects problems; `prefix` is `values.` for the job schema and empty for the flat body.
pub(super) struct Check {
    pub(super) prefix: &'static str,
    pub(super) errors: Vec<FieldError>,
    pub(super) warnings: Vec<String>,
}

impl Check {
    pub(super) fn path(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    pub(super) fn fail(&mut self, name: &str, message: impl Into<String>) {
        let field = self.path(name);
        self.errors.push(FieldError::new(field, message));
    }

    pub(super) fn text(&mut self, name: &str, value: Option<Scalar>) -> Got<String> {
        match value {
            None | Some(Scalar::Null) => Got::Absent,
            Some(Scalar::Str(s)) => {
                let trimmed = s.trim();
                if trimmed.is_empty() {
                    Got::Absent
                } else {
                    Got::Value(trimmed.to_owned())
                }
            }
            Some(other) => {
                self.fail(name, format!("must be a string, got {}", other.describe()));
                Got::Invalid
            }
        }
    }

    pub(super) fn secret(&mut self, name: &str, value: Option<SecretScalar>) -> Got<Secret> {
        match value {
            None | Some(SecretScalar::Null) => Got::Absent,
            Some(SecretScalar::Str(s)) if s.expose().trim().is_empty() => Got::Absent,
            Some(SecretScalar::Str(s)) => {
                if s.expose().chars().any(char::is_control) {
                    self.fail(name, "must not contain control characters");
                    Got::Invalid
                } else if s.expose().chars().count() > MAX_VALUE_CHARS {
                    self.fail(
                        name,
                        format!("must be at most {MAX_VALUE_CHARS} characters"),
                    );
                    Got::Invalid
                } else {
                    Got::Value(s)
                }
            }
            Some(SecretScalar::Other(kind)) => {
                // Never echo the value of a secret field, whatever its type.
                self.fail(
                    name,
                    format!("must be a string, got {kind}; quote the value"),
                );
                Got::Invalid
            }
        }
    }

    pub(super) fn int(&mut self, name: &str, value: Option<Scalar>) -> Got<i128> {
        match value {
            None | Some(Scalar::Null) => Got::Absent,
            Some(Scalar::Int(i)) => Got::Value(i),
            Some(Scalar::Str(s)) if s.trim().is_empty() => Got::Absent,
            Some(Scalar::Str(s)) => match s.trim().parse::<i128>() {
                Ok(i) => Got::Value(i),
                Err(_) => {
                    self.fail(
                        name,
                        format!("must be a whole number, got string {}", quoted(&s)),
                    );
                    Got::Invalid
                }
            },
            Some(other) => {
                self.fail(
                    name,
                    format!("must be a whole number, got {}", other.describe()),
                );
                Got::Invalid
            }
        }
    }

    pub(super) fn ranged<T: TryFrom<i128>>(
        &mut self,
        name: &str,
        value: Option<Scalar>,
        min: i128,
        max: i128,
    ) -> Got<T> {
        match self.int(name, value) {
            Got::Value(v) if (min..=max).contains(&v) => match T::try_from(v) {
                Ok(v) => Got::Value(v),
                Err(_) => {
                    self.fail(name, format!("must be between {min} and {max}, got {v}"));
                    Got::Invalid
                }
            },
            Got::Value(v) => {
                self.fail(name, format!("must be between {min} and {max}, got {v}"));
                Got::Invalid
            }
            Got::Absent => Got::Absent,
            Got::Invalid => Got::Invalid,
        }
    }

    pub(super) fn boolean(&mut self, name: &str, value: Option<Scalar>) -> Got<bool> {
        match value {
            None | Some(Scalar::Null) => Got::Absent,
            Some(Scalar::Bool(b)) => Got::Value(b),
            Some(Scalar::Str(s)) if s.trim().is_empty() => Got::Absent,
            Some(Scalar::Str(s)) if s.trim().eq_ignore_ascii_case("true") => Got::Value(true),
            Some(Scalar::Str(s)) if s.trim().eq_ignore_ascii_case("false") => Got::Value(false),
            Some(other) => {
                self.fail(
                    name,
                    format!("must be true or false, got {}", other.describe()),
                );
                Got::Invalid
            }
        }
    }

    /// A boolean that also accepts the seed's `"Yes"`/`"No"` strings (case-insensitive).
    pub(super) fn yes_no(&mut self, name: &str, value: Option<Scalar>) -> Got<bool> {
        match value {
            Some(Scalar::Str(s)) if s.trim().eq_ignore_ascii_case("yes") => Got::Value(true),
            Some(Scalar::Str(s)) if s.trim().eq_ignore_ascii_case("no") => Got::Value(false),
            Some(Scalar::Str(s))
                if !s.trim().is_empty()
                    && !s.trim().eq_ignore_ascii_case("true")
                    && !s.trim().eq_ignore_ascii_case("false") =>
            {
                self.fail(
                    name,
                    format!(
                        "must be true or false, got {}; \"Yes\" and \"No\" are accepted too",
                        Scalar::Str(s).describe()
                    ),
                );
                Got::Invalid
            }
            Some(other @ (Scalar::Int(_) | Scalar::Float(_) | Scalar::Other(_))) => {
                self.fail(
                    name,
                    format!(
                        "must be true or false, got {}; \"Yes\" and \"No\" are accepted too",
                        other.describe()
                    ),
                );
                Got::Invalid
            }
            other => self.boolean(name, other),
        }
    }

    pub(super) fn ipv4(&mut self, name: &str, value: Option<Scalar>) -> Got<Ipv4Addr> {
        match self.text(name, value) {
            Got::Value(s) => match s.parse::<Ipv4Addr>() {
                Ok(ip) => Got::Value(ip),
                Err(_) => {
                    self.fail(
                        name,
                        format!(
                            "must be an IPv4 address such as 192.0.2.10, got {}",
                            quoted(&s)
                        ),
                    );
                    Got::Invalid
                }
            },
            Got::Absent => Got::Absent,
            Got::Invalid => Got::Invalid,
        }
    }

    /// Rules every guest-bound text value follows.
    pub(super) fn guest_text(&mut self, name: &str, value: Got<String>) -> Got<String> {
        match value {
            Got::Value(s) if s.chars().any(char::is_control) => {
                self.fail(name, "must not contain control characters");
                Got::Invalid
            }
            Got::Value(s) if s.chars().count() > MAX_VALUE_CHARS => {
                self.fail(
                    name,
                    format!(
                        "must be at most {MAX_VALUE_CHARS} characters, got {}",
                        s.chars().count()
                    ),
                );
                Got::Invalid
            }
            other => other,
        }
    }

    /// A guest-bound text value that must be one word (no whitespace) of at most `max`
    /// characters.
    pub(super) fn word(&mut self, name: &str, value: Option<Scalar>, max: usize) -> Got<String> {
        let value = self.text(name, value);
        match self.guest_text(name, value) {
            Got::Value(s) if s.chars().any(char::is_whitespace) => {
                self.fail(name, "must not contain whitespace");
                Got::Invalid
            }
            Got::Value(s) if s.chars().count() > max => {
                self.fail(
                    name,
                    format!(
                        "must be at most {max} characters, got {}",
                        s.chars().count()
                    ),
                );
                Got::Invalid
            }
            other => other,
        }
    }

    pub(super) fn require<T>(&mut self, name: &str, value: Got<T>) -> Option<T> {
        if matches!(value, Got::Absent) {
            self.fail(name, "is required");
        }
        value.value()
    }
}

/// Whether a raw field counts as given (anything but missing, null, empty or blank).
pub(super) fn given(value: &Option<Scalar>) -> bool {
    match value {
        None | Some(Scalar::Null) => false,
        Some(Scalar::Str(s)) => !s.trim().is_empty(),
        Some(_) => true,
    }
}

pub(super) fn secret_given(value: &Option<SecretScalar>) -> bool {
    match value {
        None | Some(SecretScalar::Null) => false,
        Some(SecretScalar::Str(s)) => !s.expose().trim().is_empty(),
        Some(SecretScalar::Other(_)) => true,
    }
}

/// A short, quoted rendering of user input for messages (never used for secrets).
pub(super) fn quoted(s: &str) -> String {
    const MAX: usize = 40;
    if s.chars().count() > MAX {
        let head: String = s.chars().take(MAX).collect();
        format!("{:?}", format!("{head}..."))
    } else {
        format!("{s:?}")
    }
}
