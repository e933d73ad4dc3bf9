//! Runnable examples for the aetherv crates; see the `examples/` directory.
