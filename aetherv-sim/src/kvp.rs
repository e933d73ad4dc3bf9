//! The KVP guest provisioning protocol as the simulator speaks it: key names, states, and the
//! pure building blocks both sides use (public key formats, AES-256-CBC values, chunking,
//! checksum).
//!
//! The protocol (DESIGN.md, compatible with the existing Aether-V guest agents):
//!
//! 1. The host sets [`HOST_STATE`] = [`WAITING_FOR_PUBLIC_KEY`] and [`VERSION`].
//! 2. The guest (if [`VERSION`] matches its agent version) publishes an RSA-2048 public key in
//!    [`GUEST_PUBLIC_KEY`] — base64 of PKCS#1 `RSAPublicKey` DER from Linux guests, base64 of a
//!    CAPI `PUBLICKEYBLOB` from Windows guests — and sets [`GUEST_STATE`] =
//!    [`WAITING_FOR_AES_KEY`].
//! 3. The host wraps a random AES-256 key with RSA PKCS#1 v1.5 into [`SHARED_AES_KEY`], writes
//!    each `hlvmm.data.<field>` as base64(IV ‖ AES-256-CBC/PKCS#7 ciphertext) with a fresh IV
//!    (plaintext over [`CHUNK_CHARS`] characters is split and each piece encrypted separately
//!    into `<key>._0`, `<key>._1`, ..., at most [`MAX_CHUNKS`]), publishes [`CHECKSUM`] (see
//!    [`checksum`]) and sets [`HOST_STATE`] = [`PROVISIONING_DATA_PUBLISHED`].
//! 4. The guest sets [`GUEST_STATE`] = [`APPLYING`], decrypts, reassembles, verifies the
//!    checksum and applies the data, then sets [`PROVISIONING_APPLIED`] — or
//!    [`PROVISIONING_FAILED`] with a reason in [`GUEST_ERROR`].
//!
//! Guest state key: the guest reports its state in `hlvmm.meta.guest_provisioning_system_state`
//! ([`GUEST_STATE`]), the key the existing Aether-V guest agents and host scripts use. The
//! `applying`/`provisioningapplied`/`provisioningfailed` states and [`GUEST_ERROR`] are this
//! project's additions (older agents report nothing after `waitingforaeskey`).

use std::collections::BTreeMap;

use aes::Aes256;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use rsa::pkcs1::{DecodeRsaPublicKey, EncodeRsaPublicKey};
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, RsaPublicKey};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::model::OsFamily;

/// Host-to-guest: the host's protocol state.
pub const HOST_STATE: &str = "hlvmm.meta.host_provisioning_system_state";
/// Host-to-guest: the provisioning system version the guest agent must match.
pub const VERSION: &str = "hlvmm.meta.version";
/// Host-to-guest: the RSA-wrapped AES-256 key (base64).
pub const SHARED_AES_KEY: &str = "hlvmm.meta.shared_aes_key";
/// Host-to-guest: base64 SHA-256 over the plaintext data values (see [`checksum`]).
pub const CHECKSUM: &str = "hlvmm.meta.provisioning_system_checksum";
/// Host-to-guest: prefix of the encrypted data items.
pub const DATA_PREFIX: &str = "hlvmm.data.";
/// Guest-to-host: the guest's public key (base64).
pub const GUEST_PUBLIC_KEY: &str = "hlvmm.meta.guest_provisioning_public_key";
/// Guest-to-host: the guest's protocol state.
pub const GUEST_STATE: &str = "hlvmm.meta.guest_provisioning_system_state";
/// Guest-to-host: why provisioning failed.
pub const GUEST_ERROR: &str = "hlvmm.meta.guest_provisioning_error";

/// Host state: waiting for the guest's public key.
pub const WAITING_FOR_PUBLIC_KEY: &str = "waitingforpublickey";
/// Host state: key, data and checksum are published.
pub const PROVISIONING_DATA_PUBLISHED: &str = "provisioningdatapublished";
/// Guest state: public key published, waiting for the AES key.
pub const WAITING_FOR_AES_KEY: &str = "waitingforaeskey";
/// Guest state: decrypting and applying.
pub const APPLYING: &str = "applying";
/// Guest state: done.
pub const PROVISIONING_APPLIED: &str = "provisioningapplied";
/// Guest state: failed (reason in [`GUEST_ERROR`]).
pub const PROVISIONING_FAILED: &str = "provisioningfailed";

/// Plaintext longer than this many characters is split into chunks of this size.
pub const CHUNK_CHARS: usize = 100;
/// At most this many chunks per value.
pub const MAX_CHUNKS: usize = 30;

