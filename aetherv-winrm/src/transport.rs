//! The HTTP boundary: one trait for a keep-alive connection, one for opening connections, and the
//! `reqwest` implementation of both.
//!
//! NTLM authenticates a TCP connection, not a request, so the client needs to know which
//! requests share a connection. A [`Transport`] is therefore *one* persistent HTTP/1.1
//! connection used by one caller at a time; a [`Connector`] opens new ones. The `reqwest`
//! implementation gives every [`Transport`] its own `reqwest::Client` whose pool holds at most
//! one idle connection, so consecutive requests reuse the same socket. If the server or a proxy
//! closes the socket anyway, `reqwest` reconnects silently; the server then answers `401` and
//! the client authenticates the new connection (counted as a new handshake).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::Secret;

/// A transport failure, classified so that callers can tell what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The TCP connection could not be made (refused, unreachable, DNS).
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The TLS handshake failed (untrusted certificate, name mismatch, protocol error).
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    /// No response arrived within the HTTP timeout.
    #[error("HTTP request timed out after {0:?}")]
    Timeout(Duration),
    /// The connection broke while the request or response was in flight.
    #[error("connection failed during the request: {0}")]
    Io(String),
    /// The transport could not be configured (bad CA file, bad URL).
    #[error("transport configuration: {0}")]
    Config(String),
}

/// One HTTP POST to the WS-Man endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpRequest {
    /// `Authorization` header value, if any. May carry credentials (Basic), so it is a
    /// [`Secret`] and never appears in `Debug` output.
    pub authorization: Option<Secret>,
    /// `Content-Type` header value, if the body is not empty.
    pub content_type: Option<String>,
    /// Request body.
    pub body: Bytes,
}

/// The parts of an HTTP response WS-Man needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpResponse {
    /// HTTP status code.
    pub status: u16,
    /// Every `WWW-Authenticate` header value, in order.
    pub www_authenticate: Vec<String>,
    /// `Content-Type` header value.
    pub content_type: Option<String>,
    /// Response body.
    pub body: Bytes,
}

/// One persistent HTTP connection to a WS-Man endpoint, used by one caller at a time.
#[mockall::automock]
#[async_trait]
pub trait Transport: Send + Sync {
    /// Sends one POST and waits for the whole response.
    async fn post(&self, request: HttpRequest) -> Result<HttpResponse, TransportError>;
}

/// Opens new [`Transport`]s (connections) to one endpoint.
#[mockall::automock]
pub trait Connector: Send + Sync {
    /// Opens a new connection. Implementations may connect lazily on the first request.
    fn connect(&self) -> Result<Arc<dyn Transport>, TransportError>;
}

/// TLS settings for HTTPS endpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// Extra PEM file of trusted CA certificates, used in addition to the built-in roots.
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate (self-signed, expired, wrong name). Only for lab use.
    pub accept_invalid_certs: bool,
}

/// Connection-level settings for [`ReqwestConnector`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpOptions {
    /// Endpoint URL, e.g. `http://host:5985/wsman`.
    pub endpoint: String,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Timeout for one request/response exchange. Must exceed the WS-Man OperationTimeout.
    pub request_timeout: Duration,
    /// TLS settings (ignored for `http://`).
    pub tls: TlsOptions,
}

/// [`Connector`] backed by `reqwest` (HTTP/1.1, rustls).
#[derive(Debug, Clone)]
pub struct ReqwestConnector {
    options: HttpOptions,
    url: reqwest::Url,
    ca_certificates: Vec<reqwest::Certificate>,
}

