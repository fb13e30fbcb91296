"""Weight initialisation: one scheme over a whole model, Keras-style variance scaling, and LSUV.

* :func:`init_model` applies one named scheme to the weight of every Linear / Conv layer and zeros their
  biases. The named schemes are torch's ``nn.init`` functions (Glorot & Bengio 2010; He et al. 2015;
  Saxe et al. 2014 for orthogonal) plus LeCun normal N(0, 1/fan_in) (LeCun et al. 1998; the init SELU needs,
  Klambauer et al. 2017) and :func:`variance_scaling_`.
* :func:`variance_scaling_` is Keras' ``VarianceScaling``: Var(w) = scale / n, n = fan_in, fan_out or their
  mean, drawn from a truncated normal, a normal or a uniform distribution.
* :func:`lsuv_init_` is layer-sequential unit-variance init (Mishkin & Matas 2016, ICLR, "All you need is a
  good init"): orthogonal init, then rescale each layer in forward order until its output variance on a batch
  is 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from tricklab.layers.spec import LayerSpec

__all__ = ["INIT_SCHEMES", "LAYER_SPECS", "TRUNC_NORMAL_STD_CORRECTION", "fans", "init_model", "is_weight_layer",
           "lecun_normal_", "lsuv_init_", "variance_scaling_", "weight_layers"]

#: Std of a standard normal truncated to [-2, 2]: sqrt(1 - 4 phi(2) / (2 Phi(2) - 1)) = 0.8796256610342398.
#: Keras divides the target std by it so the truncated draw has the requested variance.
TRUNC_NORMAL_STD_CORRECTION = 0.87962566103423978

_MODES = ("fan_in", "fan_out", "fan_avg")
_DISTRIBUTIONS = ("truncated_normal", "normal", "uniform")


def fans(w: Tensor) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight ``(out, in, *kernel)``: in * prod(kernel) and out * prod(kernel)
    (the convention of torch and Keras; a (out, in) linear weight has fan_in = in, fan_out = out)."""
    if w.dim() < 2:
        raise ValueError(f"fan-in and fan-out need a weight with at least 2 dims (out, in, ...), got "
                         f"{tuple(w.shape)}; biases are not initialised with fan-based schemes")
    receptive = math.prod(w.shape[2:])
    return w.shape[1] * receptive, w.shape[0] * receptive


@torch.no_grad()
def variance_scaling_(w: Tensor, scale: float = 1.0, mode: str = "fan_in",
                      distribution: str = "truncated_normal", generator: torch.Generator | None = None) -> Tensor:
    """Fill ``w`` in place so that Var(w) = scale / n (Keras ``VarianceScaling``); returns ``w``.

    n = fan_in, fan_out or (fan_in + fan_out) / 2 for ``mode`` = fan_in / fan_out / fan_avg.
    ``distribution``:
      * ``truncated_normal``: N(0, sigma^2) truncated at +-2 sigma with sigma = sqrt(scale / n) / 0.8796...
        (the truncation shrinks the std by that factor, so the result has variance scale / n);
      * ``normal``: N(0, scale / n);
      * ``uniform``: U(-a, a), a = sqrt(3 scale / n) (Var U(-a, a) = a^2 / 3).
    scale = 1, fan_in, normal is LeCun normal; scale = 2, fan_in is He; scale = 1, fan_avg, uniform is Glorot.
    """
    if not isinstance(w, Tensor):
        raise TypeError(f"variance_scaling_ expects a torch.Tensor, got {type(w).__name__}")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
        raise ValueError(f"variance_scaling_ scale must be a positive number, got {scale!r}")
    if mode not in _MODES:
        raise ValueError(f"variance_scaling_ mode must be one of {_MODES}, got {mode!r}")
    if distribution not in _DISTRIBUTIONS:
        raise ValueError(f"variance_scaling_ distribution must be one of {_DISTRIBUTIONS}, got {distribution!r}")
    fan_in, fan_out = fans(w)
    n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[mode]
    var = scale / max(1.0, n)  # max(1, n) as Keras: an empty dimension must not divide by zero
    if distribution == "truncated_normal":
        std = math.sqrt(var) / TRUNC_NORMAL_STD_CORRECTION
        return nn.init.trunc_normal_(w, 0.0, std, -2.0 * std, 2.0 * std, generator=generator)
    if distribution == "normal":
        return nn.init.normal_(w, 0.0, math.sqrt(var), generator=generator)
    limit = math.sqrt(3.0 * var)
    return nn.init.uniform_(w, -limit, limit, generator=generator)


