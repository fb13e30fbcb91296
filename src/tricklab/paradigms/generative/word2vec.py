"""word2vec skip-gram with negative sampling (Mikolov et al., 2013, "Distributed representations of words and
phrases and their compositionality"), trained with hand-written sparse SGD as in the reference C code, and the
standard evaluations: word-similarity Spearman correlation (WordSim-353, SimLex-999) and analogies (3CosAdd).

The objective for a centre word w with input vector v_w, an observed context word c and K words n_k drawn from
the noise distribution P_n(w) ~ count(w)^(3/4) (paper eq. 4), with output vectors u:

    loss = -log sigma(u_c . v_w) - sum_k log sigma(-u_{n_k} . v_w)

and its gradients (sigma' = sigma (1 - sigma), log sigma(x)' = 1 - sigma(x)):

    d/dv_w     = (sigma(u_c . v_w) - 1) u_c + sum_k sigma(u_{n_k} . v_w) u_{n_k}
    d/du_c     = (sigma(u_c . v_w) - 1) v_w
    d/du_{n_k} = sigma(u_{n_k} . v_w) v_w

Frequent words are subsampled with the C code's keep probability ``(sqrt(f / (s T)) + 1) s T / f`` (f the
word's count, T the corpus size, s = ``sample``; the paper's eq. 5 is the simpler ``1 - sqrt(t / f)``), and the
window is dynamic: each centre uses a window drawn uniformly from 1..``window`` (as in the C code and gensim).
A batch of B (centre, context) pairs is one vectorised step; the updates of a word that appears several times in
a batch are summed (``index_add_``), like B sequential Hogwild updates without their interleaving.

CBOW (Mikolov et al. 2013a, "Efficient estimation of word representations in vector space") predicts the centre
word from the mean of its context's input vectors, h = (1/|C|) sum_{c in C} v_c (gensim's ``cbow_mean=1``), with
the same output losses; the gradient reaching each v_c is dloss/dh / |C| (the exact gradient of the mean; the C
code and gensim add the undivided dloss/dh to every context word, a |C|-times larger step).

Hierarchical softmax (Morin & Bengio 2005; Mikolov et al. 2013, sec. 2.1) replaces the K noise words by the path
from the root of a Huffman tree over the vocabulary to the target word: with inner-node vectors u_n and code bits
d_j in {0, 1} along the path n_1..n_L (the C code's convention: label 1 - d_j),

    loss = -sum_j log sigma((1 - 2 d_j) u_{n_j} . h)

so p(w | h) = prod_j sigma((1 - 2 d_j) u_{n_j} . h) sums to 1 over the vocabulary, and a frequent word has a short
code (the expected code length is minimal: Huffman's construction).
Every variant is one call of :func:`w2v_grads`: loss = sum_j m_j softplus((1 - 2 y_j) s_j), s_j = u_j . h, with
labels y (1 for the context / a 0-bit, 0 for a noise word / a 1-bit) and a mask m for padded paths.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from tricklab.data.datasets.text import default_dirs
from tricklab.errors import ConfigError, DataError
from tricklab.paradigms.generative.result import ParadigmResult, write_result

__all__ = [
    "HuffmanTree",
    "Vocab",
    "Word2VecConfig",
    "analogy_accuracy",
    "build_vocab",
    "cbow_windows",
    "hs_grads",
    "huffman_tree",
    "keep_probabilities",
    "noise_distribution",
    "read_similarity_pairs",
    "run_word2vec",
    "sgns_grads",
    "sgns_loss_and_grads",
    "sgns_table_grads",
    "similarity_spearman",
    "skipgram_pairs",
    "spearman",
    "tokenize",
    "train_sgns",
    "train_word2vec",
    "w2v_grads",
    "word2vec_table_grads",
]



def _shared_data() -> Path:
    """The shared data folder, found the way the text data set finds shakespeare.txt ($TRICKLAB_TEXT_DIR,
    shared/data beside the checkout, /work/shared/data): the word-similarity sets sit beside the text folder."""
    for d in default_dirs():
        if (d / "shakespeare.txt").is_file():
            return d.parent
    return default_dirs()[0].parent


SHARED_DATA = _shared_data()
DEFAULT_TEXT = SHARED_DATA / "text" / "shakespeare.txt"
DEFAULT_WORDSIM = SHARED_DATA / "wordsim"
_TABLE = 10_000_000  # unigram table size (the C code uses 1e8; 1e7 resolves P_n to 1e-7)


# ------------------------------------------------------------------------------------------------ corpus
def tokenize(text: str) -> list[str]:
    """Lower-case runs of ASCII letters (the corpus is modern-spelling ASCII; apostrophes split words)."""
    return re.findall(r"[a-z]+", text.lower())


@dataclass
class Vocab:
    """Words with count >= min_count, most frequent first (ties by word); ``index`` maps word -> id."""

    words: list[str]
    counts: np.ndarray

    def __post_init__(self) -> None:
        self.index = {w: i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, tokens: list[str]) -> np.ndarray:
        """Ids of the in-vocabulary tokens, in order (out-of-vocabulary tokens are dropped, as in word2vec)."""
        idx = self.index
        return np.fromiter((idx[t] for t in tokens if t in idx), dtype=np.int64)


def build_vocab(tokens: list[str], min_count: int = 5) -> Vocab:
    if min_count < 1:
        raise ConfigError(f"min_count must be >= 1, got {min_count}")
    counts = Counter(tokens)
    kept = sorted(((c, w) for w, c in counts.items() if c >= min_count), key=lambda cw: (-cw[0], cw[1]))
    if not kept:
        raise DataError(f"no word occurs at least min_count={min_count} times; lower min_count or use more text")
    return Vocab([w for _, w in kept], np.array([c for c, _ in kept], dtype=np.int64))


def keep_probabilities(counts: np.ndarray, sample: float) -> np.ndarray:
    """Subsampling keep probability per word, the C code's ``(sqrt(f / (s T)) + 1) s T / f``, capped at 1;
    ``sample = 0`` keeps everything."""
    if sample <= 0:
        return np.ones(len(counts))
    threshold = sample * counts.sum()
    return np.minimum(1.0, (np.sqrt(counts / threshold) + 1.0) * threshold / counts)


def noise_distribution(counts: np.ndarray, power: float = 0.75) -> Tensor:
    """P_n(w) ~ count(w)^power (paper section 2.2: 3/4 beat the unigram and uniform distributions)."""
    p = torch.from_numpy(counts.astype(np.float64)) ** power
    return p / p.sum()


def skipgram_pairs(ids: np.ndarray, window: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(centres, contexts) of every pair within each centre's dynamic window b_i ~ U{1..window}, both sides,
    in corpus order (by centre, then offset)."""
    n = len(ids)
    b = rng.integers(1, window + 1, size=n)
    centres, contexts = [], []
    for o in range(1, window + 1):
        pos = np.nonzero(b >= o)[0]
        right = pos[pos + o < n]
        left = pos[pos - o >= 0]
        centres += [right, left]
        contexts += [right + o, left - o]
    c = np.concatenate(centres)
    x = np.concatenate(contexts)
    order = np.argsort(c, kind="stable")
    return ids[c[order]], ids[x[order]]


