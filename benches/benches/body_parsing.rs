//! CPU cost of reading a provisioning body, hostile ones included.
//!
//! Each body goes through what the server does with it. A YAML body over [`MAX_YAML_BYTES`]
//! (64 KiB) is refused after the linear nesting scan. Otherwise the schema reads it
//! ([`JobRequest::parse`], which runs the nesting bound [`check_nesting`] first) and, only when
//! the schema refuses the body, a second bounded parse into nothing (`serde_yaml` /
//! `serde_json` into `IgnoredAny`) tells a body that is not YAML at all (400) from one with
//! wrong fields (422). The bodies below are all refused, so each costs both parses.
//!
//! Bodies: 30,000 nested `{a: ` (120 KB) and 100,000 `[` (100 KB), both again up to the
//! server's 256 KB request limit; the deepest documents the bound accepts, filled up to the
//! YAML bound; a plain list of that size; a plain list of 256 KB (over the YAML bound).
//!
//! Printed first: the worst time of one body over 30 runs; the work is single-threaded and
//! never waits, so this wall time is an upper bound of its CPU time
//! (`/proc/thread-self/schedstat` where the kernel fills it in; it only advances at scheduler
//! ticks, so sub-millisecond work can read as 0); target: at most 50 ms. Then criterion's
//! means.
//!
//! `BODY_BENCH_UNBOUNDED=1` also times `serde_yaml` alone (no bound) once on the two hostile
//! bodies, for comparison (seconds each).
//!
//! Run: `cargo bench -p aetherv-benches --bench body_parsing`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use aetherv_provision::schema::{
    BodyFormat, JobRequest, MAX_NESTING, MAX_YAML_BYTES, check_nesting,
};
use criterion::Criterion;

const LIMIT: usize = 256 * 1024;

/// CPU time this thread has used so far.
fn thread_cpu() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns = text.split_whitespace().next()?.parse::<u64>().ok()?;
    // Some kernels (sandboxes) leave the counter at zero.
    (ns > 0).then(|| Duration::from_nanos(ns))
}

/// What the server does with a body: a YAML body over the YAML bound is refused after the
/// nesting scan; otherwise the schema, then on refusal the bound and the syntax check.
fn read_body(body: &str) -> bool {
    let hint = Some("application/yaml");
    if body.len() > MAX_YAML_BYTES {
        black_box(check_nesting(body).is_ok());
        return false;
    }
    if JobRequest::parse(body, hint).is_ok() {
        return true;
    }
    if check_nesting(body).is_err() {
        return false;
    }
    // Well-formed or not, the body was refused; the second parse only picks 400 or 422.
    black_box(match BodyFormat::detect(body, hint) {
        BodyFormat::Json => serde_json::from_str::<serde::de::IgnoredAny>(body).is_ok(),
        BodyFormat::Yaml => serde_yaml::from_str::<serde::de::IgnoredAny>(body).is_ok(),
    });
    false
}

fn fill(head: &str, item: &str, tail: &str) -> String {
    let mut body = head.to_owned();
    while body.len() + item.len() + tail.len() <= MAX_YAML_BYTES {
        body.push_str(item);
    }
    body.push_str(tail);
    body
}

fn bodies() -> Vec<(&'static str, String)> {
    let deep_open = "[".repeat(MAX_NESTING);
    let deep_close = "]".repeat(MAX_NESTING);
    vec![
        ("mappings_30k", "{a: ".repeat(30_000)),
        ("lists_100k", "[".repeat(100_000)),
        ("mappings_limit", "{a: ".repeat(LIMIT / 4)),
        ("lists_limit", "[".repeat(LIMIT)),
        (
            "deepest_accepted_list",
            fill(&deep_open, "1, ", &deep_close),
        ),
        (
            "deepest_accepted_mapping",
            fill(
                &"{a: ".repeat(MAX_NESTING - 1),
                "{b: 1}, ",
                &"}".repeat(MAX_NESTING - 1),
            ),
        ),
        (
            "flat_list",
            fill("values:\n", "  - {name: x, size: 10}\n", ""),
        ),
        // Over the YAML bound, up to the request limit: refused after the nesting scan.
        (
            "yaml_over_bound",
            "- {name: x, size: 10}\n".repeat(LIMIT / 22),
        ),
    ]
}

fn main() {
    let bodies = bodies();
    println!("worst CPU per body over 30 runs (target <= 50 ms):");
    for (name, body) in &bodies {
        let mut worst = Duration::ZERO;
        for _ in 0..30 {
            let (cpu, wall) = (thread_cpu(), Instant::now());
            black_box(read_body(black_box(body)));
            let spent = match (cpu, thread_cpu()) {
                (Some(before), Some(after)) => after.saturating_sub(before),
                _ => wall.elapsed(),
            };
            worst = worst.max(spent);
        }
        println!(
            "  {name:<26} {:>7} bytes  worst {:>8.3} ms",
            body.len(),
            worst.as_secs_f64() * 1e3
        );
    }
    if std::env::var_os("BODY_BENCH_UNBOUNDED").is_some() {
        println!("serde_yaml alone, no bound, one run:");
        for (name, body) in bodies.iter().take(2) {
            let (cpu, wall) = (thread_cpu(), Instant::now());
            let _ = black_box(serde_yaml::from_str::<serde::de::IgnoredAny>(black_box(
                body,
            )));
            let spent = match (cpu, thread_cpu()) {
                (Some(before), Some(after)) => after.saturating_sub(before),
                _ => wall.elapsed(),
            };
            println!("  {name:<26} {:>8.3} ms", spent.as_secs_f64() * 1e3);
        }
    }

    let mut criterion = Criterion::default()
        .sample_size(20)
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let mut group = criterion.benchmark_group("body_parsing");
    for (name, body) in &bodies {
        group.bench_function(*name, |b| b.iter(|| read_body(black_box(body))));
    }
    group.finish();
    criterion.final_summary();
}
