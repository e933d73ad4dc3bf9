//! The parsers that read what hosts, guests and users send, as fuzz targets.
//!
//! Each [`Target`] feeds arbitrary bytes to one family of parsers, exactly as the product
//! calls them. A target must never panic, allocate without bound or run for long: every parser
//! answers malformed input with a typed error. Two ways to run them:
//!
//! - **cargo-fuzz** (nightly, libFuzzer with coverage): `cargo +nightly fuzz run
//!   --fuzz-dir aetherv-fuzz <target>`; the binaries are under `fuzz_targets/` and need the
//!   `libfuzzer` feature, which `cargo fuzz` turns on.
//! - **stable**, in the test command (`tests/stable.rs`): each target's seeds ([`Target::seeds`]:
//!   the repository's fixtures and messages built by our own encoders, plus anything cargo-fuzz
//!   saved under `aetherv-fuzz/corpus/<target>/`), then a bounded number of inputs derived from
//!   them (bit flips, truncations, splices, repeats) and of random bytes, from a fixed seed. It
//!   prints each target's slowest input.

use std::path::{Path, PathBuf};

use aetherv_hyperv::ops::HostCall;
use aetherv_winrm::envelope::{self, ResponseKind};
use aetherv_winrm::ntlm::{
    AcceptorIdentity, AcceptorInputs, AuthenticateInputs, NtlmAcceptor, NtlmCredentials,
    NtlmInitiator,
};
use aetherv_winrm::{Secret, clixml, framing};

/// One family of parsers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// NTLM NEGOTIATE, CHALLENGE and AUTHENTICATE messages, on both sides.
    NtlmMessages,
    /// WS-Man SOAP envelopes: requests (server side), responses and faults (client side).
    WsmanEnvelopes,
    /// The `multipart/encrypted` framing of sealed WinRM messages.
    MultipartFraming,
    /// CLIXML error streams.
    Clixml,
    /// The JSON our host scripts print (the result wrapper, host facts and the inventory).
    PowershellJson,
    /// KVP key formats and guest-reported items.
    KvpKeys,
    /// The provisioning request body (JSON or YAML, nested or flat).
    ProvisioningBody,
    /// The `HOSTS_FILE` fleet description.
    HostsFile,
}

impl Target {
    /// Every target.
    pub const ALL: [Target; 8] = [
        Target::NtlmMessages,
        Target::WsmanEnvelopes,
        Target::MultipartFraming,
        Target::Clixml,
        Target::PowershellJson,
        Target::KvpKeys,
        Target::ProvisioningBody,
        Target::HostsFile,
    ];

    /// The cargo-fuzz binary and corpus directory name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Target::NtlmMessages => "ntlm_messages",
            Target::WsmanEnvelopes => "wsman_envelopes",
            Target::MultipartFraming => "multipart_framing",
            Target::Clixml => "clixml",
            Target::PowershellJson => "powershell_json",
            Target::KvpKeys => "kvp_keys",
            Target::ProvisioningBody => "provisioning_body",
            Target::HostsFile => "hosts_file",
        }
    }

    /// Feeds `data` to the target's parsers. Errors are expected; a panic is a bug.
    pub fn run(self, data: &[u8]) {
        match self {
            Target::NtlmMessages => ntlm(data),
            Target::WsmanEnvelopes => wsman(data),
            Target::MultipartFraming => {
                let _ = framing::decode(data);
            }
            Target::Clixml => {
                let _ = clixml::is_clixml(data);
                let _ = clixml::decode(data);
            }
            Target::PowershellJson => powershell_json(data),
            Target::KvpKeys => kvp(data),
            Target::ProvisioningBody => provisioning_body(data),
            Target::HostsFile => hosts_file(data),
        }
    }

    /// Valid inputs to start from: fixtures in the repository, messages our own encoders
    /// build, and the saved corpus under `aetherv-fuzz/corpus/<name>/`.
    #[must_use]
    pub fn seeds(self) -> Vec<Vec<u8>> {
        let root = repository_root();
        let mut seeds = match self {
            Target::NtlmMessages => ntlm_seeds(),
            Target::WsmanEnvelopes => {
                let mut s = files_in(&root.join("aetherv-winrm/tests/fixtures/requests"));
                s.extend(files_in(&root.join("aetherv-winrm/tests/fixtures/responses")));
                s
            }
            Target::MultipartFraming => {
                vec![framing::encode(&[7; 16], b"sealed soap body", 16)]
            }
            Target::Clixml => files_in(&root.join("aetherv-winrm/tests/fixtures/clixml")),
            Target::PowershellJson => files_in(&root.join("aetherv-hyperv/tests/fixtures/psjson")),
            Target::KvpKeys => vec![
                b"hlvmm.data.guest_hostname._2\nhlvmm.meta.guest_provisioning_system_state=waitingforaeskey".to_vec(),
                b"hlvmm.meta.guest_provisioning_public_key=BgIAAACkAABSU0Ex".to_vec(),
            ],
            Target::ProvisioningBody => vec![
                br#"{"vm": {"name": "web-01", "gb_ram": 4, "cpu_cores": 2}, "image_name": "ubuntu-24.04", "guest_config": {"guest_la_uid": "admin", "guest_la_pw": "x"}}"#.to_vec(),
                b"vm_name: web-01\nimage_name: ubuntu\ngb_ram: 4\ncpu_cores: 2\nguest_la_uid: admin\nguest_la_pw: x\n".to_vec(),
            ],
            Target::HostsFile => vec![
                b"defaults: {port: 5986, use_tls: true}\nclusters:\n  - name: c1\n    hosts: [hv01, {name: hv02, transport: ntlm}]\nhosts: [hv03]\n".to_vec(),
                b"hosts:\n  - name: hv01\n    networks: [{name: prod, switch: vSwitch, vlan_id: 20}]\n    storage_classes: [{name: fast, path: 'C:\\\\VMs'}]\n".to_vec(),
            ],
        };
        seeds.extend(files_in(
            &root.join("aetherv-fuzz/corpus").join(self.name()),
        ));
        seeds
    }
}

