//! The Hyper-V KVP guest provisioning protocol (`hlvmm.*`), compatible with the existing
//! Aether-V guest agents: the one implementation of both halves of the handshake, used by the
//! provisioning pipeline (host half), the simulated guest agent and the guest agents (guest
//! half).
//!
//! Everything here is sans-IO: plain data and functions. The caller moves KVP items (through
//! the host scripts, a KVP pool file, the registry, or a simulated VM) and passes in the
//! random number generator; nothing reads files, the clock or the OS RNG, and nothing needs
//! an async runtime.
//!
//! # Protocol
//!
//! 1. The host writes [`keys::VERSION`] and [`HostState::WaitingForPublicKey`]
//!    ([`host::begin_items`]).
//! 2. The guest agent, if the version matches its own, publishes its RSA-2048 public key in
//!    [`keys::GUEST_PUBLIC_KEY`] and sets [`keys::GUEST_STATE`] to
//!    [`GuestState::WaitingForAesKey`]. Linux agents publish base64 of PKCS#1 `RSAPublicKey`
//!    DER, Windows agents base64 of a CAPI `PUBLICKEYBLOB` (`ExportCspBlob($false)`);
//!    [`GuestPublicKey::parse`] reads either ([`guest::Handshake`] does this step).
//! 3. The host wraps a random AES-256 key with RSA PKCS#1 v1.5 into [`keys::SHARED_AES_KEY`],
//!    writes every non-blank value as `hlvmm.data.<name>` (or in pieces, below), then
//!    [`keys::CHECKSUM`], then [`HostState::ProvisioningDataPublished`]
//!    ([`host::publish_items`]).
//! 4. The guest reports [`GuestState::Applying`], decrypts, reassembles and checks the
//!    payload ([`guest::decrypt_payload`]), applies it, then reports
//!    [`GuestState::ProvisioningApplied`] or [`GuestState::ProvisioningFailed`] with a reason
//!    of at most [`MAX_GUEST_ERROR_CHARS`] characters in [`keys::GUEST_ERROR`].
//!
//! # Values, pieces and the 100-character limit
//!
//! Each value is encrypted with AES-256-CBC and PKCS#7 padding under a fresh random IV and
//! published as `base64(IV ‖ ciphertext)`. The 100-character limit applies to the
//! **plaintext**: a value of more than [`CHUNK_CHARS`] characters (Unicode scalar values) is
//! split into pieces of at most 100 characters, and **each piece is encrypted on its own**
//! (own IV) and published as `hlvmm.data.<name>._0`, `._1`, … (no whole item then), which
//! is what the existing agents read. More than [`MAX_CHUNKS`] pieces is an error naming the
//! key. A piece is at most 400 bytes of UTF-8, so its item is at most 576 characters, well
//! within KVP's [`MAX_KVP_VALUE_BYTES`]; every item is checked anyway.
//!
//! # Names and checksum
//!
//! [`keys::data`] lists the data names the agents read and the job schema field each one
//! carries (`vm_name` → `guest_host_name`, `guest_v4_ipaddr` → `guest_v4_ip_addr`, …).
//! [`checksum`] is base64 of SHA-256 over the non-blank plaintext values (whole values)
//! ordered by name and joined with `|`.
//!
//! # Secrets
//!
//! Plaintext values are [`SecretText`] (`Debug`/`Display` print `***`, zeroized on drop)
//! before encryption (as [`DataValue::Secret`]) and after decryption. Error messages name
//! keys and formats, never values, so a guest may publish them as its error item.
//!
//! # Example: both halves
//!
//! ```
//! use std::collections::BTreeMap;
//! use aetherv_kvp::guest::{GuestKey, GuestStep, Handshake};
//! use aetherv_kvp::{DataValue, GuestPublicKey, KeyFormat, host};
//! # fn main() -> aetherv_kvp::Result<()> {
//! # let key = GuestKey::from_rsa(rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap())?;
//! let mut rng = rand::rngs::OsRng;
//! let mut agent = Handshake::new(Some("2.4.0".into()), key, KeyFormat::CapiPublicKeyBlob);
//! let (mut to_guest, mut to_host) = (BTreeMap::new(), BTreeMap::new());
//! let write = |pool: &mut BTreeMap<String, String>, items: Vec<aetherv_kvp::KvpItem>| {
//!     pool.extend(items.into_iter().map(|i| (i.key, i.value)))
//! };
//!
//! write(&mut to_guest, host::begin_items("2.4.0"));
//! let GuestStep::PublishKey(out) = agent.on_host_items(&to_guest, &mut rng) else { panic!() };
//! write(&mut to_host, out.write);
//!
//! let report = host::GuestReport::read(&to_host);
//! let public = GuestPublicKey::parse(report.public_key.unwrap_or_default())?;
//! let values = [("guest_host_name", DataValue::from("web-01"))];
//! write(&mut to_guest, host::publish_items(&values, &public, &mut rng)?);
//!
//! let GuestStep::Apply { values, .. } = agent.on_host_items(&to_guest, &mut rng) else { panic!() };
//! assert_eq!(values["guest_host_name"].expose(), "web-01");
//! write(&mut to_host, agent.applied().write);
//! assert!(host::GuestReport::read(&to_host).state.is_some_and(|s| s.is_final()));
//! # Ok(())
//! # }
//! ```

