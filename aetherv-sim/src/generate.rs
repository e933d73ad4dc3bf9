//! Deterministic fleet generation from a seed.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::model::{
    BootSettings, Cluster, ControllerType, DiskType, DvdDrive, Fleet, GIB, GoldenImage, GuestInfo,
    Host, KvpPools, NetworkAdapter, OsFamily, ProvisioningIso, SimVm, StorageLocation, SwitchType,
    VirtualDisk, VirtualSwitch, VmState, default_integration_services, holds_memory,
    intrinsic_items, mac_from, static_or_dynamic,
};
use crate::rng::SimRng;

/// Version string the simulator reports for installed host scripts by default.
pub const SIM_SCRIPTS_VERSION: &str = "0.1.0-sim";

/// Default guest agent / provisioning ISO version (what guests expect in `hlvmm.meta.version`).
pub const SIM_AGENT_VERSION: &str = "1.0.0";

/// What fleet to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetSpec {
    /// Number of hosts (`hv01`, `hv02`, ...), at most 250.
    pub hosts: usize,
    /// VMs generated on each host, at most 200.
    pub vms_per_host: usize,
    /// Number of clusters the hosts are split into (contiguous blocks); 0 for standalone hosts.
    pub clusters: usize,
    /// Seed: the same spec always generates the same fleet.
    pub seed: u64,
    /// DNS domain of hosts, clusters and guests.
    pub domain: String,
    /// The generation instant: creation times and start times lie before it.
    pub epoch: SystemTime,
    /// Version of the host scripts reported as installed; `None` for hosts without scripts.
    pub scripts_version: Option<String>,
    /// Guest agent version on the provisioning ISOs.
    pub agent_version: String,
}

impl Default for FleetSpec {
    fn default() -> Self {
        Self {
            hosts: 3,
            vms_per_host: 4,
            clusters: 1,
            seed: 1,
            domain: "lab.example".to_owned(),
            // 2025-06-01T00:00:00Z
            epoch: UNIX_EPOCH + Duration::from_secs(1_748_736_000),
            scripts_version: Some(SIM_SCRIPTS_VERSION.to_owned()),
            agent_version: SIM_AGENT_VERSION.to_owned(),
        }
    }
}

impl FleetSpec {
    /// A spec with `hosts` hosts of `vms_per_host` VMs each and the other defaults.
    pub fn new(hosts: usize, vms_per_host: usize) -> Self {
        Self {
            hosts,
            vms_per_host,
            ..Self::default()
        }
    }

    fn validate(&self) -> Result<()> {
        let invalid = |detail: String| Error::Invalid {
            what: "fleet spec",
            detail,
        };
        if self.hosts > 250 {
            return Err(invalid(format!("{} hosts (at most 250)", self.hosts)));
        }
        if self.vms_per_host > 200 {
            return Err(invalid(format!(
                "{} VMs per host (at most 200)",
                self.vms_per_host
            )));
        }
        if self.clusters > self.hosts {
            return Err(invalid(format!(
                "{} clusters for {} hosts (every cluster needs a host)",
                self.clusters, self.hosts
            )));
        }
        if self.domain.trim().is_empty() || self.domain.contains(char::is_whitespace) {
            return Err(invalid(format!("domain {:?}", self.domain)));
        }
        Ok(())
    }
}

struct ImageTemplate {
    name: &'static str,
    os: OsFamily,
    file: &'static str,
    size_gib: u64,
    max_gib: u64,
}

const IMAGES: [ImageTemplate; 4] = [
    ImageTemplate {
        name: "Windows Server 2022 Datacenter",
        os: OsFamily::Windows,
        file: "WindowsServer2022Datacenter.vhdx",
        size_gib: 14,
        max_gib: 127,
    },
    ImageTemplate {
        name: "Windows Server 2025 Datacenter",
        os: OsFamily::Windows,
        file: "WindowsServer2025Datacenter.vhdx",
        size_gib: 16,
        max_gib: 127,
    },
    ImageTemplate {
        name: "Ubuntu 24.04 LTS",
        os: OsFamily::Linux,
        file: "Ubuntu-24.04-LTS.vhdx",
        size_gib: 4,
        max_gib: 64,
    },
    ImageTemplate {
        name: "Rocky Linux 9",
        os: OsFamily::Linux,
        file: "RockyLinux-9.vhdx",
        size_gib: 3,
        max_gib: 64,
    },
];

