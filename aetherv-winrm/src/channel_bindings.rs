//! TLS channel bindings (RFC 5929 `tls-server-end-point`), sans-IO.
//!
//! Over HTTPS, NTLM and Kerberos can bind the authentication to the TLS channel it runs in
//! ("Extended Protection for Authentication"): the client proves which server certificate it
//! saw, so a man in the middle that terminates TLS with another certificate, or relays the
//! handshake to another server, is refused. Windows' WinRM service requires it with
//! `CbtHardeningLevel=Strict`.
//!
//! - **The binding.** `tls-server-end-point` is `"tls-server-end-point:"` followed by a hash of
//!   the server's (leaf) certificate, DER encoded (RFC 5929 §4.1). The hash is the one of the
//!   certificate's signature algorithm, except that MD5 and SHA-1 become SHA-256. For
//!   algorithms without a single hash (Ed25519, Ed448) and for unknown ones (SHA-3
//!   signatures included), SHA-256 is used, as requests-ntlm does for a signature without a
//!   hash; RSASSA-PSS uses the hash named in its parameters.
//! - **The structure.** GSSAPI carries bindings as a `gss_channel_bindings_struct`: initiator
//!   address type and address, acceptor address type and address, and application data. For
//!   TLS both address types are 0 (`GSS_C_AF_UNSPEC`) with empty addresses, and the
//!   application data is the binding above. Flattened, each field is a 4-byte little-endian
//!   value (address type, then length) followed by the bytes: RFC 4121 §4.1.1.2 and MS-NLMP
//!   2.2.2.1.
//! - **NTLM** sends the MD5 of the flattened structure as the `MsvAvChannelBindings` AV pair
//!   (id 0x000A) of the NTLMv2 response ([`ChannelBindings::ntlm_hash`]).
//! - **Kerberos** hands the application data to `gss_init_sec_context` /
//!   `gss_accept_sec_context` (MIT krb5 puts the MD5 of the same structure in the
//!   authenticator checksum).

use md5::{Digest as _, Md5};
use sha2::{Sha224, Sha256, Sha384, Sha512};

/// The prefix of the `tls-server-end-point` application data.
pub const TLS_SERVER_END_POINT: &[u8] = b"tls-server-end-point:";

/// The channel bindings of one TLS connection.
#[derive(Clone, PartialEq, Eq)]
pub struct ChannelBindings {
    application_data: Vec<u8>,
}

impl std::fmt::Debug for ChannelBindings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelBindings")
            .field("ntlm_hash", &hex_string(&self.ntlm_hash()))
            .finish()
    }
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl ChannelBindings {
    /// The `tls-server-end-point` bindings of a server certificate (DER).
    pub fn tls_server_end_point(certificate_der: &[u8]) -> Self {
        let mut application_data = TLS_SERVER_END_POINT.to_vec();
        application_data.extend_from_slice(&certificate_hash(certificate_der));
        Self { application_data }
    }

    /// The application data (`tls-server-end-point:` and the certificate hash), what GSSAPI
    /// takes as the bindings of a TLS channel.
    pub fn application_data(&self) -> &[u8] {
        &self.application_data
    }

    /// The flattened `gss_channel_bindings_struct`: both address types 0 with empty addresses,
    /// then the application data, each with its little-endian 32-bit length.
    pub fn gss_struct(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(20 + self.application_data.len());
        // initiator_addrtype, initiator_address (empty), acceptor_addrtype, acceptor_address.
        out.extend_from_slice(&[0u8; 16]);
        let length = u32::try_from(self.application_data.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&length.to_le_bytes());
        out.extend_from_slice(&self.application_data);
        out
    }

    /// The value of NTLM's `MsvAvChannelBindings`: the MD5 of [`Self::gss_struct`].
    pub fn ntlm_hash(&self) -> [u8; 16] {
        Md5::digest(self.gss_struct()).into()
    }
}

/// The hash functions RFC 5929 can pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndPointHash {
    /// SHA-224.
    Sha224,
    /// SHA-256 (also for MD5, SHA-1, EdDSA and unknown signature algorithms).
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

