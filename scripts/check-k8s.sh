#!/usr/bin/env bash
# Validates the Kubernetes manifests in k8s/ against the bundled OpenAPI schemas of the
# `kubernetes-validate` package (strict: unknown fields are errors), checks kustomization.yaml
# (not a Kubernetes resource) and the references between the manifests, and proves that the
# validator rejects a broken manifest. Prints one line per check and `N passed, M failed`.
# Usage: scripts/check-k8s.sh      (needs .venv from scripts/test; run from anywhere)
set -uo pipefail
cd "$(dirname "$0")/.."

# Kubernetes versions to validate against (schemas bundled with kubernetes-validate 1.37.0):
# the oldest release we support and the newest the package knows.
K8S_VERSIONS=(1.33.0 1.37.0)
VALIDATE=.venv/bin/kubernetes-validate
PYTHON=.venv/bin/python

if [ ! -x "$VALIDATE" ]; then
    echo "error: $VALIDATE not found; run scripts/test (or .venv/bin/pip install -r scripts/requirements-test.txt)" >&2
    exit 2
fi

kargs=(--strict)
for v in "${K8S_VERSIONS[@]}"; do kargs+=(-k "$v"); done

passed=0
failed=0
pass() { printf 'PASS %s\n' "$*"; passed=$((passed + 1)); }
fail() { printf 'FAIL %s\n' "$1"; [ -n "${2:-}" ] && printf '%s\n' "$2" | sed 's/^/    /'; failed=$((failed + 1)); }

# 1. Every manifest except kustomization.yaml. A file passes only if the validator exits 0,
#    prints no WARN/ERROR/FATAL line (an unknown kind is only a WARN with exit 0) and
#    validated at least one resource.
shopt -s nullglob
manifests=()
for f in k8s/*.yaml k8s/*.yml; do
    [ "$(basename "$f")" = kustomization.yaml ] && continue
    manifests+=("$f")
done
if [ ${#manifests[@]} -eq 0 ]; then
    fail "k8s/: no manifests found"
fi
for f in "${manifests[@]}"; do
    out=$("$VALIDATE" "${kargs[@]}" "$f" 2>&1)
    rc=$?
    if [ $rc -eq 0 ] && ! grep -qE '^(WARN|ERROR|FATAL)' <<<"$out" && grep -q '^INFO .* passed' <<<"$out"; then
        resources=$(sed -n 's/^INFO .* passed for resource \([^ ]*\) .*/\1/p' <<<"$out" | sort -u | paste -sd, -)
        pass "$f ($resources; strict; kubernetes ${K8S_VERSIONS[*]})"
    else
        fail "$f (exit $rc)" "$out"
    fi
done

# 2. kustomization.yaml: valid YAML, the right kind, every resource exists as a file, and every
#    manifest in k8s/ is listed (so nothing is validated here but silently left out of apply -k).
out=$("$PYTHON" - <<'PY' 2>&1
import pathlib, sys, yaml
k = pathlib.Path("k8s/kustomization.yaml")
doc = yaml.safe_load(k.read_text())
problems = []
if not isinstance(doc, dict):
    sys.exit("not a YAML mapping")
if doc.get("apiVersion") != "kustomize.config.k8s.io/v1beta1" or doc.get("kind") != "Kustomization":
    problems.append("apiVersion/kind must be kustomize.config.k8s.io/v1beta1 Kustomization")
res = doc.get("resources")
if not isinstance(res, list) or not res:
    problems.append("resources: missing or empty")
    res = []
for r in res:
    if not (k.parent / str(r)).is_file():
        problems.append(f"resources: {r} is not a file in k8s/")
listed = {str(r) for r in res}
for f in sorted(k.parent.glob("*.y*ml")):
    if f.name != "kustomization.yaml" and f.name not in listed:
        problems.append(f"resources: {f.name} is not listed")
labels = [p.get("pairs", {}) for p in doc.get("labels", [])] + [doc.get("commonLabels", {})]
if not any(l.get("app.kubernetes.io/name") == "aetherv" for l in labels):
    problems.append("labels: app.kubernetes.io/name: aetherv missing")
if problems:
    sys.exit("\n".join(problems))
print(", ".join(map(str, res)))
PY
)
if [ $? -eq 0 ]; then
    pass "k8s/kustomization.yaml (YAML; resources: $out)"
else
    fail "k8s/kustomization.yaml" "$out"
fi

