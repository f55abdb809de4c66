#!/usr/bin/env bash
# The replay server's memory and throughput under different allocators, side
# by side in one run: ROUNDS alternating rounds of `apex-bench replay-service`
# with incompressible (random) frames, each round serving once per contender:
#   glibc      the system malloc
#   arenas2    glibc with MALLOC_ARENA_MAX=2
#   jemalloc   Debian's libjemalloc2, preloaded into the server only
#   jemalloc-bg  the same with background purging threads and a 1 s decay
#              (MALLOC_CONF=$jemalloc_conf below)
#   mimalloc   Debian's libmimalloc2.0, preloaded into the server only
# In each run WINDOW_STREAMS streams fill their frame windows (16,384 frames)
# and hold them, then close; the server's resident set is read from /proc at
# its peak and each second after the close (IDLE seconds). Then 8 writers and
# 4 samplers load it for SECONDS. Medians and ratios against the first
# contender are printed at the end; figures go into BENCHMARKS.md.
# An apex built since 2026-12-05 exports jemalloc as its own `malloc`, which
# wins over a preloaded one: compare allocators with APEX=<an older build>.
#   scripts/bench-allocators.sh [ROUNDS=3] [SECONDS=10]
# BEFORE=<an older apex binary> compares that build's server ("before") with
# this one's ("after") instead, both without preloading, under the same load
# generator. APEX=<an apex binary> measures that build instead of building
# this tree's.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
rounds=${1:-3}
seconds=${2:-10}
streams=${WINDOW_STREAMS:-32}
idle=${IDLE:-10}
before=${BEFORE:-}
scripts/setup.sh
apex=${APEX:-}
if [ -z "$apex" ]; then
  cargo build --release --quiet -p apex
  apex=target/release/apex
fi
cargo build --release --quiet -p apex-bench
frames=$(scripts/bench-frames.sh "$apex")

# name|server binary|NAME=VALUE for the server (none, one or two)
contenders=()
if [ -n "$before" ]; then
  contenders+=("before|$before|" "after|$apex|")
else
  lib() {
    ldconfig -p | awk -v name="$1" '$1 == name { print $NF; exit }'
  }
  jemalloc=$(lib libjemalloc.so.2)
  # jemalloc purges freed pages only when a thread allocates, unless its
  # background threads do it.
  jemalloc_conf=background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0
  mimalloc=$(lib libmimalloc.so.2)
  if [ -z "$jemalloc" ] || [ -z "$mimalloc" ]; then
    echo "error: jemalloc or mimalloc is missing: apt-get install libjemalloc2 libmimalloc2.0" >&2
    exit 1
  fi
  contenders+=("glibc|$apex|" "arenas2|$apex|MALLOC_ARENA_MAX=2"
    "jemalloc|$apex|LD_PRELOAD=$jemalloc" "jemalloc-bg|$apex|LD_PRELOAD=$jemalloc|MALLOC_CONF=$jemalloc_conf"
    "mimalloc|$apex|LD_PRELOAD=$mimalloc")
fi

log=$(mktemp)
for r in $(seq "$rounds"); do
  echo "round $r/$rounds" >&2
  for c in "${contenders[@]}"; do
    IFS='|' read -r name bin env env2 <<<"$c"
    args=(replay-service --frames "$frames" --noise --codec lz4 --fill 20000
      --window-streams "$streams" --idle-secs "$idle" --writers 8 --seconds "$seconds"
      --no-checkpoint --server-bin "$bin")
    for e in "$env" "$env2"; do
      if [ -n "$e" ]; then
        args+=(--server-env "$e")
      fi
    done
    target/release/apex-bench "${args[@]}" | sed "s/^{/{\"contender\": \"$name\", /" | tee -a "$log"
  done
done
python3 - "$log" <<'PY'
import collections, json, statistics, sys
runs = collections.defaultdict(list)
order = []
for line in open(sys.argv[1]):
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    c = r["contender"]
    if c not in order:
        order.append(c)
    if r.get("phase") == "windows":
        for k in ("peak_rss_mb", "idle_rss_mb", "stored_mb"):
            runs[(c, k)].append(r[k])
        runs[(c, "rss_1s_after_close_mb")].append(r["rss_each_second_mb"][0])
    elif "insert_per_sec" in r:
        for k in ("insert_per_sec", "sample_per_sec", "insert_p50_ms", "insert_p99_ms"):
            runs[(c, k)].append(r[k])
keys = ["peak_rss_mb", "rss_1s_after_close_mb", "idle_rss_mb", "stored_mb",
        "insert_per_sec", "sample_per_sec", "insert_p50_ms", "insert_p99_ms"]
med = {k: statistics.median(v) for k, v in runs.items()}
print(f"\nmedians over {max(len(v) for v in runs.values())} rounds")
print(f"  {'':24s}" + "".join(f"{c:>12s}" for c in order))
for k in keys:
    print(f"  {k:24s}" + "".join(f"{med.get((c, k), float('nan')):12.1f}" for c in order))
base = order[0]
print(f"\nratios against {base}")
for k in keys:
    if k == "stored_mb":
        continue
    print(f"  {k:24s}" + "".join(f"{med[(c, k)] / med[(base, k)]:12.2f}" for c in order))
PY
