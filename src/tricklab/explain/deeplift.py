"""DeepLIFT with the Rescale rule (Shrikumar, Greenside & Kundaje 2017) and DeepLIFT-SHAP (Lundberg & Lee 2017).

DeepLIFT explains ``S_c(x) - S_c(x')`` against a reference ``x'``. Every unit gets a *multiplier*
``m = Delta y / Delta x`` (the difference of its output between input and reference over the difference of its
input); multipliers compose by the chain rule (the paper's eq. 3), and the attribution is
``C_i = (x_i - x'_i) * m_i`` with ``m_i`` the multiplier of input i to the explained logit. They sum to the
difference: ``sum_i C_i = S_c(x) - S_c(x')`` (summation-to-delta, eq. 1).

How it runs: input and reference go through the model as one batch ``[x; x']``; a
``torch.overrides.TorchFunctionMode`` (active only during that forward pass, no hooks) replaces each
non-linear call by the same value with its backward replaced by the multiplier, so one ``autograd.grad`` gives
``m_i``. Rules:

* linear operations (``conv``, ``linear``, ``batch_norm`` in evaluation mode, average pooling, sums, reshapes,
  dropout in evaluation mode): the multiplier is the Jacobian, i.e. the ordinary gradient;
* element-wise non-linearities ``relu``, ``leaky_relu``, ``elu``, ``gelu``, ``silu``, ``sigmoid``, ``tanh``,
  ``softplus`` (as functions, ``Tensor`` methods or the modules that call them): the Rescale rule (sec. 3.5.1)
  ``m = (f(x) - f(x')) / (x - x')``, and the local gradient ``f'(x)`` where ``|x - x'| < eps``;
* ``max_pool1d`` / ``max_pool2d`` (functional or ``nn.MaxPool1d/2d``): each window's output difference
  ``y - y'`` goes to the winning element: all of it to the argmax of the input when ``y >= y'``, else to the
  argmax of the reference (split into ``max(y, y') - y'`` and ``y - max(y, y')``), then divided by each
  element's ``Delta x`` (the local gradient where ``|Delta x| < eps``). This is the rule captum uses for
  ``nn.MaxPool`` modules, so results agree with ``captum.attr.DeepLift``.

Everything else that is not linear raises :class:`~tricklab.errors.UserError` naming the operation instead of
silently falling back to gradients: softmax / log_softmax, layer / group / instance norm, batch norm in training
mode, adaptive max pooling, 3-D max pooling, and products, quotients or matrix products of two data-dependent
tensors (attention, gating). Use :func:`~tricklab.explain.gradient_shap` or
:func:`~tricklab.explain.integrated_gradients` for such models. In-place activations (``nn.ReLU(inplace=True)``)
are computed out of place; models that use the returned value are unaffected.

DeepLIFT-SHAP (Lundberg & Lee 2017, sec. 4.2 "Deep SHAP"): the mean of the DeepLIFT attributions over a set of
references ``x'_1..x'_N`` drawn from a background distribution, approximating SHAP values with the expected model
output as the base value: ``sum_i phi_i = S_c(x) - mean_j S_c(x'_j)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from tricklab.errors import UserError
from tricklab.explain._common import (
    TargetLike,
    baseline_distribution,
    broadcast_baseline,
    check_batch_size,
    check_inputs,
    check_model,
    eval_mode,
    forward_scores,
    logits_of,
    per_example_sum,
    resolve_target,
    target_scores,
)

__all__ = ["deeplift", "deeplift_shap", "SUPPORTED_NONLINEAR", "RescaleMode"]

_EPS = 1e-10


def _functions(*names: str, modules: tuple[Any, ...] = (torch, torch.Tensor, F)) -> dict[Any, str]:
    out: dict[Any, str] = {}
    for name in names:
        for mod in modules:
            fn = getattr(mod, name, None)
            if fn is not None:
                out[fn] = name[:-1] if name.endswith("_") and not name.endswith("__") else name
    return out


# element-wise non-linearities: the callable that computes them out of place (extra args passed through)
_ELEMENTWISE_IMPL: dict[str, Callable[..., Tensor]] = {
    "relu": F.relu, "leaky_relu": F.leaky_relu, "elu": F.elu, "gelu": F.gelu, "silu": F.silu,
    "sigmoid": torch.sigmoid, "tanh": torch.tanh, "softplus": F.softplus,
}
_ELEMENTWISE = _functions(*_ELEMENTWISE_IMPL, *(f"{n}_" for n in _ELEMENTWISE_IMPL))
_MAXPOOL = {F.max_pool1d: 1, F.max_pool2d: 2, torch.max_pool1d: 1, torch.max_pool2d: 2}
_ALWAYS_UNSUPPORTED = _functions("softmax", "log_softmax", "layer_norm", "group_norm", "instance_norm",
                                 "adaptive_max_pool1d", "adaptive_max_pool2d", "max_pool3d",
                                 "scaled_dot_product_attention", "rms_norm")
_PRODUCTS = _functions("mul", "div", "matmul", "bmm", "true_divide", "__mul__", "__rmul__", "__truediv__",
                       "__matmul__", "mul_", "div_")

#: what the Rescale rule covers (see the module docstring); linear operations need no rule
SUPPORTED_NONLINEAR: tuple[str, ...] = (*sorted(_ELEMENTWISE_IMPL), "max_pool1d", "max_pool2d")


def _tensors(obj: Any) -> list[Tensor]:
    """The tensors in a call's arguments or results (nested tuples, lists and dicts)."""
    if isinstance(obj, Tensor):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [t for o in obj for t in _tensors(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors(o)]
    return []


def _pool_signature(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
                    ceil_mode: bool = False, return_indices: bool = False) -> None:
    """The argument layout of ``F.max_pool1d`` / ``F.max_pool2d`` (used only to bind a call's arguments)."""


_POOL_SIG = inspect.signature(_pool_signature)


def _local_derivative(fn: Callable[..., Tensor], x: Tensor, args: tuple, kwargs: dict) -> Tensor:
    """``f'(x)`` element-wise, by autograd on a detached copy."""
    with torch.enable_grad():
        xd = x.detach().requires_grad_(True)
        (d,) = torch.autograd.grad(fn(xd, *args, **kwargs).sum(), xd)
    return d


class _MaxPoolRescale(torch.autograd.Function):
    """max pooling whose backward is the DeepLIFT max-pool rule (module docstring) for a batch ``[x; x']``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, dim: int, kernel_size: Any, stride: Any, padding: Any, dilation: Any,
                ceil_mode: bool, eps: float) -> Tensor:
        pool = F.max_pool1d if dim == 1 else F.max_pool2d
        y, idx = pool(x, kernel_size, stride, padding, dilation, ceil_mode, True)
        ctx.save_for_backward(x, y, idx)
        ctx.eps = eps
        return y

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:
        x, y, idx = ctx.saved_tensors
        n = x.shape[0] // 2

        def unpool(values: Tensor, indices: Tensor) -> Tensor:
            # scatter each window's value onto its argmax element (sums where windows overlap)
            flat = values.new_zeros(*values.shape[:2], x[0, 0].numel())
            flat.scatter_add_(2, indices.flatten(2), values.flatten(2))
            return flat.view(*values.shape[:2], *x.shape[2:])

        y_in, y_ref = y[:n], y[n:]
        y_max = torch.maximum(y_in, y_ref)
        share = unpool(g[:n] * (y_max - y_ref), idx[:n]) + unpool(g[n:] * (y_in - y_max), idx[n:])  # (n, C, ...)
        dx = x[:n] - x[n:]
        small = dx.abs() < ctx.eps
        m = share / torch.where(small, torch.ones_like(dx), dx)
        plain = unpool(g, idx)  # the ordinary max-pool gradient of each half, used where Delta x ~ 0
        out = torch.where(torch.cat([small, small]), plain, torch.cat([m, m]))
        return out, None, None, None, None, None, None, None


class RescaleMode(TorchFunctionMode):
    """Active during DeepLIFT's forward pass over ``[x; x']`` (batch 2n): non-linear calls on data get the Rescale
    multipliers as their backward; unsupported non-linear calls on data raise. See the module docstring.

    "Data" are the tensors computed from the input batch: the mode tracks every tensor an operation produces from
    a tracked one, so parameters and what is computed from parameters alone (``torch.sigmoid(self.gate)``) are
    never mistaken for activations, whatever their shape.
    """

    def __init__(self, pair: Tensor, eps: float = _EPS) -> None:
        super().__init__()
        self.eps = eps
        # strong references for the length of one forward pass (autograd keeps these activations alive anyway),
        # so an id cannot be reused by another tensor while the mode is active
        self._tracked: dict[int, Tensor] = {id(pair): pair}

    def _data(self, t: Any) -> bool:
        return isinstance(t, Tensor) and id(t) in self._tracked

    def _track(self, out: Any) -> Any:
        for t in _tensors(out):
            self._tracked[id(t)] = t
        return out

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = dict(kwargs or {})
        if not any(self._data(t) for t in _tensors((args, kwargs))):
            return func(*args, **kwargs)  # nothing computed from the input: parameters, constants
        name = _ELEMENTWISE.get(func)
        if name is not None and args and self._data(args[0]):
            kwargs.pop("inplace", None)
            return self._track(self._rescale(_ELEMENTWISE_IMPL[name], args[0], args[1:], kwargs))
        if func in _MAXPOOL and args and self._data(args[0]):
            bound = _POOL_SIG.bind(*args, **kwargs)
            bound.apply_defaults()
            a = bound.arguments
            if a["return_indices"]:
                raise UserError("deeplift: max pooling with return_indices=True is not supported")
            stride = a["stride"] if a["stride"] not in (None, [], ()) else a["kernel_size"]
            return self._track(_MaxPoolRescale.apply(a["input"], _MAXPOOL[func], a["kernel_size"], stride,
                                                     a["padding"], a["dilation"], a["ceil_mode"], self.eps))
        if func in _ALWAYS_UNSUPPORTED:
            raise self._unsupported(_ALWAYS_UNSUPPORTED[func])
        if func is F.batch_norm and (kwargs.get("training") or (len(args) > 5 and args[5])):
            raise self._unsupported("batch_norm in training mode")
        if func in _PRODUCTS and len(args) >= 2 and self._data(args[0]) and self._data(args[1]):
            raise self._unsupported(f"{_PRODUCTS[func]} of two data-dependent tensors")
        return self._track(func(*args, **kwargs))

    def _rescale(self, fn: Callable[..., Tensor], x: Tensor, args: tuple, kwargs: dict) -> Tensor:
        y = fn(x, *args, **kwargs)
        with torch.no_grad():
            n = x.shape[0] // 2  # rows [0, n) are inputs, [n, 2n) their references
            dx, dy = x[:n] - x[n:], y[:n] - y[n:]
            small = dx.abs() < self.eps
            m = dy / torch.where(small, torch.ones_like(dx), dx)
            local = _local_derivative(fn, x, args, kwargs)
            mult = torch.where(torch.cat([small, small]), local, torch.cat([m, m]))
        # value y, gradient mult: y + mult * (x - stop_grad(x)) has the same value and d/dx = mult
        return y.detach() + mult * (x - x.detach())

    @staticmethod
    def _unsupported(what: str) -> UserError:
        return UserError(f"deeplift: the model calls {what}, for which the Rescale rule is not implemented "
                         f"(supported non-linearities: {', '.join(SUPPORTED_NONLINEAR)}); explain this model with "
                         f"gradient_shap or integrated_gradients instead")


def _multipliers(model: nn.Module, x: Tensor, ref: Tensor, target: Tensor, bs: int, method: str) -> Tensor:
    """DeepLIFT multipliers ``m`` (shaped like ``x``) of the target logit for each (input, reference) row pair."""
    out = []
    for xc, rc, tc in zip(x.split(bs), ref.split(bs), target.split(bs)):
        pair = torch.cat([xc, rc]).detach().requires_grad_(True)
        with torch.enable_grad():
            with RescaleMode(pair):
                logits = logits_of(model, pair, method)
            # both halves carry the same output gradient, as the max-pool rule expects
            s = target_scores(logits, torch.cat([tc, tc]), method)
            (g,) = torch.autograd.grad(s.sum(), pair)
        out.append(g[: xc.shape[0]])
    return torch.cat(out)


def deeplift(model: nn.Module, inputs: Tensor, target: TargetLike = None, *, baselines: Tensor | float | None = None,
             return_residual: bool = False, batch_size: int | None = None) -> Tensor | tuple[Tensor, Tensor]:
    """DeepLIFT (Rescale rule) attributions of ``inputs`` (``(B, *shape)``) against one reference per example
    (``baselines``: zeros by default, a number, one example or ``(B, *shape)``).

    ``return_residual`` also returns ``sum_i C_i - (S_c(x) - S_c(x'))`` per example, 0 up to rounding.
    """
    method = "deeplift"
    model, x, bs = check_model(model, method), check_inputs(inputs, method), check_batch_size(batch_size, method)
    ref = broadcast_baseline(baselines, x, method)
    with eval_mode(model):
        t = resolve_target(model, x, target, method, bs)
        attr = (x - ref) * _multipliers(model, x, ref, t, max(1, bs // 2), method)
        if not return_residual:
            return attr
        delta = forward_scores(model, x, t, method, bs) - forward_scores(model, ref, t, method, bs)
    return attr, per_example_sum(attr) - delta


def deeplift_shap(model: nn.Module, inputs: Tensor, target: TargetLike = None, *,
                  baselines: Tensor | float | None = None, return_residual: bool = False,
                  batch_size: int | None = None) -> Tensor | tuple[Tensor, Tensor]:
    """DeepLIFT-SHAP: DeepLIFT against every reference in ``baselines`` (``(N, *shape)``, a background sample;
    zeros when None), averaged over the references. Shaped like ``inputs``.

    ``return_residual`` also returns ``sum_i phi_i - (S_c(x) - mean_j S_c(x'_j))`` per example.
    """
    method = "deeplift_shap"
    model, x, bs = check_model(model, method), check_inputs(inputs, method), check_batch_size(batch_size, method)
    refs = baseline_distribution(baselines, x, method)
    b, nb, shape = x.shape[0], refs.shape[0], x.shape[1:]
    xx = x.repeat_interleave(nb, 0)  # (B*N, ...): example i paired with every reference, example-major
    rr = refs.repeat(b, *([1] * len(shape)))
    with eval_mode(model):
        t = resolve_target(model, x, target, method, bs)
        tt = t.repeat_interleave(nb)
        attr = ((xx - rr) * _multipliers(model, xx, rr, tt, max(1, bs // 2), method)).reshape(b, nb, *shape).mean(1)
        if not return_residual:
            return attr
        expected = forward_scores(model, rr, tt, method, bs).reshape(b, nb).mean(1)
        delta = forward_scores(model, x, t, method, bs) - expected
    return attr, per_example_sum(attr) - delta
