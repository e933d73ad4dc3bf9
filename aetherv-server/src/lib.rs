//! Library part of the aetherv server.
//!
//! The binary (`main.rs`) composes the workspace crates into the HTTP server; everything worth
//! testing on its own lives here.

pub mod api;
pub mod auth;
pub mod config;
pub mod error;
pub mod jobs;
pub mod logging;
pub mod metrics;
pub mod startup;
pub mod state;
pub mod ui;
