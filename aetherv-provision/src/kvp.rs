//! The host side of the KVP guest provisioning protocol (key names, states, public key formats,
//! payload encryption), compatible with the existing Aether-V guest agents, plus the guest
//! side of the payload for tests and simulators.
//!
//! # Protocol
//!
//! 1. The host writes [`keys::VERSION`] ([`version_item`]) and
//!    [`HostState::WaitingForPublicKey`] ([`HostState::item`]).
//! 2. The guest agent, if the version matches its own, generates an RSA key pair, publishes the
//!    public key in [`keys::GUEST_PUBLIC_KEY`] and sets [`keys::GUEST_STATE`] to
//!    [`GuestState::WaitingForAesKey`]. Linux agents publish base64 of PKCS#1 `RSAPublicKey`
//!    DER; Windows agents base64 of a CAPI `PUBLICKEYBLOB` (`ExportCspBlob(false)`).
//!    [`GuestPublicKey::parse`] reads either.
//! 3. The host builds the payload with [`ProvisioningPayload::build`]: a random AES-256 key
//!    wrapped with RSA PKCS#1 v1.5 in [`keys::SHARED_AES_KEY`], every non-blank value as
//!    `hlvmm.data.<name>` (or chunks, see below), and [`keys::CHECKSUM`]. It writes all of
//!    those items, then [`HostState::ProvisioningDataPublished`]. Before publishing, the caller
//!    should remove `hlvmm.data.*` items left from an earlier attempt: agents read every
//!    `hlvmm.data.*` name they find, and a stale whole key shadows new chunks.
//! 4. The guest reports [`GuestState::Applying`], then [`GuestState::ProvisioningApplied`] or
//!    [`GuestState::ProvisioningFailed`] with a reason in [`keys::GUEST_ERROR`].
//!
//! # Values, chunks and the 100-character limit
//!
//! Each value is encrypted with AES-256-CBC and PKCS#7 padding under a fresh random IV and
//! published as `base64(IV ‖ ciphertext)`.
//!
//! The 100-character chunk limit applies to the **plaintext**, not to the encrypted text: a
//! value whose plaintext has more than [`CHUNK_CHARS`] characters (Unicode scalar values) is
//! split into pieces of at most 100 characters, and **each piece is encrypted on its own**
//! (own IV) and published as `hlvmm.data.<name>._0`, `._1`, … (no whole `hlvmm.data.<name>`
//! item then). That is what the existing agents do and expect: they decrypt every piece
//! separately and concatenate the plaintexts, so splitting one ciphertext across items would
//! make every piece fail to decrypt. More than [`MAX_CHUNKS`] pieces (over
//! [`MAX_VALUE_CHARS`] characters) is an error naming the key, because agents read at most
//! `._0` … `._29`.
//!
//! What KVP itself limits is the item size: values of at most [`MAX_KVP_VALUE_BYTES`] bytes.
//! A piece of at most 100 characters is at most 400 bytes of UTF-8, so its published value is
//! at most `base64(16 + 416)` = 576 characters; a 4096-bit wrapped key is 684. Every item is
//! checked against the limit anyway.
//!
//! # Names published
//!
//! [`guest_data`] maps the validated job values to the names the agents read (the agents'
//! names, which differ from some schema field names):
//!
//! | schema field | KVP key |
//! | --- | --- |
//! | `vm_name` | `hlvmm.data.guest_host_name` |
//! | `guest_la_uid` | `hlvmm.data.guest_la_uid` |
//! | `guest_la_pw` (secret) | `hlvmm.data.guest_la_pw` |
//! | `guest_v4_ipaddr` | `hlvmm.data.guest_v4_ip_addr` |
//! | `guest_v4_cidrprefix` | `hlvmm.data.guest_v4_cidr_prefix` |
//! | `guest_v4_defaultgw` | `hlvmm.data.guest_v4_default_gw` |
//! | `guest_v4_dns1` | `hlvmm.data.guest_v4_dns1` |
//! | `guest_v4_dns2` | `hlvmm.data.guest_v4_dns2` |
//! | `guest_net_dnssuffix` | `hlvmm.data.guest_net_dns_suffix` |
//! | `guest_domain_jointarget` | `hlvmm.data.guest_domain_join_target` |
//! | `guest_domain_joinuid` | `hlvmm.data.guest_domain_join_uid` |
//! | `guest_domain_joinpw` (secret) | `hlvmm.data.guest_domain_join_pw` |
//! | `guest_domain_joinou` | `hlvmm.data.guest_domain_join_ou` |
//! | `cnf_ansible_ssh_user` | `hlvmm.data.ansible_ssh_user` |
//! | `cnf_ansible_ssh_key` | `hlvmm.data.ansible_ssh_key` |
//!
//! `image_name`, `gb_ram`, `cpu_cores`, `vlan_id`, `vm_clustered`, `os_family` and the host
//! are host-side settings and are not published. Blank values are neither published nor
//! counted in the checksum.
//!
//! # Checksum
//!
//! [`checksum`]: base64 of SHA-256 over the UTF-8 of the non-blank plaintext values (whole
//! values, before chunking), ordered by key name (ordinal byte order; for the fixed set of
//! names above this equals the culture-aware order the PowerShell agents use) and joined with
//! `|`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use aes::Aes256;
use aetherv_winrm::Secret;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use rand::{CryptoRng, RngCore};
use rsa::pkcs1::{DecodeRsaPublicKey, EncodeRsaPublicKey};
use rsa::pkcs8::DecodePublicKey;
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, Pkcs1v15Encrypt, RsaPrivateKey, RsaPublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::schema::ProvisionValues;

