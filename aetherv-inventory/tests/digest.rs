//! Incremental refresh: the refresher sends the digest of the VM set it holds, an unchanged
//! host answers without VMs, and the store keeps its copy (uptimes advanced); any change, a
//! targeted VM refresh or a failure makes the next refresh a complete one.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aetherv_hyperv::ops::{HostFacts, HostReader, Inventory, Vm, VmId};
use aetherv_hyperv::psjson::Timestamp;
use aetherv_hyperv::{Error, Result};
use aetherv_inventory::{CancellationToken, RefreshConfig, Refresher};
use async_trait::async_trait;
use common::{facts, id, vm};

/// A host that digests its VM list (the names and states, as text) and answers `unchanged`
/// when asked with the current digest; it records what each inventory call sent.
#[derive(Debug, Default)]
struct DigestHost {
    vms: Mutex<Vec<Vm>>,
    sent: Mutex<Vec<Option<String>>>,
    fail: Mutex<bool>,
}

impl DigestHost {
    fn digest(&self) -> String {
        let vms = self.vms.lock().unwrap();
        let text: Vec<String> = vms
            .iter()
            .map(|v| format!("{}:{}:{}", v.id, v.name, v.state.code()))
            .collect();
        format!("{:x}", text.join(",").len() * 7919 + text.len())
            + &text
                .join(",")
                .bytes()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
    }

    fn answer(&self, since: Option<&str>) -> Result<Inventory> {
        self.sent.lock().unwrap().push(since.map(str::to_owned));
        if *self.fail.lock().unwrap() {
            return Err(Error::InvalidRequest {
                host: "hv01".to_owned(),
                operation: "inventory",
                detail: "down".to_owned(),
            });
        }
        let digest = self.digest();
        let unchanged = since == Some(digest.as_str());
        Ok(Inventory {
            host: "hv01".to_owned(),
            collected_at: Timestamp::from_unix_millis(0),
            vms: if unchanged {
                Vec::new()
            } else {
                self.vms.lock().unwrap().clone()
            },
            digest: Some(digest),
            unchanged,
        })
    }
}

#[async_trait]
impl HostReader for DigestHost {
    fn host_name(&self) -> &str {
        "hv01"
    }
    async fn read_facts(&self) -> Result<HostFacts> {
        Ok(facts("hv01", None))
    }
    async fn read_inventory(&self) -> Result<Inventory> {
        self.answer(None)
    }
    async fn read_inventory_since(&self, digest: &str) -> Result<Inventory> {
        self.answer(Some(digest))
    }
    async fn read_vm(&self, id: VmId) -> Result<Vm> {
        self.vms
            .lock()
            .unwrap()
            .iter()
            .find(|v| v.id == id)
            .cloned()
            .ok_or_else(|| Error::UnknownVm {
                host: "hv01".to_owned(),
                vm: id.to_string(),
            })
    }
}

fn running(n: u128, name: &str, uptime: u64) -> Vm {
    let mut v = vm(n, name, 2);
    v.uptime = Duration::from_secs(uptime);
    v
}

#[tokio::test]
async fn an_unchanged_host_keeps_its_vms_and_a_change_brings_them_all() {
    let host = Arc::new(DigestHost::default());
    *host.vms.lock().unwrap() = vec![running(1, "a", 100), vm(2, "b", 3)];
    let hosts: Vec<Arc<dyn HostReader>> = vec![host.clone()];
    let refresher = Refresher::start(
        &hosts,
        RefreshConfig {
            interval: Duration::from_secs(3600),
            ..RefreshConfig::default()
        },
        CancellationToken::new(),
    );
    let inventory = refresher.handle();
    inventory.refresh_host("hv01").await.unwrap();
    let first = inventory.snapshot();
    assert_eq!(first.vm_count(), 2);
    let digest = host.digest();

    // Unchanged: the digest is sent, no VMs come back, the store keeps both.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut changes = inventory.subscribe();
    inventory.refresh_host("hv01").await.unwrap();
    assert_eq!(
        host.sent.lock().unwrap().last().unwrap(),
        &Some(digest.clone())
    );
    let second = inventory.snapshot();
    assert_eq!(second.vm_count(), 2);
    assert_eq!(
        first.vms_generation(),
        second.vms_generation(),
        "nothing a list shows changed"
    );
    assert!(changes.try_recv().is_none(), "no VM events");
    let a = second.vm(id(1)).unwrap();
    assert!(
        second.uptime(a) >= Duration::from_secs(101),
        "a running VM's uptime advances: {:?}",
        second.uptime(a)
    );
    assert_eq!(second.uptime(second.vm(id(2)).unwrap()), Duration::ZERO);
    assert!(
        Arc::ptr_eq(
            &first.host("hv01").unwrap().vms,
            &second.host("hv01").unwrap().vms
        ),
        "an unchanged host keeps its VM records; no VM is copied"
    );
    assert!(second.host("hv01").unwrap().is_connected());

    // Changed: everything comes back and the change is applied.
    host.vms.lock().unwrap().push(vm(3, "c", 3));
    inventory.refresh_host("hv01").await.unwrap();
    assert_eq!(inventory.snapshot().vm_count(), 3);
    assert!(!host.vms.lock().unwrap().is_empty());

    // A targeted VM refresh changes the copy: the next refresh is complete (no digest).
    inventory.refresh_vm(id(2)).await.unwrap();
    inventory.refresh_host("hv01").await.unwrap();
    assert_eq!(host.sent.lock().unwrap().last().unwrap(), &None);

    // After a failure too.
    *host.fail.lock().unwrap() = true;
    assert!(inventory.refresh_host("hv01").await.is_err());
    *host.fail.lock().unwrap() = false;
    inventory.refresh_host("hv01").await.unwrap();
    assert_eq!(host.sent.lock().unwrap().last().unwrap(), &None);
    assert_eq!(inventory.snapshot().vm_count(), 3);
    refresher.shutdown().await;
}
