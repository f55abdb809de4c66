#!/usr/bin/env bash
# The GPU kit's runner (packed by scripts/gpu-kit.sh as <kit>/run.sh): checks
# apex on a GPU host that has no Rust, no network and no checkout, only a
# python3 with torch 2.11 (CUDA build) and nvidia-smi.
#   <kit>/run.sh OUT          on the GPU host: about 8 minutes
#   <kit>/run.sh --cpu OUT    the parts that need no GPU, on any machine (CI)
# Each step writes its log into OUT, has its own time limit, and is reported
# as passed, failed or skipped (a step that did not run is never passed);
# the summary is the last lines printed and OUT/summary.txt. Exit status 1
# when a step failed.
# Settings (environment): TORCH_PYTHON (the python with torch; default the
# first of python3, python that imports it), KIT_BUDGET_S (seconds for the
# whole run), KIT_LOCAL_SECONDS (the apex local run), KIT_ACTORS (its actors).
set -uo pipefail

mode=gpu
if [ "${1:-}" = "--cpu" ]; then mode=cpu; shift; fi
if [ $# -ne 1 ] || [ "${1#-}" != "$1" ]; then
  echo "usage: $0 [--cpu] OUT" >&2
  exit 2
fi
kit=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$1" || exit 2
out=$(cd "$1" && pwd)
bin=$kit/bin
export APEX_ROM_DIR=$kit/roms
export NO_COLOR=1
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

if [ "$mode" = gpu ]; then
  budget=${KIT_BUDGET_S:-470}
  local_seconds=${KIT_LOCAL_SECONDS:-240}
else
  budget=${KIT_BUDGET_S:-150}
  local_seconds=${KIT_LOCAL_SECONDS:-35}
fi
deadline=$((SECONDS + budget))
max_kit_bytes=$((60 * 1024 * 1024))

# --- reporting -------------------------------------------------------------
summary_rows=()
failures=0
report() { # NAME passed|failed|skipped DETAIL
  summary_rows+=("$(printf '%-21s %-8s %s' "$1" "$2" "$3")")
  [ "$2" = failed ] && failures=$((failures + 1))
  printf '%-21s %-8s %s\n' "$1" "$2" "$3" >&2
}

# Runs "$@" with its output in OUT/NAME.log, within LIMIT seconds and what is
# left of the budget; sets rc (124/137: out of time) and took (seconds).
# Returns 1 without running when no time is left (the caller reports it).
run_step() { # NAME LIMIT CMD...
  local name=$1 limit=$2
  shift 2
  local left=$((deadline - SECONDS - 5))
  if [ "$left" -lt 5 ]; then rc=-1; took=0; return 1; fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (at most ${limit}s)" >&2
  local t0=$SECONDS
  rc=0
  timeout -k 10 "$limit" "$@" >"$out/$name.log" 2>&1 || rc=$?
  took=$((SECONDS - t0))
  return 0
}
why() { # the reason a step that ran did not pass, from rc
  case "$rc" in
    -1) echo "not run: no time left in the ${budget}s budget" ;;
    124 | 137) echo "timed out after ${took}s" ;;
    *) echo "exit $rc after ${took}s" ;;
  esac
}
no_time() { report "$1" skipped "no time left in the ${budget}s budget"; }

# --- preflight: the kit, glibc, the python with torch ------------------------
pre=()
pre_ok=1
if ! [ -x "$bin/apex" ] || ! [ -x "$bin/apex-bench" ]; then
  pre+=("apex or apex-bench missing from $bin")
  pre_ok=0
fi
kit_bytes=$(du -sb "$kit" | cut -f1)
kit_mib=$(awk -v b="$kit_bytes" 'BEGIN { printf "%.1f", b / 1048576 }')
need_glibc=$(sed -n 's/^glibc_needed: //p' "$kit/manifest.txt" 2>/dev/null)
have_glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')
if [ -n "$need_glibc" ] && [ -n "$have_glibc" ] &&
  [ "$(printf '%s\n%s\n' "$need_glibc" "$have_glibc" | sort -V | head -1)" != "$need_glibc" ]; then
  pre+=("glibc $have_glibc here, the binaries need $need_glibc")
  pre_ok=0
