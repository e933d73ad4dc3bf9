//! Building envelopes.
//!
//! Envelopes are appended straight to a byte buffer: the markup is fixed, and every value is
//! escaped with `quick_xml::escape` (plus character references for the characters XML would
//! otherwise normalise away, see the module documentation).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::{
    ANONYMOUS, CommandState, ReceiveOutput, Request, RequestHeader, Response, ShellOptions,
    WsmanFault, action, format_duration, ns,
};

/// Builds the envelope of a request.
pub fn build_request(header: &RequestHeader, request: &Request) -> String {
    let mut out = Vec::with_capacity(1536 + request_payload_hint(request));
    write_request(&mut out, header, request);
    into_string(out)
}

/// Appends the envelope of a request to `out` (no allocation beyond `out` growing).
pub fn write_request(out: &mut Vec<u8>, header: &RequestHeader, request: &Request) {
    let mut w = Out(out);
    w.raw(concat!(
        "<s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\"",
        " xmlns:a=\"http://schemas.xmlsoap.org/ws/2004/08/addressing\"",
        " xmlns:w=\"http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd\"",
        " xmlns:p=\"http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd\"",
        " xmlns:rsp=\"http://schemas.microsoft.com/wbem/wsman/1/windows/shell\">",
        "<s:Header>"
    ));
    w.element("<a:To>", &header.to, "</a:To>");
    w.raw("<a:ReplyTo><a:Address s:mustUnderstand=\"true\">");
    w.raw(ANONYMOUS);
    w.raw("</a:Address></a:ReplyTo><a:Action s:mustUnderstand=\"true\">");
    w.raw(request.action());
    w.raw("</a:Action><w:MaxEnvelopeSize s:mustUnderstand=\"true\">");
    w.raw(&header.max_envelope_size.to_string());
    w.raw("</w:MaxEnvelopeSize><a:MessageID>");
    w.uuid(header.message_id);
    w.raw("</a:MessageID><w:Locale xml:lang=\"");
    w.attr(&header.locale);
    w.raw("\" s:mustUnderstand=\"false\"/><p:DataLocale xml:lang=\"");
    w.attr(&header.locale);
    w.raw("\" s:mustUnderstand=\"false\"/><w:OperationTimeout>");
    w.raw(&format_duration(header.operation_timeout));
    w.raw("</w:OperationTimeout>");
    w.element(
        "<w:ResourceURI s:mustUnderstand=\"true\">",
        &header.resource_uri,
        "</w:ResourceURI>",
    );

    match request {
        Request::Create(options) => {
            w.raw("<w:OptionSet><w:Option Name=\"WINRS_NOPROFILE\">");
            w.raw(bool_option(options.no_profile));
            w.raw("</w:Option><w:Option Name=\"WINRS_CODEPAGE\">");
            w.raw(&options.codepage.to_string());
            w.raw("</w:Option></w:OptionSet></s:Header><s:Body>");
            write_shell(&mut w, options);
        }
        Request::Delete { shell_id } => {
            w.selector_set(shell_id);
            w.raw("</s:Header><s:Body>");
        }
        Request::Command {
            shell_id,
            command,
            arguments,
            skip_cmd_shell,
        } => {
            w.selector_set(shell_id);
            w.raw(concat!(
                "<w:OptionSet><w:Option Name=\"WINRS_CONSOLEMODE_STDIN\">TRUE</w:Option>",
                "<w:Option Name=\"WINRS_SKIP_CMD_SHELL\">"
            ));
            w.raw(bool_option(*skip_cmd_shell));
            w.raw("</w:Option></w:OptionSet></s:Header><s:Body><rsp:CommandLine>");
            w.element("<rsp:Command>", command, "</rsp:Command>");
            for argument in arguments {
                w.element("<rsp:Arguments>", argument, "</rsp:Arguments>");
            }
            w.raw("</rsp:CommandLine>");
        }
        Request::Send {
            shell_id,
            command_id,
            stream,
            data,
            end,
        } => {
            w.selector_set(shell_id);
            w.raw("</s:Header><s:Body><rsp:Send><rsp:Stream Name=\"");
            w.attr(stream);
            w.raw("\" CommandId=\"");
            w.attr(command_id);
            w.raw(if *end { "\" End=\"true\">" } else { "\">" });
            w.base64(data);
            w.raw("</rsp:Stream></rsp:Send>");
        }
        Request::Receive {
            shell_id,
            command_id,
            stream,
        } => {
            w.selector_set(shell_id);
            w.raw("</s:Header><s:Body><rsp:Receive><rsp:DesiredStream CommandId=\"");
            w.attr(command_id);
            w.raw("\">");
            w.text(stream);
            w.raw("</rsp:DesiredStream></rsp:Receive>");
        }
        Request::Signal {
            shell_id,
            command_id,
            signal,
        } => {
            w.selector_set(shell_id);
            w.raw("</s:Header><s:Body><rsp:Signal CommandId=\"");
            w.attr(command_id);
            w.raw("\"><rsp:Code>");
            w.raw(signal.uri());
            w.raw("</rsp:Code></rsp:Signal>");
        }
    }
    w.raw("</s:Body></s:Envelope>");
}

