"""BERT's variants against references.

* ALBERT's cross-layer sharing: the parameter count equals the closed form with one block (tests/reference:
  the formula is written out below, term by term), and the shared stack equals the slow path of an unshared BERT
  whose blocks are all copies of the shared one: same outputs, and the shared block's gradient is the sum of the
  copies' gradients (float64).
* ALBERT's factorized embedding: the shapes V x E, T x E, E -> H and the MLM logits against the formula
  ``(LN(E[x] + P) W_proj^T + b) -> blocks -> head`` computed by hand.
* DistilBERT's initialisation: student tensors equal the teacher's alternate layers exactly and share no storage;
  the student's output equals the teacher's embeddings + blocks 0, 2 + final norm + head run by hand.
* Dynamic masking draws a new mask when a window is drawn again, static masking does not; the dynamic
  selection rate is the mask rate (binomial, 5 standard errors).
* DistilBERT's loss against its formula written with log-softmax, cosine and cross-entropy by hand (float64),
  outputs and gradients, and the soft term's closed-form gradient T (q - p) / N (Hinton et al. 2015, sec. 2.1).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tricklab.data.datasets import text as tx
from tricklab.errors import ConfigError
from tricklab.models import MODELS
from tricklab.models.bert import BertClassifier, BertEncoder, albert, bert, distil_student
from tricklab.paradigms.generative.bert_variants import (
    BertVariantConfig,
    MLMBatcher,
    distilbert_loss,
    run_bert_variant,
)
from tricklab.paradigms.generative.metrics import BERT_VARIANT_METRICS

TEXT = next((d / tx.FILE_NAME for d in tx.default_dirs() if (d / tx.FILE_NAME).is_file()), None)
needs_text = pytest.mark.skipif(TEXT is None, reason="no shakespeare.txt in the shared data folder")


def albert_parameter_count(v: int, t: int, e: int, h: int, f: int) -> int:
    """ALBERT's parameters by hand: embeddings, projection, ONE block, final norm, MLM head (biases included)."""
    embeddings = v * e + t * e + 2 * e  # token table, position table, LayerNorm(E)
    projection = e * h + h
    attention = 3 * h * h + 3 * h + h * h + h  # in_proj (q, k, v) and out_proj
    mlp = h * f + f + f * h + h
    block = attention + mlp + 2 * 2 * h  # two LayerNorms
    final_norm = 2 * h
    head = h * e + e + 2 * e + v  # dense H -> E, LayerNorm(E), decoder bias (the decoder matrix is tied)
    return embeddings + projection + block + final_norm + head


def test_albert_parameter_count_matches_the_formula_and_does_not_grow_with_depth() -> None:
    v, t, e, h = 30, 16, 8, 32
    for n_layer in (1, 3, 6):
        m = albert((t,), v, n_layer=n_layer, d_model=h, n_heads=4, embedding_dim=e)
        got = sum(p.numel() for p in m.parameters())
        assert got == albert_parameter_count(v, t, e, h, 4 * h), (n_layer, got)
        assert list(m.state_dict()).count("encoder.blocks.0.linear1.weight") == 1
        assert not any(k.startswith("encoder.blocks.1.") for k in m.state_dict())
    assert "albert" in MODELS


def test_albert_shared_stack_equals_unshared_copies_outputs_and_summed_gradients() -> None:
    torch.manual_seed(0)
    shared = BertEncoder(20, 8, 16, 3, 2, 0.0, embedding_dim=16, share_layers=True).double()
    layers = shared.layers()
    assert len(layers) == 3 and all(b is layers[0] for b in layers)
    plain = BertEncoder(20, 8, 16, 3, 2, 0.0).double()  # reference: BERT with three independent copies
    state = {k: v for k, v in shared.state_dict().items() if not k.startswith("blocks.")}
    for i in range(3):
        state |= {f"blocks.{i}.{k}": v.clone() for k, v in shared.blocks[0].state_dict().items()}
    plain.load_state_dict(state, strict=True)
    x = torch.randint(0, 20, (3, 8), generator=torch.Generator().manual_seed(1))
    w = torch.randn(3, 8, 16, dtype=torch.float64)
    out_s, out_p = shared(x), plain(x)
    torch.testing.assert_close(out_s, out_p)
    (out_s * w).sum().backward()
    (out_p * w).sum().backward()
    for name, p in shared.blocks[0].named_parameters():
        summed = sum(dict(plain.blocks[i].named_parameters())[name].grad for i in range(3))
        torch.testing.assert_close(p.grad, summed, msg=name)
    torch.testing.assert_close(shared.tok_emb.weight.grad, plain.tok_emb.weight.grad)


