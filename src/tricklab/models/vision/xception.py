"""Xception-style network (Chollet 2017, CVPR): depthwise separable convolutions in an entry, middle and exit
flow, with residual connections around every block.

Layout (the paper's Fig. 5, narrowed and shortened so it trains on small images)::

    stem   conv3x3(C_in -> stem[0], stride s) - BN - ReLU - conv3x3(stem[0] -> stem[1]) - BN - ReLU
    entry  for w in entry_widths: [ReLU] - sep3x3(-> w) - BN - ReLU - sep3x3(w -> w) - BN - maxpool3x3 s2,
           plus a strided 1x1 conv - BN shortcut                                   (spatial / 2 per block)
    middle middle_blocks x [ReLU - sep3x3 - BN] x 3, plus the identity              (size kept)
    exit   ReLU - sep3x3(-> exit[0]) - BN - ReLU - sep3x3(exit[0] -> exit[0]) - BN - maxpool s2, 1x1 shortcut;
           sep3x3(exit[0] -> exit[1]) - BN - ReLU; global average pool; linear

``sep3x3`` is :class:`tricklab.layers.conv.DepthwiseSeparableConv2d` (a 3x3 depthwise conv, then a 1x1
pointwise conv), with no activation between the two, as the paper found best (sec. 4.7). The first entry block
does not start with a ReLU (its input was just activated by the stem). The paper's ImageNet widths are
``stem=(32, 64)``, ``entry_widths=(128, 256, 728)``, ``middle_width`` 728 (8 blocks), ``exit_widths=(1024, 2048)``
with a 1536 step between; one separable conv to ``exit[1]`` replaces the last two here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from tricklab.errors import ConfigError
from tricklab.layers.conv import DepthwiseSeparableConv2d
from tricklab.models import MODELS, as_int_tuple, check_positive
from tricklab.models.vision.common import image_shape, to_images

__all__ = ["Xception", "XceptionBlock", "xception"]


def _sep(cin: int, cout: int) -> DepthwiseSeparableConv2d:
    # bias-free: a BN follows every separable conv
    return DepthwiseSeparableConv2d(cin, cout, 3, padding=1, bias=False)


class XceptionBlock(nn.Module):
    """``reps`` x ([ReLU] - sep3x3 - BN), then max-pool 3x3/2 when strided, plus a shortcut (identity, or a 1x1
    conv with the block's stride and a BN when the width or size changes). (B, C_in, H, W) -> (B, C_out, H', W')."""

    def __init__(self, in_channels: int, out_channels: int, reps: int, stride: int = 1,
                 start_with_relu: bool = True, grow_first: bool = True) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_channels
        for i in range(reps):
            # the entry/exit blocks widen at the first conv ("grow first"); the exit flow's widening block in the
            # paper widens at its last conv (728 -> 728 -> 1024)
            target = out_channels if (grow_first and i == 0) or (not grow_first and i == reps - 1) else width
            if i > 0 or start_with_relu:
                layers.append(nn.ReLU())
            layers += [_sep(width, target), nn.BatchNorm2d(target)]
            width = target
        if stride != 1:
            layers.append(nn.MaxPool2d(3, stride=stride, padding=1))
        self.branch = nn.Sequential(*layers)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        return self.branch(x) + self.shortcut(x)


class Xception(nn.Module):
    """Entry, middle and exit flows of residual separable-conv blocks; build it with :func:`xception`."""

    def __init__(self, shape: tuple[int, int, int], num_classes: int, stem: Sequence[int], entry: Sequence[int],
                 middle_blocks: int, exit_widths: Sequence[int], stem_stride: int, dropout: float) -> None:
        super().__init__()
        self.image_shape = shape
        s0, s1 = stem
        self.stem = nn.Sequential(
            nn.Conv2d(shape[0], s0, 3, stride=stem_stride, padding=1, bias=False), nn.BatchNorm2d(s0), nn.ReLU(),
            nn.Conv2d(s0, s1, 3, padding=1, bias=False), nn.BatchNorm2d(s1), nn.ReLU())
        prev = s1
        entry_blocks = []
        for i, w in enumerate(entry):
            entry_blocks.append(XceptionBlock(prev, w, reps=2, stride=2, start_with_relu=i > 0))
            prev = w
        self.entry = nn.Sequential(*entry_blocks)
        self.middle = nn.Sequential(*(XceptionBlock(prev, prev, reps=3) for _ in range(middle_blocks)))
        e0, e1 = exit_widths
        self.exit = nn.Sequential(
            XceptionBlock(prev, e0, reps=2, stride=2, grow_first=False),
            _sep(e0, e1), nn.BatchNorm2d(e1), nn.ReLU())
        self.num_features = e1
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(e1, num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.exit(self.middle(self.entry(self.stem(to_images(x, self.image_shape)))))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.dropout(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)))


@MODELS.register("xception", summary="Xception-style: depthwise separable convs in entry/middle/exit flows with "
                                     "residuals (Chollet 2017).")
def xception(
    input_shape: tuple[int, ...],
    num_classes: int,
    stem: Sequence[int] = (16, 32),
    entry_widths: Sequence[int] = (64, 128),
    middle_blocks: int = 2,
    exit_widths: Sequence[int] = (192, 256),
    stem_stride: int | None = None,
    dropout: float = 0.0,
) -> nn.Module:
    """Xception-style net: ``stem`` (2 conv widths), ``entry_widths`` (one strided block each), ``middle_blocks``
    residual blocks of 3 separable convs, ``exit_widths`` (strided block width, final separable conv width)."""
    name = "xception"
    shape = image_shape(input_shape, name)
    stem_t = as_int_tuple(stem, model=name, name="stem", what="conv width")
    exit_t = as_int_tuple(exit_widths, model=name, name="exit_widths", what="width")
    if len(stem_t) != 2 or len(exit_t) != 2:
        raise ConfigError(f"model {name!r}: stem and exit_widths take exactly two widths each, got {stem_t} and "
                          f"{exit_t}")
    entry = as_int_tuple(entry_widths, model=name, name="entry_widths", what="entry block")
    stem_stride = (2 if min(shape[1:]) >= 64 else 1) if stem_stride is None else stem_stride
    if isinstance(middle_blocks, bool) or not isinstance(middle_blocks, int) or middle_blocks < 0:
        raise ConfigError(f"model {name!r}: middle_blocks must be an int >= 0, got {middle_blocks!r}")
    check_positive(name, num_classes=num_classes, stem_stride=stem_stride)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ConfigError(f"model {name!r}: dropout must be a float in [0, 1), got {dropout!r}")
    return Xception(shape, num_classes, stem_t, entry, middle_blocks, exit_t, stem_stride, float(dropout))