fn write_shell(w: &mut Out<'_>, options: &ShellOptions) {
    w.raw("<rsp:Shell>");
    if !options.environment.is_empty() {
        w.raw("<rsp:Environment>");
        for (name, value) in &options.environment {
            w.raw("<rsp:Variable Name=\"");
            w.attr(name);
            w.raw("\">");
            w.text(value);
            w.raw("</rsp:Variable>");
        }
        w.raw("</rsp:Environment>");
    }
    if let Some(dir) = &options.working_directory {
        w.element("<rsp:WorkingDirectory>", dir, "</rsp:WorkingDirectory>");
    }
    if let Some(idle) = options.idle_timeout {
        w.raw("<rsp:IdleTimeOut>");
        w.raw(&format_duration(idle));
        w.raw("</rsp:IdleTimeOut>");
    }
    w.element(
        "<rsp:InputStreams>",
        &options.input_streams,
        "</rsp:InputStreams>",
    );
    w.element(
        "<rsp:OutputStreams>",
        &options.output_streams,
        "</rsp:OutputStreams>",
    );
    w.raw("</rsp:Shell>");
}

/// Builds the envelope of a successful response, shaped like Windows' (server side).
///
/// A CreateResponse carries `x:ResourceCreated` (whose `Address` is the anonymous endpoint,
/// since the listener URL is not known here) with the `ShellId` selector, and the `rsp:Shell`
/// element with `ShellId`, `ResourceUri` and the default streams.
pub fn build_response(
    relates_to: uuid::Uuid,
    message_id: uuid::Uuid,
    response: &Response,
) -> String {
    let hint = match response {
        Response::Received(output) => output
            .chunks
            .iter()
            .map(|c| c.data.len() * 4 / 3 + 160)
            .sum(),
        _ => 0,
    };
    let mut out = Vec::with_capacity(1024 + hint);
    write_response(&mut out, relates_to, message_id, response);
    into_string(out)
}

/// Appends the envelope of a successful response to `out` (see [`build_response`]).
pub fn write_response(
    out: &mut Vec<u8>,
    relates_to: uuid::Uuid,
    message_id: uuid::Uuid,
    response: &Response,
) {
    let mut w = Out(out);
    let action = super::ResponseKind::from(response).response_action();
    w.response_header(action, relates_to, message_id);
    match response {
        Response::Created { shell_id } => {
            w.raw("<x:ResourceCreated><a:Address>");
            w.raw(ANONYMOUS);
            w.raw("</a:Address><a:ReferenceParameters><w:ResourceURI>");
            w.raw(super::RESOURCE_URI_CMD);
            w.raw("</w:ResourceURI>");
            w.selector_set(shell_id);
            w.raw("</a:ReferenceParameters></x:ResourceCreated><rsp:Shell>");
            w.element("<rsp:ShellId>", shell_id, "</rsp:ShellId>");
            w.raw("<rsp:ResourceUri>");
            w.raw(super::RESOURCE_URI_CMD);
            w.raw(concat!(
                "</rsp:ResourceUri><rsp:InputStreams>stdin</rsp:InputStreams>",
                "<rsp:OutputStreams>stdout stderr</rsp:OutputStreams></rsp:Shell>"
            ));
        }
        Response::Deleted => {}
        Response::CommandStarted { command_id } => {
            w.raw("<rsp:CommandResponse>");
            w.element("<rsp:CommandId>", command_id, "</rsp:CommandId>");
            w.raw("</rsp:CommandResponse>");
        }
        Response::Sent => w.raw("<rsp:SendResponse/>"),
        Response::Received(output) => write_receive(&mut w, output),
        Response::Signalled => w.raw("<rsp:SignalResponse/>"),
    }
    w.raw("</s:Body></s:Envelope>");
}