/// KVP key names of the protocol.
pub mod keys {
    /// Prefix of every key of the protocol.
    pub const PREFIX: &str = "hlvmm.";
    /// Prefix of the encrypted data items (`hlvmm.data.<name>`, chunks `hlvmm.data.<name>._N`).
    pub const DATA_PREFIX: &str = "hlvmm.data.";
    /// Host to guest: the host's protocol state ([`super::HostState`]).
    pub const HOST_STATE: &str = "hlvmm.meta.host_provisioning_system_state";
    /// Host to guest: the provisioning system version the guest agent must match.
    pub const VERSION: &str = "hlvmm.meta.version";
    /// Host to guest: the AES-256 key, RSA PKCS#1 v1.5 wrapped for the guest, base64.
    pub const SHARED_AES_KEY: &str = "hlvmm.meta.shared_aes_key";
    /// Host to guest: the checksum over the plaintext values ([`super::checksum`]).
    pub const CHECKSUM: &str = "hlvmm.meta.provisioning_system_checksum";
    /// Guest to host: the guest's RSA public key, base64 ([`super::GuestPublicKey`]).
    pub const GUEST_PUBLIC_KEY: &str = "hlvmm.meta.guest_provisioning_public_key";
    /// Guest to host: the guest's protocol state ([`super::GuestState`]).
    pub const GUEST_STATE: &str = "hlvmm.meta.guest_provisioning_system_state";
    /// Guest to host: why provisioning failed (with [`super::GuestState::ProvisioningFailed`]).
    pub const GUEST_ERROR: &str = "hlvmm.meta.guest_provisioning_error";
}

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
/// The longest data name accepted by [`ProvisioningPayload::build`].
pub const MAX_DATA_NAME_CHARS: usize = 128;

/// One KVP item (host-to-guest or guest-to-host). Values are never plaintext secrets: data
/// values are ciphertext, the rest are states, keys and checksums.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvpItem {
    /// The KVP key, e.g. `hlvmm.data.guest_la_pw`.
    pub key: String,
    /// The value.
    pub value: String,
}

impl KvpItem {
    /// An item.
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
        }
    }

    /// The `(key, value)` pair, as
    /// [`aetherv_hyperv::ops::HyperVHostExt::kvp_write_host`] takes it.
    pub fn into_pair(self) -> (String, String) {
        (self.key, self.value)
    }
}

/// The item that tells the guest agent which provisioning system version the host runs.
pub fn version_item(version: &str) -> KvpItem {
    KvpItem::new(keys::VERSION, version)
}

/// Normalises a state value as agents write it: surrounding whitespace and NULs removed.
fn normalise_state(value: &str) -> &str {
    value.trim_matches(|c: char| c.is_whitespace() || c == '\0')
}

/// The host's protocol state, published in [`keys::HOST_STATE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HostState {
    /// `waitingforpublickey`: the host waits for the guest's public key.
    WaitingForPublicKey,
    /// `provisioningdatapublished`: key, data and checksum are all published.
    ProvisioningDataPublished,
}

impl HostState {
    /// The KVP value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WaitingForPublicKey => "waitingforpublickey",
            Self::ProvisioningDataPublished => "provisioningdatapublished",
        }
    }

    /// The item that publishes this state.
    pub fn item(self) -> KvpItem {
        KvpItem::new(keys::HOST_STATE, self.as_str())
    }
}

impl fmt::Display for HostState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for HostState {
    type Err = Error;

    /// Parses a state value (case-insensitive; surrounding whitespace and NULs ignored).
    fn from_str(s: &str) -> Result<Self> {
        let v = normalise_state(s);
        [Self::WaitingForPublicKey, Self::ProvisioningDataPublished]
            .into_iter()
            .find(|state| state.as_str().eq_ignore_ascii_case(v))
            .ok_or_else(|| Error::UnknownState {
                key: keys::HOST_STATE,
                value: v.to_owned(),
            })
    }
}

