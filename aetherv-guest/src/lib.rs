//! The Linux guest agent of Aether-V: the guest half of the KVP provisioning handshake
//! ([`aetherv_kvp::guest::Handshake`]) over the pool files of the kernel's `hv_kvp_daemon`
//! ([`pool`]), applied through a cloud-init NoCloud seed ([`render`], [`apply`]).
//!
//! The `aetherv-guest` binary runs [`agent::run`]: it waits for the host's
//! `waitingforpublickey`, checks `hlvmm.meta.version` against its own version (the ISO
//! version file, [`agent::DEFAULT_VERSION_FILE`]), publishes an RSA-2048 key (PKCS#1 DER,
//! base64), decrypts and checks the payload, writes the seed, lets cloud-init apply it,
//! wipes the seed and disables its unit, reporting `applying` then `provisioningapplied` or
//! `provisioningfailed` with a reason of at most 200 characters.
//!
//! Everything but the loop and the file/command glue is pure and tested without a guest;
//! `--root DIR` writes the seed under DIR and skips cloud-init, for tests.

pub mod agent;
pub mod apply;
pub mod pool;
pub mod render;

pub use agent::{Options, Outcome, run};
