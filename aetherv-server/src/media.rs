//! Provisioning ISOs, built at server start: `LinuxProvisioning.iso` (volume label `cidata`:
//! the cloud-init bootstrap `user-data` and `meta-data`, the Linux guest agent binary, its
//! systemd unit and a `version` file) and `WindowsProvisioning.iso` (the Windows agent scripts,
//! `SetupComplete.cmd` and a `version` file).
//!
//! The files come from the binary (`assets/iso/<family>/`, compiled in) or, per family, from
//! `AETHERV_ISO_SOURCE_DIR/<family>/` when that folder exists. The Linux agent binary is
//! `AETHERV_GUEST_AGENT`, else `aetherv-guest` next to the server's executable; without it the
//! Linux ISO is not built (the server says so in a log line and in every host view).
//!
//! The ISO version is derived from the content: the first 16 hex digits of the SHA-256 over
//! the sorted names and SHA-256s of every other file. It is written into the `version` file
//! (which the agents compare with `hlvmm.meta.version`) and deployed next to the ISO as
//! `<iso>.version`, which `Get-HostFacts` reports as the ISO's version. The image itself is
//! written by `xorriso` (ISO 9660 level 3 with Joliet and Rock Ridge names) with every
//! timestamp fixed, so the same input always gives the same bytes and the same SHA-256.

use std::path::{Path, PathBuf};
use std::process::Command;

use aetherv_hyperv::deploy::Artifact;
use sha2::{Digest, Sha256};

/// The Linux provisioning ISO's file name (on hosts, in the install directory).
pub const LINUX_ISO: &str = "LinuxProvisioning.iso";
/// The Windows provisioning ISO's file name (on hosts, in the install directory).
pub const WINDOWS_ISO: &str = "WindowsProvisioning.iso";
/// The volume label cloud-init's NoCloud data source looks for.
pub const LINUX_LABEL: &str = "cidata";
/// The Windows ISO's volume label.
pub const WINDOWS_LABEL: &str = "AETHERV_WIN";
/// The agent binary's name on the Linux ISO (and next to the server's executable).
pub const AGENT_FILE: &str = "aetherv-guest";
/// The name of the version file on both ISOs.
pub const VERSION_FILE: &str = "version";
/// Every timestamp in the images (2000-01-01T00:00:00Z), for reproducible output.
const FIXED_EPOCH: &str = "946684800";
const FIXED_DATE: &str = "2000010100000000";

/// The Linux bootstrap files compiled into the binary.
pub const LINUX_EMBEDDED: [(&str, &str); 3] = [
    ("user-data", include_str!("../assets/iso/linux/user-data")),
    ("meta-data", include_str!("../assets/iso/linux/meta-data")),
    (
        "aetherv-guest.service",
        include_str!("../assets/iso/linux/aetherv-guest.service"),
    ),
];

/// The Windows agent files compiled into the binary.
pub const WINDOWS_EMBEDDED: [(&str, &str); 3] = [
    (
        "SetupComplete.cmd",
        include_str!("../assets/iso/windows/SetupComplete.cmd"),
    ),
    (
        "Install-AethervAgent.ps1",
        include_str!("../assets/iso/windows/Install-AethervAgent.ps1"),
    ),
    (
        "AethervAgent.ps1",
        include_str!("../assets/iso/windows/AethervAgent.ps1"),
    ),
];

/// Where the provisioning ISOs come from (`AETHERV_*` variables, see `CONFIGURATION.md`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MediaConfig {
    /// Build the ISOs at all (`AETHERV_PROVISIONING_ISOS`, default on).
    pub enabled: bool,
    /// Replaces the embedded files of a family with `<dir>/linux/` or `<dir>/windows/` when
    /// that folder exists (`AETHERV_ISO_SOURCE_DIR`).
    pub source_dir: Option<PathBuf>,
    /// The Linux agent binary (`AETHERV_GUEST_AGENT`; default: `aetherv-guest` next to the
    /// server's executable).
    pub guest_agent: Option<PathBuf>,
    /// Where the built ISOs are kept (`AETHERV_ISO_OUTPUT_DIR`; default: a folder in the
    /// system's temp directory).
    pub output_dir: Option<PathBuf>,
    /// The `xorriso` program (`AETHERV_XORRISO`; default: `xorriso` on `PATH`).
    pub xorriso: Option<PathBuf>,
}

