"""cpprb's PrioritizedReplayBuffer, measured like `apex-bench replay`: batches
of 512 sampled (with importance weights, beta 0.4) and priority updates of 512
ids per second, at each buffer size, alpha 0.6, small observations."""

import argparse
import time

import numpy as np
from cpprb import PrioritizedReplayBuffer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--items", default="1000000,2000000")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--seconds", type=float, default=5.0)
    a = p.parse_args()
    rng = np.random.default_rng(0)
    for n in (int(x) for x in a.items.split(",")):
        env = {"obs": {"shape": 4, "dtype": np.uint8}, "act": {}, "rew": {}, "next_obs": {"shape": 4, "dtype": np.uint8}, "done": {}}
        rb = PrioritizedReplayBuffer(n, env, alpha=0.6)
        chunk = 10_000
        for start in range(0, n, chunk):
            k = min(chunk, n - start)
            rb.add(
                obs=np.zeros((k, 4), np.uint8), act=np.zeros(k), rew=np.zeros(k),
                next_obs=np.zeros((k, 4), np.uint8), done=np.zeros(k),
                priorities=rng.uniform(0.01, 10.0, k),
            )
        t, batches = time.perf_counter(), 0
        while time.perf_counter() - t < a.seconds:
            rb.sample(a.batch, beta=0.4)
            batches += 1
        sample_rate = batches / (time.perf_counter() - t)
        ids = [rng.integers(0, n, a.batch) for _ in range(64)]
        prios = rng.uniform(0.01, 10.0, a.batch)
        t, updates = time.perf_counter(), 0
        while time.perf_counter() - t < a.seconds:
            rb.update_priorities(ids[updates % 64], prios)
            updates += 1
        update_rate = updates / (time.perf_counter() - t)
        print(f"cpprb_sample_batches_per_sec items={n} {sample_rate:.0f}", flush=True)
        print(f"cpprb_update_batches_per_sec items={n} {update_rate:.0f}", flush=True)


if __name__ == "__main__":
    main()
