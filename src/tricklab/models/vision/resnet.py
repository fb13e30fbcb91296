"""ResNet (He, Zhang, Ren & Sun 2016, CVPR) with basic or bottleneck blocks and the pre-activation option
(He, Zhang, Ren & Sun 2016, "Identity Mappings in Deep Residual Networks", ECCV), sized for small images.

Layout (defaults ``widths=(16, 32, 64)``, ``blocks=1``, ``block="basic"`` on (B, 1, 28, 28))::

    stem    conv3x3(C_in -> stem_channels, stride s) - norm - ReLU          (B, 16, 28/s, 28/s)
    stage i blocks[i] residual blocks of width widths[i], the first strided by 2 for i > 0
    head    [pre-activation: norm - ReLU] - global average pool - linear    (B, num_classes)

A post-activation block (v1) is y = ReLU(x + F(x)) with F = conv-norm-ReLU-conv-norm (basic) or
1x1-3x3-1x1 with norms (bottleneck, output width 4 x the stage width); these are
:class:`tricklab.layers.conv.BasicBlock` and :class:`~tricklab.layers.conv.Bottleneck`. A pre-activation block
(v2) is y = x + F(x) with F = norm-ReLU-conv-norm-ReLU-conv: the identity path carries x unchanged from block to
block (the paper's eq. 4, x_L = x_l + sum F_i), and the projection shortcut, when shapes change, reads the
pre-activated input. ``stem_stride`` 1 keeps the full 28x28 resolution in the first stage (4x the cost of
stride 2 and the more accurate choice on Fashion-MNIST); ``None`` picks 2 when both sides are >= 32 (and 1 below).
Global average pooling lets the network take any input size (multi-scale training and evaluation).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tricklab.errors import ConfigError
from tricklab.layers.conv import BasicBlock, Bottleneck, residual_join
from tricklab.layers.norms import make_norm
from tricklab.models import MODELS, as_int_tuple, check_positive
from tricklab.models.vision.common import check_choice, check_norm, check_rate, image_shape, to_images

__all__ = ["PreActBasicBlock", "PreActBottleneck", "ResNet", "resnet"]


class PreActBasicBlock(nn.Module):
    """Pre-activation basic block: x + conv3x3(ReLU(norm(conv3x3_s(ReLU(norm(x)))))) (He et al. 2016b, Fig. 1b).

    x: (B, C_in, H, W) -> (B, C_out, ceil(H / s), ceil(W / s)). The shortcut is the identity, or a strided
    1x1 conv on the pre-activated input when stride or width change (the paper's full pre-activation design).
    """

    expansion = 1

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, norm: str = "batch",
                 drop_path: float = 0.0) -> None:
        super().__init__()
        bias = norm == "none"
        self.norm1 = make_norm(norm, in_channels, 2)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=bias)
        self.norm2 = make_norm(norm, out_channels, 2)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=True)
        self.shortcut = (nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
                         if stride != 1 or in_channels != out_channels else None)
        self.drop_path = drop_path

    def forward(self, x: Tensor) -> Tensor:
        a = F.relu(self.norm1(x))  # pre-activation, shared by the branch and a projection shortcut
        h = self.conv2(F.relu(self.norm2(self.conv1(a))))
        skip = x if self.shortcut is None else self.shortcut(a)
        return residual_join(skip, h, self.drop_path, self.training)


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck: x + [norm-ReLU-1x1 -> norm-ReLU-3x3 (stride) -> norm-ReLU-1x1 (x expansion)]."""

    def __init__(self, in_channels: int, mid_channels: int, stride: int = 1, norm: str = "batch",
                 drop_path: float = 0.0, expansion: int = 4) -> None:
        super().__init__()
        out_channels = mid_channels * expansion
        bias = norm == "none"
        self.norm1 = make_norm(norm, in_channels, 2)
        self.conv1 = nn.Conv2d(in_channels, mid_channels, 1, bias=bias)
        self.norm2 = make_norm(norm, mid_channels, 2)
        self.conv2 = nn.Conv2d(mid_channels, mid_channels, 3, stride=stride, padding=1, bias=bias)
        self.norm3 = make_norm(norm, mid_channels, 2)
        self.conv3 = nn.Conv2d(mid_channels, out_channels, 1, bias=True)
        self.shortcut = (nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
                         if stride != 1 or in_channels != out_channels else None)
        self.drop_path = drop_path

    def forward(self, x: Tensor) -> Tensor:
        a = F.relu(self.norm1(x))
        h = self.conv1(a)
        h = self.conv2(F.relu(self.norm2(h)))
        h = self.conv3(F.relu(self.norm3(h)))
        skip = x if self.shortcut is None else self.shortcut(a)
        return residual_join(skip, h, self.drop_path, self.training)


class ResNet(nn.Module):
    """Stem, stages of residual blocks, global average pooling, linear head. Build it with :func:`resnet`."""

    def __init__(self, shape: tuple[int, int, int], num_classes: int, widths: Sequence[int], blocks: Sequence[int],
                 *, block: str, preact: bool, stem_channels: int, stem_stride: int, norm: str, drop_path: float,
                 zero_init_residual: bool, channels_last: bool = False) -> None:
        super().__init__()
        self.image_shape = shape
        self.channels_last = channels_last
        self.preact = preact
        bias = norm == "none"
        stem: list[nn.Module] = [nn.Conv2d(shape[0], stem_channels, 3, stride=stem_stride, padding=1, bias=bias)]
        if not preact:  # a pre-activation network normalises at the start of every block instead
            stem += [make_norm(norm, stem_channels, 2), nn.ReLU()]
        self.stem = nn.Sequential(*stem)
        total, index, prev = sum(blocks), 0, stem_channels
        stages: list[nn.Module] = []
        for i, (width, n) in enumerate(zip(widths, blocks)):
            layers: list[nn.Module] = []
            for j in range(n):
                index += 1
                stride = 2 if (i > 0 and j == 0) else 1
                dp = drop_path * index / total  # stochastic depth, linear decay rule (Huang et al. 2016)
                if block == "basic":
                    layers.append(PreActBasicBlock(prev, width, stride, norm, dp) if preact else
                                  BasicBlock(prev, width, stride, norm=norm, drop_path=dp,
                                             zero_init_residual=zero_init_residual))
                    prev = width
                else:
                    layers.append(PreActBottleneck(prev, width, stride, norm, dp) if preact else
                                  Bottleneck(prev, width, stride, norm=norm, drop_path=dp,
                                             zero_init_residual=zero_init_residual))
                    prev = width * 4
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.final_norm = make_norm(norm, prev, 2) if preact else nn.Identity()
        self.num_features = prev
        self.fc = nn.Linear(prev, num_classes)
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def features(self, x: Tensor) -> Tensor:
        """The last stage's map (B, C_last, H', W'), after the final norm-ReLU of a pre-activation net."""
        x = to_images(x, self.image_shape)
        if self.channels_last:
            # NHWC layout: oneDNN's CPU convolutions run it without reordering (measured 1.2-1.5x per training
            # step on these nets, 1 thread); the values are those of NCHW up to float rounding
            x = x.contiguous(memory_format=torch.channels_last)
        h = self.stages(self.stem(x))
        return F.relu(self.final_norm(h)) if self.preact else h

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))  # global average pool: (B, C_last) -> (B, classes)


