//! Renders the NoCloud seed of a full sample configuration into a directory (for checking the
//! files with `cloud-init schema`, see interop/cloud_init_schema.sh).
//!
//! Usage: `cargo run -p aetherv-guest --example render-seed -- DIR`

use std::collections::BTreeMap;
use std::path::PathBuf;

use aetherv_guest::apply;
use aetherv_guest::render::{GuestConfig, Interface};
use aetherv_kvp::SecretText;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::args().nth(1).ok_or("usage: render-seed DIR")?);
    let values: BTreeMap<String, SecretText> = [
        ("guest_host_name", "web-01"),
        ("guest_la_uid", "admin"),
        ("guest_la_pw", "a sample password"),
        ("guest_v4_ip_addr", "10.20.30.40"),
        ("guest_v4_cidr_prefix", "24"),
        ("guest_v4_default_gw", "10.20.30.1"),
        ("guest_v4_dns1", "10.20.0.53"),
        ("guest_v4_dns2", "10.20.0.54"),
        ("guest_net_dns_suffix", "corp.example"),
        ("ansible_ssh_user", "ansible"),
        (
            "ansible_ssh_key",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG9zYW1wbGVrZXlmb3JzY2hlbWFjaGVja3M ansible@ctl",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), SecretText::from(v)))
    .collect();
    let config = GuestConfig::from_values(&values)?;
    let interface = Interface {
        name: "eth0".to_owned(),
        mac: Some("00:15:5d:01:02:03".to_owned()),
    };
    let seed = config.render("aetherv-sample", &interface);
    let written = apply::write_seed(&dir, &seed)?;
    for file in written.files {
        println!("{}", file.display());
    }
    Ok(())
}
