//! multipart/encrypted framing (placeholder).

/// Framing failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FramingError {
    /// Placeholder.
    #[error("placeholder")]
    Placeholder,
}
