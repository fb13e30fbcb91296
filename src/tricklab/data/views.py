"""Random views for self-supervised and semi-supervised learning, for 1-D signals (MNIST-1D, ``(B, L)`` or
``(B, C, L)``) and images (Fashion-MNIST, ``(B, C, H, W)``). Every function takes an explicit
``torch.Generator`` so two runs with one seed see the same views.

The image recipe follows SimCLR's (Chen et al. 2020, appendix A): random resized crop (here area 0.35-1 of the
input, aspect ratio 3/4-4/3), horizontal flip, intensity jitter (the grey-scale counterpart of colour jitter:
brightness and contrast by up to 0.4), plus a little Gaussian noise. For 1-D signals the counterparts are a random
resized crop along time (length 0.6-1), amplitude scaling, a zero-padded shift, Gaussian noise and a masked span;
no reversal (a reversed digit template is another template). ``weak_view`` is FixMatch's weak augmentation
(Sohn et al. 2020, sec. 2.3: flip and shift only); ``strong_view`` adds the rest.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from tricklab.data.augment import random_shift
from tricklab.errors import ConfigError

__all__ = ["VIEW_KINDS", "random_resized_crop", "signal_view", "image_view", "strong_view", "view_fn", "weak_view"]

VIEW_KINDS = ("signal", "image")


def _u(generator: torch.Generator, n: int, lo: float, hi: float) -> Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=generator)


def random_resized_crop(x: Tensor, generator: torch.Generator, scale: tuple[float, float] = (0.35, 1.0),
                        ratio: tuple[float, float] = (0.75, 4 / 3)) -> Tensor:
    """Crop a random part of each example (area fraction in ``scale``; for images also an aspect ratio in
    ``ratio``) and resize it back to the full size with bilinear sampling (``grid_sample``)."""
    if not 0 < scale[0] <= scale[1] <= 1:
        raise ConfigError(f"crop scale must satisfy 0 < lo <= hi <= 1, got {scale}")
    n = x.shape[0]
    if x.ndim == 4:  # (B, C, H, W): side fractions from area and aspect ratio
        area = _u(generator, n, *scale)
        log_r = _u(generator, n, float(torch.tensor(ratio[0]).log()), float(torch.tensor(ratio[1]).log()))
        r = log_r.exp()
        sw, sh = (area * r).sqrt().clamp(max=1.0), (area / r).sqrt().clamp(max=1.0)
        tx = (1 - sw) * (2 * torch.rand(n, generator=generator) - 1)  # the crop stays inside the image
        ty = (1 - sh) * (2 * torch.rand(n, generator=generator) - 1)
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sw, tx, sh, ty
        grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    flat = x.ndim == 2
    h = x[:, None] if flat else x  # (B, C, L)
    s = _u(generator, n, *scale)
    t = (1 - s) * (2 * torch.rand(n, generator=generator) - 1)
    length = h.shape[-1]
    pos = (torch.arange(length, dtype=x.dtype) + 0.5) / length * 2 - 1  # pixel centres in [-1, 1]
    gx = t[:, None].to(x) + s[:, None].to(x) * pos[None]  # (B, L): where each output sample reads
    grid = torch.stack([gx, torch.zeros_like(gx)], dim=-1)[:, None]  # (B, 1, L, 2)
    out = F.grid_sample(h[:, :, None], grid, mode="bilinear", padding_mode="border", align_corners=False)[:, :, 0]
    return out[:, 0] if flat else out


def _mask_span(x: Tensor, generator: torch.Generator, max_frac: float) -> Tensor:
    length = x.shape[-1]
    n = x.shape[0]
    width = (torch.rand(n, generator=generator) * max_frac * length).long()
    start = (torch.rand(n, generator=generator) * (length - width + 1)).long()
    idx = torch.arange(length)[None]
    mask = (idx >= start[:, None]) & (idx < (start + width)[:, None])  # (B, L)
    return x.masked_fill(mask.view(n, *([1] * (x.ndim - 2)), length), 0.0)


def signal_view(x: Tensor, generator: torch.Generator, strength: float = 1.0) -> Tensor:
    """A strong random view of 1-D signals: crop-resize, amplitude, shift, noise, a masked span."""
    s = float(strength)
    n = x.shape[0]
    std = float(x.std()) if x.numel() > 1 else 1.0
    out = random_resized_crop(x, generator, scale=(1 - 0.4 * min(s, 1.0), 1.0))
    amp = _u(generator, n, 1 - 0.3 * s, 1 + 0.3 * s).to(x).view(n, *([1] * (x.ndim - 1)))
    out = random_shift(out * amp, generator, max(1, int(0.1 * s * x.shape[-1])), spatial_dims=1)
    out = out + 0.1 * s * std * torch.randn(out.shape, generator=generator).to(x)
    return _mask_span(out, generator, 0.2 * s)


def image_view(x: Tensor, generator: torch.Generator, strength: float = 1.0) -> Tensor:
    """A strong random view of images: resized crop, flip, brightness/contrast jitter, noise."""
    s = float(strength)
    n = x.shape[0]
    out = random_resized_crop(x, generator, scale=(1 - 0.65 * min(s, 1.0), 1.0))
    flip = torch.rand(n, generator=generator) < 0.5
    out = torch.where(flip.view(n, 1, 1, 1), out.flip(-1), out)
    b = _u(generator, n, -0.4 * s, 0.4 * s).to(x).view(n, 1, 1, 1) * 0.5  # additive brightness (half range)
    c = _u(generator, n, 1 - 0.4 * s, 1 + 0.4 * s).to(x).view(n, 1, 1, 1)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * c + mean + b
    return out + 0.05 * s * torch.randn(out.shape, generator=generator).to(x)


def weak_view(x: Tensor, generator: torch.Generator) -> Tensor:
    """FixMatch's weak augmentation: a flip (images only) and a shift by up to 1/8 of the size."""
    if x.ndim == 4:
        n = x.shape[0]
        flip = torch.rand(n, generator=generator) < 0.5
        x = torch.where(flip.view(n, 1, 1, 1), x.flip(-1), x)
        return random_shift(x, generator, 0.125, spatial_dims=2)
    return random_shift(x, generator, 0.125, spatial_dims=1)


def strong_view(x: Tensor, generator: torch.Generator) -> Tensor:
    """The strong view for the kind of ``x`` (4-D: image, else signal)."""
    return image_view(x, generator) if x.ndim == 4 else signal_view(x, generator)


def view_fn(kind: str, strength: float = 1.0) -> Callable[[Tensor, torch.Generator], Tensor]:
    """``(x, generator) -> view`` for ``kind`` in :data:`VIEW_KINDS`."""
    if kind not in VIEW_KINDS:
        raise ConfigError(f"view kind must be one of {VIEW_KINDS}, got {kind!r}")
    fn = signal_view if kind == "signal" else image_view
    return lambda x, g: fn(x, g, strength)
