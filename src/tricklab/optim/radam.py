"""RAdam (Liu, Jiang, He, Chen, Liu, Gao and Han, ICLR 2020): Adam with a rectified adaptive step.

Problem: early in training Adam's second-moment estimate rests on a handful of gradients, so the adaptive
step has a huge variance (the reason warm-up helps). Fix: model the exponential moving average as a simple
moving average of length rho_t and scale the adaptive step by a rectification term r_t that corrects its
variance; while rho_t is too short for the variance to be finite, take an un-adapted momentum step:

    m_t = beta1 m + (1 - beta1) g ;  v_t = beta2 v + (1 - beta2) g^2 ;  m_hat = m_t / (1 - beta1^t)
    rho_inf = 2 / (1 - beta2) - 1 ;  rho_t = rho_inf - 2 t beta2^t / (1 - beta2^t)
    rho_t > 5:  r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
                x <- x - lr r_t m_hat sqrt(1 - beta2^t) / (sqrt(v_t) + eps)
    else:       x <- x - lr m_hat

The threshold (rho_t > 5), the placement of eps (added to sqrt(v_t), before the sqrt(1 - beta2^t) factor)
and the weight decay (L2: g += wd x; ``decoupled_weight_decay=True``: x *= 1 - lr wd before the update)
follow ``torch.optim.RAdam``, which the tests use as the reference. Per tensor the update is one scalar
times m / (sqrt(v) + eps), so the multi-tensor path is three in-place moment/denominator ops and one
``addcdiv`` into the parameters, all on persistent buffers (on the CPU a fresh 10M-element result costs
page faults that made allocating multi-tensor ops 5-10x slower than in-place ones).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import Optimizer

from tricklab.optim._moments import gather_moments, scratch_runs


def rectification(step: int, beta2: float) -> float:
    """r_t of the paper for step ``step`` (1-based), or 0.0 where rho_t <= 5 (no adaptive step)."""
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    b2t = beta2**step
    rho_t = rho_inf - 2.0 * step * b2t / (1.0 - b2t)
    if not rho_t > 5.0:
        return 0.0
    return math.sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))


class RAdam(Optimizer):
    """RAdam with the arithmetic of ``torch.optim.RAdam`` (to rounding), without its per-step allocations.

    Args:
        lr, betas, eps: as in Adam.
        weight_decay: L2 (added to the gradient) or, with ``decoupled_weight_decay=True``, AdamW-style
            x *= 1 - lr wd before the update.
        foreach: multi-tensor path (``torch._foreach_*`` over a group); False for the per-tensor loop. Both do
            the same operations in the same order (identical results).
        centralize: gradient centralization (Yong et al. 2020, see ``centralize.py``) of every gradient with
            ndim > 1, in place on ``.grad``, before the update (Ranger's GC, done here so that each gradient
            is centralized while it is in the cache for the moment updates).

    State per parameter: ``step`` (int), ``exp_avg``, ``exp_avg_sq`` (torch's names; a torch.optim.RAdam
    state with a tensor ``step`` loads). The denominator buffer is working memory, not state.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
        foreach: bool = True,
        centralize: bool = False,
    ) -> None:
        if not lr >= 0.0:
            raise ValueError(f"invalid learning rate {lr!r}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"invalid betas {betas!r}")
        if not eps >= 0.0 or not weight_decay >= 0.0:
            raise ValueError(f"invalid eps {eps!r} or weight_decay {weight_decay!r}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        decoupled_weight_decay=decoupled_weight_decay, foreach=foreach)
        super().__init__(params, defaults)
        self.centralize = centralize
        # called with each run of updated parameters right after their update (Ranger syncs its slow weights
        # there, while the run is in the cache); working wiring, not state
        self.after_update: Callable[[list[torch.Tensor]], None] | None = None

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for gi, group in enumerate(self.param_groups):
            got = gather_moments(self, group, "RAdam")
            if got is not None:
                params, grads, ms, vs, steps = got
                # the denominators (and L2's g + wd x) go into scratch views: per run in the multi-tensor path,
                # one buffer reused by every tensor in the per-tensor path (hot in the cache, unlike a buffer
                # per parameter)
                runs = scratch_runs(self, gi, params, group["foreach"], CHUNK_NUMEL)
                (_radam_foreach if group["foreach"] else _radam_single)(
                    params, grads, ms, vs, runs, steps, group, getattr(self, "centralize", False),
                    getattr(self, "after_update", None))
        return loss


def _step_sizes(steps: list[int], group: dict[str, Any]) -> tuple[list[bool], list[float]]:
    """Per tensor whether the step is rectified, and its scale: x += scale m / (sqrt(v) + eps) when it is,
    x += scale m when not. Computed once per distinct step count (a group usually shares one)."""
    beta1, beta2 = group["betas"]
    lr = float(group["lr"])
    cache: dict[int, tuple[bool, float]] = {}
    rect, scale = [], []
    for t in steps:
        if t not in cache:
            bc1 = 1.0 - beta1**t
            r = rectification(t, beta2)
            cache[t] = (True, -lr * r * math.sqrt(1.0 - beta2**t) / bc1) if r > 0.0 else (False, -lr / bc1)
        ok, c = cache[t]
        rect.append(ok)
        scale.append(c)
    return rect, scale


def _radam_single(params: list[torch.Tensor], grads: list[torch.Tensor], ms: list[torch.Tensor],
                  vs: list[torch.Tensor], runs: list[tuple[int, int, list[torch.Tensor]]], steps: list[int],
                  group: dict[str, Any], centralize: bool = False,
                  after: Callable[[list[torch.Tensor]], None] | None = None) -> None:
    bufs = [v for _, _, views in runs for v in views]  # one per tensor
    beta1, beta2 = group["betas"]
    wd, lr, eps = group["weight_decay"], float(group["lr"]), group["eps"]
    w1, w2 = 1.0 - beta1, 1.0 - beta2
    decay = 1.0 - lr * wd if wd != 0.0 and group["decoupled_weight_decay"] else None
    rect, scale = _step_sizes(steps, group)
    for p, g, m, v, d, ok, c in zip(params, grads, ms, vs, bufs, rect, scale):
        if centralize and g.ndim > 1:  # GC, in place on .grad (as centralize_ does)
            g.sub_(_row_mean(g))
        if decay is not None:
            p.mul_(decay)
        elif wd != 0.0:  # L2: the moments see g + wd x (in the scratch buffer; .grad stays as it is)
            g = torch.add(g, p, alpha=wd, out=d)
        m.lerp_(g, w1)
        v.mul_(beta2).addcmul_(g, g, value=w2)
        if ok:
            torch.sqrt(v, out=d).add_(eps)
            p.addcdiv_(m, d, value=c)
        else:
            p.add_(m, alpha=c)
        if after is not None:
            after([p])


def _radam_foreach(params: list[torch.Tensor], grads: list[torch.Tensor], ms: list[torch.Tensor],
                   vs: list[torch.Tensor], runs: list[tuple[int, int, list[torch.Tensor]]], steps: list[int],
                   group: dict[str, Any], centralize: bool = False,
                   after: Callable[[list[torch.Tensor]], None] | None = None) -> None:
    # the operations of _radam_single in the same order, one multi-tensor op each, all in place (identical
    # results to the per-tensor loop). The group is cut into runs of consecutive tensors of about
    # CHUNK_NUMEL elements and every op runs over one run before the next starts: the five arrays of a run
    # stay in the cache between ops (over the whole group each op would stream them all from memory).
    rect, scale = _step_sizes(steps, group)
    for a, b, views in runs:
        _radam_run(params[a:b], grads[a:b], ms[a:b], vs[a:b], views, rect[a:b], scale[a:b], group, centralize)
        if after is not None:
            after(params[a:b])


CHUNK_NUMEL = 1 << 18  # 256K elements: 5 MB over the five arrays (measured 1 << 16 .. 1 << 20 alike)


def _radam_run(params: list[torch.Tensor], grads: list[torch.Tensor], ms: list[torch.Tensor],
               vs: list[torch.Tensor], bufs: list[torch.Tensor], rect: list[bool], scale: list[float],
               group: dict[str, Any], centralize: bool) -> None:
    beta1, beta2 = group["betas"]
    wd, lr, eps = group["weight_decay"], float(group["lr"]), group["eps"]
    if centralize:
        gs = [g for g in grads if g.ndim > 1]
        if gs:
            torch._foreach_sub_(gs, [_row_mean(g) for g in gs])
    if wd != 0.0:
        if group["decoupled_weight_decay"]:
            torch._foreach_mul_(params, 1.0 - lr * wd)
        else:
            torch._foreach_copy_(bufs, grads)
            torch._foreach_add_(bufs, params, alpha=wd)
            grads = bufs
    torch._foreach_lerp_(ms, grads, 1.0 - beta1)
    torch._foreach_mul_(vs, beta2)
    torch._foreach_addcmul_(vs, grads, grads, value=1.0 - beta2)
    if all(rect):
        _rectified(params, ms, vs, bufs, scale, eps)
        return
    idx = [i for i, ok in enumerate(rect) if ok]
    if idx:
        _rectified(*([xs[i] for i in idx] for xs in (params, ms, vs, bufs, scale)), eps)
    by_scale: dict[float, list[int]] = {}  # x += c m: one op per distinct c
    for i, ok in enumerate(rect):
        if not ok:
            by_scale.setdefault(scale[i], []).append(i)
    for c, idx in by_scale.items():
        torch._foreach_add_([params[i] for i in idx], [ms[i] for i in idx], alpha=c)


def _rectified(params: list[torch.Tensor], ms: list[torch.Tensor], vs: list[torch.Tensor],
               bufs: list[torch.Tensor], scale: list[float], eps: float) -> None:
    """x += c m / (sqrt(v) + eps) over a list, the denominator in the scratch buffers."""
    for v, d in zip(vs, bufs):  # sqrt into the scratch buffer: the aten foreach out= overload allocates
        torch.sqrt(v, out=d)
    torch._foreach_add_(bufs, eps)
    torch._foreach_addcdiv_(params, ms, bufs, scale)


def _row_mean(g: torch.Tensor) -> torch.Tensor:
    """Mean over all dims but the first, kept for broadcasting (gradient centralization, Yong et al. 2020)."""
    return g.mean(1, keepdim=True) if g.ndim == 2 else g.mean(dim=tuple(range(1, g.ndim)), keepdim=True)
