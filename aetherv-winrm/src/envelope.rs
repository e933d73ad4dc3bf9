//! SOAP envelopes of the WinRM shell protocol (WS-Management over SOAP 1.2).
//!
//! This module is sans-IO: it turns typed requests and responses into XML text and back.
//!
//! - Client side: [`build_request`] / [`write_request`] and [`parse_response`].
//! - Server side: [`parse_request`], [`build_response`] / [`write_response`] and [`build_fault`].
//!
//! The envelopes follow what Windows sends and accepts: SOAP 1.2, WS-Addressing 2004/08,
//! the DMTF WS-Management namespace for the standard headers and the Microsoft `wsmv`
//! namespace for `DataLocale`. Requests are written with the prefixes Windows itself uses
//! (`s:`, `a:`, `w:`, `p:`, `rsp:`); the parsers match elements by namespace and local name, so
//! any prefixes (`env:` from pywinrm, default namespaces, ...), any whitespace and any attribute
//! order are accepted, and unknown headers and elements are ignored.
//!
//! Text written into an envelope is escaped with `quick_xml::escape`; a carriage return (and a
//! tab or line feed inside an attribute value) is written as a character reference so that it
//! survives XML end-of-line and attribute normalisation. Characters XML 1.0 cannot carry at all
//! (C0 control characters other than tab, line feed and carriage return; U+FFFE; U+FFFF) are
//! replaced by U+FFFD, because Windows rejects a document containing them.
//!
//! A SOAP fault in a response body always yields [`EnvelopeError::Fault`], whatever response was
//! expected. During a Receive, a fault for which [`WsmanFault::is_timed_out`] is true means "no
//! output yet, poll again", not a failure.

use std::time::Duration;

mod duration;
mod fault;
mod read;
mod write;

pub use duration::{format_duration, parse_duration};
pub use fault::WsmanFault;
pub use read::{parse_fault, parse_request, parse_response, parse_response_with_header};
pub use write::{
    build_fault, build_request, build_response, write_fault, write_request, write_response,
};

/// Resource URI of the Windows command shell (`cmd.exe`) used by WinRS.
pub const RESOURCE_URI_CMD: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd";

/// The WS-Addressing anonymous endpoint, used as `ReplyTo` of requests and `To` of responses.
pub const ANONYMOUS: &str = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous";

/// Default `MaxEnvelopeSize` (bytes), the Windows default.
pub const DEFAULT_MAX_ENVELOPE_SIZE: u32 = 153_600;

/// Default `OperationTimeout`.
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(60);

/// Default `Locale` / `DataLocale`.
pub const DEFAULT_LOCALE: &str = "en-US";

/// XML namespace URIs used in WinRM envelopes.
pub mod ns {
    /// SOAP 1.2 envelope.
    pub const SOAP: &str = "http://www.w3.org/2003/05/soap-envelope";
    /// WS-Addressing (2004/08).
    pub const ADDRESSING: &str = "http://schemas.xmlsoap.org/ws/2004/08/addressing";
    /// DMTF WS-Management.
    pub const WSMAN: &str = "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd";
    /// Microsoft WS-Management extensions (`DataLocale`, `SessionId`, ...).
    pub const WSMV: &str = "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd";
    /// Windows remote shell.
    pub const SHELL: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell";
    /// WS-Transfer (2004/09).
    pub const TRANSFER: &str = "http://schemas.xmlsoap.org/ws/2004/09/transfer";
    /// Microsoft `WSManFault` detail.
    pub const WSMAN_FAULT: &str = "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault";
}

