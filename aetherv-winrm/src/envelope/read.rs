//! Parsing envelopes with quick-xml's borrowing namespace-aware reader.
//!
//! Elements are matched by namespace URI and local name, never by prefix. Text is borrowed from
//! the input whenever it holds no references, and stream data is base64-decoded straight from
//! the input into the chunk's buffer.

use std::borrow::Cow;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use quick_xml::encoding::Decoder;
use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::name::{Namespace, QName, ResolveResult};
use quick_xml::{NsReader, XmlVersion};

use super::duration::truncate;
use super::{
    CommandState, DEFAULT_LOCALE, DEFAULT_MAX_ENVELOPE_SIZE, DEFAULT_OPERATION_TIMEOUT,
    EnvelopeError, ReceiveOutput, Request, RequestHeader, Response, ResponseHeader, ResponseKind,
    ShellOptions, Signal, Stream, StreamChunk, WsmanFault, action, ns, parse_duration,
};

type Result<T, E = EnvelopeError> = std::result::Result<T, E>;

/// Base64 as Windows writes it, decoded leniently about padding and trailing bits.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Parses a request envelope (server side).
///
/// Requires `Action`, `To`, `MessageID` and `ResourceURI`; `MaxEnvelopeSize`,
/// `OperationTimeout` and `Locale` default to 153600, 60 s and `en-US`. Shell options absent
/// from a Create default as in [`ShellOptions::default`]. Of a Send with several `Stream`
/// elements only the first is returned. An action other than the six shell actions is
/// [`EnvelopeError::UnsupportedAction`].
pub fn parse_request(xml: &[u8]) -> Result<(RequestHeader, Request)> {
    let mut p = Parser::new(xml);
    let (hdr, body_empty) = p.open_envelope()?;
    let action = hdr.action.clone().ok_or(EnvelopeError::Missing("Action"))?;
    let header = RequestHeader {
        to: hdr.to.clone().ok_or(EnvelopeError::Missing("To"))?,
        message_id: parse_uuid(
            hdr.message_id
                .as_deref()
                .ok_or(EnvelopeError::Missing("MessageID"))?,
            "MessageID",
        )?,
        resource_uri: hdr
            .resource_uri
            .clone()
            .ok_or(EnvelopeError::Missing("ResourceURI"))?,
        max_envelope_size: match hdr.max_envelope_size.as_deref() {
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| invalid("MaxEnvelopeSize", v))?,
            None => DEFAULT_MAX_ENVELOPE_SIZE,
        },
        operation_timeout: match hdr.operation_timeout.as_deref() {
            Some(v) => parse_duration(v).map_err(|e| rename(e, "OperationTimeout"))?,
            None => DEFAULT_OPERATION_TIMEOUT,
        },
        locale: hdr
            .locale
            .clone()
            .unwrap_or_else(|| DEFAULT_LOCALE.to_owned()),
    };

    let request = match action.as_str() {
        action::CREATE => {
            let shell = p
                .body_child(body_empty, Ns::Shell, b"Shell")?
                .ok_or(EnvelopeError::Missing("Shell"))?;
            Request::Create(p.shell_options(&shell, &hdr.options)?)
        }
        action::DELETE => Request::Delete {
            shell_id: hdr.shell_id()?,
        },
        action::COMMAND => {
            let line = p
                .body_child(body_empty, Ns::Shell, b"CommandLine")?
                .ok_or(EnvelopeError::Missing("CommandLine"))?;
            let mut command = None;
            let mut arguments = Vec::new();
            if !line.empty {
                while let Some(el) = p.next_child()? {
                    if el.is(Ns::Shell, b"Command") {
                        command = Some(p.text(&el)?.into_owned());
                    } else if el.is(Ns::Shell, b"Arguments") {
                        arguments.push(p.text(&el)?.into_owned());
                    } else {
                        p.skip(&el)?;
                    }
                }
            }
            let skip_cmd_shell = match hdr.option("WINRS_SKIP_CMD_SHELL") {
                Some(v) => parse_bool(v, "WINRS_SKIP_CMD_SHELL")?,
                None => false,
            };
            Request::Command {
                shell_id: hdr.shell_id()?,
                command: command.ok_or(EnvelopeError::Missing("Command"))?,
                arguments,
                skip_cmd_shell,
            }
        }
        action::SEND => {
            let send = p
                .body_child(body_empty, Ns::Shell, b"Send")?
                .ok_or(EnvelopeError::Missing("Send"))?;
            let stream = match send.empty {
                true => None,
                false => p.child(Ns::Shell, b"Stream")?,
            }
            .ok_or(EnvelopeError::Missing("Stream"))?;
            let mut name = None;
            let mut command_id = None;
            let mut end = false;
            stream.for_each_attr(|key, value| {
                match key {
                    b"Name" => name = Some(value.into_owned()),
                    b"CommandId" => command_id = Some(value.trim().to_owned()),
                    b"End" => end = parse_bool(&value, "Stream/@End")?,
                    _ => {}
                }
                Ok(())
            })?;
            let text = p.text(&stream)?;
            Request::Send {
                shell_id: hdr.shell_id()?,
                command_id: command_id.ok_or(EnvelopeError::Missing("CommandId"))?,
                stream: name.ok_or(EnvelopeError::Missing("Stream/@Name"))?,
                data: decode_base64(&text, "Stream")?,
                end,
            }
        }
        action::RECEIVE => {
            let receive = p
                .body_child(body_empty, Ns::Shell, b"Receive")?
                .ok_or(EnvelopeError::Missing("Receive"))?;
            let desired = match receive.empty {
                true => None,
                false => p.child(Ns::Shell, b"DesiredStream")?,
            }
            .ok_or(EnvelopeError::Missing("DesiredStream"))?;
            let command_id = desired.attr(b"CommandId")?.map(|v| v.trim().to_owned());
            let stream = p.text(&desired)?.into_owned();
            Request::Receive {
                shell_id: hdr.shell_id()?,
                command_id: command_id.ok_or(EnvelopeError::Missing("CommandId"))?,
                stream,
            }
        }
        action::SIGNAL => {
            let signal = p
                .body_child(body_empty, Ns::Shell, b"Signal")?
                .ok_or(EnvelopeError::Missing("Signal"))?;
            let command_id = signal.attr(b"CommandId")?.map(|v| v.trim().to_owned());
            let code = match signal.empty {
                true => None,
                false => p.child(Ns::Shell, b"Code")?,
            }
            .ok_or(EnvelopeError::Missing("Signal/Code"))?;
            let code = p.text(&code)?;
            let signal = Signal::from_uri(&code).ok_or_else(|| invalid("Signal/Code", &code))?;
            Request::Signal {
                shell_id: hdr.shell_id()?,
                command_id: command_id.ok_or(EnvelopeError::Missing("CommandId"))?,
                signal,
            }
        }
        _ => return Err(EnvelopeError::UnsupportedAction(action)),
    };
    p.finish()?;
    Ok((header, request))
}

