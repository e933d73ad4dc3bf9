//! The HTTP exchange as plain data: one request, one response, and how a transport failed.
//!
//! These types are the seam between the sans-IO core ([`crate::auth`], the server's connection
//! state machine) and whatever moves bytes: the hyper/rustls transport of feature `client`
//! (`crate::transport`), the endpoint of feature `server`, or a test. They hold no I/O
//! handles, so the core builds without an HTTP stack.

use std::time::Duration;

use bytes::Bytes;

use crate::Secret;

/// A transport failure, classified so that callers can tell what to fix.
///
/// The I/O and TLS errors of the underlying stack are turned into text where they occur, so
/// this type (and [`crate::Error`], which wraps it) does not depend on any HTTP or TLS crate.
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