/// The `tls-server-end-point` hash of a DER certificate.
pub fn certificate_hash(certificate_der: &[u8]) -> Vec<u8> {
    match end_point_hash(certificate_der) {
        EndPointHash::Sha224 => Sha224::digest(certificate_der).to_vec(),
        EndPointHash::Sha256 => Sha256::digest(certificate_der).to_vec(),
        EndPointHash::Sha384 => Sha384::digest(certificate_der).to_vec(),
        EndPointHash::Sha512 => Sha512::digest(certificate_der).to_vec(),
    }
}

/// Which hash RFC 5929 §4.1 picks for a DER certificate (SHA-256 when the certificate cannot
/// be read).
pub fn end_point_hash(certificate_der: &[u8]) -> EndPointHash {
    signature_algorithm(certificate_der)
        .and_then(|(oid, params)| hash_of_algorithm(oid, params))
        .unwrap_or(EndPointHash::Sha256)
}

// Object identifiers, DER content octets.
const OID_RSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];
const PKCS1: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
const ECDSA_SHA2: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03];
const NIST_HASH: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02];
const NIST_SIG: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x03];

/// The hash of a signature algorithm (`None`: use SHA-256).
fn hash_of_algorithm(oid: &[u8], params: &[u8]) -> Option<EndPointHash> {
    if oid == OID_RSA_PSS {
        return pss_hash(params);
    }
    if let Some(&[last]) = oid.strip_prefix(PKCS1) {
        return match last {
            // sha224, sha256, sha384, sha512 WithRSAEncryption.
            14 => Some(EndPointHash::Sha224),
            11 => Some(EndPointHash::Sha256),
            12 => Some(EndPointHash::Sha384),
            13 => Some(EndPointHash::Sha512),
            // md2, md5, sha1 WithRSAEncryption and anything else.
            _ => None,
        };
    }
    if let Some(&[last]) = oid.strip_prefix(ECDSA_SHA2) {
        return sha2_by_index(last);
    }
    if let Some(&[last]) = oid.strip_prefix(NIST_SIG) {
        // dsa-with-sha224 .. dsa-with-sha512 (1..4); the SHA-3 signatures (9..16) are not
        // supported and fall back to SHA-256.
        return sha2_by_index(last);
    }
    None
}

/// ecdsa-with-SHA224 (1), SHA256 (2), SHA384 (3), SHA512 (4); the same numbering for
/// dsa-with-sha224/256 under the NIST signature arc.
fn sha2_by_index(index: u8) -> Option<EndPointHash> {
    match index {
        1 => Some(EndPointHash::Sha224),
        2 => Some(EndPointHash::Sha256),
        3 => Some(EndPointHash::Sha384),
        4 => Some(EndPointHash::Sha512),
        _ => None,
    }
}

/// The hash of RSASSA-PSS parameters: `SEQUENCE { [0] AlgorithmIdentifier hashAlgorithm
/// DEFAULT sha1, … }` (SHA-1 and absent parameters give SHA-256).
fn pss_hash(params: &[u8]) -> Option<EndPointHash> {
    let (tag, body, _) = read_tlv(params)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, explicit, _) = read_tlv(body)?;
    if tag != 0xa0 {
        return None;
    }
    let (tag, algorithm, _) = read_tlv(explicit)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, oid, _) = read_tlv(algorithm)?;
    if tag != 0x06 {
        return None;
    }
    match oid.strip_prefix(NIST_HASH)? {
        // id-sha256 (1), id-sha384 (2), id-sha512 (3), id-sha224 (4).
        [1] => Some(EndPointHash::Sha256),
        [2] => Some(EndPointHash::Sha384),
        [3] => Some(EndPointHash::Sha512),
        [4] => Some(EndPointHash::Sha224),
        _ => None,
    }
}

/// The outer `signatureAlgorithm` of `Certificate ::= SEQUENCE { tbsCertificate,
/// signatureAlgorithm AlgorithmIdentifier, signatureValue }`: its OID and the rest of the
/// identifier (the parameters, possibly empty).
fn signature_algorithm(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let (tag, certificate, _) = read_tlv(der)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, _tbs, rest) = read_tlv(certificate)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, algorithm, _) = read_tlv(rest)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, oid, params) = read_tlv(algorithm)?;
    (tag == 0x06).then_some((oid, params))
}

