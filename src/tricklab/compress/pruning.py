"""Unstructured magnitude pruning: masks over the weights of linear and convolution layers.

A mask is a boolean tensor the shape of a layer's ``weight``, kept on the layer as the persistent buffer
``weight_mask``: it is part of ``model.state_dict()``, so it travels with every checkpoint and an exactly
resumed run continues with the same sparsity pattern. The pruned weights are set to zero in place and stay zero
as long as :func:`reapply_masks_` runs after every optimizer step (the ``gradual_pruning`` technique does it at
``after_step``); the parameters themselves are untouched objects, so optimizers and EMA keep working.

Magnitude criterion (Han et al. 2015; Zhu & Gupta 2017): keep the ``k = n - round(s n)`` weights of largest
``|w|`` and zero the rest, either over all prunable weights together (``scope="global"``: layers end with
different sparsities) or in every layer separately (``scope="layer"``: each layer at sparsity ``s``). Ties are
broken by position (a stable sort), so the result is deterministic.

Gradual schedule (Zhu & Gupta, "To prune, or not to prune", arXiv:1710.01878, eq. 1): from step ``t0`` and every
``dt`` steps until ``t0 + n dt``,

    s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n dt))^3,

pruning fast while many weights are redundant and slowly near the final sparsity ``s_f``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from tricklab.errors import ConfigError

__all__ = ["PRUNABLE", "MASK", "prunable_layers", "magnitude_masks", "apply_masks_", "magnitude_prune_",
           "reapply_masks_", "masks_of", "remove_masks_", "sparsity_of", "zhu_gupta_sparsity", "check_sparsity"]

#: layer types whose ``weight`` is pruned (biases and normalisation parameters are left dense)
PRUNABLE: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
#: the buffer name of a layer's mask
MASK = "weight_mask"


def check_sparsity(name: str, value: float) -> float:
    """``value`` as a float in [0, 1), else ConfigError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ConfigError(f"{name} must be a fraction in [0, 1) (0.9 prunes 90% of the weights), got {value!r}")
    return float(value)


def prunable_layers(model: nn.Module, exclude: Iterable[str] = ()) -> dict[str, nn.Module]:
    """Module name -> layer, for every linear / convolution layer of ``model`` not named in ``exclude``."""
    exclude = set(exclude)
    layers = {n: m for n, m in model.named_modules() if isinstance(m, PRUNABLE)}
    unknown = sorted(exclude - set(layers))
    if unknown:
        raise ConfigError(f"cannot exclude {unknown} from pruning: not linear/conv layers of the model; "
                          f"its prunable layers are {sorted(layers)}")
    out = {n: m for n, m in layers.items() if n not in exclude}
    if not out:
        raise ConfigError(f"{type(model).__name__} has no linear or convolution layer left to prune")
    return out


def _keep_largest(magnitudes: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Boolean mask of the ``n - round(sparsity n)`` largest entries of a flat tensor (ties: lower index kept)."""
    n = magnitudes.numel()
    keep = n - round(sparsity * n)
    order = torch.argsort(magnitudes, descending=True, stable=True)
    mask = torch.zeros(n, dtype=torch.bool, device=magnitudes.device)
    mask[order[:keep]] = True
    return mask


@torch.no_grad()
def magnitude_masks(weights: Mapping[str, torch.Tensor], sparsity: float,
                    scope: str = "global") -> dict[str, torch.Tensor]:
    """Masks (bool, each the shape of its weight) that keep the largest-magnitude weights.

    Args:
        weights: name -> weight tensor.
        sparsity: fraction of weights to zero, in [0, 1).
        scope: ``"global"`` ranks all weights together; ``"layer"`` ranks each tensor on its own.
    """
    sparsity = check_sparsity("sparsity", sparsity)
    if scope not in ("global", "layer"):
        raise ConfigError(f"pruning scope must be 'global' or 'layer', got {scope!r}")
    if not weights:
        raise ConfigError("magnitude_masks needs at least one weight tensor")
    if scope == "layer":
        return {k: _keep_largest(w.detach().abs().flatten(), sparsity).view_as(w) for k, w in weights.items()}
    flat = torch.cat([w.detach().abs().flatten().float() for w in weights.values()])
    mask = _keep_largest(flat, sparsity)
    out, start = {}, 0
    for k, w in weights.items():
        out[k] = mask[start:start + w.numel()].view_as(w).clone()
        start += w.numel()
    return out


@torch.no_grad()
def apply_masks_(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Store each mask as the layer's ``weight_mask`` buffer (module name -> mask) and zero the pruned weights."""
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        layer = modules.get(name)
        if layer is None or not isinstance(getattr(layer, "weight", None), torch.Tensor):
            raise ConfigError(f"no layer with a weight named {name!r} in {type(model).__name__}")
        if mask.shape != layer.weight.shape:
            raise ConfigError(f"mask for {name!r} has shape {tuple(mask.shape)}, its weight "
                              f"{tuple(layer.weight.shape)}")
        mask = mask.to(device=layer.weight.device, dtype=torch.bool)
        if isinstance(getattr(layer, MASK, None), torch.Tensor):
            getattr(layer, MASK).copy_(mask)
        else:
            layer.register_buffer(MASK, mask.clone())
        layer.weight.mul_(getattr(layer, MASK))


@torch.no_grad()
def magnitude_prune_(model: nn.Module, sparsity: float, scope: str = "global",
                     exclude: Iterable[str] = ()) -> dict[str, torch.Tensor]:
    """Prune ``model`` in place to ``sparsity`` by weight magnitude; returns the masks (module name -> mask).

    Weights already pruned are zero, so they rank last: sparsity only grows when this is called repeatedly.
    """
    layers = prunable_layers(model, exclude)
    masks = magnitude_masks({n: m.weight for n, m in layers.items()}, sparsity, scope)
    apply_masks_(model, masks)
    return masks


@torch.no_grad()
def reapply_masks_(model: nn.Module) -> None:
    """Zero the pruned weights again (call after every optimizer step: the step may have moved them)."""
    for m in model.modules():
        mask = getattr(m, MASK, None)
        if isinstance(mask, torch.Tensor):
            m.weight.mul_(mask)


def masks_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """Module name -> mask buffer, for every masked layer."""
    return {n: getattr(m, MASK) for n, m in model.named_modules() if isinstance(getattr(m, MASK, None), torch.Tensor)}


@torch.no_grad()
def remove_masks_(model: nn.Module) -> nn.Module:
    """Zero the pruned weights one last time and delete the mask buffers (a plain model, for export)."""
    for m in model.modules():
        if isinstance(getattr(m, MASK, None), torch.Tensor):
            m.weight.mul_(getattr(m, MASK))
            del m._buffers[MASK]
    return model


def sparsity_of(model: nn.Module, exclude: Iterable[str] = ()) -> float:
    """Fraction of exact zeros among the weights of the prunable layers."""
    layers = prunable_layers(model, exclude)
    total = sum(m.weight.numel() for m in layers.values())
    zeros = sum(int((m.weight == 0).sum()) for m in layers.values())
    return zeros / total


def zhu_gupta_sparsity(step: int, final: float, start: int, end: int, initial: float = 0.0) -> float:
    """Target sparsity at ``step`` on Zhu & Gupta's cubic schedule (eq. 1): ``initial`` at ``start``, ``final`` at
    and after ``end``, ``s_f + (s_i - s_f)(1 - (t - t0)/(t_end - t0))^3`` between; 0 before ``start``."""
    if step < start:
        return 0.0
    frac = min(1.0, (step - start) / (end - start))
    return final + (initial - final) * (1.0 - frac) ** 3
