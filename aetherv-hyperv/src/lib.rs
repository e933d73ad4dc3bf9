//! Typed Hyper-V operations over WinRM, the host-side PowerShell scripts, artifact deployment
//! and (behind the `sim` feature) a simulated Hyper-V host.
//!
//! This crate is a placeholder in the workspace; its contents arrive with the typed host API.