def lecun_normal_(w: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """LeCun normal: w ~ N(0, 1 / fan_in) (untruncated, as in the SELU paper, Klambauer et al. 2017).
    Keras' ``lecun_normal`` truncates; use ``variance_scaling_(w, 1, "fan_in", "truncated_normal")`` for that."""
    return variance_scaling_(w, 1.0, "fan_in", "normal", generator=generator)


def is_weight_layer(m: nn.Module) -> bool:
    """A Linear or a convolution (Conv1d/2d/3d, transposed ones, and subclasses such as WSConv2d)."""
    return isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)) and isinstance(getattr(m, "weight", None), Tensor)


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every Linear / Conv layer in ``model``, in registration order."""
    return [(n, m) for n, m in model.named_modules() if is_weight_layer(m)]


# scheme -> (function(weight, generator, **kw), accepted keyword arguments)
INIT_SCHEMES: dict[str, tuple[Callable[..., Tensor], frozenset[str]]] = {
    "xavier_uniform": (lambda w, g, gain=1.0: nn.init.xavier_uniform_(w, gain=gain, generator=g),
                       frozenset({"gain"})),
    "xavier_normal": (lambda w, g, gain=1.0: nn.init.xavier_normal_(w, gain=gain, generator=g), frozenset({"gain"})),
    # torch's defaults (a=0, fan_in, leaky_relu -> gain sqrt(2)): He et al. 2015 for ReLU networks
    "kaiming_uniform": (lambda w, g, a=0.0, mode="fan_in", nonlinearity="leaky_relu":
                        nn.init.kaiming_uniform_(w, a=a, mode=mode, nonlinearity=nonlinearity, generator=g),
                        frozenset({"a", "mode", "nonlinearity"})),
    "kaiming_normal": (lambda w, g, a=0.0, mode="fan_in", nonlinearity="leaky_relu":
                       nn.init.kaiming_normal_(w, a=a, mode=mode, nonlinearity=nonlinearity, generator=g),
                       frozenset({"a", "mode", "nonlinearity"})),
    "orthogonal": (lambda w, g, gain=1.0: nn.init.orthogonal_(w, gain=gain, generator=g), frozenset({"gain"})),
    "lecun_normal": (lambda w, g: lecun_normal_(w, generator=g), frozenset()),
    "variance_scaling": (lambda w, g, scale=1.0, mode="fan_in", distribution="truncated_normal":
                         variance_scaling_(w, scale, mode, distribution, generator=g),
                         frozenset({"scale", "mode", "distribution"})),
}


@torch.no_grad()
def init_model(model: nn.Module, scheme: str, generator: torch.Generator | None = None, **kw: Any) -> nn.Module:
    """Initialise every Linear / Conv weight of ``model`` with ``scheme`` and set their biases to 0.

    Args:
        scheme: one of ``INIT_SCHEMES`` (xavier_uniform, xavier_normal, kaiming_uniform, kaiming_normal,
            orthogonal, lecun_normal, variance_scaling) or ``"default"`` (each layer's own
            ``reset_parameters()``: torch's default init, biases included).
        generator: optional RNG for reproducible draws without touching the global one.
        kw: the scheme's arguments (``gain=`` for xavier/orthogonal; ``a=, mode=, nonlinearity=`` for kaiming;
            ``scale=, mode=, distribution=`` for variance_scaling).
    Other layers (norms, embeddings) are left alone. Returns ``model``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"init_model expects an nn.Module, got {type(model).__name__}")
    if not isinstance(scheme, str):
        raise TypeError(f"init_model scheme must be a string, got {scheme!r}")
    key = scheme.lower()
    layers = weight_layers(model)
    if key == "default":
        if kw:
            raise TypeError(f"init scheme 'default' takes no arguments, got {sorted(kw)}")
        for _, m in layers:
            m.reset_parameters()
        return model
    if key not in INIT_SCHEMES:
        raise ValueError(f"unknown init scheme {scheme!r}; choose one of default, {', '.join(INIT_SCHEMES)}")
    fn, accepted = INIT_SCHEMES[key]
    extra = sorted(set(kw) - accepted)
    if extra:
        raise TypeError(f"init scheme {key!r} does not accept {extra}; it accepts {sorted(accepted) or 'nothing'}")
    for _, m in layers:
        fn(m.weight, generator, **kw)
        if getattr(m, "bias", None) is not None:
            nn.init.zeros_(m.bias)
    return model


