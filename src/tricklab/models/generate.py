"""Autoregressive sampling from a language model, and char-level encode/decode.

Each step feeds the context to the model, takes the logits of the last position, and samples

    p = softmax(top_k(logits) / temperature),     top_k keeps the k largest logits and sets the rest to -inf

(temperature -> 0 tends to argmax; ``temperature=0`` is exactly greedy; Holtzman et al. 2020 discuss why
truncated sampling such as top-k reads better than plain sampling). A model with a position table sees at most
``block_size`` tokens, so the context is cropped to the last ``block_size`` before each step. A recurrent
model exposing ``init_state(batch_size)`` / ``step(tokens (B,), state) -> (logits (B, V), state)``
(:class:`~tricklab.models.seq_lm.LSTMLM`, :class:`~tricklab.models.seq_lm.MambaLM`) is instead run one token at
a time with its state: O(1) per new token and no cropping.

References:
    Holtzman, Buys, Du, Forbes & Choi 2020, "The Curious Case of Neural Text Degeneration", ICLR.
    Fan, Lewis & Dauphin 2018, "Hierarchical Neural Story Generation", ACL (top-k sampling).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from tricklab.models.gpt import check_tokens

__all__ = ["decode", "encode", "generate", "sample_next"]


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


@torch.no_grad()
def generate(model: nn.Module, prompt: Tensor, max_new_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, generator: torch.Generator | None = None, block_size: int | None = None,
             recurrent: bool | None = None) -> Tensor:
    """Extend ``prompt`` (B, T0) int64 by ``max_new_tokens`` sampled tokens; returns (B, T0 + max_new_tokens).

    Args:
        model: ``model(x (B, T)) -> logits (B, T, V)``.
        block_size: longest context the model takes; defaults to ``model.block_size`` when it has one.
        recurrent: use ``model.init_state``/``model.step`` (default: when the model has both).
        temperature, top_k, generator: see :func:`sample_next`.

    Runs in eval mode (no dropout) and restores the model's mode afterwards.
    """
    check_tokens(prompt, "generate")
    if prompt.shape[1] < 1:
        raise ValueError("generate: the prompt needs at least one token per row")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    has_step = callable(getattr(model, "step", None)) and callable(getattr(model, "init_state", None))
    if recurrent and not has_step:
        raise ValueError(f"recurrent=True but {type(model).__name__} has no init_state/step methods")
    use_step = has_step if recurrent is None else recurrent
    block = block_size if block_size is not None else getattr(model, "block_size", None)
    if block is not None and (not isinstance(block, int) or block < 1):
        raise ValueError(f"block_size must be a positive int, got {block!r}")
    was_training = model.training
    model.eval()
    try:
        out = prompt
        if use_step:
            state = model.init_state(prompt.shape[0])
            logits = None
            for t in range(prompt.shape[1]):  # read the prompt into the state
                logits, state = model.step(prompt[:, t], state)
            for _ in range(max_new_tokens):
                nxt = sample_next(logits, temperature, top_k, generator)
                out = torch.cat([out, nxt[:, None]], dim=1)
                logits, state = model.step(nxt, state)
            return out
        for _ in range(max_new_tokens):
            context = out if block is None else out[:, -block:]
            logits = model(context)[:, -1]  # (B, V): the prediction for the next position
            out = torch.cat([out, sample_next(logits, temperature, top_k, generator)[:, None]], dim=1)
        return out
    finally:
        model.train(was_training)


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
