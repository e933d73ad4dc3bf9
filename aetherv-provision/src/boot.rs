//! Boot settings per guest: the generation 2 firmware a new VM gets before its first start.
//!
//! Every guest gets Secure Boot with the template its OS family needs
//! ([`BootSettings::for_family`]: `MicrosoftWindows` for Windows,
//! `MicrosoftUEFICertificateAuthority` for Linux). An operator can override this per image
//! name pattern ([`BootRule`]): Secure Boot on or off, the template, a vTPM. Rules come from
//! the server's configuration at several levels; [`BootPolicy::resolve`] takes the first rule
//! whose pattern matches the image name, host rules before global ones, and fills what the
//! rule leaves open from the family's default. Pure: no I/O, no clock.

use std::collections::BTreeMap;

use aetherv_hyperv::OsFamily;
use aetherv_hyperv::ops::{BootSettings, SecureBootTemplate};
use serde::Deserialize;

/// One override: image names matching `image` (a case-insensitive glob: `*` any run of
/// characters, `?` one character) get these settings; a field left `None` keeps the OS
/// family's default.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootRule {
    /// The image name pattern, e.g. `ubuntu-*` or `Windows Server 2025*`.
    pub image: String,
    /// Secure Boot on or off.
    #[serde(default)]
    pub secure_boot: Option<bool>,
    /// The Secure Boot template (`MicrosoftWindows`, `MicrosoftUEFICertificateAuthority`,
    /// `OpenSourceShieldedVM`).
    #[serde(default)]
    pub secure_boot_template: Option<SecureBootTemplate>,
    /// A virtual TPM (with a new local key protector).
    #[serde(default)]
    pub tpm: Option<bool>,
}

impl BootRule {
    /// Whether the rule's pattern matches `image_name`.
    pub fn matches(&self, image_name: &str) -> bool {
        glob_matches(self.image.trim(), image_name.trim())
    }

    /// The family default with this rule's fields applied.
    pub fn apply(&self, family: OsFamily) -> BootSettings {
        let mut settings = BootSettings::for_family(family);
        if let Some(on) = self.secure_boot {
            settings.secure_boot = on;
        }
        if let Some(template) = self.secure_boot_template {
            settings.secure_boot_template = template;
        }
        if let Some(tpm) = self.tpm {
            settings.tpm = tpm;
        }
        settings
    }

    /// Why the rule cannot be used (an empty pattern), if it cannot.
    pub fn problem(&self) -> Option<String> {
        self.image
            .trim()
            .is_empty()
            .then(|| "image: the pattern is empty".to_owned())
    }
}

/// The boot rules of a server: per host (the host's own, then its cluster's, then the
/// `HOSTS_FILE` defaults, in the order the server configuration lists them) and global (the
/// environment's), tried in that order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootPolicy {
    /// Rules by host name (lowercase), tried before [`BootPolicy::global`].
    pub hosts: BTreeMap<String, Vec<BootRule>>,
    /// Rules for every host, tried last.
    pub global: Vec<BootRule>,
}

/// What [`BootPolicy::resolve`] decided, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedBoot {
    /// The settings.
    pub settings: BootSettings,
    /// The pattern of the rule that decided, `None` for the OS family's default.
    pub rule: Option<String>,
}

impl BootPolicy {
    /// The settings for a VM of `family` from image `image_name` on `host` (see the module
    /// docs for the order).
    pub fn resolve(&self, host: &str, image_name: &str, family: OsFamily) -> ResolvedBoot {
        let host_rules = self
            .hosts
            .get(&host.trim().to_ascii_lowercase())
            .map(Vec::as_slice)
            .unwrap_or_default();
        host_rules
            .iter()
            .chain(&self.global)
            .find(|rule| rule.matches(image_name))
            .map_or_else(
                || ResolvedBoot {
                    settings: BootSettings::for_family(family),
                    rule: None,
                },
                |rule| ResolvedBoot {
                    settings: rule.apply(family),
                    rule: Some(rule.image.clone()),
                },
            )
    }
}

