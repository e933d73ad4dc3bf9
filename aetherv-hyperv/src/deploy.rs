//! Artifact deployment: getting the host scripts (and configured provisioning ISOs) onto a
//! Hyper-V host, verified, exactly once per version.
//!
//! The host scripts of `assets/powershell/` are compiled into the binary by `build.rs`
//! ([`Bundle::embedded`]); extra files such as provisioning ISOs are added at run time with
//! [`Artifact::from_file`] and [`Bundle::with`] and streamed from disk when pushed. A bundle's
//! version is the SHA-256 over its sorted names and hashes.
//!
//! [`Deployer::ensure_deployed`] talks to the host only through
//! [`PowerShellExecutor::run_inline`], with fixed helper scripts from `assets/deploy/` whose
//! data travels on stdin:
//!
//! 1. `Get-DeployVersion` reads `<install dir>\version.txt`. Equal to the bundle version: done
//!    (one WinRM command).
//! 2. Otherwise, under a per-host in-process async mutex, `Lock-Deploy` creates
//!    `<install dir>\.deploy.lock` with `CreateNew` semantics (a lock not refreshed for
//!    [`DeployOptions::stale_lock_after`] is broken), re-reads the version (another deployer
//!    may just have finished) and reports the hashes of files already in place, which are
//!    skipped.
//! 3. `Write-DeployChunk` commands carry up to [`DeployOptions::chunk_size`] bytes each (small
//!    files share a command), base64 on stdin, appended to unique temp files; a file's last
//!    piece has the host compute its SHA-256 (`Get-FileHash`) and, if it matches, move it into
//!    place atomically (`File.Replace`/`File.Move`). Each command refreshes the lock.
//! 4. `Complete-Deploy` writes the version file last (via a temp file), removes temp files
//!    and releases the lock. On any failure the lock is released without a version, so the
//!    next call deploys again.
//!
//! Invariant: the version file names a bundle only after every file of that bundle has been
//! verified on the host.

mod bundle;
mod gate;
pub mod wire;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

pub use bundle::{Artifact, ArtifactSource, Bundle, sha256_hex};
pub use gate::DeployGate;
pub use wire::{LOCK_FILE, VERSION_FILE};

use crate::error::{Error, Result};
use crate::executor::PowerShellExecutor;
use crate::protocol::parse_result;

/// `Get-DeployVersion`: reads the installed version.
pub const GET_DEPLOY_VERSION: &str = include_str!("../assets/deploy/Get-DeployVersion.ps1");
/// `Lock-Deploy`: takes the host-side deployment lock.
pub const LOCK_DEPLOY: &str = include_str!("../assets/deploy/Lock-Deploy.ps1");
/// `Write-DeployChunk`: writes file pieces, verifies and installs completed files.
pub const WRITE_DEPLOY_CHUNK: &str = include_str!("../assets/deploy/Write-DeployChunk.ps1");
/// `Complete-Deploy`: writes the version file and releases the lock.
pub const COMPLETE_DEPLOY: &str = include_str!("../assets/deploy/Complete-Deploy.ps1");

/// Every deployment helper script, by name.
pub const INLINE_SCRIPTS: [(&str, &str); 4] = [
    ("Get-DeployVersion", GET_DEPLOY_VERSION),
    ("Lock-Deploy", LOCK_DEPLOY),
    ("Write-DeployChunk", WRITE_DEPLOY_CHUNK),
    ("Complete-Deploy", COMPLETE_DEPLOY),
];

/// The marker that starts the first line of every deployment helper script.
pub const INLINE_MARKER: &str = "# aetherv-inline:";

/// The helper name in a script's `# aetherv-inline: <Name>` marker line (looked for in the
/// first few lines, so a prelude the client prepends does not hide it).
pub fn inline_script_name(script: &str) -> Option<&str> {
    script
        .lines()
        .take(4)
        .find_map(|l| l.trim().strip_prefix(INLINE_MARKER))
        .map(str::trim)
        .filter(|n| !n.is_empty())
}