fi
py=""
for c in ${TORCH_PYTHON:-} python3 python; do
  if command -v "$c" >/dev/null && "$c" -c 'import torch' 2>/dev/null; then py=$c; break; fi
done
torch_lib=""
if [ -z "$py" ]; then
  pre+=("no python with torch (set TORCH_PYTHON=/path/to/python)")
  pre_ok=0
else
  torch_lib=$("$py" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
  export LD_LIBRARY_PATH=$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
{
  echo "mode: $mode"
  echo "kit: $kit ($kit_mib MiB)"
  cat "$kit/manifest.txt" 2>/dev/null
  echo "host glibc: ${have_glibc:-unknown}"
  echo "cores: $(nproc)"
  grep -m1 'model name' /proc/cpuinfo 2>/dev/null
  echo "torch python: ${py:-none}"
  echo "torch lib: ${torch_lib:-none}"
  printf '%s\n' "${pre[@]}"
} >"$out/preflight.log"
if [ "$mode" = cpu ] && [ "$kit_bytes" -gt "$max_kit_bytes" ]; then
  pre+=("the kit is $kit_mib MiB, over 60 MiB")
  pre_ok=0
fi
if [ "$pre_ok" = 1 ]; then
  report preflight passed "kit $kit_mib MiB, glibc ${have_glibc:-?} (needs ${need_glibc:-?}), torch from $py"
else
  report preflight failed "$(IFS=';'; echo "${pre[*]}")"
fi

# --- the device ---------------------------------------------------------------
if [ "$mode" = cpu ]; then
  report nvidia-smi skipped "--cpu"
elif ! command -v nvidia-smi >/dev/null; then
  report nvidia-smi failed "nvidia-smi is not on PATH"
elif ! run_step nvidia-smi 30 nvidia-smi; then
  no_time nvidia-smi
elif [ "$rc" = 0 ]; then
  report nvidia-smi passed "$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)"
else
  report nvidia-smi failed "$(why)"
fi

if [ -z "$py" ]; then
  report torch skipped "no python with torch"
elif ! run_step torch 60 "$py" -c '
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())
print("cuda available:", torch.cuda.is_available(), "devices:", torch.cuda.device_count())
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"device {i}: {p.name}, capability {p.major}.{p.minor}, {p.total_memory / 2**30:.1f} GiB, {p.multi_processor_count} SMs")
if torch.cuda.is_available():
    x = torch.randn(1024, 1024, device="cuda")
    print("matmul on cuda:0 ok:", bool(torch.isfinite(x @ x).all()))
'; then
  no_time torch
elif [ "$rc" != 0 ]; then
  report torch failed "$(why)"
elif [ "$mode" = gpu ] && ! grep -q 'cuda available: True' "$out/torch.log"; then
  report torch failed "torch sees no usable GPU: $(head -1 "$out/torch.log")"
else
  report torch passed "$(head -1 "$out/torch.log")$(sed -n 's/^device 0: /; /p' "$out/torch.log")"
fi

