"""Swin Transformer (Liu, Lin, Cao, Hu, Wei, Zhang, Lin & Guo 2021, "Swin Transformer: Hierarchical Vision
Transformer using Shifted Windows", ICCV).

Layout::

    patches   conv(C_in -> dims[0], kernel = stride = patch_size), LayerNorm      (B, H/p, W/p, dims[0])
    stage i   depths[i] Swin blocks, alternating window attention (W-MSA) and shifted-window attention (SW-MSA);
              between stages patch merging: concatenate each 2x2 neighbourhood (4C), LayerNorm, Linear(4C -> 2C)
    head      LayerNorm - global average pool - linear

A Swin block is x + MSA(LN(x)), then x + MLP(LN(x)), with self-attention inside non-overlapping M x M windows
(M = ``window``) and, in every second block, the windows displaced by floor(M/2) (sec. 3.2). The displacement
is done by a cyclic shift of the map; tokens that the shift brought together from opposite edges must not attend
to each other, so an attention mask blocks every pair that was not contiguous in the unshifted map
(:func:`shifted_window_mask`). Each head adds a learned relative position bias B (eq. 4,
Attention = SoftMax(QK^T / sqrt(d) + B) V), read from a ((2M-1)^2, heads) table at the pair's offset
(dy, dx) in [-M+1, M-1]^2.

Any input size: a map whose sides do not divide by M is zero-padded at its bottom/right to window multiples and
the padded tokens are masked out of the real tokens' attention (and the real tokens out of theirs), so the output
on real positions does not depend on the padding; a map no larger than one window is not shifted (one window
already covers it, as in the paper's code). Patch merging pads odd sides by one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from tricklab.errors import ConfigError
from tricklab.layers.attention import MultiHeadAttention, multi_head_attention
from tricklab.layers.dropout import drop_path
from tricklab.models import MODELS, as_int_tuple, check_positive
from tricklab.models.vision.common import attention_with_weights, check_rate, image_shape, pad_to_multiple, \
    to_images

__all__ = ["PatchMerging", "Swin", "SwinBlock", "relative_position_index", "shifted_window_mask", "swin",
           "window_partition", "window_reverse"]


def window_partition(x: Tensor, window: int) -> Tensor:
    """(B, H, W, C) with H, W multiples of M -> (B * nW, M * M, C), windows in row-major order per image."""
    B, H, W, C = x.shape
    x = x.view(B, H // window, window, W // window, window, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, C)


def window_reverse(windows: Tensor, window: int, H: int, W: int) -> Tensor:
    """Inverse of :func:`window_partition`: (B * nW, M * M, C) -> (B, H, W, C)."""
    C = windows.shape[-1]
    x = windows.view(-1, H // window, W // window, window, window, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, H, W, C)


def relative_position_index(window: int) -> Tensor:
    """(M*M, M*M) int64: for tokens i, j of a window, the row of the ((2M-1)^2, heads) bias table at offset
    (dy, dx) = pos_i - pos_j, i.e. (dy + M - 1) * (2M - 1) + (dx + M - 1)."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = coords[:, :, None] - coords[:, None, :]  # (2, N, N) offsets in [-M+1, M-1]
    return (rel[0] + window - 1) * (2 * window - 1) + (rel[1] + window - 1)


def shifted_window_mask(padded: tuple[int, int], window: int, shift: int, valid: tuple[int, int] | None = None,
                        device: torch.device | str | None = None) -> Tensor | None:
    """Bool (nW, M*M, M*M) mask for the windows of a map cyclically shifted by ``-shift``; True = blocked.

    ``padded`` = (H, W), multiples of M, is the (padded) map size; ``valid`` = (H_real, W_real) the unpadded
    size (default: no padding). In the shifted frame, row r came from row (r + shift) mod H: rows r >= H - shift
    wrapped around from the top. Two tokens of one window may attend only if both wrapped or both did not, per
    axis, and both are real or both padding. Labels per position: the row region (0: r < H - M, 1: r < H - shift,
    2: wrapped; the first two never share a window) times 3 plus the column region, plus 9 for padding, as the
    paper's code labels regions. Returns None when nothing is blocked (no shift, no padding).
    """
    H, W = padded
    Hr, Wr = valid if valid is not None else padded
    if H % window or W % window:
        raise ValueError(f"shifted_window_mask: padded size {padded} must be a multiple of the window {window}")
    if shift == 0 and (Hr, Wr) == (H, W):
        return None
    r = torch.arange(H, device=device)
    c = torch.arange(W, device=device)

    def region(i: Tensor, n: int) -> Tensor:
        if shift == 0:
            return torch.zeros_like(i)
        return (i >= n - window).long() + (i >= n - shift).long()

    pad = ((r + shift) % H >= Hr)[:, None] | ((c + shift) % W >= Wr)[None, :]  # padding, in the shifted frame
    labels = region(r, H)[:, None] * 3 + region(c, W)[None, :] + 9 * pad.long()  # (H, W)
    lw = window_partition(labels[None, :, :, None].float(), window).squeeze(-1)  # (nW, N)
    return lw[:, :, None] != lw[:, None, :]


