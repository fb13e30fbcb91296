"""Elastic weight consolidation (Kirkpatrick et al., 2017) with a diagonal Fisher, and its online variant
(Schwarz et al., 2018).

After task A, the loss on task B becomes (Kirkpatrick et al. eq. 3)
    L(theta) = L_B(theta) + sum_i lambda/2 * F_i (theta_i - theta*_A,i)^2,
with F the diagonal of the Fisher information at theta*_A:
    F_i = E_x E_{y ~ p_theta(y|x)} [ (d log p_theta(y|x) / d theta_i)^2 ]      (``exact``: the expectation over the
    model's predictive, summed over classes), or with the observed labels instead of y ~ p (``empirical``).
Online EWC keeps one penalty: F <- gamma F + F_new, theta* <- the latest optimum.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

__all__ = ["diagonal_fisher", "EWC"]


def diagonal_fisher(model: nn.Module, x: Tensor, y: Tensor | None = None, batch_size: int = 256,
                    class_mask: Tensor | None = None) -> dict[str, Tensor]:
    """Diagonal Fisher of ``model`` at its current parameters over the examples ``x`` (N, ...).

    With labels ``y`` it is the empirical Fisher (squared per-sample gradients of log p(y|x), averaged); without,
    the exact one: sum_c p(c|x) (grad log p(c|x))^2, averaged over x. Per-sample gradients come from
    ``vmap(grad(...))``. ``class_mask`` (C,) bool restricts the softmax to a task's classes."""
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}

    def logp(p: dict[str, Tensor], xi: Tensor, c: Tensor) -> Tensor:
        z = functional_call(model, p, (xi.unsqueeze(0),))[0]
        if class_mask is not None:
            z = z.masked_fill(~class_mask, float("-inf"))
        return F.log_softmax(z, -1).gather(0, c.unsqueeze(0)).squeeze(0)

    per_sample = vmap(grad(logp), in_dims=(None, 0, 0))
    fisher = {k: torch.zeros_like(v) for k, v in params.items()}
    n = len(x)
    for i in range(0, n, batch_size):
        xb = x[i : i + batch_size]
        if y is not None:
            g = per_sample(params, xb, y[i : i + batch_size])
            for k in fisher:
                fisher[k] += g[k].pow(2).sum(0)
            continue
        with torch.no_grad():
            z = functional_call(model, params, (xb,))
            if class_mask is not None:
                z = z.masked_fill(~class_mask, float("-inf"))
            prob = F.softmax(z, -1)
        for c in torch.nonzero(prob.sum(0) > 0).flatten().tolist():
            g = per_sample(params, xb, torch.full((len(xb),), c, dtype=torch.long))
            w = prob[:, c]
            for k in fisher:
                fisher[k] += (w.view(-1, *[1] * (g[k].dim() - 1)) * g[k].pow(2)).sum(0)
    return {k: v / n for k, v in fisher.items()}


class EWC:
    """The EWC penalty over the tasks consolidated so far (``online``: one decayed Fisher, Schwarz et al.)."""

    def __init__(self, lam: float, online: bool = False, gamma: float = 1.0) -> None:
        self.lam, self.online, self.gamma = lam, online, gamma
        self.terms: list[tuple[dict[str, Tensor], dict[str, Tensor]]] = []  # (Fisher, anchor) per task

    def consolidate(self, model: nn.Module, fisher: dict[str, Tensor]) -> None:
        """Record the Fisher and the current parameters as the optimum of the task just finished."""
        anchor = {k: v.detach().clone() for k, v in model.named_parameters() if k in fisher}
        if self.online and self.terms:
            old, _ = self.terms[0]
            self.terms = [({k: self.gamma * old[k] + fisher[k] for k in fisher}, anchor)]
        else:
            self.terms.append(({k: v.clone() for k, v in fisher.items()}, anchor))

    def penalty(self, model: nn.Module) -> Tensor:
        """sum over recorded tasks of lambda/2 * sum_i F_i (theta_i - theta*_i)^2 (a scalar; 0 before any)."""
        named = dict(model.named_parameters())
        total = torch.zeros((), dtype=next(iter(named.values())).dtype)
        for fisher, anchor in self.terms:
            for k, f in fisher.items():
                total = total + (f * (named[k] - anchor[k]).pow(2)).sum()
        return 0.5 * self.lam * total
