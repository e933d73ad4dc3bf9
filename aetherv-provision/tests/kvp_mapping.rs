//! The job schema mapped to the KVP data names the guest agents read, through the payload and
//! back (the protocol itself is tested in aetherv-kvp).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use aetherv_provision::kvp::guest::GuestKey;
use aetherv_provision::kvp::{
    self, DataValue, GuestPublicKey, KeyFormat, KvpItem, ProvisioningPayload, SecretText,
};
use aetherv_provision::schema::JobRequest;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rsa::RsaPrivateKey;

fn guest_key() -> &'static GuestKey {
    static KEY: OnceLock<GuestKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let key = RsaPrivateKey::new(&mut StdRng::seed_from_u64(0x6b7670), 2048).unwrap();
        GuestKey::from_rsa(key).unwrap()
    })
}

fn guest_public(format: KeyFormat) -> GuestPublicKey {
    GuestPublicKey::parse(&guest_key().public_key_base64(format).unwrap()).unwrap()
}

fn rng() -> StdRng {
    StdRng::seed_from_u64(42)
}

fn plain(items: &[KvpItem]) -> BTreeMap<String, String> {
    let values: BTreeMap<String, SecretText> =
        ProvisioningPayload::decrypt(items, guest_key(), &mut rng()).unwrap();
    values
        .iter()
        .map(|(k, v)| (k.clone(), v.expose().to_owned()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// From a job to the guest
// ---------------------------------------------------------------------------------------------

#[test]
fn a_windows_job_reaches_the_guest_under_the_agents_names() {
    let body = r#"{"schema_version": 1, "target_host": "hv01", "values": {
        "vm_name": "web-01", "image_name": "Windows Server 2022", "gb_ram": 4, "cpu_cores": 2,
        "guest_la_uid": "Administrator", "guest_la_pw": "La-pw-1",
        "guest_v4_ipaddr": "10.0.0.10", "guest_v4_cidrprefix": 24,
        "guest_v4_defaultgw": "10.0.0.1", "guest_v4_dns1": "10.0.0.2",
        "guest_net_dnssuffix": "corp.example", "vlan_id": 12,
        "guest_domain_jointarget": "corp.example", "guest_domain_joinuid": "join",
        "guest_domain_joinpw": "Join-pw-2", "vm_clustered": true}}"#;
    let job = JobRequest::from_json(body).unwrap().request;
    let data = kvp::guest_data(&job.values);
    let names: Vec<&str> = data.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        [
            "guest_domain_join_pw",
            "guest_domain_join_target",
            "guest_domain_join_uid",
            "guest_host_name",
            "guest_la_pw",
            "guest_la_uid",
            "guest_net_dns_suffix",
            "guest_v4_cidr_prefix",
            "guest_v4_default_gw",
            "guest_v4_dns1",
            "guest_v4_ip_addr",
        ]
    );
    // Secrets stay secrets until encrypted.
    for (name, value) in &data {
        let secret = matches!(value, DataValue::Secret(_));
        assert_eq!(secret, name.ends_with("_pw"), "{name}");
    }
    assert!(!format!("{data:?}").contains("La-pw-1"));

    let items = ProvisioningPayload::build(
        &data,
        &guest_public(KeyFormat::CapiPublicKeyBlob),
        &mut rng(),
    )
    .unwrap();
    let values = plain(&items);
    assert_eq!(values["guest_host_name"], "web-01");
    assert_eq!(values["guest_la_pw"], "La-pw-1");
    assert_eq!(values["guest_domain_join_pw"], "Join-pw-2");
    assert_eq!(values["guest_v4_cidr_prefix"], "24");
    assert_eq!(values["guest_v4_ip_addr"], "10.0.0.10");
    assert_eq!(values.len(), 11);
}

#[test]
fn a_linux_job_publishes_the_ssh_key_in_chunks() {
    let key = format!("ssh-rsa {} ansible@ctl", "B".repeat(372));
    let body = format!(
        "schema_version: 1\ntarget_host: hv02\nvalues:\n  vm_name: db-1\n  image_name: Debian 12\n  \
         gb_ram: 2\n  cpu_cores: 1\n  guest_la_uid: admin\n  guest_la_pw: pw\n  \
         cnf_ansible_ssh_user: ansible\n  cnf_ansible_ssh_key: {key}\n"
    );
    let job = JobRequest::from_yaml(&body).unwrap().request;
    let data = kvp::guest_data(&job.values);
    let items =
        ProvisioningPayload::build(&data, &guest_public(KeyFormat::Pkcs1Der), &mut rng()).unwrap();
    let chunks: Vec<&str> = items
        .iter()
        .filter(|i| i.key.starts_with("hlvmm.data.ansible_ssh_key"))
        .map(|i| i.key.as_str())
        .collect();
    assert_eq!(
        chunks,
        [
            "hlvmm.data.ansible_ssh_key._0",
            "hlvmm.data.ansible_ssh_key._1",
            "hlvmm.data.ansible_ssh_key._2",
            "hlvmm.data.ansible_ssh_key._3",
        ]
    );
    let values = plain(&items);
    assert_eq!(values["ansible_ssh_key"], key);
    assert_eq!(values["ansible_ssh_user"], "ansible");
}