fn write_receive(w: &mut Out<'_>, output: &ReceiveOutput) {
    w.raw("<rsp:ReceiveResponse>");
    for chunk in &output.chunks {
        w.raw("<rsp:Stream Name=\"");
        w.raw(chunk.stream.name());
        w.raw("\"");
        if let Some(id) = &chunk.command_id {
            w.raw(" CommandId=\"");
            w.attr(id);
            w.raw("\"");
        }
        w.raw(if chunk.end { " End=\"true\">" } else { ">" });
        w.base64(&chunk.data);
        w.raw("</rsp:Stream>");
    }
    if let Some(CommandState {
        command_id,
        done,
        exit_code,
    }) = &output.state
    {
        w.raw("<rsp:CommandState");
        if let Some(id) = command_id {
            w.raw(" CommandId=\"");
            w.attr(id);
            w.raw("\"");
        }
        w.raw(" State=\"http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/");
        w.raw(if *done { "Done\"" } else { "Running\"" });
        match exit_code {
            Some(code) => {
                w.raw("><rsp:ExitCode>");
                w.raw(&code.to_string());
                w.raw("</rsp:ExitCode></rsp:CommandState>");
            }
            None => w.raw("/>"),
        }
    }
    w.raw("</rsp:ReceiveResponse>");
}

/// Builds the envelope of a SOAP fault, shaped like Windows' (server side).
pub fn build_fault(relates_to: uuid::Uuid, message_id: uuid::Uuid, fault: &WsmanFault) -> String {
    let mut out = Vec::with_capacity(1536);
    write_fault(&mut out, relates_to, message_id, fault);
    into_string(out)
}

/// Appends the envelope of a SOAP fault to `out` (see [`build_fault`]).
pub fn write_fault(
    out: &mut Vec<u8>,
    relates_to: uuid::Uuid,
    message_id: uuid::Uuid,
    fault: &WsmanFault,
) {
    let mut w = Out(out);
    w.response_header(action::FAULT, relates_to, message_id);
    w.raw("<s:Fault><s:Code>");
    w.element("<s:Value>", &fault.soap_code, "</s:Value>");
    if let Some(subcode) = &fault.subcode {
        w.element("<s:Subcode><s:Value>", subcode, "</s:Value></s:Subcode>");
    }
    w.raw("</s:Code><s:Reason>");
    w.element("<s:Text xml:lang=\"en-US\">", &fault.reason, "</s:Text>");
    w.raw("</s:Reason>");
    if fault.wsman_code.is_some() || fault.message.is_some() || fault.machine.is_some() {
        w.raw("<s:Detail><f:WSManFault xmlns:f=\"");
        w.raw(ns::WSMAN_FAULT);
        w.raw("\"");
        if let Some(code) = fault.wsman_code {
            w.raw(" Code=\"");
            w.raw(&code.to_string());
            w.raw("\"");
        }
        if let Some(machine) = &fault.machine {
            w.raw(" Machine=\"");
            w.attr(machine);
            w.raw("\"");
        }
        match &fault.message {
            Some(message) => {
                w.raw(">");
                w.element("<f:Message>", message, "</f:Message>");
                w.raw("</f:WSManFault>");
            }
            None => w.raw("/>"),
        }
        w.raw("</s:Detail>");
    }
    w.raw("</s:Fault></s:Body></s:Envelope>");
}

fn bool_option(value: bool) -> &'static str {
    if value { "TRUE" } else { "FALSE" }
}

fn request_payload_hint(request: &Request) -> usize {
    match request {
        Request::Send { data, .. } => data.len() / 3 * 4 + 4,
        Request::Command {
            command, arguments, ..
        } => command.len() + arguments.iter().map(|a| a.len() + 32).sum::<usize>(),
        _ => 0,
    }
}

fn into_string(out: Vec<u8>) -> String {
    // Only `&str` pieces and ASCII base64 are ever appended, so this never takes the lossy path.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Appends markup and escaped values to a buffer.
struct Out<'a>(&'a mut Vec<u8>);