def test_albert_factorized_embedding_shapes_and_forward_formula() -> None:
    torch.manual_seed(0)
    v, t, e, h = 25, 10, 6, 24
    m = albert((t,), v, n_layer=2, d_model=h, n_heads=4, embedding_dim=e, dropout=0.0).double().eval()
    enc = m.encoder
    assert enc.tok_emb.weight.shape == (v, e) and enc.pos_emb.weight.shape == (t, e)
    assert enc.emb_norm.weight.shape == (e,) and enc.emb_proj.weight.shape == (h, e)
    assert m.transform[0].weight.shape == (e, h)
    x = torch.randint(0, v, (2, t), generator=torch.Generator().manual_seed(3))
    # reference by hand: LN_E(E[x] + P) -> W_proj -> the (shared) block twice -> LN -> head -> E^T
    g = F.layer_norm(enc.tok_emb.weight[x] + enc.pos_emb.weight[:t], (e,), enc.emb_norm.weight, enc.emb_norm.bias)
    g = g @ enc.emb_proj.weight.T + enc.emb_proj.bias
    for _ in range(2):
        g = enc.blocks[0](g)
    g = F.layer_norm(g, (h,), enc.final_norm.weight, enc.final_norm.bias)
    dense, ln = m.transform[0], m.transform[2]
    g = F.layer_norm(F.gelu(g @ dense.weight.T + dense.bias), (e,), ln.weight, ln.bias)
    logits = g @ enc.tok_emb.weight.T + m.bias
    torch.testing.assert_close(m(x), logits)
    m(x).logsumexp(-1).sum().backward()  # every parameter (E, P, projection, the shared block, head) is trained
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # the classifier's CLS vector lives in E, before the projection
    clf = BertClassifier(enc, 3, pooling="cls").double()
    assert clf.cls.shape == (e,) and clf(x).shape == (2, 3)


def test_distil_student_copies_the_teachers_alternate_layers_exactly() -> None:
    torch.manual_seed(0)
    teacher = bert((8,), 15, n_layer=4, d_model=16, n_heads=2, dropout=0.0)
    for p in teacher.parameters():  # make every tensor distinct (LayerNorms start at ones / zeros)
        p.data.add_(0.01 * torch.randn_like(p))
    before = copy.deepcopy(teacher.state_dict())
    student = distil_student(teacher)
    assert student.encoder.n_layer == 2 and len(student.encoder.blocks) == 2
    t_state, s_state = teacher.state_dict(), student.state_dict()
    for k, val in s_state.items():
        if k.startswith("encoder.blocks."):
            i, rest = k[len("encoder.blocks."):].split(".", 1)
            src = f"encoder.blocks.{2 * int(i)}.{rest}"
        else:
            src = k
        assert torch.equal(val, t_state[src]), k
        assert val.data_ptr() != t_state[src].data_ptr(), f"{k} shares storage with the teacher"
    # the student's blocks are renumbered 0, 1: the same key set as a 2-layer BERT
    assert set(s_state) == {k for k in t_state if not k.startswith(("encoder.blocks.2.", "encoder.blocks.3."))}
    # slow path: the teacher's own modules, blocks 0 and 2 only
    teacher.eval(), student.eval()
    x = torch.randint(0, 15, (2, 8), generator=torch.Generator().manual_seed(2))
    enc = teacher.encoder
    h = enc.emb_norm(enc.pos_emb(enc.tok_emb(x)))
    for i in (0, 2):
        h = enc.blocks[i](h)
    torch.testing.assert_close(student(x), teacher.head(enc.final_norm(h)))
    with torch.no_grad():
        student.encoder.blocks[0].linear1.weight.add_(1.0)
    for k, val in teacher.state_dict().items():
        assert torch.equal(val, before[k]), f"training the student changed the teacher's {k}"


