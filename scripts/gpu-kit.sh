#!/usr/bin/env bash
# The GPU kit: what a check of apex on a GPU host needs, built here and
# copied there as one folder (at most 60 MiB), so the host needs no Rust,
# no network and no checkout, only a python3 with torch 2.11 (CUDA build).
#   scripts/gpu-kit.sh pack DIR    build and pack the kit into DIR
#   scripts/gpu-kit.sh check       pack into a temporary folder and run its
#                                  --cpu checks here (CI; exit 1 on a failure)
# Then, on the GPU host: DIR/run.sh OUT (about 8 minutes; see run.sh).
# The kit holds stripped apex and apex-bench, the test binaries that hold
# the CUDA-only tests (#[ignore = "needs a CUDA device"]), the ROMs, the
# PyTorch side of the learner benchmark and run.sh. Its binaries carry no
# rpath: they load the host's torch libraries through LD_LIBRARY_PATH, which
# run.sh points at the torch of its python.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
case "${1:-}" in
  pack)
    [ $# = 2 ] || { echo "usage: $0 pack DIR" >&2; exit 2; }
    mkdir -p "$2"
    kit_dir=$(cd "$2" && pwd)
    ;;
  check) ;;
  *)
    echo "usage: $0 pack DIR | check" >&2
    exit 2
    ;;
esac
cd "$root"

say() { echo "gpu-kit: $*" >&2; }
max_bytes=$((60 * 1024 * 1024))
marker='#[ignore = "needs a CUDA device"]'

# Removes the build-time rpath (to this checkout's .venv) and the symbols.
slim() { # SRC DST
  cp "$1" "$2"
  chmod u+w "$2"
  strip "$2"
  patchelf --remove-rpath "$2"
  if readelf -d "$2" | grep -qE '\((RPATH|RUNPATH)\)'; then
    say "error: $2 still has an rpath"; exit 1
  fi
}

