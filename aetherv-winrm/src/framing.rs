//! The `multipart/encrypted` HTTP body that carries NTLM-sealed SOAP messages.
//!
//! Windows' default listener (HTTP, `AllowUnencrypted=false`) only accepts messages sealed with
//! the NTLM session keys, framed like this (`\r\n` line ends):
//!
//! ```text
//! --Encrypted Boundary
//! \tContent-Type: application/HTTP-SPNEGO-session-encrypted
//! \tOriginalContent: type=application/soap+xml;charset=UTF-8;Length=<plaintext bytes>
//! --Encrypted Boundary
//! \tContent-Type: application/octet-stream
//! <u32 LE 16><16-byte NTLM signature><sealed payload>--Encrypted Boundary--
//! ```
//!
//! This module only frames and unframes; sealing and signing live in [`crate::ntlm`].

/// The multipart boundary Windows uses.
pub const BOUNDARY: &str = "Encrypted Boundary";

/// The `protocol` of NTLM (SPNEGO) session encryption.
pub const PROTOCOL_SPNEGO: &str = "application/HTTP-SPNEGO-session-encrypted";

/// Content type of the plaintext, as announced in `OriginalContent`.
pub const ORIGINAL_CONTENT_TYPE: &str = "application/soap+xml;charset=UTF-8";

/// Length of the NTLM signature that precedes the sealed payload.
pub const SIGNATURE_LEN: usize = 16;

/// Why an encrypted body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FramingError {
    /// The body does not start with the `--Encrypted Boundary` line.
    #[error("body does not start with the \"--Encrypted Boundary\" line")]
    MissingBoundary,
    /// The first part's headers lack `OriginalContent`.
    #[error("part headers lack OriginalContent")]
    MissingOriginalContent,
    /// `OriginalContent` has no usable `Length`.
    #[error("invalid OriginalContent Length: {0:?}")]
    InvalidLength(String),
    /// The second part is not `application/octet-stream`.
    #[error("second part is not application/octet-stream")]
    MissingOctetStream,
    /// The body ends before the signature (or inside the part headers).
    #[error("body truncated: {0}")]
    Truncated(&'static str),
    /// The signature length field is not 16.
    #[error("signature length field is {0}, expected 16")]
    SignatureLength(u32),
    /// The sealed payload is not as long as `OriginalContent` says.
    #[error("sealed payload is {sealed} bytes but OriginalContent Length is {original}")]
    LengthMismatch {
        /// `Length` from `OriginalContent`.
        original: usize,
        /// Bytes actually found between the signature and the closing boundary.
        sealed: usize,
    },
    /// The closing `--Encrypted Boundary--` is missing.
    #[error("closing \"--Encrypted Boundary--\" is missing")]
    MissingClosingBoundary,
    /// The body has more than one encrypted part (not sent by NTLM peers).
    #[error("more than one encrypted part")]
    MultipleParts,
}

/// The `Content-Type` header value of an encrypted request.
pub fn content_type() -> String {
    format!("multipart/encrypted;protocol=\"{PROTOCOL_SPNEGO}\";boundary=\"{BOUNDARY}\"")
}

/// Whether a `Content-Type` header value announces an NTLM/SPNEGO-encrypted body
/// (`multipart/encrypted` with `protocol` application/HTTP-SPNEGO-session-encrypted).
/// Case-insensitive, tolerant of spacing and quoting.
pub fn is_encrypted(content_type: &str) -> bool {
    let mut parts = content_type.split(';');
    let media = parts.next().unwrap_or_default().trim();
    if !media.eq_ignore_ascii_case("multipart/encrypted") {
        return false;
    }
    parts.any(|param| {
        let Some((name, value)) = param.split_once('=') else {
            return false;
        };
        name.trim().eq_ignore_ascii_case("protocol")
            && value
                .trim()
                .trim_matches('"')
                .trim()
                .eq_ignore_ascii_case(PROTOCOL_SPNEGO)
    })
}

