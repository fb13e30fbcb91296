"""LAMB: layer-wise adaptive moments for large-batch training (You et al., ICLR 2020).

Problem: with very large batches Adam's per-coordinate step has the same size for every layer, so layers
whose weights are small relative to their update diverge while others barely move. Fix: compute the Adam
direction, then rescale it per parameter tensor (the "layer") so that the step is proportional to the
weight norm (the trust ratio). Algorithm 2 of the paper, per tensor x with gradient g at step t:

    m_t = beta1 m_{t-1} + (1 - beta1) g                  v_t = beta2 v_{t-1} + (1 - beta2) g^2
    m_hat = m_t / (1 - beta1^t)                          v_hat = v_t / (1 - beta2^t)      (bias correction)
    r_t = m_hat / (sqrt(v_hat) + eps) + lambda x          (L2 weight decay *inside* r, as in the paper)
    x  <- x - lr * phi(||x||) / ||r_t|| * r_t             (trust ratio = 1 when ||x|| or ||r_t|| is 0)

phi is the paper's scaling function; we use phi(z) = min(z, max_weight_norm) (default 10, as
pytorch_optimizer does); ``max_weight_norm=None`` makes phi the identity.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import Optimizer

from tricklab.optim._moments import gather_moments, param_scratch, scratch_runs


class LAMB(Optimizer):
    """LAMB (You et al. 2020): Adam direction, rescaled per tensor by the trust ratio phi(||x||)/||r||.

    Args:
        lr, betas, eps: as in Adam.
        weight_decay: lambda, added to the Adam direction (L2 in r, the paper's form), so it takes part in
            the trust ratio.
        bias_correction: divide m and v by (1 - beta^t) (the paper). ``False`` uses raw m and v.
        max_weight_norm: clamp of ||x|| in the trust ratio (phi); None for no clamp.
        foreach: multi-tensor path (``torch._foreach_*`` over a group); False for the per-tensor loop.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        bias_correction: bool = True,
        max_weight_norm: float | None = 10.0,
        foreach: bool = True,
    ) -> None:
        if not lr >= 0.0:
            raise ValueError(f"invalid learning rate {lr!r}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"invalid betas {betas!r}")
        if not eps >= 0.0 or not weight_decay >= 0.0:
            raise ValueError(f"invalid eps {eps!r} or weight_decay {weight_decay!r}")
        if max_weight_norm is not None and not max_weight_norm > 0:
            raise ValueError(f"max_weight_norm must be positive or None, got {max_weight_norm!r}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        bias_correction=bias_correction, max_weight_norm=max_weight_norm, foreach=foreach)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for gi, group in enumerate(self.param_groups):
            got = gather_moments(self, group, "LAMB")
            if got is not None:
                params, grads, ms, vs, steps = got
                if group["foreach"] or params[0].device.type != "cpu":
                    # the direction r of every tensor is needed at once (whole-group ops, or all trust ratios
                    # before any update on an accelerator): a buffer per parameter
                    bufs = param_scratch(self, params)
                else:  # tensor by tensor: one buffer, hot in the cache, reused by every tensor
                    bufs = [v for _, _, views in scratch_runs(self, gi, params, False, 0) for v in views]
                (_lamb_foreach if group["foreach"] else _lamb_single)(params, grads, ms, vs, bufs, steps, group)
        return loss


def _corrections(steps: list[int], group: dict[str, Any]) -> tuple[list[float], list[float]]:
    """Per tensor 1/(1 - beta1^t) and 1/sqrt(1 - beta2^t) (all ones without bias correction)."""
    beta1, beta2 = group["betas"]
    if not group["bias_correction"]:
        return [1.0] * len(steps), [1.0] * len(steps)
    return [1.0 / (1.0 - beta1**t) for t in steps], [1.0 / (1.0 - beta2**t) ** 0.5 for t in steps]


def _trust(w_norm: torch.Tensor, r_norm: torch.Tensor, group: dict[str, Any]) -> torch.Tensor:
    # phi(||x||) / ||r||, and 1 where either norm is 0 (a zero-initialised tensor still moves; a zero update
    # stays zero)
    phi = w_norm if group["max_weight_norm"] is None else w_norm.clamp(max=group["max_weight_norm"])
    ok = (w_norm > 0) & (r_norm > 0)
    return torch.where(ok, phi / torch.where(ok, r_norm, torch.ones_like(r_norm)), torch.ones_like(r_norm))


def _scale_float(w: float, r: float, c: float, group: dict[str, Any]) -> float:
    """The step factor of one tensor, trust(||x||, c ||r||) * c * -lr, in double precision (the CPU path)."""
    rn = r * c
    phi = w if group["max_weight_norm"] is None else min(w, group["max_weight_norm"])
    trust = phi / rn if w > 0.0 and rn > 0.0 else 1.0
    return trust * (c * -group["lr"])


def _scales(w_norms: list[torch.Tensor], r_norms: list[torch.Tensor], cs: list[float],
            group: dict[str, Any]) -> list[float] | list[torch.Tensor]:
    """Every tensor's step factor: Python floats on the CPU (reading a norm costs nothing there, while a dozen
    small tensor ops cost more than a small tensor's update); 0-d tensors elsewhere (no host sync)."""
    if w_norms[0].device.type == "cpu":
        ws, rs = torch.stack(w_norms).tolist(), torch.stack(r_norms).tolist()
        return [_scale_float(w, r, c, group) for w, r, c in zip(ws, rs, cs)]
    w_norm = torch.stack(w_norms)
    c_t = torch.tensor(cs, dtype=w_norm.dtype, device=w_norm.device)
    return list((_trust(w_norm, torch.stack(r_norms) * c_t, group) * (c_t * -group["lr"])).unbind())


def _direction(p: torch.Tensor, g: torch.Tensor, m: torch.Tensor, v: torch.Tensor, r: torch.Tensor, a: float,
               b: float, group: dict[str, Any]) -> float:
    """Moments and r of one tensor (into the scratch ``r``); returns c, the factor left out of r (see below)."""
    beta1, beta2 = group["betas"]
    m.lerp_(g, 1.0 - beta1)  # m = beta1 m + (1 - beta1) g
    v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
    torch.sqrt(v, out=r)
    if group["bias_correction"]:
        r.mul_(b)  # sqrt(v_hat) = sqrt(v) / sqrt(1 - beta2^t)
    r.add_(group["eps"]).reciprocal_().mul_(m)  # m / (sqrt(v_hat) + eps)
    if group["weight_decay"] != 0.0:
        r.mul_(a).add_(p, alpha=group["weight_decay"])  # r = m_hat / (sqrt(v_hat) + eps) + lambda x
        return 1.0
    return a  # r = a * (m / denom): keep the scalar a out of the tensor pass, in ||r|| and the step


def _lamb_single(params: list[torch.Tensor], grads: list[torch.Tensor], ms: list[torch.Tensor],
                 vs: list[torch.Tensor], bufs: list[torch.Tensor], steps: list[int], group: dict[str, Any]) -> None:
    # per tensor, the operations of _lamb_foreach (identical results); on the CPU each tensor's step follows its
    # moments while it is in the cache
    c1, c2 = _corrections(steps, group)
    if params[0].device.type == "cpu":
        for p, g, m, v, r, a, b in zip(params, grads, ms, vs, bufs, c1, c2):
            c = _direction(p, g, m, v, r, a, b, group)
            s = _scale_float(float(torch.linalg.vector_norm(p)), float(torch.linalg.vector_norm(r)), c, group)
            p.add_(r.mul_(s))
        return
    cs = [_direction(*t, group) for t in zip(params, grads, ms, vs, bufs, c1, c2)]
    scales = _scales([torch.linalg.vector_norm(p) for p in params], [torch.linalg.vector_norm(r) for r in bufs],
                     cs, group)
    for p, r, s in zip(params, bufs, scales):
        p.add_(r.mul_(s))


def _lamb_foreach(params: list[torch.Tensor], grads: list[torch.Tensor], ms: list[torch.Tensor],
                  vs: list[torch.Tensor], bufs: list[torch.Tensor], steps: list[int], group: dict[str, Any]) -> None:
    # the same arithmetic as _lamb_single, one multi-tensor op per operation for the whole group; every op
    # is in place on a persistent scratch buffer (on the CPU a fresh 10M-element result costs page faults
    # that made out-of-place ops 5-10x slower than in-place ones)
    beta1, beta2 = group["betas"]
    c1, c2 = _corrections(steps, group)
    wd, eps = group["weight_decay"], group["eps"]
    torch._foreach_lerp_(ms, grads, 1.0 - beta1)
    torch._foreach_mul_(vs, beta2)
    torch._foreach_addcmul_(vs, grads, grads, value=1.0 - beta2)
    r = bufs
    torch._foreach_copy_(r, vs)
    torch._foreach_sqrt_(r)
    if group["bias_correction"]:
        torch._foreach_mul_(r, c2)
    torch._foreach_add_(r, eps)
    torch._foreach_reciprocal_(r)
    torch._foreach_mul_(r, ms)
    if wd != 0.0:
        torch._foreach_mul_(r, c1)
        torch._foreach_add_(r, params, alpha=wd)
        c = [1.0] * len(params)
    else:
        c = c1
    scales = _scales(list(torch._foreach_norm(params)), list(torch._foreach_norm(r)), c, group)
    torch._foreach_mul_(r, scales)
    torch._foreach_add_(params, r)
