"""Lottery tickets: iterative magnitude pruning (IMP) with weight rewinding, against its two controls.

Frankle & Carbin ("The Lottery Ticket Hypothesis", ICLR 2019, Algorithm 1; rewinding to step k: Frankle et al.,
"Linear Mode Connectivity and the Lottery Ticket Hypothesis", ICML 2020):

1. initialise ``theta_0``, train ``T`` steps, keeping ``theta_k`` (the weights and buffers after ``k`` steps);
2. round ``r = 1..R``: prune ``p`` of the remaining weights by magnitude (sparsity ``1 - (1 - p)^r``), giving the
   mask ``m_r``; *rewind* the survivors to ``theta_k * m_r`` and train ``T - k`` steps; the trained weights are
   what round ``r + 1`` prunes.

Each round also trains the two controls of the paper, with the same budget ``T - k``:

* ``reinit``: the same mask ``m_r`` on a fresh random initialisation (another seed);
* ``random_mask``: ``theta_k`` under a random mask with the same number of weights kept in every layer.

A winning ticket is a mask with which the rewound network matches the dense one while the controls fall
behind. The masks are the layers' ``weight_mask`` buffers (``tricklab.compress.pruning``) and are re-applied after
every optimizer step. ``python -m tricklab.compress.lottery`` runs the rounds for several seeds and writes one
JSON row per round and arm.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from tricklab.compress.pruning import apply_masks_, magnitude_masks, masks_of, prunable_layers, reapply_masks_
from tricklab.data import InMemoryLoader, load_dataset
from tricklab.errors import ConfigError
from tricklab.evaluate.declared import MetricSpec
from tricklab.io import atomic_write_text
from tricklab.models import build_model
from tricklab.train import Technique, Trainer, TrainState

__all__ = ["ARMS", "LOTTERY_METRICS", "LotteryConfig", "LotteryResult", "run_lottery", "rewind_", "random_masks",
           "round_sparsity", "train_with_masks", "build_seeded"]

ARMS: tuple[str, ...] = ("rewind", "reinit", "random_mask")

LOTTERY_METRICS: list[MetricSpec] = [
    MetricSpec("accuracy_rewind", "test accuracy, IMP with rewinding (last round)", True, fmt=".4f"),
    MetricSpec("accuracy_reinit", "test accuracy, same masks, random re-init (last round)", True, fmt=".4f"),
    MetricSpec("accuracy_random_mask", "test accuracy, random masks (last round)", True, fmt=".4f"),
    MetricSpec("accuracy_dense", "test accuracy of the dense network", True, fmt=".4f"),
    MetricSpec("sparsity", "sparsity of the last round", True, verdict=False, fmt=".3f"),
    MetricSpec("train_seconds", "training time, all rounds and arms", False, unit="s", verdict=False, fmt=".1f"),
]


@dataclass
class LotteryConfig:
    """IMP on ``dataset`` with ``model``: ``rounds`` rounds pruning ``prune_fraction`` of the remaining weights
    each (by magnitude, per layer or globally), rewinding to step ``rewind_step`` of a ``steps``-step run.
    Training: Adam (``lr``), batch ``batch_size`` (the MNIST-1D paper's settings by default)."""

    model: str = "mlp"
    model_args: dict[str, Any] = field(default_factory=dict)
    dataset: str = "mnist1d"
    rounds: int = 10
    prune_fraction: float = 0.2
    scope: str = "layer"
    rewind_step: int = 0
    steps: int = 3000
    batch_size: int = 100
    lr: float = 1e-2
    arms: tuple[str, ...] = ARMS
    threads: int = 1
    #: the rounds at which the controls (reinit, random_mask) are trained; None: every round. The IMP chain
    #: (rewind) runs every round regardless, so a subset only thins the controls' curve (saves compute)
    control_rounds: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("rounds", "steps", "batch_size", "threads"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"lottery {name} must be a positive integer, got {v!r}")
        if isinstance(self.rewind_step, bool) or not isinstance(self.rewind_step, int) \
                or not 0 <= self.rewind_step < self.steps:
            raise ConfigError(f"lottery rewind_step must be an integer in [0, steps={self.steps}), "
                              f"got {self.rewind_step!r}")
        if not isinstance(self.prune_fraction, (int, float)) or not 0.0 < self.prune_fraction < 1.0:
            raise ConfigError(f"lottery prune_fraction (of the remaining weights, per round) must be in (0, 1), "
                              f"got {self.prune_fraction!r}")
        if self.scope not in ("layer", "global"):
            raise ConfigError(f"lottery scope must be 'layer' or 'global', got {self.scope!r}")
        if not isinstance(self.lr, (int, float)) or not self.lr > 0:
            raise ConfigError(f"lottery lr must be a positive number, got {self.lr!r}")
        self.arms = tuple(self.arms)
        bad = [a for a in self.arms if a not in ARMS]
        if bad or "rewind" not in self.arms:
            raise ConfigError(f"lottery arms must include 'rewind' and be among {list(ARMS)}, got {list(self.arms)}")
        if self.control_rounds is not None:
            self.control_rounds = tuple(self.control_rounds)
            if any(isinstance(r, bool) or not isinstance(r, int) or not 1 <= r <= self.rounds
                   for r in self.control_rounds) or self.rounds not in self.control_rounds:
                raise ConfigError(f"lottery control_rounds must be rounds in [1, rounds={self.rounds}] including "
                                  f"the last one, got {list(self.control_rounds)}")


@dataclass
class LotteryResult:
    """``metrics`` (keys of :data:`LOTTERY_METRICS`), ``history`` (one row per round: ``step`` = round, ``seconds``,
    sparsity and each arm's accuracy) and ``extras`` (the config and the per-layer sparsity of each round)."""

    metrics: dict[str, float]
    history: list[dict[str, Any]]
    extras: dict[str, Any] = field(default_factory=dict)


def round_sparsity(r: int, prune_fraction: float) -> float:
    """Sparsity after ``r`` rounds that each prune ``prune_fraction`` of the remaining weights: 1 - (1 - p)^r."""
    return 1.0 - (1.0 - prune_fraction) ** r


@torch.no_grad()
def rewind_(model: nn.Module, snapshot: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> None:
    """Load ``snapshot`` (a state dict without masks, e.g. theta_k) into ``model`` and apply ``masks``: the
    surviving weights are exactly their step-k values, the pruned ones exactly zero, the buffers those of step k."""
    state = model.state_dict()
    for k, v in snapshot.items():
        state[k].copy_(v)
    apply_masks_(model, masks)


def random_masks(masks: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Masks with as many kept weights in every layer as ``masks``, at uniformly random positions."""
    out = {}
    for name, m in masks.items():
        keep = int(m.sum())
        flat = torch.zeros(m.numel(), dtype=torch.bool)
        flat[torch.randperm(m.numel(), generator=generator)[:keep]] = True
        out[name] = flat.view_as(m)
    return out


class _KeepMasks(Technique):
    """Zero the pruned weights after every optimizer step (the masks are model buffers)."""

    name: ClassVar[str] = "keep_masks"
    writes = frozenset({"params"})

    def on_after_step(self, state: TrainState) -> None:
        reapply_masks_(state.raw_model)


class _Snapshot(Technique):
    """Copy the model's state (weights and buffers, not masks) after optimizer step ``at``."""

    name: ClassVar[str] = "snapshot_at"
    reads = frozenset({"params", "norm_stats"})

    def __init__(self, at: int) -> None:
        self.at = at
        self.state: dict[str, torch.Tensor] | None = None

    def on_fit_start(self, state: TrainState) -> None:
        if self.at == 0:
            self.state = _weights(state.raw_model)

    def on_after_step(self, state: TrainState) -> None:
        if state.step == self.at:
            self.state = _weights(state.raw_model)


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if not k.endswith("weight_mask")}


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(x[i:i + 1000]).argmax(1) == y[i:i + 1000]).sum()) for i in range(0, len(x), 1000))
    model.train()
    return correct / len(x)