/// Parses the response to a request of `kind` (client side).
///
/// A SOAP fault body yields [`EnvelopeError::Fault`] whatever `kind` is. A present `Action`
/// other than the expected response action is [`EnvelopeError::UnexpectedAction`]; an absent
/// one is accepted. Unknown elements are ignored.
pub fn parse_response(kind: ResponseKind, xml: &[u8]) -> Result<Response> {
    parse_response_with_header(kind, xml).map(|(_, response)| response)
}

/// Like [`parse_response`], also returning the addressing headers (to check `RelatesTo`).
pub fn parse_response_with_header(
    kind: ResponseKind,
    xml: &[u8],
) -> Result<(ResponseHeader, Response)> {
    let mut p = Parser::new(xml);
    let (hdr, body_empty) = p.open_envelope()?;
    let first = if body_empty { None } else { p.next_child()? };
    if let Some(el) = &first
        && el.is(Ns::Soap, b"Fault")
    {
        return Err(EnvelopeError::Fault(Box::new(p.fault(el)?)));
    }
    let expected = kind.response_action();
    if let Some(found) = &hdr.action
        && found != expected
    {
        return Err(EnvelopeError::UnexpectedAction {
            expected,
            found: found.clone(),
        });
    }
    let header = ResponseHeader {
        action: hdr.action.clone(),
        message_id: hdr
            .message_id
            .as_deref()
            .and_then(|v| parse_uuid(v, "MessageID").ok()),
        relates_to: hdr
            .relates_to
            .as_deref()
            .and_then(|v| parse_uuid(v, "RelatesTo").ok()),
    };

    let response = match kind {
        ResponseKind::Create => {
            let mut from_shell = None;
            let mut from_selector = None;
            let mut next = first;
            while let Some(el) = next {
                if el.is(Ns::Shell, b"Shell") {
                    if !el.empty
                        && let Some(id) = p.child(Ns::Shell, b"ShellId")?
                    {
                        from_shell = Some(p.text(&id)?.trim().to_owned());
                        p.skip_rest()?;
                    }
                } else if el.is(Ns::Transfer, b"ResourceCreated") {
                    from_selector = p.resource_created_shell_id(&el)?;
                } else {
                    p.skip(&el)?;
                }
                next = p.next_child()?;
            }
            let shell_id = from_shell
                .filter(|id| !id.is_empty())
                .or(from_selector.filter(|id| !id.is_empty()))
                .ok_or(EnvelopeError::Missing("ShellId"))?;
            Response::Created { shell_id }
        }
        ResponseKind::Delete => Response::Deleted,
        ResponseKind::Command => {
            let mut command_id = None;
            let mut next = first;
            while let Some(el) = next {
                if el.is(Ns::Shell, b"CommandResponse") && !el.empty {
                    if let Some(id) = p.child(Ns::Shell, b"CommandId")? {
                        command_id = Some(p.text(&id)?.trim().to_owned());
                        p.skip_rest()?;
                    }
                } else {
                    p.skip(&el)?;
                }
                next = p.next_child()?;
            }
            let command_id = command_id
                .filter(|id| !id.is_empty())
                .ok_or(EnvelopeError::Missing("CommandId"))?;
            Response::CommandStarted { command_id }
        }
        ResponseKind::Send => Response::Sent,
        ResponseKind::Signal => Response::Signalled,
        ResponseKind::Receive => {
            let mut next = first;
            loop {
                match next {
                    Some(el) if el.is(Ns::Shell, b"ReceiveResponse") => {
                        break Response::Received(p.receive(&el)?);
                    }
                    Some(el) => p.skip(&el)?,
                    None => return Err(EnvelopeError::Missing("ReceiveResponse")),
                }
                next = p.next_child()?;
            }
        }
    };
    p.finish()?;
    Ok((header, response))
}

