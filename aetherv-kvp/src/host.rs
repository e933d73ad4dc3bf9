//! The host half of the handshake: the items that start it, the encrypted payload for a
//! guest's public key, and reading what the guest reports.
//!
//! Plain functions over data; the caller moves the items (over the host scripts, or into a
//! simulated VM) and supplies the random number generator.
//!
//! ```
//! use aetherv_kvp::{DataValue, GuestPublicKey, HostState, host};
//! # fn run(guest_items: &std::collections::BTreeMap<String, String>) -> aetherv_kvp::Result<()> {
//! // 1. Ask for the guest's key.
//! let start = host::begin_items("2.4.0");
//! // ... write `start`, then poll the guest's items until it has published its key:
//! let report = host::GuestReport::read(guest_items);
//! if let Some(key) = report.public_key {
//!     let key = GuestPublicKey::parse(key)?;
//!     let values = [
//!         ("guest_host_name", DataValue::from("web-01")),
//!         ("guest_la_pw", DataValue::secret("not in any log")),
//!     ];
//!     // 2. Everything to write, the state item last.
//!     let items = host::publish_items(&values, &key, &mut rand::rngs::OsRng)?;
//!     assert_eq!(items.last(), Some(&HostState::ProvisioningDataPublished.item()));
//! }
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::{CryptoRng, RngCore};
use rsa::Pkcs1v15Encrypt;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::payload::{DataValue, check_name, checked_item, checksum, encrypt_piece, pieces};
use crate::public_key::GuestPublicKey;
use crate::state::{GuestState, HostState, KvpItem, normalise, version_item};
use crate::{CHUNK_CHARS, MAX_CHUNKS, keys};

/// The items that start the handshake, in writing order: the provisioning system `version`
/// the guest agent must match, then [`HostState::WaitingForPublicKey`].
pub fn begin_items(version: &str) -> Vec<KvpItem> {
    vec![version_item(version), HostState::WaitingForPublicKey.item()]
}

/// Encrypts `values` for the guest that owns `public_key` and returns the items to publish,
/// in this order: [`keys::SHARED_AES_KEY`], the data items sorted by key, then
/// [`keys::CHECKSUM`]. Names are data names without the `hlvmm.data.` prefix (lowercase
/// ASCII letters, digits and `_`; see [`keys::data`]); blank values are skipped. A value of
/// more than [`CHUNK_CHARS`] characters is split into pieces, each encrypted on its own
/// (`hlvmm.data.<name>._0`, `._1`, ...). After writing the items, publish
/// [`HostState::ProvisioningDataPublished`] ([`publish_items`] does both).
///
/// # Errors
///
/// [`Error::DataName`] for an unusable or repeated name, [`Error::ValueTooLong`] for a
/// value over [`crate::MAX_VALUE_CHARS`] characters, [`Error::Rsa`] if the key wrap fails,
/// [`Error::KvpItemTooLarge`] if an item would not fit KVP.
pub fn build_payload<K, R>(
    values: &[(K, DataValue)],
    public_key: &GuestPublicKey,
    rng: &mut R,
) -> Result<Vec<KvpItem>>
where
    K: AsRef<str>,
    R: CryptoRng + RngCore,
{
    let mut sorted: Vec<(&str, &str)> = Vec::with_capacity(values.len());
    let mut seen = BTreeSet::new();
    for (name, value) in values {
        let name = name.as_ref();
        check_name(name)?;
        if !seen.insert(name) {
            return Err(Error::DataName {
                name: name.to_owned(),
                reason: "is given more than once".to_owned(),
            });
        }
        if value.is_blank() {
            continue;
        }
        let chars = value.expose().chars().count();
        let pieces = chars.div_ceil(CHUNK_CHARS);
        if pieces > MAX_CHUNKS {
            return Err(Error::ValueTooLong {
                key: keys::data_key(name),
                chars,
                pieces,
                max_pieces: MAX_CHUNKS,
                chunk_chars: CHUNK_CHARS,
            });
        }
        sorted.push((name, value.expose()));
    }
    sorted.sort_by(|a, b| a.0.cmp(b.0));

    let mut aes_key = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(aes_key.as_mut());
    let wrapped = public_key
        .rsa()
        .encrypt(rng, Pkcs1v15Encrypt, aes_key.as_ref())
        .map_err(|source| Error::Rsa {
            operation: "key wrap",
            source,
        })?;

    let mut items = Vec::with_capacity(sorted.len() + 2);
    items.push(checked_item(
        keys::SHARED_AES_KEY.to_owned(),
        STANDARD.encode(wrapped),
    )?);
    for (name, value) in &sorted {
        if value.chars().count() <= CHUNK_CHARS {
            let encrypted = encrypt_piece(&aes_key, value, rng);
            items.push(checked_item(keys::data_key(name), encrypted)?);
        } else {
            for (index, piece) in pieces(value).into_iter().enumerate() {
                let encrypted = encrypt_piece(&aes_key, piece, rng);
                items.push(checked_item(keys::chunk_key(name, index), encrypted)?);
            }
        }
    }
    items.push(checked_item(
        keys::CHECKSUM.to_owned(),
        checksum(sorted.iter().copied()),
    )?);
    Ok(items)
}

