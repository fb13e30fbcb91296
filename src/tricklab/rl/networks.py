"""Small networks the agents share: MLPs with orthogonal initialization (Engstrom et al. 2020; the
"implementation details" PPO relies on: gain sqrt(2) for hidden layers, 0.01 for the policy head, 1 for the value
head), built under a forked RNG so building a network never moves the global torch RNG."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from tricklab.errors import ConfigError

ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "silu": nn.SiLU}


def activation(name: str) -> type[nn.Module]:
    if name not in ACTIVATIONS:
        raise ConfigError(f"activation={name!r} is unknown; choose one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block (network construction) with torch's RNG seeded, restoring the global RNG afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def orthogonal_(layer: nn.Linear, gain: float) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int | None, act: str = "tanh", ortho: bool = False,
        out_gain: float = 1.0) -> nn.Sequential:
    """in -> hidden[0] -> act -> ... -> hidden[-1] -> act [-> out]; orthogonal init when ``ortho``."""
    layers: list[nn.Module] = []
    last = in_dim
    Act = activation(act)
    for h in hidden:
        lin = nn.Linear(last, h)
        if ortho:
            orthogonal_(lin, math.sqrt(2.0))
        layers += [lin, Act()]
        last = h
    if out_dim is not None:
        lin = nn.Linear(last, out_dim)
        if ortho:
            orthogonal_(lin, out_gain)
        layers.append(lin)
    return nn.Sequential(*layers)


def check_hidden(hidden: Sequence[int], field: str) -> None:
    if len(hidden) == 0 or any((not isinstance(h, int)) or h < 1 for h in hidden):
        raise ConfigError(f"{field} must be a non-empty list of positive layer widths, got {list(hidden)}")
