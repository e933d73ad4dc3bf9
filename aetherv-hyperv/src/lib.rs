//! Typed Hyper-V operations over WinRM, the host-side script protocol and (behind the `sim`
//! feature) a simulated Hyper-V host.
//!
//! What exists today:
//!
//! - [`protocol`]: how a deployed host script is invoked (`powershell.exe -NoProfile
//!   -NonInteractive -ExecutionPolicy Bypass -File <dir>\<Name>.ps1`, one JSON request on
//!   stdin) and how its single JSON result document is found between marker lines in stdout.
//! - `sim` (feature `sim`): a stateful simulated Hyper-V fleet (clusters, hosts, VMs, disks,
//!   NICs, switches, golden images, KVP pools), a simulated KVP guest agent, seeded fault
//!   injection and emulated host scripts, served over real WS-Man by aetherv-winrm's server
//!   (`SimFleet::start`), plus the `aetherv-hostsim` binary. See the `sim` module for an
//!   example.
//!
//! The typed host operations and the host scripts themselves arrive later; the simulator's
//! script registry is where their emulations are added.

pub mod error;
pub mod executor;
pub mod protocol;
#[cfg(feature = "sim")]
pub mod sim;

pub use error::{Error, Result};
pub use executor::{PowerShellExecutor, ScriptOutput, WinRmExecutor};
