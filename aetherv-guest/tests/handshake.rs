//! The real `aetherv-guest` binary against a host simulated with aetherv-kvp's host half,
//! which writes the host-to-guest pool file and reads the guest-to-host one.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use aetherv_guest::pool::KvpPool;
use aetherv_kvp::{DataValue, GuestPublicKey, GuestState, KvpItem, host, keys};

const VERSION: &str = "iso-2026.12.1";

struct Guest {
    dir: tempfile::TempDir,
    child: Child,
}

impl Guest {
    fn start(version_file: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["root", "pool"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let version = dir.path().join("version");
        if let Some(v) = version_file {
            std::fs::write(&version, format!("{v}\n")).unwrap();
        }
        let child = Command::new(env!("CARGO_BIN_EXE_aetherv-guest"))
            .arg("run")
            .arg("--root")
            .arg(dir.path().join("root"))
            .arg("--pool-dir")
            .arg(dir.path().join("pool"))
            .arg("--version-file")
            .arg(&version)
            .args(["--poll-ms", "20", "--timeout-s", "120"])
            .spawn()
            .unwrap();
        Self { dir, child }
    }

    fn pool(&self) -> &Path {
        self.dir.path()
    }

    fn host_write(&self, items: &[KvpItem]) {
        KvpPool::host_to_guest(&self.pool().join("pool"))
            .update(items.iter().map(KvpItem::as_pair), &[])
            .unwrap();
    }

    fn guest_items(&self) -> BTreeMap<String, String> {
        KvpPool::guest_to_host(&self.pool().join("pool"))
            .read()
            .unwrap()
    }

    /// Waits until the guest reports one of `states`.
    fn wait_for(&self, states: &[GuestState]) -> BTreeMap<String, String> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let items = self.guest_items();
            let state = host::GuestReport::read(&items).state;
            if state.is_some_and(|s| states.contains(&s)) {
                return items;
            }
            assert!(Instant::now() < deadline, "guest items: {items:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn exit_code(mut self) -> (Option<i32>, tempfile::TempDir) {
        let status = self.child.wait().unwrap();
        (status.code(), self.dir)
    }
}

fn values() -> Vec<(&'static str, DataValue)> {
    vec![
        ("guest_host_name", DataValue::from("web-01")),
        ("guest_la_uid", DataValue::from("admin")),
        (
            "guest_la_pw",
            DataValue::Secret("S3cret-Pa55-never-on-disk".into()),
        ),
        ("guest_v4_ip_addr", DataValue::from("10.20.30.40")),
        ("guest_v4_cidr_prefix", DataValue::from("24")),
        ("guest_v4_default_gw", DataValue::from("10.20.30.1")),
        ("guest_v4_dns1", DataValue::from("10.20.0.53")),
        ("guest_net_dns_suffix", DataValue::from("corp.example")),
        ("ansible_ssh_user", DataValue::from("ansible")),
        (
            "ansible_ssh_key",
            DataValue::from(format!("ssh-ed25519 {} ansible@ctl", "A".repeat(180)).as_str()),
        ),
    ]
}

/// Runs the host half up to the published payload; `tamper` may change the items first.
fn provision(guest: &Guest, tamper: impl FnOnce(&mut Vec<KvpItem>)) {
    guest.host_write(&host::begin_items(VERSION));
    let items = guest.wait_for(&[GuestState::WaitingForAesKey]);
    let public =
        GuestPublicKey::parse(host::GuestReport::read(&items).public_key.unwrap()).unwrap();
    assert_eq!(public.bits(), 2048);
    let mut payload = host::publish_items(&values(), &public, &mut rand::rngs::OsRng).unwrap();
    tamper(&mut payload);
    guest.host_write(&payload);
}

#[test]
fn the_agent_applies_a_published_configuration() {
    let guest = Guest::start(Some(VERSION));
    provision(&guest, |_| {});
    let items = guest.wait_for(&[
        GuestState::ProvisioningApplied,
        GuestState::ProvisioningFailed,
    ]);
    assert_eq!(
        items.get(keys::GUEST_STATE).map(String::as_str),
        Some(GuestState::ProvisioningApplied.as_str()),
        "{items:?}"
    );
    assert!(!items.contains_key(keys::GUEST_ERROR));
    let (code, dir) = guest.exit_code();
    assert_eq!(code, Some(0));
    let seed = dir.path().join("root/var/lib/cloud/seed/nocloud");
    let user_data = std::fs::read_to_string(seed.join("user-data")).unwrap();
    assert!(user_data.contains("hostname: \"web-01\""), "{user_data}");
    assert!(user_data.contains("name: \"ansible\""), "{user_data}");
    assert!(user_data.contains(&"A".repeat(180)), "{user_data}");
    assert!(user_data.contains("hashed_passwd: \"$6$"), "{user_data}");
    let network = std::fs::read_to_string(seed.join("network-config")).unwrap();
    assert!(network.contains("\"10.20.30.40/24\""), "{network}");
    // The password is nowhere in plain text: not in the seed, the log or the pools.
    let log = std::fs::read_to_string(dir.path().join("root/var/log/aetherv-guest.log")).unwrap();
    assert!(log.contains("reported provisioningapplied"), "{log}");
    for file in [
        seed.join("user-data"),
        seed.join("meta-data"),
        seed.join("network-config"),
        dir.path().join("root/var/log/aetherv-guest.log"),
        dir.path().join("pool/.kvp_pool_1"),
    ] {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains("S3cret-Pa55"),
            "{}",
            file.display()
        );
    }
}