def test_distil_student_refuses_a_shared_teacher_and_bad_depth() -> None:
    with pytest.raises(ValueError, match="shares one block"):
        distil_student(albert((8,), 15, n_layer=4, d_model=16, n_heads=2))
    with pytest.raises(ValueError, match="n_layer must be in"):
        distil_student(bert((8,), 15, n_layer=4, d_model=16, n_heads=2), n_layer=3)


def test_dynamic_masking_changes_across_epochs_static_does_not() -> None:
    windows = torch.randint(0, 30, (64, 32), generator=torch.Generator().manual_seed(0))
    idx = torch.arange(64)
    static = MLMBatcher(windows, 0.15, 30, 30, dynamic=False, seed=5)
    dynamic = MLMBatcher(windows, 0.15, 30, 30, dynamic=True, seed=5)
    e1, e2 = static.batch(idx), static.batch(idx)
    assert torch.equal(e1[0], e2[0]) and torch.equal(e1[1], e2[1])
    d1, d2 = dynamic.batch(idx), dynamic.batch(idx)
    sel1, sel2 = d1[1] != -100, d2[1] != -100
    assert (sel1 != sel2).float().mean() > 0.1  # two independent 15% masks differ at ~25% of positions
    for x, y in (e1, d1, d2):  # targets are the original tokens where selected, inputs follow 80/10/10
        sel = y != -100
        assert torch.equal(y[sel], windows[sel]) and torch.equal(x[~sel], windows[~sel])
    rates = torch.stack([(dynamic.batch(idx)[1] != -100).float().mean() for _ in range(20)])
    n = 20 * windows.numel()
    assert abs(float(rates.mean()) - 0.15) < 5 * math.sqrt(0.15 * 0.85 / n)
    # the same seed reproduces the same sequence of dynamic masks
    again = MLMBatcher(windows, 0.15, 30, 30, dynamic=True, seed=5)
    assert torch.equal(again.batch(idx)[0], d1[0])


def _distil_formula(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor, hs: torch.Tensor, ht: torch.Tensor,
                    temp: float, a: tuple[float, float, float]) -> torch.Tensor:
    """Sanh et al. 2019's loss written out: softmaxes, logs and cosines by hand (float64)."""
    v = s.shape[-1]
    s2, t2 = s.reshape(-1, v), t.reshape(-1, v)
    p = torch.exp(t2 / temp) / torch.exp(t2 / temp).sum(1, keepdim=True)
    log_q = s2 / temp - torch.log(torch.exp(s2 / temp).sum(1, keepdim=True))
    soft = temp**2 * (p * (torch.log(p) - log_q)).sum(1).mean()
    sel = y.reshape(-1) != -100
    log_r = s2 - torch.log(torch.exp(s2).sum(1, keepdim=True))
    mlm = -log_r[sel, y.reshape(-1)[sel]].mean()
    a1, b1 = hs.reshape(-1, hs.shape[-1]), ht.reshape(-1, ht.shape[-1])
    cos = (1 - (a1 * b1).sum(1) / (a1.norm(dim=1) * b1.norm(dim=1))).mean()
    return a[0] * soft + a[1] * mlm + a[2] * cos


