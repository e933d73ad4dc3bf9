//! Every fuzz target on stable, bounded: its seeds, then inputs derived from them and random
//! bytes from a fixed seed. A panic fails the test; the slowest input of each target is
//! printed (speed is reported, not asserted).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use aetherv_fuzz::Target;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

/// Derived inputs per target (on top of the seeds); `AETHERV_FUZZ_CASES` changes it.
const DEFAULT_CASES: usize = 1500;

/// The largest input tried, in bytes.
const MAX_INPUT: usize = 64 * 1024;

fn cases() -> usize {
    std::env::var("AETHERV_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

/// One input derived from the seeds: a bit flip, a truncation, a splice of two seeds, a
/// repeated slice, an inserted run of one byte, or plain random bytes.
fn derive(rng: &mut StdRng, seeds: &[Vec<u8>]) -> Vec<u8> {
    if seeds.is_empty() || rng.gen_ratio(1, 8) {
        let len = rng.gen_range(0..512);
        return (0..len).map(|_| rng.r#gen()).collect();
    }
    let mut data = seeds[rng.gen_range(0..seeds.len())].clone();
    for _ in 0..rng.gen_range(1..4) {
        let len = data.len();
        match rng.gen_range(0..6) {
            0 if len > 0 => {
                let i = rng.gen_range(0..len);
                data[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if len > 0 => data.truncate(rng.gen_range(0..len)),
            2 => {
                let other = &seeds[rng.gen_range(0..seeds.len())];
                let cut = rng.gen_range(0..=len);
                let from = rng.gen_range(0..=other.len());
                data.truncate(cut);
                data.extend_from_slice(&other[from..]);
            }
            3 if len > 0 => {
                let start = rng.gen_range(0..len);
                let end = rng.gen_range(start..=len.min(start + 64));
                let slice = data[start..end].to_vec();
                for _ in 0..rng.gen_range(1..200) {
                    data.extend_from_slice(&slice);
                }
            }
            4 => {
                let at = rng.gen_range(0..=len);
                let byte = *[b'{', b'[', b'<', b'"', b'\\', b':', 0, 0xff]
                    .get(rng.gen_range(0..8))
                    .unwrap();
                let run = vec![byte; rng.gen_range(1..2000)];
                data.splice(at..at, run);
            }
            _ if len > 0 => {
                let i = rng.gen_range(0..len);
                data[i] = rng.r#gen();
            }
            _ => {}
        }
        data.truncate(MAX_INPUT);
    }
    data
}

fn run_target(target: Target) {
    let seeds = target.seeds();
    assert!(!seeds.is_empty(), "{} has no seeds", target.name());
    let mut rng = StdRng::seed_from_u64(0x00ae_7e4f);
    let mut slowest = (Duration::ZERO, 0_usize);
    let mut inputs = 0_usize;
    let mut run = |data: &[u8]| {
        let started = Instant::now();
        target.run(data);
        let took = started.elapsed();
        if took > slowest.0 {
            slowest = (took, data.len());
        }
        inputs += 1;
    };
    for seed in &seeds {
        run(seed);
    }
    for _ in 0..cases() {
        let data = derive(&mut rng, &seeds);
        run(&data);
    }
    println!(
        "fuzz {}: {inputs} inputs ({} seeds), slowest {:.1} ms ({} bytes)",
        target.name(),
        seeds.len(),
        slowest.0.as_secs_f64() * 1000.0,
        slowest.1
    );
}

#[test]
fn ntlm_messages() {
    run_target(Target::NtlmMessages);
}

#[test]
fn wsman_envelopes() {
    run_target(Target::WsmanEnvelopes);
}

#[test]
fn multipart_framing() {
    run_target(Target::MultipartFraming);
}

#[test]
fn clixml() {
    run_target(Target::Clixml);
}

#[test]
fn powershell_json() {
    run_target(Target::PowershellJson);
}

#[test]
fn kvp_keys() {
    run_target(Target::KvpKeys);
}

#[test]
fn provisioning_body() {
    run_target(Target::ProvisioningBody);
}

#[test]
fn hosts_file() {
    run_target(Target::HostsFile);
}

#[test]
fn every_target_has_a_test_and_a_binary() {
    let manifest =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
    let this = std::fs::read_to_string(file!())
        .or_else(|_| {
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/stable.rs"))
        })
        .unwrap();
    for target in Target::ALL {
        let name = target.name();
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "{name} has no [[bin]] in Cargo.toml"
        );
        assert!(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(format!("fuzz_targets/{name}.rs"))
                .is_file(),
            "fuzz_targets/{name}.rs is missing"
        );
        assert!(
            this.contains(&format!("fn {name}()")),
            "{name} has no stable test"
        );
    }
}
