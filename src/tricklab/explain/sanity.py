"""The model-parameter randomization test (Adebayo et al. 2018, "Sanity Checks for Saliency Maps", sec. 3.1).

An attribution that explains the *model* must change when the model's weights are replaced by random ones.
:func:`randomized_copy` returns a copy of the model with every parameter re-drawn from its layer's own
initialiser (``reset_parameters``; all layers, or only those named: the paper's "cascading" variant randomizes
from the top layer down); :func:`spearman_per_example` is the rank correlation per example between two
attribution maps, the similarity the paper reports (of absolute values, and signed). A correlation near 1 after
randomization means the method ignores the weights (it acts like an edge detector on the input).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from tricklab.errors import UserError

__all__ = ["randomized_copy", "spearman_per_example"]


def randomized_copy(model: nn.Module, seed: int = 0, layers: Sequence[str] | None = None) -> nn.Module:
    """A deep copy of ``model`` whose parameters (in ``layers``, a list of module names; all when None) are
    re-initialised by each module's ``reset_parameters`` under ``torch.manual_seed(seed)``-like private RNG state.

    BatchNorm running statistics are reset too (``reset_parameters`` of a norm layer does that). The global RNG
    is left as it was.
    """
    clone = copy.deepcopy(model)
    named = dict(clone.named_modules())
    if layers is not None:
        missing = [n for n in layers if n not in named]
        if missing:
            raise UserError(f"randomized_copy: no layer named {missing}; layers: {', '.join(n for n in named if n)}")
        targets = [named[n] for n in layers]
    else:
        targets = list(clone.modules())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        done = 0
        for m in targets:
            if hasattr(m, "reset_parameters") and callable(m.reset_parameters):
                m.reset_parameters()
                done += 1
            elif hasattr(m, "reset_running_stats"):
                m.reset_running_stats()
    if done == 0:
        raise UserError("randomized_copy: none of the chosen modules has reset_parameters()")
    return clone


def _ranks(x: Tensor) -> Tensor:
    """Average ranks (ties share the mean of their ranks) along dim 1 of a ``(B, n)`` float64 tensor."""
    sorted_x, order = torch.sort(x, dim=1, stable=True)
    ranks = torch.empty_like(x)
    for i in range(x.shape[0]):
        _, inverse, counts = torch.unique_consecutive(sorted_x[i], return_inverse=True, return_counts=True)
        starts = torch.cumsum(counts, 0) - counts
        mean_rank = starts.double() + (counts.double() - 1) / 2  # 0-based rank of the run's middle
        ranks[i, order[i]] = mean_rank[inverse]
    return ranks


def spearman_per_example(a: Tensor, b: Tensor, absolute: bool = True) -> Tensor:
    """Spearman rank correlation between the flattened maps ``a[i]`` and ``b[i]`` (``(B,)``, float64).

    Ties get average ranks (as ``scipy.stats.spearmanr``). A constant map has no ranking: its correlation is NaN.
    """
    if a.shape != b.shape or a.dim() < 2:
        raise UserError(f"spearman_per_example: expected two batches of maps of one shape, got {tuple(a.shape)} "
                        f"and {tuple(b.shape)}")
    x = a.detach().reshape(a.shape[0], -1).double().cpu()
    y = b.detach().reshape(b.shape[0], -1).double().cpu()
    if absolute:
        x, y = x.abs(), y.abs()
    rx, ry = _ranks(x), _ranks(y)
    rx = rx - rx.mean(1, keepdim=True)
    ry = ry - ry.mean(1, keepdim=True)
    return (rx * ry).sum(1) / (rx.norm(dim=1) * ry.norm(dim=1))
