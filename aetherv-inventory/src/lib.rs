//! In-memory inventory of clusters, hosts and VMs, its refresh loop and change events.
//!
//! This crate is a placeholder in the workspace; its contents arrive with the inventory cache.
