//! Provisioning for aetherv: the job schema, the KVP guest-protocol encryption and, later, the
//! provisioning and deletion pipelines.
pub mod error;
pub mod kvp;
pub mod schema;

pub use error::{Error, FieldError, Result};
