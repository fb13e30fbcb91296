"""Gradient centralization (Yong, Huang, Hua and Zhang, ECCV 2020).

For a weight tensor whose first dimension indexes output units (Linear: out x in, Conv: out x in x k...),
GC replaces each output unit's gradient slice by its zero-mean version:

    Phi_GC(g)_i = g_i - mean(g_i)        (mean over all dims but the first; eq. 3 of the paper)

i.e. the gradient is projected onto the hyperplane of zero-mean weight vectors, which constrains the weight
space, regularises the output feature space and smooths the loss landscape. Tensors with ndim <= 1 (biases,
norm scales) are left unchanged, as in the paper.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


@torch.no_grad()
def centralize_(grads: Iterable[torch.Tensor | None]) -> None:
    """Centralize every gradient with ndim > 1 in place (eq. 3); ``None`` and 1-d entries are skipped.

    The row means are small; the subtraction is one multi-tensor op. (Stacking same-shape gradients to take
    the means in one kernel was measured 9x slower on the CPU: the stack copies every gradient.)
    """
    gs = [g for g in grads if g is not None and g.ndim > 1]
    if not gs:
        return
    means = [g.mean(dim=tuple(range(1, g.ndim)), keepdim=True) for g in gs]
    torch._foreach_sub_(gs, means)
