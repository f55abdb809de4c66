"""Peer figures for `scripts/bench-env.sh`: EnvPool's Breakout agent steps/s
(84x84 grayscale, stack 4, frame skip 4, no sticky actions, no policy) and
ale-py's bare emulator frames/s, each also per CPU-second of the process
(EnvPool's worker threads included). Prints lines in the format `apex-bench env` uses."""

import argparse
import time

import numpy as np


def envpool_steps_per_sec(threads: int, envs_per_thread: int, seconds: float) -> tuple:
    import envpool

    n = threads * envs_per_thread
    env = envpool.make(
        "Breakout-v5",
        env_type="gymnasium",
        num_envs=n,
        batch_size=n,
        num_threads=threads,
        repeat_action_probability=0.0,
        img_height=84,
        img_width=84,
        stack_num=4,
        gray_scale=True,
        frame_skip=4,
        noop_max=30,
        episodic_life=True,
        reward_clip=True,
        seed=0,
    )
    env.reset()
    rng = np.random.default_rng(0)
    actions = rng.integers(0, env.action_space.n, size=(1024, n))
    start = time.perf_counter()
    while time.perf_counter() - start < 0.5:
        env.step(actions[0])
    steps, i, start, cpu = 0, 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        env.step(actions[i % 1024])
        steps += n
        i += 1
    return steps / (time.perf_counter() - start), steps / (time.process_time() - cpu)


def ale_py_frames_per_sec(seconds: float) -> tuple:
    import ale_py
    from ale_py import roms

    ale = ale_py.ALEInterface()
    ale.setLoggerMode(ale_py.LoggerMode.Error)
    ale.setFloat("repeat_action_probability", 0.0)
    ale.loadROM(roms.get_rom_path("breakout"))
    actions = ale.getMinimalActionSet()
    rng = np.random.default_rng(0)
    choice = [actions[i] for i in rng.integers(0, len(actions), size=4096)]
    frames, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        for a in choice[frames % 4096 : frames % 4096 + 64]:
            ale.act(a)
            if ale.game_over():
                ale.reset_game()
        frames += 64
    return frames / (time.perf_counter() - start), frames / (time.process_time() - cpu)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--threads", default="1,2")
    p.add_argument("--envs-per-thread", type=int, default=4)
    p.add_argument("--seconds", type=float, default=10.0)
    a = p.parse_args()
    wall, cpu = ale_py_frames_per_sec(a.seconds)
    print(f"ale_py_raw_frames_per_sec threads=1 {wall:.0f}", flush=True)
    print(f"ale_py_raw_frames_per_cpu_sec threads=1 {cpu:.0f}", flush=True)
    for t in (int(x) for x in a.threads.split(",")):
        wall, cpu = envpool_steps_per_sec(t, a.envs_per_thread, a.seconds)
        print(f"envpool_steps_per_sec threads={t} {wall:.0f}", flush=True)
        print(f"envpool_steps_per_cpu_sec threads={t} {cpu:.0f}", flush=True)


if __name__ == "__main__":
    main()
