#!/usr/bin/env bash
# The crate-graph invariants of ARCHITECTURE.md, checked with `cargo tree`, plus clippy (warnings
# denied) over every feature combination that ARCHITECTURE.md promises (each feature alone, and
# none). Prints one line per check and `N passed, M failed`; exits 1 if any failed.
# Usage: scripts/check-deps.sh        (run from anywhere; uses the workspace's target dir)
set -uo pipefail
cd "$(dirname "$0")/.."

passed=0
failed=0
pass() { printf 'PASS %s\n' "$*"; passed=$((passed + 1)); }
fail() { printf 'FAIL %s\n' "$1"; [ -n "${2:-}" ] && printf '%s\n' "$2" | sed 's/^/    /'; failed=$((failed + 1)); }

# tree_lacks DESCRIPTION REGEX CARGO-TREE-ARGS...: the tree has no line matching REGEX.
tree_lacks() {
    local what=$1 pattern=$2
    shift 2
    local tree
    if ! tree=$(cargo tree --locked --prefix none "$@" 2>&1); then
        fail "$what" "$tree"
        return
    fi
    local hits
    hits=$(printf '%s\n' "$tree" | grep -E "$pattern" | sort -u)
    if [ -z "$hits" ]; then pass "$what"; else fail "$what" "$hits"; fi
}

# Workspace members, from the manifest (no extra tooling).
if ! members=$(cargo metadata --locked --no-deps --format-version 1 \
    | python3 -c 'import json,sys; print("\n".join(p["name"] for p in json.load(sys.stdin)["packages"]))') \
    || [ -z "$members" ]; then
    echo "error: cargo metadata did not list the workspace members" >&2
    exit 1
fi

# 1. Who may depend on whom.
tree_lacks "aetherv-winrm depends on no other aetherv crate" '^aetherv-(hyperv|kvp|sim|provision|inventory|jobs|server)' \
    -e normal -p aetherv-winrm --all-features
for m in $members; do
    [ "$m" = aetherv-server ] && continue
    # The fuzz harness feeds every parser, the server's HOSTS_FILE reader included; nothing
    # depends on it.
    [ "$m" = aetherv-fuzz ] && continue
    tree_lacks "$m does not depend on aetherv-server" '^aetherv-server ' -e normal -p "$m" --all-features
done
tree_lacks "aetherv-kvp needs no async runtime and no other aetherv crate" \
    '^(tokio|hyper|aetherv-(winrm|hyperv|sim|provision|inventory|jobs|server)) ' -e normal -p aetherv-kvp --all-features
tree_lacks "aetherv-guest (shipped to guests) needs no async runtime, HTTP or aetherv crate but aetherv-kvp" \
    '^(tokio|hyper|reqwest|aetherv-(winrm|hyperv|sim|provision|inventory|jobs|server)) ' -e normal -p aetherv-guest --all-features
# Only tests, benches, examples and the server's demo feature may use the simulator.
for m in aetherv-winrm aetherv-kvp aetherv-hyperv aetherv-provision aetherv-inventory aetherv-jobs aetherv-guest; do
    tree_lacks "$m does not depend on aetherv-sim" '^aetherv-sim ' -e normal -p "$m" --all-features
done

# 2. What the optional parts keep out of the default builds.
tree_lacks "aetherv-winrm without default features has no tokio, hyper, rustls or mockall" \
    '^(tokio|tokio-util|hyper|hyper-util|rustls|tokio-rustls|mockall) ' -e normal -p aetherv-winrm --no-default-features
tree_lacks "aetherv-server without default features has no rcgen, clap or simulator" \
    '^(rcgen|clap|clap_builder|aetherv-sim|mockall) ' -e normal -p aetherv-server --no-default-features
tree_lacks "aetherv-hyperv has no simulator, clap, rcgen or mockall" \
    '^(aetherv-sim|clap|rcgen|tracing-subscriber|mockall) ' -e normal -p aetherv-hyperv
tree_lacks "aetherv-sim's library without the cli feature has no clap, tracing-subscriber or mimalloc" \
    '^(clap|tracing-subscriber|mimalloc) ' -e normal -p aetherv-sim --no-default-features

# 3. Each promised feature combination compiles without warnings (clippy: no codegen, and the
#    lint level is a clippy argument, so the shared target dir's artifacts stay valid).
check() {
    local started=$SECONDS
    local out
    if out=$(cargo clippy --locked --quiet "$@" -- -D warnings 2>&1); then
        pass "cargo clippy $* ($((SECONDS - started))s)"
    else
        fail "cargo clippy $* ($((SECONDS - started))s)" "$(printf '%s\n' "$out" | tail -n 30)"
    fi
}
check -p aetherv-winrm --no-default-features
check -p aetherv-winrm --no-default-features --features client
check -p aetherv-winrm --no-default-features --features server
check -p aetherv-winrm --no-default-features --features mock
check -p aetherv-winrm --no-default-features --features kerberos
check -p aetherv-winrm --no-default-features --features client,kerberos
check -p aetherv-winrm --no-default-features --features server,kerberos
check -p aetherv-hyperv --no-default-features
check -p aetherv-hyperv --no-default-features --features mock
check -p aetherv-kvp --no-default-features
check -p aetherv-guest --no-default-features
check -p aetherv-sim --no-default-features
check -p aetherv-sim --no-default-features --features cli
check -p aetherv-sim --no-default-features --features cli,kerberos
check -p aetherv-provision --no-default-features
check -p aetherv-inventory --no-default-features
check -p aetherv-jobs --no-default-features
check -p aetherv-jobs --no-default-features --features openapi
check -p aetherv-server --no-default-features --all-targets
check -p aetherv-server --no-default-features --features mock
check -p aetherv-server --no-default-features --features demo

printf '%d passed, %d failed\n' "$passed" "$failed"
[ "$failed" -eq 0 ]
