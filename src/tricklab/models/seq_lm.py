"""Recurrent language models: an LSTM LM, a Mamba LM and a Mamba-attention hybrid, each
``forward(x (B, T) int64) -> logits (B, T, V)``.

* ``lstm_lm`` (Hochreiter & Schmidhuber 1997; the AWD/char-rnn style LM): embedding -> dropout ->
  ``nn.LSTM(num_layers)`` -> dropout -> linear head. torch's own LSTM is used (cuDNN on GPU).
* ``mamba_lm`` (Gu & Dao 2023, §3.4 and Fig. 3): embedding -> ``n_layer`` x ``MambaLayer`` (x + Mamba(Norm(x)))
  -> RMSNorm -> head tied to the embedding. ``selective=False`` is the paper's ablation (Table 1/§4.1): the
  SSM's Delta, B, C no longer depend on the input, so it becomes a linear time-invariant S4-like model that
  cannot solve selective copying.
* ``hybrid_lm`` (the Jamba / Zamba direction: Lieber et al. 2024, "Jamba: A Hybrid Transformer-Mamba Language
  Model", arXiv:2403.19887): the Mamba LM with one of its layers replaced by a pre-LN causal attention block
  (attention + MLP, GPT's block). No position table: the Mamba layers before it carry order, as in Jamba, which
  uses no explicit positional encoding.

All are causal by construction, so ``logits[:, t]`` predicts ``x[:, t+1]``. All expose the state interface that
:func:`tricklab.models.generate.generate` uses to decode one token at a time (O(1) per token for the recurrent
layers; the hybrid's attention layer keeps a KV cache, O(T)):

    state = model.init_state(batch_size)
    logits, state = model.forward_with_state(tokens (B, T), state)   # prefill in parallel, (B, T, V)
    logits_t, state = model.step(tokens_t (B,), state)               # logits_t: (B, V)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from tricklab.errors import ConfigError
from tricklab.layers.attention import TransformerBlock
from tricklab.layers.ssm import MambaLayer
from tricklab.models import MODELS, as_shape, check_positive
from tricklab.models.gpt import StaticKVCache, _cached_block, check_tokens, gpt2_init_

__all__ = ["HybridLM", "LSTMLM", "MambaLM", "hybrid_lm", "lstm_lm", "mamba_lm"]


def _check_dropout(model: str, dropout: float) -> None:
    if not 0.0 <= float(dropout) < 1.0:
        raise ConfigError(f"model {model!r}: dropout must be in [0, 1), got {dropout}")


class LSTMLM(nn.Module):
    """Embedding -> LSTM -> linear head; ``forward(x (B, T)) -> (B, T, V)``."""

    def __init__(self, vocab_size: int, d_model: int = 128, hidden_size: int = 256, num_layers: int = 2,
                 dropout: float = 0.1, tie_weights: bool = False) -> None:
        super().__init__()
        check_positive("lstm_lm", vocab_size=vocab_size, d_model=d_model, hidden_size=hidden_size,
                       num_layers=num_layers)
        _check_dropout("lstm_lm", dropout)
        if tie_weights and hidden_size != d_model:
            raise ConfigError(f"model 'lstm_lm': tie_weights needs hidden_size == d_model, got {hidden_size} and "
                              f"{d_model}")
        self.vocab_size = vocab_size
        self.emb = nn.Embedding(vocab_size, d_model)
        self.drop = nn.Dropout(dropout)
        # torch applies inter-layer dropout only between stacked layers; it warns for one layer, so pass 0 there
        self.lstm = nn.LSTM(d_model, hidden_size, num_layers, batch_first=True,
                            dropout=dropout if num_layers > 1 else 0.0)
        self.head = nn.Linear(hidden_size, vocab_size)
        if tie_weights:
            self.head.weight = self.emb.weight

    def forward(self, x: Tensor) -> Tensor:
        check_tokens(x, "LSTMLM")
        h, _ = self.lstm(self.drop(self.emb(x)))  # (B, T, H)
        return self.head(self.drop(h))  # (B, T, V)

    def init_state(self, batch_size: int, device: torch.device | str | None = None,
                   dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
        """Zero (h, c), each (num_layers, B, hidden_size): the state ``nn.LSTM`` starts from by default."""
        p = self.head.weight
        shape = (self.lstm.num_layers, batch_size, self.lstm.hidden_size)
        z = torch.zeros(shape, device=device or p.device, dtype=dtype or p.dtype)
        return z, z.clone()

    def forward_with_state(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Logits (B, T, V) of ``x`` (B, T) continuing from ``state``, and the state after it."""
        check_tokens(x, "LSTMLM")
        h, new_state = self.lstm(self.drop(self.emb(x)), state)  # (B, T, H)
        return self.head(self.drop(h)), new_state

    def step(self, tokens: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """One token per row: tokens (B,) -> (logits (B, V), new state)."""
        h, new_state = self.lstm(self.drop(self.emb(tokens[:, None])), state)  # (B, 1, H)
        return self.head(self.drop(h[:, 0])), new_state


class MambaLM(nn.Module):
    """Embedding -> n_layer residual Mamba layers -> RMSNorm -> tied head; ``forward(x (B, T)) -> (B, T, V)``."""

    def __init__(self, vocab_size: int, d_model: int = 128, n_layer: int = 4, d_state: int = 16, d_conv: int = 4,
                 expand: int = 2, selective: bool = True) -> None:
        super().__init__()
        check_positive("mamba_lm", vocab_size=vocab_size, d_model=d_model, n_layer=n_layer, d_state=d_state,
                       d_conv=d_conv, expand=expand)
        self.vocab_size, self.selective = vocab_size, bool(selective)
        self.emb = nn.Embedding(vocab_size, d_model)
        nn.init.normal_(self.emb.weight, 0.0, 0.02)  # as the reference Mamba LM; N(0, 1) makes tied logits huge
        self.layers = nn.ModuleList(
            MambaLayer(d_model, d_state=d_state, d_conv=d_conv, expand=expand, selective=selective)
            for _ in range(n_layer)
        )
        self.norm_f = nn.RMSNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, x: Tensor) -> Tensor:
        check_tokens(x, "MambaLM")
        h = self.emb(x)  # (B, T, D)
        for layer in self.layers:
            h = layer(h)  # (B, T, D), each x + Mamba(Norm(x))
        return self.head(self.norm_f(h))  # (B, T, V)

    def init_state(self, batch_size: int, device: torch.device | str | None = None,
                   dtype: torch.dtype | None = None) -> list[Any]:
        """One recurrent state per layer (conv window and SSM state, as ``MambaLayer.init_state`` makes them)."""
        p = self.emb.weight
        return [layer.init_state(batch_size, device=device or p.device, dtype=dtype or p.dtype)
                for layer in self.layers]

    def forward_with_state(self, x: Tensor, state: list[Any]) -> tuple[Tensor, list[Any]]:
        """Logits (B, T, V) of ``x`` (B, T) continuing from ``state`` (the parallel scan, e.g. a prompt's
        prefill), and the state after it."""
        check_tokens(x, "MambaLM")
        _check_layer_state("MambaLM", state, len(self.layers))
        h = self.emb(x)
        new_state = []
        for layer, s in zip(self.layers, state, strict=True):
            h, s = layer.forward_with_state(h, s)
            new_state.append(s)
        return self.head(self.norm_f(h)), new_state

    def step(self, tokens: Tensor, state: list[Any]) -> tuple[Tensor, list[Any]]:
        """One token per row: tokens (B,) -> (logits (B, V), new state); equals ``forward`` run token by token."""
        _check_layer_state("MambaLM", state, len(self.layers))
        h = self.emb(tokens)  # (B, D)
        new_state = []
        for layer, s in zip(self.layers, state, strict=True):
            h, s = layer.step(h, s)
            new_state.append(s)
        return self.head(self.norm_f(h)), new_state