# --- libraries: libtorch from LD_LIBRARY_PATH only ----------------------------
# Every binary must load libtorch (libtorch_cuda.so included: without it CUDA
# is silently unavailable) from the folder LD_LIBRARY_PATH names, never from
# a path baked in at build time. A symlink to the torch lib folder stands in
# for "somewhere else": ldd must find every libtorch library through it.
check_libs() {
  local alias=$scratch/torch-lib problems=0 checked=0 f name lib where
  ln -sfn "$torch_lib" "$alias"
  for f in "$bin"/* "$kit"/tests/*; do
    if ! [ -f "$f" ] || ! [ -x "$f" ]; then continue; fi
    name=${f#"$kit"/}
    checked=$((checked + 1))
    if command -v readelf >/dev/null && readelf -d "$f" | grep -qE '\((RPATH|RUNPATH)\)'; then
      echo "FAIL $name: has an rpath: $(readelf -d "$f" | grep -E 'RPATH|RUNPATH')"
      problems=$((problems + 1))
    fi
    LD_LIBRARY_PATH=$alias ldd "$f" >"$scratch/ldd.txt" 2>&1
    sed "s|^|$name: |" "$scratch/ldd.txt"
    if grep -q 'not found' "$scratch/ldd.txt"; then
      echo "FAIL $name: $(grep 'not found' "$scratch/ldd.txt" | tr -s ' \t' ' ' | paste -sd,)"
      problems=$((problems + 1))
    fi
    for lib in libtorch_cpu.so libc10.so libtorch_cuda.so; do
      where=$(awk -v l="$lib" '$1 == l { print $3 }' "$scratch/ldd.txt")
      if [ -z "$where" ]; then
        echo "FAIL $name: does not load $lib"
        problems=$((problems + 1))
      elif [ "${where#"$alias"/}" = "$where" ]; then
        echo "FAIL $name: $lib from $where, not from LD_LIBRARY_PATH"
        problems=$((problems + 1))
      fi
    done
    if [ "$mode" = cpu ]; then
      # Nothing else may provide it: with no LD_LIBRARY_PATH it is not found.
      if env -u LD_LIBRARY_PATH ldd "$f" 2>&1 | grep 'libtorch_cpu.so' | grep -vq 'not found'; then
        echo "FAIL $name: finds libtorch_cpu.so without LD_LIBRARY_PATH"
        problems=$((problems + 1))
      fi
    fi
  done
  echo "checked $checked binaries, $problems problem(s)"
  [ "$problems" = 0 ] && [ "$checked" -gt 0 ]
}
if [ -z "$torch_lib" ]; then
  report ldd skipped "no python with torch"
elif check_libs >"$out/ldd.log" 2>&1; then
  report ldd passed "$(tail -1 "$out/ldd.log" | cut -d, -f1): libtorch, libtorch_cuda too, only from LD_LIBRARY_PATH"
else
  report ldd failed "$(grep -m1 '^FAIL' "$out/ldd.log" || tail -1 "$out/ldd.log")"
fi

# --- apex doctor --------------------------------------------------------------
doctor_args=()
[ "$mode" = gpu ] && doctor_args=(--require-cuda)
if ! run_step doctor 60 "$bin/apex" doctor "${doctor_args[@]}"; then
  no_time doctor
elif [ "$rc" = 0 ]; then
  report doctor passed "$(grep '^cuda:' "$out/doctor.log"); $(grep -o '^roms: [0-9]* of [0-9]*' "$out/doctor.log")"
else
  report doctor failed "$(why): $(tail -1 "$out/doctor.log")"
fi

# --- the CUDA-only tests ------------------------------------------------------
# tests/index.tsv: file, package, target, source of each test binary that
# holds #[ignore = "needs a CUDA device"] tests.
mkdir -p "$out/tests"
while IFS=$'\t' read -r file package target _; do
  [ -n "$file" ] || continue
  name="test:$target"
  log=$out/tests/$file.log
  if [ "$mode" = cpu ]; then
    # Not run without a GPU: listed, which also proves the binary loads.
    if "$kit/tests/$file" --list --ignored >"$log" 2>&1; then
      report "$name" skipped "--cpu: $(grep -c ': test$' "$log") CUDA test(s) of $package listed, not run"
    else
      report "$name" failed "the test binary does not start: $(tail -1 "$log")"
    fi
    continue
  fi
  if ! run_step "tests/$file" 120 "$kit/tests/$file" --ignored; then
    no_time "$name"
    continue
  fi
  result=$(grep -E '^test result:' "$out/tests/$file.log" | tail -1)
  passed=$(sed -n 's/.* \([0-9]*\) passed.*/\1/p' <<<"$result")
  if [ "$rc" = 0 ] && [ -n "$result" ] && [ "${passed:-0}" -gt 0 ]; then
    report "$name" passed "${result#test result: }"
  elif [ "$rc" = 0 ]; then
    report "$name" failed "no test ran: ${result:-no libtest summary}"
  else
    report "$name" failed "$(why): ${result:-no libtest summary}; $(grep -E '^test .* FAILED$' "$out/tests/$file.log" | paste -sd, | cut -c1-120)"
  fi
done <"$kit/tests/index.tsv"

# --- learner updates/s: apex against PyTorch on the same device ---------------
if [ "$mode" = gpu ]; then
  # shellcheck disable=SC2054 # commas separate the values of one flag
  bench=(--cuda --batch 512,32 --threads 4 --optimizer adam,rmsprop --seconds 6)
else
  bench=(--batch 32 --threads 1 --optimizer adam --seconds 3)
fi
if ! run_step bench-apex 120 "$bin/apex-bench" learner "${bench[@]}"; then
  no_time bench-apex
elif [ "$rc" = 0 ] && grep -q '^apex_updates_per_sec' "$out/bench-apex.log"; then
  report bench-apex passed "$(awk '$1 == "apex_updates_per_sec" { printf "%s %s/s  ", $2, $3 }' "$out/bench-apex.log")"
else
  report bench-apex failed "$(why): $(tail -1 "$out/bench-apex.log")"
fi
if [ -z "$py" ]; then
  report bench-pytorch skipped "no python with torch"
elif ! run_step bench-pytorch 120 "$py" "$kit/py/bench_learner.py" "${bench[@]}"; then
  no_time bench-pytorch
elif [ "$rc" = 0 ] && grep -q '^pytorch_updates_per_sec' "$out/bench-pytorch.log"; then
  report bench-pytorch passed "$(awk '$1 == "pytorch_updates_per_sec" { printf "%s %s/s  ", $2, $3 }' "$out/bench-pytorch.log")"
else
  report bench-pytorch failed "$(why): $(tail -1 "$out/bench-pytorch.log")"
fi
cat "$out/bench-apex.log" "$out/bench-pytorch.log" 2>/dev/null | awk '
  $1 == "apex_updates_per_sec" { a[$2] = $3 }
  $1 == "pytorch_updates_per_sec" { p[$2] = $3 }
  END {
    printf "%-24s %10s %10s %7s\n", "batch-threads-optimizer", "apex/s", "pytorch/s", "ratio"
    for (k in a) printf "%-24s %10.2f %10s %7s\n", k, a[k], (k in p) ? sprintf("%.2f", p[k]) : "-", (k in p && p[k] > 0) ? sprintf("%.2f", a[k] / p[k]) : "-"
  }' >"$out/bench-learner.txt"

# --- the learner's input pipeline ------------------------------------------------
if [ "$mode" = gpu ]; then
  record_steps=3000
  # shellcheck disable=SC2054 # as above
  input=(--batch 512 --workers 1,4,8 --seconds 5 --fill 20000 --cuda)
else
  record_steps=600
  input=(--batch 32 --workers 1 --seconds 3 --fill 2000)
fi
if ! run_step frames 90 "$bin/apex" env record --game breakout --steps "$record_steps" --out "$scratch/frames"; then
  no_time learner-input
elif [ "$rc" != 0 ] || [ ! -f "$scratch/frames/obs.npy" ]; then
  report learner-input failed "recording its frames: $(why): $(tail -1 "$out/frames.log")"
elif ! run_step learner-input 120 "$bin/apex-bench" learner-input --frames "$scratch/frames/obs.npy" "${input[@]}"; then
  no_time learner-input
elif [ "$rc" = 0 ] && grep -q '^apex_input_batches_per_sec' "$out/learner-input.log"; then
  report learner-input passed "$(awk '$1 == "apex_input_batches_per_sec" { printf "%s %s/s  ", $2, $3 }' "$out/learner-input.log")"
else
  report learner-input failed "$(why): $(tail -1 "$out/learner-input.log")"
fi

# --- apex local: training, stopped like Ctrl-C ----------------------------------
# The run folder is scratch (a replay checkpoint is written at the stop, GBs
# on a GPU run); its small files are copied into OUT/local-run.
left=$((deadline - SECONDS - 60))
[ "$local_seconds" -gt "$left" ] && local_seconds=$left
if [ "$local_seconds" -lt 15 ]; then
  no_time local
elif [ -z "$py" ]; then
  report local skipped "no python with torch"
else
  port=$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  cores=$(nproc)
  if [ "$mode" = gpu ]; then
    actors=${KIT_ACTORS:-$((cores > 6 ? cores - 4 : 2))}
    local_args=(--cuda --actors "$actors")
  else
    actors=${KIT_ACTORS:-1}
    local_args=(--actors "$actors" --envs 4 --min-size 500 --capacity 20000 --batch-size 32
      --samples-per-insert 0 --eval-episodes 0 --log-every 5)
  fi
  run=$scratch/local-run
  "$py" "$kit/py/watch.py" "http://127.0.0.1:$port/metrics" "$((local_seconds - 3))" 10 >"$out/local-watch.log" 2>&1 &
  watcher=$!
  echo "== local (${local_seconds}s, then SIGINT)" >&2
  t0=$SECONDS
  rc=0
  timeout -s INT -k 45 --preserve-status "$local_seconds" \
    "$bin/apex" local --game breakout --run-dir "$run" --metrics-addr "127.0.0.1:$port" "${local_args[@]}" \
    >"$out/local.log" 2>&1 || rc=$?
  took=$((SECONDS - t0))
  wait "$watcher" 2>/dev/null
  mkdir -p "$out/local-run"
  if [ -d "$run" ]; then
    # Not the run's bearer token.
    find "$run" -maxdepth 2 -type f -size -2M ! -name token -exec cp {} "$out/local-run/" \;
    find "$run" -maxdepth 2 -type f -size +2M -exec ls -l {} \; >"$out/local-run/large-files-not-copied.txt"
  fi
  last=$(grep -E '^\[ *[0-9]+s\] env steps' "$out/local.log" | tail -1)
  updates=$(sed -n 's/.*| updates \([0-9]*\) .*/\1/p' <<<"$last")
  ups=$(sed -n 's/.*| updates [0-9]* (\([0-9.]*\/s\)).*/\1/p' <<<"$last")
  sps=$(sed -n 's/.*env steps [0-9]* (\([0-9]*\/s\)).*/\1/p' <<<"$last")
  watch=$(sed -n 's/^summary: //p' "$out/local-watch.log")
  detail="${local_seconds}s, $actors actors: env steps ${sps:-?}, updates ${updates:-0} (${ups:-?} at the end); ${watch:-no metrics summary}; stopped in $((took - local_seconds))s"
  if [ "$rc" = 0 ] && [ "${updates:-0}" -gt 0 ] && [ -f "$run/checkpoint.ot" ]; then
    report local passed "$detail"
  elif [ "$rc" != 0 ]; then
    report local failed "exit $rc after ${took}s: $(grep -v '^\[' "$out/local.log" | tail -1 | cut -c1-160)"
  elif [ "${updates:-0}" = 0 ]; then
    report local failed "no updates: $detail"
  else
    report local failed "no checkpoint.ot after the stop: $detail"
  fi
fi

# --- summary ----------------------------------------------------------------------
{
  echo
  echo "apex GPU kit, $mode run, $(date -u '+%Y-%m-%d %H:%M UTC'), ${SECONDS}s; logs in $out"
  grep -E '^(commit|built):' "$kit/manifest.txt" 2>/dev/null | paste -sd' '
  [ "$mode" = gpu ] && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -1 | sed 's/^/gpu: /'
  printf '%-21s %-8s %s\n' step result detail
  printf '%s\n' "${summary_rows[@]}" | cut -c1-220
  if [ "$(wc -l <"$out/bench-learner.txt")" -gt 1 ]; then
    echo "learner updates/s:"
    sed 's/^/  /' "$out/bench-learner.txt"
  fi
  printf '%s passed, %s failed, %s skipped\n' \
    "$(printf '%s\n' "${summary_rows[@]}" | awk '$2 == "passed"' | wc -l)" "$failures" \
    "$(printf '%s\n' "${summary_rows[@]}" | awk '$2 == "skipped"' | wc -l)"
} | tee "$out/summary.txt"
[ "$failures" = 0 ]
