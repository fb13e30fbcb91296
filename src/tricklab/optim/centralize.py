"""Gradient centralization (Yong, Huang, Hua and Zhang, ECCV 2020).

For a weight tensor whose first dimension indexes output units (Linear: out x in, Conv: out x in x k...),
GC replaces each output unit's gradient slice by its zero-mean version:

    Phi_GC(g)_i = g_i - mean(g_i)        (mean over all dims but the first; eq. 3 of the paper)

i.e. the gradient is projected onto the hyperplane of zero-mean weight vectors, which constrains the weight
space, regularises the output feature space and smooths the loss landscape. Tensors with ndim <= 1 (biases,
norm scales) are left unchanged, as in the paper.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import torch


@torch.no_grad()
def centralize_(grads: Iterable[torch.Tensor | None]) -> None:
    """Centralize every gradient with ndim > 1 in place (eq. 3); ``None`` and 1-d entries are skipped.

    Gradients of the same shape, dtype and device are stacked and done together (two kernels for the
    whole set instead of two per tensor); the result equals the per-tensor form exactly.
    """
    same: defaultdict[tuple[torch.Size, torch.dtype, torch.device], list[torch.Tensor]] = defaultdict(list)
    for g in grads:
        if g is not None and g.ndim > 1:
            same[(g.shape, g.dtype, g.device)].append(g)
    for (shape, _, _), gs in same.items():
        dims = tuple(range(1, len(shape)))
        if len(gs) == 1:
            gs[0].sub_(gs[0].mean(dim=dims, keepdim=True))
            continue
        means = torch.stack(gs).mean(dim=tuple(d + 1 for d in dims), keepdim=True).unbind()
        torch._foreach_sub_(gs, means)
