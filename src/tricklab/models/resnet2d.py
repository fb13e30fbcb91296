"""A small 2-D ResNet for Fashion-MNIST (1x28x28) and the sklearn digits (1x8x8) (He et al. 2016, CVPR).

Layout for the defaults (``widths = (16, 32, 64)``, ``blocks_per_stage = 1``) on ``(B, 1, 28, 28)``
(``(B, 1, 8, 8)`` in brackets)::

    stem   Conv2d(C_in, 16, 3, stride s, pad 1) - norm - ReLU        (B, 16, 14, 14)  [(B, 16, 8, 8)]
    stage1 BasicBlock(16 -> 16, stride 1)                             (B, 16, 14, 14)  [(B, 16, 8, 8)]
    stage2 BasicBlock(16 -> 32, stride 2)                             (B, 32, 7, 7)    [(B, 32, 4, 4)]
    stage3 BasicBlock(32 -> 64, stride 2)                             (B, 64, 4, 4)    [(B, 64, 2, 2)]
    head   global average pool - Linear(64, C)                        (B, C)

The stem strides by s = 2 when both image sides are >= 16 (28x28: a 4x cheaper network at no real cost for
these small images), else s = 1. 77,754 parameters for 10 classes (174,970 with ``blocks_per_stage=2``);
measured forward + backward + cross-entropy on one CPU thread, batch 64 (median of 7, a shared 2-core machine):
0.41 ms per 28x28 example (0.62 ms with DropBlock and DropPath on, 0.68 ms with two blocks per stage) and
0.18 ms per 8x8 example (0.29 ms with the regularizers).

A basic block is conv3x3(stride)-norm-ReLU-conv3x3-norm plus a shortcut (identity, or a 1x1 strided conv + norm
projection when the shape changes, ResNet "option B"), then ReLU. Convolutions followed by a norm have no bias.
``norm`` is any kind of :func:`tricklab.layers.norms.make_norm` ("batch", "layer", "instance", "group",
"none"). Regularizers, all off by default (then no extra module exists and no random number is drawn):

* ``drop_block``: DropBlock (Ghiasi et al. 2018) in the blocks of the last two stages (ResNet-50's groups 3 and
  4 in the paper), after conv1-norm-ReLU, after conv2-norm and after a projection shortcut's norm.
* ``drop_path``: stochastic depth (Huang et al. 2016, ECCV) on each residual branch; block l of L (1-based)
  drops with probability ``drop_path * l / L`` (the paper's linear decay rule).

The residual block is written here on purpose (self-contained; the generic blocks live in tricklab.layers.conv).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from tricklab.errors import ConfigError
from tricklab.layers.dropout import DropBlock, DropPath
from tricklab.layers.norms import NORM_KINDS, make_norm
from tricklab.models import MODELS, as_int_tuple, as_shape, check_positive
from tricklab.models.resnet1d import check_rate

__all__ = ["BasicBlock2d", "ResNet2d", "resnet2d"]


def _drop_block(p: float, block_size: int) -> nn.Module:
    return DropBlock(p, block_size, dim=2) if p > 0 else nn.Identity()


class BasicBlock2d(nn.Module):
    """conv3x3(stride) - norm - ReLU - conv3x3 - norm, plus identity or projection shortcut, then ReLU.

    x: (B, C_in, H, W) -> (B, C_out, ceil(H / stride), ceil(W / stride)).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, *, norm: str = "batch",
                 drop_block: float = 0.0, block_size: int = 3, drop_path: float = 0.0) -> None:
        super().__init__()
        bias = norm == "none"  # a norm right after the conv makes a conv bias redundant
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=bias)
        self.norm1 = make_norm(norm, out_channels, dim=2)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=bias)
        self.norm2 = make_norm(norm, out_channels, dim=2)
        self.shortcut: nn.Module
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=bias),
                make_norm(norm, out_channels, dim=2),
            )
            if drop_block > 0:
                self.shortcut.append(DropBlock(drop_block, block_size, dim=2))
        else:
            self.shortcut = nn.Identity()
        self.drop1 = _drop_block(drop_block, block_size)
        self.drop2 = _drop_block(drop_block, block_size)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.drop1(torch.relu(self.norm1(self.conv1(x))))  # (B, C_out, H', W')
        h = self.drop2(self.norm2(self.conv2(h)))
        return torch.relu(self.drop_path(h) + self.shortcut(x))


