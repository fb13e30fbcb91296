"""CNN-Transformer hybrid: a convolutional stem makes the tokens, a Transformer encoder mixes them globally.

The hybrid of Dosovitskiy et al. 2021 (sec. 3.1, "Hybrid Architecture": patches taken from a ResNet feature
map, patch size 1) at small scale: convolutions supply locality and translation equivariance cheaply at high
resolution, attention supplies global context on the short sequence of the low-resolution map.

Layout (defaults on (B, 1, 28, 28))::

    stem      conv3x3(C_in -> conv_widths[0]) - BN - ReLU                            (B, 32, 28, 28)
    conv      a ResNet basic block (tricklab.layers.conv.BasicBlock) of stride 2 per further width
                                                                                      (B, 64, 7, 7)
    tokens    1x1 conv to dim, flattened; + 2-D sine-cosine positions (scaled to the built grid for other
              sizes, see models/vision/vit.py)                                       (B, 49, dim)
    encoder   depth pre-LN Transformer blocks (tricklab.layers.attention.TransformerBlock), attention maps on
              request
    head      LayerNorm - mean over tokens - linear
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from tricklab.errors import ConfigError
from tricklab.layers.conv import BasicBlock
from tricklab.models import MODELS, as_int_tuple, check_positive
from tricklab.models.vision.common import check_rate, image_shape, to_images
from tricklab.models.vision.vit import ViTBlock, sincos_2d

__all__ = ["HybridViT", "hybrid"]


class HybridViT(nn.Module):
    """Conv stem and strided basic blocks, 1x1 projection to tokens, sine-cosine positions, Transformer, head."""

    def __init__(self, shape: tuple[int, int, int], num_classes: int, conv_widths: Sequence[int], dim: int,
                 depth: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.image_shape = shape
        w0 = conv_widths[0]
        layers: list[nn.Module] = [nn.Conv2d(shape[0], w0, 3, padding=1, bias=False), nn.BatchNorm2d(w0), nn.ReLU()]
        prev = w0
        for w in conv_widths[1:]:
            layers.append(BasicBlock(prev, w, stride=2))
            prev = w
        self.conv = nn.Sequential(*layers)
        self.proj = nn.Conv2d(prev, dim, 1)
        stride = 2 ** (len(conv_widths) - 1)
        self.grid = (-(-shape[1] // stride), -(-shape[2] // stride))
        self.register_buffer("pos_table", sincos_2d(self.grid, dim), persistent=False)
        self.blocks = nn.ModuleList(ViTBlock(dim, heads, int(dim * mlp_ratio), dropout=dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.num_features = dim
        self.head = nn.Linear(dim, num_classes)

    def tokens(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        h = self.proj(self.conv(to_images(x, self.image_shape)))  # (B, dim, gh, gw)
        grid = (h.shape[2], h.shape[3])
        pos = self.pos_table if grid == self.grid else sincos_2d(
            grid, h.shape[1], scale=(self.grid[0] / grid[0], self.grid[1] / grid[1]), dtype=h.dtype).to(h.device)
        return h.flatten(2).transpose(1, 2) + pos, grid

    def forward(self, x: Tensor) -> Tensor:
        t, _ = self.tokens(x)
        for block in self.blocks:
            t = block(t)
        return self.head(self.norm(t).mean(dim=1))

    def forward_with_attention(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Logits and each block's attention probabilities (B, heads, T, T), T = gh * gw tokens."""
        t, _ = self.tokens(x)
        maps = []
        for block in self.blocks:
            t, a = block.forward_with_attention(t)
            maps.append(a)
        return self.head(self.norm(t).mean(dim=1)), maps


@MODELS.register("hybrid", summary="CNN-Transformer hybrid: conv stem and strided residual blocks make the tokens, "
                                   "a Transformer encoder mixes them (Dosovitskiy et al. 2021, sec. 3.1).")
def hybrid(
    input_shape: tuple[int, ...],
    num_classes: int,
    conv_widths: Sequence[int] = (32, 64, 64),
    dim: int = 64,
    depth: int = 2,
    heads: int = 4,
    mlp_ratio: float = 2.0,
    dropout: float = 0.0,
) -> nn.Module:
    """Hybrid: ``conv_widths`` (stem width, then one stride-2 basic block per further width), Transformer of
    ``depth`` blocks, width ``dim`` (divisible by 4 for the 2-D sine-cosine positions), ``heads`` heads."""
    name = "hybrid"
    shape = image_shape(input_shape, name)
    widths = as_int_tuple(conv_widths, model=name, name="conv_widths", what="conv stage")
    check_positive(name, num_classes=num_classes, dim=dim, depth=depth, heads=heads)
    if dim % heads or dim % 4:
        raise ConfigError(f"model {name!r}: dim={dim} must be divisible by heads={heads} and by 4 (2-D sine-cosine "
                          f"positions)")
    if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, (int, float)) or mlp_ratio <= 0:
        raise ConfigError(f"model {name!r}: mlp_ratio must be a positive number, got {mlp_ratio!r}")
    return HybridViT(shape, num_classes, widths, dim, depth, heads, float(mlp_ratio),
                     check_rate(name, "dropout", dropout))