/// Why building a provisioning ISO failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MediaError {
    /// A file could not be read or written.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `xorriso` could not be started.
    #[error(
        "cannot run {program} (install the Debian package xorriso or set AETHERV_XORRISO): {source}"
    )]
    NoWriter {
        /// The program tried.
        program: String,
        /// Why it did not start.
        source: std::io::Error,
    },
    /// `xorriso` ran and failed.
    #[error("{program} failed building {iso} ({status}): {stderr}")]
    WriterFailed {
        /// The program.
        program: String,
        /// The ISO being built.
        iso: &'static str,
        /// Its exit status.
        status: String,
        /// The end of its error output.
        stderr: String,
    },
    /// A source folder holds something that cannot go on the ISO.
    #[error("{path}: {detail}")]
    BadSource {
        /// The file or folder.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The built ISO cannot be deployed (a bad artifact name, which is a bug).
    #[error("cannot deploy {iso}: {detail}")]
    Artifact {
        /// The ISO.
        iso: &'static str,
        /// The deployment library's error.
        detail: String,
    },
}

/// One built provisioning ISO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltIso {
    /// `linux` or `windows`.
    pub os_family: &'static str,
    /// File name on the hosts ([`LINUX_ISO`] or [`WINDOWS_ISO`]).
    pub file_name: &'static str,
    /// The ISO on this machine.
    pub path: PathBuf,
    /// The content-derived version (also in the ISO's `version` file).
    pub version: String,
    /// Lowercase hex SHA-256 of the whole ISO.
    pub sha256: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// The files on the ISO, sorted.
    pub files: Vec<String>,
}

impl BuiltIso {
    /// The deployment artifacts: the ISO itself (streamed from disk in chunks) and its
    /// `<iso>.version` side file, which `Get-HostFacts` reports as the ISO's version.
    ///
    /// # Errors
    ///
    /// [`MediaError::Artifact`] when the deployment library refuses a name.
    pub fn artifacts(&self) -> Result<[Artifact; 2], MediaError> {
        let bad = |e: aetherv_hyperv::Error| MediaError::Artifact {
            iso: self.file_name,
            detail: e.to_string(),
        };
        let iso = Artifact::from_file_with_hash(
            self.file_name,
            &self.path,
            &self.sha256,
            self.size_bytes,
        )
        .map_err(bad)?;
        let version = Artifact::from_bytes(
            format!("{}.version", self.file_name),
            self.version.clone().into_bytes(),
        )
        .map_err(bad)?;
        Ok([iso, version])
    }
}

/// A provisioning ISO that was not built, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingIso {
    /// `linux` or `windows`.
    pub os_family: &'static str,
    /// File name it would have on the hosts.
    pub file_name: &'static str,
    /// Why it was not built.
    pub reason: String,
}

/// The outcome of building the provisioning ISOs at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProvisioningMedia {
    /// The ISOs built (deployed to every host with the host scripts).
    pub built: Vec<BuiltIso>,
    /// The ISOs not built, with the reason.
    pub missing: Vec<MissingIso>,
}

impl ProvisioningMedia {
    /// Every deployment artifact of the built ISOs.
    ///
    /// # Errors
    ///
    /// [`MediaError::Artifact`] when the deployment library refuses a name.
    pub fn artifacts(&self) -> Result<Vec<Artifact>, MediaError> {
        let mut out = Vec::new();
        for iso in &self.built {
            out.extend(iso.artifacts()?);
        }
        Ok(out)
    }
}

/// The agent binary `config` names, else `aetherv-guest` next to the current executable;
/// `None` when there is none.
pub fn find_agent(config: &MediaConfig) -> Result<Option<PathBuf>, String> {
    if let Some(path) = &config.guest_agent {
        return if path.is_file() {
            Ok(Some(path.clone()))
        } else {
            Err(format!(
                "AETHERV_GUEST_AGENT names {} but there is no such file",
                path.display()
            ))
        };
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(AGENT_FILE)));
    Ok(beside.filter(|p| p.is_file()))
}

