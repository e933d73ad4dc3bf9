//! cargo-fuzz target: see [`aetherv_fuzz::Target::KvpKeys`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aetherv_fuzz::Target::KvpKeys.run(data));