/// The SOAP fault of a response envelope (or of a bare `Fault` document), if it is one.
///
/// Returns `None` for anything else, including malformed XML.
pub fn parse_fault(xml: &[u8]) -> Option<WsmanFault> {
    let mut p = Parser::new(xml);
    let root = p.root().ok()?;
    if root.is(Ns::Soap, b"Fault") {
        return p.fault(&root).ok();
    }
    if !root.is(Ns::Soap, b"Envelope") || root.empty {
        return None;
    }
    while let Some(el) = p.next_child().ok()? {
        if el.is(Ns::Soap, b"Body") {
            if el.empty {
                return None;
            }
            let first = p.next_child().ok()??;
            return if first.is(Ns::Soap, b"Fault") {
                p.fault(&first).ok()
            } else {
                None
            };
        }
        p.skip(&el).ok()?;
    }
    None
}

/// The namespaces this module knows.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Ns {
    Soap,
    Addressing,
    Wsman,
    Wsmv,
    Shell,
    Transfer,
    Fault,
    Other,
}

impl Ns {
    fn of(result: &ResolveResult<'_>) -> Ns {
        let ResolveResult::Bound(Namespace(uri)) = result else {
            return Ns::Other;
        };
        // Dispatch on the length first: at most two comparisons per element.
        let candidates: &[(&str, Ns)] = match uri.len() {
            39 => &[(ns::SOAP, Ns::Soap)],
            46 => &[(ns::WSMAN, Ns::Wsman), (ns::TRANSFER, Ns::Transfer)],
            48 => &[(ns::ADDRESSING, Ns::Addressing)],
            51 => &[(ns::WSMV, Ns::Wsmv)],
            52 => &[(ns::WSMAN_FAULT, Ns::Fault)],
            55 => &[(ns::SHELL, Ns::Shell)],
            _ => &[],
        };
        candidates
            .iter()
            .find(|(candidate, _)| *uri == candidate.as_bytes())
            .map_or(Ns::Other, |&(_, known)| known)
    }

    /// The prefix Windows conventionally binds to this namespace.
    fn prefix(self) -> Option<&'static str> {
        Some(match self {
            Ns::Soap => "s",
            Ns::Addressing => "a",
            Ns::Wsman => "w",
            Ns::Wsmv => "p",
            Ns::Shell => "rsp",
            Ns::Transfer => "x",
            Ns::Fault => "f",
            Ns::Other => return None,
        })
    }
}

/// A start (or empty) tag that was just read.
struct El<'i> {
    ns: Ns,
    start: BytesStart<'i>,
    empty: bool,
    decoder: Decoder,
}

impl<'i> El<'i> {
    fn is(&self, ns: Ns, local: &[u8]) -> bool {
        self.ns == ns && self.local() == local
    }

    fn local(&self) -> &[u8] {
        let name = self.start.name().into_inner();
        match name.iter().rposition(|&b| b == b':') {
            Some(i) => &name[i + 1..],
            None => name,
        }
    }

