#!/usr/bin/env bash
# Supply chain: `cargo deny check` against deny.toml (licences, duplicate major versions and
# wildcards, allowed sources, RustSec advisories).
#
# cargo-deny is built from crates.io (--locked, pinned version) when it is missing. The RustSec
# advisory database is a git repository that cargo-deny fetches from GitHub:
# - AETHERV_ADVISORY_DB=/path/to/a/clone of github.com/rustsec/advisory-db is used instead
#   when set (for machines that reach crates.io but not GitHub);
# - otherwise cargo-deny fetches it when GitHub answers. When it does not, the advisories check
#   cannot run: the script says so in a banner, and exits non-zero only if
#   AETHERV_REQUIRE_ADVISORIES=true. Licences, bans and sources always run and must pass.
set -euo pipefail
cd "$(dirname "$0")/.."

DENY_VERSION=0.20.2
if ! cargo deny --version 2>/dev/null | grep -qF "$DENY_VERSION"; then
    echo "building cargo-deny $DENY_VERSION from crates.io"
    cargo install --locked --quiet cargo-deny --version "$DENY_VERSION"
fi

cargo deny --log-level warn check licenses bans sources

config=deny.toml
offline=()
db_dir=""
cleanup() { if [ -n "$db_dir" ]; then rm -rf "$db_dir"; fi; }
trap cleanup EXIT
reachable=false
if [ -n "${AETHERV_ADVISORY_DB:-}" ]; then
    # A local clone, copied where cargo-deny keeps the database of its default URL
    # (github.com/rustsec/advisory-db: the directory name is cargo-deny's hash of that URL), and
    # a copy of the configuration pointing there; --offline keeps cargo-deny from fetching.
    db_dir="$(mktemp -d)"
    git clone --quiet "$AETHERV_ADVISORY_DB" "$db_dir/dbs/advisory-db-3157b0e258782691"
    config="$db_dir/deny.toml"
    sed "s|^\[advisories\]$|[advisories]\ndb-path = \"$db_dir/dbs\"|" deny.toml >"$config"
    offline=(--offline)
    reachable=true
elif timeout 30 git ls-remote https://github.com/rustsec/advisory-db HEAD >/dev/null 2>&1; then
    reachable=true
fi

if [ "$reachable" = true ]; then
    # Unless offline, cargo-deny fetches (or updates) the database itself, then checks.
    timeout 600 cargo deny --log-level warn "${offline[@]}" --config "$config" check advisories
    echo "supply chain: licences, bans, sources and advisories pass"
else
    echo "############################################################################################"
    echo "# The RustSec advisory database is not reachable (github.com does not answer from here),"
    echo "# so \`cargo deny check advisories\` did not run. Licences, bans and sources passed."
    echo "# Set AETHERV_ADVISORY_DB to a clone of https://github.com/rustsec/advisory-db to check them."
    echo "############################################################################################"
    if [ "${AETHERV_REQUIRE_ADVISORIES:-false}" = "true" ]; then
        exit 1
    fi
fi