/// The guest's protocol state, published in [`keys::GUEST_STATE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GuestState {
    /// `waitingforaeskey`: the public key is published; the guest waits for the payload.
    WaitingForAesKey,
    /// `applying`: the guest is decrypting and applying the payload.
    Applying,
    /// `provisioningapplied`: done.
    ProvisioningApplied,
    /// `provisioningfailed`: failed; the reason is in [`keys::GUEST_ERROR`].
    ProvisioningFailed,
}

impl GuestState {
    /// The KVP value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WaitingForAesKey => "waitingforaeskey",
            Self::Applying => "applying",
            Self::ProvisioningApplied => "provisioningapplied",
            Self::ProvisioningFailed => "provisioningfailed",
        }
    }

    /// Whether the guest is done, successfully or not.
    pub fn is_final(self) -> bool {
        matches!(self, Self::ProvisioningApplied | Self::ProvisioningFailed)
    }
}

impl fmt::Display for GuestState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for GuestState {
    type Err = Error;

    /// Parses a state value (case-insensitive; surrounding whitespace and NULs ignored).
    fn from_str(s: &str) -> Result<Self> {
        let v = normalise_state(s);
        [
            Self::WaitingForAesKey,
            Self::Applying,
            Self::ProvisioningApplied,
            Self::ProvisioningFailed,
        ]
        .into_iter()
        .find(|state| state.as_str().eq_ignore_ascii_case(v))
        .ok_or_else(|| Error::UnknownState {
            key: keys::GUEST_STATE,
            value: v.to_owned(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Data values
// ---------------------------------------------------------------------------------------------

/// A plaintext value to publish: ordinary text or a secret (kept as [`Secret`] until it is
/// encrypted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataValue {
    /// Not secret (names, addresses, the SSH public key).
    Plain(String),
    /// Secret (passwords).
    Secret(Secret),
}

impl DataValue {
    /// The plaintext. Never log or format the result.
    pub fn expose(&self) -> &str {
        match self {
            Self::Plain(s) => s,
            Self::Secret(s) => s.expose(),
        }
    }

    /// Whether the value is empty or whitespace only (such values are not published).
    pub fn is_blank(&self) -> bool {
        is_blank(self.expose())
    }
}

impl From<String> for DataValue {
    fn from(value: String) -> Self {
        Self::Plain(value)
    }
}

impl From<&str> for DataValue {
    fn from(value: &str) -> Self {
        Self::Plain(value.to_owned())
    }
}

impl From<Secret> for DataValue {
    fn from(value: Secret) -> Self {
        Self::Secret(value)
    }
}

fn is_blank(value: &str) -> bool {
    value.trim().is_empty()
}

/// The data to publish for a validated job: `(name, value)` pairs with the agents' names (see
/// the module docs for the mapping), sorted by name. Groups that are `None` contribute nothing.
pub fn guest_data(values: &ProvisionValues) -> Vec<(&'static str, DataValue)> {
    let mut data: Vec<(&'static str, DataValue)> = vec![
        ("guest_host_name", values.vm_name.as_str().into()),
        ("guest_la_uid", values.guest_la_uid.as_str().into()),
        ("guest_la_pw", values.guest_la_pw.clone().into()),
    ];
    if let Some(ip) = &values.static_ipv4 {
        data.push(("guest_v4_ip_addr", ip.guest_v4_ipaddr.to_string().into()));
        data.push((
            "guest_v4_cidr_prefix",
            ip.guest_v4_cidrprefix.to_string().into(),
        ));
        data.push((
            "guest_v4_default_gw",
            ip.guest_v4_defaultgw.to_string().into(),
        ));
        data.push(("guest_v4_dns1", ip.guest_v4_dns1.to_string().into()));
        if let Some(dns2) = ip.guest_v4_dns2 {
            data.push(("guest_v4_dns2", dns2.to_string().into()));
        }
        if let Some(suffix) = &ip.guest_net_dnssuffix {
            data.push(("guest_net_dns_suffix", suffix.as_str().into()));
        }
    }
    if let Some(domain) = &values.domain_join {
        data.push((
            "guest_domain_join_target",
            domain.guest_domain_jointarget.as_str().into(),
        ));
        data.push((
            "guest_domain_join_uid",
            domain.guest_domain_joinuid.as_str().into(),
        ));
        data.push((
            "guest_domain_join_pw",
            domain.guest_domain_joinpw.clone().into(),
        ));
        if let Some(ou) = &domain.guest_domain_joinou {
            data.push(("guest_domain_join_ou", ou.as_str().into()));
        }
    }
    if let Some(ssh) = &values.ansible_ssh {
        data.push(("ansible_ssh_user", ssh.cnf_ansible_ssh_user.as_str().into()));
        data.push(("ansible_ssh_key", ssh.cnf_ansible_ssh_key.as_str().into()));
    }
    data.sort_by(|a, b| a.0.cmp(b.0));
    data
}

/// The protocol checksum: base64(SHA-256(non-blank values ordered by key, joined with `|`)).
///
/// Keys may be data names or full `hlvmm.data.*` keys (the order is the same either way, as
/// long as all are of one kind); values are whole plaintexts, not chunks. The plaintext is
/// hashed in place, never copied.
pub fn checksum<'a, I>(values: I) -> String
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut values: Vec<(&str, &str)> = values
        .into_iter()
        .filter(|(_, value)| !is_blank(value))
        .collect();
    values.sort_by(|a, b| a.0.cmp(b.0));
    let mut hasher = Sha256::new();
    for (i, (_, value)) in values.iter().enumerate() {
        if i > 0 {
            hasher.update(b"|");
        }
        hasher.update(value.as_bytes());
    }
    STANDARD.encode(hasher.finalize())
}

// ---------------------------------------------------------------------------------------------
// Public keys
// ---------------------------------------------------------------------------------------------

/// How a guest encoded its public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyFormat {
    /// PKCS#1 `RSAPublicKey` DER (Linux agents).
    Pkcs1Der,
    /// X.509 `SubjectPublicKeyInfo` DER; not produced by the current agents, accepted for
    /// robustness.
    SpkiDer,
    /// CAPI `PUBLICKEYBLOB` (Windows agents, `RSACryptoServiceProvider.ExportCspBlob(false)`).
    CapiPublicKeyBlob,
}

/// `PUBLICKEYBLOB`, `PRIVATEKEYBLOB` (bType), `CUR_BLOB_VERSION`, key algorithms and magics.
const PUBLICKEYBLOB: u8 = 0x06;
const PRIVATEKEYBLOB: u8 = 0x07;
const CUR_BLOB_VERSION: u8 = 0x02;
const CALG_RSA_KEYX: u32 = 0x0000_a400;
const CALG_RSA_SIGN: u32 = 0x0000_2400;
const MAGIC_RSA1: u32 = 0x3141_5352;
const MAGIC_RSA2: u32 = 0x3241_5352;
/// BLOBHEADER (8 bytes) + RSAPUBKEY (12 bytes).
const CAPI_HEADER_LEN: usize = 20;

/// A guest's RSA public key, as read from [`keys::GUEST_PUBLIC_KEY`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestPublicKey {
    key: RsaPublicKey,
    format: KeyFormat,
}

fn key_error(detail: impl Into<String>) -> Error {
    Error::PublicKey {
        detail: detail.into(),
    }
}

fn le_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let word: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(word))
}

