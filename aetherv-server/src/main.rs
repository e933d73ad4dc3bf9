//! The aetherv server: REST API, web UI, job queue and authentication composed from the
//! library crates.
//!
//! The server arrives with its own issue; until then this binary explains what exists.

fn main() {
    println!(
        "aetherv-server is not built yet. Try the WinRM client example:\n  \
         cargo run --release -p aetherv-examples --example winrm -- --help"
    );
}
