"""Attention layers: multi-head attention on SDPA (+ KV cache), Transformer blocks, sparse, Linformer, axial and
chunked (memory-efficient) attention.

Conventions (the ones of ``nn.MultiheadAttention``, so that masks can be passed to either):
    * batch first: sequences are (B, T, D); per-head tensors are (B, H, T, head_dim).
    * a **bool** ``attn_mask`` marks with True the (query, key) pairs that may NOT attend; a float ``attn_mask`` is
      added to the logits. Shapes (T, S) or anything broadcastable to (B, H, T, S).
    * ``key_padding_mask`` is (B, S) bool, True = padding (the key is ignored).
    * ``is_causal`` lets query i see keys j <= i. When there are fewer queries than keys (decoding with a cache),
      queries are the *last* T of S positions (bottom-right alignment), so query i sees keys j <= S - T + i.
    * a query row whose keys are all masked has no defined softmax and comes out NaN, as in torch.

References:
    Vaswani et al. 2017, "Attention Is All You Need", NeurIPS.
    Xiong et al. 2020, "On Layer Normalization in the Transformer Architecture", ICML (pre-LN vs post-LN).
    Child, Gray, Radford & Sutskever 2019, "Generating Long Sequences with Sparse Transformers", arXiv:1904.10509.
    Wang, Li, Khabsa, Fang & Ma 2020, "Linformer: Self-Attention with Linear Complexity", arXiv:2006.04768.
    Ho, Kalchbrenner, Weissenborn & Salimans 2019, "Axial Attention in Multidimensional Transformers",
        arXiv:1912.12180.
    Rabe & Staats 2021, "Self-attention Does Not Need O(n^2) Memory", arXiv:2112.05682;
    Dao et al. 2022, "FlashAttention", NeurIPS (the online softmax).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from tricklab.layers.positional import alibi_bias, apply_rotary, rotary_cos_sin
from tricklab.layers.spec import LayerSpec

AttnImpl = Literal["sdpa", "naive", "chunked"]
SparseKind = Literal["local", "strided", "fixed"]
_IMPLS = ("sdpa", "naive", "chunked")


# ================================================================================================ mask plumbing
def _check_tensor(name: str, x: object, dim: int | None = None) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a Tensor, got {type(x).__name__}")
    if dim is not None and x.dim() != dim:
        raise ValueError(f"{name} must be {dim}-D, got shape {tuple(x.shape)}")
    return x


def causal_mask(T: int, S: int | None = None, *, device: torch.device | str | None = None) -> Tensor:
    """Bool (T, S) mask, True = blocked, letting query i (at position S - T + i) see keys j <= S - T + i."""
    S = T if S is None else S
    if S < T:
        raise ValueError(f"causal_mask: key length S={S} must be >= query length T={T}")
    q = torch.arange(S - T, S, device=device)[:, None]
    return torch.arange(S, device=device)[None, :] > q


def attention_bias(
    B: int, H: int, T: int, S: int, *, attn_mask: Tensor | None = None, key_padding_mask: Tensor | None = None,
    is_causal: bool = False, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None,
) -> Tensor | None:
    """Merge the three kinds of mask into one additive float bias broadcastable to (B, H, T, S), or None.

    Blocked pairs get -inf; a float ``attn_mask`` is added as is.
    """
    bias: Tensor | None = None
    if attn_mask is not None:
        _check_tensor("attn_mask", attn_mask)
        if attn_mask.dim() not in (2, 4) or attn_mask.shape[-2:] != (T, S):
            raise ValueError(f"attn_mask must be (T, S) = ({T}, {S}) or broadcastable to (B, H, T, S) = "
                             f"({B}, {H}, {T}, {S}), got {tuple(attn_mask.shape)}")
        if attn_mask.dim() == 4 and any(a not in (1, b) for a, b in zip(attn_mask.shape[:2], (B, H))):
            raise ValueError(f"attn_mask of shape {tuple(attn_mask.shape)} does not broadcast to (B, H) = ({B}, {H})")
        if attn_mask.dtype == torch.bool:
            bias = torch.zeros(attn_mask.shape, dtype=dtype, device=device).masked_fill(attn_mask, float("-inf"))
        elif attn_mask.is_floating_point():
            bias = attn_mask.to(dtype)
        else:
            raise TypeError(f"attn_mask must be bool (True = blocked) or floating point (additive), got "
                            f"{attn_mask.dtype}")
        if bias.dim() == 2:
            bias = bias[None, None]
    if key_padding_mask is not None:
        _check_tensor("key_padding_mask", key_padding_mask)
        if key_padding_mask.dtype != torch.bool:
            raise TypeError(f"key_padding_mask must be bool (True = padding), got {key_padding_mask.dtype}; "
                            f"use mask.bool()")
        if key_padding_mask.shape != (B, S):
            raise ValueError(f"key_padding_mask must be (B, S) = ({B}, {S}), got {tuple(key_padding_mask.shape)}")
        kp = torch.zeros((B, 1, 1, S), dtype=dtype, device=device).masked_fill(
            key_padding_mask[:, None, None, :], float("-inf"))
        bias = kp if bias is None else bias + kp
    if is_causal:
        cm = torch.zeros((1, 1, T, S), dtype=dtype, device=device).masked_fill(
            causal_mask(T, S, device=device), float("-inf"))
        bias = cm if bias is None else bias + cm
    return bias


def attention_naive(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None = None, *, dropout_p: float = 0.0,
                    training: bool = False, scale: float | None = None) -> Tensor:
    """The textbook formula softmax(Q K^T / sqrt(d) + bias) V on (..., T, d) tensors (Vaswani et al. 2017, eq. 1).

    Materialises the (T, S) score matrix: the reference path the fast ones are checked against.
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q @ k.transpose(-1, -2)) * scale                  # (..., T, S)
    if bias is not None:
        scores = scores + bias
    p = torch.softmax(scores, dim=-1)
    if dropout_p > 0.0 and training:
        p = F.dropout(p, dropout_p)
    return p @ v                                                # (..., T, dv)


