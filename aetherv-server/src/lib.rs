//! Library part of the aetherv server.
//!
//! The binary (`main.rs`) composes the workspace crates into the HTTP server; the pieces that are
//! worth testing on their own, such as bearer-token authentication, live here.

pub mod auth;
