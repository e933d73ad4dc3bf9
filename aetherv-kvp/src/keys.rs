//! KVP key names of the protocol, the data names the guest agents read, and the chunk naming.

/// Prefix of every key of the protocol.
pub const PREFIX: &str = "hlvmm.";
/// Prefix of the encrypted data items (`hlvmm.data.<name>`, chunks `hlvmm.data.<name>._N`).
pub const DATA_PREFIX: &str = "hlvmm.data.";
/// Host to guest: the host's protocol state ([`crate::HostState`]).
pub const HOST_STATE: &str = "hlvmm.meta.host_provisioning_system_state";
/// Host to guest: the provisioning system version the guest agent must match.
pub const VERSION: &str = "hlvmm.meta.version";
/// Host to guest: the AES-256 key, RSA PKCS#1 v1.5 wrapped for the guest, base64.
pub const SHARED_AES_KEY: &str = "hlvmm.meta.shared_aes_key";
/// Host to guest: the checksum over the plaintext values ([`crate::checksum`]).
pub const CHECKSUM: &str = "hlvmm.meta.provisioning_system_checksum";
/// Guest to host: the guest's RSA public key, base64 ([`crate::GuestPublicKey`]).
pub const GUEST_PUBLIC_KEY: &str = "hlvmm.meta.guest_provisioning_public_key";
/// Guest to host: the guest's protocol state ([`crate::GuestState`]).
pub const GUEST_STATE: &str = "hlvmm.meta.guest_provisioning_system_state";
/// Guest to host: why provisioning failed (with [`crate::GuestState::ProvisioningFailed`]).
pub const GUEST_ERROR: &str = "hlvmm.meta.guest_provisioning_error";

/// The KVP key of data item `name`: `hlvmm.data.<name>`.
pub fn data_key(name: &str) -> String {
    format!("{DATA_PREFIX}{name}")
}

/// The KVP key of piece `index` of data item `name`: `hlvmm.data.<name>._<index>`.
pub fn chunk_key(name: &str, index: usize) -> String {
    format!("{DATA_PREFIX}{name}._{index}")
}

/// Splits a data name (without [`DATA_PREFIX`]) into its base name and piece index:
/// `name._N` gives `(name, N)`; anything else (a whole value) gives `None`.
pub fn split_chunk_name(name: &str) -> Option<(&str, usize)> {
    let (base, index) = name.rsplit_once("._")?;
    if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((base, index.parse().ok()?))
}

/// The data names the existing guest agents read (`hlvmm.data.<name>`), and which job schema
/// v1 field each one carries.
pub mod data {
    /// The guest's host name (schema `vm_name`).
    pub const GUEST_HOST_NAME: &str = "guest_host_name";
    /// Local administrator user (schema `guest_la_uid`).
    pub const GUEST_LA_UID: &str = "guest_la_uid";
    /// Local administrator password, secret (schema `guest_la_pw`).
    pub const GUEST_LA_PW: &str = "guest_la_pw";
    /// Static IPv4 address (schema `guest_v4_ipaddr`).
    pub const GUEST_V4_IP_ADDR: &str = "guest_v4_ip_addr";
    /// Prefix length of the static address (schema `guest_v4_cidrprefix`).
    pub const GUEST_V4_CIDR_PREFIX: &str = "guest_v4_cidr_prefix";
    /// Default gateway (schema `guest_v4_defaultgw`).
    pub const GUEST_V4_DEFAULT_GW: &str = "guest_v4_default_gw";
    /// First DNS server (schema `guest_v4_dns1`).
    pub const GUEST_V4_DNS1: &str = "guest_v4_dns1";
    /// Second DNS server (schema `guest_v4_dns2`).
    pub const GUEST_V4_DNS2: &str = "guest_v4_dns2";
    /// DNS suffix (schema `guest_net_dnssuffix`).
    pub const GUEST_NET_DNS_SUFFIX: &str = "guest_net_dns_suffix";
    /// Domain to join, Windows (schema `guest_domain_jointarget`).
    pub const GUEST_DOMAIN_JOIN_TARGET: &str = "guest_domain_join_target";
    /// Domain join user (schema `guest_domain_joinuid`).
    pub const GUEST_DOMAIN_JOIN_UID: &str = "guest_domain_join_uid";
    /// Domain join password, secret (schema `guest_domain_joinpw`).
    pub const GUEST_DOMAIN_JOIN_PW: &str = "guest_domain_join_pw";
    /// Organisational unit for the computer account (schema `guest_domain_joinou`).
    pub const GUEST_DOMAIN_JOIN_OU: &str = "guest_domain_join_ou";
    /// SSH user for Ansible, Linux (schema `cnf_ansible_ssh_user`).
    pub const ANSIBLE_SSH_USER: &str = "ansible_ssh_user";
    /// SSH public key for Ansible, Linux (schema `cnf_ansible_ssh_key`).
    pub const ANSIBLE_SSH_KEY: &str = "ansible_ssh_key";

    /// `(schema v1 field, data name)` for every published value, in schema order. The other
    /// schema fields (`image_name`, `gb_ram`, `cpu_cores`, `vlan_id`, `vm_clustered`,
    /// `os_family`, the host) are host-side settings and are not published.
    pub const SCHEMA_FIELDS: [(&str, &str); 15] = [
        ("vm_name", GUEST_HOST_NAME),
        ("guest_la_uid", GUEST_LA_UID),
        ("guest_la_pw", GUEST_LA_PW),
        ("guest_v4_ipaddr", GUEST_V4_IP_ADDR),
        ("guest_v4_cidrprefix", GUEST_V4_CIDR_PREFIX),
        ("guest_v4_defaultgw", GUEST_V4_DEFAULT_GW),
        ("guest_v4_dns1", GUEST_V4_DNS1),
        ("guest_v4_dns2", GUEST_V4_DNS2),
        ("guest_net_dnssuffix", GUEST_NET_DNS_SUFFIX),
        ("guest_domain_jointarget", GUEST_DOMAIN_JOIN_TARGET),
        ("guest_domain_joinuid", GUEST_DOMAIN_JOIN_UID),
        ("guest_domain_joinpw", GUEST_DOMAIN_JOIN_PW),
        ("guest_domain_joinou", GUEST_DOMAIN_JOIN_OU),
        ("cnf_ansible_ssh_user", ANSIBLE_SSH_USER),
        ("cnf_ansible_ssh_key", ANSIBLE_SSH_KEY),
    ];

    /// The data name that carries job schema v1 field `field`, if it is published.
    pub fn for_schema_field(field: &str) -> Option<&'static str> {
        SCHEMA_FIELDS
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, name)| *name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_names() {
        assert_eq!(split_chunk_name("a._0"), Some(("a", 0)));
        assert_eq!(split_chunk_name("a_b._29"), Some(("a_b", 29)));
        assert_eq!(split_chunk_name("a._"), None);
        assert_eq!(split_chunk_name("a._x"), None);
        assert_eq!(split_chunk_name("a_0"), None);
        assert_eq!(split_chunk_name("a._99999999999999999999999"), None);
        assert_eq!(chunk_key("a", 2), "hlvmm.data.a._2");
        assert_eq!(data_key("a"), "hlvmm.data.a");
    }

    #[test]
    fn schema_mapping() {
        assert_eq!(data::for_schema_field("vm_name"), Some("guest_host_name"));
        assert_eq!(
            data::for_schema_field("guest_v4_cidrprefix"),
            Some("guest_v4_cidr_prefix")
        );
        assert_eq!(data::for_schema_field("gb_ram"), None);
    }
}