/// Builds an encrypted body from the NTLM signature and the sealed payload.
///
/// `original_length` is the plaintext length (equal to `sealed.len()` for NTLM's RC4).
pub fn encode(signature: &[u8; SIGNATURE_LEN], sealed: &[u8], original_length: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(sealed.len() + 256);
    out.extend_from_slice(b"--");
    out.extend_from_slice(BOUNDARY.as_bytes());
    out.extend_from_slice(b"\r\n\tContent-Type: ");
    out.extend_from_slice(PROTOCOL_SPNEGO.as_bytes());
    out.extend_from_slice(b"\r\n\tOriginalContent: type=");
    out.extend_from_slice(ORIGINAL_CONTENT_TYPE.as_bytes());
    out.extend_from_slice(b";Length=");
    out.extend_from_slice(original_length.to_string().as_bytes());
    out.extend_from_slice(b"\r\n--");
    out.extend_from_slice(BOUNDARY.as_bytes());
    out.extend_from_slice(b"\r\n\tContent-Type: application/octet-stream\r\n");
    out.extend_from_slice(&(SIGNATURE_LEN as u32).to_le_bytes());
    out.extend_from_slice(signature);
    out.extend_from_slice(sealed);
    out.extend_from_slice(b"--");
    out.extend_from_slice(BOUNDARY.as_bytes());
    out.extend_from_slice(b"--\r\n");
    out
}

/// A decoded encrypted body; borrows from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedBody<'a> {
    /// Plaintext length announced in `OriginalContent`.
    pub original_length: usize,
    /// Plaintext content type announced in `OriginalContent` (without `Length`), e.g.
    /// `application/soap+xml;charset=UTF-8`.
    pub original_content_type: String,
    /// The 16-byte NTLM signature.
    pub signature: &'a [u8],
    /// The sealed payload (`original_length` bytes).
    pub sealed: &'a [u8],
}

/// Decodes an encrypted body.
///
/// Checks that the signature length field is 16 and that the sealed payload is exactly
/// `OriginalContent` `Length` bytes. Accepts `\r\n` or `\n` line ends, spaces or tabs around
/// header lines, header names in any case, and whitespace before the first boundary and after
/// the closing one.
pub fn decode(body: &[u8]) -> Result<EncryptedBody<'_>, FramingError> {
    let boundary_line = format!("--{BOUNDARY}");
    let boundary_line = boundary_line.as_bytes();
    let (original_content_type, original_length, rest) = parts(body)?;

    let (length_field, rest) = rest
        .split_first_chunk::<4>()
        .ok_or(FramingError::Truncated("before the signature length"))?;
    let length_field = u32::from_le_bytes(*length_field);
    if length_field as usize != SIGNATURE_LEN {
        return Err(FramingError::SignatureLength(length_field));
    }
    if rest.len() < SIGNATURE_LEN {
        return Err(FramingError::Truncated("inside the signature"));
    }
    let (signature, rest) = rest.split_at(SIGNATURE_LEN);

    let closing = format!("--{BOUNDARY}--");
    let closing = closing.as_bytes();
    let mismatch = |rest: &[u8]| match rfind(rest, closing) {
        Some(at) => FramingError::LengthMismatch {
            original: original_length,
            sealed: at,
        },
        None => FramingError::MissingClosingBoundary,
    };
    if rest.len() < original_length {
        return Err(mismatch(rest));
    }
    let (sealed, tail) = rest.split_at(original_length);
    let tail = trim_start(tail);
    if let Some(after) = tail.strip_prefix(closing) {
        if !trim(after).is_empty() {
            return Err(FramingError::MultipleParts);
        }
    } else if tail.starts_with(boundary_line) {
        return Err(FramingError::MultipleParts);
    } else {
        return Err(mismatch(rest));
    }
    Ok(EncryptedBody {
        original_length,
        original_content_type,
        signature,
        sealed,
    })
}

/// The `protocol` of Kerberos session encryption (MS-WSMV 2.2.9.1.2).
pub const PROTOCOL_KERBEROS: &str = "application/HTTP-Kerberos-session-encrypted";

/// Longest GSS wrap header accepted in a Kerberos-encrypted body (an AES header is 60 bytes).
pub const MAX_GSS_HEADER_LEN: usize = 1024;

