"""T5-style encoder-decoder with span-corruption pre-training (Raffel et al. 2020, JMLR, §3.1.4 and §3.3).

Span corruption (the "i.i.d. noise, replace spans" objective, Table 3 / Fig. 2 of the paper): about
``noise_density`` of the tokens are dropped in spans of mean length ``mean_span_length``; each dropped span
is replaced in the input by one sentinel token, and the target lists each sentinel followed by the tokens it
replaced, closed by one more sentinel:

    tokens  : Thank you [for inviting] me to your party [last] week .
    inputs  : Thank you <S0> me to your party <S1> week .
    targets : <S0> for inviting <S1> last <S2>

As in T5's ``random_spans_noise_mask``: num_noise = round(L * density) (at least 1, at most L - 1),
num_spans = max(1, round(num_noise / mean_span_length)); the noise and non-noise tokens are each split into
num_spans non-empty runs uniformly at random and interleaved non-noise first. Every input of length L therefore
has the same corrupted lengths, L - num_noise + num_spans and num_noise + num_spans + 1, so a batch stacks.

The model: shared token embedding E (+ sinusoidal positions; T5 itself uses relative position buckets),
``n_layers`` bidirectional ``TransformerBlock`` encoder layers, ``n_layers`` ``TransformerDecoderBlock``
decoder layers (causal self-attention, cross-attention to the encoder output, MLP), final LayerNorms, and the
tied output ``logits = d_model^-1/2 * H E^T`` (T5's rescaling when input and output embeddings are shared).
Training is teacher forcing: the decoder reads the targets shifted right by one with ``decoder_start_id`` in
front (:func:`shift_right`) and predicts every target token (:func:`t5_loss`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tricklab.errors import ConfigError
from tricklab.layers.attention import TransformerBlock, TransformerDecoderBlock
from tricklab.layers.positional import SinusoidalPositionalEncoding
from tricklab.models import check_positive
from tricklab.models.gpt import IGNORE_INDEX, check_tokens

__all__ = ["T5", "greedy_decode", "num_sentinels_needed", "shift_right", "span_corrupt", "span_lengths", "t5_loss"]


# ================================================================================================ span corruption
def span_lengths(length: int, noise_density: float = 0.15, mean_span_length: float = 3.0) -> tuple[int, int]:
    """(num_noise, num_spans) for a sequence of ``length`` tokens, as T5's ``random_spans_noise_mask``."""
    if isinstance(length, bool) or not isinstance(length, int) or length < 2:
        raise ValueError(f"span corruption needs a sequence of at least 2 tokens, got length {length!r}")
    if not 0.0 < float(noise_density) < 1.0:
        raise ValueError(f"noise_density must be in (0, 1), got {noise_density}")
    if not float(mean_span_length) >= 1.0:
        raise ValueError(f"mean_span_length must be >= 1, got {mean_span_length}")
    num_noise = min(max(int(round(length * noise_density)), 1), length - 1)
    num_spans = max(int(round(num_noise / mean_span_length)), 1)
    # each span needs >= 1 noise token and >= 1 non-noise token before it
    num_spans = min(num_spans, num_noise, length - num_noise)
    return num_noise, num_spans


def num_sentinels_needed(length: int, noise_density: float = 0.15, mean_span_length: float = 3.0) -> int:
    """How many sentinel ids :func:`span_corrupt` uses for sequences of ``length`` tokens (num_spans + 1)."""
    return span_lengths(length, noise_density, mean_span_length)[1] + 1


def _random_segmentation(n: int, k: int, generator: torch.Generator | None) -> list[int]:
    """Split n items into k non-empty runs uniformly: k - 1 distinct cut points among the n - 1 gaps."""
    cuts = (torch.randperm(n - 1, generator=generator)[: k - 1] + 1).sort().values.tolist()
    bounds = [0, *cuts, n]
    return [bounds[i + 1] - bounds[i] for i in range(k)]


