//! Emulation of the deployment helper scripts (`assets/deploy/*.ps1`, see [`aetherv_hyperv::deploy`]).
//!
//! Each simulated host has a small virtual file system ([`HostFiles`]): files with their bytes
//! and last-write time, addressed by full Windows path (case-insensitively). The helpers arrive
//! as `-EncodedCommand` scripts and are recognised by their `# aetherv-inline: <Name>` marker
//! line; their effects follow the real scripts: the `CreateNew` lock file with stale-lock
//! breaking and refresh, temp files written at exact offsets, SHA-256 verification before a
//! file is moved into place, and the version file written last. Writing `version.txt` in the
//! host's install directory also sets the model's installed script version
//! ([`crate::Host::scripts_version`]), so `-File` host scripts run only after a
//! deployment.
//!
//! [`HostFiles::corrupt_next_chunks`] flips a byte of the next pieces written, to exercise hash
//! mismatch handling.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use crate::shell::Outcome;
use crate::state::SimState;
use aetherv_hyperv::deploy::wire::{self, LOCK_FILE, VERSION_FILE};
use aetherv_hyperv::deploy::{INLINE_SCRIPTS, inline_script_name, sha256_hex};
use aetherv_hyperv::protocol::ScriptResult;

/// A file on a simulated host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimFile {
    /// Full path as first written.
    pub path: String,
    /// Contents.
    pub bytes: Vec<u8>,
    /// Last write time.
    pub modified: SystemTime,
}

impl SimFile {
    /// Lowercase hex SHA-256 of the contents (what `Get-FileHash` reports, lowercased).
    pub fn sha256(&self) -> String {
        sha256_hex(&self.bytes)
    }
}

/// The deployment-relevant file system of one simulated host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFiles {
    files: BTreeMap<String, SimFile>,
    corrupt_next: u32,
}

fn join(dir: &str, name: &str) -> String {
    format!("{}\\{name}", dir.trim_end_matches('\\'))
}

fn key(path: &str) -> String {
    path.to_ascii_lowercase()
}

impl HostFiles {
    /// The file at `path`, if it exists.
    pub fn file(&self, path: &str) -> Option<&SimFile> {
        self.files.get(&key(path))
    }

    /// The files directly in `dir`, by path.
    pub fn list(&self, dir: &str) -> Vec<&SimFile> {
        let prefix = key(&join(dir, ""));
        self.files
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix) && !k[prefix.len()..].contains('\\'))
            .map(|(_, f)| f)
            .collect()
    }

    /// Creates or replaces a file.
    pub fn write(&mut self, path: &str, bytes: Vec<u8>, now: SystemTime) {
        self.files.insert(
            key(path),
            SimFile {
                path: path.to_owned(),
                bytes,
                modified: now,
            },
        );
    }

    /// Removes a file; returns whether it existed.
    pub fn remove(&mut self, path: &str) -> bool {
        self.files.remove(&key(path)).is_some()
    }

    /// Sets a file's last write time (e.g. to make a lock look stale).
    pub fn set_modified(&mut self, path: &str, modified: SystemTime) -> bool {
        match self.files.get_mut(&key(path)) {
            Some(f) => {
                f.modified = modified;
                true
            }
            None => false,
        }
    }

    /// Corrupts (flips one byte of) each of the next `pieces` non-empty file pieces written by
    /// `Write-DeployChunk`, as a damaged transfer would.
    pub fn corrupt_next_chunks(&mut self, pieces: u32) {
        self.corrupt_next = pieces;
    }

    fn text(&self, path: &str) -> Option<String> {
        self.file(path)
            .map(|f| String::from_utf8_lossy(&f.bytes).trim().to_owned())
    }

    fn rename(&mut self, from: &str, to: &str, now: SystemTime) -> bool {
        match self.files.remove(&key(from)) {
            Some(f) => {
                self.write(to, f.bytes, now);
                true
            }
            None => false,
        }
    }

    fn remove_matching(&mut self, dir: &str, prefix: &str, suffix: &str) {
        let start = key(&join(dir, prefix));
        let suffix = suffix.to_ascii_lowercase();
        self.files.retain(|k, _| {
            !(k.starts_with(&start) && k.ends_with(&suffix) && !k[start.len()..].contains('\\'))
        });
    }
}