class ResNet2d(nn.Module):
    """Stem conv, stages of basic residual blocks (stride 2 between stages), global average pool, linear.

    Build it with :func:`resnet2d`, which checks the arguments and holds the defaults (one place for them).
    """

    def __init__(self, image_shape: tuple[int, int, int], num_classes: int, widths: Sequence[int],
                 blocks_per_stage: int, *, norm: str, drop_block: float, block_size: int, drop_path: float) -> None:
        super().__init__()
        self.image_shape = image_shape
        c, h, w = image_shape
        widths = tuple(widths)
        stem_stride = 2 if min(h, w) >= 16 else 1
        self.stem = nn.Sequential(
            nn.Conv2d(c, widths[0], 3, stride=stem_stride, padding=1, bias=norm == "none"),
            make_norm(norm, widths[0], dim=2),
            nn.ReLU(),
        )
        stages: list[nn.Module] = []
        prev, total, index = widths[0], len(widths) * blocks_per_stage, 0
        first_dropblock_stage = max(0, len(widths) - 2)
        for i, width in enumerate(widths):
            blocks = []
            for j in range(blocks_per_stage):
                index += 1
                blocks.append(BasicBlock2d(
                    prev, width, stride=2 if (i > 0 and j == 0) else 1, norm=norm,
                    drop_block=drop_block if i >= first_dropblock_stage else 0.0, block_size=block_size,
                    drop_path=drop_path * index / total,  # Huang et al.: p_l = l / L * p_L
                ))
                prev = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(prev, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            x = x.reshape(x.shape[0], *self.image_shape)  # (B, C*H*W) or (B, H, W) -> (B, C, H, W)
        h = self.stem(x)  # (B, w0, H / s, W / s)
        h = self.stages(h)  # (B, w_last, H', W')
        h = self.pool(h).flatten(1)  # (B, w_last)
        return self.fc(h)  # (B, C)


@MODELS.register("resnet2d", summary="Small 2-D ResNet: stem, 3 stages of basic blocks, GAP, linear; "
                                     "optional DropBlock and stochastic depth.")
def resnet2d(
    input_shape: tuple[int, ...],
    num_classes: int,
    widths: Sequence[int] = (16, 32, 64),
    blocks_per_stage: int = 1,
    norm: str = "batch",
    drop_block: float = 0.0,
    block_size: int = 3,
    drop_path: float = 0.0,
) -> nn.Module:
    """Small 2-D ResNet for Fashion-MNIST / digits (He et al. 2016) with optional DropBlock and DropPath."""
    shape = as_shape(input_shape, model="resnet2d", ndim=(2, 3))
    image_shape = (1, *shape) if len(shape) == 2 else shape
    widths = as_int_tuple(widths, model="resnet2d", name="widths", what="stage")
    check_positive("resnet2d", num_classes=num_classes, blocks_per_stage=blocks_per_stage, block_size=block_size)
    norm = str(norm).lower()
    if norm not in NORM_KINDS:
        raise ConfigError(f"model 'resnet2d': unknown norm {norm!r}; choose one of {', '.join(NORM_KINDS)}")
    if norm == "group" and any(w % min(8, w) for w in widths):
        raise ConfigError(f"model 'resnet2d': norm='group' uses 8 groups; every width must divide by 8, got {widths}")
    return ResNet2d(image_shape, num_classes, widths, blocks_per_stage,  # type: ignore[arg-type]
                    norm=norm, drop_block=check_rate("resnet2d", "drop_block", drop_block), block_size=block_size,
                    drop_path=check_rate("resnet2d", "drop_path", drop_path))
