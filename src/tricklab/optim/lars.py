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

The update is written without materialising u (``.grad`` is left as it is, and no scratch memory is needed),
each term an in-place ``addcmul`` with the tensor's ratio r as a 0-d tensor of its dtype:

    buf += (1 - dampening) g r ;  buf += (1 - dampening) beta w r ;  w -= lr buf
    Nesterov:  w -= lr beta w r ;  w -= lr g r ;  w -= lr m buf        (= w - lr (u + m buf))
    momentum 0:  w -= lr beta w r ;  w -= lr g r

That is 3-6 passes over memory per tensor where forming u first takes 5-7 (pytorch_optimizer forms it in
``.grad`` itself), and it equals the paper's update to rounding (tested against pytorch_optimizer and NumPy).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
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
            momentum, exclude, state = group["momentum"] > 0.0, group["exclude_bias_and_norm"], self.state
            for p in group["params"]:
                g = p.grad
                if g is None:
                    continue
                if g.is_sparse:
                    raise RuntimeError("LARS does not support sparse gradients")
                lists = plain if (exclude and p.ndim < 2) else scaled
                lists[0].append(p)
                lists[1].append(g)
                if momentum:
                    st = state[p]
                    buf = st.get("momentum_buffer")
                    if buf is None:
                        buf = st["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    lists[2].append(buf)
            for trust, (ps, gs, bs) in ((True, scaled), (False, plain)):
                if ps:
                    (_lars_foreach_group if group["foreach"] else _lars_single_group)(ps, gs, bs, group, trust)
        return loss


CHUNK_NUMEL = 1 << 18  # 256K elements per run: 1 MB per float32 array, the run size of our RAdam (radam.py)
CACHE_NUMEL = 1 << 20  # groups up to 1M elements fit the cache as a whole: one run (fewer multi-tensor calls)


def _run_bounds(params: list[torch.Tensor]) -> list[tuple[int, int]]:
    """Runs of consecutive tensors of about CHUNK_NUMEL elements for a large CPU group, else one run.

    Every op of the update runs over one run before the next run starts, so that a run's parameters, gradients
    and buffers stay in the cache between the passes of the update (over a large group each pass would stream
    them all from memory). A small group already fits the cache, and an accelerator gains nothing from runs but
    more kernel launches."""
    total = sum(p.numel() for p in params)
    if params[0].device.type != "cpu" or total <= CACHE_NUMEL:
        return [(0, len(params))]
    bounds, start, n = [], 0, 0
    for i, p in enumerate(params):
        n += p.numel()
        if n >= CHUNK_NUMEL or i == len(params) - 1:
            bounds.append((start, i + 1))
            start, n = i + 1, 0
    return bounds


def _ratios(w_norms: Sequence[torch.Tensor], g_norms: Sequence[torch.Tensor],
            group: dict[str, Any]) -> list[torch.Tensor]:
    """The trust ratio of each tensor from its norms, as 0-d tensors in the tensor's dtype (a 0-d operand of
    another dtype costs a cast in every op that uses it).

    On the CPU they are computed as Python floats in double precision (reading a norm there costs nothing, while
    the dozen small tensor ops of :func:`_trust` cost more than the update of a small tensor). On an accelerator:
    a few small ops for all tensors together (no host sync). Per dtype (the tensors of a group share a device).
    """
    device = w_norms[0].device
    dtypes = {t.dtype for t in w_norms}
    kinds = [(dt, [i for i, t in enumerate(w_norms) if t.dtype == dt]) for dt in dtypes] if len(dtypes) > 1 else \
        [(w_norms[0].dtype, range(len(w_norms)))]
    out: list[torch.Tensor] = [w_norms[0]] * len(w_norms)
    for dtype, idx in kinds:
        ws, gs = torch.stack([w_norms[i] for i in idx]), torch.stack([g_norms[i] for i in idx])
        if device.type == "cpu":
            rs = torch.tensor([_trust_float(w, g, group) for w, g in zip(ws.tolist(), gs.tolist())], dtype=dtype)
        else:
            rs = _trust(ws, gs, group)
        if len(kinds) == 1:
            return list(rs.unbind())
        for i, r in zip(idx, rs.unbind()):
            out[i] = r
    return out


def _trust_float(w: float, g: float, group: dict[str, Any]) -> float:
    denom = g + group["weight_decay"] * w
    return group["trust_coefficient"] * w / denom if w > 0.0 and denom > 0.0 else 1.0  # 1 for 0 or NaN norms


def _trust(w_norm: torch.Tensor, g_norm: torch.Tensor, group: dict[str, Any]) -> torch.Tensor:
    denom = g_norm + group["weight_decay"] * w_norm
    ok = (w_norm > 0) & (denom > 0)
    one = torch.ones_like(w_norm)
    return torch.where(ok, group["trust_coefficient"] * w_norm / torch.where(ok, denom, one), one)


def _lars_foreach_group(params: list[torch.Tensor], grads: list[torch.Tensor], bufs: list[torch.Tensor],
                        group: dict[str, Any], trust: bool) -> None:
    # all trust ratios at once (two multi-tensor norms), then the update run by run
    ratios: Sequence[torch.Tensor] = ()
    if trust:
        ratios = _ratios(torch._foreach_norm(params), torch._foreach_norm(grads), group)
    for a, b in _run_bounds(params):
        _lars_foreach(params[a:b], grads[a:b], bufs[a:b], ratios[a:b], group, trust)


def _lars_single_group(params: list[torch.Tensor], grads: list[torch.Tensor], bufs: list[torch.Tensor],
                       group: dict[str, Any], trust: bool) -> None:
    if not trust:
        _lars_single(params, grads, bufs, (), group, trust)
    elif params[0].device.type == "cpu":
        # tensor by tensor: the norms, the ratio, the update, while the tensor is in the cache
        for i, (p, g) in enumerate(zip(params, grads)):
            r = _trust_float(float(torch.linalg.vector_norm(p)), float(torch.linalg.vector_norm(g)), group)
            _lars_single([p], [g], bufs[i:i + 1], [torch.tensor(r, dtype=p.dtype)], group, trust)
    else:
        ratios = _ratios([torch.linalg.vector_norm(p) for p in params], [torch.linalg.vector_norm(g) for g in grads],
                         group)
        _lars_single(params, grads, bufs, ratios, group, trust)


def _lars_single(params: list[torch.Tensor], grads: list[torch.Tensor], bufs: list[torch.Tensor],
                 ratios: Sequence[torch.Tensor], group: dict[str, Any], trust: bool) -> None:
    """The per-tensor loop: the operations of :func:`_lars_foreach`, one tensor at a time (identical results)."""
    lr, mom, damp, wd, nesterov = (group["lr"], group["momentum"], group["dampening"], group["weight_decay"],
                                   group["nesterov"])
    for i, (p, g) in enumerate(zip(params, grads)):
        if trust:
            r = ratios[i]
            if mom > 0.0:
                buf = bufs[i]
                buf.mul_(mom).addcmul_(g, r, value=1.0 - damp)
                if wd != 0.0:
                    buf.addcmul_(p, r, value=(1.0 - damp) * wd)
                if not nesterov:
                    p.add_(buf, alpha=-lr)
                    continue
            if wd != 0.0:
                p.addcmul_(p, r, value=-lr * wd)
            p.addcmul_(g, r, value=-lr)
            if mom > 0.0:
                p.add_(bufs[i], alpha=-lr * mom)
        elif mom > 0.0:
            buf = bufs[i]
            buf.mul_(mom).add_(g, alpha=1.0 - damp)
            if nesterov:  # g + m buf formed first, as the reference does (excluded tensors are small vectors)
                p.add_(torch.add(g, buf, alpha=mom), alpha=-lr)
            else:
                p.add_(buf, alpha=-lr)
        else:
            p.add_(g, alpha=-lr)


def _lars_foreach(params: list[torch.Tensor], grads: list[torch.Tensor], bufs: list[torch.Tensor],
                  ratios: Sequence[torch.Tensor], group: dict[str, Any], trust: bool) -> None:
    # in place: no tensor of a parameter's size is allocated
    lr, mom, damp, wd, nesterov = (group["lr"], group["momentum"], group["dampening"], group["weight_decay"],
                                   group["nesterov"])
    if trust:
        rs = list(ratios)
        if mom > 0.0:
            torch._foreach_mul_(bufs, mom)
            torch._foreach_addcmul_(bufs, grads, rs, value=1.0 - damp)
            if wd != 0.0:
                torch._foreach_addcmul_(bufs, params, rs, value=(1.0 - damp) * wd)
            if not nesterov:
                torch._foreach_add_(params, bufs, alpha=-lr)
                return
        if wd != 0.0:
            torch._foreach_addcmul_(params, params, rs, value=-lr * wd)
        torch._foreach_addcmul_(params, grads, rs, value=-lr)
        if mom > 0.0:
            torch._foreach_add_(params, bufs, alpha=-lr * mom)
    elif mom > 0.0:
        torch._foreach_mul_(bufs, mom)
        torch._foreach_add_(bufs, grads, alpha=1.0 - damp)
        if nesterov:  # g + m buf formed first, as the reference does (excluded tensors are small vectors)
            torch._foreach_add_(params, torch._foreach_add(grads, bufs, alpha=mom), alpha=-lr)
        else:
            torch._foreach_add_(params, bufs, alpha=-lr)
    else:
        torch._foreach_add_(params, grads, alpha=-lr)