/// The deployment helper a decoded `-EncodedCommand` script is, if it is one.
pub(crate) fn recognise(script: &str) -> Option<&'static str> {
    let name = inline_script_name(script)?;
    INLINE_SCRIPTS
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(n, _)| *n)
}

/// Runs deployment helper `name` on `host` with `stdin`.
pub(crate) fn run(
    state: &mut SimState,
    host: &str,
    install_directory: &str,
    name: &str,
    stdin: &[u8],
    now: SystemTime,
) -> Outcome {
    let result = match emulate(state, host, install_directory, name, stdin, now) {
        Ok(result) => result,
        Err(message) => ScriptResult::failure("DeployFailed", message),
    };
    Outcome {
        stdout: result.render().into_bytes(),
        stderr: Vec::new(),
        exit_code: if result.ok { 0 } else { 1 },
    }
}

fn request<T: serde::de::DeserializeOwned>(stdin: &[u8]) -> Result<T, String> {
    let text = String::from_utf8_lossy(stdin);
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    serde_json::from_str(text.trim()).map_err(|e| format!("Invalid JSON primitive: {e}"))
}

fn data(value: impl serde::Serialize) -> Result<ScriptResult, String> {
    serde_json::to_value(value)
        .map(ScriptResult::success)
        .map_err(|e| e.to_string())
}

