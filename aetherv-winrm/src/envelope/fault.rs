//! The SOAP fault with Microsoft's `WSManFault` detail.

use std::fmt;

/// A SOAP fault with the `WSManFault` detail Windows attaches.
///
/// `soap_code` and `subcode` are QNames. The parser rewrites their prefix to the conventional one
/// of the namespace it is bound to (`s:` SOAP, `w:` WS-Management, `a:` WS-Addressing, `p:`
/// Microsoft WS-Management, `rsp:` shell, `x:` WS-Transfer), so `env:Receiver` from another
/// client reads as `s:Receiver`; a QName with an unknown prefix is kept as written.
///
/// Displays like `WS-Man fault 2150858793 (w:TimedOut): The WS-Management service cannot
/// complete the operation within the time specified in OperationTimeout`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", Summary(self))]
pub struct WsmanFault {
    /// SOAP fault code, `s:Sender` or `s:Receiver`.
    pub soap_code: String,
    /// SOAP fault subcode, e.g. `w:TimedOut`, `w:InvalidSelectors`, `w:AccessDenied`.
    pub subcode: Option<String>,
    /// SOAP fault reason text (first `Text`, as written).
    pub reason: String,
    /// `WSManFault/@Code`, a Windows error code (or, without a `WSManFault`, the `error_Code`
    /// of an `MSFT_WmiError` detail).
    pub wsman_code: Option<u32>,
    /// `WSManFault/Message` (or the `MSFT_WmiError` `Message`). When the message nests
    /// elements (a `ProviderFault`), their texts are trimmed and joined with spaces.
    pub message: Option<String>,
    /// `WSManFault/@Machine`, the host that produced the fault.
    pub machine: Option<String>,
}

/// SOAP code of faults caused by the request.
const SENDER: &str = "s:Sender";
/// SOAP code of faults caused by the service.
const RECEIVER: &str = "s:Receiver";

impl WsmanFault {
    /// `ERROR_WSMAN_OPERATION_TIMEDOUT`: the OperationTimeout expired. For a Receive this means
    /// "no output yet, ask again".
    pub const TIMED_OUT: u32 = 2_150_858_793;
    /// The code Windows sends (subcode `w:InvalidSelectors`) when a shell or command named by the
    /// request does not exist (any more): its `ERROR_WSMAN_UNEXPECTED_SELECTORS`.
    pub const INVALID_SELECTORS: u32 = 2_150_858_843;
    /// `ERROR_WSMAN_INVALID_SELECTORS`, the generic "selectors are invalid" code.
    pub const INVALID_SELECTORS_GENERIC: u32 = 2_150_858_813;
    /// The per-user quota fault the design names: Windows' `ERROR_WSMAN_QUOTA_MAX_OPERATIONS`
    /// (too many concurrent operations for this user). The per-user *shell* limit
    /// (`MaxShellsPerUser`) is [`Self::QUOTA_MAX_SHELLS`]; use [`Self::is_quota_exceeded`] to
    /// test for any quota.
    pub const SHELL_QUOTA: u32 = 2_150_859_174;
    /// `ERROR_WSMAN_QUOTA_MAX_SHELLS`: the user has `MaxShellsPerUser` shells open.
    pub const QUOTA_MAX_SHELLS: u32 = 2_150_859_173;
    /// `ERROR_WSMAN_QUOTA_MAX_OPERATIONS`: too many concurrent operations for this user.
    pub const QUOTA_MAX_OPERATIONS: u32 = 2_150_859_174;
    /// `ERROR_WSMAN_QUOTA_USER`.
    pub const QUOTA_USER: u32 = 2_150_859_175;
    /// `ERROR_WSMAN_QUOTA_SYSTEM`.
    pub const QUOTA_SYSTEM: u32 = 2_150_859_176;
    /// `ERROR_WSMAN_QUOTA_MAX_SHELLUSERS`.
    pub const QUOTA_MAX_SHELLUSERS: u32 = 2_150_859_179;
    /// `ERROR_WSMAN_QUOTA_MAX_COMMANDS_PER_SHELL_PPQ`: the shell ran its maximum number of
    /// commands (about 1000 by default).
    pub const QUOTA_MAX_COMMANDS_PER_SHELL: u32 = 2_150_859_241;
    /// `ERROR_WSMAN_QUOTA_LIMIT`.
    pub const QUOTA_LIMIT: u32 = 2_150_858_815;
    /// `ERROR_WSMAN_SCHEMA_VALIDATION_ERROR`: the request does not match the schema.
    pub const SCHEMA_VALIDATION: u32 = 2_150_858_817;
    /// `ERROR_WSMAN_INVALID_ACTIONURI`: the action is not supported for this resource.
    pub const INVALID_ACTION: u32 = 2_150_858_753;
    /// `ERROR_WSMAN_RESOURCE_NOT_FOUND`: no such resource URI.
    pub const RESOURCE_NOT_FOUND: u32 = 2_150_858_752;
    /// `ERROR_WSMAN_MAX_ENVELOPE_SIZE_EXCEEDED`: the response would exceed MaxEnvelopeSize.
    pub const MAX_ENVELOPE_SIZE_EXCEEDED: u32 = 2_150_858_824;
    /// `ERROR_WSMAN_SHELL_ALREADY_CLOSED`.
    pub const SHELL_ALREADY_CLOSED: u32 = 2_150_859_082;
    /// `ERROR_WSMAN_SHELL_INVALID_SHELL_HANDLE`.
    pub const SHELL_INVALID_SHELL_HANDLE: u32 = 2_150_859_084;
    /// `ERROR_WSMAN_SHELL_INVALID_COMMAND_HANDLE`.
    pub const SHELL_INVALID_COMMAND_HANDLE: u32 = 2_150_859_085;
    /// Win32 `ERROR_ACCESS_DENIED`, sent with subcode `w:AccessDenied`.
    pub const ACCESS_DENIED: u32 = 5;

