//! Property tests: key parsing and payload decryption never panic on arbitrary input, every
//! payload built from arbitrary values decrypts back to them, and the guest refuses (without
//! panicking) any payload whose pieces, key or checksum were altered.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use aetherv_kvp::guest::{GuestKey, GuestStep, Handshake};
use aetherv_kvp::{DataValue, GuestPublicKey, KeyFormat, KvpItem, ProvisioningPayload, host};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rsa::RsaPrivateKey;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn arbitrary_public_keys_never_panic(text in ".{0,64}", bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = GuestPublicKey::parse(&text);
        let _ = GuestPublicKey::from_bytes(&bytes);
        let _ = GuestPublicKey::parse(&base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &bytes));
    }

    #[test]
    fn capi_headers_with_arbitrary_bodies_never_panic(
        version in prop_oneof![Just(2u8), any::<u8>()],
        algorithm in prop_oneof![Just(0xa400u32), Just(0x2400), any::<u32>()],
        bitlen in prop_oneof![Just(2048u32), Just(0), Just(u32::MAX), any::<u32>()],
        exponent in prop_oneof![Just(65537u32), any::<u32>()],
        body in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        let mut blob = vec![0x06, version, 0, 0];
        blob.extend_from_slice(&algorithm.to_le_bytes());
        blob.extend_from_slice(b"RSA1");
        blob.extend_from_slice(&bitlen.to_le_bytes());
        blob.extend_from_slice(&exponent.to_le_bytes());
        blob.extend_from_slice(&body);
        let _ = GuestPublicKey::from_bytes(&blob);
    }
}

fn guest_key() -> &'static GuestKey {
    static KEY: OnceLock<GuestKey> = OnceLock::new();
    KEY.get_or_init(|| {
        GuestKey::from_rsa(
            RsaPrivateKey::new(&mut StdRng::seed_from_u64(0x70_72_6f_70), 2048).unwrap(),
        )
        .unwrap()
    })
}

fn data_name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_]{0,15}"
}

proptest! {
    #![proptest_config(config(48))]

    #[test]
    fn payloads_round_trip(
        values in prop::collection::btree_map(data_name(), ".{0,450}", 0..6),
        windows in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let format = if windows { KeyFormat::CapiPublicKeyBlob } else { KeyFormat::Pkcs1Der };
        let public = GuestPublicKey::parse(
            &guest_key().public_key_base64(format).unwrap(),
        )
        .unwrap();
        let data: Vec<(String, DataValue)> = values
            .iter()
            .map(|(k, v)| (k.clone(), DataValue::from(v.as_str())))
            .collect();
        let items = ProvisioningPayload::build(&data, &public, &mut StdRng::seed_from_u64(seed)).unwrap();
        let back: BTreeMap<String, String> = ProvisioningPayload::decrypt(&items, guest_key(), &mut StdRng::seed_from_u64(1))
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, v.expose().to_owned()))
            .collect();
        let expected: BTreeMap<String, String> = values
            .into_iter()
            .filter(|(_, v)| !v.trim().is_empty())
            .collect();
        prop_assert_eq!(back, expected);
        prop_assert!(items.iter().all(|i| i.value.len() <= 2048));
    }

    #[test]
    fn decrypting_arbitrary_items_never_panics(
        items in prop::collection::vec(
            (
                prop_oneof![
                    Just("hlvmm.meta.shared_aes_key".to_owned()),
                    Just("hlvmm.meta.provisioning_system_checksum".to_owned()),
                    "hlvmm\\.data\\.[a-z]{1,3}(\\._[0-9]{1,2})?",
                    ".{0,12}",
                ],
                prop_oneof![
                    "[A-Za-z0-9+/]{0,64}={0,2}",
                    ".{0,40}",
                ],
            ),
            0..8,
        ),
    ) {
        let items: Vec<KvpItem> = items.into_iter().map(|(k, v)| KvpItem::new(k, v)).collect();
        let _ = ProvisioningPayload::decrypt(&items, guest_key(), &mut StdRng::seed_from_u64(1));
    }
}

/// A published payload for fixed values (one of them in pieces), as a host-to-guest pool.
fn published(seed: u64, format: KeyFormat) -> Vec<KvpItem> {
    let public = GuestPublicKey::parse(&guest_key().public_key_base64(format).unwrap()).unwrap();
    let values = [
        ("guest_host_name", DataValue::from("web-01")),
        ("guest_la_pw", DataValue::secret("Pässwörd|€")),
        (
            "ansible_ssh_key",
            DataValue::from(format!(
                "ssh-ed25519 {} ansible@ctl",
                (0..230u8)
                    .map(|i| char::from(b'A' + i % 26))
                    .collect::<String>()
            )),
        ),
    ];
    let mut items = host::begin_items("1.0");
    items.extend(host::publish_items(&values, &public, &mut StdRng::seed_from_u64(seed)).unwrap());
    items
}