/// How a guest encodes its public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFormat {
    /// PKCS#1 `RSAPublicKey` DER (Linux guests, `openssl rsa -RSAPublicKey_out`).
    Pkcs1Der,
    /// CAPI `PUBLICKEYBLOB` (Windows guests, `RSACryptoServiceProvider.ExportCspBlob($false)`).
    CapiPublicKeyBlob,
}

impl KeyFormat {
    /// The format guests of `os` use.
    pub fn for_os(os: OsFamily) -> Self {
        match os {
            OsFamily::Windows => Self::CapiPublicKeyBlob,
            OsFamily::Linux => Self::Pkcs1Der,
        }
    }
}

fn kvp_err(detail: impl Into<String>) -> Error {
    Error::Kvp(detail.into())
}

/// `PUBLICKEYBLOB` / `CUR_BLOB_VERSION` / `CALG_RSA_KEYX` / "RSA1".
const BLOB_TYPE_PUBLICKEYBLOB: u8 = 0x06;
const BLOB_VERSION: u8 = 0x02;
const CALG_RSA_KEYX: u32 = 0x0000_a400;
const RSA1_MAGIC: u32 = 0x3141_5352;

/// Encodes a public key as base64 in `format`.
pub fn encode_public_key(key: &RsaPublicKey, format: KeyFormat) -> Result<String> {
    let bytes = match format {
        KeyFormat::Pkcs1Der => key
            .to_pkcs1_der()
            .map_err(|e| kvp_err(format!("cannot encode the public key as PKCS#1: {e}")))?
            .as_bytes()
            .to_vec(),
        KeyFormat::CapiPublicKeyBlob => capi_public_key_blob(key)?,
    };
    Ok(STANDARD.encode(bytes))
}

/// The CAPI `PUBLICKEYBLOB` of `key`: BLOBHEADER (bType 0x06, bVersion 2, reserved 0, aiKeyAlg
/// CALG_RSA_KEYX), RSAPUBKEY (magic "RSA1", bit length, public exponent; little-endian DWORDs),
/// then the modulus little-endian.
pub fn capi_public_key_blob(key: &RsaPublicKey) -> Result<Vec<u8>> {
    let modulus_len = key.size();
    let bitlen = u32::try_from(modulus_len * 8)
        .map_err(|_| kvp_err("modulus too large for a PUBLICKEYBLOB"))?;
    let exponent = key.e().to_bytes_le();
    if exponent.len() > 4 {
        return Err(kvp_err(
            "public exponent does not fit a PUBLICKEYBLOB DWORD",
        ));
    }
    let mut pubexp = [0u8; 4];
    pubexp[..exponent.len()].copy_from_slice(&exponent);
    let mut modulus = key.n().to_bytes_le();
    modulus.resize(modulus_len, 0);

    let mut blob = Vec::with_capacity(20 + modulus_len);
    blob.extend_from_slice(&[BLOB_TYPE_PUBLICKEYBLOB, BLOB_VERSION, 0, 0]);
    blob.extend_from_slice(&CALG_RSA_KEYX.to_le_bytes());
    blob.extend_from_slice(&RSA1_MAGIC.to_le_bytes());
    blob.extend_from_slice(&bitlen.to_le_bytes());
    blob.extend_from_slice(&pubexp);
    blob.extend_from_slice(&modulus);
    Ok(blob)
}

/// Parses a guest public key in either format (recognised by its first byte: DER starts with
/// a SEQUENCE tag 0x30, a PUBLICKEYBLOB with 0x06).
pub fn decode_public_key(base64: &str) -> Result<(RsaPublicKey, KeyFormat)> {
    let bytes = STANDARD
        .decode(base64.trim())
        .map_err(|e| kvp_err(format!("guest public key is not base64: {e}")))?;
    match bytes.first() {
        Some(0x30) => RsaPublicKey::from_pkcs1_der(&bytes)
            .map(|k| (k, KeyFormat::Pkcs1Der))
            .map_err(|e| kvp_err(format!("guest public key is not PKCS#1 DER: {e}"))),
        Some(&BLOB_TYPE_PUBLICKEYBLOB) => {
            parse_capi_public_key_blob(&bytes).map(|k| (k, KeyFormat::CapiPublicKeyBlob))
        }
        _ => Err(kvp_err(
            "guest public key is neither PKCS#1 DER nor a CAPI PUBLICKEYBLOB",
        )),
    }
}