/// A workload role: VM name prefix, OS (`None` = either), memory choices in GiB, CPU choices.
struct Role {
    prefix: &'static str,
    os: Option<OsFamily>,
    memory_gib: &'static [u64],
    cpus: &'static [u32],
}

const fn role(
    prefix: &'static str,
    os: Option<OsFamily>,
    memory_gib: &'static [u64],
    cpus: &'static [u32],
) -> Role {
    Role {
        prefix,
        os,
        memory_gib,
        cpus,
    }
}

const WIN: Option<OsFamily> = Some(OsFamily::Windows);
const LINUX: Option<OsFamily> = Some(OsFamily::Linux);

const ROLES: [Role; 12] = [
    role("web", LINUX, &[2, 4, 4], &[2, 2, 4]),
    role("sql", WIN, &[16, 32], &[4, 8]),
    role("app", None, &[4, 8], &[2, 4]),
    role("dc", WIN, &[4], &[2]),
    role("file", WIN, &[4, 8], &[2]),
    role("cache", LINUX, &[8, 16], &[2, 4]),
    role("build", None, &[8, 16], &[4, 8]),
    role("mon", LINUX, &[4, 8], &[2]),
    role("proxy", LINUX, &[2], &[2]),
    role("mq", LINUX, &[4, 8], &[2, 4]),
    role("k8s", LINUX, &[8, 16], &[4]),
    role("jump", WIN, &[4], &[2]),
];

const EXTERNAL_SWITCH: &str = "vSwitch-External";
const SECOND_EXTERNAL_SWITCH: &str = "vSwitch-External-B";
const VLANS: [Option<u16>; 4] = [None, Some(10), Some(20), Some(30)];

impl Fleet {
    /// Generates a fleet from `spec`. The same spec always yields the same fleet (names, ids,
    /// MACs, sizes, states), independent of platform.
    ///
    /// Takes the spec by value or by reference.
    pub fn generate(spec: impl std::borrow::Borrow<FleetSpec>) -> Result<Fleet> {
        let spec = spec.borrow();
        spec.validate()?;
        let domain = spec.domain.trim().to_owned();
        let clusters: Vec<Cluster> = (0..spec.clusters)
            .map(|c| {
                let name = format!("hvclu{:02}", c + 1);
                Cluster {
                    fqdn: format!("{name}.{domain}"),
                    name,
                    hosts: Vec::new(),
                }
            })
            .collect();
        let mut fleet = Fleet {
            domain: domain.clone(),
            clusters,
            hosts: Vec::new(),
            seed: spec.seed,
            created_objects: 0,
        };
        let mut role_counters: BTreeMap<&str, u32> = BTreeMap::new();
        for i in 0..spec.hosts {
            let mut rng = SimRng::derive(spec.seed, i as u64 + 1);
            let cluster = (spec.clusters > 0).then(|| i * spec.clusters / spec.hosts);
            let name = format!("hv{:02}", i + 1);
            let host = generate_host(spec, &mut rng, i, &name, cluster, &mut role_counters);
            if let Some(c) = cluster
                && let Some(cl) = fleet.clusters.get_mut(c)
            {
                cl.hosts.push(name);
            }
            fleet.hosts.push(host);
        }
        size_storage(&mut fleet);
        Ok(fleet)
    }
}

fn shared_volume(cluster: usize) -> String {
    // Cluster n's volume is VolumeN so that paths stay unique across the fleet.
    format!(r"C:\ClusterStorage\Volume{}", cluster + 1)
}

