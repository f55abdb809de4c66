#!/usr/bin/env bash
# The replay server under actor-like load, apex side by side with DeepMind
# Reverb 0.14.0 in one run: ROUNDS alternating rounds of
#   apex-bench replay-service (lz4 frames, then zstd) and
#   scripts/bench_replay_reverb.py,
# each server in its own process on loopback, writers replaying the same
# recorded Breakout frames, one sampler drawing batches of 512. Medians and
# ratios are printed at the end; figures go into BENCHMARKS.md.
#   scripts/bench-replay-service.sh [ROUNDS=3] [SECONDS=10]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
rounds=${1:-3}
seconds=${2:-10}
scripts/setup.sh
scripts/bench-reverb-setup.sh
cargo build --release --quiet -p apex -p apex-bench
frames=$(scripts/bench-frames.sh)
log=$(mktemp)
for r in $(seq "$rounds"); do
  echo "round $r/$rounds" >&2
  for codec in lz4 zstd; do
    target/release/apex-bench replay-service --frames "$frames" --seconds "$seconds" --codec "$codec" | tee -a "$log"
  done
  .venv-reverb/bin/python scripts/bench_replay_reverb.py --frames "$frames" --seconds "$seconds" | tee -a "$log"
done
python3 - "$log" <<'PY'
import collections, json, statistics, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    line = line.strip()
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    system = r["system"] + ("/" + r["codec"] if "codec" in r else "")
    if r.get("metric") == "bytes_per_transition":
        runs[(system, "bytes_per_transition")].append(r["bytes_per_transition"])
        continue
    phase = r.get("phase", "load")
    for k in ("insert_per_sec", "sample_per_sec", "insert_p50_ms", "insert_p99_ms", "insert_max_ms", "checkpoint_ms"):
        if k in r:
            runs[(system, f"{phase} {k} writers={r['writers']}")].append(r[k])
med = {k: statistics.median(v) for k, v in runs.items()}
print(f"\nmedians over {max(len(v) for v in runs.values())} rounds")
for (system, what), v in sorted(med.items()):
    print(f"  {system:12s} {what:32s} {v:12.2f}")
print("\nratios (apex / reverb; memory: reverb / apex)")
for codec in ("lz4", "zstd"):
    a = f"apex/{codec}"
    for what in sorted({w for s, w in med if s == "reverb"}):
        if (a, what) not in med:
            continue
        if what == "bytes_per_transition":
            print(f"  {a:12s} {what:32s} reverb uses {med[('reverb', what)] / med[(a, what)]:.1f}x the memory")
        elif "per_sec" in what:
            print(f"  {a:12s} {what:32s} {med[(a, what)] / med[('reverb', what)]:.2f}x")
PY
