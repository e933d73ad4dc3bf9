//! cargo-fuzz target: see [`aetherv_fuzz::Target::MultipartFraming`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aetherv_fuzz::Target::MultipartFraming.run(data));
