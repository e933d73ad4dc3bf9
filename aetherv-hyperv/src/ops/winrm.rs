//! [`HyperVHost`] over a [`PowerShellExecutor`]: one deployed script per operation.

use async_trait::async_trait;
use bytes::Bytes;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::scripts;
use super::types::*;
use super::{HyperVHost, check_power};
use crate::error::{Error, Result};
use crate::executor::PowerShellExecutor;
use crate::protocol::{self, RESULT_BEGIN, RESULT_END, ScriptFailure};

/// Hyper-V's KVP key limit in bytes.
const KVP_MAX_KEY_BYTES: usize = 511;
/// Hyper-V's KVP value limit in bytes.
const KVP_MAX_VALUE_BYTES: usize = 2047;

/// [`HyperVHost`] over a [`PowerShellExecutor`] (in production a
/// [`crate::executor::WinRmExecutor`]).
#[derive(Debug, Clone)]
pub struct WinRmHyperVHost<E> {
    executor: E,
}

/// What an error message should name besides host and operation.
#[derive(Debug, Default)]
struct Subject {
    vm: Option<String>,
    verb: Option<&'static str>,
    destination: Option<String>,
}

impl Subject {
    fn vm(id: VmId) -> Self {
        Self {
            vm: Some(id.to_string()),
            ..Self::default()
        }
    }
}

impl<E: PowerShellExecutor> WinRmHyperVHost<E> {
    /// Operations on the host `executor` talks to.
    pub fn new(executor: E) -> Self {
        Self { executor }
    }

    /// The executor.
    pub fn executor(&self) -> &E {
        &self.executor
    }

    fn host(&self) -> String {
        self.executor.host().to_owned()
    }

    fn request_body<T: serde::Serialize>(
        &self,
        operation: &'static str,
        request: &T,
    ) -> Result<Value> {
        serde_json::to_value(request).map_err(|e| Error::OperationOutput {
            host: self.host(),
            operation,
            detail: format!("request could not be serialized: {e}"),
        })
    }

    fn refuse(&self, operation: &'static str, detail: impl Into<String>) -> Error {
        Error::InvalidRequest {
            host: self.host(),
            operation,
            detail: detail.into(),
        }
    }

    /// Runs `script` with `request` and returns its `data` as `T`.
    async fn call<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        script: &str,
        request: &Value,
        subject: Subject,
    ) -> Result<T> {
        let host = self.host();
        let output_error = |detail: String| Error::OperationOutput {
            host: host.clone(),
            operation,
            detail,
        };
        let stdin = serde_json::to_vec(request)
            .map_err(|e| output_error(format!("request could not be serialized: {e}")))?;
        let output = self.executor.run_script(script, Bytes::from(stdin)).await?;
        let result = protocol::parse_result(script, &output.stdout).map_err(|e| {
            let stderr = output.stderr.trim();
            let stderr: String = stderr.chars().take(600).collect();
            if stderr.is_empty() {
                output_error(format!("{e} (exit code {})", output.exit_code))
            } else {
                output_error(format!(
                    "{e} (exit code {}; stderr: {stderr})",
                    output.exit_code
                ))
            }
        })?;
        if !result.ok {
            let failure = result.error.unwrap_or_else(|| ScriptFailure {
                code: "Unknown".to_owned(),
                message: "the script reported failure without an error".to_owned(),
            });
            let details = result_details(&output.stdout);
            return Err(map_failure(&host, operation, failure, &details, subject));
        }
        let data = result.data.unwrap_or(Value::Null);
        serde_json::from_value(data)
            .map_err(|e| output_error(format!("{script} returned data of the wrong shape: {e}")))
    }
}

