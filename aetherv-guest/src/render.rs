//! The decrypted provisioning values as a validated [`GuestConfig`], rendered as a cloud-init
//! NoCloud seed: `user-data` (`#cloud-config`), `meta-data` and, for a static address,
//! `network-config` (version 2).
//!
//! Every string is emitted as a YAML double-quoted scalar ([`yaml_quote`]), so no value can
//! change the document's structure. The local administrator's password is only ever written
//! as a SHA-512 crypt hash (`$6$…`, [`hash_password`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use aetherv_kvp::SecretText;
use aetherv_kvp::keys::{self, data};

/// A value that cannot be applied. Messages name the KVP item, never its value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A value is malformed.
    #[error("{key} {problem}")]
    Invalid {
        /// The KVP item (`hlvmm.data.<name>`).
        key: String,
        /// What is wrong, e.g. "is not an IPv4 address".
        problem: &'static str,
    },
    /// A value needs another one that is missing.
    #[error("{key} is set without {needs}")]
    Missing {
        /// The KVP item that was given.
        key: String,
        /// The KVP item that is missing.
        needs: String,
    },
    /// Hashing the password failed.
    #[error("hashing {key} failed")]
    Hash {
        /// The KVP item.
        key: String,
    },
}

fn invalid(name: &str, problem: &'static str) -> ConfigError {
    ConfigError::Invalid {
        key: keys::data_key(name),
        problem,
    }
}

/// A static IPv4 configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticIpv4 {
    /// The address.
    pub address: Ipv4Addr,
    /// Its prefix length (1..=32).
    pub prefix: u8,
    /// The default gateway.
    pub gateway: Option<Ipv4Addr>,
    /// DNS servers, in order.
    pub dns: Vec<Ipv4Addr>,
}

/// A user to create. `Debug` shows the password hash as `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    /// Login name.
    pub name: String,
    /// SHA-512 crypt hash of the password (`None`: password login locked).
    pub password_hash: Option<String>,
    /// The sudoers rule (`ALL=(ALL) ALL`, or `NOPASSWD` for the Ansible user).
    pub sudo: &'static str,
    /// Authorised SSH public keys.
    pub ssh_keys: Vec<String>,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("password_hash", &self.password_hash.as_ref().map(|_| "***"))
            .field("sudo", &self.sudo)
            .field("ssh_keys", &self.ssh_keys)
            .finish()
    }
}

/// What the guest applies, validated.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GuestConfig {
    /// Host name (single label).
    pub hostname: Option<String>,
    /// DNS search domain / suffix.
    pub dns_suffix: Option<String>,
    /// Static IPv4 configuration, when an address was given.
    pub ipv4: Option<StaticIpv4>,
    /// Users to create: the local administrator, then the Ansible user.
    pub users: Vec<User>,
}

/// The files of a NoCloud seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    /// `user-data`.
    pub user_data: String,
    /// `meta-data`.
    pub meta_data: String,
    /// `network-config`, only for a static address.
    pub network_config: Option<String>,
}

/// The sudoers rule of the local administrator (asks for the password).
pub const ADMIN_SUDO: &str = "ALL=(ALL) ALL";
/// The sudoers rule of the Ansible user.
pub const ANSIBLE_SUDO: &str = "ALL=(ALL) NOPASSWD:ALL";

fn field<'a>(values: &'a BTreeMap<String, SecretText>, name: &str) -> Option<&'a str> {
    values
        .get(name)
        .map(|v| v.expose().trim())
        .filter(|v| !v.is_empty())
}

fn ipv4(
    values: &BTreeMap<String, SecretText>,
    name: &str,
) -> Result<Option<Ipv4Addr>, ConfigError> {
    field(values, name)
        .map(|v| {
            v.parse::<Ipv4Addr>()
                .map_err(|_| invalid(name, "is not an IPv4 address"))
        })
        .transpose()
}