    /// Calls `f` with the local name and value of each attribute that is not a namespace
    /// declaration (`xml:lang` is passed as `xml:lang`).
    fn for_each_attr(&self, mut f: impl FnMut(&[u8], Cow<'_, str>) -> Result<()>) -> Result<()> {
        for attr in self.start.attributes() {
            let attr = attr.map_err(xml_error)?;
            let key = attr.key.into_inner();
            let local = match key.iter().position(|&b| b == b':') {
                Some(i) => match &key[..i] {
                    b"xmlns" => continue,
                    b"xml" => key,
                    _ => &key[i + 1..],
                },
                None if key == b"xmlns" => continue,
                None => key,
            };
            let value = attr
                .decoded_and_normalized_value(XmlVersion::Implicit1_0, self.decoder)
                .map_err(xml_error)?;
            f(local, value)?;
        }
        Ok(())
    }

    fn attr(&self, name: &[u8]) -> Result<Option<String>> {
        let mut found = None;
        self.for_each_attr(|key, value| {
            if key == name && found.is_none() {
                found = Some(value.into_owned());
            }
            Ok(())
        })?;
        Ok(found)
    }
}

/// Header values as found (validated by the caller).
#[derive(Default)]
struct Header {
    action: Option<String>,
    to: Option<String>,
    message_id: Option<String>,
    relates_to: Option<String>,
    resource_uri: Option<String>,
    max_envelope_size: Option<String>,
    operation_timeout: Option<String>,
    locale: Option<String>,
    selectors: Vec<(String, String)>,
    options: Vec<(String, String)>,
}

impl Header {
    fn shell_id(&self) -> Result<String> {
        self.selectors
            .iter()
            .find(|(name, _)| name == "ShellId")
            .map(|(_, value)| value.clone())
            .ok_or(EnvelopeError::Missing("ShellId"))
    }

    fn option(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

struct Parser<'i> {
    reader: NsReader<&'i [u8]>,
    /// Number of open elements.
    depth: usize,
}

impl<'i> Parser<'i> {
    fn new(xml: &'i [u8]) -> Self {
        Self {
            reader: NsReader::from_reader(xml),
            depth: 0,
        }
    }

    fn event(&mut self) -> Result<(Ns, Event<'i>)> {
        let (result, event) = self.reader.read_resolved_event().map_err(xml_error)?;
        match &event {
            Event::Start(_) => self.depth += 1,
            Event::End(_) => self.depth = self.depth.saturating_sub(1),
            _ => {}
        }
        Ok((Ns::of(&result), event))
    }

    /// Reads the rest of the document, checking that it is well-formed and ends after the root.
    fn finish(&mut self) -> Result<()> {
        while self.depth > 0 {
            if let Event::Eof = self.event()?.1 {
                return Err(unexpected_eof());
            }
        }
        loop {
            match self.event()?.1 {
                Event::Eof => return Ok(()),
                Event::Start(_) | Event::Empty(_) | Event::End(_) => {
                    return Err(EnvelopeError::Xml(
                        "content after the root element".to_owned(),
                    ));
                }
                _ => {}
            }
        }
    }

    fn element(&self, ns: Ns, start: BytesStart<'i>, empty: bool) -> El<'i> {
        El {
            ns,
            start,
            empty,
            decoder: self.reader.decoder(),
        }
    }

    /// The document element.
    fn root(&mut self) -> Result<El<'i>> {
        loop {
            match self.event()? {
                (ns, Event::Start(start)) => return Ok(self.element(ns, start, false)),
                (ns, Event::Empty(start)) => return Ok(self.element(ns, start, true)),
                (_, Event::Eof) => return Err(EnvelopeError::Xml("no root element".to_owned())),
                (_, Event::End(_)) => {
                    return Err(EnvelopeError::Xml(
                        "end tag before the root element".to_owned(),
                    ));
                }
                _ => {}
            }
        }
    }

    /// The next child element of the current element, or `None` at the current element's end.
    fn next_child(&mut self) -> Result<Option<El<'i>>> {
        loop {
            match self.event()? {
                (ns, Event::Start(start)) => return Ok(Some(self.element(ns, start, false))),
                (ns, Event::Empty(start)) => return Ok(Some(self.element(ns, start, true))),
                (_, Event::End(_)) => return Ok(None),
                (_, Event::Eof) => return Err(unexpected_eof()),
                _ => {}
            }
        }
    }

    /// The first child `{ns}local` of the current (non-empty) element, skipping others; `None`
    /// when the element ends first.
    fn child(&mut self, ns: Ns, local: &[u8]) -> Result<Option<El<'i>>> {
        while let Some(el) = self.next_child()? {
            if el.is(ns, local) {
                return Ok(Some(el));
            }
            self.skip(&el)?;
        }
        Ok(None)
    }

