//! The established security context: sealing and unsealing with extended session security.

use std::fmt;

use super::crypto::{self, HmacMd5, KeyDirection, Rc4Stream};
use super::{Flags, NtlmError};
use hmac::Mac;

/// Which side of the handshake a session belongs to; decides the key direction of each way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NtlmRole {
    /// The initiator: seals with the client-to-server keys, unseals with server-to-client.
    Client,
    /// The acceptor: seals with the server-to-client keys, unseals with client-to-server.
    Server,
}

/// Bytes processed per round of the interleaved HMAC/RC4 loop (keeps each chunk in L1 cache
/// between the two passes).
const CHUNK: usize = 8 * 1024;

/// Length of an NTLM message signature.
pub const SIGNATURE_LEN: usize = 16;

/// One direction of a session: its pre-keyed MAC, its RC4 handle and its sequence number.
struct Direction {
    /// HMAC-MD5 keyed with the direction's signing key; cloned for each message.
    signer: HmacMd5,
    /// RC4 keyed once with the direction's sealing key and continued across messages.
    cipher: Rc4Stream,
    /// Sequence number of the next message in this direction.
    sequence: u32,
}

impl Direction {
    fn new(exported_session_key: &[u8; 16], flags: Flags, direction: KeyDirection) -> Self {
        let signing = zeroize::Zeroizing::new(crypto::signing_key(exported_session_key, direction));
        let sealing =
            zeroize::Zeroizing::new(crypto::sealing_key(exported_session_key, flags, direction));
        Self {
            signer: crypto::hmac_md5(&signing),
            cipher: Rc4Stream::new(&sealing),
            sequence: 0,
        }
    }
}

/// An established NTLM security context.
///
/// Client and server roles use opposite key directions. Each direction keeps its own sequence
/// number and its own RC4 handle, initialised once and continued across messages (extended
/// session security, connection-oriented). A failed [`unseal_in_place`](Self::unseal_in_place)
/// may leave the incoming RC4 handle out of step with the peer: treat any unseal error as fatal
/// for the connection, as Windows does.
///
/// `Debug` prints the role, flags and sequence numbers, never key material.
pub struct NtlmSession {
    role: NtlmRole,
    flags: Flags,
    outgoing: Direction,
    incoming: Direction,
}

impl fmt::Debug for NtlmSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NtlmSession")
            .field("role", &self.role)
            .field("flags", &self.flags)
            .field("outgoing_sequence", &self.outgoing.sequence)
            .field("incoming_sequence", &self.incoming.sequence)
            .finish_non_exhaustive()
    }
}

impl NtlmSession {
    /// Builds a session from the exported session key and the negotiated flags.
    ///
    /// The handshakes call this; it is public for tests and known-answer checks.
    pub fn from_exported_key(
        exported_session_key: &[u8; 16],
        flags: Flags,
        role: NtlmRole,
    ) -> Self {
        let (out_dir, in_dir) = match role {
            NtlmRole::Client => (KeyDirection::ClientToServer, KeyDirection::ServerToClient),
            NtlmRole::Server => (KeyDirection::ServerToClient, KeyDirection::ClientToServer),
        };
        Self {
            role,
            flags,
            outgoing: Direction::new(exported_session_key, flags, out_dir),
            incoming: Direction::new(exported_session_key, flags, in_dir),
        }
    }

    /// The role this session was established in.
    pub fn role(&self) -> NtlmRole {
        self.role
    }

    /// The negotiated flags (as sent in the AUTHENTICATE message).
    pub fn flags(&self) -> Flags {
        self.flags
    }

    /// Sequence number the next sealed (outgoing) message will carry.
    pub fn next_outgoing_sequence(&self) -> u32 {
        self.outgoing.sequence
    }

    /// Sequence number expected on the next incoming message.
    pub fn next_incoming_sequence(&self) -> u32 {
        self.incoming.sequence
    }

    fn key_exchange(&self) -> bool {
        self.flags.contains(Flags::NEGOTIATE_KEY_EXCHANGE)
    }

    /// Seals `data` in place and returns its 16-byte signature.
    ///
    /// The data is RC4-encrypted with the outgoing handle; the signature is version 1 (u32 LE),
    /// the first 8 bytes of HMAC-MD5(signing key, sequence number || plaintext), RC4-encrypted
    /// with the same handle after the data when key exchange was negotiated, and the sequence
    /// number (u32 LE). The outgoing sequence number then advances.
    pub fn seal_in_place(&mut self, data: &mut [u8]) -> [u8; SIGNATURE_LEN] {
        let key_exchange = self.key_exchange();
        let dir = &mut self.outgoing;
        let sequence = dir.sequence;
        let mut mac = dir.signer.clone();
        mac.update(&sequence.to_le_bytes());
        for chunk in data.chunks_mut(CHUNK) {
            mac.update(chunk);
            dir.cipher.apply(chunk);
        }
        let digest = mac.finalize().into_bytes();
        let mut checksum = [0u8; 8];
        checksum.copy_from_slice(&digest[..8]);
        if key_exchange {
            dir.cipher.apply(&mut checksum);
        }
        dir.sequence = dir.sequence.wrapping_add(1);

        let mut signature = [0u8; SIGNATURE_LEN];
        signature[..4].copy_from_slice(&1u32.to_le_bytes());
        signature[4..12].copy_from_slice(&checksum);
        signature[12..].copy_from_slice(&sequence.to_le_bytes());
        signature
    }

