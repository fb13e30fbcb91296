"""Metric-learning losses on embedding distances: the contrastive loss and the triplet loss.

* Contrastive loss (Hadsell, Chopra & LeCun, "Dimensionality Reduction by Learning an Invariant Mapping",
  CVPR 2006, eq. 4): for a pair at Euclidean distance ``D`` with label ``Y``,
  ``L = (1 - Y) 1/2 D^2 + Y 1/2 max(0, m - D)^2``. **In the paper Y = 0 means similar and Y = 1 dissimilar**;
  :func:`contrastive_loss` follows that by default (``similar_label=0``) and takes ``similar_label=1`` for the
  other common convention (1 = same class).
* Triplet loss (Weinberger & Saul 2009; Schroff et al., FaceNet, CVPR 2015):
  ``max(0, d(a, p) - d(a, n) + m)``. For given triplets torch's own ``F.triplet_margin_loss`` /
  ``nn.TripletMarginLoss`` is the implementation (re-exported here, the registry's ``TripletLoss`` is torch's
  class). :func:`batch_hard_triplet_loss` adds in-batch mining (Hermans, Beyer & Leibe, "In Defense of the
  Triplet Loss for Person Re-Identification", arXiv:1703.07737, 2017): for every anchor the farthest
  positive and the closest negative in the batch, and optionally the soft margin ``log(1 + exp(x))``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tricklab.losses._common import LossExample, check_float, check_reduction, reduce

triplet_margin_loss = F.triplet_margin_loss  # torch's own, for explicit (anchor, positive, negative) triplets


def _check_margin(margin: float) -> float:
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not margin >= 0:
        raise ValueError(f"margin must be a number >= 0, got {margin!r}")
    return float(margin)


def _safe_sqrt(sq: torch.Tensor) -> torch.Tensor:
    """sqrt with a finite gradient at 0: d sqrt(x)/dx = 1/(2 sqrt x) is infinite there, and 0 * inf = NaN would
    reach coincident embeddings; the floor is far below any real distance and its gradient is 0."""
    return sq.clamp_min(torch.finfo(sq.dtype).tiny).sqrt()


def contrastive_loss(
    x1: torch.Tensor,
    x2: torch.Tensor,
    label: torch.Tensor,
    margin: float = 1.0,
    similar_label: int = 0,
    reduction: str = "mean",
) -> torch.Tensor:
    """Hadsell et al.'s contrastive loss on pairs of embeddings.

    Args:
        x1, x2: embeddings (N, D).
        label: (N,) of 0/1 (bool, integer or float). Which value marks a *similar* pair is ``similar_label``:
            0 as in the paper (Y = 0 similar), or 1 for the "1 = same" convention.
        margin: m > 0; dissimilar pairs farther apart than m contribute nothing.
        reduction: "mean", "sum" or "none" (N,).
    """
    check_float("x1", x1, min_ndim=2)
    check_float("x2", x2, min_ndim=2)
    check_reduction(reduction)
    margin = _check_margin(margin)
    if similar_label not in (0, 1):
        raise ValueError(f"similar_label must be 0 (the paper's convention) or 1, got {similar_label!r}")
    if x1.shape != x2.shape or x1.ndim != 2:
        raise ValueError(f"x1 and x2 must both be (N, D) with equal shapes, got {tuple(x1.shape)} and "
                         f"{tuple(x2.shape)}")
    if not isinstance(label, torch.Tensor) or label.shape != x1.shape[:1]:
        raise ValueError(f"label must be a tensor of shape ({x1.shape[0]},)")
    if label.numel() and not bool(((label == 0) | (label == 1)).all()):
        raise ValueError("contrastive labels must be 0 or 1")
    similar = label.to(torch.bool) if similar_label == 1 else ~label.to(torch.bool)
    d2 = (x1 - x2).pow(2).sum(-1)  # D^2, (N,)
    pull = 0.5 * d2  # similar pairs: pulled together
    push = 0.5 * F.relu(margin - _safe_sqrt(d2)).pow(2)  # dissimilar pairs: pushed to at least m apart
    return reduce(torch.where(similar, pull, push), reduction)


def pairwise_distances(x: torch.Tensor, squared: bool = False) -> torch.Tensor:
    """Euclidean distances (N, N) between the rows of x (N, D), from differences (exact, unlike the
    ``|a|^2 + |b|^2 - 2ab`` expansion), with a finite gradient on the zero diagonal."""
    d2 = (x.unsqueeze(1) - x.unsqueeze(0)).pow(2).sum(-1)
    return d2 if squared else _safe_sqrt(d2)


@torch.no_grad()
def batch_hard_mine(
    embeddings: torch.Tensor, labels: torch.Tensor, squared: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each anchor i: index of its hardest positive (farthest same-label j != i), of its hardest negative
    (closest other-label j), and whether it has both. Returns (pos_idx (N,), neg_idx (N,), valid (N,) bool)."""
    d = pairwise_distances(embeddings, squared)
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    pos_mask, neg_mask = same & ~eye, ~same
    pos_idx = d.masked_fill(~pos_mask, float("-inf")).argmax(1)
    neg_idx = d.masked_fill(~neg_mask, float("inf")).argmin(1)
    return pos_idx, neg_idx, pos_mask.any(1) & neg_mask.any(1)


