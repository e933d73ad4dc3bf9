//! Wire formats this module writes or reads itself (MS-NLMP 2.2): the AUTHENTICATE message
//! (both ways), the CHALLENGE message (writing) and the flags of a NEGOTIATE message, plus AV
//! pair helpers. Everything reading bytes is bounds-checked and returns [`NtlmError`].

use ntlmclient::{TargetInfoEntry, TargetInfoType};

use super::{Flags, NtlmError};

/// `NTLMSSP\0`, the first 8 bytes of every NTLM message.
pub(crate) const SIGNATURE: &[u8; 8] = b"NTLMSSP\0";

/// Message type of NEGOTIATE.
pub(crate) const TYPE_NEGOTIATE: u32 = 1;
/// Message type of CHALLENGE.
pub(crate) const TYPE_CHALLENGE: u32 = 2;
/// Message type of AUTHENTICATE.
pub(crate) const TYPE_AUTHENTICATE: u32 = 3;

/// Byte offset of the MIC in an AUTHENTICATE message that carries version and MIC.
pub(crate) const MIC_OFFSET: usize = 72;
/// Size of the fixed part of our AUTHENTICATE message (fields, flags, version, MIC).
pub(crate) const AUTHENTICATE_HEADER_LEN: usize = 88;
/// Size of the fixed part of our CHALLENGE message (fields, flags, challenge, reserved, version).
const CHALLENGE_HEADER_LEN: usize = 56;

/// `MsvAvFlags` bit: the AUTHENTICATE message carries a MIC.
pub(crate) const AV_FLAG_MIC_PRESENT: u32 = 0x0000_0002;

/// The VERSION structure we send: Windows 10.0 build 20348 (Server 2022), NTLM revision 15.
pub(crate) const OUR_VERSION: [u8; 8] = [10, 0, 0x4c, 0x4f, 0, 0, 0, 0x0f];

fn malformed(what: &'static str, detail: impl Into<String>) -> NtlmError {
    NtlmError::Malformed {
        what,
        detail: detail.into(),
    }
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    let b = bytes.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes([b[0], b[1]]))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Checks the `NTLMSSP\0` signature and the message type.
pub(crate) fn check_header(msg: &[u8], what: &'static str, expected: u32) -> Result<(), NtlmError> {
    if msg.len() < 12 {
        return Err(malformed(what, format!("{} bytes, too short", msg.len())));
    }
    if &msg[..8] != SIGNATURE {
        return Err(malformed(what, "missing NTLMSSP signature"));
    }
    let found = u32_at(msg, 8).unwrap_or_default();
    if found != expected {
        return Err(NtlmError::UnexpectedMessageType { expected, found });
    }
    Ok(())
}

/// Reads the flags of a NEGOTIATE message (the acceptor needs nothing else from it).
pub(crate) fn negotiate_flags(msg: &[u8]) -> Result<Flags, NtlmError> {
    check_header(msg, "negotiate message", TYPE_NEGOTIATE)?;
    let bits = u32_at(msg, 12).ok_or_else(|| malformed("negotiate message", "no flags"))?;
    Ok(Flags::from_bits_retain(bits))
}

/// Accumulates the payload of a message and writes its (length, capacity, offset) fields.
struct PayloadWriter {
    header: Vec<u8>,
    payload: Vec<u8>,
    header_len: usize,
}

impl PayloadWriter {
    fn new(header_len: usize, message_type: u32) -> Self {
        let mut header = Vec::with_capacity(header_len);
        header.extend_from_slice(SIGNATURE);
        header.extend_from_slice(&message_type.to_le_bytes());
        Self {
            header,
            payload: Vec::new(),
            header_len,
        }
    }

    /// Appends `data` to the payload and its field to the header.
    fn field(&mut self, what: &'static str, data: &[u8]) -> Result<(), NtlmError> {
        let len = u16::try_from(data.len()).map_err(|_| NtlmError::TooLarge { what })?;
        let offset = self
            .header_len
            .checked_add(self.payload.len())
            .and_then(|o| u32::try_from(o).ok())
            .ok_or(NtlmError::TooLarge { what })?;
        self.header.extend_from_slice(&len.to_le_bytes());
        self.header.extend_from_slice(&len.to_le_bytes());
        self.header.extend_from_slice(&offset.to_le_bytes());
        self.payload.extend_from_slice(data);
        Ok(())
    }