def _check_layer_state(who: str, state: object, n_layers: int) -> None:
    if not isinstance(state, list) or len(state) != n_layers:
        got = f"{len(state)} entries" if isinstance(state, list) else type(state).__name__
        raise ValueError(f"{who}: state must be a list of {n_layers} per-layer states as init_state(batch_size) "
                         f"returns, got {got}")


class HybridLM(nn.Module):
    """Mamba LM with one layer replaced by a pre-LN causal attention block; ``forward(x (B, T)) -> (B, T, V)``.

    ``n_layer`` layers in all: layer ``attn_layer`` (default ``n_layer // 2``, the middle, so that Mamba layers
    before it provide order) is ``TransformerBlock(d_model, n_heads, causal=True)`` with GPT-2 initialisation,
    the others ``MambaLayer``. Embedding N(0, 0.02), final RMSNorm, head tied to the embedding, as MambaLM.
    """

    def __init__(self, vocab_size: int, d_model: int = 128, n_layer: int = 4, d_state: int = 16, d_conv: int = 4,
                 expand: int = 2, n_heads: int = 4, attn_layer: int | None = None, d_ff: int | None = None) -> None:
        super().__init__()
        check_positive("hybrid_lm", vocab_size=vocab_size, d_model=d_model, n_layer=n_layer, d_state=d_state,
                       d_conv=d_conv, expand=expand, n_heads=n_heads)
        if d_model % n_heads:
            raise ConfigError(f"model 'hybrid_lm': d_model={d_model} must be divisible by n_heads={n_heads}")
        attn_layer = n_layer // 2 if attn_layer is None else attn_layer
        if isinstance(attn_layer, bool) or not isinstance(attn_layer, int) or not 0 <= attn_layer < n_layer:
            raise ConfigError(f"model 'hybrid_lm': attn_layer must be an int in [0, n_layer={n_layer}), got "
                              f"{attn_layer!r}")
        self.vocab_size, self.attn_layer = vocab_size, attn_layer
        self.emb = nn.Embedding(vocab_size, d_model)
        nn.init.normal_(self.emb.weight, 0.0, 0.02)
        attn = TransformerBlock(d_model, n_heads, d_ff=d_ff, dropout=0.0, norm_first=True, causal=True)
        gpt2_init_(attn, n_layer)
        self.layers = nn.ModuleList(
            attn if i == attn_layer else MambaLayer(d_model, d_state=d_state, d_conv=d_conv, expand=expand)
            for i in range(n_layer)
        )
        self.norm_f = nn.RMSNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, x: Tensor) -> Tensor:
        check_tokens(x, "HybridLM")
        h = self.emb(x)
        for layer in self.layers:
            h = layer(h)
        return self.head(self.norm_f(h))

    def init_state(self, batch_size: int, device: torch.device | str | None = None,
                   dtype: torch.dtype | None = None) -> list[Any]:
        """Per layer: the Mamba state, or for the attention layer a KV cache that grows as needed."""
        p = self.emb.weight
        return [StaticKVCache(256, grow=True) if i == self.attn_layer
                else layer.init_state(batch_size, device=device or p.device, dtype=dtype or p.dtype)
                for i, layer in enumerate(self.layers)]

    def forward_with_state(self, x: Tensor, state: list[Any]) -> tuple[Tensor, list[Any]]:
        """Logits (B, T, V) of ``x`` continuing from ``state``; the state after it (the KV cache is extended in
        place)."""
        check_tokens(x, "HybridLM")
        _check_layer_state("HybridLM", state, len(self.layers))
        h, new_state = self.emb(x), []
        for i, (layer, s) in enumerate(zip(self.layers, state, strict=True)):
            if i == self.attn_layer:
                h = _cached_block(layer, h, s)
            else:
                h, s = layer.forward_with_state(h, s)
            new_state.append(s)
        return self.head(self.norm_f(h)), new_state

    def step(self, tokens: Tensor, state: list[Any]) -> tuple[Tensor, list[Any]]:
        """One token per row: tokens (B,) -> (logits (B, V), new state)."""
        _check_layer_state("HybridLM", state, len(self.layers))
        h, new_state = self.emb(tokens), []
        for i, (layer, s) in enumerate(zip(self.layers, state, strict=True)):
            if i == self.attn_layer:
                h = _cached_block(layer, h[:, None], s)[:, 0]
            else:
                h, s = layer.step(h, s)
            new_state.append(s)
        return self.head(self.norm_f(h)), new_state


