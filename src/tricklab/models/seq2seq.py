"""An RNN encoder-decoder with attention (``seq2seq_rnn``): Bahdanau, Cho & Bengio 2015 and Luong, Pham & Manning
2015, for the toy tasks of :mod:`tricklab.data.datasets.seq2seq_toy`.

* Encoder: embedding -> torch's ``nn.GRU`` or ``nn.LSTM`` (optionally bidirectional, several layers), run on packed
  sequences so right padding changes neither direction. The decoder starts from
  ``s_0 = tanh(W_b [h_fwd; h_bwd])`` of the encoder's last layer (Bahdanau et al., App. A.2.2); an LSTM's cell
  gets a linear bridge of the encoder's final cells.
* Decoder, ``attention="bahdanau"`` (additive): at step t the previous state queries the source,
  ``c_t = Attn(s_{t-1}, H)``, the RNN reads ``[e(y_{t-1}); c_t]`` and the output is
  ``W_o tanh(W_r [s_t; c_t; e(y_{t-1})])`` (a deep output layer; the paper used a maxout layer there).
* Decoder, ``attention`` in ``dot`` / ``general`` / ``concat`` (Luong, multiplicative): the RNN first reads
  ``e(y_{t-1})`` (and, with ``input_feeding``, the previous attentional state ``h~_{t-1}``, §3.3), then
  ``c_t = Attn(s_t, H)``, ``h~_t = tanh(W_c [c_t; s_t])`` (eq. 5) and logits ``W_s h~_t`` (eq. 6). Without input
  feeding the decoder RNN runs over all target positions in one call and attention is one batched product.

Layout of ``x`` (B, T) int64 (the lab's trainer calls ``model(x)`` only): ``x[:, :src_len]`` is the right-padded
source and ``x[:, src_len:]`` the teacher-forced decoder input, starting with BOS (the data sets' ``<sep>``). The
output is ``(B, T, V)`` so that it lines up with targets ``y`` (B, T): the logits at ``src_len + j`` predict the token
after ``x[:, src_len + j]``; the source positions get zeros (their targets are -100, so no loss reads them).
Training is always teacher-forced; :meth:`Seq2SeqRNN.greedy_decode` decodes from the model's own outputs.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from tricklab.errors import ConfigError
from tricklab.layers.recurrent import AdditiveAttention, LuongAttention
from tricklab.models import MODELS, as_shape, check_positive
from tricklab.models.gpt import check_tokens

__all__ = ["Seq2SeqRNN", "evaluate_greedy", "seq2seq_rnn"]

Cell = Literal["gru", "lstm"]
AttentionKind = Literal["bahdanau", "dot", "general", "concat"]
_ATTENTIONS = ("bahdanau", "dot", "general", "concat")
RNNState = Tensor | tuple[Tensor, Tensor]  # GRU: h (1, B, H); LSTM: (h, c)


class Seq2SeqRNN(nn.Module):
    """Encoder-decoder RNN with attention; ``forward(x (B, T)) -> logits (B, T, V)`` (layout in the module doc)."""

    def __init__(self, vocab_size: int, src_len: int, emb_dim: int = 64, hidden_size: int = 128, cell: Cell = "gru",
                 bidirectional: bool = True, encoder_layers: int = 1, attention: AttentionKind = "bahdanau",
                 input_feeding: bool = True, dropout: float = 0.0, pad_id: int = 0, bos_id: int = 1,
                 eos_id: int = 2) -> None:
        super().__init__()
        who = "model 'seq2seq_rnn'"
        check_positive("seq2seq_rnn", vocab_size=vocab_size, src_len=src_len, emb_dim=emb_dim,
                       hidden_size=hidden_size, encoder_layers=encoder_layers)
        if cell not in ("gru", "lstm"):
            raise ConfigError(f"{who}: cell must be 'gru' or 'lstm', got {cell!r}")
        if attention not in _ATTENTIONS:
            raise ConfigError(f"{who}: attention must be one of {_ATTENTIONS}, got {attention!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ConfigError(f"{who}: dropout must be in [0, 1), got {dropout}")
        for name, tok in (("pad_id", pad_id), ("bos_id", bos_id), ("eos_id", eos_id)):
            if not 0 <= tok < vocab_size:
                raise ConfigError(f"{who}: {name}={tok} is not a token id of a vocabulary of {vocab_size}")
        enc_dim = hidden_size * (2 if bidirectional else 1)
        if attention == "dot" and enc_dim != hidden_size:
            raise ConfigError(f"{who}: attention='dot' needs encoder outputs of the decoder's size, but a "
                              f"bidirectional encoder gives 2 * hidden_size = {enc_dim}; use bidirectional=False or "
                              "attention='general'")
        self.vocab_size, self.src_len, self.hidden_size, self.cell = vocab_size, src_len, hidden_size, cell
        self.attention_kind, self.input_feeding = attention, bool(input_feeding)
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        rnn = nn.GRU if cell == "gru" else nn.LSTM
        self.src_embed = nn.Embedding(vocab_size, emb_dim, padding_idx=pad_id)
        self.tgt_embed = nn.Embedding(vocab_size, emb_dim, padding_idx=pad_id)
        self.encoder = rnn(emb_dim, hidden_size, num_layers=encoder_layers, batch_first=True,
                           bidirectional=bidirectional, dropout=dropout if encoder_layers > 1 else 0.0)
        self.num_directions = 2 if bidirectional else 1
        self.bridge = nn.Linear(enc_dim, hidden_size)  # s_0 = tanh(W_b [h_fwd; h_bwd])
        self.bridge_cell = nn.Linear(enc_dim, hidden_size) if cell == "lstm" else None
        self.attention: AdditiveAttention | LuongAttention
        if attention == "bahdanau":
            self.attention = AdditiveAttention(hidden_size, enc_dim, hidden_size)
            dec_in, readout_in = emb_dim + enc_dim, hidden_size + enc_dim + emb_dim
        else:
            self.attention = LuongAttention(hidden_size, enc_dim, attention, hidden_size)
            dec_in = emb_dim + (hidden_size if self.input_feeding else 0)
            readout_in = enc_dim + hidden_size
        self.decoder = rnn(dec_in, hidden_size, batch_first=True)
        self.readout = nn.Linear(readout_in, hidden_size)  # Bahdanau: W_r; Luong: W_c
        self.out = nn.Linear(hidden_size, vocab_size)  # W_o / W_s
        self.dropout = nn.Dropout(dropout)

    # ------------------------------------------------------------------------------------------------ encoder
    def encode(self, src: Tensor) -> tuple[Tensor, Tensor, RNNState]:
        """src (B, S), right-padded -> (encoder outputs (B, S, enc_dim), padding mask (B, S), decoder state 0)."""
        mask = src == self.pad_id  # (B, S) True = padding
        lengths = (~mask).sum(dim=1)
        if bool((lengths == 0).any()):
            raise ValueError("seq2seq_rnn: a source row is all padding; every source needs at least one token")
        emb = self.dropout(self.src_embed(src))  # (B, S, E)
        packed = pack_padded_sequence(emb, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, final = self.encoder(packed)
        enc, _ = pad_packed_sequence(out, batch_first=True, total_length=src.shape[1])  # (B, S, enc_dim), 0 at pads
        h_n, c_n = final if self.cell == "lstm" else (final, None)

        def last_layer(state: Tensor) -> Tensor:
            # (layers * dirs, B, H) -> the last layer's directions side by side, (B, dirs * H)
            return torch.cat(list(state[-self.num_directions:]), dim=-1)

        h0 = torch.tanh(self.bridge(last_layer(h_n))).unsqueeze(0)  # (1, B, H)
        if self.cell == "lstm":
            assert self.bridge_cell is not None and c_n is not None
            return enc, mask, (h0, self.bridge_cell(last_layer(c_n)).unsqueeze(0))
        return enc, mask, h0

    # ------------------------------------------------------------------------------------------------ decoder
    def _step(self, tokens: Tensor, state: RNNState, feed: Tensor, enc: Tensor, mask: Tensor,
              keys_proj: Tensor | None) -> tuple[Tensor, RNNState, Tensor]:
        """One decoder step: tokens (B,) -> logits (B, V), new state, attentional vector h~_t (B, H)."""
        emb = self.dropout(self.tgt_embed(tokens))  # (B, E)
        if self.attention_kind == "bahdanau":
            h_prev = state[0] if isinstance(state, tuple) else state  # (1, B, H)
            assert isinstance(self.attention, AdditiveAttention)
            context, _ = self.attention(h_prev[-1], enc, mask, keys_proj=keys_proj)  # c_t from s_{t-1}: (B, enc)
            out, state = self.decoder(torch.cat([emb, context], dim=-1).unsqueeze(1), state)
            s = out[:, 0]  # (B, H)
            feed = torch.tanh(self.readout(torch.cat([s, context, emb], dim=-1)))
        else:
            inp = torch.cat([emb, feed], dim=-1) if self.input_feeding else emb
            out, state = self.decoder(inp.unsqueeze(1), state)
            s = out[:, 0]
            context, _ = self.attention(s, enc, mask)  # c_t from s_t
            feed = torch.tanh(self.readout(torch.cat([context, s], dim=-1)))  # h~_t = tanh(W_c [c_t; s_t])
        return self.out(self.dropout(feed)), state, feed

    def decode(self, src: Tensor, dec_in: Tensor) -> Tensor:
        """Teacher-forced decoding: src (B, S), decoder input (B, T_dec) starting with BOS -> logits (B, T_dec, V)."""
        enc, mask, state = self.encode(src)
        if self.attention_kind != "bahdanau" and not self.input_feeding:
            # nothing feeds back from step t to t+1 but the RNN state, so run all steps in one RNN call
            s, _ = self.decoder(self.dropout(self.tgt_embed(dec_in)), state)  # (B, T_dec, H)
            context, _ = self.attention(s, enc, mask)  # (B, T_dec, enc_dim)
            feed = torch.tanh(self.readout(torch.cat([context, s], dim=-1)))
            return self.out(self.dropout(feed))
        keys_proj = self.attention.project_keys(enc) if isinstance(self.attention, AdditiveAttention) else None
        feed = enc.new_zeros(enc.shape[0], self.hidden_size)  # h~_0 = 0 for input feeding
        logits = []
        for t in range(dec_in.shape[1]):
            step_logits, state, feed = self._step(dec_in[:, t], state, feed, enc, mask, keys_proj)
            logits.append(step_logits)
        return torch.stack(logits, dim=1)

    def split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, T) -> (source (B, src_len), decoder input (B, T - src_len))."""
        check_tokens(x, "seq2seq_rnn")
        if x.shape[1] <= self.src_len:
            raise ValueError(f"seq2seq_rnn: x has {x.shape[1]} positions, but the layout needs the source "
                             f"(src_len={self.src_len}) followed by at least the BOS token")
        return x[:, :self.src_len], x[:, self.src_len:]

    def forward(self, x: Tensor) -> Tensor:
        src, dec_in = self.split(x)
        dec_logits = self.decode(src, dec_in)  # (B, T_dec, V)
        # zeros at the source positions keep the output aligned with y (B, T); those targets are -100
        return torch.cat([dec_logits.new_zeros(x.shape[0], self.src_len, self.vocab_size), dec_logits], dim=1)

    @torch.no_grad()
    def greedy_decode(self, x: Tensor, max_len: int | None = None) -> Tensor:
        """Decode from the model's own argmax outputs, starting from BOS.

        ``x`` is either the packed layout (B, T > src_len), of which only the source is read, or the source alone
        (B, src_len). ``max_len`` defaults to ``T - src_len`` (the decoder slots of the layout). Returns token ids
        (B, max_len); every position after a row's first EOS is ``pad_id``.
        """
        check_tokens(x, "seq2seq_rnn.greedy_decode")
        if x.shape[1] < self.src_len:
            raise ValueError(f"seq2seq_rnn.greedy_decode: need at least src_len={self.src_len} positions, got "
                             f"{x.shape[1]}")
        src = x[:, :self.src_len]
        if max_len is None:
            max_len = x.shape[1] - self.src_len
        if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
            raise ValueError(f"seq2seq_rnn.greedy_decode: max_len must be a positive int, got {max_len!r} (pass it "
                             "when x holds the source only)")
        enc, mask, state = self.encode(src)
        keys_proj = self.attention.project_keys(enc) if isinstance(self.attention, AdditiveAttention) else None
        feed = enc.new_zeros(enc.shape[0], self.hidden_size)
        tokens = torch.full((src.shape[0],), self.bos_id, dtype=torch.int64, device=src.device)
        done = torch.zeros(src.shape[0], dtype=torch.bool, device=src.device)
        outputs = []
        for _ in range(max_len):
            step_logits, state, feed = self._step(tokens, state, feed, enc, mask, keys_proj)
            tokens = step_logits.argmax(dim=-1)
            outputs.append(torch.where(done, self.pad_id, tokens))
            done = done | (tokens == self.eos_id)
        return torch.stack(outputs, dim=1)