fn valid_label(label: &str) -> bool {
    (1..=63).contains(&label.len())
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

fn valid_hostname(name: &str) -> bool {
    valid_label(name) && !name.bytes().all(|b| b.is_ascii_digit())
}

fn valid_domain(domain: &str) -> bool {
    domain.len() <= 253 && domain.split('.').all(valid_label)
}

/// A portable user name: lowercase letters, digits, `_` and `-`, starting with a letter or
/// `_`, at most 32 characters.
fn valid_user(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn valid_ssh_key(key: &str) -> bool {
    let mut parts = key.split_ascii_whitespace();
    let (Some(kind), Some(blob)) = (parts.next(), parts.next()) else {
        return false;
    };
    !key.chars().any(char::is_control)
        && (kind.starts_with("ssh-") || kind.starts_with("ecdsa-") || kind.starts_with("sk-"))
        && blob
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=')
}

/// Hashes a password with SHA-512 crypt (`$6$`, random salt, 5000 rounds, as glibc's
/// default).
///
/// # Errors
///
/// [`ConfigError::Hash`] if hashing fails.
pub fn hash_password(password: &str) -> Result<String, ConfigError> {
    sha_crypt::sha512_simple(password, &sha_crypt::Sha512Params::default()).map_err(|_| {
        ConfigError::Hash {
            key: keys::data_key(data::GUEST_LA_PW),
        }
    })
}

impl GuestConfig {
    /// Validates the decrypted values (by data name, [`keys::data`]). Domain-join values
    /// (Windows only) are ignored; blank values count as absent.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the first value that cannot be applied.
    pub fn from_values(values: &BTreeMap<String, SecretText>) -> Result<Self, ConfigError> {
        let mut config = Self::default();
        if let Some(name) = field(values, data::GUEST_HOST_NAME) {
            if !valid_hostname(name) {
                return Err(invalid(data::GUEST_HOST_NAME, "is not a valid host name"));
            }
            config.hostname = Some(name.to_ascii_lowercase());
        }
        if let Some(suffix) = field(values, data::GUEST_NET_DNS_SUFFIX) {
            if !valid_domain(suffix) {
                return Err(invalid(
                    data::GUEST_NET_DNS_SUFFIX,
                    "is not a valid DNS domain",
                ));
            }
            config.dns_suffix = Some(suffix.to_ascii_lowercase());
        }
        if let Some(address) = ipv4(values, data::GUEST_V4_IP_ADDR)? {
            let prefix = field(values, data::GUEST_V4_CIDR_PREFIX)
                .and_then(|p| p.parse::<u8>().ok())
                .filter(|p| (1..=32).contains(p))
                .ok_or_else(|| {
                    invalid(
                        data::GUEST_V4_CIDR_PREFIX,
                        "must be 1..32 when an address is given",
                    )
                })?;
            let mut dns = Vec::new();
            for name in [data::GUEST_V4_DNS1, data::GUEST_V4_DNS2] {
                dns.extend(ipv4(values, name)?);
            }
            config.ipv4 = Some(StaticIpv4 {
                address,
                prefix,
                gateway: ipv4(values, data::GUEST_V4_DEFAULT_GW)?,
                dns,
            });
        }
        if let Some(user) = field(values, data::GUEST_LA_UID) {
            if !valid_user(user) {
                return Err(invalid(
                    data::GUEST_LA_UID,
                    "is not a valid Linux user name",
                ));
            }
            let password = values
                .get(data::GUEST_LA_PW)
                .map(SecretText::expose)
                .filter(|p| !p.is_empty())
                .ok_or_else(|| ConfigError::Missing {
                    key: keys::data_key(data::GUEST_LA_UID),
                    needs: keys::data_key(data::GUEST_LA_PW),
                })?;
            config.users.push(User {
                name: user.to_owned(),
                password_hash: Some(hash_password(password)?),
                sudo: ADMIN_SUDO,
                ssh_keys: Vec::new(),
            });
        }
        let ansible_key = field(values, data::ANSIBLE_SSH_KEY);
        match (field(values, data::ANSIBLE_SSH_USER), ansible_key) {
            (Some(user), key) => {
                if !valid_user(user) {
                    return Err(invalid(
                        data::ANSIBLE_SSH_USER,
                        "is not a valid Linux user name",
                    ));
                }
                if config.users.iter().any(|u| u.name == user) {
                    return Err(invalid(
                        data::ANSIBLE_SSH_USER,
                        "names the same user as guest_la_uid",
                    ));
                }
                let ssh_keys = match key {
                    Some(key) if valid_ssh_key(key) => vec![key.to_owned()],
                    Some(_) => {
                        return Err(invalid(
                            data::ANSIBLE_SSH_KEY,
                            "is not a single-line OpenSSH public key",
                        ));
                    }
                    None => Vec::new(),
                };
                config.users.push(User {
                    name: user.to_owned(),
                    password_hash: None,
                    sudo: ANSIBLE_SUDO,
                    ssh_keys,
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError::Missing {
                    key: keys::data_key(data::ANSIBLE_SSH_KEY),
                    needs: keys::data_key(data::ANSIBLE_SSH_USER),
                });
            }
            (None, None) => {}
        }
        Ok(config)
    }

    /// The fully qualified name, when both a host name and a DNS suffix were given.
    pub fn fqdn(&self) -> Option<String> {
        match (&self.hostname, &self.dns_suffix) {
            (Some(host), Some(domain)) => Some(format!("{host}.{domain}")),
            _ => None,
        }
    }

    /// Renders the seed. `instance_id` names this provisioning run (cloud-init runs its
    /// per-instance modules again for a new one); `interface` is the network interface the
    /// static address goes to (`name`, and its MAC address when known).
    pub fn render(&self, instance_id: &str, interface: &Interface) -> Seed {
        Seed {
            user_data: self.user_data(),
            meta_data: self.meta_data(instance_id),
            network_config: self
                .ipv4
                .as_ref()
                .map(|ip| self.network_config(ip, interface)),
        }
    }

    fn user_data(&self) -> String {
        let mut out = String::from("#cloud-config\n# Written by aetherv-guest.\n");
        if let Some(host) = &self.hostname {
            let _ = writeln!(out, "hostname: {}", yaml_quote(host));
            if let Some(fqdn) = self.fqdn() {
                let _ = writeln!(out, "fqdn: {}", yaml_quote(&fqdn));
            }
            out.push_str("prefer_fqdn_over_hostname: false\nmanage_etc_hosts: true\n");
        }
        if !self.users.is_empty() {
            out.push_str("users:\n");
            for user in &self.users {
                let _ = writeln!(out, "  - name: {}", yaml_quote(&user.name));
                out.push_str("    shell: /bin/bash\n");
                let _ = writeln!(out, "    sudo: {}", yaml_quote(user.sudo));
                match &user.password_hash {
                    Some(hash) => {
                        out.push_str("    lock_passwd: false\n");
                        let _ = writeln!(out, "    hashed_passwd: {}", yaml_quote(hash));
                    }
                    None => out.push_str("    lock_passwd: true\n"),
                }
                if !user.ssh_keys.is_empty() {
                    out.push_str("    ssh_authorized_keys:\n");
                    for key in &user.ssh_keys {
                        let _ = writeln!(out, "      - {}", yaml_quote(key));
                    }
                }
            }
        }
        out
    }

    fn meta_data(&self, instance_id: &str) -> String {
        let mut out = format!("instance-id: {}\n", yaml_quote(instance_id));
        if let Some(host) = &self.hostname {
            let _ = writeln!(out, "local-hostname: {}", yaml_quote(host));
        }
        out
    }

    fn network_config(&self, ip: &StaticIpv4, interface: &Interface) -> String {
        let mut out = String::from("version: 2\nethernets:\n");
        let _ = writeln!(out, "  {}:", yaml_quote(&interface.name));
        match &interface.mac {
            Some(mac) => {
                let _ = writeln!(out, "    match:\n      macaddress: {}", yaml_quote(mac));
                let _ = writeln!(out, "    set-name: {}", yaml_quote(&interface.name));
            }
            None => {
                let _ = writeln!(
                    out,
                    "    match:\n      name: {}",
                    yaml_quote(&interface.name)
                );
            }
        }
        out.push_str("    dhcp4: false\n");
        let _ = writeln!(
            out,
            "    addresses:\n      - {}",
            yaml_quote(&format!("{}/{}", ip.address, ip.prefix))
        );
        if let Some(gateway) = ip.gateway {
            let _ = writeln!(
                out,
                "    routes:\n      - to: \"0.0.0.0/0\"\n        via: {}",
                yaml_quote(&gateway.to_string())
            );
        }
        if !ip.dns.is_empty() || self.dns_suffix.is_some() {
            out.push_str("    nameservers:\n");
            if !ip.dns.is_empty() {
                out.push_str("      addresses:\n");
                for server in &ip.dns {
                    let _ = writeln!(out, "        - {}", yaml_quote(&server.to_string()));
                }
            }
            if let Some(domain) = &self.dns_suffix {
                let _ = writeln!(out, "      search:\n        - {}", yaml_quote(domain));
            }
        }
        out
    }
}

/// The network interface a static address is configured on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Its name (`eth0`).
    pub name: String,
    /// Its MAC address, lowercase `aa:bb:…`, when known.
    pub mac: Option<String>,
}

impl Default for Interface {
    fn default() -> Self {
        Self {
            name: "eth0".to_owned(),
            mac: None,
        }
    }
}

/// A YAML double-quoted scalar for `text`: `\`, `"` and every control or non-ASCII-printable
/// character escaped, so a value can never end the scalar or start a new key.
pub fn yaml_quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' || c == '\u{feff}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    pub(crate) fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, SecretText> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), SecretText::from(*v)))
            .collect()
    }

    fn full() -> BTreeMap<String, SecretText> {
        values(&[
            ("guest_host_name", "Web-01"),
            ("guest_la_uid", "admin"),
            ("guest_la_pw", "Pa$$w0rd-\"quoted\""),
            ("guest_v4_ip_addr", "10.20.30.40"),
            ("guest_v4_cidr_prefix", "24"),
            ("guest_v4_default_gw", "10.20.30.1"),
            ("guest_v4_dns1", "10.20.0.53"),
            ("guest_v4_dns2", "10.20.0.54"),
            ("guest_net_dns_suffix", "corp.example"),
            ("ansible_ssh_user", "ansible"),
            (
                "ansible_ssh_key",
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB+x ansible@ctl",
            ),
            ("guest_domain_join_target", "ignored.example"),
        ])
    }

    #[test]
    fn renders_every_requested_setting() {
        let config = GuestConfig::from_values(&full()).unwrap();
        let seed = config.render(
            "aetherv-1",
            &Interface {
                name: "eth0".into(),
                mac: Some("00:15:5d:01:02:03".into()),
            },
        );
        let user = &seed.user_data;
        assert!(user.starts_with("#cloud-config\n"), "{user}");
        assert!(user.contains("hostname: \"web-01\"\n"), "{user}");
        assert!(user.contains("fqdn: \"web-01.corp.example\"\n"), "{user}");
        assert!(user.contains("  - name: \"admin\"\n"), "{user}");
        assert!(user.contains("sudo: \"ALL=(ALL) NOPASSWD:ALL\""), "{user}");
        assert!(user.contains("- \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB+x ansible@ctl\""));
        assert!(!user.contains("Pa$$w0rd"), "{user}");
        let hash = user
            .lines()
            .find_map(|l| l.trim().strip_prefix("hashed_passwd: \""))
            .and_then(|l| l.strip_suffix('"'))
            .unwrap()
            .replace("\\\\", "\\");
        assert!(hash.starts_with("$6$"), "{hash}");
        sha_crypt::sha512_check("Pa$$w0rd-\"quoted\"", &hash).unwrap();
        assert_eq!(
            seed.meta_data,
            "instance-id: \"aetherv-1\"\nlocal-hostname: \"web-01\"\n"
        );
        let net = seed.network_config.unwrap();
        for needle in [
            "version: 2\n",
            "macaddress: \"00:15:5d:01:02:03\"",
            "- \"10.20.30.40/24\"",
            "via: \"10.20.30.1\"",
            "- \"10.20.0.53\"\n        - \"10.20.0.54\"",
            "search:\n        - \"corp.example\"",
        ] {
            assert!(net.contains(needle), "{needle} in {net}");
        }
    }

    #[test]
    fn dhcp_guest_gets_no_network_config() {
        let config = GuestConfig::from_values(&values(&[("guest_host_name", "db-1")])).unwrap();
        let seed = config.render("i", &Interface::default());
        assert_eq!(seed.network_config, None);
        assert!(!seed.user_data.contains("users:"));
    }

    #[test]
    fn invalid_values_name_the_item_not_the_value() {
        for (pairs, expected) in [
            (
                vec![("guest_host_name", "bad_name!")],
                "hlvmm.data.guest_host_name is not a valid host name",
            ),
            (
                vec![("guest_v4_ip_addr", "10.1.1.999-secretish")],
                "hlvmm.data.guest_v4_ip_addr is not an IPv4 address",
            ),
            (
                vec![
                    ("guest_v4_ip_addr", "10.1.1.9"),
                    ("guest_v4_cidr_prefix", "33"),
                ],
                "hlvmm.data.guest_v4_cidr_prefix must be 1..32 when an address is given",
            ),
            (
                vec![("guest_la_uid", "admin")],
                "hlvmm.data.guest_la_uid is set without hlvmm.data.guest_la_pw",
            ),
            (
                vec![("guest_la_uid", "Admin\"\n- x")],
                "hlvmm.data.guest_la_uid is not a valid Linux user name",
            ),
            (
                vec![
                    ("ansible_ssh_user", "ans"),
                    ("ansible_ssh_key", "ssh-rsa AAA\nx: y"),
                ],
                "hlvmm.data.ansible_ssh_key is not a single-line OpenSSH public key",
            ),
            (
                vec![("ansible_ssh_key", "ssh-rsa AAAA")],
                "hlvmm.data.ansible_ssh_key is set without hlvmm.data.ansible_ssh_user",
            ),
        ] {
            let err = GuestConfig::from_values(&values(&pairs)).unwrap_err();
            assert_eq!(err.to_string(), expected);
            assert!(!err.to_string().contains("secretish"));
        }
    }

    #[test]
    fn yaml_quoting_escapes_structure() {
        assert_eq!(yaml_quote("a\"b\\c\nd"), "\"a\\\"b\\\\c\\u000ad\"");
        assert_eq!(yaml_quote("é"), "\"é\"");
    }

    #[test]
    fn debug_hides_the_hash() {
        let config = GuestConfig::from_values(&full()).unwrap();
        let text = format!("{config:?}");
        assert!(!text.contains("$6$"), "{text}");
    }
}