fn generate_host(
    spec: &FleetSpec,
    rng: &mut SimRng,
    index: usize,
    name: &str,
    cluster: Option<usize>,
    role_counters: &mut BTreeMap<&'static str, u32>,
) -> Host {
    let domain = spec.domain.trim();
    let logical_processors = *rng.pick(&[32u32, 48, 64, 96]).unwrap_or(&64);
    let memory_total_bytes = *rng.pick(&[256u64, 384, 512, 768]).unwrap_or(&512) * GIB;
    let memory_reserved_bytes = 8 * GIB;
    let os_version = (*rng
        .pick(&["10.0.20348", "10.0.26100"])
        .unwrap_or(&"10.0.20348"))
    .to_owned();

    let mut storage = vec![StorageLocation {
        path: r"C:\".to_owned(),
        capacity_bytes: 480 * GIB,
        reserved_bytes: 60 * GIB + rng.below(40) * GIB,
        shared: false,
    }];
    let (vm_path, library) = match cluster {
        Some(c) => {
            let csv = shared_volume(c);
            storage.push(StorageLocation {
                path: csv.clone(),
                // Sized after generation, once the cluster's files are known.
                capacity_bytes: 0,
                reserved_bytes: 20 * GIB,
                shared: true,
            });
            (format!(r"{csv}\VMs"), csv)
        }
        None => {
            storage.push(StorageLocation {
                path: r"D:\".to_owned(),
                capacity_bytes: 0,
                reserved_bytes: 10 * GIB,
                shared: false,
            });
            (r"D:\Hyper-V".to_owned(), r"D:\Hyper-V".to_owned())
        }
    };
    // The first cluster keeps its images in Aether-V's layout (`<CSV>\DiskImages`), the
    // others in `<CSV>\Images`, standalone hosts in `<VMPath>\Images`: each one of the roots
    // Get-HostFacts searches by default.
    let image_root = match cluster {
        Some(0) => format!(r"{library}\DiskImages"),
        _ => format!(r"{library}\Images"),
    };
    let images: Vec<GoldenImage> = IMAGES
        .iter()
        .map(|t| GoldenImage {
            name: t.name.to_owned(),
            os_family: t.os,
            path: format!(r"{image_root}\{}", t.file),
            size_bytes: t.size_gib * GIB,
            max_size_bytes: t.max_gib * GIB,
        })
        .collect();
    let isos = [(OsFamily::Windows, "windows"), (OsFamily::Linux, "linux")]
        .into_iter()
        .map(|(os, tag)| ProvisioningIso {
            os_family: os,
            path: format!(r"{library}\ISOs\aetherv-provisioning-{tag}.iso"),
            size_bytes: 8 << 20,
            version: spec.agent_version.clone(),
        })
        .collect();
    let switches = vec![
        VirtualSwitch {
            name: EXTERNAL_SWITCH.to_owned(),
            switch_type: SwitchType::External,
        },
        VirtualSwitch {
            name: "vSwitch-Internal".to_owned(),
            switch_type: SwitchType::Internal,
        },
    ];
    // The third host looks like an Aether-V host with two uplinks: a second External switch
    // and a resources file naming networks on both and a storage class, but no default
    // network, so a request must choose (the 422 paths are reachable in the demo).
    let (switches, host_resources) = if index == 2 {
        let mut switches = switches;
        switches.push(VirtualSwitch {
            name: SECOND_EXTERNAL_SWITCH.to_owned(),
            switch_type: SwitchType::External,
        });
        let resources = serde_json::json!({
            "version": 1,
            "schema_name": "hostresources",
            "storage_classes": [
                {"name": "fast", "path": format!(r"{library}\Fast")},
            ],
            "networks": [
                {"name": "prod", "model": "vlan",
                 "configuration": {"virtual_switch": EXTERNAL_SWITCH, "vlan_id": 10}},
                {"name": "lab", "model": "vlan",
                 "configuration": {"virtual_switch": SECOND_EXTERNAL_SWITCH, "vlan_id": 20}},
            ],
            "virtual_machines_path": vm_path,
        });
        (switches, Some(resources.to_string()))
    } else {
        (switches, None)
    };
    let mut host = Host {
        name: name.to_owned(),
        fqdn: format!("{name}.{domain}"),
        cluster: cluster.map(|c| format!("hvclu{:02}", c + 1)),
        os_version,
        logical_processors,
        processor: host_processor(cluster),
        memory_total_bytes,
        memory_reserved_bytes,
        storage,
        vm_path,
        switches,
        images,
        isos,
        scripts_version: spec.scripts_version.clone(),
        vms: Vec::new(),
        host_resources,
    };
    for j in 0..spec.vms_per_host {
        let vm = generate_vm(spec, rng, &host, index, j, role_counters);
        host.vms.push(vm);
    }
    host
}

