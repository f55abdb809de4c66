#!/usr/bin/env bash
# The learner's input pipeline with no training behind it: batches per
# second delivered from a replay server (in the bench's process, filled with
# recorded Breakout frames) for each count of input workers, ROUNDS rounds,
# medians at the end. With a BEFORE binary (another build of apex that has
# `apex bench learner-input`, from before apex-bench), it runs first in each round at one worker, the
# figures side by side. Figures go into BENCHMARKS.md.
#   scripts/bench-learner-input.sh [ROUNDS=3] [SECONDS=6] [BATCHES=512,32] [WORKERS=1,2] [BEFORE]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
rounds=${1:-3}
seconds=${2:-6}
batches=${3:-512,32}
workers=${4:-1,2}
before=${5:-}
scripts/setup.sh
cargo build --release --quiet -p apex -p apex-bench
frames=$(scripts/bench-frames.sh)
log=$(mktemp)
for r in $(seq "$rounds"); do
  echo "round $r/$rounds" >&2
  for b in ${batches//,/ }; do
    args=(learner-input --frames "$frames" --batch "$b" --seconds "$seconds" --fill 20000)
    if [ -n "$before" ]; then
      "$before" bench "${args[@]}" --workers 1 2>/dev/null | sed 's/^/before /' | tee -a "$log"
    fi
    target/release/apex-bench "${args[@]}" --workers "$workers" 2>/dev/null | sed 's/^/after /' | tee -a "$log"
  done
done
python3 - "$log" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    who, _, key, value = line.split()
    runs.setdefault((who, key), []).append(float(value))
for (who, key), values in sorted(runs.items()):
    print(f"{who:6} {key:18} median {statistics.median(values):9.1f} batches/s of {len(values)}")
PY
rm -f "$log"
