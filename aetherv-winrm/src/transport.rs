//! The HTTP boundary: one trait for a keep-alive connection, one for opening connections, and the
//! hyper/rustls implementation of both ([`HttpConnector`]).
//!
//! NTLM authenticates a TCP connection, not a request, so the client needs to know which
//! requests share a connection. A [`Transport`] is therefore *one* persistent HTTP/1.1
//! connection used by one caller at a time; a [`Connector`] opens new ones. Both traits have
//! `mockall` mocks (`MockTransport`, `MockConnector`) when feature `mock` is on.
//!
//! This module is feature `client`. The request, response and error types it moves are plain
//! data in [`crate::http`] (re-exported here), shared with the sans-IO core.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::header;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

use crate::channel_bindings::ChannelBindings;
pub use crate::http::{HttpRequest, HttpResponse, TransportError};

/// One persistent HTTP connection to a WS-Man endpoint, used by one caller at a time.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait Transport: Send + Sync {
    /// Sends one POST and waits for the whole response.
    async fn post(&self, request: HttpRequest) -> Result<HttpResponse, TransportError>;

    /// The TLS channel bindings (RFC 5929 `tls-server-end-point`) of the connection, opening
    /// it first when it is not open; `None` over plain HTTP. The client asks before each
    /// handshake on an HTTPS endpoint.
    async fn channel_bindings(&self) -> Result<Option<ChannelBindings>, TransportError> {
        Ok(None)
    }
}

/// Opens new [`Transport`]s (connections) to one endpoint.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
pub trait Connector: Send + Sync {
    /// Opens a new connection. Implementations may connect lazily on the first request.
    fn connect(&self) -> Result<Arc<dyn Transport>, TransportError>;
}

mod tls;

pub use tls::{BadFingerprint, CertFingerprint};

/// TLS settings for HTTPS endpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// Extra PEM file of trusted CA certificates, used in addition to the system's store. A
    /// certificate in it that is byte-identical to the host's certificate is trusted as a
    /// pinned certificate, whatever its constraints (self-signed `CA:TRUE` included).
    pub ca_file: Option<PathBuf>,
    /// SHA-256 fingerprints of the host's certificate. When any is given, only a certificate
    /// with one of these fingerprints (or byte-identical to one in the CA file) is accepted.
    pub pin_sha256: Vec<CertFingerprint>,
    /// Accept any certificate (self-signed, expired, wrong name). Only for lab use.
    pub accept_invalid_certs: bool,
}

/// Connection-level settings for [`HttpConnector`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpOptions {
    /// Endpoint URL, e.g. `http://host:5985/wsman`.
    pub endpoint: String,
    /// TCP connect (and TLS handshake) timeout.
    pub connect_timeout: Duration,
    /// Timeout for one request/response exchange. Must exceed the WS-Man OperationTimeout.
    pub request_timeout: Duration,
    /// TLS settings (ignored for `http://`).
    pub tls: TlsOptions,
}

/// Where to connect and how, derived once from [`HttpOptions`].
struct Target {
    host: String,
    port: u16,
    path: String,
    authority: String,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    connect_timeout: Duration,
    request_timeout: Duration,
}

/// [`Connector`] over hyper's HTTP/1.1 client connections, with rustls for HTTPS.
///
/// Each [`Transport`] it opens owns exactly one TCP (or TLS) connection: requests on it are
/// sent one after another on that socket, which is what NTLM's connection-bound authentication
/// needs. A pooled client (reqwest's, hyper-util's) cannot promise that: it hands a finished
/// connection back to its pool from a background task, so the next request may race ahead on a
/// new socket and arrive unauthenticated. If the server closes the socket, the transport
/// reconnects on the next request; the server then answers `401` and the client
/// re-authenticates.
#[derive(Clone)]
pub struct HttpConnector {
    target: Arc<Target>,
}

impl std::fmt::Debug for HttpConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConnector")
            .field("authority", &self.target.authority)
            .field("tls", &self.target.tls.is_some())
            .finish()
    }
}

