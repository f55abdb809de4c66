#!/usr/bin/env bash
# The recorded Breakout frames the replay and learner-input benches replay:
# records them once with APEX (default target/release/apex) and prints the
# path of their obs.npy.
#   frames=$(scripts/bench-frames.sh [APEX])
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
apex=${1:-target/release/apex}
frames=runs/bench-frames/obs.npy
if [ ! -f "$frames" ]; then
  "$apex" env record --game breakout --steps 3000 --out runs/bench-frames >/dev/null
fi
echo "$frames"