def span_corrupt(tokens: Tensor, noise_density: float = 0.15, mean_span_length: float = 3.0,
                 sentinel_ids: Sequence[int] | Tensor | None = None,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """T5 span corruption of ``tokens`` (L,) or (B, L) int64; see the module docstring.

    Args:
        tokens: ids that are not sentinels.
        noise_density: fraction of tokens dropped.
        mean_span_length: mean length of a dropped span.
        sentinel_ids: ids of ``<S0>, <S1>, ...``; at least :func:`num_sentinels_needed` of them (usually the ids
            just past the ordinary vocabulary).
        generator: RNG for the span layout (each row of a batch gets its own layout).

    Returns:
        ``(inputs, targets)``: (L - num_noise + num_spans,) and (num_noise + num_spans + 1,), with a leading
        batch dimension when ``tokens`` had one.
    """
    if not isinstance(tokens, Tensor) or tokens.dtype != torch.int64 or tokens.dim() not in (1, 2):
        raise TypeError("span_corrupt: tokens must be an int64 Tensor of shape (L,) or (B, L), got "
                        f"{getattr(tokens, 'dtype', type(tokens).__name__)} {tuple(getattr(tokens, 'shape', ()))}")
    if tokens.dim() == 2:
        pairs = [span_corrupt(row, noise_density, mean_span_length, sentinel_ids, generator) for row in tokens]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
    length = tokens.numel()
    num_noise, num_spans = span_lengths(length, noise_density, mean_span_length)
    if sentinel_ids is None:
        raise ValueError("span_corrupt: pass sentinel_ids (e.g. range(vocab_size, vocab_size + n)), n >= "
                         f"{num_spans + 1} for length {length}")
    sentinels = torch.as_tensor(list(sentinel_ids) if not isinstance(sentinel_ids, Tensor) else sentinel_ids,
                                dtype=torch.int64, device=tokens.device).flatten()
    if sentinels.numel() < num_spans + 1:
        raise ValueError(f"span_corrupt: {num_spans} spans need {num_spans + 1} sentinel ids, got {sentinels.numel()}")
    if torch.isin(tokens, sentinels).any():
        raise ValueError("span_corrupt: tokens contain sentinel ids; sentinels must be ids outside the text's "
                         "vocabulary")
    noise = _random_segmentation(num_noise, num_spans, generator)
    keep = _random_segmentation(length - num_noise, num_spans, generator)
    inputs: list[Tensor] = []
    targets: list[Tensor] = []
    pos = 0
    for i in range(num_spans):  # non-noise run, then the noise run that sentinel i replaces
        inputs += [tokens[pos:pos + keep[i]], sentinels[i:i + 1]]
        pos += keep[i]
        targets += [sentinels[i:i + 1], tokens[pos:pos + noise[i]]]
        pos += noise[i]
    targets.append(sentinels[num_spans:num_spans + 1])
    return torch.cat(inputs), torch.cat(targets)


# ========================================================================================================== model
class T5(nn.Module):
    """Encoder-decoder Transformer: ``forward(src (B, S), tgt_in (B, T), src_key_padding_mask=None) -> (B, T, V)``."""

    def __init__(self, vocab_size: int, d_model: int = 128, n_layers: int = 2, n_heads: int = 4,
                 d_ff: int | None = None, dropout: float = 0.0, max_len: int = 4096, decoder_start_id: int = 0) -> None:
        super().__init__()
        check_positive("t5", vocab_size=vocab_size, d_model=d_model, n_layers=n_layers, n_heads=n_heads,
                       max_len=max_len)
        if d_model % n_heads or d_model % 2:
            raise ConfigError(f"T5: d_model={d_model} must be even and divisible by n_heads={n_heads}")
        if not 0 <= decoder_start_id < vocab_size:
            raise ConfigError(f"T5: decoder_start_id={decoder_start_id} is outside the vocabulary [0, {vocab_size})")
        self.vocab_size, self.d_model, self.max_len = vocab_size, d_model, max_len
        self.decoder_start_id = decoder_start_id
        self.emb = nn.Embedding(vocab_size, d_model)  # N(0, 1), shared by encoder, decoder and output
        self.pos = SinusoidalPositionalEncoding(d_model, max_len)
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.ModuleList(
            TransformerBlock(d_model, n_heads, d_ff=d_ff, dropout=dropout, norm_first=True, causal=False)
            for _ in range(n_layers)
        )
        self.enc_norm = nn.LayerNorm(d_model)
        self.decoder = nn.ModuleList(
            TransformerDecoderBlock(d_model, n_heads, d_ff=d_ff, dropout=dropout, norm_first=True)
            for _ in range(n_layers)
        )
        self.dec_norm = nn.LayerNorm(d_model)

    def encode(self, src: Tensor, src_key_padding_mask: Tensor | None = None) -> Tensor:
        """Encoder output (B, S, D); every source position sees every non-padding source position."""
        check_tokens(src, "T5.encode", self.max_len)
        h = self.drop(self.pos(self.emb(src)))
        for block in self.encoder:
            h = block(h, key_padding_mask=src_key_padding_mask)
        return self.enc_norm(h)

    def decode(self, tgt_in: Tensor, memory: Tensor, memory_key_padding_mask: Tensor | None = None) -> Tensor:
        """Logits (B, T, V) for decoder inputs ``tgt_in``; position t sees tgt_in[:, :t+1] and all of memory."""
        check_tokens(tgt_in, "T5.decode", self.max_len)
        h = self.drop(self.pos(self.emb(tgt_in)))
        for block in self.decoder:
            h = block(h, memory, memory_key_padding_mask=memory_key_padding_mask)
        h = self.dec_norm(h)
        return F.linear(h, self.emb.weight) * self.d_model ** -0.5  # tied output, T5's d^-1/2 rescale

    def forward(self, src: Tensor, tgt_in: Tensor, src_key_padding_mask: Tensor | None = None) -> Tensor:
        return self.decode(tgt_in, self.encode(src, src_key_padding_mask), src_key_padding_mask)


def shift_right(targets: Tensor, start_id: int) -> Tensor:
    """Decoder inputs for teacher forcing: ``[start_id, targets[:, :-1]]``; ignored (-100) targets become start_id."""
    check_tokens(targets, "shift_right")
    shifted = torch.cat([torch.full_like(targets[:, :1], start_id), targets[:, :-1]], dim=1)
    return shifted.masked_fill(shifted == IGNORE_INDEX, start_id)


def t5_loss(model: T5, inputs: Tensor, targets: Tensor, src_key_padding_mask: Tensor | None = None) -> Tensor:
    """Teacher-forced cross-entropy of ``targets`` (B, T) (``-100`` = padding, ignored) given ``inputs`` (B, S)."""
    logits = model(inputs, shift_right(targets, model.decoder_start_id), src_key_padding_mask)
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)