impl HttpConnector {
    /// Validates the options (URL, CA file) and prepares TLS once; connections are opened by
    /// [`Connector::connect`].
    pub fn new(options: HttpOptions) -> Result<Self, TransportError> {
        let uri: hyper::Uri = options.endpoint.parse().map_err(|e| {
            TransportError::Config(format!("invalid endpoint URL {:?}: {e}", options.endpoint))
        })?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(TransportError::Config(format!(
                    "endpoint URL {:?} must start with http:// or https://",
                    options.endpoint
                )));
            }
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| {
                TransportError::Config(format!("endpoint URL {:?} has no host", options.endpoint))
            })?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if https { 5986 } else { 5985 });
        let path = match uri.path_and_query().map(|p| p.as_str()) {
            None | Some("") | Some("/") => "/wsman".to_owned(),
            Some(p) => p.to_owned(),
        };
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let tls = if https {
            let config = tls_config(&options.tls)?;
            let name = ServerName::try_from(host.clone()).map_err(|e| {
                TransportError::Config(format!("{host:?} is not a valid TLS server name: {e}"))
            })?;
            Some((TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        Ok(Self {
            target: Arc::new(Target {
                host,
                port,
                path,
                authority,
                tls,
                connect_timeout: options.connect_timeout,
                request_timeout: options.request_timeout,
            }),
        })
    }
}

fn tls_config(options: &TlsOptions) -> Result<rustls::ClientConfig, TransportError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| TransportError::Config(format!("TLS setup: {e}")))?;
    let mut config = if options.accept_invalid_certs {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        if options.pin_sha256.is_empty() {
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                // A malformed certificate in the system store is skipped, as browsers do.
                let _ = roots.add(cert);
            }
        }
        let mut exact = Vec::new();
        if let Some(path) = &options.ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                TransportError::Config(format!("cannot read CA file {}: {e}", path.display()))
            })?;
            let certs = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| {
                    TransportError::Config(format!(
                        "CA file {} is not valid PEM: {e}",
                        path.display()
                    ))
                })?;
            if certs.is_empty() {
                return Err(TransportError::Config(format!(
                    "CA file {} contains no certificate",
                    path.display()
                )));
            }
            for cert in certs {
                // A certificate webpki cannot use as an anchor may still be the host's own
                // certificate, trusted by identity.
                let _ = roots.add(cert.clone());
                exact.push(cert);
            }
        }
        let verifier = tls::HostVerifier::new(provider, roots, exact, options.pin_sha256.clone())
            .map_err(TransportError::Config)?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The certificate verifier behind [`TlsOptions::accept_invalid_certs`]: any certificate is
/// accepted, but handshake signatures are still checked so the session keys stay sound.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl Connector for HttpConnector {
    fn connect(&self) -> Result<Arc<dyn Transport>, TransportError> {
        Ok(Arc::new(HttpTransport {
            target: Arc::clone(&self.target),
            sender: tokio::sync::Mutex::new(None),
            bindings: std::sync::Mutex::new(None),
        }))
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// One HTTP/1.1 connection, opened on first use and reopened if the server closed it.
struct HttpTransport {
    target: Arc<Target>,
    sender: tokio::sync::Mutex<Option<Sender>>,
    /// The channel bindings of the TLS connection last opened.
    bindings: std::sync::Mutex<Option<ChannelBindings>>,
}

impl HttpTransport {
    async fn open(&self) -> Result<Sender, TransportError> {
        let target = &self.target;
        let connect = TcpStream::connect((target.host.as_str(), target.port));
        let tcp = tokio::time::timeout(target.connect_timeout, connect)
            .await
            .map_err(|_| {
                TransportError::Connect(format!(
                    "{}: no connection within {:?}",
                    target.authority, target.connect_timeout
                ))
            })?
            .map_err(|e| TransportError::Connect(format!("{}: {e}", target.authority)))?;
        let _ = tcp.set_nodelay(true);
        match &target.tls {
            None => handshake(TokioIo::new(tcp)).await,
            Some((connector, name)) => {
                let tls = tokio::time::timeout(
                    target.connect_timeout,
                    connector.connect(name.clone(), tcp),
                )
                .await
                .map_err(|_| {
                    TransportError::Tls(format!(
                        "{}: no TLS handshake within {:?}",
                        target.authority, target.connect_timeout
                    ))
                })?
                .map_err(|e| TransportError::Tls(format!("{}: {}", target.authority, chain(&e))))?;
                let bindings = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .map(|leaf| ChannelBindings::tls_server_end_point(leaf.as_ref()));
                *self.bindings.lock().unwrap_or_else(|e| e.into_inner()) = bindings;
                handshake(TokioIo::new(tls)).await
            }
        }
    }

    fn request(
        &self,
        request: &HttpRequest,
    ) -> Result<hyper::Request<Full<Bytes>>, TransportError> {
        let mut builder = hyper::Request::post(self.target.path.as_str())
            .header(header::HOST, self.target.authority.as_str())
            .header(header::USER_AGENT, USER_AGENT)
            .header(header::CONTENT_LENGTH, request.body.len());
        if let Some(auth) = &request.authorization {
            builder = builder.header(header::AUTHORIZATION, auth.expose());
        }
        if let Some(ct) = &request.content_type {
            builder = builder.header(header::CONTENT_TYPE, ct.as_str());
        }
        builder
            .body(Full::new(request.body.clone()))
            .map_err(|e| TransportError::Config(format!("cannot build the HTTP request: {e}")))
    }

    /// One request/response. The flag in the error says the request never left (the
    /// connection was already closed), so it is safe to send again.
    async fn exchange(
        &self,
        sender: &mut Sender,
        request: &HttpRequest,
    ) -> Result<HttpResponse, (TransportError, bool)> {
        let timeout = self.target.request_timeout;
        let exchange = async {
            sender
                .ready()
                .await
                .map_err(|e| (TransportError::Io(chain(&e)), true))?;
            let response = sender
                .send_request(self.request(request).map_err(|e| (e, false))?)
                .await
                .map_err(|e| (TransportError::Io(chain(&e)), e.is_canceled()))?;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| (TransportError::Io(chain(&e)), false))?
                .to_bytes();
            Ok::<_, (TransportError, bool)>((parts, body))
        };
        let (parts, body) = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| (TransportError::Timeout(timeout), false))??;
        let www_authenticate = parts
            .headers
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_owned)
            .collect();
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(HttpResponse {
            status: parts.status.as_u16(),
            www_authenticate,
            content_type,
            body,
        })
    }
}

