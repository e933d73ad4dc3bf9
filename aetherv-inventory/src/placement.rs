//! Placement: which host of a cluster gets a new VM.
//!
//! [`choose`] is a pure function over [`Candidate`]s (one per member host, built from an
//! inventory snapshot by [`candidates`]) and a [`Demand`]: among the hosts that are connected,
//! not in maintenance, have the golden image, have at least the VM's memory available and a
//! storage location with room for its disk, it picks the one with the most memory available
//! (ties: the host name, so the answer is deterministic). When none qualifies, [`NoFit`] says
//! why for every member and names the best figure found (the most memory available on a
//! connected host), so the caller can answer with something actionable.

use std::fmt;

use crate::model::{HostStatus, Snapshot};

/// What the new VM needs from its host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Demand {
    /// Startup memory in bytes.
    pub memory_bytes: u64,
    /// Bytes the VM's disk takes on the host's storage, when known.
    pub disk_bytes: Option<u64>,
    /// The golden image the VM is copied from (case-insensitive), when it must be on the host.
    pub image: Option<String>,
}

/// One member host as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Host name as configured.
    pub host: String,
    /// Whether the last refresh succeeded.
    pub connected: bool,
    /// Whether the host is not `active` (draining, in maintenance, resuming, failed drain, or
    /// a paused cluster node): [`candidates`] fills this from the host's facts and [`choose`]
    /// excludes such hosts.
    pub in_maintenance: bool,
    /// Memory available for VMs, when the host's facts are known.
    pub memory_available_bytes: Option<u64>,
    /// Free bytes of the host's roomiest storage location, when known.
    pub storage_free_bytes: Option<u64>,
    /// Whether the host has the demanded golden image.
    pub has_image: bool,
    /// Why the caller found this host unfit for the VM although it has the memory and
    /// storage (e.g. the requested network or storage class is not defined on it); `None`
    /// when it found nothing against it. [`candidates`] leaves it `None`.
    pub unfit: Option<String>,
}

/// Why a member host was not chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The host does not answer (or has not been refreshed yet).
    NotConnected,
    /// The host is in maintenance.
    InMaintenance,
    /// The host's facts (memory, storage, images) are not known yet.
    NoFacts,
    /// The golden image is not on the host.
    NoImage,
    /// Too little memory available.
    Memory {
        /// Bytes available.
        available: u64,
    },
    /// No storage location has room for the disk.
    Storage {
        /// Free bytes of the roomiest location.
        free: u64,
    },
    /// The caller's reason ([`Candidate::unfit`]).
    Unfit(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotConnected => f.write_str("not connected"),
            Self::InMaintenance => f.write_str("in maintenance"),
            Self::NoFacts => f.write_str("facts not loaded yet"),
            Self::NoImage => f.write_str("golden image missing"),
            Self::Memory { available } => write!(f, "{} available", gib(*available)),
            Self::Storage { free } => write!(f, "{} free storage", gib(*free)),
            Self::Unfit(reason) => f.write_str(reason),
        }
    }
}

/// The chosen host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    /// Host name as configured.
    pub host: String,
    /// Its memory available when chosen.
    pub memory_available_bytes: u64,
}

/// No member host can take the VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoFit {
    /// Every member with the reason it was refused, in host name order.
    pub refused: Vec<(String, Refusal)>,
    /// The most memory available on a connected member (its name and bytes), if any.
    pub best_memory: Option<(String, u64)>,
    /// The most free storage on a connected member (its name and bytes), if any.
    pub best_storage: Option<(String, u64)>,
}

impl fmt::Display for NoFit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.refused.is_empty() {
            return f.write_str("the cluster has no member hosts");
        }
        match &self.best_memory {
            Some((host, bytes)) => write!(
                f,
                "the most memory available on a connected host is {} on {host}",
                gib(*bytes)
            )?,
            None => f.write_str("no member host is connected with known facts")?,
        }
        if let Some((host, bytes)) = &self.best_storage {
            write!(f, "; the most free storage is {} on {host}", gib(*bytes))?;
        }
        f.write_str(" (")?;
        for (i, (host, why)) in self.refused.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{host}: {why}")?;
        }
        f.write_str(")")
    }
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
}