@MODELS.register("resnet", summary="ResNet with basic or bottleneck blocks, optional pre-activation (v2), any "
                                   "input size (He et al. 2016).")
def resnet(
    input_shape: tuple[int, ...],
    num_classes: int,
    widths: Sequence[int] = (16, 32, 64),
    blocks: Sequence[int] | int = 1,
    block: str = "basic",
    preact: bool = False,
    stem_channels: int | None = None,
    stem_stride: int | None = None,
    norm: str = "batch",
    drop_path: float = 0.0,
    zero_init_residual: bool = False,
    channels_last: bool = False,
) -> nn.Module:
    """ResNet for small images: ``widths`` per stage, ``blocks`` per stage (one int for all), ``block`` "basic" or
    "bottleneck" (stage output = 4 x width), ``preact`` for the v2 ordering, ``stem_channels`` (default
    widths[0]), ``stem_stride`` (1 or 2; default 2 for inputs >= 32 px, else 1), stochastic depth ``drop_path``,
    ``channels_last`` memory layout (faster CPU convolutions, same function)."""
    name = "resnet"
    shape = image_shape(input_shape, name)
    widths = as_int_tuple(widths, model=name, name="widths", what="stage")
    blocks_t = (blocks,) * len(widths) if isinstance(blocks, int) and not isinstance(blocks, bool) else \
        as_int_tuple(blocks, model=name, name="blocks", what="stage")
    if len(blocks_t) != len(widths):
        raise ConfigError(f"model {name!r}: blocks has {len(blocks_t)} entries but widths has {len(widths)}; give one "
                          f"block count per stage or one int for all")
    block = check_choice(name, "block", block, ("basic", "bottleneck"))
    norm = check_norm(name, norm)
    stem_channels = widths[0] if stem_channels is None else stem_channels
    if stem_stride is None:
        stem_stride = 2 if min(shape[1:]) >= 32 else 1
    check_positive(name, num_classes=num_classes, stem_channels=stem_channels, stem_stride=stem_stride)
    if norm == "group" and any(w % 8 for w in (*widths, stem_channels)):
        raise ConfigError(f"model {name!r}: norm='group' uses 8 groups; every width must divide by 8, got {widths}")
    return ResNet(shape, num_classes, widths, blocks_t, block=block, preact=bool(preact), stem_channels=stem_channels,
                  stem_stride=stem_stride, norm=norm, drop_path=check_rate(name, "drop_path", drop_path),
                  zero_init_residual=bool(zero_init_residual), channels_last=bool(channels_last))
