//! Provisioning and deletion pipelines as explicit state machines, the job schema and the KVP
//! encryption used to hand guests their configuration.
//!
//! This crate is a placeholder in the workspace; its contents arrive with the pipelines.
