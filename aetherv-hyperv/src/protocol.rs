//! The host-script protocol: how a deployed PowerShell script is invoked and how its single
//! result document is found in its output.
//!
//! Host scripts are fixed files under the host's install directory
//! ([`DEFAULT_INSTALL_DIRECTORY`] unless configured otherwise). A script is started as
//!
//! ```text
//! powershell.exe -NoProfile -NonInteractive -ExecutionPolicy Bypass -File <dir>\<Name>.ps1
//! ```
//!
//! reads exactly one JSON request document from stdin (all of stdin, UTF-8), and writes exactly
//! one JSON result document to stdout on the lines between [`RESULT_BEGIN`] and [`RESULT_END`]:
//!
//! ```text
//! ===AETHERV-RESULT-BEGIN===
//! {"ok":true,"data":{...}}
//! ===AETHERV-RESULT-END===
//! ```
//!
//! or `{"ok":false,"error":{"code":"...","message":"..."}}` (exit code 1). Anything else the
//! script prints outside the markers (warnings, transcripts) is ignored by the parser. User
//! input never becomes script text: it only travels inside the stdin request.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Where the host scripts are deployed unless the host is configured otherwise.
pub const DEFAULT_INSTALL_DIRECTORY: &str = r"C:\ProgramData\Aetherv\scripts";

/// The line that precedes the result document.
pub const RESULT_BEGIN: &str = "===AETHERV-RESULT-BEGIN===";

/// The line that follows the result document.
pub const RESULT_END: &str = "===AETHERV-RESULT-END===";

/// The executable host scripts run under.
pub const POWERSHELL: &str = "powershell.exe";

/// Full Windows path of script `name` (without `.ps1`) in `install_directory`.
pub fn script_path(install_directory: &str, name: &str) -> String {
    format!("{}\\{name}.ps1", install_directory.trim_end_matches('\\'))
}

/// The arguments that run script `name` from `install_directory` (the command is
/// [`POWERSHELL`]). A path containing spaces is quoted, as the Windows command line needs.
pub fn script_arguments(install_directory: &str, name: &str) -> Vec<String> {
    let path = script_path(install_directory, name);
    let path = if path.contains(char::is_whitespace) {
        format!("\"{path}\"")
    } else {
        path
    };
    [
        "-NoProfile",
        "-NonInteractive",
        "-ExecutionPolicy",
        "Bypass",
        "-File",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain(std::iter::once(path))
    .collect()
}

/// The script name (file stem) of a `-File` path such as `C:\dir\Get-HostFacts.ps1`, if the
/// path names a `.ps1` file.
pub fn script_name_from_path(path: &str) -> Option<&str> {
    let path = path.trim().trim_matches('"');
    let file = path.rsplit(['\\', '/']).next().unwrap_or(path);
    let (stem, ext) = file.rsplit_once('.')?;
    (ext.eq_ignore_ascii_case("ps1") && !stem.is_empty()).then_some(stem)
}

/// A script's failure, as carried in `{"ok":false,"error":{...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptFailure {
    /// Stable machine-readable code, e.g. `VmNotFound`.
    pub code: String,
    /// Human-readable message naming what failed.
    pub message: String,
}

/// One script result document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScriptResult {
    /// Whether the script succeeded.
    pub ok: bool,
    /// The result data when `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    /// The failure when not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ScriptFailure>,
}

impl ScriptResult {
    /// A successful result carrying `data`.
    pub fn success(data: serde_json::Value) -> Self {
        Self {
            ok: true,
            data: Some(data),
            error: None,
        }
    }

    /// A failed result.
    pub fn failure(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            ok: false,
            data: None,
            error: Some(ScriptFailure {
                code: code.into(),
                message: message.into(),
            }),
        }
    }

    /// The stdout text a script writes for this result: the markers and the document on one
    /// line, with Windows line endings.
    pub fn render(&self) -> String {
        framed(self).0
    }
}

/// The stdout text of a successful result carrying `data`, written without building a JSON
/// tree (for large answers): the document [`ScriptResult::render`] writes for
/// [`ScriptResult::success`] with `data` as a tree (a struct's fields keep their order, a
/// tree's are sorted). `false` when `data` could not be written: the text is then a
/// `SerializationFailed` failure.
pub fn render_success<T: Serialize + ?Sized>(data: &T) -> (String, bool) {
    /// `ScriptResult`'s success form with borrowed data (fields in the same order).
    #[derive(Serialize)]
    struct Success<'a, T: ?Sized> {
        ok: bool,
        data: &'a T,
    }
    framed(&Success { ok: true, data })
}

/// `document` on one line between the marker lines, with Windows line endings, and whether it
/// could be written (if not, a `SerializationFailed` failure stands in for it).
fn framed<T: Serialize + ?Sized>(document: &T) -> (String, bool) {
    let mut text = Vec::with_capacity(256);
    text.extend_from_slice(RESULT_BEGIN.as_bytes());
    text.extend_from_slice(b"\r\n");
    let start = text.len();
    let written = serde_json::to_writer(&mut text, document).is_ok();
    if !written {
        text.truncate(start);
        text.extend_from_slice(
            br#"{"ok":false,"error":{"code":"SerializationFailed","message":"result could not be serialized"}}"#,
        );
    }
    text.extend_from_slice(b"\r\n");
    text.extend_from_slice(RESULT_END.as_bytes());
    text.extend_from_slice(b"\r\n");
    // serde_json writes UTF-8, and the markers are ASCII.
    let text = String::from_utf8(text)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    (text, written)
}

