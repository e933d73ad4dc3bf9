//! The server side of the handshake.

use std::time::SystemTime;

use hmac::Mac;
use ntlmclient::{TargetInfoEntry, TargetInfoType};
use zeroize::Zeroizing;

use super::crypto;
use super::messages::{self, AV_FLAG_MIC_PRESENT, Authenticate, MIC_OFFSET};
use super::session::{NtlmRole, NtlmSession};
use super::{Flags, NtlmError};
use crate::Secret;

/// Flags the acceptor can grant (intersected with what the client asks for): the same set
/// the initiator asks for.
const SUPPORTED_FLAGS: Flags = super::initiator::REQUESTED_FLAGS;

/// `MsvAvChannelBindings`: the MD5 of the TLS channel's bindings.
const AV_ID_CHANNEL_BINDINGS: u16 = 0x000A;

/// Size of the fixed part of the NTLMv2 client blob before its AV pairs.
const BLOB_HEADER_LEN: usize = 28;

/// Random and time inputs of the acceptor, passed in so the core reads no clock or RNG.
#[derive(Debug, Clone)]
pub struct AcceptorInputs {
    /// The 8-byte server challenge sent in CHALLENGE.
    pub server_challenge: [u8; 8],
    /// Current time as a FILETIME (100 ns intervals since 1601-01-01 UTC), sent as
    /// `MsvAvTimestamp`.
    pub timestamp: u64,
}

impl AcceptorInputs {
    /// Draws the server challenge from `rng` and converts `now` to a FILETIME.
    pub fn random<R: rand::RngCore + rand::CryptoRng>(rng: &mut R, now: SystemTime) -> Self {
        let mut server_challenge = [0u8; 8];
        rng.fill_bytes(&mut server_challenge);
        Self {
            server_challenge,
            timestamp: crypto::filetime(now),
        }
    }
}

/// The names the acceptor announces in CHALLENGE's target info.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptorIdentity {
    /// NetBIOS domain name (`MsvAvNbDomainName`).
    pub netbios_domain: String,
    /// NetBIOS computer name (`MsvAvNbComputerName`; also the CHALLENGE target name).
    pub netbios_computer: String,
    /// DNS domain name (`MsvAvDnsDomainName`).
    pub dns_domain: String,
    /// DNS computer name (`MsvAvDnsComputerName`).
    pub dns_computer: String,
}

/// The user the acceptor authenticated, as the client spelled it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedUser {
    /// Domain from AUTHENTICATE (may be empty).
    pub domain: String,
    /// User name from AUTHENTICATE.
    pub username: String,
}

/// NTLMv2 acceptor: NEGOTIATE -> CHALLENGE, then AUTHENTICATE -> user + [`NtlmSession`].
///
/// Only NTLMv2 with extended session security and 128-bit keys is accepted; NTLMv1 and anonymous
/// logons are refused.
#[derive(Debug)]
pub struct NtlmAcceptor {
    identity: AcceptorIdentity,
    inputs: AcceptorInputs,
    negotiate: Option<Vec<u8>>,
    challenge: Option<(Vec<u8>, Flags)>,
    channel_bindings: Option<[u8; 16]>,
    require_channel_bindings: bool,
}

impl NtlmAcceptor {
    /// Creates an acceptor for one handshake.
    pub fn new(identity: AcceptorIdentity, inputs: AcceptorInputs) -> Self {
        Self {
            identity,
            inputs,
            negotiate: None,
            challenge: None,
            channel_bindings: None,
            require_channel_bindings: false,
        }
    }

    /// Checks the client's `MsvAvChannelBindings` against `expected` (the MD5 of this TLS
    /// channel's bindings; `None` over plain HTTP, where nothing is checked).
    ///
    /// A client that sends bindings must send these ones: a mismatch is
    /// [`NtlmError::ChannelBindingsMismatch`] (Windows' `CbtHardeningLevel=Relaxed`). With
    /// `required`, a client that sends none (absent or all zero) is refused too with
    /// [`NtlmError::ChannelBindingsMissing`] (`CbtHardeningLevel=Strict`).
    #[must_use]
    pub fn with_channel_bindings(mut self, expected: Option<[u8; 16]>, required: bool) -> Self {
        self.channel_bindings = expected;
        self.require_channel_bindings = required;
        self
    }

