"""Tests for the seq2seq_rnn model (tricklab.models.seq2seq).

References: the step-by-step greedy decoder against the teacher-forced path fed its own outputs (two separate code
paths, one of them the batched Luong path), a hand-packed layout, torch's own GRU/LSTM run on one unpadded source at
a time (for padding invariance), and the claim that attention learns reversal (Bahdanau et al. 2015 show attention
fixes long-sequence seq2seq; reversal is a standard sanity task).
"""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F

from tricklab.data.datasets.seq2seq_toy import EOS_ID, IGNORE_INDEX, PAD_ID, SEP_ID, load_seq_reverse
from tricklab.errors import ConfigError
from tricklab.layers.recurrent import AdditiveAttention
from tricklab.models import MODELS, build_model
from tricklab.models.seq2seq import Seq2SeqRNN, evaluate_greedy, seq2seq_rnn

V, M = 13, 6  # vocabulary of the toy sets; source slots
T = 2 * M + 1

VARIANTS = [
    dict(attention="bahdanau", cell="gru"),
    dict(attention="bahdanau", cell="lstm", bidirectional=False),
    dict(attention="general", cell="gru", input_feeding=True),
    dict(attention="general", cell="lstm", input_feeding=False),
    dict(attention="dot", cell="gru", bidirectional=False, input_feeding=False),
    dict(attention="concat", cell="lstm", encoder_layers=2),
]