/// Finds and parses the result document in the stdout of `script`.
///
/// Exactly one marked block must be present; text outside it is ignored.
pub fn parse_result(script: &str, stdout: &str) -> Result<ScriptResult> {
    let text = result_text(script, stdout)?;
    serde_json::from_str(&text).map_err(|e| Error::ScriptOutput {
        script: script.to_owned(),
        detail: format!("result document is not valid JSON: {e}"),
    })
}

/// The text of the one result document in the stdout of `script` (what [`parse_result`]
/// parses), for callers that read it into a typed shape directly.
pub fn result_text(script: &str, stdout: &str) -> Result<String> {
    let fail = |detail: String| Error::ScriptOutput {
        script: script.to_owned(),
        detail,
    };
    let mut body: Option<Vec<&str>> = None;
    let mut found = 0usize;
    let mut inside = false;
    for line in stdout.lines() {
        let trimmed = line.trim();
        if !inside && trimmed == RESULT_BEGIN {
            found += 1;
            inside = true;
            if found == 1 {
                body = Some(Vec::new());
            }
        } else if inside && trimmed == RESULT_END {
            inside = false;
        } else if inside
            && found == 1
            && let Some(lines) = body.as_mut()
        {
            lines.push(line);
        }
    }
    if inside {
        return Err(fail(format!("no {RESULT_END} line after {RESULT_BEGIN}")));
    }
    match (found, body) {
        (1, Some(lines)) => Ok(lines.join("\n")),
        (0, _) => Err(fail(format!(
            "no result document ({RESULT_BEGIN} line) in {} bytes of output",
            stdout.len()
        ))),
        (n, _) => Err(fail(format!("{n} result documents; expected exactly one"))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn arguments_name_the_file() {
        let args = script_arguments(DEFAULT_INSTALL_DIRECTORY, "Get-HostFacts");
        assert_eq!(
            args.last().unwrap(),
            r"C:\ProgramData\Aetherv\scripts\Get-HostFacts.ps1"
        );
        assert_eq!(args[args.len() - 2], "-File");
        let spaced = script_arguments(r"C:\Program Files\Aetherv\", "Inventory");
        assert_eq!(
            spaced.last().unwrap(),
            r#""C:\Program Files\Aetherv\Inventory.ps1""#
        );
    }

    #[test]
    fn script_names_from_paths() {
        assert_eq!(
            script_name_from_path(r"C:\x\Get-HostFacts.ps1"),
            Some("Get-HostFacts")
        );
        assert_eq!(
            script_name_from_path(r#""C:\Program Files\x\Inventory.PS1""#),
            Some("Inventory")
        );
        assert_eq!(script_name_from_path(r"C:\x\tool.exe"), None);
        assert_eq!(script_name_from_path(r"C:\x\.ps1"), None);
    }

    #[test]
    fn results_round_trip_and_noise_is_ignored() {
        let result = ScriptResult::success(serde_json::json!({"a": 1}));
        let stdout = format!("WARNING: noise\r\n{}trailing\r\n", result.render());
        assert_eq!(parse_result("X", &stdout).unwrap(), result);
        let failure = ScriptResult::failure("VmNotFound", "no VM 'x'");
        assert_eq!(parse_result("X", &failure.render()).unwrap(), failure);
    }

    #[test]
    fn a_success_written_without_a_tree_is_the_rendered_result() {
        let data =
            serde_json::json!({"vms": [{"name": "a\"b", "n": 1}], "host": "hv01", "x": null});
        let (text, written) = render_success(&data);
        assert!(written);
        assert_eq!(text, ScriptResult::success(data.clone()).render());
        assert!(text.starts_with(RESULT_BEGIN) && text.ends_with(&format!("{RESULT_END}\r\n")));
        #[derive(Serialize)]
        struct Typed<'a> {
            host: &'a str,
            count: u32,
        }
        let (typed, _) = render_success(&Typed {
            host: "hv01",
            count: 2,
        });
        assert_eq!(
            parse_result("X", &typed).unwrap(),
            ScriptResult::success(serde_json::json!({"host": "hv01", "count": 2}))
        );
    }

    #[test]
    fn data_that_cannot_be_written_is_a_failure() {
        /// A value whose serialization fails.
        struct Broken;
        impl Serialize for Broken {
            fn serialize<S: serde::Serializer>(
                &self,
                _: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("broken"))
            }
        }
        let (text, written) = render_success(&Broken);
        assert!(!written);
        let result = parse_result("X", &text).unwrap();
        assert!(!result.ok);
        assert_eq!(result.error.unwrap().code, "SerializationFailed");
    }

    #[test]
    fn malformed_output_is_reported() {
        let err = parse_result("Get-HostFacts", "nothing here").unwrap_err();
        assert!(err.to_string().contains("Get-HostFacts"));
        let twice = format!(
            "{}{}",
            ScriptResult::success(serde_json::json!(1)).render(),
            ScriptResult::success(serde_json::json!(2)).render()
        );
        assert!(parse_result("X", &twice).is_err());
        let open = format!("{RESULT_BEGIN}\r\n{{}}\r\n");
        assert!(parse_result("X", &open).is_err());
        let bad = format!("{RESULT_BEGIN}\r\nnot json\r\n{RESULT_END}\r\n");
        assert!(parse_result("X", &bad).is_err());
    }
}