pub mod error;
pub mod guest;
pub mod host;
pub mod keys;
mod payload;
mod public_key;
mod secret;
mod state;

use rand::{CryptoRng, RngCore};

pub use error::{Error, Result};
pub use payload::{DataValue, checksum, is_blank};
pub use public_key::{GuestPublicKey, KeyFormat};
pub use secret::SecretText;
pub use state::{GuestState, HostState, KvpItem, version_item};

/// A plaintext value longer than this many characters is published in pieces of this size.
pub const CHUNK_CHARS: usize = 100;
/// The most pieces one value may have (agents read `._0` … `._29`).
pub const MAX_CHUNKS: usize = 30;
/// The longest plaintext value that can be published, in characters.
pub const MAX_VALUE_CHARS: usize = CHUNK_CHARS * MAX_CHUNKS;
/// The largest value, in bytes, a Hyper-V KVP item carries.
pub const MAX_KVP_VALUE_BYTES: usize = 2048;
/// The smallest RSA modulus, in bits, accepted from a guest.
pub const MIN_RSA_BITS: usize = 2048;
/// The size of the RSA key a guest generates ([`guest::GuestKey::generate`]).
pub const GUEST_KEY_BITS: usize = 2048;
/// The longest data name accepted by [`host::build_payload`].
pub const MAX_DATA_NAME_CHARS: usize = 128;
/// The longest reason a guest publishes in [`keys::GUEST_ERROR`], in characters.
pub const MAX_GUEST_ERROR_CHARS: usize = 200;

/// The payload as one namespace: [`build`](Self::build) is the host half
/// ([`host::build_payload`]), [`decrypt`](Self::decrypt) the guest half
/// ([`guest::decrypt_payload`]).
#[derive(Debug, Clone, Copy)]
pub struct ProvisioningPayload;

impl ProvisioningPayload {
    /// See [`host::build_payload`].
    ///
    /// # Errors
    ///
    /// As [`host::build_payload`].
    pub fn build<K, R>(
        values: &[(K, DataValue)],
        public_key: &GuestPublicKey,
        rng: &mut R,
    ) -> Result<Vec<KvpItem>>
    where
        K: AsRef<str>,
        R: CryptoRng + RngCore,
    {
        host::build_payload(values, public_key, rng)
    }

    /// See [`guest::decrypt_payload`].
    ///
    /// # Errors
    ///
    /// As [`guest::decrypt_payload`].
    pub fn decrypt<R: CryptoRng + RngCore>(
        items: &[KvpItem],
        key: &guest::GuestKey,
        rng: &mut R,
    ) -> Result<std::collections::BTreeMap<String, SecretText>> {
        guest::decrypt_payload(items.iter().map(KvpItem::as_pair), key, rng)
    }
}
