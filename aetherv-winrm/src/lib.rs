//! WS-Management (WinRM) for Rust: a sans-IO protocol core and an async client.
//!
//! The crate talks to a Windows Remote Management listener the way a default Windows Server
//! accepts: HTTP on port 5985 with NTLM authentication and NTLM message encryption
//! (`multipart/encrypted`), or HTTPS on port 5986 with NTLM or Basic.
//!
//! Layers, from the bottom:
//! - [`ntlm`]: the NTLMv2 initiator (with MIC and key exchange) and the session that signs and
//!   seals messages; also the acceptor used by the server side and by tests.
//! - [`framing`]: the `multipart/encrypted` body that carries sealed SOAP over HTTP.
//! - [`envelope`]: building and parsing the SOAP envelopes of the WinRM shell protocol
//!   (Create, Command, Send, Receive, Signal, Delete) and their faults.
//! - [`clixml`]: turning PowerShell's CLIXML error stream into readable text.
//! - [`shell`]: the sans-IO command lifecycle (what to send next, what a Receive means).
//! - [`auth`]: the per-connection authentication state machine (Basic or NTLM, sealing).
//! - [`transport`]: the HTTP boundary, traits with a hyper/rustls implementation and mocks.
//! - [`client`]: the async [`Client`] with a builder, a bounded shell pool, streaming output,
//!   deadlines and cancellation.
//!
//! Nothing below [`transport`] performs I/O or reads the clock: time and randomness are passed in.

pub mod auth;
pub mod client;
pub mod clixml;
pub mod envelope;
pub mod error;
pub mod framing;
pub mod ntlm;
pub mod powershell;
pub mod secret;
#[cfg(feature = "server")]
pub mod server;
pub mod shell;
pub mod transport;

pub use client::{
    Client, ClientBuilder, ClientStats, CommandOutput, CommandSpec, EncryptionMode, OutputChunk,
    RunningCommand,
};
pub use envelope::WsmanFault;
pub use error::{Error, Result};
pub use secret::Secret;
