"""GPT: a decoder-only causal Transformer language model (Radford et al. 2018/2019; nanoGPT-sized).

    h_0 = E[x] + P[:T]                                  token embedding + learned positions, (B, T, D)
    h_l = Block_l(h_{l-1}),  l = 1..n_layer             pre-LN blocks with causal self-attention
    logits = LayerNorm(h_L) @ E^T                       tied output head (Press & Wolf 2017), (B, T, V)

Position t only attends to positions <= t, so ``logits[:, t]`` is a prediction of ``x[:, t+1]`` that has not
seen it; train with :func:`lm_loss` against targets shifted by one (``shakespeare-char``'s ``y``) or against
per-token targets with ``-100`` where there is no loss (``selective-copying``, ``induction-heads``).

Initialisation follows GPT-2: every Linear and Embedding weight ~ N(0, 0.02^2), biases zero; the residual
output projections are additionally scaled by 1/sqrt(2 * n_layer) (GPT-2 §2.3) when the block exposes them.

Incremental decoding with a KV cache (the same interface as the recurrent models, so that
:func:`tricklab.models.generate.generate` drives both):

    state = model.init_state(batch_size)                    # one preallocated (B, H, block_size, hd) K/V pair per block
    logits, state = model.forward_with_state(prompt, state)  # prefill: (B, T, V), keys/values of T positions cached
    logits_t, state = model.step(tokens_t (B,), state)      # one token: attends to every cached position, O(T)

Each new token costs O(T d) attention work and the cache holds 2 n_layer T d numbers per sequence, against a
recurrent model's O(1) per token and constant state. Positions are absolute (a learned table), so the cache can
hold at most ``block_size`` positions.

References:
    Radford, Narasimhan, Salimans & Sutskever 2018, "Improving Language Understanding by Generative
        Pre-Training" (OpenAI report); Radford et al. 2019, "Language Models are Unsupervised Multitask
        Learners" (OpenAI report, GPT-2).
    Press & Wolf 2017, "Using the Output Embedding to Improve Language Models", EACL.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tricklab.errors import ConfigError
from tricklab.layers.attention import KVCache, TransformerBlock
from tricklab.layers.positional import LearnedPositionalEmbedding
from tricklab.models import MODELS, as_shape, check_positive

__all__ = ["GPT", "IGNORE_INDEX", "StaticKVCache", "check_tokens", "gpt", "gpt2_init_", "lm_loss"]

IGNORE_INDEX = -100  # F.cross_entropy's default ignore_index


def check_tokens(x: object, who: str, max_len: int | None = None) -> Tensor:
    """Validate a batch of token ids: an int64 tensor of shape (B, T), T <= ``max_len``. Returns it."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{who}: expected token ids as an int64 Tensor of shape (B, T), got {type(x).__name__}")
    if x.dtype != torch.int64:
        raise TypeError(f"{who}: token ids must be int64 (torch.long), got {x.dtype}; use x.long()")
    if x.dim() != 2:
        raise ValueError(f"{who}: expected token ids of shape (B, T), got {tuple(x.shape)}")
    if max_len is not None and x.shape[1] > max_len:
        raise ValueError(f"{who}: sequence length {x.shape[1]} exceeds the model's block_size={max_len}; crop the "
                         "input (generate() does so with block_size=) or build the model with a larger block_size")
    return x


