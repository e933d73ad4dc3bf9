//! The stdin requests and result data of the deployment helper scripts (`assets/deploy/`):
//! the wire contract between [`super::Deployer`] and the helpers, public so that an emulation
//! of the helpers (the `aetherv-sim` crate) reads and writes exactly the same documents.
//! Every field is always serialized (`null` when absent) because the scripts run under
//! `Set-StrictMode -Version Latest`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Name of the version file in the install directory.
pub const VERSION_FILE: &str = "version.txt";

/// Name of the host-side lock file in the install directory.
pub const LOCK_FILE: &str = ".deploy.lock";

/// `Get-DeployVersion` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRequest {
    /// The install directory.
    pub dir: String,
}

/// `Get-DeployVersion` data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionData {
    /// The installed version, `None` when no version file exists.
    #[serde(default)]
    pub version: Option<String>,
}

/// One file the deployer is about to push, so the host can report a matching copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSize {
    /// File name in the install directory.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
}

/// `Lock-Deploy` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRequest {
    /// The install directory.
    pub dir: String,
    /// The deployer's lock token.
    pub token: String,
    /// A lock not refreshed for this many seconds is broken.
    pub stale_seconds: u64,
    /// The files about to be pushed.
    pub files: Vec<FileSize>,
}

/// `Lock-Deploy` data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockData {
    /// Whether this deployer now holds the lock.
    pub acquired: bool,
    /// The current holder's token when the lock is busy.
    #[serde(default)]
    pub holder: Option<String>,
    /// Seconds since the holder last refreshed the lock.
    #[serde(default)]
    pub age_seconds: Option<i64>,
    /// The installed version (re-read under the lock).
    #[serde(default)]
    pub version: Option<String>,
    /// SHA-256 of installed files whose size matches the request, by name.
    #[serde(default)]
    pub hashes: BTreeMap<String, String>,
}

/// One piece of a file in a `Write-DeployChunk` request (its bytes follow on their own
/// base64 line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    /// Temp file name in the install directory.
    pub temp: String,
    /// Where the piece starts; the temp file must have exactly this length.
    pub offset: u64,
    /// Set on a file's last piece: the final name to move the verified file to.
    pub name: Option<String>,
    /// Set on a file's last piece: the expected SHA-256 (lowercase hex).
    pub sha256: Option<String>,
}

/// `Write-DeployChunk` request header (the first stdin line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRequest {
    /// The install directory.
    pub dir: String,
    /// The lock token (the lock is refreshed by every chunk).
    pub token: String,
    /// The pieces, in the order of their base64 lines.
    pub pieces: Vec<Piece>,
}

/// A file whose hash on the host differed from the expected one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mismatch {
    /// File name.
    pub name: String,
    /// The SHA-256 the host computed (lowercase hex).
    pub actual: String,
}

/// `Write-DeployChunk` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkData {
    /// Names moved into place (Windows PowerShell may collapse a one-element array).
    #[serde(default)]
    pub installed: serde_json::Value,
    /// A file whose hash differed; it was not installed.
    #[serde(default)]
    pub mismatch: Option<Mismatch>,
}

/// `Complete-Deploy` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompleteRequest {
    /// The install directory.
    pub dir: String,
    /// The lock token.
    pub token: String,
    /// The version to write; `None` only releases the lock and removes temp files.
    pub version: Option<String>,
}

/// `Complete-Deploy` data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompleteData {
    /// Whether the lock was released.
    pub released: bool,
    /// The version now in the version file.
    #[serde(default)]
    pub version: Option<String>,
}

/// The temp file name of artifact number `index` for deployer `token`.
pub fn temp_name(token: &str, index: usize) -> String {
    format!(".deploy-{token}-{index}.tmp")
}

/// Builds a `Write-DeployChunk` stdin: the JSON header line, then one base64 line per piece.
pub fn chunk_stdin(header: &ChunkRequest, data: &[Vec<u8>]) -> Vec<u8> {
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

/// Splits a `Write-DeployChunk` stdin into its header and the decoded piece bytes (the
/// helper's side of [`chunk_stdin`]).
///
/// # Errors
///
/// A message saying what is malformed (not UTF-8, bad header, a piece that is not base64).
pub fn parse_chunk_stdin(stdin: &[u8]) -> Result<(ChunkRequest, Vec<Vec<u8>>), String> {
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
