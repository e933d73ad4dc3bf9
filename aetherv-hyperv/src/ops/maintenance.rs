//! Host maintenance as the host keeps it: the state of the host (`active`, `draining`,
//! `maintenance`, `resuming`, `failed_drain`) and where each of its VMs went, in a small JSON
//! file in the install directory (`maintenance.json`), plus the failover cluster node's own
//! state where the host is clustered. Any server (a replica, or the same one after a restart)
//! reads it back with the host's facts ([`super::HostFacts::maintenance`]).

use serde::{Deserialize, Serialize};

use super::types::VmId;

/// The file name of the state file in the host's install directory.
pub const MAINTENANCE_FILE: &str = "maintenance.json";

/// Where a host is in its maintenance life. A host without a state file is `active`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    /// Takes new VMs (the only state placement accepts).
    #[default]
    Active,
    /// Its VMs are being moved away.
    Draining,
    /// Drained (or marked without evacuation): no new VMs until resumed.
    Maintenance,
    /// Coming back (cluster node resumed, VMs moving home).
    Resuming,
    /// The drain ended with VMs left on the host.
    FailedDrain,
}

impl HostState {
    /// Every state, in life order.
    pub const ALL: [Self; 5] = [
        Self::Active,
        Self::Draining,
        Self::Maintenance,
        Self::Resuming,
        Self::FailedDrain,
    ];

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Draining => "draining",
            Self::Maintenance => "maintenance",
            Self::Resuming => "resuming",
            Self::FailedDrain => "failed_drain",
        }
    }

    /// Parses the snake_case name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl std::fmt::Display for HostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What became of one VM of a drained host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmDisposition {
    /// Live-migrated to another host by this project.
    Migrated,
    /// Moved by the failover cluster when the node was drained.
    MovedByCluster,
    /// Shut down on the host (the request allowed it).
    ShutDown,
    /// Still on the host, running.
    LeftBehind,
    /// Excluded by the request; left alone.
    Excluded,
    /// Moved back to this host on resume.
    FailedBack,
}

impl VmDisposition {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Migrated => "migrated",
            Self::MovedByCluster => "moved_by_cluster",
            Self::ShutDown => "shut_down",
            Self::LeftBehind => "left_behind",
            Self::Excluded => "excluded",
            Self::FailedBack => "failed_back",
        }
    }
}

/// One VM of a drained host: where it went (the record failback needs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmOrigin {
    /// The VM.
    pub vm_id: VmId,
    /// Its name when it left.
    pub vm_name: String,
    /// What became of it.
    pub disposition: VmDisposition,
    /// The host it went to, when it moved.
    #[serde(default)]
    pub moved_to: Option<String>,
    /// Why it did not move, when it did not.
    #[serde(default)]
    pub reason: Option<String>,
}

/// The state file (`maintenance.json` in the install directory).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HostMaintenance {
    /// The host's state.
    #[serde(default)]
    pub state: HostState,
    /// When it entered this state (RFC 3339, the server's clock).
    #[serde(default)]
    pub since: Option<String>,
    /// Why (the operator's words).
    #[serde(default)]
    pub reason: Option<String>,
    /// The change ticket.
    #[serde(default)]
    pub ticket: Option<String>,
    /// Who asked.
    #[serde(default)]
    pub requested_by: Option<String>,
    /// The job that set this state.
    #[serde(default)]
    pub job: Option<String>,
    /// The host's VMs and what became of each (kept until the host is active again, so a
    /// restarted server can fail them back).
    #[serde(default, deserialize_with = "crate::psjson::one_or_many")]
    pub vms: Vec<VmOrigin>,
    /// The Alertmanager silence created for the window, to expire on resume.
    #[serde(default)]
    pub silence_id: Option<String>,
}

/// What to do with the failover cluster node while setting the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterNodeAction {
    /// Leave the node as it is (also on a host without a cluster).
    #[default]
    None,
    /// `Suspend-ClusterNode -Drain -Wait`: pause the node and let the cluster move its roles.
    SuspendDrain,
    /// `Resume-ClusterNode -Failback NoFailback`.
    Resume,
    /// `Resume-ClusterNode -Failback Immediate`: the cluster moves its roles back.
    ResumeFailback,
}

/// [`super::HostCall::SetMaintenance`]: write the state file and act on the cluster node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceChange {
    /// The new contents of the state file (state `active` with no VMs removes the file).
    pub record: HostMaintenance,
    /// The cluster node action, done before the file is written.
    #[serde(default)]
    pub cluster_node: ClusterNodeAction,
}

/// What [`super::HostCall::SetMaintenance`] left on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceSet {
    /// The state file as written (`None`: removed).
    #[serde(default)]
    pub record: Option<HostMaintenance>,
    /// The cluster node's state (`Up`, `Paused`, `Down`, `Joining`), where clustered.
    #[serde(default)]
    pub cluster_node_state: Option<String>,
    /// The node's drain status (`NotInitiated`, `InProgress`, `Completed`, `Failed`).
    #[serde(default)]
    pub drain_status: Option<String>,
}

/// The maintenance view of a host from its facts: the state file (or `active`) and the
/// cluster node's state. A paused node counts as maintenance even without a file.
pub fn effective_state(record: Option<&HostMaintenance>, node_state: Option<&str>) -> HostState {
    match record.map(|r| r.state) {
        Some(state) => state,
        None if node_state.is_some_and(|s| s.eq_ignore_ascii_case("Paused")) => {
            HostState::Maintenance
        }
        None => HostState::Active,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for state in HostState::ALL {
            assert_eq!(HostState::parse(state.as_str()), Some(state));
            assert_eq!(
                serde_json::to_value(state).unwrap(),
                serde_json::json!(state.as_str())
            );
        }
        assert_eq!(HostState::parse("paused"), None);
    }

    #[test]
    fn a_file_from_powershell_with_one_vm_parses() {
        let text = r#"{"state":"maintenance","since":"2026-01-01T00:00:00Z","vms":
            {"vm_id":"6f1c7b0e-9a4c-4c1e-8f43-3a1d2b6c9e01","vm_name":"web1",
             "disposition":"migrated","moved_to":"hv02"}}"#;
        let record: HostMaintenance = serde_json::from_str(text).unwrap();
        assert_eq!(record.state, HostState::Maintenance);
        assert_eq!(record.vms.len(), 1);
        assert_eq!(record.vms[0].moved_to.as_deref(), Some("hv02"));
    }

    #[test]
    fn a_paused_node_without_a_file_is_in_maintenance() {
        assert_eq!(
            effective_state(None, Some("Paused")),
            HostState::Maintenance
        );
        assert_eq!(effective_state(None, Some("Up")), HostState::Active);
        assert_eq!(effective_state(None, None), HostState::Active);
        let record = HostMaintenance {
            state: HostState::Draining,
            ..HostMaintenance::default()
        };
        assert_eq!(
            effective_state(Some(&record), Some("Up")),
            HostState::Draining
        );
    }
}
