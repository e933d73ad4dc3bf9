//! WS-Man envelopes (placeholder).

/// A WS-Man fault.
#[derive(Debug, Clone, thiserror::Error)]
#[error("fault")]
pub struct WsmanFault {}

/// Envelope parse failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The body is a SOAP fault.
    #[error("{0}")]
    Fault(Box<WsmanFault>),
}
