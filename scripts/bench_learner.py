"""Peer figures for `scripts/bench-learner.sh`: the DQN update apex's learner
makes, written as a PyTorch user would write it from Python. Same network
(scripts/apex_qnet.py, the dueling Nature CNN), loss (double DQN on n-step
targets, Huber weighted by importance weights), gradient-norm clip, optimizer
(Adam, or centred RMSProp with TensorFlow's epsilon inside the square root)
and batches gathered from a pool of uint8 84x84 frames into stacks of 4.
Prints lines in the format `apex-bench learner` uses (with --cuda, on the
GPU, keys end in `-cuda` as apex's do):

    pytorch_updates_per_sec b512-t1-adam 1.234

Needs only torch, so it runs in any python that has torch; frames are
gathered with numpy where it is installed (its fancy indexing is about 2-5x
faster on the host than torch's), with torch's indexing otherwise.
"""

import argparse
import math
import pathlib
import sys
import time

import torch
import torch.nn.functional as F

try:
    import numpy as np
except ImportError:
    np = None

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from apex_qnet import ApexQNet  # noqa: E402

# The settings `apex-bench learner` uses (presets/apex-atari.toml, and the
# Ape-X paper's RMSProp).
ACTIONS = 4
STACK = 4
FRAME = 84
POOL_FRAMES = 4096
PREPARED_BATCHES = 8
GAMMA_N = 0.99**3
MAX_GRAD_NORM = 40.0
TARGET_UPDATE_EVERY = 2_500
ADAM = dict(lr=1e-4, eps=1.5e-4)
RMSPROP = dict(lr=0.00025 / 4, decay=0.95, eps=1.5e-7)


class TfRmsProp:
    """Centred RMSProp as TensorFlow 1 computes it (no momentum, mean square
    starting at 1, epsilon inside the square root); torch.optim.RMSprop puts
    it outside, so it cannot stand in."""

    def __init__(self, params, lr: float, decay: float, eps: float):
        self.params = list(params)
        self.lr, self.decay, self.eps = lr, decay, eps
        self.mean_square = [torch.ones_like(p) for p in self.params]
        self.mean_grad = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self):
        for p, ms, mg in zip(self.params, self.mean_square, self.mean_grad):
            g = p.grad
            ms.mul_(self.decay).addcmul_(g, g, value=1 - self.decay)
            mg.mul_(self.decay).add_(g, alpha=1 - self.decay)
            denom = torch.addcmul(ms, mg, mg, value=-1).clamp_min_(0).add_(self.eps).sqrt_()
            p.addcdiv_(g, denom, value=-self.lr)


def optimizer(name: str, params):
    if name == "adam":
        return torch.optim.Adam(params, **ADAM)
    if name == "rmsprop":
        return TfRmsProp(params, **RMSPROP)
    raise SystemExit(f"unknown optimizer {name!r}: use adam or rmsprop")


def gather(pool, idx) -> torch.Tensor:
    """The uint8 stacks pool[idx], on the host."""
    frames = pool[idx]
    return torch.from_numpy(frames) if np is not None else frames


def batches(batch: int, rng: torch.Generator, device: torch.device):
    """Index sets of PREPARED_BATCHES batches: n = 3 transitions whose stacks
    overlap as a replay's do (frames t-3..t, then t..t+3). The frame indices
    stay on the host (frames are gathered there, as numpy arrays where numpy
    is installed); the rest is on `device`."""
    out = []
    for _ in range(PREPARED_BATCHES):
        t = torch.randint(STACK - 1, POOL_FRAMES - STACK, (batch,), generator=rng)
        rewards = torch.randint(0, 2, (batch,), generator=rng).float()
        weights = torch.rand((batch,), generator=rng) * 0.9 + 0.1
        obs, next_obs = t[:, None] + torch.arange(-(STACK - 1), 1), t[:, None] + torch.arange(0, STACK)
        if np is not None:
            obs, next_obs = obs.numpy(), next_obs.numpy()
        out.append(
            dict(
                obs=obs,
                next_obs=next_obs,
                actions=torch.randint(0, ACTIONS, (batch,), generator=rng).to(device),
                rewards=rewards.to(device),
                discounts=torch.full((batch,), GAMMA_N, dtype=torch.float32, device=device),
                weights=weights.to(device),
            )
        )
    return out


