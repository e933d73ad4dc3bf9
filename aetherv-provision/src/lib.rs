//! Provisioning for aetherv: the job schema, the KVP guest-protocol encryption, and (to come)
//! the provisioning and deletion pipelines.
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
//! - [`kvp`]: the host side of the Hyper-V KVP guest protocol that existing Aether-V guest
//!   agents speak: `hlvmm.*` key names and typed host/guest states, the guest's public key in
//!   both formats (PKCS#1 DER from Linux, CAPI `PUBLICKEYBLOB` from Windows), and
//!   [`ProvisioningPayload::build`](kvp::ProvisioningPayload::build), which wraps a fresh
//!   AES-256 key with RSA PKCS#1 v1.5 and encrypts, chunks and checksums the values, so that
//!   plaintext secrets never exist on the Hyper-V host: host scripts only move the resulting
//!   KVP items. The guest half ([`decrypt`](kvp::ProvisioningPayload::decrypt)) is there for
//!   tests and simulators.
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
//! # What comes later
//!
//! The provisioning pipeline (pre-checks, copy image and ISO, register the VM, wait for the
//! guest's key, publish the payload, wait for the guest, optional cluster role) and the deletion
//! pipeline, as sans-IO state machines with per-step timeouts, progress events, cancellation and
//! compensation. They depend on the typed Hyper-V operations of `aetherv-hyperv` and will use
//! this crate's types as they are: a [`Validated`](schema::Validated) request is the pipeline's
//! input (its warnings go to the job log), [`guest_data`](kvp::guest_data) and
//! [`ProvisioningPayload::build`](kvp::ProvisioningPayload::build) produce what the publish step
//! writes, and [`HostState`](kvp::HostState) / [`GuestState`](kvp::GuestState) /
//! [`GuestPublicKey`](kvp::GuestPublicKey) are what the wait steps read.

pub mod error;
pub mod kvp;
pub mod schema;

pub use error::{Error, FieldError, Result};
