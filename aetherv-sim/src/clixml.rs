//! Writing PowerShell's CLIXML stderr stream (`#< CLIXML` + `<Objs>`), as powershell.exe does
//! when its error stream is redirected.

/// The line that introduces a CLIXML document on stderr.
pub(crate) const HEADER: &str = "#< CLIXML\r\n";

/// One record on the error stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StreamRecord {
    /// An error record, as its formatted lines (each is written with a trailing CRLF).
    Error(Vec<String>),
    /// A warning message.
    Warning(String),
}

/// Escapes text for a CLIXML `<S>` element: XML entities, `_xHHHH_` for control characters
/// and characters outside the BMP (as UTF-16 surrogates), and `_x005F_` for an underscore that
/// would otherwise start an escape.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '_' if chars.peek() == Some(&'x') => out.push_str("_x005F_"),
            c if (c as u32) < 0x20 || c == '\u{7f}' || (c as u32) > 0xFFFF => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("_x{unit:04X}_"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// The complete stderr bytes for these records (empty when there are none).
pub(crate) fn document(records: &[StreamRecord]) -> Vec<u8> {
    if records.is_empty() {
        return Vec::new();
    }
    let mut out = String::from(HEADER);
    out.push_str(
        r#"<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">"#,
    );
    for record in records {
        match record {
            StreamRecord::Error(lines) => {
                for line in lines {
                    out.push_str(r#"<S S="Error">"#);
                    out.push_str(&escape(line));
                    out.push_str("_x000D__x000A_</S>");
                }
            }
            StreamRecord::Warning(text) => {
                out.push_str(r#"<S S="warning">"#);
                out.push_str(&escape(text));
                out.push_str("</S>");
            }
        }
    }
    out.push_str("</Objs>");
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_powershell() {
        assert_eq!(escape("a<b>&c"), "a&lt;b&gt;&amp;c");
        assert_eq!(escape("tab\there"), "tab_x0009_here");
        assert_eq!(escape("_x000D_"), "_x005F_x000D_");
        assert_eq!(escape("snake_case"), "snake_case");
        assert_eq!(escape("🚀"), "_xD83D__xDE80_");
        assert_eq!(escape("Größe"), "Größe");
    }

    #[test]
    fn documents_decode_with_the_client() {
        let records = [
            StreamRecord::Error(vec!["first : boom".to_owned(), " ".to_owned()]),
            StreamRecord::Warning("careful".to_owned()),
        ];
        let bytes = document(&records);
        assert!(bytes.starts_with(b"#< CLIXML\r\n<Objs"));
        let text = aetherv_winrm::clixml::decode(&bytes);
        assert!(text.contains("first : boom"), "{text}");
        assert!(text.contains("careful"), "{text}");
        assert!(document(&[]).is_empty());
    }
}
