//! Library part of the aetherv server.
//!
//! The binary (`main.rs`) composes the workspace crates into the HTTP server; everything worth
//! testing on its own lives here.
//!
//! Features: `demo` (default) adds the simulated demo fleet (module `demo`) that the server runs
//! when no hosts are configured; without it such a server refuses to start. `mock` adds
//! `mockall` mocks of the outbound traits (e.g. `auth::oidc::MockJwksFetcher`) for embedders'
//! tests.

pub mod api;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod error;
pub mod hooks;
pub mod listener;
/// The job queue (the `aetherv-jobs` crate).
pub use aetherv_jobs as jobs;
pub mod logging;
pub mod mcp;
pub mod media;
pub mod metrics;
pub mod orphan;
pub mod recovery;
pub mod startup;
pub mod state;
pub mod ui;
