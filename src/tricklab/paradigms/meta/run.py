"""``run_meta``: one meta-learner on N-way K-shot MNIST-1D episodes with held-out classes, shaped for the lab's
task kinds (PARADIGMS.md).

MNIST-1D's train and test splits are pooled (5000 signals) and split by class: classes 0..9-test_classes train the
meta-learner, the last ``test_classes`` are only seen at meta-test time (``dataset`` may instead name the 8x8
``digits`` or ``fashion-mnist``, flattened, with the same class split). The learners:

* ``maml`` / ``fomaml``: an MLP 40-hidden-hidden-ways; ``inner_steps`` SGD steps of ``inner_lr`` on the support
  set, Adam on the meta-gradient of the query loss (second order / first order); at meta-test ``test_inner_steps``
  steps from the learned initialisation.
* ``reptile``: the same MLP, ``inner_steps`` SGD steps on the episode's examples, theta += epsilon (phi - theta)
  with epsilon annealed linearly to 0; meta-test as MAML.
* ``protonets``: an MLP embedding 40-hidden-hidden-embed_dim trained with Adam on the query cross-entropy of
  the prototype classifier; meta-test needs no gradient step.

The reported accuracy is the mean over ``test_episodes`` held-out episodes (seeded by ``seed``), with its 95%
interval over episodes.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from tricklab.evaluate.declared import MetricSpec
from tricklab.paradigms.common import ParadigmResult, Progress, accuracy, check, flat_arrays, mlp, pos_int, pos_num, \
    write_json
from tricklab.paradigms.meta.episodes import Episode, EpisodeSampler, split_classes
from tricklab.paradigms.meta.maml import Params, adapt, init_params, maml_query_loss
from tricklab.paradigms.meta.protonets import ProtoNet
from tricklab.paradigms.meta.reptile import reptile_step

__all__ = ["META_DATASETS", "META_METHODS", "META_METRICS", "MetaConfig", "run_meta"]

META_METHODS: tuple[str, ...] = ("maml", "fomaml", "reptile", "protonets")
META_DATASETS: tuple[str, ...] = ("mnist1d", "digits", "fashion-mnist")

META_METRICS: list[MetricSpec] = [
    MetricSpec("accuracy", "meta-test accuracy (held-out classes)", True, fmt=".4f"),
    MetricSpec("accuracy_ci95", "95% half-width over test episodes", False, verdict=False, fmt=".4f"),
    MetricSpec("train_accuracy", "query accuracy on meta-train classes", True, verdict=False, fmt=".4f"),
    MetricSpec("train_seconds", "meta-training time", False, unit="s", verdict=False, fmt=".1f"),
]


@dataclass
class MetaConfig:
    """One meta-learner on MNIST-1D episodes; defaults: 5-way 1-shot, 15 queries per class."""

    method: str = "maml"
    dataset: str = "mnist1d"
    ways: int = 5
    shots: int = 1
    queries: int = 15
    test_classes: int = 5
    meta_steps: int = 2000
    meta_batch: int = 4
    inner_lr: float = 0.4
    inner_steps: int = 1
    test_inner_steps: int = 10
    outer_lr: float = 1e-3
    reptile_epsilon: float = 1.0
    hidden: int = 128
    embed_dim: int = 64
    test_episodes: int = 600
    eval_every: int = 250
    eval_episodes: int = 100
    train_eval_episodes: int = 200
    threads: int = 1

    def __post_init__(self) -> None:
        check(self.method in META_METHODS, "method", f"one of {META_METHODS}", self.method)
        check(self.dataset in META_DATASETS, "dataset", f"one of {META_DATASETS}", self.dataset)
        for name in ("ways", "shots", "queries", "test_classes", "meta_steps", "meta_batch", "inner_steps",
                     "test_inner_steps", "hidden", "embed_dim", "test_episodes", "eval_every", "eval_episodes",
                     "train_eval_episodes", "threads"):
            check(pos_int(getattr(self, name)), name, "a positive int", getattr(self, name))
        check(self.ways >= 2, "ways", "at least 2", self.ways)
        check(self.test_classes < 10, "test_classes", "in 1..9 (MNIST-1D has 10 classes)", self.test_classes)
        check(self.ways <= min(self.test_classes, 10 - self.test_classes), "ways",
              f"<= both the held-out ({self.test_classes}) and meta-train ({10 - self.test_classes}) class counts",
              self.ways)
        for name in ("inner_lr", "outer_lr", "reptile_epsilon"):
            check(pos_num(getattr(self, name)), name, "a positive number", getattr(self, name))


def _episode_tensors(ep: Episode) -> tuple[torch.Tensor, ...]:
    return ep.x_support, ep.y_support, ep.x_query, ep.y_query


def _evaluate(cfg: MetaConfig, model: torch.nn.Module, params: Params | None, sampler: EpisodeSampler,
              episodes: int) -> list[float]:
    """Per-episode query accuracy: nearest prototype (protonets) or ``test_inner_steps`` of adaptation."""
    accs = []
    for _ in range(episodes):
        xs, ys, xq, yq = _episode_tensors(sampler.sample())
        if params is None:
            with torch.no_grad():
                accs.append(accuracy(model(xs, ys, xq, cfg.ways), yq))
            continue
        with torch.enable_grad():
            adapted = adapt(model, {k: v.detach() for k, v in params.items()}, xs, ys, cfg.inner_lr,
                            cfg.test_inner_steps, first_order=True)
        with torch.no_grad():
            accs.append(accuracy(torch.func.functional_call(model, adapted, (xq,)), yq))
    return accs


def _meta_step(cfg: MetaConfig, step: int, model: torch.nn.Module, params: Params | None,
               opt: torch.optim.Optimizer | None, sampler: EpisodeSampler) -> tuple[Params | None, float]:
    """One meta-update over ``meta_batch`` episodes; returns the (new) parameters and the mean query loss."""
    eps = [_episode_tensors(sampler.sample()) for _ in range(cfg.meta_batch)]
    if cfg.method == "reptile":
        assert params is not None
        tasks = [(torch.cat([xs, xq]), torch.cat([ys, yq])) for xs, ys, xq, yq in eps]
        epsilon = cfg.reptile_epsilon * (1 - step / cfg.meta_steps)
        new = reptile_step(model, params, tasks, cfg.inner_lr, cfg.inner_steps, epsilon)
        with torch.no_grad():
            loss = sum(float(F.cross_entropy(torch.func.functional_call(model, new, (x,)), y)) for x, y in tasks)
        return new, loss / len(tasks)
    assert opt is not None
    opt.zero_grad(set_to_none=True)
    total = 0.0
    for xs, ys, xq, yq in eps:
        if cfg.method == "protonets":
            loss = F.cross_entropy(model(xs, ys, xq, cfg.ways), yq)
        else:
            assert params is not None
            loss, _ = maml_query_loss(model, params, xs, ys, xq, yq, cfg.inner_lr, cfg.inner_steps,
                                      first_order=cfg.method == "fomaml")
        (loss / cfg.meta_batch).backward()
        total += float(loss.detach())
    opt.step()
    return params, total / cfg.meta_batch


def ci95(values: list[float]) -> tuple[float, float]:
    """Mean and the 95% normal half-width 1.96 s / sqrt(n) over episodes (n >= 600 here, so t ~ normal)."""
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / max(n - 1, 1)
    return mean, 1.96 * math.sqrt(var / n)


def run_meta(config: MetaConfig, *, seed: int, run_dir: Path | None = None,
             progress: Progress | None = None) -> ParadigmResult:
    """Meta-train ``config.method`` on the meta-train classes (seed ``seed``), then report the mean query accuracy
    over ``test_episodes`` episodes of the held-out classes."""
    torch.set_num_threads(config.threads)
    x, y, _, _ = flat_arrays(config.dataset, pool=True)
    d = x.shape[1]
    train_cls, test_cls = split_classes(10, config.test_classes)
    train_s = EpisodeSampler(x, y, train_cls, config.ways, config.shots, config.queries, seed=seed)
    curve_s = EpisodeSampler(x, y, test_cls, config.ways, config.shots, config.queries, seed=10_000 + seed)
    torch.manual_seed(seed)
    params: Params | None = None
    opt: torch.optim.Optimizer | None = None
    if config.method == "protonets":
        model: torch.nn.Module = ProtoNet(mlp([d, config.hidden, config.hidden, config.embed_dim]))
        opt = torch.optim.Adam(model.parameters(), lr=config.outer_lr)
    else:
        model = mlp([d, config.hidden, config.hidden, config.ways])
        params = init_params(model)
        if config.method != "reptile":
            opt = torch.optim.Adam(params.values(), lr=config.outer_lr)
    history: list[dict[str, Any]] = []
    train_seconds, t0 = 0.0, time.perf_counter()
    for step in range(1, config.meta_steps + 1):
        t = time.perf_counter()
        params, loss = _meta_step(config, step - 1, model, params, opt, train_s)
        train_seconds += time.perf_counter() - t
        if step % config.eval_every == 0 or step == config.meta_steps:
            acc = sum(_evaluate(config, model, params, curve_s, config.eval_episodes)) / config.eval_episodes
            row = {"step": step, "seconds": time.perf_counter() - t0, "loss": loss, "eval_accuracy": acc}
            history.append(row)
            if progress is not None:
                progress(dict(row))
    test_s = EpisodeSampler(x, y, test_cls, config.ways, config.shots, config.queries, seed=20_000 + seed)
    accs = _evaluate(config, model, params, test_s, config.test_episodes)
    train_eval = EpisodeSampler(x, y, train_cls, config.ways, config.shots, config.queries, seed=30_000 + seed)
    mean, half = ci95(accs)
    metrics = {"accuracy": mean, "accuracy_ci95": half,
               "train_accuracy": ci95(_evaluate(config, model, params, train_eval,
                                                  config.train_eval_episodes))[0],
               "train_seconds": train_seconds}
    extras = {"config": asdict(config), "seed": seed, "train_classes": train_cls, "test_classes": test_cls,
              "episode_accuracies": accs}
    result = ParadigmResult(metrics, history, extras)
    if run_dir is not None:
        write_json(Path(run_dir) / "result.json", asdict(result))
    return result
