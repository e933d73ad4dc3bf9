//! Typed Hyper-V operations over WinRM, the host-side PowerShell scripts, artifact deployment
//! and (behind the `sim` feature) a simulated Hyper-V host.
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
//! - `sim` (feature `sim`): a stateful simulated Hyper-V fleet (clusters, hosts, VMs, disks,
//!   NICs, switches, golden images, KVP pools), a simulated KVP guest agent, seeded fault
//!   injection and emulations of every host script, served over real WS-Man by
//!   aetherv-winrm's server (`SimFleet::start`), plus the `aetherv-hostsim` binary.

pub mod deploy;
pub mod error;
pub mod executor;
pub mod ops;
pub mod os;
pub mod protocol;
pub mod psjson;
#[cfg(feature = "sim")]
pub mod sim;

pub use error::{Error, Result};
pub use executor::{PowerShellExecutor, ScriptOutput, WinRmExecutor};
pub use os::OsFamily;
