"""Autoregressive sampling from a language model, and char-level encode/decode.

Each step takes the logits of the last position and samples

    p = softmax(top_k(logits) / temperature),     top_k keeps the k largest logits and sets the rest to -inf

(temperature -> 0 tends to argmax; ``temperature=0`` is exactly greedy; Holtzman et al. 2020 discuss why
truncated sampling such as top-k reads better than plain sampling).

One sampling loop drives every model. A model with the state interface

    state = model.init_state(batch_size)
    logits (B, T, V), state = model.forward_with_state(tokens (B, T), state)   # prefill, in parallel
    logits (B, V), state = model.step(tokens (B,), state)                      # one new token

is prefilled with the prompt once and then fed one token per step: Mamba and the LSTM carry a constant-size
recurrent state (O(1) per token), GPT a KV cache (O(T) per token; :class:`~tricklab.models.gpt.StaticKVCache`).
Other models (or ``cache=False``) are re-run on the whole context for every token, the simple reference path.
A model with a position table sees at most ``block_size`` tokens: the context is cropped to the last
``block_size``, and once a cache is full it is rebuilt from the cropped context (positions shift), exactly what
the reference path computes.

References:
    Holtzman, Buys, Du, Forbes & Choi 2020, "The Curious Case of Neural Text Degeneration", ICLR.
    Fan, Lewis & Dauphin 2018, "Hierarchical Neural Story Generation", ACL (top-k sampling).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from tricklab.models.gpt import check_tokens

__all__ = ["decode", "encode", "generate", "has_state_interface", "sample_next"]


def sample_next(logits: Tensor, temperature: float = 1.0, top_k: int | None = None,
                generator: torch.Generator | None = None) -> Tensor:
    """Draw one token per row from ``logits`` (B, V) -> (B,) int64.

    ``temperature == 0`` returns the argmax (the limit of the tempered softmax). ``top_k`` restricts the draw to
    the k largest logits (ties at the k-th value are all kept).
    """
    if not isinstance(logits, Tensor) or logits.dim() != 2:
        raise ValueError(f"sample_next: expected logits of shape (B, V), got {getattr(logits, 'shape', logits)}")
    temperature = float(temperature)
    if temperature < 0 or temperature != temperature:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if temperature == 0.0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def has_state_interface(model: nn.Module) -> bool:
    """True when ``model`` has ``init_state``, ``forward_with_state`` and ``step`` (cached/recurrent decoding)."""
    return all(callable(getattr(model, name, None)) for name in ("init_state", "forward_with_state", "step"))


@torch.no_grad()
def generate(model: nn.Module, prompt: Tensor, max_new_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, generator: torch.Generator | None = None, block_size: int | None = None,
             cache: bool | None = None, recurrent: bool | None = None) -> Tensor:
    """Extend ``prompt`` (B, T0) int64 by ``max_new_tokens`` sampled tokens; returns (B, T0 + max_new_tokens).

    Args:
        model: ``model(x (B, T)) -> logits (B, T, V)``, optionally with the state interface (module docstring).
        block_size: longest context the model takes; defaults to ``model.block_size`` when it has one. Models
            decoded with a recurrent state and no ``block_size`` of their own (Mamba, LSTM, the hybrid) keep the
            whole context in their state and are not cropped.
        cache: decode with the model's state (recurrent state or KV cache); default: when the model has the
            interface. ``False``: re-run the model on the whole (cropped) context for every token.
        recurrent: the former name of ``cache`` (used when ``cache`` is None).
        temperature, top_k, generator: see :func:`sample_next`.

    Runs in eval mode (no dropout) and restores the model's mode afterwards.
    """
    check_tokens(prompt, "generate")
    if prompt.shape[1] < 1:
        raise ValueError("generate: the prompt needs at least one token per row")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    want = cache if cache is not None else recurrent
    has_state = has_state_interface(model)
    if want and not has_state:
        raise ValueError(f"cache=True but {type(model).__name__} has no init_state/forward_with_state/step methods")
    use_state = has_state if want is None else bool(want)
    block = block_size if block_size is not None else getattr(model, "block_size", None)
    if block is not None and (isinstance(block, bool) or not isinstance(block, int) or block < 1):
        raise ValueError(f"block_size must be a positive int, got {block!r}")
    if use_state and not hasattr(model, "block_size"):
        block = None  # a recurrent state carries the whole context: nothing to crop (as before the KV cache)
    was_training = model.training
    model.eval()
    try:
        out = prompt
        logits, state = _next_logits(model, out, block, use_state)
        for i in range(max_new_tokens):
            nxt = sample_next(logits, temperature, top_k, generator)
            out = torch.cat([out, nxt[:, None]], dim=1)
            if i == max_new_tokens - 1:
                break
            if use_state and (block is None or out.shape[1] <= block):
                logits, state = model.step(nxt, state)  # the cached positions are exactly the context
            else:  # no cache, or a full one: the whole cropped context again
                logits, state = _next_logits(model, out, block, use_state)
        return out
    finally:
        model.train(was_training)


def _next_logits(model: nn.Module, tokens: Tensor, block: int | None, use_state: bool) -> tuple[Tensor, Any]:
    """Logits (B, V) after the last ``block`` tokens, and (with the state interface) the state after them."""
    context = tokens if block is None else tokens[:, -block:]
    if not use_state:
        return model(context)[:, -1], None
    logits, state = model.forward_with_state(context, model.init_state(context.shape[0]))
    return logits[:, -1], state


def encode(text: str, vocab: Sequence[str]) -> Tensor:
    """Token ids (len(text),) int64 of ``text`` under a character vocabulary (``dataset.meta["vocab"]``).

    Multi-character entries such as ``"[MASK]"`` are not matched in text. Unknown characters raise ValueError.
    """
    table = {c: i for i, c in enumerate(vocab) if len(c) == 1}
    unknown = sorted({c for c in text if c not in table})
    if unknown:
        raise ValueError(f"encode: characters {unknown!r} are not in the vocabulary ({len(table)} characters); "
                         "remove them or use the vocabulary of the data set the model was trained on")
    return torch.tensor([table[c] for c in text], dtype=torch.int64)


def decode(ids: Tensor | Sequence[int], vocab: Sequence[str]) -> str:
    """The string of 1-D token ``ids`` under ``vocab`` (entries are joined as they are)."""
    if isinstance(ids, Tensor):
        if ids.dim() != 1:
            raise ValueError(f"decode: expected 1-D ids, got shape {tuple(ids.shape)}; decode rows one at a time")
        ids = ids.tolist()
    bad = [i for i in ids if not 0 <= int(i) < len(vocab)]
    if bad:
        raise ValueError(f"decode: ids {bad[:5]} are outside the vocabulary [0, {len(vocab)})")
    return "".join(vocab[int(i)] for i in ids)
