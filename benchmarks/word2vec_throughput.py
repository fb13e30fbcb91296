"""word2vec skip-gram with negative sampling: ours (tricklab.paradigms.generative.word2vec) against gensim's
(benchmark-only dependency) on the same tokens with the same settings, side by side in one run.

Both get the Shakespeare corpus tokenized by our tokenizer (lower-cased letter runs; gensim receives it in
10,000-token chunks, its longest sentence), vector size 100, window 5, 5 negatives, exponent 0.75, min_count 5,
sample 1e-3, alpha 0.025 -> 1e-4, 1 worker / 1 thread. For each seed the two are trained back to back (the order
alternates with the seed) so both see the same load from other work. Reported:

* training words per second = corpus tokens x epochs / training seconds (vocabulary building excluded for
  both), per seed, and the per-seed ratio ours / gensim with its median; the spread between a contender's own
  seeds is the noise between identical runs, and a ratio earns a verdict only beyond it;
* Spearman rho on WordSim-353 and SimLex-999 and 3CosAdd analogy accuracy, computed for both by our evaluation
  code (tests/paradigms/generative/test_word2vec.py shows it equals gensim's on the same vectors), mean and 95%
  interval.

Writes benchmarks/results/word2vec_throughput.json and the card docs/cards/generative-word2vec/ (markdown, JSON
with the top-level "command", SVG).

    PYTHONPATH=src python benchmarks/word2vec_throughput.py [--seeds 0 1 2] [--epochs 3] [--max-tokens N]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from tricklab.paradigms.generative.word2vec import (  # noqa: E402
    Word2VecConfig,
    evaluate_vectors,
    read_tokens,
    train_sgns,
)
from tricklab.io import atomic_write_text  # noqa: E402
from tricklab.lab.stats import describe  # noqa: E402

KEYS = ("wordsim353_spearman", "simlex999_spearman", "analogy_accuracy")


def _ours(tokens: list[str], cfg: Word2VecConfig, seed: int) -> dict[str, Any]:
    vocab, vectors, _, seconds = train_sgns(tokens, cfg, seed=seed)
    ev = evaluate_vectors(vectors, vocab.index, cfg.eval_dir)
    return {"seconds": seconds, "words_per_second": len(tokens) * cfg.epochs / seconds, "vocab": len(vocab), **ev}


def _gensim(tokens: list[str], cfg: Word2VecConfig, seed: int) -> dict[str, Any]:
    try:
        from gensim.models import Word2Vec
    except ImportError as exc:  # benchmark-only dependency
        raise SystemExit("gensim is needed for this benchmark: pip install -c constraints.txt gensim "
                         "(tricklab's 'test' extra)") from exc
    sentences = [tokens[i : i + 10_000] for i in range(0, len(tokens), 10_000)]
    model = Word2Vec(vector_size=cfg.dim, window=cfg.window, min_count=cfg.min_count, sample=cfg.sample, sg=1,
                     hs=0, negative=cfg.negative, ns_exponent=0.75, alpha=cfg.alpha, min_alpha=cfg.min_alpha,
                     workers=1, seed=seed)
    model.build_vocab(sentences)
    t0 = time.perf_counter()
    model.train(sentences, total_examples=model.corpus_count, epochs=cfg.epochs)
    seconds = time.perf_counter() - t0
    vectors = torch.from_numpy(model.wv.vectors.copy())
    ev = evaluate_vectors(vectors, dict(model.wv.key_to_index), cfg.eval_dir)
    return {"seconds": seconds, "words_per_second": len(tokens) * cfg.epochs / seconds,
            "vocab": len(model.wv), **ev}


def _ci(values: list[float], fmt: str) -> str:
    d = describe(values)
    if d.ci_low is None:
        return f"{d.mean:{fmt}}"
    return f"{d.mean:{fmt}} [{d.ci_low:{fmt}}, {d.ci_high:{fmt}}]"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--max-tokens", type=int, default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    command = ("PYTHONPATH=src python benchmarks/word2vec_throughput.py --seeds " + " ".join(map(str, a.seeds))
               + f" --epochs {a.epochs}" + (f" --max-tokens {a.max_tokens}" if a.max_tokens else ""))
    cfg = Word2VecConfig(epochs=a.epochs, max_tokens=a.max_tokens)
    tokens = read_tokens(cfg)
    runs: dict[str, dict[int, Any]] = {"ours": {}, "gensim": {}}
    for i, seed in enumerate(a.seeds):
        order = ["ours", "gensim"] if i % 2 == 0 else ["gensim", "ours"]
        for name in order:
            res = (_ours if name == "ours" else _gensim)(tokens, cfg, seed)
            runs[name][seed] = res
            print(f"seed {seed} {name}: {res['words_per_second']:.0f} words/s, "
                  + ", ".join(f"{k} {res[k]:.4f}" for k in KEYS), flush=True)
    seeds = a.seeds
    wps = {n: [runs[n][s]["words_per_second"] for s in seeds] for n in runs}
    ratios = [runs["ours"][s]["words_per_second"] / runs["gensim"][s]["words_per_second"] for s in seeds]
    noise = {n: (max(v) - min(v)) / statistics.median(v) for n, v in wps.items()}
    summary = {"command": command, "config": asdict(cfg), "tokens": len(tokens), "seeds": seeds,
               "machine": {"cpu": platform.machine(), "python": platform.python_version(),
                           "torch": torch.__version__, "threads": 1,
                           "shared": "yes: other helpers' jobs ran on the same 2 cores"},
               "runs": {n: {str(s): r for s, r in v.items()} for n, v in runs.items()},
               "ratio_words_per_second": ratios, "median_ratio": statistics.median(ratios),
               "noise_between_seeds": noise}
    out = json.dumps(summary, indent=1)
    atomic_write_text(ROOT / "benchmarks" / "results" / "word2vec_throughput.json", out)
    folder = ROOT / "docs" / "cards" / "generative-word2vec"
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "word2vec.json", out)
    label = {"wordsim353_spearman": "WordSim-353 Spearman rho", "simlex999_spearman": "SimLex-999 Spearman rho",
             "analogy_accuracy": "Analogy accuracy (3CosAdd)"}
    cov = runs["ours"][seeds[0]]
    gcov = runs["gensim"][seeds[0]]
    lines = ["# Generative card: word2vec skip-gram, ours against gensim", "", f"Command: `{command}`", "",
             "## Setting", "",
             f"- **corpus**: shared/data/text/shakespeare.txt, {len(tokens)} tokens (lower-cased letter runs); "
             f"vocabulary at min_count 5: ours {cov['vocab']}, gensim {gcov['vocab']} words",
             f"- **both**: skip-gram, negative sampling (5, exponent 0.75), window 5 (dynamic), dim 100, sample "
             f"1e-3, alpha 0.025 -> 1e-4, {cfg.epochs} epochs, 1 worker / 1 thread; ours batches {cfg.batch_size} "
             "pairs per vectorised sparse-SGD step, gensim updates pair by pair (Cython)",
             f"- **seeds**: {seeds}; each seed trains both back to back, order alternating",
             "- **evaluation**: our code for both (equal to gensim's evaluate_word_pairs / evaluate_word_analogies "
             f"on the same vectors, see tests); pairs in vocabulary: WordSim-353 {int(cov['wordsim353_pairs'])}, "
             f"SimLex-999 {int(cov['simlex999_pairs'])}, analogy questions {int(cov['analogy_questions'])}",
             "- **machine**: 2 cores shared with other helpers' jobs; timings are indicative", "",
             "## Results (mean [95% t-interval over seeds])", "",
             "| metric | ours | gensim 4.4 |", "|---|---|---|"]
    for k in KEYS:
        lines.append(f"| {label[k]} | {_ci([runs['ours'][s][k] for s in seeds], '.4f')} | "
                     f"{_ci([runs['gensim'][s][k] for s in seeds], '.4f')} |")
    lines.append(f"| training words/s | {_ci(wps['ours'], '.0f')} | {_ci(wps['gensim'], '.0f')} |")
    lines += ["", f"Throughput ratio ours / gensim per seed: {', '.join(f'{r:.3f}' for r in ratios)} "
              f"(median {statistics.median(ratios):.3f}). Noise between identical runs (range / median of a "
              f"contender's own seeds): ours {noise['ours']:.1%}, gensim {noise['gensim']:.1%}.", "",
              "![words per second and similarity](word2vec.svg)", ""]
    atomic_write_text(folder / "word2vec.md", "\n".join(lines))
    _plot(folder / "word2vec.svg", runs, seeds, label)
    print(f"median ratio ours/gensim words/s: {statistics.median(ratios):.3f}; wrote {folder}")


def _plot(path: Path, runs: dict[str, dict[int, Any]], seeds: list[int], label: dict[str, str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for j, name in enumerate(("ours", "gensim")):
        axes[0].scatter([j] * len(seeds), [runs[name][s]["words_per_second"] for s in seeds], color=f"C{j}")
        for i, k in enumerate(label):
            axes[1].scatter([i + 0.15 * (2 * j - 1)] * len(seeds), [runs[name][s][k] for s in seeds],
                            color=f"C{j}", label=name if i == 0 else None)
    axes[0].set_xticks([0, 1], ["ours", "gensim"])
    axes[0].set_ylabel("training words/s (1 thread, shared machine)")
    axes[1].set_xticks(range(len(label)), ["WordSim-353", "SimLex-999", "analogies"])
    axes[1].set_ylabel("Spearman rho / accuracy (per seed)")
    axes[1].axhline(0, color="gray", lw=0.5)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