# The test executables of the workspace's CUDA-only tests, one per line as
# "executable<TAB>package<TAB>target<TAB>source", from cargo's own report.
cuda_test_binaries() {
  local packages=() name manifest
  # The members whose sources hold the marker.
  while IFS=$'\t' read -r name manifest; do
    if grep -rqF --include='*.rs' "$marker" "$(dirname "$manifest")"; then packages+=(-p "$name"); fi
  done < <(cargo metadata --no-deps --format-version 1 |
    jq -r '.packages[] | [.name, .manifest_path] | @tsv')
  if [ ${#packages[@]} = 0 ]; then return 0; fi
  say "building the test binaries of ${packages[*]}"
  cargo test --release --no-run --quiet --message-format=json "${packages[@]}" |
    jq -r 'select(.reason == "compiler-artifact" and .profile.test and .executable != null)
      | [.executable, (.manifest_path | split("/") | .[-2]), .target.name,
         .target.kind[0], .target.src_path] | @tsv' |
    while IFS=$'\t' read -r exe package target kind src; do
      # Unit tests: the crate's source folder; an integration test: its file
      # (or its folder when it is tests/<name>/main.rs).
      local scope=$src
      if [ "$kind" != test ] || [ "$(basename "$src")" = main.rs ]; then scope=$(dirname "$src"); fi
      grep -rqF --include='*.rs' "$marker" "$scope" || continue
      # libtest agrees: it lists ignored tests (a binary target shares its
      # folder with the library, whose tests those are).
      local listed
      if ! listed=$("$exe" --list --ignored 2>&1); then
        say "error: $exe --list --ignored failed: $(tail -1 <<<"$listed")"; return 1
      fi
      if ! grep -q ': test$' <<<"$listed"; then
        [ "$kind" = bin ] && continue
        say "error: $src holds CUDA-only tests but $exe lists no ignored test"; return 1
      fi
      printf '%s\t%s\t%s\t%s\n' "$exe" "$package" "$target" "${src#"$root"/}"
    done
}

pack() {
  local dir=$1
  if [ -e "$dir" ] && [ -n "$(ls -A "$dir")" ] && [ ! -f "$dir/manifest.txt" ]; then
    say "error: $dir exists and is not a kit: give a new or empty folder"; exit 1
  fi
  scripts/setup.sh
  if ! command -v patchelf >/dev/null; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
      say "installing patchelf (apt)"
      apt-get update -qq && apt-get install -y -qq patchelf >/dev/null
    else
      say "error: the kit needs patchelf to remove the binaries' rpath: install patchelf"; exit 1
    fi
  fi
  say "building apex and apex-bench (release)"
  cargo build --release --quiet -p apex -p apex-bench
  local tests
  tests=$(cuda_test_binaries)
  rm -rf "$dir"
  mkdir -p "$dir/bin" "$dir/tests" "$dir/roms" "$dir/py"
  slim target/release/apex "$dir/bin/apex"
  slim target/release/apex-bench "$dir/bin/apex-bench"
  : >"$dir/tests/index.tsv"
  local exe package target src file
  while IFS=$'\t' read -r exe package target src; do
    [ -n "$exe" ] || continue
    # <member folder>-<target>: apex_learner is the learner's unit tests.
    file=$package-$target
    slim "$exe" "$dir/tests/$file"
    printf '%s\t%s\t%s\t%s\n' "$file" "$package" "$target" "$src" >>"$dir/tests/index.tsv"
  done <<<"$tests"
  if [ ! -s "$dir/tests/index.tsv" ]; then
    say "error: found no test binary with CUDA-only tests ($marker)"; exit 1
  fi
  cp roms/*.bin "$dir/roms/"
  cp scripts/bench_learner.py scripts/apex_qnet.py scripts/gpu-kit/watch.py "$dir/py/"
  cp scripts/gpu-kit/run.sh "$dir/run.sh"
  chmod +x "$dir/run.sh"
  local glibc
  glibc=$(for f in "$dir"/bin/* "$dir"/tests/*; do [ -x "$f" ] && objdump -T "$f"; done |
    grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
  {
    echo "commit: $(git describe --always --dirty 2>/dev/null || echo unknown)"
    echo "built: $(date -u '+%Y-%m-%d %H:%M UTC') with $(rustc --version)"
    echo "glibc_needed: $glibc"
    echo "libtorch: torch $(.venv/bin/python -c 'import torch; print(torch.__version__)') at build time; at run time the host's, through LD_LIBRARY_PATH"
    echo "cuda tests:"
    sed 's/^/  /' "$dir/tests/index.tsv"
  } >"$dir/manifest.txt"
  local bytes
  bytes=$(du -sb "$dir" | cut -f1)
  say "packed $dir: $(du -sh "$dir" | cut -f1), $(wc -l <"$dir/tests/index.tsv") CUDA test binaries, needs glibc $glibc"
  if [ "$bytes" -gt "$max_bytes" ]; then
    say "error: the kit is $((bytes / 1048576)) MiB, over 60 MiB"; exit 1
  fi
}

check() {
  local rc=0
  # Global: the EXIT trap runs after this function's locals are gone.
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  pack "$tmp/kit"
  TORCH_PYTHON=$root/.venv/bin/python "$tmp/kit/run.sh" --cpu "$tmp/out" || rc=$?
  if [ "$rc" != 0 ]; then
    # The logs go with the temporary folder: show the failed steps' ends.
    local step log
    awk '$2 == "failed" { print $1 }' "$tmp/out/summary.txt" 2>/dev/null | while read -r step; do
      for log in "$tmp/out/$step.log" "$tmp"/out/tests/*"${step#test:}".log; do
        [ -f "$log" ] || continue
        echo "--- ${log#"$tmp"/out/} (last lines)" >&2
        tail -8 "$log" >&2
      done
    done
    say "the --cpu checks failed"
  fi
  return "$rc"
}

case "$1" in
  pack) pack "$kit_dir" ;;
  check) check ;;
esac