/// WS-Addressing `Action` URIs of the shell protocol.
pub mod action {
    /// WS-Transfer Create (opens a shell).
    pub const CREATE: &str = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create";
    /// Response to [`CREATE`].
    pub const CREATE_RESPONSE: &str =
        "http://schemas.xmlsoap.org/ws/2004/09/transfer/CreateResponse";
    /// WS-Transfer Delete (closes a shell).
    pub const DELETE: &str = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete";
    /// Response to [`DELETE`].
    pub const DELETE_RESPONSE: &str =
        "http://schemas.xmlsoap.org/ws/2004/09/transfer/DeleteResponse";
    /// Starts a command in a shell.
    pub const COMMAND: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Command";
    /// Response to [`COMMAND`].
    pub const COMMAND_RESPONSE: &str =
        "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandResponse";
    /// Sends input (stdin) to a command.
    pub const SEND: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Send";
    /// Response to [`SEND`].
    pub const SEND_RESPONSE: &str =
        "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/SendResponse";
    /// Receives output of a command.
    pub const RECEIVE: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Receive";
    /// Response to [`RECEIVE`].
    pub const RECEIVE_RESPONSE: &str =
        "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/ReceiveResponse";
    /// Sends a signal (terminate, Ctrl+C, Ctrl+Break) to a command.
    pub const SIGNAL: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Signal";
    /// Response to [`SIGNAL`].
    pub const SIGNAL_RESPONSE: &str =
        "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/SignalResponse";
    /// Action of a WS-Management fault response.
    pub const FAULT: &str = "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault";
    /// Action of a WS-Addressing fault response (e.g. `a:ActionNotSupported`).
    pub const ADDRESSING_FAULT: &str = "http://schemas.xmlsoap.org/ws/2004/08/addressing/fault";
}

/// Header values of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestHeader {
    /// Endpoint URL, e.g. `http://host:5985/wsman`.
    pub to: String,
    /// Message identifier, written as `uuid:<UUID>`.
    pub message_id: uuid::Uuid,
    /// Resource URI, normally [`RESOURCE_URI_CMD`].
    pub resource_uri: String,
    /// Largest response envelope the client accepts, in bytes (default 153600).
    pub max_envelope_size: u32,
    /// How long the service may take before it answers (a Receive answers with a TimedOut
    /// fault when no output arrived in this time). Written with millisecond precision.
    pub operation_timeout: Duration,
    /// Locale of the messages (`Locale` and `DataLocale`), default `en-US`.
    pub locale: String,
}

impl RequestHeader {
    /// A header for `to` with the defaults: cmd resource URI, 153600 bytes, 60 s, `en-US`.
    pub fn new(to: impl Into<String>, message_id: uuid::Uuid) -> Self {
        Self {
            to: to.into(),
            message_id,
            resource_uri: RESOURCE_URI_CMD.to_owned(),
            max_envelope_size: DEFAULT_MAX_ENVELOPE_SIZE,
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
            locale: DEFAULT_LOCALE.to_owned(),
        }
    }
}

/// Options of a new shell (the body and `OptionSet` of a Create request).
#[derive(Debug, Clone, PartialEq)]
pub struct ShellOptions {
    /// Console code page (`WINRS_CODEPAGE`), default 65001 (UTF-8).
    pub codepage: u32,
    /// Do not load the user profile (`WINRS_NOPROFILE`).
    pub no_profile: bool,
    /// Initial working directory of the shell.
    pub working_directory: Option<String>,
    /// Environment variables of the shell, in order.
    pub environment: Vec<(String, String)>,
    /// Input stream names, default `stdin`.
    pub input_streams: String,
    /// Output stream names, default `stdout stderr`.
    pub output_streams: String,
    /// Idle timeout after which Windows deletes the shell (`None`: the server's default).
    pub idle_timeout: Option<Duration>,
}

impl Default for ShellOptions {
    fn default() -> Self {
        Self {
            codepage: 65001,
            no_profile: false,
            working_directory: None,
            environment: Vec::new(),
            input_streams: "stdin".to_owned(),
            output_streams: "stdout stderr".to_owned(),
            idle_timeout: None,
        }
    }
}

/// A signal sent to a running command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Terminate the command (`.../signal/terminate`).
    Terminate,
    /// Ctrl+C (`.../signal/ctrl_c`).
    CtrlC,
    /// Ctrl+Break (`.../signal/ctrl_break`).
    CtrlBreak,
}

impl Signal {
    /// The signal's code URI.
    pub fn uri(self) -> &'static str {
        match self {
            Signal::Terminate => {
                "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/terminate"
            }
            Signal::CtrlC => {
                "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/ctrl_c"
            }
            Signal::CtrlBreak => {
                "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/ctrl_break"
            }
        }
    }

    /// The signal with this code URI (surrounding whitespace ignored).
    pub fn from_uri(uri: &str) -> Option<Self> {
        let uri = uri.trim();
        [Signal::Terminate, Signal::CtrlC, Signal::CtrlBreak]
            .into_iter()
            .find(|s| s.uri() == uri)
    }
}

