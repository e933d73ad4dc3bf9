//! The host half and the guest half complete the handshake with each other, in both key
//! formats, over two in-memory KVP pools; and the guest's refusals (version, payload, apply
//! failure) reach the host as states and an error item.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use aetherv_kvp::guest::{GuestKey, GuestOutput, GuestStep, Handshake, Phase};
use aetherv_kvp::host::{self, GuestReport};
use aetherv_kvp::{
    DataValue, GuestPublicKey, GuestState, KeyFormat, KvpItem, MAX_GUEST_ERROR_CHARS, keys,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rsa::RsaPrivateKey;

fn guest_key() -> &'static GuestKey {
    static KEY: OnceLock<GuestKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let key = RsaPrivateKey::new(&mut StdRng::seed_from_u64(0x68_73), 2048).unwrap();
        GuestKey::from_rsa(key).unwrap()
    })
}

/// Two KVP pools, as Hyper-V keeps them for one VM.
#[derive(Default)]
struct Vm {
    to_guest: BTreeMap<String, String>,
    to_host: BTreeMap<String, String>,
    reported: Vec<String>,
}

impl Vm {
    fn host_writes(&mut self, items: Vec<KvpItem>) {
        self.to_guest
            .extend(items.into_iter().map(KvpItem::into_pair));
    }

    fn guest_writes(&mut self, output: GuestOutput) {
        self.reported.extend(output.states().map(str::to_owned));
        for key in output.remove {
            self.to_host.remove(key);
        }
        self.to_host
            .extend(output.write.into_iter().map(KvpItem::into_pair));
    }
}

fn values() -> Vec<(&'static str, DataValue)> {
    vec![
        (keys::data::GUEST_HOST_NAME, DataValue::from("web-01")),
        (keys::data::GUEST_LA_UID, DataValue::from("admin")),
        (keys::data::GUEST_LA_PW, DataValue::secret("Pässwörd|€😀")),
        (keys::data::GUEST_V4_DNS2, DataValue::from("  ")),
        (
            keys::data::ANSIBLE_SSH_KEY,
            DataValue::from(format!("ssh-ed25519 {} ansible@ctl", "A".repeat(260))),
        ),
    ]
}

/// Runs the whole handshake; returns the VM and what the guest received.
fn run(format: KeyFormat) -> (Vm, BTreeMap<String, String>) {
    let mut rng = StdRng::seed_from_u64(7);
    let mut vm = Vm::default();
    let mut agent = Handshake::new(Some("2.4.0".into()), guest_key().clone(), format);

    // Nothing to do before the host asks.
    assert!(matches!(
        agent.on_host_items(&vm.to_guest, &mut rng),
        GuestStep::Wait
    ));

    vm.host_writes(host::begin_items("2.4.0"));
    let GuestStep::PublishKey(out) = agent.on_host_items(&vm.to_guest, &mut rng) else {
        panic!("no key published");
    };
    vm.guest_writes(out);
    assert_eq!(agent.phase(), &Phase::WaitingForData);
    // Asked again before the data is there: still waiting.
    assert!(matches!(
        agent.on_host_items(&vm.to_guest, &mut rng),
        GuestStep::Wait
    ));

    let report = GuestReport::read(&vm.to_host);
    assert!(report.key_ready());
    let public = GuestPublicKey::parse(report.public_key.unwrap()).unwrap();
    assert_eq!(public.format(), format);
    assert_eq!(public.rsa(), &guest_key().public_key());
    vm.host_writes(host::publish_items(&values(), &public, &mut rng).unwrap());

    let GuestStep::Apply { output, values } = agent.on_host_items(&vm.to_guest, &mut rng) else {
        panic!("payload refused");
    };
    vm.guest_writes(output);
    assert_eq!(
        GuestReport::read(&vm.to_host).state,
        Some(GuestState::Applying)
    );
    let received = values
        .iter()
        .map(|(k, v)| (k.clone(), v.expose().to_owned()))
        .collect();
    vm.guest_writes(agent.applied());
    (vm, received)
}

#[test]
fn host_and_guest_complete_the_handshake_in_both_key_formats() {
    for format in [KeyFormat::Pkcs1Der, KeyFormat::CapiPublicKeyBlob] {
        let (vm, received) = run(format);
        assert_eq!(
            received,
            BTreeMap::from([
                (
                    "ansible_ssh_key".to_owned(),
                    format!("ssh-ed25519 {} ansible@ctl", "A".repeat(260))
                ),
                ("guest_host_name".to_owned(), "web-01".to_owned()),
                ("guest_la_pw".to_owned(), "Pässwörd|€😀".to_owned()),
                ("guest_la_uid".to_owned(), "admin".to_owned()),
            ]),
            "{format:?}"
        );
        // The long value travelled in pieces; the blank one not at all.
        assert!(vm.to_guest.contains_key("hlvmm.data.ansible_ssh_key._2"));
        assert!(!vm.to_guest.contains_key("hlvmm.data.ansible_ssh_key"));
        assert!(!vm.to_guest.keys().any(|k| k.contains("dns2")));
        assert_eq!(
            vm.reported,
            ["waitingforaeskey", "applying", "provisioningapplied"]
        );
        let report = GuestReport::read(&vm.to_host);
        assert_eq!(report.state, Some(GuestState::ProvisioningApplied));
        assert_eq!(report.error, None);
        // Nothing in either pool is plaintext.
        for value in vm.to_guest.values().chain(vm.to_host.values()) {
            assert!(!value.contains("Pässwörd") && !value.contains("web-01"));
        }
    }
}

