#!/usr/bin/env bash
# The whole test suite: installs what is missing, then every Rust test,
# including the parity check against gymnasium (which uses .venv).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
scripts/setup.sh
# Release: the tests share the main binary's build, and play real games.
cargo test --workspace --release "$@"
# Tests that need a CUDA device are #[ignore]d (reported as ignored, never
# as passed); where a GPU is present, run them too.
if command -v nvidia-smi >/dev/null && nvidia-smi >/dev/null 2>&1; then
  cargo test --release -p apex-learner -- --ignored
fi
