"""Positional information for attention: sinusoidal, learned, rotary (RoPE) and ALiBi.

Self-attention is permutation-equivariant: without positions a Transformer sees a bag of tokens. Two ways to
give it order are *absolute* encodings added to the input (sinusoidal, learned) and *relative* ones applied inside
attention (rotary rotates queries and keys so that q_m . k_n depends on m - n; ALiBi adds a distance penalty to
the attention logits). Each is a pure function over tensors plus a thin module.

References:
    Vaswani et al. 2017, "Attention Is All You Need", NeurIPS (sinusoidal, sec. 3.5).
    Gehring et al. 2017, "Convolutional Sequence to Sequence Learning", ICML (learned absolute embeddings).
    Su et al. 2021, "RoFormer: Enhanced Transformer with Rotary Position Embedding", arXiv:2104.09864.
    Press, Smith & Lewis 2022, "Train Short, Test Long: Attention with Linear Biases Enables Input Length
        Extrapolation", ICLR.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from tricklab.layers.spec import LayerSpec


def _check_pos_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _check_x(x: object, d_model: int, max_len: int, who: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{who}: expected a Tensor of shape (B, T, {d_model}), got {type(x).__name__}")
    if x.dim() != 3 or x.shape[-1] != d_model:
        raise ValueError(f"{who}: expected x of shape (B, T, {d_model}), got {tuple(x.shape)}")
    if x.shape[1] > max_len:
        raise ValueError(f"{who}: sequence length {x.shape[1]} exceeds max_len={max_len}; build it with a larger "
                         f"max_len")
    return x


# ====================================================================================================== sinusoidal
def sinusoidal_encoding(
    length: int, d_model: int, *, base: float = 10000.0, dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """The fixed sinusoidal table of Vaswani et al. 2017, sec. 3.5, shape (length, d_model).

    PE[pos, 2i] = sin(pos / base^(2i / d_model)),  PE[pos, 2i+1] = cos(pos / base^(2i / d_model)).
    """
    _check_pos_int("length", length)
    _check_pos_int("d_model", d_model)
    if d_model % 2:
        raise ValueError(f"sinusoidal_encoding: d_model must be even (sin/cos pairs), got {d_model}")
    # computed in float64 so that large positions (4096+) keep their phase before the cast
    pos = torch.arange(length, dtype=torch.float64, device=device)[:, None]            # (T, 1)
    inv = base ** (-torch.arange(0, d_model, 2, dtype=torch.float64, device=device) / d_model)  # (D/2,)
    ang = pos * inv                                                                      # (T, D/2)
    pe = torch.stack([ang.sin(), ang.cos()], dim=-1).flatten(-2)                         # (T, D) interleaved
    return pe.to(dtype or torch.get_default_dtype())


class SinusoidalPositionalEncoding(nn.Module):
    """x + PE[:T] with the fixed sinusoidal table (no parameters); x is (B, T, d_model)."""

    pe: Tensor

    def __init__(self, d_model: int, max_len: int = 4096, base: float = 10000.0) -> None:
        super().__init__()
        self.d_model, self.max_len = _check_pos_int("d_model", d_model), _check_pos_int("max_len", max_len)
        # non-persistent: the table is a function of (max_len, d_model), not state worth checkpointing
        self.register_buffer("pe", sinusoidal_encoding(max_len, d_model, base=base), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        _check_x(x, self.d_model, self.max_len, type(self).__name__)
        return x + self.pe[: x.shape[1]].to(x.dtype)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, max_len={self.max_len}"


# ========================================================================================================= learned
class LearnedPositionalEmbedding(nn.Module):
    """x + P[:T] with a trained table P of shape (max_len, d_model) (Gehring et al. 2017; BERT, GPT-2)."""

    def __init__(self, max_len: int, d_model: int, init_std: float = 0.02) -> None:
        super().__init__()
        self.max_len, self.d_model = _check_pos_int("max_len", max_len), _check_pos_int("d_model", d_model)
        # std 0.02 as GPT-2 / BERT initialise their position tables
        self.weight = nn.Parameter(torch.randn(max_len, d_model) * init_std)

    def forward(self, x: Tensor) -> Tensor:
        _check_x(x, self.d_model, self.max_len, type(self).__name__)
        return x + self.weight[: x.shape[1]]

    def extra_repr(self) -> str:
        return f"max_len={self.max_len}, d_model={self.d_model}"


# ========================================================================================================== rotary
def rotary_cos_sin(
    length: int, head_dim: int, *, base: float = 10000.0, offset: int = 0, dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """cos and sin of the RoPE angles m * theta_i, each (length, head_dim // 2), for positions offset..offset+T-1.

    theta_i = base^(-2i / head_dim), i = 0..head_dim/2-1 (Su et al. 2021, eq. 15).
    """
    _check_pos_int("length", length)
    _check_pos_int("head_dim", head_dim)
    if head_dim % 2:
        raise ValueError(f"rotary: head_dim must be even (dimensions are rotated in pairs), got {head_dim}")
    if offset < 0:
        raise ValueError(f"rotary: offset must be >= 0, got {offset}")
    theta = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64, device=device) / head_dim)  # (hd/2,)
    pos = torch.arange(offset, offset + length, dtype=torch.float64, device=device)
    ang = pos[:, None] * theta                                                            # (T, hd/2)
    dt = dtype or torch.get_default_dtype()
    return ang.cos().to(dt), ang.sin().to(dt)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate consecutive pairs (x_2i, x_2i+1) of the last dim by the angles whose cos/sin are given.

    x: (..., T, head_dim); cos, sin: (T, head_dim // 2) (or broadcastable to (..., T, head_dim // 2)).
    Su et al. 2021, eq. 34: [x_2i, x_2i+1] -> [x_2i cos - x_2i+1 sin, x_2i sin + x_2i+1 cos].
    """
    if not isinstance(x, Tensor) or not isinstance(cos, Tensor) or not isinstance(sin, Tensor):
        raise TypeError("apply_rotary: x, cos and sin must be Tensors")
    if x.dim() < 2 or x.shape[-1] % 2:
        raise ValueError(f"apply_rotary: x must be (..., T, head_dim) with an even head_dim, got {tuple(x.shape)}")
    if cos.shape != sin.shape or cos.shape[-1] != x.shape[-1] // 2 or cos.shape[-2] != x.shape[-2]:
        raise ValueError(f"apply_rotary: cos/sin must be (T, head_dim/2) = ({x.shape[-2]}, {x.shape[-1] // 2}), "
                         f"got {tuple(cos.shape)} and {tuple(sin.shape)}; build them with rotary_cos_sin(T, head_dim)")
    pairs = x.unflatten(-1, (-1, 2))                  # (..., T, hd/2, 2)
    x1, x2 = pairs[..., 0], pairs[..., 1]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoPE) for per-head queries/keys of shape (B, H, T, head_dim).

    ``forward(x, offset=0)`` rotates position t of x by angle (offset + t) * theta_i; ``offset`` is the number of
    tokens already decoded (key/value cache length). No parameters.
    """

    def __init__(self, head_dim: int, base: float = 10000.0) -> None:
        super().__init__()
        self.head_dim = _check_pos_int("head_dim", head_dim)
        if head_dim % 2:
            raise ValueError(f"RotaryEmbedding: head_dim must be even, got {head_dim}")
        self.base = float(base)

    def cos_sin(self, length: int, offset: int = 0, *, dtype: torch.dtype | None = None,
                device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
        return rotary_cos_sin(length, self.head_dim, base=self.base, offset=offset, dtype=dtype, device=device)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() < 2 or x.shape[-1] != self.head_dim:
            raise ValueError(f"RotaryEmbedding: expected x of shape (..., T, {self.head_dim}), got "
                             f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
        cos, sin = self.cos_sin(x.shape[-2], offset, dtype=x.dtype, device=x.device)
        return apply_rotary(x, cos, sin)

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, base={self.base:g}"


# =========================================================================================================== ALiBi
def _pow2_slopes(n: int) -> list[float]:
    # geometric sequence starting at 2^(-8/n) with ratio 2^(-8/n): 2^(-8 i / n), i = 1..n
    return [2.0 ** (-8.0 * i / n) for i in range(1, n + 1)]


def alibi_slopes(n_heads: int) -> Tensor:
    """Per-head ALiBi slopes m_h, shape (n_heads,) (Press et al. 2022, sec. 3).

    For n a power of two: m_i = 2^(-8 i / n), i = 1..n. Otherwise, with p the largest power of two below n: the p
    slopes for p heads, then every other slope of the 2p-head sequence (its odd-numbered ones, i.e. those that
    interleave the first set) until n slopes — the rule of the authors' released code.
    """
    _check_pos_int("n_heads", n_heads)
    p = 2 ** int(math.floor(math.log2(n_heads)))
    slopes = _pow2_slopes(p)
    if p < n_heads:
        slopes += _pow2_slopes(2 * p)[0::2][: n_heads - p]
    return torch.tensor(slopes, dtype=torch.float64).to(torch.get_default_dtype())


def alibi_bias(n_heads: int, T: int, S: int | None = None, *, dtype: torch.dtype | None = None,
               device: torch.device | str | None = None) -> Tensor:
    """Additive ALiBi bias -m_h * |i - j|, shape (n_heads, T, S); add it to the attention logits.

    Queries are the *last* T of S positions (query i sits at S - T + i; S = T without a cache). Under a causal mask
    this is the paper's bias m * [-(i-1), ..., -1, 0]; the symmetric |i - j| extends it to bidirectional attention.
    """
    _check_pos_int("T", T)
    S = T if S is None else _check_pos_int("S", S)
    if S < T:
        raise ValueError(f"alibi_bias: key length S={S} must be >= query length T={T}")
    qpos = torch.arange(S - T, S, device=device, dtype=torch.float64)[:, None]
    kpos = torch.arange(S, device=device, dtype=torch.float64)[None, :]
    m = alibi_slopes(n_heads).to(device=device, dtype=torch.float64)
    return (-m[:, None, None] * (qpos - kpos).abs()).to(dtype or torch.get_default_dtype())


# ================================================================================================ layer registry
def _x(gen: torch.Generator, b: int = 2, t: int = 6, d: int = 8) -> tuple[Tensor, ...]:
    return (torch.randn(b, t, d, generator=gen),)


LAYER_SPECS: tuple[LayerSpec, ...] = (
    LayerSpec("sinusoidal_pe", "positional", lambda: SinusoidalPositionalEncoding(8, max_len=32), _x,
              "x + fixed sin/cos position table (Vaswani et al. 2017)"),
    LayerSpec("learned_pe", "positional", lambda: LearnedPositionalEmbedding(32, 8), _x,
              "x + trained absolute position table"),
    LayerSpec("rotary_embedding", "positional", lambda: RotaryEmbedding(8),
              lambda g: (torch.randn(2, 2, 6, 8, generator=g),),
              "rotate (B,H,T,hd) queries/keys by position (RoPE, Su et al. 2021)"),
)
