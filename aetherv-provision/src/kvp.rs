//! The KVP guest provisioning protocol as the provisioning pipeline uses it: everything of
//! [`aetherv_kvp`] (key names, states, both public key formats, the payload and its checksum),
//! plus [`guest_data`], which maps a validated job's values to the data names the guest agents
//! read ([`keys::data::SCHEMA_FIELDS`]).
//!
//! The protocol itself, both halves, lives in `aetherv-kvp`; see its crate documentation.

pub use aetherv_kvp::{
    CHUNK_CHARS, DataValue, GuestPublicKey, GuestState, HostState, KeyFormat, KvpItem, MAX_CHUNKS,
    MAX_DATA_NAME_CHARS, MAX_KVP_VALUE_BYTES, MAX_VALUE_CHARS, MIN_RSA_BITS, ProvisioningPayload,
    SecretText, checksum, guest, host, keys, version_item,
};

use crate::schema::ProvisionValues;
use keys::data;

/// The data to publish for a validated job: `(name, value)` pairs with the agents' names (see
/// the module docs for the mapping), sorted by name. Groups that are `None` contribute nothing.
pub fn guest_data(values: &ProvisionValues) -> Vec<(&'static str, DataValue)> {
    let mut data: Vec<(&'static str, DataValue)> = vec![
        (data::GUEST_HOST_NAME, values.vm_name.as_str().into()),
        (data::GUEST_LA_UID, values.guest_la_uid.as_str().into()),
        (
            data::GUEST_LA_PW,
            DataValue::secret(values.guest_la_pw.expose()),
        ),
    ];
    if let Some(ip) = &values.static_ipv4 {
        data.push((
            data::GUEST_V4_IP_ADDR,
            ip.guest_v4_ipaddr.to_string().into(),
        ));
        data.push((
            data::GUEST_V4_CIDR_PREFIX,
            ip.guest_v4_cidrprefix.to_string().into(),
        ));
        data.push((
            data::GUEST_V4_DEFAULT_GW,
            ip.guest_v4_defaultgw.to_string().into(),
        ));
        data.push((data::GUEST_V4_DNS1, ip.guest_v4_dns1.to_string().into()));
        if let Some(dns2) = ip.guest_v4_dns2 {
            data.push((data::GUEST_V4_DNS2, dns2.to_string().into()));
        }
        if let Some(suffix) = &ip.guest_net_dnssuffix {
            data.push((data::GUEST_NET_DNS_SUFFIX, suffix.as_str().into()));
        }
    }
    if let Some(domain) = &values.domain_join {
        data.push((
            data::GUEST_DOMAIN_JOIN_TARGET,
            domain.guest_domain_jointarget.as_str().into(),
        ));
        data.push((
            data::GUEST_DOMAIN_JOIN_UID,
            domain.guest_domain_joinuid.as_str().into(),
        ));
        data.push((
            data::GUEST_DOMAIN_JOIN_PW,
            DataValue::secret(domain.guest_domain_joinpw.expose()),
        ));
        if let Some(ou) = &domain.guest_domain_joinou {
            data.push((data::GUEST_DOMAIN_JOIN_OU, ou.as_str().into()));
        }
    }
    if let Some(ssh) = &values.ansible_ssh {
        data.push((
            data::ANSIBLE_SSH_USER,
            ssh.cnf_ansible_ssh_user.as_str().into(),
        ));
        data.push((
            data::ANSIBLE_SSH_KEY,
            ssh.cnf_ansible_ssh_key.as_str().into(),
        ));
    }
    data.sort_by(|a, b| a.0.cmp(b.0));
    data
}
