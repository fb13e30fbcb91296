"""LARS: layer-wise adaptive rate scaling for large-batch SGD (You, Gitman and Ginsburg 2017).

Problem: with a large batch and the correspondingly large learning rate, layers whose gradient norm is large
compared to their weight norm take steps bigger than the weights themselves and training diverges. Fix: give
each layer (parameter tensor) a local learning rate proportional to ||w|| / ||grad||. Per tensor w with
gradient g (the paper's Algorithm 1, trust coefficient eta, weight decay beta, momentum m):

    local_lr = eta * ||w|| / (||g|| + beta ||w||)          (1 when ||w|| = 0 or the denominator is 0)
    u        = local_lr * (g + beta w)
    buf      = m * buf + (1 - dampening) * u              (buf starts at 0)
    w       <- w - lr * buf               (Nesterov: w <- w - lr * (u + m * buf))

Biases and normalisation parameters (tensors with ndim < 2) are excluded by default
(``exclude_bias_and_norm``): they get plain momentum SGD on g with no trust ratio and no weight decay, as in
the common large-batch recipes (Goyal et al. 2017; pytorch_optimizer's LARS).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import Optimizer


class LARS(Optimizer):
    """LARS (You et al. 2017): momentum SGD with a per-tensor trust ratio eta*||w||/(||g|| + wd*||w||).

    Args:
        lr: global learning rate. momentum, dampening, nesterov: as in ``torch.optim.SGD``.
        weight_decay: beta, added to the gradient of the tensors that use the trust ratio.
        trust_coefficient: eta.
        exclude_bias_and_norm: tensors with ndim < 2 skip the trust ratio and the weight decay.
        foreach: multi-tensor path (``torch._foreach_*``); False for the per-tensor loop.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        momentum: float = 0.9,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        trust_coefficient: float = 1e-3,
        nesterov: bool = False,
        exclude_bias_and_norm: bool = True,
        foreach: bool = True,
    ) -> None:
        if not lr >= 0.0:
            raise ValueError(f"invalid learning rate {lr!r}")
        if not 0.0 <= momentum < 1.0 or not 0.0 <= dampening <= 1.0:
            raise ValueError(f"invalid momentum {momentum!r} or dampening {dampening!r}")
        if not weight_decay >= 0.0 or not trust_coefficient > 0.0:
            raise ValueError(f"invalid weight_decay {weight_decay!r} or trust_coefficient {trust_coefficient!r}")
        if nesterov and momentum == 0.0:
            raise ValueError("nesterov momentum needs momentum > 0")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        trust_coefficient=trust_coefficient, nesterov=nesterov,
                        exclude_bias_and_norm=exclude_bias_and_norm, foreach=foreach)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            scaled: tuple[list[torch.Tensor], ...] = ([], [], [])  # params, grads, buffers (trust ratio)
            plain: tuple[list[torch.Tensor], ...] = ([], [], [])  # excluded from it
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("LARS does not support sparse gradients")
                st = self.state[p]
                if group["momentum"] > 0.0 and "momentum_buffer" not in st:
                    st["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                lists = plain if (group["exclude_bias_and_norm"] and p.ndim < 2) else scaled
                lists[0].append(p)
                lists[1].append(p.grad)
                if group["momentum"] > 0.0:
                    lists[2].append(st["momentum_buffer"])
            fn = _lars_foreach if group["foreach"] else _lars_single
            fn(*scaled, group, trust=True)
            fn(*plain, group, trust=False)
        return loss


def _trust(w_norm: torch.Tensor, g_norm: torch.Tensor, group: dict[str, Any]) -> torch.Tensor:
    denom = g_norm + group["weight_decay"] * w_norm
    ok = (w_norm > 0) & (denom > 0)
    one = torch.ones_like(w_norm)
    return torch.where(ok, group["trust_coefficient"] * w_norm / torch.where(ok, denom, one), one)


def _lars_single(params: list[torch.Tensor], grads: list[torch.Tensor], bufs: list[torch.Tensor],
                 group: dict[str, Any], trust: bool) -> None:
    lr, mom, damp, wd = group["lr"], group["momentum"], group["dampening"], group["weight_decay"]
    for i, (p, g) in enumerate(zip(params, grads)):
        if trust:
            ratio = _trust(torch.linalg.vector_norm(p), torch.linalg.vector_norm(g), group)
            u = g.add(p, alpha=wd) if wd != 0.0 else g.clone()  # never change p.grad itself
            u.mul_(ratio)
        else:
            u = g
        if mom > 0.0:
            buf = bufs[i]
            buf.mul_(mom).add_(u, alpha=1.0 - damp)
            u = u.add(buf, alpha=mom) if group["nesterov"] else buf
        p.add_(u, alpha=-lr)


def _lars_foreach(params: list[torch.Tensor], grads: list[torch.Tensor], bufs: list[torch.Tensor],
                  group: dict[str, Any], trust: bool) -> None:
    if not params:
        return
    lr, mom, damp, wd = group["lr"], group["momentum"], group["dampening"], group["weight_decay"]
    u: list[torch.Tensor] | tuple[torch.Tensor, ...] = grads
    if trust:
        w_norm = torch.stack(torch._foreach_norm(params))
        g_norm = torch.stack(torch._foreach_norm(grads))
        ratios = _trust(w_norm, g_norm, group).unbind()
        u = torch._foreach_add(grads, params, alpha=wd) if wd != 0.0 else torch._foreach_mul(grads, 1.0)
        torch._foreach_mul_(u, ratios)
    if mom > 0.0:
        torch._foreach_mul_(bufs, mom)
        torch._foreach_add_(bufs, u, alpha=1.0 - damp)
        u = torch._foreach_add(u, bufs, alpha=mom) if group["nesterov"] else bufs
    torch._foreach_add_(params, u, alpha=-lr)