def train_with_masks(model: nn.Module, data: Any, cfg: LotteryConfig, seed: int, steps: int,
           snapshot_at: int | None = None) -> tuple[float, dict[str, torch.Tensor] | None]:
    """Train ``steps`` steps with the masks held; returns the training seconds and the step-k snapshot."""
    snap = _Snapshot(snapshot_at) if snapshot_at is not None else None
    techniques: list[Technique] = [_KeepMasks()] + ([snap] if snap is not None else [])
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    trainer = Trainer(model, opt, InMemoryLoader(data.x_train, data.y_train, cfg.batch_size, seed=seed),
                      techniques=techniques, max_steps=steps, log_every=steps)
    state = trainer.fit()
    return state.train_seconds, (snap.state if snap is not None else None)


def build_seeded(cfg: LotteryConfig, data: Any, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(cfg.model, data.input_shape, data.num_classes, **cfg.model_args)


def run_lottery(config: LotteryConfig, *, seed: int, run_dir: Path | None = None,
                progress: Callable[[dict[str, Any]], None] | None = None) -> LotteryResult:
    """Run IMP with rewinding and its controls for ``config.rounds`` rounds (seed ``seed``); one history row per
    round. With ``run_dir``, writes ``result.json`` there (atomically)."""
    torch.set_num_threads(config.threads)
    data = load_dataset(config.dataset)
    k, budget = config.rewind_step, config.steps - config.rewind_step
    model = build_seeded(config, data, seed)
    seconds, theta_k = train_with_masks(model, data, config, seed, config.steps, snapshot_at=k)
    assert theta_k is not None
    dense = _accuracy(model, data.x_test, data.y_test)
    history: list[dict[str, Any]] = [{"step": 0, "seconds": seconds, "sparsity": 0.0, "accuracy_dense": dense,
                                      **{f"accuracy_{a}": dense for a in config.arms}}]
    if progress is not None:
        progress(history[-1])
    layer_sparsity: list[dict[str, float]] = []
    gen = torch.Generator().manual_seed(seed + 1_000_003)
    for r in range(1, config.rounds + 1):
        target = round_sparsity(r, config.prune_fraction)
        layers = prunable_layers(model)
        masks = magnitude_masks({n: m.weight for n, m in layers.items()}, target, config.scope)
        row: dict[str, Any] = {"step": r, "sparsity": target}
        for arm in config.arms:
            if arm != "rewind" and config.control_rounds is not None and r not in config.control_rounds:
                continue
            if arm == "rewind":  # the IMP chain itself: its trained weights are what the next round prunes
                net = model
                rewind_(net, theta_k, masks)
            elif arm == "reinit":
                net = copy.deepcopy(model)
                fresh = build_seeded(config, data, seed + 10_000 * r + 7)
                rewind_(net, _weights(fresh), masks)
            else:
                net = copy.deepcopy(model)
                rewind_(net, theta_k, random_masks(masks, gen))
            secs, _ = train_with_masks(net, data, config, seed + r, budget)
            seconds += secs
            row[f"accuracy_{arm}"] = _accuracy(net, data.x_test, data.y_test)
        layer_sparsity.append({n: 1.0 - float(m.float().mean()) for n, m in masks_of(model).items()})
        row["seconds"] = seconds
        history.append(row)
        if progress is not None:
            progress(row)
    last = history[-1]
    metrics = {f"accuracy_{a}": float(last.get(f"accuracy_{a}", math.nan)) for a in ARMS}
    metrics.update(accuracy_dense=dense, sparsity=float(last["sparsity"]), train_seconds=seconds)
    result = LotteryResult(metrics, history, {"config": asdict(config), "seed": seed, "layer_sparsity": layer_sparsity})
    if run_dir is not None:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(run_dir) / "result.json", json.dumps(asdict(result), indent=1))
    return result


