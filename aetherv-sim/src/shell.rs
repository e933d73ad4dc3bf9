//! The simulated host's command interpreter: recognising what a WinRM command line runs and
//! emulating a small, documented set of `cmd.exe` and PowerShell commands. Pure functions: the
//! caller supplies stdin and gets stdout, stderr and the exit code back.
//!
//! The recognised command lines and the emulated command set are documented in the
//! [`crate`] module ("Command set"); keep both in step.

use std::collections::BTreeMap;

use crate::clixml::{self, StreamRecord};

/// Most bytes one simulated expression may produce (guards against `'x' * 1e12`).
pub(crate) const MAX_VALUE_BYTES: usize = 256 << 20;

/// What a command produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: Vec<u8>,
    pub(crate) exit_code: i64,
}

/// What a command line runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Invocation {
    /// A `cmd.exe` line.
    Cmd(String),
    /// A PowerShell script (decoded `-EncodedCommand`, or `-Command` text).
    PowerShell(String),
    /// `powershell -File <path>`.
    PowerShellFile(String),
    /// powershell.exe rejected its arguments; print this on stderr and exit with the code.
    PowerShellUsage {
        /// Message.
        message: String,
        /// Exit code.
        exit_code: i64,
    },
}

/// The command line WinRM runs: the command and its arguments joined by spaces.
pub(crate) fn command_line(command: &str, arguments: &[String]) -> String {
    let mut line = command.trim().to_owned();
    for a in arguments {
        line.push(' ');
        line.push_str(a);
    }
    line
}

/// Splits a Windows command line into tokens (whitespace separated, double quotes group and
/// are removed). Returns each token with its byte offset in `line`.
pub(crate) fn tokenize(line: &str) -> Vec<(usize, String)> {
    let mut tokens = Vec::new();
    let mut current: Option<(usize, String)> = None;
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => {
                quoted = !quoted;
                current.get_or_insert_with(|| (i, String::new()));
            }
            c if c.is_whitespace() && !quoted => {
                if let Some(t) = current.take() {
                    tokens.push(t);
                }
            }
            c => current.get_or_insert_with(|| (i, String::new())).1.push(c),
        }
    }
    if let Some(t) = current {
        tokens.push(t);
    }
    tokens
}

fn program_name(token: &str) -> String {
    let file = token.rsplit(['\\', '/']).next().unwrap_or(token);
    let lower = file.to_ascii_lowercase();
    lower.strip_suffix(".exe").unwrap_or(&lower).to_owned()
}

/// The full name of a powershell.exe parameter given (case-insensitively, possibly
/// abbreviated) as `given`.
fn powershell_parameter(given: &str) -> Option<&'static str> {
    const NAMES: [&str; 14] = [
        "command",
        "encodedcommand",
        "executionpolicy",
        "file",
        "inputformat",
        "mta",
        "noexit",
        "nologo",
        "noninteractive",
        "noprofile",
        "outputformat",
        "sta",
        "version",
        "windowstyle",
    ];
    let lower = given.trim_start_matches(['-', '/']).to_ascii_lowercase();
    match lower.as_str() {
        "" => None,
        "e" | "ec" | "en" | "enc" | "enco" => Some("encodedcommand"),
        "ep" | "ex" | "exe" | "exec" => Some("executionpolicy"),
        "c" => Some("command"),
        "f" => Some("file"),
        _ => NAMES.iter().copied().find(|n| n.starts_with(&lower)),
    }
}

/// Classifies a command line.
pub(crate) fn classify(line: &str) -> Invocation {
    classify_depth(line, 0)
}

fn classify_depth(line: &str, depth: usize) -> Invocation {
    let tokens = tokenize(line);
    let Some((_, first)) = tokens.first() else {
        return Invocation::Cmd(String::new());
    };
    let program = program_name(first);
    if program == "cmd" && depth < 4 {
        if let Some((offset, _)) = tokens
            .iter()
            .skip(1)
            .find(|(_, t)| t.eq_ignore_ascii_case("/c") || t.eq_ignore_ascii_case("/k"))
        {
            let rest = line.get(offset + 2..).unwrap_or("").trim();
            let rest = rest
                .strip_prefix('"')
                .and_then(|r| r.strip_suffix('"'))
                .unwrap_or(rest);
            return classify_depth(rest, depth + 1);
        }
        return Invocation::Cmd(String::new());
    }
    if program == "powershell" || program == "pwsh" {
        return classify_powershell(line, &tokens);
    }
    Invocation::Cmd(line.trim().to_owned())
}

