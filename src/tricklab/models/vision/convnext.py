"""ConvNeXt (Liu, Mao, Wu, Feichtenhofer, Darrell & Xie 2022, "A ConvNet for the 2020s", CVPR).

Layout::

    stem      conv(C_in -> dims[0], kernel = stride = stem_patch) - LayerNorm           ("patchify", sec. 2.3)
    stage i   depths[i] blocks of width dims[i]; between stages LayerNorm - conv2x2 stride 2 (separate
              downsampling layers, sec. 2.6)
    head      global average pool - LayerNorm - linear

Block (Fig. 4): x + gamma * Linear(4d -> d)(GELU(Linear(d -> 4d)(LN(dwconv7x7(x))))): a 7x7 depthwise conv
(large kernel, sec. 2.5), one LayerNorm (channels last), an inverted bottleneck MLP (4x, sec. 2.4) with one GELU,
a learnable per-channel layer scale gamma initialised to ``layer_scale`` (1e-6; Touvron et al. 2021, CaiT), and
stochastic depth on the branch. The paper's ConvNeXt-T is ``dims=(96, 192, 384, 768)``, ``depths=(3, 3, 9, 3)``
with ``stem_patch=4`` on 224 px; the default here is three narrow stages with ``stem_patch=2`` for 28 px
(28 -> 14 -> 7 -> 3).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tricklab.errors import ConfigError
from tricklab.layers.dropout import drop_path
from tricklab.models import MODELS, as_int_tuple, check_positive
from tricklab.models.vision.common import check_rate, image_shape, to_images

__all__ = ["ConvNeXt", "ConvNeXtBlock", "LayerNorm2d", "convnext"]


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, H, W) map at every position (ConvNeXt's "channels first" LN)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias,
                            self.eps).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """dwconv7x7 -> LN -> Linear(d, 4d) -> GELU -> Linear(4d, d) -> layer scale -> drop path, plus x.

    x: (B, d, H, W) -> (B, d, H, W). The MLP runs channels-last as two ``nn.Linear`` (= 1x1 convs).
    """

    def __init__(self, dim: int, kernel_size: int = 7, mlp_ratio: int = 4, layer_scale: float = 1e-6,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, mlp_ratio * dim)
        self.pwconv2 = nn.Linear(mlp_ratio * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), float(layer_scale))) if layer_scale > 0 else None
        self.drop_path = drop_path

    def forward(self, x: Tensor) -> Tensor:
        h = self.dwconv(x).permute(0, 2, 3, 1)  # (B, H, W, d)
        h = self.pwconv2(F.gelu(self.pwconv1(self.norm(h))))
        if self.gamma is not None:
            h = h * self.gamma
        h = h.permute(0, 3, 1, 2)  # (B, d, H, W)
        return x + drop_path(h, self.drop_path, self.training)


class ConvNeXt(nn.Module):
    """Patchify stem, stages of ConvNeXt blocks with LN + 2x2/2 conv downsampling, pooled LN head."""

    def __init__(self, shape: tuple[int, int, int], num_classes: int, dims: Sequence[int], depths: Sequence[int],
                 stem_patch: int, kernel_size: int, layer_scale: float, drop_path: float) -> None:
        super().__init__()
        self.image_shape = shape
        self.stem = nn.Sequential(nn.Conv2d(shape[0], dims[0], stem_patch, stride=stem_patch),
                                  LayerNorm2d(dims[0], eps=1e-6))
        self.downsample = nn.ModuleList(
            nn.Sequential(LayerNorm2d(dims[i - 1], eps=1e-6), nn.Conv2d(dims[i - 1], dims[i], 2, stride=2))
            for i in range(1, len(dims)))
        total, index = sum(depths), 0
        stages = []
        for d, n in zip(dims, depths):
            blocks = []
            for _ in range(n):
                blocks.append(ConvNeXtBlock(d, kernel_size, 4, layer_scale, drop_path * index / max(total - 1, 1)))
                index += 1
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.num_features = dims[-1]
        self.fc = nn.Linear(dims[-1], num_classes)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        # the paper's init: truncated normal (std 0.02) weights, zero biases for convs and linears
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def features(self, x: Tensor) -> Tensor:
        h = self.stages[0](self.stem(to_images(x, self.image_shape)))
        for down, stage in zip(self.downsample, self.stages[1:]):
            if min(h.shape[-2:]) < 2:
                raise ValueError(f"convnext: a {tuple(h.shape[-2:])} map cannot be downsampled by 2; use larger "
                                 f"inputs or fewer stages")
            h = stage(down(h))
        return h

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.norm(self.features(x).mean(dim=(2, 3))))


@MODELS.register("convnext", summary="ConvNeXt: patchify stem, depthwise 7x7, LayerNorm, inverted bottleneck, layer "
                                     "scale (Liu et al. 2022).")
def convnext(
    input_shape: tuple[int, ...],
    num_classes: int,
    dims: Sequence[int] = (32, 64, 128),
    depths: Sequence[int] = (2, 2, 2),
    stem_patch: int = 2,
    kernel_size: int = 7,
    layer_scale: float = 1e-6,
    drop_path: float = 0.0,
) -> nn.Module:
    """ConvNeXt with ``dims`` / ``depths`` per stage, a ``stem_patch`` x ``stem_patch`` patchify stem, depthwise
    ``kernel_size``, layer scale init ``layer_scale`` (0 = off) and stochastic depth ``drop_path``."""
    name = "convnext"
    shape = image_shape(input_shape, name)
    dims_t = as_int_tuple(dims, model=name, name="dims", what="stage")
    depths_t = as_int_tuple(depths, model=name, name="depths", what="stage")
    if len(dims_t) != len(depths_t):
        raise ConfigError(f"model {name!r}: dims ({len(dims_t)} stages) and depths ({len(depths_t)}) differ in length")
    check_positive(name, num_classes=num_classes, stem_patch=stem_patch, kernel_size=kernel_size)
    if kernel_size % 2 == 0:
        raise ConfigError(f"model {name!r}: kernel_size must be odd (padding k // 2 keeps the size), got {kernel_size}")
    if isinstance(layer_scale, bool) or not isinstance(layer_scale, (int, float)) or layer_scale < 0:
        raise ConfigError(f"model {name!r}: layer_scale must be a number >= 0 (0 = off), got {layer_scale!r}")
    return ConvNeXt(shape, num_classes, dims_t, depths_t, stem_patch, kernel_size, float(layer_scale),
                    check_rate(name, "drop_path", drop_path))
