"""Watches an `apex local` run for the GPU kit's run.sh: every INTERVAL
seconds it reads the run's Prometheus endpoint (learner updates and the time
the training loop waited for data) and, where nvidia-smi works, the GPU's
memory and utilization; one line per sample, then a summary line:

    watch.py URL SECONDS [INTERVAL]

Only the standard library: it runs in whatever python3 the GPU host has.
"""

import shutil
import subprocess
import sys
import time
import urllib.request

UPDATES = "apex_learner_updates_total"
WAIT_SUM = "apex_learner_data_wait_seconds_sum"
WAIT_COUNT = "apex_learner_data_wait_seconds_count"


def scrape(url: str) -> dict:
    """The unlabelled samples (and the first of each labelled family) by name."""
    try:
        text = urllib.request.urlopen(url, timeout=3).read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        name = name.split("{", 1)[0]
        try:
            out.setdefault(name, float(value))
        except ValueError:
            pass
    return out


def gpu() -> str:
    if not shutil.which("nvidia-smi"):
        return "gpu -"
    try:
        q = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used,memory.total,utilization.gpu", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=5,
        )
        used, total, util = (v.strip() for v in q.stdout.splitlines()[0].split(","))
        return f"gpu mem {used}/{total} MiB util {util}%"
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return "gpu -"


def main():
    url, seconds = sys.argv[1], float(sys.argv[2])
    interval = float(sys.argv[3]) if len(sys.argv) > 3 else 10.0
    start = time.monotonic()
    first = None  # (t, updates, wait) at the first sample with updates
    last = None
    prev = None
    peak_mem = None
    while time.monotonic() - start < seconds:
        time.sleep(min(interval, max(0.0, seconds - (time.monotonic() - start))))
        t = time.monotonic() - start
        m = scrape(url)
        g = gpu()
        if g.startswith("gpu mem"):
            used = int(g.split()[2].split("/")[0])
            peak_mem = used if peak_mem is None else max(peak_mem, used)
        if UPDATES not in m:
            print(f"[{t:6.0f}s] no learner metrics yet | {g}", flush=True)
            continue
        cur = (t, m[UPDATES], m.get(WAIT_SUM, float("nan")))
        if first is None and cur[1] > 0:
            first = cur
        line = f"[{t:6.0f}s] updates {cur[1]:.0f}"
        if prev is not None and cur[0] > prev[0]:
            dt = cur[0] - prev[0]
            line += f" ({(cur[1] - prev[1]) / dt:.1f}/s), data wait {(cur[2] - prev[2]) / dt:.0%} of the interval"
        print(f"{line} | {g}", flush=True)
        prev = last = cur
    peak = "no gpu memory figures" if peak_mem is None else f"peak gpu mem {peak_mem} MiB"
    if first is None or last is None or last[0] <= first[0]:
        print(f"summary: no training seen (no updates reported by {url}); {peak}", flush=True)
        return
    dt = last[0] - first[0]
    print(
        f"summary: {(last[1] - first[1]) / dt:.1f} updates/s over {dt:.0f}s of training, "
        f"data wait {(last[2] - first[2]) / dt:.0%}, {peak}",
        flush=True,
    )


if __name__ == "__main__":
    main()