fn le_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at + 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Parses a CAPI `PUBLICKEYBLOB` (see [`capi_public_key_blob`]).
pub fn parse_capi_public_key_blob(bytes: &[u8]) -> Result<RsaPublicKey> {
    let bad = |what: &str| kvp_err(format!("malformed PUBLICKEYBLOB: {what}"));
    if bytes.len() < 20 {
        return Err(bad("shorter than its headers"));
    }
    if bytes[0] != BLOB_TYPE_PUBLICKEYBLOB || bytes[1] != BLOB_VERSION {
        return Err(bad("not a version 2 PUBLICKEYBLOB"));
    }
    if le_u32(bytes, 4) != Some(CALG_RSA_KEYX) {
        return Err(bad("algorithm is not CALG_RSA_KEYX"));
    }
    if le_u32(bytes, 8) != Some(RSA1_MAGIC) {
        return Err(bad("magic is not RSA1"));
    }
    let bitlen = le_u32(bytes, 12).ok_or_else(|| bad("no bit length"))? as usize;
    let pubexp = le_u32(bytes, 16).ok_or_else(|| bad("no exponent"))?;
    if bitlen == 0 || !bitlen.is_multiple_of(8) || bytes.len() != 20 + bitlen / 8 {
        return Err(bad("modulus length does not match the bit length"));
    }
    let n = BigUint::from_bytes_le(&bytes[20..]);
    RsaPublicKey::new(n, BigUint::from(pubexp))
        .map_err(|e| kvp_err(format!("PUBLICKEYBLOB holds no usable RSA key: {e}")))
}

/// Encrypts `plaintext` with AES-256-CBC/PKCS#7 under `key` and `iv`; returns
/// base64(IV ‖ ciphertext).
pub fn encrypt_value(key: &[u8; 32], iv: &[u8; 16], plaintext: &str) -> String {
    let cipher = cbc::Encryptor::<Aes256>::new(key.into(), iv.into());
    let ciphertext = cipher.encrypt_padded_vec_mut::<Pkcs7>(plaintext.as_bytes());
    let mut out = Vec::with_capacity(16 + ciphertext.len());
    out.extend_from_slice(iv);
    out.extend_from_slice(&ciphertext);
    STANDARD.encode(out)
}

/// Decrypts a base64(IV ‖ AES-256-CBC/PKCS#7 ciphertext) value to UTF-8 text.
pub fn decrypt_value(key: &[u8; 32], value: &str) -> Result<String> {
    let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
    let bytes = STANDARD
        .decode(compact)
        .map_err(|e| kvp_err(format!("value is not base64: {e}")))?;
    if bytes.len() < 32 || bytes.len() % 16 != 0 {
        return Err(kvp_err(format!(
            "value of {} bytes cannot be IV plus whole AES blocks",
            bytes.len()
        )));
    }
    let (iv, ciphertext) = bytes.split_at(16);
    let cipher = cbc::Decryptor::<Aes256>::new_from_slices(key, iv)
        .map_err(|_| kvp_err("AES key or IV has the wrong length"))?;
    let plain = cipher
        .decrypt_padded_vec_mut::<Pkcs7>(ciphertext)
        .map_err(|_| kvp_err("decryption failed (bad padding: wrong key or corrupted value)"))?;
    String::from_utf8(plain).map_err(|_| kvp_err("decrypted value is not UTF-8"))
}

/// Splits a plaintext value into the pieces that are encrypted one by one: the value itself
/// when it has at most [`CHUNK_CHARS`] characters, otherwise pieces of [`CHUNK_CHARS`]
/// characters (at most [`MAX_CHUNKS`]).
pub fn split_plaintext(key: &str, value: &str) -> Result<Vec<String>> {
    let chars: Vec<char> = value.chars().collect();
    if chars.len() <= CHUNK_CHARS {
        return Ok(vec![value.to_owned()]);
    }
    let pieces: Vec<String> = chars
        .chunks(CHUNK_CHARS)
        .map(|c| c.iter().collect())
        .collect();
    if pieces.len() > MAX_CHUNKS {
        return Err(kvp_err(format!(
            "value of {key} has {} characters; at most {} ({MAX_CHUNKS} chunks of {CHUNK_CHARS}) fit",
            chars.len(),
            MAX_CHUNKS * CHUNK_CHARS
        )));
    }
    Ok(pieces)
}

/// The KVP key of chunk `index` of `key`.
pub fn chunk_key(key: &str, index: usize) -> String {
    format!("{key}._{index}")
}

/// Splits a data key into its base key and chunk index (`hlvmm.data.x._3` -> (`hlvmm.data.x`,
/// Some(3))).
pub fn parse_chunk_key(key: &str) -> (&str, Option<usize>) {
    if let Some((base, index)) = key.rsplit_once("._")
        && !index.is_empty()
        && index.bytes().all(|b| b.is_ascii_digit())
        && let Ok(i) = index.parse::<usize>()
    {
        return (base, Some(i));
    }
    (key, None)
}

