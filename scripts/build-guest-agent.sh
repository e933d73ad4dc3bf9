#!/usr/bin/env bash
# Builds the Linux guest agent as a static executable (no dependency on the guest's glibc):
#   target/x86_64-unknown-linux-gnu/release/aetherv-guest
# The explicit --target keeps the crt-static RUSTFLAGS away from build scripts and proc macros
# and puts the output in its own directory, so the rest of the workspace build is unaffected.
# Usage: scripts/build-guest-agent.sh   (honours CARGO_TARGET_DIR)
set -euo pipefail
cd "$(dirname "$0")/.."
RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked -p aetherv-guest --target x86_64-unknown-linux-gnu
out="${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release/aetherv-guest"
if command -v file >/dev/null 2>&1; then
    file "$out"
fi
echo "$out"
