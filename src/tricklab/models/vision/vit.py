"""Vision Transformer (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words", ICLR) and attention rollout
(Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers", ACL).

Layout::

    patches   conv(C_in -> dim, kernel = stride = patch_size)       (B, dim, H/p, W/p) -> tokens (B, N, dim)
    positions + a (N, dim) table: learned (std 0.02) or fixed 2-D sine-cosine
    [class]   a learned token prepended (pool="cls"), or mean pooling over the N tokens (pool="mean")
    encoder   depth pre-LN Transformer blocks (tricklab.layers.attention.TransformerBlock, GELU MLP)
    head      LayerNorm - linear on the class token or the token mean

Any input size: the image is zero-padded at its bottom/right edge to a multiple of the patch size, and the
position table, defined for the grid of the built ``input_shape``, is resampled to the new grid: a learned table
by bicubic interpolation (the paper's fine-tuning-at-higher-resolution recipe, sec. 3.2), the sine-cosine table
by evaluating it at positions scaled to the built grid. On the built grid the table is used as is (exactly).

The 2-D sine-cosine table (as in MAE, He et al. 2022) gives the first dim/2 features to the row index and the
last dim/2 to the column index, each Vaswani et al.'s 1-D encoding: PE(pos, 2i) = sin(pos / 10000^(2i/d')),
PE(pos, 2i+1) = cos(pos / 10000^(2i/d')) with d' = dim/2.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tricklab.errors import ConfigError
from tricklab.layers.attention import TransformerBlock
from tricklab.models import MODELS, check_positive
from tricklab.models.vision.common import attention_with_weights, check_choice, check_rate, image_shape, \
    pad_to_multiple, to_images

__all__ = ["PatchEmbed", "ViT", "ViTBlock", "attention_rollout", "image_rollout", "interpolate_pos_table",
           "rollout_maps", "sincos_2d", "vit"]


def sincos_2d(grid: tuple[int, int], dim: int, *, scale: tuple[float, float] = (1.0, 1.0), base: float = 10000.0,
              dtype: torch.dtype | None = None) -> Tensor:
    """Fixed 2-D sine-cosine positions (gh * gw, dim), row-major; row r at position r * scale[0], column c at
    c * scale[1]. First dim/2 features encode the row, last dim/2 the column (dim must divide by 4)."""
    if dim % 4:
        raise ValueError(f"sincos_2d: dim must be divisible by 4 (sin/cos pairs for rows and columns), got {dim}")
    gh, gw = grid
    half = dim // 2
    inv = base ** (-torch.arange(0, half, 2, dtype=torch.float64) / half)  # (half/2,)

    def enc(n: int, s: float) -> Tensor:  # (n, half), interleaved sin/cos like layers.positional
        ang = (torch.arange(n, dtype=torch.float64) * s)[:, None] * inv
        return torch.stack([ang.sin(), ang.cos()], dim=-1).flatten(-2)

    rows, cols = enc(gh, scale[0]), enc(gw, scale[1])
    table = torch.cat([rows[:, None, :].expand(gh, gw, half), cols[None, :, :].expand(gh, gw, half)], dim=-1)
    return table.reshape(gh * gw, dim).to(dtype or torch.get_default_dtype())


def interpolate_pos_table(table: Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int],
                          mode: str = "bicubic") -> Tensor:
    """Resample a (gh * gw, D) position table from ``old_grid`` to ``new_grid`` (row-major tokens).

    The table is viewed as a D-channel image (1, D, gh, gw) and resized with ``F.interpolate`` (align_corners
    False: pixel centres map to pixel centres). The same grid returns ``table`` itself, so the built size is exact.
    """
    if tuple(new_grid) == tuple(old_grid):
        return table
    gh, gw = old_grid
    if table.shape[0] != gh * gw:
        raise ValueError(f"interpolate_pos_table: table has {table.shape[0]} rows, grid {old_grid} needs {gh * gw}")
    img = table.T.reshape(1, table.shape[1], gh, gw)
    out = F.interpolate(img, size=tuple(new_grid), mode=mode, align_corners=False)
    return out.reshape(table.shape[1], -1).T


class PatchEmbed(nn.Module):
    """Non-overlapping p x p patches, each linearly projected to ``dim`` (one strided conv).

    x: (B, C, H, W) -> tokens (B, ceil(H/p) * ceil(W/p), dim) and the grid (ceil(H/p), ceil(W/p)); a size that
    does not divide by p is zero-padded at the bottom/right so no pixel is lost.
    """

    def __init__(self, in_channels: int, dim: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        x, _ = pad_to_multiple(x, self.patch_size)
        h = self.proj(x)  # (B, dim, gh, gw)
        return h.flatten(2).transpose(1, 2), (h.shape[2], h.shape[3])


class ViTBlock(TransformerBlock):
    """Pre-LN encoder block (:class:`tricklab.layers.attention.TransformerBlock`) that can also return its
    attention probabilities: ``forward_with_attention(x) -> (y, attn (B, H, T, T))`` with y equal to ``forward(x)``."""

    def forward_with_attention(self, x: Tensor) -> tuple[Tensor, Tensor]:
        a, probs = attention_with_weights(self.self_attn, self.norm1(x))
        x = x + self.dropout1(a)
        return x + self._ff(self.norm2(x)), probs


class ViT(nn.Module):
    """Patch embedding, positions, optional class token, pre-LN Transformer encoder, LayerNorm, linear head."""

    def __init__(self, shape: tuple[int, int, int], num_classes: int, patch_size: int, dim: int, depth: int,
                 heads: int, mlp_ratio: float, pool: str, pos: str, dropout: float) -> None:
        super().__init__()
        self.image_shape = shape
        self.patch_size, self.pool, self.pos = patch_size, pool, pos
        self.grid = (-(-shape[1] // patch_size), -(-shape[2] // patch_size))  # the built grid (ceil division)
        self.patch_embed = PatchEmbed(shape[0], dim, patch_size)
        n = self.grid[0] * self.grid[1]
        if pos == "learned":
            self.pos_table = nn.Parameter(torch.randn(n, dim) * 0.02)
        else:
            self.register_buffer("pos_table", sincos_2d(self.grid, dim), persistent=False)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if pool == "cls" else None
        self.pos_drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(ViTBlock(dim, heads, int(dim * mlp_ratio), dropout=dropout, norm_first=True)
                                    for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.num_features = dim
        self.head = nn.Linear(dim, num_classes)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)

    def positions(self, grid: tuple[int, int]) -> Tensor:
        """The (gh * gw, dim) position table for a token grid: exact on the built grid, resampled otherwise."""
        if self.pos == "learned":
            return interpolate_pos_table(self.pos_table, self.grid, grid)
        if tuple(grid) == self.grid:
            return self.pos_table
        scale = (self.grid[0] / grid[0], self.grid[1] / grid[1])  # new positions spread over the built range
        return sincos_2d(grid, self.pos_table.shape[1], scale=scale, dtype=self.pos_table.dtype).to(
            self.pos_table.device)

    def tokens(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """Embedded tokens (B, T, dim) with positions (and the class token first), and the patch grid."""
        t, grid = self.patch_embed(to_images(x, self.image_shape))
        t = t + self.positions(grid)
        if self.cls_token is not None:
            t = torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t], dim=1)
        return self.pos_drop(t), grid

    def _head(self, t: Tensor) -> Tensor:
        t = self.norm(t)
        return self.head(t[:, 0] if self.cls_token is not None else t.mean(dim=1))

    def forward(self, x: Tensor) -> Tensor:
        t, _ = self.tokens(x)
        for block in self.blocks:
            t = block(t)
        return self._head(t)

    def forward_with_attention(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Logits and every block's attention probabilities, a list of ``depth`` tensors (B, heads, T, T);
        T = 1 + gh * gw with a class token (index 0), gh * gw without."""
        t, _ = self.tokens(x)
        maps = []
        for block in self.blocks:
            t, a = block.forward_with_attention(t)
            maps.append(a)
        return self._head(t), maps