def evaluate_greedy(model: Seq2SeqRNN, x: Tensor, y: Tensor, ignore_index: int = -100) -> dict[str, float]:
    """Free-running accuracy: greedy-decode the sources of ``x`` and compare with ``y``'s decoder slots.

    ``token_accuracy``: share of scored target positions (``y != ignore_index``, EOS included) predicted right;
    ``sequence_accuracy``: share of rows with every scored position right. Unlike the teacher-forced accuracy of
    ``model(x)``, an early mistake here is fed back into later steps.
    """
    if not isinstance(model, Seq2SeqRNN):
        raise TypeError(f"evaluate_greedy: expected a Seq2SeqRNN, got {type(model).__name__}")
    check_tokens(y, "evaluate_greedy (y)")
    if y.shape != x.shape:
        raise ValueError(f"evaluate_greedy: x and y must have one shape (B, T), got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    was_training = model.training
    model.eval()
    try:
        pred = model.greedy_decode(x)  # (B, T - src_len)
    finally:
        model.train(was_training)
    target = y[:, model.src_len:]
    scored = target != ignore_index
    right = (pred == target) & scored
    n = int(scored.sum())
    if n == 0:
        raise ValueError("evaluate_greedy: y has no scored positions (all ignore_index)")
    seq_ok = (right | ~scored).all(dim=1)
    return {"token_accuracy": float(right.sum()) / n, "sequence_accuracy": float(seq_ok.float().mean())}


@MODELS.register("seq2seq_rnn", summary="GRU/LSTM encoder-decoder with Bahdanau or Luong attention; x packs the "
                                        "source and the shifted target (Bahdanau et al. 2015; Luong et al. 2015)")
def seq2seq_rnn(input_shape: tuple[int, ...], num_classes: int, src_len: int | None = None, emb_dim: int = 64,
                hidden_size: int = 128, cell: Cell = "gru", bidirectional: bool = True, encoder_layers: int = 1,
                attention: AttentionKind = "bahdanau", input_feeding: bool = True, dropout: float = 0.0,
                pad_id: int = 0, bos_id: int = 1, eos_id: int = 2) -> nn.Module:
    """Encoder-decoder RNN with attention for inputs ``(T,)`` packing source and decoder input.

    ``num_classes`` is the vocabulary size. ``src_len`` defaults to ``(T - 1) // 2``, the layout of ``seq-reverse``
    and ``seq-sort`` (source of M slots, BOS, M target slots: T = 2M + 1); other data sets must pass it.
    """
    (length,) = as_shape(input_shape, model="seq2seq_rnn", ndim=(1,))
    src_len = (length - 1) // 2 if src_len is None else src_len
    if isinstance(src_len, bool) or not isinstance(src_len, int) or not 1 <= src_len < length:
        raise ConfigError(f"model 'seq2seq_rnn': src_len must be an int in [1, T - 1] = [1, {length - 1}] (source "
                          f"slots, then the decoder input), got {src_len!r}")
    return Seq2SeqRNN(num_classes, src_len, emb_dim=emb_dim, hidden_size=hidden_size, cell=cell,
                      bidirectional=bidirectional, encoder_layers=encoder_layers, attention=attention,
                      input_feeding=input_feeding, dropout=dropout, pad_id=pad_id, bos_id=bos_id, eos_id=eos_id)

