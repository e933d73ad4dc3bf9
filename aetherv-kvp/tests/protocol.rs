//! KVP guest protocol: public key formats, payload round trips in both key formats, the
//! checksum known answer, chunking boundaries, tampering and states.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use aes::Aes256;
use aetherv_kvp::guest::GuestKey;
use aetherv_kvp::{
    self as kvp, DataValue, Error, GuestPublicKey, GuestState, HostState, KeyFormat, KvpItem,
    ProvisioningPayload, SecretText, keys,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockDecryptMut, KeyIvInit};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rsa::traits::PublicKeyParts;
use rsa::{Pkcs1v15Encrypt, RsaPrivateKey};

/// One RSA-2048 key per test binary: generation is the slow part of these tests.
fn guest_key() -> &'static RsaPrivateKey {
    static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| {
        RsaPrivateKey::new(&mut StdRng::seed_from_u64(0x6b7670), 2048).expect("key generation")
    })
}

fn guest_key_pair() -> GuestKey {
    GuestKey::from_rsa(guest_key().clone()).unwrap()
}

/// The guest half: unwrap, reassemble, decrypt, check.
fn decrypt(items: &[KvpItem]) -> Result<BTreeMap<String, SecretText>, Error> {
    ProvisioningPayload::decrypt(items, &guest_key_pair(), &mut rng())
}

fn guest_public(format: KeyFormat) -> GuestPublicKey {
    let text = GuestPublicKey::encode(&guest_key().to_public_key(), format).unwrap();
    GuestPublicKey::parse(&text).unwrap()
}

fn rng() -> StdRng {
    StdRng::seed_from_u64(42)
}

fn data(pairs: &[(&str, &str)]) -> Vec<(String, DataValue)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), DataValue::from(*v)))
        .collect()
}

fn plain(values: &BTreeMap<String, SecretText>) -> BTreeMap<String, String> {
    values
        .iter()
        .map(|(k, v)| (k.clone(), v.expose().to_owned()))
        .collect()
}

/// The AES key of a payload, unwrapped the way a guest does.
fn unwrap_aes_key(items: &[KvpItem]) -> [u8; 32] {
    let wrapped = items
        .iter()
        .find(|i| i.key == keys::SHARED_AES_KEY)
        .unwrap();
    let key = guest_key()
        .decrypt(Pkcs1v15Encrypt, &STANDARD.decode(&wrapped.value).unwrap())
        .unwrap();
    key.try_into().unwrap()
}

/// Decrypts one item on its own, as the agents do for every piece.
fn decrypt_item(key: &[u8; 32], value: &str) -> String {
    let bytes = STANDARD.decode(value).unwrap();
    let (iv, ciphertext) = bytes.split_at(16);
    let plain = cbc::Decryptor::<Aes256>::new_from_slices(key, iv)
        .unwrap()
        .decrypt_padded_vec_mut::<Pkcs7>(ciphertext)
        .unwrap();
    String::from_utf8(plain).unwrap()
}

fn item<'a>(items: &'a [KvpItem], key: &str) -> Option<&'a KvpItem> {
    items.iter().find(|i| i.key == key)
}

// ---------------------------------------------------------------------------------------------
// Public keys
// ---------------------------------------------------------------------------------------------

#[test]
fn both_key_formats_round_trip() {
    let long_key = format!("ssh-ed25519 {} ansible@ctl", "A".repeat(250));
    let values = vec![
        ("guest_host_name".to_owned(), DataValue::from("web-01")),
        ("guest_la_pw".to_owned(), DataValue::secret("Pässwörd|€😀")),
        (
            "ansible_ssh_key".to_owned(),
            DataValue::from(long_key.as_str()),
        ),
        ("guest_v4_dns2".to_owned(), DataValue::from("   ")),
    ];
    for format in [
        KeyFormat::Pkcs1Der,
        KeyFormat::CapiPublicKeyBlob,
        KeyFormat::SpkiDer,
    ] {
        let public = guest_public(format);
        assert_eq!(public.format(), format);
        assert_eq!(public.bits(), 2048);
        assert_eq!(public.rsa(), &guest_key().to_public_key());

        let items = ProvisioningPayload::build(&values, &public, &mut rng()).unwrap();
        let decrypted = decrypt(&items).unwrap();
        assert_eq!(
            plain(&decrypted),
            BTreeMap::from([
                ("guest_host_name".to_owned(), "web-01".to_owned()),
                ("guest_la_pw".to_owned(), "Pässwörd|€😀".to_owned()),
                ("ansible_ssh_key".to_owned(), long_key.clone()),
            ]),
            "{format:?}"
        );
        // Blank values are neither published nor checksummed.
        assert!(!items.iter().any(|i| i.key.contains("guest_v4_dns2")));
        // No item carries plaintext.
        for i in &items {
            assert!(!i.value.contains("Pässwörd") && !i.value.contains("web-01"));
        }
    }
}