def batch_hard_triplet_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    margin: float = 1.0,
    soft: bool = False,
    squared: bool = False,
    reduction: str = "mean",
) -> torch.Tensor:
    """Batch-hard triplet loss (Hermans et al. 2017): per anchor ``[m + max_p d(a,p) - min_n d(a,n)]_+``,
    or ``log(1 + exp(max_p d(a,p) - min_n d(a,n)))`` with ``soft=True`` (the margin is then unused).

    Anchors without a positive (a label seen once) or without a negative (one label in the batch) form no
    triplet: they get loss 0 under "none" and are left out of the "mean" (sample P classes x K >= 2 images, as
    the paper does, so that every anchor has both).

    Args:
        embeddings: (N, D).
        labels: (N,) integer class labels.
        margin: m >= 0 (hard margin only).
        soft: use the soft margin softplus instead of the hinge.
        squared: squared Euclidean distances (the paper uses plain distances, the default).
        reduction: "mean" (over valid anchors), "sum" or "none" (N,).
    """
    check_float("embeddings", embeddings, min_ndim=2)
    check_reduction(reduction)
    margin = _check_margin(margin)
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be (N, D), got {tuple(embeddings.shape)}")
    if not isinstance(labels, torch.Tensor) or labels.shape != embeddings.shape[:1] or labels.is_floating_point():
        raise ValueError(f"labels must be an integer tensor of shape ({embeddings.shape[0]},)")
    pos_idx, neg_idx, valid = batch_hard_mine(embeddings, labels, squared)
    if not bool(valid.any()):
        raise ValueError("no anchor in the batch has both a positive (same label) and a negative (other label); "
                         "use batches of several classes with at least two samples each (P x K sampling)")
    d = pairwise_distances(embeddings, squared)  # (N, N), differentiable
    d_ap = d.gather(1, pos_idx.unsqueeze(1)).squeeze(1)  # hardest positive distance
    d_an = d.gather(1, neg_idx.unsqueeze(1)).squeeze(1)  # hardest negative distance
    gap = d_ap - d_an
    per_anchor = F.softplus(gap) if soft else F.relu(gap + margin)
    per_anchor = torch.where(valid, per_anchor, torch.zeros_like(per_anchor))
    if reduction == "mean":
        return per_anchor.sum() / valid.sum()
    return reduce(per_anchor, reduction)


class ContrastiveLoss(nn.Module):
    """Contrastive loss (1-Y) D^2/2 + Y max(0, m-D)^2/2 on pairs (Hadsell et al. 2006; Y=0 similar by default)."""

    def __init__(self, margin: float = 1.0, similar_label: int = 0, reduction: str = "mean") -> None:
        super().__init__()
        self.margin = _check_margin(margin)
        if similar_label not in (0, 1):
            raise ValueError(f"similar_label must be 0 (the paper's convention) or 1, got {similar_label!r}")
        self.similar_label = similar_label
        self.reduction = check_reduction(reduction)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return contrastive_loss(x1, x2, label, self.margin, self.similar_label, self.reduction)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, similar_label={self.similar_label}, reduction={self.reduction!r}"

    @classmethod
    def example(cls, generator: torch.Generator) -> LossExample:
        x1 = torch.randn(6, 3, generator=generator) * 0.3
        x2 = torch.randn(6, 3, generator=generator) * 0.3
        label = torch.tensor([0, 1, 0, 1, 0, 1])
        return LossExample((x1, x2, label), {"margin": 2.0}, (0, 1), (6,))


class TripletLoss(nn.TripletMarginLoss):
    """Triplet margin loss max(0, d(a,p) - d(a,n) + m) on given triplets: torch's nn.TripletMarginLoss."""

    def __init__(self, margin: float = 1.0, p: float = 2.0, eps: float = 1e-6, swap: bool = False,
                 reduction: str = "mean") -> None:
        # torch checks the reduction only at the first forward; fail at construction like the other losses
        super().__init__(margin=_check_margin(margin), p=p, eps=eps, swap=swap, reduction=check_reduction(reduction))

    @classmethod
    def example(cls, generator: torch.Generator) -> LossExample:
        a, p, n = (torch.randn(5, 4, generator=generator) for _ in range(3))
        return LossExample((a, p, n), {"margin": 1.0}, (0, 1, 2), (5,))


class BatchHardTripletLoss(nn.Module):
    """Triplet loss with batch-hard mining: hardest positive and negative per anchor (Hermans et al. 2017)."""

    def __init__(self, margin: float = 1.0, soft: bool = False, squared: bool = False,
                 reduction: str = "mean") -> None:
        super().__init__()
        self.margin = _check_margin(margin)
        self.soft = bool(soft)
        self.squared = bool(squared)
        self.reduction = check_reduction(reduction)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return batch_hard_triplet_loss(embeddings, labels, self.margin, self.soft, self.squared, self.reduction)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, soft={self.soft}, squared={self.squared}, reduction={self.reduction!r}"

    @classmethod
    def example(cls, generator: torch.Generator) -> LossExample:
        emb = torch.randn(8, 4, generator=generator)
        labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
        return LossExample((emb, labels), {"margin": 0.5}, (0,), (8,))