/// Tuning of a [`Deployer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployOptions {
    /// Most file bytes sent in one command (before base64). Bounds memory on both ends.
    pub chunk_size: usize,
    /// How long to wait for another deployer's host lock before giving up.
    pub lock_wait: Duration,
    /// Pause between attempts to take a busy host lock.
    pub lock_retry_interval: Duration,
    /// A host lock not refreshed for this long is considered abandoned and broken.
    pub stale_lock_after: Duration,
}

impl Default for DeployOptions {
    fn default() -> Self {
        Self {
            chunk_size: 2 << 20,
            lock_wait: Duration::from_secs(300),
            lock_retry_interval: Duration::from_millis(500),
            stale_lock_after: Duration::from_secs(600),
        }
    }
}

/// Progress of one deployment, reported after every piece the host accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployProgress {
    /// Host deployed to.
    pub host: String,
    /// File the piece belonged to.
    pub file: String,
    /// Bytes of this file on the host so far.
    pub file_bytes_done: u64,
    /// Size of this file.
    pub file_bytes_total: u64,
    /// Bytes of all files being pushed that are on the host so far (never decreases).
    pub bytes_done: u64,
    /// Bytes of all files being pushed.
    pub bytes_total: u64,
    /// `bytes_done` as a percentage of `bytes_total` (100 when nothing needs pushing).
    pub percent: u8,
}

/// What a deployment did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeployOutcome {
    /// The host already had this version; one command was sent.
    UpToDate,
    /// This call deployed the bundle.
    Deployed,
    /// Another deployer finished the same version while this one waited for the lock.
    DeployedByOther,
}

/// The result of [`Deployer::ensure_deployed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployReport {
    /// Host deployed to.
    pub host: String,
    /// The bundle version now on the host.
    pub version: String,
    /// The version found on the host first (`None`: nothing was installed).
    pub previous_version: Option<String>,
    /// What happened.
    pub outcome: DeployOutcome,
    /// Files written, in order.
    pub files_written: Vec<String>,
    /// Files that were already in place with the right hash.
    pub files_unchanged: Vec<String>,
    /// File bytes sent (before base64).
    pub bytes_sent: u64,
    /// PowerShell commands sent to the host.
    pub commands: u32,
}

/// Deploys bundles to hosts. Clones share the per-host in-process locks, so one `Deployer`
/// (or clones of it) should serve the whole process.
#[derive(Debug, Clone, Default)]
pub struct Deployer {
    options: DeployOptions,
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

/// Distinguishes deployers in this process when building lock tokens.
static NEXT_TOKEN: AtomicU64 = AtomicU64::new(0);

/// One deployment in progress: the executor, counters and the lock token.
struct Run<'a, E: ?Sized> {
    executor: &'a E,
    dir: String,
    token: String,
    commands: u32,
}

impl<E: PowerShellExecutor + ?Sized> Run<'_, E> {
    fn host(&self) -> String {
        self.executor.host().to_owned()
    }

    /// Runs one helper script and returns its typed data.
    async fn call<T: DeserializeOwned>(
        &mut self,
        step: &'static str,
        script: &'static str,
        stdin: Vec<u8>,
        file: Option<&str>,
    ) -> Result<T> {
        self.commands += 1;
        let output = self.executor.run_inline(script, Bytes::from(stdin)).await?;
        let failed = |code: &str, message: String| Error::DeployFailed {
            host: self.host(),
            step,
            file: file.map(str::to_owned),
            code: code.to_owned(),
            message,
        };
        let result = parse_result(step, &output.stdout).map_err(|e| {
            let stderr = output.stderr.trim();
            let detail = if stderr.is_empty() {
                format!("{e} (exit code {})", output.exit_code)
            } else {
                format!("{e} (exit code {}); stderr: {stderr}", output.exit_code)
            };
            failed("BadOutput", detail)
        })?;
        if !result.ok {
            let (code, message) = result
                .error
                .map(|f| (f.code, f.message))
                .unwrap_or_else(|| ("Unknown".to_owned(), "no error details".to_owned()));
            return Err(failed(&code, message));
        }
        serde_json::from_value(result.data.unwrap_or_default())
            .map_err(|e| failed("BadOutput", format!("unexpected result data: {e}")))
    }

    async fn complete(&mut self, version: Option<&str>) -> Result<wire::CompleteData> {
        let request = wire::CompleteRequest {
            dir: self.dir.clone(),
            token: self.token.clone(),
            version: version.map(str::to_owned),
        };
        let stdin = serde_json::to_vec(&request).unwrap_or_default();
        self.call("Complete-Deploy", COMPLETE_DEPLOY, stdin, None)
            .await
    }
}

