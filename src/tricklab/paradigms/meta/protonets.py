"""Prototypical networks (Snell, Swersky & Zemel, 2017).

Prototype of class k (eq. 1): c_k = (1/|S_k|) sum_{x in S_k} f(x). Class probabilities (eq. 2):
p(y=k|x) = softmax_k(-d(f(x), c_k)) with the squared Euclidean distance d(z, z') = ||z - z'||^2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["prototypes", "squared_distances", "proto_logits", "ProtoNet"]


def prototypes(z_support: Tensor, y_support: Tensor, ways: int) -> Tensor:
    """(ways, D) class means of the support embeddings (N, D) with labels in 0..ways-1."""
    one_hot = F.one_hot(y_support, ways).to(z_support.dtype)  # (N, ways)
    counts = one_hot.sum(0).unsqueeze(1)
    if bool((counts == 0).any()):
        raise ValueError("every class 0..ways-1 needs at least one support example")
    return one_hot.t() @ z_support / counts


def squared_distances(z: Tensor, protos: Tensor) -> Tensor:
    """(M, ways) squared Euclidean distances; computed as a difference (not the expanded ||a||^2 - 2ab + ||b||^2,
    which cancels catastrophically for nearby points)."""
    return (z.unsqueeze(1) - protos.unsqueeze(0)).pow(2).sum(-1)


def proto_logits(z_query: Tensor, z_support: Tensor, y_support: Tensor, ways: int) -> Tensor:
    """Logits -d(f(x), c_k) of the query embeddings (M, D); softmax of these is eq. 2."""
    return -squared_distances(z_query, prototypes(z_support, y_support, ways))


class ProtoNet(nn.Module):
    """An embedding network with the prototype classifier on top: ``forward(xs, ys, xq, ways)`` -> query logits."""

    def __init__(self, embed: nn.Module) -> None:
        super().__init__()
        self.embed = embed

    def forward(self, xs: Tensor, ys: Tensor, xq: Tensor, ways: int) -> Tensor:
        z = self.embed(torch.cat([xs, xq]))
        return proto_logits(z[len(xs):], z[: len(xs)], ys, ways)