    fn raw(&mut self, data: &[u8]) {
        self.header.extend_from_slice(data);
    }

    fn finish(mut self) -> Vec<u8> {
        debug_assert_eq!(self.header.len(), self.header_len);
        self.header.append(&mut self.payload);
        self.header
    }
}

/// Contents of an AUTHENTICATE message.
#[derive(Clone, Default)]
pub(crate) struct Authenticate {
    /// LmChallengeResponse.
    pub lm_response: Vec<u8>,
    /// NtChallengeResponse (NTProofStr || blob for NTLMv2).
    pub nt_response: Vec<u8>,
    /// Domain name (UTF-16LE on the wire).
    pub domain: String,
    /// User name (UTF-16LE on the wire).
    pub username: String,
    /// Workstation name (UTF-16LE on the wire).
    pub workstation: String,
    /// EncryptedRandomSessionKey (empty without key exchange).
    pub encrypted_session_key: Vec<u8>,
    /// NegotiateFlags.
    pub flags: Flags,
    /// The MIC (zero when absent or not yet computed).
    pub mic: [u8; 16],
    /// Whether the message carries a MIC field (at [`MIC_OFFSET`]).
    pub has_mic_field: bool,
}

impl Authenticate {
    /// Serializes with version and MIC fields (payload from byte 88, Windows' order: domain,
    /// user, workstation, LM, NT, session key). The MIC is at [`MIC_OFFSET`].
    pub(crate) fn to_bytes(&self) -> Result<Vec<u8>, NtlmError> {
        let domain = super::crypto::utf16le(&self.domain);
        let username = super::crypto::utf16le(&self.username);
        let workstation = super::crypto::utf16le(&self.workstation);
        // Header fields are in the order LM, NT, domain, user, workstation, key; payload offsets
        // follow Windows' layout, so compute them first.
        let mut offsets = [0usize; 6];
        let mut at = AUTHENTICATE_HEADER_LEN;
        let layout: [(usize, &[u8]); 6] = [
            (2, &domain),
            (3, &username),
            (4, &workstation),
            (0, &self.lm_response),
            (1, &self.nt_response),
            (5, &self.encrypted_session_key),
        ];
        for (slot, data) in layout {
            offsets[slot] = at;
            at = at.checked_add(data.len()).ok_or(NtlmError::TooLarge {
                what: "authenticate message",
            })?;
        }
        let fields: [(&'static str, &[u8]); 6] = [
            ("LM response", &self.lm_response),
            ("NT response", &self.nt_response),
            ("domain name", &domain),
            ("user name", &username),
            ("workstation name", &workstation),
            ("encrypted session key", &self.encrypted_session_key),
        ];
        let mut out = Vec::with_capacity(at);
        out.extend_from_slice(SIGNATURE);
        out.extend_from_slice(&TYPE_AUTHENTICATE.to_le_bytes());
        for ((what, data), offset) in fields.iter().zip(offsets) {
            let len = u16::try_from(data.len()).map_err(|_| NtlmError::TooLarge { what })?;
            let offset = u32::try_from(offset).map_err(|_| NtlmError::TooLarge { what })?;
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
        }
        out.extend_from_slice(&(self.flags | Flags::NEGOTIATE_VERSION).bits().to_le_bytes());
        out.extend_from_slice(&OUR_VERSION);
        out.extend_from_slice(&self.mic);
        for (_, data) in layout {
            out.extend_from_slice(data);
        }
        Ok(out)
    }

    /// Parses an AUTHENTICATE message. Strings must be UTF-16LE (NEGOTIATE_UNICODE).
    ///
    /// The MIC field is taken to be present when the first payload byte is at offset 88 or
    /// later (the layout of Windows and pyspnego).
    pub(crate) fn parse(msg: &[u8]) -> Result<Self, NtlmError> {
        const WHAT: &str = "authenticate message";
        check_header(msg, WHAT, TYPE_AUTHENTICATE)?;
        if msg.len() < 64 {
            return Err(malformed(WHAT, format!("{} bytes, too short", msg.len())));
        }
        let flags = Flags::from_bits_retain(u32_at(msg, 60).unwrap_or_default());
        let mut first_payload = usize::MAX;
        let mut field = |index: usize, what: &'static str| -> Result<&[u8], NtlmError> {
            let at = 12 + 8 * index;
            let (Some(len), Some(offset)) = (u16_at(msg, at), u32_at(msg, at + 4)) else {
                return Err(malformed(what, "field header out of bounds"));
            };
            let len = usize::from(len);
            let offset =
                usize::try_from(offset).map_err(|_| malformed(what, "offset too large"))?;
            if len == 0 {
                return Ok(&[]);
            }
            let data = offset
                .checked_add(len)
                .and_then(|end| msg.get(offset..end))
                .ok_or_else(|| {
                    malformed(
                        what,
                        format!("{len} bytes at offset {offset} exceed the message"),
                    )
                })?;
            first_payload = first_payload.min(offset);
            Ok(data)
        };
        let lm_response = field(0, "LM response")?.to_vec();
        let nt_response = field(1, "NT response")?.to_vec();
        let domain_raw = field(2, "domain name")?;
        let user_raw = field(3, "user name")?;
        let workstation_raw = field(4, "workstation name")?;
        let encrypted_session_key = field(5, "encrypted session key")?.to_vec();
        let strings_present =
            !domain_raw.is_empty() || !user_raw.is_empty() || !workstation_raw.is_empty();
        if strings_present && !flags.contains(Flags::NEGOTIATE_UNICODE) {
            return Err(NtlmError::Unsupported {
                what: "unicode strings",
            });
        }
        let domain = utf16le_to_string(domain_raw, "domain name")?;
        let username = utf16le_to_string(user_raw, "user name")?;
        let workstation = utf16le_to_string(workstation_raw, "workstation name")?;
        let has_mic_field =
            first_payload >= AUTHENTICATE_HEADER_LEN && msg.len() >= AUTHENTICATE_HEADER_LEN;
        let mut mic = [0u8; 16];
        if has_mic_field {
            mic.copy_from_slice(&msg[MIC_OFFSET..AUTHENTICATE_HEADER_LEN]);
        }
        Ok(Self {
            lm_response,
            nt_response,
            domain,
            username,
            workstation,
            encrypted_session_key,
            flags,
            mic,
            has_mic_field,
        })
    }
}