def attention_rollout(attentions: Sequence[Tensor], *, head_fusion: str = "mean", residual: bool = True) -> Tensor:
    """Attention rollout (Abnar & Zuidema 2020, eq. 1): R = A~_L A~_{L-1} ... A~_1 with A~_l = 0.5 A_l + 0.5 I
    (the residual connection, rows renormalised), A_l the heads' attention fused by mean (the paper) or max.

    attentions: per layer (B, H, T, T) (rows: queries, summing to 1). Returns (B, T, T): row i says how much
    each input token flows into token i at the last layer; rows sum to 1.
    """
    if not attentions:
        raise ValueError("attention_rollout needs at least one layer's attention")
    if head_fusion not in ("mean", "max"):
        raise ValueError(f"head_fusion must be 'mean' or 'max', got {head_fusion!r}")
    rollout: Tensor | None = None
    for a in attentions:
        if a.dim() != 4 or a.shape[-1] != a.shape[-2]:
            raise ValueError(f"each attention must be (B, heads, T, T), got {tuple(a.shape)}")
        fused = a.mean(dim=1) if head_fusion == "mean" else a.amax(dim=1)  # (B, T, T)
        if residual:
            fused = 0.5 * fused + 0.5 * torch.eye(fused.shape[-1], dtype=fused.dtype, device=fused.device)
        fused = fused / fused.sum(dim=-1, keepdim=True)
        rollout = fused if rollout is None else fused @ rollout
    assert rollout is not None
    return rollout