fn classify_powershell(line: &str, tokens: &[(usize, String)]) -> Invocation {
    let mut i = 1;
    while i < tokens.len() {
        let (offset, token) = &tokens[i];
        if !token.starts_with('-') && !token.starts_with('/') {
            // Bare words are the command text.
            return Invocation::PowerShell(line.get(*offset..).unwrap_or("").to_owned());
        }
        let Some(name) = powershell_parameter(token) else {
            return usage(format!(
                "-{} : The term '{}' is not recognized as a valid parameter.",
                token.trim_start_matches(['-', '/']),
                token
            ));
        };
        let value = tokens.get(i + 1).map(|(_, v)| v.as_str());
        match name {
            "encodedcommand" => {
                let Some(value) = value else {
                    return usage("Cannot process the command because of a missing parameter. A command must follow -EncodedCommand.".to_owned());
                };
                return match aetherv_winrm::powershell::decode_command(value) {
                    Some(script) => Invocation::PowerShell(script),
                    None => usage("Cannot process the command because the value specified with -EncodedCommand is not properly encoded. The value must be Base64 encoded.".to_owned()),
                };
            }
            "file" => {
                let Some(value) = value else {
                    return usage(
                        "Missing the argument to the -File parameter. Specify a file path."
                            .to_owned(),
                    );
                };
                return Invocation::PowerShellFile(value.to_owned());
            }
            "command" => {
                let text = tokens
                    .get(i + 1)
                    .and_then(|(o, _)| line.get(*o..))
                    .unwrap_or("")
                    .trim();
                let text = text
                    .strip_prefix('"')
                    .and_then(|t| t.strip_suffix('"'))
                    .unwrap_or(text);
                return Invocation::PowerShell(text.to_owned());
            }
            "executionpolicy" | "inputformat" | "outputformat" | "windowstyle" | "version" => {
                i += 2;
            }
            _ => i += 1,
        }
    }
    Invocation::PowerShell(String::new())
}

fn usage(message: String) -> Invocation {
    Invocation::PowerShellUsage {
        message,
        exit_code: -196_608,
    }
}

/// What a command can see of its host.
#[derive(Debug, Clone, Default)]
pub(crate) struct ShellContext {
    /// The host name as `hostname` prints it.
    pub(crate) hostname: String,
    /// Environment variables (names are case-insensitive).
    pub(crate) environment: Vec<(String, String)>,
}

impl ShellContext {
    fn env(&self, name: &str) -> Option<String> {
        if name.eq_ignore_ascii_case("COMPUTERNAME") {
            return Some(self.hostname.to_ascii_uppercase());
        }
        self.environment
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }
}

/// Runs a `cmd.exe` line.
pub(crate) fn run_cmd(line: &str, ctx: &ShellContext) -> Outcome {
    let line = line.trim();
    let (word, rest) = match line.find(|c: char| c.is_whitespace()) {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, ""),
    };
    let lower = word.to_ascii_lowercase();
    let mut out = Outcome::default();
    match lower.as_str() {
        "" => {}
        "echo" if rest.trim().is_empty() => out.stdout = b"ECHO is on.\r\n".to_vec(),
        "echo" => out.stdout = format!("{rest}\r\n").into_bytes(),
        "echo." => out.stdout = b"\r\n".to_vec(),
        "hostname" => out.stdout = format!("{}\r\n", ctx.hostname).into_bytes(),
        "exit" => {
            let mut args = rest.split_whitespace();
            let mut code = args.next();
            if code.is_some_and(|c| c.eq_ignore_ascii_case("/b")) {
                code = args.next();
            }
            out.exit_code = code.and_then(|c| c.parse().ok()).unwrap_or(0);
        }
        _ => {
            let name = word.trim_matches('"');
            out.stderr = format!(
                "'{name}' is not recognized as an internal or external command,\r\noperable program or batch file.\r\n"
            )
            .into_bytes();
            out.exit_code = 1;
        }
    }
    out
}

/// Whether a PowerShell script reads stdin (so the caller must collect it first).
pub(crate) fn reads_stdin(script: &str) -> bool {
    let lower = script.to_ascii_lowercase();
    lower.contains("$input")
        || lower.contains("[console]::in")
        || lower.contains("openstandardinput")
}

/// Whether a script is a bootstrap that runs the script it reads from stdin (the project
/// client's fixed bootstrap for scripts too long for the command line).
pub(crate) fn is_stdin_bootstrap(script: &str) -> bool {
    let lower = script.to_ascii_lowercase();
    lower.contains("[scriptblock]::create(")
        && (lower.contains("openstandardinput") || lower.contains("readtoend"))
}

// ---------------------------------------------------------------------------------------------
// PowerShell subset
// ---------------------------------------------------------------------------------------------

const SINGLE_QUOTES: [char; 5] = ['\'', '\u{2018}', '\u{2019}', '\u{201A}', '\u{201B}'];
const DOUBLE_QUOTES: [char; 3] = ['"', '\u{201C}', '\u{201D}'];

/// Stands for an escaped `$` between unquoting and expansion (a private-use character).
const LITERAL_DOLLAR: char = '\u{E000}';

