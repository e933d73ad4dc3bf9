//! The simulated guest agent: the guest side of the KVP provisioning handshake
//! (see [`crate::kvp`] for the protocol).
//!
//! The agent is a state machine driven by KVP changes. [`GuestAgent::step`] looks at the VM's
//! host-to-guest pool, makes at most one protocol move (writing to the guest-to-host pool and,
//! when applying, to the VM's guest information and NIC addresses) and reports whether it did;
//! [`GuestAgent::drive`] steps until nothing changes. It acts only while the VM is Running with
//! the "Key-Value Pair Exchange" integration service enabled, as a real guest would.
//!
//! Like the existing agents, it ignores the host until `hlvmm.meta.version` equals its own
//! agent version (a mismatch leaves it silent, which the host sees as a timeout), and it runs
//! the handshake once per lifetime ([`GuestAgent::rearm`] starts over).
//!
//! Keys: generating RSA-2048 keys is slow in debug builds, so by default every agent in the
//! process uses one key generated on first use ([`KeySource::Shared`], [`shared_key`]). A test
//! can inject its own ([`KeySource::Fixed`]) or ask for a fresh key per handshake
//! ([`KeySource::Generate`]).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rsa::{Pkcs1v15Encrypt, RsaPrivateKey};

use crate::error::{Error, Result};
use crate::kvp::{self, KeyFormat};
use crate::model::{AppliedProvisioning, OsFamily, SimVm};

/// Where an agent gets its RSA key pair. `Debug` never prints key material.
#[derive(Clone, Default)]
pub enum KeySource {
    /// One key per process, generated on first use ([`shared_key`]).
    #[default]
    Shared,
    /// This key.
    Fixed(Arc<RsaPrivateKey>),
    /// A fresh RSA-2048 key for every handshake (slow in debug builds).
    Generate,
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Shared => "Shared",
            Self::Fixed(_) => "Fixed(***)",
            Self::Generate => "Generate",
        })
    }
}

static SHARED_KEY: Mutex<Option<Arc<RsaPrivateKey>>> = Mutex::new(None);

/// The process-wide simulator key: RSA-2048, generated once on first use.
pub fn shared_key() -> Result<Arc<RsaPrivateKey>> {
    let mut slot = SHARED_KEY.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(key) = slot.as_ref() {
        return Ok(Arc::clone(key));
    }
    let key = Arc::new(generate_key()?);
    *slot = Some(Arc::clone(&key));
    Ok(key)
}

fn generate_key() -> Result<RsaPrivateKey> {
    RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048)
        .map_err(|e| Error::Kvp(format!("RSA key generation failed: {e}")))
}

#[cfg(test)]
#[allow(clippy::expect_used)]
pub(crate) fn shared_test_key() -> Arc<RsaPrivateKey> {
    shared_key().expect("RSA key generation")
}

/// Where the agent is in the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentPhase {
    /// Waiting for the host to ask for the public key.
    WaitingForHost,
    /// Public key published; waiting for the host's data.
    WaitingForData,
    /// Reported `applying`; the next step decrypts and applies.
    Applying,
    /// Applied successfully.
    Applied,
    /// Failed with this reason (also published in `hlvmm.meta.guest_provisioning_error`).
    Failed(String),
    /// The host's version did not match; the agent stays silent (as real agents exit).
    VersionMismatch {
        /// The version the host published (`None` when missing).
        host: Option<String>,
    },
}

/// A simulated guest agent for one VM. `Debug` never prints key material.
#[derive(Clone)]
pub struct GuestAgent {
    os: OsFamily,
    version: Option<String>,
    keys: KeySource,
    phase: AgentPhase,
    key: Option<Arc<RsaPrivateKey>>,
    reported: Vec<String>,
}

impl std::fmt::Debug for GuestAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestAgent")
            .field("os", &self.os)
            .field("version", &self.version)
            .field("keys", &self.keys)
            .field("phase", &self.phase)
            .field("has_key", &self.key.is_some())
            .field("reported", &self.reported)
            .finish()
    }
}

impl GuestAgent {
    /// An agent for a guest of `os` whose agent version is `version` (`None` accepts any
    /// `hlvmm.meta.version`).
    pub fn new(os: OsFamily, version: Option<String>, keys: KeySource) -> Self {
        Self {
            os,
            version,
            keys,
            phase: AgentPhase::WaitingForHost,
            key: None,
            reported: Vec::new(),
        }
    }

