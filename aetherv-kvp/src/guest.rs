//! The guest half of the handshake, as a guest agent runs it: an RSA key pair published in
//! the agent's format, the payload unwrapped, reassembled, decrypted and checked, and the
//! states (and error) reported back.
//!
//! [`Handshake`] is a sans-IO state machine. The agent reads its host-to-guest items (KVP pool
//! 0 on Linux, the `External` registry key on Windows), calls [`Handshake::on_host_items`],
//! and carries out the [`GuestStep`]: write (and remove) the guest-to-host items it lists,
//! and, for [`GuestStep::Apply`], apply the decrypted values and report the outcome with
//! [`Handshake::applied`] or [`Handshake::failed`]. The random number generator is a
//! parameter; nothing here reads files, the clock or the OS RNG.
//!
//! ```
//! use std::collections::BTreeMap;
//! use aetherv_kvp::guest::{GuestKey, GuestStep, Handshake};
//! use aetherv_kvp::{KeyFormat, host};
//! # fn run(key: GuestKey) -> aetherv_kvp::Result<()> {
//! let mut rng = rand::rngs::OsRng;
//! // let key = GuestKey::generate(&mut rng)?; (RSA-2048; slow in debug builds)
//! let mut agent = Handshake::new(Some("2.4.0".to_owned()), key, KeyFormat::Pkcs1Der);
//! let mut pool = BTreeMap::new(); // what the host wrote
//! for item in host::begin_items("2.4.0") {
//!     pool.insert(item.key, item.value);
//! }
//! match agent.on_host_items(&pool, &mut rng) {
//!     GuestStep::PublishKey(output) => { /* write output.write, remove output.remove */ }
//!     other => panic!("{other:?}"),
//! }
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use rand::{CryptoRng, RngCore};
use rsa::traits::PublicKeyParts;
use rsa::{Pkcs1v15Encrypt, RsaPrivateKey, RsaPublicKey};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::payload::{checksum, decode_base64, decrypt_piece, payload_error};
use crate::public_key::{GuestPublicKey, KeyFormat};
use crate::secret::SecretText;
use crate::state::{GuestState, HostState, KvpItem, normalise};
use crate::{GUEST_KEY_BITS, MAX_CHUNKS, MAX_GUEST_ERROR_CHARS, MIN_RSA_BITS, keys};

/// The guest's RSA key pair. `Debug` never prints key material; clones share the key.
#[derive(Clone)]
pub struct GuestKey(Arc<RsaPrivateKey>);

impl fmt::Debug for GuestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GuestKey({} bits, ***)", self.0.n().bits())
    }
}

impl GuestKey {
    /// A fresh RSA key of [`GUEST_KEY_BITS`] bits (slow in debug builds: about a second or
    /// more).
    ///
    /// # Errors
    ///
    /// [`Error::Rsa`] if generation fails.
    pub fn generate<R: CryptoRng + RngCore>(rng: &mut R) -> Result<Self> {
        RsaPrivateKey::new(rng, GUEST_KEY_BITS)
            .map(|key| Self(Arc::new(key)))
            .map_err(|source| Error::Rsa {
                operation: "key generation",
                source,
            })
    }

    /// Uses an existing key.
    ///
    /// # Errors
    ///
    /// [`Error::PublicKey`] if its modulus has fewer than [`MIN_RSA_BITS`] bits (the host
    /// would refuse it).
    pub fn from_rsa(key: impl Into<Arc<RsaPrivateKey>>) -> Result<Self> {
        let key = key.into();
        let bits = key.n().bits();
        if bits < MIN_RSA_BITS {
            return Err(Error::PublicKey {
                detail: format!(
                    "the RSA key has {bits} bits; at least {MIN_RSA_BITS} are required"
                ),
            });
        }
        Ok(Self(key))
    }

    /// The RSA private key.
    pub fn rsa(&self) -> &RsaPrivateKey {
        &self.0
    }

    /// The public half.
    pub fn public_key(&self) -> RsaPublicKey {
        self.0.to_public_key()
    }

