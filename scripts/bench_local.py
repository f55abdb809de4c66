#!/usr/bin/env python3
"""The whole system, before and after: `apex local` from each given binary,
alternating for ROUNDS rounds, each for WARMUP + SECONDS seconds on Breakout
with the default preset (fixed replay ratio) and the evaluator held off.

Over the steady window (after WARMUP) it reads env steps and learner updates
from the run's progress.csv and the process's CPU time from /proc, and prints
one JSON line per run and a table of medians:
env steps/s, updates/s, CPU cores used, and steps and updates per CPU-second.

  scripts/bench_local.py [--rounds 2] [--seconds 120] [--warmup 60] NAME=BINARY ...
"""
import argparse
import csv
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """User and system time of the process and its threads so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def last_row(path):
    try:
        with open(path) as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        return None
    return rows[-1] if rows else None


def run_once(name, binary, warmup, seconds, args):
    run_dir = tempfile.mkdtemp(prefix=f"bench-local-{name}-")
    progress = os.path.join(run_dir, "progress.csv")
    cmd = [binary, "local", "--run-dir", run_dir, "--log-every", "5",
           "--eval-every-secs", "100000", "--metrics-addr", "127.0.0.1:0", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(warmup)
        start = (last_row(progress), cpu_seconds(proc.pid), time.monotonic())
        time.sleep(seconds)
        end = (last_row(progress), cpu_seconds(proc.pid), time.monotonic())
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    if proc.returncode != 0:
        sys.exit(f"{name}: apex local exited {proc.returncode}: {err[-2000:]}")
    if start[0] is None or end[0] is None:
        sys.exit(f"{name}: no progress rows in {progress}: lengthen --warmup")
    wall = float(end[0]["wall_seconds"]) - float(start[0]["wall_seconds"])
    steps = int(end[0]["env_steps"]) - int(start[0]["env_steps"])
    updates = int(end[0]["updates"]) - int(start[0]["updates"])
    cores = (end[1] - start[1]) / (end[2] - start[2])
    r = {
        "name": name,
        "env_steps_per_sec": steps / wall,
        "updates_per_sec": updates / wall,
        "cores": cores,
        "updates_per_cpu_second": updates / wall / cores,
        "env_steps_per_cpu_second": steps / wall / cores,
        "window_seconds": wall,
    }
    print(json.dumps(r), flush=True)
    return r


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seconds", type=float, default=120)
    p.add_argument("--warmup", type=float, default=60)
    p.add_argument("--local-arg", action="append", default=[], help="passed to apex local (repeatable)")
    p.add_argument("binaries", nargs="+", metavar="NAME=BINARY")
    a = p.parse_args()
    named = [b.split("=", 1) for b in a.binaries]
    runs = {name: [] for name, _ in named}
    for r in range(a.rounds):
        for name, binary in named:
            print(f"round {r + 1}/{a.rounds}: {name}", file=sys.stderr, flush=True)
            runs[name].append(run_once(name, binary, a.warmup, a.seconds, a.local_arg))
    keys = ["env_steps_per_sec", "updates_per_sec", "cores", "updates_per_cpu_second", "env_steps_per_cpu_second"]
    print("| binary | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for name, rs in runs.items():
        cells = [f"{statistics.median(r[k] for r in rs):.2f}" for k in keys]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if len(named) > 1:
        base = named[0][0]
        for name, _ in named[1:]:
            ratio = {k: statistics.median(r[k] for r in runs[name]) / statistics.median(r[k] for r in runs[base]) for k in keys}
            print(f"{name} / {base}: " + ", ".join(f"{k} {v:.2f}" for k, v in ratio.items()))


if __name__ == "__main__":
    main()