/// The processor of a generated host: one Intel model for standalone hosts and the
/// even-numbered clusters (`hvclu01`, `hvclu03`, …), a newer one for the others, so moves
/// between those need processor compatibility mode (a test gives a host an AMD processor to
/// see a move refused outright).
fn host_processor(cluster: Option<usize>) -> crate::model::Processor {
    match cluster {
        Some(c) if c % 2 == 1 => {
            crate::model::Processor::intel("Intel(R) Xeon(R) Gold 6430 CPU @ 2.10GHz")
        }
        _ => crate::model::Processor::intel("Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz"),
    }
}

fn generate_vm(
    spec: &FleetSpec,
    rng: &mut SimRng,
    host: &Host,
    host_index: usize,
    vm_index: usize,
    role_counters: &mut BTreeMap<&'static str, u32>,
) -> SimVm {
    let Role {
        prefix: role,
        os,
        memory_gib: memories,
        cpus,
    } = &ROLES[rng.below(ROLES.len() as u64) as usize];
    let (role, os) = (*role, *os);
    let counter = role_counters.entry(role).or_insert(0);
    *counter += 1;
    let name = format!("{role}-{counter:02}");
    let os = os.unwrap_or(if rng.below(2) == 0 {
        OsFamily::Windows
    } else {
        OsFamily::Linux
    });
    let candidates: Vec<&ImageTemplate> = IMAGES.iter().filter(|t| t.os == os).collect();
    let image = candidates[rng.below(candidates.len() as u64) as usize];
    let memory_gib = *rng.pick(memories).unwrap_or(&4);
    let processor_count = *rng.pick(cpus).unwrap_or(&2);
    let dynamic = os == OsFamily::Linux && rng.below(3) == 0;
    let mut memory = static_or_dynamic(memory_gib * GIB, dynamic);

    let mut id_bytes = [0u8; 16];
    rng.fill(&mut id_bytes);
    let id = uuid::Builder::from_random_bytes(id_bytes).into_uuid();

    // Mostly running; some off, a few saved or paused.
    let roll = rng.below(100);
    let mut state = match roll {
        0..=69 => VmState::Running,
        70..=87 => VmState::Off,
        88..=94 => VmState::Saved,
        _ => VmState::Paused,
    };
    let assigned_so_far: u64 = host.vms.iter().map(|v| v.memory.assigned_bytes).sum();
    let available = host
        .memory_total_bytes
        .saturating_sub(host.memory_reserved_bytes)
        .saturating_sub(assigned_so_far);
    if holds_memory(state) && memory.startup_bytes > available {
        state = VmState::Off;
    }
    if holds_memory(state) {
        memory.assigned_bytes = if memory.dynamic {
            // Dynamic memory settles between the minimum and the startup amount.
            let lo = memory.minimum_bytes / (1 << 20);
            let hi = memory.startup_bytes / (1 << 20);
            (rng.range(lo, hi) & !1) << 20
        } else {
            memory.startup_bytes
        };
    }

    let created = spec.epoch - Duration::from_secs(86_400 * rng.range(3, 900) + rng.below(86_400));
    let started = holds_memory(state)
        .then(|| spec.epoch - Duration::from_secs(60 * rng.range(5, 60 * 24 * 60)));
    let generation = if os == OsFamily::Windows && rng.below(10) == 0 {
        1
    } else {
        2
    };
    let controller = if generation == 1 {
        ControllerType::Ide
    } else {
        ControllerType::Scsi
    };
    let folder = format!(r"{}\{name}", host.vm_path);
    let mut disks = vec![VirtualDisk {
        path: format!(r"{folder}\Virtual Hard Disks\{name}.vhdx"),
        controller_type: controller,
        controller_number: 0,
        controller_location: 0,
        disk_type: DiskType::Dynamic,
        max_size_bytes: image.max_gib * GIB,
        file_size_bytes: image.size_gib * GIB + rng.range(1, 24) * GIB,
        shared: false,
    }];
    if matches!(role, "sql" | "file") {
        let max = *rng.pick(&[256u64, 512, 1024]).unwrap_or(&256) * GIB;
        disks.push(VirtualDisk {
            path: format!(r"{folder}\Virtual Hard Disks\{name}-data.vhdx"),
            controller_type: ControllerType::Scsi,
            controller_number: 0,
            controller_location: 1,
            disk_type: if rng.below(2) == 0 {
                DiskType::Fixed
            } else {
                DiskType::Dynamic
            },
            max_size_bytes: max,
            file_size_bytes: 0,
            shared: false,
        });
        if let Some(d) = disks.last_mut() {
            d.file_size_bytes = match d.disk_type {
                DiskType::Fixed => max,
                _ => max / 100 * rng.range(10, 70),
            };
        }
    }
    let vlan_pick = rng.below(VLANS.len() as u64) as usize;
    let vlan_id = VLANS[vlan_pick];
    let ip_addresses = if holds_memory(state) {
        vec![format!(
            "10.{}.{}.{}",
            10 + vlan_pick,
            (host_index % 250) + 1,
            (vm_index % 240) + 10
        )]
    } else {
        Vec::new()
    };
    let nics = vec![NetworkAdapter {
        name: "Network Adapter".to_owned(),
        switch_name: Some(EXTERNAL_SWITCH.to_owned()),
        vlan_id,
        mac_address: mac_from(rng),
        ip_addresses,
        id: crate::model::adapter_id(id, 0),
        dynamic_mac: true,
        ..NetworkAdapter::default()
    }];
    let notes = match rng.below(4) {
        0 => format!("Owner: {}-team", role),
        1 => "Managed by aetherv".to_owned(),
        _ => String::new(),
    };
    let guest = GuestInfo {
        os_family: os,
        image: image.name.to_owned(),
        hostname: name.clone(),
        agent_version: Some(spec.agent_version.clone()),
        applied: None,
    };
    let mut kvp = KvpPools::default();
    if state == VmState::Running || state == VmState::Paused {
        kvp.guest_intrinsic = intrinsic_items(&guest, spec.domain.trim());
    }
    SimVm {
        id,
        name,
        state,
        generation,
        version: if generation == 1 { "9.0" } else { "10.0" }.to_owned(),
        path: folder,
        processor_count,
        processor_compatibility: false,
        memory,
        created,
        started,
        notes,
        clustered: host.cluster.is_some() && rng.below(5) != 0,
        disks,
        dvd_drives: vec![DvdDrive {
            path: None,
            controller_type: controller,
            controller_number: if generation == 1 { 1 } else { 0 },
            controller_location: if generation == 1 { 0 } else { 2 },
        }],
        nics,
        integration_services: default_integration_services(),
        kvp,
        guest,
        // Running guests were set up right: the template their OS family boots with.
        firmware: BootSettings::for_family(os),
        automatic: crate::model::AutomaticActions::default(),
        checkpoints: crate::devices::Checkpoints::default(),
    }
}