    /// The value of [`keys::GUEST_PUBLIC_KEY`] in `format`: base64 of PKCS#1 DER (Linux
    /// agents) or of a CAPI `PUBLICKEYBLOB` (Windows agents).
    ///
    /// # Errors
    ///
    /// [`Error::PublicKey`] if the key cannot be expressed in that format.
    pub fn public_key_base64(&self, format: KeyFormat) -> Result<String> {
        GuestPublicKey::encode(&self.public_key(), format)
    }

    /// Unwraps the AES-256 key the host published in [`keys::SHARED_AES_KEY`] (RSA PKCS#1
    /// v1.5, blinded with `rng`).
    ///
    /// # Errors
    ///
    /// [`Error::Payload`] if the value is not base64 or not 32 bytes once unwrapped,
    /// [`Error::Rsa`] if it does not unwrap with this key.
    pub fn unwrap_aes_key<R: CryptoRng + RngCore>(
        &self,
        wrapped: &str,
        rng: &mut R,
    ) -> Result<Zeroizing<[u8; 32]>> {
        let wrapped = decode_base64(keys::SHARED_AES_KEY, wrapped)?;
        let key = Zeroizing::new(
            self.0
                .decrypt_blinded(rng, Pkcs1v15Encrypt, &wrapped)
                .map_err(|source| Error::Rsa {
                    operation: "key unwrap",
                    source,
                })?,
        );
        let bytes: [u8; 32] = key.as_slice().try_into().map_err(|_| {
            payload_error(format!(
                "the unwrapped AES key has {} bytes, expected 32",
                key.len()
            ))
        })?;
        Ok(Zeroizing::new(bytes))
    }
}

/// Reads the payload among the host's items: unwraps the AES key with `key`, decrypts every
/// `hlvmm.data.*` item, reassembles values published in pieces and verifies the checksum.
/// Returns the plaintext values by data name (without the `hlvmm.data.` prefix). Items
/// outside the payload are ignored.
///
/// # Errors
///
/// [`Error::Payload`] for a missing or malformed item, a missing or repeated piece, more than
/// [`MAX_CHUNKS`] pieces, a value published both whole and in pieces, a decryption failure
/// or a checksum mismatch; [`Error::Rsa`] if the AES key does not unwrap. Messages name keys,
/// never values.
pub fn decrypt_payload<'a, I, R>(
    items: I,
    key: &GuestKey,
    rng: &mut R,
) -> Result<BTreeMap<String, SecretText>>
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
    R: CryptoRng + RngCore,
{
    let mut wrapped = None;
    let mut expected_checksum = None;
    // Whole values and pieces, by data name.
    let mut whole: BTreeMap<&str, &str> = BTreeMap::new();
    let mut chunked: BTreeMap<&str, BTreeMap<usize, &str>> = BTreeMap::new();
    for (item_key, value) in items {
        if item_key == keys::SHARED_AES_KEY {
            wrapped = Some(value);
            continue;
        }
        if item_key == keys::CHECKSUM {
            expected_checksum = Some(value);
            continue;
        }
        let Some(name) = item_key.strip_prefix(keys::DATA_PREFIX) else {
            continue;
        };
        let duplicate = match keys::split_chunk_name(name) {
            Some((base, index)) => chunked
                .entry(base)
                .or_default()
                .insert(index, value)
                .is_some(),
            None => whole.insert(name, value).is_some(),
        };
        if duplicate {
            return Err(payload_error(format!("{item_key} appears more than once")));
        }
    }
    let wrapped =
        wrapped.ok_or_else(|| payload_error(format!("{} is missing", keys::SHARED_AES_KEY)))?;
    let aes_key = key.unwrap_aes_key(wrapped, rng)?;

    let mut values: BTreeMap<String, SecretText> = BTreeMap::new();
    for (name, value) in &whole {
        if chunked.contains_key(name) {
            return Err(payload_error(format!(
                "{} is published both whole and in chunks",
                keys::data_key(name)
            )));
        }
        values.insert(
            (*name).to_owned(),
            decrypt_piece(&aes_key, &keys::data_key(name), value)?,
        );
    }
    for (name, chunks) in &chunked {
        if chunks.len() > MAX_CHUNKS {
            return Err(payload_error(format!(
                "{} has {} chunks, at most {MAX_CHUNKS} are allowed",
                keys::data_key(name),
                chunks.len()
            )));
        }
        let mut plain = Zeroizing::new(String::new());
        for (expected, (index, value)) in chunks.iter().enumerate() {
            if *index != expected {
                return Err(payload_error(format!(
                    "chunk {expected} of {} is missing",
                    keys::data_key(name)
                )));
            }
            let piece = decrypt_piece(&aes_key, &keys::chunk_key(name, *index), value)?;
            plain.push_str(piece.expose());
        }
        values.insert(
            (*name).to_owned(),
            SecretText::new(std::mem::take(&mut *plain)),
        );
    }

    let expected =
        expected_checksum.ok_or_else(|| payload_error(format!("{} is missing", keys::CHECKSUM)))?;
    let actual = checksum(values.iter().map(|(k, v)| (k.as_str(), v.expose())));
    if normalise(expected) != actual {
        return Err(payload_error(
            "checksum mismatch: the decrypted values do not match the published checksum",
        ));
    }
    Ok(values)
}

