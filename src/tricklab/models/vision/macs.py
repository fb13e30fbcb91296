"""Multiply-accumulate (MAC) counts of a forward pass, counted at the operator level.

:func:`count_macs` runs the model once under a ``TorchDispatchMode`` that sees every ATen operator after
autograd and composite ops are decomposed, and adds the MACs of the operators that do the arithmetic:

* convolution: out.numel() x (C_in / groups) x prod(kernel) (transposed: in.numel() x (C_out / groups) x
  prod(kernel)); a depthwise conv costs C x H' x W' x k^2;
* mm / addmm (n, k) @ (k, m): n k m; bmm / baddbmm (b, n, k) @ (b, k, m): b n k m;
* scaled dot-product attention q (..., T, d), k (..., S, d), v (..., S, d_v): T S d (scores) + T S d_v (mixing),
  per batch and head.

Bias additions, norms, activations, softmax, pooling and resizing are not counted (the usual convention: they are
O(size of the activations), not of the weights). The count covers what actually runs, so it follows whatever
the model does at that input size (padding included).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["MacCounter", "count_macs"]

aten = torch.ops.aten


def _conv(args: tuple[Any, ...], out: Tensor) -> int:
    x, w = args[0], args[1]
    transposed = bool(args[6]) if len(args) > 6 else False
    k = math.prod(w.shape[2:])
    if transposed:  # weight (C_in, C_out / groups, *k): every input element is spread over C_out/groups * k outputs
        return x.numel() * w.shape[1] * k
    return out.numel() * w.shape[1] * k  # weight (C_out, C_in / groups, *k)


def _mm(args: tuple[Any, ...], out: Tensor) -> int:
    a, b = args[-2], args[-1]  # addmm(bias, a, b) / mm(a, b)
    return a.shape[0] * a.shape[1] * b.shape[1]


def _bmm(args: tuple[Any, ...], out: Tensor) -> int:
    a, b = args[-2], args[-1]
    return a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]


def _sdpa(args: tuple[Any, ...], out: Any) -> int:
    q, k, v = args[0], args[1], args[2]
    batch = math.prod(q.shape[:-2])
    T, d, S, dv = q.shape[-2], q.shape[-1], k.shape[-2], v.shape[-1]
    return batch * T * S * (d + dv)


_RULES: dict[Any, Any] = {
    aten.convolution.default: _conv,
    aten.mm.default: _mm,
    aten.addmm.default: _mm,
    aten.bmm.default: _bmm,
    aten.baddbmm.default: _bmm,
}
for _name in ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
              "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention"):
    _op = getattr(aten, _name, None)
    if _op is not None:
        _RULES[_op.default] = _sdpa


class MacCounter(TorchDispatchMode):
    """Adds up the MACs of the counted operators run while it is active; ``by_op`` splits them by operator."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0
        self.by_op: dict[str, int] = defaultdict(int)

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        rule = _RULES.get(func)
        if rule is not None:
            n = int(rule(args, out))
            self.total += n
            self.by_op[str(func.overloadpacket.__name__)] += n
        return out


@torch.no_grad()
def count_macs(model: nn.Module, example: Tensor | tuple[Any, ...], *, per_example: bool = True) -> int:
    """MACs of one forward pass of ``model`` on ``example`` (a tensor or a tuple of inputs), in eval mode;
    divided by the batch size when ``per_example`` (the first dimension of the first input)."""
    inputs = example if isinstance(example, tuple) else (example,)
    was_training = model.training
    model.eval()
    try:
        with MacCounter() as counter:
            model(*inputs)
    finally:
        model.train(was_training)
    batch = inputs[0].shape[0] if per_example else 1
    return counter.total // batch