/// The `Content-Type` header value of an encrypted request with the given `protocol`
/// ([`PROTOCOL_SPNEGO`] or [`PROTOCOL_KERBEROS`]).
pub fn content_type_for(protocol: &str) -> String {
    format!("multipart/encrypted;protocol=\"{protocol}\";boundary=\"{BOUNDARY}\"")
}

/// The session-encryption protocol a `Content-Type` announces: [`PROTOCOL_SPNEGO`] or
/// [`PROTOCOL_KERBEROS`] for `multipart/encrypted` bodies, `None` otherwise.
pub fn encrypted_protocol(content_type: &str) -> Option<&'static str> {
    let mut parts = content_type.split(';');
    let media = parts.next().unwrap_or_default().trim();
    if !media.eq_ignore_ascii_case("multipart/encrypted") {
        return None;
    }
    parts.find_map(|param| {
        let (name, value) = param.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("protocol") {
            return None;
        }
        let value = value.trim().trim_matches('"').trim();
        [PROTOCOL_SPNEGO, PROTOCOL_KERBEROS]
            .into_iter()
            .find(|p| value.eq_ignore_ascii_case(p))
    })
}

/// Builds a GSS (Kerberos) encrypted body: `header` is the GSS wrap header, `sealed` the
/// encrypted data followed by any padding, `original_length` the plaintext length.
pub fn encode_gss(protocol: &str, header: &[u8], sealed: &[u8], original_length: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(sealed.len() + header.len() + 256);
    out.extend_from_slice(b"--");
    out.extend_from_slice(BOUNDARY.as_bytes());
    out.extend_from_slice(b"\r\n\tContent-Type: ");
    out.extend_from_slice(protocol.as_bytes());
    out.extend_from_slice(b"\r\n\tOriginalContent: type=");
    out.extend_from_slice(ORIGINAL_CONTENT_TYPE.as_bytes());
    out.extend_from_slice(b";Length=");
    out.extend_from_slice(original_length.to_string().as_bytes());
    out.extend_from_slice(b"\r\n--");
    out.extend_from_slice(BOUNDARY.as_bytes());
    out.extend_from_slice(b"\r\n\tContent-Type: application/octet-stream\r\n");
    out.extend_from_slice(
        &u32::try_from(header.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    out.extend_from_slice(header);
    out.extend_from_slice(sealed);
    out.extend_from_slice(b"--");
    out.extend_from_slice(BOUNDARY.as_bytes());
    out.extend_from_slice(b"--\r\n");
    out
}

/// Decodes a GSS (Kerberos) encrypted body. Unlike [`decode`], the header length is variable
/// (1 to [`MAX_GSS_HEADER_LEN`] bytes) and the sealed part runs to the closing boundary (it may
/// carry padding beyond `OriginalContent` `Length`; the caller checks the length after
/// unwrapping).
pub fn decode_gss(body: &[u8]) -> Result<EncryptedBody<'_>, FramingError> {
    let (original_content_type, original_length, rest) = parts(body)?;
    let (length_field, rest) = rest
        .split_first_chunk::<4>()
        .ok_or(FramingError::Truncated("before the signature length"))?;
    let length_field = u32::from_le_bytes(*length_field);
    let header_len = length_field as usize;
    if header_len == 0 || header_len > MAX_GSS_HEADER_LEN {
        return Err(FramingError::SignatureLength(length_field));
    }
    if rest.len() < header_len {
        return Err(FramingError::Truncated("inside the signature"));
    }
    let (signature, rest) = rest.split_at(header_len);
    let closing = format!("--{BOUNDARY}--");
    let at = rfind(rest, closing.as_bytes()).ok_or(FramingError::MissingClosingBoundary)?;
    if !trim(&rest[at + closing.len()..]).is_empty() {
        return Err(FramingError::MultipleParts);
    }
    let sealed = &rest[..at];
    if sealed.len() < original_length {
        return Err(FramingError::LengthMismatch {
            original: original_length,
            sealed: sealed.len(),
        });
    }
    Ok(EncryptedBody {
        original_length,
        original_content_type,
        signature,
        sealed,
    })
}

/// The first part's `OriginalContent` (type and length) and what follows the second part's
/// `Content-Type` line.
fn parts(body: &[u8]) -> Result<(String, usize, &[u8]), FramingError> {
    let boundary_line = format!("--{BOUNDARY}");
    let boundary_line = boundary_line.as_bytes();

    let mut rest = trim_start(body);
    rest = rest
        .strip_prefix(boundary_line)
        .ok_or(FramingError::MissingBoundary)?;
    rest = after_line_end(rest).ok_or(FramingError::Truncated("in the first boundary line"))?;

    // First part headers, up to the second boundary line.
    let mut original = None;
    loop {
        let (line, next) =
            split_line(rest).ok_or(FramingError::Truncated("in the part headers"))?;
        rest = next;
        let line = trim(line);
        if line.starts_with(boundary_line) {
            if line.len() != boundary_line.len() {
                return Err(FramingError::MissingOctetStream);
            }
            break;
        }
        if let Some(value) = header_value(line, b"originalcontent") {
            original = Some(parse_original_content(value)?);
        }
    }
    let (original_content_type, original_length) =
        original.ok_or(FramingError::MissingOriginalContent)?;

    // Second part: its Content-Type line, then the binary payload right after the line end.
    let (line, next) =
        split_line(rest).ok_or(FramingError::Truncated("in the second part's headers"))?;
    let is_octet_stream = header_value(trim(line), b"content-type")
        .is_some_and(|v| trim(v).eq_ignore_ascii_case(b"application/octet-stream"));
    if !is_octet_stream {
        return Err(FramingError::MissingOctetStream);
    }
    rest = next;
    Ok((original_content_type, original_length, rest))
}

/// Parses `type=application/soap+xml;charset=UTF-8;Length=123`.
fn parse_original_content(value: &[u8]) -> Result<(String, usize), FramingError> {
    let value = String::from_utf8_lossy(value);
    let mut content_type = Vec::new();
    let mut length = None;
    for param in value.split(';') {
        let param = param.trim();
        match param.split_once('=') {
            Some((name, v)) if name.trim().eq_ignore_ascii_case("length") => {
                let v = v.trim().trim_matches('"');
                length = Some(
                    v.parse::<usize>()
                        .map_err(|_| FramingError::InvalidLength(v.to_owned()))?,
                );
            }
            Some((name, v)) if name.trim().eq_ignore_ascii_case("type") => {
                content_type.insert(0, v.trim())
            }
            _ if !param.is_empty() => content_type.push(param),
            _ => {}
        }
    }
    let length = length.ok_or_else(|| FramingError::InvalidLength(String::new()))?;
    Ok((content_type.join(";"), length))
}

/// The value of `Name: value` when the name matches (case-insensitively).
fn header_value<'a>(line: &'a [u8], lower_name: &[u8]) -> Option<&'a [u8]> {
    let colon = line.iter().position(|&b| b == b':')?;
    trim(&line[..colon])
        .eq_ignore_ascii_case(lower_name)
        .then(|| trim(&line[colon + 1..]))
}

