#!/usr/bin/env bash
# Environment throughput, apex side by side with EnvPool and ale-py in one run:
# ROUNDS alternating rounds, medians printed with ratios. Figures go into BENCHMARKS.md.
#   scripts/bench-env.sh [ROUNDS=5] [SECONDS=10]
# The apex figures come from the apex-env crate's `throughput` bench, the
# library code behind `apex-bench env`, which also reports rates per CPU-second
# of the measuring threads (steadier than wall-clock rates on shared cores).
# BEFORE=<an older build of that bench> measures it too, as before_* lines.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
rounds=${1:-5}
seconds=${2:-10}
before=${BEFORE:-}
scripts/setup.sh
if [ ! -x .venv-bench/bin/python ] || ! .venv-bench/bin/python -c 'import envpool' 2>/dev/null; then
  # EnvPool pins its own dependency set: keep it out of the main venv.
  python3 -m venv .venv-bench
  .venv-bench/bin/pip install --quiet envpool==1.2.5 ale-py==0.12.1
fi
bench=$(cargo build --release --quiet -p apex-env --bench throughput --message-format=json |
  python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["executable"])')
log=$(mktemp)
for r in $(seq "$rounds"); do
  echo "round $r/$rounds" >&2
  "$bench" --threads 1,2 --seconds "$seconds" | tee -a "$log"
  if [ -n "$before" ]; then
    "$before" --threads 1,2 --seconds "$seconds" | sed 's/^/before_/' | tee -a "$log"
  fi
  .venv-bench/bin/python scripts/bench_env_peers.py --threads 1,2 --seconds "$seconds" | tee -a "$log"
done
python3 - "$log" <<'PY'
import sys
sys.path.insert(0, "scripts")
from bench_medians import medians
med = medians(sys.argv[1])
for t in ("threads=1", "threads=2"):
    for prefix in ("", "before_"):
        for unit in ("per_sec", "per_cpu_sec"):
            env = med.get((f"{prefix}apex_env_steps_{unit}", t))
            raw = med.get((f"{prefix}apex_raw_ale_frames_{unit}", t))
            pool = med.get((f"envpool_steps_{unit}", t))
            if env is None or raw is None:
                continue
            # Frame skip 4: each agent step emulates 4 frames.
            line = f"{t} {prefix or 'now_'}{unit}: apex env frames / raw ALE frames = {4 * env / raw:.3f}"
            if pool:
                line += f"; apex / envpool = {env / pool:.2f}"
            print(line)
PY