/// Why `c` cannot take `demand`, or `None` when it can.
fn refusal(c: &Candidate, demand: &Demand) -> Option<Refusal> {
    if !c.connected {
        return Some(Refusal::NotConnected);
    }
    if c.in_maintenance {
        return Some(Refusal::InMaintenance);
    }
    let Some(memory) = c.memory_available_bytes else {
        return Some(Refusal::NoFacts);
    };
    if demand.image.is_some() && !c.has_image {
        return Some(Refusal::NoImage);
    }
    if memory < demand.memory_bytes {
        return Some(Refusal::Memory { available: memory });
    }
    if let Some(disk) = demand.disk_bytes {
        let free = c.storage_free_bytes.unwrap_or(0);
        if free < disk {
            return Some(Refusal::Storage { free });
        }
    }
    c.unfit.clone().map(Refusal::Unfit)
}

/// One eligible host in a [`Ranking`], with the figures behind its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ranked {
    /// Host name as configured.
    pub host: String,
    /// Memory available for VMs now.
    pub memory_available_bytes: u64,
    /// Memory left after the VM is placed (the ranking key: most first).
    pub memory_after_bytes: u64,
    /// Free bytes of the host's roomiest storage location, when known.
    pub storage_free_bytes: Option<u64>,
}

impl Refusal {
    /// A stable machine-readable name (`not_connected`, `in_maintenance`, `no_facts`,
    /// `no_image`, `memory`, `storage`, `unfit`).
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotConnected => "not_connected",
            Self::InMaintenance => "in_maintenance",
            Self::NoFacts => "no_facts",
            Self::NoImage => "no_image",
            Self::Memory { .. } => "memory",
            Self::Storage { .. } => "storage",
            Self::Unfit(_) => "unfit",
        }
    }
}

/// Every candidate judged: the eligible ones best first, the others with their refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ranking {
    /// Eligible hosts, most memory available first (ties: host name).
    pub ranked: Vec<Ranked>,
    /// Refused hosts with the reason, in host name order.
    pub refused: Vec<(String, Refusal)>,
}

/// Judges every candidate for `demand`: the one ranking used by provisioning's placement,
/// the placement route and a host drain. A host is eligible when it is connected, not in
/// maintenance, has its facts, the image, the memory and the storage, and the caller found
/// nothing against it ([`Candidate::unfit`]); eligible hosts are ordered by memory available
/// (most first; ties: host name).
pub fn rank(candidates: &[Candidate], demand: &Demand) -> Ranking {
    let mut sorted: Vec<&Candidate> = candidates.iter().collect();
    sorted.sort_by(|a, b| a.host.cmp(&b.host));
    let mut ranked = Vec::new();
    let mut refused = Vec::new();
    for c in sorted {
        match refusal(c, demand) {
            Some(why) => refused.push((c.host.clone(), why)),
            None => {
                let memory = c.memory_available_bytes.unwrap_or(0);
                ranked.push(Ranked {
                    host: c.host.clone(),
                    memory_available_bytes: memory,
                    memory_after_bytes: memory.saturating_sub(demand.memory_bytes),
                    storage_free_bytes: c.storage_free_bytes,
                });
            }
        }
    }
    // Stable: equal memory keeps host name order.
    ranked.sort_by_key(|c| std::cmp::Reverse(c.memory_available_bytes));
    Ranking { ranked, refused }
}