/// Language keywords: statements starting with one are outside the subset.
const KEYWORDS: [&str; 20] = [
    "begin",
    "break",
    "class",
    "continue",
    "do",
    "dynamicparam",
    "end",
    "enum",
    "filter",
    "for",
    "foreach",
    "function",
    "if",
    "param",
    "process",
    "return",
    "switch",
    "throw",
    "trap",
    "try",
];

fn is_single_quote(c: char) -> bool {
    SINGLE_QUOTES.contains(&c)
}

fn is_double_quote(c: char) -> bool {
    DOUBLE_QUOTES.contains(&c)
}

/// A statement with its position (1-based line and column) and the full source line.
#[derive(Debug, Clone)]
struct Statement<'a> {
    text: &'a str,
    line: usize,
    column: usize,
    source_line: &'a str,
}

/// Scans `s`, calling `f(byte index, char, top_level)` for every character outside quotes
/// and comments; `top_level` is true outside parentheses, braces and `$(`.
fn scan(s: &str, mut f: impl FnMut(usize, char, bool) -> bool) {
    let mut depth = 0usize;
    let mut single = false;
    let mut double = false;
    let mut comment = false;
    let mut escape = false;
    let chars: Vec<(usize, char)> = s.char_indices().collect();
    let mut k = 0;
    while k < chars.len() {
        let (i, c) = chars[k];
        k += 1;
        if comment {
            if c == '\n' {
                comment = false;
                if !f(i, c, depth == 0) {
                    return;
                }
            }
            continue;
        }
        if single {
            if is_single_quote(c) {
                if chars.get(k).is_some_and(|(_, n)| is_single_quote(*n)) {
                    k += 1;
                } else {
                    single = false;
                }
            }
            continue;
        }
        if double {
            if escape {
                escape = false;
            } else if c == '`' {
                escape = true;
            } else if is_double_quote(c) {
                if chars.get(k).is_some_and(|(_, n)| is_double_quote(*n)) {
                    k += 1;
                } else {
                    double = false;
                }
            }
            continue;
        }
        match c {
            c if is_single_quote(c) => single = true,
            c if is_double_quote(c) => double = true,
            '#' => comment = true,
            '(' | '{' | '[' => depth += 1,
            ')' | '}' | ']' => depth = depth.saturating_sub(1),
            _ => {
                if !f(i, c, depth == 0) {
                    return;
                }
            }
        }
    }
}

/// Removes `#` comments (outside quotes) from one statement's text.
fn strip_comment(s: &str) -> &str {
    let mut end = s.len();
    let mut single = false;
    let mut double = false;
    for (i, c) in s.char_indices() {
        if single {
            single = !is_single_quote(c);
        } else if double {
            double = !is_double_quote(c);
        } else if is_single_quote(c) {
            single = true;
        } else if is_double_quote(c) {
            double = true;
        } else if c == '#' {
            end = i;
            break;
        }
    }
    &s[..end]
}

fn split_statements(script: &str) -> Vec<Statement<'_>> {
    let mut cuts = Vec::new();
    scan(script, |i, c, top| {
        if top && (c == ';' || c == '\n') {
            cuts.push(i);
        }
        true
    });
    cuts.push(script.len());
    let mut statements = Vec::new();
    let mut start = 0;
    for cut in cuts {
        let raw = &script[start..cut];
        let body = strip_comment(raw);
        let trimmed_start = body.len() - body.trim_start().len();
        let text = body.trim();
        if !text.is_empty() {
            let offset = start + trimmed_start;
            let before = &script[..offset];
            let line = before.matches('\n').count() + 1;
            let line_start = before.rfind('\n').map_or(0, |p| p + 1);
            let column = script[line_start..offset].chars().count() + 1;
            let line_end = script[line_start..]
                .find('\n')
                .map_or(script.len(), |p| line_start + p);
            statements.push(Statement {
                text,
                line,
                column,
                source_line: script[line_start..line_end].trim_end_matches('\r'),
            });
        }
        start = cut + 1;
    }
    statements
}

/// Splits at top-level occurrences of `sep` (outside quotes and brackets).
fn split_top(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    scan(s, |i, c, top| {
        if top && c == sep {
            parts.push(&s[start..i]);
            start = i + c.len_utf8();
        }
        true
    });
    parts.push(&s[start..]);
    parts
}

/// Splits command arguments at top-level whitespace and commas.
fn split_arguments(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    scan(s, |i, c, top| {
        if top && (c.is_whitespace() || c == ',') {
            if i > start {
                parts.push(&s[start..i]);
            }
            start = i + c.len_utf8();
        }
        true
    });
    if start < s.len() {
        parts.push(&s[start..]);
    }
    parts
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

/// A PowerShell value in the subset.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Str(String),
    Int(i64),
    Lines(Vec<String>),
    Null,
}

impl Value {
    fn text(&self) -> String {
        match self {
            Value::Str(s) => s.clone(),
            Value::Int(n) => n.to_string(),
            Value::Lines(lines) => lines.join("\r\n"),
            Value::Null => String::new(),
        }
    }