impl GuestPublicKey {
    /// Parses the value of [`keys::GUEST_PUBLIC_KEY`]: base64 (whitespace and NULs ignored) of
    /// PKCS#1 DER (first byte `0x30`; an X.509 SubjectPublicKeyInfo is accepted too) or of a
    /// CAPI `PUBLICKEYBLOB` (first byte `0x06`). PEM text (`-----BEGIN RSA PUBLIC KEY-----` or
    /// `-----BEGIN PUBLIC KEY-----`) is accepted as well. Keys below [`MIN_RSA_BITS`] bits and
    /// above 4096 bits are refused.
    ///
    /// # Errors
    ///
    /// [`Error::PublicKey`] saying what is wrong.
    pub fn parse(value: &str) -> Result<Self> {
        let trimmed = value.trim_matches(|c: char| c.is_whitespace() || c == '\0');
        if trimmed.is_empty() {
            return Err(key_error("the value is empty"));
        }
        if trimmed.starts_with("-----BEGIN") {
            return Self::from_pem(trimmed);
        }
        let compact: String = trimmed
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '\0')
            .collect();
        let bytes = STANDARD
            .decode(compact.as_bytes())
            .map_err(|e| key_error(format!("not base64: {e}")))?;
        Self::from_bytes(&bytes)
    }

    fn from_pem(pem: &str) -> Result<Self> {
        let malformed = |e: &dyn fmt::Display| key_error(format!("malformed PEM public key: {e}"));
        if pem.starts_with("-----BEGIN RSA PUBLIC KEY-----") {
            let key = RsaPublicKey::from_pkcs1_pem(pem).map_err(|e| malformed(&e))?;
            Self::from_rsa(key, KeyFormat::Pkcs1Der)
        } else if pem.starts_with("-----BEGIN PUBLIC KEY-----") {
            let key = RsaPublicKey::from_public_key_pem(pem).map_err(|e| malformed(&e))?;
            Self::from_rsa(key, KeyFormat::SpkiDer)
        } else {
            Err(key_error(
                "PEM text that is not an RSA PUBLIC KEY or PUBLIC KEY block",
            ))
        }
    }

    /// Parses the decoded bytes of a public key (see [`GuestPublicKey::parse`]).
    ///
    /// # Errors
    ///
    /// [`Error::PublicKey`] saying what is wrong.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        match bytes.first() {
            None => Err(key_error("the key is empty")),
            Some(0x30) => match RsaPublicKey::from_pkcs1_der(bytes) {
                Ok(key) => Self::from_rsa(key, KeyFormat::Pkcs1Der),
                Err(pkcs1) => match RsaPublicKey::from_public_key_der(bytes) {
                    Ok(key) => Self::from_rsa(key, KeyFormat::SpkiDer),
                    Err(_) => Err(key_error(format!(
                        "starts like DER but is neither a PKCS#1 RSAPublicKey nor an RSA \
                         SubjectPublicKeyInfo: {pkcs1}"
                    ))),
                },
            },
            Some(&PUBLICKEYBLOB) => {
                Self::from_rsa(parse_capi_blob(bytes)?, KeyFormat::CapiPublicKeyBlob)
            }
            Some(&PRIVATEKEYBLOB) => Err(key_error(
                "is a CAPI PRIVATEKEYBLOB; the guest must publish only its public key \
                 (ExportCspBlob(false))",
            )),
            Some(first) => Err(key_error(format!(
                "is neither PKCS#1 DER (first byte 0x30) nor a CAPI PUBLICKEYBLOB (first byte \
                 0x06); first byte is 0x{first:02x}"
            ))),
        }
    }

    /// Wraps an RSA public key, checking its size.
    ///
    /// # Errors
    ///
    /// [`Error::PublicKey`] if the modulus has fewer than [`MIN_RSA_BITS`] bits.
    pub fn from_rsa(key: RsaPublicKey, format: KeyFormat) -> Result<Self> {
        let bits = key.n().bits();
        if bits < MIN_RSA_BITS {
            return Err(key_error(format!(
                "the RSA key has {bits} bits; at least {MIN_RSA_BITS} are required"
            )));
        }
        Ok(Self { key, format })
    }

    /// The format the key arrived in.
    pub fn format(&self) -> KeyFormat {
        self.format
    }

    /// Size of the modulus in bits.
    pub fn bits(&self) -> usize {
        self.key.n().bits()
    }

    /// The RSA key.
    pub fn rsa(&self) -> &RsaPublicKey {
        &self.key
    }

    /// Encodes `key` in `format` as base64, the way a guest agent publishes it (guest role; for
    /// tests and simulators).
    ///
    /// # Errors
    ///
    /// [`Error::PublicKey`] if the key cannot be expressed in that format (a CAPI blob holds
    /// the public exponent in 32 bits).
    pub fn encode(key: &RsaPublicKey, format: KeyFormat) -> Result<String> {
        let bytes = match format {
            KeyFormat::Pkcs1Der => key
                .to_pkcs1_der()
                .map_err(|e| key_error(format!("cannot encode as PKCS#1 DER: {e}")))?
                .into_vec(),
            KeyFormat::SpkiDer => rsa::pkcs8::EncodePublicKey::to_public_key_der(key)
                .map_err(|e| key_error(format!("cannot encode as SubjectPublicKeyInfo: {e}")))?
                .into_vec(),
            KeyFormat::CapiPublicKeyBlob => capi_blob(key)?,
        };
        Ok(STANDARD.encode(bytes))
    }
}