/// The text published in [`keys::GUEST_ERROR`] for `reason`: control characters replaced by
/// spaces, at most [`MAX_GUEST_ERROR_CHARS`] characters.
pub fn error_text(reason: &str) -> String {
    reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_GUEST_ERROR_CHARS)
        .collect()
}

/// Where a [`Handshake`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the host to ask for the public key.
    WaitingForHost,
    /// Public key published; waiting for the host's payload.
    WaitingForData,
    /// The payload decrypted; the agent is applying it.
    Applying,
    /// Applied successfully.
    Applied,
    /// Failed with this reason (also published in [`keys::GUEST_ERROR`]).
    Failed(String),
    /// The host's version did not match the agent's; the agent stays silent (as the existing
    /// agents exit).
    VersionMismatch {
        /// The version the host published (`None` when missing).
        host: Option<String>,
    },
}

/// Guest-to-host changes to make, in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GuestOutput {
    /// Items to write (add or replace), in this order; a state item comes last.
    pub write: Vec<KvpItem>,
    /// Keys to remove (left from an earlier attempt).
    pub remove: Vec<&'static str>,
}

impl GuestOutput {
    /// The guest states this output reports, in order.
    pub fn states(&self) -> impl Iterator<Item = &str> {
        self.write
            .iter()
            .filter(|i| i.key == keys::GUEST_STATE)
            .map(|i| i.value.as_str())
    }
}

/// What the agent does after [`Handshake::on_host_items`].
#[derive(Debug)]
#[non_exhaustive]
pub enum GuestStep {
    /// Nothing to do until the host's items change.
    Wait,
    /// The host runs another provisioning system version: stay silent (the host times out).
    VersionMismatch {
        /// The version the host published (`None` when missing).
        host: Option<String>,
    },
    /// Publish the public key: write `0` (the key, then `waitingforaeskey`).
    PublishKey(GuestOutput),
    /// The payload decrypted and its checksum matched: write `output` (`applying`), apply
    /// `values` (by data name, see [`keys::data`]), then report with
    /// [`Handshake::applied`] or [`Handshake::failed`].
    Apply {
        /// The `applying` state.
        output: GuestOutput,
        /// The plaintext values by data name.
        values: BTreeMap<String, SecretText>,
    },
    /// The payload (or the key) was refused: write `output` (`applying`, the error, then
    /// `provisioningfailed`).
    Rejected {
        /// The items reporting the failure.
        output: GuestOutput,
        /// Why (never contains values; at most [`MAX_GUEST_ERROR_CHARS`] characters).
        reason: String,
    },
}

/// One run of the guest half of the handshake. `Debug` never prints key material.
#[derive(Debug, Clone)]
pub struct Handshake {
    agent_version: Option<String>,
    key: GuestKey,
    format: KeyFormat,
    phase: Phase,
}

impl Handshake {
    /// A handshake for an agent of `agent_version` (`None` accepts any host version) that
    /// publishes `key` in `format` ([`KeyFormat::Pkcs1Der`] for Linux agents,
    /// [`KeyFormat::CapiPublicKeyBlob`] for Windows agents).
    pub fn new(agent_version: Option<String>, key: GuestKey, format: KeyFormat) -> Self {
        Self {
            agent_version,
            key,
            format,
            phase: Phase::WaitingForHost,
        }
    }