#[test]
fn a_guest_of_another_version_stays_silent() {
    let mut rng = StdRng::seed_from_u64(1);
    let mut agent = Handshake::new(Some("1.0".into()), guest_key().clone(), KeyFormat::Pkcs1Der);
    let mut vm = Vm::default();
    vm.host_writes(host::begin_items("2.0"));
    match agent.on_host_items(&vm.to_guest, &mut rng) {
        GuestStep::VersionMismatch { host } => assert_eq!(host.as_deref(), Some("2.0")),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        agent.on_host_items(&vm.to_guest, &mut rng),
        GuestStep::Wait
    ));
    // Without a version item the guest does not answer either.
    let mut agent = Handshake::new(Some("1.0".into()), guest_key().clone(), KeyFormat::Pkcs1Der);
    let mut pool = BTreeMap::new();
    pool.insert(
        keys::HOST_STATE.to_owned(),
        "waitingforpublickey".to_owned(),
    );
    assert!(matches!(
        agent.on_host_items(&pool, &mut rng),
        GuestStep::VersionMismatch { host: None }
    ));
}

#[test]
fn a_payload_for_another_key_is_refused_and_reported() {
    let mut rng = StdRng::seed_from_u64(2);
    let other =
        GuestKey::from_rsa(RsaPrivateKey::new(&mut StdRng::seed_from_u64(0x0e), 2048).unwrap())
            .unwrap();
    let mut agent = Handshake::new(None, guest_key().clone(), KeyFormat::CapiPublicKeyBlob);
    let mut vm = Vm::default();
    vm.host_writes(host::begin_items("any"));
    let GuestStep::PublishKey(out) = agent.on_host_items(&vm.to_guest, &mut rng) else {
        panic!();
    };
    vm.guest_writes(out);
    // The host encrypts for a different key than the one published.
    let wrong =
        GuestPublicKey::parse(&other.public_key_base64(KeyFormat::Pkcs1Der).unwrap()).unwrap();
    vm.host_writes(host::publish_items(&values(), &wrong, &mut rng).unwrap());
    let GuestStep::Rejected { output, reason } = agent.on_host_items(&vm.to_guest, &mut rng) else {
        panic!("accepted a payload for another key");
    };
    vm.guest_writes(output);
    assert!(reason.contains("rsa key unwrap failed"), "{reason}");
    let report = GuestReport::read(&vm.to_host);
    assert_eq!(report.state, Some(GuestState::ProvisioningFailed));
    assert_eq!(report.error, Some(reason.as_str()));
    assert_eq!(
        vm.reported,
        ["waitingforaeskey", "applying", "provisioningfailed"]
    );
    assert!(matches!(agent.phase(), Phase::Failed(_)));
}

#[test]
fn an_apply_failure_is_reported_shortened() {
    let mut rng = StdRng::seed_from_u64(3);
    let mut agent = Handshake::new(None, guest_key().clone(), KeyFormat::Pkcs1Der);
    let mut vm = Vm::default();
    vm.host_writes(host::begin_items("v"));
    let GuestStep::PublishKey(out) = agent.on_host_items(&vm.to_guest, &mut rng) else {
        panic!();
    };
    vm.guest_writes(out);
    let public = GuestPublicKey::parse(GuestReport::read(&vm.to_host).public_key.unwrap()).unwrap();
    vm.host_writes(host::publish_items(&values(), &public, &mut rng).unwrap());
    let GuestStep::Apply { output, .. } = agent.on_host_items(&vm.to_guest, &mut rng) else {
        panic!();
    };
    vm.guest_writes(output);
    vm.guest_writes(agent.failed(&format!("cannot set the host name:\n{}", "x".repeat(400))));
    let report = GuestReport::read(&vm.to_host);
    assert_eq!(report.state, Some(GuestState::ProvisioningFailed));
    let error = report.error.unwrap();
    assert_eq!(error.chars().count(), MAX_GUEST_ERROR_CHARS);
    assert!(error.starts_with("cannot set the host name: x"));
    // A later host write does not restart a finished handshake.
    assert!(matches!(
        agent.on_host_items(&vm.to_guest, &mut rng),
        GuestStep::Wait
    ));
}

#[test]
fn an_empty_payload_is_refused() {
    let mut rng = StdRng::seed_from_u64(4);
    let mut agent = Handshake::new(None, guest_key().clone(), KeyFormat::Pkcs1Der);
    let mut vm = Vm::default();
    vm.host_writes(host::begin_items("v"));
    let GuestStep::PublishKey(out) = agent.on_host_items(&vm.to_guest, &mut rng) else {
        panic!();
    };
    vm.guest_writes(out);
    let public = GuestPublicKey::parse(GuestReport::read(&vm.to_host).public_key.unwrap()).unwrap();
    let none: [(&str, DataValue); 0] = [];
    vm.host_writes(host::publish_items(&none, &public, &mut rng).unwrap());
    let GuestStep::Rejected { reason, .. } = agent.on_host_items(&vm.to_guest, &mut rng) else {
        panic!();
    };
    assert_eq!(reason, "no hlvmm.data items were published");
}

#[test]
fn debug_output_never_shows_key_material() {
    let agent = Handshake::new(None, guest_key().clone(), KeyFormat::Pkcs1Der);
    let text = format!("{agent:?}");
    assert!(text.contains("GuestKey(2048 bits, ***)"), "{text}");
    assert!(text.len() < 300, "{text}");
}
