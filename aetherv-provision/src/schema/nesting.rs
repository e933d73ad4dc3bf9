//! A linear pre-scan that bounds how deeply a JSON or YAML document nests flow collections
//! (`[...]` and `{...}`) before a parser sees it.
//!
//! The YAML parser (`serde_yaml` on libyaml) spends time proportional to the flow nesting depth
//! on every token, so a body of 30,000 nested `{a: ` costs seconds of CPU. This scan reads every
//! byte once and refuses a document whose flow collections nest deeper than [`MAX_NESTING`].
//!
//! Two counts are taken and both must stay within the bound:
//! - a lexical count that follows libyaml's rules for where a flow collection opens: brackets
//!   inside quoted scalars, comments and block scalars (`|`, `>`) do not count; inside a flow
//!   collection the rules are exact (plain scalars cannot hold brackets there); in block context
//!   a quoted scalar is taken to end with its line, so a misread line cannot hide what follows;
//! - a count that ignores quoting altogether (opening brackets add one, closing ones take one
//!   away, never below zero), a backstop should the lexical count ever lose its place.
//!
//! Block collections (indentation) are not bounded here: libyaml handles them in linear time and
//! `serde_yaml` refuses more than 128 nested levels when it builds the value.

/// The deepest nesting of `[...]` / `{...}` a document may use.
///
/// Provisioning bodies nest at most five levels (`{values: {disks: [{...}]}}`) and the hosts
/// file fewer. libyaml's cost per token grows with the flow depth it sits at, so the bound sets
/// the worst case: a YAML body of the 64 KiB YAML bound ([`super::MAX_YAML_BYTES`]) filled at
/// depth 16 costs under 30 ms for both of the server's parses
/// (`cargo bench -p aetherv-benches --bench body_parsing`), within the 50 ms budget per body.
pub const MAX_NESTING: usize = 16;

/// A document nests its lists and mappings deeper than [`MAX_NESTING`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "nesting deeper than {MAX_NESTING} levels of lists and mappings (line {line}, column {column})"
)]
pub struct NestingError {
    /// 1-based line of the bracket that opened one level too many.
    pub line: usize,
    /// 1-based column (in bytes) of that bracket.
    pub column: usize,
}

/// Checks that `body` (JSON or YAML) nests flow collections at most [`MAX_NESTING`] deep.
///
/// Reads every byte once or twice, never allocates.
///
/// # Errors
///
/// [`NestingError`] with the position of the first bracket past the bound.
pub fn check_nesting(body: &str) -> Result<(), NestingError> {
    let bytes = body.as_bytes();
    let first = backstop(bytes).into_iter().chain(lexical(bytes)).min();
    match first {
        Some(at) => Err(position(bytes, at)),
        None => Ok(()),
    }
}

/// The 1-based line and column of byte `at`.
fn position(bytes: &[u8], at: usize) -> NestingError {
    let before = &bytes[..at.min(bytes.len())];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    NestingError {
        line,
        column: at - line_start + 1,
    }
}