def lm_loss(logits: Tensor, targets: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Mean token cross-entropy: torch's ``F.cross_entropy`` over (B*T, V) logits, ``-100`` targets ignored.

    logits: (B, T, V); targets: (B, T) int64.
    """
    if logits.dim() != 3 or targets.shape != logits.shape[:2]:
        raise ValueError(f"lm_loss: expected logits (B, T, V) and targets (B, T), got {tuple(logits.shape)} and "
                         f"{tuple(targets.shape)}")
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=ignore_index)


def gpt2_init_(module: nn.Module, n_layer: int | None = None, std: float = 0.02) -> None:
    """GPT-2 initialisation in place: Linear/Embedding/fused-qkv weights ~ N(0, std^2), their biases 0.

    With ``n_layer``, parameters named ``*out_proj.weight`` / ``*linear2.weight`` (the attention output and
    second MLP layer of :class:`~tricklab.layers.attention.TransformerBlock`: the projections that write into
    the residual stream) get std / sqrt(2 * n_layer), so the residual's variance
    does not grow with depth (Radford et al. 2019, §2.3).
    """
    for name, p in module.named_parameters():
        # nn.MultiheadAttention-style fused q/k/v projections are bare Parameters, not nn.Linear modules
        if name.endswith("in_proj_weight"):
            nn.init.normal_(p, 0.0, std)
        elif name.endswith("in_proj_bias"):
            nn.init.zeros_(p)
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, std)
    if n_layer:
        for name, p in module.named_parameters():
            if name.endswith(("out_proj.weight", "linear2.weight")):
                nn.init.normal_(p, 0.0, std / math.sqrt(2 * n_layer))


class StaticKVCache(KVCache):
    """A :class:`~tricklab.layers.attention.KVCache` with preallocated room for ``capacity`` positions.

    ``KVCache`` concatenates at every step, copying the whole cache (O(T) per token, O(T^2) over a generation);
    this one writes the new keys/values into a (B, H, capacity, hd) buffer allocated at the first append and
    returns views of the filled part. ``grow=True`` doubles the buffer when it is full (amortised O(1) per
    token) instead of refusing. ``len(cache)`` is the number of cached positions.
    """

    def __init__(self, capacity: int, grow: bool = False) -> None:
        super().__init__()
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"StaticKVCache: capacity must be a positive int, got {capacity!r}")
        self.capacity, self.length, self.grow = capacity, 0, bool(grow)
        self._k: Tensor | None = None
        self._v: Tensor | None = None

    def __len__(self) -> int:
        return self.length

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write (B, H, t, hd) keys/values after the cached ones; returns (B, H, S + t, hd) views of all of them.

        Under autograd (keys that require grad) it concatenates instead: writing into the buffer in place would
        change tensors the backward has saved."""
        t = k.shape[-2]
        if self.k is not None and (k.shape[:-2] != self.k.shape[:-2] or k.shape[-1] != self.k.shape[-1]):
            raise ValueError(f"StaticKVCache: new keys {tuple(k.shape)} do not match the cache "
                             f"{tuple(self.k.shape)} (batch, heads or head dim changed); make a new state")
        if self.length + t > self.capacity:
            if not self.grow:
                raise ValueError(f"StaticKVCache: {self.length} cached + {t} new positions exceed the capacity "
                                 f"{self.capacity} (the model's block_size); crop the context")
            self.capacity = max(2 * self.capacity, self.length + t)
        if torch.is_grad_enabled() and (k.requires_grad or v.requires_grad or
                                        (self.k is not None and self.k.requires_grad)):
            self._k = self._v = None
            self.k = k if self.k is None else torch.cat([self.k, k], dim=-2)
            self.v = v if self.v is None else torch.cat([self.v, v], dim=-2)
        else:
            if self._k is None or self._v is None or self._k.shape[-2] < self.capacity:
                buf_k = k.new_empty(*k.shape[:-2], self.capacity, k.shape[-1])
                buf_v = v.new_empty(*v.shape[:-2], self.capacity, v.shape[-1])
                if self.k is not None and self.v is not None:  # keep what is cached (first use or growth)
                    buf_k[..., :self.length, :] = self.k
                    buf_v[..., :self.length, :] = self.v
                self._k, self._v = buf_k, buf_v
            self._k[..., self.length:self.length + t, :] = k
            self._v[..., self.length:self.length + t, :] = v
            self.k, self.v = self._k[..., :self.length + t, :], self._v[..., :self.length + t, :]
        self.length += t
        return self.k, self.v  # type: ignore[return-value]

    def reset(self) -> None:
        super().reset()
        self._k = self._v = None
        self.length = 0

    def nbytes(self) -> int:
        """Bytes held for keys and values: the preallocated buffers (or, under autograd, the concatenated ones)."""
        held = (self._k, self._v) if self._k is not None else (self.k, self.v)
        return sum(b.numel() * b.element_size() for b in held if b is not None)


class GPT(nn.Module):
    """Causal Transformer LM: ``forward(x (B, T) int64) -> logits (B, T, vocab_size)``, T <= block_size."""

    def __init__(self, vocab_size: int, block_size: int, n_layer: int = 4, d_model: int = 128, n_heads: int = 4,
                 dropout: float = 0.1, d_ff: int | None = None) -> None:
        super().__init__()
        check_positive("gpt", vocab_size=vocab_size, block_size=block_size, n_layer=n_layer, d_model=d_model,
                       n_heads=n_heads)
        if d_model % n_heads:
            raise ConfigError(f"model 'gpt': d_model={d_model} must be divisible by n_heads={n_heads}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ConfigError(f"model 'gpt': dropout must be in [0, 1), got {dropout}")
        self.vocab_size, self.block_size, self.n_layer = vocab_size, block_size, n_layer
        self.tok_emb = nn.Embedding(vocab_size, d_model)
        self.pos_emb = LearnedPositionalEmbedding(block_size, d_model)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(d_model, n_heads, d_ff=d_ff, dropout=dropout, norm_first=True, causal=True)
            for _ in range(n_layer)
        )
        self.ln_f = nn.LayerNorm(d_model)  # pre-LN blocks leave the residual un-normalised: normalise once here
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        gpt2_init_(self, n_layer)
        self.head.weight = self.tok_emb.weight  # tied after init so both names point at one N(0, 0.02) matrix

    def forward(self, x: Tensor) -> Tensor:
        check_tokens(x, "GPT", self.block_size)
        h = self.drop(self.pos_emb(self.tok_emb(x)))  # (B, T, D)
        for block in self.blocks:
            h = block(h)  # (B, T, D), causal: position t sees 0..t
        return self.head(self.ln_f(h))  # (B, T, V)

    # -- incremental decoding with a KV cache ---------------------------------------------------------------------
    def init_state(self, batch_size: int, device: torch.device | str | None = None,
                   dtype: torch.dtype | None = None) -> list[StaticKVCache]:
        """An empty KV cache per block, each with room for ``block_size`` positions (allocated on first use;
        ``batch_size``, ``device`` and ``dtype`` are taken from the first keys, the arguments only validate)."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"GPT.init_state: batch_size must be a positive int, got {batch_size!r}")
        return [StaticKVCache(self.block_size) for _ in self.blocks]

    def forward_with_state(self, x: Tensor, state: list[StaticKVCache]) -> tuple[Tensor, list[StaticKVCache]]:
        """Logits (B, T, V) of ``x`` (B, T) continuing the cached positions; the cache is extended in place (and
        returned). With an empty cache this equals ``forward(x)``; token by token it equals ``forward`` on the
        whole sequence (tested)."""
        check_tokens(x, "GPT")
        if not isinstance(state, list) or len(state) != len(self.blocks) or not all(
                isinstance(c, KVCache) for c in state):
            raise ValueError(f"GPT: state must be the list of {len(self.blocks)} caches that init_state() returns")
        past, t = len(state[0]), x.shape[1]
        if past + t > self.block_size:
            raise ValueError(f"GPT: {past} cached + {t} new positions exceed block_size={self.block_size}; crop the "
                             "context and start a new state (generate() does this)")
        # learned absolute positions past..past+t-1, (T, D)
        h = self.drop(self.tok_emb(x) + self.pos_emb.weight[past:past + t])
        for block, cache in zip(self.blocks, state):
            h = _cached_block(block, h, cache)
        return self.head(self.ln_f(h)), state

    def step(self, tokens: Tensor, state: list[StaticKVCache]) -> tuple[Tensor, list[StaticKVCache]]:
        """One token per row: tokens (B,) -> (logits (B, V), state), attending to every cached position."""
        if not isinstance(tokens, Tensor) or tokens.dim() != 1:
            raise ValueError(f"GPT.step: tokens must be (B,) int64, got {getattr(tokens, 'shape', tokens)}")
        logits, state = self.forward_with_state(tokens[:, None], state)
        return logits[:, 0], state


def _cached_block(block: TransformerBlock, x: Tensor, cache: KVCache) -> Tensor:
    """A pre-LN causal :class:`TransformerBlock` (``x + Attn(LN(x))``, then ``x + MLP(LN(x))``) whose attention
    reads and extends ``cache``. The new positions are the last of the cached ones (bottom-right causal mask);
    one query attends to every cached key, so it needs no mask at all."""
    if not block.norm_first or not block.causal:
        raise ValueError("a KV cache needs pre-LN causal blocks (norm_first=True, causal=True)")
    a = block.self_attn(block.norm1(x), is_causal=x.shape[1] > 1, cache=cache)
    x = x + block.dropout1(a)
    return x + block._ff(block.norm2(x))


@MODELS.register("gpt", summary="GPT: causal pre-LN Transformer LM, learned positions, tied head (Radford 2018/19)")
def gpt(input_shape: tuple[int, ...], num_classes: int, n_layer: int = 4, d_model: int = 128, n_heads: int = 4,
        dropout: float = 0.1, d_ff: int | None = None, block_size: int | None = None) -> nn.Module:
    """GPT for token ids of shape ``input_shape = (T,)``; ``num_classes`` is the vocabulary size.

    ``block_size`` (the longest input, i.e. the learned position table) defaults to T; set it larger to
    evaluate longer sequences (e.g. induction-heads extrapolation; positions past T stay untrained).
    """
    (length,) = as_shape(input_shape, model="gpt", ndim=(1,))
    block = length if block_size is None else block_size
    check_positive("gpt", block_size=block)
    if block < length:
        raise ConfigError(f"model 'gpt': block_size={block} is shorter than the input length {length}")
    return GPT(num_classes, block, n_layer=n_layer, d_model=d_model, n_heads=n_heads, dropout=dropout, d_ff=d_ff)
