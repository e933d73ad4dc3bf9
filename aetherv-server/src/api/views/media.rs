//! The provisioning ISOs this server builds and deploys, as the host view shows them.

use serde::Serialize;
use utoipa::ToSchema;

use crate::media::ProvisioningMedia;

/// A provisioning ISO this server builds at start and deploys to every host's install
/// directory with the host scripts (or, when it could not be built, why not).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProvisioningMediaView {
    /// `linux` or `windows`.
    pub os_family: String,
    /// File name in the host's install directory (`LinuxProvisioning.iso`,
    /// `WindowsProvisioning.iso`).
    pub file_name: String,
    /// Whether the server built it (when false, `reason` says why and guests of this family
    /// need an ISO placed on the host some other way).
    pub built: bool,
    /// The content-derived version (the ISO's `version` file; the version the host sends
    /// in `hlvmm.meta.version`).
    pub version: Option<String>,
    /// Lowercase hex SHA-256 of the whole ISO.
    pub sha256: Option<String>,
    /// Size in bytes.
    pub size_bytes: Option<u64>,
    /// Whether the host's facts list this ISO with this version in its install directory.
    pub deployed: bool,
    /// Why it was not built.
    pub reason: Option<String>,
}

/// The server's provisioning ISOs, each marked deployed when `facts` list an ISO of the same
/// file name and version.
pub fn provisioning_media(
    media: &ProvisioningMedia,
    facts: Option<&aetherv_hyperv::ops::HostFacts>,
) -> Vec<ProvisioningMediaView> {
    let on_host = |file_name: &str, version: &str| {
        facts.is_some_and(|f| {
            f.provisioning_isos.iter().any(|i| {
                let name = i.path.rsplit(['\\', '/']).next().unwrap_or_default();
                name.eq_ignore_ascii_case(file_name) && i.version.as_deref() == Some(version)
            })
        })
    };
    let built = media.built.iter().map(|iso| ProvisioningMediaView {
        os_family: iso.os_family.to_owned(),
        file_name: iso.file_name.to_owned(),
        built: true,
        version: Some(iso.version.clone()),
        sha256: Some(iso.sha256.clone()),
        size_bytes: Some(iso.size_bytes),
        deployed: on_host(iso.file_name, &iso.version),
        reason: None,
    });
    let missing = media.missing.iter().map(|m| ProvisioningMediaView {
        os_family: m.os_family.to_owned(),
        file_name: m.file_name.to_owned(),
        built: false,
        version: None,
        sha256: None,
        size_bytes: None,
        deployed: false,
        reason: Some(m.reason.clone()),
    });
    let mut out: Vec<ProvisioningMediaView> = built.chain(missing).collect();
    out.sort_by(|a, b| a.os_family.cmp(&b.os_family));
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::media::{BuiltIso, MissingIso};

    #[test]
    fn built_isos_are_deployed_only_with_their_version_and_missing_ones_say_why() {
        let media = ProvisioningMedia {
            built: vec![BuiltIso {
                os_family: "windows",
                file_name: "WindowsProvisioning.iso",
                path: std::path::PathBuf::from("/tmp/w.iso"),
                version: "0123456789abcdef".to_owned(),
                sha256: "ab".repeat(32),
                size_bytes: 401_408,
                files: vec!["version".to_owned()],
            }],
            missing: vec![MissingIso {
                os_family: "linux",
                file_name: "LinuxProvisioning.iso",
                reason: "no Linux guest agent".to_owned(),
            }],
        };
        let facts = |version: &str| {
            serde_json::from_value::<aetherv_hyperv::ops::HostFacts>(serde_json::json!({
                "name": "hv01", "fqdn": "hv01.lab", "logical_processors": 8,
                "memory_total_bytes": 1, "memory_available_bytes": 1, "vm_path": "C:\\VMs",
                "provisioning_isos": [{"os_family": "windows",
                    "path": "C:\\Program Files\\Aetherv\\WindowsProvisioning.iso",
                    "size_bytes": 401_408, "version": version}]
            }))
            .unwrap()
        };
        let current = facts("0123456789abcdef");
        let view = provisioning_media(&media, Some(&current));
        assert_eq!(view.len(), 2);
        assert_eq!(view[0].os_family, "linux");
        assert!(!view[0].built && !view[0].deployed);
        assert_eq!(view[0].reason.as_deref(), Some("no Linux guest agent"));
        assert!(view[1].built && view[1].deployed);
        assert_eq!(view[1].sha256.as_deref(), Some("ab".repeat(32).as_str()));
        let old = facts("fedcba9876543210");
        assert!(!provisioning_media(&media, Some(&old))[1].deployed);
        assert!(!provisioning_media(&media, None)[1].deployed);
    }
}