/// Builds both ISOs (blocking: call it from `spawn_blocking`). An ISO that cannot be built is
/// listed in [`ProvisioningMedia::missing`] with the reason; nothing is faked.
pub fn build_all(config: &MediaConfig) -> ProvisioningMedia {
    let mut media = ProvisioningMedia::default();
    if !config.enabled {
        for (os_family, file_name) in [("linux", LINUX_ISO), ("windows", WINDOWS_ISO)] {
            media.missing.push(MissingIso {
                os_family,
                file_name,
                reason: "AETHERV_PROVISIONING_ISOS=false".to_owned(),
            });
        }
        return media;
    }
    let linux = match find_agent(config) {
        Err(reason) => Err(reason),
        Ok(None) => Err(format!(
            "no Linux guest agent: set AETHERV_GUEST_AGENT or put {AGENT_FILE} next to the server's executable"
        )),
        Ok(Some(agent)) => build_linux(config, &agent).map_err(|e| e.to_string()),
    };
    match linux {
        Ok(iso) => media.built.push(iso),
        Err(reason) => media.missing.push(MissingIso {
            os_family: "linux",
            file_name: LINUX_ISO,
            reason,
        }),
    }
    match build_windows(config) {
        Ok(iso) => media.built.push(iso),
        Err(e) => media.missing.push(MissingIso {
            os_family: "windows",
            file_name: WINDOWS_ISO,
            reason: e.to_string(),
        }),
    }
    media
}

/// One file to put on an ISO.
enum Source {
    Text(String),
    File(PathBuf),
}

/// Builds `LinuxProvisioning.iso` with the agent at `agent`.
///
/// # Errors
///
/// [`MediaError`] naming the file or the program that failed.
pub fn build_linux(config: &MediaConfig, agent: &Path) -> Result<BuiltIso, MediaError> {
    let mut files = family_sources(config, "linux", &LINUX_EMBEDDED)?;
    files.retain(|(name, _)| name != AGENT_FILE);
    files.push((AGENT_FILE.to_owned(), Source::File(agent.to_owned())));
    build("linux", LINUX_ISO, LINUX_LABEL, config, files)
}

/// Builds `WindowsProvisioning.iso`.
///
/// # Errors
///
/// [`MediaError`] naming the file or the program that failed.
pub fn build_windows(config: &MediaConfig) -> Result<BuiltIso, MediaError> {
    let files = family_sources(config, "windows", &WINDOWS_EMBEDDED)?;
    build("windows", WINDOWS_ISO, WINDOWS_LABEL, config, files)
}

/// The files of `family`: `<source_dir>/<family>/*` when that folder exists, else the embedded
/// ones. A `version` file among them is ignored (it is generated).
fn family_sources(
    config: &MediaConfig,
    family: &str,
    embedded: &[(&str, &str)],
) -> Result<Vec<(String, Source)>, MediaError> {
    let dir = config
        .source_dir
        .as_ref()
        .map(|d| d.join(family))
        .filter(|d| d.is_dir());
    let Some(dir) = dir else {
        return Ok(embedded
            .iter()
            .map(|(name, text)| ((*name).to_owned(), Source::Text((*text).to_owned())))
            .collect());
    };
    let io = |what, path: &Path| {
        let path = path.to_owned();
        move |source| MediaError::Io { what, path, source }
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(io("cannot read", &dir))? {
        let entry = entry.map_err(io("cannot read", &dir))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if !path.is_file() {
            return Err(MediaError::BadSource {
                path,
                detail: "only plain files go on a provisioning ISO (no folders)".to_owned(),
            });
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(MediaError::BadSource {
                path,
                detail: "file names are letters, digits, '.', '_' and '-'".to_owned(),
            });
        }
        if name.eq_ignore_ascii_case(VERSION_FILE) {
            continue;
        }
        files.push((name, Source::File(path)));
    }
    if files.is_empty() {
        return Err(MediaError::BadSource {
            path: dir,
            detail: "the folder is empty".to_owned(),
        });
    }
    Ok(files)
}

/// The content-derived version of an ISO holding `files` (name, SHA-256): the first 16 hex
/// digits of the SHA-256 over the sorted `name NUL sha256 LF` lines.
pub fn content_version(files: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = files.iter().collect();
    sorted.sort();
    let mut hasher = Sha256::new();
    for (name, sha) in sorted {
        hasher.update(name.as_bytes());
        hasher.update([0]);
        hasher.update(sha.as_bytes());
        hasher.update(b"\n");
    }
    let hex = sha256_hex_digest(&hasher.finalize());
    hex.get(..16).unwrap_or_default().to_owned()
}

fn sha256_hex_digest(digest: &[u8]) -> String {
    use std::fmt::Write as _;
    digest.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn output_dir(config: &MediaConfig) -> PathBuf {
    config
        .output_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("aetherv-provisioning-isos"))
}

/// Stages `files` plus the `version` file in a fresh folder, runs xorriso, and keeps the
/// image as `<output>/<stem>-<sha256 prefix>.iso` (content-addressed, so servers sharing the
/// folder never replace an image another one deploys).
fn build(
    os_family: &'static str,
    file_name: &'static str,
    label: &str,
    config: &MediaConfig,
    files: Vec<(String, Source)>,
) -> Result<BuiltIso, MediaError> {
    let out = output_dir(config);
    let io = |what, path: &Path| {
        let path = path.to_owned();
        move |source| MediaError::Io { what, path, source }
    };
    std::fs::create_dir_all(&out).map_err(io("cannot create", &out))?;
    let unique = format!(
        ".stage-{os_family}-{}-{}",
        std::process::id(),
        STAGE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let stage = out.join(&unique);
    let result = (|| {
        let root = stage.join("root");
        std::fs::create_dir_all(&root).map_err(io("cannot create", &root))?;
        let mut hashes = Vec::new();
        let mut names = Vec::new();
        for (name, source) in files {
            let target = root.join(&name);
            match source {
                Source::Text(text) => {
                    std::fs::write(&target, text.as_bytes())
                        .map_err(io("cannot write", &target))?;
                }
                Source::File(path) => {
                    std::fs::copy(&path, &target).map_err(io("cannot copy", &path))?;
                }
            }
            let (sha256, _) = hash_file(&target).map_err(io("cannot read", &target))?;
            hashes.push((name.clone(), sha256));
            names.push(name);
        }
        let version = content_version(&hashes);
        let version_path = root.join(VERSION_FILE);
        std::fs::write(&version_path, version.as_bytes())
            .map_err(io("cannot write", &version_path))?;
        names.push(VERSION_FILE.to_owned());
        names.sort();
        let image = stage.join(file_name);
        run_xorriso(config, file_name, label, &root, &image)?;
        let (sha256, size_bytes) = hash_file(&image).map_err(io("cannot read", &image))?;
        let stem = file_name.trim_end_matches(".iso");
        let kept = out.join(format!(
            "{stem}-{}.iso",
            sha256.get(..16).unwrap_or_default()
        ));
        if !kept.is_file() {
            std::fs::rename(&image, &kept).map_err(io("cannot move the image to", &kept))?;
        }
        Ok(BuiltIso {
            os_family,
            file_name,
            path: kept,
            version,
            sha256,
            size_bytes,
            files: names,
        })
    })();
    let _ = std::fs::remove_dir_all(&stage);
    result
}

static STAGE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    use std::io::Read as _;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(buf.get(..n).unwrap_or_default());
        size += n as u64;
    }
    Ok((sha256_hex_digest(&hasher.finalize()), size))
}

