//! WS-Management (WinRM) for Rust: a sans-IO protocol core, an async client and a WS-Man
//! endpoint.
//!
//! The crate talks to a Windows Remote Management listener the way a default Windows Server
//! accepts: HTTP on port 5985 with NTLM authentication and NTLM message encryption
//! (`multipart/encrypted`), or HTTPS on port 5986 with NTLM or Basic.
//!
//! # Features
//!
//! | Feature  | Default | Brings |
//! |----------|---------|--------|
//! | *(none)* |         | The sans-IO protocol core: [`ntlm`], [`channel_bindings`], [`framing`], [`envelope`], [`clixml`], [`powershell`], [`shell`], [`auth`], [`http`], [`secret`] and [`Error`]. Depends on no async runtime, HTTP or TLS crate. |
//! | `client` | yes     | The async client (`client`: `Client`, `ClientBuilder`, `RunningCommand`) and its HTTP boundary (`transport`: the `Transport`/`Connector` traits and `HttpConnector` over hyper and rustls with the system's roots). Brings tokio, hyper, tokio-rustls, tokio-util, async-trait, tracing. |
//! | `server` | no      | The WS-Man endpoint (`server`: `WsmanServer`, shells owned per user, the `CommandHandler` trait, fault injection) over hyper's HTTP/1.1 server, with TLS from rcgen certificates. Independent of `client`. |
//! | `mock`   | no      | `mockall` mocks of the transport traits (`MockTransport`, `MockConnector`) for tests of code built on the client. They exist when `client` is on as well. |
//!
//! An embedder that only needs the protocol (to drive it from its own I/O, or to parse
//! captures) depends on the crate with `default-features = false`.
//!
//! # Layers
//!
//! From the bottom:
//! - [`ntlm`]: the NTLMv2 initiator (with MIC and key exchange) and the session that signs and
//!   seals messages; also the acceptor used by the server side and by tests.
//! - [`framing`]: the `multipart/encrypted` body that carries sealed SOAP over HTTP.
//! - [`envelope`]: building and parsing the SOAP envelopes of the WinRM shell protocol
//!   (Create, Command, Send, Receive, Signal, Delete) and their faults.
//! - [`clixml`]: turning PowerShell's CLIXML error stream into readable text.
//! - [`powershell`]: how a script becomes a `powershell.exe` command line (or stdin).
//! - [`shell`]: the sans-IO command lifecycle (what to send next, what a Receive means).
//! - [`auth`]: the per-connection authentication state machine (Basic or NTLM, sealing), over
//!   the plain request and response types of [`http`].
//! - `transport` (feature `client`): the HTTP boundary, traits with a hyper/rustls
//!   implementation.
//! - `client` (feature `client`): the async `Client` with a builder, a bounded shell pool,
//!   streaming output, deadlines and cancellation.
//! - `server` (feature `server`): the WS-Man endpoint with Windows semantics.
//!
//! Nothing below `transport` performs I/O or reads the clock: time and randomness are passed
//! in.
//!
//! # Example
//!
//! With the default `client` feature:
//!
//! ```no_run
//! # #[cfg(feature = "client")]
//! # async fn example() -> aetherv_winrm::Result<()> {
//! use aetherv_winrm::Client;
//!
//! let client = Client::builder("http://hyperv01.example.com:5985/wsman")
//!     .ntlm("EXAMPLE\\operator", "correct horse battery staple")
//!     .build()?;
//! let output = client.run_powershell("Get-VM | Select-Object -ExpandProperty Name").await?;
//! println!("exit {}: {}", output.exit_code, output.stdout_text());
//! if !output.success() {
//!     eprintln!("{}", output.stderr_text());
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Without default features, the core alone, e.g. building a WS-Man request:
//!
//! ```
//! use std::time::Duration;
//!
//! use aetherv_winrm::envelope::{self, RESOURCE_URI_CMD, Request, RequestHeader, ShellOptions};
//!
//! let header = RequestHeader {
//!     to: "http://hyperv01.example.com:5985/wsman".to_owned(),
//!     message_id: uuid::Uuid::nil(),
//!     resource_uri: RESOURCE_URI_CMD.to_owned(),
//!     max_envelope_size: 153_600,
//!     operation_timeout: Duration::from_secs(20),
//!     locale: "en-US".to_owned(),
//! };
//! let xml = envelope::build_request(&header, &Request::Create(ShellOptions::default()));
//! assert!(xml.contains("http://schemas.xmlsoap.org/ws/2004/09/transfer/Create"));
//! ```

pub mod auth;
pub mod channel_bindings;
#[cfg(feature = "client")]
pub mod client;
pub mod clixml;
pub mod envelope;
pub mod error;
pub mod framing;
pub mod http;
#[cfg(feature = "kerberos")]
pub mod kerberos;
pub mod ntlm;
pub mod powershell;
pub mod secret;
#[cfg(feature = "server")]
pub mod server;
pub mod shell;
#[cfg(feature = "client")]
pub mod transport;

#[cfg(feature = "client")]
pub use client::{
    Client, ClientBuilder, ClientStats, CommandOutput, CommandSpec, EncryptionMode, OutputChunk,
    RunningCommand,
};
pub use envelope::WsmanFault;
pub use error::{Error, Result};
pub use secret::Secret;

/// The README's code blocks, compiled as doctests so that they cannot drift from the API.
#[cfg(all(doctest, feature = "client"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
