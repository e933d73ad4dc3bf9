//! Nesting bound: hostile documents are refused with one `body` error naming the problem
//! before a parser reads them; ordinary documents with brackets in strings still parse.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use aetherv_provision::schema::{JobRequest, MAX_NESTING, MAX_YAML_BYTES, check_nesting};

fn body_error(
    result: Result<aetherv_provision::schema::Validated, aetherv_provision::Error>,
) -> String {
    let error = result.expect_err("a hostile document must be refused");
    let errors = error.field_errors().expect("a field error").to_vec();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].field, "body");
    errors[0].message.clone()
}

#[test]
fn nested_flow_mappings_are_refused_in_every_entry_point() {
    let body = "{a: ".repeat(30_000);
    for result in [
        JobRequest::from_yaml(&body),
        JobRequest::from_flat_yaml(&body),
        JobRequest::parse(&body, Some("application/yaml")),
        JobRequest::parse(&body, None),
        JobRequest::from_json(&body),
    ] {
        let message = body_error(result);
        assert!(
            message.starts_with(&format!("nesting deeper than {MAX_NESTING} levels")),
            "{message}"
        );
        let column = MAX_NESTING * 4 + 1;
        assert!(
            message.contains(&format!("line 1, column {column}")),
            "{message}"
        );
    }
}

#[test]
fn nested_flow_sequences_are_refused_as_yaml_and_json() {
    let body = "[".repeat(100_000);
    for result in [
        JobRequest::from_yaml(&body),
        JobRequest::parse(&body, None),
        JobRequest::from_json(&body),
        JobRequest::from_flat_json(&body),
    ] {
        let message = body_error(result);
        assert!(
            message.contains(&format!("nesting deeper than {MAX_NESTING} levels")),
            "{message}"
        );
    }
}

#[test]
fn a_document_at_the_bound_reaches_the_schema() {
    // MAX_NESTING levels are allowed: the error is then about the shape, not the nesting.
    let body = format!("{}{}", "[".repeat(MAX_NESTING), "]".repeat(MAX_NESTING));
    assert_eq!(check_nesting(&body), Ok(()));
    let message = body_error(JobRequest::from_yaml(&body));
    assert!(!message.contains("nesting"), "{message}");
}

#[test]
fn brackets_in_strings_block_scalars_and_comments_do_not_count() {
    // Unclosed brackets inside a string, a comment and a block scalar, then real flow
    // collections: only the real ones count (a document with more than MAX_NESTING brackets left open
    // in text, counted without regard to quoting, is refused as well).
    let open = "{[".repeat(MAX_NESTING / 2 - 2);
    let close = "]}".repeat(MAX_NESTING / 2 - 2);
    let yaml = format!(
        "schema_version: 1\ntarget_host: hv01.corp.example\nvalues:\n  vm_name: web-01\n  \
         image_name: Ubuntu 24.04\n  gb_ram: 2\n  cpu_cores: 1\n  guest_la_uid: admin\n  \
         guest_la_pw: '{open}'\n  # {close}\n  notes: |\n    {open}\n  tags: [{{a: [1]}}]\n"
    );
    assert_eq!(check_nesting(&yaml), Ok(()));
    // The document reaches the schema (which refuses `notes`), never refused for nesting.
    let error = JobRequest::from_yaml(&yaml).expect_err("unknown fields");
    let errors = error.field_errors().expect("field errors").to_vec();
    assert!(
        errors.iter().all(|e| !e.message.contains("nesting")),
        "{errors:?}"
    );
    // Two levels of mappings and three of lists around the string: 8 + 5 stays within 16.
    let open = &open[..open.len() - 4];
    let json = format!(
        "{{\"schema_version\": 1, \"values\": {{\"guest_la_pw\": \"{open}\", \"x\": [[[1]]]}}}}"
    );
    assert_eq!(check_nesting(&json), Ok(()));
}

#[test]
fn yaml_documents_over_the_yaml_bound_are_refused_before_parsing() {
    let body = "- {name: x, size: 10}\n".repeat(MAX_YAML_BYTES / 22 + 1);
    assert!(body.len() > MAX_YAML_BYTES);
    for result in [
        JobRequest::from_yaml(&body),
        JobRequest::from_flat_yaml(&body),
    ] {
        let message = body_error(result);
        assert!(
            message.starts_with("a YAML document may have at most 64 KiB"),
            "{message}"
        );
    }
    // JSON of the same size is not bound by it: the schema reads it and names the fields.
    let json = format!("{{\"vm_name\": \"{}\"}}", "x".repeat(MAX_YAML_BYTES));
    let error = JobRequest::from_flat_json(&json).expect_err("missing fields");
    let errors = error.field_errors().expect("field errors").to_vec();
    assert!(
        errors.iter().all(|e| !e.message.contains("YAML")),
        "{errors:?}"
    );
}
