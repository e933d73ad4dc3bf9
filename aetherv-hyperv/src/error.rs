//! The crate's error type.

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in this crate.
///
/// Messages name the host, VM or item involved and never contain secrets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A host script's output did not contain a well-formed result document.
    #[error("script {script}: {detail}")]
    ScriptOutput {
        /// Script name, e.g. `Get-HostFacts`.
        script: String,
        /// What was wrong with the output.
        detail: String,
    },

    /// No VM with this name or id exists on the host.
    #[error("host {host}: no VM named {vm:?}")]
    UnknownVm {
        /// Host that was searched.
        host: String,
        /// VM name or id that was asked for.
        vm: String,
    },

    /// A VM with this name already exists on the host.
    #[error("host {host}: a VM named {vm:?} already exists; pick another name")]
    VmExists {
        /// Host.
        host: String,
        /// The duplicate name.
        vm: String,
    },

    /// The host offers no golden image with this name.
    #[error("host {host}: no golden image named {image:?}")]
    UnknownImage {
        /// Host.
        host: String,
        /// Image name that was asked for.
        image: String,
    },

    /// The operation is not possible in the VM's current state.
    #[error("host {host}: VM {vm} is {state} and cannot {operation}")]
    InvalidVmState {
        /// Host.
        host: String,
        /// VM name.
        vm: String,
        /// Current state, e.g. `Off`.
        state: String,
        /// What was attempted, e.g. `pause`.
        operation: &'static str,
    },

    /// Starting the VM would need more memory than the host has available.
    #[error(
        "host {host}: not enough memory to start VM {vm}: {required} bytes required, \
         {available} bytes available; stop other VMs or lower the VM's startup memory"
    )]
    InsufficientMemory {
        /// Host.
        host: String,
        /// VM name.
        vm: String,
        /// Bytes the VM needs.
        required: u64,
        /// Bytes the host has available.
        available: u64,
    },

    /// A storage location has too little free space for the operation.
    #[error(
        "host {host}: not enough free space on {location}: {required} bytes required, \
         {available} bytes free"
    )]
    InsufficientStorage {
        /// Host.
        host: String,
        /// Storage location path.
        location: String,
        /// Bytes needed.
        required: u64,
        /// Bytes free.
        available: u64,
    },

    /// Talking to the host over WinRM failed (connection, credentials, TLS, protocol fault).
    #[error("host {host}: {source}")]
    WinRm {
        /// Host the command was sent to.
        host: String,
        /// What the WinRM client reported.
        #[source]
        source: Box<aetherv_winrm::Error>,
    },

    /// An operation did not finish within its limit (see `ops::layer::Timeouts`). It may
    /// still take effect on the host.
    #[error("host {host}: {operation} did not finish within {}s; the host may be slow or unreachable", after.as_secs())]
    Timeout {
        /// Host the operation was sent to.
        host: String,
        /// The operation, e.g. `copy image`.
        operation: &'static str,
        /// The limit that passed.
        after: std::time::Duration,
    },

    /// The host stopped answering (a probe with a short deadline got no answer), so the
    /// operation was not sent (`sent: false`) or was abandoned (`sent: true`, it may still
    /// take effect). See `ops::layer::health`.
    #[error("host {host} does not answer ({reason}): {operation} {}", if *.sent { "was abandoned and may still take effect" } else { "was not sent" })]
    HostUnresponsive {
        /// The host.
        host: String,
        /// The operation, e.g. `register VM`.
        operation: &'static str,
        /// What the probe saw.
        reason: String,
        /// Whether the operation had been sent.
        sent: bool,
    },

    /// A host script ran and reported a failure that has no more specific variant.
    #[error("host {host}: {operation} failed: {code}: {message}")]
    ScriptFailed {
        /// Host the script ran on.
        host: String,
        /// The typed operation, e.g. `power`.
        operation: &'static str,
        /// The script's machine-readable error code, e.g. `MigrationFailed`.
        code: String,
        /// The script's message.
        message: String,
    },

    /// A host script's result did not have the shape the operation expects.
    #[error("host {host}: {operation}: unexpected result from the host script: {detail}")]
    OperationOutput {
        /// Host the script ran on.
        host: String,
        /// The typed operation.
        operation: &'static str,
        /// What was wrong.
        detail: String,
    },

    /// An operation was refused before anything was sent to the host (bad argument).
    #[error("host {host}: {operation} refused: {detail}")]
    InvalidRequest {
        /// Host the operation was meant for.
        host: String,
        /// The typed operation.
        operation: &'static str,
        /// Why it was refused and what to do.
        detail: String,
    },

    /// Deleting a VM's disks was refused because a disk is shared with another VM.
    #[error(
        "host {host}: VM {vm} uses the shared disk {path}; detach it or delete the VM without its disks"
    )]
    SharedDisk {
        /// Host.
        host: String,
        /// VM name or id.
        vm: String,
        /// Path of the shared disk.
        path: String,
    },

    /// A live migration is not possible (Compare-VM reported incompatibilities, or the
    /// destination cannot take the VM).
    #[error("host {host}: VM {vm} cannot move to {destination}: {detail}")]
    MigrationIncompatible {
        /// Source host.
        host: String,
        /// VM name or id.
        vm: String,
        /// Destination host.
        destination: String,
        /// The incompatibilities, joined.
        detail: String,
    },

    /// An artifact to deploy is not acceptable (bad name, duplicate, malformed hash).
    #[error("artifact {name:?}: {detail}")]
    Artifact {
        /// Artifact (file) name.
        name: String,
        /// What is wrong and how to fix it.
        detail: String,
    },

    /// An artifact's file could not be read on this machine.
    #[error("artifact {name}: cannot read {}: {source}", path.display())]
    ArtifactIo {
        /// Artifact (file) name.
        name: String,
        /// The local file.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// An artifact's local file no longer has the SHA-256 it was configured with.
    #[error(
        "artifact {name}: the local file has SHA-256 {actual}, expected {expected}; update the \
         configured hash or restore the file"
    )]
    ArtifactChanged {
        /// Artifact (file) name.
        name: String,
        /// The configured hash.
        expected: String,
        /// The hash of what was read.
        actual: String,
    },

    /// A deployed file arrived on the host with a different SHA-256 than was sent; the version
    /// file was not written, so the next deployment retries.
    #[error(
        "host {host}: deployed file {file} has SHA-256 {actual} on the host, expected {expected}; \
         the transfer was corrupted, deploy again"
    )]
    DeployHashMismatch {
        /// Host deployed to.
        host: String,
        /// File name in the install directory.
        file: String,
        /// The hash that was sent.
        expected: String,
        /// The hash the host computed.
        actual: String,
    },

    /// A deployment step failed on the host (the helper script reported an error, exited
    /// abnormally, or the host refused the command).
    #[error("host {host}: deployment step {step} failed{}: {code}: {message}", file.as_deref().map(|f| format!(" for {f}")).unwrap_or_default())]
    DeployFailed {
        /// Host deployed to.
        host: String,
        /// The deployment helper, e.g. `Write-DeployChunk`.
        step: &'static str,
        /// The file being deployed, if the step concerned one.
        file: Option<String>,
        /// Machine-readable code, e.g. `LockLost` or `DeployFailed`.
        code: String,
        /// What the host reported.
        message: String,
    },

    /// Another deployer held the host's deployment lock for longer than the wait allowed.
    #[error(
        "host {host}: deployment lock held by {holder} (last refreshed {age_seconds} s ago); \
         gave up after {waited_seconds} s; retry later or remove a stale .deploy.lock"
    )]
    DeployLocked {
        /// Host deployed to.
        host: String,
        /// The lock holder's token.
        holder: String,
        /// Seconds since the holder last refreshed the lock.
        age_seconds: i64,
        /// Seconds this deployer waited.
        waited_seconds: u64,
    },
}