/// Splits at the first `\n` (the line excludes it; a trailing `\r` is left for `trim`).
fn split_line(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = data.iter().position(|&b| b == b'\n')?;
    Some((&data[..at], &data[at + 1..]))
}

/// Skips trailing blanks of the current line and its line end.
fn after_line_end(data: &[u8]) -> Option<&[u8]> {
    let (line, rest) = split_line(data)?;
    trim(line).is_empty().then_some(rest)
}

fn is_space(b: &u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn trim_start(data: &[u8]) -> &[u8] {
    let start = data.iter().position(|b| !is_space(b)).unwrap_or(data.len());
    &data[start..]
}

fn trim(data: &[u8]) -> &[u8] {
    let data = trim_start(data);
    let end = data.iter().rposition(|b| !is_space(b)).map_or(0, |i| i + 1);
    &data[..end]
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const SIG: [u8; 16] = [
        1, 0, 0, 0, 0x7f, 0xb3, 0x8e, 0xc5, 0xc5, 0x5d, 0x49, 0x76, 0, 0, 0, 0,
    ];

    #[test]
    fn encodes_the_exact_bytes() {
        let body = encode(&SIG, b"sealed", 6);
        let mut expected = b"--Encrypted Boundary\r\n\tContent-Type: application/HTTP-SPNEGO-session-encrypted\r\n\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length=6\r\n--Encrypted Boundary\r\n\tContent-Type: application/octet-stream\r\n".to_vec();
        expected.extend_from_slice(&[16, 0, 0, 0]);
        expected.extend_from_slice(&SIG);
        expected.extend_from_slice(b"sealed--Encrypted Boundary--\r\n");
        assert_eq!(body, expected);
    }

    #[test]
    fn decodes_what_it_encodes() {
        let body = encode(&SIG, b"sealed", 6);
        let decoded = decode(&body).unwrap();
        assert_eq!(decoded.signature, SIG);
        assert_eq!(decoded.sealed, b"sealed");
        assert_eq!(decoded.original_length, 6);
        assert_eq!(
            decoded.original_content_type,
            "application/soap+xml;charset=UTF-8"
        );
    }

    #[test]
    fn tolerates_bare_line_feeds_and_spacing() {
        let mut body = b"\r\n--Encrypted Boundary \n  content-type: application/HTTP-SPNEGO-session-encrypted\n originalcontent : type=application/soap+xml; charset=UTF-8; Length=3 \n--Encrypted Boundary\n\tCONTENT-TYPE:application/octet-stream\n".to_vec();
        body.extend_from_slice(&[16, 0, 0, 0]);
        body.extend_from_slice(&SIG);
        body.extend_from_slice(b"abc\r\n--Encrypted Boundary--\n \n");
        let decoded = decode(&body).unwrap();
        assert_eq!(decoded.sealed, b"abc");
        assert_eq!(
            decoded.original_content_type,
            "application/soap+xml;charset=UTF-8"
        );
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let good = encode(&SIG, b"sealed", 6);
        let replace = |from: &[u8], to: &[u8]| -> Vec<u8> {
            let at = good.windows(from.len()).position(|w| w == from).unwrap();
            [&good[..at], to, &good[at + from.len()..]].concat()
        };
        assert_eq!(decode(b"<s:Envelope/>"), Err(FramingError::MissingBoundary));
        assert_eq!(
            decode(&replace(b"OriginalContent", b"Original-Content")),
            Err(FramingError::MissingOriginalContent)
        );
        assert_eq!(
            decode(&replace(b"Length=6", b"Length=six")),
            Err(FramingError::InvalidLength("six".to_owned()))
        );
        assert_eq!(
            decode(&replace(b"Length=6", b"Length=9")),
            Err(FramingError::LengthMismatch {
                original: 9,
                sealed: 6
            })
        );
        assert_eq!(
            decode(&replace(b"Length=6", b"Length=2")),
            Err(FramingError::LengthMismatch {
                original: 2,
                sealed: 6
            })
        );
        assert_eq!(
            decode(&replace(&[16, 0, 0, 0], &[20, 0, 0, 0])),
            Err(FramingError::SignatureLength(20))
        );
        assert_eq!(
            decode(&replace(b"octet-stream", b"text/plain")),
            Err(FramingError::MissingOctetStream)
        );
        assert_eq!(
            decode(&good[..good.len() - 10]),
            Err(FramingError::MissingClosingBoundary)
        );
        let signature_at = good.windows(4).position(|w| w == [16, 0, 0, 0]).unwrap() + 4;
        assert_eq!(
            decode(&good[..signature_at + 5]),
            Err(FramingError::Truncated("inside the signature"))
        );
        assert_eq!(
            FramingError::LengthMismatch {
                original: 9,
                sealed: 6
            }
            .to_string(),
            "sealed payload is 6 bytes but OriginalContent Length is 9"
        );
    }

    #[test]
    fn recognises_the_content_type() {
        assert!(is_encrypted(&content_type()));
        assert!(is_encrypted(
            "Multipart/Encrypted; protocol=application/http-spnego-session-encrypted ; boundary=\"Encrypted Boundary\""
        ));
        assert!(!is_encrypted("application/soap+xml;charset=UTF-8"));
        assert!(!is_encrypted(
            "multipart/encrypted;protocol=\"application/HTTP-CredSSP-session-encrypted\""
        ));
        assert!(!is_encrypted("multipart/encrypted"));
    }
}
