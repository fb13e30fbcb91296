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
    "Vocab",
    "Word2VecConfig",
    "analogy_accuracy",
    "build_vocab",
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


@dataclass
class Word2VecConfig:
    """Skip-gram with negative sampling; defaults are gensim 4's (vector_size 100, window 5, negative 5,
    sample 1e-3, alpha 0.025 -> min_alpha 1e-4, min_count 5, epochs 5)."""

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
        if not Path(self.text_file).is_file():
            raise DataError(f"text_file {self.text_file!r} not found; name a plain-text file (the default is "
                            f"{DEFAULT_TEXT})")


def read_tokens(cfg: Word2VecConfig) -> list[str]:
    tokens = tokenize(Path(cfg.text_file).read_text(encoding="utf-8", errors="replace"))
    return tokens[: cfg.max_tokens] if cfg.max_tokens else tokens


def train_sgns(tokens: list[str], cfg: Word2VecConfig, *, seed: int,
               progress: Callable[[dict[str, Any]], None] | None = None,
               ) -> tuple[Vocab, Tensor, list[dict[str, Any]], float]:
    """Train input vectors on ``tokens``; returns (vocab, input vectors (V, d), history, training seconds).

    Initialisation as in the C code: inputs uniform in [-0.5/d, 0.5/d), outputs zero. The learning rate falls
    linearly from alpha to min_alpha over all planned pairs.
    """
    torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    vocab = build_vocab(tokens, cfg.min_count)
    ids = vocab.encode(tokens)
    keep = keep_probabilities(vocab.counts, cfg.sample)
    # the C code's unigram table: word w fills ~P_n(w) of TABLE slots, so a noise draw is one integer gather
    table = torch.repeat_interleave(torch.arange(len(vocab)),
                                    torch.round(noise_distribution(vocab.counts) * _TABLE).long())
    v_size, d = len(vocab), cfg.dim
    w_in = (torch.rand(v_size, d, generator=gen) - 0.5) / d
    w_out = torch.zeros(v_size, d)
    # planned pairs for the schedule: expected kept tokens x expected window pairs (2 x mean of U{1..window})
    planned = cfg.epochs * float(keep[ids].sum()) * (cfg.window + 1)
    done, history, t0 = 0, [], time.perf_counter()
    for epoch in range(cfg.epochs):
        kept = ids[rng.random(len(ids)) < keep[ids]]
        centres, contexts = skipgram_pairs(kept, cfg.window, rng)
        c_all = torch.from_numpy(centres)
        n_pairs = len(c_all)
        # (pairs, 1 + K) output ids: the context, then K noise words from the table
        noise_ids = table[torch.randint(0, len(table), (n_pairs, cfg.negative), generator=gen)]
        out_all = torch.cat([torch.from_numpy(contexts).unsqueeze(1), noise_ids], dim=1)
        loss_sum = torch.zeros(())
        for i in range(0, n_pairs, cfg.batch_size):
            c, o = c_all[i : i + cfg.batch_size], out_all[i : i + cfg.batch_size]
            lr = max(cfg.min_alpha, cfg.alpha - (cfg.alpha - cfg.min_alpha) * done / planned)
            loss, gv, gu = sgns_grads(w_in[c], w_out[o])
            w_in.index_add_(0, c, gv, alpha=-lr)
            w_out.index_add_(0, o.reshape(-1), gu.reshape(-1, d), alpha=-lr)
            loss_sum += loss.sum()
            done += len(c)
        row = {"step": epoch + 1, "epoch": epoch + 1, "seconds": time.perf_counter() - t0,
               "train_loss": float(loss_sum) / max(1, n_pairs), "pairs": n_pairs, "kept_tokens": len(kept)}
        history.append(row)
        if progress is not None:
            progress(dict(row))
    return vocab, w_in, history, time.perf_counter() - t0


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
    """Train skip-gram with negative sampling on ``config.text_file`` and evaluate on the similarity and
    analogy sets in ``config.eval_dir``. Words per second: raw corpus tokens x epochs / training seconds."""
    tokens = read_tokens(config)
    vocab, vectors, history, seconds = train_sgns(tokens, config, seed=seed, progress=progress)
    ev = evaluate_vectors(vectors, vocab.index, config.eval_dir)
    metrics = {k: ev[k] for k in ("wordsim353_spearman", "simlex999_spearman", "analogy_accuracy")}
    metrics["words_per_second"] = len(tokens) * config.epochs / seconds
    metrics["train_seconds"] = seconds
    extras = {"config": asdict(config), "seed": seed, "tokens": len(tokens), "vocab": len(vocab),
              "coverage": {k: ev[k] for k in ("wordsim353_pairs", "simlex999_pairs", "analogy_questions")}}
    return write_result(ParadigmResult(metrics, history, extras), run_dir)