fn emulate(
    state: &mut SimState,
    host: &str,
    install_directory: &str,
    name: &str,
    stdin: &[u8],
    now: SystemTime,
) -> Result<ScriptResult, String> {
    let in_install_dir = |dir: &str| {
        dir.trim_end_matches('\\')
            .eq_ignore_ascii_case(install_directory.trim_end_matches('\\'))
    };
    let model_version = state
        .fleet()
        .host(host)
        .and_then(|h| h.scripts_version.clone());
    let lost = || {
        ScriptResult::failure(
            "LockLost",
            "the deployment lock is no longer held by this deployer",
        )
    };
    match name {
        "Get-DeployVersion" => {
            let req: wire::VersionRequest = request(stdin)?;
            let files = state.host_files_mut(host);
            let version = if in_install_dir(&req.dir) {
                model_version
            } else {
                files.text(&join(&req.dir, VERSION_FILE))
            };
            data(wire::VersionData { version })
        }
        "Lock-Deploy" => {
            let req: wire::LockRequest = request(stdin)?;
            let files = state.host_files_mut(host);
            let lock = join(&req.dir, LOCK_FILE);
            let mut acquired = false;
            let mut holder = None;
            let mut age = None;
            for attempt in 1..=2 {
                let Some(existing) = files.file(&lock) else {
                    files.write(&lock, req.token.clone().into_bytes(), now);
                    acquired = true;
                    break;
                };
                let seconds = now
                    .duration_since(existing.modified)
                    .unwrap_or(Duration::ZERO)
                    .as_secs();
                age = Some(i64::try_from(seconds).unwrap_or(i64::MAX));
                holder = files.text(&lock);
                if attempt == 2 || seconds <= req.stale_seconds {
                    break;
                }
                files.remove(&lock);
            }
            let version = if in_install_dir(&req.dir) {
                model_version
            } else {
                files.text(&join(&req.dir, VERSION_FILE))
            };
            let mut hashes = BTreeMap::new();
            if acquired {
                files.remove_matching(&req.dir, ".deploy-", ".tmp");
                for f in &req.files {
                    if let Some(file) = files.file(&join(&req.dir, &f.name))
                        && file.bytes.len() as u64 == f.size
                    {
                        hashes.insert(f.name.clone(), file.sha256());
                    }
                }
            }
            data(wire::LockData {
                acquired,
                holder,
                age_seconds: age,
                version,
                hashes,
            })
        }
        "Write-DeployChunk" => {
            let (req, pieces) = wire::parse_chunk_stdin(stdin)?;
            let files = state.host_files_mut(host);
            let lock = join(&req.dir, LOCK_FILE);
            if files.text(&lock).as_deref() != Some(req.token.as_str()) {
                return Ok(lost());
            }
            files.set_modified(&lock, now);
            let mut installed = Vec::new();
            let mut mismatch = None;
            for (piece, mut bytes) in req.pieces.into_iter().zip(pieces) {
                if files.corrupt_next > 0
                    && let Some(b) = bytes.first_mut()
                {
                    *b ^= 0xff;
                    files.corrupt_next -= 1;
                }
                let temp = join(&req.dir, &piece.temp);
                let mut content = if piece.offset == 0 {
                    Vec::new()
                } else {
                    files
                        .file(&temp)
                        .map(|f| f.bytes.clone())
                        .ok_or_else(|| format!("Could not find file '{temp}'."))?
                };
                if content.len() as u64 != piece.offset {
                    return Err(format!(
                        "temp file {} has {} bytes, expected {}",
                        piece.temp,
                        content.len(),
                        piece.offset
                    ));
                }
                content.extend_from_slice(&bytes);
                files.write(&temp, content, now);
                if let (Some(name), Some(expected)) = (piece.name, piece.sha256) {
                    let actual = files.file(&temp).map(SimFile::sha256).unwrap_or_default();
                    if actual != expected {
                        files.remove(&temp);
                        mismatch = Some(wire::Mismatch { name, actual });
                        break;
                    }
                    files.rename(&temp, &join(&req.dir, &name), now);
                    installed.push(name);
                }
            }
            data(wire::ChunkData {
                installed: serde_json::json!(installed),
                mismatch,
            })
        }
        "Complete-Deploy" => {
            let req: wire::CompleteRequest = request(stdin)?;
            let files = state.host_files_mut(host);
            let lock = join(&req.dir, LOCK_FILE);
            let mine = files.text(&lock).as_deref() == Some(req.token.as_str());
            if let Some(version) = &req.version {
                if !mine {
                    return Ok(lost());
                }
                files.write(
                    &join(&req.dir, VERSION_FILE),
                    version.clone().into_bytes(),
                    now,
                );
            }
            files.remove_matching(&req.dir, &format!(".deploy-{}-", req.token), ".tmp");
            if mine {
                files.remove(&lock);
            }
            if let Some(version) = &req.version
                && in_install_dir(&req.dir)
            {
                let deployed = deployed_isos(state.host_files_mut(host), &req.dir);
                if let Some(h) = state.fleet_mut().host_mut(host) {
                    h.scripts_version = Some(version.clone());
                    h.isos.retain(|i| !in_dir(&i.path, &req.dir));
                    h.isos.splice(0..0, deployed);
                }
            }
            data(wire::CompleteData {
                released: mine,
                version: req.version,
            })
        }
        other => Err(format!("no deployment helper {other}")),
    }
}

/// Whether `path` is directly in `dir`.
fn in_dir(path: &str, dir: &str) -> bool {
    let prefix = key(&join(dir, ""));
    let path = key(path);
    path.starts_with(&prefix) && !path[prefix.len()..].contains('\\')
}

/// The provisioning ISOs deployed into the install directory `dir`, as `Get-HostFacts` lists
/// them: every `*.iso` whose name says `windows` or `linux`, with the version in its
/// `<iso>.version` side file (empty when there is none: the facts then say `null`).
fn deployed_isos(files: &HostFiles, dir: &str) -> Vec<crate::model::ProvisioningIso> {
    files
        .list(dir)
        .into_iter()
        .filter_map(|f| {
            let name = f
                .path
                .rsplit('\\')
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase();
            let stem = name.strip_suffix(".iso")?;
            let os_family = if stem.contains("windows") {
                crate::model::OsFamily::Windows
            } else if stem.contains("linux") {
                crate::model::OsFamily::Linux
            } else {
                return None;
            };
            Some(crate::model::ProvisioningIso {
                os_family,
                path: f.path.clone(),
                size_bytes: f.bytes.len() as u64,
                version: files
                    .text(&format!("{}.version", f.path))
                    .unwrap_or_default(),
            })
        })
        .collect()
}
