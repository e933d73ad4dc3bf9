//! Turning a PowerShell script into a command line Windows accepts.
//!
//! Scripts run as `powershell.exe -NoProfile -NonInteractive -EncodedCommand <base64 of
//! UTF-16LE>`. Windows limits a command line to 8191 characters, so a script whose encoded form
//! would not fit is instead sent on stdin to a short fixed bootstrap that reads all of stdin and
//! runs it as a script block. Nothing the caller passes is ever spliced into script text other
//! than the caller's own script.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// The executable the shell runs.
pub const EXECUTABLE: &str = "powershell.exe";

/// Windows' maximum command line length, in characters.
pub const MAX_COMMAND_LINE: usize = 8191;

/// Prepended to every script: progress records are noise on a remote stream and slow
/// PowerShell down, so they are switched off.
const PRELUDE: &str = "$ProgressPreference = 'SilentlyContinue'\n";

/// Reads the whole of stdin (UTF-8) and runs it as a script block. Fixed text.
const STDIN_BOOTSTRAP: &str = "$ProgressPreference = 'SilentlyContinue'\n\
$in = [Console]::OpenStandardInput()\n\
$reader = New-Object System.IO.StreamReader($in, (New-Object System.Text.UTF8Encoding($false)))\n\
$script = $reader.ReadToEnd()\n\
& ([scriptblock]::Create($script))\n\
exit $LASTEXITCODE";

/// How to launch a script: the command, its arguments, and what (if anything) must be written
/// to stdin before the caller's own input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// Executable to run.
    pub command: String,
    /// Arguments, already in their final form.
    pub arguments: Vec<String>,
    /// When the script is too long for the command line, the script itself, to be sent on
    /// stdin (the command then reads stdin to its end, so the caller cannot send more input).
    pub stdin_script: Option<String>,
}

/// Base64 of the UTF-16LE encoding of `script`, as `-EncodedCommand` expects.
pub fn encode_command(script: &str) -> String {
    let utf16: Vec<u8> = script.encode_utf16().flat_map(u16::to_le_bytes).collect();
    STANDARD.encode(utf16)
}

fn encoded_invocation(script: &str) -> Vec<String> {
    vec![
        "-NoProfile".to_owned(),
        "-NonInteractive".to_owned(),
        "-EncodedCommand".to_owned(),
        encode_command(script),
    ]
}

fn command_line_length(arguments: &[String]) -> usize {
    EXECUTABLE.len() + arguments.iter().map(|a| a.len() + 1).sum::<usize>()
}

/// Builds the invocation for `script`.
///
/// A script that fits on the command line is passed with `-EncodedCommand`; a longer one is
/// delivered on stdin through a fixed bootstrap (see [`Invocation::stdin_script`]).
pub fn invocation(script: &str) -> Invocation {
    let mut full = String::with_capacity(PRELUDE.len() + script.len());
    full.push_str(PRELUDE);
    full.push_str(script);
    let arguments = encoded_invocation(&full);
    if command_line_length(&arguments) <= MAX_COMMAND_LINE {
        return Invocation {
            command: EXECUTABLE.to_owned(),
            arguments,
            stdin_script: None,
        };
    }
    Invocation {
        command: EXECUTABLE.to_owned(),
        arguments: encoded_invocation(STDIN_BOOTSTRAP),
        stdin_script: Some(script.to_owned()),
    }
}

/// Decodes an `-EncodedCommand` argument back to the script (used by simulators and tests).
pub fn decode_command(encoded: &str) -> Option<String> {
    let bytes = STANDARD.decode(encoded.trim()).ok()?;
    if bytes.len() % 2 != 0 {
        return None;
    }
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16(&units).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn encodes_utf16le_base64() {
        // "ab" in UTF-16LE is 61 00 62 00.
        assert_eq!(encode_command("ab"), "YQBiAA==");
        let inv = invocation("Write-Output 'héllo ✓'");
        assert_eq!(inv.command, "powershell.exe");
        assert_eq!(
            inv.arguments[..3],
            ["-NoProfile", "-NonInteractive", "-EncodedCommand"]
        );
        let script = decode_command(&inv.arguments[3]).unwrap();
        assert!(script.ends_with("Write-Output 'héllo ✓'"));
        assert!(script.starts_with("$ProgressPreference"));
        assert!(inv.stdin_script.is_none());
    }

    #[test]
    fn long_scripts_go_to_stdin() {
        let script = "Write-Output 1\n".repeat(1000);
        let inv = invocation(&script);
        assert!(command_line_length(&inv.arguments) <= MAX_COMMAND_LINE);
        assert_eq!(inv.stdin_script.as_deref(), Some(script.as_str()));
        let bootstrap = decode_command(&inv.arguments[3]).unwrap();
        assert!(bootstrap.contains("ReadToEnd"));
    }

    #[test]
    fn boundary_is_respected() {
        // Find the longest script that still fits and check one more character does not.
        let overhead = command_line_length(&encoded_invocation(PRELUDE));
        assert!(overhead < MAX_COMMAND_LINE);
        let mut n = 1;
        while invocation(&"x".repeat(n)).stdin_script.is_none() {
            n += 1;
        }
        let fits = invocation(&"x".repeat(n - 1));
        assert!(fits.stdin_script.is_none());
        assert!(command_line_length(&fits.arguments) <= MAX_COMMAND_LINE);
    }

    #[test]
    fn decode_rejects_garbage() {
        assert_eq!(decode_command("!!!"), None);
        assert_eq!(decode_command("YQ=="), None); // odd byte count
    }
}
