//! The KVP protocol's host half and guest half talking to each other over two in-memory KVP
//! pools, as Hyper-V keeps them for one VM (host-to-guest and guest-to-host).
//!
//! `cargo run -p aetherv-examples --example kvp_handshake [-- windows]`

use std::collections::BTreeMap;

use aetherv_kvp::guest::{GuestKey, GuestOutput, GuestStep, Handshake};
use aetherv_kvp::host::{self, GuestReport};
use aetherv_kvp::{DataValue, GuestPublicKey, KeyFormat, KvpItem, keys};

fn show(direction: &str, items: &[KvpItem]) {
    for item in items {
        let value: String = item.value.chars().take(48).collect();
        let more = if item.value.chars().count() > 48 {
            "…"
        } else {
            ""
        };
        println!("{direction} {} = {value}{more}", item.key);
    }
}

fn guest_writes(pool: &mut BTreeMap<String, String>, output: GuestOutput) {
    show("guest→host", &output.write);
    for key in output.remove {
        pool.remove(key);
    }
    pool.extend(output.write.into_iter().map(KvpItem::into_pair));
}

fn host_writes(pool: &mut BTreeMap<String, String>, items: Vec<KvpItem>) {
    show("host→guest", &items);
    pool.extend(items.into_iter().map(KvpItem::into_pair));
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let format = if std::env::args().any(|a| a == "windows") {
        KeyFormat::CapiPublicKeyBlob
    } else {
        KeyFormat::Pkcs1Der
    };
    let mut rng = rand::rngs::OsRng;
    let (mut to_guest, mut to_host) = (BTreeMap::new(), BTreeMap::new());
    let mut agent = Handshake::new(Some("2.4.0".into()), GuestKey::generate(&mut rng)?, format);

    host_writes(&mut to_guest, host::begin_items("2.4.0"));
    match agent.on_host_items(&to_guest, &mut rng) {
        GuestStep::PublishKey(output) => guest_writes(&mut to_host, output),
        other => return Err(format!("the guest did not publish its key: {other:?}").into()),
    }

    let report = GuestReport::read(&to_host);
    let public = GuestPublicKey::parse(report.public_key.ok_or("no public key")?)?;
    println!(
        "host: guest key {:?}, {} bits",
        public.format(),
        public.bits()
    );
    let values = [
        (keys::data::GUEST_HOST_NAME, DataValue::from("web-01")),
        (keys::data::GUEST_LA_UID, DataValue::from("Administrator")),
        (keys::data::GUEST_LA_PW, DataValue::secret("never printed")),
        (
            keys::data::ANSIBLE_SSH_KEY,
            DataValue::from(format!("ssh-ed25519 {} ansible@ctl", "A".repeat(240))),
        ),
    ];
    host_writes(
        &mut to_guest,
        host::publish_items(&values, &public, &mut rng)?,
    );

    match agent.on_host_items(&to_guest, &mut rng) {
        GuestStep::Apply { output, values } => {
            guest_writes(&mut to_host, output);
            println!("guest: decrypted {:?}", values);
            guest_writes(&mut to_host, agent.applied());
        }
        GuestStep::Rejected { output, reason } => {
            guest_writes(&mut to_host, output);
            return Err(reason.into());
        }
        other => return Err(format!("unexpected step {other:?}").into()),
    }
    println!("host: guest state {:?}", GuestReport::read(&to_host).state);
    Ok(())
}
