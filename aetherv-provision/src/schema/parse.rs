//! The JSON and YAML body readers: one parser error becomes one [`FieldError`] naming the
//! field where the parser knows it.

use serde::Deserialize;

use crate::error::{Error, FieldError, Result};

/// Field name used for problems with the document as a whole.
pub(super) const BODY: &str = "body";

pub(super) fn parse_json<T: for<'de> Deserialize<'de>>(body: &str, shape: Shape) -> Result<T> {
    check_depth(body)?;
    let mut deserializer = serde_json::Deserializer::from_str(body);
    let value = serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|e| parse_error(shape, path_of(e.path()), &e.inner().to_string()))?;
    deserializer
        .end()
        .map_err(|e| parse_error(shape, None, &e.to_string()))?;
    Ok(value)
}

/// The largest YAML document read, in bytes.
///
/// libyaml (under `serde_yaml`) costs about 80 ns of CPU per byte at the deepest nesting
/// [`super::MAX_NESTING`] allows, and a refused body is read twice by the server (once by the
/// schema, once to tell a syntax error from a field error), so 64 KiB keeps every YAML body
/// within 50 ms of CPU. Provisioning bodies are a few kilobytes: every value must fit the
/// guest's KVP limits. JSON, read in linear time, is bounded only by the request size.
pub const MAX_YAML_BYTES: usize = 64 * 1024;

pub(super) fn parse_yaml<T: for<'de> Deserialize<'de>>(body: &str, shape: Shape) -> Result<T> {
    check_depth(body)?;
    if body.len() > MAX_YAML_BYTES {
        return Err(Error::InvalidRequest {
            errors: vec![FieldError::new(BODY, yaml_too_large(body.len()))],
        });
    }
    serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(body))
        .map_err(|e| parse_error(shape, path_of(e.path()), &e.inner().to_string()))
}

/// Why a YAML document of `len` bytes is refused.
pub fn yaml_too_large(len: usize) -> String {
    format!(
        "a YAML document may have at most {} KiB ({MAX_YAML_BYTES} bytes), this one has {len} \
         bytes; send it as JSON",
        MAX_YAML_BYTES / 1024
    )
}

/// Refuses a document nesting deeper than [`super::MAX_NESTING`] before a parser reads it (the
/// YAML parser's cost grows with depth times length).
fn check_depth(body: &str) -> Result<()> {
    super::check_nesting(body).map_err(|e| Error::InvalidRequest {
        errors: vec![FieldError::new(BODY, e.to_string())],
    })
}

/// Which document shape is being parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    /// `{schema_version, target_host, values}`.
    Job,
    /// The flat create body.
    Flat,
}

/// The parser's path as text without unknown (`?`) segments, `None` at the document root.
pub(super) fn path_of(path: &serde_path_to_error::Path) -> Option<String> {
    let mut text = path.to_string();
    while let Some(rest) = text.strip_suffix(".?") {
        text.truncate(rest.len());
    }
    (!text.is_empty() && text != "." && text != "?").then_some(text)
}

/// Turns a parser error into a single [`FieldError`]: unknown and duplicate fields are named
/// by their own path, everything else by the path the parser had reached (or `body`).
pub(super) fn parse_error(shape: Shape, parent: Option<String>, message: &str) -> Error {
    // serde_yaml puts its own path in front of the message ("values: unknown field ...").
    let message = match (&parent, message.split_once(": ")) {
        (Some(parent), Some((head, rest)))
            if parent == head || parent.starts_with(&format!("{head}.")) =>
        {
            rest
        }
        _ => message,
    };
    // The path may or may not already end with the offending field's name.
    let join = |name: &str| match &parent {
        _ if name.is_empty() => match &parent {
            Some(parent) => format!("{parent}.\"\""),
            None => "\"\"".to_owned(),
        },
        Some(parent) if parent == name || parent.ends_with(&format!(".{name}")) => parent.clone(),
        Some(parent) => format!("{parent}.{name}"),
        None => name.to_owned(),
    };
    let error = if let Some(rest) = message.strip_prefix("unknown field `") {
        let (name, tail) = rest.split_once('`').unwrap_or((rest, ""));
        let detail = if name == "hyperv_host" && shape == Shape::Job {
            "; the job schema takes the host as target_host".to_owned()
        } else if shape == Shape::Job {
            // `hyperv_host` is only a field of the flat body, and `target_cluster` sits at the
            // top level of the job schema, not in `values`.
            tail.replacen("`hyperv_host`, ", "", 1)
                .replacen("`target_cluster`, ", "", 1)
        } else {
            tail.to_owned()
        };
        FieldError::new(join(name), format!("unknown field{detail}"))
    } else if let Some(rest) = message.strip_prefix("duplicate field `") {
        let (name, tail) = rest.split_once('`').unwrap_or((rest, ""));
        FieldError::new(join(name), format!("given more than once{tail}"))
    } else {
        FieldError::new(parent.unwrap_or_else(|| BODY.to_owned()), message)
    };
    Error::InvalidRequest {
        errors: vec![error],
    }
}