/// The `error.details` object of the (first) result document in `stdout` (or, as the
/// simulator writes it, the `data` of a failed result), or `Null`.
fn result_details(stdout: &str) -> Value {
    let mut inside = false;
    let mut body = Vec::new();
    for line in stdout.lines() {
        let trimmed = line.trim();
        if !inside && trimmed == RESULT_BEGIN {
            inside = true;
        } else if inside && trimmed == RESULT_END {
            break;
        } else if inside {
            body.push(line);
        }
    }
    serde_json::from_str::<Value>(&body.join("\n"))
        .ok()
        .and_then(|v| {
            v.get("error")
                .and_then(|e| e.get("details"))
                .filter(|d| !d.is_null())
                .or_else(|| {
                    v.get("data")
                        .filter(|_| v.get("ok") == Some(&Value::Bool(false)))
                })
                .cloned()
        })
        .unwrap_or(Value::Null)
}

fn detail_str(details: &Value, key: &str) -> Option<String> {
    match details.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

fn detail_u64(details: &Value, key: &str) -> u64 {
    details.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// Maps a script failure to the crate's error variants.
fn map_failure(
    host: &str,
    operation: &'static str,
    failure: ScriptFailure,
    details: &Value,
    subject: Subject,
) -> Error {
    let host = host.to_owned();
    let vm = detail_str(details, "vm")
        .or(subject.vm)
        .unwrap_or_else(|| "?".to_owned());
    match failure.code.as_str() {
        "VmNotFound" => Error::UnknownVm { host, vm },
        "VmExists" => Error::VmExists {
            host,
            vm: detail_str(details, "name").unwrap_or(vm),
        },
        "InvalidVmState" => Error::InvalidVmState {
            host,
            vm,
            state: detail_str(details, "state_name")
                .or_else(|| detail_str(details, "state"))
                .unwrap_or_else(|| "in another state".to_owned()),
            operation: subject.verb.unwrap_or(operation),
        },
        "InsufficientMemory" => Error::InsufficientMemory {
            host,
            vm,
            required: detail_u64(details, "required_bytes"),
            available: detail_u64(details, "available_bytes"),
        },
        "InsufficientStorage" => Error::InsufficientStorage {
            host,
            location: detail_str(details, "location").unwrap_or_default(),
            required: detail_u64(details, "required_bytes"),
            available: detail_u64(details, "available_bytes"),
        },
        "ImageNotFound" => Error::UnknownImage {
            host,
            image: detail_str(details, "image").unwrap_or(failure.message),
        },
        "SharedDisk" => Error::SharedDisk {
            host,
            vm,
            path: detail_str(details, "path").unwrap_or_default(),
        },
        "MigrationIncompatible" => Error::MigrationIncompatible {
            host,
            vm,
            destination: detail_str(details, "destination")
                .or(subject.destination)
                .unwrap_or_default(),
            detail: failure.message,
        },
        _ => Error::ScriptFailed {
            host,
            operation,
            code: failure.code,
            message: failure.message,
        },
    }
}

/// A VM or folder name Hyper-V and the file system accept.
fn check_vm_name(name: &str) -> std::result::Result<(), String> {
    if name.trim().is_empty()
        || name.trim() != name
        || name.len() > 100
        || name.contains(['\\', '/', ':', '*', '?', '"', '<', '>', '|'])
        || name.chars().any(char::is_control)
        || name == "."
        || name == ".."
    {
        Err(format!(
            "VM name {name:?} must be 1-100 characters without path characters or surrounding spaces"
        ))
    } else {
        Ok(())
    }
}

/// An absolute Windows path (`X:\...` or `\\server\share\...`) without `.`/`..` segments or
/// wildcards.
fn check_windows_path(path: &str) -> std::result::Result<(), String> {
    let bytes = path.as_bytes();
    let drive =
        bytes.len() >= 3 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' && bytes[2] == b'\\';
    let unc = path.starts_with(r"\\") && path.len() > 2;
    if !(drive || unc) {
        return Err(format!("{path:?} is not an absolute Windows path"));
    }
    let rest = if drive {
        path.get(3..).unwrap_or_default()
    } else {
        path.get(2..).unwrap_or_default()
    };
    if rest
        .split('\\')
        .any(|seg| seg == "." || seg == ".." || seg.trim().is_empty() && !seg.is_empty())
        || path.contains(['*', '?', '"', '<', '>', '|', '/'])
        || path.chars().any(char::is_control)
        || path.get(2..).is_some_and(|p| p.contains(':'))
    {
        return Err(format!(
            "{path:?} contains relative segments, wildcards or invalid characters"
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
struct KvpWritten {
    #[allow(dead_code)]
    written: u64,
}

#[derive(Deserialize)]
struct KvpRemoved {
    #[serde(default, deserialize_with = "crate::psjson::one_or_many")]
    removed: Vec<String>,
}

#[async_trait]
impl<E: PowerShellExecutor> HyperVHost for WinRmHyperVHost<E> {
    fn host_name(&self) -> &str {
        self.executor.host()
    }

    async fn facts(&self) -> Result<HostFacts> {
        self.call(
            "facts",
            scripts::GET_HOST_FACTS,
            &json!({}),
            Subject::default(),
        )
        .await
    }

    async fn inventory(&self) -> Result<Inventory> {
        self.call(
            "inventory",
            scripts::GET_INVENTORY,
            &json!({}),
            Subject::default(),
        )
        .await
    }

    async fn vm(&self, id: VmId) -> Result<Vm> {
        let inventory: Inventory = self
            .call(
                "get VM",
                scripts::GET_INVENTORY,
                &json!({ "ids": [id] }),
                Subject::vm(id),
            )
            .await?;
        inventory
            .vms
            .into_iter()
            .find(|vm| vm.id == id)
            .ok_or_else(|| Error::UnknownVm {
                host: self.host(),
                vm: id.to_string(),
            })
    }

    async fn power(&self, id: VmId, action: PowerAction) -> Result<PowerOutcome> {
        let subject = Subject {
            verb: Some(action.verb()),
            ..Subject::vm(id)
        };
        let outcome: PowerOutcome = self
            .call(
                "power",
                scripts::SET_VM_POWER_STATE,
                &json!({ "id": id, "action": action }),
                subject,
            )
            .await?;
        if outcome.id != id {
            return Err(Error::OperationOutput {
                host: self.host(),
                operation: "power",
                detail: format!("asked for VM {id}, the script answered for {}", outcome.id),
            });
        }
        Ok(outcome)
    }

    async fn delete_vm(&self, id: VmId, delete_disks: bool) -> Result<DeletedVm> {
        let subject = Subject {
            verb: Some("be deleted"),
            ..Subject::vm(id)
        };
        self.call(
            "delete VM",
            scripts::REMOVE_MANAGED_VM,
            &json!({ "id": id, "delete_disks": delete_disks }),
            subject,
        )
        .await
    }

    async fn kvp_read_guest(&self, id: VmId) -> Result<GuestKvp> {
        self.call(
            "read guest KVP",
            scripts::GET_VM_KVP,
            &json!({ "id": id }),
            Subject::vm(id),
        )
        .await
    }

    async fn kvp_write_host(&self, id: VmId, items: Vec<(String, String)>) -> Result<()> {
        const OP: &str = "write host KVP";
        if items.is_empty() {
            return Ok(());
        }
        for (key, value) in &items {
            if key.is_empty() || key.len() > KVP_MAX_KEY_BYTES || key.contains('\0') {
                return Err(self.refuse(
                    OP,
                    format!(
                        "KVP key {key:?} must be 1..={KVP_MAX_KEY_BYTES} bytes without NUL characters"
                    ),
                ));
            }
            if value.len() > KVP_MAX_VALUE_BYTES || value.contains('\0') {
                return Err(self.refuse(
                    OP,
                    format!(
                        "value of KVP key {key:?} is {} bytes; at most {KVP_MAX_VALUE_BYTES} without NUL characters (split it into chunks)",
                        value.len()
                    ),
                ));
            }
        }
        let _: KvpWritten = self
            .call(
                OP,
                scripts::SET_VM_KVP,
                &json!({
                    "id": id,
                    "items": items
                        .iter()
                        .map(|(name, value)| json!({ "name": name, "value": value }))
                        .collect::<Vec<_>>(),
                }),
                Subject::vm(id),
            )
            .await?;
        Ok(())
    }

    async fn kvp_remove_host(&self, id: VmId, keys: Vec<String>) -> Result<Vec<String>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(bad) = keys
            .iter()
            .find(|k| k.is_empty() || k.len() > KVP_MAX_KEY_BYTES)
        {
            return Err(self.refuse(
                "remove host KVP",
                format!("KVP key {bad:?} must be 1..={KVP_MAX_KEY_BYTES} bytes"),
            ));
        }
        let removed: KvpRemoved = self
            .call(
                "remove host KVP",
                scripts::REMOVE_VM_KVP,
                &json!({ "id": id, "keys": keys }),
                Subject::vm(id),
            )
            .await?;
        Ok(removed.removed)
    }

    async fn copy_image(&self, request: CopyImageRequest) -> Result<CopiedImage> {
        const OP: &str = "copy image";
        check_vm_name(&request.vm_name).map_err(|d| self.refuse(OP, d))?;
        check_windows_path(&request.image_path).map_err(|d| self.refuse(OP, d))?;
        if let Some(root) = &request.destination_root {
            check_windows_path(root).map_err(|d| self.refuse(OP, d))?;
        }
        let subject = Subject {
            vm: Some(request.vm_name.clone()),
            ..Subject::default()
        };
        let body = self.request_body(OP, &request)?;
        self.call(OP, scripts::COPY_GOLDEN_IMAGE, &body, subject)
            .await
    }

    async fn copy_provisioning_iso(&self, request: CopyIsoRequest) -> Result<CopiedIso> {
        const OP: &str = "copy provisioning ISO";
        check_windows_path(&request.iso_path).map_err(|d| self.refuse(OP, d))?;
        check_windows_path(&request.vm_folder).map_err(|d| self.refuse(OP, d))?;
        let body = self.request_body(OP, &request)?;
        self.call(
            OP,
            scripts::COPY_PROVISIONING_ISO,
            &body,
            Subject::default(),
        )
        .await
    }

    async fn register_vm(&self, spec: RegisterVmSpec) -> Result<Vm> {
        const OP: &str = "register VM";
        check_vm_name(&spec.name).map_err(|d| self.refuse(OP, d))?;
        check_windows_path(&spec.vm_folder).map_err(|d| self.refuse(OP, d))?;
        check_windows_path(&spec.vhdx_path).map_err(|d| self.refuse(OP, d))?;
        if let Some(iso) = &spec.iso_path {
            check_windows_path(iso).map_err(|d| self.refuse(OP, d))?;
        }
        if spec.processor_count == 0 {
            return Err(self.refuse(OP, "processor count must be at least 1"));
        }
        const MIB: u64 = 1 << 20;
        if spec.memory_startup_bytes < 512 * MIB
            || !spec.memory_startup_bytes.is_multiple_of(2 * MIB)
        {
            return Err(self.refuse(
                OP,
                format!(
                    "startup memory {} bytes must be at least 512 MiB and a multiple of 2 MiB",
                    spec.memory_startup_bytes
                ),
            ));
        }
        if let Some(d) = spec.dynamic_memory
            && !(d.minimum_bytes <= spec.memory_startup_bytes
                && spec.memory_startup_bytes <= d.maximum_bytes
                && d.minimum_bytes.is_multiple_of(2 * MIB)
                && d.maximum_bytes.is_multiple_of(2 * MIB))
        {
            return Err(self.refuse(
                OP,
                "dynamic memory needs minimum <= startup <= maximum, each a multiple of 2 MiB",
            ));
        }
        if let Some(vlan) = spec.vlan_id
            && !(1..=4094).contains(&vlan)
        {
            return Err(self.refuse(OP, format!("VLAN {vlan} is outside 1..=4094")));
        }
        let subject = Subject {
            vm: Some(spec.name.clone()),
            verb: Some("start"),
            ..Subject::default()
        };
        let body = self.request_body(OP, &spec)?;
        self.call(OP, scripts::REGISTER_MANAGED_VM, &body, subject)
            .await
    }

    async fn add_cluster_role(&self, id: VmId) -> Result<ClusterRole> {
        self.call(
            "add cluster role",
            scripts::ADD_VM_CLUSTER_ROLE,
            &json!({ "id": id }),
            Subject::vm(id),
        )
        .await
    }

    async fn remove_cluster_role(&self, id: VmId) -> Result<ClusterRole> {
        self.call(
            "remove cluster role",
            scripts::REMOVE_VM_CLUSTER_ROLE,
            &json!({ "id": id }),
            Subject::vm(id),
        )
        .await
    }

    async fn compare_vm(&self, id: VmId, target: MigrationTarget) -> Result<MigrationCheck> {
        const OP: &str = "compare VM";
        self.check_target(OP, &target)?;
        let subject = Subject {
            destination: Some(target.destination_host.clone()),
            ..Subject::vm(id)
        };
        self.call(
            OP,
            scripts::TEST_VM_MIGRATION,
            &migration_request(id, &target),
            subject,
        )
        .await
    }

    async fn move_vm(&self, id: VmId, target: MigrationTarget) -> Result<Migrated> {
        const OP: &str = "move VM";
        self.check_target(OP, &target)?;
        let subject = Subject {
            destination: Some(target.destination_host.clone()),
            verb: Some("be moved"),
            ..Subject::vm(id)
        };
        self.call(
            OP,
            scripts::MOVE_MANAGED_VM,
            &migration_request(id, &target),
            subject,
        )
        .await
    }

    async fn remove_path(&self, path: String) -> Result<RemovedPath> {
        const OP: &str = "remove path";
        check_windows_path(&path).map_err(|d| self.refuse(OP, d))?;
        if path.trim_end_matches('\\').matches('\\').count() < 2 {
            return Err(self.refuse(
                OP,
                format!("{path:?} is a volume or top-level folder; only paths inside the VM folder root are removed"),
            ));
        }
        self.call(
            OP,
            scripts::REMOVE_VM_PATH,
            &json!({ "path": path }),
            Subject::default(),
        )
        .await
    }
}

impl<E: PowerShellExecutor> WinRmHyperVHost<E> {
    fn check_target(&self, operation: &'static str, target: &MigrationTarget) -> Result<()> {
        let name = target.destination_host.trim();
        let valid = !name.is_empty()
            && name.len() <= 253
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if !valid {
            return Err(self.refuse(
                operation,
                format!(
                    "destination host {:?} is not a host name",
                    target.destination_host
                ),
            ));
        }
        if let Some(path) = &target.destination_path {
            check_windows_path(path).map_err(|d| self.refuse(operation, d))?;
        }
        Ok(())
    }

    /// Checks the allowed-state table against a known VM, then applies the action.
    pub async fn power_vm(&self, vm: &Vm, action: PowerAction) -> Result<PowerOutcome> {
        check_power(self.executor.host(), vm, action)?;
        self.power(vm.id, action).await
    }
}

fn migration_request(id: VmId, target: &MigrationTarget) -> Value {
    json!({
        "id": id,
        "destination_host": target.destination_host.trim(),
        "with_storage": target.with_storage,
        "destination_path": target.destination_path,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_checked() {
        assert!(check_windows_path(r"C:\VMs\web01").is_ok());
        assert!(check_windows_path(r"\\fs01\share\x").is_ok());
        assert!(check_windows_path(r"C:\VMs\..\Windows").is_err());
        assert!(check_windows_path(r"VMs\web01").is_err());
        assert!(check_windows_path(r"C:\VMs\*").is_err());
        assert!(check_windows_path(r"C:\VMs\a:b").is_err());
        assert!(check_vm_name("web01").is_ok());
        assert!(check_vm_name("a\\b").is_err());
        assert!(check_vm_name(" x").is_err());
    }

    #[test]
    fn details_are_found() {
        let stdout = format!(
            "{RESULT_BEGIN}\r\n{}\r\n{RESULT_END}\r\n",
            r#"{"ok":false,"error":{"code":"X","message":"m","details":{"vm":"a"}}}"#
        );
        assert_eq!(result_details(&stdout)["vm"], "a");
        assert_eq!(result_details("nothing"), Value::Null);
    }
}