def test_distilbert_loss_equals_the_formula_outputs_and_gradients() -> None:
    g = torch.Generator().manual_seed(0)
    b, t, v, h, temp, a = 2, 5, 7, 4, 2.0, (5.0, 2.0, 1.0)
    s = torch.randn(b, t, v, generator=g, dtype=torch.float64, requires_grad=True)
    tl = torch.randn(b, t, v, generator=g, dtype=torch.float64, requires_grad=True)
    hs = torch.randn(b, t, h, generator=g, dtype=torch.float64, requires_grad=True)
    ht = torch.randn(b, t, h, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, v, (b, t), generator=g)
    y[torch.rand(b, t, generator=g) < 0.5] = -100
    y[0, 0] = 3  # at least one masked target
    out = distilbert_loss(s, tl, y, hs, ht, temp, *a)
    ref = _distil_formula(s, tl.detach(), y, hs, ht.detach(), temp, a)
    torch.testing.assert_close(out.loss, ref)
    got = torch.autograd.grad(out.loss, (s, hs), retain_graph=True)
    want = torch.autograd.grad(ref, (s, hs))
    for gg, ww in zip(got, want):
        torch.testing.assert_close(gg, ww)
    # the soft term's gradient in closed form: d/ds [T^2 KL(p || q)] / N = T (q - p) / N
    soft_grad = torch.autograd.grad(out.soft, s, retain_graph=True)[0]
    q, p = torch.softmax(s.detach() / temp, -1), torch.softmax(tl.detach() / temp, -1)
    torch.testing.assert_close(soft_grad, temp * (q - p) / (b * t))
    # the teacher is a fixed target: no gradient reaches its logits or hidden states
    assert out.loss.grad_fn is not None
    assert all(gr is None for gr in torch.autograd.grad(out.loss, (tl, ht), allow_unused=True))


def test_distilbert_loss_ignores_padding_positions() -> None:
    g = torch.Generator().manual_seed(1)
    s, tl = torch.randn(2, 4, 6, generator=g), torch.randn(2, 4, 6, generator=g)
    hs, ht = torch.randn(2, 4, 3, generator=g), torch.randn(2, 4, 3, generator=g)
    y = torch.full((2, 4), -100)
    y[0, 1] = 2
    pad = torch.zeros(2, 4, dtype=torch.bool)
    pad[1, 2:] = True
    full = distilbert_loss(s, tl, y, hs, ht, key_padding_mask=pad)
    keep = ~pad
    ref = distilbert_loss(s[keep][None], tl[keep][None], y[keep][None], hs[keep][None], ht[keep][None])
    torch.testing.assert_close(full.loss, ref.loss)


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match="variant must be one of"):
        BertVariantConfig(variant="xlnet")
    with pytest.raises(ConfigError, match="steps must be a positive int"):
        BertVariantConfig(steps=0)
    with pytest.raises(ConfigError, match="teacher_file"):
        BertVariantConfig(variant="distilbert", teacher_file="/nonexistent/model.safetensors")


@needs_text
def test_run_bert_then_distilbert_from_its_weights(tmp_path: Path) -> None:
    small = dict(block_size=32, d_model=16, n_layer=2, n_heads=2, max_train_windows=64, batch_size=8, steps=4,
                 eval_windows=16, finetune_steps=2, log_every=2, num_plays=3)
    res = run_bert_variant(BertVariantConfig(variant="bert", **small), seed=0, run_dir=tmp_path / "bert")
    assert set(res.metrics) == {m.key for m in BERT_VARIANT_METRICS}
    assert 0.0 <= res.metrics["mlm_accuracy"] <= 1.0 and 0.0 <= res.metrics["plays_accuracy"] <= 1.0
    weights = tmp_path / "bert" / "model.safetensors"
    assert weights.is_file() and (tmp_path / "bert" / "result.json").is_file()
    cfg = BertVariantConfig(variant="distilbert", teacher_file=str(weights), **small)
    dres = run_bert_variant(cfg, seed=0)
    assert dres.metrics["parameters"] < res.metrics["parameters"]
    assert dres.extras["teacher_mlm_accuracy"] == pytest.approx(res.metrics["mlm_accuracy"])
