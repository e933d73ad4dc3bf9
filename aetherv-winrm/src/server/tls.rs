//! The HTTPS listener's certificate.

use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::ServerError;
use crate::channel_bindings::ChannelBindings;

/// Certificate chain and private key of an HTTPS listener, in PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// The certificate chain, leaf first (PEM `CERTIFICATE` blocks). Also what a client must
    /// trust, for a self-signed certificate.
    pub cert_pem: String,
    /// The private key (PEM, PKCS#8, PKCS#1 or SEC1). Never printed by `Debug`.
    pub key_pem: String,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("cert_pem", &format_args!("{} bytes", self.cert_pem.len()))
            .field("key_pem", &"***")
            .finish()
    }
}

impl TlsConfig {
    /// A fresh self-signed certificate (ECDSA P-256) valid for `hostnames`: DNS names, or IP
    /// addresses such as `127.0.0.1`, which become IP subject alternative names.
    pub fn self_signed(hostnames: &[&str]) -> Result<Self, ServerError> {
        if hostnames.is_empty() {
            return Err(ServerError::Certificate(
                "at least one host name is needed".to_owned(),
            ));
        }
        let names: Vec<String> = hostnames.iter().map(|h| (*h).to_owned()).collect();
        let certified = rcgen::generate_simple_self_signed(names)
            .map_err(|e| ServerError::Certificate(e.to_string()))?;
        Ok(Self {
            cert_pem: certified.cert.pem(),
            key_pem: certified.signing_key.serialize_pem(),
        })
    }

    /// The RFC 5929 `tls-server-end-point` channel bindings of the leaf certificate.
    pub fn channel_bindings(&self) -> Result<ChannelBindings, ServerError> {
        let leaf = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .next()
            .ok_or_else(|| {
                ServerError::Tls("the certificate PEM holds no CERTIFICATE block".to_owned())
            })?
            .map_err(|e| ServerError::Tls(format!("certificate PEM: {e}")))?;
        Ok(ChannelBindings::tls_server_end_point(leaf.as_ref()))
    }

    /// The rustls acceptor (ring provider, TLS 1.2 and 1.3, HTTP/1.1 by ALPN).
    pub(crate) fn acceptor(&self) -> Result<TlsAcceptor, ServerError> {
        let certs = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ServerError::Tls(format!("certificate PEM: {e}")))?;
        if certs.is_empty() {
            return Err(ServerError::Tls(
                "the certificate PEM holds no CERTIFICATE block".to_owned(),
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| ServerError::Tls(format!("private key PEM: {e}")))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ServerError::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| ServerError::Tls(e.to_string()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_certificates_load() {
        let tls = TlsConfig::self_signed(&["localhost", "127.0.0.1"]).unwrap();
        assert!(tls.cert_pem.contains("BEGIN CERTIFICATE"));
        assert!(!format!("{tls:?}").contains("PRIVATE"));
        tls.acceptor().unwrap();
        assert!(TlsConfig::self_signed(&[]).is_err());
        let broken = TlsConfig {
            cert_pem: tls.cert_pem.clone(),
            key_pem: "not a key".into(),
        };
        assert!(matches!(broken.acceptor(), Err(ServerError::Tls(_))));
    }
}