    /// The current phase.
    pub fn phase(&self) -> &AgentPhase {
        &self.phase
    }

    /// Every guest state this agent has reported, in order.
    pub fn reported_states(&self) -> &[String] {
        &self.reported
    }

    /// The key format this agent publishes.
    pub fn key_format(&self) -> KeyFormat {
        KeyFormat::for_os(self.os)
    }

    /// Starts over (as after re-imaging the guest agent): forgets the key and the outcome.
    pub fn rearm(&mut self) {
        self.phase = AgentPhase::WaitingForHost;
        self.key = None;
    }

    fn report(&mut self, vm: &mut SimVm, state: &str) {
        vm.kvp
            .guest_to_host
            .insert(kvp::GUEST_STATE.to_owned(), state.to_owned());
        self.reported.push(state.to_owned());
    }

    /// Makes at most one protocol move; returns whether anything changed.
    pub fn step(&mut self, vm: &mut SimVm) -> bool {
        if !vm.kvp_reachable() {
            return false;
        }
        let host_state = vm
            .kvp
            .host_to_guest
            .get(kvp::HOST_STATE)
            .map(|s| s.trim().to_owned());
        match self.phase.clone() {
            AgentPhase::WaitingForHost => {
                if host_state.as_deref() != Some(kvp::WAITING_FOR_PUBLIC_KEY) {
                    return false;
                }
                let host_version = vm.kvp.host_to_guest.get(kvp::VERSION).map(|v| {
                    v.trim_matches(|c: char| c.is_whitespace() || c == '\0')
                        .to_owned()
                });
                let matches = match (&self.version, &host_version) {
                    (None, Some(_)) => true,
                    (Some(mine), Some(theirs)) => mine.trim() == theirs,
                    (_, None) => false,
                };
                if !matches {
                    self.phase = AgentPhase::VersionMismatch { host: host_version };
                    return true;
                }
                match self.publish_key(vm) {
                    Ok(()) => {
                        vm.kvp.guest_to_host.remove(kvp::GUEST_ERROR);
                        self.report(vm, kvp::WAITING_FOR_AES_KEY);
                        self.phase = AgentPhase::WaitingForData;
                    }
                    Err(e) => self.fail(vm, e.to_string()),
                }
                true
            }
            AgentPhase::WaitingForData => {
                if host_state.as_deref() != Some(kvp::PROVISIONING_DATA_PUBLISHED) {
                    return false;
                }
                self.report(vm, kvp::APPLYING);
                self.phase = AgentPhase::Applying;
                true
            }
            AgentPhase::Applying => {
                match self.apply(vm) {
                    Ok(applied) => {
                        vm.guest.applied = Some(applied);
                        self.report(vm, kvp::PROVISIONING_APPLIED);
                        self.phase = AgentPhase::Applied;
                    }
                    Err(reason) => self.fail(vm, reason),
                }
                true
            }
            AgentPhase::Applied | AgentPhase::Failed(_) | AgentPhase::VersionMismatch { .. } => {
                false
            }
        }
    }

    /// Steps until nothing changes; returns the number of moves made.
    pub fn drive(&mut self, vm: &mut SimVm) -> usize {
        let mut moves = 0;
        // Bounded: a full handshake is four moves.
        while moves < 16 && self.step(vm) {
            moves += 1;
        }
        moves
    }

    fn fail(&mut self, vm: &mut SimVm, reason: String) {
        vm.kvp
            .guest_to_host
            .insert(kvp::GUEST_ERROR.to_owned(), reason.clone());
        self.report(vm, kvp::PROVISIONING_FAILED);
        self.phase = AgentPhase::Failed(reason);
    }

    fn publish_key(&mut self, vm: &mut SimVm) -> Result<()> {
        let key = match &self.keys {
            KeySource::Shared => shared_key()?,
            KeySource::Fixed(key) => Arc::clone(key),
            KeySource::Generate => Arc::new(generate_key()?),
        };
        let public = kvp::encode_public_key(&key.to_public_key(), self.key_format())?;
        vm.kvp
            .guest_to_host
            .insert(kvp::GUEST_PUBLIC_KEY.to_owned(), public);
        self.key = Some(key);
        Ok(())
    }

