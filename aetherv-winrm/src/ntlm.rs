//! NTLMv2 authentication (MS-NLMP) with MIC, key exchange, signing and sealing.
//!
//! This module is sans-IO: every function takes bytes (and, where the protocol needs them,
//! random values and the current time through [`AuthenticateInputs`] / [`AcceptorInputs`]) and
//! returns bytes. Nothing here reads the clock or an RNG on its own, which is what makes the
//! MS-NLMP 4.2.4 known answers reproducible in the tests.
//!
//! # Roles
//! - [`NtlmInitiator`] (client): NEGOTIATE, then CHALLENGE -> AUTHENTICATE, giving an
//!   [`NtlmSession`] in the client role.
//! - [`NtlmAcceptor`] (server, used by the WS-Man endpoint and by tests): NEGOTIATE -> CHALLENGE,
//!   then AUTHENTICATE -> [`AuthenticatedUser`] and an [`NtlmSession`] in the server role.
//! - [`NtlmSession`]: seals and unseals messages (`multipart/encrypted` payloads of WinRM) with
//!   extended session security: one RC4 handle and one sequence number per direction, the 16-byte
//!   signature made of version 1, the first 8 bytes of HMAC-MD5 over sequence number and
//!   plaintext (RC4-encrypted with the same handle when key exchange was negotiated), and the
//!   sequence number.
//!
//! # Library decision: `ntlmclient` plus our own code on RustCrypto
//! The project's owner chose [`ntlmclient`]. We use it for what it does well:
//! - the [`Flags`] bitflags (all 32 bits are defined, so parsing flags never fails),
//! - building the NEGOTIATE message ([`ntlmclient::NegotiateMessage`]),
//! - parsing the CHALLENGE message ([`ntlmclient::Message::try_from`]; its bounds checks were
//!   reviewed and a property test feeds it arbitrary bytes through
//!   [`NtlmInitiator::authenticate_message`]),
//! - target info entries ([`ntlmclient::TargetInfoEntry`], [`ntlmclient::TargetInfoType`]),
//! - the password functions (`ntlm_v1_password_func` = NT hash, `ntlm_v2_password_func` =
//!   NTLMv2 hash). They take `&str` / `&ntlmclient::Credentials`, so the [`Secret`] password is
//!   exposed only for the duration of that call and the temporary copy is zeroized afterwards.
//!
//! It lacks what WinRM over HTTP needs, so this module implements those on top with RustCrypto
//! (`md-5`, `hmac`, `rc4`; `md4` is used through ntlmclient's NT hash):
//! - a caller-controlled client challenge (`respond_challenge_ntlm_v2` draws its own random one,
//!   so it cannot reproduce known answers),
//! - the `MsvAvFlags` MIC bit and `MsvAvTimestamp` handling in the NTLMv2 blob,
//! - the MIC field of AUTHENTICATE (`AuthenticateMessage::to_bytes` has no 16-byte MIC slot), so
//!   we write our own AUTHENTICATE serializer (version + MIC, payload after byte 88) and our own
//!   AUTHENTICATE parser for the acceptor,
//! - key exchange (ntlmclient writes the session base key in clear),
//! - signing and sealing. The long-lived per-direction RC4 keystreams use a small in-module
//!   RC4 (`crypto::Rc4Stream`, eight keystream bytes per step) instead of the `rc4` crate's
//!   byte-per-block stream wrapper: about 1.5x faster, which is what lifts seal+sign above
//!   200 MiB/s; a property test checks it against the `rc4` crate byte for byte, and the `rc4`
//!   crate still does RC4K (key exchange),
//! - the CHALLENGE serializer of the acceptor (`ChallengeMessage::to_bytes` in ntlmclient 0.2
//!   writes the 8 reserved bytes into the payload instead of the header, so its offsets are
//!   wrong) and a small NEGOTIATE parser that only needs the flags.
//!
//! Parsing never panics on arbitrary bytes: every failure is an [`NtlmError`]. Error messages and
//! `Debug` output never contain passwords or key material.
//!
//! [`Secret`]: crate::Secret

mod acceptor;
pub mod crypto;
mod initiator;
mod messages;
mod session;
#[cfg(test)]
mod tests;

use std::time::SystemTime;

pub use acceptor::{AcceptorIdentity, AcceptorInputs, AuthenticatedUser, NtlmAcceptor};
pub use initiator::NtlmInitiator;
pub use ntlmclient::Flags;
pub use session::{NtlmRole, NtlmSession, SIGNATURE_LEN};

use crate::Secret;

