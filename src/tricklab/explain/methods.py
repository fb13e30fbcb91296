"""Attribution methods by name, with one calling convention, for the explain page and the evidence scripts.

``attribute(name, model, inputs, target, background=..., generator=...)`` returns a map shaped like the inputs
for every method (Grad-CAM maps are upsampled to the input), so any of them can be drawn and scored by the
deletion / insertion metrics. ``background`` is a sample of training inputs: the baseline distribution of the
SHAP methods; the path methods (integrated gradients, DeepLIFT) and the faithfulness metrics use the zero
reference. ``random`` is the control every method should beat: a uniform random ranking.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from tricklab.errors import UserError
from tricklab.explain._common import check_inputs
from tricklab.explain.deeplift import deeplift, deeplift_shap
from tricklab.explain.gradcam import grad_cam, grad_cam_plus_plus, upsample_to_input
from tricklab.explain.gradient_shap import gradient_shap
from tricklab.explain.gradients import gradient_x_input, smoothgrad, vanilla_gradient
from tricklab.explain.integrated_gradients import integrated_gradients
from tricklab.explain.shapley import kernel_shap
from tricklab.registry import Registry

__all__ = ["ATTRIBUTIONS", "AttributionMethod", "attribute", "default_feature_mask", "DEFAULT_METHODS"]


@dataclass(frozen=True)
class AttributionMethod:
    name: str
    label: str
    run: Callable[..., Tensor]  # (model, x, target, background, generator, feature_mask, **kw) -> like x


ATTRIBUTIONS: Registry[AttributionMethod] = Registry("attribution method")


def default_feature_mask(shape: tuple[int, ...], max_features: int = 64) -> Tensor:
    """Contiguous groups for Kernel SHAP on a large input: square patches in 2-D (``(C, H, W)``, shared over
    channels), segments in 1-D, chosen as the smallest patch side / segment length giving ``<= max_features``."""
    spatial = shape[-2:] if len(shape) == 3 else shape[-1:]
    if math.prod(spatial) <= max_features:
        side = 1
    else:
        side = math.ceil((math.prod(spatial) / max_features) ** (1 / len(spatial)))
        while math.prod(math.ceil(s / side) for s in spatial) > max_features:
            side += 1
    if len(spatial) == 2:
        h, w = spatial
        rows = torch.arange(h) // side
        cols = torch.arange(w) // side
        ids = rows.unsqueeze(1) * math.ceil(w / side) + cols.unsqueeze(0)
    else:
        ids = torch.arange(spatial[0]) // side
    return ids.expand(shape).clone()


def _reg(name: str, label: str) -> Callable[[Callable[..., Tensor]], Callable[..., Tensor]]:
    def add(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
        ATTRIBUTIONS.register(name, AttributionMethod(name, label, fn), summary=label)
        return fn
    return add


@_reg("gradient", "Vanilla gradient (Simonyan et al. 2014)")
def _gradient(model: nn.Module, x: Tensor, t: Tensor, **_: Any) -> Tensor:
    return vanilla_gradient(model, x, t)


@_reg("gradient_x_input", "Gradient x input (Shrikumar et al. 2016)")
def _gxi(model: nn.Module, x: Tensor, t: Tensor, **_: Any) -> Tensor:
    return gradient_x_input(model, x, t)


@_reg("smoothgrad", "SmoothGrad, 50 samples, noise 15% (Smilkov et al. 2017)")
def _smoothgrad(model: nn.Module, x: Tensor, t: Tensor, generator: torch.Generator | None = None, **_: Any) -> Tensor:
    return smoothgrad(model, x, t, samples=50, noise_level=0.15, generator=generator)


@_reg("integrated_gradients", "Integrated gradients, 64 Gauss-Legendre steps, zero baseline (Sundararajan 2017)")
def _ig(model: nn.Module, x: Tensor, t: Tensor, **_: Any) -> Tensor:
    return integrated_gradients(model, x, t, steps=64)  # type: ignore[return-value]


@_reg("grad_cam", "Grad-CAM at the last conv layer, upsampled (Selvaraju et al. 2017)")
def _gradcam(model: nn.Module, x: Tensor, t: Tensor, layer: str | None = None, **_: Any) -> Tensor:
    return upsample_to_input(grad_cam(model, x, t, layer=layer), tuple(x.shape[1:]))


@_reg("grad_cam_plus_plus", "Grad-CAM++ at the last conv layer, upsampled (Chattopadhay et al. 2018)")
def _gradcampp(model: nn.Module, x: Tensor, t: Tensor, layer: str | None = None, **_: Any) -> Tensor:
    return upsample_to_input(grad_cam_plus_plus(model, x, t, layer=layer), tuple(x.shape[1:]))


@_reg("gradient_shap", "GradientSHAP, 64 samples over the background (Lundberg & Lee 2017)")
def _gshap(model: nn.Module, x: Tensor, t: Tensor, background: Tensor | None = None,
           generator: torch.Generator | None = None, **_: Any) -> Tensor:
    return gradient_shap(model, x, t, baselines=background, samples=64, generator=generator)


@_reg("deeplift", "DeepLIFT (Rescale rule), zero reference (Shrikumar et al. 2017)")
def _deeplift(model: nn.Module, x: Tensor, t: Tensor, **_: Any) -> Tensor:
    return deeplift(model, x, t)  # type: ignore[return-value]


@_reg("deeplift_shap", "DeepLIFT-SHAP over the background (Lundberg & Lee 2017)")
def _dlshap(model: nn.Module, x: Tensor, t: Tensor, background: Tensor | None = None, **_: Any) -> Tensor:
    return deeplift_shap(model, x, t, baselines=background)  # type: ignore[return-value]


@_reg("kernel_shap", "Kernel SHAP, 1024 coalitions of <= 64 feature groups, zero reference (Lundberg & Lee 2017)")
def _kshap(model: nn.Module, x: Tensor, t: Tensor, generator: torch.Generator | None = None,
           feature_mask: Tensor | None = None, **_: Any) -> Tensor:
    mask = default_feature_mask(tuple(x.shape[1:])) if feature_mask is None else feature_mask
    return kernel_shap(model, x, t, feature_mask=mask, samples=1024, generator=generator)


@_reg("random", "Random ranking (the control)")
def _random(model: nn.Module, x: Tensor, t: Tensor, generator: torch.Generator | None = None, **_: Any) -> Tensor:
    return torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)


#: the methods the explain page runs when none are named (all but the slow ones are cheap on small CNNs)
DEFAULT_METHODS: tuple[str, ...] = ("gradient", "gradient_x_input", "smoothgrad", "integrated_gradients",
                                    "grad_cam", "grad_cam_plus_plus", "gradient_shap", "deeplift", "deeplift_shap",
                                    "kernel_shap", "random")


def attribute(name: str, model: nn.Module, inputs: Tensor, target: Tensor | int | None = None, *,
              background: Tensor | None = None, generator: torch.Generator | None = None,
              feature_mask: Tensor | None = None, layer: str | None = None) -> Tensor:
    """Run the registered method ``name`` (see :data:`ATTRIBUTIONS`); returns a map shaped like ``inputs``."""
    spec = ATTRIBUTIONS.get(name)
    x = check_inputs(inputs, name)
    out = spec.run(model, x, target, background=background, generator=generator, feature_mask=feature_mask,
                   layer=layer)
    if out.shape != x.shape:
        raise UserError(f"{name}: produced a map of shape {tuple(out.shape)} for inputs {tuple(x.shape)}")
    return out
