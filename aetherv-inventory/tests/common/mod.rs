//! Shared test helpers: VM and facts values and a scriptable fake host.

#![allow(dead_code, missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aetherv_hyperv::ops::*;
use aetherv_hyperv::psjson::Timestamp;
use aetherv_hyperv::{Error, Result};
use async_trait::async_trait;
use tokio::time::Instant;

pub fn id(n: u128) -> VmId {
    VmId(uuid::Uuid::from_u128(n))
}

pub fn vm(n: u128, name: &str, state: u32) -> Vm {
    serde_json::from_value(serde_json::json!({
        "id": id(n).to_string(),
        "name": name,
        "state": state,
        "processor_count": 2,
        "memory_startup_bytes": 1_073_741_824_u64,
    }))
    .unwrap()
}

pub fn facts(host: &str, cluster: Option<&str>) -> HostFacts {
    serde_json::from_value(serde_json::json!({
        "name": host,
        "fqdn": format!("{host}.lab.example"),
        "cluster": cluster,
        "logical_processors": 16,
        "memory_total_bytes": 68_719_476_736_u64,
        "memory_available_bytes": 34_359_738_368_u64,
        "vm_path": "C:\\VMs",
    }))
    .unwrap()
}

/// What the fake host does on the next calls.
#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    pub vms: Vec<Vm>,
    pub fail: Option<String>,
    pub delay: Duration,
}

#[derive(Debug, Default)]
pub struct FakeHost {
    pub name: String,
    pub behaviour: Mutex<Behaviour>,
    pub inventory_calls: Mutex<Vec<Instant>>,
    pub facts_calls: AtomicUsize,
    pub running: AtomicUsize,
    pub max_running: AtomicUsize,
}

impl FakeHost {
    pub fn new(name: &str, vms: Vec<Vm>) -> Self {
        Self {
            name: name.to_owned(),
            behaviour: Mutex::new(Behaviour {
                vms,
                ..Behaviour::default()
            }),
            ..Self::default()
        }
    }

    pub fn set(&self, f: impl FnOnce(&mut Behaviour)) {
        f(&mut self.behaviour.lock().unwrap());
    }

    pub fn calls(&self) -> Vec<Instant> {
        self.inventory_calls.lock().unwrap().clone()
    }

    async fn act(&self) -> Result<Behaviour> {
        let b = self.behaviour.lock().unwrap().clone();
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(b.delay).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        match &b.fail {
            Some(msg) => Err(Error::InvalidRequest {
                host: "fake".to_owned(),
                operation: "fake host",
                detail: msg.clone(),
            }),
            None => Ok(b),
        }
    }
}

#[async_trait]
impl HostReader for FakeHost {
    fn host_name(&self) -> &str {
        &self.name
    }
    async fn read_facts(&self) -> Result<HostFacts> {
        self.facts_calls.fetch_add(1, Ordering::SeqCst);
        Ok(facts(&self.name, Some("c1")))
    }
    async fn read_inventory(&self) -> Result<Inventory> {
        self.inventory_calls.lock().unwrap().push(Instant::now());
        let b = self.act().await?;
        Ok(Inventory {
            host: self.name.clone(),
            collected_at: Timestamp::from_unix_millis(0),
            vms: b.vms,
            digest: None,
            unchanged: false,
        })
    }
    async fn read_vm(&self, id: VmId) -> Result<Vm> {
        let b = self.act().await?;
        b.vms
            .into_iter()
            .find(|v| v.id == id)
            .ok_or_else(|| Error::UnknownVm {
                host: self.name.clone(),
                vm: id.to_string(),
            })
    }
}