/// The quote-blind count: the index of the first opening bracket past the bound, if any.
fn backstop(bytes: &[u8]) -> Option<usize> {
    let mut depth = 0usize;
    for (i, b) in bytes.iter().enumerate() {
        match b {
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Some(i);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_flow_indicator(b: u8) -> bool {
    matches!(b, b',' | b'[' | b']' | b'{' | b'}')
}

/// Index just past a quoted scalar opened at `start`; `stop_at_line_end` ends it at the line's
/// end as well (block context, see the module documentation).
fn skip_quoted(bytes: &[u8], start: usize, stop_at_line_end: bool) -> usize {
    let quote = bytes[start];
    let mut i = start + 1;
    while i < bytes.len() {
        let b = bytes[i];
        if stop_at_line_end && b == b'\n' {
            return i;
        }
        if quote == b'"' && b == b'\\' {
            i += 2;
            continue;
        }
        if b == quote {
            if quote == b'\'' && bytes.get(i + 1) == Some(&b'\'') {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    bytes.len()
}

/// Index of the end of the line holding `i` (the `\n` or the end of the document).
fn line_end(bytes: &[u8], i: usize) -> usize {
    bytes[i..]
        .iter()
        .position(|b| *b == b'\n')
        .map_or(bytes.len(), |p| i + p)
}

/// Number of leading spaces of the line starting at `start`, and whether it holds nothing else.
fn indent_of(bytes: &[u8], start: usize) -> (usize, bool) {
    let spaces = bytes[start..].iter().take_while(|b| **b == b' ').count();
    let rest = bytes.get(start + spaces).copied();
    (spaces, matches!(rest, None | Some(b'\n' | b'\r')))
}

/// Index of the first line after a block scalar whose header ends at `header_end` (the `\n`
/// closing the header line or the end), given the indentation of the enclosing node
/// (`parent`, -1 at the top level) and an explicit indentation indicator, if any.
fn skip_block_scalar(
    bytes: &[u8],
    header_end: usize,
    parent: isize,
    explicit: Option<usize>,
) -> usize {
    let mut content_indent: Option<usize> = explicit.map(|d| {
        let base = usize::try_from(parent).unwrap_or(0);
        if parent >= 0 { base + d } else { d }
    });
    let mut line = header_end + 1;
    while line < bytes.len() {
        let (indent, blank) = indent_of(bytes, line);
        if !blank {
            let needed = match content_indent {
                Some(needed) => needed,
                None => {
                    let needed = usize::try_from(parent.saturating_add(1))
                        .unwrap_or(0)
                        .max(1);
                    if indent < needed {
                        return line;
                    }
                    content_indent = Some(indent);
                    indent
                }
            };
            if indent < needed {
                return line;
            }
        }
        line = line_end(bytes, line) + 1;
    }
    bytes.len()
}

/// The libyaml-shaped count: the index of the first opening bracket past the bound, if any.
fn lexical(bytes: &[u8]) -> Option<usize> {
    let n = bytes.len();
    let mut depth = 0usize;
    let mut i = 0usize;
    // Block context bookkeeping for the current line.
    let mut line_start = 0usize;
    let mut indent = 0usize;
    let mut node_pos = 0usize;
    let mut last_indicator: Option<usize> = None;
    let mut at_line_start = true;
    while i < n {
        if depth == 0 {
            if at_line_start {
                at_line_start = false;
                line_start = i;
                indent = indent_of(bytes, i).0;
                // Sequence entries and explicit keys before the line's first node.
                let mut p = i + indent;
                last_indicator = None;
                while p < n
                    && matches!(bytes[p], b'-' | b'?')
                    && bytes.get(p + 1).is_none_or(|b| is_blank(*b))
                {
                    last_indicator = Some(p - line_start);
                    p += 1;
                    while p < n && matches!(bytes[p], b' ' | b'\t') {
                        p += 1;
                    }
                }
                node_pos = p;
                i = p;
                continue;
            }
            let b = bytes[i];
            match b {
                b'\n' => {
                    at_line_start = true;
                    i += 1;
                }
                b' ' | b'\t' | b'\r' => i += 1,
                b'#' => i = line_end(bytes, i),
                b'[' | b'{' => {
                    depth = 1;
                    i += 1;
                }
                b'\'' | b'"' => i = skip_quoted(bytes, i, true),
                b'|' | b'>' => {
                    let end = line_end(bytes, i);
                    let explicit = bytes[i + 1..end]
                        .iter()
                        .take_while(|b| !is_blank(**b) && **b != b'#')
                        .find(|b| b.is_ascii_digit())
                        .map(|b| usize::from(b - b'0'));
                    let parent = if i == node_pos {
                        match last_indicator {
                            Some(col) => isize::try_from(col).unwrap_or(isize::MAX),
                            None => isize::try_from(indent).unwrap_or(isize::MAX) - 1,
                        }
                    } else {
                        isize::try_from(node_pos - line_start).unwrap_or(isize::MAX)
                    };
                    i = skip_block_scalar(bytes, end, parent, explicit);
                    at_line_start = true;
                }
                b'&' | b'*' | b'!' => {
                    while i < n && !is_blank(bytes[i]) {
                        i += 1;
                    }
                }
                _ => {
                    // A plain scalar: content up to `: ` or the line's end. A comment after
                    // it is read as content too, which can only count more.
                    while i < n && bytes[i] != b'\n' {
                        if bytes[i] == b':' && bytes.get(i + 1).is_none_or(|b| is_blank(*b)) {
                            i += 1;
                            break;
                        }
                        i += 1;
                    }
                }
            }
            continue;
        }
        // Flow context: libyaml's rules.
        let b = bytes[i];
        match b {
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Some(i);
                }
                i += 1;
            }
            b']' | b'}' => {
                depth -= 1;
                i += 1;
            }
            b'#' => i = line_end(bytes, i),
            b'\'' | b'"' => i = skip_quoted(bytes, i, false),
            b'&' | b'*' | b'!' => {
                while i < n && !is_blank(bytes[i]) && !is_flow_indicator(bytes[i]) {
                    i += 1;
                }
            }
            _ if is_blank(b) || b == b',' || b == b':' || b == b'?' => i += 1,
            _ => {
                // A plain scalar: ends at a flow indicator, at `:` before a blank or a flow
                // indicator, or at `#` after blanks.
                while i < n {
                    let c = bytes[i];
                    if is_flow_indicator(c) {
                        break;
                    }
                    if c == b':'
                        && bytes
                            .get(i + 1)
                            .is_none_or(|b| is_blank(*b) || is_flow_indicator(*b) || *b == b'?')
                    {
                        break;
                    }
                    if is_blank(c) {
                        while i < n && is_blank(bytes[i]) {
                            i += 1;
                        }
                        if bytes.get(i) == Some(&b'#') {
                            break;
                        }
                        continue;
                    }
                    i += 1;
                }
            }
        }
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn nested(open: &str, times: usize) -> String {
        open.repeat(times)
    }

    #[test]
    fn shallow_documents_pass() {
        for doc in [
            "a: 1\nb: [1, 2, {c: [3]}]\n",
            "{\"a\": [1, {\"b\": [\"]]]\"]}]}",
            "user_data: |\n  {{{{{{{{\n  [[[[[[[[\nnext: 1\n",
            "note: 'it''s [[' # [[[[\n",
            "",
        ] {
            assert_eq!(check_nesting(doc), Ok(()), "{doc}");
        }
    }

    #[test]
    fn deep_flow_mappings_are_refused_with_their_position() {
        let doc = nested("{a: ", 1000);
        let error = check_nesting(&doc).unwrap_err();
        assert_eq!(error.line, 1);
        assert_eq!(error.column, MAX_NESTING * 4 + 1);
        assert!(
            error
                .to_string()
                .starts_with(&format!("nesting deeper than {MAX_NESTING} levels"))
        );
    }

    #[test]
    fn exactly_the_bound_passes_and_one_more_fails() {
        let ok = format!("{}{}", "[".repeat(MAX_NESTING), "]".repeat(MAX_NESTING));
        assert_eq!(check_nesting(&ok), Ok(()));
        let deep = format!(
            "{}{}",
            "[".repeat(MAX_NESTING + 1),
            "]".repeat(MAX_NESTING + 1)
        );
        assert!(check_nesting(&deep).is_err());
    }

    #[test]
    fn quoted_closers_do_not_hide_depth() {
        // Each level hides a closing bracket in a string: only the lexical count sees it.
        let doc = "[\"]\", ".repeat(200);
        assert!(check_nesting(&doc).is_err());
        let doc = format!("a: {}", "{k: '}', v: ".repeat(200));
        assert!(check_nesting(&doc).is_err());
    }

    #[test]
    fn block_scalars_end_where_the_indentation_does() {
        let doc = format!("- a: |\n    text\n  b: {}", "[\"]\", ".repeat(200));
        assert!(check_nesting(&doc).is_err());
        let doc = format!("a: |2\n   '\n b: {}", "[\"]\", ".repeat(200));
        assert!(check_nesting(&doc).is_err());
    }
}
