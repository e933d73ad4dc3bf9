//! The simulated guest agent: a thin driver of [`aetherv_kvp::guest::Handshake`] (the one
//! implementation of the guest half of the KVP provisioning protocol) over a simulated VM's
//! KVP pools, plus what a guest OS does with the decrypted data.
//!
//! [`GuestAgent::step`] looks at the VM's host-to-guest pool, makes at most one protocol move
//! (writing to the guest-to-host pool and, when applying, to the VM's guest information and
//! NIC addresses) and reports whether it did; [`GuestAgent::drive`] steps until nothing
//! changes. It acts only while the VM is Running with the "Key-Value Pair Exchange"
//! integration service enabled, as a real guest would.
//!
//! Like the existing agents, it ignores the host until `hlvmm.meta.version` equals its own
//! agent version (a mismatch leaves it silent, which the host sees as a timeout), and it runs
//! the handshake once per lifetime ([`GuestAgent::rearm`] starts over). Windows guests
//! publish their key as a CAPI `PUBLICKEYBLOB`, Linux guests as PKCS#1 DER ([`key_format`]).
//!
//! Keys: generating RSA-2048 keys is slow in debug builds, so by default every agent in the
//! process uses one key generated on first use ([`KeySource::Shared`], [`shared_key`]). A test
//! can inject its own ([`KeySource::Fixed`]) or ask for a fresh key per handshake
//! ([`KeySource::Generate`]).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use aetherv_kvp::guest::{self as kvp_guest, GuestKey, GuestOutput, GuestStep, Handshake};
use aetherv_kvp::keys::{self, data};
use aetherv_kvp::{GuestState, HostState, KeyFormat, KvpItem, SecretText};
use rsa::RsaPrivateKey;

use crate::error::{Error, Result};
use crate::model::{AppliedProvisioning, OsFamily, SimVm};

/// The phase of a guest agent's handshake (the protocol crate's phases).
pub use aetherv_kvp::guest::Phase as AgentPhase;

/// Decrypted values by data name.
type Values = BTreeMap<String, SecretText>;

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
    let key = Arc::new(generate_key()?.rsa().clone());
    *slot = Some(Arc::clone(&key));
    Ok(key)
}

fn generate_key() -> Result<GuestKey> {
    GuestKey::generate(&mut rand::rngs::OsRng).map_err(Error::from)
}

#[cfg(test)]
#[allow(clippy::expect_used)]
pub(crate) fn shared_test_key() -> Arc<RsaPrivateKey> {
    shared_key().expect("RSA key generation")
}

/// The key format guests of `os` publish.
pub fn key_format(os: OsFamily) -> KeyFormat {
    match os {
        OsFamily::Windows => KeyFormat::CapiPublicKeyBlob,
        OsFamily::Linux => KeyFormat::Pkcs1Der,
    }
}

/// A simulated guest agent for one VM. `Debug` never prints key material.
#[derive(Debug, Clone)]
pub struct GuestAgent {
    os: OsFamily,
    version: Option<String>,
    keys: KeySource,
    handshake: Option<Handshake>,
    /// Decrypted values waiting to be applied (the move after `applying`).
    pending: Option<Values>,
    /// Set when no key could be had (the handshake never started).
    key_failure: Option<AgentPhase>,
    reported: Vec<String>,
}

static WAITING_FOR_HOST: AgentPhase = AgentPhase::WaitingForHost;

impl GuestAgent {
    /// An agent for a guest of `os` whose agent version is `version` (`None` accepts any
    /// `hlvmm.meta.version`).
    pub fn new(os: OsFamily, version: Option<String>, keys: KeySource) -> Self {
        Self {
            os,
            version,
            keys,
            handshake: None,
            pending: None,
            key_failure: None,
            reported: Vec::new(),
        }
    }

    /// The current phase.
    pub fn phase(&self) -> &AgentPhase {
        match (&self.key_failure, &self.handshake) {
            (Some(failure), _) => failure,
            (None, Some(handshake)) => handshake.phase(),
            (None, None) => &WAITING_FOR_HOST,
        }
    }

    /// Every guest state this agent has reported, in order.
    pub fn reported_states(&self) -> &[String] {
        &self.reported
    }

    /// The key format this agent publishes.
    pub fn key_format(&self) -> KeyFormat {
        key_format(self.os)
    }

