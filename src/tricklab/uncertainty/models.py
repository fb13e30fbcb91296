"""The MNIST-1D networks of the uncertainty runs, as ``nn.Sequential`` so that the generic tools (to_bayesian,
spectral_normalize, VmapEnsemble, MC dropout) see every layer.

:func:`mnist1d_cnn` is the MNIST-1D paper's ConvNet (Greydanus 2020; ``tricklab.models.cnn1d``: three strided
Conv1d(25) + ReLU, then Linear(125, 10)) with optional dropout after every hidden layer, the placement of Gal &
Ghahramani's MC dropout (before every weight layer but the first). :func:`mnist1d_cnn_body` is the same network
without its output layer, for heads such as SNGP's random-feature GP. :func:`mnist1d_mlp` is the paper's MLP
(Linear(40, 100) - ReLU - Linear(100, 100) - ReLU - Linear(100, 10)), which over-fits MNIST-1D badly (and so is
strongly over-confident).
"""

from __future__ import annotations

from torch import nn

from tricklab.errors import ConfigError
from tricklab.models.cnn1d import PAPER_CNN_CONVS, paper_cnn_out_len

__all__ = ["mnist1d_cnn", "mnist1d_cnn_body", "mnist1d_mlp"]


def mnist1d_cnn_body(length: int = 40, channels: int = 25, dropout: float = 0.0) -> nn.Sequential:
    """(B, L) -> (B, channels * L_out) features (125 for L = 40)."""
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), got {dropout!r}")
    if paper_cnn_out_len(length) < 1:
        raise ConfigError(f"input length {length} is too short for three strided convolutions")
    layers: list[nn.Module] = [nn.Unflatten(1, (1, length))]  # (B, L) -> (B, 1, L)
    c_in = 1
    for k, s, p in PAPER_CNN_CONVS:
        layers += [nn.Conv1d(c_in, channels, k, stride=s, padding=p), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        c_in = channels
    layers.append(nn.Flatten())  # (B, channels, L_out) -> (B, channels * L_out)
    return nn.Sequential(*layers)


def mnist1d_cnn(num_classes: int = 10, length: int = 40, channels: int = 25, dropout: float = 0.0) -> nn.Sequential:
    """The paper ConvNet (B, L) -> logits (B, C), with ``dropout`` after each hidden layer (0 = the paper's)."""
    body = mnist1d_cnn_body(length, channels, dropout)
    return nn.Sequential(*body, nn.Linear(channels * paper_cnn_out_len(length), num_classes))


def mnist1d_mlp(num_classes: int = 10, length: int = 40, hidden: int = 100, dropout: float = 0.0) -> nn.Sequential:
    """The paper MLP (B, L) -> logits (B, C), with ``dropout`` after each hidden layer (0 = the paper's)."""
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), got {dropout!r}")
    layers: list[nn.Module] = []
    d = length
    for _ in range(2):
        layers += [nn.Linear(d, hidden), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        d = hidden
    return nn.Sequential(*layers, nn.Linear(hidden, num_classes))
