"""Apex's Q-network in PyTorch, loaded from the safetensors that `apex export` writes.

    apex export --checkpoint runs/<run>/checkpoint.ot --out model.safetensors

    from apex_qnet import ApexQNet
    net = ApexQNet.from_safetensors("model.safetensors")
    q = net(obs)            # obs: uint8 [B, C, H, W] (stacked 84x84 frames) -> Q [B, A]
    action = q.argmax(-1)
    z = net.quantiles(obs)  # a quantile head's (QR-DQN) return quantiles [B, A, N]; Q is their mean

The architecture (Nature CNN or the small MLP, dueling or not, channels,
actions, hidden units, the quantile head's count from the `quantiles`
tensor) is read from the tensor names and shapes, and the
forward pass computes what model/src/lib.rs does, operation for operation:
the same libtorch gives the same Q-values to float rounding.
"""

from __future__ import annotations

import torch
from torch import nn


def _head(features: int, hidden: int, outputs: int) -> nn.ModuleDict:
    # A ModuleDict keeps apex's names: advantage.hidden.weight, advantage.out.bias, ...
    return nn.ModuleDict({"hidden": nn.Linear(features, hidden), "out": nn.Linear(hidden, outputs)})


class ApexQNet(nn.Module):
    """Nature DQN torso (or one hidden layer) with an optional dueling head."""

    def __init__(
        self, arch: str, in_features: int, features: int, hidden: int, actions: int, dueling: bool, quantiles: int = 1
    ):
        """`arch` is "nature" (`in_features` = input channels) or "mlp"
        (`in_features` = C*H*W); `features` feeds the heads, `hidden` is each head's width;
        `quantiles` above 1: a QR-DQN head of that many quantiles per action."""
        super().__init__()
        if arch not in ("nature", "mlp"):
            raise ValueError(f"arch must be 'nature' or 'mlp', not {arch!r}")
        self.arch, self.actions, self.dueling, self.n_quantiles = arch, actions, dueling, quantiles
        if arch == "nature":
            self.conv1 = nn.Conv2d(in_features, 32, 8, stride=4)
            self.conv2 = nn.Conv2d(32, 64, 4, stride=2)
            self.conv3 = nn.Conv2d(64, 64, 3, stride=1)
        else:
            self.fc = nn.Linear(in_features, features)
        self.advantage = _head(features, hidden, actions * quantiles)
        self.value = _head(features, hidden, quantiles) if dueling else None

    @classmethod
    def from_safetensors(cls, path, device: str | torch.device = "cpu") -> "ApexQNet":
        """Builds the network `path` describes and loads its weights (in eval mode)."""
        # Imported here: building the network (scripts/bench_learner.py) needs only torch.
        from safetensors.torch import load_file

        tensors = load_file(str(path), device=str(device))
        if "advantage.out.weight" not in tensors or "advantage.hidden.weight" not in tensors:
            raise ValueError(f"{path} has no advantage head: export a checkpoint with `apex export`")
        hidden, features = tensors["advantage.hidden.weight"].shape
        quantiles = int(tensors["quantiles"].item()) if "quantiles" in tensors else 1
        actions = tensors["advantage.out.weight"].shape[0] // quantiles
        dueling = "value.out.weight" in tensors
        if "conv1.weight" in tensors:
            arch, in_features = "nature", tensors["conv1.weight"].shape[1]
        elif "fc.weight" in tensors:
            arch, in_features = "mlp", tensors["fc.weight"].shape[1]
        else:
            raise ValueError(f"{path} has neither conv1 (Nature CNN) nor fc (MLP) weights: export a checkpoint with `apex export`")
        net = cls(arch, in_features, features, hidden, actions, dueling, quantiles)
        wanted = net.state_dict().keys()
        missing = [k for k in wanted if k not in tensors]
        if missing:
            raise ValueError(f"{path} lacks {', '.join(missing)}: export the whole checkpoint again with `apex export`")
        # Extra tensors (from a newer apex) are not part of this network: leave them.
        net.load_state_dict({k: tensors[k] for k in wanted})
        return net.to(device).eval()

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Q-values [B, actions] for uint8 observations [B, C, H, W]."""
        z = self.quantiles(obs)
        return z.squeeze(-1) if self.n_quantiles == 1 else z.mean(-1)

    def quantiles(self, obs: torch.Tensor) -> torch.Tensor:
        """The return's quantiles [B, actions, quantiles] (the Q-values as
        [B, actions, 1] for an expected-value head)."""
        x = obs.float() / 255.0
        if self.arch == "nature":
            x = torch.relu(self.conv1(x))
            x = torch.relu(self.conv2(x))
            h = torch.relu(self.conv3(x)).flatten(1)
        else:
            h = torch.relu(self.fc(x.flatten(1)))
        a = self.advantage["out"](torch.relu(self.advantage["hidden"](h)))
        a = a.view(-1, self.actions, self.n_quantiles)
        if self.value is None:
            return a
        v = self.value["out"](torch.relu(self.value["hidden"](h))).unsqueeze(1)
        # Same order of operations as apex: (V + A) - mean(A), per quantile.
        return v + a - a.mean(1, keepdim=True)


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: apex_qnet.py MODEL.safetensors")
    net = ApexQNet.from_safetensors(sys.argv[1])
    print(f"{net.arch}, {net.actions} actions, dueling={net.dueling}, quantiles={net.n_quantiles}")
