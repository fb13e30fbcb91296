"""Helpers shared by the vision models: argument checks, input reshaping, padding and attention with weights.

Every vision model takes images ``(B, C, H, W)`` of any size at least as large as its total stride; inputs
``(B, H, W)`` (one channel) and flat ``(B, C*H*W)`` are reshaped to the ``input_shape`` the model was built for,
so the lab's flat data sets work too. Multi-scale training and evaluation pass 4-D images of other sizes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tricklab.errors import ConfigError
from tricklab.layers.norms import NORM_KINDS
from tricklab.models import as_shape

__all__ = ["attention_with_weights", "check_choice", "check_norm", "check_rate", "image_shape", "make_divisible",
           "pad_to_multiple", "to_images"]


def image_shape(input_shape: tuple[int, ...] | int, model: str) -> tuple[int, int, int]:
    """``input_shape`` ((C, H, W) or (H, W) for one channel) as (C, H, W), else ConfigError naming ``model``."""
    shape = as_shape(input_shape, model=model, ndim=(2, 3))
    return (1, *shape) if len(shape) == 2 else shape  # type: ignore[return-value]


def to_images(x: Tensor, shape: tuple[int, int, int]) -> Tensor:
    """(B, C, H, W) as is; (B, H, W) and (B, C*H*W) reshaped to (B, *shape) (the size the model was built for)."""
    if x.dim() == 4:
        if x.shape[1] != shape[0]:
            raise ValueError(f"expected {shape[0]} input channel(s), got images of shape {tuple(x.shape)}")
        return x
    if x.dim() in (2, 3) and math.prod(x.shape[1:]) == math.prod(shape):
        return x.reshape(x.shape[0], *shape)
    raise ValueError(f"expected images (B, {shape[0]}, H, W), or (B, {shape[1]}, {shape[2]}) / (B, {math.prod(shape)}) "
                     f"for the built size, got shape {tuple(x.shape)}")


def pad_to_multiple(x: Tensor, multiple: int, *, dims: tuple[int, int] = (-2, -1), value: float = 0.0
                    ) -> tuple[Tensor, tuple[int, int]]:
    """Zero-pad the two ``dims`` of ``x`` at their ends up to multiples of ``multiple``; returns (x, (pad_h, pad_w)).

    Used by patch embeddings (a size that does not divide by the patch keeps its border) and by Swin (windows
    must tile the map). Padding at the end only keeps position (0, 0) where it was, so crops line up.
    """
    h, w = x.shape[dims[0]], x.shape[dims[1]]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x, (0, 0)
    if dims == (-2, -1):
        return F.pad(x, (0, pw, 0, ph), value=value), (ph, pw)
    if dims == (1, 2):  # channels-last maps (B, H, W, C)
        return F.pad(x, (0, 0, 0, pw, 0, ph), value=value), (ph, pw)
    raise ValueError(f"pad_to_multiple: dims must be (-2, -1) or (1, 2), got {dims}")


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to the nearest multiple of ``divisor``, never more than 10% below ``value``.

    The rule of the MobileNetV2 reference implementation (Sandler et al. 2018), applied to widths times the
    width multiplier so every layer keeps SIMD-friendly widths.
    """
    min_value = divisor if min_value is None else min_value
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def check_rate(model: str, name: str, value: object) -> float:
    """A rate in [0, 1) or a ConfigError naming the model and the argument."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) < 1.0:
        raise ConfigError(f"model {model!r}: {name} must be a float in [0, 1), got {value!r}")
    return float(value)


def check_norm(model: str, norm: object) -> str:
    norm_s = str(norm).lower()
    if norm_s not in NORM_KINDS:
        raise ConfigError(f"model {model!r}: unknown norm {norm!r}; choose one of {', '.join(NORM_KINDS)}")
    return norm_s


def check_choice(model: str, name: str, value: object, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"model {model!r}: {name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return str(value)


def attention_with_weights(mha: nn.Module, x: Tensor, bias: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Self-attention of :class:`tricklab.layers.attention.MultiHeadAttention` ``mha`` on x (B, T, D), returning
    the output (B, T, D) and the attention probabilities (B, H, T, T).

    The same projections and maths as ``mha(x)`` (softmax(Q K^T / sqrt(d) + bias) V, Vaswani et al. 2017, eq. 1)
    but with the probability matrix materialised, for attention maps and rollout; ``bias`` is an additive float
    bias broadcastable to (B, H, T, T) (Swin's relative position bias plus its shifted-window mask). Dropout on
    the probabilities follows ``mha.dropout`` in training mode, as in ``mha`` itself.
    """
    H = mha.n_heads
    q, k, v = mha._project(x, x, x)
    q, k, v = (t.unflatten(-1, (H, -1)).transpose(1, 2) for t in (q, k, v))  # (B, H, T, hd)
    scores = (q @ k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)  # (B, H, T, T)
    if bias is not None:
        scores = scores + bias
    probs = torch.softmax(scores, dim=-1)
    dropped = F.dropout(probs, mha.dropout) if (mha.training and mha.dropout > 0) else probs
    out = (dropped @ v).transpose(1, 2).flatten(2)  # (B, T, D)
    return mha.out_proj(out), probs
