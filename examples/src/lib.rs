//! Runnable examples for the aetherv crates; see the `examples/` directory. The examples other
//! than `winrm` run against the simulated Hyper-V fleet on loopback when started without
//! arguments.

// The crate READMEs' Rust snippets compile as doc tests of this package (which has every crate
// they use as a dependency), so they cannot drift from the APIs they show.
#[cfg(doctest)]
#[doc = include_str!("../../aetherv-hyperv/README.md")]
mod hyperv_readme {}

#[cfg(doctest)]
#[doc = include_str!("../../aetherv-inventory/README.md")]
mod inventory_readme {}

#[cfg(doctest)]
#[doc = include_str!("../../aetherv-provision/README.md")]
mod provision_readme {}

#[cfg(doctest)]
#[doc = include_str!("../../aetherv-server/README.md")]
mod server_readme {}