/// The eligible candidate with the most memory available (ties: the first host name), or why
/// there is none: the head of [`rank`].
///
/// # Errors
///
/// [`NoFit`] when no candidate qualifies (also for an empty list).
pub fn choose(candidates: &[Candidate], demand: &Demand) -> Result<Chosen, NoFit> {
    let Ranking { ranked, refused } = rank(candidates, demand);
    if let Some(best) = ranked.first() {
        return Ok(Chosen {
            host: best.host.clone(),
            memory_available_bytes: best.memory_available_bytes,
        });
    }
    let mut sorted: Vec<&Candidate> = candidates.iter().collect();
    sorted.sort_by(|a, b| a.host.cmp(&b.host));
    let usable = || sorted.iter().filter(|c| c.connected && !c.in_maintenance);
    let best_of = |value: fn(&Candidate) -> Option<u64>| {
        usable()
            .filter_map(|c| value(c).map(|v| (c.host.clone(), v)))
            .fold(None, |acc: Option<(String, u64)>, (h, v)| match acc {
                Some((_, best)) if best >= v => acc,
                _ => Some((h, v)),
            })
    };
    Err(NoFit {
        refused,
        best_memory: best_of(|c| c.memory_available_bytes),
        best_storage: best_of(|c| c.storage_free_bytes),
    })
}

