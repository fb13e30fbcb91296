"""word2vec against references: the SGNS gradients against autograd on the loss formula (float64, duplicates in
a batch included), Spearman against scipy.stats.spearmanr, the pair enumeration against a brute-force loop, and
the similarity and analogy evaluations against gensim's own (test-only) on the same vectors.

CBOW and hierarchical softmax: the Huffman codes are prefix-free, form one tree rooted at inner node V - 2, and
their expected length equals the optimal expected length computed independently with heapq (the sum of the
merged weights, Huffman 1952); the hierarchical-softmax probabilities sum to 1 over the vocabulary; HS and CBOW
gradients equal autograd on the formulas (float64, duplicates included); the CBOW windows equal a brute-force
loop. The vectorised training loop equals the first version's loop (kept below as the slow reference path) on
the same corpus and seed."""

from __future__ import annotations

import heapq
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tricklab.errors import ConfigError, DataError
from tricklab.paradigms.generative.metrics import WORD2VEC_METRICS
from tricklab.paradigms.generative.word2vec import (
    _TABLE,
    DEFAULT_TEXT,
    DEFAULT_WORDSIM,
    Word2VecConfig,
    analogy_accuracy,
    build_vocab,
    cbow_windows,
    hs_grads,
    huffman_tree,
    keep_probabilities,
    noise_distribution,
    read_similarity_pairs,
    run_word2vec,
    sgns_grads,
    sgns_loss_and_grads,
    sgns_table_grads,
    similarity_spearman,
    skipgram_pairs,
    spearman,
    tokenize,
    train_word2vec,
    word2vec_table_grads,
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
    with pytest.raises(ConfigError, match="model must be one of"):
        Word2VecConfig(model="glove")
    with pytest.raises(ConfigError, match="objective must be one of"):
        Word2VecConfig(objective="softmax")


# ------------------------------------------------------------------------------ hierarchical softmax and CBOW
def _optimal_expected_length(counts: list[int]) -> float:
    """Huffman's optimum, independently: the expected code length is the sum of all merged weights / total."""
    heap = list(counts)
    heapq.heapify(heap)
    cost = 0
    while len(heap) > 1:
        a, b = heapq.heappop(heap), heapq.heappop(heap)
        cost += a + b
        heapq.heappush(heap, a + b)
    return cost / sum(counts)


@pytest.mark.parametrize("counts", [[5, 3], [1, 1, 1, 1, 1], [50, 20, 20, 7, 3, 3, 1],
                                    np.random.default_rng(0).integers(1, 1000, 300).tolist()])
def test_huffman_codes_are_prefix_free_one_tree_and_optimal(counts: list[int]) -> None:
    counts_arr = np.array(counts)
    tree = huffman_tree(counts_arr)
    v = len(counts)
    codes = ["".join(map(str, tree.code(w))) for w in range(v)]
    assert all(codes) and len(set(codes)) == v
    srt = sorted(codes)
    assert not any(b.startswith(a) for a, b in zip(srt, srt[1:])), "a code is a prefix of another"
    expected = float((counts_arr * tree.lengths.numpy()).sum()) / counts_arr.sum()
    assert expected == pytest.approx(_optimal_expected_length(counts), rel=1e-12)
    # one tree: the root is inner node V - 2 and each (node, bit) leads to one child only
    child: dict[tuple[int, int], object] = {}
    for w in range(v):
        n = int(tree.lengths[w])
        pts, bits = tree.points[w, :n].tolist(), tree.codes[w, :n].tolist()
        assert pts[0] == v - 2
        for j in range(n):
            nxt = pts[j + 1] if j + 1 < n else ("leaf", w)
            assert child.setdefault((pts[j], bits[j]), nxt) == nxt
    assert len(child) == 2 * (v - 1)  # every inner node has exactly two children
    # a more frequent word never has a longer code
    order = np.argsort(-counts_arr, kind="stable")
    assert (np.diff(tree.lengths.numpy()[order]) >= 0).all()


def test_huffman_needs_two_words() -> None:
    with pytest.raises(ConfigError, match="at least 2 words"):
        huffman_tree(np.array([4]))


def _hs_formula(h: torch.Tensor, u: torch.Tensor, codes: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """-log p(w | h) = -sum_j log sigma((1 - 2 d_j) u_{n_j} . h) over the valid path entries (Mikolov 2013)."""
    s = torch.einsum("bld,bd->bl", u, h)
    return -(F.logsigmoid((1 - 2 * codes.to(h.dtype)) * s) * mask).sum(1)


def test_hierarchical_softmax_is_normalised_and_its_gradients_equal_autograd() -> None:
    g = torch.Generator().manual_seed(3)
    counts = np.array([40, 17, 9, 9, 5, 2, 1])
    tree = huffman_tree(counts)
    v, d = len(counts), 6
    w_nodes = torch.randn(v - 1, d, generator=g, dtype=torch.float64)
    h = torch.randn(1, d, generator=g, dtype=torch.float64)
    mask = tree.mask.double()
    # p(w | h) over every word sums to 1: the tree's binary decisions partition the probability
    losses = torch.stack([hs_grads(h, w_nodes[tree.points[w]].unsqueeze(0), tree.codes[w].unsqueeze(0),
                                   mask[w].unsqueeze(0))[0][0] for w in range(v)])
    assert float(torch.exp(-losses).sum()) == pytest.approx(1.0, abs=1e-12)
    # gradients against autograd on the formula, a batch of targets with repeats and padded paths
    targets = torch.tensor([0, 6, 3, 6, 1])
    hb = torch.randn(5, d, generator=g, dtype=torch.float64, requires_grad=True)
    u = w_nodes[tree.points[targets]].clone().requires_grad_(True)
    ref = _hs_formula(hb, u, tree.codes[targets], mask[targets])
    rg_h, rg_u = torch.autograd.grad(ref.sum(), (hb, u))
    loss, gh, gu = hs_grads(hb.detach(), u.detach(), tree.codes[targets], mask[targets])
    torch.testing.assert_close(loss, ref.detach())
    torch.testing.assert_close(gh, rg_h)
    torch.testing.assert_close(gu, rg_u)


def test_cbow_table_gradients_average_the_context_like_autograd() -> None:
    g = torch.Generator().manual_seed(4)
    w_in = torch.randn(9, 5, generator=g, dtype=torch.float64, requires_grad=True)
    w_out = torch.randn(9, 5, generator=g, dtype=torch.float64, requires_grad=True)
    ctx = torch.tensor([[1, 2, 2, 0], [3, 4, 5, 6], [7, 0, 0, 0]])  # a repeated context word; padding
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    out = torch.tensor([[8, 1, 3], [2, 2, 7], [0, 8, 4]])  # target then noise words
    labels = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    # formula, example by example: h = the plain mean of the valid context vectors
    ref = torch.zeros((), dtype=torch.float64)
    for b in range(3):
        h = torch.stack([w_in[int(c)] for c, keep in zip(ctx[b], mask[b]) if keep]).mean(0)
        s = w_out[out[b]] @ h
        ref = ref - F.logsigmoid(s[0]) - F.logsigmoid(-s[1:]).sum()
    g_in_ref, g_out_ref = torch.autograd.grad(ref, (w_in, w_out))
    loss, g_in, g_out = word2vec_table_grads(w_in.detach(), w_out.detach(), ctx, mask, out, labels)
    torch.testing.assert_close(loss, ref.detach())
    torch.testing.assert_close(g_in, g_in_ref)
    torch.testing.assert_close(g_out, g_out_ref)


def test_cbow_windows_match_a_brute_force_dynamic_window() -> None:
    ids = np.arange(100, 120)
    window = 3
    centres, ctx, mask = cbow_windows(ids, window, np.random.default_rng(7))
    b = np.random.default_rng(7).integers(1, window + 1, size=len(ids))
    expected = [(int(ids[i]), sorted(int(ids[j]) for j in range(len(ids)) if j != i and abs(i - j) <= b[i]))
                for i in range(len(ids))]
    got = [(int(c), sorted(int(x) for x, k in zip(row, m) if k)) for c, row, m in zip(centres, ctx, mask)]
    assert got == expected


def _first_version_sgns(tokens: list[str], cfg: Word2VecConfig, seed: int) -> torch.Tensor:
    """The slow reference path: the first version's training loop, unchanged (advanced indexing, the packed
    sgns_grads), against which the vectorised loop must learn the same vectors."""
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    vocab = build_vocab(tokens, cfg.min_count)
    ids = vocab.encode(tokens)
    keep = keep_probabilities(vocab.counts, cfg.sample)
    table = torch.repeat_interleave(torch.arange(len(vocab)),
                                    torch.round(noise_distribution(vocab.counts) * _TABLE).long())
    d = cfg.dim
    w_in = (torch.rand(len(vocab), d, generator=gen) - 0.5) / d
    w_out = torch.zeros(len(vocab), d)
    planned = cfg.epochs * float(keep[ids].sum()) * (cfg.window + 1)
    done = 0
    for _ in range(cfg.epochs):
        kept = ids[rng.random(len(ids)) < keep[ids]]
        centres, contexts = skipgram_pairs(kept, cfg.window, rng)
        c_all = torch.from_numpy(centres)
        noise_ids = table[torch.randint(0, len(table), (len(c_all), cfg.negative), generator=gen)]
        out_all = torch.cat([torch.from_numpy(contexts).unsqueeze(1), noise_ids], dim=1)
        for i in range(0, len(c_all), cfg.batch_size):
            c, o = c_all[i : i + cfg.batch_size], out_all[i : i + cfg.batch_size]
            lr = max(cfg.min_alpha, cfg.alpha - (cfg.alpha - cfg.min_alpha) * done / planned)
            _, gv, gu = sgns_grads(w_in[c], w_out[o])
            w_in.index_add_(0, c, gv, alpha=-lr)
            w_out.index_add_(0, o.reshape(-1), gu.reshape(-1, d), alpha=-lr)
            done += len(c)
    return w_in


@needs_text
def test_vectorised_sgns_learns_what_the_first_version_learned() -> None:
    tokens = tokenize(DEFAULT_TEXT.read_text())[:15_000]
    cfg = Word2VecConfig(epochs=2, dim=16, min_count=3, batch_size=256)
    _, ours, _, _ = train_word2vec(tokens, cfg, seed=3)
    torch.testing.assert_close(ours, _first_version_sgns(tokens, cfg, seed=3), rtol=1e-5, atol=1e-7)


@needs_text
@pytest.mark.parametrize(("model", "objective"), [("cbow", "negative"), ("skipgram", "hs"), ("cbow", "hs")])
def test_cbow_and_hierarchical_softmax_train_deterministically(model: str, objective: str) -> None:
    tokens = tokenize(DEFAULT_TEXT.read_text())[:20_000]
    cfg = Word2VecConfig(epochs=3, dim=16, min_count=3, batch_size=256, model=model, objective=objective,
                         alpha=0.05 if model == "cbow" else 0.025)
    vocab, a, hist, _ = train_word2vec(tokens, cfg, seed=0)
    _, b, _, _ = train_word2vec(tokens, cfg, seed=0)
    assert torch.equal(a, b)
    losses = [r["train_loss"] for r in hist]
    assert losses[-1] < losses[0], losses
    if objective == "hs":  # zero inner nodes start every decision at a coin flip: loss = code length x ln 2, at most
        tree = huffman_tree(vocab.counts)
        assert losses[0] < float(tree.lengths.max()) * math.log(2)


@needs_text
@pytest.mark.slow  # one torch.compile (tens of seconds on a cold cache)
def test_compiled_sgns_step_learns_what_the_eager_loop_learns() -> None:
    tokens = tokenize(DEFAULT_TEXT.read_text())[:15_000]
    cfg = Word2VecConfig(epochs=2, dim=16, min_count=3, batch_size=256)
    _, eager, _, _ = train_word2vec(tokens, cfg, seed=1)
    _, fused, hist, _ = train_word2vec(tokens, Word2VecConfig(**{**cfg.__dict__, "compile": True}), seed=1)
    assert "compile_seconds" in hist[0]
    # the fused C++ loop rounds differently in the last bits; the vectors agree far below their scale (~0.03)
    torch.testing.assert_close(fused, eager, rtol=1e-4, atol=1e-6)
