//! PowerShell's CLIXML error stream, turned into readable text.
//!
//! When `powershell.exe` runs with redirected standard error (as under WinRM), it writes its
//! error, warning, verbose, debug, information and progress streams to stderr as serialized
//! objects: a `#< CLIXML` line followed by one or more `<Objs>` documents, e.g.
//!
//! ```text
//! #< CLIXML
//! <Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">
//! <Obj S="progress" RefId="0">...</Obj>
//! <S S="Error">Write-Error : disk full_x000D__x000A_</S>
//! <S S="warning">low memory</S>
//! </Objs>
//! ```
//!
//! [`decode`] keeps the error text (strings as written, `ErrorRecord` objects by their
//! `ToString`), prefixes warnings, verbose and debug messages the way the console does, and
//! drops progress records.

use std::borrow::Cow;

use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::{Reader, XmlVersion};

/// The marker line PowerShell writes before CLIXML.
const MARKER: &str = "#< CLIXML";

/// Whether a stderr payload is PowerShell CLIXML (starts with `#< CLIXML`, after an optional
/// UTF-8 byte order mark and leading whitespace).
pub fn is_clixml(data: &[u8]) -> bool {
    let data = data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data);
    let start = data
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(data.len());
    data[start..].starts_with(MARKER.as_bytes())
}

/// Decodes CLIXML into readable text.
///
/// - Error records: `<S S="Error">` strings as written (they carry their own line ends), and
///   `ErrorRecord` objects through their `ToString`, one per line.
/// - Warnings, verbose and debug messages get the console's prefixes `WARNING: `,
///   `VERBOSE: ` and `DEBUG: `, one per line; information records are kept as they are.
/// - Progress records are dropped.
/// - `_xHHHH_` escapes are decoded (surrogate pairs combined, `_x000D__x000A_` is a line end)
///   and line ends are normalised to `\n`.
/// - Several `<Objs>` documents (several `#< CLIXML` markers) are decoded in order; text
///   outside them is kept.
///
/// Anything that is not CLIXML is returned unchanged (invalid UTF-8 replaced). Malformed or
/// truncated CLIXML yields what could be decoded followed by the rest with its markup stripped;
/// this function never panics.
pub fn decode(data: &[u8]) -> String {
    let text = String::from_utf8_lossy(data);
    if !is_clixml(data) {
        return text.into_owned();
    }
    let text = text.strip_prefix('\u{FEFF}').unwrap_or(&text);
    // The marker is not XML (`< CLIXML` would read as a broken tag): blank it out, keeping
    // offsets. A literal `<` cannot occur inside the XML text, so only markers are hit.
    let text = text.replace(MARKER, &" ".repeat(MARKER.len()));
    let mut out = Output::default();
    if let Err(offset) = decode_documents(&text, &mut out) {
        let rest = text.get(offset..).unwrap_or_default();
        out.raw(&strip_markup(rest));
    }
    out.finish()
}

/// Decodes everything; on malformed XML returns the byte offset from which nothing was used.
fn decode_documents(text: &str, out: &mut Output) -> Result<(), usize> {
    let mut reader = Reader::from_str(text);
    let mut used = 0usize;
    let mut in_objs = false;
    loop {
        let event = reader.read_event().map_err(|_| used)?;
        match event {
            Event::Eof => return Ok(()),
            Event::Start(start) if in_objs => {
                let stream = attribute(&reader, &start, b"S");
                let is_obj = start.local_name().as_ref() == b"Obj";
                let (record, complete) = read_record(&mut reader).map_err(|_| used)?;
                let text = if is_obj {
                    record.to_string.or(record.message).unwrap_or_default()
                } else {
                    record.text
                };
                out.record(stream.as_deref(), &text, is_obj);
                if !complete {
                    return Ok(());
                }
                used = position(&reader);
            }
            Event::Start(_) => in_objs = true,
            Event::End(_) if in_objs => {
                in_objs = false;
                used = position(&reader);
            }
            Event::Text(t) if !in_objs => {
                let raw = t.decode().map_err(|_| used)?;
                for line in raw.split_inclusive('\n') {
                    if !line.trim().is_empty() {
                        out.raw(line);
                    }
                }
                used = position(&reader);
            }
            Event::GeneralRef(r) if !in_objs => {
                out.raw(&resolve_reference(&r).ok_or(used)?);
                used = position(&reader);
            }
            _ => {
                if !in_objs {
                    used = position(&reader);
                }
            }
        }
    }
}

fn position(reader: &Reader<&[u8]>) -> usize {
    usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX)
}