/// Reads a CAPI `PUBLICKEYBLOB`: BLOBHEADER { bType 0x06, bVersion 2, reserved u16 (ignored),
/// aiKeyAlg u32 LE (CALG_RSA_KEYX, or CALG_RSA_SIGN: the same key material) }, RSAPUBKEY
/// { magic "RSA1", bitlen u32 LE, pubexp u32 LE }, then the modulus, ceil(bitlen / 8) bytes
/// little-endian, and nothing after it.
fn parse_capi_blob(bytes: &[u8]) -> Result<RsaPublicKey> {
    let bad = |what: String| key_error(format!("malformed CAPI PUBLICKEYBLOB: {what}"));
    if bytes.len() < CAPI_HEADER_LEN {
        return Err(bad(format!(
            "{} bytes is shorter than the {CAPI_HEADER_LEN}-byte header",
            bytes.len()
        )));
    }
    let version = bytes.get(1).copied().unwrap_or_default();
    if version != CUR_BLOB_VERSION {
        return Err(bad(format!(
            "blob version {version}, expected {CUR_BLOB_VERSION}"
        )));
    }
    let algorithm = le_u32(bytes, 4).unwrap_or_default();
    if algorithm != CALG_RSA_KEYX && algorithm != CALG_RSA_SIGN {
        return Err(bad(format!(
            "key algorithm 0x{algorithm:08x}, expected CALG_RSA_KEYX (0x{CALG_RSA_KEYX:08x}) or \
             CALG_RSA_SIGN (0x{CALG_RSA_SIGN:08x})"
        )));
    }
    match le_u32(bytes, 8).unwrap_or_default() {
        MAGIC_RSA1 => {}
        MAGIC_RSA2 => {
            return Err(key_error(
                "is a CAPI private key (magic RSA2); the guest must publish only its public key",
            ));
        }
        magic => return Err(bad(format!("magic 0x{magic:08x}, expected \"RSA1\""))),
    }
    let bitlen = le_u32(bytes, 12).unwrap_or_default();
    let exponent = le_u32(bytes, 16).unwrap_or_default();
    let modulus = bytes.get(CAPI_HEADER_LEN..).unwrap_or_default();
    let expected = usize::try_from(bitlen.div_ceil(8)).unwrap_or(usize::MAX);
    if bitlen == 0 || modulus.len() != expected {
        return Err(bad(format!(
            "declares a {bitlen}-bit modulus ({expected} bytes) but carries {} bytes",
            modulus.len()
        )));
    }
    RsaPublicKey::new(BigUint::from_bytes_le(modulus), BigUint::from(exponent))
        .map_err(|e| bad(format!("not a usable RSA key: {e}")))
}