/// NTLM failure.
///
/// Messages never include a password, a hash or session key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NtlmError {
    /// A message or field could not be parsed.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// Which message or field was malformed.
        what: &'static str,
        /// What was wrong with it.
        detail: String,
    },
    /// The token was a valid NTLM message but not the type expected at this step.
    #[error("unexpected NTLM message type {found} (expected {expected})")]
    UnexpectedMessageType {
        /// The message type expected (1 NEGOTIATE, 2 CHALLENGE, 3 AUTHENTICATE).
        expected: u32,
        /// The message type received.
        found: u32,
    },
    /// The CHALLENGE message carries no target info, which NTLMv2 with a MIC requires.
    #[error("challenge message has no target info")]
    MissingTargetInfo,
    /// The peer did not negotiate a capability this implementation requires.
    #[error("peer did not negotiate {what}")]
    Unsupported {
        /// The missing capability, e.g. "extended session security".
        what: &'static str,
    },
    /// A message we would produce is too large for NTLM's 16-bit length fields.
    #[error("{what} is too large for an NTLM message")]
    TooLarge {
        /// The field that overflowed.
        what: &'static str,
    },
    /// The MIC of the AUTHENTICATE message did not verify (tampered handshake).
    #[error("message integrity code of the authenticate message does not match")]
    BadMic,
    /// A sealed message's checksum did not verify (tampered data, wrong key or lost sync).
    #[error("message signature does not verify (sequence number {sequence})")]
    BadSignature {
        /// The sequence number the message claimed.
        sequence: u32,
    },
    /// A sealed message carried a sequence number other than the one expected next.
    #[error("sequence number {found} received, {expected} expected")]
    SequenceMismatch {
        /// The next incoming sequence number.
        expected: u32,
        /// The sequence number in the message's signature.
        found: u32,
    },
    /// The acceptor refused the credentials (the NTLMv2 proof did not match).
    #[error("authentication refused: wrong user name or password")]
    Refused,
    /// The acceptor does not know the user (the password lookup returned nothing).
    #[error("authentication refused: unknown user {domain:?}\\{username:?}")]
    UnknownUser {
        /// The domain the client sent.
        domain: String,
        /// The user name the client sent.
        username: String,
    },
    /// The acceptor refused an anonymous AUTHENTICATE message.
    #[error("anonymous authentication is not accepted")]
    AnonymousRefused,
    /// The acceptor refused an NTLMv1 (or LM-only) response; only NTLMv2 is accepted.
    #[error("NTLMv1 responses are not accepted")]
    NtlmV1Refused,
    /// The client's `MsvAvChannelBindings` are not those of this TLS channel (a relayed or
    /// intercepted handshake).
    #[error("channel bindings do not match this TLS connection")]
    ChannelBindingsMismatch,
    /// Channel bindings are required over TLS and the client sent none.
    #[error("channel bindings are required and the client sent none")]
    ChannelBindingsMissing,
    /// A step was called out of order (e.g. `accept` before `challenge_message`).
    #[error("NTLM step out of order: {0}")]
    OutOfOrder(&'static str),
}

/// User name, domain and password for the initiator.
#[derive(Debug, Clone)]
pub struct NtlmCredentials {
    /// NetBIOS domain (may be empty, e.g. for local accounts or UPN user names).
    pub domain: String,
    /// User name (a UPN such as `user@realm` is kept whole, with an empty domain).
    pub username: String,
    /// Password; exposed only transiently while the hashes are computed.
    pub password: Secret,
}

impl NtlmCredentials {
    /// Splits a user string the way Windows and pyspnego do.
    ///
    /// `"DOMAIN\\user"` gives domain `DOMAIN` and user `user`; `"user@realm"` gives an empty
    /// domain and user `user@realm` (a UPN is sent whole); `"user"` gives an empty domain.
    pub fn parse(user: &str, password: Secret) -> Self {
        let (domain, username) = match user.split_once('\\') {
            Some((domain, username)) => (domain.to_owned(), username.to_owned()),
            None => (String::new(), user.to_owned()),
        };
        Self {
            domain,
            username,
            password,
        }
    }
}

/// Random and time inputs of [`NtlmInitiator::authenticate_message`].
///
/// Passed in so the protocol core never reads the clock or an RNG itself. `Debug` hides the
/// exported session key.
#[derive(Clone)]
pub struct AuthenticateInputs {
    /// The 8-byte client challenge of the NTLMv2 response.
    pub client_challenge: [u8; 8],
    /// The random session key sent (RC4-encrypted) when key exchange is negotiated.
    pub exported_session_key: [u8; 16],
    /// Current time as a FILETIME (100 ns intervals since 1601-01-01 UTC); used in the NTLMv2
    /// blob only when the server sends no `MsvAvTimestamp`.
    pub timestamp: u64,
}

impl AuthenticateInputs {
    /// Draws the client challenge and session key from `rng` and converts `now` to a FILETIME.
    pub fn random<R: rand::RngCore + rand::CryptoRng>(rng: &mut R, now: SystemTime) -> Self {
        let mut client_challenge = [0u8; 8];
        rng.fill_bytes(&mut client_challenge);
        let mut exported_session_key = [0u8; 16];
        rng.fill_bytes(&mut exported_session_key);
        Self {
            client_challenge,
            exported_session_key,
            timestamp: crypto::filetime(now),
        }
    }
}

impl Drop for AuthenticateInputs {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.exported_session_key);
    }
}

impl std::fmt::Debug for AuthenticateInputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthenticateInputs")
            .field("client_challenge", &self.client_challenge)
            .field("exported_session_key", &"***")
            .field("timestamp", &self.timestamp)
            .finish()
    }
}
