"""DeepMind Reverb's side of the replay-server benchmark: the workload an Ape-X
actor with 3-step returns puts on a Reverb server, measured like apex's.

Every measurement starts its own Reverb server in a separate process (clients
reach it over loopback) with one table: Prioritized(0.6) sampling, Fifo removal,
max_size --capacity, MinSize(1) rate limiter, so neither side waits on a
samples-per-insert ratio. Writers replay real Breakout frames (--frames, the
obs.npy that `apex env record` writes: [T, 84, 84] uint8) stacked 4 deep, and
append one step per frame through a TrajectoryWriter, creating one 3-step
transition item per step, as Acme's NStepTransitionAdder does. One sampler
concurrently draws batches of --batch through reverb.TrajectoryDataset and
tf.data, the path Acme's learners use (Client.sample was 5-10x slower).

Chunking and compression are the TrajectoryWriter defaults: auto-tuned chunk
length per column, each chunk Snappy-compressed, no delta encoding.

Memory per stored transition: a fresh server is filled to --fill items (no
sampler) and the growth of its resident set is divided by the items stored.

Frames: target/release/apex env record --game breakout --steps 3000 --out runs/reverb-frames

Prints one JSON line per writer count and one for memory per stored transition;
progress goes to stderr. Run it with the interpreter from
scripts/bench-reverb-setup.sh:
  .venv-reverb/bin/python scripts/bench_replay_reverb.py --frames runs/reverb-frames/obs.npy
"""

import argparse
import json
import multiprocessing as mp
import os
import sys
import threading
import time

# TensorFlow's C++ start-up chatter would drown the progress lines.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import psutil

TABLE = "apex_transitions"
N_STEP = 3
GAMMA = 0.99
STACK = 4
# Acme's ReverbAdder default: flush after each item while more than this many
# are still unacknowledged, so an actor never runs far ahead of the server.
MAX_IN_FLIGHT_ITEMS = 5


def log(msg: str) -> None:
    print(f"reverb-bench: {msg}", file=sys.stderr, flush=True)


def signature(tf):
    obs = tf.TensorSpec((84, 84, STACK), tf.uint8)
    return {
        "observation": obs,
        "action": tf.TensorSpec((), tf.int32),
        "reward": tf.TensorSpec((), tf.float32),
        "discount": tf.TensorSpec((), tf.float32),
        "next_observation": obs,
    }


def serve(capacity: int, port_out, stop) -> None:
    import reverb
    import tensorflow as tf

    table = reverb.Table(
        name=TABLE,
        sampler=reverb.selectors.Prioritized(0.6),
        remover=reverb.selectors.Fifo(),
        max_size=capacity,
        rate_limiter=reverb.rate_limiters.MinSize(1),
        signature=signature(tf),
    )
    server = reverb.Server(tables=[table])
    port_out.send(server.port)
    stop.wait()
    server.stop()


def stacked_frames(path: str) -> np.ndarray:
    frames = np.load(path)
    if frames.ndim == 4 and frames.shape[1:] == (84, 84, STACK):
        return np.ascontiguousarray(frames)
    assert frames.ndim == 3 and frames.shape[1:] == (84, 84), frames.shape
    # Stack t holds frames t-3..t on the last axis, the layout Acme's Atari wrapper emits.
    windows = np.lib.stride_tricks.sliding_window_view(frames, STACK, axis=0)
    return np.ascontiguousarray(windows)  # [T-3, 84, 84, 4]