/// One DER tag-length-value with a single-byte tag: `(tag, value, rest)`. Bounded: lengths
/// longer than four bytes or past the input are refused.
fn read_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let length = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 {
            return None;
        }
        let (bytes, after) = rest.split_at_checked(count)?;
        rest = after;
        bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
    };
    let (value, rest) = rest.split_at_checked(length)?;
    Some((tag, value, rest))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A certificate made by `openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj
    /// /CN=cbt.test -sha384` (signature sha384WithRSAEncryption).
    const SHA384_CERT_PEM: &str = include_str!("../tests/data/cbt-sha384.pem");

    fn der(pem: &str) -> Vec<u8> {
        use base64::Engine as _;
        let body: String = pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<Vec<_>>()
            .concat();
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap()
    }

    #[test]
    fn gss_struct_layout_and_ntlm_hash_known_answer() {
        // Known answer computed independently with pyspnego:
        //   GssChannelBindings(application_data=b"tls-server-end-point:" + bytes(range(32)))
        //   .pack(), and hashlib.md5 of it.
        let mut data = TLS_SERVER_END_POINT.to_vec();
        data.extend(0u8..32);
        let bindings = ChannelBindings {
            application_data: data.clone(),
        };
        let packed = bindings.gss_struct();
        assert_eq!(&packed[..16], &[0u8; 16]);
        assert_eq!(&packed[16..20], &53u32.to_le_bytes());
        assert_eq!(&packed[20..], &data[..]);
        assert_eq!(
            hex_string(&bindings.ntlm_hash()),
            include_str!("../tests/data/cbt-range32.md5").trim()
        );
    }

    #[test]
    fn certificate_hash_follows_the_signature_algorithm() {
        // The expected values come from `openssl x509 -outform der | openssl dgst -sha384`
        // and from pyspnego's get_tls_server_end_point_hash on the same file.
        let cert = der(SHA384_CERT_PEM);
        assert_eq!(end_point_hash(&cert), EndPointHash::Sha384);
        let bindings = ChannelBindings::tls_server_end_point(&cert);
        let hash = &bindings.application_data()[TLS_SERVER_END_POINT.len()..];
        assert_eq!(hash.len(), 48);
        assert_eq!(
            hex_string(hash),
            include_str!("../tests/data/cbt-sha384.hash").trim()
        );
        assert_eq!(
            hex_string(&bindings.ntlm_hash()),
            include_str!("../tests/data/cbt-sha384.md5").trim()
        );
    }

    #[test]
    fn md5_sha1_eddsa_and_garbage_use_sha256() {
        let alg = |oid: &[u8]| hash_of_algorithm(oid, &[]).unwrap_or(EndPointHash::Sha256);
        let pkcs1 = |n: u8| [PKCS1, &[n]].concat();
        assert_eq!(alg(&pkcs1(4)), EndPointHash::Sha256); // md5WithRSAEncryption
        assert_eq!(alg(&pkcs1(5)), EndPointHash::Sha256); // sha1WithRSAEncryption
        assert_eq!(alg(&pkcs1(13)), EndPointHash::Sha512);
        assert_eq!(alg(&[ECDSA_SHA2, &[2]].concat()), EndPointHash::Sha256);
        assert_eq!(alg(&[ECDSA_SHA2, &[3]].concat()), EndPointHash::Sha384);
        assert_eq!(alg(&[0x2b, 0x65, 0x70]), EndPointHash::Sha256); // Ed25519
        assert_eq!(end_point_hash(b""), EndPointHash::Sha256);
        assert_eq!(
            end_point_hash(&[0x30, 0x84, 0xff, 0xff]),
            EndPointHash::Sha256
        );
        assert_eq!(certificate_hash(b"not a certificate").len(), 32);
    }

    #[test]
    fn pss_parameters_name_the_hash() {
        // SEQUENCE { [0] { SEQUENCE { OID id-sha512, NULL } } }
        let params = [
            0x30, 0x11, 0xa0, 0x0f, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03,
            0x04, 0x02, 0x03, 0x05, 0x00,
        ];
        assert_eq!(
            hash_of_algorithm(OID_RSA_PSS, &params),
            Some(EndPointHash::Sha512)
        );
        // Absent parameters mean SHA-1, so SHA-256.
        assert_eq!(hash_of_algorithm(OID_RSA_PSS, &[0x30, 0x00]), None);
    }

    #[test]
    fn debug_shows_only_the_hash() {
        let bindings = ChannelBindings::tls_server_end_point(b"x");
        let shown = format!("{bindings:?}");
        assert!(
            shown.starts_with("ChannelBindings { ntlm_hash: \""),
            "{shown}"
        );
    }
}