/// The workspace root (this crate's parent directory).
fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// The contents of every regular file directly in `dir` (none when it does not exist).
fn files_in(dir: &Path) -> Vec<Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    paths.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

fn identity() -> AcceptorIdentity {
    AcceptorIdentity {
        netbios_domain: "LAB".into(),
        netbios_computer: "HV01".into(),
        dns_domain: "lab.example".into(),
        dns_computer: "hv01.lab.example".into(),
    }
}

fn acceptor() -> NtlmAcceptor {
    NtlmAcceptor::new(
        identity(),
        AcceptorInputs {
            server_challenge: [1; 8],
            timestamp: 133_000_000_000_000_000,
        },
    )
}

fn authenticate_inputs() -> AuthenticateInputs {
    AuthenticateInputs {
        client_challenge: [2; 8],
        exported_session_key: [3; 16],
        timestamp: 133_000_000_000_000_000,
    }
}

fn initiator() -> NtlmInitiator {
    NtlmInitiator::new(
        NtlmCredentials::parse("LAB\\admin", Secret::new("S3cret!")),
        None,
    )
}

/// NEGOTIATE, CHALLENGE and AUTHENTICATE of one good handshake, each prefixed with the
/// selector byte [`ntlm`] reads.
fn ntlm_seeds() -> Vec<Vec<u8>> {
    let mut client = initiator();
    let negotiate = client.negotiate_message();
    let mut server = acceptor();
    let Ok(challenge) = server.challenge_message(&negotiate) else {
        return Vec::new();
    };
    let Ok((authenticate, _)) = client.authenticate_message(&challenge, &authenticate_inputs())
    else {
        return Vec::new();
    };
    [(0_u8, negotiate), (1, challenge), (2, authenticate)]
        .into_iter()
        .map(|(selector, message)| {
            let mut seed = vec![selector];
            seed.extend_from_slice(&message);
            seed
        })
        .collect()
}

/// The first byte chooses the side: 0 the server reading NEGOTIATE, 1 the client reading
/// CHALLENGE, 2 the server reading AUTHENTICATE after a good NEGOTIATE.
fn ntlm(data: &[u8]) {
    let Some((selector, message)) = data.split_first() else {
        return;
    };
    match selector % 3 {
        0 => {
            let _ = acceptor().challenge_message(message);
        }
        1 => {
            let _ = initiator().authenticate_message(message, &authenticate_inputs());
        }
        _ => {
            let mut client = initiator();
            let mut server = acceptor();
            if server
                .challenge_message(&client.negotiate_message())
                .is_ok()
            {
                let password = |_: &str, _: &str| Some(Secret::new("S3cret!"));
                let _ = server.accept(message, &password);
            }
        }
    }
}

fn wsman(data: &[u8]) {
    let _ = envelope::parse_request(data);
    for kind in [
        ResponseKind::Create,
        ResponseKind::Delete,
        ResponseKind::Command,
        ResponseKind::Send,
        ResponseKind::Receive,
        ResponseKind::Signal,
    ] {
        let _ = envelope::parse_response(kind, data);
    }
    let _ = envelope::parse_fault(data);
}

fn powershell_json(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = aetherv_hyperv::protocol::parse_result("Get-Inventory", &text);
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = HostCall::Facts.parse_reply("hv01", value.clone());
        let _ = HostCall::Inventory.parse_reply("hv01", value);
    }
}

/// Lines of `key=value` items as a guest reports them, and key names.
fn kvp(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut items = std::collections::BTreeMap::new();
    for line in text.lines() {
        let _ = aetherv_kvp::keys::split_chunk_name(line);
        let _ = aetherv_kvp::keys::data::for_schema_field(line);
        let (key, value) = line.split_once('=').unwrap_or((line, ""));
        let _ = aetherv_kvp::GuestPublicKey::parse(value);
        items.insert(key.to_owned(), value.to_owned());
    }
    let report = aetherv_kvp::host::GuestReport::read(&items);
    let _ = report.key_ready();
}

fn provisioning_body(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = aetherv_provision::schema::check_nesting(&text);
    for hint in [None, Some("application/json"), Some("application/yaml")] {
        let _ = aetherv_provision::schema::JobRequest::parse(&text, hint);
        let _ = aetherv_provision::schema::JobRequest::parse_flat(&text, hint);
    }
}

/// The server reads `HOSTS_FILE` from disk: the input goes to a file in the temp directory
/// (one per process and thread, overwritten each time).
fn hosts_file(data: &[u8]) {
    let path = std::env::temp_dir().join(format!(
        "aetherv-fuzz-hosts-{}-{:?}.yaml",
        std::process::id(),
        std::thread::current().id()
    ));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let hosts_file = path.to_string_lossy().into_owned();
    let env = move |name: &str| match name {
        "HOSTS_FILE" => Some(hosts_file.clone()),
        "WINRM_USERNAME" => Some("LAB\\svc".to_owned()),
        "WINRM_PASSWORD" => Some("pw".to_owned()),
        "AUTH_ENABLED" => Some("false".to_owned()),
        "ALLOW_DEV_AUTH" => Some("true".to_owned()),
        _ => None,
    };
    let _ = aetherv_server::config::Config::from_sources(&env, &std::env::temp_dir());
}
