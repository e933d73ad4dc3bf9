//! The crate's error type.

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the KVP guest protocol, on either side.
///
/// Messages name the KVP key, data name or key format involved and never contain plaintext
/// provisioning values, so a guest may publish them (shortened) as its error item.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The public key a guest published in `hlvmm.meta.guest_provisioning_public_key` cannot
    /// be used (not base64, neither PKCS#1 DER nor a CAPI PUBLICKEYBLOB, malformed, or too
    /// small), or a guest key cannot be exported in the asked format. The guest agent must
    /// publish a fresh RSA key of at least 2048 bits.
    #[error("guest public key is unusable: {detail}")]
    PublicKey {
        /// What is wrong with the key.
        detail: String,
    },

    /// A provisioning data name is not usable as a KVP key (`hlvmm.data.<name>`).
    #[error("invalid provisioning data name {name:?}: {reason}")]
    DataName {
        /// The offending name.
        name: String,
        /// Why it is refused.
        reason: String,
    },

    /// A provisioning value is too long for the KVP chunking scheme (at most 30 pieces of 100
    /// characters).
    #[error(
        "value of {key} is too long for kvp: {chars} characters would need {pieces} pieces, \
         at most {max_pieces} of {chunk_chars} characters are allowed"
    )]
    ValueTooLong {
        /// The KVP key of the value (`hlvmm.data.<name>`).
        key: String,
        /// Length of the plaintext in characters.
        chars: usize,
        /// Number of pieces it would need.
        pieces: usize,
        /// The most pieces the guest agents read.
        max_pieces: usize,
        /// Characters per piece.
        chunk_chars: usize,
    },

    /// A KVP item would exceed what Hyper-V KVP can carry.
    #[error("kvp item {key} would be {bytes} bytes, more than the {max} bytes kvp allows")]
    KvpItemTooLarge {
        /// The KVP key.
        key: String,
        /// Size of the value in bytes.
        bytes: usize,
        /// The limit.
        max: usize,
    },

    /// An RSA operation failed (generating the guest key, wrapping the AES key for the guest,
    /// or unwrapping it in the guest).
    #[error("rsa {operation} failed: {source}")]
    Rsa {
        /// What was attempted, e.g. `key wrap`.
        operation: &'static str,
        /// The RSA library's error.
        #[source]
        source: rsa::Error,
    },

    /// A published provisioning payload cannot be read back (guest side): a missing or
    /// malformed item, a missing chunk, a decryption failure or a checksum mismatch.
    #[error("provisioning payload rejected: {detail}")]
    Payload {
        /// What is wrong.
        detail: String,
    },

    /// A KVP state value is not one the protocol defines.
    #[error("unknown value {value:?} for {key}")]
    UnknownState {
        /// The KVP key that carried the value.
        key: &'static str,
        /// The value found (state values are never secret).
        value: String,
    },
}