    fn body_child(&mut self, body_empty: bool, ns: Ns, local: &[u8]) -> Result<Option<El<'i>>> {
        if body_empty {
            Ok(None)
        } else {
            self.child(ns, local)
        }
    }

    /// Consumes the rest of `el` (after its start tag).
    fn skip(&mut self, el: &El<'i>) -> Result<()> {
        if !el.empty {
            self.skip_rest()?;
        }
        Ok(())
    }

    /// Consumes the rest of the current element, through its end tag.
    fn skip_rest(&mut self) -> Result<()> {
        let mut depth = 0usize;
        loop {
            match self.event()?.1 {
                Event::Start(_) => depth += 1,
                Event::End(_) if depth == 0 => return Ok(()),
                Event::End(_) => depth -= 1,
                Event::Eof => return Err(unexpected_eof()),
                _ => {}
            }
        }
    }

    /// The character data directly inside `el` (references resolved, line ends normalised);
    /// child elements are skipped. Borrows from the input when it can.
    fn text(&mut self, el: &El<'i>) -> Result<Cow<'i, str>> {
        let mut text: Option<Cow<'i, str>> = None;
        if el.empty {
            return Ok(Cow::Borrowed(""));
        }
        let mut depth = 0usize;
        loop {
            let piece = match self.event()?.1 {
                Event::Text(t) if depth == 0 => t.xml10_content().map_err(xml_error)?,
                Event::CData(c) if depth == 0 => c.decode().map_err(xml_error)?,
                Event::GeneralRef(r) if depth == 0 => resolve_reference(&r)?,
                Event::Start(_) => {
                    depth += 1;
                    continue;
                }
                Event::End(_) if depth == 0 => break,
                Event::End(_) => {
                    depth -= 1;
                    continue;
                }
                Event::Eof => return Err(unexpected_eof()),
                _ => continue,
            };
            match &mut text {
                None => text = Some(piece),
                Some(t) => t.to_mut().push_str(&piece),
            }
        }
        Ok(text.unwrap_or(Cow::Borrowed("")))
    }

    /// All text inside `el`. Without child elements it is returned as written; otherwise every
    /// text run is trimmed and the non-empty runs are joined with a space.
    fn deep_text(&mut self, el: &El<'i>) -> Result<String> {
        if el.empty {
            return Ok(String::new());
        }
        let mut current = String::new();
        let mut runs: Vec<String> = Vec::new();
        let mut nested = false;
        let mut depth = 0usize;
        let flush = |current: &mut String, runs: &mut Vec<String>| {
            let run = current.trim();
            if !run.is_empty() {
                runs.push(run.to_owned());
            }
            current.clear();
        };
        loop {
            match self.event()?.1 {
                Event::Text(t) => current.push_str(&t.xml10_content().map_err(xml_error)?),
                Event::CData(c) => current.push_str(&c.decode().map_err(xml_error)?),
                Event::GeneralRef(r) => current.push_str(&resolve_reference(&r)?),
                Event::Start(_) => {
                    nested = true;
                    depth += 1;
                    flush(&mut current, &mut runs);
                }
                Event::Empty(_) => {
                    nested = true;
                    flush(&mut current, &mut runs);
                }
                Event::End(_) if depth == 0 => break,
                Event::End(_) => {
                    depth -= 1;
                    flush(&mut current, &mut runs);
                }
                Event::Eof => return Err(unexpected_eof()),
                _ => {}
            }
        }
        if !nested {
            return Ok(current);
        }
        flush(&mut current, &mut runs);
        Ok(runs.join(" "))
    }

    /// The text of `el` read as a QName, its prefix rewritten to the conventional one of the
    /// namespace it is bound to (kept as written when unknown).
    fn qname_text(&mut self, el: &El<'i>) -> Result<String> {
        let text = self.text(el)?;
        let value = text.trim();
        if let Some((prefix, local)) = value.split_once(':')
            && !prefix.is_empty()
            && !local.contains(':')
            && !value.contains(char::is_whitespace)
        {
            // The element's own scope is still active: it is popped on the next read.
            let (result, _) = self
                .reader
                .resolver()
                .resolve_element(QName(value.as_bytes()));
            if let Some(canonical) = Ns::of(&result).prefix() {
                return Ok(format!("{canonical}:{local}"));
            }
        }
        Ok(value.to_owned())
    }

    /// Reads the envelope up to the start of its body. Returns the header and whether the body
    /// is an empty element.
    fn open_envelope(&mut self) -> Result<(Header, bool)> {
        let root = self.root()?;
        if !root.is(Ns::Soap, b"Envelope") {
            let detail = if root.local() == b"Envelope" {
                "the Envelope is not in the SOAP 1.2 namespace".to_owned()
            } else {
                format!(
                    "the root element is {:?}, not a SOAP Envelope",
                    String::from_utf8_lossy(root.start.name().into_inner())
                )
            };
            return Err(EnvelopeError::Invalid {
                field: "Envelope",
                detail,
            });
        }
        if root.empty {
            return Err(EnvelopeError::Missing("Body"));
        }
        let mut header = Header::default();
        while let Some(el) = self.next_child()? {
            if el.is(Ns::Soap, b"Header") {
                if !el.empty {
                    self.header(&mut header)?;
                }
            } else if el.is(Ns::Soap, b"Body") {
                return Ok((header, el.empty));
            } else {
                self.skip(&el)?;
            }
        }
        Err(EnvelopeError::Missing("Body"))
    }

    fn header(&mut self, header: &mut Header) -> Result<()> {
        while let Some(el) = self.next_child()? {
            let slot = match (el.ns, el.local()) {
                (Ns::Addressing, b"Action") => &mut header.action,
                (Ns::Addressing, b"To") => &mut header.to,
                (Ns::Addressing, b"MessageID") => &mut header.message_id,
                (Ns::Addressing, b"RelatesTo") => &mut header.relates_to,
                (Ns::Wsman, b"ResourceURI") => &mut header.resource_uri,
                (Ns::Wsman, b"MaxEnvelopeSize") => &mut header.max_envelope_size,
                (Ns::Wsman, b"OperationTimeout") => &mut header.operation_timeout,
                (Ns::Wsman, b"Locale") => {
                    header.locale = el.attr(b"xml:lang")?;
                    self.skip(&el)?;
                    continue;
                }
                (Ns::Wsman, b"SelectorSet") => {
                    self.name_value_set(&el, b"Selector", &mut header.selectors)?;
                    continue;
                }
                (Ns::Wsman, b"OptionSet") => {
                    self.name_value_set(&el, b"Option", &mut header.options)?;
                    continue;
                }
                _ => {
                    self.skip(&el)?;
                    continue;
                }
            };
            *slot = Some(self.text(&el)?.trim().to_owned());
        }
        Ok(())
    }

    /// Reads `<SelectorSet><Selector Name="n">v</Selector>...` (or `OptionSet`/`Option`).
    fn name_value_set(
        &mut self,
        set: &El<'i>,
        item: &[u8],
        out: &mut Vec<(String, String)>,
    ) -> Result<()> {
        if set.empty {
            return Ok(());
        }
        while let Some(el) = self.next_child()? {
            if el.is(Ns::Wsman, item) {
                let name = el.attr(b"Name")?.unwrap_or_default();
                let value = self.text(&el)?.trim().to_owned();
                out.push((name.trim().to_owned(), value));
            } else {
                self.skip(&el)?;
            }
        }
        Ok(())
    }

    fn shell_options(
        &mut self,
        shell: &El<'i>,
        options: &[(String, String)],
    ) -> Result<ShellOptions> {
        let mut out = ShellOptions::default();
        for (name, value) in options {
            match name.as_str() {
                "WINRS_NOPROFILE" => out.no_profile = parse_bool(value, "WINRS_NOPROFILE")?,
                "WINRS_CODEPAGE" => {
                    out.codepage = value
                        .trim()
                        .parse()
                        .map_err(|_| invalid("WINRS_CODEPAGE", value))?;
                }
                _ => {}
            }
        }
        if shell.empty {
            return Ok(out);
        }
        while let Some(el) = self.next_child()? {
            if el.ns != Ns::Shell {
                self.skip(&el)?;
                continue;
            }
            match el.local() {
                b"Environment" if !el.empty => {
                    while let Some(var) = self.next_child()? {
                        if var.is(Ns::Shell, b"Variable") {
                            let name = var
                                .attr(b"Name")?
                                .ok_or(EnvelopeError::Missing("Variable/@Name"))?;
                            let value = self.text(&var)?.into_owned();
                            out.environment.push((name, value));
                        } else {
                            self.skip(&var)?;
                        }
                    }
                }
                b"WorkingDirectory" => out.working_directory = Some(self.text(&el)?.into_owned()),
                b"IdleTimeOut" => {
                    let text = self.text(&el)?;
                    out.idle_timeout =
                        Some(parse_duration(&text).map_err(|e| rename(e, "IdleTimeOut"))?);
                }
                b"InputStreams" => out.input_streams = self.text(&el)?.into_owned(),
                b"OutputStreams" => out.output_streams = self.text(&el)?.into_owned(),
                _ => self.skip(&el)?,
            }
        }
        Ok(out)
    }

    /// The ShellId selector inside `x:ResourceCreated`.
    fn resource_created_shell_id(&mut self, created: &El<'i>) -> Result<Option<String>> {
        let mut found = None;
        if created.empty {
            return Ok(None);
        }
        while let Some(el) = self.next_child()? {
            if el.is(Ns::Addressing, b"ReferenceParameters") && !el.empty {
                while let Some(inner) = self.next_child()? {
                    if inner.is(Ns::Wsman, b"SelectorSet") {
                        let mut selectors = Vec::new();
                        self.name_value_set(&inner, b"Selector", &mut selectors)?;
                        if let Some((_, id)) = selectors.into_iter().find(|(n, _)| n == "ShellId") {
                            found = Some(id);
                        }
                    } else {
                        self.skip(&inner)?;
                    }
                }
            } else {
                self.skip(&el)?;
            }
        }
        Ok(found)
    }

    fn receive(&mut self, response: &El<'i>) -> Result<ReceiveOutput> {
        let mut out = ReceiveOutput::default();
        if response.empty {
            return Ok(out);
        }
        while let Some(el) = self.next_child()? {
            if el.is(Ns::Shell, b"Stream") {
                let mut name = None;
                let mut command_id = None;
                let mut end = false;
                el.for_each_attr(|key, value| {
                    match key {
                        b"Name" => name = Some(value.into_owned()),
                        b"CommandId" => command_id = Some(value.trim().to_owned()),
                        b"End" => end = parse_bool(&value, "Stream/@End")?,
                        _ => {}
                    }
                    Ok(())
                })?;
                let name = name.ok_or(EnvelopeError::Missing("Stream/@Name"))?;
                let stream =
                    Stream::from_name(name.trim()).ok_or_else(|| EnvelopeError::Invalid {
                        field: "Stream/@Name",
                        detail: format!("unknown stream {:?}", truncate(&name, 64)),
                    })?;
                let text = self.text(&el)?;
                out.chunks.push(StreamChunk {
                    stream,
                    command_id,
                    data: decode_base64(&text, "Stream")?,
                    end,
                });
            } else if el.is(Ns::Shell, b"CommandState") {
                let mut command_id = None;
                let mut state = None;
                el.for_each_attr(|key, value| {
                    match key {
                        b"CommandId" => command_id = Some(value.trim().to_owned()),
                        b"State" => state = Some(value.into_owned()),
                        _ => {}
                    }
                    Ok(())
                })?;
                let state = state.ok_or(EnvelopeError::Missing("CommandState/@State"))?;
                let done = state.trim().rsplit('/').next() == Some("Done");
                let mut exit_code = None;
                if !el.empty {
                    while let Some(child) = self.next_child()? {
                        if child.is(Ns::Shell, b"ExitCode") {
                            let text = self.text(&child)?;
                            exit_code = Some(
                                text.trim()
                                    .parse::<i64>()
                                    .map_err(|_| invalid("ExitCode", &text))?,
                            );
                        } else {
                            self.skip(&child)?;
                        }
                    }
                }
                out.state = Some(CommandState {
                    command_id,
                    done,
                    exit_code,
                });
            } else {
                self.skip(&el)?;
            }
        }
        Ok(out)
    }

    fn fault(&mut self, fault_el: &El<'i>) -> Result<WsmanFault> {
        let mut fault = WsmanFault::new(String::new(), None, String::new());
        let mut wmi_code = None;
        let mut wmi_message = None;
        if fault_el.empty {
            return Ok(fault);
        }
        while let Some(el) = self.next_child()? {
            if el.is(Ns::Soap, b"Code") && !el.empty {
                while let Some(part) = self.next_child()? {
                    if part.is(Ns::Soap, b"Value") {
                        fault.soap_code = self.qname_text(&part)?;
                    } else if part.is(Ns::Soap, b"Subcode") && !part.empty {
                        while let Some(sub) = self.next_child()? {
                            if sub.is(Ns::Soap, b"Value") && fault.subcode.is_none() {
                                fault.subcode = Some(self.qname_text(&sub)?);
                            } else {
                                self.skip(&sub)?;
                            }
                        }
                    } else {
                        self.skip(&part)?;
                    }
                }
            } else if el.is(Ns::Soap, b"Reason") && !el.empty {
                let mut first = true;
                while let Some(text) = self.next_child()? {
                    if first && text.is(Ns::Soap, b"Text") {
                        fault.reason = self.text(&text)?.into_owned();
                        first = false;
                    } else {
                        self.skip(&text)?;
                    }
                }
            } else if el.is(Ns::Soap, b"Detail") && !el.empty {
                while let Some(detail) = self.next_child()? {
                    match detail.local() {
                        b"WSManFault" => {
                            detail.for_each_attr(|key, value| {
                                match key {
                                    b"Code" => fault.wsman_code = parse_code(&value),
                                    b"Machine" => fault.machine = Some(value.into_owned()),
                                    _ => {}
                                }
                                Ok(())
                            })?;
                            if !detail.empty {
                                while let Some(part) = self.next_child()? {
                                    if part.local() == b"Message" && fault.message.is_none() {
                                        fault.message = Some(self.deep_text(&part)?);
                                    } else {
                                        self.skip(&part)?;
                                    }
                                }
                            }
                        }
                        b"MSFT_WmiError" if !detail.empty => {
                            while let Some(part) = self.next_child()? {
                                match part.local() {
                                    b"error_Code" => wmi_code = parse_code(&self.text(&part)?),
                                    b"Message" => {
                                        wmi_message = Some(self.text(&part)?.into_owned())
                                    }
                                    _ => self.skip(&part)?,
                                }
                            }
                        }
                        _ => self.skip(&detail)?,
                    }
                }
            } else {
                self.skip(&el)?;
            }
        }
        if fault.wsman_code.is_none() {
            fault.wsman_code = wmi_code;
        }
        if fault.message.is_none() {
            fault.message = wmi_message;
        }
        Ok(fault)
    }
}