def write_loop(address: str, stacks: np.ndarray, writer_id: int, stop) -> None:
    import reverb

    rng = np.random.default_rng(writer_id)
    steps = len(stacks)
    # Writers start far apart in the recording so their items differ.
    offset = (writer_id * 7919) % steps
    actions = rng.integers(0, 4, steps).astype(np.int32)
    rewards = (rng.random(steps) < 0.05).astype(np.float32)
    client = reverb.Client(address)
    with client.trajectory_writer(num_keep_alive_refs=N_STEP + 1) as writer:
        t = 0
        while not stop.is_set():
            i = (offset + t) % steps
            # The step at i closes the transition that began N_STEP steps earlier;
            # its return rides along in the same step, as Acme appends it.
            ret = sum(GAMMA**k * rewards[(i - N_STEP + k) % steps] for k in range(N_STEP))
            writer.append({
                "observation": stacks[i],
                "action": actions[i],
                "reward": np.float32(ret),
                "discount": np.float32(GAMMA**N_STEP),
            })
            t += 1
            if t <= N_STEP:
                continue
            h = writer.history
            writer.create_item(
                TABLE,
                priority=float(rng.uniform(0.01, 10.0)),
                trajectory={
                    "observation": h["observation"][-N_STEP - 1],
                    "action": h["action"][-N_STEP - 1],
                    "reward": h["reward"][-1],
                    "discount": h["discount"][-1],
                    "next_observation": h["observation"][-1],
                },
            )
            writer.flush(MAX_IN_FLIGHT_ITEMS)


def writer_proc(address: str, frames: str, ids, ready, stop) -> None:
    stacks = stacked_frames(frames)
    threads = [threading.Thread(target=write_loop, args=(address, stacks, i, stop)) for i in ids]
    for t in threads:
        t.start()
    ready.release()
    for t in threads:
        t.join()


def sample_proc(address: str, method: str, parallel: int, batch: int, sampled, ready, stop) -> None:
    import reverb

    ready.release()
    if method == "dataset":
        import tensorflow as tf

        # Acme's make_reverb_dataset: `parallel` sample streams, each with 2 batches
        # in flight, interleaved, batched and prefetched by tf.data; each batch is a
        # [batch, ...] tensor per field.
        def stream(_):
            return reverb.TrajectoryDataset.from_table_signature(
                server_address=address, table=TABLE, max_in_flight_samples_per_worker=2 * batch)

        if parallel == 1:
            ds = stream(0)
        else:
            ds = tf.data.Dataset.range(parallel).interleave(
                stream, cycle_length=parallel, num_parallel_calls=parallel, deterministic=False)
        ds = ds.batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
        for _ in ds:
            sampled.value += batch
            if stop.is_set():
                return
    else:
        client = reverb.Client(address)
        while not stop.is_set():
            for _ in client.sample(TABLE, num_samples=batch, emit_timesteps=False):
                pass
            sampled.value += batch


def server_stats(client):
    info = client.server_info()[TABLE]
    r = info.rate_limiter_info
    return info.current_size, r.insert_stats.completed, r.sample_stats.completed


class Server:
    def __init__(self, ctx, capacity: int):
        self.stop = ctx.Event()
        recv, send = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=serve, args=(capacity, send, self.stop), daemon=True)
        self.proc.start()
        if not recv.poll(180):
            self.proc.kill()
            raise RuntimeError("the Reverb server did not start within 180 s")
        port = recv.recv()
        self.address = f"127.0.0.1:{port}"
        self.ps = psutil.Process(self.proc.pid)
        import reverb

        self.client = reverb.Client(self.address)

    def rss(self) -> int:
        return self.ps.memory_info().rss

    def cpu(self) -> float:
        c = self.ps.cpu_times()
        return c.user + c.system

    def close(self) -> None:
        self.stop.set()
        self.proc.join(30)
        if self.proc.is_alive():
            self.proc.kill()


def start_writers(ctx, a, address: str, writers: int, procs: int, stop):
    procs = max(1, min(procs, writers))
    ready = ctx.Semaphore(0)
    ps = []
    for p in range(procs):
        ids = list(range(p, writers, procs))
        ps.append(ctx.Process(target=writer_proc, args=(address, a.frames, ids, ready, stop), daemon=True))
        ps[-1].start()
    for _ in ps:
        ready.acquire()
    return ps


def stop_all(procs, stop) -> None:
    stop.set()
    for p in procs:
        p.join(60)
        if p.is_alive():
            p.kill()


