//! The agent's loop: polls the host-to-guest pool, drives
//! [`aetherv_kvp::guest::Handshake`] and publishes its output in the guest-to-host pool.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aetherv_kvp::guest::{GuestKey, GuestOutput, GuestStep, Handshake};
use aetherv_kvp::{HostState, KeyFormat, SecretText, keys};

use crate::apply::{self, ApplyError};
use crate::pool::{self, KvpPool, PoolError};
use crate::render::GuestConfig;

/// Where the provisioning ISO's bootstrap installs the ISO version (one line).
pub const DEFAULT_VERSION_FILE: &str = "/usr/local/lib/aetherv-guest/version";
/// The agent's log file, relative to the root.
pub const LOG_FILE: &str = "var/log/aetherv-guest.log";

/// How the agent runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The root the configuration is written under (`/` on a guest). Anything else only
    /// writes files: cloud-init does not run, the seed is kept, the unit is not disabled.
    pub root: PathBuf,
    /// The directory of `hv_kvp_daemon`'s pool files.
    pub pool_dir: PathBuf,
    /// The file holding the agent's version (the ISO version); the crate version when absent.
    pub version_file: PathBuf,
    /// How often the host's pool is read.
    pub poll: Duration,
    /// Give up after this long (`None`: wait for ever).
    pub timeout: Option<Duration>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            root: PathBuf::from("/"),
            pool_dir: PathBuf::from(pool::DEFAULT_POOL_DIR),
            version_file: PathBuf::from(DEFAULT_VERSION_FILE),
            poll: Duration::from_secs(1),
            timeout: None,
        }
    }
}