    /// Unwraps the AES key, decrypts and reassembles the data, checks the checksum and applies
    /// the result to the VM. Reasons never contain data values.
    fn apply(&self, vm: &mut SimVm) -> std::result::Result<AppliedProvisioning, String> {
        let pool = &vm.kvp.host_to_guest;
        let key = self
            .key
            .as_ref()
            .ok_or_else(|| "no private key (the public key was never published)".to_owned())?;
        let wrapped = pool
            .get(kvp::SHARED_AES_KEY)
            .ok_or_else(|| format!("{} is missing", kvp::SHARED_AES_KEY))?;
        let wrapped: String = wrapped.chars().filter(|c| !c.is_whitespace()).collect();
        let wrapped = STANDARD
            .decode(wrapped)
            .map_err(|_| format!("{} is not base64", kvp::SHARED_AES_KEY))?;
        let aes_key = key.decrypt(Pkcs1v15Encrypt, &wrapped).map_err(|_| {
            format!(
                "{} cannot be unwrapped with the guest key",
                kvp::SHARED_AES_KEY
            )
        })?;
        let aes_key: [u8; 32] = aes_key.as_slice().try_into().map_err(|_| {
            format!(
                "the shared AES key is {} bytes; expected 32 (AES-256)",
                aes_key.len()
            )
        })?;

        let values = decrypt_data(pool, &aes_key)?;
        if values.is_empty() {
            return Err("no hlvmm.data items were published".to_owned());
        }
        let expected = pool
            .get(kvp::CHECKSUM)
            .map(|c| c.trim().to_owned())
            .ok_or_else(|| format!("{} is missing", kvp::CHECKSUM))?;
        if kvp::checksum(&values) != expected {
            return Err(format!(
                "checksum mismatch: {} does not match the decrypted data",
                kvp::CHECKSUM
            ));
        }
        apply_values(vm, self.os, &values)
    }
}

/// Decrypts every `hlvmm.data.*` item, reassembling chunked values. Keys in the result are the
/// base names.
fn decrypt_data(
    pool: &BTreeMap<String, String>,
    aes_key: &[u8; 32],
) -> std::result::Result<BTreeMap<String, String>, String> {
    let mut whole: BTreeMap<&str, &str> = BTreeMap::new();
    let mut chunked: BTreeMap<&str, BTreeMap<usize, &str>> = BTreeMap::new();
    for (key, value) in pool.range(kvp::DATA_PREFIX.to_owned()..) {
        if !key.starts_with(kvp::DATA_PREFIX) {
            break;
        }
        match kvp::parse_chunk_key(key) {
            (base, Some(index)) => {
                chunked.entry(base).or_default().insert(index, value);
            }
            (base, None) => {
                whole.insert(base, value);
            }
        }
    }
    let mut values = BTreeMap::new();
    for (base, value) in &whole {
        if chunked.contains_key(base) {
            return Err(format!("{base} is published both whole and in chunks"));
        }
        let plain = kvp::decrypt_value(aes_key, value).map_err(|e| format!("{base}: {e}"))?;
        values.insert((*base).to_owned(), plain);
    }
    for (base, chunks) in &chunked {
        if chunks.len() > kvp::MAX_CHUNKS {
            return Err(format!(
                "{base} has {} chunks (at most {})",
                chunks.len(),
                kvp::MAX_CHUNKS
            ));
        }
        let mut plain = String::new();
        for (expected, (index, value)) in chunks.iter().enumerate() {
            if *index != expected {
                return Err(format!("missing chunk {expected} of {base}"));
            }
            let piece = kvp::decrypt_value(aes_key, value)
                .map_err(|e| format!("chunk {index} of {base}: {e}"))?;
            plain.push_str(&piece);
        }
        values.insert((*base).to_owned(), plain);
    }
    Ok(values)
}

fn field<'a>(values: &'a BTreeMap<String, String>, name: &str) -> Option<&'a str> {
    values
        .get(&format!("{}{name}", kvp::DATA_PREFIX))
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
}

fn parse_ipv4(
    values: &BTreeMap<String, String>,
    name: &str,
) -> std::result::Result<Option<Ipv4Addr>, String> {
    field(values, name)
        .map(|v| {
            v.parse::<Ipv4Addr>()
                .map_err(|_| format!("{}{name} is not an IPv4 address", kvp::DATA_PREFIX))
        })
        .transpose()
}

fn valid_hostname(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.bytes().all(|b| b.is_ascii_digit())
}