/// A case-insensitive glob match: `*` matches any run of characters (also none), `?` exactly
/// one; everything else matches itself.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().flat_map(char::to_lowercase).collect();
    let text: Vec<char> = text.chars().flat_map(char::to_lowercase).collect();
    // Iterative matching with one backtrack point (the last `*`): linear in practice.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(c) if *c == '?' || *c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn rule(image: &str) -> BootRule {
        BootRule {
            image: image.to_owned(),
            secure_boot: None,
            secure_boot_template: None,
            tpm: None,
        }
    }

    #[test]
    fn globs_match_case_insensitively() {
        assert!(glob_matches("ubuntu-*", "Ubuntu-24.04"));
        assert!(glob_matches("*", ""));
        assert!(glob_matches("win?019*", "Win2019 Core"));
        assert!(glob_matches("*2022*", "Windows Server 2022 Datacenter"));
        assert!(glob_matches("a*b*c", "axxbyyc"));
        assert!(!glob_matches("a*b*c", "axxbyy"));
        assert!(!glob_matches("ubuntu-*", "debian-12"));
        assert!(!glob_matches("ubuntu", "ubuntu-24"));
        assert!(!glob_matches("?", ""));
    }

    #[test]
    fn families_get_their_template() {
        let policy = BootPolicy::default();
        let linux = policy.resolve("hv01", "Ubuntu 24.04 LTS", OsFamily::Linux);
        assert_eq!(
            linux.settings.secure_boot_template,
            SecureBootTemplate::MicrosoftUefiCertificateAuthority
        );
        assert!(linux.settings.secure_boot && !linux.settings.tpm);
        assert_eq!(linux.rule, None);
        let windows = policy.resolve("hv01", "Windows Server 2022", OsFamily::Windows);
        assert_eq!(
            windows.settings.secure_boot_template,
            SecureBootTemplate::MicrosoftWindows
        );
        assert!(windows.settings.boots(OsFamily::Windows));
        assert!(!windows.settings.boots(OsFamily::Linux));
    }

    #[test]
    fn host_rules_come_before_global_ones_and_fill_from_the_family() {
        let mut policy = BootPolicy {
            global: vec![BootRule {
                secure_boot: Some(false),
                ..rule("ubuntu*")
            }],
            ..BootPolicy::default()
        };
        policy.hosts.insert(
            "hv02".to_owned(),
            vec![BootRule {
                tpm: Some(true),
                ..rule("Ubuntu 24*")
            }],
        );
        let global = policy.resolve("hv01", "Ubuntu 24.04 LTS", OsFamily::Linux);
        assert!(!global.settings.secure_boot);
        assert_eq!(global.rule.as_deref(), Some("ubuntu*"));
        let host = policy.resolve("HV02", "Ubuntu 24.04 LTS", OsFamily::Linux);
        assert!(host.settings.secure_boot && host.settings.tpm);
        assert_eq!(
            host.settings.secure_boot_template,
            SecureBootTemplate::MicrosoftUefiCertificateAuthority
        );
        let other = policy.resolve("hv02", "Rocky Linux 9", OsFamily::Linux);
        assert_eq!(other.rule, None);
    }

    #[test]
    fn rules_parse_from_yaml_and_refuse_unknown_templates() {
        let rules: Vec<BootRule> = serde_yaml::from_str(
            "- image: 'ubuntu-*'\n  secure_boot_template: MicrosoftUEFICertificateAuthority\n  tpm: true\n",
        )
        .unwrap();
        assert_eq!(
            rules[0].secure_boot_template,
            Some(SecureBootTemplate::MicrosoftUefiCertificateAuthority)
        );
        assert!(
            serde_yaml::from_str::<Vec<BootRule>>("- image: x\n  secure_boot_template: Bogus\n")
                .is_err()
        );
        assert!(serde_yaml::from_str::<Vec<BootRule>>("- image: x\n  colour: red\n").is_err());
        assert!(rule(" ").problem().is_some());
        assert!(rule("x*").problem().is_none());
    }
}