@MODELS.register("lstm_lm", summary="LSTM language model: embedding, nn.LSTM(num_layers), linear head")
def lstm_lm(input_shape: tuple[int, ...], num_classes: int, d_model: int = 128, hidden_size: int = 256,
            num_layers: int = 2, dropout: float = 0.1, tie_weights: bool = False) -> nn.Module:
    """LSTM LM over token ids of shape ``input_shape = (T,)``; ``num_classes`` is the vocabulary size."""
    as_shape(input_shape, model="lstm_lm", ndim=(1,))
    return LSTMLM(num_classes, d_model, hidden_size, num_layers, dropout, tie_weights)


@MODELS.register("mamba_lm", summary="Mamba LM: residual selective-SSM layers, RMSNorm, tied head (Gu & Dao 2023)")
def mamba_lm(input_shape: tuple[int, ...], num_classes: int, d_model: int = 128, n_layer: int = 4,
             d_state: int = 16, d_conv: int = 4, expand: int = 2, selective: bool = True) -> nn.Module:
    """Mamba LM over token ids of shape ``input_shape = (T,)`` (any length works: no position table)."""
    as_shape(input_shape, model="mamba_lm", ndim=(1,))
    if not isinstance(selective, bool):
        raise ConfigError(f"model 'mamba_lm': selective must be a bool, got {selective!r}")
    return MambaLM(num_classes, d_model, n_layer, d_state, d_conv, expand, selective)


@MODELS.register("hybrid_lm", summary="Mamba layers with one pre-LN attention block (Jamba-style hybrid LM)")
def hybrid_lm(input_shape: tuple[int, ...], num_classes: int, d_model: int = 128, n_layer: int = 4,
              d_state: int = 16, d_conv: int = 4, expand: int = 2, n_heads: int = 4, attn_layer: int | None = None,
              d_ff: int | None = None) -> nn.Module:
    """Hybrid LM over token ids of shape ``input_shape = (T,)`` (any length: no position table)."""
    as_shape(input_shape, model="hybrid_lm", ndim=(1,))
    return HybridLM(num_classes, d_model, n_layer, d_state, d_conv, expand, n_heads, attn_layer, d_ff)
