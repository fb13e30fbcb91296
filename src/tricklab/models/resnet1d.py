"""A small 1-D ResNet (He et al. 2016, "Deep Residual Learning for Image Recognition", in 1-D).

Layout for ``widths = (32, 64, 128)``, ``blocks_per_stage = 2``, ``kernel_size = 3`` on ``(B, 1, 40)``::

    stem   Conv1d(C_in, 32, k, pad k//2) - BN - ReLU            (B, 32, 40)
    stage1 2 x BasicBlock(32 -> 32, stride 1)                   (B, 32, 40)
    stage2 2 x BasicBlock(32 -> 64, first stride 2)             (B, 64, 20)
    stage3 2 x BasicBlock(64 -> 128, first stride 2)            (B, 128, 10)
    head   global average pool - Linear(128, C)                 (B, C)

A basic block is conv-BN-ReLU-conv-BN plus a shortcut, then ReLU; the shortcut is the identity unless the
channel count or length changes, when it is a 1x1 strided Conv1d + BN projection (ResNet "option B").
Convolutions followed by BatchNorm have no bias. Initialisation is PyTorch's default.

Regularizers (all off by default; with the defaults the model, its parameters and its outputs are exactly those
of the plain network, and no extra random numbers are drawn):

* ``drop_block`` > 0: DropBlock (Ghiasi et al. 2018) with ``block_size`` in the blocks of the last two stages
  (the paper applies it to ResNet-50's groups 3 and 4, the last two of four), after conv1-BN-ReLU, after
  conv2-BN and after a projection shortcut's BN, as in the paper's ResNet. Schedule it with the
  ``dropblock_schedule`` technique.
* ``drop_path`` > 0: stochastic depth (Huang et al. 2016) on every block's residual branch, with the paper's
  linear decay rule: block l of L (1-based) drops its branch with probability ``drop_path * l / L``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from tricklab.errors import ConfigError
from tricklab.layers.dropout import DropBlock, DropPath
from tricklab.models import MODELS, as_int_tuple, as_shape, check_positive
from tricklab.models.cnn1d import split_1d_shape, to_channels_first


def _drop_block(p: float, block_size: int) -> nn.Module:
    """DropBlock over (B, C, L), or the identity when off (so the default model has no extra module state)."""
    return DropBlock(p, block_size, dim=1) if p > 0 else nn.Identity()


def check_rate(model: str, name: str, value: object) -> float:
    """A drop rate in [0, 1) or a ConfigError naming the model and the argument."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) < 1.0:
        raise ConfigError(f"model {model!r}: {name} must be a float in [0, 1), got {value!r}")
    return float(value)


class BasicBlock1d(nn.Module):
    """conv(k, stride) - BN - ReLU - conv(k) - BN, plus identity or projection shortcut, then ReLU.

    With ``drop_block`` > 0 a DropBlock follows conv1-BN-ReLU, conv2-BN and a projection shortcut; with
    ``drop_path`` > 0 the residual branch is dropped per example (stochastic depth) before the addition.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, *,
                 drop_block: float = 0.0, block_size: int = 5, drop_path: float = 0.0) -> None:
        super().__init__()
        pad = kernel_size // 2  # "same" padding for odd kernels
        self.conv1 = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride, padding=pad, bias=False)
        self.bn1 = nn.BatchNorm1d(out_channels)
        self.conv2 = nn.Conv1d(out_channels, out_channels, kernel_size, stride=1, padding=pad, bias=False)
        self.bn2 = nn.BatchNorm1d(out_channels)
        self.shortcut: nn.Module
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv1d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm1d(out_channels),
            )
        else:
            self.shortcut = nn.Identity()
        self.drop1 = _drop_block(drop_block, block_size)
        self.drop2 = _drop_block(drop_block, block_size)
        if drop_block > 0 and not isinstance(self.shortcut, nn.Identity):
            self.shortcut.append(DropBlock(drop_block, block_size, dim=1))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, C_in, L) -> (B, C_out, ceil(L / stride))
        h = self.drop1(torch.relu(self.bn1(self.conv1(x))))
        h = self.drop2(self.bn2(self.conv2(h)))
        return torch.relu(self.drop_path(h) + self.shortcut(x))


class ResNet1d(nn.Module):
    """Stem conv, stages of basic residual blocks (stride 2 between stages), global average pool, linear."""

    def __init__(
        self,
        in_channels: int,
        length: int,
        num_classes: int,
        widths: Sequence[int] = (32, 64, 128),
        blocks_per_stage: int = 2,
        kernel_size: int = 3,
        *,
        drop_block: float = 0.0,
        block_size: int = 5,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.in_channels, self.length = in_channels, length
        widths = tuple(widths)
        self.stem = nn.Sequential(
            nn.Conv1d(in_channels, widths[0], kernel_size, padding=kernel_size // 2, bias=False),
            nn.BatchNorm1d(widths[0]),
            nn.ReLU(),
        )
        stages: list[nn.Module] = []
        prev = widths[0]
        total, index = len(widths) * blocks_per_stage, 0
        first_dropblock_stage = max(0, len(widths) - 2)  # the last two stages (ResNet groups 3 and 4)
        for i, width in enumerate(widths):
            blocks = []
            for j in range(blocks_per_stage):
                stride = 2 if (i > 0 and j == 0) else 1
                index += 1
                blocks.append(BasicBlock1d(
                    prev, width, kernel_size, stride,
                    drop_block=drop_block if i >= first_dropblock_stage else 0.0, block_size=block_size,
                    drop_path=drop_path * index / total,  # Huang et al.: p_l = l / L * p_L
                ))
                prev = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.fc = nn.Linear(prev, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = to_channels_first(x, self.in_channels, self.length)  # (B, C_in, L)
        h = self.stem(x)  # (B, w0, L)
        h = self.stages(h)  # (B, w_last, L / 2^(len(widths)-1))
        h = self.pool(h).flatten(1)  # (B, w_last)
        return self.fc(h)  # (B, C)


@MODELS.register("resnet1d", summary="Small 1-D ResNet: stem, basic residual blocks with BatchNorm, GAP, linear.")
def resnet1d(
    input_shape: tuple[int, ...],
    num_classes: int,
    widths: Sequence[int] = (32, 64, 128),
    blocks_per_stage: int = 2,
    kernel_size: int = 3,
    drop_block: float = 0.0,
    block_size: int = 5,
    drop_path: float = 0.0,
) -> nn.Module:
    """Small 1-D ResNet: stem, basic residual blocks with BatchNorm, global average pool, linear (He 2016).

    ``drop_block`` / ``block_size``: DropBlock in the last two stages; ``drop_path``: stochastic depth rate of the
    last block (linear in depth). Both 0 by default (the plain network).
    """
    shape = as_shape(input_shape, model="resnet1d", ndim=(1, 2))
    widths = as_int_tuple(widths, model="resnet1d", name="widths", what="stage")
    check_positive("resnet1d", num_classes=num_classes, blocks_per_stage=blocks_per_stage, kernel_size=kernel_size)
    if kernel_size % 2 == 0:
        raise ConfigError(f"model 'resnet1d': kernel_size must be odd (for 'same' padding), got {kernel_size}")
    drop_block = check_rate("resnet1d", "drop_block", drop_block)
    drop_path = check_rate("resnet1d", "drop_path", drop_path)
    check_positive("resnet1d", block_size=block_size)
    in_channels, length = split_1d_shape(shape)
    return ResNet1d(in_channels, length, num_classes, widths, blocks_per_stage, kernel_size,
                    drop_block=drop_block, block_size=block_size, drop_path=drop_path)