fn attribute(reader: &Reader<&[u8]>, start: &BytesStart<'_>, name: &[u8]) -> Option<String> {
    start
        .attributes()
        .flatten()
        .find(|a| a.key.local_name().as_ref() == name)
        .and_then(|a| {
            a.decoded_and_normalized_value(XmlVersion::Implicit1_0, reader.decoder())
                .ok()
                .map(Cow::into_owned)
        })
}

/// What one record (a direct child of `<Objs>`) holds.
#[derive(Default)]
struct Record {
    /// Its direct text (for `<S>` and other primitives).
    text: String,
    /// The `<ToString>` child of an `<Obj>`.
    to_string: Option<String>,
    /// The first member named `Message` or `MessageData` inside an `<Obj>` (fallback).
    message: Option<String>,
}

#[derive(Clone, Copy, PartialEq)]
enum Capture {
    ToString,
    Message,
}

/// Reads the rest of a record after its start tag. Returns it and whether its end tag was seen.
fn read_record(reader: &mut Reader<&[u8]>) -> Result<(Record, bool), quick_xml::Error> {
    let mut record = Record::default();
    let mut depth = 0usize;
    let mut capture: Option<(Capture, usize, String)> = None;
    loop {
        let event = reader.read_event()?;
        let piece: Cow<'_, str> = match event {
            Event::Eof => {
                finish_capture(&mut record, capture.take());
                return Ok((record, false));
            }
            Event::Start(start) => {
                depth += 1;
                if capture.is_none() {
                    if depth == 1 && start.local_name().as_ref() == b"ToString" {
                        capture = Some((Capture::ToString, depth, String::new()));
                    } else if record.message.is_none()
                        && matches!(
                            attribute(reader, &start, b"N").as_deref(),
                            Some("Message" | "MessageData")
                        )
                    {
                        capture = Some((Capture::Message, depth, String::new()));
                    }
                }
                continue;
            }
            Event::End(_) => {
                if depth == 0 {
                    finish_capture(&mut record, capture.take());
                    return Ok((record, true));
                }
                if capture.as_ref().is_some_and(|(_, d, _)| *d == depth) {
                    finish_capture(&mut record, capture.take());
                }
                depth -= 1;
                continue;
            }
            Event::Text(t) => t.xml10_content()?,
            Event::CData(c) => c.decode()?,
            Event::GeneralRef(r) => match resolve_reference(&r) {
                Some(s) => Cow::Owned(s),
                None => continue,
            },
            _ => continue,
        };
        if let Some((_, _, buf)) = capture.as_mut() {
            buf.push_str(&piece);
        } else if depth == 0 {
            record.text.push_str(&piece);
        }
    }
}

fn finish_capture(record: &mut Record, capture: Option<(Capture, usize, String)>) {
    match capture {
        Some((Capture::ToString, _, text)) => record.to_string = Some(text),
        Some((Capture::Message, _, text)) if record.message.is_none() => {
            record.message = Some(text)
        }
        _ => {}
    }
}

fn resolve_reference(r: &BytesRef<'_>) -> Option<String> {
    if let Ok(Some(c)) = r.resolve_char_ref() {
        return Some(c.to_string());
    }
    let name = r.decode().ok()?;
    quick_xml::escape::resolve_predefined_entity(&name).map(str::to_owned)
}

/// The decoded text being built.
#[derive(Default)]
struct Output {
    text: String,
}

impl Output {
    fn raw(&mut self, s: &str) {
        self.text.push_str(s);
    }

    fn start_line(&mut self) {
        if !self.text.is_empty() && !self.text.ends_with('\n') {
            self.text.push('\n');
        }
    }

    /// Appends one record of `stream` (`S` attribute); `whole_line` for objects.
    fn record(&mut self, stream: Option<&str>, text: &str, whole_line: bool) {
        let stream = stream.unwrap_or_default();
        let prefix = if stream.eq_ignore_ascii_case("progress") {
            return;
        } else if stream.eq_ignore_ascii_case("warning") {
            Some("WARNING: ")
        } else if stream.eq_ignore_ascii_case("verbose") {
            Some("VERBOSE: ")
        } else if stream.eq_ignore_ascii_case("debug") {
            Some("DEBUG: ")
        } else {
            None
        };
        let decoded = decode_escapes(text);
        if prefix.is_none() && !whole_line {
            self.text.push_str(&decoded);
            return;
        }
        if decoded.trim().is_empty() && prefix.is_none() {
            return;
        }
        self.start_line();
        if let Some(prefix) = prefix {
            self.text.push_str(prefix);
        }
        self.text.push_str(&decoded);
        self.start_line();
    }

    fn finish(self) -> String {
        if self.text.contains('\r') {
            self.text.replace("\r\n", "\n")
        } else {
            self.text
        }
    }
}