    fn output_lines(self) -> Vec<String> {
        match self {
            Value::Str(s) => vec![s],
            Value::Int(n) => vec![n.to_string()],
            Value::Lines(lines) => lines,
            Value::Null => Vec::new(),
        }
    }
}

/// Why an expression cannot be evaluated.
#[derive(Debug, Clone, PartialEq)]
enum EvalError {
    /// Outside the subset: a parse error for the whole script.
    Unsupported(String),
    /// A bare word that is not a known command.
    UnknownCommand(String),
    /// The value would be too large.
    TooLarge,
}

struct Interpreter<'a> {
    ctx: &'a ShellContext,
    stdin: &'a str,
    variables: BTreeMap<String, Value>,
    stdout: String,
    records: Vec<StreamRecord>,
    errors: usize,
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == ':')
}

impl Interpreter<'_> {
    fn eval(&self, expr: &str) -> Result<Value, EvalError> {
        let expr = expr.trim();
        if expr.is_empty() {
            return Ok(Value::Null);
        }
        // Lowest precedence first: '+' then '*'.
        let plus = split_top(expr, '+');
        if plus.len() > 1 && plus.iter().all(|p| !p.trim().is_empty()) {
            let mut acc = self.eval(plus[0])?;
            for part in &plus[1..] {
                let rhs = self.eval(part)?;
                acc = match (acc, rhs) {
                    (Value::Int(a), Value::Int(b)) => Value::Int(a.saturating_add(b)),
                    (a, b) => {
                        let (a, b) = (a.text(), b.text());
                        if a.len() + b.len() > MAX_VALUE_BYTES {
                            return Err(EvalError::TooLarge);
                        }
                        Value::Str(a + &b)
                    }
                };
            }
            return Ok(acc);
        }
        let times = split_top(expr, '*');
        if times.len() > 1 && times.iter().all(|p| !p.trim().is_empty()) {
            let mut acc = self.eval(times[0])?;
            for part in &times[1..] {
                let count = match self.eval(part)? {
                    Value::Int(n) => n,
                    other => {
                        return Err(EvalError::Unsupported(format!(
                            "cannot multiply by {:?}",
                            other.text()
                        )));
                    }
                };
                acc = match acc {
                    Value::Int(a) => Value::Int(a.saturating_mul(count)),
                    other => {
                        let text = other.text();
                        let count = usize::try_from(count.max(0)).unwrap_or(0);
                        if text.len().saturating_mul(count) > MAX_VALUE_BYTES {
                            return Err(EvalError::TooLarge);
                        }
                        Value::Str(text.repeat(count))
                    }
                };
            }
            return Ok(acc);
        }
        self.eval_atom(expr)
    }

    fn eval_atom(&self, expr: &str) -> Result<Value, EvalError> {
        let lower = expr.to_ascii_lowercase();
        let first = expr.chars().next().unwrap_or(' ');
        if first == '(' && expr.ends_with(')') && balanced_group(expr) {
            let inner = &expr[1..expr.len() - 1];
            // A command inside parentheses, e.g. (hostname).
            if inner.trim().eq_ignore_ascii_case("hostname") {
                return Ok(Value::Str(self.ctx.hostname.clone()));
            }
            return self.eval(inner);
        }
        if is_single_quote(first) {
            return parse_single_quoted(expr)
                .map(Value::Str)
                .ok_or_else(|| EvalError::Unsupported(format!("unterminated string {expr}")));
        }
        if is_double_quote(first) {
            let body = parse_double_quoted(expr)
                .ok_or_else(|| EvalError::Unsupported(format!("unterminated string {expr}")))?;
            return self.expand(&body).map(Value::Str);
        }
        if let Ok(n) = expr.parse::<i64>() {
            return Ok(Value::Int(n));
        }
        match lower.as_str() {
            "$input" => {
                return Ok(Value::Lines(
                    self.stdin.lines().map(str::to_owned).collect(),
                ));
            }
            "[console]::in.readtoend()" => return Ok(Value::Str(self.stdin.to_owned())),
            "[environment]::machinename" => {
                return Ok(Value::Str(self.ctx.hostname.to_ascii_uppercase()));
            }
            "$lastexitcode" => return Ok(Value::Int(0)),
            "$null" => return Ok(Value::Null),
            "$true" => return Ok(Value::Str("True".to_owned())),
            "$false" => return Ok(Value::Str("False".to_owned())),
            _ => {}
        }
        if let Some(name) = lower.strip_prefix("$env:") {
            if is_identifier(name) {
                return Ok(self.ctx.env(name).map_or(Value::Null, Value::Str));
            }
        } else if let Some(name) = lower.strip_prefix('$')
            && is_identifier(name)
        {
            return Ok(self.variables.get(name).cloned().unwrap_or(Value::Null));
        }
        if first.is_alphabetic()
            && expr
                .chars()
                .all(|c| c.is_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(EvalError::UnknownCommand(expr.to_owned()));
        }
        Err(EvalError::Unsupported(expr.to_owned()))
    }

    /// Expands `$env:NAME`, `$name` and `$(...)` in double-quoted text.
    fn expand(&self, text: &str) -> Result<String, EvalError> {
        let chars: Vec<char> = text.chars().collect();
        let mut out = String::new();
        let mut k = 0;
        while k < chars.len() {
            let c = chars[k];
            if c == LITERAL_DOLLAR {
                out.push('$');
                k += 1;
                continue;
            }
            if c != '$' || k + 1 >= chars.len() {
                out.push(c);
                k += 1;
                continue;
            }
            if chars[k + 1] == '(' {
                let mut depth = 0;
                let mut end = None;
                for (j, ch) in chars.iter().enumerate().skip(k + 1) {
                    match ch {
                        '(' => depth += 1,
                        ')' => {
                            depth -= 1;
                            if depth == 0 {
                                end = Some(j);
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                let Some(end) = end else {
                    return Err(EvalError::Unsupported(text.to_owned()));
                };
                let inner: String = chars[k + 2..end].iter().collect();
                out.push_str(&self.eval(&inner)?.text());
                k = end + 1;
                continue;
            }
            let mut j = k + 1;
            while j < chars.len()
                && (chars[j].is_alphanumeric() || chars[j] == '_' || chars[j] == ':')
            {
                j += 1;
            }
            if j == k + 1 {
                out.push('$');
                k += 1;
                continue;
            }
            let name: String = chars[k..j].iter().collect();
            out.push_str(&self.eval_atom(&name)?.text());
            k = j;
        }
        Ok(out)
    }

    fn write_value(&mut self, value: Value) {
        for line in value.output_lines() {
            self.stdout.push_str(&line);
            self.stdout.push_str("\r\n");
        }
    }

    fn command_not_found(&mut self, name: &str, statement: &Statement<'_>) {
        let column = statement.column;
        let underline = format!(
            "{}{}",
            " ".repeat(column.saturating_sub(1)),
            "~".repeat(name.chars().count().max(1))
        );
        self.records.push(StreamRecord::Error(vec![
            format!(
                "{name} : The term '{name}' is not recognized as the name of a cmdlet, function, script file, or operable program. Check the spelling of the name, or if a path was included, verify that the path is correct and try again."
            ),
            format!("At line:{} char:{column}", statement.line),
            format!("+ {}", statement.source_line),
            format!("+ {underline}"),
            format!(
                "    + CategoryInfo          : ObjectNotFound: ({name}:String) [], CommandNotFoundException"
            ),
            "    + FullyQualifiedErrorId : CommandNotFoundException".to_owned(),
            " ".to_owned(),
        ]));
        self.errors += 1;
    }

    fn write_error(&mut self, statement: &Statement<'_>, message: &str) {
        self.records.push(StreamRecord::Error(vec![
            format!("{} : {message}", statement.text),
            "    + CategoryInfo          : NotSpecified: (:) [Write-Error], WriteErrorException"
                .to_owned(),
            "    + FullyQualifiedErrorId : Microsoft.PowerShell.Commands.WriteErrorException"
                .to_owned(),
            " ".to_owned(),
        ]));
        self.errors += 1;
    }

    /// Runs one statement; returns the exit code when it was `exit`.
    fn run_statement(&mut self, statement: &Statement<'_>) -> Result<Option<i64>, EvalError> {
        let text = statement.text;
        let (word, rest) = match text.find(|c: char| c.is_whitespace()) {
            Some(i) => (&text[..i], text[i..].trim()),
            None => (text, ""),
        };
        let lower = word.to_ascii_lowercase();
        if KEYWORDS.contains(&lower.as_str()) || text.contains('{') {
            return Err(EvalError::Unsupported(text.to_owned()));
        }

        // Assignment: $name = expr
        if let Some(stripped) = text.strip_prefix('$')
            && let Some((name, value)) = stripped.split_once('=')
            && is_identifier(name.trim())
            && !value.starts_with('=')
        {
            let v = self.eval(value)?;
            self.variables.insert(name.trim().to_ascii_lowercase(), v);
            return Ok(None);
        }

        // Pipelines into formatting/output cmdlets.
        let stages = split_top(text, '|');
        if stages.len() > 1 {
            for stage in &stages[1..] {
                let cmd = stage.trim().to_ascii_lowercase();
                if !matches!(
                    cmd.as_str(),
                    "write-output" | "out-string" | "out-default" | "out-host" | "echo"
                ) {
                    let name = stage.split_whitespace().next().unwrap_or(stage.trim());
                    return Err(EvalError::UnknownCommand(name.to_owned()));
                }
            }
            let first = Statement {
                text: stages[0].trim(),
                ..statement.clone()
            };
            return self.run_statement(&first);
        }

        match lower.as_str() {
            "exit" => {
                let code = match self.eval(rest)? {
                    Value::Int(n) => n,
                    Value::Str(s) => s.trim().parse().unwrap_or(0),
                    _ => 0,
                };
                return Ok(Some(code));
            }
            "write-output" | "echo" | "write" => {
                for arg in split_arguments(rest) {
                    if arg.eq_ignore_ascii_case("-NoEnumerate") {
                        continue;
                    }
                    let v = self.eval(arg)?;
                    self.write_value(v);
                }
            }
            "write-host" => {
                let mut newline = true;
                let mut parts = Vec::new();
                for arg in split_arguments(rest) {
                    if arg.eq_ignore_ascii_case("-NoNewline") {
                        newline = false;
                    } else {
                        parts.push(self.eval(arg)?.text());
                    }
                }
                self.stdout.push_str(&parts.join(" "));
                if newline {
                    self.stdout.push_str("\r\n");
                }
            }
            "write-error" | "write-warning" => {
                let mut parts = Vec::new();
                for arg in split_arguments(rest) {
                    if arg.eq_ignore_ascii_case("-Message") {
                        continue;
                    }
                    parts.push(self.eval(arg)?.text());
                }
                let message = parts.join(" ");
                if lower == "write-error" {
                    self.write_error(statement, &message);
                } else {
                    self.records.push(StreamRecord::Warning(message));
                }
            }
            "hostname" => {
                let name = self.ctx.hostname.clone();
                self.write_value(Value::Str(name));
            }
            _ if word.starts_with(char::is_alphabetic) => {
                return Err(EvalError::UnknownCommand(word.to_owned()));
            }
            _ => {
                let v = self.eval(text)?;
                self.write_value(v);
            }
        }
        Ok(None)
    }
}

fn balanced_group(expr: &str) -> bool {
    // True when the opening parenthesis at 0 closes at the very end.
    let mut closes_at = None;
    let mut depth = 0i32;
    let mut seen_open = false;
    scan_with_brackets(expr, |i, c| match c {
        '(' => {
            depth += 1;
            seen_open = true;
        }
        ')' => {
            depth -= 1;
            if depth == 0 && seen_open && closes_at.is_none() {
                closes_at = Some(i);
            }
        }
        _ => {}
    });
    closes_at == Some(expr.len() - 1)
}

/// Like [`scan`] but reports brackets too (outside quotes).
fn scan_with_brackets(s: &str, mut f: impl FnMut(usize, char)) {
    let mut single = false;
    let mut double = false;
    for (i, c) in s.char_indices() {
        if single {
            single = !is_single_quote(c);
        } else if double {
            double = !is_double_quote(c);
        } else if is_single_quote(c) {
            single = true;
        } else if is_double_quote(c) {
            double = true;
        } else {
            f(i, c);
        }
    }
}

fn parse_single_quoted(expr: &str) -> Option<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = String::new();
    let mut k = 1;
    while k < chars.len() {
        let c = chars[k];
        if is_single_quote(c) {
            if k + 1 < chars.len() && is_single_quote(chars[k + 1]) {
                out.push(c);
                k += 2;
                continue;
            }
            return (k == chars.len() - 1).then_some(out);
        }
        out.push(c);
        k += 1;
    }
    None
}

fn parse_double_quoted(expr: &str) -> Option<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = String::new();
    let mut k = 1;
    while k < chars.len() {
        let c = chars[k];
        if c == '`' && k + 1 < chars.len() {
            let e = chars[k + 1];
            out.push(match e {
                'n' => '\n',
                'r' => '\r',
                't' => '\t',
                '0' => '\0',
                'a' => '\u{7}',
                'b' => '\u{8}',
                'e' => '\u{1b}',
                'f' => '\u{c}',
                'v' => '\u{b}',
                // `$ stays literal through expansion.
                '$' => LITERAL_DOLLAR,
                other => other,
            });
            k += 2;
            continue;
        }
        if is_double_quote(c) {
            if k + 1 < chars.len() && is_double_quote(chars[k + 1]) {
                out.push(c);
                k += 2;
                continue;
            }
            return (k == chars.len() - 1).then_some(out);
        }
        out.push(c);
        k += 1;
    }
    None
}

/// Runs a PowerShell script in the subset with `stdin` as its input.
pub(crate) fn run_powershell(script: &str, stdin: &str, ctx: &ShellContext) -> Outcome {
    let statements = split_statements(script);
    let mut interp = Interpreter {
        ctx,
        stdin,
        variables: BTreeMap::new(),
        stdout: String::new(),
        records: Vec::new(),
        errors: 0,
    };
    let mut exit_code = None;
    for statement in &statements {
        match interp.run_statement(statement) {
            Ok(Some(code)) => {
                exit_code = Some(code);
                break;
            }
            Ok(None) => {}
            Err(EvalError::UnknownCommand(name)) => interp.command_not_found(&name, statement),
            Err(EvalError::TooLarge) => {
                interp.records.push(StreamRecord::Error(vec![
                    format!(
                        "Exception of type 'System.OutOfMemoryException' was thrown. (The simulator caps one value at {MAX_VALUE_BYTES} bytes.)"
                    ),
                    format!("At line:{} char:{}", statement.line, statement.column),
                    format!("+ {}", statement.source_line),
                    "    + CategoryInfo          : OperationStopped: (:) [], OutOfMemoryException"
                        .to_owned(),
                    "    + FullyQualifiedErrorId : System.OutOfMemoryException".to_owned(),
                    " ".to_owned(),
                ]));
                interp.errors += 1;
                break;
            }
            Err(EvalError::Unsupported(what)) => {
                // PowerShell parses the whole script before running it: a parse error means
                // nothing ran.
                let records = vec![StreamRecord::Error(vec![
                    format!("At line:{} char:{}", statement.line, statement.column),
                    format!("+ {}", statement.source_line),
                    format!(
                        "The simulated host does not support this PowerShell syntax: {what}"
                    ),
                    "    + CategoryInfo          : ParserError: (:) [], ParentContainsErrorRecordException"
                        .to_owned(),
                    "    + FullyQualifiedErrorId : UnexpectedToken".to_owned(),
                    " ".to_owned(),
                ])];
                return Outcome {
                    stdout: Vec::new(),
                    stderr: clixml::document(&records),
                    exit_code: 1,
                };
            }
        }
    }
    let exit_code = exit_code.unwrap_or(if interp.errors > 0 { 1 } else { 0 });
    Outcome {
        stdout: interp.stdout.into_bytes(),
        stderr: clixml::document(&interp.records),
        exit_code,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use aetherv_winrm::powershell::encode_command;

    fn ctx() -> ShellContext {
        ShellContext {
            hostname: "hv01".to_owned(),
            environment: vec![("GREETING".to_owned(), "hi".to_owned())],
        }
    }

    fn ps(script: &str) -> (String, String, i64) {
        ps_in(script, "")
    }

    fn ps_in(script: &str, stdin: &str) -> (String, String, i64) {
        let o = run_powershell(script, stdin, &ctx());
        (
            String::from_utf8(o.stdout).unwrap(),
            aetherv_winrm::clixml::decode(&o.stderr),
            o.exit_code,
        )
    }

    #[test]
    fn classifies_command_lines() {
        let enc = encode_command("Write-Output 1");
        assert_eq!(
            classify(&format!(
                "powershell.exe -NoProfile -NonInteractive -EncodedCommand {enc}"
            )),
            Invocation::PowerShell("Write-Output 1".to_owned())
        );
        assert_eq!(
            classify(&format!("powershell -encodedcommand {enc}")),
            Invocation::PowerShell("Write-Output 1".to_owned())
        );
        assert_eq!(
            classify(&format!(
                "PowerShell -NoProfile -NonInteractive -ExecutionPolicy Unrestricted -EncodedCommand {enc}"
            )),
            Invocation::PowerShell("Write-Output 1".to_owned())
        );
        assert_eq!(
            classify(r#"powershell.exe -NoProfile -File "C:\Program Files\x\Get-HostFacts.ps1""#),
            Invocation::PowerShellFile(r"C:\Program Files\x\Get-HostFacts.ps1".to_owned())
        );
        assert_eq!(
            classify("cmd.exe /c echo hi"),
            Invocation::Cmd("echo hi".to_owned())
        );
        assert_eq!(
            classify(r#"powershell -Command "Write-Output 2""#),
            Invocation::PowerShell("Write-Output 2".to_owned())
        );
        assert_eq!(
            classify("echo  a  b"),
            Invocation::Cmd("echo  a  b".to_owned())
        );
        assert!(matches!(
            classify("powershell -EncodedCommand !!!"),
            Invocation::PowerShellUsage { .. }
        ));
    }

    #[test]
    fn cmd_subset() {
        let c = ctx();
        assert_eq!(run_cmd("echo hello world", &c).stdout, b"hello world\r\n");
        assert_eq!(run_cmd("ECHO", &c).stdout, b"ECHO is on.\r\n");
        assert_eq!(run_cmd("hostname", &c).stdout, b"hv01\r\n");
        assert_eq!(run_cmd("exit /b 7", &c).exit_code, 7);
        assert_eq!(run_cmd("exit 3", &c).exit_code, 3);
        let o = run_cmd("ipconfig /all", &c);
        assert_eq!(o.exit_code, 1);
        assert_eq!(
            String::from_utf8(o.stderr).unwrap(),
            "'ipconfig' is not recognized as an internal or external command,\r\noperable program or batch file.\r\n"
        );
    }

    #[test]
    fn write_output_and_strings() {
        assert_eq!(
            ps("Write-Output 'a'; Write-Output \"b\"\nWrite-Output 'c'").0,
            "a\r\nb\r\nc\r\n"
        );
        assert_eq!(ps("'it''s'").0, "it's\r\n");
        assert_eq!(ps("Write-Output \"x`ty\"").0, "x\ty\r\n");
        assert_eq!(ps("Write-Output \"$env:GREETING there\"").0, "hi there\r\n");
        assert_eq!(ps("Write-Output \"`$env:GREETING\"").0, "$env:GREETING\r\n");
        assert_eq!(
            ps("$a = 'v'; Write-Output \"[$a] $(1 + 2)\"").0,
            "[v] 3\r\n"
        );
        assert_eq!(ps("Write-Output 'a', 'b'").0, "a\r\nb\r\n");
        assert_eq!(ps("Write-Output ('ab' * 3)").0, "ababab\r\n");
        assert_eq!(ps("'x' * 4").0, "xxxx\r\n");
        assert_eq!(ps("Write-Output 'héllo ✓ 東京'").0, "héllo ✓ 東京\r\n");
        assert_eq!(ps("Write-Output \u{2018}smart\u{2019}").0, "smart\r\n");
        assert_eq!(ps("# comment\nWrite-Output 'a' # trailing").0, "a\r\n");
        assert_eq!(
            ps("$ProgressPreference = 'SilentlyContinue'\nWrite-Output 1").0,
            "1\r\n"
        );
        assert_eq!(
            ps("Write-Host 'a' 'b'; Write-Host -NoNewline 'c'").0,
            "a b\r\nc"
        );
        assert_eq!(ps("").2, 0);
    }

    #[test]
    fn hostnames_and_exit_codes() {
        assert_eq!(ps("hostname").0, "hv01\r\n");
        assert_eq!(ps("$env:COMPUTERNAME").0, "HV01\r\n");
        assert_eq!(
            ps("Write-Output 'a'; exit 5; Write-Output 'b'"),
            ("a\r\n".to_owned(), String::new(), 5)
        );
        assert_eq!(ps("exit").2, 0);
        assert_eq!(ps("exit -1").2, -1);
    }

    #[test]
    fn stdin_is_read() {
        assert_eq!(ps_in("$input", "one\r\ntwo\r\n").0, "one\r\ntwo\r\n");
        assert_eq!(ps_in("[Console]::In.ReadToEnd()", "raw").0, "raw\r\n");
        assert_eq!(ps_in("$input | Write-Output", "a\nb").0, "a\r\nb\r\n");
        assert!(reads_stdin("$x = [Console]::In.ReadToEnd()"));
        assert!(!reads_stdin("Write-Output 1"));
    }

    #[test]
    fn write_error_is_clixml_and_fails() {
        let o = run_powershell("Write-Output 'ok'; Write-Error 'boom'", "", &ctx());
        assert!(o.stderr.starts_with(b"#< CLIXML\r\n"));
        let text = aetherv_winrm::clixml::decode(&o.stderr);
        assert!(text.starts_with("Write-Error 'boom' : boom"), "{text}");
        assert!(text.contains("WriteErrorException"));
        assert_eq!(o.exit_code, 1);
        assert_eq!(o.stdout, b"ok\r\n");
        let (_, warn, code) = ps("Write-Warning 'careful'");
        assert!(warn.contains("careful"));
        assert_eq!(code, 0);
    }

    #[test]
    fn unknown_commands_fail_like_powershell() {
        let (out, err, code) = ps("Write-Output 'a'\nGet-Frobnicator -Force\nWrite-Output 'b'");
        assert_eq!(out, "a\r\nb\r\n");
        assert_eq!(code, 1);
        assert!(err.starts_with("Get-Frobnicator : The term 'Get-Frobnicator' is not recognized as the name of a cmdlet, function, script file, or operable program."), "{err}");
        assert!(err.contains("At line:2 char:1"), "{err}");
        assert!(err.contains("+ ~~~~~~~~~~~~~~~"), "{err}");
        assert!(err.contains("CommandNotFoundException"));
    }

    #[test]
    fn unsupported_syntax_is_a_parse_error() {
        let (out, err, code) = ps("Write-Output 'a'; foreach ($x in 1..3) { $x }");
        assert_eq!(out, "");
        assert_eq!(code, 1);
        assert!(err.contains("does not support"), "{err}");
    }

    #[test]
    fn bootstrap_is_recognised() {
        let inv = aetherv_winrm::powershell::invocation(&"Write-Output 1\n".repeat(1000));
        let script = aetherv_winrm::powershell::decode_command(&inv.arguments[3]).unwrap();
        assert!(is_stdin_bootstrap(&script));
        assert!(!is_stdin_bootstrap("Write-Output 1"));
    }

    #[test]
    fn huge_values_are_capped() {
        let (_, err, code) = ps("'x' * 1000000000000");
        assert_eq!(code, 1);
        assert!(err.contains("OutOfMemoryException"));
    }
}