/// A file being pushed: its artifact, where it stands, and the hash of what was read.
struct Pending<'a> {
    index: usize,
    artifact: &'a Artifact,
    sent: u64,
    hasher: Sha256,
}

impl Deployer {
    /// A deployer with `options`.
    pub fn new(options: DeployOptions) -> Self {
        Self {
            options,
            locks: Arc::default(),
        }
    }

    /// The options in use.
    pub fn options(&self) -> &DeployOptions {
        &self.options
    }

    fn host_lock(&self, key: String) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(locks.entry(key).or_default())
    }

    /// Makes sure the host behind `executor` has `bundle` installed in its install directory.
    ///
    /// Sends exactly one command when the host's version file already names the bundle's
    /// version. Otherwise pushes the files that differ, verifies each on the host, and
    /// writes the version file last. `progress` is called after every accepted piece.
    pub async fn ensure_deployed<E>(
        &self,
        executor: &E,
        bundle: &Bundle,
        progress: impl Fn(DeployProgress) + Send + Sync,
    ) -> Result<DeployReport>
    where
        E: PowerShellExecutor + ?Sized,
    {
        let dir = executor.install_directory().to_owned();
        let mut run = Run {
            executor,
            dir: dir.clone(),
            token: new_token(executor.host()),
            commands: 0,
        };
        let stdin =
            serde_json::to_vec(&wire::VersionRequest { dir: dir.clone() }).unwrap_or_default();
        let found: wire::VersionData = run
            .call("Get-DeployVersion", GET_DEPLOY_VERSION, stdin, None)
            .await?;
        let mut report = DeployReport {
            host: executor.host().to_owned(),
            version: bundle.version().to_owned(),
            previous_version: found.version.clone(),
            outcome: DeployOutcome::UpToDate,
            files_written: Vec::new(),
            files_unchanged: Vec::new(),
            bytes_sent: 0,
            commands: 0,
        };
        if found.version.as_deref() == Some(bundle.version()) {
            report.commands = run.commands;
            return Ok(report);
        }

        let key = format!(
            "{}|{}",
            executor.host().to_ascii_lowercase(),
            dir.to_ascii_lowercase()
        );
        let local = self.host_lock(key);
        let _guard = local.lock().await;

        let lock = self.acquire(&mut run, bundle).await?;
        let result = if lock.version.as_deref() == Some(bundle.version()) {
            report.outcome = DeployOutcome::DeployedByOther;
            Ok(())
        } else {
            report.outcome = DeployOutcome::Deployed;
            self.push(&mut run, bundle, &lock, &mut report, &progress)
                .await
        };
        match result {
            Ok(()) => {
                let version = match report.outcome {
                    DeployOutcome::Deployed => Some(bundle.version()),
                    _ => None,
                };
                run.complete(version).await?;
                report.commands = run.commands;
                Ok(report)
            }
            Err(e) => {
                // Best effort: release the lock and remove temp files; the first error is
                // the one worth reporting.
                let _ = run.complete(None).await;
                Err(e)
            }
        }
    }

    /// Takes the host lock, waiting for another holder up to [`DeployOptions::lock_wait`].
    async fn acquire<E: PowerShellExecutor + ?Sized>(
        &self,
        run: &mut Run<'_, E>,
        bundle: &Bundle,
    ) -> Result<wire::LockData> {
        let request = wire::LockRequest {
            dir: run.dir.clone(),
            token: run.token.clone(),
            stale_seconds: self.options.stale_lock_after.as_secs(),
            files: bundle
                .artifacts()
                .iter()
                .map(|a| wire::FileSize {
                    name: a.name().to_owned(),
                    size: a.size(),
                })
                .collect(),
        };
        let stdin = serde_json::to_vec(&request).unwrap_or_default();
        let started = Instant::now();
        loop {
            let lock: wire::LockData = run
                .call("Lock-Deploy", LOCK_DEPLOY, stdin.clone(), None)
                .await?;
            if lock.acquired {
                return Ok(lock);
            }
            let waited = started.elapsed();
            if waited >= self.options.lock_wait {
                return Err(Error::DeployLocked {
                    host: run.host(),
                    holder: lock
                        .holder
                        .unwrap_or_else(|| "an unknown deployer".to_owned()),
                    age_seconds: lock.age_seconds.unwrap_or_default(),
                    waited_seconds: waited.as_secs(),
                });
            }
            tokio::time::sleep(self.options.lock_retry_interval).await;
        }
    }

    /// Pushes every artifact whose host copy differs, in commands of at most `chunk_size`
    /// bytes.
    async fn push<E: PowerShellExecutor + ?Sized>(
        &self,
        run: &mut Run<'_, E>,
        bundle: &Bundle,
        lock: &wire::LockData,
        report: &mut DeployReport,
        progress: &(impl Fn(DeployProgress) + Send + Sync),
    ) -> Result<()> {
        let mut queue: std::collections::VecDeque<Pending<'_>> = Default::default();
        for (index, artifact) in bundle.artifacts().iter().enumerate() {
            if lock.hashes.get(artifact.name()).map(String::as_str) == Some(artifact.sha256()) {
                report.files_unchanged.push(artifact.name().to_owned());
            } else {
                queue.push_back(Pending {
                    index,
                    artifact,
                    sent: 0,
                    hasher: Sha256::new(),
                });
            }
        }
        let bytes_total: u64 = queue.iter().map(|p| p.artifact.size()).sum();
        let chunk = self.options.chunk_size.max(1);
        let mut bytes_done = 0u64;

        while !queue.is_empty() {
            let mut budget = chunk;
            let mut pieces = Vec::new();
            let mut data = Vec::new();
            // (file, bytes after this piece, size) per piece, for progress.
            let mut done = Vec::new();
            while let Some(file) = queue.front_mut() {
                if budget == 0 {
                    break;
                }
                let artifact = file.artifact;
                let remaining = artifact.size().saturating_sub(file.sent);
                let len = usize::try_from(remaining).unwrap_or(usize::MAX).min(budget);
                let offset = file.sent;
                // Only a file blocks; the scripts are in memory. A blocking task per piece
                // started a thread per host being deployed at once (hundreds at a fleet's
                // start), each with its own stack and allocator cache.
                let bytes = if matches!(artifact.source(), bundle::ArtifactSource::File(_)) {
                    let owned = artifact.clone();
                    tokio::task::spawn_blocking(move || owned.read_at(offset, len))
                        .await
                        .map_err(|e| Error::Artifact {
                            name: artifact.name().to_owned(),
                            detail: format!("reading the file failed: {e}"),
                        })??
                } else {
                    artifact.read_at(offset, len)?
                };
                if bytes.len() != len {
                    return Err(Error::Artifact {
                        name: artifact.name().to_owned(),
                        detail: format!(
                            "the file is shorter than its configured size of {} bytes",
                            artifact.size()
                        ),
                    });
                }
                file.hasher.update(&bytes);
                file.sent += len as u64;
                budget -= len;
                let last = file.sent >= artifact.size();
                if last {
                    let actual = bundle::hex(&std::mem::take(&mut file.hasher).finalize());
                    if actual != artifact.sha256() {
                        return Err(Error::ArtifactChanged {
                            name: artifact.name().to_owned(),
                            expected: artifact.sha256().to_owned(),
                            actual,
                        });
                    }
                }
                pieces.push(wire::Piece {
                    temp: wire::temp_name(&run.token, file.index),
                    offset,
                    name: last.then(|| artifact.name().to_owned()),
                    sha256: last.then(|| artifact.sha256().to_owned()),
                });
                data.push(bytes);
                done.push((artifact.name().to_owned(), file.sent, artifact.size()));
                if last {
                    queue.pop_front();
                }
            }
            let header = wire::ChunkRequest {
                dir: run.dir.clone(),
                token: run.token.clone(),
                pieces,
            };
            let stdin = wire::chunk_stdin(&header, &data);
            let first_file = done.first().map(|(name, _, _)| name.clone());
            let result: wire::ChunkData = run
                .call(
                    "Write-DeployChunk",
                    WRITE_DEPLOY_CHUNK,
                    stdin,
                    first_file.as_deref(),
                )
                .await?;
            if let Some(mismatch) = result.mismatch {
                let expected = bundle
                    .artifacts()
                    .iter()
                    .find(|a| a.name() == mismatch.name)
                    .map(|a| a.sha256().to_owned())
                    .unwrap_or_default();
                return Err(Error::DeployHashMismatch {
                    host: run.host(),
                    file: mismatch.name,
                    expected,
                    actual: mismatch.actual,
                });
            }
            for ((name, file_done, file_total), piece) in done.into_iter().zip(&data) {
                bytes_done += piece.len() as u64;
                report.bytes_sent += piece.len() as u64;
                if file_done >= file_total {
                    report.files_written.push(name.clone());
                }
                progress(DeployProgress {
                    host: run.host(),
                    file: name,
                    file_bytes_done: file_done,
                    file_bytes_total: file_total,
                    bytes_done,
                    bytes_total,
                    percent: percent(bytes_done, bytes_total),
                });
            }
        }
        Ok(())
    }
}

