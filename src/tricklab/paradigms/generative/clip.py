"""CLIP-style image-text contrastive learning (Radford et al., 2021) on Fashion-MNIST with captions made by code.

Captions: each image gets a sentence built from its class name and two attribute words computed from its own
pixels (no human text): brightness ("dark" / "grey" / "bright", terciles of the mean ink intensity over the
training set) and size ("small" / "medium" / "large", terciles of the fraction of inked pixels, > 0.1), in one of
three templates ("a photo of a {size} {brightness} {class}", "a {brightness} {class} , {size}", "{class} in
{brightness} tones , {size}"). So the text carries the label plus two coarse visual facts.

Model: an image encoder (MLP on the 784 pixels) and a text encoder (mean of word embeddings, then an MLP), both
projected to a shared space and L2-normalised; a learned logit scale ``exp(t)``, started at 1 / 0.07 and capped at
100 (the paper's choices). Loss: the symmetric InfoNCE of the paper's figure 3,
``(CE(S, arange) + CE(S^T, arange)) / 2`` with ``S = exp(t) * I T^T`` over a batch of N pairs.

Evaluation: zero-shot classification by the prompts "a photo of a {class}" (argmax cosine), image -> text
retrieval recall@k against the set of distinct captions of the test images, and a linear probe (multinomial
logistic regression on the frozen image embeddings) as the supervised reference; chance is 10%.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tricklab.data import load_dataset
from tricklab.data.datasets.fashion_mnist import FASHION_MNIST_CLASSES
from tricklab.errors import ConfigError
from tricklab.paradigms.generative.result import ParadigmResult, write_result

__all__ = ["CLIPConfig", "CLIPModel", "Tokenizer", "clip_loss", "make_captions", "recall_at_k", "run_clip",
           "zero_shot_logits"]

CLASS_WORDS = [c.lower().replace("/", " or ").replace("-", " ") for c in FASHION_MNIST_CLASSES]
TEMPLATES = ("a photo of a {size} {bright} {cls}", "a {bright} {cls} , {size}", "{cls} in {bright} tones , {size}")
BRIGHT = ("dark", "grey", "bright")
SIZE = ("small", "medium", "large")


def clip_loss(image_emb: Tensor, text_emb: Tensor, logit_scale: Tensor) -> Tensor:
    """Symmetric InfoNCE over N (image, text) pairs, pair i the positive of row and column i (CLIP, figure 3).
    Embeddings (N, D) are L2-normalised here; ``logit_scale`` is exp(t), a scalar tensor."""
    img, txt = F.normalize(image_emb, dim=-1), F.normalize(text_emb, dim=-1)
    logits = logit_scale * img @ txt.T  # (N, N)
    labels = torch.arange(len(img), device=img.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def _terciles(values: Tensor, edges: Tensor) -> Tensor:
    return torch.bucketize(values, edges)  # 0, 1, 2


def attribute_edges(images: Tensor) -> tuple[Tensor, Tensor]:
    """Tercile edges of mean ink intensity and of inked fraction over ``images`` (N, 1, 28, 28)."""
    bright, size = _attributes(images)
    q = torch.tensor([1 / 3, 2 / 3])
    return torch.quantile(bright, q), torch.quantile(size, q)


def _attributes(images: Tensor) -> tuple[Tensor, Tensor]:
    flat = images.flatten(1)
    inked = flat > 0.1
    bright = (flat * inked).sum(1) / inked.sum(1).clamp(min=1)  # mean intensity of the inked pixels
    return bright, inked.float().mean(1)


def make_captions(images: Tensor, labels: Tensor, edges: tuple[Tensor, Tensor], generator: torch.Generator,
                  ) -> list[str]:
    """One caption per image: its class word, its brightness and size words, a template drawn from ``generator``."""
    bright, size = _attributes(images)
    b_idx, s_idx = _terciles(bright, edges[0]), _terciles(size, edges[1])
    tmpl = torch.randint(0, len(TEMPLATES), (len(labels),), generator=generator)
    return [TEMPLATES[int(t)].format(size=SIZE[int(s)], bright=BRIGHT[int(b)], cls=CLASS_WORDS[int(y)])
            for t, s, b, y in zip(tmpl, s_idx, b_idx, labels)]


def canonical_caption(images: Tensor, labels: Tensor, edges: tuple[Tensor, Tensor]) -> list[str]:
    """The first template for every image (the retrieval targets)."""
    bright, size = _attributes(images)
    b_idx, s_idx = _terciles(bright, edges[0]), _terciles(size, edges[1])
    return [TEMPLATES[0].format(size=SIZE[int(s)], bright=BRIGHT[int(b)], cls=CLASS_WORDS[int(y)])
            for s, b, y in zip(s_idx, b_idx, labels)]


class Tokenizer:
    """Lower-case word tokens; id 0 pads. The vocabulary is every word the templates and classes can produce."""

    def __init__(self) -> None:
        words = set(" ".join(TEMPLATES).replace("{size}", "").replace("{bright}", "").replace("{cls}", "").split())
        words |= set(BRIGHT) | set(SIZE) | {w for c in CLASS_WORDS for w in c.split()}
        self.vocab = ["<pad>", *sorted(words)]
        self.index = {w: i for i, w in enumerate(self.vocab)}

    def __call__(self, texts: list[str]) -> Tensor:
        seqs = [[self.index[w] for w in re.findall(r"[a-z]+|,", t.lower()) if w in self.index] for t in texts]
        width = max(len(s) for s in seqs)
        return torch.tensor([s + [0] * (width - len(s)) for s in seqs])


class CLIPModel(nn.Module):
    """Image MLP (784 -> hidden -> dim) and text encoder (mean word embedding -> hidden -> dim), logit scale."""

    def __init__(self, vocab_size: int, dim: int = 64, hidden: int = 256) -> None:
        super().__init__()
        self.image = nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, dim))
        self.embed = nn.EmbeddingBag(vocab_size, hidden, mode="mean", padding_idx=0)
        self.text = nn.Sequential(nn.ReLU(), nn.Linear(hidden, dim))
        self.t = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def encode_image(self, x: Tensor) -> Tensor:
        return F.normalize(self.image(x), dim=-1)

    def encode_text(self, tokens: Tensor) -> Tensor:
        return F.normalize(self.text(self.embed(tokens)), dim=-1)

    def logit_scale(self) -> Tensor:
        return self.t.clamp(max=math.log(100.0)).exp()

    def forward(self, x: Tensor, tokens: Tensor) -> Tensor:
        return clip_loss(self.encode_image(x), self.encode_text(tokens), self.logit_scale())


def zero_shot_logits(model: CLIPModel, tok: Tokenizer, x: Tensor) -> Tensor:
    """Cosine similarity (N, 10) of each image with the prompts 'a photo of a {class}'."""
    prompts = model.encode_text(tok([f"a photo of a {c}" for c in CLASS_WORDS]))
    return model.encode_image(x) @ prompts.T


def recall_at_k(sim: Tensor, target: Tensor, k: int) -> float:
    """Fraction of rows whose ``target`` column is among the k largest entries of ``sim`` (N, M)."""
    topk = sim.topk(min(k, sim.shape[1]), dim=1).indices
    return float((topk == target.unsqueeze(1)).any(1).float().mean())


@dataclass
class CLIPConfig:
    steps: int = 1500
    batch_size: int = 256
    lr: float = 1e-3
    dim: int = 64
    hidden: int = 256
    eval_examples: int = 2000
    probe_examples: int = 5000
    threads: int = 1
    data_dir: str | None = None

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "dim", "hidden", "eval_examples", "probe_examples", "threads"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{name} must be a positive int, got {v!r}")
        if self.batch_size < 2:
            raise ConfigError(f"batch_size must be >= 2 (the other pairs are the negatives), got {self.batch_size}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be a positive number, got {self.lr!r}")
        if self.eval_examples > 10000:
            raise ConfigError(f"eval_examples must be at most 10000, got {self.eval_examples}")


def _linear_probe(train_f: Tensor, train_y: Tensor, test_f: Tensor, test_y: Tensor, steps: int = 300) -> float:
    """Multinomial logistic regression (full-batch Adam, 300 steps) on frozen features; test accuracy."""
    with torch.enable_grad():
        lin = nn.Linear(train_f.shape[1], 10)
        opt = torch.optim.Adam(lin.parameters(), lr=1e-2)
        for _ in range(steps):
            loss = F.cross_entropy(lin(train_f), train_y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return float((lin(test_f).argmax(1) == test_y).float().mean())


def run_clip(config: CLIPConfig, *, seed: int, run_dir: Path | None = None,
             progress: Callable[[dict[str, Any]], None] | None = None) -> ParadigmResult:
    """Train the image-text model on Fashion-MNIST with code-made captions; report zero-shot accuracy, the
    linear-probe accuracy, image -> caption recall@1/@5 and chance."""
    torch.set_num_threads(config.threads)
    torch.manual_seed(seed)
    ds = load_dataset("fashion-mnist", data_dir=config.data_dir)
    edges = attribute_edges(ds.x_train)
    gen = torch.Generator().manual_seed(seed)
    tok = Tokenizer()
    model = CLIPModel(len(tok.vocab), config.dim, config.hidden)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    history: list[dict[str, Any]] = []
    t0, loss_sum = time.perf_counter(), 0.0
    for step in range(1, config.steps + 1):
        idx = torch.randint(0, len(ds.x_train), (config.batch_size,), generator=gen)
        x, y = ds.x_train[idx], ds.y_train[idx]
        loss = model(x, tok(make_captions(x, y, edges, gen)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss_sum += float(loss.detach())
        if step % 100 == 0 or step == config.steps:
            row = {"step": step, "seconds": time.perf_counter() - t0, "train_loss": loss_sum / (step % 100 or 100),
                   "logit_scale": float(model.logit_scale().detach())}
            loss_sum = 0.0
            history.append(row)
            if progress is not None:
                progress(dict(row))
    seconds = time.perf_counter() - t0
    model.eval()
    n = config.eval_examples
    x_test, y_test = ds.x_test[:n], ds.y_test[:n]
    with torch.no_grad():
        zs = float((zero_shot_logits(model, tok, x_test).argmax(1) == y_test).float().mean())
        captions = canonical_caption(x_test, y_test, edges)
        distinct = sorted(set(captions))
        target = torch.tensor([distinct.index(c) for c in captions])
        sim = model.encode_image(x_test) @ model.encode_text(tok(distinct)).T
        probe_x, probe_y = ds.x_train[: config.probe_examples], ds.y_train[: config.probe_examples]
        probe = _linear_probe(model.encode_image(probe_x), probe_y, model.encode_image(x_test), y_test)
    metrics = {"zero_shot_accuracy": zs, "linear_probe_accuracy": probe, "recall_at_1": recall_at_k(sim, target, 1),
               "recall_at_5": recall_at_k(sim, target, 5), "chance_accuracy": 0.1, "train_seconds": seconds}
    extras = {"config": asdict(config), "seed": seed, "distinct_captions": len(distinct),
              "example_captions": make_captions(ds.x_train[:5], ds.y_train[:5], edges,
                                                torch.Generator().manual_seed(0))}
    return write_result(ParadigmResult(metrics, history, extras), run_dir)
