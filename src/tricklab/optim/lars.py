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

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch.optim import Optimizer

from tricklab.optim._moments import scratch_runs


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
        for gi, group in enumerate(self.param_groups):
            scaled: tuple[list[torch.Tensor], ...] = ([], [], [])  # params, grads, buffers (trust ratio)
            plain: tuple[list[torch.Tensor], ...] = ([], [], [])  # excluded from it
            momentum = group["momentum"] > 0.0
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("LARS does not support sparse gradients")
                lists = plain if (group["exclude_bias_and_norm"] and p.ndim < 2) else scaled
                lists[0].append(p)
                lists[1].append(p.grad)
                if momentum:
                    st = self.state[p]
                    if "momentum_buffer" not in st:
                        st["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    lists[2].append(st["momentum_buffer"])
            for trust, (ps, gs, bs) in ((True, scaled), (False, plain)):
                if ps:
                    # u = r (g + wd w) needs scratch (p.grad is left as it is); so does Nesterov on an excluded
                    # tensor, for g + m buf
                    runs = (scratch_runs(self, (gi, trust), ps, group["foreach"], CHUNK_NUMEL)
                            if trust or group["nesterov"] else [(0, len(ps), [])])
                    (_lars_foreach_group if group["foreach"] else _lars_single_group)(ps, gs, bs, runs, group,
                                                                                      trust)
        return loss


CHUNK_NUMEL = 1 << 18  # 256K elements: 1 MB per float32 array, the run size of our RAdam (radam.py)


def _ratios(w_norms: Sequence[torch.Tensor], g_norms: Sequence[torch.Tensor],
            group: dict[str, Any]) -> list[float] | list[torch.Tensor]:
    """The trust ratio of each tensor from its norms.

    On the CPU: Python floats, computed in double precision from the norms (reading a norm there costs nothing,
    while the dozen small tensor ops of :func:`_trust` cost more than the update of a small tensor). On an
    accelerator: 0-d tensors from a few small ops for all tensors together (no host sync), per device and dtype
    so that each ratio is computed in its tensor's precision.
    """
    if all(t.device.type == "cpu" for t in w_norms):
        ws, gs = torch.stack(list(w_norms)).tolist(), torch.stack(list(g_norms)).tolist()
        return [_trust_float(w, g, group) for w, g in zip(ws, gs)]
    kinds: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, t in enumerate(w_norms):
        kinds.setdefault((t.device, t.dtype), []).append(i)
    out: list[torch.Tensor] = [w_norms[0]] * len(w_norms)
    for idx in kinds.values():
        for i, r in zip(idx, _trust(torch.stack([w_norms[i] for i in idx]),
                                    torch.stack([g_norms[i] for i in idx]), group).unbind()):
            out[i] = r
    return out


def _trust_float(w: float, g: float, group: dict[str, Any]) -> float:
    denom = g + group["weight_decay"] * w
    return group["trust_coefficient"] * w / denom if w > 0.0 and denom > 0.0 else 1.0


def _trust(w_norm: torch.Tensor, g_norm: torch.Tensor, group: dict[str, Any]) -> torch.Tensor:
    denom = g_norm + group["weight_decay"] * w_norm
    ok = (w_norm > 0) & (denom > 0)
    one = torch.ones_like(w_norm)
    return torch.where(ok, group["trust_coefficient"] * w_norm / torch.where(ok, denom, one), one)


def _lars_foreach_group(params: list[torch.Tensor], grads: list[torch.Tensor], bufs: list[torch.Tensor],
                        runs: list[tuple[int, int, list]], group: dict[str, Any], trust: bool) -> None:
    # all trust ratios at once: two multi-tensor norms, then the ratios (see _ratios)
    ratios: Sequence[float | torch.Tensor] = ()
    if trust:
        ratios = _ratios(torch._foreach_norm(params), torch._foreach_norm(grads), group)
    for a, b, scratch in runs:
        _lars_foreach(params[a:b], grads[a:b], bufs[a:b], scratch, ratios[a:b], group, trust)


def _lars_single_group(params: list[torch.Tensor], grads: list[torch.Tensor], bufs: list[torch.Tensor],
                       runs: list[tuple[int, int, list]], group: dict[str, Any], trust: bool) -> None:
    views = [v for _, _, vs in runs for v in vs]  # one per tensor (all at the start of the scratch buffer)
    if not trust:
        _lars_single(params, grads, bufs, views, (), group, trust)
    elif params[0].device.type == "cpu":
        # tensor by tensor: the norms, the ratio (a float), the update, while the tensor is in the cache
        for i, (p, g) in enumerate(zip(params, grads)):
            r = _trust_float(float(torch.linalg.vector_norm(p)), float(torch.linalg.vector_norm(g)), group)
            _lars_single([p], [g], bufs[i:i + 1], views[i:i + 1], [r], group, trust)
    else:
        ratios = _ratios([torch.linalg.vector_norm(p) for p in params], [torch.linalg.vector_norm(g) for g in grads],
                         group)
        _lars_single(params, grads, bufs, views, ratios, group, trust)


def _lars_single(params: list[torch.Tensor], grads: list[torch.Tensor], bufs: list[torch.Tensor],
                 scratch: list[torch.Tensor], ratios: Sequence[float | torch.Tensor], group: dict[str, Any],
                 trust: bool) -> None:
    """The per-tensor loop: the values of :func:`_lars_foreach`, operation for operation (identical results)."""
    lr, mom, damp, wd = group["lr"], group["momentum"], group["dampening"], group["weight_decay"]
    for i, (p, g) in enumerate(zip(params, grads)):
        u = g
        if trust:  # u = r (g + wd w)
            if wd != 0.0:
                u = torch.add(g, p, alpha=wd, out=scratch[i]).mul_(ratios[i])
            else:
                u = torch.mul(g, ratios[i], out=scratch[i])
        if mom > 0.0:
            buf = bufs[i]
            buf.mul_(mom).add_(u, alpha=1.0 - damp)
            if group["nesterov"]:
                u = u.add_(buf, alpha=mom) if trust else torch.add(g, buf, alpha=mom, out=scratch[i])
            else:
                u = buf
        p.add_(u, alpha=-lr)


def _lars_foreach(params: list[torch.Tensor], grads: list[torch.Tensor], bufs: list[torch.Tensor],
                  scratch: list[torch.Tensor], ratios: Sequence[float | torch.Tensor], group: dict[str, Any],
                  trust: bool) -> None:
    # in place on the momentum buffers and the scratch views: no tensor of a parameter's size is allocated
    lr, mom, damp, wd = group["lr"], group["momentum"], group["dampening"], group["weight_decay"]
    u: list[torch.Tensor] = grads
    if trust:
        u = scratch
        torch._foreach_copy_(u, grads)
        if wd != 0.0:
            torch._foreach_add_(u, params, alpha=wd)
        torch._foreach_mul_(u, list(ratios))
    if mom > 0.0:
        torch._foreach_mul_(bufs, mom)
        torch._foreach_add_(bufs, u, alpha=1.0 - damp)
        if group["nesterov"]:
            if not trust:
                u = scratch
                torch._foreach_copy_(u, grads)
            torch._foreach_add_(u, bufs, alpha=mom)
        else:
            u = bufs
    torch._foreach_add_(params, u, alpha=-lr)