def _split_heads(x: Tensor, n_heads: int) -> Tensor:
    # (B, T, D) -> (B, H, T, D/H)
    return x.unflatten(-1, (n_heads, -1)).transpose(1, 2)


def _merge_heads(x: Tensor) -> Tensor:
    # (B, H, T, hd) -> (B, T, H*hd)
    return x.transpose(1, 2).flatten(2)


def _attend_heads(
    q: Tensor, k: Tensor, v: Tensor, *, bias: Tensor | None, causal_only: bool, dropout_p: float, training: bool,
    impl: str, chunk_size: int = 128,
) -> Tensor:
    """Attention on per-head tensors (B, H, T, hd) with a precomputed additive bias."""
    if impl == "naive":
        return attention_naive(q, k, v, bias, dropout_p=dropout_p, training=training)
    if impl == "chunked":
        if dropout_p > 0.0 and training:
            raise ValueError("impl='chunked' does not implement attention dropout; use impl='sdpa' or dropout=0")
        if bias is not None and not causal_only:
            raise ValueError("impl='chunked' supports only is_causal; for attn_mask / key_padding_mask use "
                             "impl='sdpa'")
        return chunked_attention(q, k, v, chunk_size, is_causal=causal_only)
    if impl != "sdpa":
        raise ValueError(f"impl must be one of {_IMPLS}, got {impl!r}")
    p = dropout_p if training else 0.0
    if causal_only and q.shape[-2] == k.shape[-2]:
        # no other mask and square: let SDPA pick its causal kernel instead of reading a (T, T) bias
        return F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=p)


def multi_head_attention(
    q: Tensor, k: Tensor, v: Tensor, *, n_heads: int, attn_mask: Tensor | None = None,
    key_padding_mask: Tensor | None = None, is_causal: bool = False, dropout_p: float = 0.0, training: bool = False,
    impl: AttnImpl = "sdpa", chunk_size: int = 128,
) -> Tensor:
    """Multi-head scaled dot-product attention of already-projected q (B, T, D), k (B, S, D), v (B, S, Dv).

    Splits D into ``n_heads`` heads, computes softmax(Q_h K_h^T / sqrt(D/H) + mask) V_h per head and concatenates
    the heads back to (B, T, Dv) (Vaswani et al. 2017, eq. 1 and sec. 3.2.2; the projections live in
    :class:`MultiHeadAttention`). ``impl="sdpa"`` uses ``F.scaled_dot_product_attention``; ``"naive"`` the explicit
    formula; ``"chunked"`` :func:`chunked_attention` (causal or unmasked only, no dropout). Mask conventions are in
    the module docstring.
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        _check_tensor(name, t, 3)
    if not isinstance(n_heads, int) or n_heads <= 0:
        raise ValueError(f"n_heads must be a positive int, got {n_heads!r}")
    B, T, D = q.shape
    if k.shape[0] != B or v.shape[0] != B or k.shape[1] != v.shape[1] or k.shape[2] != D:
        raise ValueError(f"shapes do not fit: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}; need "
                         f"q (B, T, D), k (B, S, D), v (B, S, Dv)")
    if D % n_heads or v.shape[2] % n_heads:
        raise ValueError(f"embedding dims {D} (q/k) and {v.shape[2]} (v) must be divisible by n_heads={n_heads}")
    if impl not in _IMPLS:
        raise ValueError(f"impl must be one of {_IMPLS}, got {impl!r}")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")
    S = k.shape[1]
    bias = attention_bias(B, n_heads, T, S, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                          is_causal=is_causal, dtype=q.dtype, device=q.device)
    causal_only = is_causal and attn_mask is None and key_padding_mask is None
    out = _attend_heads(_split_heads(q, n_heads), _split_heads(k, n_heads), _split_heads(v, n_heads), bias=bias,
                        causal_only=causal_only, dropout_p=dropout_p, training=training, impl=impl,
                        chunk_size=chunk_size)
    return _merge_heads(out)


# ======================================================================================================= KV cache
class KVCache:
    """Keys and values seen so far by one attention layer, per head: (B, H, S, hd) each (rotary already applied).

    Pass the same object as ``cache=`` at every decoding step; the layer appends the new keys/values and attends
    over all of them. ``len(cache)`` is the number of cached positions.
    """

    def __init__(self) -> None:
        self.k: Tensor | None = None
        self.v: Tensor | None = None

    def __len__(self) -> int:
        return 0 if self.k is None else int(self.k.shape[-2])

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append (B, H, t, hd) keys/values; returns all keys and values so far, (B, H, S + t, hd)."""
        if self.k is None or self.v is None:
            self.k, self.v = k, v
        else:
            if k.shape[:2] != self.k.shape[:2] or k.shape[-1] != self.k.shape[-1]:
                raise ValueError(f"KVCache: new keys {tuple(k.shape)} do not match cached {tuple(self.k.shape)} "
                                 f"(batch, heads or head dim changed); call cache.reset() for a new sequence")
            self.k, self.v = torch.cat([self.k, k], dim=-2), torch.cat([self.v, v], dim=-2)
        return self.k, self.v

    def reset(self) -> None:
        self.k = self.v = None