fn exponent_u32(e: &BigUint) -> Option<u32> {
    let bytes = e.to_bytes_le();
    if bytes.len() > 4 {
        return None;
    }
    let mut word = [0u8; 4];
    word.get_mut(..bytes.len())?.copy_from_slice(&bytes);
    Some(u32::from_le_bytes(word))
}

/// Writes a CAPI `PUBLICKEYBLOB` (see [`parse_capi_blob`]) with CALG_RSA_KEYX, as
/// `ExportCspBlob(false)` does.
fn capi_blob(key: &RsaPublicKey) -> Result<Vec<u8>> {
    let modulus_len = key.size();
    let bitlen = u32::try_from(modulus_len * 8)
        .map_err(|_| key_error("modulus too large for a PUBLICKEYBLOB"))?;
    let exponent = exponent_u32(key.e())
        .ok_or_else(|| key_error("public exponent does not fit the 32 bits of a PUBLICKEYBLOB"))?;
    let mut modulus = key.n().to_bytes_le();
    modulus.resize(modulus_len, 0);
    let mut blob = Vec::with_capacity(CAPI_HEADER_LEN + modulus_len);
    blob.extend_from_slice(&[PUBLICKEYBLOB, CUR_BLOB_VERSION, 0, 0]);
    blob.extend_from_slice(&CALG_RSA_KEYX.to_le_bytes());
    blob.extend_from_slice(&MAGIC_RSA1.to_le_bytes());
    blob.extend_from_slice(&bitlen.to_le_bytes());
    blob.extend_from_slice(&exponent.to_le_bytes());
    blob.extend_from_slice(&modulus);
    Ok(blob)
}

// ---------------------------------------------------------------------------------------------
// Payload
// ---------------------------------------------------------------------------------------------

/// The encrypted provisioning payload: [`build`](Self::build) on the host,
/// [`decrypt`](Self::decrypt) in the guest role (tests, simulators).
#[derive(Debug, Clone, Copy)]
pub struct ProvisioningPayload;

/// Splits `value` into pieces of at most [`CHUNK_CHARS`] characters (borrowed, never copied).
fn pieces(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = value;
    while !rest.is_empty() {
        let cut = rest
            .char_indices()
            .nth(CHUNK_CHARS)
            .map_or(rest.len(), |(i, _)| i);
        let (piece, tail) = rest.split_at(cut);
        out.push(piece);
        rest = tail;
    }
    out
}

fn check_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("is empty".to_owned())
    } else if name.chars().count() > MAX_DATA_NAME_CHARS {
        Some(format!("is longer than {MAX_DATA_NAME_CHARS} characters"))
    } else if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        Some("may contain only lowercase letters, digits and '_'".to_owned())
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::DataName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

fn encrypt_piece<R: CryptoRng + RngCore>(key: &[u8; 32], piece: &str, rng: &mut R) -> String {
    let mut iv = [0u8; 16];
    rng.fill_bytes(&mut iv);
    let ciphertext = cbc::Encryptor::<Aes256>::new(key.into(), (&iv).into())
        .encrypt_padded_vec_mut::<Pkcs7>(piece.as_bytes());
    let mut out = Vec::with_capacity(iv.len() + ciphertext.len());
    out.extend_from_slice(&iv);
    out.extend_from_slice(&ciphertext);
    STANDARD.encode(out)
}