/// One request of the shell protocol.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Open a shell.
    Create(ShellOptions),
    /// Close a shell.
    Delete {
        /// Shell to close.
        shell_id: String,
    },
    /// Start a command. Written with the options `WINRS_CONSOLEMODE_STDIN=TRUE` and
    /// `WINRS_SKIP_CMD_SHELL`.
    Command {
        /// Shell to run in.
        shell_id: String,
        /// Program (or, through cmd.exe, command line) to run.
        command: String,
        /// Arguments, each its own `Arguments` element.
        arguments: Vec<String>,
        /// Run the program directly rather than through `cmd.exe /c`.
        skip_cmd_shell: bool,
    },
    /// Send input to a command.
    Send {
        /// Shell of the command.
        shell_id: String,
        /// Command to send to.
        command_id: String,
        /// Input stream name, normally `stdin`.
        stream: String,
        /// Bytes to send (base64 on the wire).
        data: Vec<u8>,
        /// This is the last input (`End="true"`).
        end: bool,
    },
    /// Ask for output of a command.
    Receive {
        /// Shell of the command.
        shell_id: String,
        /// Command to receive from.
        command_id: String,
        /// Desired streams, normally `stdout stderr`.
        stream: String,
    },
    /// Signal a command.
    Signal {
        /// Shell of the command.
        shell_id: String,
        /// Command to signal.
        command_id: String,
        /// The signal.
        signal: Signal,
    },
}

impl Request {
    /// The request's WS-Addressing action URI.
    pub fn action(&self) -> &'static str {
        ResponseKind::from(self).request_action()
    }
}

/// An output stream of a command.
///
/// Only `stdout` and `stderr` exist for the cmd shell (names compared case-insensitively). A
/// Receive response naming any other stream (for example PowerShell's `pr`) is rejected with
/// [`EnvelopeError::Invalid`] rather than silently dropped, since its data would be lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    /// The stream name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    /// The stream with this name (case-insensitive).
    pub fn from_name(name: &str) -> Option<Self> {
        if name.eq_ignore_ascii_case("stdout") {
            Some(Stream::Stdout)
        } else if name.eq_ignore_ascii_case("stderr") {
            Some(Stream::Stderr)
        } else {
            None
        }
    }
}

/// One `Stream` element of a Receive response.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamChunk {
    /// Which stream.
    pub stream: Stream,
    /// The command the data belongs to.
    pub command_id: Option<String>,
    /// Decoded bytes (may be empty).
    pub data: Vec<u8>,
    /// The stream ended (`End="true"`).
    pub end: bool,
}

/// The `CommandState` element of a Receive response.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandState {
    /// The command.
    pub command_id: Option<String>,
    /// `State` is `.../CommandState/Done` (`Running` and `Pending` are not done).
    pub done: bool,
    /// The process exit code, when reported (Windows reports it with `Done`).
    pub exit_code: Option<i64>,
}

/// The content of a Receive response.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReceiveOutput {
    /// Stream chunks in document order.
    pub chunks: Vec<StreamChunk>,
    /// The command state, when present.
    pub state: Option<CommandState>,
}

impl ReceiveOutput {
    /// Whether the command has finished.
    pub fn done(&self) -> bool {
        self.state.as_ref().is_some_and(|s| s.done)
    }

    /// The exit code, when reported.
    pub fn exit_code(&self) -> Option<i64> {
        self.state.as_ref().and_then(|s| s.exit_code)
    }

    /// Appends the data of every chunk of `stream` to `out`.
    pub fn append_stream(&self, stream: Stream, out: &mut Vec<u8>) {
        for chunk in self.chunks.iter().filter(|c| c.stream == stream) {
            out.extend_from_slice(&chunk.data);
        }
    }
}

