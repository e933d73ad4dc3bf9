//! Applying a configuration: the NoCloud seed written under the root, cloud-init run on it
//! (only when the root is `/`), the seed wiped once consumed, and the agent's unit disabled.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::render::{ConfigError, Interface, Seed};

/// The seed directory, relative to the root.
pub const SEED_DIR: &str = "var/lib/cloud/seed/nocloud";
/// The agent's systemd unit.
pub const UNIT: &str = "aetherv-guest.service";

/// Why applying failed. Messages name files and commands, never values.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// A value cannot be applied.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A file operation failed.
    #[error("{operation} {} failed: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        operation: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A command could not be started or exited unsuccessfully.
    #[error("`{command}` {outcome}")]
    Command {
        /// The command line (never holds values).
        command: String,
        /// "exited with status N" or "could not be started: …".
        outcome: String,
    },
}

fn io<'a>(
    path: &'a Path,
    operation: &'static str,
) -> impl FnOnce(std::io::Error) -> ApplyError + 'a {
    move |source| ApplyError::Io {
        path: path.to_owned(),
        operation,
        source,
    }
}

/// The files of one seed, where they were written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenSeed {
    /// The files written, in order.
    pub files: Vec<PathBuf>,
}

/// Writes `seed` into `<root>/var/lib/cloud/seed/nocloud/` (files mode 0600; a stale
/// `network-config` is removed when the seed has none).
///
/// # Errors
///
/// [`ApplyError::Io`] naming the file.
pub fn write_seed(root: &Path, seed: &Seed) -> Result<WrittenSeed, ApplyError> {
    let dir = root.join(SEED_DIR);
    fs::create_dir_all(&dir).map_err(io(&dir, "creating"))?;
    let mut files = Vec::new();
    let mut parts = vec![
        ("user-data", &seed.user_data),
        ("meta-data", &seed.meta_data),
    ];
    let network = dir.join("network-config");
    match &seed.network_config {
        Some(config) => parts.push(("network-config", config)),
        None => match fs::remove_file(&network) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&network, "removing")(e)),
        },
    }
    for (name, content) in parts {
        let path = dir.join(name);
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(io(&path, "creating"))?;
        file.write_all(content.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(io(&path, "writing"))?;
        files.push(path);
    }
    Ok(WrittenSeed { files })
}

/// Overwrites each file with zeros, syncs it and removes it. Missing files are skipped.
///
/// # Errors
///
/// [`ApplyError::Io`] naming the first file that could not be wiped.
pub fn wipe(files: &[PathBuf]) -> Result<(), ApplyError> {
    for path in files {
        let len = match fs::metadata(path) {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(path, "wiping")(e)),
        };
        let mut file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io(path, "wiping"))?;
        let zeros = vec![0u8; usize::try_from(len).unwrap_or(0).min(1 << 20)];
        file.write_all(&zeros)
            .and_then(|()| file.sync_all())
            .map_err(io(path, "wiping"))?;
        drop(file);
        fs::remove_file(path).map_err(io(path, "removing"))?;
    }
    Ok(())
}

/// Runs a program with arguments, stdout and stderr discarded (cloud-init writes its own
/// logs), and checks its exit status.
///
/// # Errors
///
/// [`ApplyError::Command`].
pub fn run_command(program: &str, args: &[&str]) -> Result<(), ApplyError> {
    let command = std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    let status = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| ApplyError::Command {
            command: command.clone(),
            outcome: format!("could not be started: {e}"),
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(ApplyError::Command {
            command,
            outcome: match status.code() {
                Some(code) => format!("exited with status {code}"),
                None => "was killed by a signal".to_owned(),
            },
        })
    }
}

/// The cloud-init stages run on the seed, in order: `clean` forgets the previous instance
/// (its boot already ran), then the four stages run as at boot.
pub const CLOUD_INIT_STAGES: [&[&str]; 5] = [
    &["clean", "--logs"],
    &["init", "--local"],
    &["init"],
    &["modules", "--mode=config"],
    &["modules", "--mode=final"],
];

/// Runs cloud-init over the seed ([`CLOUD_INIT_STAGES`]).
///
/// # Errors
///
/// [`ApplyError::Command`] for the first stage that fails.
pub fn run_cloud_init() -> Result<(), ApplyError> {
    for args in CLOUD_INIT_STAGES {
        run_command("cloud-init", args)?;
    }
    Ok(())
}

/// Disables the agent's unit so it does not run at the next boot.
///
/// # Errors
///
/// [`ApplyError::Command`].
pub fn disable_unit() -> Result<(), ApplyError> {
    run_command("systemctl", &["disable", UNIT])
}

/// The first physical network interface under `<root>/sys/class/net` (by name, one with a
/// `device` link, `lo` excluded), with its MAC address; `eth0` without MAC when none is found.
pub fn primary_interface(root: &Path) -> Interface {
    let net = root.join("sys/class/net");
    let Ok(entries) = fs::read_dir(&net) else {
        return Interface::default();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("device").exists())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n != "lo")
        .collect();
    names.sort();
    let Some(name) = names.into_iter().next() else {
        return Interface::default();
    };
    let mac = fs::read_to_string(net.join(&name).join("address"))
        .ok()
        .map(|m| m.trim().to_ascii_lowercase())
        .filter(|m| {
            m.len() == 17
                && m.split(':')
                    .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
        });
    Interface { name, mac }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn seed_files_are_private_and_wiped() {
        let root = tempfile::tempdir().unwrap();
        let seed = Seed {
            user_data: "#cloud-config\n".into(),
            meta_data: "instance-id: \"x\"\n".into(),
            network_config: Some("version: 2\n".into()),
        };
        let written = write_seed(root.path(), &seed).unwrap();
        assert_eq!(written.files.len(), 3);
        for file in &written.files {
            let mode = fs::metadata(file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", file.display());
        }
        // A seed without network config removes the stale one.
        let dhcp = Seed {
            network_config: None,
            ..seed
        };
        let written = write_seed(root.path(), &dhcp).unwrap();
        assert_eq!(written.files.len(), 2);
        assert!(!root.path().join(SEED_DIR).join("network-config").exists());
        wipe(&written.files).unwrap();
        assert!(written.files.iter().all(|f| !f.exists()));
        wipe(&written.files).unwrap();
    }

    #[test]
    fn primary_interface_is_read_from_sysfs() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(primary_interface(root.path()), Interface::default());
        let net = root.path().join("sys/class/net");
        for (name, mac, physical) in [
            ("lo", "00:00:00:00:00:00", false),
            ("eth1", "00:15:5D:00:00:02", true),
            ("eth0", "00:15:5D:00:00:01", true),
            ("docker0", "02:42:00:00:00:01", false),
        ] {
            fs::create_dir_all(net.join(name)).unwrap();
            fs::write(net.join(name).join("address"), format!("{mac}\n")).unwrap();
            if physical {
                fs::create_dir_all(net.join(name).join("device")).unwrap();
            }
        }
        assert_eq!(
            primary_interface(root.path()),
            Interface {
                name: "eth0".into(),
                mac: Some("00:15:5d:00:00:01".into())
            }
        );
    }

    #[test]
    fn failing_commands_are_reported() {
        let err = run_command("false", &[]).unwrap_err();
        assert_eq!(err.to_string(), "`false` exited with status 1");
        let err = run_command("/nonexistent/aetherv-nothing", &["x"]).unwrap_err();
        assert!(err.to_string().contains("could not be started"), "{err}");
        run_command("true", &[]).unwrap();
    }
}