#[test]
fn capi_blob_matches_the_documented_layout() {
    let public = guest_key().to_public_key();
    // Built here by hand from the layout, independently of the crate's encoder.
    let mut blob = vec![0x06, 0x02, 0x00, 0x00, 0x00, 0xa4, 0x00, 0x00];
    blob.extend_from_slice(b"RSA1");
    blob.extend_from_slice(&2048u32.to_le_bytes());
    blob.extend_from_slice(&65537u32.to_le_bytes());
    let mut modulus = public.n().to_bytes_le();
    modulus.resize(256, 0);
    blob.extend_from_slice(&modulus);

    let encoded = GuestPublicKey::encode(&public, KeyFormat::CapiPublicKeyBlob).unwrap();
    assert_eq!(STANDARD.decode(&encoded).unwrap(), blob);
    let parsed = GuestPublicKey::from_bytes(&blob).unwrap();
    assert_eq!(parsed.format(), KeyFormat::CapiPublicKeyBlob);
    assert_eq!(parsed.rsa(), &public);

    // CALG_RSA_SIGN carries the same key material and is accepted.
    let mut sign = blob.clone();
    sign[5] = 0x24;
    assert_eq!(GuestPublicKey::from_bytes(&sign).unwrap().rsa(), &public);
}

fn key_error(result: Result<GuestPublicKey, Error>) -> String {
    match result {
        Err(e @ Error::PublicKey { .. }) => e.to_string(),
        other => panic!("expected a public key error, got {other:?}"),
    }
}

#[test]
fn malformed_keys_are_refused_with_a_reason() {
    let public = guest_key().to_public_key();
    let blob = STANDARD
        .decode(GuestPublicKey::encode(&public, KeyFormat::CapiPublicKeyBlob).unwrap())
        .unwrap();
    let der = STANDARD
        .decode(GuestPublicKey::encode(&public, KeyFormat::Pkcs1Der).unwrap())
        .unwrap();
    let with = |at: usize, bytes: &[u8]| {
        let mut b = blob.clone();
        b[at..at + bytes.len()].copy_from_slice(bytes);
        b
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "the key is empty"),
        (
            "short blob",
            blob[..19].to_vec(),
            "shorter than the 20-byte header",
        ),
        ("blob version", with(1, &[3]), "blob version 3, expected 2"),
        (
            "algorithm",
            with(4, &[0x00, 0x66, 0, 0]),
            "key algorithm 0x00006600",
        ),
        ("magic", with(8, b"DSS1"), "expected \"RSA1\""),
        ("private magic", with(8, b"RSA2"), "magic RSA2"),
        ("private blob", with(0, &[0x07]), "PRIVATEKEYBLOB"),
        (
            "bit length",
            with(12, &4096u32.to_le_bytes()),
            "declares a 4096-bit modulus",
        ),
        (
            "truncated modulus",
            blob[..200].to_vec(),
            "carries 180 bytes",
        ),
        (
            "trailing bytes",
            [blob.clone(), vec![0]].concat(),
            "carries 257 bytes",
        ),
        (
            "exponent 1",
            with(16, &1u32.to_le_bytes()),
            "not a usable RSA key",
        ),
        (
            "truncated der",
            der[..100].to_vec(),
            "neither a PKCS#1 RSAPublicKey",
        ),
        (
            "unknown format",
            b"RSA1\0\0\0\0".to_vec(),
            "first byte is 0x52",
        ),
    ];
    for (name, bytes, fragment) in cases {
        let message = key_error(GuestPublicKey::from_bytes(&bytes));
        assert!(message.contains(fragment), "{name}: {message}");
        let message = key_error(GuestPublicKey::parse(&STANDARD.encode(&bytes)));
        assert!(
            message.contains(fragment) || bytes.is_empty(),
            "{name}: {message}"
        );
    }
    assert!(key_error(GuestPublicKey::parse("not base64!")).contains("not base64"));
    assert!(key_error(GuestPublicKey::parse(" \0")).contains("empty"));
}

