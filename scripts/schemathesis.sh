#!/usr/bin/env bash
# A bounded schemathesis run against the demo server: starts the debug server binary in demo
# mode (no hosts configured, authentication off) on a free port and fuzzes every documented
# operation from /openapi.json with a fixed seed and a bounded number of examples. It fails on
# any 5xx and on any answer that does not conform to the document (status code, content type,
# body schema).
#
# Excluded: GET /api/v1/events, an endless Server-Sent Events stream (a request would only
# end at the request timeout). Nothing else: the state-changing routes only ever name hosts,
# VMs and jobs the generator invents, so they answer 404/409/422 without starting a job.
#
# Usage: scripts/schemathesis.sh   (AETHERV_SERVER, AETHERV_PYTHON and
#        SCHEMATHESIS_EXAMPLES override the binary, the python and the examples per operation)
set -euo pipefail
cd "$(dirname "$0")/.."

server="${AETHERV_SERVER:-${CARGO_TARGET_DIR:-$PWD/target}/debug/aetherv-server}"
python="${AETHERV_PYTHON:-$PWD/.venv/bin/python}"
examples="${SCHEMATHESIS_EXAMPLES:-50}"
seed=12345
started=$(date +%s)

port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp)
env -u HYPERV_HOSTS -u HOSTS_FILE -u OIDC_ISSUER_URL \
    LISTEN_ADDR="127.0.0.1:$port" SECRETS_DIR=/nonexistent-aetherv-schemathesis \
    AETHERV_DEMO_PASSWORD=demo-Passw0rd LOG_LEVEL=warn \
    "$server" >"$log" 2>&1 &
pid=$!
cleanup() {
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -f "$log"
}
trap cleanup EXIT

base="http://127.0.0.1:$port"
ready=""
deadline=$((SECONDS + 90))
while [ "$SECONDS" -lt "$deadline" ]; do
    if "$python" -c "import urllib.request, sys; urllib.request.urlopen(sys.argv[1], timeout=1)" "$base/readyz" 2>/dev/null; then
        ready=yes
        break
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
        break
    fi
    sleep 0.1
done
if [ -z "$ready" ]; then
    echo "the demo server did not become ready within 90 s; its output:" >&2
    cat "$log" >&2
    exit 1
fi

echo "demo server ready on $base after $(( $(date +%s) - started )) s"
status=0
# `timeout` is a backstop only: the examples bound the run (--max-time would instead repeat
# fuzzing until the time is spent). 50 examples per operation take about 60 s of one core
# here, almost all of it schemathesis itself; the backstop leaves room for a slower machine.
timeout 240 "$python" -m schemathesis.cli run "$base/openapi.json" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --phases examples,coverage,fuzzing \
    --mode all \
    --max-examples "$examples" \
    --seed "$seed" \
    --workers 1 \
    --request-timeout 10 \
    --exclude-path /api/v1/events \
    --suppress-health-check too_slow,filter_too_much \
    --no-color || status=$?
if [ "$status" -eq 124 ]; then
    echo "schemathesis did not finish within 240 s" >&2
fi
if [ "$status" -ne 0 ]; then
    echo "last lines of the server's output:" >&2
    tail -n 50 "$log" >&2
fi
echo "schemathesis: ${examples} examples per operation, seed ${seed}, $(( $(date +%s) - started )) s"
exit "$status"
