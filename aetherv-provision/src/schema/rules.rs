//! The rules for the VM name and the local administrator account, which depend on the
//! guest's OS family (a Windows computer name, Windows and Linux user names).

use super::check::{Check, Got};
use super::{
    MAX_LINUX_USER, MAX_VM_NAME, MAX_WINDOWS_COMPUTER_NAME, MAX_WINDOWS_USER, OsFamily,
    WINDOWS_USER_FORBIDDEN,
};

pub(super) fn vm_name_rules(
    check: &mut Check,
    name: Got<String>,
    family: Option<OsFamily>,
) -> Got<String> {
    const FIELD: &str = "vm_name";
    let Got::Value(name) = name else {
        return name;
    };
    let before = check.errors.len();
    let len = name.chars().count();
    if len > MAX_VM_NAME {
        check.fail(
            FIELD,
            format!("must be at most {MAX_VM_NAME} characters, got {len}"),
        );
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        check.fail(
            FIELD,
            format!("may contain only letters, digits and hyphens, found {c:?}"),
        );
    }
    if name.starts_with('-') || name.ends_with('-') {
        check.fail(FIELD, "must not start or end with a hyphen");
    }
    if family == Some(OsFamily::Windows) {
        if len > MAX_WINDOWS_COMPUTER_NAME {
            check.fail(
                FIELD,
                format!(
                    "must be at most {MAX_WINDOWS_COMPUTER_NAME} characters for a windows guest \
                     (it becomes the computer name), got {len}"
                ),
            );
        }
        if name.chars().all(|c| c.is_ascii_digit()) {
            check.fail(
                FIELD,
                "must not be only digits for a windows guest (windows refuses numeric computer \
                 names)",
            );
        }
    }
    if check.errors.len() == before {
        Got::Value(name)
    } else {
        Got::Invalid
    }
}

pub(super) fn local_admin_rules(
    check: &mut Check,
    uid: Got<String>,
    family: Option<OsFamily>,
) -> Got<String> {
    const FIELD: &str = "guest_la_uid";
    let uid = match check.guest_text(FIELD, uid) {
        Got::Value(uid) => uid,
        other => return other,
    };
    let before = check.errors.len();
    let len = uid.chars().count();
    match family {
        Some(OsFamily::Windows) => {
            if len > MAX_WINDOWS_USER {
                check.fail(
                    FIELD,
                    format!(
                        "must be at most {MAX_WINDOWS_USER} characters for a windows guest, got \
                         {len}"
                    ),
                );
            }
            if uid.contains(WINDOWS_USER_FORBIDDEN) {
                check.fail(
                    FIELD,
                    "must not contain any of \" / \\ [ ] : ; | = , + * ? < > @ for a windows guest",
                );
            }
        }
        Some(OsFamily::Linux) => {
            if len > MAX_LINUX_USER {
                check.fail(
                    FIELD,
                    format!(
                        "must be at most {MAX_LINUX_USER} characters for a linux guest, got {len}"
                    ),
                );
            }
            if uid.contains(|c: char| c.is_whitespace() || c == ':' || c == '/') {
                check.fail(
                    FIELD,
                    "must not contain whitespace, ':' or '/' for a linux guest",
                );
            }
        }
        None => {}
    }
    if check.errors.len() == before {
        Got::Value(uid)
    } else {
        Got::Invalid
    }
}
