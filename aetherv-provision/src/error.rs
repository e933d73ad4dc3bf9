//! The crate's error type and the per-field validation problem.

use std::fmt;

use serde::Serialize;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One problem with one field of a request.
///
/// `field` is the path of the field in the submitted document, e.g. `values.gb_ram` for the job
/// schema or `gb_ram` for the flat create body; `body` when the document as a whole is at fault
/// (malformed JSON or YAML, not a mapping). `message` says why, e.g. `must be between 1 and 512,
/// got 1024`. Messages never contain the value of a secret field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// Path of the offending field.
    pub field: String,
    /// What is wrong with it and, where useful, what is expected.
    pub message: String,
}

impl FieldError {
    /// A problem with `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

fn join_field_errors(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Everything that can go wrong in this crate.
///
/// Messages name the field, KVP key or key format involved and never contain secrets or
/// plaintext provisioning values.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The job request could not be parsed or failed validation; every problem found is listed
    /// (parse errors stop at the first problem the parser meets).
    #[error("invalid job request: {}", join_field_errors(.errors))]
    InvalidRequest {
        /// The problems, in schema order.
        errors: Vec<FieldError>,
    },

    /// The public key a guest published in `hlvmm.meta.guest_provisioning_public_key` cannot
    /// be used (not base64, neither PKCS#1 DER nor a CAPI PUBLICKEYBLOB, malformed, or too
    /// small). The guest agent must publish a fresh RSA key of at least 2048 bits.
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

    /// An RSA operation failed (wrapping the AES key for the guest, or unwrapping it in the
    /// guest role).
    #[error("rsa {operation} failed: {source}")]
    Rsa {
        /// What was attempted, e.g. `key wrap`.
        operation: &'static str,
        /// The RSA library's error.
        #[source]
        source: rsa::Error,
    },

    /// A published provisioning payload cannot be read back (guest role): a missing or
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

impl Error {
    /// The field problems, if this is [`Error::InvalidRequest`].
    pub fn field_errors(&self) -> Option<&[FieldError]> {
        match self {
            Self::InvalidRequest { errors } => Some(errors),
            _ => None,
        }
    }
}
