//! The all-or-none groups: static IPv4 (with the gateway's subnet), domain join and Ansible
//! SSH. Giving any member of a group requires its required members.

use std::net::Ipv4Addr;

use super::check::{Check, Got, given, secret_given};
use super::raw::{Scalar, SecretScalar};
use super::{AnsibleSsh, DomainJoin, MAX_HOST_NAME, MAX_LINUX_USER, StaticIpv4};

/// Records "is required" for each missing required member of a group that was given.
pub(super) fn require_members(check: &mut Check, group: &str, missing: &[(&str, bool)]) {
    for (name, is_missing) in missing {
        if *is_missing {
            check.fail(
                name,
                format!("is required when any {group} setting is given"),
            );
        }
    }
}

pub(super) struct RawIpv4 {
    pub(super) ip: Option<Scalar>,
    pub(super) prefix: Option<Scalar>,
    pub(super) gateway: Option<Scalar>,
    pub(super) dns1: Option<Scalar>,
    pub(super) dns2: Option<Scalar>,
    pub(super) suffix: Option<Scalar>,
}

pub(super) fn static_ipv4_group(check: &mut Check, raw: RawIpv4) -> Option<StaticIpv4> {
    const IP: &str = "guest_v4_ipaddr";
    const PREFIX: &str = "guest_v4_cidrprefix";
    const GATEWAY: &str = "guest_v4_defaultgw";
    const DNS1: &str = "guest_v4_dns1";
    const DNS2: &str = "guest_v4_dns2";
    const SUFFIX: &str = "guest_net_dnssuffix";
    let before = check.errors.len();
    let ip = check.ipv4(IP, raw.ip);
    let prefix = check.ranged::<u8>(PREFIX, raw.prefix, 0, 32);
    let gateway = check.ipv4(GATEWAY, raw.gateway);
    let dns1 = check.ipv4(DNS1, raw.dns1);
    let dns2 = check.ipv4(DNS2, raw.dns2);
    let suffix = check.word(SUFFIX, raw.suffix, MAX_HOST_NAME);
    let any = [&ip, &gateway, &dns1, &dns2].iter().any(|g| g.is_given())
        || prefix.is_given()
        || suffix.is_given();
    if !any {
        return None;
    }
    require_members(
        check,
        "static IPv4",
        &[
            (IP, !ip.is_given()),
            (PREFIX, !prefix.is_given()),
            (GATEWAY, !gateway.is_given()),
            (DNS1, !dns1.is_given()),
        ],
    );
    let (ip, prefix, gateway, dns1, dns2, suffix) = (
        ip.value(),
        prefix.value(),
        gateway.value(),
        dns1.value(),
        dns2.value(),
        suffix.value(),
    );

    for (name, addr) in [(IP, ip), (GATEWAY, gateway)] {
        if let Some(addr) = addr
            && (addr.is_unspecified()
                || addr.is_loopback()
                || addr.is_multicast()
                || addr.is_broadcast())
        {
            check.fail(name, format!("must be a unicast host address, got {addr}"));
        }
    }
    for (name, addr) in [(DNS1, dns1), (DNS2, dns2)] {
        if let Some(addr) = addr
            && (addr.is_unspecified() || addr.is_multicast() || addr.is_broadcast())
        {
            check.fail(name, format!("must be a unicast address, got {addr}"));
        }
    }
    if let (Some(ip), Some(prefix)) = (ip, prefix) {
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(prefix))
        };
        let network = u32::from(ip) & mask;
        let broadcast = network | !mask;
        let subnet = format!("{}/{prefix}", Ipv4Addr::from(network));
        if prefix <= 30 && u32::from(ip) == network {
            check.fail(IP, format!("is the network address of {subnet}"));
        } else if prefix <= 30 && u32::from(ip) == broadcast {
            check.fail(IP, format!("is the broadcast address of {subnet}"));
        }
        if let Some(gateway) = gateway {
            if u32::from(gateway) & mask != network {
                check.fail(
                    GATEWAY,
                    format!(
                        "must be inside {subnet}, the subnet of {}, got {gateway}",
                        check.path(IP)
                    ),
                );
            } else if gateway == ip {
                check.fail(GATEWAY, format!("must differ from {}", check.path(IP)));
            }
        }
    }
    if check.errors.len() != before {
        return None;
    }
    Some(StaticIpv4 {
        guest_v4_ipaddr: ip?,
        guest_v4_cidrprefix: prefix?,
        guest_v4_defaultgw: gateway?,
        guest_v4_dns1: dns1?,
        guest_v4_dns2: dns2,
        guest_net_dnssuffix: suffix,
    })
}

