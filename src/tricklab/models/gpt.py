"""GPT: a decoder-only causal Transformer language model (Radford et al. 2018/2019; nanoGPT-sized).

    h_0 = E[x] + P[:T]                                  token embedding + learned positions, (B, T, D)
    h_l = Block_l(h_{l-1}),  l = 1..n_layer             pre-LN blocks with causal self-attention
    logits = LayerNorm(h_L) @ E^T                       tied output head (Press & Wolf 2017), (B, T, V)

Position t only attends to positions <= t, so ``logits[:, t]`` is a prediction of ``x[:, t+1]`` that has not
seen it; train with :func:`lm_loss` against targets shifted by one (``shakespeare-char``'s ``y``) or against
per-token targets with ``-100`` where there is no loss (``selective-copying``, ``induction-heads``).

Initialisation follows GPT-2: every Linear and Embedding weight ~ N(0, 0.02^2), biases zero; the residual
output projections are additionally scaled by 1/sqrt(2 * n_layer) (GPT-2 §2.3) when the block exposes them.

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
from tricklab.layers.attention import TransformerBlock
from tricklab.layers.positional import LearnedPositionalEmbedding
from tricklab.models import MODELS, as_shape, check_positive

__all__ = ["GPT", "IGNORE_INDEX", "check_tokens", "gpt", "gpt2_init_", "lm_loss"]

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