/// The candidates for `demand` among `members` (host names as the snapshot knows them; a
/// member the snapshot does not know is a candidate that is not connected).
pub fn candidates<'a>(
    snapshot: &Snapshot,
    members: impl IntoIterator<Item = &'a str>,
    demand: &Demand,
) -> Vec<Candidate> {
    members
        .into_iter()
        .map(|name| {
            let host = snapshot
                .host(name)
                .or_else(|| snapshot.hosts().find(|h| h.name.eq_ignore_ascii_case(name)));
            let Some(host) = host else {
                return Candidate {
                    host: name.to_owned(),
                    connected: false,
                    in_maintenance: false,
                    memory_available_bytes: None,
                    storage_free_bytes: None,
                    has_image: false,
                    unfit: None,
                };
            };
            let facts = host.facts.as_deref();
            Candidate {
                host: host.name.to_string(),
                connected: host.status == HostStatus::Connected,
                in_maintenance: facts.is_some_and(|f| {
                    aetherv_hyperv::ops::effective_state(
                        f.maintenance.as_ref(),
                        f.cluster_node_state.as_deref(),
                    ) != aetherv_hyperv::ops::HostState::Active
                }),
                memory_available_bytes: facts.map(|f| f.memory_available_bytes),
                storage_free_bytes: facts
                    .and_then(|f| f.storage.iter().map(|s| s.free_bytes).max()),
                has_image: match (&demand.image, facts) {
                    (Some(image), Some(f)) => {
                        f.images.iter().any(|i| i.name.eq_ignore_ascii_case(image))
                    }
                    (None, _) => true,
                    (Some(_), None) => false,
                },
                unfit: None,
            }
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GIB: u64 = 1 << 30;

    fn host(name: &str, memory_gib: u64, storage_gib: u64) -> Candidate {
        Candidate {
            host: name.to_owned(),
            connected: true,
            in_maintenance: false,
            memory_available_bytes: Some(memory_gib * GIB),
            storage_free_bytes: Some(storage_gib * GIB),
            has_image: true,
            unfit: None,
        }
    }

    #[test]
    fn a_host_the_caller_found_unfit_is_refused_with_its_reason() {
        let mut roomy = host("hv01", 64, 500);
        roomy.unfit = Some("no network named prod".to_owned());
        let small = host("hv02", 8, 500);
        let chosen = choose(&[roomy.clone(), small], &demand(4, None)).unwrap();
        assert_eq!(chosen.host, "hv02");
        let err = choose(&[roomy], &demand(4, None)).unwrap_err();
        assert_eq!(
            err.refused,
            vec![(
                "hv01".to_owned(),
                Refusal::Unfit("no network named prod".to_owned())
            )]
        );
    }

    fn demand(memory_gib: u64, disk_gib: Option<u64>) -> Demand {
        Demand {
            memory_bytes: memory_gib * GIB,
            disk_bytes: disk_gib.map(|d| d * GIB),
            image: Some("Ubuntu 24.04 LTS".to_owned()),
        }
    }

    #[test]
    fn the_host_with_most_memory_that_fits_wins() {
        let hosts = [
            host("hv01", 8, 100),
            host("hv02", 32, 100),
            host("hv03", 16, 100),
        ];
        let chosen = choose(&hosts, &demand(4, Some(40))).unwrap();
        assert_eq!(chosen.host, "hv02");
        assert_eq!(chosen.memory_available_bytes, 32 * GIB);
    }

    #[test]
    fn disconnected_maintenance_imageless_and_full_hosts_are_skipped() {
        let mut down = host("hv01", 64, 500);
        down.connected = false;
        let mut maintenance = host("hv02", 60, 500);
        maintenance.in_maintenance = true;
        let mut no_image = host("hv03", 50, 500);
        no_image.has_image = false;
        let full_disk = host("hv04", 40, 10);
        let ok = host("hv05", 8, 100);
        let hosts = [down, maintenance, no_image, full_disk, ok];
        assert_eq!(choose(&hosts, &demand(4, Some(20))).unwrap().host, "hv05");
    }

    #[test]
    fn no_fit_states_the_best_figure_and_every_reason() {
        let mut down = host("hv03", 128, 500);
        down.connected = false;
        let hosts = [host("hv01", 6, 100), host("hv02", 12, 100), down];
        let err = choose(&hosts, &demand(16, None)).unwrap_err();
        assert_eq!(err.best_memory, Some(("hv02".to_owned(), 12 * GIB)));
        let text = err.to_string();
        assert!(
            text.contains("the most memory available on a connected host is 12.0 GiB on hv02"),
            "{text}"
        );
        assert!(text.contains("hv03: not connected"), "{text}");
        assert!(text.contains("hv01: 6.0 GiB available"), "{text}");
        assert_eq!(err.refused.len(), 3);
    }

    #[test]
    fn an_empty_cluster_has_no_fit() {
        let err = choose(&[], &demand(1, None)).unwrap_err();
        assert_eq!(err.to_string(), "the cluster has no member hosts");
    }

    #[test]
    fn ties_go_to_the_first_host_name() {
        let hosts = [host("hv02", 16, 100), host("hv01", 16, 100)];
        assert_eq!(choose(&hosts, &demand(1, None)).unwrap().host, "hv01");
    }

    #[test]
    fn hosts_without_facts_are_refused_as_such() {
        let mut pending = host("hv01", 0, 0);
        pending.memory_available_bytes = None;
        pending.storage_free_bytes = None;
        let err = choose(&[pending], &demand(1, None)).unwrap_err();
        assert_eq!(err.refused, vec![("hv01".to_owned(), Refusal::NoFacts)]);
        assert_eq!(err.best_memory, None);
    }

    fn arb_candidate() -> impl Strategy<Value = Candidate> {
        (
            "hv0[0-9]",
            any::<bool>(),
            any::<bool>(),
            proptest::option::of(0u64..64),
            proptest::option::of(0u64..200),
            any::<bool>(),
        )
            .prop_map(
                |(host, connected, maintenance, memory, storage, image)| Candidate {
                    host,
                    connected,
                    in_maintenance: maintenance,
                    memory_available_bytes: memory.map(|m| m * GIB),
                    storage_free_bytes: storage.map(|s| s * GIB),
                    has_image: image,
                    unfit: None,
                },
            )
    }

    proptest! {
        #[test]
        fn the_choice_is_eligible_and_maximal(
            hosts in proptest::collection::vec(arb_candidate(), 0..8),
            memory in 0u64..64,
            disk in proptest::option::of(0u64..200),
        ) {
            let demand = demand(memory, disk);
            match choose(&hosts, &demand) {
                Ok(chosen) => {
                    let eligible: Vec<&Candidate> =
                        hosts.iter().filter(|c| refusal(c, &demand).is_none()).collect();
                    prop_assert!(eligible.iter().any(|c| c.host == chosen.host));
                    for c in eligible {
                        prop_assert!(c.memory_available_bytes.unwrap_or(0) <= chosen.memory_available_bytes);
                    }
                }
                Err(no_fit) => {
                    prop_assert!(hosts.iter().all(|c| refusal(c, &demand).is_some()));
                    prop_assert_eq!(no_fit.refused.len(), hosts.len());
                }
            }
        }
    }
}