    /// A fault with these codes and reason, without detail.
    pub fn new(
        soap_code: impl Into<String>,
        subcode: Option<&str>,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            soap_code: soap_code.into(),
            subcode: subcode.map(str::to_owned),
            reason: reason.into(),
            wsman_code: None,
            message: None,
            machine: None,
        }
    }

    /// Sets the `WSManFault` code and message.
    pub fn with_detail(mut self, wsman_code: u32, message: impl Into<String>) -> Self {
        self.wsman_code = Some(wsman_code);
        self.message = Some(message.into());
        self
    }

    /// Sets the machine that produced the fault.
    pub fn with_machine(mut self, machine: impl Into<String>) -> Self {
        self.machine = Some(machine.into());
        self
    }

    /// The OperationTimeout expired (`s:Receiver`, `w:TimedOut`, 2150858793), as Windows answers
    /// a Receive that found no output in time.
    pub fn timed_out() -> Self {
        const TEXT: &str = "The WS-Management service cannot complete the operation within the time specified in OperationTimeout.";
        Self::new(RECEIVER, Some("w:TimedOut"), TEXT).with_detail(Self::TIMED_OUT, TEXT)
    }

    /// The selectors name nothing that exists (`s:Sender`, `w:InvalidSelectors`, 2150858843),
    /// with `detail` as the `WSManFault` message.
    pub fn invalid_selectors(detail: impl Into<String>) -> Self {
        Self::new(
            SENDER,
            Some("w:InvalidSelectors"),
            "The WS-Management service cannot process the request because the request contained invalid selectors for the resource.",
        )
        .with_detail(Self::INVALID_SELECTORS, detail)
    }

    /// No shell with this id: what Windows answers for a deleted or unknown shell.
    pub fn shell_not_found(shell_id: &str) -> Self {
        Self::invalid_selectors(format!(
            "The request for the Windows Remote Shell with ShellId {shell_id} failed because the shell was not found on the server. Possible causes are: the specified ShellId is incorrect or the shell no longer exists on the server. Provide the correct ShellId or create a new shell and retry the operation."
        ))
    }

    /// No command with this id in the shell.
    pub fn command_not_found() -> Self {
        Self::invalid_selectors(
            "The Windows Remote Shell received a request to perform an operation on a command identifier that does not exist. Either the command has completed execution or the client specified an invalid command identifier.",
        )
    }

    /// The user already has `max_shells` shells open (`w:QuotaLimit`, 2150859173).
    pub fn shell_quota(max_shells: u32) -> Self {
        Self::new(
            SENDER,
            Some("w:QuotaLimit"),
            "The WS-Management service cannot process the request because it would exceed a quota limit.",
        )
        .with_detail(
            Self::QUOTA_MAX_SHELLS,
            format!(
                "The WS-Management service cannot process the request. This user is allowed a maximum number of {max_shells} concurrent shells, which has been exceeded. Close existing shells or raise the quota for this user."
            ),
        )
    }

    /// The user has too many concurrent operations (`w:QuotaLimit`, 2150859174).
    pub fn operation_quota(max_operations: u32) -> Self {
        Self::new(
            SENDER,
            Some("w:QuotaLimit"),
            "The WS-Management service cannot process the request because it would exceed a quota limit.",
        )
        .with_detail(
            Self::QUOTA_MAX_OPERATIONS,
            format!(
                "The WS-Management service cannot process the request. This user is allowed a maximum number of {max_operations} concurrent operations, which has been exceeded. Close existing operations for this user, or raise the quota for this user."
            ),
        )
    }

    /// Access is denied (`s:Sender`, `w:AccessDenied`, 5).
    pub fn access_denied() -> Self {
        Self::new(SENDER, Some("w:AccessDenied"), "Access is denied.")
            .with_detail(Self::ACCESS_DENIED, "Access is denied.")
    }

    /// The request does not match the schema (`s:Sender`, `w:SchemaValidationError`,
    /// 2150858817), with `detail` saying what is wrong.
    pub fn schema_validation(detail: impl Into<String>) -> Self {
        Self::new(
            SENDER,
            Some("w:SchemaValidationError"),
            "The SOAP XML in the message does not match the corresponding XML schema definition. Change the XML and retry.",
        )
        .with_detail(Self::SCHEMA_VALIDATION, detail)
    }

    /// The action is not supported (`s:Sender`, `a:ActionNotSupported`, 2150858753).
    pub fn action_not_supported(action: &str) -> Self {
        Self::new(
            SENDER,
            Some("a:ActionNotSupported"),
            "The action is not supported by the service.",
        )
        .with_detail(
            Self::INVALID_ACTION,
            format!("The WS-Management service cannot process the request because the action {action} is not supported for this resource."),
        )
    }

    /// The service failed (`s:Receiver`, `w:InternalError`).
    pub fn internal_error(message: impl Into<String>) -> Self {
        let message = message.into();
        Self::new(RECEIVER, Some("w:InternalError"), message.clone()).with_message(message)
    }

    fn with_message(mut self, message: String) -> Self {
        self.message = Some(message);
        self
    }

    /// The local part of the subcode (`TimedOut` for `w:TimedOut`).
    pub fn subcode_name(&self) -> Option<&str> {
        self.subcode
            .as_deref()
            .map(|s| s.rsplit_once(':').map_or(s, |(_, local)| local).trim())
    }

    /// The OperationTimeout expired: code 2150858793 or subcode `TimedOut`. During a Receive
    /// this means "no output yet, poll again".
    pub fn is_timed_out(&self) -> bool {
        self.wsman_code == Some(Self::TIMED_OUT) || self.subcode_name() == Some("TimedOut")
    }

    /// The shell or command the request named is gone: subcode `InvalidSelectors`, or one of
    /// the codes Windows uses for an unknown or closed shell or command.
    pub fn is_shell_gone(&self) -> bool {
        matches!(
            self.wsman_code,
            Some(
                Self::INVALID_SELECTORS
                    | Self::INVALID_SELECTORS_GENERIC
                    | Self::SHELL_ALREADY_CLOSED
                    | Self::SHELL_INVALID_SHELL_HANDLE
                    | Self::SHELL_INVALID_COMMAND_HANDLE
            )
        ) || self.subcode_name() == Some("InvalidSelectors")
    }

    /// A per-user or system quota was exceeded (too many shells, operations, users, commands
    /// per shell): waiting or closing shells may help.
    pub fn is_quota_exceeded(&self) -> bool {
        matches!(
            self.wsman_code,
            Some(
                Self::QUOTA_LIMIT
                    | Self::QUOTA_MAX_SHELLS
                    | Self::QUOTA_MAX_OPERATIONS
                    | Self::QUOTA_USER
                    | Self::QUOTA_SYSTEM
                    | Self::QUOTA_MAX_SHELLUSERS
                    | 2_150_859_236..=2_150_859_242
            )
        ) || self.subcode_name() == Some("QuotaLimit")
    }

    /// Access was denied: code 5 or subcode `AccessDenied`.
    pub fn is_access_denied(&self) -> bool {
        self.wsman_code == Some(Self::ACCESS_DENIED) || self.subcode_name() == Some("AccessDenied")
    }

    /// The most specific human-readable text: the `WSManFault` message, else the reason,
    /// trimmed.
    pub fn text(&self) -> &str {
        match self.message.as_deref().map(str::trim) {
            Some(m) if !m.is_empty() => m,
            _ => self.reason.trim(),
        }
    }
}