#[test]
fn keys_under_2048_bits_are_refused_in_both_formats() {
    let small = RsaPrivateKey::new(&mut StdRng::seed_from_u64(7), 1024)
        .unwrap()
        .to_public_key();
    for format in [KeyFormat::Pkcs1Der, KeyFormat::CapiPublicKeyBlob] {
        let text = GuestPublicKey::encode(&small, format).unwrap();
        let message = key_error(GuestPublicKey::parse(&text));
        assert!(
            message.contains("has 1024 bits; at least 2048 are required"),
            "{message}"
        );
    }
}

#[test]
fn key_text_tolerates_line_breaks_nuls_and_pem() {
    use rsa::pkcs1::{EncodeRsaPublicKey, LineEnding};
    use rsa::pkcs8::EncodePublicKey;
    let public = guest_key().to_public_key();
    let text = GuestPublicKey::encode(&public, KeyFormat::Pkcs1Der).unwrap();
    let wrapped: String = text
        .as_bytes()
        .chunks(64)
        .map(|c| format!("{}\r\n", std::str::from_utf8(c).unwrap()))
        .collect();
    let parsed = GuestPublicKey::parse(&format!("{wrapped}\0\0")).unwrap();
    assert_eq!(parsed.rsa(), &public);

    let pem = public.to_pkcs1_pem(LineEnding::LF).unwrap();
    let parsed = GuestPublicKey::parse(&pem).unwrap();
    assert_eq!(
        (parsed.rsa(), parsed.format()),
        (&public, KeyFormat::Pkcs1Der)
    );
    let pem = public.to_public_key_pem(LineEnding::LF).unwrap();
    let parsed = GuestPublicKey::parse(&pem).unwrap();
    assert_eq!(
        (parsed.rsa(), parsed.format()),
        (&public, KeyFormat::SpkiDer)
    );
}

// ---------------------------------------------------------------------------------------------
// Checksum
// ---------------------------------------------------------------------------------------------

#[test]
fn checksum_known_answer() {
    // Expected values computed independently with Python:
    //   joined = "|".join(v for k, v in sorted(values.items()) if v.strip())
    //   base64.b64encode(hashlib.sha256(joined.encode()).digest())
    let values = [
        ("guest_host_name", "web-01"),
        ("guest_la_uid", "Administrator"),
        ("guest_la_pw", "P@ss|w0rd ü"),
        ("guest_v4_ip_addr", "10.20.30.40"),
        ("guest_v4_dns2", "  "),
        ("guest_domain_join_ou", "OU=Servers,DC=corp,DC=example"),
    ];
    assert_eq!(
        kvp::checksum(values),
        "ulDqiypAMhfqTawpeWakMDqdHWFIaODeltTt8Ye4lK4="
    );
    let mut reversed = values;
    reversed.reverse();
    assert_eq!(
        kvp::checksum(reversed),
        "ulDqiypAMhfqTawpeWakMDqdHWFIaODeltTt8Ye4lK4="
    );
    // Nothing to hash: SHA-256 of the empty string.
    assert_eq!(
        kvp::checksum([("a", ""), ("b", " \t")]),
        "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
    );

    // The published checksum is the same function of the plaintext values.
    let values = data(&values);
    let items = ProvisioningPayload::build(&values, &guest_public(KeyFormat::Pkcs1Der), &mut rng())
        .unwrap();
    assert_eq!(
        item(&items, keys::CHECKSUM).unwrap().value,
        "ulDqiypAMhfqTawpeWakMDqdHWFIaODeltTt8Ye4lK4="
    );
}

// ---------------------------------------------------------------------------------------------
// Items and chunking
// ---------------------------------------------------------------------------------------------

