//! Guest public keys in the formats the agents publish: PKCS#1 `RSAPublicKey` DER (Linux),
//! a CAPI `PUBLICKEYBLOB` (Windows, `RSACryptoServiceProvider.ExportCspBlob($false)`), and,
//! for robustness, X.509 `SubjectPublicKeyInfo` DER and PEM text.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rsa::pkcs1::{DecodeRsaPublicKey, EncodeRsaPublicKey};
use rsa::pkcs8::DecodePublicKey;
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, RsaPublicKey};

use crate::MIN_RSA_BITS;
use crate::error::{Error, Result};

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

/// A guest's RSA public key, as read from [`crate::keys::GUEST_PUBLIC_KEY`].
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
    /// Parses the value of [`crate::keys::GUEST_PUBLIC_KEY`]: base64 (whitespace and NULs ignored) of
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

    /// Encodes `key` in `format` as base64, the way a guest agent publishes it (the guest side
    /// uses it through [`crate::guest::GuestKey::public_key_base64`]).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponent_conversion() {
        assert_eq!(exponent_u32(&BigUint::from(65537u32)), Some(65537));
        assert_eq!(exponent_u32(&BigUint::from(u32::MAX)), Some(u32::MAX));
        assert_eq!(exponent_u32(&BigUint::from(u64::from(u32::MAX) + 1)), None);
    }
}
