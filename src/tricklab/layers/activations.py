"""Activation functions: torch's own, by name, plus the one torch lacks (Swish with a learnable beta).

Torch already ships ReLU, LeakyReLU, PReLU, ELU, SELU, SiLU (= Swish with beta = 1), GELU (exact and tanh
approximation) and Mish; they are exposed here unchanged (:data:`ACTIVATIONS`, :func:`get_activation`, and
:data:`LAYER_SPECS`). Only Swish with a free beta is written here (Ramachandran, Zoph & Le 2017, "Searching for
activation functions", arXiv:1710.05941):

    swish_beta(x) = x * sigmoid(beta * x)

beta = 1 is SiLU; beta -> inf tends to ReLU; beta = 0 gives x / 2. With ``learnable=True`` beta is a trainable
scalar (the paper's "Swish" as opposed to "Swish-1").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from tricklab.layers.spec import LayerSpec

__all__ = ["ACTIVATIONS", "LAYER_SPECS", "Swish", "activation_names", "canonical_activation", "get_activation", "swish"]


def swish(x: Tensor, beta: float | Tensor = 1.0) -> Tensor:
    """Swish: ``x * sigmoid(beta * x)`` (Ramachandran et al. 2017, eq. in sec. 4).

    Args:
        x: any shape.
        beta: a Python float or a tensor broadcastable to ``x`` (a 0-d parameter for the learnable variant).
    Derivatives (autograd computes them): d/dx = s + beta x s (1 - s), d/dbeta = x^2 s (1 - s), s = sigmoid(beta x).
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"swish expects a torch.Tensor, got {type(x).__name__}")
    if not isinstance(beta, (int, float, Tensor)) or isinstance(beta, bool):
        raise TypeError(f"swish beta must be a float or a tensor, got {type(beta).__name__}")
    if isinstance(beta, (int, float)) and beta == 1.0:
        return nn.functional.silu(x)  # torch's fused kernel for the beta = 1 case
    return x * torch.sigmoid(beta * x)


class Swish(nn.Module):
    """``x * sigmoid(beta * x)`` with a fixed or learnable scalar ``beta`` (Ramachandran et al. 2017).

    Args:
        beta: initial value (1.0 = SiLU).
        learnable: make ``beta`` a trainable 0-d parameter (it then receives d/dbeta = sum x^2 s (1 - s)).
    """

    def __init__(self, beta: float = 1.0, learnable: bool = False) -> None:
        super().__init__()
        if isinstance(beta, bool) or not isinstance(beta, (int, float)):
            raise TypeError(f"Swish beta must be a float, got {type(beta).__name__}")
        self.learnable = bool(learnable)
        if self.learnable:
            self.beta: float | nn.Parameter = nn.Parameter(torch.tensor(float(beta)))
        else:
            self.beta = float(beta)

    def forward(self, x: Tensor) -> Tensor:
        beta = self.beta
        if isinstance(beta, Tensor):
            beta = beta.to(x.dtype)  # a float32 beta must not upcast a half-precision activation
        return swish(x, beta)

    def extra_repr(self) -> str:
        beta = float(self.beta.detach()) if isinstance(self.beta, Tensor) else self.beta
        return f"beta={beta:g}, learnable={self.learnable}"


# name -> constructor(**kwargs). Torch's modules wherever torch has the function.
ACTIVATIONS: dict[str, Callable[..., nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "prelu": nn.PReLU,
    "elu": nn.ELU,
    "selu": nn.SELU,
    "silu": nn.SiLU,
    "swish": Swish,
    "gelu": nn.GELU,
    "gelu_tanh": lambda **kw: nn.GELU(approximate="tanh", **kw),
    "mish": nn.Mish,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
}
_ALIASES = {"leakyrelu": "leaky_relu", "swish1": "silu", "gelu_exact": "gelu", "none": "identity",
            "linear": "identity"}


def activation_names() -> list[str]:
    """The names :func:`get_activation` accepts (aliases excluded)."""
    return sorted(ACTIVATIONS)


def canonical_activation(name: str) -> str:
    """The registered name for ``name`` (case-, dash- and alias-insensitive); ValueError if unknown."""
    if not isinstance(name, str):
        raise TypeError(f"activation must be a name such as 'relu' or an nn.Module class, got {name!r}; "
                        f"names: {', '.join(activation_names())}")
    key = name.strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(activation_names())}")
    return key