#[test]
fn items_come_in_publishing_order_with_fresh_ivs() {
    let values = data(&[("b", "same"), ("a", "same")]);
    let public = guest_public(KeyFormat::CapiPublicKeyBlob);
    let items = ProvisioningPayload::build(&values, &public, &mut rng()).unwrap();
    let keys: Vec<&str> = items.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            keys::SHARED_AES_KEY,
            "hlvmm.data.a",
            "hlvmm.data.b",
            keys::CHECKSUM
        ]
    );
    // Same plaintext, different IVs and ciphertexts.
    assert_ne!(items[1].value, items[2].value);
    let iv = |i: &KvpItem| STANDARD.decode(&i.value).unwrap()[..16].to_vec();
    assert_ne!(iv(&items[1]), iv(&items[2]));
    // A different RNG state gives a different key and ciphertexts.
    let again =
        ProvisioningPayload::build(&values, &public, &mut StdRng::seed_from_u64(43)).unwrap();
    assert_ne!(again[0].value, items[0].value);
    assert_ne!(again[1].value, items[1].value);
    // 2048-bit wrapped key: 256 bytes.
    assert_eq!(STANDARD.decode(&items[0].value).unwrap().len(), 256);
}

/// Publishes one value named `x` and returns the data items' keys and, decrypted one by one,
/// their plaintexts.
fn publish_one(value: &str) -> Result<Vec<(String, String)>, Error> {
    let values = data(&[("x", value)]);
    let items =
        ProvisioningPayload::build(&values, &guest_public(KeyFormat::Pkcs1Der), &mut rng())?;
    let aes = unwrap_aes_key(&items);
    for i in &items {
        assert!(i.value.len() <= kvp::MAX_KVP_VALUE_BYTES);
    }
    let pieces = items
        .iter()
        .filter(|i| i.key.starts_with(keys::DATA_PREFIX))
        .map(|i| (i.key.clone(), decrypt_item(&aes, &i.value)))
        .collect();
    let round_trip = decrypt(&items).unwrap();
    assert_eq!(round_trip["x"].expose(), value);
    Ok(pieces)
}

