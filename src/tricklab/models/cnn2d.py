"""A small 2-D CNN for Fashion-MNIST (1x28x28) and the sklearn digits (1x8x8).

Layout for ``channels = (32, 64)`` on ``(B, 1, 28, 28)`` (``(B, 1, 8, 8)`` in brackets)::

    block1 Conv2d(C_in, 32, 3, pad 1) - BN - ReLU - MaxPool(2)   (B, 32, 14, 14)  [(B, 32, 4, 4)]
    block2 Conv2d(32, 64, 3, pad 1) - BN - ReLU - MaxPool(2)     (B, 64, 7, 7)    [(B, 64, 2, 2)]
    head   AdaptiveAvgPool2d(pool_size) - flatten - Dropout(p) - Linear(64 * pool_size^2, C)

A block max-pools only when both spatial sides are at least 2, so tiny inputs still work. The design follows
the common "conv-BN-ReLU-pool" recipe (VGG, Simonyan & Zisserman 2015; BatchNorm, Ioffe & Szegedy 2015).
Inputs may be images ``(B, C, H, W)``, ``(B, H, W)`` when C = 1, or flat vectors ``(B, C*H*W)``.

``drop_block`` > 0 (default 0: the plain network, no extra module) puts a DropBlock (Ghiasi et al. 2018) with
``block_size`` after every block's ReLU, before its max pool (on the 28x28 and 14x14 maps of Fashion-MNIST);
schedule its rate with the ``dropblock_schedule`` technique.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from tricklab.errors import ConfigError
from tricklab.layers.dropout import DropBlock
from tricklab.models import MODELS, as_int_tuple, as_shape, check_positive


class CNN2d(nn.Module):
    """Conv blocks (conv3x3 - BN - ReLU - optional maxpool 2), adaptive average pool, dropout, linear."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        num_classes: int,
        channels: Sequence[int] = (32, 64),
        dropout: float = 0.0,
        pool_size: int = 1,
        *,
        drop_block: float = 0.0,
        block_size: int = 3,
    ) -> None:
        super().__init__()
        self.image_shape = image_shape
        c, h, w = image_shape
        layers: list[nn.Module] = []
        for width in channels:
            # with drop_block the ReLU slot holds Sequential(ReLU, DropBlock): neither has state, so the layer
            # indices and state-dict keys are those of the plain model and checkpoints move between the two
            act: nn.Module = nn.Sequential(nn.ReLU(), DropBlock(drop_block, block_size, dim=2)) if drop_block > 0 \
                else nn.ReLU()
            layers += [nn.Conv2d(c, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), act]
            if min(h, w) >= 2:  # pool only while the image is large enough
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            c = width
        self.features = nn.Sequential(*layers)
        self.feature_shape = (c, h, w)  # e.g. (64, 7, 7) for 28x28, (64, 2, 2) for 8x8
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(c * pool_size * pool_size, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            x = x.reshape(x.shape[0], *self.image_shape)  # (B, C*H*W) or (B, H, W) -> (B, C, H, W)
        h = self.features(x)  # (B, c_last, H', W')
        h = self.pool(h).flatten(1)  # (B, c_last * pool_size^2)
        return self.fc(self.dropout(h))  # (B, C)


@MODELS.register("cnn2d", summary="Small 2-D CNN: 2 x (conv3x3-BN-ReLU-maxpool), avg pool, dropout, linear.")
def cnn2d(
    input_shape: tuple[int, ...],
    num_classes: int,
    channels: Sequence[int] = (32, 64),
    dropout: float = 0.0,
    pool_size: int = 1,
    drop_block: float = 0.0,
    block_size: int = 3,
) -> nn.Module:
    """Small 2-D CNN for Fashion-MNIST / digits: conv3x3-BN-ReLU-maxpool blocks, avg pool, dropout, linear.

    ``drop_block`` / ``block_size``: DropBlock after every block's ReLU (0 = off, the default).
    """
    shape = as_shape(input_shape, model="cnn2d", ndim=(2, 3))
    image_shape = (1, *shape) if len(shape) == 2 else shape
    channels = as_int_tuple(channels, model="cnn2d", name="channels", what="conv block")
    check_positive("cnn2d", num_classes=num_classes, pool_size=pool_size)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ConfigError(f"model 'cnn2d': dropout must be a float in [0, 1), got {dropout!r}")
    if isinstance(drop_block, bool) or not isinstance(drop_block, (int, float)) or not 0.0 <= drop_block < 1.0:
        raise ConfigError(f"model 'cnn2d': drop_block must be a float in [0, 1), got {drop_block!r}")
    check_positive("cnn2d", block_size=block_size)
    return CNN2d(image_shape, num_classes, channels, float(dropout), pool_size,  # type: ignore[arg-type]
                 drop_block=float(drop_block), block_size=block_size)
