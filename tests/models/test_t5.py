"""Tests for T5-style span corruption and the encoder-decoder (tricklab.models.t5).

References:
* span corruption: a slow Python reconstruction (each sentinel in the input is replaced by the target tokens
  that follow the same sentinel) must give back the original; lengths from T5's closed form
  num_noise = round(L * density), num_spans = round(num_noise / mean_span_length) (Raffel et al. 2020, §3.1.4);
* the model: torch's ``nn.TransformerEncoderLayer`` / ``nn.TransformerDecoderLayer`` (norm_first, GELU, causal
  ``tgt_mask``) loaded with the blocks' state_dicts, outputs and gradients in float64;
* greedy decoding: teacher-forcing its own output must reproduce it (argmax at every step).
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tricklab.data.datasets import text as tx
from tricklab.errors import ConfigError
from tricklab.models.t5 import T5, greedy_decode, num_sentinels_needed, shift_right, span_corrupt, span_lengths, t5_loss

TEXT_FILE = next((d / tx.FILE_NAME for d in tx.default_dirs() if (d / tx.FILE_NAME).is_file()), None)
needs_text = pytest.mark.skipif(TEXT_FILE is None and not os.environ.get("CI"),
                                reason=f"no {tx.FILE_NAME} in {[str(d) for d in tx.default_dirs()]}")


def reconstruct(inputs: list[int], targets: list[int], sentinels: list[int]) -> list[int]:
    """Slow reference: fill each input sentinel with the target tokens between it and the next sentinel."""
    fills: dict[int, list[int]] = {}
    current = None
    for t in targets:
        if t in sentinels:
            current = t
            fills[current] = []
        else:
            assert current is not None, "targets must start with a sentinel"
            fills[current].append(t)
    out = []
    for t in inputs:
        out.extend(fills[t] if t in sentinels else [t])
    return out


def test_span_corruption_reconstructs_the_original() -> None:
    g = torch.Generator().manual_seed(0)
    sentinels = list(range(100, 140))
    for length, density, span in ((20, 0.15, 3.0), (64, 0.3, 2.0), (7, 0.5, 1.0), (128, 0.15, 3.0), (2, 0.15, 3.0)):
        for _ in range(5):
            tokens = torch.randint(0, 50, (length,), generator=g)
            inputs, targets = span_corrupt(tokens, density, span, sentinels, g)
            num_noise, num_spans = span_lengths(length, density, span)
            assert num_noise == min(max(round(length * density), 1), length - 1)
            assert inputs.shape == (length - num_noise + num_spans,)
            assert targets.shape == (num_noise + num_spans + 1,)
            assert reconstruct(inputs.tolist(), targets.tolist(), sentinels) == tokens.tolist()
            # sentinels appear in order, once each: S0..S_{k-1} in inputs, S0..S_k in targets
            assert [t for t in inputs.tolist() if t in sentinels] == sentinels[:num_spans]
            assert [t for t in targets.tolist() if t in sentinels] == sentinels[:num_spans + 1]
            assert num_sentinels_needed(length, density, span) == num_spans + 1


def test_span_corruption_batch_mean_span_and_errors() -> None:
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 50, (6, 40), generator=g)
    inputs, targets = span_corrupt(tokens, 0.15, 3.0, range(50, 60), g)
    assert inputs.shape == (6, 40 - 6 + 2) and targets.shape == (6, 6 + 2 + 1)
    for r in range(6):
        assert reconstruct(inputs[r].tolist(), targets[r].tolist(), list(range(50, 60))) == tokens[r].tolist()
    # mean span length over the spans equals num_noise / num_spans = 6 / 2 exactly; layouts differ between rows
    assert len({tuple(row.tolist()) for row in inputs}) > 1
    with pytest.raises(ValueError, match="sentinel ids"):
        span_corrupt(tokens[0], 0.15, 3.0, [50], g)
    with pytest.raises(ValueError, match="contain sentinel"):
        span_corrupt(tokens[0], 0.15, 3.0, range(0, 60), g)
    with pytest.raises(ValueError, match="noise_density"):
        span_corrupt(tokens[0], 1.5, 3.0, range(50, 60), g)
    with pytest.raises(TypeError, match="int64"):
        span_corrupt(tokens[0].float(), 0.15, 3.0, range(50, 60), g)


def tiny(vocab: int = 13) -> T5:
    torch.manual_seed(0)
    return T5(vocab, d_model=16, n_layers=2, n_heads=2, dropout=0.0, max_len=64)


def reference_forward(m: T5, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    def emb(x: torch.Tensor) -> torch.Tensor:
        return m.emb.weight[x] + m.pos.pe[: x.shape[1]].to(m.emb.weight.dtype)

    h = emb(src)
    for block in m.encoder:
        layer = nn.TransformerEncoderLayer(16, 2, 64, dropout=0.0, activation="gelu", batch_first=True,
                                           norm_first=True).double()
        layer.load_state_dict(block.state_dict())
        h = layer(h)
    mem = F.layer_norm(h, (16,), m.enc_norm.weight, m.enc_norm.bias)
    d = emb(tgt)
    causal = nn.Transformer.generate_square_subsequent_mask(tgt.shape[1], dtype=torch.float64)
    for block in m.decoder:
        layer = nn.TransformerDecoderLayer(16, 2, 64, dropout=0.0, activation="gelu", batch_first=True,
                                           norm_first=True).double()
        layer.load_state_dict(block.state_dict())
        d = layer(d, mem, tgt_mask=causal)
    d = F.layer_norm(d, (16,), m.dec_norm.weight, m.dec_norm.bias)
    return d @ m.emb.weight.T / 16 ** 0.5


def test_model_matches_torch_layers_outputs_and_grads() -> None:
    m = tiny().double().eval()
    g = torch.Generator().manual_seed(2)
    src, tgt = torch.randint(0, 13, (2, 9), generator=g), torch.randint(0, 13, (2, 5), generator=g)
    out = m(src, tgt)
    assert out.shape == (2, 5, 13)
    ref = reference_forward(m, src, tgt)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    w = torch.randn_like(out)
    gr = torch.autograd.grad((out * w).sum(), m.emb.weight)[0]
    gr_ref = torch.autograd.grad((ref * w).sum(), m.emb.weight)[0]
    torch.testing.assert_close(gr, gr_ref, rtol=1e-9, atol=1e-10)


def test_decoder_is_causal_and_encoder_is_bidirectional() -> None:
    m = tiny().eval()
    g = torch.Generator().manual_seed(3)
    src, tgt = torch.randint(0, 13, (2, 9), generator=g), torch.randint(0, 13, (2, 6), generator=g)
    base = m(src, tgt)
    tgt2 = tgt.clone()
    tgt2[:, 4] = (tgt2[:, 4] + 1) % 13
    out = m(src, tgt2)
    assert torch.equal(out[:, :4], base[:, :4]) and not torch.allclose(out[:, 4], base[:, 4])
    src2 = src.clone()
    src2[:, -1] = (src2[:, -1] + 1) % 13
    assert not torch.allclose(m(src2, tgt)[:, 0], base[:, 0])  # first target position sees the whole source


def test_shift_right_and_loss_match_manual_teacher_forcing() -> None:
    targets = torch.tensor([[5, 6, 7, -100], [8, 9, 10, 11]])
    assert shift_right(targets, 0).tolist() == [[0, 5, 6, 7], [0, 8, 9, 10]]
    m = tiny().double()
    src = torch.randint(0, 13, (2, 6), generator=torch.Generator().manual_seed(4))
    loss = t5_loss(m, src, targets)
    logits = m(src, shift_right(targets, 0))
    terms = [-torch.log_softmax(logits[b, t], -1)[targets[b, t]] for b in range(2) for t in range(4)
             if targets[b, t] != -100]
    ref = torch.stack(terms).mean()
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(torch.autograd.grad(loss, m.emb.weight)[0], torch.autograd.grad(ref, m.emb.weight)[0])


def test_greedy_decode_is_consistent_with_teacher_forcing() -> None:
    m = tiny()
    m.train()
    src = torch.randint(0, 13, (3, 7), generator=torch.Generator().manual_seed(5))
    out = greedy_decode(m, src, 6)
    assert out.shape == (3, 6) and m.training  # mode restored
    m.eval()
    logits = m(src, shift_right(out, m.decoder_start_id))
    assert torch.equal(logits.argmax(-1), out)
    stop = int(out[0, 0])  # stopping on a token that row 0 emits first: row 0 then repeats it
    stopped = greedy_decode(m, src, 6, stop_id=stop)
    assert (stopped[0] == stop).all()


def test_bad_configuration_raises() -> None:
    with pytest.raises(ConfigError, match="divisible"):
        T5(10, d_model=10, n_heads=4)
    with pytest.raises(ConfigError, match="decoder_start_id"):
        T5(10, d_model=8, n_heads=2, decoder_start_id=10)
    with pytest.raises(ValueError, match="max_new_tokens"):
        greedy_decode(tiny(), torch.zeros(1, 3, dtype=torch.long), 0)


@needs_text
def test_span_corruption_training_on_shakespeare_reduces_the_loss() -> None:
    ds = tx.load_shakespeare_char(block_size=32, max_train_windows=128)
    v = ds.num_classes
    n_sent = num_sentinels_needed(32)
    sentinels = list(range(v, v + n_sent))
    g = torch.Generator().manual_seed(0)
    inputs, targets = span_corrupt(ds.x_train, 0.15, 3.0, sentinels, g)
    torch.manual_seed(0)
    m = T5(v + n_sent, d_model=32, n_layers=1, n_heads=2, dropout=0.0, max_len=64)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        idx = torch.randint(0, inputs.shape[0], (16,), generator=g)
        loss = t5_loss(m, inputs[idx], targets[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5, losses
