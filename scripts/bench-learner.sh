#!/usr/bin/env bash
# Learner updates/s, apex side by side with the same DQN update in PyTorch
# from Python (scripts/bench_learner.py) in one run: ROUNDS alternating
# rounds, medians printed with ratios. apex runs twice per round: as the
# learner runs (the batch in as many slices side by side as threads) and
# with --whole (each batch whole, libtorch splitting every operation).
# Figures go into BENCHMARKS.md.
#   scripts/bench-learner.sh [ROUNDS=5] [SECONDS=10] [OPTIMIZERS=adam,rmsprop]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
rounds=${1:-5}
seconds=${2:-10}
optimizers=${3:-adam,rmsprop}
scripts/setup.sh
cargo build --release --quiet -p apex-bench
log=$(mktemp)
for r in $(seq "$rounds"); do
  echo "round $r/$rounds" >&2
  target/release/apex-bench learner --batch 32,512 --threads 1,2 \
    --optimizer "$optimizers" --seconds "$seconds" | tee -a "$log"
  target/release/apex-bench learner --batch 32,512 --threads 2 --whole \
    --optimizer "$optimizers" --seconds "$seconds" | sed 's/^apex_/apex_whole_/' | tee -a "$log"
  .venv/bin/python scripts/bench_learner.py --batch 32,512 --threads 1,2 \
    --optimizer "$optimizers" --seconds "$seconds" | tee -a "$log"
done
python3 - "$log" <<'PY'
import collections
import statistics
import sys

runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    name, key, value = line.split()
    runs[(name, key)].append(float(value))
med = {k: statistics.median(v) for k, v in runs.items()}
print(f"\nmedians over {len(next(iter(runs.values())))} rounds: updates/s")
print(f"{'batch-threads-optimizer':24s} {'apex':>8s} {'whole':>8s} {'pytorch':>8s} {'ratio':>6s} {'/whole':>6s} {'apex batch ms':>14s}")
for (name, key), apex in sorted(med.items(), key=lambda kv: kv[0][1]):
    if name != "apex_updates_per_sec":
        continue
    torch = med[("pytorch_updates_per_sec", key)]
    # One thread: a single slice is the whole batch.
    whole = med.get(("apex_whole_updates_per_sec", key), apex)
    print(f"{key:24s} {apex:8.2f} {whole:8.2f} {torch:8.2f} {apex / torch:6.2f} {apex / whole:6.2f} {med[('apex_batch_ms', key)]:14.1f}")
PY