/// Decodes UTF-16LE bytes.
pub(crate) fn utf16le_to_string(bytes: &[u8], what: &'static str) -> Result<String, NtlmError> {
    if !bytes.len().is_multiple_of(2) {
        return Err(malformed(what, "odd length for UTF-16"));
    }
    let units = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]));
    char::decode_utf16(units)
        .collect::<Result<String, _>>()
        .map_err(|_| malformed(what, "invalid UTF-16"))
}

/// Writes a CHALLENGE message (header with version, then target name and target info).
pub(crate) fn challenge_to_bytes(
    flags: Flags,
    server_challenge: &[u8; 8],
    target_name: &str,
    target_info: &[TargetInfoEntry],
) -> Result<Vec<u8>, NtlmError> {
    let mut w = PayloadWriter::new(CHALLENGE_HEADER_LEN, TYPE_CHALLENGE);
    w.field("target name", &super::crypto::utf16le(target_name))?;
    w.raw(&flags.bits().to_le_bytes());
    w.raw(server_challenge);
    w.raw(&[0; 8]);
    w.field("target info", &av_pairs_to_bytes(target_info)?)?;
    w.raw(&OUR_VERSION);
    Ok(w.finish())
}

/// Serializes AV pairs, appending `MsvAvEOL` unless the list already ends with it.
pub(crate) fn av_pairs_to_bytes(entries: &[TargetInfoEntry]) -> Result<Vec<u8>, NtlmError> {
    let mut out = Vec::new();
    for entry in entries {
        if entry.data.len() > usize::from(u16::MAX) {
            return Err(NtlmError::TooLarge { what: "AV pair" });
        }
        out.extend_from_slice(&entry.to_bytes());
    }
    if entries.last().map(|e| e.entry_type) != Some(TargetInfoType::Terminator) {
        out.extend_from_slice(&[0, 0, 0, 0]);
    }
    Ok(out)
}

/// Iterates over raw AV pairs `(id, value)` up to (excluding) `MsvAvEOL`; stops quietly at the
/// end of the bytes and reports a pair that runs past it as an error.
pub(crate) fn av_pairs(mut bytes: &[u8]) -> impl Iterator<Item = Result<(u16, &[u8]), NtlmError>> {
    std::iter::from_fn(move || {
        if bytes.is_empty() {
            return None;
        }
        let (Some(id), Some(len)) = (u16_at(bytes, 0), u16_at(bytes, 2)) else {
            bytes = &[];
            return Some(Err(malformed("AV pair", "truncated header")));
        };
        if id == 0 {
            bytes = &[];
            return None;
        }
        let end = 4 + usize::from(len);
        let Some(value) = bytes.get(4..end) else {
            bytes = &[];
            return Some(Err(malformed("AV pair", "value runs past the end")));
        };
        bytes = &bytes[end..];
        Some(Ok((id, value)))
    })
}