def main(argv: list[str] | None = None) -> int:
    """``python -m tricklab.compress.lottery --seeds 0 1 2 --rounds 10 --out DIR``: one result.json per seed."""
    p = argparse.ArgumentParser(prog="python -m tricklab.compress.lottery", description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--prune-fraction", type=float, default=0.2)
    p.add_argument("--scope", default="layer")
    p.add_argument("--rewind-step", type=int, default=0)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--hidden", type=int, default=None, help="the MLP's hidden width (model argument 'hidden')")
    p.add_argument("--model", default="mlp")
    p.add_argument("--control-rounds", type=int, nargs="+", default=None,
                   help="train the controls only at these rounds (default: every round)")
    p.add_argument("--dataset", default="mnist1d")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    try:
        cfg = LotteryConfig(model=a.model, dataset=a.dataset, rounds=a.rounds, prune_fraction=a.prune_fraction,
                            scope=a.scope, rewind_step=a.rewind_step, steps=a.steps, lr=a.lr,
                            batch_size=a.batch_size, model_args={} if a.hidden is None else {"hidden": a.hidden},
                            control_rounds=None if a.control_rounds is None else tuple(a.control_rounds))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for seed in a.seeds:
        t0 = time.perf_counter()

        def show(row: dict[str, Any], seed: int = seed) -> None:
            accs = "  ".join(f"{k[9:]} {v:.3f}" for k, v in row.items() if k.startswith("accuracy_"))
            print(f"seed {seed} round {row['step']:2d} sparsity {row['sparsity']:.3f}  {accs}", flush=True)

        run_lottery(cfg, seed=seed, run_dir=a.out / f"seed-{seed}", progress=show)
        print(f"seed {seed}: {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