    /// Parses NEGOTIATE and answers with CHALLENGE.
    ///
    /// The flags are the client's intersected with what we support, plus TARGET_INFO, NTLM,
    /// ALWAYS_SIGN and VERSION (and TARGET_TYPE_SERVER when the target was requested). Key
    /// exchange is granted when requested. Unicode, extended session security and 128-bit keys
    /// are required. The target info carries NbDomain, NbComputer, DnsDomain, DnsComputer and
    /// Timestamp.
    pub fn challenge_message(&mut self, negotiate: &[u8]) -> Result<Vec<u8>, NtlmError> {
        let requested = messages::negotiate_flags(negotiate)?;
        for (flag, what) in [
            (Flags::NEGOTIATE_UNICODE, "unicode"),
            (Flags::NEGOTIATE_NTLM2_KEY, "extended session security"),
            (Flags::NEGOTIATE_128BIT, "128-bit keys"),
        ] {
            if !requested.contains(flag) {
                return Err(NtlmError::Unsupported { what });
            }
        }
        let mut flags = (requested & SUPPORTED_FLAGS)
            | Flags::NEGOTIATE_TARGET_INFO
            | Flags::NEGOTIATE_NTLM
            | Flags::NEGOTIATE_ALWAYS_SIGN
            | Flags::NEGOTIATE_VERSION;
        if requested.contains(Flags::REQUEST_TARGET) {
            flags |= Flags::TARGET_TYPE_SERVER;
        }
        let id = &self.identity;
        let target_info = [
            TargetInfoEntry::from_string(TargetInfoType::NtDomain, &id.netbios_domain),
            TargetInfoEntry::from_string(TargetInfoType::NtServer, &id.netbios_computer),
            TargetInfoEntry::from_string(TargetInfoType::DnsDomain, &id.dns_domain),
            TargetInfoEntry::from_string(TargetInfoType::DnsServer, &id.dns_computer),
            TargetInfoEntry {
                entry_type: TargetInfoType::Timestamp,
                data: self.inputs.timestamp.to_le_bytes().to_vec(),
            },
        ];
        let challenge = messages::challenge_to_bytes(
            flags,
            &self.inputs.server_challenge,
            &id.netbios_computer,
            &target_info,
        )?;
        self.negotiate = Some(negotiate.to_vec());
        self.challenge = Some((challenge.clone(), flags));
        Ok(challenge)
    }

