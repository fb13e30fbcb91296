"""Normalisation layers and the ``norm="..."`` switch that the blocks in :mod:`tricklab.layers.conv` use.

Batch, layer, instance and group normalisation are torch's own modules (registered in :data:`LAYER_SPECS`
so the layer contract sweeps them). Written here, because torch lacks them:

* weight standardisation (Qiao, Wang, Liu, Shen & Yuille 2019, "Micro-Batch Training with Batch-Channel
  Normalization and Weight Standardization", arXiv:1903.10520): :func:`standardize_weight`, and the layers
  :class:`WSLinear`, :class:`WSConv1d`, :class:`WSConv2d` that convolve with the standardised weight;
* :func:`spectral_normed`, a thin helper over torch's ``torch.nn.utils.parametrizations.spectral_norm``
  (Miyato, Kataoka, Koyama & Yoshida 2018, ICLR).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from tricklab.layers.spec import LayerSpec

__all__ = ["LAYER_SPECS", "NORM_KINDS", "WSConv1d", "WSConv2d", "WSLinear", "make_norm", "spectral_normed",
           "standardize_weight"]

NORM_KINDS = ("batch", "layer", "instance", "group", "none")


def make_norm(kind: str, channels: int, dim: int = 2, groups: int = 8) -> nn.Module:
    """Normalisation over ``channels`` feature maps of a ``dim``-D convolution (dim 1 or 2).

    ``batch``: BatchNorm{dim}d; ``layer``: GroupNorm(1, C), i.e. layer norm over (C, *spatial) per example;
    ``instance``: GroupNorm(C, C), i.e. per-channel statistics per example (affine); ``group``: GroupNorm with
    ``min(groups, C)`` groups (C must divide evenly); ``none``: identity.
    """
    kind = str(kind).lower()
    if kind == "batch":
        return nn.BatchNorm1d(channels) if dim == 1 else nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    if kind == "instance":
        return nn.GroupNorm(channels, channels)
    if kind == "group":
        g = min(groups, channels)
        if channels % g:
            raise ValueError(f"norm='group': {channels} channels do not split into {g} groups; pass groups= that "
                             f"divides {channels}")
        return nn.GroupNorm(g, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; choose one of {', '.join(NORM_KINDS)}")


# ------------------------------------------------------------------------------------ weight standardisation
def standardize_weight(w: Tensor, eps: float = 1e-5) -> Tensor:
    """Standardise each output unit's weights over its fan-in (Qiao et al. 2019, eq. 5):

        W_hat[i, :] = (W[i, :] - mean_j W[i, j]) / sqrt(var_j W[i, j] + eps)

    ``w`` is ``(C_out, fan_in...)``: ``(out, in)`` for a linear layer, ``(C_out, C_in/groups, *kernel)`` for a
    convolution; mean and (biased) variance run over every dimension but the first. Differentiable: the
    gradient flows through the mean and the variance, as in the paper (that is what smooths the landscape).
    """
    if not isinstance(w, Tensor):
        raise TypeError(f"standardize_weight expects a torch.Tensor, got {type(w).__name__}")
    if w.dim() < 2:
        raise ValueError(f"standardize_weight needs a weight of shape (C_out, fan_in, ...), got {tuple(w.shape)}")
    if not eps > 0:
        raise ValueError(f"standardize_weight eps must be > 0 (it keeps a constant row finite), got {eps!r}")
    dims = tuple(range(1, w.dim()))
    # one fused pass for both moments; correction=0: the population variance of the fan-in
    var, mean = torch.var_mean(w, dim=dims, keepdim=True, correction=0)
    return (w - mean) * torch.rsqrt(var + eps)


class WSLinear(nn.Linear):
    """``nn.Linear`` whose forward uses the standardised weight: y = x W_hat^T + b (Qiao et al. 2019).

    Same constructor as ``nn.Linear`` plus ``eps``. ``self.weight`` stays the raw parameter; the optimiser
    updates it and the standardisation is recomputed each forward.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, eps: float = 1e-5,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.eps = float(eps)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, standardize_weight(self.weight, self.eps), self.bias)


