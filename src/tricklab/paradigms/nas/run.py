"""``run_nas``: a DARTS search on MNIST-1D and its evaluation against a random architecture of equal cost, shaped
for the lab's task kinds (PARADIGMS.md).

The 4000 training signals are split 50/50 (split seed 0) into the search's weight-training and architecture
(validation) halves. After ``search_steps`` bilevel steps the cell is discretised; then the searched cell and a
random cell from the same discrete space whose parameter count is within ``cost_tolerance`` of the searched one
(the first of up to 1000 seeded draws) are each trained from scratch on all 4000 signals with the same recipe
and tested on the 1000 test signals. Both numbers come from the same run, so ``accuracy_gain`` is the paired
difference per seed.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from tricklab.errors import ConfigError
from tricklab.evaluate.declared import MetricSpec
from tricklab.paradigms.common import ParadigmResult, Progress, accuracy, check, mnist1d_arrays, pos_int, pos_num, \
    write_json
from tricklab.paradigms.nas.darts import FixedNet, Genotype, SearchNet, darts_step, discretize, genotype_cost, \
    random_genotype

__all__ = ["NAS_METRICS", "NasConfig", "run_nas"]

NAS_METRICS: list[MetricSpec] = [
    MetricSpec("accuracy", "test accuracy of the searched cell", True),
    MetricSpec("random_accuracy", "test accuracy of a random cell of equal cost", True, verdict=False),
    MetricSpec("accuracy_gain", "searched - random (paired per seed)", True),
    MetricSpec("params", "parameters of the searched network", False, verdict=False, fmt=".0f"),
    MetricSpec("random_params", "parameters of the random network", False, verdict=False, fmt=".0f"),
    MetricSpec("search_seconds", "search time", False, unit="s", verdict=False, fmt=".1f"),
]


@dataclass
class NasConfig:
    """DARTS on MNIST-1D: a 3-node cell of 16 channels; 600 search steps, 2000 training steps per evaluation."""

    method: str = "darts"
    second_order: bool = False
    channels: int = 16
    nodes: int = 3
    search_steps: int = 600
    train_steps: int = 2000
    batch_size: int = 64
    w_lr: float = 3e-3
    alpha_lr: float = 3e-3
    xi: float = 0.01
    cost_tolerance: float = 0.1
    eval_every: int = 200
    threads: int = 1

    def __post_init__(self) -> None:
        check(self.method == "darts", "method", "'darts' (the random baseline runs inside every search)",
              self.method)
        for name in ("channels", "nodes", "search_steps", "train_steps", "batch_size", "eval_every", "threads"):
            check(pos_int(getattr(self, name)), name, "a positive int", getattr(self, name))
        check(self.nodes <= 6, "nodes", "in 1..6 (the edge count grows as nodes^2)", self.nodes)
        for name in ("w_lr", "alpha_lr", "xi", "cost_tolerance"):
            check(pos_num(getattr(self, name)), name, "a positive number", getattr(self, name))


def _train_fixed(geno: Genotype, cfg: NasConfig, seed: int, x: torch.Tensor, y: torch.Tensor, xt: torch.Tensor,
                 yt: torch.Tensor) -> tuple[float, int]:
    torch.manual_seed(seed)
    net = FixedNet(geno, cfg.channels)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.w_lr)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(cfg.train_steps):
        idx = torch.randint(0, len(x), (cfg.batch_size,), generator=gen)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x[idx]), y[idx]).backward()
        opt.step()
    with torch.no_grad():
        return accuracy(net.eval()(xt), yt), sum(p.numel() for p in net.parameters())


def _matched_random(geno: Genotype, cfg: NasConfig, seed: int) -> Genotype:
    target = genotype_cost(geno, cfg.channels)
    gen = torch.Generator().manual_seed(50_000 + seed)
    for _ in range(1000):
        cand = random_genotype(cfg.nodes, gen)
        if abs(genotype_cost(cand, cfg.channels) - target) <= cfg.cost_tolerance * target:
            return cand
    raise ConfigError(f"no random cell within cost_tolerance {cfg.cost_tolerance} of {target} parameters in 1000 "
                      "draws; raise cost_tolerance")


def run_nas(config: NasConfig, *, seed: int, run_dir: Path | None = None,
            progress: Progress | None = None) -> ParadigmResult:
    """Search (seed ``seed``), discretise, retrain the searched and an equal-cost random cell, test both."""
    torch.set_num_threads(config.threads)
    x, y, xt, yt = mnist1d_arrays()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    tr, va = perm[: len(x) // 2], perm[len(x) // 2 :]
    torch.manual_seed(seed)
    net = SearchNet(config.channels, config.nodes)
    w_opt = torch.optim.Adam(net.weight_parameters(), lr=config.w_lr)
    a_opt = torch.optim.Adam([net.alpha], lr=config.alpha_lr, betas=(0.5, 0.999))
    gen = torch.Generator().manual_seed(seed)
    history: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for step in range(1, config.search_steps + 1):
        bt = tr[torch.randint(0, len(tr), (config.batch_size,), generator=gen)]
        bv = va[torch.randint(0, len(va), (config.batch_size,), generator=gen)]
        lt, lv = darts_step(net, w_opt, a_opt, (x[bt], y[bt]), (x[bv], y[bv]), config.second_order, config.xi)
        if step % config.eval_every == 0 or step == config.search_steps:
            with torch.no_grad():
                acc = accuracy(net(x[va]), y[va])
            row = {"step": step, "seconds": time.perf_counter() - t0, "train_loss": lt, "val_loss": lv,
                   "eval_accuracy": acc, "genotype": discretize(net)}
            history.append(row)
            if progress is not None:
                progress(dict(row))
    search_seconds = time.perf_counter() - t0
    geno = discretize(net)
    rand = _matched_random(geno, config, seed)
    acc, params = _train_fixed(geno, config, seed, x, y, xt, yt)
    racc, rparams = _train_fixed(rand, config, seed, x, y, xt, yt)
    metrics = {"accuracy": acc, "random_accuracy": racc, "accuracy_gain": acc - racc, "params": float(params),
               "random_params": float(rparams), "search_seconds": search_seconds}
    extras = {"config": asdict(config), "seed": seed, "genotype": geno, "random_genotype": rand,
              "alpha_softmax": F.softmax(net.alpha.detach(), -1).tolist(), "primitives": list(net.primitives)}
    result = ParadigmResult(metrics, history, extras)
    if run_dir is not None:
        write_json(Path(run_dir) / "result.json", asdict(result))
    return result
