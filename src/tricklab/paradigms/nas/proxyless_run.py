"""``run_proxyless``: a ProxylessNAS search on MNIST-1D (the DARTS cell space, a latency term from the measured
lookup table) and its evaluation against a random cell of equal table latency, shaped for the lab's task kinds.

As in :func:`~tricklab.paradigms.nas.run.run_nas`: the 4000 training signals are split 50/50 (split seed 0) into
the search's weight and architecture halves; after ``search_steps`` alternating steps the cell is discretised;
the searched cell and a random cell from the same discrete space whose table latency is within
``latency_tolerance`` of the searched one (the first of up to 1000 seeded draws) are each trained from scratch
on all 4000 signals with the same recipe and tested on the 1000 test signals (paired per seed).
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
from tricklab.paradigms.common import ParadigmResult, Progress, check, mnist1d_arrays, pos_int, pos_num, \
    write_json
from tricklab.paradigms.nas.darts import Genotype, discretize, genotype_cost, random_genotype
from tricklab.paradigms.nas.proxyless import LATENCY_TABLE, ProxylessNet, genotype_latency, load_latency_table, \
    proxyless_step
from tricklab.paradigms.nas.run import _train_fixed

__all__ = ["PROXYLESS_METRICS", "ProxylessConfig", "run_proxyless"]

PROXYLESS_METRICS: list[MetricSpec] = [
    MetricSpec("accuracy", "test accuracy of the searched cell", True),
    MetricSpec("random_accuracy", "test accuracy of a random cell of equal table latency", True, verdict=False),
    MetricSpec("accuracy_gain", "searched - random (paired per seed)", True),
    MetricSpec("latency_ms", "table latency of the searched cell", False, unit="ms", verdict=False),
    MetricSpec("random_latency_ms", "table latency of the random cell", False, unit="ms", verdict=False),
    MetricSpec("params", "parameters of the searched network", False, verdict=False, fmt=".0f"),
    MetricSpec("search_seconds", "search time", False, unit="s", verdict=False, fmt=".1f"),
]


@dataclass
class ProxylessConfig:
    """ProxylessNAS on MNIST-1D: the 3-node, 16-channel cell of DARTS; 600 search steps, 2000 training steps per
    evaluation; latency weight lambda 0.1 (relative to the mean cell latency)."""

    channels: int = 16
    nodes: int = 3
    search_steps: int = 600
    train_steps: int = 2000
    batch_size: int = 64
    w_lr: float = 3e-3
    alpha_lr: float = 3e-3
    latency_weight: float = 0.1
    latency_table: str = ""  # a JSON from `python -m tricklab.paradigms.nas.proxyless --measure`; "" = the stored one
    latency_tolerance: float = 0.1
    eval_every: int = 200
    threads: int = 1

    def __post_init__(self) -> None:
        for name in ("channels", "nodes", "search_steps", "train_steps", "batch_size", "eval_every", "threads"):
            check(pos_int(getattr(self, name)), name, "a positive int", getattr(self, name))
        check(self.nodes <= 6, "nodes", "in 1..6 (the edge count grows as nodes^2)", self.nodes)
        for name in ("w_lr", "alpha_lr", "latency_tolerance"):
            check(pos_num(getattr(self, name)), name, "a positive number", getattr(self, name))
        check(isinstance(self.latency_weight, (int, float)) and self.latency_weight >= 0, "latency_weight",
              ">= 0 (0: accuracy only)", self.latency_weight)


def _matched_random(geno: Genotype, cfg: ProxylessConfig, table: dict[str, float], seed: int) -> Genotype:
    target = genotype_latency(geno, table)
    gen = torch.Generator().manual_seed(60_000 + seed)
    for _ in range(1000):
        cand = random_genotype(cfg.nodes, gen)
        if abs(genotype_latency(cand, table) - target) <= cfg.latency_tolerance * target:
            return cand
    raise ConfigError(f"no random cell within latency_tolerance {cfg.latency_tolerance} of {target:.4f} ms in 1000 "
                      "draws; raise latency_tolerance")


def run_proxyless(config: ProxylessConfig, *, seed: int, run_dir: Path | None = None,
                  progress: Progress | None = None) -> ParadigmResult:
    """Search (seed ``seed``: init, batches, path samples), discretise, retrain the searched and an equal-latency
    random cell, test both."""
    torch.set_num_threads(config.threads)
    table = load_latency_table(config.latency_table or LATENCY_TABLE)
    x, y, xt, yt = mnist1d_arrays()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    tr, va = perm[: len(x) // 2], perm[len(x) // 2 :]
    torch.manual_seed(seed)
    net = ProxylessNet(config.channels, config.nodes)
    w_opt = torch.optim.Adam(net.weight_parameters(), lr=config.w_lr)
    a_opt = torch.optim.Adam([net.alpha], lr=config.alpha_lr, betas=(0.5, 0.999))
    gen = torch.Generator().manual_seed(seed)
    history: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for step in range(1, config.search_steps + 1):
        bt = tr[torch.randint(0, len(tr), (config.batch_size,), generator=gen)]
        bv = va[torch.randint(0, len(va), (config.batch_size,), generator=gen)]
        lt, lv, lat = proxyless_step(net, w_opt, a_opt, (x[bt], y[bt]), (x[bv], y[bv]), table,
                                     config.latency_weight, gen)
        if step % config.eval_every == 0 or step == config.search_steps:
            geno = discretize(net)
            row = {"step": step, "seconds": time.perf_counter() - t0, "train_loss": lt, "val_loss": lv,
                   "expected_latency_ms": lat, "genotype": geno, "genotype_latency_ms": genotype_latency(geno, table)}
            history.append(row)
            if progress is not None:
                progress(dict(row))
    search_seconds = time.perf_counter() - t0
    geno = discretize(net)
    rand = _matched_random(geno, config, table, seed)
    acc, params = _train_fixed(geno, config, seed, x, y, xt, yt)  # type: ignore[arg-type]  # same recipe fields
    racc, _ = _train_fixed(rand, config, seed, x, y, xt, yt)  # type: ignore[arg-type]
    metrics = {"accuracy": acc, "random_accuracy": racc, "accuracy_gain": acc - racc,
               "latency_ms": genotype_latency(geno, table), "random_latency_ms": genotype_latency(rand, table),
               "params": float(params), "search_seconds": search_seconds}
    extras = {"config": asdict(config), "seed": seed, "genotype": geno, "random_genotype": rand,
              "random_params": genotype_cost(rand, config.channels), "latency_table_ms": table,
              "alpha_softmax": F.softmax(net.alpha.detach(), -1).tolist(), "primitives": list(net.primitives)}
    result = ParadigmResult(metrics, history, extras)
    if run_dir is not None:
        write_json(Path(run_dir) / "result.json", asdict(result))
    return result
