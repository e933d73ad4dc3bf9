//! The crate's error type.

use crate::envelope::{EnvelopeError, WsmanFault};
use crate::framing::FramingError;
use crate::http::TransportError;
use crate::ntlm::NtlmError;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong talking to a WinRM endpoint.
///
/// Messages name the endpoint where one is involved and never contain secrets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The client was configured inconsistently (for example Basic auth over plain HTTP).
    #[error("invalid configuration: {0}")]
    Config(String),

    /// The HTTP exchange itself failed: connection refused or reset, DNS, TLS, timeout.
    #[error("{endpoint}: {source}")]
    Transport {
        /// Endpoint URL the request was sent to.
        endpoint: String,
        /// What the transport reported.
        #[source]
        source: TransportError,
    },

    /// The server refused the credentials (HTTP 401 after a complete handshake).
    #[error("{endpoint}: authentication failed for user {user:?}: {detail}")]
    AuthenticationFailed {
        /// Endpoint URL.
        endpoint: String,
        /// User name that was refused (never the password).
        user: String,
        /// What went wrong, e.g. "credentials refused" or "server offers no supported scheme".
        detail: String,
    },

    /// The server answered with an HTTP status the protocol does not expect.
    #[error("{endpoint}: unexpected HTTP status {status}{}", if .detail.is_empty() { String::new() } else { format!(": {}", .detail) })]
    HttpStatus {
        /// Endpoint URL.
        endpoint: String,
        /// HTTP status code.
        status: u16,
        /// A short, printable excerpt of the response body, if any.
        detail: String,
    },

    /// The host answered with a WS-Management SOAP fault.
    #[error("{endpoint}: {fault}")]
    Fault {
        /// Endpoint URL.
        endpoint: String,
        /// The fault, with its WSManFault code and message.
        fault: Box<WsmanFault>,
    },

    /// A SOAP envelope from the host could not be understood.
    #[error("{endpoint}: malformed WS-Man response: {source}")]
    Envelope {
        /// Endpoint URL.
        endpoint: String,
        /// Parse failure.
        #[source]
        source: EnvelopeError,
    },

    /// NTLM authentication or message protection failed.
    #[error("{endpoint}: NTLM: {source}")]
    Ntlm {
        /// Endpoint URL.
        endpoint: String,
        /// NTLM failure.
        #[source]
        source: NtlmError,
    },

    /// An encrypted HTTP body could not be decoded.
    #[error("{endpoint}: malformed encrypted body: {source}")]
    Framing {
        /// Endpoint URL.
        endpoint: String,
        /// Framing failure.
        #[source]
        source: FramingError,
    },

    /// The command did not finish before its deadline; it was terminated on the host.
    #[error("{endpoint}: command did not finish within {seconds:.1} s")]
    Deadline {
        /// Endpoint URL.
        endpoint: String,
        /// The deadline that elapsed, in seconds.
        seconds: f64,
    },

    /// The caller cancelled the command; it was terminated on the host.
    #[error("{endpoint}: command cancelled")]
    Cancelled {
        /// Endpoint URL.
        endpoint: String,
    },
}

impl Error {
    /// The WS-Man fault carried by this error, if it is one.
    pub fn fault(&self) -> Option<&WsmanFault> {
        match self {
            Error::Fault { fault, .. } => Some(fault),
            _ => None,
        }
    }

    /// Builds the right variant for an envelope parse failure (a SOAP fault is not a parse error).
    ///
    /// Public so that code driving the sans-IO core with its own I/O reports failures the way
    /// the crate's client does.
    pub fn from_envelope(endpoint: &str, err: EnvelopeError) -> Self {
        match err {
            EnvelopeError::Fault(fault) => Error::Fault {
                endpoint: endpoint.to_owned(),
                fault,
            },
            source => Error::Envelope {
                endpoint: endpoint.to_owned(),
                source,
            },
        }
    }
}
