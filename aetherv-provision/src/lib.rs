//! Provisioning for aetherv: the job schema, the KVP guest-protocol encryption, and the
//! provisioning and deletion pipelines.
//!
//! # Modules
//!
//! - [`schema`]: job schema v1. [`JobRequest`](schema::JobRequest) parses a request as JSON or
//!   YAML (`{schema_version: 1, target_host, values}`), or the flat body of
//!   `POST /api/v1/vms/create`, and validates it into one typed, all-or-none shape: required
//!   fields, ranges, IPv4 addresses and the gateway's subnet, the VM name rules, the guest OS
//!   family (detected from the image name or given as `os_family`), and the groups that only
//!   apply to one family (dropped with a warning). Validation reports every problem at once,
//!   each a [`FieldError`] naming the field (`values.gb_ram`) and saying why.
//!   [`redacted`](schema::JobRequest::redacted) is the view for job records and API responses.
//! - [`kvp`]: the Hyper-V KVP guest protocol that existing Aether-V guest agents speak, as
//!   the pipeline uses it: a re-export of the `aetherv-kvp` crate (key names, typed states,
//!   both public key formats, [`ProvisioningPayload::build`](kvp::ProvisioningPayload::build),
//!   which wraps a fresh AES-256 key with RSA PKCS#1 v1.5 and encrypts, chunks and checksums
//!   the values, so that plaintext secrets never exist on the Hyper-V host) plus
//!   [`guest_data`](kvp::guest_data), the mapping from a validated job to the data names the
//!   agents read.
//! - [`job`]: the job engine, independent of what a job does: a [`Workflow`](job::Workflow) is a
//!   sans-IO state machine fed [`Event`](job::Event)s (host replies, timer expiry,
//!   cancellation) with the elapsed time, answering with the next [`Action`](job::Action)
//!   (call the host, wait, compensate, done); progress and log lines accumulate in it.
//!   [`job::run`] is the thin tokio driver over `Arc<dyn HyperVHost>`: per-call timeouts,
//!   a [`CancellationToken`](tokio_util::sync::CancellationToken), a progress/log sink.
//! - [`provision`]: the provisioning pipeline ([`ProvisionMachine`](provision::ProvisionMachine),
//!   [`provision::provision`]): pre-checks, image and ISO copies, VM registration with the job
//!   marker in its notes, the KVP handshake and encrypted publication, the wait for the guest,
//!   the optional cluster role; on failure or cancellation every created artifact is removed
//!   in reverse and the error carries the [`CleanupReport`](job::CleanupReport).
//! - [`boot`]: the generation 2 firmware (Secure Boot, template, vTPM) per OS family and
//!   per image name pattern ([`BootPolicy`](boot::BootPolicy)).
//! - [`delete`]: the deletion pipeline ([`DeleteMachine`](delete::DeleteMachine),
//!   [`delete::delete`]): refuse a VM that is not Off unless forced, turn it off, remove its
//!   cluster role, delete it (and its disks when asked), verify the inventory.
//! - [`resources`]: named networks and storage classes (Aether-V's host resources) and the
//!   pure decision of a VM's switch, VLAN and folder root ([`resolve`](resources::resolve)).
//! - [`error`]: the crate's [`Error`] and [`Result`].
//!
//! # Secrets
//!
//! Passwords (`guest_la_pw`, `guest_domain_joinpw`) are [`aetherv_winrm::Secret`] from the
//! moment they are deserialised: `Debug` prints `***`, serialisation (and so the redacted view)
//! writes `"***"`, error messages never contain them (a secret of the wrong type is reported by
//! its kind only), and they are only exposed to be encrypted for the guest. The Ansible SSH key
//! is a public key and not treated as secret; a private key given there is refused.
//!
//! Job events, logs and errors never contain them either: the pipelines handle secrets only
//! inside [`ProvisioningPayload::build`](kvp::ProvisioningPayload::build), and what reaches a
//! host is ciphertext.

pub mod boot;
pub mod delete;
pub mod error;
pub mod job;
pub mod kvp;
pub mod provision;
pub mod resources;
pub mod schema;

pub use error::{Error, FieldError, Result};