# 3. References between the manifests (what the schemas cannot see).
out=$("$PYTHON" - <<'PY' 2>&1
import pathlib, sys, yaml
docs = {}
for f in pathlib.Path("k8s").glob("*.y*ml"):
    if f.name == "kustomization.yaml":
        continue
    for d in yaml.safe_load_all(f.read_text()):
        if d:
            docs[(d["kind"], d["metadata"]["name"])] = d
def one(kind):
    found = [d for (k, _), d in docs.items() if k == kind]
    if len(found) != 1:
        sys.exit(f"expected exactly one {kind}, found {len(found)}")
    return found[0]
dep, svc, ing, cm, sec = (one(k) for k in ("Deployment", "Service", "Ingress", "ConfigMap", "Secret"))
p = []
pod = dep["spec"]["template"]
c = pod["spec"]["containers"][0]
if not set(dep["spec"]["selector"]["matchLabels"].items()) <= set(pod["metadata"]["labels"].items()):
    p.append("Deployment selector does not match its pod labels")
if not set(svc["spec"]["selector"].items()) <= set(pod["metadata"]["labels"].items()):
    p.append("Service selector does not match the pod labels")
ports = {x["name"]: x["containerPort"] for x in c["ports"]}
if ports.get("http") != 8000:
    p.append("container port http must be 8000")
env = {e["name"]: e.get("value") for e in c.get("env", [])}
if env.get("LISTEN_ADDR") != "0.0.0.0:8000":
    p.append("LISTEN_ADDR must be 0.0.0.0:8000")
if ports.get("metrics") != 9100 or env.get("METRICS_LISTEN_ADDR") != "0.0.0.0:9100":
    p.append("METRICS_LISTEN_ADDR must be 0.0.0.0:9100 on container port metrics (9100)")
if [r["configMapRef"]["name"] for r in c.get("envFrom", []) if "configMapRef" in r] != [cm["metadata"]["name"]]:
    p.append("envFrom does not reference the ConfigMap")
secret_env = {"WINRM_PASSWORD", "OIDC_CLIENT_SECRET", "SESSION_KEY"}
if secret_env & set(cm["data"]) or secret_env & set(env):
    p.append("secrets must come from /run/secrets, not from variables")
vols = {v["name"]: v for v in pod["spec"]["volumes"]}
mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
m = mounts.get("/run/secrets")
if not m or not m.get("readOnly"):
    p.append("/run/secrets must be mounted read-only")
else:
    s = vols[m["name"]]["secret"]
    if s["secretName"] != sec["metadata"]["name"]:
        p.append("secret volume does not reference the example Secret's name")
    for item in s.get("items", []):
        if item["key"] not in sec.get("stringData", {}):
            p.append(f"secret key {item['key']} missing from secret.example.yaml")
    paths = {i["key"]: i["path"] for i in s.get("items", [])}
    for key, path in (("winrm-password", "WINRM_PASSWORD"), ("oidc-client-secret", "OIDC_CLIENT_SECRET")):
        if paths.get(key) != path:
            p.append(f"{key} must be mounted as /run/secrets/{path}")
if "emptyDir" not in vols.get(mounts.get("/tmp", {}).get("name", ""), {}):
    p.append("/tmp must be an emptyDir")
svc_ports = {x["name"]: x for x in svc["spec"]["ports"]}
if svc_ports.get("http", {}).get("port") != 80 or svc_ports["http"].get("targetPort") != "http":
    p.append("Service port 80 must target http")
paths = set()
for rule in ing["spec"]["rules"]:
    for path in rule["http"]["paths"]:
        b = path["backend"]["service"]
        if b["name"] != svc["metadata"]["name"] or b["port"].get("name") != "http":
            p.append(f"Ingress path {path['path']} does not point at Service {svc['metadata']['name']}:http")
        paths.add(path["path"])
if not {"/", "/oidc/callback"} <= paths:
    p.append("Ingress needs / and /oidc/callback")
hosts = {h for t in ing["spec"].get("tls", []) for h in t.get("hosts", [])}
if not all(r["host"] in hosts for r in ing["spec"]["rules"]):
    p.append("every Ingress host must be covered by TLS")
redirect = cm["data"].get("OIDC_REDIRECT_URI", "")
if not any(redirect == f"https://{r['host']}/oidc/callback" for r in ing["spec"]["rules"]):
    p.append("OIDC_REDIRECT_URI does not match the Ingress host and callback path")
if p:
    sys.exit("\n".join(p))
PY
)
if [ $? -eq 0 ]; then
    pass "cross-references (selectors, ports, ConfigMap, Secret keys and paths, Ingress, OIDC redirect)"
else
    fail "cross-references" "$out"
fi

# 4. Self-checks: the validator must reject broken manifests, read from stdin.
reject() { # name, manifest
    out=$(printf '%s\n' "$2" | "$VALIDATE" "${kargs[@]}" - 2>&1)
    rc=$?
    if [ $rc -ne 0 ] && grep -q '^ERROR' <<<"$out"; then
        pass "self-check: $1 rejected"
    else
        fail "self-check: $1 was accepted (exit $rc)" "$out"
    fi
}
broken_deployment() { # extra spec line
    cat <<YAML
apiVersion: apps/v1
kind: Deployment
metadata:
  name: broken
spec:
  $1
  selector:
    matchLabels: {app: broken}
  template:
    metadata:
      labels: {app: broken}
    spec:
      containers:
        - name: c
          image: example
YAML
}
reject 'replicas: "one"' "$(broken_deployment 'replicas: "one"')"
reject 'unknown field spec.replica (strict)' "$(broken_deployment 'replica: 1')"

printf '%d passed, %d failed\n' "$passed" "$failed"
[ "$failed" -eq 0 ]
