"""Contrastive (noise-contrastive) losses for self-supervised and representation learning.

* NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR (Chen, Kornblith, Norouzi & Hinton, "A
  Simple Framework for Contrastive Learning of Visual Representations", ICML 2020, eq. 1): 2N views of N
  examples; for the view i whose partner view is j,
  ``l(i, j) = -log exp(sim(z_i, z_j)/tau) / sum_{k != i} exp(sim(z_i, z_k)/tau)`` with cosine ``sim``,
  averaged over all 2N views.
* InfoNCE (van den Oord, Li & Vinyals, "Representation Learning with Contrastive Predictive Coding",
  arXiv:1807.03748, 2018, eq. 4): ``-log exp(f(q, k+)) / (exp(f(q, k+)) + sum_j exp(f(q, k-_j)))``, i.e.
  cross-entropy picking the positive key among the candidates. Here ``f(q, k) = q.k / tau`` on L2-normalised
  vectors (the now-standard choice; CPC's own f is a log-bilinear model). Without explicit negatives the
  other queries' positive keys in the batch are the negatives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tricklab.losses._common import LossExample, check_float, check_positive, check_reduction, reduce


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5, reduction: str = "mean") -> torch.Tensor:
    """SimCLR's NT-Xent over the 2N views ``cat(z1, z2)``; z1[i] and z2[i] are the two views of example i.

    Args:
        z1, z2: projections (N, D) of the two augmented views (normalised here: cosine similarity).
        temperature: tau > 0.
        reduction: "mean" (over the 2N views, as in the paper), "sum" or "none" (2N,).
    """
    check_float("z1", z1, min_ndim=2)
    check_float("z2", z2, min_ndim=2)
    check_reduction(reduction)
    temperature = check_positive("temperature", temperature)
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"z1 and z2 must both be (N, D) with equal shapes, got {tuple(z1.shape)}, {tuple(z2.shape)}")
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # (2N, D)
    logits = z @ z.T / temperature  # (2N, 2N) cosine / tau
    eye = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(eye, float("-inf"))  # k != i: a view is not its own candidate
    idx = torch.arange(n, device=z.device)
    partner = torch.cat([idx + n, idx])  # view i's positive is i + N (and vice versa)
    return reduce(F.cross_entropy(logits, partner, reduction="none"), reduction)


def info_nce(
    query: torch.Tensor,
    positive_key: torch.Tensor,
    negative_keys: torch.Tensor | None = None,
    temperature: float = 0.1,
    reduction: str = "mean",
    normalize: bool = True,
) -> torch.Tensor:
    """InfoNCE: cross-entropy of picking each query's positive key among the candidate keys.

    Args:
        query: (N, D).
        positive_key: (N, D), the positive of each query.
        negative_keys: None (the other queries' positives are the negatives: an (N, N) logit matrix with the
            positives on the diagonal), (M, D) negatives shared by all queries, or (N, M, D) per query.
        temperature: tau > 0.
        reduction: "mean", "sum" or "none" (N,).
        normalize: L2-normalise queries and keys first (cosine similarity).
    """
    check_float("query", query, min_ndim=2)
    check_float("positive_key", positive_key, min_ndim=2)
    check_reduction(reduction)
    temperature = check_positive("temperature", temperature)
    if query.ndim != 2 or positive_key.shape != query.shape:
        raise ValueError(f"query and positive_key must both be (N, D), got {tuple(query.shape)} and "
                         f"{tuple(positive_key.shape)}")
    n, dim = query.shape
    if normalize:
        query, positive_key = F.normalize(query, dim=-1), F.normalize(positive_key, dim=-1)
    if negative_keys is None:
        logits = query @ positive_key.T  # (N, N), positives on the diagonal
        labels = torch.arange(n, device=query.device)
    else:
        check_float("negative_keys", negative_keys, min_ndim=2)
        if normalize:
            negative_keys = F.normalize(negative_keys, dim=-1)
        if negative_keys.ndim == 2 and negative_keys.shape[1] == dim:
            neg = query @ negative_keys.T  # (N, M) shared negatives
        elif negative_keys.ndim == 3 and negative_keys.shape[0] == n and negative_keys.shape[2] == dim:
            neg = torch.einsum("nd,nmd->nm", query, negative_keys)  # (N, M) per-query negatives
        else:
            raise ValueError(f"negative_keys must be (M, {dim}) or ({n}, M, {dim}), got {tuple(negative_keys.shape)}")
        pos = (query * positive_key).sum(-1, keepdim=True)  # (N, 1)
        logits = torch.cat([pos, neg], dim=1)  # the positive is candidate 0
        labels = torch.zeros(n, dtype=torch.long, device=query.device)
    return reduce(F.cross_entropy(logits / temperature, labels, reduction="none"), reduction)


class NTXentLoss(nn.Module):
    """NT-Xent: SimCLR's normalised temperature-scaled cross-entropy over 2N views (Chen et al. 2020)."""

    def __init__(self, temperature: float = 0.5, reduction: str = "mean") -> None:
        super().__init__()
        self.temperature = check_positive("temperature", temperature)
        self.reduction = check_reduction(reduction)

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return nt_xent(z1, z2, self.temperature, self.reduction)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, reduction={self.reduction!r}"

    @classmethod
    def example(cls, generator: torch.Generator) -> LossExample:
        z1 = torch.randn(4, 5, generator=generator)
        z2 = z1 + 0.5 * torch.randn(4, 5, generator=generator)
        return LossExample((z1, z2), {"temperature": 0.5}, (0, 1), (8,))


class InfoNCELoss(nn.Module):
    """InfoNCE: cross-entropy of the positive key among negatives (van den Oord et al. 2018)."""

    def __init__(self, temperature: float = 0.1, reduction: str = "mean", normalize: bool = True) -> None:
        super().__init__()
        self.temperature = check_positive("temperature", temperature)
        self.reduction = check_reduction(reduction)
        self.normalize = bool(normalize)

    def forward(self, query: torch.Tensor, positive_key: torch.Tensor,
                negative_keys: torch.Tensor | None = None) -> torch.Tensor:
        return info_nce(query, positive_key, negative_keys, self.temperature, self.reduction, self.normalize)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, normalize={self.normalize}, reduction={self.reduction!r}"

    @classmethod
    def example(cls, generator: torch.Generator) -> LossExample:
        q = torch.randn(4, 5, generator=generator)
        k = q + 0.5 * torch.randn(4, 5, generator=generator)
        neg = torch.randn(4, 3, 5, generator=generator)
        return LossExample((q, k, neg), {"temperature": 0.5}, (0, 1, 2), (4,))