/// Whether a value counts for the checksum (blank = empty or whitespace only).
pub fn is_blank(value: &str) -> bool {
    value.trim().is_empty()
}

/// base64(SHA-256(UTF-8 of the non-blank plaintext values, ordered by key name (ordinal),
/// joined with `|`)). Keys are the base `hlvmm.data.*` names (chunks reassembled).
pub fn checksum(values: &BTreeMap<String, String>) -> String {
    let joined = values
        .values()
        .filter(|v| !is_blank(v))
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join("|");
    STANDARD.encode(Sha256::digest(joined.as_bytes()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::guest::shared_test_key;

    #[test]
    fn capi_blob_layout() {
        let key = shared_test_key().to_public_key();
        let blob = capi_public_key_blob(&key).unwrap();
        assert_eq!(blob.len(), 20 + 256);
        assert_eq!(
            &blob[..8],
            &[0x06, 0x02, 0x00, 0x00, 0x00, 0xa4, 0x00, 0x00]
        );
        assert_eq!(&blob[8..12], b"RSA1");
        assert_eq!(&blob[12..16], &2048u32.to_le_bytes());
        assert_eq!(&blob[16..20], &65537u32.to_le_bytes());
        // Modulus little-endian: the last byte is the most significant one.
        let be = key.n().to_bytes_be();
        assert_eq!(blob[20 + 255], be[0]);
        assert_eq!(blob[20], be[255]);
        let parsed = parse_capi_public_key_blob(&blob).unwrap();
        assert_eq!(parsed, key);
    }

    #[test]
    fn both_formats_round_trip() {
        let key = shared_test_key().to_public_key();
        for format in [KeyFormat::Pkcs1Der, KeyFormat::CapiPublicKeyBlob] {
            let text = encode_public_key(&key, format).unwrap();
            let (parsed, detected) = decode_public_key(&text).unwrap();
            assert_eq!(parsed, key);
            assert_eq!(detected, format);
        }
        assert!(decode_public_key("AAAA").is_err());
        assert!(decode_public_key("not base64!").is_err());
        let mut blob = capi_public_key_blob(&key).unwrap();
        blob[8] = b'X';
        assert!(parse_capi_public_key_blob(&blob).is_err());
        blob.truncate(100);
        assert!(parse_capi_public_key_blob(&blob).is_err());
    }

    #[test]
    fn values_round_trip_and_wrong_keys_fail() {
        let key = [7u8; 32];
        let iv = [9u8; 16];
        let value = encrypt_value(&key, &iv, "héllo ✓");
        assert_eq!(decrypt_value(&key, &value).unwrap(), "héllo ✓");
        let raw = STANDARD.decode(&value).unwrap();
        assert_eq!(&raw[..16], &iv);
        assert_eq!(raw.len(), 32);
        // A wrong key fails the padding check or, rarely, yields other bytes.
        assert_ne!(
            decrypt_value(&[8u8; 32], &value).ok().as_deref(),
            Some("héllo ✓")
        );
        assert!(decrypt_value(&key, "AAAA").is_err());
    }

    #[test]
    fn chunking_and_keys() {
        assert_eq!(split_plaintext("k", "short").unwrap(), vec!["short"]);
        let exact = "x".repeat(100);
        assert_eq!(split_plaintext("k", &exact).unwrap().len(), 1);
        let long = "é".repeat(250);
        let pieces = split_plaintext("k", &long).unwrap();
        assert_eq!(pieces.len(), 3);
        assert_eq!(pieces[2].chars().count(), 50);
        assert_eq!(pieces.concat(), long);
        assert!(split_plaintext("k", &"x".repeat(3001)).is_err());
        assert!(split_plaintext("k", &"x".repeat(3000)).is_ok());
        assert_eq!(chunk_key("hlvmm.data.a", 2), "hlvmm.data.a._2");
        assert_eq!(
            parse_chunk_key("hlvmm.data.a._12"),
            ("hlvmm.data.a", Some(12))
        );
        assert_eq!(parse_chunk_key("hlvmm.data.a_b"), ("hlvmm.data.a_b", None));
        assert_eq!(
            parse_chunk_key("hlvmm.data.a._x"),
            ("hlvmm.data.a._x", None)
        );
    }

    #[test]
    fn checksum_orders_by_key_and_skips_blanks() {
        let values = BTreeMap::from([
            ("hlvmm.data.b".to_owned(), "2".to_owned()),
            ("hlvmm.data.a".to_owned(), "1".to_owned()),
            ("hlvmm.data.c".to_owned(), "  ".to_owned()),
        ]);
        let expected = STANDARD.encode(Sha256::digest(b"1|2"));
        assert_eq!(checksum(&values), expected);
    }
}