/// Decodes PowerShell's `_xHHHH_` escapes (UTF-16 code units; pairs combine into one
/// character, a lone surrogate becomes U+FFFD).
pub(crate) fn decode_escapes(text: &str) -> Cow<'_, str> {
    if !text.contains("_x") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut units: Vec<u16> = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("_x") {
        let candidate = &rest[at..];
        match escape_unit(candidate) {
            Some(unit) => {
                if at > 0 {
                    flush_units(&mut units, &mut out);
                    out.push_str(&rest[..at]);
                }
                units.push(unit);
                rest = &candidate[7..];
            }
            None => {
                flush_units(&mut units, &mut out);
                out.push_str(&rest[..at + 2]);
                rest = &candidate[2..];
            }
        }
    }
    flush_units(&mut units, &mut out);
    out.push_str(rest);
    Cow::Owned(out)
}

/// The code unit of `_xHHHH_` at the start of `s`.
fn escape_unit(s: &str) -> Option<u16> {
    let bytes = s.as_bytes();
    if bytes.len() < 7 || bytes[6] != b'_' {
        return None;
    }
    let hex = s.get(2..6)?;
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u16::from_str_radix(hex, 16).ok()
}

fn flush_units(units: &mut Vec<u16>, out: &mut String) {
    out.extend(
        char::decode_utf16(units.drain(..)).map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER)),
    );
}

/// Best-effort text of broken CLIXML: markup removed, references and escapes decoded.
fn strip_markup(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('<') {
        plain.push_str(&rest[..open]);
        match rest[open..].find('>') {
            Some(close) => rest = &rest[open + close + 1..],
            None => {
                rest = "";
                break;
            }
        }
    }
    plain.push_str(rest);
    let unescaped =
        quick_xml::escape::unescape(&plain).map_or_else(|_| plain.clone(), Cow::into_owned);
    let mut out = String::new();
    for line in decode_escapes(&unescaped).split_inclusive('\n') {
        if !line.trim().is_empty() {
            out.push_str(line);
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const HEAD: &str = "#< CLIXML\r\n<Objs Version=\"1.1.0.1\" xmlns=\"http://schemas.microsoft.com/powershell/2004/04\">";

    #[test]
    fn detects_the_marker() {
        assert!(is_clixml(b"#< CLIXML\r\n<Objs/>"));
        assert!(is_clixml(b"\xEF\xBB\xBF\r\n#< CLIXML"));
        assert!(!is_clixml(b"plain error"));
        assert!(!is_clixml(b""));
    }

    #[test]
    fn passes_other_text_through() {
        assert_eq!(decode(b"Access denied\r\n"), "Access denied\r\n");
        assert_eq!(decode(b"bad \xFF byte"), "bad \u{FFFD} byte");
    }

    #[test]
    fn decodes_escapes() {
        assert_eq!(decode_escapes("a_x000D__x000A_b"), "a\r\nb");
        assert_eq!(decode_escapes("_xD83D__xDE00_!"), "😀!");
        assert_eq!(decode_escapes("lone _xD83D_ x"), "lone \u{FFFD} x");
        assert_eq!(
            decode_escapes("_x005F_x0041_ _x_ _xZZZZ_ _x12"),
            "_x0041_ _x_ _xZZZZ_ _x12"
        );
        assert_eq!(decode_escapes("é_x00E9_"), "éé");
    }

    #[test]
    fn streams_and_prefixes() {
        let xml = format!(
            "{HEAD}<S S=\"Error\">boom_x000D__x000A_</S><S S=\"warning\">careful</S><S S=\"verbose\">v</S><S S=\"debug\">d</S><Obj S=\"progress\" RefId=\"0\"><TN RefId=\"0\"><T>System.Management.Automation.PSCustomObject</T></TN><MS><I64 N=\"SourceId\">1</I64></MS></Obj><S S=\"information\">info</S></Objs>"
        );
        assert_eq!(
            decode(xml.as_bytes()),
            "boom\nWARNING: careful\nVERBOSE: v\nDEBUG: d\ninfo"
        );
    }

    #[test]
    fn malformed_input_keeps_what_it_can() {
        let xml = format!(
            "{HEAD}<S S=\"Error\">first_x000D__x000A_</S><S S=\"Error\">sec&amp;ond <b>x</c>"
        );
        assert_eq!(decode(xml.as_bytes()), "first\nsec&ond x");
        let truncated = format!("{HEAD}<S S=\"Error\">first_x000D__x000A_</S><S S=\"Err");
        assert_eq!(decode(truncated.as_bytes()), "first\n");
    }
}