/// Gives every data volume a capacity that fits what was generated on it with headroom,
/// rounded up to whole TiB (at least 2 TiB), so free space is positive and plausible.
fn size_storage(fleet: &mut Fleet) {
    let tib = 1024 * GIB;
    let mut sizes: Vec<(usize, usize, u64)> = Vec::new();
    for (h, host) in fleet.hosts.iter().enumerate() {
        for (l, loc) in host.storage.iter().enumerate() {
            if loc.capacity_bytes == 0 {
                let used = fleet.location_used_bytes(host, loc);
                let wanted = (used + loc.reserved_bytes) * 8 / 5;
                sizes.push((h, l, wanted.div_ceil(tib).max(2) * tib));
            }
        }
    }
    for (h, l, capacity) in sizes {
        if let Some(loc) = fleet
            .hosts
            .get_mut(h)
            .and_then(|host| host.storage.get_mut(l))
        {
            loc.capacity_bytes = capacity;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::model::{NewVm, PowerAction};

    fn spec(seed: u64) -> FleetSpec {
        FleetSpec {
            hosts: 6,
            vms_per_host: 12,
            clusters: 2,
            seed,
            ..FleetSpec::default()
        }
    }

    #[test]
    fn generation_is_deterministic_for_a_seed() {
        let a = Fleet::generate(spec(7)).unwrap();
        let b = Fleet::generate(spec(7)).unwrap();
        let c = Fleet::generate(spec(8)).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        // A pinned sample, so accidental changes to the generator show up.
        let first = &a.hosts[0];
        assert_eq!(first.name, "hv01");
        assert_eq!(first.fqdn, "hv01.lab.example");
        assert_eq!(first.cluster.as_deref(), Some("hvclu01"));
        assert_eq!(a.hosts[5].cluster.as_deref(), Some("hvclu02"));
        assert_eq!(a.clusters[0].hosts, ["hv01", "hv02", "hv03"]);
        assert_eq!(a.clusters[1].fqdn, "hvclu02.lab.example");
    }

    #[test]
    fn names_ids_and_macs_are_unique_and_realistic() {
        let fleet = Fleet::generate(spec(3)).unwrap();
        let vms: Vec<&SimVm> = fleet.hosts.iter().flat_map(|h| &h.vms).collect();
        assert_eq!(vms.len(), 72);
        let names: std::collections::BTreeSet<&str> = vms.iter().map(|v| v.name.as_str()).collect();
        let ids: std::collections::BTreeSet<_> = vms.iter().map(|v| v.id).collect();
        let macs: std::collections::BTreeSet<_> =
            vms.iter().map(|v| &v.nics[0].mac_address).collect();
        assert_eq!(names.len(), 72);
        assert_eq!(ids.len(), 72);
        assert_eq!(macs.len(), 72);
        for vm in &vms {
            let (role, number) = vm.name.rsplit_once('-').unwrap();
            assert!(!role.is_empty() && number.len() >= 2, "{}", vm.name);
            assert_eq!(vm.id.get_version_num(), 4);
            assert!(vm.nics[0].mac_address.starts_with("00155D"));
            assert_eq!(vm.nics[0].ip_addresses.is_empty(), !holds_memory(vm.state));
            assert!(vm.disks[0].path.ends_with(&format!("{}.vhdx", vm.name)));
            assert!(vm.created < FleetSpec::default().epoch);
        }
        let states: std::collections::BTreeSet<u32> = vms.iter().map(|v| v.state.code()).collect();
        assert!(states.contains(&2) && states.contains(&3), "{states:?}");
    }

    #[test]
    fn memory_accounting_adds_up() {
        for seed in 0..20 {
            let fleet = Fleet::generate(&FleetSpec {
                hosts: 4,
                vms_per_host: 60,
                clusters: 1,
                seed,
                ..FleetSpec::default()
            })
            .unwrap();
            for host in &fleet.hosts {
                let assigned: u64 = host.vms.iter().map(|v| v.memory.assigned_bytes).sum();
                assert_eq!(
                    host.memory_reserved_bytes + assigned + host.memory_available_bytes(),
                    host.memory_total_bytes,
                    "seed {seed} host {}",
                    host.name
                );
                for vm in &host.vms {
                    if holds_memory(vm.state) {
                        assert!(vm.memory.assigned_bytes >= vm.memory.minimum_bytes);
                        assert!(vm.memory.assigned_bytes <= vm.memory.maximum_bytes);
                    } else {
                        assert_eq!(vm.memory.assigned_bytes, 0, "{} is {}", vm.name, vm.state);
                    }
                }
            }
        }
    }

    #[test]
    fn storage_accounting_is_consistent() {
        let fleet = Fleet::generate(spec(11)).unwrap();
        for host in &fleet.hosts {
            for status in fleet.storage_status(&host.name).unwrap() {
                assert!(
                    status.free_bytes > 0 && status.free_bytes < status.capacity_bytes,
                    "{status:?}"
                );
            }
        }
        // Hosts of one cluster see the same shared volume with the same free space.
        let csv = |h: &str| {
            fleet
                .storage_status(h)
                .unwrap()
                .into_iter()
                .find(|s| s.shared)
                .unwrap()
        };
        assert_eq!(csv("hv01"), csv("hv03"));
        assert_ne!(csv("hv01").path, csv("hv04").path);
    }

    #[test]
    fn creating_starting_and_removing_vms_keeps_the_books() {
        let mut fleet = Fleet::generate(spec(5)).unwrap();
        let now = FleetSpec::default().epoch;
        let before = fleet.storage_status("hv02").unwrap();
        let memory_before = fleet.host("hv02").unwrap().memory_available_bytes();
        let mut new = NewVm::new("app-99", "Ubuntu 24.04 LTS");
        new.memory_startup_bytes = 8 * GIB;
        let id = fleet.create_vm("hv02.lab.example", &new, now).unwrap();
        let vm = fleet.vm("hv02", "app-99").unwrap();
        assert_eq!(vm.id, id);
        assert_eq!(vm.state, VmState::Off);
        assert_eq!(vm.guest.os_family, OsFamily::Linux);
        assert!(
            vm.dvd_drives[0]
                .path
                .as_deref()
                .unwrap()
                .ends_with("linux.iso")
        );
        let after = fleet.storage_status("hv02").unwrap();
        let csv_before = before.iter().find(|s| s.shared).unwrap().free_bytes;
        let csv_after = after.iter().find(|s| s.shared).unwrap().free_bytes;
        assert_eq!(csv_before - csv_after, 4 * GIB);

        fleet
            .power("hv02", "app-99", PowerAction::Start, now)
            .unwrap();
        assert_eq!(
            fleet.host("hv02").unwrap().memory_available_bytes(),
            memory_before - 8 * GIB
        );
        assert!(
            fleet
                .power("hv02", "app-99", PowerAction::Start, now)
                .is_err()
        );
        assert!(fleet.remove_vm("hv02", "app-99").is_err());
        fleet
            .power("hv02", "app-99", PowerAction::Pause, now)
            .unwrap();
        fleet
            .power("hv02", "app-99", PowerAction::Save, now)
            .unwrap();
        assert_eq!(
            fleet.host("hv02").unwrap().memory_available_bytes(),
            memory_before
        );
        fleet
            .power("hv02", "app-99", PowerAction::Start, now)
            .unwrap();
        fleet
            .power("hv02", "app-99", PowerAction::TurnOff, now)
            .unwrap();
        fleet.remove_vm("hv02", "app-99").unwrap();
        assert_eq!(fleet.storage_status("hv02").unwrap(), before);

        assert!(matches!(
            fleet.create_vm("hv02", &NewVm::new("x", "FreeBSD"), now),
            Err(Error::UnknownImage { .. })
        ));
        let dup = fleet.host("hv02").unwrap().vms[0].name.clone();
        assert!(matches!(
            fleet.create_vm("hv02", &NewVm::new(dup, "Ubuntu 24.04 LTS"), now),
            Err(Error::VmExists { .. })
        ));
        let mut huge = NewVm::new("huge-01", "Ubuntu 24.04 LTS");
        huge.memory_startup_bytes = 2048 * GIB;
        fleet.create_vm("hv02", &huge, now).unwrap();
        assert!(matches!(
            fleet.power("hv02", "huge-01", PowerAction::Start, now),
            Err(Error::InsufficientMemory { .. })
        ));
        assert!(fleet.host("nope").is_none());
    }

    #[test]
    fn specs_are_validated() {
        assert!(
            Fleet::generate(&FleetSpec {
                clusters: 4,
                hosts: 3,
                ..FleetSpec::default()
            })
            .is_err()
        );
        assert!(Fleet::generate(FleetSpec::new(251, 1)).is_err());
        let empty = Fleet::generate(&FleetSpec {
            hosts: 0,
            clusters: 0,
            ..FleetSpec::default()
        })
        .unwrap();
        assert!(empty.hosts.is_empty());
        let standalone = Fleet::generate(&FleetSpec {
            clusters: 0,
            ..FleetSpec::default()
        })
        .unwrap();
        assert!(standalone.hosts.iter().all(|h| h.cluster.is_none()));
        assert!(
            standalone.hosts[0].images[0]
                .path
                .starts_with(r"D:\Hyper-V\Images")
        );
    }
}