def get_activation(name: str | type[nn.Module], **kwargs: Any) -> nn.Module:
    """A fresh activation module by name, so models can take ``activation="mish"``.

    Args:
        name: one of :func:`activation_names` (case- and dash-insensitive: ``"Leaky-ReLU"`` works), or an
            ``nn.Module`` subclass, instantiated with ``kwargs``.
        kwargs: passed to the constructor (``negative_slope=0.1`` for leaky_relu, ``beta=1.5, learnable=True``
            for swish, ``num_parameters=C`` for prelu, ...).
    A new instance every call: a PReLU or learnable Swish must not share its parameter between layers.
    """
    if isinstance(name, type) and issubclass(name, nn.Module):
        return name(**kwargs)
    key = canonical_activation(name)
    try:
        return ACTIVATIONS[key](**kwargs)
    except TypeError as exc:
        raise TypeError(f"activation {key!r} does not accept arguments {sorted(kwargs)}: {exc}") from None


def _vec(g: torch.Generator) -> tuple[Tensor, ...]:
    # (B, F) = (4, 8) standard normal: both signs, so PReLU's slope and Swish's beta get non-zero gradients
    return (torch.randn(4, 8, generator=g),)


def _img(g: torch.Generator) -> tuple[Tensor, ...]:
    return (torch.randn(2, 3, 4, 4, generator=g),)  # (B, C, H, W) for per-channel PReLU


LAYER_SPECS: tuple[LayerSpec, ...] = (
    LayerSpec("relu", "activations", nn.ReLU, _vec, "torch.nn.ReLU: max(0, x) (Nair & Hinton 2010)."),
    LayerSpec("leaky_relu", "activations", lambda: nn.LeakyReLU(0.1), _vec,
              "torch.nn.LeakyReLU: max(0, x) + slope * min(0, x) (Maas et al. 2013)."),
    LayerSpec("prelu", "activations", lambda: nn.PReLU(num_parameters=3), _img,
              "torch.nn.PReLU: leaky ReLU with a learned slope per channel (He et al. 2015)."),
    LayerSpec("elu", "activations", nn.ELU, _vec,
              "torch.nn.ELU: x if x > 0 else alpha (e^x - 1) (Clevert et al. 2016)."),
    LayerSpec("selu", "activations", nn.SELU, _vec,
              "torch.nn.SELU: scaled ELU, self-normalising (Klambauer et al. 2017)."),
    LayerSpec("silu", "activations", nn.SiLU, _vec, "torch.nn.SiLU: x * sigmoid(x) (Swish-1; Elfwing et al. 2018)."),
    LayerSpec("gelu", "activations", nn.GELU, _vec, "torch.nn.GELU: x * Phi(x), exact (Hendrycks & Gimpel 2016)."),
    LayerSpec("gelu_tanh", "activations", lambda: nn.GELU(approximate="tanh"), _vec,
              "torch.nn.GELU(approximate='tanh'): the tanh approximation of GELU."),
    LayerSpec("mish", "activations", nn.Mish, _vec, "torch.nn.Mish: x * tanh(softplus(x)) (Misra 2019)."),
    LayerSpec("swish", "activations", lambda: Swish(beta=1.5), _vec,
              "Swish x * sigmoid(beta x) with a fixed beta (Ramachandran et al. 2017)."),
    LayerSpec("swish_learnable", "activations", lambda: Swish(beta=1.0, learnable=True), _vec,
              "Swish with a trainable scalar beta (Ramachandran et al. 2017)."),
)
