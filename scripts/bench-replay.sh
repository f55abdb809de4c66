#!/usr/bin/env bash
# Prioritized replay throughput, apex side by side with cpprb in one run:
# ROUNDS alternating rounds, medians printed with ratios. Figures go into BENCHMARKS.md.
#   scripts/bench-replay.sh [ROUNDS=5] [SECONDS=5]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
rounds=${1:-5}
seconds=${2:-5}
scripts/setup.sh
if [ ! -x .venv-bench/bin/python ] || ! .venv-bench/bin/python -c 'import cpprb' 2>/dev/null; then
  python3 -m venv .venv-bench
  .venv-bench/bin/pip install --quiet cpprb==11.0.0
fi
cargo build --release --quiet -p apex-bench
log=$(mktemp)
for r in $(seq "$rounds"); do
  echo "round $r/$rounds" >&2
  target/release/apex-bench replay --seconds "$seconds" | tee -a "$log"
  .venv-bench/bin/python scripts/bench_replay_peers.py --seconds "$seconds" | tee -a "$log"
done
python3 - "$log" <<'PY'
import sys
sys.path.insert(0, "scripts")
from bench_medians import medians
med = medians(sys.argv[1])
for items in sorted({i for _, i in med}):
    for op in ("sample", "update"):
        a, c = med[(f"apex_{op}_batches_per_sec", items)], med[(f"cpprb_{op}_batches_per_sec", items)]
        print(f"{items} {op}: apex/cpprb = {a / c:.2f}")
PY
