//! What gets deployed: artifacts (name, bytes or file, SHA-256) and the bundle version.

use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

include!(concat!(env!("OUT_DIR"), "/embedded.rs"));

/// Longest artifact name accepted.
const MAX_NAME: usize = 200;

/// Lowercase hex of a SHA-256 digest.
pub(crate) fn hex(digest: &[u8]) -> String {
    digest.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Where an artifact's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArtifactSource {
    /// Compiled into the binary (the host scripts).
    Embedded(&'static [u8]),
    /// Held in memory.
    Bytes(Bytes),
    /// A file on the orchestrator's file system, streamed in chunks when deployed (for
    /// provisioning ISOs of hundreds of MB).
    File(PathBuf),
}

/// One file to deploy into the host's install directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    name: String,
    source: ArtifactSource,
    sha256: String,
    size: u64,
}

impl Artifact {
    /// An artifact held in memory; its hash is computed here.
    pub fn from_bytes(name: impl Into<String>, bytes: impl Into<Bytes>) -> Result<Self> {
        let name = checked_name(name.into())?;
        let bytes = bytes.into();
        Ok(Self {
            name,
            sha256: sha256_hex(&bytes),
            size: bytes.len() as u64,
            source: ArtifactSource::Bytes(bytes),
        })
    }

    /// An artifact read from `path` when deployed. The file is read once here, in chunks, to
    /// compute its size and SHA-256 (blocking I/O: call it at configuration time or from
    /// `spawn_blocking`).
    pub fn from_file(name: impl Into<String>, path: impl Into<PathBuf>) -> Result<Self> {
        let name = checked_name(name.into())?;
        let path = path.into();
        let (sha256, size) = hash_file(&name, &path)?;
        Ok(Self {
            name,
            source: ArtifactSource::File(path),
            sha256,
            size,
        })
    }

    /// An artifact read from `path` whose SHA-256 and size are already known (e.g. from
    /// configuration), so nothing is read until deployment. If the file turns out to differ,
    /// deployment fails with [`Error::ArtifactChanged`] before the host accepts it.
    pub fn from_file_with_hash(
        name: impl Into<String>,
        path: impl Into<PathBuf>,
        sha256: &str,
        size: u64,
    ) -> Result<Self> {
        let name = checked_name(name.into())?;
        let sha256 = sha256.trim().to_ascii_lowercase();
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::Artifact {
                name,
                detail: "the SHA-256 must be 64 hex digits".to_owned(),
            });
        }
        Ok(Self {
            name,
            source: ArtifactSource::File(path.into()),
            sha256,
            size,
        })
    }

    /// File name in the install directory.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the bytes come from.
    pub fn source(&self) -> &ArtifactSource {
        &self.source
    }

    /// Lowercase hex SHA-256 of the contents.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Reads up to `len` bytes at `offset` (blocking for file artifacts).
    pub(crate) fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let slice = |b: &[u8]| {
            let start = usize::try_from(offset).unwrap_or(usize::MAX).min(b.len());
            let end = start.saturating_add(len).min(b.len());
            b[start..end].to_vec()
        };
        match &self.source {
            ArtifactSource::Embedded(b) => Ok(slice(b)),
            ArtifactSource::Bytes(b) => Ok(slice(b)),
            ArtifactSource::File(path) => {
                use std::io::Seek as _;
                let io = |source| Error::ArtifactIo {
                    name: self.name.clone(),
                    path: path.clone(),
                    source,
                };
                let mut file = std::fs::File::open(path).map_err(io)?;
                file.seek(std::io::SeekFrom::Start(offset)).map_err(io)?;
                let mut buf = Vec::with_capacity(len);
                file.take(len as u64).read_to_end(&mut buf).map_err(io)?;
                Ok(buf)
            }
        }
    }
}

fn hash_file(name: &str, path: &Path) -> Result<(String, u64)> {
    let io = |source| Error::ArtifactIo {
        name: name.to_owned(),
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex(&hasher.finalize()), size))
}

/// Artifact names are plain file names: letters, digits, `.`, `_`, `-`, not starting with
/// `.`, and not the names deployment itself uses.
fn checked_name(name: String) -> Result<String> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !name.eq_ignore_ascii_case(super::wire::VERSION_FILE);
    if valid {
        Ok(name)
    } else {
        Err(Error::Artifact {
            name,
            detail: format!(
                "artifact names are file names of letters, digits, '.', '_' and '-' (at most \
                 {MAX_NAME}), not starting with '.', and not {}",
                super::wire::VERSION_FILE
            ),
        })
    }
}

