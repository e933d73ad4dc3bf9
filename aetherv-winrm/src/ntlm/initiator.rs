//! The client side of the handshake.

use ntlmclient::{TargetInfoEntry, TargetInfoType};
use zeroize::Zeroizing;

use super::crypto;
use super::messages::{self, AV_FLAG_MIC_PRESENT, Authenticate, MIC_OFFSET};
use super::session::{NtlmRole, NtlmSession};
use super::{AuthenticateInputs, Flags, NtlmCredentials, NtlmError};

/// Flags the initiator asks for in NEGOTIATE (and the acceptor's supported set).
pub(super) const REQUESTED_FLAGS: Flags = Flags::NEGOTIATE_UNICODE
    .union(Flags::REQUEST_TARGET)
    .union(Flags::NEGOTIATE_SIGN)
    .union(Flags::NEGOTIATE_SEAL)
    .union(Flags::NEGOTIATE_NTLM)
    .union(Flags::NEGOTIATE_ALWAYS_SIGN)
    .union(Flags::NEGOTIATE_NTLM2_KEY)
    .union(Flags::NEGOTIATE_TARGET_INFO)
    .union(Flags::NEGOTIATE_VERSION)
    .union(Flags::NEGOTIATE_128BIT)
    .union(Flags::NEGOTIATE_KEY_EXCHANGE)
    .union(Flags::NEGOTIATE_56BIT);

/// Longest ntlmclient parse error text kept in [`NtlmError::Malformed`].
const MAX_DETAIL: usize = 160;

/// NTLMv2 initiator: NEGOTIATE, then CHALLENGE -> AUTHENTICATE + [`NtlmSession`].
///
/// `Debug` shows the user and domain; the password prints as `***`.
#[derive(Debug)]
pub struct NtlmInitiator {
    credentials: NtlmCredentials,
    workstation: Option<String>,
    negotiate: Option<Vec<u8>>,
    channel_bindings: Option<[u8; 16]>,
}

impl NtlmInitiator {
    /// Creates an initiator. `workstation` is sent in AUTHENTICATE (empty when `None`).
    pub fn new(credentials: NtlmCredentials, workstation: Option<String>) -> Self {
        Self {
            credentials,
            workstation,
            negotiate: None,
            channel_bindings: None,
        }
    }

    /// Sends `hash` (the MD5 of the TLS channel's `gss_channel_bindings_struct`, see
    /// [`crate::channel_bindings::ChannelBindings::ntlm_hash`]) as `MsvAvChannelBindings` in
    /// the NTLMv2 response.
    #[must_use]
    pub fn with_channel_bindings(mut self, hash: Option<[u8; 16]>) -> Self {
        self.channel_bindings = hash;
        self
    }

    /// The flags this initiator sends in NEGOTIATE: UNICODE, REQUEST_TARGET, SIGN, SEAL, NTLM,
    /// ALWAYS_SIGN, extended session security, TARGET_INFO, VERSION, 128, KEY_EXCH, 56.
    pub fn requested_flags() -> Flags {
        REQUESTED_FLAGS
    }

    /// Builds the NEGOTIATE message (with ntlmclient) and keeps a copy for the MIC.
    ///
    /// Domain and workstation are not supplied here (as Windows does); calling it again
    /// returns the same bytes.
    pub fn negotiate_message(&mut self) -> Vec<u8> {
        self.negotiate.get_or_insert_with(build_negotiate).clone()
    }