def rollout_maps(rollout: Tensor, grid: tuple[int, int], *, cls_token: bool) -> Tensor:
    """Per-image relevance map (B, gh, gw) from a rollout (B, T, T): the class token's row over the patch tokens
    (renormalised to sum to 1), or, without a class token, the mean of all rows (what mean pooling reads)."""
    row = rollout[:, 0, 1:] if cls_token else rollout.mean(dim=1)
    if row.shape[-1] != grid[0] * grid[1]:
        raise ValueError(f"rollout has {row.shape[-1]} patch tokens, grid {grid} needs {grid[0] * grid[1]}")
    row = row / row.sum(dim=-1, keepdim=True)
    return row.reshape(-1, *grid)


@torch.no_grad()
def image_rollout(model: nn.Module, images: Tensor, *, head_fusion: str = "mean") -> tuple[Tensor, Tensor] | None:
    """Logits (N, classes) and rollout relevance maps (N, gh, gw) of ``images`` for any model that returns its
    full-sequence attention from ``forward_with_attention`` and has a token ``grid`` (our ViT and the CNN-ViT
    hybrid; a class token is used when the model has one). None for a model without such attention: Swin's
    attention lives in windows (B * nW rows, not B), where rollout over the whole image is not defined."""
    forward = getattr(model, "forward_with_attention", None)
    grid = getattr(model, "grid", None)
    if forward is None or grid is None:
        return None
    cls_token = getattr(model, "cls_token", None) is not None
    was_training = model.training
    model.eval()
    try:
        logits, attentions = forward(images)
    finally:
        model.train(was_training)
    tokens = grid[0] * grid[1] + int(cls_token)
    if not attentions or any(a.dim() != 4 or a.shape[0] != images.shape[0] or a.shape[-1] != tokens
                             for a in attentions):
        return None
    return logits, rollout_maps(attention_rollout(attentions, head_fusion=head_fusion), grid, cls_token=cls_token)


@MODELS.register("vit", summary="Vision Transformer: patch embedding, class token or mean pooling, learned or "
                                "2-D sine-cosine positions (Dosovitskiy et al. 2021).")
def vit(
    input_shape: tuple[int, ...],
    num_classes: int,
    patch_size: int = 4,
    dim: int = 64,
    depth: int = 4,
    heads: int = 4,
    mlp_ratio: float = 2.0,
    pool: str = "cls",
    pos: str = "learned",
    dropout: float = 0.0,
) -> nn.Module:
    """ViT: ``patch_size`` p (28 px / 4 = 7 x 7 = 49 tokens), width ``dim``, ``depth`` blocks of ``heads`` heads,
    MLP width ``mlp_ratio`` x dim, ``pool`` "cls" or "mean", ``pos`` "learned" or "sincos"."""
    name = "vit"
    shape = image_shape(input_shape, name)
    check_positive(name, num_classes=num_classes, patch_size=patch_size, dim=dim, depth=depth, heads=heads)
    if dim % heads:
        raise ConfigError(f"model {name!r}: dim={dim} must be divisible by heads={heads}")
    pool = check_choice(name, "pool", pool, ("cls", "mean"))
    pos = check_choice(name, "pos", pos, ("learned", "sincos"))
    if pos == "sincos" and dim % 4:
        raise ConfigError(f"model {name!r}: pos='sincos' needs dim divisible by 4 (row and column sin/cos pairs), "
                          f"got {dim}")
    if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, (int, float)) or mlp_ratio <= 0 \
            or int(dim * mlp_ratio) < 1:
        raise ConfigError(f"model {name!r}: mlp_ratio must be a positive number, got {mlp_ratio!r}")
    return ViT(shape, num_classes, patch_size, dim, depth, heads, float(mlp_ratio), pool, pos,
               check_rate(name, "dropout", dropout))