impl Options {
    /// Whether this run configures the real system (root `/`): runs cloud-init, wipes the
    /// seed and disables the unit.
    pub fn is_live(&self) -> bool {
        self.root == Path::new("/")
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `provisioningapplied` was reported.
    Applied,
    /// `provisioningfailed` was reported with this reason.
    Failed(String),
    /// The timeout passed first.
    TimedOut,
}

/// An error that stops the agent before it can report anything.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// Writing the guest-to-host pool failed.
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// The version file exists but cannot be read.
    #[error("reading the version file {}: {source}", path.display())]
    Version {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The agent's version: the first line of `path`, or the crate version when the file does
/// not exist.
///
/// # Errors
///
/// [`AgentError::Version`] if the file exists but cannot be read.
pub fn agent_version(path: &Path) -> Result<String, AgentError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text.lines().next().unwrap_or_default().trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok(env!("CARGO_PKG_VERSION").to_owned())
        }
        Err(source) => Err(AgentError::Version {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes log lines to stderr (the journal, under systemd) and appends them to
/// `<root>/var/log/aetherv-guest.log` (mode 0600). Lines never hold values.
#[derive(Debug)]
pub struct Log {
    file: Option<std::fs::File>,
}

impl Log {
    /// A log under `root`; without a file if it cannot be opened (stderr still works).
    pub fn open(root: &Path) -> Self {
        let path = root.join(LOG_FILE);
        let file = path
            .parent()
            .map(std::fs::create_dir_all)
            .transpose()
            .ok()
            .and_then(|_| {
                OpenOptions::new()
                    .append(true)
                    .create(true)
                    .mode(0o600)
                    .open(&path)
                    .ok()
            });
        Self { file }
    }

    /// Logs one line.
    pub fn line(&mut self, text: &str) {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        eprintln!("aetherv-guest: {text}");
        if let Some(file) = &mut self.file {
            let _ = writeln!(file, "{stamp} {text}");
        }
    }
}

fn publish(pool: &KvpPool, output: &GuestOutput, log: &mut Log) -> Result<(), AgentError> {
    pool.update(
        output
            .write
            .iter()
            .map(|i| (i.key.as_str(), i.value.as_str())),
        &output.remove,
    )?;
    for state in output.states() {
        log.line(&format!("reported {state}"));
    }
    Ok(())
}

/// Applies decrypted values under `options.root`: validates and renders the seed, writes it,
/// and on a live system runs cloud-init and wipes the seed.
///
/// # Errors
///
/// [`ApplyError`] naming the value, file or command.
pub fn apply_values(
    options: &Options,
    values: &BTreeMap<String, SecretText>,
    log: &mut Log,
) -> Result<(), ApplyError> {
    let config = GuestConfig::from_values(values)?;
    let interface = apply::primary_interface(&options.root);
    let instance_id = format!("aetherv-{:016x}", rand::random::<u64>());
    let seed = config.render(&instance_id, &interface);
    let written = apply::write_seed(&options.root, &seed)?;
    log.line(&format!(
        "wrote the NoCloud seed ({} files) under {}",
        written.files.len(),
        options.root.join(apply::SEED_DIR).display()
    ));
    if !options.is_live() {
        log.line("root is not /: cloud-init not run, seed files kept");
        return Ok(());
    }
    let ran = apply::run_cloud_init();
    // The seed holds the password hash: wipe it whether or not cloud-init succeeded.
    let wiped = apply::wipe(&written.files);
    ran?;
    wiped?;
    log.line("cloud-init applied the seed; seed files wiped");
    Ok(())
}

/// Runs the guest half of the handshake until it ends (or times out).
///
/// # Errors
///
/// [`AgentError`] when the guest-to-host pool cannot be written or the version file cannot
/// be read: nothing can be reported then.
pub fn run(options: &Options, log: &mut Log) -> Result<Outcome, AgentError> {
    let version = agent_version(&options.version_file)?;
    let host_pool = KvpPool::host_to_guest(&options.pool_dir);
    let guest_pool = KvpPool::guest_to_host(&options.pool_dir);
    log.line(&format!(
        "agent version {version}, pools in {}",
        options.pool_dir.display()
    ));
    // Items left by an earlier run would confuse the host.
    guest_pool.update(
        std::iter::empty(),
        &[keys::GUEST_STATE, keys::GUEST_ERROR, keys::GUEST_PUBLIC_KEY],
    )?;
    let started = Instant::now();
    let mut handshake: Option<Handshake> = None;
    let mut last_read_error = None;
    let mut rng = rand::rngs::OsRng;
    loop {
        if options.timeout.is_some_and(|t| started.elapsed() >= t) {
            log.line("timed out waiting for the host");
            return Ok(Outcome::TimedOut);
        }
        let items = match host_pool.read() {
            Ok(items) => items,
            Err(e) => {
                let text = e.to_string();
                if last_read_error.as_ref() != Some(&text) {
                    log.line(&format!("cannot read the host's items (retrying): {text}"));
                    last_read_error = Some(text);
                }
                std::thread::sleep(options.poll);
                continue;
            }
        };
        last_read_error = None;
        let agent = match &mut handshake {
            Some(agent) => agent,
            None => {
                let asked = items
                    .get(keys::HOST_STATE)
                    .and_then(|s| s.parse::<HostState>().ok())
                    == Some(HostState::WaitingForPublicKey);
                if !asked {
                    std::thread::sleep(options.poll);
                    continue;
                }
                log.line("the host asks for a public key: generating an RSA-2048 key");
                match GuestKey::generate(&mut rng) {
                    Ok(key) => handshake.insert(Handshake::new(
                        Some(version.clone()),
                        key,
                        KeyFormat::Pkcs1Der,
                    )),
                    Err(e) => {
                        let reason = aetherv_kvp::guest::error_text(&e.to_string());
                        let output = GuestOutput {
                            write: vec![
                                aetherv_kvp::KvpItem::new(keys::GUEST_ERROR, reason.as_str()),
                                aetherv_kvp::GuestState::ProvisioningFailed.item(),
                            ],
                            remove: Vec::new(),
                        };
                        publish(&guest_pool, &output, log)?;
                        return Ok(Outcome::Failed(reason));
                    }
                }
            }
        };
        match agent.on_host_items(&items, &mut rng) {
            GuestStep::Wait => std::thread::sleep(options.poll),
            GuestStep::PublishKey(output) => {
                publish(&guest_pool, &output, log)?;
                log.line("published the public key");
            }
            GuestStep::VersionMismatch { host } => {
                let reason = format!(
                    "version mismatch: the host publishes provisioning version {}, this agent is version {version}",
                    host.as_deref().unwrap_or("(none)")
                );
                let output = agent.failed(&reason);
                log.line(&reason);
                publish(&guest_pool, &output, log)?;
                return Ok(Outcome::Failed(aetherv_kvp::guest::error_text(&reason)));
            }
            GuestStep::Rejected { output, reason } => {
                log.line(&format!("payload rejected: {reason}"));
                publish(&guest_pool, &output, log)?;
                return Ok(Outcome::Failed(reason));
            }
            GuestStep::Apply { output, values } => {
                publish(&guest_pool, &output, log)?;
                log.line(&format!("payload decrypted: {} values", values.len()));
                let result = apply_values(options, &values, log);
                drop(values);
                return match result {
                    Ok(()) => {
                        publish(&guest_pool, &agent.applied(), log)?;
                        if options.is_live() {
                            match apply::disable_unit() {
                                Ok(()) => log.line(&format!("disabled {}", apply::UNIT)),
                                Err(e) => log.line(&format!("could not disable the unit: {e}")),
                            }
                        } else {
                            log.line("root is not /: the unit is not disabled");
                        }
                        Ok(Outcome::Applied)
                    }
                    Err(e) => {
                        let reason = aetherv_kvp::guest::error_text(&e.to_string());
                        log.line(&format!("applying failed: {reason}"));
                        publish(&guest_pool, &agent.failed(&reason), log)?;
                        Ok(Outcome::Failed(reason))
                    }
                };
            }
            other => {
                log.line(&format!("unexpected protocol step {other:?}"));
                std::thread::sleep(options.poll);
            }
        }
    }
}
