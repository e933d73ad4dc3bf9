#!/usr/bin/env bash
# Checks the guest agent's rendered NoCloud seed with cloud-init's own schema validator:
# user-data always, network-config when the installed cloud-init knows
# `--schema-type network-config` (otherwise cloud-init's network-state parser reads it). Needs the Debian package cloud-init (scripts/test installs it).
# Usage: interop/cloud_init_schema.sh
set -euo pipefail
cd "$(dirname "$0")/.."

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
cargo run --quiet --locked -p aetherv-guest --example render-seed -- "$out" >/dev/null
seed="$out/var/lib/cloud/seed/nocloud"

echo "cloud-init $(cloud-init --version 2>&1)"
cloud-init schema --config-file "$seed/user-data"
if cloud-init schema --help 2>&1 | grep -q -- 'network-config'; then
    cloud-init schema --schema-type network-config --config-file "$seed/network-config"
else
    # Older cloud-init (Debian 12 has 22.4): parse it with cloud-init's own network-state
    # parser, under cloud-init's own interpreter.
    python="$(head -1 "$(command -v cloud-init)" | sed 's/^#! *//')"
    $python interop/cloud_init_network.py "$seed/network-config"
fi