class SwinBlock(nn.Module):
    """One Swin block on channels-last maps: (B, H, W, C) -> (B, H, W, C), window attention shifted by ``shift``."""

    def __init__(self, dim: int, heads: int, window: int, shift: int, mlp_ratio: float = 4.0,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        if not 0 <= shift < window:
            raise ValueError(f"shift must be in [0, window={window}), got {shift}")
        self.dim, self.heads, self.window, self.shift, self.drop_path = dim, heads, window, shift, drop_path
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, heads)
        self.bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.bias_table, std=0.02)
        self.register_buffer("bias_index", relative_position_index(window), persistent=False)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def relative_bias(self) -> Tensor:
        """(heads, M*M, M*M) relative position bias B of eq. 4."""
        n = self.window * self.window
        return self.bias_table[self.bias_index.reshape(-1)].view(n, n, -1).permute(2, 0, 1)

    def attention_bias(self, B: int, size: tuple[int, int], padded: tuple[int, int], shift: int) -> Tensor:
        """Additive bias (B * nW or 1, heads, N, N): relative position bias plus -inf where the mask blocks."""
        bias = self.relative_bias()[None]  # (1, heads, N, N)
        mask = shifted_window_mask(padded, self.window, shift, size, device=bias.device)
        if mask is None:
            return bias
        blocked = torch.zeros(mask.shape, dtype=bias.dtype, device=bias.device).masked_fill(mask, float("-inf"))
        return bias + blocked[:, None].repeat(B, 1, 1, 1)  # windows are batch-major: (b, window) -> b * nW + window

    def _windows(self, x: Tensor) -> tuple[Tensor, Tensor, tuple[int, int], int]:
        B, H, W, _ = x.shape
        M = self.window
        shift = self.shift if (H > M or W > M) else 0  # one window covers the map: nothing to shift
        h, _ = pad_to_multiple(self.norm1(x), M, dims=(1, 2))
        Hp, Wp = h.shape[1], h.shape[2]
        if shift:
            h = torch.roll(h, shifts=(-shift, -shift), dims=(1, 2))
        return window_partition(h, M), self.attention_bias(B, (H, W), (Hp, Wp), shift), (Hp, Wp), shift

    def _merge(self, x: Tensor, out: Tensor, padded: tuple[int, int], shift: int) -> Tensor:
        B, H, W, _ = x.shape
        h = window_reverse(out, self.window, *padded)
        if shift:
            h = torch.roll(h, shifts=(shift, shift), dims=(1, 2))
        x = x + drop_path(h[:, :H, :W], self.drop_path, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)

    def forward(self, x: Tensor) -> Tensor:
        win, bias, padded, shift = self._windows(x)
        a = self.attn
        q, k, v = a._project(win, win, win)
        out = a.out_proj(multi_head_attention(q, k, v, n_heads=a.n_heads, attn_mask=bias))
        return self._merge(x, out, padded, shift)

    def forward_with_attention(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Output and the attention probabilities per window, (B * nW, heads, M*M, M*M)."""
        win, bias, padded, shift = self._windows(x)
        out, probs = attention_with_weights(self.attn, win, bias)
        return self._merge(x, out, padded, shift), probs


class PatchMerging(nn.Module):
    """(B, H, W, C) -> (B, ceil(H/2), ceil(W/2), out): concatenate 2x2 neighbourhoods (4C), LN, Linear (sec. 3.1)."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        x, _ = pad_to_multiple(x, 2, dims=(1, 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))


class Swin(nn.Module):
    """Patch embedding, stages of Swin blocks with patch merging between them, pooled head."""

    def __init__(self, shape: tuple[int, int, int], num_classes: int, patch_size: int, dims: Sequence[int],
                 depths: Sequence[int], heads: Sequence[int], window: int, mlp_ratio: float, drop_path: float) -> None:
        super().__init__()
        self.image_shape, self.patch_size = shape, patch_size
        self.patch_embed = nn.Conv2d(shape[0], dims[0], patch_size, stride=patch_size)
        self.embed_norm = nn.LayerNorm(dims[0])
        total, index = sum(depths), 0
        self.stages = nn.ModuleList()
        self.merges = nn.ModuleList()
        for i, (d, n, h) in enumerate(zip(dims, depths, heads)):
            if i > 0:
                self.merges.append(PatchMerging(dims[i - 1], d))
            blocks = []
            for j in range(n):
                blocks.append(SwinBlock(d, h, window, 0 if j % 2 == 0 else window // 2, mlp_ratio,
                                        drop_path * index / max(total - 1, 1)))
                index += 1
            self.stages.append(nn.ModuleList(blocks))
        self.norm = nn.LayerNorm(dims[-1])
        self.num_features = dims[-1]
        self.head = nn.Linear(dims[-1], num_classes)

    def _embed(self, x: Tensor) -> Tensor:
        x, _ = pad_to_multiple(to_images(x, self.image_shape), self.patch_size)
        return self.embed_norm(self.patch_embed(x).permute(0, 2, 3, 1))  # (B, H/p, W/p, dims[0])

    def forward(self, x: Tensor) -> Tensor:
        h = self._embed(x)
        for i, stage in enumerate(self.stages):
            if i > 0:
                h = self.merges[i - 1](h)
            for block in stage:
                h = block(h)
        return self.head(self.norm(h).mean(dim=(1, 2)))

    def forward_with_attention(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Logits and each block's window attention probabilities, (B * nW, heads, M*M, M*M) per block."""
        h = self._embed(x)
        maps = []
        for i, stage in enumerate(self.stages):
            if i > 0:
                h = self.merges[i - 1](h)
            for block in stage:
                h, a = block.forward_with_attention(h)
                maps.append(a)
        return self.head(self.norm(h).mean(dim=(1, 2))), maps


@MODELS.register("swin", summary="Swin Transformer: (shifted) window attention with relative position bias, "
                                 "patch merging (Liu et al. 2021).")
def swin(
    input_shape: tuple[int, ...],
    num_classes: int,
    patch_size: int = 2,
    dims: Sequence[int] = (32, 64, 128),
    depths: Sequence[int] = (2, 2, 2),
    heads: Sequence[int] = (2, 4, 8),
    window: int = 7,
    mlp_ratio: float = 2.0,
    drop_path: float = 0.0,
) -> nn.Module:
    """Swin: ``patch_size`` p (28 px / 2 = 14 x 14 tokens), per-stage ``dims`` / ``depths`` / ``heads``, window
    M = ``window`` (shift M // 2 in every second block), MLP width ``mlp_ratio`` x dim."""
    name = "swin"
    shape = image_shape(input_shape, name)
    dims_t = as_int_tuple(dims, model=name, name="dims", what="stage")
    depths_t = as_int_tuple(depths, model=name, name="depths", what="stage")
    heads_t = as_int_tuple(heads, model=name, name="heads", what="stage")
    if not len(dims_t) == len(depths_t) == len(heads_t):
        raise ConfigError(f"model {name!r}: dims, depths and heads need one entry per stage, got {len(dims_t)}, "
                          f"{len(depths_t)} and {len(heads_t)}")
    for d, h in zip(dims_t, heads_t):
        if d % h:
            raise ConfigError(f"model {name!r}: every dim must be divisible by its heads, got dims {dims_t}, heads "
                              f"{heads_t}")
    check_positive(name, num_classes=num_classes, patch_size=patch_size, window=window)
    if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, (int, float)) or mlp_ratio <= 0:
        raise ConfigError(f"model {name!r}: mlp_ratio must be a positive number, got {mlp_ratio!r}")
    return Swin(shape, num_classes, patch_size, dims_t, depths_t, heads_t, window, float(mlp_ratio),
                check_rate(name, "drop_path", drop_path))
