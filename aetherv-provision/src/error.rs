//! The crate's error type and the per-field validation problem.

use std::fmt;

use serde::Serialize;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One problem with one field of a request.
///
/// `field` is the path of the field in the submitted document, e.g. `values.gb_ram` for the job
/// schema or `gb_ram` for the flat create body; `body` when the document as a whole is at fault
/// (malformed JSON or YAML, not a mapping). `message` says why, e.g. `must be between 1 and 512,
/// got 1024`. Messages never contain the value of a secret field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// Path of the offending field.
    pub field: String,
    /// What is wrong with it and, where useful, what is expected.
    pub message: String,
}

impl FieldError {
    /// A problem with `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

fn join_field_errors(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Everything that can go wrong in this crate.
///
/// Messages name the field, KVP key or key format involved and never contain secrets or
/// plaintext provisioning values.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The job request could not be parsed or failed validation; every problem found is listed
    /// (parse errors stop at the first problem the parser meets).
    #[error("invalid job request: {}", join_field_errors(.errors))]
    InvalidRequest {
        /// The problems, in schema order.
        errors: Vec<FieldError>,
    },

    /// A KVP guest-protocol value could not be built or read (the guest's public key, a data
    /// name or value, the key wrap, a state value); see [`aetherv_kvp::Error`].
    #[error(transparent)]
    Kvp(#[from] aetherv_kvp::Error),

    /// A host operation failed in a pipeline step.
    #[error("{step}: {source}")]
    Host {
        /// The step, e.g. `Provisioning.CopyImage`.
        step: &'static str,
        /// The host's typed error (it names the host and the operation).
        #[source]
        source: Box<aetherv_hyperv::Error>,
    },

    /// A host operation did not answer within the step's timeout; whether it took effect is
    /// unknown (compensation assumes it did).
    #[error("{step}: host {host} did not answer within {}s", .after.as_secs_f64())]
    StepTimeout {
        /// The step.
        step: &'static str,
        /// The host.
        host: String,
        /// The timeout.
        after: std::time::Duration,
    },

    /// A pre-check refused the job before anything was created.
    #[error("pre-check {check} failed on host {host}: {detail}")]
    PreCheck {
        /// Which check (`name free`, `image exists`, `enough memory`, `provisioning iso`).
        check: &'static str,
        /// The host.
        host: String,
        /// What is wrong and what to do.
        detail: String,
    },

    /// The guest did not get to the expected protocol state in time (agent not running, wrong
    /// agent version, KVP integration service disabled).
    #[error(
        "VM {vm}: the guest agent did not report {waiting_for} within {}s (last guest state: {})",
        .after.as_secs_f64(),
        .last_state.as_deref().unwrap_or("none")
    )]
    GuestTimeout {
        /// The VM name.
        vm: String,
        /// The state waited for.
        waiting_for: &'static str,
        /// How long the job waited.
        after: std::time::Duration,
        /// The last state the guest reported.
        last_state: Option<String>,
    },

    /// The guest agent reported `provisioningfailed`.
    #[error("VM {vm}: the guest agent reported provisioningfailed: {reason}")]
    GuestFailed {
        /// The VM name.
        vm: String,
        /// `hlvmm.meta.guest_provisioning_error` (never contains data values).
        reason: String,
    },

    /// A provisioning job failed; compensation ran and `cleanup` says what it removed and what
    /// it could not.
    #[error(
        "provisioning job {job} of VM {vm} on host {host} failed in {step}: {cause}; cleanup: {cleanup}"
    )]
    ProvisionFailed {
        /// The job.
        job: crate::job::JobId,
        /// The host.
        host: String,
        /// The VM name.
        vm: String,
        /// The step that failed.
        step: &'static str,
        /// Why.
        #[source]
        cause: Box<Error>,
        /// What compensation did.
        cleanup: crate::job::CleanupReport,
    },

    /// A job was cancelled; compensation ran and `cleanup` says what it removed and what it
    /// could not.
    #[error("job {job} on host {host} was cancelled during {step}; cleanup: {cleanup}")]
    Cancelled {
        /// The job.
        job: crate::job::JobId,
        /// The host.
        host: String,
        /// The step that was running.
        step: &'static str,
        /// What compensation did.
        cleanup: crate::job::CleanupReport,
    },

    /// Deletion refused: the VM is not off and the request was not forced.
    #[error(
        "host {host}: VM {vm} is {state}; refusing to delete it; shut it down first or force \
         the deletion (the VM is turned off)"
    )]
    VmNotOff {
        /// The host.
        host: String,
        /// The VM name.
        vm: String,
        /// Its state (Hyper-V's name).
        state: String,
    },

    /// A deletion job failed.
    #[error("deleting VM {vm} on host {host} failed in {step}: {cause}")]
    DeleteFailed {
        /// The host.
        host: String,
        /// The VM (name, or id when the name is unknown).
        vm: String,
        /// The step that failed.
        step: &'static str,
        /// Why.
        #[source]
        cause: Box<Error>,
    },

    /// The host answered a step with something that step does not expect (a bug in the
    /// workflow or its driver).
    #[error("{step}: unexpected {detail}")]
    Unexpected {
        /// The step.
        step: &'static str,
        /// What arrived.
        detail: String,
    },

    /// The VM was deleted but is still in the host's inventory.
    #[error("host {host}: VM {vm} is still in the inventory after deletion")]
    StillPresent {
        /// The host.
        host: String,
        /// The VM.
        vm: String,
    },
}

impl Error {
    /// The field problems, if this is [`Error::InvalidRequest`].
    pub fn field_errors(&self) -> Option<&[FieldError]> {
        match self {
            Self::InvalidRequest { errors } => Some(errors),
            _ => None,
        }
    }
}