/// Reads a u32 AV value (`MsvAvFlags`).
pub(crate) fn av_u32(value: &[u8], what: &'static str) -> Result<u32, NtlmError> {
    let b: [u8; 4] = value
        .try_into()
        .map_err(|_| malformed(what, format!("{} bytes, expected 4", value.len())))?;
    Ok(u32::from_le_bytes(b))
}

/// Reads a u64 AV value (`MsvAvTimestamp`).
pub(crate) fn av_u64(value: &[u8], what: &'static str) -> Result<u64, NtlmError> {
    let b: [u8; 8] = value
        .try_into()
        .map_err(|_| malformed(what, format!("{} bytes, expected 8", value.len())))?;
    Ok(u64::from_le_bytes(b))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn ntlm_authenticate_roundtrip_layout() {
        let msg = Authenticate {
            lm_response: vec![0; 24],
            nt_response: vec![9; 60],
            domain: "Dom".into(),
            username: "Üser".into(),
            workstation: "WS".into(),
            encrypted_session_key: vec![5; 16],
            flags: Flags::NEGOTIATE_UNICODE | Flags::NEGOTIATE_KEY_EXCHANGE,
            mic: [7; 16],
            has_mic_field: true,
        };
        let bytes = msg.to_bytes().unwrap();
        assert_eq!(&bytes[..8], SIGNATURE);
        assert_eq!(&bytes[64..72], &OUR_VERSION);
        assert_eq!(&bytes[72..88], &[7; 16]);
        // Domain comes first in the payload, right after the header.
        assert_eq!(u32_at(&bytes, 28 + 4), Some(88));
        let parsed = Authenticate::parse(&bytes).unwrap();
        assert_eq!(parsed.username, "Üser");
        assert_eq!(parsed.domain, "Dom");
        assert_eq!(parsed.workstation, "WS");
        assert_eq!(parsed.nt_response, vec![9; 60]);
        assert_eq!(parsed.encrypted_session_key, vec![5; 16]);
        assert!(parsed.has_mic_field);
        assert_eq!(parsed.mic, [7; 16]);
        assert!(parsed.flags.contains(Flags::NEGOTIATE_VERSION));
    }

    #[test]
    fn ntlm_challenge_is_parsed_by_ntlmclient() {
        let info = vec![
            TargetInfoEntry::from_string(TargetInfoType::NtDomain, "DOM"),
            TargetInfoEntry::from_string(TargetInfoType::NtServer, "SRV"),
            TargetInfoEntry {
                entry_type: TargetInfoType::Timestamp,
                data: 42u64.to_le_bytes().to_vec(),
            },
        ];
        let flags =
            Flags::NEGOTIATE_UNICODE | Flags::NEGOTIATE_VERSION | Flags::NEGOTIATE_TARGET_INFO;
        let bytes = challenge_to_bytes(flags, &[1; 8], "SRV", &info).unwrap();
        let Ok(ntlmclient::Message::Challenge(c)) = ntlmclient::Message::try_from(bytes.as_slice())
        else {
            panic!("not parsed as a challenge");
        };
        assert_eq!(c.target_name, "SRV");
        assert_eq!(c.challenge, [1; 8]);
        assert_eq!(c.flags, flags);
        assert_eq!(c.target_information.len(), 4);
        assert_eq!(
            c.target_information[3].entry_type,
            TargetInfoType::Terminator
        );
    }

    #[test]
    fn ntlm_av_pairs_walk_is_bounded() {
        let pairs: Vec<_> = av_pairs(&[6, 0, 4, 0, 2, 0, 0, 0, 0, 0, 0, 0, 9, 9]).collect();
        assert_eq!(pairs, vec![Ok((6, &[2u8, 0, 0, 0][..]))]);
        let pairs: Vec<_> = av_pairs(&[6, 0, 9, 0, 2]).collect();
        assert!(matches!(pairs.as_slice(), [Err(_)]));
        let pairs: Vec<_> = av_pairs(&[6]).collect();
        assert!(matches!(pairs.as_slice(), [Err(_)]));
    }
}
