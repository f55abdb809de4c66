#!/usr/bin/env bash
# Environment throughput, apex side by side with EnvPool and ale-py in one run:
# ROUNDS alternating rounds, medians printed with ratios. Figures go into BENCHMARKS.md.
#   scripts/bench-env.sh [ROUNDS=5] [SECONDS=10]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
rounds=${1:-5}
seconds=${2:-10}
scripts/setup.sh
if [ ! -x .venv-bench/bin/python ] || ! .venv-bench/bin/python -c 'import envpool' 2>/dev/null; then
  # EnvPool pins its own dependency set: keep it out of the main venv.
  python3 -m venv .venv-bench
  .venv-bench/bin/pip install --quiet envpool==1.2.5 ale-py==0.12.1
fi
cargo build --release --quiet -p apex
log=$(mktemp)
for r in $(seq "$rounds"); do
  echo "round $r/$rounds" >&2
  target/release/apex bench env --threads 1,2 --seconds "$seconds" | tee -a "$log"
  .venv-bench/bin/python scripts/bench_env_peers.py --threads 1,2 --seconds "$seconds" | tee -a "$log"
done
python3 - "$log" <<'PY'
import sys
sys.path.insert(0, "scripts")
from bench_medians import medians
med = medians(sys.argv[1])
for t in ("threads=1", "threads=2"):
    env = med[("apex_env_steps_per_sec", t)]
    pool = med[("envpool_steps_per_sec", t)]
    raw = med[("apex_raw_ale_frames_per_sec", t)]
    # Frame skip 4: each agent step emulates 4 frames.
    print(f"{t}: apex/envpool = {env / pool:.2f}; apex env frames/s / raw ALE frames/s "
          f"(same threads) = {4 * env / raw:.2f}")
PY
