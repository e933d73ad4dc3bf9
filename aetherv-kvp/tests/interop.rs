//! Interop test: our host side against an independent guest written with Python's
//! `cryptography` (OpenSSL) in `tests/interop/kvp_guest.py`. The guest generates its own key,
//! publishes it in both formats (PKCS#1 DER and a CAPI PUBLICKEYBLOB it lays out itself), and
//! decrypts our payload the way the existing agents do (each chunk on its own).
//!
//! Runs `$AETHERV_PYTHON` (default: the workspace's `.venv`, else `python3`). Python with the
//! `cryptography` module is required (`scripts/test` installs it into `.venv` as a dependency of
//! pyspnego): without it the test fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use aetherv_kvp::{DataValue, GuestPublicKey, KeyFormat, ProvisioningPayload};
use rand::SeedableRng;
use rand::rngs::StdRng;

fn python() -> String {
    if let Ok(python) = std::env::var("AETHERV_PYTHON") {
        return python;
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    if venv.exists() {
        venv.to_string_lossy().into_owned()
    } else {
        "python3".to_owned()
    }
}

fn guest(args: &[&str], stdin: Option<&str>) -> String {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/kvp_guest.py");
    let mut child = Command::new(python())
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start python; set AETHERV_PYTHON or run scripts/test");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "python guest failed (needs the `cryptography` module; run scripts/test or set \
         AETHERV_PYTHON): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn an_independent_guest_decrypts_our_payload_in_both_key_formats() {
    let long_key = format!("ssh-ed25519 {} ansible@ctl", "Zm9v".repeat(80));
    let values: Vec<(&str, DataValue)> = vec![
        ("guest_host_name", "web-01".into()),
        ("guest_la_uid", "Administrator".into()),
        ("guest_la_pw", DataValue::secret("Pässwörd|€😀 'quoted'")),
        ("ansible_ssh_key", long_key.as_str().into()),
        ("guest_v4_dns2", "".into()),
        ("guest_domain_join_ou", "é".repeat(150).into()),
    ];
    for (kind, format) in [
        ("pkcs1", KeyFormat::Pkcs1Der),
        ("capi", KeyFormat::CapiPublicKeyBlob),
    ] {
        let dir =
            std::env::temp_dir().join(format!("aetherv-kvp-interop-{}-{kind}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let dir_arg = dir.to_string_lossy().into_owned();

        let published = guest(&["keygen", kind, &dir_arg], None);
        let public = GuestPublicKey::parse(&published).unwrap();
        assert_eq!(public.format(), format);
        assert_eq!(public.bits(), 2048);

        let items =
            ProvisioningPayload::build(&values, &public, &mut StdRng::seed_from_u64(1)).unwrap();
        let input = serde_json::json!({ "items": items }).to_string();
        let answer: serde_json::Value =
            serde_json::from_str(&guest(&["decrypt", &dir_arg], Some(&input))).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();

        assert_eq!(answer["checksum_ok"], true, "{kind}: {answer}");
        let decrypted: BTreeMap<String, String> =
            serde_json::from_value(answer["values"].clone()).unwrap();
        let expected: BTreeMap<String, String> = values
            .iter()
            .filter(|(_, v)| !v.is_blank())
            .map(|(k, v)| ((*k).to_owned(), v.expose().to_owned()))
            .collect();
        assert_eq!(decrypted, expected, "{kind}");
    }
}
