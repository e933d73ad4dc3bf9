//! How an HTTPS endpoint's certificate is trusted: the system's roots plus a CA file, a
//! certificate pinned by being byte-identical to one in the CA file, or pinned by its SHA-256
//! fingerprint.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};

/// The SHA-256 fingerprint of a DER certificate, as `openssl x509 -noout -fingerprint -sha256`
/// prints it (`AB:CD:…`, 32 bytes). Parsing accepts upper or lower case hex, with or without
/// colons, and an optional `sha256:` prefix.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CertFingerprint(pub [u8; 32]);

impl CertFingerprint {
    /// The fingerprint of `der`.
    #[must_use]
    pub fn of(der: &[u8]) -> Self {
        Self(Sha256::digest(der).into())
    }
}

impl fmt::Display for CertFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{byte:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for CertFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertFingerprint({self})")
    }
}

/// A fingerprint that is not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "not a SHA-256 certificate fingerprint: expected 64 hex digits (colons allowed), as \
     `openssl x509 -noout -fingerprint -sha256` prints them"
)]
pub struct BadFingerprint;

impl FromStr for CertFingerprint {
    type Err = BadFingerprint;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let s = s
            .strip_prefix("sha256:")
            .or_else(|| s.strip_prefix("SHA256:"))
            .or_else(|| s.strip_prefix("sha256 Fingerprint="))
            .or_else(|| s.strip_prefix("SHA256 Fingerprint="))
            .unwrap_or(s);
        if s.len() > 64 + 31 {
            return Err(BadFingerprint);
        }
        let digits: String = s.chars().filter(|c| *c != ':').collect();
        let bytes = hex::decode(&digits).map_err(|_| BadFingerprint)?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| BadFingerprint)?;
        Ok(Self(bytes))
    }
}

/// The certificate verifier of an HTTPS endpoint.
///
/// In order:
/// 1. a certificate byte-identical to one in the CA file is trusted whatever its constraints
///    (a self-signed `CA:TRUE` certificate made by `openssl req -x509` is refused by path
///    validation as `CaUsedAsEndEntity`; having the very certificate is a stronger pin);
/// 2. when fingerprints are pinned, the certificate must match one of them, and nothing else is
///    accepted;
/// 3. otherwise the usual path validation against the system's roots plus the CA file, with the
///    host name checked.
///
/// Handshake signatures are always verified with the certificate's key.
#[derive(Debug)]
pub(crate) struct HostVerifier {
    provider: Arc<rustls::crypto::CryptoProvider>,
    webpki: Option<Arc<WebPkiServerVerifier>>,
    exact: Vec<CertificateDer<'static>>,
    pins: Vec<CertFingerprint>,
}

impl HostVerifier {
    /// A verifier over `roots` (may be empty when only pins are used), the CA file's
    /// certificates `exact` and the fingerprints `pins`.
    pub(crate) fn new(
        provider: Arc<rustls::crypto::CryptoProvider>,
        roots: rustls::RootCertStore,
        exact: Vec<CertificateDer<'static>>,
        pins: Vec<CertFingerprint>,
    ) -> Result<Self, String> {
        let webpki = if roots.is_empty() {
            None
        } else {
            Some(
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                    .build()
                    .map_err(|e| format!("TLS setup: {e}"))?,
            )
        };
        if webpki.is_none() && exact.is_empty() && pins.is_empty() {
            return Err(
                "TLS setup: no trusted root certificates (the system store is empty); give a \
                 CA file or pin the host's certificate"
                    .to_owned(),
            );
        }
        Ok(Self {
            provider,
            webpki,
            exact,
            pins,
        })
    }
}

impl ServerCertVerifier for HostVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self
            .exact
            .iter()
            .any(|trusted| trusted.as_ref() == end_entity.as_ref())
        {
            return Ok(ServerCertVerified::assertion());
        }
        if !self.pins.is_empty() {
            let seen = CertFingerprint::of(end_entity.as_ref());
            return if self.pins.contains(&seen) {
                Ok(ServerCertVerified::assertion())
            } else {
                Err(rustls::Error::General(format!(
                    "the host's certificate (SHA-256 {seen}) matches no pinned fingerprint"
                )))
            };
        }
        match &self.webpki {
            Some(webpki) => webpki.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ),
            None => Err(rustls::Error::General(
                "the host's certificate is not the one in the CA file, and no root \
                 certificates are trusted"
                    .to_owned(),
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_as_openssl_prints_them() {
        let colons = "AB:".repeat(31) + "CD";
        let fp: CertFingerprint = colons.parse().unwrap();
        assert_eq!(fp.0[0], 0xAB);
        assert_eq!(fp.0[31], 0xCD);
        assert_eq!(fp.to_string(), colons);
        let plain = "ab".repeat(31) + "cd";
        assert_eq!(plain.parse::<CertFingerprint>().unwrap(), fp);
        assert_eq!(
            format!("sha256 Fingerprint={colons}")
                .parse::<CertFingerprint>()
                .unwrap(),
            fp
        );
        assert_eq!(
            format!("sha256:{plain}")
                .parse::<CertFingerprint>()
                .unwrap(),
            fp
        );
        for bad in [
            "",
            "ab",
            &"ab".repeat(33),
            &"zz".repeat(32),
            &"a".repeat(500),
        ] {
            assert_eq!(bad.parse::<CertFingerprint>(), Err(BadFingerprint), "{bad}");
        }
    }
}