    /// The current phase.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// The key format this agent publishes.
    pub fn key_format(&self) -> KeyFormat {
        self.format
    }

    /// Makes at most one protocol move for the host's current items (`hlvmm.*` keys as the
    /// host wrote them; other items are ignored). `rng` blinds the RSA unwrap.
    pub fn on_host_items<R: CryptoRng + RngCore>(
        &mut self,
        host_items: &BTreeMap<String, String>,
        rng: &mut R,
    ) -> GuestStep {
        let host_state = host_items
            .get(keys::HOST_STATE)
            .and_then(|s| s.parse::<HostState>().ok());
        match self.phase {
            Phase::WaitingForHost => {
                if host_state != Some(HostState::WaitingForPublicKey) {
                    return GuestStep::Wait;
                }
                let host_version = host_items
                    .get(keys::VERSION)
                    .map(|v| normalise(v).to_owned());
                let matches = match (&self.agent_version, &host_version) {
                    (None, Some(_)) => true,
                    (Some(mine), Some(theirs)) => normalise(mine) == theirs,
                    (_, None) => false,
                };
                if !matches {
                    self.phase = Phase::VersionMismatch {
                        host: host_version.clone(),
                    };
                    return GuestStep::VersionMismatch { host: host_version };
                }
                match self.key.public_key_base64(self.format) {
                    Ok(public) => {
                        self.phase = Phase::WaitingForData;
                        GuestStep::PublishKey(GuestOutput {
                            write: vec![
                                KvpItem::new(keys::GUEST_PUBLIC_KEY, public),
                                GuestState::WaitingForAesKey.item(),
                            ],
                            remove: vec![keys::GUEST_ERROR],
                        })
                    }
                    Err(e) => self.reject(&e.to_string(), false),
                }
            }
            Phase::WaitingForData => {
                if host_state != Some(HostState::ProvisioningDataPublished) {
                    return GuestStep::Wait;
                }
                let pairs = host_items.iter().map(|(k, v)| (k.as_str(), v.as_str()));
                match decrypt_payload(pairs, &self.key, rng) {
                    Ok(values) if values.is_empty() => {
                        self.reject("no hlvmm.data items were published", true)
                    }
                    Ok(values) => {
                        self.phase = Phase::Applying;
                        GuestStep::Apply {
                            output: GuestOutput {
                                write: vec![GuestState::Applying.item()],
                                remove: Vec::new(),
                            },
                            values,
                        }
                    }
                    Err(e) => self.reject(&e.to_string(), true),
                }
            }
            Phase::Applying | Phase::Applied | Phase::Failed(_) | Phase::VersionMismatch { .. } => {
                GuestStep::Wait
            }
        }
    }

    fn reject(&mut self, reason: &str, applying: bool) -> GuestStep {
        let reason = error_text(reason);
        let mut output = self.failure(&reason);
        if applying {
            output.write.insert(0, GuestState::Applying.item());
        }
        GuestStep::Rejected { output, reason }
    }

    fn failure(&mut self, reason: &str) -> GuestOutput {
        self.phase = Phase::Failed(reason.to_owned());
        GuestOutput {
            write: vec![
                KvpItem::new(keys::GUEST_ERROR, reason),
                GuestState::ProvisioningFailed.item(),
            ],
            remove: Vec::new(),
        }
    }

    /// The values were applied: report `provisioningapplied`.
    pub fn applied(&mut self) -> GuestOutput {
        self.phase = Phase::Applied;
        GuestOutput {
            write: vec![GuestState::ProvisioningApplied.item()],
            remove: vec![keys::GUEST_ERROR],
        }
    }

    /// Applying the values failed: report `provisioningfailed` with `reason` (shortened by
    /// [`error_text`]; it must not contain values).
    pub fn failed(&mut self, reason: &str) -> GuestOutput {
        let reason = error_text(reason);
        self.failure(&reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_text_is_bounded_and_single_line() {
        assert_eq!(error_text("a\nb"), "a b");
        let long = "é".repeat(500);
        assert_eq!(error_text(&long).chars().count(), MAX_GUEST_ERROR_CHARS);
    }
}
