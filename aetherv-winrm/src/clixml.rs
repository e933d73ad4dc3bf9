//! CLIXML decoding (placeholder).