fn percent(done: u64, total: u64) -> u8 {
    if total == 0 {
        return 100;
    }
    u8::try_from(u128::from(done.min(total)) * 100 / u128::from(total)).unwrap_or(100)
}

/// A token unique to this deployment: names the lock holder and the temp files.
fn new_token(host: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut hasher = Sha256::new();
    hasher.update(host.as_bytes());
    hasher.update(std::process::id().to_le_bytes());
    hasher.update(nanos.to_le_bytes());
    hasher.update(NEXT_TOKEN.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let digest = hasher.finalize();
    bundle::hex(digest.get(..8).unwrap_or_default())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn helper_scripts_fit_on_the_command_line_and_carry_their_marker() {
        for (name, script) in INLINE_SCRIPTS {
            assert_eq!(inline_script_name(script), Some(name));
            let invocation = aetherv_winrm::powershell::invocation(script);
            assert!(
                invocation.stdin_script.is_none(),
                "{name} is too long for -EncodedCommand, so it could not also read stdin"
            );
            for needle in [
                "Set-StrictMode -Version Latest",
                "$ErrorActionPreference = 'Stop'",
                crate::protocol::RESULT_BEGIN,
                crate::protocol::RESULT_END,
            ] {
                assert!(script.contains(needle), "{name} lacks {needle}");
            }
        }
        let with_prelude = format!("$ProgressPreference = 'SilentlyContinue'\n{LOCK_DEPLOY}");
        assert_eq!(inline_script_name(&with_prelude), Some("Lock-Deploy"));
        assert_eq!(inline_script_name("Write-Output 1"), None);
    }

    #[test]
    fn deployment_futures_can_be_spawned() {
        fn assert_send<T: Send>(_: &T) {}
        let mock = crate::executor::MockPowerShellExecutor::new();
        let deployer = Deployer::default();
        let bundle = Bundle::embedded();
        let future = deployer.ensure_deployed(&mock, &bundle, |_| {});
        assert_send(&future);
    }

    #[test]
    fn tokens_are_unique_and_percentages_bounded() {
        assert_ne!(new_token("hv01"), new_token("hv01"));
        assert_eq!(new_token("hv01").len(), 16);
        assert_eq!(percent(0, 0), 100);
        assert_eq!(percent(1, 3), 33);
        assert_eq!(percent(5, 3), 100);
    }

    #[test]
    fn chunk_stdin_round_trips() {
        let header = wire::ChunkRequest {
            dir: r"C:\x".to_owned(),
            token: "t".to_owned(),
            pieces: vec![
                wire::Piece {
                    temp: wire::temp_name("t", 0),
                    offset: 0,
                    name: None,
                    sha256: None,
                },
                wire::Piece {
                    temp: wire::temp_name("t", 1),
                    offset: 5,
                    name: Some("a.ps1".to_owned()),
                    sha256: Some("00".to_owned()),
                },
            ],
        };
        let data = vec![b"hello".to_vec(), Vec::new()];
        let stdin = wire::chunk_stdin(&header, &data);
        assert_eq!(wire::parse_chunk_stdin(&stdin).unwrap(), (header, data));
    }
}