/// A successful response of the shell protocol.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    /// A shell was created.
    Created {
        /// Its identifier.
        shell_id: String,
    },
    /// The shell was deleted.
    Deleted,
    /// A command was started.
    CommandStarted {
        /// Its identifier.
        command_id: String,
    },
    /// Input was accepted.
    Sent,
    /// Output (possibly none) and possibly the command state.
    Received(ReceiveOutput),
    /// The signal was delivered.
    Signalled,
}

/// Which response a request expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseKind {
    /// CreateResponse.
    Create,
    /// DeleteResponse.
    Delete,
    /// CommandResponse.
    Command,
    /// SendResponse.
    Send,
    /// ReceiveResponse.
    Receive,
    /// SignalResponse.
    Signal,
}

impl ResponseKind {
    /// The action URI of the request of this kind.
    pub fn request_action(self) -> &'static str {
        match self {
            ResponseKind::Create => action::CREATE,
            ResponseKind::Delete => action::DELETE,
            ResponseKind::Command => action::COMMAND,
            ResponseKind::Send => action::SEND,
            ResponseKind::Receive => action::RECEIVE,
            ResponseKind::Signal => action::SIGNAL,
        }
    }

    /// The action URI of the response of this kind.
    pub fn response_action(self) -> &'static str {
        match self {
            ResponseKind::Create => action::CREATE_RESPONSE,
            ResponseKind::Delete => action::DELETE_RESPONSE,
            ResponseKind::Command => action::COMMAND_RESPONSE,
            ResponseKind::Send => action::SEND_RESPONSE,
            ResponseKind::Receive => action::RECEIVE_RESPONSE,
            ResponseKind::Signal => action::SIGNAL_RESPONSE,
        }
    }
}

impl From<&Request> for ResponseKind {
    fn from(request: &Request) -> Self {
        match request {
            Request::Create(_) => ResponseKind::Create,
            Request::Delete { .. } => ResponseKind::Delete,
            Request::Command { .. } => ResponseKind::Command,
            Request::Send { .. } => ResponseKind::Send,
            Request::Receive { .. } => ResponseKind::Receive,
            Request::Signal { .. } => ResponseKind::Signal,
        }
    }
}

impl From<&Response> for ResponseKind {
    fn from(response: &Response) -> Self {
        match response {
            Response::Created { .. } => ResponseKind::Create,
            Response::Deleted => ResponseKind::Delete,
            Response::CommandStarted { .. } => ResponseKind::Command,
            Response::Sent => ResponseKind::Send,
            Response::Received(_) => ResponseKind::Receive,
            Response::Signalled => ResponseKind::Signal,
        }
    }
}

/// Addressing headers of a response (see [`parse_response_with_header`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResponseHeader {
    /// `Action`, when present.
    pub action: Option<String>,
    /// `MessageID`, when present and a UUID.
    pub message_id: Option<uuid::Uuid>,
    /// `RelatesTo` (the request's MessageID), when present and a UUID.
    pub relates_to: Option<uuid::Uuid>,
}

/// Why an envelope could not be used.
///
/// A SOAP fault is reported as [`EnvelopeError::Fault`]; every other variant means the
/// document is not a WS-Man message this module understands.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The body is a SOAP fault (the peer refused or failed the operation).
    #[error("{0}")]
    Fault(Box<WsmanFault>),
    /// The document is not well-formed XML (or not UTF-8).
    #[error("malformed xml: {0}")]
    Xml(String),
    /// A required element or attribute is absent; names it, e.g. `ShellId`.
    #[error("missing {0}")]
    Missing(&'static str),
    /// An element or attribute has a value that cannot be used.
    #[error("invalid {field}: {detail}")]
    Invalid {
        /// The element or attribute, e.g. `OperationTimeout`.
        field: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// The response's `Action` is not the one the request expects.
    #[error("unexpected action {found:?}, expected {expected}")]
    UnexpectedAction {
        /// The expected action URI.
        expected: &'static str,
        /// The action found.
        found: String,
    },
    /// A request carries an action this module does not implement.
    #[error("unsupported action {0:?}")]
    UnsupportedAction(String),
}

impl From<WsmanFault> for EnvelopeError {
    fn from(fault: WsmanFault) -> Self {
        EnvelopeError::Fault(Box::new(fault))
    }
}