fn pool(items: &[KvpItem]) -> BTreeMap<String, String> {
    items
        .iter()
        .map(|i| (i.key.clone(), i.value.clone()))
        .collect()
}

/// Runs the guest half over `items`: returns the rejection reason, or `None` if it applied.
fn guest_outcome(items: &[KvpItem], format: KeyFormat) -> Option<String> {
    let mut agent = Handshake::new(Some("1.0".to_owned()), guest_key().clone(), format);
    let mut rng = StdRng::seed_from_u64(3);
    let asked = pool(&host::begin_items("1.0"));
    assert!(matches!(
        agent.on_host_items(&asked, &mut rng),
        GuestStep::PublishKey(_)
    ));
    let pool = pool(items);
    match agent.on_host_items(&pool, &mut rng) {
        GuestStep::Apply { .. } => None,
        GuestStep::Rejected { reason, output } => {
            assert!(reason.chars().count() <= aetherv_kvp::MAX_GUEST_ERROR_CHARS);
            assert_eq!(output.states().last(), Some("provisioningfailed"));
            Some(reason)
        }
        other => panic!("unexpected step {other:?}"),
    }
}

proptest! {
    #![proptest_config(config(24))]

    #[test]
    fn the_guest_accepts_an_untouched_payload(seed in any::<u64>(), windows in any::<bool>()) {
        let format = if windows { KeyFormat::CapiPublicKeyBlob } else { KeyFormat::Pkcs1Der };
        prop_assert_eq!(guest_outcome(&published(seed, format), format), None);
    }

    #[test]
    fn tampered_ciphertext_is_refused(
        seed in any::<u64>(),
        which in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let format = KeyFormat::Pkcs1Der;
        let mut items = published(seed, format);
        let data: Vec<usize> = items
            .iter()
            .enumerate()
            .filter(|(_, i)| i.key.starts_with("hlvmm.data."))
            .map(|(n, _)| n)
            .collect();
        let target = data[which.index(data.len())];
        let mut bytes = STANDARD.decode(&items[target].value).unwrap();
        let at = at.index(bytes.len());
        bytes[at] ^= flip;
        items[target].value = STANDARD.encode(bytes);
        let reason = guest_outcome(&items, format);
        prop_assert!(reason.is_some(), "tampered {} accepted", items[target].key);
        let reason = reason.unwrap_or_default();
        prop_assert!(!reason.contains("web-01") && !reason.contains("Pässwörd"), "{}", reason);
    }

    #[test]
    fn a_tampered_or_replaced_checksum_is_refused(seed in any::<u64>(), checksum in "[A-Za-z0-9+/]{43}=") {
        let format = KeyFormat::CapiPublicKeyBlob;
        let mut items = published(seed, format);
        let item = items.iter_mut().find(|i| i.key == aetherv_kvp::keys::CHECKSUM).unwrap();
        prop_assume!(item.value != checksum);
        item.value = checksum;
        let reason = guest_outcome(&items, format).unwrap_or_default();
        prop_assert!(reason.contains("checksum mismatch"), "{}", reason);
    }

    #[test]
    fn dropped_or_swapped_pieces_are_refused(seed in any::<u64>(), drop in any::<bool>(), piece in 0usize..3) {
        let format = KeyFormat::Pkcs1Der;
        let mut items = published(seed, format);
        let key = format!("hlvmm.data.ansible_ssh_key._{piece}");
        if drop {
            items.retain(|i| i.key != key);
        } else {
            let other = format!("hlvmm.data.ansible_ssh_key._{}", (piece + 1) % 3);
            let a = items.iter().position(|i| i.key == key).unwrap();
            let b = items.iter().position(|i| i.key == other).unwrap();
            let value = items[a].value.clone();
            items[a].value = items[b].value.clone();
            items[b].value = value;
        }
        prop_assert!(guest_outcome(&items, format).is_some());
    }

    #[test]
    fn arbitrary_values_in_the_pool_never_panic_the_guest(
        extra in prop::collection::vec(
            (
                prop_oneof![
                    Just("hlvmm.meta.shared_aes_key".to_owned()),
                    Just("hlvmm.meta.provisioning_system_checksum".to_owned()),
                    Just("hlvmm.meta.host_provisioning_system_state".to_owned()),
                    "hlvmm\\.data\\.[a-z_]{1,16}(\\._[0-9]{1,2})?",
                ],
                ".{0,80}",
            ),
            0..6,
        ),
        seed in any::<u64>(),
    ) {
        let format = KeyFormat::Pkcs1Der;
        let mut items = published(seed, format);
        for (k, v) in extra {
            items.push(KvpItem::new(k, v));
        }
        items.push(aetherv_kvp::HostState::ProvisioningDataPublished.item());
        let _ = guest_outcome(&items, format);
    }
}