#[test]
fn chunking_boundaries() {
    // Exactly 100 characters: one whole item.
    let pieces = publish_one(&"a".repeat(100)).unwrap();
    assert_eq!(pieces, [("hlvmm.data.x".to_owned(), "a".repeat(100))]);

    // 101 characters: two pieces, each encrypted on its own.
    let value = format!("{}b", "a".repeat(100));
    let pieces = publish_one(&value).unwrap();
    assert_eq!(
        pieces,
        [
            ("hlvmm.data.x._0".to_owned(), "a".repeat(100)),
            ("hlvmm.data.x._1".to_owned(), "b".to_owned()),
        ]
    );

    // Characters, not bytes: 150 two-byte characters are 100 + 50.
    let pieces = publish_one(&"é".repeat(150)).unwrap();
    assert_eq!(pieces.len(), 2);
    assert_eq!(pieces[0].1.chars().count(), 100);
    assert_eq!(pieces[1].1.chars().count(), 50);

    // 30 pieces (3000 characters) is the most.
    let value: String = (0..3000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let pieces = publish_one(&value).unwrap();
    assert_eq!(pieces.len(), 30);
    assert_eq!(pieces[29].0, "hlvmm.data.x._29");
    assert!(pieces.iter().all(|(_, p)| p.chars().count() == 100));

    // Widest possible piece: 100 four-byte characters still fit a KVP value easily.
    let pieces = publish_one(&"😀".repeat(100)).unwrap();
    assert_eq!(pieces.len(), 1);

    // 31 pieces is an error naming the key.
    let err = publish_one(&"a".repeat(3001)).unwrap_err();
    assert!(
        matches!(&err, Error::ValueTooLong { key, chars: 3001, pieces: 31, .. } if key == "hlvmm.data.x"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "value of hlvmm.data.x is too long for kvp: 3001 characters would need 31 pieces, at \
         most 30 of 100 characters are allowed"
    );
}

#[test]
fn every_item_fits_kvp() {
    let value = "😀".repeat(100);
    let items = ProvisioningPayload::build(
        &data(&[("x", &value)]),
        &guest_public(KeyFormat::Pkcs1Der),
        &mut rng(),
    )
    .unwrap();
    let data_item = item(&items, "hlvmm.data.x").unwrap();
    // 400 bytes of UTF-8 -> 416 bytes of ciphertext + 16 IV -> 576 base64 characters.
    assert_eq!(data_item.value.len(), 576);
}

#[test]
fn data_names_are_checked() {
    let public = guest_public(KeyFormat::Pkcs1Der);
    for (name, fragment) in [
        ("", "is empty"),
        ("Guest", "lowercase letters"),
        ("a.b", "lowercase letters"),
        ("hlvmm.data.a", "lowercase letters"),
    ] {
        let err =
            ProvisioningPayload::build(&data(&[(name, "v")]), &public, &mut rng()).unwrap_err();
        assert!(
            matches!(&err, Error::DataName { reason, .. } if reason.contains(fragment)),
            "{name:?}: {err:?}"
        );
    }
    for pairs in [[("a", "1"), ("a", "2")], [("a", " "), ("a", "2")]] {
        let err = ProvisioningPayload::build(&data(&pairs), &public, &mut rng()).unwrap_err();
        assert!(err.to_string().contains("more than once"), "{err}");
    }
}

// ---------------------------------------------------------------------------------------------
// Tampering (guest role)
// ---------------------------------------------------------------------------------------------

fn sample_items() -> Vec<KvpItem> {
    let long: String = (0..250u8).map(|i| char::from(b'a' + i % 26)).collect();
    let values = data(&[
        ("guest_host_name", "web-01"),
        ("guest_la_pw", "secret-pw"),
        ("ansible_ssh_key", &long),
    ]);
    ProvisioningPayload::build(
        &values,
        &guest_public(KeyFormat::CapiPublicKeyBlob),
        &mut rng(),
    )
    .unwrap()
}

fn rejected(items: &[KvpItem]) -> String {
    match decrypt(items) {
        Ok(values) => panic!("accepted tampered payload: {:?}", values.keys()),
        Err(e) => e.to_string(),
    }
}

fn set_value(items: &mut [KvpItem], key: &str, value: String) {
    items.iter_mut().find(|i| i.key == key).unwrap().value = value;
}

fn flip_byte(value: &str, at: usize) -> String {
    let mut bytes = STANDARD.decode(value).unwrap();
    bytes[at] ^= 0x01;
    STANDARD.encode(bytes)
}

#[test]
fn tampering_is_detected() {
    let items = sample_items();
    assert!(decrypt(&items).is_ok());

    // A flipped bit in the last ciphertext block breaks the padding or the checksum.
    let mut t = items.clone();
    let v = item(&t, "hlvmm.data.guest_la_pw").unwrap().value.clone();
    set_value(&mut t, "hlvmm.data.guest_la_pw", flip_byte(&v, 16));
    let message = rejected(&t);
    assert!(
        message.contains("checksum mismatch") || message.contains("does not decrypt"),
        "{message}"
    );

    // A flipped IV bit changes the first plaintext block: checksum mismatch.
    let mut t = items.clone();
    let host = item(&t, "hlvmm.data.guest_host_name")
        .unwrap()
        .value
        .clone();
    set_value(&mut t, "hlvmm.data.guest_host_name", flip_byte(&host, 0));
    assert!(rejected(&t).contains("checksum mismatch"));

    // Another item's ciphertext moved into place.
    let mut t = items.clone();
    set_value(&mut t, "hlvmm.data.guest_host_name", v.clone());
    assert!(rejected(&t).contains("checksum mismatch"));

    // Swapped chunks.
    let mut t = items.clone();
    let c0 = item(&t, "hlvmm.data.ansible_ssh_key._0")
        .unwrap()
        .value
        .clone();
    let c2 = item(&t, "hlvmm.data.ansible_ssh_key._2")
        .unwrap()
        .value
        .clone();
    set_value(&mut t, "hlvmm.data.ansible_ssh_key._0", c2);
    set_value(&mut t, "hlvmm.data.ansible_ssh_key._2", c0);
    assert!(rejected(&t).contains("checksum mismatch"));

    // A missing chunk.
    let t: Vec<KvpItem> = items
        .iter()
        .filter(|i| i.key != "hlvmm.data.ansible_ssh_key._1")
        .cloned()
        .collect();
    assert!(rejected(&t).contains("chunk 1 of hlvmm.data.ansible_ssh_key is missing"));

    // A dropped value.
    let t: Vec<KvpItem> = items
        .iter()
        .filter(|i| i.key != "hlvmm.data.guest_host_name")
        .cloned()
        .collect();
    assert!(rejected(&t).contains("checksum mismatch"));

    // An altered checksum, a missing checksum, a missing key.
    let mut t = items.clone();
    set_value(&mut t, keys::CHECKSUM, kvp::checksum([("x", "y")]));
    assert!(rejected(&t).contains("checksum mismatch"));
    let t: Vec<KvpItem> = items
        .iter()
        .filter(|i| i.key != keys::CHECKSUM)
        .cloned()
        .collect();
    assert!(rejected(&t).contains("provisioning_system_checksum is missing"));
    let t: Vec<KvpItem> = items
        .iter()
        .filter(|i| i.key != keys::SHARED_AES_KEY)
        .cloned()
        .collect();
    assert!(rejected(&t).contains("shared_aes_key is missing"));

    // A value published both whole and in chunks.
    let mut t = items.clone();
    t.push(KvpItem::new("hlvmm.data.ansible_ssh_key", v.clone()));
    assert!(rejected(&t).contains("both whole and in chunks"));

    // The AES key wrapped for somebody else (a different AES key).
    let mut t = items.clone();
    let other = guest_key()
        .to_public_key()
        .encrypt(&mut rng(), Pkcs1v15Encrypt, &[9u8; 32])
        .unwrap();
    set_value(&mut t, keys::SHARED_AES_KEY, STANDARD.encode(other));
    let message = rejected(&t);
    assert!(
        message.contains("checksum mismatch") || message.contains("does not decrypt"),
        "{message}"
    );

    // Garbage instead of ciphertext.
    let mut t = items.clone();
    set_value(&mut t, "hlvmm.data.guest_la_pw", "AAAA".to_owned());
    assert!(rejected(&t).contains("not an IV plus whole AES blocks"));
}

#[test]
fn tampering_messages_never_carry_plaintext() {
    let mut items = sample_items();
    set_value(&mut items, keys::CHECKSUM, "x".to_owned());
    let message = rejected(&items);
    assert!(!message.contains("secret-pw") && !message.contains("web-01"));
}

// ---------------------------------------------------------------------------------------------
// States
// ---------------------------------------------------------------------------------------------

#[test]
fn states_parse_and_display() {
    for state in [
        HostState::WaitingForPublicKey,
        HostState::ProvisioningDataPublished,
    ] {
        assert_eq!(state.to_string().parse::<HostState>().unwrap(), state);
        assert_eq!(state.item().key, keys::HOST_STATE);
        assert_eq!(state.item().value, state.as_str());
    }
    for state in [
        GuestState::WaitingForAesKey,
        GuestState::Applying,
        GuestState::ProvisioningApplied,
        GuestState::ProvisioningFailed,
    ] {
        assert_eq!(state.to_string().parse::<GuestState>().unwrap(), state);
    }
    assert_eq!(
        HostState::WaitingForPublicKey.to_string(),
        "waitingforpublickey"
    );
    assert_eq!(
        HostState::ProvisioningDataPublished.as_str(),
        "provisioningdatapublished"
    );
    assert_eq!(
        "waitingforaeskey\0\0".parse::<GuestState>().unwrap(),
        GuestState::WaitingForAesKey
    );
    assert_eq!(
        " ProvisioningApplied\r\n".parse::<GuestState>().unwrap(),
        GuestState::ProvisioningApplied
    );
    assert!(GuestState::ProvisioningFailed.is_final());
    assert!(!GuestState::Applying.is_final());
    let err = "rebooting".parse::<GuestState>().unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown value \"rebooting\" for hlvmm.meta.guest_provisioning_system_state"
    );
    assert!("".parse::<HostState>().is_err());
    assert_eq!(
        kvp::version_item("2.4.0"),
        KvpItem::new("hlvmm.meta.version", "2.4.0")
    );
    assert_eq!(keys::GUEST_ERROR, "hlvmm.meta.guest_provisioning_error");
    assert_eq!(
        keys::GUEST_PUBLIC_KEY,
        "hlvmm.meta.guest_provisioning_public_key"
    );
}
