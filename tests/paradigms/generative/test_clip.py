"""CLIP-style model: the symmetric loss against our (separately tested) InfoNCE and a float64 brute-force loop
(outputs and gradients), recall@k against a loop, captions and tokens made by code, a tiny deterministic run."""

from __future__ import annotations

import math

import pytest
import torch

from tricklab.data.datasets.fashion_mnist import DEFAULT_DIR
from tricklab.errors import ConfigError
from tricklab.paradigms.generative.clip import (
    CLASS_WORDS,
    CLIPConfig,
    Tokenizer,
    attribute_edges,
    clip_loss,
    make_captions,
    recall_at_k,
    run_clip,
)
from tricklab.paradigms.generative.metrics import CLIP_METRICS
from tricklab.losses.nce import info_nce


def test_clip_loss_equals_symmetric_info_nce_and_a_brute_force_loop() -> None:
    g = torch.Generator().manual_seed(0)
    img = torch.randn(6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    txt = torch.randn(6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    scale = torch.tensor(7.0, dtype=torch.float64)
    ours = clip_loss(img, txt, scale)
    ref = (info_nce(img, txt, temperature=1 / 7.0) + info_nce(txt, img, temperature=1 / 7.0)) / 2
    torch.testing.assert_close(ours, ref)
    # brute force: -log softmax of the matching pair, over rows (image -> texts) and over columns
    a = img / img.norm(dim=1, keepdim=True)
    b = txt / txt.norm(dim=1, keepdim=True)
    total = 0.0
    for i in range(6):
        s_row = [7.0 * (a[i] @ b[j]) for j in range(6)]
        s_col = [7.0 * (a[j] @ b[i]) for j in range(6)]
        total = total - (s_row[i] - torch.logsumexp(torch.stack(s_row), 0)) \
            - (s_col[i] - torch.logsumexp(torch.stack(s_col), 0))
    brute = total / 12
    torch.testing.assert_close(ours, brute)
    for x, y in zip(torch.autograd.grad(ours, (img, txt)), torch.autograd.grad(brute, (img, txt))):
        torch.testing.assert_close(x, y)


def test_recall_at_k_equals_a_loop() -> None:
    g = torch.Generator().manual_seed(1)
    sim = torch.randn(30, 8, generator=g)
    target = torch.randint(0, 8, (30,), generator=g)
    for k in (1, 3, 8):
        hits = sum(int(target[i]) in sorted(range(8), key=lambda j: -float(sim[i, j]))[:k] for i in range(30))
        assert recall_at_k(sim, target, k) == pytest.approx(hits / 30)


def test_captions_name_the_class_and_the_pixels_attributes() -> None:
    images = torch.zeros(3, 1, 28, 28)
    images[0, 0, :4] = 0.2  # few, dark pixels
    images[1, 0, :14] = 0.6
    images[2, 0] = 1.0  # every pixel, bright
    edges = attribute_edges(images)
    caps = make_captions(images, torch.tensor([0, 5, 9]), edges, torch.Generator().manual_seed(0))
    assert "t shirt or top" in caps[0] and "dark" in caps[0] and "small" in caps[0]
    assert "sandal" in caps[1] and "grey" in caps[1] and "medium" in caps[1]
    assert "ankle boot" in caps[2] and "bright" in caps[2] and "large" in caps[2]
    tok = Tokenizer()
    ids = tok(caps + [f"a photo of a {c}" for c in CLASS_WORDS])
    # no word is dropped: every token of every sentence is in the vocabulary
    words = [len(c.replace(",", " , ").split()) for c in caps + [f"a photo of a {c}" for c in CLASS_WORDS]]
    assert (ids > 0).sum(1).tolist() == words


@pytest.mark.skipif(not DEFAULT_DIR.is_dir(), reason="Fashion-MNIST IDX files not installed")
def test_run_clip_is_deterministic_and_beats_chance_quickly() -> None:
    cfg = CLIPConfig(steps=60, batch_size=64, hidden=64, dim=16, eval_examples=300, probe_examples=500)
    a = run_clip(cfg, seed=0)
    b = run_clip(cfg, seed=0)
    assert set(a.metrics) == {m.key for m in CLIP_METRICS}
    assert {k: v for k, v in a.metrics.items() if k != "train_seconds"} == \
        {k: v for k, v in b.metrics.items() if k != "train_seconds"}
    assert a.metrics["zero_shot_accuracy"] > 0.3  # chance is 0.1; a 3x margin after 60 steps
    assert math.isfinite(a.history[-1]["train_loss"])
    with pytest.raises(ConfigError, match="batch_size"):
        CLIPConfig(batch_size=1)