impl ReqwestConnector {
    /// Validates the options (URL, CA file) once; connections are opened by [`Connector::connect`].
    pub fn new(options: HttpOptions) -> Result<Self, TransportError> {
        let url = reqwest::Url::parse(&options.endpoint).map_err(|e| {
            TransportError::Config(format!("invalid endpoint URL {:?}: {e}", options.endpoint))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(TransportError::Config(format!(
                "endpoint URL {:?} must start with http:// or https://",
                options.endpoint
            )));
        }
        let mut ca_certificates = Vec::new();
        if let Some(path) = &options.tls.ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                TransportError::Config(format!("cannot read CA file {}: {e}", path.display()))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                TransportError::Config(format!("CA file {} is not valid PEM: {e}", path.display()))
            })?;
            if certs.is_empty() {
                return Err(TransportError::Config(format!(
                    "CA file {} contains no certificate",
                    path.display()
                )));
            }
            ca_certificates = certs;
        }
        Ok(Self {
            options,
            url,
            ca_certificates,
        })
    }
}

impl Connector for ReqwestConnector {
    fn connect(&self) -> Result<Arc<dyn Transport>, TransportError> {
        let mut builder = reqwest::Client::builder()
            .http1_only()
            .pool_max_idle_per_host(1)
            .pool_idle_timeout(Duration::from_secs(50))
            .tcp_keepalive(Duration::from_secs(30))
            .tcp_nodelay(true)
            .connect_timeout(self.options.connect_timeout)
            .timeout(self.options.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .danger_accept_invalid_certs(self.options.tls.accept_invalid_certs)
            .user_agent(concat!("aetherv-winrm/", env!("CARGO_PKG_VERSION")));
        for cert in &self.ca_certificates {
            builder = builder.add_root_certificate(cert.clone());
        }
        let client = builder
            .build()
            .map_err(|e| TransportError::Config(error_chain(&e)))?;
        Ok(Arc::new(ReqwestTransport {
            client,
            url: self.url.clone(),
            request_timeout: self.options.request_timeout,
        }))
    }
}

/// One `reqwest` client holding a single keep-alive connection.
#[derive(Debug)]
struct ReqwestTransport {
    client: reqwest::Client,
    url: reqwest::Url,
    request_timeout: Duration,
}

#[async_trait]
impl Transport for ReqwestTransport {
    async fn post(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        let mut builder = self.client.post(self.url.clone());
        if let Some(auth) = &request.authorization {
            builder = builder.header(reqwest::header::AUTHORIZATION, auth.expose());
        }
        if let Some(ct) = &request.content_type {
            builder = builder.header(reqwest::header::CONTENT_TYPE, ct);
        }
        let response = builder
            .body(request.body)
            .send()
            .await
            .map_err(|e| self.classify(&e))?;
        let status = response.status().as_u16();
        let headers = response.headers();
        let www_authenticate = headers
            .get_all(reqwest::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_owned)
            .collect();
        let content_type = headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.bytes().await.map_err(|e| self.classify(&e))?;
        Ok(HttpResponse {
            status,
            www_authenticate,
            content_type,
            body,
        })
    }
}

impl ReqwestTransport {
    fn classify(&self, err: &reqwest::Error) -> TransportError {
        let chain = error_chain(err);
        if err.is_timeout() {
            TransportError::Timeout(self.request_timeout)
        } else if looks_like_tls(&chain) {
            TransportError::Tls(chain)
        } else if err.is_connect() {
            TransportError::Connect(chain)
        } else {
            TransportError::Io(chain)
        }
    }
}

fn looks_like_tls(chain: &str) -> bool {
    let lower = chain.to_ascii_lowercase();
    [
        "certificate",
        "tls",
        "handshake",
        "unknownissuer",
        "notvalidforname",
    ]
    .iter()
    .any(|needle| lower.contains(needle))
}

/// Formats an error with its sources, skipping reqwest's own URL-bearing prefix repetition.
fn error_chain(err: &dyn std::error::Error) -> String {
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
            ReqwestConnector::new(options("ftp://host/wsman")),
            Err(TransportError::Config(_))
        ));
        assert!(matches!(
            ReqwestConnector::new(options("not a url")),
            Err(TransportError::Config(_))
        ));
        let mut o = options("https://host:5986/wsman");
        o.tls.ca_file = Some(PathBuf::from("/nonexistent/ca.pem"));
        let err = ReqwestConnector::new(o).err();
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
        let connector = ReqwestConnector::new(options(&format!("http://127.0.0.1:{port}/wsman")));
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
