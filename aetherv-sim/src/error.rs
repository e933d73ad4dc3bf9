//! The simulator's error type.

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the simulated fleet: model operations refused by Hyper-V's
/// rules, bad parameters, and endpoints that cannot start.
///
/// The host-script emulations turn these into the script error codes the real scripts use
/// (`VmNotFound`, `InvalidVmState`, ...), which the typed host API of aetherv-hyperv maps to
/// its own [`aetherv_hyperv::Error`]. Messages name the host, VM or item involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A host with this name is not part of the fleet.
    #[error("unknown host {host:?}; check the host name against the fleet")]
    UnknownHost {
        /// The name that was asked for.
        host: String,
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

    /// A parameter of a simulated operation is out of range or malformed.
    #[error("invalid {what}: {detail}")]
    Invalid {
        /// What was invalid, e.g. `fleet spec` or `KVP key`.
        what: &'static str,
        /// Why.
        detail: String,
    },

    /// A KVP guest-protocol value could not be built or understood by the simulated guest or
    /// host role (see [`aetherv_kvp::Error`]).
    #[error("KVP provisioning protocol: {0}")]
    Kvp(#[from] aetherv_kvp::Error),

    /// A simulated host endpoint could not be started or restarted.
    #[error("host {host}: WS-Man endpoint: {source}")]
    Server {
        /// Host whose endpoint failed.
        host: String,
        /// What the server reported.
        #[source]
        source: aetherv_winrm::server::ServerError,
    },
}
