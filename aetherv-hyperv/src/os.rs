//! The guest operating system family, shared by the simulator and the layers above (one
//! definition, one detection rule).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Image name prefixes (case-insensitive) that mean a Windows guest.
pub const WINDOWS_IMAGE_PREFIXES: &[&str] = &["Windows", "Microsoft Windows"];

/// Image name prefixes (case-insensitive) that mean a Linux guest.
pub const LINUX_IMAGE_PREFIXES: &[&str] = &[
    "Ubuntu",
    "RHEL",
    "CentOS",
    "Rocky Linux",
    "AlmaLinux",
    "Oracle Linux",
    "Debian",
    "SUSE",
    "openSUSE",
    "Fedora",
];

/// The guest operating system family; decides which provisioning ISO, which KVP public key
/// format (Windows guests publish a CAPI `PUBLICKEYBLOB`, Linux guests PKCS#1 DER) and which
/// optional provisioning groups apply. Serialised as `windows` / `linux`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OsFamily {
    /// Windows guests (computer name limit, domain join).
    Windows,
    /// Linux guests (Ansible SSH user and key).
    Linux,
}

impl OsFamily {
    /// The family an image name implies (the rule in DESIGN.md): a case-insensitive prefix
    /// match against [`WINDOWS_IMAGE_PREFIXES`] and [`LINUX_IMAGE_PREFIXES`] (leading
    /// whitespace ignored), or `None` when it matches neither.
    pub fn detect(image_name: &str) -> Option<Self> {
        let name = image_name.trim_start();
        let matches = |prefix: &&str| {
            name.get(..prefix.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
        };
        if WINDOWS_IMAGE_PREFIXES.iter().any(matches) {
            Some(Self::Windows)
        } else if LINUX_IMAGE_PREFIXES.iter().any(matches) {
            Some(Self::Linux)
        } else {
            None
        }
    }

    /// `"windows"` or `"linux"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Windows => "windows",
            Self::Linux => "linux",
        }
    }

    /// Parses `windows` or `linux` (case-insensitive, surrounding whitespace ignored).
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("windows") {
            Some(Self::Windows)
        } else if s.eq_ignore_ascii_case("linux") {
            Some(Self::Linux)
        } else {
            None
        }
    }
}

impl fmt::Display for OsFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::OsFamily;

    #[test]
    fn detection_is_a_case_insensitive_prefix() {
        assert_eq!(
            OsFamily::detect("Windows Server 2022 Datacenter"),
            Some(OsFamily::Windows)
        );
        assert_eq!(
            OsFamily::detect("microsoft windows 11"),
            Some(OsFamily::Windows)
        );
        assert_eq!(OsFamily::detect(" Ubuntu 24.04 LTS"), Some(OsFamily::Linux));
        assert_eq!(OsFamily::detect("Rocky Linux 9"), Some(OsFamily::Linux));
        assert_eq!(OsFamily::detect("FreeBSD 14"), None);
        assert_eq!(OsFamily::parse(" Linux "), Some(OsFamily::Linux));
        assert_eq!(OsFamily::parse("bsd"), None);
    }
}
