"""Once-for-all networks (Cai, Gan, Wang, Zhang & Han, 2020) on a small 1-D residual supernet.

One supernet is trained so that its sub-networks work without retraining; a sub-network is then picked for a latency
budget by measuring candidates on this CPU.

Supernet: stem conv (1 -> C, kernel 3), ``max_depth`` residual blocks x <- x + conv2(relu(conv1(x))) with conv1
C -> e and conv2 e -> C, then ReLU, flatten and a linear head. Elastic dimensions (OFA Sec. 3.2-3.3):

* kernel size k in ``kernels`` per block: the centre of the next larger kernel times a learned k x k
  *kernel transformation matrix* shared by all channels of the layer (W_k = centre_k(W_{k+2}) T_k, T_k initialised
  to the identity);
* width e in ``widths`` per block: the first e channels of conv1's output / conv2's input, after
  :func:`sort_channels` has put the most important channels (largest L1 norm, OFA Sec. 3.3) first;
* depth d in ``depths``: the first d blocks (the later ones are skipped, OFA keeps the first layers of a unit).

Progressive shrinking (Sec. 3.3): train the full network, then let kernels vary, then depth, then width, each phase
sampling a random sub-network per step and distilling from the full network's predictions (the loss is
CE + KL(teacher || student), the teacher being the full network frozen after the first phase).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SubnetConfig", "ElasticConv1d", "OFANet", "sort_channels", "sample_subnet", "subnet_macs"]


@dataclass(frozen=True)
class SubnetConfig:
    """A sub-network: its depth and, per block (the first ``depth`` are used), a kernel size and a width."""

    depth: int
    kernels: tuple[int, ...]
    widths: tuple[int, ...]


class ElasticConv1d(nn.Module):
    """A Conv1d of at most (out_max, in_max, k_max) whose forward may use fewer output / input channels and a
    smaller odd kernel (through the kernel transformation matrices)."""

    def __init__(self, in_max: int, out_max: int, kernels: tuple[int, ...]) -> None:
        super().__init__()
        self.kernels = tuple(sorted(kernels))
        k_max = self.kernels[-1]
        self.weight = nn.Parameter(torch.empty(out_max, in_max, k_max))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)
        self.bias = nn.Parameter(torch.zeros(out_max))
        # T_k for every kernel smaller than the largest, identity at first: W_k starts as the plain centre crop
        self.transforms = nn.ParameterDict({str(k): nn.Parameter(torch.eye(k)) for k in self.kernels[:-1]})

    def kernel_weight(self, k: int) -> Tensor:
        """W_k: the largest kernel, then centre crop and transform down to k step by step (OFA Fig. 3)."""
        if k not in self.kernels:
            raise ValueError(f"kernel size {k} is not one of {self.kernels}")
        w = self.weight
        for size in reversed(self.kernels[:-1]):
            if size < k:
                break
            start = (w.shape[-1] - size) // 2
            w = w[..., start : start + size] @ self.transforms[str(size)]
        return w

    def forward(self, x: Tensor, out_c: int | None = None, k: int | None = None) -> Tensor:
        k = self.kernels[-1] if k is None else k
        out_c = self.weight.shape[0] if out_c is None else out_c
        w = self.kernel_weight(k)[:out_c, : x.shape[1]]
        return F.conv1d(x, w, self.bias[:out_c], padding=k // 2)


class _Block(nn.Module):
    def __init__(self, channels: int, width: int, kernels: tuple[int, ...]) -> None:
        super().__init__()
        self.conv1 = ElasticConv1d(channels, width, kernels)
        self.conv2 = ElasticConv1d(width, channels, kernels)

    def forward(self, x: Tensor, k: int, e: int) -> Tensor:
        return x + self.conv2(torch.relu(self.conv1(x, out_c=e, k=k)), k=k)


class OFANet(nn.Module):
    """The supernet; ``forward(x, subnet=None)`` runs the full network or the given sub-network."""

    def __init__(self, channels: int = 16, max_depth: int = 3, kernels: tuple[int, ...] = (3, 5, 7),
                 widths: tuple[int, ...] = (8, 16, 32), length: int = 40, classes: int = 10) -> None:
        super().__init__()
        self.kernels, self.widths = tuple(sorted(kernels)), tuple(sorted(widths))
        self.depths = tuple(range(1, max_depth + 1))
        self.stem = nn.Conv1d(1, channels, 3, padding=1)
        self.blocks = nn.ModuleList(_Block(channels, self.widths[-1], self.kernels) for _ in range(max_depth))
        self.head = nn.Linear(channels * length, classes)

    def full(self) -> SubnetConfig:
        n = len(self.blocks)
        return SubnetConfig(n, (self.kernels[-1],) * n, (self.widths[-1],) * n)

    def forward(self, x: Tensor, subnet: SubnetConfig | None = None) -> Tensor:
        s = subnet or self.full()
        h = self.stem(x.unsqueeze(1))
        for i in range(s.depth):
            h = self.blocks[i](h, s.kernels[i], s.widths[i])
        return self.head(torch.relu(h).flatten(1))


@torch.no_grad()
def sort_channels(net: OFANet) -> None:
    """Reorder every block's inner channels by importance (L1 norm of conv2's input slices, descending), permuting
    conv1's outputs and conv2's inputs together so the full network computes the same function."""
    for block in net.blocks:
        importance = block.conv2.weight.abs().sum(dim=(0, 2))
        order = torch.argsort(importance, descending=True)
        block.conv1.weight.copy_(block.conv1.weight[order])
        block.conv1.bias.copy_(block.conv1.bias[order])
        block.conv2.weight.copy_(block.conv2.weight[:, order])


def sample_subnet(net: OFANet, gen: torch.Generator, kernel: bool = True, depth: bool = True,
                  width: bool = True) -> SubnetConfig:
    """A uniform random sub-network over the dimensions switched on (the others at their maximum)."""
    n = len(net.blocks)

    def pick(options: tuple[int, ...], on: bool) -> int:
        return options[int(torch.randint(len(options), (1,), generator=gen))] if on else options[-1]

    d = pick(net.depths, depth)
    return SubnetConfig(d, tuple(pick(net.kernels, kernel) for _ in range(n)),
                        tuple(pick(net.widths, width) for _ in range(n)))


def subnet_macs(net: OFANet, s: SubnetConfig, length: int = 40) -> int:
    """Multiply-accumulates of one example through sub-network ``s`` (convolutions and the head; a deterministic
    stand-in for latency): stem 1*C*3*L, per block 2*C*e*k*L, head C*L*classes."""
    c = net.stem.out_channels
    blocks = sum(2 * c * s.widths[i] * s.kernels[i] * length for i in range(s.depth))
    return 3 * c * length + blocks + c * length * net.head.out_features
