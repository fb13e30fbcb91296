"""Counterfactual explanations: the smallest change to an input that makes the classifier answer ``target_class``.

:func:`wachter_counterfactual` (Wachter, Mittelstadt & Russell 2018, eq. 2) solves, per example,

    max_lambda min_x'  lambda * l(f(x'), c) + d(x', x)

with ``l`` the logit hinge ``max(0, max_{j != c} z_j(x') - z_c(x') + margin)`` (zero once the prediction is ``c``
with the margin; Carlini & Wagner's classification form of Wachter's squared output error) and ``d`` either the
weighted L1 distance ``sum_i w_i |x'_i - x_i|`` (Wachter's choice with ``w_i = 1 / MAD_i``, see
:func:`mad_weights`) or the weighted squared L2 distance ``sum_i w_i (x'_i - x_i)^2``. The inner problem runs
``steps`` iterations of proximal gradient descent on ``delta = x' - x`` (for L1 the proximal step is the
soft-threshold ``sign(delta) max(|delta| - lr w, 0)``, so untouched features stay exactly unchanged: sparse
counterfactuals); the outer loop multiplies ``lambda`` by ``lam_factor`` for the examples that are not yet valid,
for up to ``rounds`` rounds. The closest valid iterate seen is kept, then scaled back toward the input to
the decision boundary by bisection (removing the overshoot of the last gradient step).

Features flagged in ``fixed`` (a bool mask shaped like one example or like the inputs) never move, and
``lower`` / ``upper`` bounds are enforced by projection after every step.

:func:`diverse_counterfactuals` (Mothilal, Sharma & Tan 2020, "DiCE", eq. 3) optimises ``k`` counterfactuals
per example jointly with Adam on

    1/k sum_j [ lambda * l(f(c_j), c) + proximity * dist(c_j, x) ] - diversity * det(K),
    K_ij = 1 / (1 + dist(c_i, c_j)),   dist = mean absolute difference over the free features,

the determinant (a determinantal point process term) rewarding counterfactuals that are far apart; as in
Wachter's outer loop, ``lambda`` grows for the examples whose candidates are not all valid yet. The subgradient
steps of Adam do not set changes exactly to 0, so a diverse set is not sparse.

Reported (:class:`CounterfactualResult`): validity (prediction == target), proximity (L1 and L2 distance),
sparsity (fraction of the features changed by more than ``tol``) and, for a diverse set, the mean pairwise L1
distance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from tricklab.errors import UserError
from tricklab.explain._common import (
    check_inputs,
    check_model,
    check_positive_int,
    check_target_range,
    eval_mode,
    logits_of,
    resolve_target,
)

__all__ = ["CounterfactualResult", "wachter_counterfactual", "diverse_counterfactuals", "mad_weights",
           "logit_hinge"]


@dataclass
class CounterfactualResult:
    """Counterfactuals and their scores. With ``k`` per example (a diverse set) every per-example tensor has
    a second dimension ``k``."""

    inputs: Tensor  # (B, *shape)
    counterfactuals: Tensor  # (B, *shape) or (B, k, *shape)
    target: Tensor  # (B,)
    predicted: Tensor  # (B,) or (B, k)
    valid: Tensor  # bool, (B,) or (B, k)
    l1: Tensor  # sum |x' - x|
    l2: Tensor  # ||x' - x||_2
    sparsity: Tensor  # fraction of features changed by more than tol
    lam: Tensor | None = None  # (B,) the final lambda of each example (Wachter)
    diversity: Tensor | None = None  # (B,) mean pairwise L1 distance among the k (diverse set)
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        """Validity rate, and proximity / sparsity means over the valid counterfactuals."""
        valid = self.valid.reshape(-1)
        out = {"validity": float(valid.double().mean())}
        for key in ("l1", "l2", "sparsity"):
            v = getattr(self, key).reshape(-1)[valid]
            out[key] = float(v.double().mean()) if v.numel() else float("nan")
        if self.diversity is not None:
            out["diversity"] = float(self.diversity.double().mean())
        return out


def logit_hinge(logits: Tensor, target: Tensor, margin: float) -> Tensor:
    """``max(0, max_{j != c} z_j - z_c + margin)`` per row (``(N,)``)."""
    z_c = logits.gather(1, target.view(-1, 1)).squeeze(1)
    others = logits.scatter(1, target.view(-1, 1), float("-inf"))
    return (others.max(1).values - z_c + margin).clamp_min(0)


def mad_weights(train_inputs: Tensor, floor: float = 1e-3) -> Tensor:
    """Wachter's feature weights ``1 / MAD_i``, the inverse median absolute deviation of each feature over the
    training inputs (``(N, *shape)`` -> ``(*shape)``), with MAD floored at ``floor`` (constant features)."""
    x = train_inputs.detach().reshape(train_inputs.shape[0], -1)
    med = x.median(0).values
    mad = (x - med).abs().median(0).values.clamp_min(floor)
    return (1.0 / mad).reshape(train_inputs.shape[1:])


def _mask(value: Tensor | None, x: Tensor, name: str, method: str, default: bool) -> Tensor:
    if value is None:
        return torch.full_like(x, default, dtype=torch.bool)
    if not isinstance(value, Tensor):
        raise UserError(f"{method}: {name} must be a bool tensor shaped like one example or like the inputs")
    try:
        return value.to(device=x.device, dtype=torch.bool).expand_as(x)
    except RuntimeError:
        raise UserError(f"{method}: {name} of shape {tuple(value.shape)} does not broadcast to the inputs "
                        f"{tuple(x.shape)}") from None


def _bound(value: Tensor | float | None, x: Tensor, fill: float) -> Tensor:
    if value is None:
        return torch.full_like(x, fill)
    return torch.as_tensor(value, dtype=x.dtype, device=x.device).expand_as(x)


def _weights(value: Tensor | float | None, x: Tensor, method: str) -> Tensor:
    w = _bound(1.0 if value is None else value, x, 1.0)
    if (w < 0).any():
        raise UserError(f"{method}: feature_weights must be >= 0")
    return w


def _scores(x: Tensor, cf: Tensor, tol: float) -> tuple[Tensor, Tensor, Tensor]:
    """L1, L2 distance and fraction of changed features; ``cf`` is ``(B, *shape)`` or ``(B, k, *shape)``."""
    lead = cf.dim() - x.dim() + 1  # 1, or 2 for a diverse set
    if lead == 2:
        x = x.unsqueeze(1)
    d = (cf - x).reshape(*cf.shape[:lead], -1)
    return d.abs().sum(-1), d.norm(dim=-1), (d.abs() > tol).double().mean(-1)


def _back_to_boundary(model: nn.Module, x: Tensor, cf: Tensor, t: Tensor, valid: Tensor, method: str,
                      iters: int = 24) -> Tensor:
    """Shrink each valid change toward the input, ``x + s (cf - x)`` with the smallest ``s`` in (0, 1] that keeps
    the prediction (bisection): the gradient steps overshoot the decision boundary by up to one step, and
    scaling back removes that (bounds and fixed features stay respected: the segment lies inside both)."""
    view = (x.shape[0], *([1] * (x.dim() - 1)))
    lo = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    hi = torch.ones_like(lo)
    for _ in range(iters):
        mid = (lo + hi) / 2
        ok = logits_of(model, x + mid.view(view) * (cf - x), method).argmax(1) == t
        hi = torch.where(ok, mid, hi)
        lo = torch.where(ok, lo, mid)
    hi = torch.where(valid, hi, torch.ones_like(hi))
    return x + hi.view(view) * (cf - x)


def wachter_counterfactual(model: nn.Module, inputs: Tensor, target_class: int | Tensor, *, distance: str = "l1",
                           feature_weights: Tensor | float | None = None, fixed: Tensor | None = None,
                           lower: Tensor | float | None = None, upper: Tensor | float | None = None,
                           lam: float = 0.1, lam_factor: float = 4.0, rounds: int = 8, steps: int = 200,
                           lr: float = 0.05, margin: float = 0.1, tol: float = 1e-6) -> CounterfactualResult:
    """Wachter counterfactuals of ``inputs`` (``(B, *shape)``) toward ``target_class`` (an int or ``(B,)``)."""
    method = "wachter_counterfactual"
    model, x = check_model(model, method), check_inputs(inputs, method)
    if distance not in ("l1", "l2"):
        raise UserError(f"{method}: distance must be 'l1' or 'l2', got {distance!r}")
    check_positive_int(rounds, "rounds", method)
    check_positive_int(steps, "steps", method)
    for name, v in (("lam", lam), ("lr", lr), ("lam_factor", lam_factor)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
            raise UserError(f"{method}: {name} must be a number > 0, got {v!r}")
    free = ~_mask(fixed, x, "fixed", method, False)
    lo, hi = _bound(lower, x, float("-inf")), _bound(upper, x, float("inf"))
    if (x < lo).any() or (x > hi).any():
        raise UserError(f"{method}: the inputs lie outside [lower, upper]; widen the bounds")
    w = _weights(feature_weights, x, method)
    b = x.shape[0]
    with eval_mode(model):
        t = resolve_target(model, x, target_class, method)
        delta = torch.zeros_like(x)
        lam_t = torch.full((b,), float(lam), dtype=x.dtype, device=x.device)
        best = x.clone()
        best_dist = torch.full((b,), float("inf"), dtype=torch.float64, device=x.device)
        found = torch.zeros(b, dtype=torch.bool, device=x.device)
        view = (b, *([1] * (x.dim() - 1)))
        for _ in range(rounds):
            for _ in range(steps + 1):
                d = delta.detach().requires_grad_(True)
                with torch.enable_grad():
                    logits = logits_of(model, x + d, method)
                    check_target_range(t, logits.shape[1], method)
                    hinge = logit_hinge(logits, t, margin)
                    loss = (lam_t * hinge).sum()
                    if distance == "l2":
                        loss = loss + (w * d * d).sum()
                    (grad,) = torch.autograd.grad(loss, d)
                with torch.no_grad():
                    # keep the closest valid iterate (the one whose logits were just computed)
                    valid_now = logits.argmax(1) == t
                    dist = (w * (delta.abs() if distance == "l1" else delta * delta)).reshape(b, -1).sum(1).double()
                    better = valid_now & (dist < best_dist)
                    best[better] = (x + delta)[better]
                    best_dist = torch.where(better, dist, best_dist)
                    found |= valid_now
                    step = delta - lr * grad
                    if distance == "l1":
                        step = step.sign() * (step.abs() - lr * w).clamp_min(0)  # proximal step of lr * w |.|
                    delta = (torch.minimum(torch.maximum(x + step * free, lo), hi) - x) * free
            if bool(found.all()):
                break
            lam_t = torch.where(found, lam_t, lam_t * lam_factor)
        best = torch.where(found.view(view), best, x + delta)
        with torch.no_grad():
            best = _back_to_boundary(model, x, best, t, found, method)
            pred = logits_of(model, best, method).argmax(1)
    l1, l2, sp = _scores(x, best, tol)
    return CounterfactualResult(x, best, t, pred, pred == t, l1, l2, sp, lam=lam_t,
                                extra={"distance": distance})


def diverse_counterfactuals(model: nn.Module, inputs: Tensor, target_class: int | Tensor, *, k: int = 4,
                            fixed: Tensor | None = None, lower: Tensor | float | None = None,
                            upper: Tensor | float | None = None, lam: float = 1.0, proximity: float = 1.0,
                            diversity: float = 1.0, steps: int = 500, lr: float = 0.02, init_scale: float = 0.1,
                            margin: float = 0.1, tol: float = 1e-6, lam_factor: float = 2.0, check_every: int = 50,
                            generator: torch.Generator | None = None) -> CounterfactualResult:
    """``k`` counterfactuals per example kept apart by a DPP diversity term (DiCE, see the module docstring).

    The candidates start at the input plus Gaussian noise of standard deviation ``init_scale`` times each
    example's feature standard deviation (drawn from ``generator``) on the free features. Every ``check_every``
    steps, ``lambda`` of the examples with a candidate not yet valid is multiplied by ``lam_factor``.
    """
    method = "diverse_counterfactuals"
    model, x = check_model(model, method), check_inputs(inputs, method)
    check_positive_int(k, "k", method, minimum=2)
    check_positive_int(steps, "steps", method)
    free = ~_mask(fixed, x, "fixed", method, False)
    lo, hi = _bound(lower, x, float("-inf")), _bound(upper, x, float("inf"))
    b, shape = x.shape[0], x.shape[1:]
    xk = x.unsqueeze(1).expand(b, k, *shape)
    freek = free.unsqueeze(1).expand(b, k, *shape)
    n_free = freek.reshape(b, k, -1).sum(-1).clamp_min(1).double()
    scale = x.reshape(b, -1).std(1).clamp_min(1e-3).view(b, 1, *([1] * len(shape)))
    noise = torch.randn((b, k, *shape), generator=generator, dtype=x.dtype, device=x.device)
    delta = (noise * init_scale * scale * freek).requires_grad_(True)
    opt = torch.optim.Adam([delta], lr=lr)
    with eval_mode(model):
        t = resolve_target(model, x, target_class, method)
        tk = t.repeat_interleave(k)
        iu = torch.triu_indices(k, k, 1)
        lam_t = torch.full((b, 1), float(lam), dtype=x.dtype, device=x.device)
        for step in range(steps):
            with torch.enable_grad():
                cf = torch.minimum(torch.maximum(xk + delta * freek, lo.unsqueeze(1)), hi.unsqueeze(1))
                logits = logits_of(model, cf.reshape(b * k, *shape), method)
                check_target_range(tk, logits.shape[1], method)
                hinge = logit_hinge(logits, tk, margin).view(b, k)
                diff = (cf - xk).reshape(b, k, -1)
                prox = diff.abs().sum(-1) / n_free.to(diff)  # (B, k) mean |change| over free features
                flat = cf.reshape(b, k, -1)
                pair = (flat.unsqueeze(2) - flat.unsqueeze(1)).abs().sum(-1) / n_free.to(diff).unsqueeze(-1)
                kernel = 1.0 / (1.0 + pair)  # (B, k, k)
                loss = (lam_t * hinge + proximity * prox).mean(1) - diversity * torch.linalg.det(kernel)
                opt.zero_grad(set_to_none=True)
                loss.sum().backward()
            opt.step()
            if (step + 1) % check_every == 0:
                # as Wachter's outer loop: a larger lambda for the examples with a candidate not yet valid
                ok = (logits.detach().argmax(1) == tk).view(b, k).all(1, keepdim=True)
                lam_t = torch.where(ok, lam_t, lam_t * lam_factor)
        with torch.no_grad():
            cf = torch.minimum(torch.maximum(xk + delta * freek, lo.unsqueeze(1)), hi.unsqueeze(1))
            cf = torch.where(freek, cf, xk)  # fixed features exactly as given
            pred = logits_of(model, cf.reshape(b * k, *shape), method).argmax(1).view(b, k)
    flat = cf.reshape(b, k, -1)
    pair = (flat.unsqueeze(2) - flat.unsqueeze(1)).abs().sum(-1)
    div = pair[:, iu[0], iu[1]].mean(1)
    l1, l2, sp = _scores(x, cf.detach(), tol)
    return CounterfactualResult(x, cf.detach(), t, pred, pred == t.unsqueeze(1), l1, l2, sp, diversity=div)