/// Everything the host writes once the guest has published its key: [`build_payload`]'s
/// items followed by [`HostState::ProvisioningDataPublished`]. Write them in this order, in
/// one batch; before that, remove `hlvmm.data.*` items left from an earlier attempt (agents
/// read every `hlvmm.data.*` name they find, and a stale whole value shadows new pieces).
///
/// # Errors
///
/// As [`build_payload`].
pub fn publish_items<K, R>(
    values: &[(K, DataValue)],
    public_key: &GuestPublicKey,
    rng: &mut R,
) -> Result<Vec<KvpItem>>
where
    K: AsRef<str>,
    R: CryptoRng + RngCore,
{
    let mut items = build_payload(values, public_key, rng)?;
    items.push(HostState::ProvisioningDataPublished.item());
    Ok(items)
}

/// What the guest has published, read from its guest-to-host items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GuestReport<'a> {
    /// The guest's state; `None` when absent or not a state the protocol defines.
    pub state: Option<GuestState>,
    /// The raw state value when it is present but unknown (never secret).
    pub unknown_state: Option<&'a str>,
    /// The public key value (base64; parse it with [`GuestPublicKey::parse`]).
    pub public_key: Option<&'a str>,
    /// Why provisioning failed, with [`GuestState::ProvisioningFailed`].
    pub error: Option<&'a str>,
}

impl<'a> GuestReport<'a> {
    /// Reads the protocol items among the guest's items (values normalised: surrounding
    /// whitespace and NULs removed; empty values count as absent).
    pub fn read(items: &'a BTreeMap<String, String>) -> Self {
        let get = |key: &str| {
            items
                .get(key)
                .map(|v| normalise(v))
                .filter(|v| !v.is_empty())
        };
        let raw_state = get(keys::GUEST_STATE);
        let state = raw_state.and_then(|s| s.parse::<GuestState>().ok());
        Self {
            state,
            unknown_state: raw_state.filter(|_| state.is_none()),
            public_key: get(keys::GUEST_PUBLIC_KEY),
            error: get(keys::GUEST_ERROR),
        }
    }

    /// Whether the guest has published its key and waits for the payload.
    pub fn key_ready(&self) -> bool {
        self.state == Some(GuestState::WaitingForAesKey) && self.public_key.is_some()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn begin_items_put_the_state_last() {
        let items = begin_items("1.2.3");
        assert_eq!(items[0], KvpItem::new(keys::VERSION, "1.2.3"));
        assert_eq!(
            items[1],
            KvpItem::new(keys::HOST_STATE, "waitingforpublickey")
        );
    }

    #[test]
    fn reports_read_states_keys_and_errors() {
        let mut items = BTreeMap::new();
        assert_eq!(GuestReport::read(&items), GuestReport::default());
        items.insert(
            keys::GUEST_STATE.to_owned(),
            " WaitingForAesKey\0".to_owned(),
        );
        items.insert(keys::GUEST_PUBLIC_KEY.to_owned(), "AAAA\n".to_owned());
        let report = GuestReport::read(&items);
        assert_eq!(report.state, Some(GuestState::WaitingForAesKey));
        assert_eq!(report.public_key, Some("AAAA"));
        assert!(report.key_ready());
        items.insert(keys::GUEST_STATE.to_owned(), "bogus".to_owned());
        items.insert(keys::GUEST_ERROR.to_owned(), "no".to_owned());
        let report = GuestReport::read(&items);
        assert_eq!(report.state, None);
        assert_eq!(report.unknown_state, Some("bogus"));
        assert_eq!(report.error, Some("no"));
        assert!(!report.key_ready());
    }
}