fn checked_item(key: String, value: String) -> Result<KvpItem> {
    if value.len() > MAX_KVP_VALUE_BYTES {
        return Err(Error::KvpItemTooLarge {
            key,
            bytes: value.len(),
            max: MAX_KVP_VALUE_BYTES,
        });
    }
    Ok(KvpItem { key, value })
}

fn payload_error(detail: impl Into<String>) -> Error {
    Error::Payload {
        detail: detail.into(),
    }
}

fn decode_base64(what: &str, value: &str) -> Result<Vec<u8>> {
    let compact: String = value
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '\0')
        .collect();
    STANDARD
        .decode(compact.as_bytes())
        .map_err(|e| payload_error(format!("{what} is not base64: {e}")))
}

impl ProvisioningPayload {
    /// Encrypts `values` for the guest that owns `public_key` and returns the items to publish,
    /// in this order: [`keys::SHARED_AES_KEY`], the data items sorted by key, then
    /// [`keys::CHECKSUM`]. Names are data names without the `hlvmm.data.` prefix (lowercase
    /// ASCII letters, digits and `_`); blank values are skipped (see the module docs for
    /// chunking). After writing the items, publish [`HostState::ProvisioningDataPublished`].
    ///
    /// # Errors
    ///
    /// [`Error::DataName`] for an unusable or repeated name, [`Error::ValueTooLong`] for a
    /// value over [`MAX_VALUE_CHARS`] characters, [`Error::Rsa`] if the key wrap fails,
    /// [`Error::KvpItemTooLarge`] if an item would not fit KVP.
    pub fn build<K, R>(
        values: &[(K, DataValue)],
        public_key: &GuestPublicKey,
        rng: &mut R,
    ) -> Result<Vec<KvpItem>>
    where
        K: AsRef<str>,
        R: CryptoRng + RngCore,
    {
        let mut sorted: Vec<(&str, &str)> = Vec::with_capacity(values.len());
        let mut seen = std::collections::BTreeSet::new();
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
                    key: format!("{}{name}", keys::DATA_PREFIX),
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
            let key = format!("{}{name}", keys::DATA_PREFIX);
            if value.chars().count() <= CHUNK_CHARS {
                let encrypted = encrypt_piece(&aes_key, value, rng);
                items.push(checked_item(key, encrypted)?);
            } else {
                for (index, piece) in pieces(value).into_iter().enumerate() {
                    let encrypted = encrypt_piece(&aes_key, piece, rng);
                    items.push(checked_item(format!("{key}._{index}"), encrypted)?);
                }
            }
        }
        items.push(checked_item(
            keys::CHECKSUM.to_owned(),
            checksum(sorted.iter().copied()),
        )?);
        Ok(items)
    }

    /// The guest's half (for tests and simulators): unwraps the AES key with `private_key`,
    /// decrypts every `hlvmm.data.*` item, reassembles chunked values and verifies the
    /// checksum. Returns the plaintext values by data name. Other items are ignored.
    ///
    /// Uses the RSA library's unblinded PKCS#1 v1.5 decryption, which is not constant-time:
    /// fine for tests and simulators, not for a production guest agent.
    ///
    /// # Errors
    ///
    /// [`Error::Payload`] for a missing or malformed item, a missing chunk, a value published
    /// both whole and in chunks, a decryption failure or a checksum mismatch; [`Error::Rsa`] if
    /// the AES key cannot be unwrapped.
    pub fn decrypt(
        items: &[KvpItem],
        private_key: &RsaPrivateKey,
    ) -> Result<BTreeMap<String, Secret>> {
        let find = |key: &str| items.iter().find(|item| item.key == key);
        let wrapped = find(keys::SHARED_AES_KEY)
            .ok_or_else(|| payload_error(format!("{} is missing", keys::SHARED_AES_KEY)))?;
        let wrapped = decode_base64(keys::SHARED_AES_KEY, &wrapped.value)?;
        let aes_key = Zeroizing::new(private_key.decrypt(Pkcs1v15Encrypt, &wrapped).map_err(
            |source| Error::Rsa {
                operation: "key unwrap",
                source,
            },
        )?);
        let aes_key: &[u8; 32] = aes_key.as_slice().try_into().map_err(|_| {
            payload_error(format!(
                "the unwrapped AES key has {} bytes, expected 32",
                aes_key.len()
            ))
        })?;

        // Whole values and chunks, by data name.
        let mut whole: BTreeMap<&str, &str> = BTreeMap::new();
        let mut chunked: BTreeMap<&str, BTreeMap<usize, &str>> = BTreeMap::new();
        for item in items {
            let Some(name) = item.key.strip_prefix(keys::DATA_PREFIX) else {
                continue;
            };
            let duplicate = match split_chunk_name(name) {
                Some((base, index)) => chunked
                    .entry(base)
                    .or_default()
                    .insert(index, &item.value)
                    .is_some(),
                None => whole.insert(name, &item.value).is_some(),
            };
            if duplicate {
                return Err(payload_error(format!(
                    "{} appears more than once",
                    item.key
                )));
            }
        }

        let mut values: BTreeMap<String, Secret> = BTreeMap::new();
        for (name, value) in &whole {
            if chunked.contains_key(name) {
                return Err(payload_error(format!(
                    "{}{name} is published both whole and in chunks",
                    keys::DATA_PREFIX
                )));
            }
            let key = format!("{}{name}", keys::DATA_PREFIX);
            values.insert((*name).to_owned(), decrypt_piece(aes_key, &key, value)?);
        }
        for (name, chunks) in &chunked {
            if chunks.len() > MAX_CHUNKS {
                return Err(payload_error(format!(
                    "{}{name} has {} chunks, at most {MAX_CHUNKS} are allowed",
                    keys::DATA_PREFIX,
                    chunks.len()
                )));
            }
            let mut plain = Zeroizing::new(String::new());
            for (expected, (index, value)) in chunks.iter().enumerate() {
                let key = format!("{}{name}._{index}", keys::DATA_PREFIX);
                if *index != expected {
                    return Err(payload_error(format!(
                        "chunk {expected} of {}{name} is missing",
                        keys::DATA_PREFIX
                    )));
                }
                plain.push_str(decrypt_piece(aes_key, &key, value)?.expose());
            }
            values.insert((*name).to_owned(), Secret::new(std::mem::take(&mut *plain)));
        }

        let expected = find(keys::CHECKSUM)
            .ok_or_else(|| payload_error(format!("{} is missing", keys::CHECKSUM)))?;
        let actual = checksum(values.iter().map(|(k, v)| (k.as_str(), v.expose())));
        if normalise_state(&expected.value) != actual {
            return Err(payload_error(
                "checksum mismatch: the decrypted values do not match the published checksum",
            ));
        }
        Ok(values)
    }
}

