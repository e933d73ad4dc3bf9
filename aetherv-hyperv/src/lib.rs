//! Typed Hyper-V operations over WinRM, the host-side PowerShell scripts and artifact
//! deployment.
//!
//! - [`ops`]: the typed host API. [`ops::HyperVHost`] (with a mockall mock) covers host facts,
//!   the whole VM inventory in one round trip, one VM, power actions with the allowed-state
//!   rules, delete, KVP read/write/remove, the provisioning steps, cluster roles and live
//!   migration; [`ops::WinRmHyperVHost`] implements it by running one deployed script per
//!   operation through a [`PowerShellExecutor`].
//! - [`psjson`]: everything Windows PowerShell 5.1's `ConvertTo-Json` does that a plain serde
//!   model would trip over (enums as numbers or names, `/Date(ms)/`, collapsed one-element
//!   arrays, null vs missing, TimeSpan and Version objects).
//! - [`executor`]: the outbound boundary, [`PowerShellExecutor`], and [`WinRmExecutor`].
//! - [`protocol`]: how a deployed host script is invoked (`powershell.exe -NoProfile
//!   -NonInteractive -ExecutionPolicy Bypass -File <dir>\<Name>.ps1`, one JSON request on
//!   stdin) and how its single JSON result document is found between marker lines in stdout.
//! - [`deploy`]: the host scripts (`assets/powershell/`, embedded at build time) and any extra
//!   artifacts pushed to the host's install directory when its version file differs, in
//!   chunks verified by SHA-256, under a host-side lock.
//!
//! The simulated Hyper-V fleet that emulates these scripts lives in the `aetherv-sim` crate; it
//! uses only this crate's public API ([`protocol`] for the script invocation and result
//! documents, [`ops::scripts`] for the script names, [`deploy`] and [`deploy::wire`] for the
//! deployment helpers and their stdin/stdout documents).

pub mod deploy;
pub mod error;
pub mod executor;
pub mod ops;
pub mod os;
pub mod protocol;
pub mod psjson;

pub use error::{Error, Result};
pub use executor::{PowerShellExecutor, ScriptOutput, WinRmExecutor};
pub use os::OsFamily;