#[test]
fn a_tampered_checksum_fails_with_a_reason() {
    let guest = Guest::start(Some(VERSION));
    provision(&guest, |items| {
        for item in items.iter_mut() {
            if item.key == keys::CHECKSUM {
                item.value = aetherv_kvp::checksum([("guest_host_name", "evil")]);
            }
        }
    });
    let items = guest.wait_for(&[
        GuestState::ProvisioningApplied,
        GuestState::ProvisioningFailed,
    ]);
    let error = items.get(keys::GUEST_ERROR).cloned().unwrap_or_default();
    assert!(error.contains("checksum mismatch"), "{items:?}");
    assert!(error.chars().count() <= 200);
    let (code, dir) = guest.exit_code();
    assert_eq!(code, Some(1));
    assert!(!dir.path().join("root/var/lib/cloud/seed").exists());
}

#[test]
fn a_wrong_version_fails_with_a_reason() {
    let guest = Guest::start(Some("iso-1999.1.1"));
    guest.host_write(&host::begin_items(VERSION));
    let items = guest.wait_for(&[GuestState::ProvisioningFailed, GuestState::WaitingForAesKey]);
    let error = items.get(keys::GUEST_ERROR).cloned().unwrap_or_default();
    assert!(error.starts_with("version mismatch"), "{items:?}");
    assert!(
        error.contains(VERSION) && error.contains("iso-1999.1.1"),
        "{error}"
    );
    assert!(!items.contains_key(keys::GUEST_PUBLIC_KEY));
    let (code, _dir) = guest.exit_code();
    assert_eq!(code, Some(1));
}

#[test]
fn without_a_version_file_the_crate_version_is_used() {
    let guest = Guest::start(None);
    guest.host_write(&host::begin_items(env!("CARGO_PKG_VERSION")));
    let items = guest.wait_for(&[GuestState::WaitingForAesKey, GuestState::ProvisioningFailed]);
    assert!(items.contains_key(keys::GUEST_PUBLIC_KEY), "{items:?}");
    let mut guest = guest;
    guest.child.kill().unwrap();
    guest.child.wait().unwrap();
}

#[test]
fn usage_errors_exit_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_aetherv-guest"))
        .args(["run", "--poll-ms", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(env!("CARGO_BIN_EXE_aetherv-guest"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("aetherv-guest "));
    let out = Command::new(env!("CARGO_BIN_EXE_aetherv-guest"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("crate\n                         version when the file does not exist")
    );
}