pub(super) struct RawDomain {
    pub(super) target: Option<Scalar>,
    pub(super) uid: Option<Scalar>,
    pub(super) password: Option<SecretScalar>,
    pub(super) ou: Option<Scalar>,
}

impl RawDomain {
    pub(super) fn given(&self) -> Vec<&'static str> {
        [
            ("guest_domain_jointarget", given(&self.target)),
            ("guest_domain_joinuid", given(&self.uid)),
            ("guest_domain_joinpw", secret_given(&self.password)),
            ("guest_domain_joinou", given(&self.ou)),
        ]
        .into_iter()
        .filter_map(|(name, given)| given.then_some(name))
        .collect()
    }
}

pub(super) fn domain_group(check: &mut Check, raw: RawDomain) -> Option<DomainJoin> {
    const TARGET: &str = "guest_domain_jointarget";
    const UID: &str = "guest_domain_joinuid";
    const PASSWORD: &str = "guest_domain_joinpw";
    const OU: &str = "guest_domain_joinou";
    let before = check.errors.len();
    let target = check.word(TARGET, raw.target, MAX_HOST_NAME);
    let uid = check.text(UID, raw.uid);
    let uid = check.guest_text(UID, uid);
    let password = check.secret(PASSWORD, raw.password);
    let ou = check.text(OU, raw.ou);
    let ou = check.guest_text(OU, ou);
    if !(target.is_given() || uid.is_given() || password.is_given() || ou.is_given()) {
        return None;
    }
    require_members(
        check,
        "domain join",
        &[
            (TARGET, !target.is_given()),
            (UID, !uid.is_given()),
            (PASSWORD, !password.is_given()),
        ],
    );
    if check.errors.len() != before {
        return None;
    }
    Some(DomainJoin {
        guest_domain_jointarget: target.value()?,
        guest_domain_joinuid: uid.value()?,
        guest_domain_joinpw: password.value()?,
        guest_domain_joinou: ou.value(),
    })
}

pub(super) struct RawSsh {
    pub(super) user: Option<Scalar>,
    pub(super) key: Option<Scalar>,
}

impl RawSsh {
    pub(super) fn given(&self) -> Vec<&'static str> {
        [
            ("cnf_ansible_ssh_user", given(&self.user)),
            ("cnf_ansible_ssh_key", given(&self.key)),
        ]
        .into_iter()
        .filter_map(|(name, given)| given.then_some(name))
        .collect()
    }
}

/// Algorithm names an OpenSSH public key line may start with.
pub(super) const SSH_KEY_TYPES: &[&str] = &["ssh-", "ecdsa-sha2-", "sk-ssh-", "sk-ecdsa-sha2-"];

pub(super) fn ssh_group(check: &mut Check, raw: RawSsh) -> Option<AnsibleSsh> {
    const USER: &str = "cnf_ansible_ssh_user";
    const KEY: &str = "cnf_ansible_ssh_key";
    let before = check.errors.len();
    let user = check.word(USER, raw.user, MAX_LINUX_USER);
    let key = match check.text(KEY, raw.key) {
        Got::Value(key) if key.contains("PRIVATE KEY") => {
            check.fail(
                KEY,
                "looks like a private key; give the public key line (for example the contents \
                 of id_ed25519.pub)",
            );
            Got::Invalid
        }
        Got::Value(key) if key.contains(['\n', '\r']) => {
            check.fail(KEY, "must be a single line");
            Got::Invalid
        }
        other => match check.guest_text(KEY, other) {
            Got::Value(key) => {
                let mut words = key.split_whitespace();
                let algorithm = words.next().unwrap_or_default();
                if SSH_KEY_TYPES.iter().any(|t| algorithm.starts_with(t)) && words.next().is_some()
                {
                    Got::Value(key)
                } else {
                    check.fail(
                        KEY,
                        "must be an OpenSSH public key line such as \"ssh-ed25519 AAAA... \
                         comment\"",
                    );
                    Got::Invalid
                }
            }
            other => other,
        },
    };
    if !(user.is_given() || key.is_given()) {
        return None;
    }
    require_members(
        check,
        "Ansible SSH",
        &[(USER, !user.is_given()), (KEY, !key.is_given())],
    );
    if check.errors.len() != before {
        return None;
    }
    Some(AnsibleSsh {
        cnf_ansible_ssh_user: user.value()?,
        cnf_ansible_ssh_key: key.value()?,
    })
}