    /// Starts over (as after re-imaging the guest agent): forgets the key and the outcome.
    pub fn rearm(&mut self) {
        self.handshake = None;
        self.pending = None;
        self.key_failure = None;
    }

    fn key(&self) -> Result<GuestKey> {
        match &self.keys {
            KeySource::Shared => Ok(GuestKey::from_rsa(shared_key()?)?),
            KeySource::Fixed(key) => Ok(GuestKey::from_rsa(Arc::clone(key))?),
            KeySource::Generate => generate_key(),
        }
    }

    fn write(&mut self, vm: &mut SimVm, output: GuestOutput) {
        self.reported.extend(output.states().map(str::to_owned));
        for key in output.remove {
            vm.kvp.guest_to_host.remove(key);
        }
        vm.kvp
            .guest_to_host
            .extend(output.write.into_iter().map(KvpItem::into_pair));
    }

    /// Makes at most one protocol move; returns whether anything changed.
    pub fn step(&mut self, vm: &mut SimVm) -> bool {
        if !vm.kvp_reachable() || self.key_failure.is_some() {
            return false;
        }
        if let Some(values) = self.pending.take() {
            let output = match apply_values(vm, self.os, &values) {
                Ok(applied) => {
                    vm.guest.applied = Some(applied);
                    self.handshake.as_mut().map(Handshake::applied)
                }
                Err(reason) => self.handshake.as_mut().map(|h| h.failed(&reason)),
            };
            if let Some(output) = output {
                self.write(vm, output);
            }
            return true;
        }
        let handshake = match &mut self.handshake {
            Some(handshake) => handshake,
            None => {
                // The key is only needed once the host asks for it.
                let asked = vm
                    .kvp
                    .host_to_guest
                    .get(keys::HOST_STATE)
                    .and_then(|s| s.parse::<HostState>().ok())
                    == Some(HostState::WaitingForPublicKey);
                if !asked {
                    return false;
                }
                match self.key() {
                    Ok(key) => self.handshake.insert(Handshake::new(
                        self.version.clone(),
                        key,
                        self.key_format(),
                    )),
                    Err(e) => {
                        let reason = kvp_guest::error_text(&e.to_string());
                        let output = GuestOutput {
                            write: vec![
                                KvpItem::new(keys::GUEST_ERROR, reason.as_str()),
                                GuestState::ProvisioningFailed.item(),
                            ],
                            remove: Vec::new(),
                        };
                        self.write(vm, output);
                        self.key_failure = Some(AgentPhase::Failed(reason));
                        return true;
                    }
                }
            }
        };
        match handshake.on_host_items(&vm.kvp.host_to_guest, &mut rand::rngs::OsRng) {
            GuestStep::Wait => false,
            GuestStep::VersionMismatch { .. } => true,
            GuestStep::PublishKey(output) | GuestStep::Rejected { output, .. } => {
                self.write(vm, output);
                true
            }
            GuestStep::Apply { output, values } => {
                self.write(vm, output);
                self.pending = Some(values);
                true
            }
            _ => false,
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
}

fn field<'a>(values: &'a Values, name: &str) -> Option<&'a str> {
    values
        .get(name)
        .map(|v| v.expose().trim())
        .filter(|v| !v.is_empty())
}

