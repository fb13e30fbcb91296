"""MobileNetV2 (Sandler, Howard, Zhu, Zhmoginov & Chen 2018, CVPR): inverted residuals with linear bottlenecks.

Layout: stem conv3x3(C_in -> 32 * alpha, stride s) - BN - ReLU6; then for each row (t, c, n, s) of ``settings``
n :class:`tricklab.layers.conv.InvertedResidual` blocks of output width c * alpha, expansion t, the first with
stride s; then conv1x1 -> ``last_channels`` - BN - ReLU6, global average pool, dropout, linear. ``width_mult``
(the paper's alpha) scales every width, rounded to a multiple of 8 (the reference implementation's rule); the last
conv is not thinned below ``last_channels`` (sec. 4, "we do not apply the width multiplier to the last layer"
for alpha < 1).

The paper's ImageNet table (224 px, total stride 32) is ``IMAGENET_SETTINGS``. The default here is a short
version for 28x28 images (total stride 8 with ``stem_stride=1``): a 28x28 map goes 28 -> 14 -> 7 -> 4.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from tricklab.errors import ConfigError
from tricklab.layers.conv import InvertedResidual
from tricklab.models import MODELS, check_positive
from tricklab.models.vision.common import check_rate, image_shape, make_divisible, to_images

__all__ = ["IMAGENET_SETTINGS", "MobileNetV2", "SMALL_SETTINGS", "mobilenetv2"]

#: (expansion t, output channels c, repeats n, first stride s), Sandler et al. 2018, Table 2.
IMAGENET_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
#: A short version for 28x28 images: total stride 8 (with stem stride 1), 9 blocks.
SMALL_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 2), (6, 64, 2, 2), (6, 96, 2, 1))


class MobileNetV2(nn.Module):
    """Stem, inverted-residual stages, 1x1 conv to ``last_channels``, global pool, dropout, linear."""

    def __init__(self, shape: tuple[int, int, int], num_classes: int, settings: Sequence[Sequence[int]],
                 width_mult: float, stem_channels: int, stem_stride: int, last_channels: int, dropout: float,
                 drop_path: float) -> None:
        super().__init__()
        self.image_shape = shape
        stem = make_divisible(stem_channels * width_mult)
        self.stem = nn.Sequential(nn.Conv2d(shape[0], stem, 3, stride=stem_stride, padding=1, bias=False),
                                  nn.BatchNorm2d(stem), nn.ReLU6())
        blocks: list[nn.Module] = []
        prev, total, index = stem, sum(int(n) for _, _, n, _ in settings), 0
        for t, c, n, s in settings:
            out = make_divisible(c * width_mult)
            for i in range(n):
                index += 1
                blocks.append(InvertedResidual(prev, out, stride=s if i == 0 else 1, expand_ratio=t,
                                               drop_path=drop_path * index / total))
                prev = out
        self.blocks = nn.Sequential(*blocks)
        last = make_divisible(last_channels * max(1.0, width_mult))
        self.head_conv = nn.Sequential(nn.Conv2d(prev, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU6())
        self.num_features = last
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(last, num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.head_conv(self.blocks(self.stem(to_images(x, self.image_shape))))  # (B, last, H', W')

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.dropout(self.features(x).mean(dim=(2, 3))))


def _check_settings(settings: object) -> tuple[tuple[int, int, int, int], ...]:
    try:
        rows = tuple(tuple(int(v) for v in row) for row in settings)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ConfigError(f"model 'mobilenetv2': settings must be a list of [t, c, n, s] rows, got {settings!r}") \
            from None
    if not rows or any(len(r) != 4 or min(r) < 1 for r in rows):
        raise ConfigError(f"model 'mobilenetv2': settings must be a non-empty list of [expansion t, channels c, "
                          f"repeats n, stride s] rows of positive ints, got {settings!r}")
    return rows  # type: ignore[return-value]


@MODELS.register("mobilenetv2", summary="MobileNetV2: inverted residuals with linear bottlenecks, width multiplier "
                                        "(Sandler et al. 2018).")
def mobilenetv2(
    input_shape: tuple[int, ...],
    num_classes: int,
    width_mult: float = 1.0,
    settings: Sequence[Sequence[int]] = SMALL_SETTINGS,
    stem_channels: int = 32,
    stem_stride: int | None = None,
    last_channels: int = 256,
    dropout: float = 0.2,
    drop_path: float = 0.0,
) -> nn.Module:
    """MobileNetV2; ``settings`` rows (t, c, n, s), ``width_mult`` alpha, ``stem_stride`` (default 2 for >= 64 px,
    else 1), ``last_channels`` (1280 in the paper, 256 here by default), classifier ``dropout``."""
    shape = image_shape(input_shape, "mobilenetv2")
    if isinstance(width_mult, bool) or not isinstance(width_mult, (int, float)) or not 0 < width_mult <= 4:
        raise ConfigError(f"model 'mobilenetv2': width_mult must be a number in (0, 4], got {width_mult!r}")
    stem_stride = (2 if min(shape[1:]) >= 64 else 1) if stem_stride is None else stem_stride
    check_positive("mobilenetv2", num_classes=num_classes, stem_channels=stem_channels, stem_stride=stem_stride,
                   last_channels=last_channels)
    return MobileNetV2(shape, num_classes, _check_settings(settings), float(width_mult), stem_channels, stem_stride,
                       last_channels, check_rate("mobilenetv2", "dropout", dropout),
                       check_rate("mobilenetv2", "drop_path", drop_path))