    /// Parses AUTHENTICATE and authenticates the user.
    ///
    /// `password_for(domain, username)` looks the password up (`None` gives
    /// [`NtlmError::UnknownUser`]). The NTProofStr is recomputed (NTLMv2 only; NTLMv1 and
    /// anonymous are refused with [`NtlmError::NtlmV1Refused`] / [`NtlmError::AnonymousRefused`];
    /// a mismatch gives [`NtlmError::Refused`]), the exported session key is recovered (RC4 of
    /// the encrypted random session key under the session base key when key exchange was
    /// negotiated), and the MIC is checked when the client's `MsvAvFlags` says it is present
    /// ([`NtlmError::BadMic`]). Returns the user and the server-role session.
    pub fn accept(
        self,
        authenticate: &[u8],
        password_for: &dyn Fn(&str, &str) -> Option<Secret>,
    ) -> Result<(AuthenticatedUser, NtlmSession), NtlmError> {
        let (Some(negotiate), Some((challenge, challenge_flags))) =
            (self.negotiate, self.challenge)
        else {
            return Err(NtlmError::OutOfOrder(
                "accept called before challenge_message",
            ));
        };
        let auth = Authenticate::parse(authenticate)?;
        if auth.username.is_empty() || auth.nt_response.is_empty() {
            return Err(NtlmError::AnonymousRefused);
        }
        if auth.nt_response.len() <= 24 {
            return Err(NtlmError::NtlmV1Refused);
        }
        // NTProofStr (16) + blob header (28) + MsvAvEOL (4) + trailing zeros (4).
        if auth.nt_response.len() < 16 + BLOB_HEADER_LEN + 8 {
            return Err(NtlmError::Malformed {
                what: "NTLMv2 response",
                detail: format!("{} bytes, too short", auth.nt_response.len()),
            });
        }
        let (proof, blob) = auth.nt_response.split_at(16);
        let mut proof_arr = [0u8; 16];
        proof_arr.copy_from_slice(proof);

        let flags = auth.flags & challenge_flags;
        for (flag, what) in [
            (Flags::NEGOTIATE_NTLM2_KEY, "extended session security"),
            (Flags::NEGOTIATE_128BIT, "128-bit keys"),
        ] {
            if !flags.contains(flag) {
                return Err(NtlmError::Unsupported { what });
            }
        }

        let mut mic_present = false;
        let mut client_bindings: Option<&[u8]> = None;
        for pair in messages::av_pairs(&blob[BLOB_HEADER_LEN..]) {
            let (id, value) = pair?;
            if id == 6 {
                mic_present = messages::av_u32(value, "MsvAvFlags")? & AV_FLAG_MIC_PRESENT != 0;
            } else if id == AV_ID_CHANNEL_BINDINGS {
                client_bindings = Some(value);
            }
        }

        let Some(password) = password_for(&auth.domain, &auth.username) else {
            return Err(NtlmError::UnknownUser {
                domain: auth.domain,
                username: auth.username,
            });
        };
        let v2_hash = Zeroizing::new(crypto::ntlmv2_hash(&auth.username, &auth.domain, &password));
        drop(password);
        let mut mac = crypto::hmac_md5(&v2_hash);
        mac.update(&self.inputs.server_challenge);
        mac.update(blob);
        mac.verify_slice(proof).map_err(|_| NtlmError::Refused)?;

        let session_base_key = Zeroizing::new(crypto::session_base_key(&v2_hash, &proof_arr));
        let key_exchange = flags.contains(Flags::NEGOTIATE_KEY_EXCHANGE)
            && flags.intersects(Flags::NEGOTIATE_SIGN | Flags::NEGOTIATE_SEAL);
        let exported_key = if key_exchange {
            let encrypted: &[u8; 16] =
                auth.encrypted_session_key
                    .as_slice()
                    .try_into()
                    .map_err(|_| NtlmError::Malformed {
                        what: "encrypted session key",
                        detail: format!("{} bytes, expected 16", auth.encrypted_session_key.len()),
                    })?;
            Zeroizing::new(crypto::rc4k(&session_base_key, encrypted))
        } else {
            session_base_key.clone()
        };

        if mic_present {
            if !auth.has_mic_field {
                return Err(NtlmError::BadMic);
            }
            let mut zeroed = authenticate.to_vec();
            zeroed[MIC_OFFSET..MIC_OFFSET + 16].fill(0);
            let mut mac = crypto::hmac_md5(&exported_key);
            mac.update(&negotiate);
            mac.update(&challenge);
            mac.update(&zeroed);
            mac.verify_slice(&auth.mic).map_err(|_| NtlmError::BadMic)?;
        }

        // The AV pairs are covered by the NTProofStr checked above, so the bindings are the
        // client's own.
        if let Some(expected) = self.channel_bindings {
            match client_bindings.filter(|b| b.iter().any(|&x| x != 0)) {
                Some(sent) if sent == expected.as_slice() => {}
                Some(_) => return Err(NtlmError::ChannelBindingsMismatch),
                None if self.require_channel_bindings => {
                    return Err(NtlmError::ChannelBindingsMissing);
                }
                None => {}
            }
        }

        let session = NtlmSession::from_exported_key(&exported_key, flags, NtlmRole::Server);
        Ok((
            AuthenticatedUser {
                domain: auth.domain,
                username: auth.username,
            },
            session,
        ))
    }
}