    /// Unseals `data` in place and verifies `signature` (version, checksum and the expected
    /// incoming sequence number). The incoming sequence number advances on success.
    ///
    /// A wrong length, version or sequence number is reported before any state changes; a
    /// checksum mismatch is detected after decrypting, so `data` then holds garbage and the
    /// session should be dropped.
    pub fn unseal_in_place(&mut self, signature: &[u8], data: &mut [u8]) -> Result<(), NtlmError> {
        let signature: &[u8; SIGNATURE_LEN] =
            signature.try_into().map_err(|_| NtlmError::Malformed {
                what: "message signature",
                detail: format!("{} bytes, expected {SIGNATURE_LEN}", signature.len()),
            })?;
        let [
            v0,
            v1,
            v2,
            v3,
            c0,
            c1,
            c2,
            c3,
            c4,
            c5,
            c6,
            c7,
            s0,
            s1,
            s2,
            s3,
        ] = *signature;
        let version = u32::from_le_bytes([v0, v1, v2, v3]);
        if version != 1 {
            return Err(NtlmError::Malformed {
                what: "message signature",
                detail: format!("version {version}, expected 1"),
            });
        }
        let sequence = u32::from_le_bytes([s0, s1, s2, s3]);
        let key_exchange = self.key_exchange();
        let dir = &mut self.incoming;
        if sequence != dir.sequence {
            return Err(NtlmError::SequenceMismatch {
                expected: dir.sequence,
                found: sequence,
            });
        }
        let mut mac = dir.signer.clone();
        mac.update(&sequence.to_le_bytes());
        for chunk in data.chunks_mut(CHUNK) {
            dir.cipher.apply(chunk);
            mac.update(chunk);
        }
        let mut checksum = [c0, c1, c2, c3, c4, c5, c6, c7];
        if key_exchange {
            dir.cipher.apply(&mut checksum);
        }
        mac.verify_truncated_left(&checksum)
            .map_err(|_| NtlmError::BadSignature { sequence })?;
        dir.sequence = dir.sequence.wrapping_add(1);
        Ok(())
    }

    /// Seals a copy of `plaintext`; returns (signature, ciphertext).
    pub fn seal(&mut self, plaintext: &[u8]) -> ([u8; SIGNATURE_LEN], Vec<u8>) {
        let mut data = plaintext.to_vec();
        let signature = self.seal_in_place(&mut data);
        (signature, data)
    }

    /// Unseals a copy of `ciphertext` and verifies `signature`; returns the plaintext.
    pub fn unseal(&mut self, signature: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>, NtlmError> {
        let mut data = ciphertext.to_vec();
        self.unseal_in_place(signature, &mut data)?;
        Ok(data)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn spec_flags() -> Flags {
        // The 4.2.4 CHALLENGE flags: key exchange, 128/56-bit, extended session security, seal,
        // sign, unicode.
        Flags::from_bits_retain(0xe28a_8233)
    }

    #[test]
    fn ntlm_session_is_send_sync_static() {
        fn check<T: Send + Sync + 'static>() {}
        check::<NtlmSession>();
    }

    #[test]
    fn ntlm_kat_seal_plaintext() {
        let mut client =
            NtlmSession::from_exported_key(&[0x55; 16], spec_flags(), NtlmRole::Client);
        let plaintext = crypto::utf16le("Plaintext");
        let (signature, ciphertext) = client.seal(&plaintext);
        assert_eq!(
            hex::encode(&ciphertext),
            "54e50165bf1936dc996020c1811b0f06fb5f"
        );
        assert_eq!(hex::encode(signature), "010000007fb38ec5c55d497600000000");
        assert_eq!(client.next_outgoing_sequence(), 1);

        let mut server =
            NtlmSession::from_exported_key(&[0x55; 16], spec_flags(), NtlmRole::Server);
        assert_eq!(server.unseal(&signature, &ciphertext).unwrap(), plaintext);
        assert_eq!(server.next_incoming_sequence(), 1);
    }

    #[test]
    fn ntlm_session_debug_has_no_keys() {
        let s = NtlmSession::from_exported_key(&[0x55; 16], spec_flags(), NtlmRole::Client);
        let text = format!("{s:?}");
        assert!(text.contains("Client"));
        assert!(!text.contains("85") && !text.contains("0x55"), "{text}");
    }

    #[test]
    fn ntlm_unseal_rejects_bad_signature_shapes() {
        let mut server = NtlmSession::from_exported_key(&[1; 16], spec_flags(), NtlmRole::Server);
        let mut data = vec![1, 2, 3];
        assert!(matches!(
            server.unseal_in_place(&[0; 15], &mut data),
            Err(NtlmError::Malformed { .. })
        ));
        let mut sig = [0u8; 16];
        sig[0] = 2;
        assert!(matches!(
            server.unseal_in_place(&sig, &mut data),
            Err(NtlmError::Malformed { .. })
        ));
        assert_eq!(data, [1, 2, 3], "data untouched before the checksum step");
    }
}