    /// Parses CHALLENGE and builds AUTHENTICATE; returns it with the client-role session.
    ///
    /// The NTLMv2 blob uses the server's target info with `MsvAvFlags` |= MIC-present, and the
    /// server's `MsvAvTimestamp` as its time when present (else `inputs.timestamp`). The LMv2
    /// response is 24 zero bytes because a MIC is always sent. With key exchange the exported
    /// session key is `inputs.exported_session_key`, sent RC4-encrypted under the session base
    /// key. The MIC is HMAC-MD5(exported session key, NEGOTIATE || CHALLENGE || AUTHENTICATE with
    /// a zero MIC).
    ///
    /// Requires the server to select Unicode, extended session security and 128-bit keys.
    pub fn authenticate_message(
        mut self,
        challenge: &[u8],
        inputs: &AuthenticateInputs,
    ) -> Result<(Vec<u8>, NtlmSession), NtlmError> {
        let negotiate = self.negotiate.take().unwrap_or_else(build_negotiate);
        messages::check_header(challenge, "challenge message", messages::TYPE_CHALLENGE)?;
        let parsed = ntlmclient::Message::try_from(challenge).map_err(|e| {
            let mut detail = e.to_string();
            if detail.len() > MAX_DETAIL {
                let mut cut = MAX_DETAIL;
                while !detail.is_char_boundary(cut) {
                    cut -= 1;
                }
                detail.truncate(cut);
                detail.push_str("...");
            }
            NtlmError::Malformed {
                what: "challenge message",
                detail,
            }
        })?;
        let challenge_msg = match parsed {
            ntlmclient::Message::Challenge(c) => c,
            other => {
                return Err(NtlmError::UnexpectedMessageType {
                    expected: messages::TYPE_CHALLENGE,
                    found: other.message_number(),
                });
            }
        };
        let server_flags = challenge_msg.flags;
        for (flag, what) in [
            (Flags::NEGOTIATE_UNICODE, "unicode"),
            (Flags::NEGOTIATE_NTLM2_KEY, "extended session security"),
            (Flags::NEGOTIATE_128BIT, "128-bit keys"),
        ] {
            if !server_flags.contains(flag) {
                return Err(NtlmError::Unsupported { what });
            }
        }

        let (av_pairs, server_time) =
            client_av_pairs(&challenge_msg.target_information, self.channel_bindings)?;
        let timestamp = server_time.unwrap_or(inputs.timestamp);

        let v2_hash = Zeroizing::new(crypto::ntlmv2_hash(
            &self.credentials.username,
            &self.credentials.domain,
            &self.credentials.password,
        ));
        let blob = crypto::ntlmv2_blob(timestamp, &inputs.client_challenge, &av_pairs);
        let proof = crypto::nt_proof_str(&v2_hash, &challenge_msg.challenge, &blob);
        let mut nt_response = Vec::with_capacity(16 + blob.len());
        nt_response.extend_from_slice(&proof);
        nt_response.extend_from_slice(&blob);
        let session_base_key = Zeroizing::new(crypto::session_base_key(&v2_hash, &proof));

        let mut flags = (server_flags & REQUESTED_FLAGS) | Flags::NEGOTIATE_VERSION;
        let key_exchange = flags.contains(Flags::NEGOTIATE_KEY_EXCHANGE)
            && flags.intersects(Flags::NEGOTIATE_SIGN | Flags::NEGOTIATE_SEAL);
        if !key_exchange {
            flags.remove(Flags::NEGOTIATE_KEY_EXCHANGE);
        }
        let (exported_key, encrypted_session_key) = if key_exchange {
            let exported = Zeroizing::new(inputs.exported_session_key);
            let encrypted = crypto::rc4k(&session_base_key, &exported).to_vec();
            (exported, encrypted)
        } else {
            (session_base_key.clone(), Vec::new())
        };

        let authenticate = Authenticate {
            lm_response: vec![0; 24],
            nt_response,
            domain: self.credentials.domain.clone(),
            username: self.credentials.username.clone(),
            workstation: self.workstation.take().unwrap_or_default(),
            encrypted_session_key,
            flags,
            mic: [0; 16],
            has_mic_field: true,
        };
        let mut bytes = authenticate.to_bytes()?;
        let mic = crypto::mic(&exported_key, &negotiate, challenge, &bytes);
        bytes[MIC_OFFSET..MIC_OFFSET + 16].copy_from_slice(&mic);

        let session = NtlmSession::from_exported_key(&exported_key, flags, NtlmRole::Client);
        Ok((bytes, session))
    }
}

/// Builds our NEGOTIATE message with ntlmclient.
fn build_negotiate() -> Vec<u8> {
    let message = ntlmclient::Message::Negotiate(ntlmclient::NegotiateMessage {
        flags: REQUESTED_FLAGS,
        supplied_domain: String::new(),
        supplied_workstation: String::new(),
        os_version: ntlmclient::OsVersion {
            major_version: messages::OUR_VERSION[0],
            minor_version: messages::OUR_VERSION[1],
            build_number: u16::from_le_bytes([messages::OUR_VERSION[2], messages::OUR_VERSION[3]]),
            reserved: [0; 3],
            ntlm_revision: messages::OUR_VERSION[7],
        },
    });
    // Serialization can only fail when neither UNICODE nor OEM is set or an OEM string cannot be
    // encoded; UNICODE is set and both strings are empty, so this is always `Ok`.
    message.to_bytes().unwrap_or_default()
}

