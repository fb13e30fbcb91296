"""word2vec against references: the SGNS gradients against autograd on the loss formula (float64, duplicates in
a batch included), Spearman against scipy.stats.spearmanr, the pair enumeration against a brute-force loop, and
the similarity and analogy evaluations against gensim's own (test-only) on the same vectors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tricklab.errors import ConfigError, DataError
from tricklab.paradigms.generative.metrics import WORD2VEC_METRICS
from tricklab.paradigms.generative.word2vec import (
    DEFAULT_TEXT,
    DEFAULT_WORDSIM,
    Word2VecConfig,
    analogy_accuracy,
    build_vocab,
    keep_probabilities,
    read_similarity_pairs,
    run_word2vec,
    sgns_grads,
    sgns_loss_and_grads,
    sgns_table_grads,
    similarity_spearman,
    skipgram_pairs,
    spearman,
    tokenize,
)

needs_text = pytest.mark.skipif(not DEFAULT_TEXT.is_file() or not DEFAULT_WORDSIM.is_dir(),
                                reason="shared Shakespeare corpus / word-similarity sets not present")


def _formula(v: torch.Tensor, u_pos: torch.Tensor, u_neg: torch.Tensor) -> torch.Tensor:
    """Mikolov et al. (2013) eq. 4, negated: -log sigma(u_c . v) - sum_k log sigma(-u_k . v), per pair."""
    return -F.logsigmoid((u_pos * v).sum(-1)) - F.logsigmoid(-torch.einsum("bkd,bd->bk", u_neg, v)).sum(-1)


def test_sgns_gradients_equal_autograd_on_the_formula() -> None:
    g = torch.Generator().manual_seed(0)
    v = torch.randn(6, 8, generator=g, dtype=torch.float64, requires_grad=True)
    u_pos = torch.randn(6, 8, generator=g, dtype=torch.float64, requires_grad=True)
    u_neg = torch.randn(6, 5, 8, generator=g, dtype=torch.float64, requires_grad=True)
    ref = _formula(v, u_pos, u_neg)
    ref_grads = torch.autograd.grad(ref.sum(), (v, u_pos, u_neg))
    loss, gv, gp, gn = sgns_loss_and_grads(v.detach(), u_pos.detach(), u_neg.detach())
    torch.testing.assert_close(loss, ref.detach())
    for ours, theirs in zip((gv, gp, gn), ref_grads):
        torch.testing.assert_close(ours, theirs)
    loss2, gv2, gu2 = sgns_grads(v.detach(), torch.cat([u_pos.detach().unsqueeze(1), u_neg.detach()], 1))
    torch.testing.assert_close(gu2[:, 1:], ref_grads[2])
    torch.testing.assert_close(gv2, ref_grads[0])


def test_sgns_table_gradients_sum_duplicates_like_autograd() -> None:
    g = torch.Generator().manual_seed(1)
    w_in = torch.randn(7, 4, generator=g, dtype=torch.float64, requires_grad=True)
    w_out = torch.randn(7, 4, generator=g, dtype=torch.float64, requires_grad=True)
    centres = torch.tensor([0, 3, 3, 6, 0])  # repeated centres
    contexts = torch.tensor([1, 1, 2, 3, 6])  # a context that is also a noise word below
    negatives = torch.tensor([[2, 2, 5], [6, 0, 1], [1, 4, 4], [5, 5, 5], [3, 2, 1]])
    ref = _formula(w_in[centres], w_out[contexts], w_out[negatives]).sum()
    g_in_ref, g_out_ref = torch.autograd.grad(ref, (w_in, w_out))
    loss, g_in, g_out = sgns_table_grads(w_in.detach(), w_out.detach(), centres, contexts, negatives)
    torch.testing.assert_close(loss, ref.detach())
    torch.testing.assert_close(g_in, g_in_ref)
    torch.testing.assert_close(g_out, g_out_ref)


def test_spearman_equals_scipy_with_ties() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(2)
    a = rng.integers(0, 6, 40).astype(float)  # many ties
    b = a + rng.normal(0, 2, 40)
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)
    assert spearman(b, -b) == pytest.approx(-1.0)


def test_pairs_match_a_brute_force_dynamic_window() -> None:
    ids = np.arange(100, 130)
    window = 3
    centres, contexts = skipgram_pairs(ids, window, np.random.default_rng(5))
    b = np.random.default_rng(5).integers(1, window + 1, size=len(ids))  # the same draw
    expected = sorted((int(ids[i]), int(ids[j])) for i in range(len(ids)) for j in range(len(ids))
                      if i != j and abs(i - j) <= b[i])
    assert sorted(zip(centres.tolist(), contexts.tolist())) == expected


def test_vocab_subsampling_and_tokenizer() -> None:
    assert tokenize("To be, or NOT to be: that's it") == ["to", "be", "or", "not", "to", "be", "that", "s", "it"]
    vocab = build_vocab(["b", "a", "a", "c", "b", "a"], min_count=2)
    assert vocab.words == ["a", "b"] and vocab.counts.tolist() == [3, 2]
    with pytest.raises(DataError, match="min_count"):
        build_vocab(["a"], min_count=2)
    counts = np.array([1000, 10, 1])
    keep = keep_probabilities(counts, 1e-2)
    t = 1e-2 * counts.sum()  # the word2vec C expression, written out
    assert keep[0] == pytest.approx((math.sqrt(1000 / t) + 1) * t / 1000)
    assert keep[1] == keep[2] == 1.0  # rare words are never dropped
    assert (keep_probabilities(counts, 0.0) == 1).all()


@needs_text
def test_evaluation_equals_gensims_on_the_same_vectors(tmp_path: Path) -> None:
    gensim = pytest.importorskip("gensim")
    tokens = tokenize(DEFAULT_TEXT.read_text())[:60_000]
    sentences = [tokens[i : i + 1000] for i in range(0, len(tokens), 1000)]
    model = gensim.models.Word2Vec(sentences, vector_size=20, window=3, min_count=3, sg=1, negative=3, epochs=1,
                                   workers=1, seed=1)
    wv = model.wv
    vectors = torch.from_numpy(wv.vectors.copy())
    index = dict(wv.key_to_index)
    for name in ("wordsim353.tsv", "simlex999.txt"):
        rho, n = similarity_spearman(vectors, index, read_similarity_pairs(DEFAULT_WORDSIM / name))
        _, (g_rho, _), oov = wv.evaluate_word_pairs(str(DEFAULT_WORDSIM / name))
        assert rho == pytest.approx(g_rho, abs=1e-5), name
    acc, n = analogy_accuracy(vectors, index, DEFAULT_WORDSIM / "questions-words.txt")
    g_acc, sections = wv.evaluate_word_analogies(str(DEFAULT_WORDSIM / "questions-words.txt"))
    total = next(s for s in sections if s["section"] == "Total accuracy")
    assert n == len(total["correct"]) + len(total["incorrect"])
    assert acc == pytest.approx(g_acc, abs=1e-12)


@needs_text
def test_run_word2vec_is_deterministic_learns_and_reports_the_declared_metrics() -> None:
    cfg = Word2VecConfig(epochs=2, max_tokens=20_000, dim=16, min_count=3, batch_size=256)
    a = run_word2vec(cfg, seed=0)
    b = run_word2vec(cfg, seed=0)
    assert set(a.metrics) == {m.key for m in WORD2VEC_METRICS}
    drop = ("words_per_second", "train_seconds")
    assert {k: v for k, v in a.metrics.items() if k not in drop} == \
        {k: v for k, v in b.metrics.items() if k not in drop}
    losses = [r["train_loss"] for r in a.history]
    # the mean SGNS loss starts at 6 log 2 = 4.16 (zero output vectors) and falls
    assert losses[1] < losses[0] < 6 * math.log(2)
    assert a.extras["coverage"]["wordsim353_pairs"] > 0


def test_bad_config_is_refused() -> None:
    with pytest.raises(ConfigError, match="window"):
        Word2VecConfig(window=0)
    with pytest.raises(ConfigError, match="min_alpha"):
        Word2VecConfig(alpha=0.01, min_alpha=0.1)
    with pytest.raises(DataError, match="text_file"):
        Word2VecConfig(text_file="/nonexistent/corpus.txt")
