//! The host's side of the KVP handshake for tests of the simulator: thin wrappers over
//! [`aetherv_kvp::host`] (the one implementation, which `aetherv-provision` uses too) that
//! take and return plain `(key, value)` pairs and use the OS random number generator.

use std::collections::BTreeMap;

use aetherv_kvp::{DataValue, GuestPublicKey, KvpItem, host, keys};

use crate::error::Result;

/// The items the host writes to start the handshake: the provisioning system `version`, then
/// its state `waitingforpublickey`.
pub fn begin_items(version: &str) -> Vec<(String, String)> {
    host::begin_items(version)
        .into_iter()
        .map(KvpItem::into_pair)
        .collect()
}

/// The items the host writes once the guest published `guest_public_key` (base64, either
/// format): the wrapped AES key, the encrypted (and, over 100 characters, chunked) data, the
/// checksum, and last the state `provisioningdatapublished`.
///
/// `data` maps data names (`guest_host_name`, with or without the `hlvmm.data.` prefix) to
/// plaintext; blank values are not published.
///
/// # Errors
///
/// [`crate::Error::Kvp`] if the key or a name or value is not usable.
pub fn publish_items(
    guest_public_key: &str,
    data: &BTreeMap<String, String>,
) -> Result<Vec<(String, String)>> {
    let public_key = GuestPublicKey::parse(guest_public_key)?;
    let values: Vec<(&str, DataValue)> = data
        .iter()
        .map(|(name, value)| {
            let name = name.strip_prefix(keys::DATA_PREFIX).unwrap_or(name);
            (name, DataValue::secret(value.as_str()))
        })
        .collect();
    let items = host::publish_items(&values, &public_key, &mut rand::rngs::OsRng)?;
    Ok(items.into_iter().map(KvpItem::into_pair).collect())
}