@torch.no_grad()
def greedy_decode(model: T5, src: Tensor, max_new_tokens: int, src_key_padding_mask: Tensor | None = None,
                  stop_id: int | None = None) -> Tensor:
    """Greedy decoding: (B, max_new_tokens) argmax tokens, one decoder pass per token (the encoder runs once).

    Rows that emitted ``stop_id`` keep emitting it (so the output stays rectangular); decoding ends early when
    every row has. Runs in eval mode and restores the model's mode afterwards.
    """
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    was_training = model.training
    model.eval()
    try:
        memory = model.encode(src, src_key_padding_mask)
        out = torch.full((src.shape[0], 1), model.decoder_start_id, dtype=torch.int64, device=src.device)
        done = torch.zeros(src.shape[0], dtype=torch.bool, device=src.device)
        for _ in range(max_new_tokens):
            nxt = model.decode(out, memory, src_key_padding_mask)[:, -1].argmax(-1)  # (B,)
            if stop_id is not None:
                nxt = nxt.masked_fill(done, stop_id)
                done |= nxt == stop_id
            out = torch.cat([out, nxt[:, None]], dim=1)
            if stop_id is not None and bool(done.all()):
                break
        res = out[:, 1:]
        if res.shape[1] < max_new_tokens:  # stopped early: pad with stop_id to the promised width
            res = F.pad(res, (0, max_new_tokens - res.shape[1]), value=int(stop_id or 0))
        return res
    finally:
        model.train(was_training)
