//! cargo-fuzz target: see [`aetherv_fuzz::Target::Clixml`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aetherv_fuzz::Target::Clixml.run(data));
