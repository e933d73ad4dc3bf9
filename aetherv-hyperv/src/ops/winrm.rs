//! [`HyperVHost`] over a [`PowerShellExecutor`]: one deployed script per operation.

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::Value;

use super::call::Subject;
use super::types::*;
use super::{HostCall, HostReply, HyperVHost, HyperVHostExt, check_power};
use crate::error::{Error, Result};
use crate::executor::PowerShellExecutor;
use crate::protocol::{self, RESULT_BEGIN, RESULT_END, ScriptFailure};

/// [`HyperVHost`] over a [`PowerShellExecutor`] (in production a
/// [`crate::executor::WinRmExecutor`]).
#[derive(Debug, Clone)]
pub struct WinRmHyperVHost<E> {
    executor: E,
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

    /// Runs `script` with `request`.
    async fn execute(
        &self,
        operation: &'static str,
        script: &str,
        request: &Value,
    ) -> Result<crate::executor::ScriptOutput> {
        let stdin = serde_json::to_vec(request).map_err(|e| Error::OperationOutput {
            host: self.host(),
            operation,
            detail: format!("request could not be serialized: {e}"),
        })?;
        self.executor.run_script(script, Bytes::from(stdin)).await
    }

    /// The `data` of a script's output, or the error its result document reports.
    fn data_of(
        &self,
        operation: &'static str,
        script: &str,
        output: &crate::executor::ScriptOutput,
        subject: Subject,
    ) -> Result<Value> {
        let host = self.host();
        let output_error = |detail: String| Error::OperationOutput {
            host: host.clone(),
            operation,
            detail,
        };
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
        Ok(result.data.unwrap_or(Value::Null))
    }
}

/// A successful result document whose `data` reads as a `T`.
#[derive(serde::Deserialize)]
struct TypedResult<T> {
    ok: bool,
    #[serde(default = "Option::default")]
    data: Option<T>,
}

/// The `data` of the result document in `stdout` when the script succeeded and the data has
/// `T`'s shape, read without an intermediate JSON tree; `None` otherwise.
fn typed_success<T: serde::de::DeserializeOwned>(script: &str, stdout: &str) -> Option<T> {
    let text = protocol::result_text(script, stdout).ok()?;
    let result: TypedResult<T> = serde_json::from_str(&text).ok()?;
    result.data.filter(|_| result.ok)
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

#[async_trait]
impl<E: PowerShellExecutor> HyperVHost for WinRmHyperVHost<E> {
    fn host_name(&self) -> &str {
        self.executor.host()
    }

    async fn call(&self, call: HostCall) -> Result<HostReply> {
        let host = self.host();
        call.validate(&host)?;
        if let Some(reply) = call.trivial_reply() {
            return Ok(reply);
        }
        let kind = call.kind();
        let request = call.request(&host)?;
        let output = self
            .execute(kind.describe(), kind.script(), &request)
            .await?;
        // The large answers (a host's inventory, its facts) are read straight into their
        // types when they are successful and well-formed; anything else takes the general
        // path below, which reports failures and wrong shapes.
        match &call {
            HostCall::Inventory | HostCall::InventorySince(_) => {
                if let Some(inventory) = typed_success(kind.script(), &output.stdout) {
                    return Ok(HostReply::Inventory(inventory));
                }
            }
            HostCall::Facts | HostCall::FactsInRoots(_) => {
                if let Some(facts) = typed_success(kind.script(), &output.stdout) {
                    return Ok(HostReply::Facts(Box::new(facts)));
                }
            }
            _ => {}
        }
        let data = self.data_of(kind.describe(), kind.script(), &output, call.subject())?;
        call.parse_reply(&host, data)
    }
}

impl<E: PowerShellExecutor> WinRmHyperVHost<E> {
    /// Checks the allowed-state table against a known VM, then applies the action.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidVmState`] without calling the host, or the host's error.
    pub async fn power_vm(&self, vm: &Vm, action: PowerAction) -> Result<PowerOutcome> {
        check_power(self.executor.host(), vm, action)?;
        self.power(vm.id, action).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

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
