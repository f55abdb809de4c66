#!/usr/bin/env bash
# Installs DeepMind Reverb for the side-by-side replay benchmark into .venv-reverb/:
#   dm-reverb 0.14.0 with the TensorFlow it was built against (2.15.0, CPU-only wheel),
#   numpy and psutil. Kept apart from .venv because TensorFlow 2.15 pins its own numpy,
#   protobuf and grpc versions, which must not disturb the training environment.
# Idempotent and quiet when everything is in place.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

say() { echo "bench-reverb-setup: $*" >&2; }

python=${PYTHON:-python3}
# dm-reverb 0.14.0 ships wheels for CPython 3.9-3.11 on x86_64 Linux only.
if ! "$python" -c 'import sys; assert (3, 9) <= sys.version_info[:2] <= (3, 11)' 2>/dev/null; then
  say "error: dm-reverb 0.14.0 needs python 3.9-3.11 (set PYTHON=/path/to/python3.11)"; exit 1
fi

# Reverb's shared objects are linked against the exact TensorFlow ABI of its release,
# so tensorflow must be 2.15.0, not merely 2.15.x.
pkgs=(dm-reverb==0.14.0 tensorflow-cpu==2.15.0 "numpy<2" psutil)
stamp=".venv-reverb/.installed-$(printf '%s\n' "${pkgs[@]}" | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  [ -x .venv-reverb/bin/python ] || { say "creating .venv-reverb"; "$python" -m venv .venv-reverb; }
  say "installing ${pkgs[*]} (about 600 MB the first time)"
  .venv-reverb/bin/pip install --quiet --disable-pip-version-check "${pkgs[@]}"
  rm -f .venv-reverb/.installed-*
  touch "$stamp"
fi

# A server that starts and answers a client proves the native libraries load together.
TF_CPP_MIN_LOG_LEVEL=2 .venv-reverb/bin/python - <<'PY'
import reverb
server = reverb.Server(tables=[reverb.Table.queue("probe", 10)])
client = reverb.Client(f"127.0.0.1:{server.port}")
client.insert([1], {"probe": 1.0})
assert client.server_info()["probe"].current_size == 1
server.stop()
PY
