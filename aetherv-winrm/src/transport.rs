//! The HTTP boundary.

/// A transport failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// Could not connect.
    #[error("connection failed: {0}")]
    Connect(String),
}