/// Applies the decrypted fields the existing agents understand (`guest_host_name`,
/// `guest_v4_ip_addr`/`_cidr_prefix`/`_default_gw`/`dns1`/`dns2`, `guest_net_dns_suffix`,
/// `guest_la_uid`/`_pw`, `guest_domain_join_*` on Windows, `ansible_ssh_user`/`_key` on Linux).
fn apply_values(
    vm: &mut SimVm,
    os: OsFamily,
    values: &BTreeMap<String, String>,
) -> std::result::Result<AppliedProvisioning, String> {
    let mut applied = AppliedProvisioning {
        keys: values.keys().cloned().collect(),
        ..AppliedProvisioning::default()
    };
    if let Some(name) = field(values, "guest_host_name") {
        if !valid_hostname(name) {
            return Err(format!(
                "{}guest_host_name is not a valid host name",
                kvp::DATA_PREFIX
            ));
        }
        applied.hostname = Some(name.to_owned());
    }
    if let Some(ip) = parse_ipv4(values, "guest_v4_ip_addr")? {
        let prefix = field(values, "guest_v4_cidr_prefix")
            .and_then(|p| p.parse::<u8>().ok())
            .filter(|p| (1..=32).contains(p))
            .ok_or_else(|| {
                format!(
                    "{}guest_v4_cidr_prefix must be 1..32 when an address is given",
                    kvp::DATA_PREFIX
                )
            })?;
        applied.ipv4 = Some(format!("{ip}/{prefix}"));
        applied.gateway = parse_ipv4(values, "guest_v4_default_gw")?.map(|g| g.to_string());
        for dns in ["guest_v4_dns1", "guest_v4_dns2"] {
            if let Some(server) = parse_ipv4(values, dns)? {
                applied.dns_servers.push(server.to_string());
            }
        }
        if vm.nics.is_empty() {
            return Err("a static address was given but the VM has no network adapter".to_owned());
        }
    }
    applied.dns_suffix = field(values, "guest_net_dns_suffix").map(str::to_owned);
    if let Some(user) = field(values, "guest_la_uid") {
        if field(values, "guest_la_pw").is_none() {
            return Err(format!(
                "{}guest_la_uid is set without {}guest_la_pw",
                kvp::DATA_PREFIX,
                kvp::DATA_PREFIX
            ));
        }
        applied.local_admin = Some(user.to_owned());
    }
    if os == OsFamily::Windows
        && let Some(domain) = field(values, "guest_domain_join_target")
    {
        for required in ["guest_domain_join_uid", "guest_domain_join_pw"] {
            if field(values, required).is_none() {
                return Err(format!(
                    "domain join requested without {}{required}",
                    kvp::DATA_PREFIX
                ));
            }
        }
        applied.domain = Some(domain.to_owned());
    }
    if os == OsFamily::Linux {
        applied.ssh_user = field(values, "ansible_ssh_user").map(str::to_owned);
    }

    // Everything validated: change the VM.
    if let Some(name) = &applied.hostname {
        vm.guest.hostname = name.clone();
        let suffix = applied
            .dns_suffix
            .clone()
            .or_else(|| applied.domain.clone())
            .or_else(|| {
                vm.kvp
                    .guest_intrinsic
                    .get("FullyQualifiedDomainName")
                    .and_then(|f| f.split_once('.').map(|(_, d)| d.to_owned()))
            });
        let fqdn = match suffix {
            Some(d) if !d.is_empty() => format!("{name}.{d}"),
            _ => name.clone(),
        };
        vm.kvp
            .guest_intrinsic
            .insert("FullyQualifiedDomainName".to_owned(), fqdn);
    }
    if let (Some(ipv4), Some(nic)) = (&applied.ipv4, vm.nics.first_mut()) {
        let address = ipv4.split('/').next().unwrap_or(ipv4).to_owned();
        nic.ip_addresses = vec![address];
    }
    Ok(applied)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::generate::{FleetSpec, SIM_AGENT_VERSION};
    use crate::host_role;
    use crate::model::{Fleet, NewVm, PowerAction};
    use crate::state::SimState;

    const HOST: &str = "hv01";

    fn state_with_vm(image: &str) -> SimState {
        let fleet = Fleet::generate(FleetSpec::new(1, 2)).unwrap();
        let mut state = SimState::new(fleet, KeySource::Fixed(shared_test_key()));
        let now = FleetSpec::default().epoch;
        state
            .create_vm(HOST, &NewVm::new("new-01", image), now)
            .unwrap();
        state
            .power(HOST, "new-01", PowerAction::Start, now)
            .unwrap();
        state
    }

    fn guest_item(state: &SimState, key: &str) -> Option<String> {
        state
            .fleet()
            .vm(HOST, "new-01")
            .unwrap()
            .kvp
            .guest_to_host
            .get(key)
            .cloned()
    }

    fn set_all(state: &mut SimState, items: &[(String, String)]) {
        for (k, v) in items {
            state.set_host_kvp(HOST, "new-01", k, v).unwrap();
        }
    }

    fn data() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("guest_host_name".to_owned(), "web-77".to_owned()),
            ("guest_la_uid".to_owned(), "admin".to_owned()),
            ("guest_la_pw".to_owned(), "P@ssw0rd-not-logged".to_owned()),
            ("guest_v4_ip_addr".to_owned(), "10.20.30.40".to_owned()),
            ("guest_v4_cidr_prefix".to_owned(), "24".to_owned()),
            ("guest_v4_default_gw".to_owned(), "10.20.30.1".to_owned()),
            ("guest_v4_dns1".to_owned(), "10.20.0.53".to_owned()),
            ("guest_net_dns_suffix".to_owned(), "corp.example".to_owned()),
            ("guest_domain_join_target".to_owned(), String::new()),
            // Over 100 characters: travels in chunks.
            (
                "ansible_ssh_key".to_owned(),
                format!("ssh-ed25519 {} ansible@ctl", "A".repeat(240)),
            ),
            ("ansible_ssh_user".to_owned(), "ansible".to_owned()),
        ])
    }

    /// Runs the handshake up to the guest's public key and returns it.
    fn start_handshake(state: &mut SimState) -> String {
        set_all(state, &host_role::begin_items(SIM_AGENT_VERSION));
        assert_eq!(
            guest_item(state, kvp::GUEST_STATE).as_deref(),
            Some(kvp::WAITING_FOR_AES_KEY)
        );
        guest_item(state, kvp::GUEST_PUBLIC_KEY).unwrap()
    }

    fn agent_states(state: &SimState) -> Vec<String> {
        let id = state.fleet().vm(HOST, "new-01").unwrap().id;
        state.agent(id).unwrap().reported_states().to_vec()
    }

    #[test]
    fn handshake_applies_for_both_key_formats() {
        for (image, format, os) in [
            (
                "Windows Server 2022 Datacenter",
                KeyFormat::CapiPublicKeyBlob,
                OsFamily::Windows,
            ),
            ("Ubuntu 24.04 LTS", KeyFormat::Pkcs1Der, OsFamily::Linux),
        ] {
            let mut state = state_with_vm(image);
            let public = start_handshake(&mut state);
            let (key, detected) = kvp::decode_public_key(&public).unwrap();
            assert_eq!(detected, format);
            assert_eq!(key, shared_test_key().to_public_key());

            let items = host_role::publish_items(&public, &data()).unwrap();
            assert!(
                items
                    .iter()
                    .any(|(k, _)| k == "hlvmm.data.ansible_ssh_key._2")
            );
            assert!(!items.iter().any(|(k, _)| k == "hlvmm.data.ansible_ssh_key"));
            assert!(
                !items
                    .iter()
                    .any(|(k, _)| k.contains("guest_domain_join_target"))
            );
            set_all(&mut state, &items);

            assert_eq!(
                guest_item(&state, kvp::GUEST_STATE).as_deref(),
                Some(kvp::PROVISIONING_APPLIED)
            );
            assert_eq!(
                agent_states(&state),
                [
                    kvp::WAITING_FOR_AES_KEY,
                    kvp::APPLYING,
                    kvp::PROVISIONING_APPLIED
                ]
            );
            assert_eq!(guest_item(&state, kvp::GUEST_ERROR), None);
            let vm = state.fleet().vm(HOST, "new-01").unwrap();
            assert_eq!(vm.guest.hostname, "web-77");
            assert_eq!(vm.nics[0].ip_addresses, ["10.20.30.40"]);
            assert_eq!(
                vm.kvp
                    .guest_intrinsic
                    .get("FullyQualifiedDomainName")
                    .map(String::as_str),
                Some("web-77.corp.example")
            );
            let applied = vm.guest.applied.clone().unwrap();
            assert_eq!(applied.ipv4.as_deref(), Some("10.20.30.40/24"));
            assert_eq!(applied.gateway.as_deref(), Some("10.20.30.1"));
            assert_eq!(applied.local_admin.as_deref(), Some("admin"));
            assert_eq!(
                applied.ssh_user.as_deref(),
                if os == OsFamily::Linux {
                    Some("ansible")
                } else {
                    None
                }
            );
            assert!(
                applied
                    .keys
                    .contains(&"hlvmm.data.ansible_ssh_key".to_owned())
            );
            // Nothing the guest wrote contains the password.
            assert!(
                vm.kvp
                    .guest_to_host
                    .values()
                    .all(|v| !v.contains("P@ssw0rd"))
            );
        }
    }

    #[test]
    fn wrong_checksum_fails_with_a_reason() {
        let mut state = state_with_vm("Ubuntu 24.04 LTS");
        let public = start_handshake(&mut state);
        let mut items = host_role::publish_items(&public, &data()).unwrap();
        for (k, v) in &mut items {
            if k == kvp::CHECKSUM {
                *v = kvp::checksum(&BTreeMap::from([("x".to_owned(), "y".to_owned())]));
            }
        }
        set_all(&mut state, &items);
        assert_eq!(
            guest_item(&state, kvp::GUEST_STATE).as_deref(),
            Some(kvp::PROVISIONING_FAILED)
        );
        let error = guest_item(&state, kvp::GUEST_ERROR).unwrap();
        assert!(error.contains("checksum mismatch"), "{error}");
        let vm = state.fleet().vm(HOST, "new-01").unwrap();
        assert!(vm.guest.applied.is_none());
        assert_ne!(vm.guest.hostname, "web-77");
    }

    #[test]
    fn debug_output_has_no_key_material() {
        let agent = GuestAgent::new(OsFamily::Linux, None, KeySource::Fixed(shared_test_key()));
        let text = format!("{agent:?}");
        assert!(text.contains("Fixed(***)"), "{text}");
        assert!(!text.contains("BigUint") && text.len() < 400, "{text}");
    }

    #[test]
    fn missing_chunk_fails() {
        let mut state = state_with_vm("Windows Server 2025 Datacenter");
        let public = start_handshake(&mut state);
        let items: Vec<(String, String)> = host_role::publish_items(&public, &data())
            .unwrap()
            .into_iter()
            .filter(|(k, _)| k != "hlvmm.data.ansible_ssh_key._1")
            .collect();
        set_all(&mut state, &items);
        assert_eq!(
            guest_item(&state, kvp::GUEST_STATE).as_deref(),
            Some(kvp::PROVISIONING_FAILED)
        );
        let error = guest_item(&state, kvp::GUEST_ERROR).unwrap();
        assert_eq!(error, "missing chunk 1 of hlvmm.data.ansible_ssh_key");
    }

    #[test]
    fn guest_waits_while_off_and_ignores_wrong_versions() {
        let fleet = Fleet::generate(FleetSpec::new(1, 1)).unwrap();
        let mut state = SimState::new(fleet, KeySource::Fixed(shared_test_key()));
        let now = FleetSpec::default().epoch;
        state
            .create_vm(HOST, &NewVm::new("new-01", "Rocky Linux 9"), now)
            .unwrap();
        // Written while the VM is off: nothing happens until it starts.
        set_all(&mut state, &host_role::begin_items(SIM_AGENT_VERSION));
        assert_eq!(guest_item(&state, kvp::GUEST_STATE), None);
        state
            .power(HOST, "new-01", PowerAction::Start, now)
            .unwrap();
        assert_eq!(
            guest_item(&state, kvp::GUEST_STATE).as_deref(),
            Some(kvp::WAITING_FOR_AES_KEY)
        );

        let mut other = state_with_vm("Ubuntu 24.04 LTS");
        set_all(&mut other, &host_role::begin_items("9.9.9"));
        assert_eq!(guest_item(&other, kvp::GUEST_STATE), None);
        let id = other.fleet().vm(HOST, "new-01").unwrap().id;
        assert_eq!(
            other.agent(id).unwrap().phase(),
            &AgentPhase::VersionMismatch {
                host: Some("9.9.9".to_owned())
            }
        );
    }

    #[test]
    fn invalid_data_is_rejected_without_echoing_values() {
        let mut state = state_with_vm("Ubuntu 24.04 LTS");
        let public = start_handshake(&mut state);
        let mut bad = data();
        bad.insert(
            "guest_v4_ip_addr".to_owned(),
            "999.1.1.1-secretish".to_owned(),
        );
        set_all(
            &mut state,
            &host_role::publish_items(&public, &bad).unwrap(),
        );
        let error = guest_item(&state, kvp::GUEST_ERROR).unwrap();
        assert_eq!(error, "hlvmm.data.guest_v4_ip_addr is not an IPv4 address");
        assert!(!error.contains("secretish"));
    }
}