def _batch(seed: int = 0, b: int = 4) -> torch.Tensor:
    """Random packed inputs: source lengths 2..M right-padded, <sep>, random decoder tokens."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(3, V, (b, T), generator=g)
    lengths = torch.randint(2, M + 1, (b,), generator=g)
    lengths[0] = M
    x[:, :M] = torch.where(torch.arange(M)[None, :] < lengths[:, None], x[:, :M], PAD_ID)
    x[:, M] = SEP_ID
    return x


def _model(**kw: object) -> Seq2SeqRNN:
    torch.manual_seed(0)
    model = seq2seq_rnn((T,), V, emb_dim=8, hidden_size=12, **kw)
    assert isinstance(model, Seq2SeqRNN)
    return model.double().eval()


def test_registered_and_built_through_the_registry() -> None:
    assert "seq2seq_rnn" in MODELS
    model = build_model("seq2seq_rnn", (T,), V, hidden_size=16)
    assert isinstance(model, Seq2SeqRNN) and model.src_len == M  # default (T - 1) // 2
    with pytest.raises(ConfigError, match="accepts"):
        build_model("seq2seq_rnn", (T,), V, hidden=16)


@pytest.mark.parametrize("kw", VARIANTS, ids=lambda kw: "-".join(str(v) for v in kw.values()))
def test_greedy_decode_equals_teacher_forcing_on_its_own_outputs(kw: dict) -> None:
    """Reference: teacher-forced forward() fed [BOS; greedy[:-1]] must give argmax == greedy at every step until
    EOS (the free-running step loop and the teacher-forced path, batched for Luong without input feeding)."""
    model = _model(**kw)
    x = _batch(1)
    greedy = model.greedy_decode(x)  # (B, M + 1)
    assert greedy.shape == (x.shape[0], T - M)
    # greedy_decode pads after EOS; for the comparison decode without that rule: rerun step by step, raw argmax
    raw = []
    enc, mask, state = model.encode(x[:, :M])
    keys = model.attention.project_keys(enc) if isinstance(model.attention, AdditiveAttention) else None
    feed = enc.new_zeros(enc.shape[0], model.hidden_size)
    tok = torch.full((x.shape[0],), SEP_ID)
    for _ in range(T - M):
        logits, state, feed = model._step(tok, state, feed, enc, mask, keys)
        tok = logits.argmax(-1)
        raw.append(tok)
    raw = torch.stack(raw, 1)
    x_tf = x.clone()
    x_tf[:, M + 1:] = raw[:, :-1]
    logits = model(x_tf)
    assert logits.shape == (x.shape[0], T, V)
    assert (logits[:, :M] == 0).all()  # source positions carry no prediction
    torch.testing.assert_close(logits[:, M:].argmax(-1), raw)
    # greedy_decode is raw up to and including the first EOS, pad afterwards
    after_eos = (raw == EOS_ID).long().cumsum(1) - (raw == EOS_ID).long() > 0
    torch.testing.assert_close(greedy, torch.where(after_eos, PAD_ID, raw))


@pytest.mark.parametrize("kw", VARIANTS[:3], ids=["bahdanau-gru", "bahdanau-lstm", "general-gru"])
def test_decoder_is_causal_and_reads_the_source(kw: dict) -> None:
    """Reference: causality of teacher forcing (changing decoder input j leaves logits < j unchanged) and
    dependence on the source (changing a real source token changes the first prediction)."""
    model = _model(**kw)
    x = _batch(2)
    base = model(x)
    x2 = x.clone()
    x2[:, M + 3] = (x2[:, M + 3] - 2) % (V - 3) + 3
    out = model(x2)
    torch.testing.assert_close(out[:, :M + 3], base[:, :M + 3])
    assert not torch.allclose(out[:, M + 3:], base[:, M + 3:])
    x3 = x.clone()
    x3[:, 0] = (x3[:, 0] - 2) % (V - 3) + 3
    assert not torch.allclose(model(x3)[:, M], base[:, M])


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_padding_and_batch_composition_do_not_change_a_row(cell: str) -> None:
    """Reference: each row decoded alone with its source cut to its real length, through torch's own RNN encoder
    (no padding at all); packing + the attention mask must make the padded batch give the same logits."""
    model = _model(cell=cell, attention="general")
    x = _batch(3, b=5)
    full = model(x)
    for r in range(x.shape[0]):
        n = int((x[r, :M] != PAD_ID).sum())
        single = Seq2SeqRNN(V, n, emb_dim=8, hidden_size=12, cell=cell, attention="general").double().eval()
        single.load_state_dict(model.state_dict())
        xr = torch.cat([x[r, :n], x[r, M:]])[None]
        torch.testing.assert_close(single(xr)[0, n:], full[r, M:])


def test_all_parameters_get_finite_gradients() -> None:
    """Reference: autograd; the masked token loss over the decoder slots reaches every parameter."""
    for kw in VARIANTS:
        model = _model(**kw).train()
        x = _batch(4)
        y = torch.full_like(x, IGNORE_INDEX)
        y[:, M:] = torch.randint(3, V, (x.shape[0], T - M), generator=torch.Generator().manual_seed(0))
        logits = model(x)
        F.cross_entropy(logits.reshape(-1, V), y.reshape(-1), ignore_index=IGNORE_INDEX).backward()
        for name, p in model.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), (kw, name)


def test_rejects_bad_configuration_and_inputs() -> None:
    with pytest.raises(ConfigError, match="bidirectional"):
        seq2seq_rnn((T,), V, attention="dot")
    with pytest.raises(ConfigError, match="attention"):
        seq2seq_rnn((T,), V, attention="luong")
    with pytest.raises(ConfigError, match="src_len"):
        seq2seq_rnn((T,), V, src_len=T)
    with pytest.raises(ConfigError, match="cell"):
        seq2seq_rnn((T,), V, cell="rnn")
    with pytest.raises(ConfigError, match="eos_id"):
        seq2seq_rnn((T,), V, eos_id=V)
    model = _model()
    with pytest.raises(TypeError, match="int64"):
        model(_batch().float())
    with pytest.raises(ValueError, match="src_len"):
        model(_batch()[:, :M])
    x = _batch()
    x[1, :M] = PAD_ID
    with pytest.raises(ValueError, match="all padding"):
        model(x)
    with pytest.raises(ValueError, match="max_len"):
        model.greedy_decode(_batch()[:, :M])


def test_learns_seq_reverse_with_attention() -> None:
    """Claim: an attention seq2seq RNN learns to reverse 8..12-digit strings; greedy (free-running) token accuracy
    on held-out strings > 90% after 160 Adam steps of batch 64 (about 10 s on one core)."""
    torch.manual_seed(0)
    ds = load_seq_reverse(num_train=4000, num_test=500, seed=0)
    model = build_model("seq2seq_rnn", ds.input_shape, ds.num_classes, emb_dim=32, hidden_size=64,
                        attention="bahdanau")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for _ in range(160):
        idx = torch.randint(0, ds.num_train, (64,), generator=g)
        logits = model(ds.x_train[idx])
        loss = F.cross_entropy(logits.reshape(-1, ds.num_classes), ds.y_train[idx].reshape(-1),
                               ignore_index=IGNORE_INDEX)
        opt.zero_grad()
        loss.backward()
        opt.step()
    elapsed = time.perf_counter() - start
    scores = evaluate_greedy(model, ds.x_test, ds.y_test)
    assert scores["token_accuracy"] > 0.9, (scores, elapsed)
    # teacher-forced accuracy, what the lab's token task reports, is at least as high here
    with torch.no_grad():
        model.eval()
        pred = model(ds.x_test).argmax(-1)
    scored = ds.y_test != IGNORE_INDEX
    assert (pred[scored] == ds.y_test[scored]).float().mean() > 0.9
