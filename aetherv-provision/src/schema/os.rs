//! The guest OS family: an explicit `os_family` wins, otherwise the image name decides; and the
//! warning for groups dropped because they apply to the other family.

use super::check::{Check, Got, quoted};
use super::raw::Scalar;
use super::{LINUX_IMAGE_PREFIXES, OsFamily, WINDOWS_IMAGE_PREFIXES};
use crate::error::FieldError;

/// Parses an explicit `os_family` (`windows` or `linux`, case-insensitive).
pub(super) fn parse_os_family(s: &str) -> std::result::Result<OsFamily, FieldError> {
    OsFamily::parse(s).ok_or_else(|| {
        FieldError::new(
            "os_family",
            format!("must be \"windows\" or \"linux\", got {}", quoted(s.trim())),
        )
    })
}

/// Reads the optional `os_family` override.
pub(super) fn read_override(check: &mut Check, value: Option<Scalar>) -> Got<OsFamily> {
    match check.text("os_family", value) {
        Got::Value(s) => match parse_os_family(&s) {
            Ok(family) => Got::Value(family),
            Err(e) => {
                check.fail("os_family", e.message);
                Got::Invalid
            }
        },
        Got::Absent => Got::Absent,
        Got::Invalid => Got::Invalid,
    }
}

/// The guest's OS family: the override if given (with a warning when it disagrees with the
/// image name), otherwise the family detected from the image name; `None` (with the problem
/// recorded when the image name was usable) when neither decides.
pub(super) fn resolve(
    check: &mut Check,
    os_override: &Got<OsFamily>,
    image_name: &Got<String>,
) -> Option<OsFamily> {
    let detected = match image_name {
        Got::Value(name) => OsFamily::detect(name),
        Got::Absent | Got::Invalid => None,
    };
    match (os_override, detected) {
        (Got::Value(chosen), Some(detected)) => {
            if *chosen != detected {
                check.warnings.push(format!(
                    "{} {chosen} overrides {detected} detected from {}",
                    check.path("os_family"),
                    check.path("image_name")
                ));
            }
            Some(*chosen)
        }
        (Got::Value(chosen), None) => Some(*chosen),
        (_, Some(detected)) => Some(detected),
        (Got::Absent, None) => {
            if matches!(image_name, Got::Value(_)) {
                check.fail(
                    "image_name",
                    format!(
                        "cannot tell the guest OS family from the image name (known prefixes: \
                         {}); set {} to \"windows\" or \"linux\"",
                        WINDOWS_IMAGE_PREFIXES
                            .iter()
                            .chain(LINUX_IMAGE_PREFIXES)
                            .copied()
                            .collect::<Vec<_>>()
                            .join(", "),
                        check.path("os_family")
                    ),
                );
            }
            None
        }
        (Got::Invalid, None) => None,
    }
}

/// Records the warning for a group that does not apply to the guest's OS family.
pub(super) fn drop_group(
    check: &mut Check,
    given: &[&str],
    group: &str,
    applies_to: OsFamily,
    family: OsFamily,
) {
    if given.is_empty() {
        return;
    }
    let fields = given
        .iter()
        .map(|name| check.path(name))
        .collect::<Vec<_>>()
        .join(", ");
    check.warnings.push(format!(
        "ignored {fields}: {group} applies to {applies_to} guests only and this guest is {family}"
    ));
}