/// `name._N` -> (`name`, N).
fn split_chunk_name(name: &str) -> Option<(&str, usize)> {
    let (base, index) = name.rsplit_once("._")?;
    if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((base, index.parse().ok()?))
}

fn decrypt_piece(key: &[u8; 32], item_key: &str, value: &str) -> Result<Secret> {
    let bytes = decode_base64(item_key, value)?;
    if bytes.len() < 32 || bytes.len() % 16 != 0 {
        return Err(payload_error(format!(
            "{item_key} has {} bytes, which is not an IV plus whole AES blocks",
            bytes.len()
        )));
    }
    let (iv, ciphertext) = bytes.split_at(16);
    let plain = cbc::Decryptor::<Aes256>::new_from_slices(key, iv)
        .map_err(|_| payload_error("AES key or IV has the wrong length"))?
        .decrypt_padded_vec_mut::<Pkcs7>(ciphertext)
        .map_err(|_| {
            payload_error(format!(
                "{item_key} does not decrypt (bad padding: wrong key or altered value)"
            ))
        })?;
    let plain = Zeroizing::new(plain);
    let text = std::str::from_utf8(&plain)
        .map_err(|_| payload_error(format!("{item_key} does not decrypt to UTF-8")))?;
    Ok(Secret::new(text))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn pieces_split_on_characters() {
        assert!(pieces("").is_empty());
        assert_eq!(pieces("abc"), ["abc"]);
        let exact = "x".repeat(CHUNK_CHARS);
        assert_eq!(pieces(&exact), [exact.as_str()]);
        let text = format!("{}😀é", "x".repeat(CHUNK_CHARS - 1));
        let split = pieces(&text);
        assert_eq!(split.len(), 2);
        assert_eq!(split[0].chars().count(), CHUNK_CHARS);
        assert_eq!(split[1], "é");
        assert_eq!(split.concat(), text);
    }

    #[test]
    fn chunk_names() {
        assert_eq!(split_chunk_name("a._0"), Some(("a", 0)));
        assert_eq!(split_chunk_name("a_b._29"), Some(("a_b", 29)));
        assert_eq!(split_chunk_name("a._"), None);
        assert_eq!(split_chunk_name("a._x"), None);
        assert_eq!(split_chunk_name("a_0"), None);
        assert_eq!(split_chunk_name("a._99999999999999999999999"), None);
    }

    #[test]
    fn exponent_conversion() {
        assert_eq!(exponent_u32(&BigUint::from(65537u32)), Some(65537));
        assert_eq!(exponent_u32(&BigUint::from(u32::MAX)), Some(u32::MAX));
        assert_eq!(exponent_u32(&BigUint::from(u64::from(u32::MAX) + 1)), None);
    }
}
