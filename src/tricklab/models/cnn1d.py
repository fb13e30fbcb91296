"""The MNIST-1D paper's baseline models (Greydanus 2020, "Scaling down deep learning", arXiv:2011.14439).

Both follow the reference code of the paper (github.com/greydanus/mnist1d, ``models.py``) and keep PyTorch's
default initialisation, as the paper did:

* ``mlp``: Linear(L, 100) - ReLU - Linear(100, 100) - ReLU - Linear(100, C).
* ``cnn``: Conv1d(1, 25, 5, stride 2, pad 1) - ReLU - Conv1d(25, 25, 3, stride 2, pad 1) - ReLU -
  Conv1d(25, 25, 3, stride 2, pad 1) - ReLU - flatten - Linear(25 * L_out, C). For L = 40, L_out = 5 and
  the flattened size is 125.

Inputs are ``(B, L)`` or ``(B, 1, L)`` (``(B, C_in, L)`` when ``input_shape = (C_in, L)``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from tricklab.errors import ConfigError
from tricklab.models import MODELS, as_shape, check_positive


def conv_out_len(length: int, kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """Output length of a Conv1d / MaxPool1d on an input of ``length`` (floor mode, as PyTorch computes it)."""
    return (length + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1


# (kernel_size, stride, padding) of the paper ConvNet's three convolutions.
PAPER_CNN_CONVS: tuple[tuple[int, int, int], ...] = ((5, 2, 1), (3, 2, 1), (3, 2, 1))


def paper_cnn_out_len(length: int) -> int:
    """Length after the paper ConvNet's three strided convolutions (40 -> 19 -> 10 -> 5)."""
    for k, s, p in PAPER_CNN_CONVS:
        length = max(conv_out_len(length, k, s, p), 0)
    return length


def to_channels_first(x: Tensor, in_channels: int, length: int) -> Tensor:
    """Return a ``(B, C_in, L)`` view of a batch given as ``(B, L)``, ``(B, C_in, L)`` or flat ``(B, C_in*L)``."""
    if x.dim() == 3:
        return x
    if x.dim() == 2:
        # (B, L) -> (B, 1, L); (B, C_in*L) -> (B, C_in, L)
        return x.reshape(x.shape[0], in_channels, length)
    raise ValueError(f"expected a batch of shape (B, L) or (B, C, L), got {tuple(x.shape)}")


def split_1d_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """``(L,)`` -> ``(1, L)``; ``(C, L)`` -> ``(C, L)``."""
    return (1, shape[0]) if len(shape) == 1 else (shape[0], shape[1])


class MLP(nn.Module):
    """Flatten - Linear(D, hidden) - ReLU - Linear(hidden, hidden) - ReLU - Linear(hidden, C)."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = 100) -> None:
        super().__init__()
        self.in_features = in_features
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden),  # (B, D) -> (B, hidden)
            nn.ReLU(),
            nn.Linear(hidden, hidden),  # (B, hidden) -> (B, hidden)
            nn.ReLU(),
            nn.Linear(hidden, num_classes),  # (B, hidden) -> (B, C)
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x.reshape(x.shape[0], -1)  # (B, L) or (B, 1, L) -> (B, D)
        return self.net(x)


class PaperConvNet1d(nn.Module):
    """The MNIST-1D paper's ConvNet: three strided convolutions with ReLU, then one linear layer."""

    def __init__(self, in_channels: int, length: int, num_classes: int, channels: int = 25) -> None:
        super().__init__()
        self.in_channels, self.length = in_channels, length
        (k1, s1, p1), (k2, s2, p2), (k3, s3, p3) = PAPER_CNN_CONVS
        self.conv1 = nn.Conv1d(in_channels, channels, k1, stride=s1, padding=p1)
        self.conv2 = nn.Conv1d(channels, channels, k2, stride=s2, padding=p2)
        self.conv3 = nn.Conv1d(channels, channels, k3, stride=s3, padding=p3)
        self.out_len = paper_cnn_out_len(length)
        self.flat_features = channels * self.out_len  # 25 * 5 = 125 for L = 40
        self.linear = nn.Linear(self.flat_features, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = to_channels_first(x, self.in_channels, self.length)  # (B, C_in, L)
        h = torch.relu(self.conv1(x))  # (B, 25, L1)   L1 = 19 for L = 40
        h = torch.relu(self.conv2(h))  # (B, 25, L2)   L2 = 10
        h = torch.relu(self.conv3(h))  # (B, 25, L3)   L3 = 5
        h = h.flatten(1)  # (B, 25 * L3)
        return self.linear(h)  # (B, C)


@MODELS.register("mlp", summary="MNIST-1D paper MLP: 3 linear layers (hidden 100) with ReLU (Greydanus 2020).")
def mlp(input_shape: tuple[int, ...], num_classes: int, hidden: int = 100) -> nn.Module:
    """MNIST-1D paper MLP: 3 linear layers (hidden 100) with ReLU (Greydanus 2020)."""
    shape = as_shape(input_shape, model="mlp", ndim=(1, 2, 3))
    check_positive("mlp", num_classes=num_classes, hidden=hidden)
    return MLP(math.prod(shape), num_classes, hidden=hidden)


@MODELS.register("cnn", summary="MNIST-1D paper ConvNet: 3 strided Conv1d(25) + ReLU, linear (Greydanus 2020).")
def cnn(input_shape: tuple[int, ...], num_classes: int, channels: int = 25) -> nn.Module:
    """MNIST-1D paper ConvNet: 3 strided Conv1d(25) + ReLU, then a linear layer (Greydanus 2020)."""
    shape = as_shape(input_shape, model="cnn", ndim=(1, 2))
    check_positive("cnn", num_classes=num_classes, channels=channels)
    in_channels, length = split_1d_shape(shape)
    if paper_cnn_out_len(length) < 1:
        raise ConfigError(f"model 'cnn': input length {length} is too short for three strided convolutions")
    return PaperConvNet1d(in_channels, length, num_classes, channels=channels)