# ------------------------------------------------------------------------------------------------- LSUV
class _StopForward(Exception):
    """Raised by the LSUV hook once it has the layer's output: the rest of the network need not run."""


def _run_to(model: nn.Module, layer: nn.Module, x: Any) -> Tensor:
    """Run ``model(x)`` only up to ``layer`` and return that layer's output."""
    captured: list[Tensor] = []

    def hook(_m: nn.Module, _inp: Any, out: Any) -> None:
        captured.append(out[0] if isinstance(out, (tuple, list)) else out)
        raise _StopForward

    handle = layer.register_forward_hook(hook)
    try:
        model(x)
    except _StopForward:
        pass
    finally:
        handle.remove()
    if not captured:
        raise ValueError(f"LSUV: layer {type(layer).__name__} was not called by model(x); lsuv_init_ needs every "
                         f"Linear/Conv layer to be used in the forward pass")
    return captured[0]


@torch.no_grad()
def lsuv_init_(model: nn.Module, x: Any, tol: float = 0.1, max_iters: int = 10, orthogonal: bool = True,
               generator: torch.Generator | None = None) -> list[dict[str, Any]]:
    """Layer-sequential unit-variance init (Mishkin & Matas 2016, Algorithm 1), in place.

    1. Orthogonal init of every Linear / Conv weight (Saxe et al. 2014), biases 0 (skip with
       ``orthogonal=False`` to keep the current weights).
    2. For each such layer in forward order: compute its output B on the batch ``x`` (the network runs only up
       to that layer); while |Var(B) - 1| >= tol and fewer than ``max_iters`` rescalings: W <- W / sqrt(Var(B)).

    The model runs in eval mode (dropout off, BatchNorm running statistics left untouched) and is put back in
    its previous mode. Var is over every element of the layer's output. With zero biases one rescaling reaches
    variance 1 exactly; non-zero biases need a few.

    Returns one dict per layer, in forward order: ``{"layer": name, "iterations": rescalings done,
    "variance": Var(B) after them, "converged": |Var - 1| < tol}``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"lsuv_init_ expects an nn.Module, got {type(model).__name__}")
    if not tol > 0:
        raise ValueError(f"lsuv_init_ tol must be > 0, got {tol!r}")
    if isinstance(max_iters, bool) or not isinstance(max_iters, int) or max_iters < 1:
        raise ValueError(f"lsuv_init_ max_iters must be a positive int, got {max_iters!r}")
    layers = weight_layers(model)
    if not layers:
        raise ValueError("lsuv_init_: the model has no Linear or Conv layer to initialise")
    was_training = model.training
    model.eval()
    try:
        if orthogonal:
            for _, m in layers:
                nn.init.orthogonal_(m.weight, generator=generator)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        # forward order: the order the hooks fire in, which may differ from registration order
        order: list[nn.Module] = []
        handles = [m.register_forward_hook(lambda mod, _i, _o: order.append(mod) if mod not in order else None)
                   for _, m in layers]
        try:
            model(x)
        finally:
            for h in handles:
                h.remove()
        names = {id(m): n for n, m in layers}
        results: list[dict[str, Any]] = []
        for m in order:
            iterations = 0
            var = float(_run_to(model, m, x).float().var(correction=0))
            while abs(var - 1.0) >= tol and iterations < max_iters:
                if not (math.isfinite(var) and var > 0):
                    break  # a dead (constant) or overflowing layer cannot be rescaled to unit variance
                m.weight.mul_(1.0 / math.sqrt(var))  # Var(W x) scales with the square of W's scale
                iterations += 1
                var = float(_run_to(model, m, x).float().var(correction=0))
            results.append({"layer": names[id(m)] or type(m).__name__, "iterations": iterations, "variance": var,
                            "converged": abs(var - 1.0) < tol})
        return results
    finally:
        model.train(was_training)


LAYER_SPECS: tuple[LayerSpec, ...] = ()  # initialisers act on other layers; this family defines no nn.Module