fn resolve_reference(reference: &BytesRef<'_>) -> Result<Cow<'static, str>> {
    if let Some(c) = reference.resolve_char_ref().map_err(xml_error)? {
        return Ok(Cow::Owned(c.to_string()));
    }
    let name = reference.decode().map_err(xml_error)?;
    quick_xml::escape::resolve_predefined_entity(&name)
        .map(Cow::Borrowed)
        .ok_or_else(|| EnvelopeError::Xml(format!("unknown entity &{};", truncate(&name, 32))))
}

fn decode_base64(text: &str, field: &'static str) -> Result<Vec<u8>> {
    let input = text.as_bytes();
    let mut out = Vec::with_capacity(input.len() / 4 * 3 + 3);
    match BASE64.decode_vec(input, &mut out) {
        Ok(()) => Ok(out),
        Err(first) => {
            if !input.iter().any(u8::is_ascii_whitespace) {
                return Err(EnvelopeError::Invalid {
                    field,
                    detail: format!("bad base64: {first}"),
                });
            }
            let compact: Vec<u8> = input
                .iter()
                .copied()
                .filter(|b| !b.is_ascii_whitespace())
                .collect();
            out.clear();
            BASE64
                .decode_vec(&compact, &mut out)
                .map_err(|e| EnvelopeError::Invalid {
                    field,
                    detail: format!("bad base64: {e}"),
                })?;
            Ok(out)
        }
    }
}

/// `uuid:XXXXXXXX-...` (the `uuid:` prefix is optional; `urn:uuid:` is accepted too).
fn parse_uuid(value: &str, field: &'static str) -> Result<uuid::Uuid> {
    let value = value.trim();
    let bare = match value.get(..5) {
        Some(prefix) if prefix.eq_ignore_ascii_case("uuid:") => &value[5..],
        _ => value,
    };
    uuid::Uuid::parse_str(bare).map_err(|_| invalid(field, value))
}

/// A Windows error code: decimal, `0x` hexadecimal, or a negative (signed HRESULT) decimal.
fn parse_code(value: &str) -> Option<u32> {
    let value = value.trim();
    if let Some(hex) = value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
    {
        return u32::from_str_radix(hex, 16).ok();
    }
    value
        .parse::<u32>()
        .ok()
        .or_else(|| value.parse::<i32>().ok().map(|v| v as u32))
}

fn parse_bool(value: &str, field: &'static str) -> Result<bool> {
    let v = value.trim();
    if v.eq_ignore_ascii_case("true") || v == "1" {
        Ok(true)
    } else if v.eq_ignore_ascii_case("false") || v == "0" {
        Ok(false)
    } else {
        Err(invalid(field, value))
    }
}

fn invalid(field: &'static str, value: &str) -> EnvelopeError {
    EnvelopeError::Invalid {
        field,
        detail: format!("{:?}", truncate(value, 64)),
    }
}

fn rename(err: EnvelopeError, field: &'static str) -> EnvelopeError {
    match err {
        EnvelopeError::Invalid { detail, .. } => EnvelopeError::Invalid { field, detail },
        other => other,
    }
}

fn xml_error(err: impl std::fmt::Display) -> EnvelopeError {
    EnvelopeError::Xml(err.to_string())
}

fn unexpected_eof() -> EnvelopeError {
    EnvelopeError::Xml("unexpected end of document".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_lookup_by_length_covers_every_known_uri() {
        let all = [
            (ns::SOAP, Ns::Soap),
            (ns::ADDRESSING, Ns::Addressing),
            (ns::WSMAN, Ns::Wsman),
            (ns::WSMV, Ns::Wsmv),
            (ns::SHELL, Ns::Shell),
            (ns::TRANSFER, Ns::Transfer),
            (ns::WSMAN_FAULT, Ns::Fault),
        ];
        for (uri, expected) in all {
            assert_eq!(
                Ns::of(&ResolveResult::Bound(Namespace(uri.as_bytes()))),
                expected,
                "{uri}"
            );
        }
        assert_eq!(
            Ns::of(&ResolveResult::Bound(Namespace(
                b"http://www.w3.org/2003/05/soap-envelopX"
            ))),
            Ns::Other
        );
        assert_eq!(Ns::of(&ResolveResult::Unbound), Ns::Other);
    }
}