impl Out<'_> {
    fn raw(&mut self, s: &str) {
        self.0.extend_from_slice(s.as_bytes());
    }

    fn text(&mut self, s: &str) {
        push_escaped(self.0, s, false);
    }

    fn attr(&mut self, s: &str) {
        push_escaped(self.0, s, true);
    }

    fn element(&mut self, open: &str, value: &str, close: &str) {
        self.raw(open);
        self.text(value);
        self.raw(close);
    }

    fn uuid(&mut self, id: uuid::Uuid) {
        let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        self.raw("uuid:");
        self.raw(id.hyphenated().encode_upper(&mut buf));
    }

    fn base64(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let start = self.0.len();
        let len = data.len().div_ceil(3) * 4;
        self.0.resize(start + len, 0);
        // The slice is exactly the encoded length, so this cannot fail; on the impossible error,
        // drop the partial output rather than panic.
        if STANDARD.encode_slice(data, &mut self.0[start..]).is_err() {
            self.0.truncate(start);
        }
    }

    fn selector_set(&mut self, shell_id: &str) {
        self.element(
            "<w:SelectorSet><w:Selector Name=\"ShellId\">",
            shell_id,
            "</w:Selector></w:SelectorSet>",
        );
    }

    fn response_header(&mut self, action: &str, relates_to: uuid::Uuid, message_id: uuid::Uuid) {
        self.raw(concat!(
            "<s:Envelope xml:lang=\"en-US\" xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\"",
            " xmlns:a=\"http://schemas.xmlsoap.org/ws/2004/08/addressing\"",
            " xmlns:x=\"http://schemas.xmlsoap.org/ws/2004/09/transfer\"",
            " xmlns:w=\"http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd\"",
            " xmlns:rsp=\"http://schemas.microsoft.com/wbem/wsman/1/windows/shell\"",
            " xmlns:p=\"http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd\">",
            "<s:Header><a:Action>"
        ));
        self.raw(action);
        self.raw("</a:Action><a:MessageID>");
        self.uuid(message_id);
        self.raw("</a:MessageID><a:To>");
        self.raw(ANONYMOUS);
        self.raw("</a:To><a:RelatesTo>");
        self.uuid(relates_to);
        self.raw("</a:RelatesTo></s:Header><s:Body>");
    }
}

/// Characters XML 1.0 cannot carry, even as character references.
fn is_forbidden(c: char) -> bool {
    (c < ' ' && !matches!(c, '\t' | '\n' | '\r')) || matches!(c, '\u{FFFE}' | '\u{FFFF}')
}

/// Appends `s` escaped for text content (`attr == false`) or a double-quoted attribute value.
fn push_escaped(out: &mut Vec<u8>, s: &str, attr: bool) {
    // Fast path: nothing below U+0020 and no 0xEF lead byte (U+FFFE / U+FFFF start with it).
    if !s.bytes().any(|b| b < 0x20 || b == 0xEF) {
        push_quick_xml_escaped(out, s, attr);
        return;
    }
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let replacement = match c {
            '\r' => "&#xD;",
            '\t' if attr => "&#x9;",
            '\n' if attr => "&#xA;",
            c if is_forbidden(c) => "\u{FFFD}",
            _ => continue,
        };
        push_quick_xml_escaped(out, &s[start..i], attr);
        out.extend_from_slice(replacement.as_bytes());
        start = i + c.len_utf8();
    }
    push_quick_xml_escaped(out, &s[start..], attr);
}

fn push_quick_xml_escaped(out: &mut Vec<u8>, s: &str, attr: bool) {
    let escaped = if attr {
        quick_xml::escape::escape(s)
    } else {
        quick_xml::escape::partial_escape(s)
    };
    out.extend_from_slice(escaped.as_bytes());
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn escaped(s: &str, attr: bool) -> String {
        let mut out = Vec::new();
        push_escaped(&mut out, s, attr);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn escapes_specials_and_protects_whitespace() {
        assert_eq!(escaped("a<b>&\"'", false), "a&lt;b&gt;&amp;\"'");
        assert_eq!(escaped("a<b>&\"'", true), "a&lt;b&gt;&amp;&quot;&apos;");
        assert_eq!(escaped("l1\r\nl2\tx", false), "l1&#xD;\nl2\tx");
        assert_eq!(escaped("l1\r\nl2\tx", true), "l1&#xD;&#xA;l2&#x9;x");
        assert_eq!(
            escaped("bell\u{7}\u{FFFF}é€😀", false),
            "bell\u{FFFD}\u{FFFD}é€😀"
        );
    }
}
