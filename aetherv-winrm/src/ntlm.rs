//! NTLM (placeholder until the initiator lands).

/// NTLM failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NtlmError {
    /// Placeholder.
    #[error("placeholder")]
    Placeholder,
}