fn parse_ipv4(values: &Values, name: &str) -> std::result::Result<Option<Ipv4Addr>, String> {
    field(values, name)
        .map(|v| {
            v.parse::<Ipv4Addr>()
                .map_err(|_| format!("{} is not an IPv4 address", keys::data_key(name)))
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
    values: &Values,
) -> std::result::Result<AppliedProvisioning, String> {
    let mut applied = AppliedProvisioning {
        keys: values.keys().map(|name| keys::data_key(name)).collect(),
        ..AppliedProvisioning::default()
    };
    if let Some(name) = field(values, data::GUEST_HOST_NAME) {
        if !valid_hostname(name) {
            return Err(format!(
                "{} is not a valid host name",
                keys::data_key(data::GUEST_HOST_NAME)
            ));
        }
        applied.hostname = Some(name.to_owned());
    }
    if let Some(ip) = parse_ipv4(values, data::GUEST_V4_IP_ADDR)? {
        let prefix = field(values, data::GUEST_V4_CIDR_PREFIX)
            .and_then(|p| p.parse::<u8>().ok())
            .filter(|p| (1..=32).contains(p))
            .ok_or_else(|| {
                format!(
                    "{} must be 1..32 when an address is given",
                    keys::data_key(data::GUEST_V4_CIDR_PREFIX)
                )
            })?;
        applied.ipv4 = Some(format!("{ip}/{prefix}"));
        applied.gateway = parse_ipv4(values, data::GUEST_V4_DEFAULT_GW)?.map(|g| g.to_string());
        for dns in [data::GUEST_V4_DNS1, data::GUEST_V4_DNS2] {
            if let Some(server) = parse_ipv4(values, dns)? {
                applied.dns_servers.push(server.to_string());
            }
        }
        if vm.nics.is_empty() {
            return Err("a static address was given but the VM has no network adapter".to_owned());
        }
    }
    applied.dns_suffix = field(values, data::GUEST_NET_DNS_SUFFIX).map(str::to_owned);
    if let Some(user) = field(values, data::GUEST_LA_UID) {
        if field(values, data::GUEST_LA_PW).is_none() {
            return Err(format!(
                "{} is set without {}",
                keys::data_key(data::GUEST_LA_UID),
                keys::data_key(data::GUEST_LA_PW)
            ));
        }
        applied.local_admin = Some(user.to_owned());
    }
    if os == OsFamily::Windows
        && let Some(domain) = field(values, data::GUEST_DOMAIN_JOIN_TARGET)
    {
        for required in [data::GUEST_DOMAIN_JOIN_UID, data::GUEST_DOMAIN_JOIN_PW] {
            if field(values, required).is_none() {
                return Err(format!(
                    "domain join requested without {}",
                    keys::data_key(required)
                ));
            }
        }
        applied.domain = Some(domain.to_owned());
    }
    if os == OsFamily::Linux {
        applied.ssh_user = field(values, data::ANSIBLE_SSH_USER).map(str::to_owned);
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
            guest_item(state, keys::GUEST_STATE).as_deref(),
            Some(GuestState::WaitingForAesKey.as_str())
        );
        guest_item(state, keys::GUEST_PUBLIC_KEY).unwrap()
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
            let key = aetherv_kvp::GuestPublicKey::parse(&public).unwrap();
            assert_eq!(key.format(), format);
            assert_eq!(key.rsa(), &shared_test_key().to_public_key());

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
                guest_item(&state, keys::GUEST_STATE).as_deref(),
                Some(GuestState::ProvisioningApplied.as_str())
            );
            assert_eq!(
                agent_states(&state),
                [
                    GuestState::WaitingForAesKey.as_str(),
                    GuestState::Applying.as_str(),
                    GuestState::ProvisioningApplied.as_str()
                ]
            );
            assert_eq!(guest_item(&state, keys::GUEST_ERROR), None);
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
            if k == keys::CHECKSUM {
                *v = aetherv_kvp::checksum([("x", "y")]);
            }
        }
        set_all(&mut state, &items);
        assert_eq!(
            guest_item(&state, keys::GUEST_STATE).as_deref(),
            Some(GuestState::ProvisioningFailed.as_str())
        );
        let error = guest_item(&state, keys::GUEST_ERROR).unwrap();
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
            guest_item(&state, keys::GUEST_STATE).as_deref(),
            Some(GuestState::ProvisioningFailed.as_str())
        );
        let error = guest_item(&state, keys::GUEST_ERROR).unwrap();
        assert_eq!(
            error,
            "provisioning payload rejected: chunk 1 of hlvmm.data.ansible_ssh_key is missing"
        );
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
        assert_eq!(guest_item(&state, keys::GUEST_STATE), None);
        state
            .power(HOST, "new-01", PowerAction::Start, now)
            .unwrap();
        assert_eq!(
            guest_item(&state, keys::GUEST_STATE).as_deref(),
            Some(GuestState::WaitingForAesKey.as_str())
        );

        let mut other = state_with_vm("Ubuntu 24.04 LTS");
        set_all(&mut other, &host_role::begin_items("9.9.9"));
        assert_eq!(guest_item(&other, keys::GUEST_STATE), None);
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
        let error = guest_item(&state, keys::GUEST_ERROR).unwrap();
        assert_eq!(error, "hlvmm.data.guest_v4_ip_addr is not an IPv4 address");
        assert!(!error.contains("secretish"));
    }
}