/// The AV pairs of our NTLMv2 blob: the server's pairs up to `MsvAvEOL`, with `MsvAvFlags`
/// gaining the MIC-present bit (added when absent), `MsvAvChannelBindings` when the
/// connection has bindings (any the server sent is dropped), then `MsvAvEOL`. Also returns
/// the server's `MsvAvTimestamp`, if any.
fn client_av_pairs(
    server: &[TargetInfoEntry],
    channel_bindings: Option<[u8; 16]>,
) -> Result<(Vec<u8>, Option<u64>), NtlmError> {
    if server.is_empty() {
        return Err(NtlmError::MissingTargetInfo);
    }
    let mut entries: Vec<TargetInfoEntry> = Vec::with_capacity(server.len() + 2);
    let mut timestamp = None;
    let mut saw_flags = false;
    for entry in server {
        match entry.entry_type {
            TargetInfoType::Terminator => break,
            TargetInfoType::ChannelBindings => {}
            TargetInfoType::Flags => {
                let value = messages::av_u32(&entry.data, "MsvAvFlags")? | AV_FLAG_MIC_PRESENT;
                saw_flags = true;
                entries.push(TargetInfoEntry {
                    entry_type: TargetInfoType::Flags,
                    data: value.to_le_bytes().to_vec(),
                });
            }
            TargetInfoType::Timestamp => {
                timestamp = Some(messages::av_u64(&entry.data, "MsvAvTimestamp")?);
                entries.push(entry.clone());
            }
            _ => entries.push(entry.clone()),
        }
    }
    if !saw_flags {
        entries.push(TargetInfoEntry {
            entry_type: TargetInfoType::Flags,
            data: AV_FLAG_MIC_PRESENT.to_le_bytes().to_vec(),
        });
    }
    if let Some(hash) = channel_bindings {
        entries.push(TargetInfoEntry {
            entry_type: TargetInfoType::ChannelBindings,
            data: hash.to_vec(),
        });
    }
    Ok((messages::av_pairs_to_bytes(&entries)?, timestamp))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn ntlm_negotiate_message_bytes() {
        let creds = NtlmCredentials::parse("DOM\\u", crate::Secret::new("p"));
        let mut init = NtlmInitiator::new(creds, None);
        let neg = init.negotiate_message();
        assert_eq!(&neg[..12], b"NTLMSSP\0\x01\0\0\0");
        assert_eq!(
            u32::from_le_bytes(neg[12..16].try_into().unwrap()),
            REQUESTED_FLAGS.bits()
        );
        assert_eq!(REQUESTED_FLAGS.bits(), 0xe288_8235);
        assert_eq!(&neg[32..40], &messages::OUR_VERSION);
        assert_eq!(neg.len(), 40);
        assert_eq!(init.negotiate_message(), neg);
    }

    #[test]
    fn ntlm_client_av_pairs_add_mic_flag_and_keep_timestamp() {
        let server = vec![
            TargetInfoEntry::from_string(TargetInfoType::NtDomain, "D"),
            TargetInfoEntry {
                entry_type: TargetInfoType::Timestamp,
                data: 77u64.to_le_bytes().to_vec(),
            },
            TargetInfoEntry {
                entry_type: TargetInfoType::Terminator,
                data: vec![],
            },
        ];
        let (bytes, ts) = client_av_pairs(&server, None).unwrap();
        assert_eq!(ts, Some(77));
        let pairs: Vec<_> = messages::av_pairs(&bytes).map(Result::unwrap).collect();
        assert_eq!(pairs.len(), 3);
        assert_eq!(pairs[2], (6, &[2u8, 0, 0, 0][..]));
        assert!(bytes.ends_with(&[0, 0, 0, 0]));

        // An existing MsvAvFlags keeps its other bits.
        let server = vec![TargetInfoEntry {
            entry_type: TargetInfoType::Flags,
            data: 1u32.to_le_bytes().to_vec(),
        }];
        let (bytes, ts) = client_av_pairs(&server, None).unwrap();
        assert_eq!(ts, None);
        assert_eq!(bytes, [6, 0, 4, 0, 3, 0, 0, 0, 0, 0, 0, 0]);

        assert_eq!(
            client_av_pairs(&[], None),
            Err(NtlmError::MissingTargetInfo)
        );

        // Channel bindings come last before MsvAvEOL; a server's own entry is dropped.
        let server = vec![
            TargetInfoEntry {
                entry_type: TargetInfoType::ChannelBindings,
                data: vec![9; 16],
            },
            TargetInfoEntry::from_string(TargetInfoType::NtDomain, "D"),
        ];
        let (bytes, _) = client_av_pairs(&server, Some([7; 16])).unwrap();
        let pairs: Vec<_> = messages::av_pairs(&bytes).map(Result::unwrap).collect();
        let ids: Vec<u16> = pairs.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [2, 6, 10]);
        assert!(bytes.ends_with(&[0, 0, 0, 0]));
        assert_eq!(pairs[2].1, &[7u8; 16][..]);
    }
}
