//! MCP resources: a VM (`aetherv://vms/{id}`) and a job (`aetherv://jobs/{id}`), read through
//! the REST handlers of `GET /api/v1/vms/{id}` and `GET /api/v1/jobs/{id}`, so a resource says
//! exactly what the API says. Both are offered as URI templates: the ids come from `list_vms`,
//! `list_jobs` or the answer of a tool that started a job.

use axum::Json;
use axum::extract::{Path, State};
use rmcp::ErrorData;
use rmcp::model::{ReadResourceResult, ResourceContents, ResourceTemplate};
use serde_json::json;

use crate::api::{inventory, jobs};
use crate::error::ApiError;
use crate::state::AppState;

/// Scheme and authority every resource URI starts with.
const PREFIX: &str = "aetherv://";

/// MIME type of every resource's text.
const MIME: &str = "application/json";

/// What a resource URI names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Target {
    /// `aetherv://vms/{id}`.
    Vm(String),
    /// `aetherv://jobs/{id}`.
    Job(String),
}

/// The two URI templates.
pub(super) fn templates() -> Vec<ResourceTemplate> {
    vec![
        ResourceTemplate::new("aetherv://vms/{id}", "vm")
            .with_title("A VM")
            .with_description(
                "One VM as GET /api/v1/vms/{id} answers it: host, state, memory, disks, \
                 networks, provisioning status. The id is a VM id from list_vms.",
            )
            .with_mime_type(MIME),
        ResourceTemplate::new("aetherv://jobs/{id}", "job")
            .with_title("A job")
            .with_description(
                "One job as GET /api/v1/jobs/{id} answers it: type, status, progress, steps, \
                 error. The id is the job_id a tool answered or one from list_jobs.",
            )
            .with_mime_type(MIME),
    ]
}

/// Parses a resource URI. The id is one path segment: no further `/`, `?` or `#`, at most
/// 200 characters.
///
/// # Errors
///
/// The MCP `invalid_params` error naming the URI forms it accepts.
pub(super) fn parse(uri: &str) -> Result<Target, ErrorData> {
    let unknown = || {
        ErrorData::invalid_params(
            "unknown resource; use aetherv://vms/{id} or aetherv://jobs/{id}",
            Some(json!({ "uri": shorten(uri) })),
        )
    };
    let rest = uri.strip_prefix(PREFIX).ok_or_else(unknown)?;
    let (kind, id) = rest.split_once('/').ok_or_else(unknown)?;
    if id.is_empty() || id.len() > 200 || id.contains(['/', '?', '#']) {
        return Err(unknown());
    }
    match kind {
        "vms" => Ok(Target::Vm(id.to_owned())),
        "jobs" => Ok(Target::Job(id.to_owned())),
        _ => Err(unknown()),
    }
}

/// Reads one resource.
///
/// # Errors
///
/// `invalid_params` for a URI that names nothing we serve; `resource_not_found` (with the API's
/// own message) when the VM or job does not exist.
pub(super) async fn read(state: AppState, uri: &str) -> Result<ReadResourceResult, ErrorData> {
    let value = match parse(uri)? {
        Target::Vm(id) => {
            let Json(view) = inventory::vm(State(state), Path(id))
                .await
                .map_err(|e| not_found(uri, &e))?;
            serde_json::to_string_pretty(&view)
        }
        Target::Job(id) => {
            let Json(view) = jobs::get(State(state), Path(id))
                .await
                .map_err(|e| not_found(uri, &e))?;
            serde_json::to_string_pretty(&view)
        }
    }
    .map_err(|e| ErrorData::internal_error(format!("cannot encode the resource: {e}"), None))?;
    Ok(ReadResourceResult::new(vec![
        ResourceContents::TextResourceContents {
            uri: uri.to_owned(),
            mime_type: Some(MIME.to_owned()),
            text: value,
            meta: None,
        },
    ]))
}

fn not_found(uri: &str, error: &ApiError) -> ErrorData {
    ErrorData::resource_not_found(
        error.message.clone(),
        Some(json!({ "uri": shorten(uri), "code": error.code })),
    )
}

/// At most 200 characters of a caller's URI, for error data.
fn shorten(uri: &str) -> String {
    uri.chars().take(200).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn uris_name_a_vm_or_a_job() {
        assert_eq!(
            parse("aetherv://vms/0b1c-2d").unwrap(),
            Target::Vm("0b1c-2d".into())
        );
        assert_eq!(
            parse("aetherv://jobs/job-7").unwrap(),
            Target::Job("job-7".into())
        );
        for bad in [
            "aetherv://vms/",
            "aetherv://vms",
            "aetherv://hosts/h1",
            "aetherv://vms/a/b",
            "aetherv://jobs/x?y",
            "https://vms/x",
            "",
        ] {
            let error = parse(bad).unwrap_err();
            assert!(error.message.contains("aetherv://vms/{id}"), "{bad}");
        }
        let long = format!("aetherv://vms/{}", "a".repeat(201));
        assert!(parse(&long).is_err());
    }

    #[test]
    fn templates_cover_both_forms() {
        let uris: Vec<String> = templates().into_iter().map(|t| t.uri_template).collect();
        assert_eq!(uris, ["aetherv://vms/{id}", "aetherv://jobs/{id}"]);
    }
}