/// A set of artifacts deployed together, and its version: the hex SHA-256 over the sorted
/// names and hashes (so the same contents always give the same version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    artifacts: Vec<Artifact>,
    version: String,
}

impl Bundle {
    /// The host scripts compiled into this binary (every file of `assets/powershell/`).
    pub fn embedded() -> Self {
        let artifacts = EMBEDDED
            .iter()
            .map(|(name, bytes, sha256)| Artifact {
                name: (*name).to_owned(),
                source: ArtifactSource::Embedded(bytes),
                sha256: (*sha256).to_owned(),
                size: bytes.len() as u64,
            })
            .collect();
        Self::assemble(artifacts)
    }

    /// A bundle of `artifacts`. Names must be unique (case-insensitively, as on Windows).
    pub fn new(artifacts: impl IntoIterator<Item = Artifact>) -> Result<Self> {
        let mut artifacts: Vec<Artifact> = artifacts.into_iter().collect();
        artifacts.sort_by(|a, b| a.name.cmp(&b.name));
        let mut seen = std::collections::BTreeSet::new();
        for a in &artifacts {
            if !seen.insert(a.name.to_ascii_lowercase()) {
                return Err(Error::Artifact {
                    name: a.name.clone(),
                    detail: "two artifacts have this name".to_owned(),
                });
            }
        }
        Ok(Self::assemble(artifacts))
    }

    /// This bundle plus `artifact` (e.g. a configured provisioning ISO).
    pub fn with(self, artifact: Artifact) -> Result<Self> {
        Self::new(self.artifacts.into_iter().chain(std::iter::once(artifact)))
    }

    fn assemble(mut artifacts: Vec<Artifact>) -> Self {
        artifacts.sort_by(|a, b| a.name.cmp(&b.name));
        let mut hasher = Sha256::new();
        for a in &artifacts {
            hasher.update(a.name.as_bytes());
            hasher.update([0]);
            hasher.update(a.sha256.as_bytes());
            hasher.update(b"\n");
        }
        Self {
            version: hex(&hasher.finalize()),
            artifacts,
        }
    }

    /// The bundle version written to the host's version file.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The artifacts, sorted by name.
    pub fn artifacts(&self) -> &[Artifact] {
        &self.artifacts
    }

    /// Total size of all artifacts in bytes.
    pub fn total_bytes(&self) -> u64 {
        self.artifacts.iter().map(|a| a.size).sum()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn version_is_deterministic_and_order_independent() {
        let a = Artifact::from_bytes("a.ps1", b"one".to_vec()).unwrap();
        let b = Artifact::from_bytes("b.ps1", b"two".to_vec()).unwrap();
        let v1 = Bundle::new([a.clone(), b.clone()]).unwrap();
        let v2 = Bundle::new([b.clone(), a.clone()]).unwrap();
        assert_eq!(v1.version(), v2.version());
        assert_eq!(v1.version().len(), 64);
        let changed = Artifact::from_bytes("b.ps1", b"two!".to_vec()).unwrap();
        assert_ne!(
            Bundle::new([a.clone(), changed]).unwrap().version(),
            v1.version()
        );
        assert!(Bundle::new([a.clone(), a]).is_err());
        assert_eq!(Bundle::embedded().version(), Bundle::embedded().version());
    }

    #[test]
    fn embedded_hashes_match_contents() {
        for a in Bundle::embedded().artifacts() {
            let ArtifactSource::Embedded(bytes) = a.source() else {
                panic!("embedded")
            };
            assert_eq!(sha256_hex(bytes), a.sha256());
        }
    }

    #[test]
    fn names_are_checked() {
        for bad in [
            "",
            ".deploy.lock",
            "a/b",
            "a\\b",
            "version.txt",
            "x y",
            "VERSION.TXT",
        ] {
            assert!(Artifact::from_bytes(bad, Vec::new()).is_err(), "{bad}");
        }
        assert!(Artifact::from_bytes("Get-HostFacts.ps1", Vec::new()).is_ok());
        assert!(Artifact::from_file_with_hash("x.iso", "/nope", "zz", 1).is_err());
    }

    #[test]
    fn files_are_hashed_and_read_in_ranges() {
        let dir = std::env::temp_dir().join(format!("aetherv-deploy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.iso");
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let a = Artifact::from_file("x.iso", &path).unwrap();
        assert_eq!(a.sha256(), sha256_hex(&data));
        assert_eq!(a.size(), 100_000);
        assert_eq!(a.read_at(99_990, 100).unwrap(), data[99_990..].to_vec());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