class WSConv1d(nn.Conv1d):
    """``nn.Conv1d`` convolving with the standardised weight (per output channel over C_in/groups x k)."""

    def __init__(self, *args: object, eps: float = 1e-5, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.eps = float(eps)

    def forward(self, x: Tensor) -> Tensor:
        # _conv_forward is F.conv1d plus the padding_mode handling ("reflect", "circular", ...) of nn.Conv1d
        return self._conv_forward(x, standardize_weight(self.weight, self.eps), self.bias)


class WSConv2d(nn.Conv2d):
    """``nn.Conv2d`` convolving with the standardised weight (per output channel over C_in/groups x kh x kw).

    Meant to be followed by GroupNorm (the paper's GN + WS), e.g. ``WSConv2d(16, 32, 3, padding=1)``.
    """

    def __init__(self, *args: object, eps: float = 1e-5, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.eps = float(eps)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, standardize_weight(self.weight, self.eps), self.bias)


# -------------------------------------------------------------------------------------- spectral norm
def spectral_normed(module: nn.Module, name: str = "weight", n_power_iterations: int = 1, eps: float = 1e-12,
                    dim: int | None = None) -> nn.Module:
    """``module`` with ``name`` reparametrised as W / sigma(W) (Miyato et al. 2018, eq. 8), torch's
    ``spectral_norm`` parametrization: sigma is estimated by power iteration on the running vectors u, v,
    ``n_power_iterations`` per forward in train mode (frozen in eval mode). Returns ``module`` (changed in place).
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"spectral_normed expects an nn.Module, got {type(module).__name__}")
    weight = getattr(module, name, None)
    if not isinstance(weight, Tensor):
        raise ValueError(f"spectral_normed: {type(module).__name__} has no tensor attribute {name!r}; pass name= "
                         f"the weight to normalise")
    if isinstance(n_power_iterations, bool) or not isinstance(n_power_iterations, int) or n_power_iterations < 1:
        raise ValueError(f"spectral_normed: n_power_iterations must be a positive int, got {n_power_iterations!r}")
    return spectral_norm(module, name=name, n_power_iterations=n_power_iterations, eps=eps, dim=dim)


# ------------------------------------------------------------------------------------------------ specs
def _feat(g: torch.Generator) -> tuple[Tensor, ...]:
    return (torch.randn(4, 6, generator=g),)  # (B, F)


def _seq(g: torch.Generator) -> tuple[Tensor, ...]:
    return (torch.randn(4, 3, 10, generator=g),)  # (B, C, L)


def _img(g: torch.Generator) -> tuple[Tensor, ...]:
    return (torch.randn(4, 4, 5, 5, generator=g),)  # (B, C, H, W)


# Gradients: a normalised output sums to a constant in x, but the affine bias (and, for the layers whose
# output feeds the sum through a non-constant path, the weight) still receives finite gradients.
LAYER_SPECS: tuple[LayerSpec, ...] = (
    LayerSpec("batch_norm1d", "norms", lambda: nn.BatchNorm1d(6), _feat,
              "torch.nn.BatchNorm1d: per-feature batch statistics (Ioffe & Szegedy 2015)."),
    LayerSpec("batch_norm2d", "norms", lambda: nn.BatchNorm2d(4), _img,
              "torch.nn.BatchNorm2d: per-channel batch statistics (Ioffe & Szegedy 2015)."),
    LayerSpec("layer_norm", "norms", lambda: nn.LayerNorm(6), _feat,
              "torch.nn.LayerNorm: per-example statistics over the last dims (Ba et al. 2016)."),
    LayerSpec("instance_norm1d", "norms", lambda: nn.InstanceNorm1d(3, affine=True), _seq,
              "torch.nn.InstanceNorm1d: per-example, per-channel statistics (Ulyanov et al. 2016)."),
    LayerSpec("instance_norm2d", "norms", lambda: nn.InstanceNorm2d(4, affine=True), _img,
              "torch.nn.InstanceNorm2d: per-example, per-channel statistics (Ulyanov et al. 2016)."),
    LayerSpec("group_norm", "norms", lambda: nn.GroupNorm(2, 4), _img,
              "torch.nn.GroupNorm: per-example statistics over channel groups (Wu & He 2018)."),
    LayerSpec("ws_linear", "norms", lambda: WSLinear(6, 5), _feat,
              "Linear layer with weight standardisation (Qiao et al. 2019)."),
    LayerSpec("ws_conv1d", "norms", lambda: WSConv1d(3, 5, 3, padding=1), _seq,
              "Conv1d with weight standardisation (Qiao et al. 2019)."),
    LayerSpec("ws_conv2d", "norms", lambda: WSConv2d(4, 6, 3, padding=1), _img,
              "Conv2d with weight standardisation (Qiao et al. 2019)."),
    LayerSpec("spectral_norm_linear", "norms", lambda: spectral_normed(nn.Linear(6, 5)), _feat,
              "Linear layer with torch's spectral_norm parametrization (Miyato et al. 2018)."),
)
