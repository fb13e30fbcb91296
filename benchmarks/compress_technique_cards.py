"""Technique cards on MNIST-1D: gradual pruning, FitNets hints and self-distillation, several seeds, small budgets.

Per seed (the seed sets the initialisation and the batch order; the data set is the fixed MNIST-1D split), all
training with Adam (lr 1e-2, batch 100) for a fixed number of optimizer steps (``--steps``):

* ``pruning`` (the paper ConvNet, 25 channels): dense; ``gradual_pruning`` to 50/80/90% (global, Zhu & Gupta's
  cubic schedule from step 10% to step 75% of the budget, every 5%); one-shot magnitude pruning to the same
  sparsities at the same total budget (dense for 75% of the steps, pruned once by global magnitude, fine-tuned the
  remaining 25% with the masks held). Card ``gradual_pruning``.
* ``hints`` (teacher: the ConvNet with 64 channels; student: the ConvNet with 8 channels): the student alone;
  plain distillation (T = 4, alpha = 0.9); FitNets (Romero et al. 2015): stage 1 trains the student's layers up to
  its guided layer ``conv2`` and a 1x1-conv regressor on the hint loss against the teacher's ``conv2`` output
  (eq. 3) for ``--hint-steps`` steps, stage 2 the same distillation as the plain arm. Card ``fitnets``.
* ``self`` (the paper MLP, hidden 100): the teacher (generation 0) trained alone; generation 1, the same
  architecture from another initialisation trained with ``self_distillation`` (T = 1, alpha = 1, born-again)
  against it. Card ``self_distillation``.

Paired differences over seeds with 95% t-intervals (``tricklab.lab.stats.paired``). Writes
``docs/cards/compress-mnist1d/{gradual_pruning,fitnets,self_distillation}.{md,json}``.

    PYTHONPATH=src python benchmarks/compress_technique_cards.py pruning hints self --seeds 0 1 2 --steps 2000
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tricklab.compress.distill import HintRegressor, capture, hint_loss
from tricklab.compress.metrics import nonzero_parameters, weight_sparsity
from tricklab.compress.pruning import magnitude_prune_, reapply_masks_
from tricklab.data import InMemoryLoader, load_dataset
from tricklab.lab.stats import describe, paired
from tricklab.models import build_model
from tricklab.techniques import Distillation, GradualPruning, SelfDistillation
from tricklab.train import Technique, Trainer, TrainState

import compress_cards  # noqa: E402  (benchmarks/ is on the path when run as a script: the shared card writer)
from compress_cards import _acc, _card  # noqa: E402

SPARSITIES = (0.5, 0.8, 0.9)


class _HoldMasks(Technique):
    """Zero the pruned weights after every optimizer step (one-shot pruning's fine-tuning)."""

    name = "hold_masks"
    writes = frozenset({"params"})

    def on_after_step(self, state: TrainState) -> None:
        reapply_masks_(state.raw_model)


def _train(model: nn.Module, data: Any, seed: int, steps: int, techniques: list[Technique] | None = None,
           lr: float = 1e-2) -> nn.Module:
    Trainer(model, torch.optim.Adam(model.parameters(), lr=lr), InMemoryLoader(data.x_train, data.y_train, 100,
                                                                                seed=seed),
            techniques=list(techniques or []), max_steps=steps, log_every=steps).fit()
    return model.eval()


def _seeded(seed: int, build: Callable[[], nn.Module]) -> nn.Module:
    torch.manual_seed(seed)
    return build()


def pruning_seed(seed: int, data: Any, steps: int) -> dict[str, float]:
    shape, classes = data.input_shape, data.num_classes

    def cnn() -> nn.Module:
        return build_model("cnn", shape, classes)

    dense = _train(_seeded(seed, cnn), data, seed, steps)
    out = {"dense": _acc(dense, data), "dense_nonzero": nonzero_parameters(dense)}
    start, end, every = steps // 10, 3 * steps // 4, max(1, steps // 20)
    for s in SPARSITIES:
        gp = GradualPruning(final_sparsity=s, start_step=start, end_step=end, every=every, scope="global")
        m = _train(_seeded(seed, cnn), data, seed, steps, [gp])
        out[f"gradual_{s}"], out[f"gradual_{s}_sparsity"] = _acc(m, data), weight_sparsity(m)
        out[f"gradual_{s}_nonzero"] = nonzero_parameters(m)
        one = _train(_seeded(seed, cnn), data, seed, end)  # dense for the same steps the schedule prunes over
        magnitude_prune_(one, s, scope="global")
        out[f"oneshot_{s}_no_finetune"] = _acc(one, data)
        one = _train(one.train(), data, seed + 1, steps - end, [_HoldMasks()])
        out[f"oneshot_{s}"], out[f"oneshot_{s}_sparsity"] = _acc(one, data), weight_sparsity(one)
    return out


class _Hints(Technique):
    """FitNets stage 1: the loss is the hint loss between r(student guided layer) and the teacher's hint layer."""

    name = "fitnets_hints"
    reads = frozenset({"batch.inputs"})
    writes = frozenset({"loss_fn"})

    def __init__(self, teacher: nn.Module, regressor: nn.Module, layer: str) -> None:
        self.teacher, self.regressor, self.layer = teacher, regressor, layer

    def on_loss(self, state: TrainState) -> None:
        with torch.no_grad(), capture(self.teacher, self.layer) as t:
            self.teacher(state.inputs)
        with capture(state.raw_model, self.layer) as s:
            state.raw_model(state.inputs)  # the guided layer's output with its graph (B, 8, L2)
        state.loss = hint_loss(self.regressor(s["features"]), t["features"])


def hints_seed(seed: int, data: Any, steps: int, hint_steps: int) -> dict[str, float]:
    shape, classes = data.input_shape, data.num_classes

    def student() -> nn.Module:
        return build_model("cnn", shape, classes, channels=8)

    teacher = _train(_seeded(seed, lambda: build_model("cnn", shape, classes, channels=64)), data, seed, steps)
    teacher.requires_grad_(False)
    out = {"teacher": _acc(teacher, data)}
    out["alone"] = _acc(_train(_seeded(seed, student), data, seed, steps), data)
    out["distilled"] = _acc(_train(_seeded(seed, student), data, seed, steps,
                                   [Distillation(teacher, temperature=4.0, alpha=0.9)]), data)
    s = _seeded(seed, student)
    regressor = HintRegressor(8, 64, dims=1)
    # stage 1: the student's layers up to conv2 and the regressor (conv3 and the head get no gradient)
    guided = nn.ModuleList([s.conv1, s.conv2, regressor])
    Trainer(s, torch.optim.Adam(guided.parameters(), lr=1e-2), InMemoryLoader(data.x_train, data.y_train, 100,
                                                                              seed=seed),
            techniques=[_Hints(teacher, regressor, "conv2")], max_steps=hint_steps, log_every=hint_steps).fit()
    out["fitnets"] = _acc(_train(s.train(), data, seed, steps, [Distillation(teacher, temperature=4.0, alpha=0.9)]),
                          data)
    out["student_params"] = sum(p.numel() for p in s.parameters())
    out["teacher_params"] = sum(p.numel() for p in teacher.parameters())
    return out


def self_seed(seed: int, data: Any, steps: int) -> dict[str, float]:
    shape, classes = data.input_shape, data.num_classes

    def mlp() -> nn.Module:
        return build_model("mlp", shape, classes)

    teacher = _train(_seeded(seed, mlp), data, seed, steps)
    out = {"teacher": _acc(teacher, data)}
    # generation 1: another initialisation (seed + 100) and batch order, the teacher's soft outputs alone
    gen1 = _train(_seeded(seed + 100, mlp), data, seed + 100, steps, [SelfDistillation(teacher)])
    out["born_again"] = _acc(gen1, data)
    out["alone_again"] = _acc(_train(_seeded(seed + 100, mlp), data, seed + 100, steps), data)
    return out


def _cards(parts: list[str], runs: dict[str, list[dict[str, float]]], a: argparse.Namespace, command: str) -> None:
    base = [f"**task**: MNIST-1D (4000 train / 1000 test); seeds {a.seeds}; 95% Student t intervals, differences "
            f"paired by seed; {a.steps} Adam steps (lr 1e-2, batch 100) per training run; shared 2-core machine, "
            f"1 thread (no timing reported)"]
    if "pruning" in parts:
        col = {k: [r[k] for r in runs["pruning"]] for k in runs["pruning"][0]}
        rows = [("dense", "-", describe(col["dense"]), None)]
        for s in SPARSITIES:
            rows.append((f"gradual {s:.0%}", "dense", describe(col[f"gradual_{s}"]),
                         paired(col[f"gradual_{s}"], col["dense"], True)))
            rows.append((f"one-shot {s:.0%}", "dense", describe(col[f"oneshot_{s}"]),
                         paired(col[f"oneshot_{s}"], col["dense"], True)))
            rows.append((f"gradual {s:.0%}", f"one-shot {s:.0%}", describe(col[f"gradual_{s}"]),
                         paired(col[f"gradual_{s}"], col[f"oneshot_{s}"], True)))
        spars = ", ".join(f"{s:.0%}: {100 * min(col[f'gradual_{s}_sparsity']):.1f}%" for s in SPARSITIES)
        verdict = "; ".join(f"at {s:.0%} gradual - one-shot "
                            f"{paired(col[f'gradual_{s}'], col[f'oneshot_{s}'], True).mean_diff * 100:+.2f} pt"
                            for s in SPARSITIES)
        _card("gradual_pruning", "gradual pruning (Zhu & Gupta) against one-shot magnitude pruning", command,
              base + [f"**model**: the paper ConvNet (25 channels, {int(col['dense_nonzero'][0])} parameters)",
                      f"**gradual**: `gradual_pruning`, global, cubic schedule from step {a.steps // 10} to "
                      f"{3 * a.steps // 4} every {max(1, a.steps // 20)}; measured weight sparsity (min over seeds) "
                      f"{spars}",
                      f"**one-shot**: dense for {3 * a.steps // 4} steps, pruned once by global magnitude, "
                      f"fine-tuned {a.steps - 3 * a.steps // 4} steps with the masks held (same total steps)"],
              rows, verdict + ".", runs["pruning"])
    if "hints" in parts:
        col = {k: [r[k] for r in runs["hints"]] for k in runs["hints"][0]}
        _card("fitnets", "FitNets hints against plain distillation and the student alone", command,
              base + [f"**teacher**: the paper ConvNet with 64 channels ({int(col['teacher_params'][0])} "
                      f"parameters); **student**: the same with 8 channels ({int(col['student_params'][0])})",
                      "**distilled**: `distillation`, T = 4, alpha = 0.9; **FitNets**: stage 1, "
                      f"{a.hint_steps} steps of the hint loss (eq. 3) from the teacher's conv2 to the student's "
                      "conv2 through a 1x1-conv regressor (student conv1-conv2 and the regressor trained), then "
                      "stage 2 the same distillation"],
              [("teacher", "-", describe(col["teacher"]), None),
               ("student alone", "-", describe(col["alone"]), None),
               ("distilled", "student alone", describe(col["distilled"]), paired(col["distilled"], col["alone"], True)),
               ("FitNets", "student alone", describe(col["fitnets"]), paired(col["fitnets"], col["alone"], True)),
               ("FitNets", "distilled", describe(col["fitnets"]), paired(col["fitnets"], col["distilled"], True))],
              f"FitNets - plain distillation: {100 * paired(col['fitnets'], col['distilled'], True).mean_diff:+.2f} "
              f"pt.", runs["hints"])
    if "self" in parts:
        col = {k: [r[k] for r in runs["self"]] for k in runs["self"][0]}
        _card("self_distillation", "self-distillation (born-again MLP) against its teacher", command,
              base + ["**model**: the paper MLP (hidden 100); **teacher**: generation 0 trained alone; "
                      "**born-again**: generation 1, another initialisation and batch order, `self_distillation` "
                      "(T = 1, alpha = 1) against the teacher; **alone again**: generation 1's initialisation and "
                      "batch order trained alone (a second plain network)"],
              [("teacher (generation 0)", "-", describe(col["teacher"]), None),
               ("born-again (generation 1)", "teacher", describe(col["born_again"]),
                paired(col["born_again"], col["teacher"], True)),
               ("born-again (generation 1)", "alone again", describe(col["born_again"]),
                paired(col["born_again"], col["alone_again"], True))],
              f"Born-again - teacher: {100 * paired(col['born_again'], col['teacher'], True).mean_diff:+.2f} pt.",
              runs["self"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("parts", nargs="+", choices=["pruning", "hints", "self"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--hint-steps", type=int, default=500)
    p.add_argument("--out", type=Path, default=compress_cards.OUT, help="the cards' folder")
    a = p.parse_args(argv)
    compress_cards.OUT = a.out
    a.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    command = "PYTHONPATH=src python benchmarks/compress_technique_cards.py " + " ".join(
        argv if argv is not None else sys.argv[1:])
    data = load_dataset("mnist1d")
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in a.parts}
    for part in a.parts:  # each part's card as soon as its seeds are done
        for seed in a.seeds:
            t0 = time.process_time()
            r = {"pruning": lambda: pruning_seed(seed, data, a.steps), "hints": lambda: hints_seed(
                seed, data, a.steps, a.hint_steps), "self": lambda: self_seed(seed, data, a.steps)}[part]()
            runs[part].append(r)
            print(f"{part} seed {seed}: {time.process_time() - t0:.0f} s CPU {r}", flush=True)
        _cards([part], runs, a, command)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