/// `xorriso -as mkisofs`: ISO 9660 level 3, Joliet (`-J`) and Rock Ridge with normalised
/// owners and modes (`-r`), every timestamp fixed (`SOURCE_DATE_EPOCH` and
/// `--set_all_file_dates`), so identical input gives identical bytes.
fn run_xorriso(
    config: &MediaConfig,
    iso: &'static str,
    label: &str,
    root: &Path,
    image: &Path,
) -> Result<(), MediaError> {
    let program = config
        .xorriso
        .clone()
        .unwrap_or_else(|| PathBuf::from("xorriso"));
    let shown = program.display().to_string();
    let output = Command::new(&program)
        .env("SOURCE_DATE_EPOCH", FIXED_EPOCH)
        .args(["-as", "mkisofs", "-quiet", "-iso-level", "3", "-J", "-r"])
        .arg("-V")
        .arg(label)
        .args(["--set_all_file_dates", FIXED_DATE])
        .arg("-o")
        .arg(image)
        .arg(root)
        .output()
        .map_err(|source| MediaError::NoWriter {
            program: shown.clone(),
            source,
        })?;
    if !output.status.success() || !image.is_file() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
        return Err(MediaError::WriterFailed {
            program: shown,
            iso,
            status: output.status.to_string(),
            stderr: tail.into_iter().rev().collect::<Vec<_>>().join(" / "),
        });
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn versions_depend_on_content_only() {
        let a = vec![
            ("user-data".to_owned(), "11".to_owned()),
            ("meta-data".to_owned(), "22".to_owned()),
        ];
        let mut b = a.clone();
        b.reverse();
        assert_eq!(content_version(&a), content_version(&b));
        assert_eq!(content_version(&a).len(), 16);
        b[0].1 = "33".to_owned();
        assert_ne!(content_version(&a), content_version(&b));
    }

    #[test]
    fn a_named_agent_that_does_not_exist_is_an_error() {
        let config = MediaConfig {
            enabled: true,
            guest_agent: Some(PathBuf::from("/nonexistent/aetherv-guest")),
            ..MediaConfig::default()
        };
        let err = find_agent(&config).unwrap_err();
        assert!(err.contains("AETHERV_GUEST_AGENT"), "{err}");
        let media = build_all(&config);
        assert!(media.built.iter().all(|i| i.os_family != "linux"));
        assert!(media.missing.iter().any(|m| m.file_name == LINUX_ISO));
    }

    /// The Windows agent speaks the protocol of `aetherv-kvp` (the one implementation both
    /// halves share): every key, state, data name and limit it uses is the crate's, and no
    /// secret reaches its log or a file.
    #[test]
    fn the_windows_agent_uses_the_protocol_constants_and_never_persists_secrets() {
        use aetherv_provision::kvp::{GuestState, HostState, MAX_CHUNKS, keys};
        let agent = WINDOWS_EMBEDDED
            .iter()
            .find(|(name, _)| *name == "AethervAgent.ps1")
            .map(|(_, text)| *text)
            .unwrap();
        for key in [
            keys::HOST_STATE,
            keys::VERSION,
            keys::SHARED_AES_KEY,
            keys::CHECKSUM,
            keys::GUEST_PUBLIC_KEY,
            keys::GUEST_STATE,
            keys::GUEST_ERROR,
            keys::DATA_PREFIX,
        ] {
            assert!(agent.contains(&format!("'{key}")), "{key}");
        }
        for state in [
            HostState::WaitingForPublicKey.as_str(),
            HostState::ProvisioningDataPublished.as_str(),
            GuestState::WaitingForAesKey.as_str(),
            GuestState::Applying.as_str(),
            GuestState::ProvisioningApplied.as_str(),
            GuestState::ProvisioningFailed.as_str(),
        ] {
            assert!(agent.contains(&format!("'{state}'")), "{state}");
        }
        for name in [
            keys::data::GUEST_HOST_NAME,
            keys::data::GUEST_LA_UID,
            keys::data::GUEST_LA_PW,
            keys::data::GUEST_V4_IP_ADDR,
            keys::data::GUEST_V4_CIDR_PREFIX,
            keys::data::GUEST_V4_DEFAULT_GW,
            keys::data::GUEST_V4_DNS1,
            keys::data::GUEST_V4_DNS2,
            keys::data::GUEST_NET_DNS_SUFFIX,
            keys::data::GUEST_DOMAIN_JOIN_TARGET,
            keys::data::GUEST_DOMAIN_JOIN_UID,
            keys::data::GUEST_DOMAIN_JOIN_PW,
            keys::data::GUEST_DOMAIN_JOIN_OU,
        ] {
            assert!(agent.contains(&format!("'{name}'")), "{name}");
        }
        assert!(agent.contains(&format!("at most {MAX_CHUNKS} are allowed")));
        assert!(agent.contains(&format!(
            "$MaxErrorChars = {}",
            aetherv_provision::kvp::guest::error_text(&"x".repeat(1000)).len()
        )));
        assert!(agent.contains("ExportCspBlob($false)"));
        assert!(agent.contains("$Rsa.Decrypt($bytes, $false)"));
        for line in agent.lines() {
            let lower = line.to_ascii_lowercase();
            if lower.contains("write-agentlog") || lower.contains("add-content") {
                for secret in ["$password", "_pw", "$values", "$secure", "$credential"] {
                    assert!(
                        !lower.contains(secret),
                        "a log line may carry a secret: {line}"
                    );
                }
            }
        }
        for writer in [
            "set-content",
            "out-file",
            "export-clixml",
            "convertfrom-securestring",
            "writealltext",
            "writeallbytes",
        ] {
            assert!(
                !agent.to_ascii_lowercase().contains(writer),
                "the agent must not write files with {writer}"
            );
        }
    }

    #[test]
    fn disabled_builds_nothing() {
        let media = build_all(&MediaConfig::default());
        assert!(media.built.is_empty());
        assert_eq!(media.missing.len(), 2);
    }

    #[test]
    fn a_missing_writer_is_a_clear_error() {
        let config = MediaConfig {
            enabled: true,
            xorriso: Some(PathBuf::from("/nonexistent/xorriso")),
            output_dir: Some(
                std::env::temp_dir().join(format!("aetherv-media-nowriter-{}", std::process::id())),
            ),
            ..MediaConfig::default()
        };
        let err = build_windows(&config).unwrap_err();
        assert!(matches!(err, MediaError::NoWriter { .. }), "{err}");
        assert!(err.to_string().contains("xorriso"));
    }
}