# ==================================================================================================== MHA module
class MultiHeadAttention(nn.Module):
    """Multi-head attention with input and output projections, batch first, on ``F.scaled_dot_product_attention``.

    Parameters have ``nn.MultiheadAttention``'s names and shapes (``in_proj_weight`` (3D, D) and ``in_proj_bias``,
    or ``q_proj_weight`` / ``k_proj_weight`` / ``v_proj_weight`` when ``kdim``/``vdim`` differ from ``d_model``;
    ``out_proj``), so its ``state_dict`` loads into ours. Extras: ``rotary`` (RoPE on per-head q/k), ``alibi``
    (ALiBi bias), ``impl`` ("sdpa", "naive", "chunked") and a :class:`KVCache` for incremental decoding.

    ``forward(query, key=None, value=None, *, attn_mask=None, key_padding_mask=None, is_causal=False, cache=None)``
    -> (B, T, D). ``key``/``value`` default to ``query`` (self-attention).
    """

    def __init__(
        self, d_model: int, n_heads: int, dropout: float = 0.0, bias: bool = True, kdim: int | None = None,
        vdim: int | None = None, *, rotary: bool = False, alibi: bool = False, rotary_base: float = 10000.0,
        impl: AttnImpl = "sdpa", chunk_size: int = 128,
    ) -> None:
        super().__init__()
        if not isinstance(d_model, int) or not isinstance(n_heads, int) or d_model <= 0 or n_heads <= 0:
            raise ValueError(f"d_model and n_heads must be positive ints, got {d_model!r}, {n_heads!r}")
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if impl not in _IMPLS:
            raise ValueError(f"impl must be one of {_IMPLS}, got {impl!r}")
        if rotary and (d_model // n_heads) % 2:
            raise ValueError(f"rotary needs an even head dim, got d_model/n_heads = {d_model // n_heads}")
        self.d_model, self.n_heads, self.head_dim = d_model, n_heads, d_model // n_heads
        self.kdim, self.vdim = kdim or d_model, vdim or d_model
        self.dropout, self.impl, self.chunk_size = float(dropout), impl, chunk_size
        self.rotary, self.alibi, self.rotary_base = rotary, alibi, float(rotary_base)
        self._qkv_same_embed_dim = self.kdim == d_model and self.vdim == d_model
        if self._qkv_same_embed_dim:
            self.in_proj_weight = nn.Parameter(torch.empty(3 * d_model, d_model))
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        else:
            self.register_parameter("in_proj_weight", None)
            self.q_proj_weight = nn.Parameter(torch.empty(d_model, d_model))
            self.k_proj_weight = nn.Parameter(torch.empty(d_model, self.kdim))
            self.v_proj_weight = nn.Parameter(torch.empty(d_model, self.vdim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * d_model)) if bias else None
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.MultiheadAttention's init: Xavier-uniform projections, zero biases
        for w in (self.in_proj_weight, self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
            if w is not None:
                nn.init.xavier_uniform_(w)
        if self.in_proj_bias is not None:
            nn.init.zeros_(self.in_proj_bias)
        if self.out_proj.bias is not None:
            nn.init.zeros_(self.out_proj.bias)

    def _project(self, query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        D = self.d_model
        if self.in_proj_weight is not None:
            wq, wk, wv = self.in_proj_weight.split(D)
        else:
            wq, wk, wv = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        bq = bk = bv = None
        if self.in_proj_bias is not None:
            bq, bk, bv = self.in_proj_bias.split(D)
        if query is key and key is value and self.in_proj_weight is not None:
            # self-attention: one (T, 3D) matmul instead of three
            return F.linear(query, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        return F.linear(query, wq, bq), F.linear(key, wk, bk), F.linear(value, wv, bv)

    def forward(
        self, query: Tensor, key: Tensor | None = None, value: Tensor | None = None, *,
        attn_mask: Tensor | None = None, key_padding_mask: Tensor | None = None, is_causal: bool = False,
        cache: KVCache | None = None,
    ) -> Tensor:
        _check_tensor("query", query, 3)
        key = query if key is None else key
        value = key if value is None else value
        _check_tensor("key", key, 3)
        _check_tensor("value", value, 3)
        if query.shape[-1] != self.d_model or key.shape[-1] != self.kdim or value.shape[-1] != self.vdim:
            raise ValueError(f"expected query (B, T, {self.d_model}), key (B, S, {self.kdim}), value (B, S, "
                             f"{self.vdim}); got {tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}")
        if key.shape[:2] != value.shape[:2] or key.shape[0] != query.shape[0]:
            raise ValueError(f"batch/length of query {tuple(query.shape)}, key {tuple(key.shape)}, value "
                             f"{tuple(value.shape)} do not fit")
        if cache is not None and not isinstance(cache, KVCache):
            raise TypeError(f"cache must be a KVCache, got {type(cache).__name__}")
        q, k, v = self._project(query, key, value)
        H = self.n_heads
        q, k, v = _split_heads(q, H), _split_heads(k, H), _split_heads(v, H)     # (B, H, T|S, hd)
        past = len(cache) if cache is not None else 0
        if self.rotary:
            # keys are rotated once, at their own absolute positions, before they enter the cache
            cq, sq = rotary_cos_sin(q.shape[-2], self.head_dim, base=self.rotary_base, offset=past, dtype=q.dtype,
                                    device=q.device)
            ck, sk = rotary_cos_sin(k.shape[-2], self.head_dim, base=self.rotary_base, offset=past, dtype=k.dtype,
                                    device=k.device)
            q, k = apply_rotary(q, cq, sq), apply_rotary(k, ck, sk)
        if cache is not None:
            k, v = cache.append(k, v)
        B, T, S = q.shape[0], q.shape[-2], k.shape[-2]
        bias = attention_bias(B, H, T, S, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                              is_causal=is_causal, dtype=q.dtype, device=q.device)
        causal_only = is_causal and attn_mask is None and key_padding_mask is None and not self.alibi
        if self.alibi:
            ab = alibi_bias(H, T, S, dtype=q.dtype, device=q.device)[None]           # (1, H, T, S)
            bias = ab if bias is None else bias + ab
        out = _attend_heads(q, k, v, bias=bias, causal_only=causal_only, dropout_p=self.dropout,
                            training=self.training, impl=self.impl, chunk_size=self.chunk_size)
        return self.out_proj(_merge_heads(out))

    def extra_repr(self) -> str:
        extra = "".join(f", {n}=True" for n in ("rotary", "alibi") if getattr(self, n))
        return f"d_model={self.d_model}, n_heads={self.n_heads}, impl={self.impl!r}{extra}"


# ============================================================================================ Transformer blocks
class TransformerBlock(nn.Module):
    """Encoder block: self-attention + MLP (d_model -> d_ff -> d_model, GELU), each with a residual and LayerNorm.

    ``norm_first=True`` (pre-LN, Xiong et al. 2020): x + Attn(LN(x)), then x + MLP(LN(x)) — gradients are well
    behaved at init, so no warm-up is needed. ``norm_first=False`` (post-LN, Vaswani et al. 2017): LN(x + Attn(x)),
    then LN(x + MLP(x)). Names and maths match ``nn.TransformerEncoderLayer(activation="gelu", batch_first=True)``
    so its state_dict loads into this block. ``causal`` adds a causal mask; ``rotary`` / ``alibi`` apply inside
    attention. ``forward(x (B, T, D), key_padding_mask (B, T) bool, True = padding) -> (B, T, D)``.
    """

    def __init__(
        self, d_model: int, n_heads: int, d_ff: int | None = None, dropout: float = 0.0, norm_first: bool = True,
        causal: bool = False, rotary: bool = False, alibi: bool = False,
    ) -> None:
        super().__init__()
        d_ff = 4 * d_model if d_ff is None else d_ff
        if not isinstance(d_ff, int) or d_ff <= 0:
            raise ValueError(f"d_ff must be a positive int, got {d_ff!r}")
        self.norm_first, self.causal = norm_first, causal
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout, rotary=rotary, alibi=alibi)
        self.linear1, self.linear2 = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.dropout, self.dropout1, self.dropout2 = nn.Dropout(dropout), nn.Dropout(dropout), nn.Dropout(dropout)

    def _sa(self, x: Tensor, key_padding_mask: Tensor | None) -> Tensor:
        return self.dropout1(self.self_attn(x, key_padding_mask=key_padding_mask, is_causal=self.causal))

    def _ff(self, x: Tensor) -> Tensor:
        return self.dropout2(self.linear2(self.dropout(F.gelu(self.linear1(x)))))

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        if self.norm_first:
            x = x + self._sa(self.norm1(x), key_padding_mask)
            return x + self._ff(self.norm2(x))
        x = self.norm1(x + self._sa(x, key_padding_mask))
        return self.norm2(x + self._ff(x))


class TransformerDecoderBlock(nn.Module):
    """Decoder block: causal self-attention, cross-attention to ``memory``, MLP (GELU); pre-LN or post-LN.

    Names and maths match ``nn.TransformerDecoderLayer(activation="gelu", batch_first=True)`` with a causal
    ``tgt_mask``. ``forward(x (B, T, D), memory (B, S, D), memory_key_padding_mask (B, S) bool) -> (B, T, D)``.
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int | None = None, dropout: float = 0.0,
                 norm_first: bool = True) -> None:
        super().__init__()
        d_ff = 4 * d_model if d_ff is None else d_ff
        if not isinstance(d_ff, int) or d_ff <= 0:
            raise ValueError(f"d_ff must be a positive int, got {d_ff!r}")
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.multihead_attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.linear1, self.linear2 = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d_model), nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.dropout1, self.dropout2, self.dropout3 = nn.Dropout(dropout), nn.Dropout(dropout), nn.Dropout(dropout)

    def _sa(self, x: Tensor) -> Tensor:
        return self.dropout1(self.self_attn(x, is_causal=True))

    def _ca(self, x: Tensor, memory: Tensor, mkpm: Tensor | None) -> Tensor:
        return self.dropout2(self.multihead_attn(x, memory, memory, key_padding_mask=mkpm))

    def _ff(self, x: Tensor) -> Tensor:
        return self.dropout3(self.linear2(self.dropout(F.gelu(self.linear1(x)))))

    def forward(self, x: Tensor, memory: Tensor, memory_key_padding_mask: Tensor | None = None) -> Tensor:
        if self.norm_first:
            x = x + self._sa(self.norm1(x))
            x = x + self._ca(self.norm2(x), memory, memory_key_padding_mask)
            return x + self._ff(self.norm3(x))
        x = self.norm1(x + self._sa(x))
        x = self.norm2(x + self._ca(x, memory, memory_key_padding_mask))
        return self.norm3(x + self._ff(x))


# =============================================================================================== sparse attention
def sparse_mask(T: int, kind: SparseKind, *, window: int | None = None, stride: int | None = None,
                causal: bool = True, device: torch.device | str | None = None) -> Tensor:
    """Bool (T, T) mask of a Sparse Transformer pattern (Child et al. 2019, sec. 4.2), True = blocked.

    ``local``: query i sees keys with 0 <= i - j < window (|i - j| < window when not causal).
    ``strided``: the union of the two heads of the strided pattern, A1 = {j : i - j < stride} (local) and
    A2 = {j : (i - j) mod stride == 0} (every stride-th key back).
    ``fixed``: A1 = {j : floor(j / stride) == floor(i / stride)} (own block) and A2 = {j : j mod stride >=
    stride - window} (the last ``window`` "summary" positions of every block; ``window`` is c in the paper).
    ``causal`` also blocks j > i.
    """
    if not isinstance(T, int) or T <= 0:
        raise ValueError(f"sparse_mask: T must be a positive int, got {T!r}")
    i = torch.arange(T, device=device)[:, None]
    j = torch.arange(T, device=device)[None, :]
    d = i - j
    if kind == "local":
        if not isinstance(window, int) or window <= 0:
            raise ValueError(f"sparse_mask(kind='local') needs window=<positive int>, got {window!r}")
        allowed = d.abs() < window
    elif kind == "strided":
        if not isinstance(stride, int) or stride <= 0:
            raise ValueError(f"sparse_mask(kind='strided') needs stride=<positive int>, got {stride!r}")
        allowed = (d.abs() < stride) | (d % stride == 0)
    elif kind == "fixed":
        if not isinstance(stride, int) or stride <= 0:
            raise ValueError(f"sparse_mask(kind='fixed') needs stride=<positive int>, got {stride!r}")
        c = 1 if window is None else window
        if not isinstance(c, int) or not 0 < c <= stride:
            raise ValueError(f"sparse_mask(kind='fixed'): window (c, summary positions per block) must be an int in "
                             f"[1, stride={stride}], got {window!r}")
        allowed = (i // stride == j // stride) | (j % stride >= stride - c)
    else:
        raise ValueError(f"sparse_mask: kind must be 'local', 'strided' or 'fixed', got {kind!r}")
    if causal:
        allowed = allowed & (d >= 0)
    return ~allowed


def local_attention(q: Tensor, k: Tensor, v: Tensor, window: int, *, causal: bool = True) -> Tensor:
    """Banded attention in blocks: query i sees keys with 0 <= i - j < window (|i - j| < window if not causal).

    q, k, v: (..., T, d). The sequence is cut into blocks of ``window`` positions; each block of queries attends to
    its own and the previous key block (and the next one when not causal), so time and memory are O(T * window)
    instead of O(T^2). Same result as dense attention with ``sparse_mask(T, "local", window=window)``.
    """
    if not isinstance(window, int) or window <= 0:
        raise ValueError(f"local_attention: window must be a positive int, got {window!r}")
    T, w = q.shape[-2], window
    nb = -(-T // w)
    pad = nb * w - T
    if pad:
        # padded keys are at positions >= T; for real queries they fall outside the band or are masked below
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
    qb = q.unflatten(-2, (nb, w))                                          # (..., nb, w, d)
    kb, vb = k.unflatten(-2, (nb, w)), v.unflatten(-2, (nb, w))

    def neighbours(t: Tensor) -> Tensor:
        prev = F.pad(t, (0, 0, 0, 0, 1, 0))[..., :-1, :, :]                # block b-1 (zeros before block 0)
        parts = [prev, t]
        if not causal:
            parts.append(F.pad(t, (0, 0, 0, 0, 0, 1))[..., 1:, :, :])       # block b+1
        return torch.cat(parts, dim=-2)                                    # (..., nb, 2w or 3w, d)

    kn, vn = neighbours(kb), neighbours(vb)
    nk = kn.shape[-2]
    # query r of block b sits at b*w + r, key c of its neighbourhood at (b-1)*w + c: the offset i - j = w + r - c
    # does not depend on b, so the band is one (w, nk) pattern; only the edges (keys before 0 or in the padding
    # after T) depend on the block, an (nb, 1, nk) term
    r = torch.arange(w, device=q.device)[:, None]
    c = torch.arange(nk, device=q.device)[None, :]
    d = w + r - c
    band = (d >= 0) & (d < w) if causal else d.abs() < w                  # (w, nk)
    kj = (torch.arange(nb, device=q.device)[:, None] - 1) * w + torch.arange(nk, device=q.device)[None, :]
    edge = ((kj >= 0) & (kj < T))[:, None, :]                              # (nb, 1, nk)
    neg = torch.tensor(float("-inf"), dtype=q.dtype, device=q.device)
    zero = torch.zeros((), dtype=q.dtype, device=q.device)
    bias = torch.where(band, zero, neg) + torch.where(edge, zero, neg)      # (nb, w, nk)
    # explicit softmax: with a float mask SDPA's CPU path falls back to its math kernel plus a NaN guard for fully
    # masked rows, which cannot occur here (every query sees itself)
    out = attention_naive(qb, kn, vn, bias)                                # (..., nb, w, dv)
    return out.flatten(-3, -2)[..., :T, :]


class SparseAttention(nn.Module):
    """Multi-head self-attention restricted to a Sparse Transformer pattern (Child et al. 2019).

    ``kind="local"`` runs :func:`local_attention` (blocked, O(T * window)); ``"strided"`` and ``"fixed"`` run dense
    SDPA with the :func:`sparse_mask` (same result as the paper's kernels, but O(T^2) work: the mask saves no
    compute here). Projections are those of :class:`MultiHeadAttention`. ``forward(x (B, T, D)) -> (B, T, D)``.
    """

    def __init__(self, d_model: int, n_heads: int, kind: SparseKind = "local", *, window: int | None = None,
                 stride: int | None = None, causal: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        if kind not in ("local", "strided", "fixed"):
            raise ValueError(f"kind must be 'local', 'strided' or 'fixed', got {kind!r}")
        sparse_mask(2, kind, window=window, stride=stride)    # validates window/stride once, here
        self.kind, self.window, self.stride, self.causal = kind, window, stride, causal
        self.attn = MultiHeadAttention(d_model, n_heads, dropout)

    def forward(self, x: Tensor) -> Tensor:
        _check_tensor("x", x, 3)
        if self.kind != "local":
            mask = sparse_mask(x.shape[1], self.kind, window=self.window, stride=self.stride, causal=self.causal,
                               device=x.device)
            return self.attn(x, attn_mask=mask)
        a = self.attn
        if x.shape[-1] != a.d_model:
            raise ValueError(f"expected x (B, T, {a.d_model}), got {tuple(x.shape)}")
        q, k, v = (_split_heads(t, a.n_heads) for t in a._project(x, x, x))
        assert self.window is not None
        out = local_attention(q, k, v, self.window, causal=self.causal)
        return a.out_proj(_merge_heads(out))

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, window={self.window}, stride={self.stride}, causal={self.causal}"


# ====================================================================================================== Linformer
def linformer_attention(q: Tensor, k: Tensor, v: Tensor, E: Tensor, F_: Tensor, *,
                        key_padding_mask: Tensor | None = None) -> Tensor:
    """Linformer attention (Wang et al. 2020, eq. 7) on per-head q, k, v (B, H, T, d) with E, F_ (k_proj, n).

    head = softmax(Q (E_T K)^T / sqrt(d)) (F_T V), where E_T, F_T are the first T columns of E, F (a sequence shorter
    than n is the same as one zero-padded to n). Cost O(T k) instead of O(T^2). Padded keys (key_padding_mask True)
    are zeroed before the projection.
    """
    T = k.shape[-2]
    if E.dim() != 2 or E.shape != F_.shape or T > E.shape[1]:
        raise ValueError(f"E and F must both be (k, n) with n >= sequence length {T}; got {tuple(E.shape)}, "
                         f"{tuple(F_.shape)}")
    if key_padding_mask is not None:
        keep = (~key_padding_mask).to(k.dtype)[:, None, :, None]              # (B, 1, T, 1)
        k, v = k * keep, v * keep
    kp = E[:, :T] @ k                                                          # (B, H, k, d)
    vp = F_[:, :T] @ v
    return F.scaled_dot_product_attention(q, kp, vp)


class LinformerAttention(nn.Module):
    """Multi-head self-attention with keys and values projected along length, T -> k (Wang et al. 2020).

    E, F (k, seq_len) are shared by all heads (the paper's headwise sharing; ``share_kv=True`` also ties F = E).
    Inputs may be shorter than ``seq_len`` (the first T columns are used); not causal (the projection mixes future
    positions). ``forward(x (B, T, D), key_padding_mask=None) -> (B, T, D)``.
    """

    def __init__(self, d_model: int, n_heads: int, seq_len: int, k: int, *, share_kv: bool = False,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if not isinstance(seq_len, int) or not isinstance(k, int) or seq_len <= 0 or k <= 0:
            raise ValueError(f"seq_len and k must be positive ints, got {seq_len!r}, {k!r}")
        self.seq_len, self.k, self.share_kv = seq_len, k, share_kv
        self.attn = MultiHeadAttention(d_model, n_heads, dropout)
        # Xavier-uniform over (k, n) keeps the projected keys on the scale of the keys; the paper's analysis uses a
        # random (JL) projection, which this is at init
        self.E = nn.Parameter(nn.init.xavier_uniform_(torch.empty(k, seq_len)))
        self.F = None if share_kv else nn.Parameter(nn.init.xavier_uniform_(torch.empty(k, seq_len)))

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        _check_tensor("x", x, 3)
        a = self.attn
        if x.shape[-1] != a.d_model or x.shape[1] > self.seq_len:
            raise ValueError(f"expected x (B, T <= {self.seq_len}, {a.d_model}), got {tuple(x.shape)}; build the "
                             f"layer with a larger seq_len for longer inputs")
        if key_padding_mask is not None and (key_padding_mask.dtype != torch.bool
                                             or key_padding_mask.shape != x.shape[:2]):
            raise ValueError(f"key_padding_mask must be bool (B, T) = {tuple(x.shape[:2])}")
        q, k, v = (_split_heads(t, a.n_heads) for t in a._project(x, x, x))
        Fm = self.E if self.F is None else self.F
        out = linformer_attention(q, k, v, self.E, Fm, key_padding_mask=key_padding_mask)
        return a.out_proj(_merge_heads(out))

    def extra_repr(self) -> str:
        return f"seq_len={self.seq_len}, k={self.k}, share_kv={self.share_kv}"


# ========================================================================================================= axial
class AxialAttention(nn.Module):
    """Axial attention on 2-D inputs (B, H, W, D) (Ho et al. 2019): attention along each row, then each column.

    y = RowAttn(x) (every row of W positions attends within itself), z = ColAttn(y) (every column of H positions);
    two such steps give every output a full H x W receptive field at O(HW (H + W)) cost instead of O((HW)^2).
    ``forward(x (B, H, W, D)) -> (B, H, W, D)``.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.row_attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.col_attn = MultiHeadAttention(d_model, n_heads, dropout)

    def forward(self, x: Tensor) -> Tensor:
        _check_tensor("x", x, 4)
        B, H, W, D = x.shape
        y = self.row_attn(x.reshape(B * H, W, D)).view(B, H, W, D)            # rows: sequences of length W
        yc = y.transpose(1, 2).reshape(B * W, H, D)                           # columns: sequences of length H
        return self.col_attn(yc).view(B, W, H, D).transpose(1, 2)


# ========================================================================================= chunked (memory-efficient)
def _query_chunk(q: Tensor, k: Tensor, v: Tensor, q_start: int, chunk_size: int, is_causal: bool, scale: float
                 ) -> Tensor:
    """One query chunk q (..., tq, d) against all keys, key chunk by key chunk, with the online softmax.

    Running per-query max m, normaliser l = sum exp(s - m) and accumulator acc = sum exp(s - m) v; a new chunk with
    max m' rescales the old terms by exp(m - m') (Rabe & Staats 2021, sec. 3; Milakov & Gimelshein 2018).
    """
    tq, S = q.shape[-2], k.shape[-2]
    m = q.new_full((*q.shape[:-1], 1), float("-inf"))
    l_ = q.new_zeros((*q.shape[:-1], 1))
    acc = q.new_zeros((*q.shape[:-1], v.shape[-1]))
    last_key = S if not is_causal else min(S, q_start + tq)   # keys after the last query of the chunk never count
    qpos = torch.arange(q_start, q_start + tq, device=q.device)[:, None]
    for ks in range(0, last_key, chunk_size):
        ke = min(ks + chunk_size, last_key)
        s = (q @ k[..., ks:ke, :].transpose(-1, -2)) * scale                 # (..., tq, tk)
        if is_causal and ke - 1 > q_start:                                   # chunk touches the diagonal
            s = s.masked_fill(torch.arange(ks, ke, device=q.device)[None, :] > qpos, float("-inf"))
        m_new = torch.maximum(m, s.amax(dim=-1, keepdim=True))
        p = torch.exp(s - m_new)
        corr = torch.exp(m - m_new)                                          # exp(-inf) = 0 on the first chunk
        l_ = l_ * corr + p.sum(dim=-1, keepdim=True)
        acc = acc * corr + p @ v[..., ks:ke, :]
        m = m_new
    return acc / l_


def chunked_attention(q: Tensor, k: Tensor, v: Tensor, chunk_size: int, is_causal: bool = False, *,
                      checkpoint_chunks: bool = True) -> Tensor:
    """softmax(Q K^T / sqrt(d)) V computed in (chunk_size x chunk_size) tiles with the online softmax.

    q (..., T, d), k (..., S, d), v (..., S, dv). Queries are processed chunk by chunk, each scanning key chunks
    with a running max and normaliser, so no (T, S) matrix is ever held: extra memory is O(chunk_size^2) per
    batch-head, not O(T S). ``is_causal`` requires T == S (query i sees keys j <= i); key chunks wholly in a
    chunk's future are skipped. With ``checkpoint_chunks`` (and grad enabled) each query chunk is recomputed in the
    backward pass (``torch.utils.checkpoint``) instead of storing its per-tile probabilities, as Rabe & Staats do,
    so training memory is linear in T too.
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        _check_tensor(name, t)
    if q.dim() < 2 or k.shape[:-1] != v.shape[:-1] or q.shape[:-2] != k.shape[:-2] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"chunked_attention: need q (..., T, d), k (..., S, d), v (..., S, dv); got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
        raise ValueError(f"chunked_attention: chunk_size must be a positive int, got {chunk_size!r}")
    if is_causal and q.shape[-2] != k.shape[-2]:
        raise ValueError(f"chunked_attention: is_causal needs as many queries as keys, got T={q.shape[-2]}, "
                         f"S={k.shape[-2]}")
    scale = 1.0 / math.sqrt(q.shape[-1])
    use_ckpt = checkpoint_chunks and torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    outs = []
    for qs in range(0, q.shape[-2], chunk_size):
        qc = q[..., qs:qs + chunk_size, :]
        if use_ckpt:
            outs.append(checkpoint(_query_chunk, qc, k, v, qs, chunk_size, is_causal, scale, use_reentrant=False))
        else:
            outs.append(_query_chunk(qc, k, v, qs, chunk_size, is_causal, scale))
    return torch.cat(outs, dim=-2)


# ================================================================================================ layer registry
def _seq(gen: torch.Generator, b: int = 2, t: int = 6, d: int = 8) -> tuple[Tensor, ...]:
    return (torch.randn(b, t, d, generator=gen),)


LAYER_SPECS: tuple[LayerSpec, ...] = (
    LayerSpec("multi_head_attention", "attention", lambda: MultiHeadAttention(8, 2), _seq,
              "multi-head self-attention on SDPA, masks + KV cache (Vaswani et al. 2017)"),
    LayerSpec("transformer_block", "attention", lambda: TransformerBlock(8, 2, 16, causal=True, rotary=True), _seq,
              "pre-/post-LN Transformer encoder block (Xiong et al. 2020)"),
    LayerSpec("transformer_decoder_block", "attention", lambda: TransformerDecoderBlock(8, 2, 16),
              lambda g: (torch.randn(2, 5, 8, generator=g), torch.randn(2, 7, 8, generator=g)),
              "causal self-attn + cross-attn + MLP decoder block", grad_inputs=(0, 1)),
    LayerSpec("sparse_attention", "attention", lambda: SparseAttention(8, 2, "local", window=3), _seq,
              "local / strided / fixed sparse attention (Child et al. 2019)"),
    LayerSpec("linformer_attention", "attention", lambda: LinformerAttention(8, 2, seq_len=8, k=4), _seq,
              "keys/values projected along length T -> k (Wang et al. 2020)"),
    LayerSpec("axial_attention", "attention", lambda: AxialAttention(8, 2),
              lambda g: (torch.randn(2, 3, 4, 8, generator=g),),
              "row then column attention on (B,H,W,D) (Ho et al. 2019)"),
)
