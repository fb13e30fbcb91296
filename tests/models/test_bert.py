"""Tests for BERT (masked LM, classifier, pre-trained weight loading) and ELECTRA (tricklab.models.bert).

References:
* torch's ``nn.TransformerEncoderLayer(norm_first=True, activation="gelu", batch_first=True)`` without a mask
  (bidirectional) is the slow path the encoder is checked against, outputs and gradients in float64;
* ``torch.autograd.gradcheck`` (finite differences) for the classifier head's gradients;
* ELECTRA's definitions (Clark et al. 2020, §2): k = ceil(0.15 T) masked positions per row, labels
  ``replaced = corrupted != original``, loss = MLM + lambda * BCE, no gradient from the BCE into the generator;
* ``F.binary_cross_entropy_with_logits`` / ``F.cross_entropy`` recomputed from the returned parts.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from tricklab.data.datasets import text as tx
from tricklab.errors import ConfigError
from tricklab.models.bert import (
    BertClassifier,
    BertEncoder,
    BertMLM,
    bert,
    bert_classifier,
    electra_forward,
    electra_loss,
    make_electra,
    select_positions,
)

TEXT_FILE = next((d / tx.FILE_NAME for d in tx.default_dirs() if (d / tx.FILE_NAME).is_file()), None)
needs_text = pytest.mark.skipif(TEXT_FILE is None and not os.environ.get("CI"),
                                reason=f"no {tx.FILE_NAME} in {[str(d) for d in tx.default_dirs()]}")
KW = {"n_layer": 2, "d_model": 16, "n_heads": 2, "dropout": 0.0}


def tiny_bert(vocab: int = 12, length: int = 8, **kw: object) -> BertMLM:
    torch.manual_seed(0)
    return bert((length,), vocab, **(KW | kw))  # type: ignore[arg-type, return-value]


def save_state(model: nn.Module, path: Path, prefix: str = "") -> Path:
    # what the lab runner writes: every state_dict tensor cloned (tied weights would share storage)
    save_file({prefix + k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def reference_encoder(enc: BertEncoder, x: torch.Tensor) -> torch.Tensor:
    h = enc.tok_emb.weight[x] + enc.pos_emb.weight[: x.shape[1]]
    h = F.layer_norm(h, h.shape[-1:], enc.emb_norm.weight, enc.emb_norm.bias)
    for block in enc.blocks:
        layer = nn.TransformerEncoderLayer(h.shape[-1], block.self_attn.n_heads, block.linear1.out_features,
                                           dropout=0.0, activation="gelu", batch_first=True,
                                           norm_first=True).to(h.dtype)
        layer.load_state_dict(block.state_dict())
        h = layer(h)
    return F.layer_norm(h, h.shape[-1:], enc.final_norm.weight, enc.final_norm.bias)


def test_mlm_shapes_and_encoder_matches_torch_layers() -> None:
    m = tiny_bert().double().eval()
    x = torch.randint(0, 12, (2, 8), generator=torch.Generator().manual_seed(1))
    assert m(x).shape == (2, 8, 12) and m.mask_id == 11
    out, ref = m.encoder(x), reference_encoder(m.encoder, x)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    w = torch.randn_like(out)
    g = torch.autograd.grad((out * w).sum(), m.encoder.tok_emb.weight)[0]
    g_ref = torch.autograd.grad((ref * w).sum(), m.encoder.tok_emb.weight)[0]
    torch.testing.assert_close(g, g_ref, rtol=1e-9, atol=1e-10)
    # the MLM decoder is tied: logits = transform(H) @ E^T + b
    logits_ref = F.linear(m.transform(out), m.encoder.tok_emb.weight, m.bias)
    torch.testing.assert_close(m(x), logits_ref)


def test_encoder_is_bidirectional() -> None:
    m = tiny_bert().eval()
    x = torch.randint(0, 12, (1, 8), generator=torch.Generator().manual_seed(2))
    x2 = x.clone()
    x2[0, 7] = (x2[0, 7] + 1) % 12
    assert not torch.allclose(m(x)[0, 0], m(x2)[0, 0])  # position 0 sees the last token


def test_classifier_pooling_padding_and_gradcheck() -> None:
    torch.manual_seed(0)
    clf = bert_classifier((8,), 3, vocab_size=12, **KW).double().eval()
    assert isinstance(clf, BertClassifier)
    x = torch.randint(0, 12, (2, 8), generator=torch.Generator().manual_seed(3))
    assert clf(x).shape == (2, 3)
    pad = torch.zeros(2, 8, dtype=torch.bool)
    pad[0, 5:] = True
    x2 = x.clone()
    x2[0, 5:] = (x2[0, 5:] + 3) % 12  # change only padded tokens: masked mean pooling must not notice
    torch.testing.assert_close(clf(x, pad), clf(x2, pad))
    # reference for masked mean pooling: the encoder output averaged over the 5 real tokens
    h = clf.encoder(x[:1], pad[:1])
    torch.testing.assert_close(clf(x[:1], pad[:1]), clf.head(h[0, :5].mean(0, keepdim=True)))
    w = clf.head.weight.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: torch.func.functional_call(clf, {"head.weight": t}, (x, pad)), (w,))
    torch.manual_seed(0)
    cls = bert_classifier((8,), 3, vocab_size=12, pooling="cls", **KW).eval()
    assert cls(x).shape == (2, 3) and cls.cls is not None
    with pytest.raises(ConfigError, match="pooling"):
        bert_classifier((8,), 3, vocab_size=12, pooling="max")
    with pytest.raises(ConfigError, match="vocab_size"):
        bert_classifier((8,), 3)


def test_classifier_loads_bert_weights_round_trip(tmp_path: Path) -> None:
    m = tiny_bert(vocab=12, length=16)
    path = save_state(m, tmp_path / "model.safetensors")
    clf = bert_classifier((8,), 4, pretrained=str(path), **KW)  # vocab and position table read from the file
    for k, v in m.encoder.state_dict().items():
        assert torch.equal(clf.encoder.state_dict()[k], v), k
    # a torch.compile'd run saves keys under _orig_mod.: those load too
    path2 = save_state(m, tmp_path / "compiled.safetensors", prefix="_orig_mod.")
    clf2 = bert_classifier((8,), 4, pretrained=str(path2), **KW)
    assert torch.equal(clf2.encoder.tok_emb.weight, m.encoder.tok_emb.weight)


def test_classifier_refuses_mismatched_weights(tmp_path: Path) -> None:
    path = save_state(tiny_bert(vocab=12, length=8), tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="shape mismatches.*blocks.0"):
        bert_classifier((8,), 4, pretrained=str(path), **(KW | {"d_model": 32}))
    with pytest.raises(ValueError, match="missing.*blocks.2"):
        bert_classifier((8,), 4, pretrained=str(path), **(KW | {"n_layer": 3}))
    with pytest.raises(ValueError, match="vocab_size=20"):
        bert_classifier((8,), 4, vocab_size=20, pretrained=str(path), **KW)
    with pytest.raises(ValueError, match="positions"):
        bert_classifier((16,), 4, pretrained=str(path), **KW)
    torch.manual_seed(0)
    other = save_state(nn.Linear(3, 3), tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="not the model.safetensors of a 'bert' run"):
        bert_classifier((8,), 4, pretrained=str(other), **KW)
    with pytest.raises(FileNotFoundError, match="not found"):
        bert_classifier((8,), 4, pretrained=str(tmp_path / "missing.safetensors"), **KW)


def test_select_positions_count_and_padding() -> None:
    g = torch.Generator().manual_seed(0)
    m = select_positions((50, 20), 0.15, g)
    assert (m.sum(1) == math.ceil(0.15 * 20)).all()
    pad = torch.zeros(50, 20, dtype=torch.bool)
    pad[:, 10:] = True
    m = select_positions((50, 20), 0.15, g, pad)
    assert not (m & pad).any() and (m.sum(1) == math.ceil(0.15 * 10)).all()
    # every position is chosen equally often: frequency k / T, binomial tolerance
    m = select_positions((4000, 20), 0.15, g)
    freq = m.float().mean(0)
    p = 3 / 20
    assert (freq - p).abs().max() < 5 * math.sqrt(p * (1 - p) / 4000)


def test_electra_labels_loss_parts_and_no_gradient_through_sampling() -> None:
    torch.manual_seed(0)
    model = make_electra(12, 16, d_model=16, n_layer=1, n_heads=2, dropout=0.0)
    x = torch.randint(0, 11, (4, 16), generator=torch.Generator().manual_seed(1))  # id 11 is [MASK]
    out = electra_forward(model, x, 0.25, torch.Generator().manual_seed(2), lambda_=50.0)
    masked = out.corrupted != x
    assert torch.equal(out.replaced, out.corrupted != x)  # "replaced" only where the sample differs
    assert (out.corrupted != model.generator.mask_id).all()  # [MASK] is never sampled
    assert masked.sum(1).le(math.ceil(0.25 * 16)).all()  # only the k chosen positions can change
    torch.testing.assert_close(out.rtd_loss, F.binary_cross_entropy_with_logits(out.disc_logits,
                                                                                out.replaced.float()))
    torch.testing.assert_close(out.loss, out.mlm_loss + 50.0 * out.rtd_loss)
    # the discriminator loss does not reach the generator (sampling is detached)
    gen_params = [p for p in model.generator.parameters()]
    grads = torch.autograd.grad(out.rtd_loss, gen_params, allow_unused=True)
    assert all(g is None or not g.any() for g in grads)
    # ...while the MLM loss does, and the discriminator gets gradient from the RTD loss
    assert torch.autograd.grad(out.mlm_loss, model.generator.bias)[0].abs().sum() > 0
    assert torch.autograd.grad(out.rtd_loss, model.discriminator.head[2].weight)[0].abs().sum() > 0
    same = electra_loss(model, x, 0.25, torch.Generator().manual_seed(2))
    torch.testing.assert_close(same, out.loss)  # seeded: identical masks and samples


def test_electra_confident_generator_yields_no_replacements() -> None:
    """If the generator always predicts the original token, nothing counts as replaced (paper §2)."""
    torch.manual_seed(0)
    model = make_electra(12, 8, d_model=16, n_layer=1, n_heads=2, dropout=0.0)
    x = torch.full((3, 8), 4, dtype=torch.long)
    with torch.no_grad():
        model.generator.bias.fill_(-1e4)
        model.generator.bias[4] = 1e4
    out = electra_forward(model, x, 0.3, torch.Generator().manual_seed(0))
    assert not out.replaced.any() and torch.equal(out.corrupted, x)
    with pytest.raises(TypeError, match="ElectraPretrainer"):
        electra_loss(model.generator, x)  # type: ignore[arg-type]


@needs_text
def test_mlm_training_on_a_slice_of_shakespeare_reduces_the_loss(train_lm: Callable[..., list[float]]) -> None:
    ds = tx.load_shakespeare_mlm(block_size=32, max_train_windows=256, mask_prob=0.15)
    torch.manual_seed(0)
    m = bert(ds.input_shape, ds.num_classes, n_layer=1, d_model=32, n_heads=2, dropout=0.0)
    losses = train_lm(m, ds, steps=40, lr=3e-3)  # lm_loss: cross-entropy at masked positions only (y = -100 else)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5, losses


@needs_text
def test_classifier_training_on_shakespeare_plays_reduces_the_loss(train_losses: Callable[..., list[float]]) -> None:
    ds = tx.load_shakespeare_plays(passage_len=32, num_plays=4, passages_per_play=64, test_passages_per_play=8)
    torch.manual_seed(0)
    clf = bert_classifier(ds.input_shape, ds.num_classes, vocab_size=len(ds.meta["vocab"]), n_layer=1, d_model=32,
                          n_heads=2, dropout=0.0)
    idx = torch.arange(0, ds.num_train, 4)  # 64 passages, 16 per play: full-batch steps must fit them

    def loss_fn(_: int) -> torch.Tensor:
        return F.cross_entropy(clf(ds.x_train[idx]), ds.y_train[idx])

    losses = train_losses(clf, loss_fn, steps=40)
    assert abs(losses[0] - math.log(4)) < 0.3  # starts near chance: ln C
    assert losses[-1] < 0.5 * losses[0], losses


@needs_text
def test_electra_training_on_a_slice_of_shakespeare_reduces_the_loss(train_losses: Callable[..., list[float]]) -> None:
    ds = tx.load_shakespeare_char(block_size=32, max_train_windows=256)
    torch.manual_seed(0)
    model = make_electra(ds.num_classes + 1, 32, d_model=32, n_layer=1, n_heads=2, generator_d_model=16,
                         dropout=0.0)  # one extra id for [MASK] (the last one)
    g, rng = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    parts: list[tuple[float, float]] = []

    def loss_fn(_: int) -> torch.Tensor:
        out = electra_forward(model, ds.x_train[torch.randint(0, ds.num_train, (16,), generator=g)], 0.15, rng)
        parts.append((out.mlm_loss.item(), out.rtd_loss.item()))
        return out.loss

    losses = train_losses(model, loss_fn, steps=30)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 1.0, losses
    assert sum(p[0] for p in parts[-5:]) < sum(p[0] for p in parts[:5])  # the generator's MLM loss falls too