# ------------------------------------------------------------------------------------------------ SGNS core
def sgns_grads(v: Tensor, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Loss and analytic gradients of skip-gram negative sampling (module docstring), packed form.

    Shapes: v (B, d) centre input vectors; u (B, 1 + K, d) output vectors, column 0 the observed context and
    columns 1..K the noise words. Returns loss (B,), grad_v (B, d), grad_u (B, 1 + K, d).
    """
    scores = (u * v.unsqueeze(1)).sum(-1)  # (B, 1 + K): u_c . v_w, then u_{n_k} . v_w
    sign = torch.ones_like(scores)
    sign[:, 0] = -1.0
    # loss = -log sigma(s_0) - sum_k log sigma(-s_k) = sum_j softplus(sign_j s_j) with sign = (-1, +1, ..., +1)
    loss = F.softplus(sign * scores).sum(-1)
    g = torch.sigmoid(scores)  # dloss/ds: sigma(s_0) - 1 for the context, sigma(s_k) for the noise words
    g[:, 0] -= 1.0
    grad_v = (g.unsqueeze(-1) * u).sum(1)
    grad_u = g.unsqueeze(-1) * v.unsqueeze(1)
    return loss, grad_v, grad_u


def sgns_loss_and_grads(v: Tensor, u_pos: Tensor, u_neg: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """:func:`sgns_grads` with the context and noise vectors apart: v (B, d), u_pos (B, d), u_neg (B, K, d) ->
    loss (B,), grad_v (B, d), grad_pos (B, d), grad_neg (B, K, d)."""
    loss, grad_v, grad_u = sgns_grads(v, torch.cat([u_pos.unsqueeze(1), u_neg], dim=1))
    return loss, grad_v, grad_u[:, 0], grad_u[:, 1:]


def sgns_table_grads(w_in: Tensor, w_out: Tensor, centres: Tensor, contexts: Tensor, negatives: Tensor,
                     ) -> tuple[Tensor, Tensor, Tensor]:
    """Summed loss and the gradients of the whole tables (V, d), duplicates summed: what one batch step applies.
    ``centres``, ``contexts``: (B,) ids; ``negatives``: (B, K) ids."""
    out_ids = torch.cat([contexts.unsqueeze(1), negatives], dim=1)  # (B, 1 + K)
    loss, gv, gu = sgns_grads(w_in[centres], w_out[out_ids])
    g_in = torch.zeros_like(w_in).index_add_(0, centres, gv)
    g_out = torch.zeros_like(w_out).index_add_(0, out_ids.reshape(-1), gu.reshape(-1, gu.shape[-1]))
    return loss.sum(), g_in, g_out


def w2v_grads(h: Tensor, u: Tensor, labels: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Loss and analytic gradients of binary logistic outputs, the core of every word2vec variant.

    Shapes: h (B, d) hidden vectors (a centre's input vector, or CBOW's context mean); u (B, J, d) output vectors
    (context + noise words, or the inner nodes of a Huffman path); labels (B, J) or broadcastable, 1 for "observed"
    / a 0-bit, 0 for a noise word / a 1-bit; mask (B, J) 1/0 for padded paths (None: all count).
    loss_b = sum_j m_j softplus((1 - 2 y_j) s_j) with s_j = u_j . h (= -log sigma(s) for y = 1, -log sigma(-s) for
    y = 0); dloss/ds_j = m_j (sigma(s_j) - y_j). Returns loss (B,), grad_h (B, d), grad_u (B, J, d).
    """
    scores = (u * h.unsqueeze(1)).sum(-1)  # (B, J)
    loss = F.softplus((1.0 - 2.0 * labels) * scores)
    g = torch.sigmoid(scores) - labels
    if mask is not None:
        loss, g = loss * mask, g * mask
    grad_h = (g.unsqueeze(-1) * u).sum(1)
    grad_u = g.unsqueeze(-1) * h.unsqueeze(1)
    return loss.sum(-1), grad_h, grad_u


def hs_grads(h: Tensor, u_nodes: Tensor, codes: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Hierarchical softmax (module docstring): h (B, d), the path's inner-node vectors u_nodes (B, L, d), code bits
    codes (B, L) in {0, 1}, mask (B, L) for paths shorter than L. loss_b = -log p(target | h)."""
    return w2v_grads(h, u_nodes, 1.0 - codes.to(h.dtype), mask)


def word2vec_table_grads(w_in: Tensor, w_out: Tensor, in_ids: Tensor, in_mask: Tensor, out_ids: Tensor,
                         labels: Tensor, out_mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Summed loss and whole-table gradients (duplicates summed) of one batch of any variant.

    in_ids (B, C) input words averaged into h with in_mask (B, C) (skip-gram: C = 1; CBOW: the padded window);
    out_ids (B, J) rows of ``w_out`` (context + noise ids, or Huffman inner nodes), labels and out_mask as in
    :func:`w2v_grads`.
    """
    m = in_mask.to(w_in.dtype)
    count = m.sum(1, keepdim=True).clamp_min(1.0)  # (B, 1)
    h = (w_in[in_ids] * m.unsqueeze(-1)).sum(1) / count  # (B, d): the mean of the valid inputs
    loss, gh, gu = w2v_grads(h, w_out[out_ids], labels, out_mask)
    g_each = (gh / count).unsqueeze(1) * m.unsqueeze(-1)  # (B, C, d): d mean / d v_c = 1 / |C|
    g_in = torch.zeros_like(w_in).index_add_(0, in_ids.reshape(-1), g_each.reshape(-1, w_in.shape[1]))
    g_out = torch.zeros_like(w_out).index_add_(0, out_ids.reshape(-1), gu.reshape(-1, w_out.shape[1]))
    return loss.sum(), g_in, g_out


@dataclass
class HuffmanTree:
    """Huffman codes of a vocabulary, padded: word w's code is ``codes[w, :lengths[w]]`` (bits from the root) and
    ``points[w, :lengths[w]]`` the inner nodes (0..V-2, the root is V-2) where those bits are decided; padding is
    0 in both. ``mask`` (V, L) float marks the valid entries."""

    codes: Tensor
    points: Tensor
    lengths: Tensor

    @property
    def mask(self) -> Tensor:
        return (torch.arange(self.codes.shape[1]) < self.lengths.unsqueeze(1)).float()

    def code(self, word: int) -> list[int]:
        return self.codes[word, : int(self.lengths[word])].tolist()


def huffman_tree(counts: np.ndarray) -> HuffmanTree:
    """Huffman tree over words with ``counts`` (V >= 2), built as the word2vec C code does: with the counts sorted
    in decreasing order, two pointers walk the leaves (from the rarest) and the new inner nodes (in creation order,
    already increasing), merging the two smallest V - 1 times in O(V); the smaller of each pair gets bit 0."""
    counts = np.asarray(counts, dtype=np.int64)
    v = len(counts)
    if v < 2:
        raise ConfigError(f"hierarchical softmax needs a vocabulary of at least 2 words, got {v}; lower min_count")
    order = np.argsort(-counts, kind="stable")  # leaf slot i holds word order[i], counts decreasing
    weight = np.concatenate([counts[order], np.full(v - 1, np.iinfo(np.int64).max, dtype=np.int64)])
    parent = np.zeros(2 * v - 1, dtype=np.int64)
    bit = np.zeros(2 * v - 1, dtype=np.int64)
    leaf, inner = v - 1, v  # next smallest leaf (walking down), next smallest inner node (walking up)
    for a in range(v - 1):
        picked = []
        for _ in range(2):
            if leaf >= 0 and weight[leaf] < weight[inner]:
                picked.append(leaf)
                leaf -= 1
            else:
                picked.append(inner)
                inner += 1
        weight[v + a] = weight[picked[0]] + weight[picked[1]]
        parent[picked[0]] = parent[picked[1]] = v + a
        bit[picked[1]] = 1
    root = 2 * v - 2
    paths: list[tuple[list[int], list[int]]] = []
    for slot in range(v):
        code, point, node = [], [], slot
        while node != root:  # walk up: the bit of each node, decided at its parent
            code.append(int(bit[node]))
            point.append(int(parent[node]) - v)
            node = parent[node]
        paths.append((code[::-1], point[::-1]))  # root first
    depth = max(len(c) for c, _ in paths)
    codes = torch.zeros(v, depth, dtype=torch.int64)
    points = torch.zeros(v, depth, dtype=torch.int64)
    lengths = torch.zeros(v, dtype=torch.int64)
    for slot, (code, point) in enumerate(paths):
        w = int(order[slot])
        codes[w, : len(code)] = torch.tensor(code)
        points[w, : len(point)] = torch.tensor(point)
        lengths[w] = len(code)
    return HuffmanTree(codes, points, lengths)


def cbow_windows(ids: np.ndarray, window: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CBOW examples: (centres (N,), contexts (N, 2 window) padded with 0, mask (N, 2 window) bool) for each
    position with at least one context word in its dynamic window b_i ~ U{1..window}, in corpus order; the
    context columns are offsets -window..-1, 1..window."""
    n = len(ids)
    b = rng.integers(1, window + 1, size=n)
    offsets = np.concatenate([np.arange(-window, 0), np.arange(1, window + 1)])  # (2W,)
    pos = np.arange(n)[:, None] + offsets[None, :]  # (n, 2W)
    mask = (np.abs(offsets)[None, :] <= b[:, None]) & (pos >= 0) & (pos < n)
    keep = mask.any(1)
    ctx = np.where(mask, ids[np.clip(pos, 0, n - 1)], 0)
    return ids[keep], ctx[keep], mask[keep]


MODELS = ("skipgram", "cbow")
OBJECTIVES = ("negative", "hs")


@dataclass
class Word2VecConfig:
    """word2vec; defaults are gensim 4's skip-gram with negative sampling (vector_size 100, window 5, negative 5,
    sample 1e-3, alpha 0.025 -> min_alpha 1e-4, min_count 5, epochs 5). ``model``: ``skipgram`` or ``cbow``
    (context mean); ``objective``: ``negative`` (``negative`` noise words) or ``hs`` (hierarchical softmax over a
    Huffman tree; ``negative`` is then unused). ``compile``: run skip-gram negative sampling's full batches
    through one ``torch.compile``-d step (gather, gradients and scatter-add fused into one C++ loop; about 3x faster
    per step on one CPU thread, after a one-time compilation of tens of seconds that needs a C++ compiler)."""

    text_file: str = str(DEFAULT_TEXT)
    eval_dir: str = str(DEFAULT_WORDSIM)
    dim: int = 100
    window: int = 5
    negative: int = 5
    min_count: int = 5
    sample: float = 1e-3
    alpha: float = 0.025
    min_alpha: float = 1e-4
    epochs: int = 5
    batch_size: int = 512
    max_tokens: int | None = None
    threads: int = 1
    model: str = "skipgram"
    objective: str = "negative"
    compile: bool = False

    def __post_init__(self) -> None:
        for name in ("dim", "window", "negative", "min_count", "epochs", "batch_size", "threads"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{name} must be a positive int, got {v!r}")
        if self.max_tokens is not None and (not isinstance(self.max_tokens, int) or self.max_tokens < 100):
            raise ConfigError(f"max_tokens must be None or an int >= 100, got {self.max_tokens!r}")
        if not 0 <= self.sample < 1:
            raise ConfigError(f"sample must be in [0, 1) (0 turns subsampling off), got {self.sample!r}")
        if not 0 < self.min_alpha <= self.alpha:
            raise ConfigError(f"need 0 < min_alpha <= alpha, got alpha={self.alpha!r}, min_alpha={self.min_alpha!r}")
        if self.model not in MODELS:
            raise ConfigError(f"model must be one of {MODELS}, got {self.model!r}")
        if not isinstance(self.compile, bool):
            raise ConfigError(f"compile must be true or false, got {self.compile!r}")
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"objective must be one of {OBJECTIVES} (negative sampling or hierarchical softmax), "
                              f"got {self.objective!r}")
        if not Path(self.text_file).is_file():
            raise DataError(f"text_file {self.text_file!r} not found; name a plain-text file (the default is "
                            f"{DEFAULT_TEXT})")


def read_tokens(cfg: Word2VecConfig) -> list[str]:
    tokens = tokenize(Path(cfg.text_file).read_text(encoding="utf-8", errors="replace"))
    return tokens[: cfg.max_tokens] if cfg.max_tokens else tokens


def _sgns_step(w_in: Tensor, w_out: Tensor, c: Tensor, o: Tensor, labels: Tensor, lr: Tensor) -> Tensor:
    """One skip-gram negative-sampling step in place (the compiled path): c (B,) centres, o (B, 1 + K) outputs, lr a
    0-d tensor (a Python float would be baked into the compiled code and recompile every step). Same maths as the
    eager loop; the fused code may round differently in the last bits."""
    flat = o.reshape(-1)
    loss, gh, gu = w2v_grads(w_in.index_select(0, c), w_out.index_select(0, flat).view(o.shape[0], o.shape[1], -1),
                             labels)
    w_in.index_add_(0, c, gh * -lr)
    w_out.index_add_(0, flat, gu.reshape(-1, gu.shape[-1]) * -lr)
    return loss.sum()


def train_word2vec(tokens: list[str], cfg: Word2VecConfig, *, seed: int,
                   progress: Callable[[dict[str, Any]], None] | None = None,
                   ) -> tuple[Vocab, Tensor, list[dict[str, Any]], float]:
    """Train input vectors on ``tokens``; returns (vocab, input vectors (V, d), history, training seconds).

    Initialisation as in the C code: inputs uniform in [-0.5/d, 0.5/d), outputs (word vectors, or the V - 1 inner
    nodes of the Huffman tree) zero. The learning rate falls linearly from alpha to min_alpha over all planned
    examples (pairs for skip-gram, centre words for CBOW). Training seconds are process CPU seconds (all threads
    of this process), which other work on the machine does not inflate.
    """
    torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    vocab = build_vocab(tokens, cfg.min_count)
    ids = vocab.encode(tokens)
    keep = keep_probabilities(vocab.counts, cfg.sample)
    cbow, hs = cfg.model == "cbow", cfg.objective == "hs"
    v_size, d = len(vocab), cfg.dim
    if hs:
        tree = huffman_tree(vocab.counts)
        labels_of, mask_of = 1.0 - tree.codes.float(), tree.mask  # (V, L): label 1 - bit, valid entries
    else:
        # the C code's unigram table: word w fills ~P_n(w) of TABLE slots, so a noise draw is one integer gather
        table = torch.repeat_interleave(torch.arange(v_size),
                                        torch.round(noise_distribution(vocab.counts) * _TABLE).long())
        ns_labels = torch.zeros(1, 1 + cfg.negative)
        ns_labels[0, 0] = 1.0  # the observed word, then K noise words
    w_in = (torch.rand(v_size, d, generator=gen) - 0.5) / d
    w_out = torch.zeros(v_size - 1 if hs else v_size, d)
    # planned examples: expected kept tokens x (skip-gram: expected pairs per centre, 2 x mean of U{1..window})
    planned = cfg.epochs * float(keep[ids].sum()) * (1 if cbow else cfg.window + 1)
    fused = torch.compile(_sgns_step, dynamic=False, fullgraph=True) if cfg.compile and not (cbow or hs) else None
    compile_seconds: float | None = None
    done, history, t0 = 0, [], time.process_time()
    for epoch in range(cfg.epochs):
        kept = ids[rng.random(len(ids)) < keep[ids]]
        if cbow:
            targets, ctx, cmask = cbow_windows(kept, cfg.window, rng)
            in_all, in_mask = torch.from_numpy(ctx), torch.from_numpy(cmask).float()
            in_count = in_mask.sum(1, keepdim=True)  # (N, 1) context words per example
        else:
            centres, targets = skipgram_pairs(kept, cfg.window, rng)
            in_all = torch.from_numpy(centres)
        tgt_all = torch.from_numpy(targets)
        n = len(tgt_all)
        if not hs:  # (n, 1 + K) output ids: the target, then K noise words from the table
            noise_ids = table[torch.randint(0, len(table), (n, cfg.negative), generator=gen)]
            out_all = torch.cat([tgt_all.unsqueeze(1), noise_ids], dim=1)
        loss_sum = torch.zeros(())
        for i in range(0, n, cfg.batch_size):
            lr = max(cfg.min_alpha, cfg.alpha - (cfg.alpha - cfg.min_alpha) * done / planned)
            if fused is not None and i + cfg.batch_size <= n:  # full batches only: one shape, one compilation
                args = (w_in, w_out, in_all[i : i + cfg.batch_size], out_all[i : i + cfg.batch_size], ns_labels,
                        torch.tensor(lr))
                if compile_seconds is None:  # the first call compiles
                    t_call = time.process_time()
                    try:
                        loss_sum += fused(*args)
                    except Exception as exc:  # inductor raises its own error types (e.g. no C++ compiler)
                        raise ConfigError(f"compile=True: torch.compile failed ({type(exc).__name__}: {exc}); it "
                                          "needs a working C++ compiler; set compile=False for the eager step") from exc
                    compile_seconds = time.process_time() - t_call
                else:
                    loss_sum += fused(*args)
                done += cfg.batch_size
                continue
            if cbow:
                c, m, cnt = in_all[i : i + cfg.batch_size], in_mask[i : i + cfg.batch_size], \
                    in_count[i : i + cfg.batch_size]
                h = (w_in[c] * m.unsqueeze(-1)).sum(1) / cnt  # (b, d): the context mean
            else:
                c = in_all[i : i + cfg.batch_size]
                h = w_in.index_select(0, c)  # (b, d)
            if hs:
                t = tgt_all[i : i + cfg.batch_size]
                o, labels, om = tree.points[t], labels_of[t], mask_of[t]  # (b, L) each
            else:
                o, labels, om = out_all[i : i + cfg.batch_size], ns_labels, None
            flat = o.reshape(-1)
            loss, gh, gu = w2v_grads(h, w_out.index_select(0, flat).view(*o.shape, d), labels, om)
            if cbow:  # d h / d v_c = 1 / |C| for each valid context word
                w_in.index_add_(0, c.reshape(-1), ((gh / cnt).unsqueeze(1) * m.unsqueeze(-1)).reshape(-1, d),
                                alpha=-lr)
            else:
                w_in.index_add_(0, c, gh, alpha=-lr)
            w_out.index_add_(0, flat, gu.reshape(-1, d), alpha=-lr)
            loss_sum += loss.sum()
            done += len(c)
        row = {"step": epoch + 1, "epoch": epoch + 1, "seconds": time.process_time() - t0,
               "train_loss": float(loss_sum) / max(1, n), "examples": n, "kept_tokens": len(kept)}
        if compile_seconds is not None:
            row["compile_seconds"] = compile_seconds  # CPU seconds of the first (compiling) call, in "seconds"
        history.append(row)
        if progress is not None:
            progress(dict(row))
    return vocab, w_in, history, time.process_time() - t0


train_sgns = train_word2vec  # the name of the skip-gram-only first version


# ------------------------------------------------------------------------------------------------ evaluation
def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    xs = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and xs[j + 1] == xs[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho: Pearson's correlation of the (tie-averaged) ranks."""
    ra, rb = _ranks(np.asarray(a, dtype=float)), _ranks(np.asarray(b, dtype=float))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / np.sqrt((ra**2).sum() * (rb**2).sum()))


def read_similarity_pairs(path: str | Path) -> list[tuple[str, str, float]]:
    """``word1 <tab> word2 <tab> score`` lines; '#' lines are comments. Words are lower-cased."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        a, b, s = line.split("\t")[:3]
        out.append((a.lower(), b.lower(), float(s)))
    return out


def _unit(vectors: Tensor) -> Tensor:
    return F.normalize(vectors.double(), dim=1)


def similarity_spearman(vectors: Tensor, index: dict[str, int], pairs: list[tuple[str, str, float]],
                        ) -> tuple[float, int]:
    """(Spearman rho of cosine similarity against the human scores, number of pairs used): pairs with a word
    outside the vocabulary are left out (gensim's ``evaluate_word_pairs`` default)."""
    unit = _unit(vectors)
    used = [(index[a], index[b], s) for a, b, s in pairs if a in index and b in index]
    if len(used) < 3:
        return float("nan"), len(used)
    ia, ib, s = zip(*used)
    cos = (unit[list(ia)] * unit[list(ib)]).sum(1).numpy()
    return spearman(cos, np.array(s)), len(used)


def analogy_accuracy(vectors: Tensor, index: dict[str, int], path: str | Path, restrict: int = 300_000,
                     batch: int = 512) -> tuple[float, int]:
    """(3CosAdd accuracy, questions used) on ``a b c d`` lines (':' lines name sections): predict
    argmax_w cos(w, b - a + c) over unit vectors of the ``restrict`` most frequent words, excluding a, b, c;
    questions with a word outside those are left out (gensim's ``evaluate_word_analogies`` rules)."""
    unit = _unit(vectors)[:restrict]
    allowed = {w: i for w, i in index.items() if i < restrict}
    qs = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.startswith(":") or not line.strip():
            continue
        words = line.lower().split()
        if len(words) == 4 and all(w in allowed for w in words):
            qs.append([allowed[w] for w in words])
    if not qs:
        return float("nan"), 0
    q = torch.tensor(qs)
    correct = 0
    for i in range(0, len(q), batch):
        a, b, c, d = q[i : i + batch].unbind(1)
        target = F.normalize(unit[b] - unit[a] + unit[c], dim=1)
        sims = target @ unit.T
        rows = torch.arange(len(a))
        for col in (a, b, c):
            sims[rows, col] = -torch.inf
        correct += int((sims.argmax(1) == d).sum())
    return correct / len(q), len(q)


def evaluate_vectors(vectors: Tensor, index: dict[str, int], eval_dir: str | Path) -> dict[str, float]:
    """WordSim-353 and SimLex-999 Spearman, analogy accuracy, and how many pairs / questions each used."""
    folder = Path(eval_dir)
    out: dict[str, float] = {}
    for key, name in (("wordsim353", "wordsim353.tsv"), ("simlex999", "simlex999.txt")):
        rho, n = similarity_spearman(vectors, index, read_similarity_pairs(folder / name))
        out[f"{key}_spearman"], out[f"{key}_pairs"] = rho, float(n)
    acc, n = analogy_accuracy(vectors, index, folder / "questions-words.txt")
    out["analogy_accuracy"], out["analogy_questions"] = acc, float(n)
    return out


def run_word2vec(config: Word2VecConfig, *, seed: int, run_dir: Path | None = None,
                 progress: Callable[[dict[str, Any]], None] | None = None) -> ParadigmResult:
    """Train word2vec (``config.model``, ``config.objective``) on ``config.text_file`` and evaluate on the
    similarity and analogy sets in ``config.eval_dir``. Words per second: raw corpus tokens x epochs / training
    CPU seconds (process time, compilation included when ``config.compile``)."""
    tokens = read_tokens(config)
    vocab, vectors, history, seconds = train_sgns(tokens, config, seed=seed, progress=progress)
    ev = evaluate_vectors(vectors, vocab.index, config.eval_dir)
    metrics = {k: ev[k] for k in ("wordsim353_spearman", "simlex999_spearman", "analogy_accuracy")}
    metrics["words_per_second"] = len(tokens) * config.epochs / seconds
    metrics["train_seconds"] = seconds
    extras = {"config": asdict(config), "seed": seed, "tokens": len(tokens), "vocab": len(vocab),
              "coverage": {k: ev[k] for k in ("wordsim353_pairs", "simlex999_pairs", "analogy_questions")}}
    return write_result(ParadigmResult(metrics, history, extras), run_dir)
