//! The host's side of the KVP handshake, for tests and the simulator only.
//!
//! This plays the host role well enough to drive [`crate::guest::GuestAgent`] end to end:
//! it wraps a fresh AES-256 key for the guest's public key, encrypts and chunks the data and
//! computes the checksum. It is deliberately not the production implementation, which belongs
//! to `aetherv-provision` (with per-step timeouts, secrets kept in a redacting type, and the
//! KVP writes going through the host scripts).

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore as _;
use rsa::Pkcs1v15Encrypt;

use crate::error::{Error, Result};
use crate::kvp;

/// The items the host writes to start the handshake: its state `waitingforpublickey` and the
/// provisioning system `version`.
pub fn begin_items(version: &str) -> Vec<(String, String)> {
    vec![
        (kvp::VERSION.to_owned(), version.to_owned()),
        (
            kvp::HOST_STATE.to_owned(),
            kvp::WAITING_FOR_PUBLIC_KEY.to_owned(),
        ),
    ]
}

/// The items the host writes once the guest published `guest_public_key` (base64, either
/// format): the wrapped AES key, the encrypted (and, over 100 characters, chunked) data, the
/// checksum, and last the state `provisioningdatapublished`.
///
/// `data` maps field names (`guest_host_name`, with or without the `hlvmm.data.` prefix) to
/// plaintext; blank values are not published.
pub fn publish_items(
    guest_public_key: &str,
    data: &BTreeMap<String, String>,
) -> Result<Vec<(String, String)>> {
    let (public_key, _format) = kvp::decode_public_key(guest_public_key)?;
    let mut rng = rand::rngs::OsRng;
    let mut aes_key = [0u8; 32];
    rng.fill_bytes(&mut aes_key);
    let wrapped = public_key
        .encrypt(&mut rng, Pkcs1v15Encrypt, &aes_key)
        .map_err(|e| Error::Kvp(format!("wrapping the AES key failed: {e}")))?;

    let mut items = vec![(kvp::SHARED_AES_KEY.to_owned(), STANDARD.encode(wrapped))];
    let mut plaintext = BTreeMap::new();
    for (name, value) in data {
        if kvp::is_blank(value) {
            continue;
        }
        let key = if name.starts_with(kvp::DATA_PREFIX) {
            name.clone()
        } else {
            format!("{}{name}", kvp::DATA_PREFIX)
        };
        let pieces = kvp::split_plaintext(&key, value)?;
        let chunked = pieces.len() > 1;
        for (index, piece) in pieces.iter().enumerate() {
            let mut iv = [0u8; 16];
            rng.fill_bytes(&mut iv);
            let item_key = if chunked {
                kvp::chunk_key(&key, index)
            } else {
                key.clone()
            };
            items.push((item_key, kvp::encrypt_value(&aes_key, &iv, piece)));
        }
        plaintext.insert(key, value.clone());
    }
    items.push((kvp::CHECKSUM.to_owned(), kvp::checksum(&plaintext)));
    items.push((
        kvp::HOST_STATE.to_owned(),
        kvp::PROVISIONING_DATA_PUBLISHED.to_owned(),
    ));
    Ok(items)
}