async fn handshake<I>(io: I) -> Result<Sender, TransportError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(READ_BUFFER_MAX)
        .handshake(io)
        .await
        .map_err(|e| TransportError::Io(chain(&e)))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "HTTP connection ended");
        }
    });
    Ok(sender)
}

/// The largest read buffer of a connection. hyper grows a connection's buffer to fit what it
/// reads (by default up to about 400 KB) and keeps it for the connection's life; WinRM answers
/// carrying a host's inventory are that large, so a fleet of a thousand idle connections held
/// hundreds of megabytes of empty buffers (64 MB still at a 64 KB cap). Bodies are read in
/// pieces of at most this size; 16 KB is one TLS record, and twice hyper's smallest allowed
/// buffer.
const READ_BUFFER_MAX: usize = 16 * 1024;

const USER_AGENT: &str = concat!("aetherv-winrm/", env!("CARGO_PKG_VERSION"));

#[async_trait]
impl Transport for HttpTransport {
    async fn channel_bindings(&self) -> Result<Option<ChannelBindings>, TransportError> {
        if self.target.tls.is_none() {
            return Ok(None);
        }
        let mut guard = self.sender.lock().await;
        if guard.as_ref().is_none_or(|sender| sender.is_closed()) {
            *guard = Some(self.open().await?);
        }
        Ok(self
            .bindings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone())
    }

    async fn post(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        let mut guard = self.sender.lock().await;
        let reused = match guard.as_ref() {
            Some(sender) if !sender.is_closed() => true,
            _ => {
                *guard = Some(self.open().await?);
                false
            }
        };
        let Some(sender) = guard.as_mut() else {
            return Err(TransportError::Io("connection unavailable".to_owned()));
        };
        match self.exchange(sender, &request).await {
            Ok(response) => Ok(response),
            // The server closed an idle keep-alive connection just before we reused it: the
            // request never left, so send it once more on a fresh connection.
            Err((_, true)) if reused => {
                let mut fresh = self.open().await?;
                let result = self.exchange(&mut fresh, &request).await;
                *guard = result.is_ok().then_some(fresh);
                result.map_err(|(e, _)| e)
            }
            Err((e, _)) => {
                *guard = None;
                Err(e)
            }
        }
    }
}

/// Formats an error with its sources.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(endpoint: &str) -> HttpOptions {
        HttpOptions {
            endpoint: endpoint.to_owned(),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            tls: TlsOptions::default(),
        }
    }

    #[test]
    fn rejects_bad_urls_and_ca_files() {
        assert!(matches!(
            HttpConnector::new(options("ftp://host/wsman")),
            Err(TransportError::Config(_))
        ));
        assert!(matches!(
            HttpConnector::new(options("not a url")),
            Err(TransportError::Config(_))
        ));
        let mut o = options("https://host:5986/wsman");
        o.tls.ca_file = Some(PathBuf::from("/nonexistent/ca.pem"));
        let err = HttpConnector::new(o).err();
        assert!(
            matches!(&err, Some(TransportError::Config(m)) if m.contains("/nonexistent/ca.pem"))
        );
    }

    #[tokio::test]
    async fn refused_connection_is_classified() {
        // Bind then drop a listener so the port is (almost certainly) closed.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string());
            l.and_then(|l| l.local_addr().map_err(|e| e.to_string()))
                .map(|a| a.port())
                .unwrap_or(9)
        };
        let connector = HttpConnector::new(options(&format!("http://127.0.0.1:{port}/wsman")));
        let transport = connector.and_then(|c| c.connect());
        let result = match transport {
            Ok(t) => t.post(HttpRequest::default()).await,
            Err(e) => Err(e),
        };
        assert!(
            matches!(result, Err(TransportError::Connect(_))),
            "{result:?}"
        );
    }
}
