//! The stdin requests and result data of the deployment inline scripts (`assets/deploy/`).
//! Shared with the simulator, which emulates the scripts. Every field is always serialized
//! (`null` when absent) because the scripts run under `Set-StrictMode -Version Latest`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Name of the version file in the install directory.
pub const VERSION_FILE: &str = "version.txt";

/// Name of the host-side lock file in the install directory.
pub const LOCK_FILE: &str = ".deploy.lock";

/// `Get-DeployVersion` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct VersionRequest {
    pub(crate) dir: String,
}

/// `Get-DeployVersion` data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct VersionData {
    #[serde(default)]
    pub(crate) version: Option<String>,
}

/// One file the deployer is about to push, so the host can report a matching copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FileSize {
    pub(crate) name: String,
    pub(crate) size: u64,
}

/// `Lock-Deploy` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LockRequest {
    pub(crate) dir: String,
    pub(crate) token: String,
    pub(crate) stale_seconds: u64,
    pub(crate) files: Vec<FileSize>,
}

/// `Lock-Deploy` data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LockData {
    pub(crate) acquired: bool,
    #[serde(default)]
    pub(crate) holder: Option<String>,
    #[serde(default)]
    pub(crate) age_seconds: Option<i64>,
    #[serde(default)]
    pub(crate) version: Option<String>,
    /// SHA-256 of installed files whose size matches the request, by name.
    #[serde(default)]
    pub(crate) hashes: BTreeMap<String, String>,
}

/// One piece of a file in a `Write-DeployChunk` request (its bytes follow on their own
/// base64 line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Piece {
    /// Temp file name in the install directory.
    pub(crate) temp: String,
    /// Where the piece starts; the temp file must have exactly this length.
    pub(crate) offset: u64,
    /// Set on a file's last piece: the final name to move the verified file to.
    pub(crate) name: Option<String>,
    /// Set on a file's last piece: the expected SHA-256 (lowercase hex).
    pub(crate) sha256: Option<String>,
}

/// `Write-DeployChunk` request header (the first stdin line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ChunkRequest {
    pub(crate) dir: String,
    pub(crate) token: String,
    pub(crate) pieces: Vec<Piece>,
}

/// A file whose hash on the host differed from the expected one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Mismatch {
    pub(crate) name: String,
    pub(crate) actual: String,
}

/// `Write-DeployChunk` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ChunkData {
    /// Names moved into place (Windows PowerShell may collapse a one-element array).
    #[serde(default)]
    pub(crate) installed: serde_json::Value,
    #[serde(default)]
    pub(crate) mismatch: Option<Mismatch>,
}

/// `Complete-Deploy` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CompleteRequest {
    pub(crate) dir: String,
    pub(crate) token: String,
    /// The version to write; `None` only releases the lock and removes temp files.
    pub(crate) version: Option<String>,
}

/// `Complete-Deploy` data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CompleteData {
    pub(crate) released: bool,
    #[serde(default)]
    pub(crate) version: Option<String>,
}

/// The temp file name of artifact number `index` for deployer `token`.
pub(crate) fn temp_name(token: &str, index: usize) -> String {
    format!(".deploy-{token}-{index}.tmp")
}

/// Builds a `Write-DeployChunk` stdin: the JSON header line, then one base64 line per piece.
pub(crate) fn chunk_stdin(header: &ChunkRequest, data: &[Vec<u8>]) -> Vec<u8> {
    use base64::Engine as _;
    let json = serde_json::to_string(header).unwrap_or_default();
    let mut out =
        Vec::with_capacity(json.len() + data.iter().map(|d| d.len() * 4 / 3 + 8).sum::<usize>());
    out.extend_from_slice(json.as_bytes());
    out.push(b'\n');
    for piece in data {
        out.extend_from_slice(
            base64::engine::general_purpose::STANDARD
                .encode(piece)
                .as_bytes(),
        );
        out.push(b'\n');
    }
    out
}

/// Splits a `Write-DeployChunk` stdin into its header and the decoded piece bytes.
#[cfg(any(test, feature = "sim"))]
pub(crate) fn parse_chunk_stdin(stdin: &[u8]) -> Result<(ChunkRequest, Vec<Vec<u8>>), String> {
    use base64::Engine as _;
    let text = std::str::from_utf8(stdin).map_err(|e| format!("stdin is not UTF-8: {e}"))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.split('\n');
    let header = lines.next().unwrap_or_default();
    let header: ChunkRequest =
        serde_json::from_str(header.trim()).map_err(|e| format!("bad request header: {e}"))?;
    let mut data = Vec::with_capacity(header.pieces.len());
    for i in 0..header.pieces.len() {
        let line = lines.next().unwrap_or_default().trim();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(line)
            .map_err(|e| format!("piece {i} is not base64: {e}"))?;
        data.push(bytes);
    }
    Ok((header, data))
}