/// Display helper: `WS-Man fault <code> (<subcode>): <text>`.
struct Summary<'a>(&'a WsmanFault);

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fault = self.0;
        f.write_str("WS-Man fault")?;
        if let Some(code) = fault.wsman_code {
            write!(f, " {code}")?;
        }
        let sub = fault
            .subcode
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .or_else(|| Some(fault.soap_code.trim()).filter(|s| !s.is_empty()));
        if let Some(sub) = sub {
            write!(f, " ({sub})")?;
        }
        let text = fault.text();
        let text = text.strip_suffix('.').unwrap_or(text).trim_end();
        if !text.is_empty() {
            write!(f, ": {text}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn display_matches_the_documented_shape() {
        assert_eq!(
            WsmanFault::timed_out().to_string(),
            "WS-Man fault 2150858793 (w:TimedOut): The WS-Management service cannot complete the operation within the time specified in OperationTimeout"
        );
        let bare = WsmanFault::new("s:Receiver", None, "  ");
        assert_eq!(bare.to_string(), "WS-Man fault (s:Receiver)");
        let machine = WsmanFault::access_denied().with_machine("hv01");
        assert_eq!(
            machine.to_string(),
            "WS-Man fault 5 (w:AccessDenied): Access is denied"
        );
    }

    #[test]
    fn predicates() {
        assert!(WsmanFault::timed_out().is_timed_out());
        assert!(!WsmanFault::timed_out().is_shell_gone());
        assert!(WsmanFault::shell_not_found("X").is_shell_gone());
        assert!(WsmanFault::command_not_found().is_shell_gone());
        assert!(WsmanFault::shell_quota(30).is_quota_exceeded());
        assert!(WsmanFault::operation_quota(1500).is_quota_exceeded());
        assert!(WsmanFault::access_denied().is_access_denied());
        let by_subcode = WsmanFault::new("s:Receiver", Some("env:TimedOut"), "");
        assert!(by_subcode.is_timed_out());
        let by_code = WsmanFault {
            wsman_code: Some(WsmanFault::SHELL_QUOTA),
            ..WsmanFault::new("s:Receiver", None, "")
        };
        assert!(by_code.is_quota_exceeded());
        assert!(!by_code.is_timed_out());
    }
}
