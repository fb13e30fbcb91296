"""Grad-CAM and Grad-CAM++ on any named layer with a (B, K, L) or (B, K, H, W) output (1-D and 2-D).

With ``A^k`` the layer's k-th channel map and ``g^k = dS_c / dA^k`` (``S_c`` the explained logit):

* Grad-CAM (Selvaraju et al. 2017, eqs. 1-2): ``alpha_k = 1/Z sum_ij g^k_ij`` (global-average-pooled
  gradients), ``L = ReLU(sum_k alpha_k A^k)``.
* Grad-CAM++ (Chattopadhay et al. 2018, eq. 19 with the exponential score ``Y_c = exp(S_c)`` so that the
  second and third derivatives are powers of the first):
  ``a^k_ij = (g^k_ij)^2 / (2 (g^k_ij)^2 + sum_ab A^k_ab (g^k_ij)^3)`` (0 where ``g^k_ij = 0``),
  ``w_k = sum_ij a^k_ij ReLU(g^k_ij)``, ``L = ReLU(sum_k w_k A^k)``. The factor ``exp(S_c)`` that the paper's
  derivation multiplies every ``w_k`` by is dropped: it is one positive number per example and does not change
  the map's shape (heat maps are normalised per example anyway).

The map has the layer's resolution, shape ``(B, 1, *spatial)``; :func:`upsample_to_input` interpolates it to the
input (linear in 1-D, bilinear in 2-D) for drawing and for the deletion / insertion metrics.

The layer's output is captured with a forward hook that is removed before the function returns, also when
the model raises.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tricklab.errors import UserError
from tricklab.explain._common import (
    TargetLike,
    check_batch_size,
    check_inputs,
    check_model,
    eval_mode,
    find_layer,
    last_conv_layer,
    logits_of,
    resolve_target,
    target_scores,
)

__all__ = ["grad_cam", "grad_cam_plus_plus", "layer_activation_and_gradient", "upsample_to_input"]


def layer_activation_and_gradient(model: nn.Module, inputs: Tensor, target: Tensor, layer: nn.Module,
                                  method: str) -> tuple[Tensor, Tensor]:
    """The layer's output ``A`` for ``inputs`` and ``dS_target / dA`` (same shape), via a temporary hook."""
    captured: list[Tensor] = []

    def keep(_module: nn.Module, _args: Any, output: Any) -> None:
        if not isinstance(output, Tensor):
            raise UserError(f"{method}: the layer {type(_module).__name__} returns {type(output).__name__}, "
                            f"not a tensor; pick a conv layer or an activation after one")
        captured.append(output)

    handle = layer.register_forward_hook(keep)
    try:
        x = inputs.detach().requires_grad_(True)  # so the graph reaches the layer even if it is the first one
        with torch.enable_grad():
            scores = target_scores(logits_of(model, x, method), target, method)
            if len(captured) != 1:
                raise UserError(f"{method}: the layer ran {len(captured)} times in one forward pass; Grad-CAM "
                                f"needs a layer that runs exactly once")
            act = captured[0]
            (grad,) = torch.autograd.grad(scores.sum(), act)
    finally:
        handle.remove()
    if act.dim() not in (3, 4) or act.shape[0] != inputs.shape[0]:
        raise UserError(f"{method}: the layer's output must be (B, K, L) or (B, K, H, W), got "
                        f"{tuple(act.shape)}; pick a convolutional layer")
    return act.detach(), grad.detach()


def _prepare(model: nn.Module, inputs: Tensor, layer: str | nn.Module | None, method: str,
             batch_size: int | None) -> tuple[nn.Module, Tensor, nn.Module, int]:
    model, x, bs = check_model(model, method), check_inputs(inputs, method), check_batch_size(batch_size, method)
    layer = find_layer(model, last_conv_layer(model) if layer is None else layer, method)
    return model, x, layer, bs


def grad_cam(model: nn.Module, inputs: Tensor, target: TargetLike = None, *, layer: str | nn.Module | None = None,
             relu: bool = True, batch_size: int | None = None) -> Tensor:
    """Grad-CAM map ``(B, 1, *spatial)`` at ``layer`` (a name from ``model.named_modules()``, a submodule, or
    None for the rectified output of the last conv block, see
    :func:`~tricklab.explain._common.last_conv_layer`). ``relu=False`` keeps the negative evidence."""
    method = "grad_cam"
    model, x, mod, bs = _prepare(model, inputs, layer, method, batch_size)
    out = []
    with eval_mode(model):
        t = resolve_target(model, x, target, method, bs)
        for xc, tc in zip(x.split(bs), t.split(bs)):
            act, grad = layer_activation_and_gradient(model, xc, tc, mod, method)
            alpha = grad.flatten(2).mean(2)  # (B, K): eq. 1, gradients pooled over the positions
            cam = (alpha.view(*alpha.shape, *([1] * (act.dim() - 2))) * act).sum(1, keepdim=True)
            out.append(cam.clamp_min(0) if relu else cam)
    return torch.cat(out)


def grad_cam_plus_plus(model: nn.Module, inputs: Tensor, target: TargetLike = None, *,
                       layer: str | nn.Module | None = None, batch_size: int | None = None) -> Tensor:
    """Grad-CAM++ map ``(B, 1, *spatial)`` at ``layer`` (see the module docstring for the weights)."""
    method = "grad_cam_plus_plus"
    model, x, mod, bs = _prepare(model, inputs, layer, method, batch_size)
    out = []
    with eval_mode(model):
        t = resolve_target(model, x, target, method, bs)
        for xc, tc in zip(x.split(bs), t.split(bs)):
            act, g = layer_activation_and_gradient(model, xc, tc, mod, method)
            extra = [1] * (act.dim() - 2)
            sum_act = act.flatten(2).sum(2).view(*act.shape[:2], *extra)  # sum_ab A^k_ab, (B, K, 1[, 1])
            g2, g3 = g * g, g * g * g
            denom = 2.0 * g2 + sum_act * g3
            a = torch.where(g != 0, g2 / torch.where(denom != 0, denom, torch.ones_like(denom)),
                            torch.zeros_like(g))
            w = (a * g.clamp_min(0)).flatten(2).sum(2)  # (B, K)
            cam = (w.view(*w.shape, *extra) * act).sum(1, keepdim=True)
            out.append(cam.clamp_min(0))
    return torch.cat(out)


def upsample_to_input(cam: Tensor, input_shape: tuple[int, ...]) -> Tensor:
    """Interpolate a ``(B, 1, *spatial)`` map to one example's shape ``input_shape`` (e.g. ``(40,)``,
    ``(1, 40)`` or ``(1, 28, 28)``), repeating it over the input channels: linear in 1-D, bilinear in 2-D
    (``align_corners=False``)."""
    spatial = tuple(input_shape[-(cam.dim() - 2):])
    mode = "linear" if cam.dim() == 3 else "bilinear"
    up = F.interpolate(cam, size=spatial, mode=mode, align_corners=False)  # (B, 1, *spatial)
    b = cam.shape[0]
    if len(input_shape) == len(spatial):  # inputs without a channel dimension, e.g. (40,)
        return up.reshape(b, *input_shape)
    return up.expand(b, input_shape[0], *spatial).contiguous()