class Learner:
    def __init__(self, opt: str, device: torch.device):
        self.device = device
        self.online = ApexQNet("nature", STACK, 64 * 7 * 7, 512, ACTIONS, True).to(device)
        self.target = ApexQNet("nature", STACK, 64 * 7 * 7, 512, ACTIONS, True).to(device)
        self.target.load_state_dict(self.online.state_dict())
        self.target.requires_grad_(False)
        self.params = list(self.online.parameters())
        self.opt = optimizer(opt, self.params)
        self.updates = 0

    def update(self, pool, b: dict):
        # Batch construction: gather uint8 frames into stacks on the host
        # and move them to the device (the network scales them to float / 255).
        obs = gather(pool, b["obs"]).to(self.device)
        next_obs = gather(pool, b["next_obs"]).to(self.device)
        q = self.online(obs).gather(1, b["actions"][:, None]).squeeze(1)
        with torch.no_grad():
            next_q = self.target(next_obs)
            best = self.online(next_obs).argmax(1, keepdim=True)
            target = b["rewards"] + b["discounts"] * next_q.gather(1, best).squeeze(1)
        loss = (b["weights"] * F.huber_loss(q, target, reduction="none", delta=1.0)).mean()
        self.opt.zero_grad()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.params, MAX_GRAD_NORM)
        if not (math.isfinite(loss.item()) and math.isfinite(norm.item())):
            return None
        self.opt.step()
        self.updates += 1
        if self.updates % TARGET_UPDATE_EVERY == 0:
            self.target.load_state_dict(self.online.state_dict())
        # New priorities and the mean Q, as the learner reports them.
        td_abs = (target - q).abs().detach().cpu()
        return td_abs, q.mean().item()


def updates_per_sec(batch: int, threads: int, opt: str, seconds: float, device: torch.device) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    rng = torch.Generator().manual_seed(0)
    pool = torch.randint(0, 256, (POOL_FRAMES, FRAME, FRAME), dtype=torch.uint8, generator=rng)
    if np is not None:
        pool = pool.numpy()
    prepared = batches(batch, rng, device)
    learner = Learner(opt, device)
    # Warm-up: oneDNN picks and caches its kernels on the first passes.
    for i in range(3):
        learner.update(pool, prepared[i % PREPARED_BATCHES])
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        learner.update(pool, prepared[n % PREPARED_BATCHES])
        n += 1
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return n / (time.perf_counter() - start)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", default="32,512", help="batch sizes, comma-separated")
    p.add_argument("--threads", default="1,2", help="torch threads, comma-separated")
    p.add_argument("--optimizer", default="adam", help="adam, rmsprop, or both comma-separated")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds per measurement")
    p.add_argument("--cuda", action="store_true", help="train on the GPU (cuda:0)")
    a = p.parse_args()
    device = torch.device("cpu")
    suffix = ""
    if a.cuda:
        if not torch.cuda.is_available():
            raise SystemExit("--cuda was asked for but torch sees no usable GPU")
        device, suffix = torch.device("cuda:0"), "-cuda"
        # As apex's learner sets it: cuDNN picks its fastest kernels once.
        torch.backends.cudnn.benchmark = True
    for opt in a.optimizer.split(","):
        for batch in map(int, a.batch.split(",")):
            for threads in map(int, a.threads.split(",")):
                rate = updates_per_sec(batch, threads, opt, a.seconds, device)
                print(f"pytorch_updates_per_sec b{batch}-t{threads}-{opt}{suffix} {rate:.3f}", flush=True)


if __name__ == "__main__":
    main()
