//! The payload's building blocks that both halves share: plaintext values, pieces, the
//! AES-256-CBC encryption of one piece, and the checksum.

use aes::Aes256;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use rand::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::secret::SecretText;
use crate::state::KvpItem;
use crate::{CHUNK_CHARS, MAX_DATA_NAME_CHARS, MAX_KVP_VALUE_BYTES};

/// A plaintext value to publish: ordinary text or a secret (kept as [`SecretText`] until it
/// is encrypted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataValue {
    /// Not secret (names, addresses, the SSH public key).
    Plain(String),
    /// Secret (passwords).
    Secret(SecretText),
}

impl DataValue {
    /// A secret value.
    pub fn secret(value: impl Into<String>) -> Self {
        Self::Secret(SecretText::new(value))
    }

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

impl From<SecretText> for DataValue {
    fn from(value: SecretText) -> Self {
        Self::Secret(value)
    }
}

/// Whether a value is empty or whitespace only: blank values are neither published nor
/// counted in the checksum.
pub fn is_blank(value: &str) -> bool {
    value.trim().is_empty()
}

/// The protocol checksum: base64(SHA-256(non-blank values ordered by key, joined with `|`)).
///
/// Keys may be data names or full `hlvmm.data.*` keys (the order is the same either way, as
/// long as all are of one kind); values are whole plaintexts, not pieces. Ordinal byte order
/// of the names equals the culture-aware order the PowerShell agents use for the fixed set
/// of names. The plaintext is hashed in place, never copied.
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

/// Splits `value` into pieces of at most [`CHUNK_CHARS`] characters (borrowed, never copied).
pub(crate) fn pieces(value: &str) -> Vec<&str> {
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

/// Checks a data name: lowercase ASCII letters, digits and `_`, at most
/// [`MAX_DATA_NAME_CHARS`] characters.
pub(crate) fn check_name(name: &str) -> Result<()> {
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

/// base64(IV ‖ AES-256-CBC/PKCS#7 of `piece`) with a fresh random IV.
pub(crate) fn encrypt_piece<R: CryptoRng + RngCore>(
    key: &[u8; 32],
    piece: &str,
    rng: &mut R,
) -> String {
    let mut iv = [0u8; 16];
    rng.fill_bytes(&mut iv);
    let ciphertext = cbc::Encryptor::<Aes256>::new(key.into(), (&iv).into())
        .encrypt_padded_vec_mut::<Pkcs7>(piece.as_bytes());
    let mut out = Vec::with_capacity(iv.len() + ciphertext.len());
    out.extend_from_slice(&iv);
    out.extend_from_slice(&ciphertext);
    STANDARD.encode(out)
}

/// Decrypts one published piece (the inverse of [`encrypt_piece`]).
pub(crate) fn decrypt_piece(key: &[u8; 32], item_key: &str, value: &str) -> Result<SecretText> {
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
    let plain = zeroize::Zeroizing::new(plain);
    let text = std::str::from_utf8(&plain)
        .map_err(|_| payload_error(format!("{item_key} does not decrypt to UTF-8")))?;
    Ok(SecretText::new(text))
}

/// An item, refused if its value does not fit KVP.
pub(crate) fn checked_item(key: String, value: String) -> Result<KvpItem> {
    if value.len() > MAX_KVP_VALUE_BYTES {
        return Err(Error::KvpItemTooLarge {
            key,
            bytes: value.len(),
            max: MAX_KVP_VALUE_BYTES,
        });
    }
    Ok(KvpItem { key, value })
}

pub(crate) fn payload_error(detail: impl Into<String>) -> Error {
    Error::Payload {
        detail: detail.into(),
    }
}

/// Decodes base64, ignoring whitespace and NULs (agents and KVP pools add both).
pub(crate) fn decode_base64(what: &str, value: &str) -> Result<Vec<u8>> {
    let compact: String = value
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '\0')
        .collect();
    STANDARD
        .decode(compact.as_bytes())
        .map_err(|e| payload_error(format!("{what} is not base64: {e}")))
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
    fn pieces_round_trip_and_wrong_keys_fail() {
        use rand::SeedableRng as _;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let value = encrypt_piece(&[7u8; 32], "héllo ✓", &mut rng);
        assert_eq!(
            decrypt_piece(&[7u8; 32], "k", &value).unwrap().expose(),
            "héllo ✓"
        );
        assert_eq!(STANDARD.decode(&value).unwrap().len(), 32);
        assert_ne!(
            decrypt_piece(&[8u8; 32], "k", &value)
                .ok()
                .map(|s| s.expose().to_owned())
                .as_deref(),
            Some("héllo ✓")
        );
        assert!(decrypt_piece(&[7u8; 32], "k", "AAAA").is_err());
    }
}