def measure(ctx, a, writers: int) -> dict:
    server = Server(ctx, a.capacity)
    stop = ctx.Event()
    sampled = ctx.Value("q", 0, lock=False)
    ready = ctx.Semaphore(0)
    sampler = ctx.Process(target=sample_proc, args=(server.address, a.sampler, a.sampler_streams, a.batch, sampled, ready, stop), daemon=True)
    sampler.start()
    ready.acquire()
    procs = start_writers(ctx, a, server.address, writers, a.writer_procs, stop)
    # The sampler's first batch can take seconds under load (tf.data graph set-up);
    # the warm-up counts from then, so both sides are running when the window opens.
    deadline = time.perf_counter() + 120
    while sampled.value == 0 and time.perf_counter() < deadline:
        time.sleep(0.1)
    time.sleep(a.warmup)
    _, ins0, smp0 = server_stats(server.client)
    got0, cpu0, t0 = sampled.value, server.cpu(), time.perf_counter()
    time.sleep(a.seconds)
    size, ins1, smp1 = server_stats(server.client)
    got1, cpu1, t1 = sampled.value, server.cpu(), time.perf_counter()
    stop_all(procs + [sampler], stop)
    server.close()
    dt = t1 - t0
    log(f"{writers} writers: table size {size}, server sampled {(smp1 - smp0) / dt:.0f}/s, "
        f"server cpu {cpu1 - cpu0:.1f}s over {dt:.1f}s")
    return {
        "system": "reverb", "writers": writers,
        "insert_per_sec": round((ins1 - ins0) / dt, 1),
        "sample_per_sec": round((got1 - got0) / dt, 1),
        "seconds": round(dt, 2),
        "server_cpu_seconds": round(cpu1 - cpu0, 2),
        "sampler": a.sampler, "sampler_streams": a.sampler_streams, "writer_procs": max(1, min(a.writer_procs, writers)),
    }


def memory(ctx, a) -> dict:
    items = min(a.fill, a.capacity)
    server = Server(ctx, a.capacity)
    time.sleep(1.0)
    before = server.rss()
    stop = ctx.Event()
    writers = a.fill_writers
    procs = start_writers(ctx, a, server.address, writers, a.writer_procs, stop)
    t0 = time.perf_counter()
    while (size := server_stats(server.client)[0]) < items:
        time.sleep(0.5)
        if time.perf_counter() - t0 > a.fill_timeout:
            break
    stop_all(procs, stop)
    # Closed writers have handed back their last chunks; let the server settle.
    time.sleep(1.0)
    size = server_stats(server.client)[0]
    after = server.rss()
    server.close()
    log(f"memory: {size} items in {time.perf_counter() - t0:.1f}s, server RSS "
        f"{before / 2**20:.0f} MiB -> {after / 2**20:.0f} MiB")
    return {
        "system": "reverb", "metric": "bytes_per_transition", "items": size,
        "bytes_per_transition": round((after - before) / max(size, 1), 1),
        "server_rss_before": before, "server_rss_after": after,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", required=True, help="obs.npy from `apex env record`")
    p.add_argument("--writers", default="1,8,64")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--capacity", type=int, default=1_000_000)
    p.add_argument("--fill", type=int, default=100_000, help="items stored for the memory figure; 0 skips it")
    p.add_argument("--fill-writers", type=int, default=8)
    p.add_argument("--fill-timeout", type=float, default=600.0)
    # One process per writer would load TensorFlow 64 times (~300 MB each); threads alone
    # serialize on the GIL. 8 processes of threads inserted at least as fast as 1 or 2.
    p.add_argument("--writer-procs", type=int, default=8,
                   help="writer processes; writers are spread over them as threads")
    p.add_argument("--sampler", choices=("dataset", "client"), default="dataset",
                   help="dataset: reverb.TrajectoryDataset batched by tf.data; client: Client.sample")
    # Acme interleaves 12 streams; on 2 cores 4 delivered as much and left the writers more CPU.
    p.add_argument("--sampler-streams", type=int, default=4,
                   help="TrajectoryDatasets interleaved into the sampler's one batch stream")
    a = p.parse_args()
    ctx = mp.get_context("spawn")
    started = time.perf_counter()
    for w in (int(x) for x in a.writers.split(",") if x):
        print(json.dumps(measure(ctx, a, w)), flush=True)
    if a.fill > 0:
        print(json.dumps(memory(ctx, a)), flush=True)
    log(f"done in {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
