"""The latency pass: inference latency of an ablation's trained models, measured after training, with the
compared models timed interleaved in one process on one thread.

A latency measured inside each run, right after its training, depends on what else the machine did at that
moment (the other worker's run, other users): the committed card once said label smoothing "hurts" latency
by 5 ms, which a loss function cannot do. Here, for each seed, every variant's saved model
(``runs/<variant>/seed-<s>/model.safetensors``) and a second copy of the baseline model are loaded and timed
round-robin: repeat r times each contender once, starting the round at contender r mod k, so that a slow
moment hits every contender alike and none always runs first. The median per contender is its latency; the
copy against the baseline is the noise floor (:mod:`tricklab.lab.noise`). The pass runs in the driver after
the worker pool has shut down, on one torch thread, and records the load average it saw.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from tricklab.lab.build import PreparedData, prepare_data
from tricklab.lab.format import safe_name
from tricklab.lab.noise import COPY
from tricklab.lab.recipe import Recipe, recipe_from_dict
from tricklab.lab.tasks import TASKS
from tricklab.models import build_model
from tricklab.train.distributed import DistInfo

__all__ = ["Contender", "latency_pass", "time_interleaved"]


@dataclass
class Contender:
    name: str
    model: nn.Module
    example: Any


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(contenders: Sequence[Contender], repeats: int = 30, warmup: int = 5) -> dict[str, list[float]]:
    """Milliseconds of one forward pass per contender and repeat, timed round-robin (see the module
    docstring), in eval mode under ``torch.inference_mode``; every model's train/eval flags are restored."""
    modes = [{m: m.training for m in c.model.modules()} for c in contenders]
    times: dict[str, list[float]] = {c.name: [] for c in contenders}
    try:
        for c in contenders:
            c.model.eval()
        with torch.inference_mode():
            for c in contenders:
                for _ in range(warmup):
                    c.model(c.example)
            k = len(contenders)
            for r in range(repeats):
                for c in [*contenders[r % k:], *contenders[:r % k]]:
                    device = next(c.model.parameters()).device
                    _sync(device)
                    t0 = time.perf_counter()
                    c.model(c.example)
                    _sync(device)
                    times[c.name].append((time.perf_counter() - t0) * 1e3)
    finally:
        for flags in modes:
            for m, training in flags.items():
                m.training = training
    return times


def _model(recipe: Recipe, data: PreparedData, weights: Path, device: torch.device) -> nn.Module:
    model = build_model(recipe.model.name, data.input_shape, data.num_classes, **recipe.model.args)
    model.load_state_dict(load_file(str(weights)))
    return model.to(device)


class _Data:
    """Each distinct (task, data) of the variants loaded once."""

    def __init__(self) -> None:
        self._cache: dict[str, PreparedData] = {}

    def get(self, recipe: Recipe) -> PreparedData:
        key = repr((recipe.task, recipe.data, recipe.batch_size))
        if key not in self._cache:
            self._cache[key] = prepare_data(TASKS.get(recipe.task), recipe, DistInfo())
        return self._cache[key]


def _device(recipe: Recipe) -> torch.device:
    return torch.device(recipe.device if recipe.device.startswith("cuda") and torch.cuda.is_available() else "cpu")


def _contenders(folder: Path, runs: dict[str, dict[str, Any]], seed: int, data: _Data,
                missing: list[str]) -> list[Contender]:
    """The contenders of one seed: every variant with a saved model, then the baseline's second copy."""
    out = []
    for variant, recipe_dict in runs.items():
        weights = folder / "runs" / safe_name(variant) / f"seed-{seed}" / "model.safetensors"
        recipe = recipe_from_dict(recipe_dict)
        try:
            prepared = data.get(recipe)
            device = _device(recipe)
            example = prepared.latency_example(recipe.eval_batch_size, device)
            names = [variant, COPY] if variant == "baseline" else [variant]
            out += [Contender(n, _model(recipe, prepared, weights, device), example) for n in names]
        except (OSError, RuntimeError, ValueError, KeyError) as e:
            missing.append(f"{variant} seed {seed}: {type(e).__name__}: {e}")
    return out


def latency_pass(folder: Path, runs: dict[int, dict[str, dict[str, Any]]], repeats: int = 30, warmup: int = 5,
                 threads: int = 1, say: Callable[[str], Any] = print) -> dict[str, Any]:
    """Time every finished run's model, seed by seed (``runs``: seed -> variant -> resolved recipe dict);
    returns what the store records under ``latency_pass``: the median milliseconds per seed and contender,
    the protocol, and the load average at the time."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    data, missing = _Data(), []
    medians: dict[str, dict[str, float]] = {}
    started = time.perf_counter()
    try:
        for seed in sorted(runs):
            contenders = _contenders(Path(folder), runs[seed], seed, data, missing)
            if contenders:
                times = time_interleaved(contenders, repeats, warmup)
                medians[str(seed)] = {name: statistics.median(ts) for name, ts in times.items()}
    finally:
        torch.set_num_threads(before)
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    say(f"latency pass: {sum(len(m) for m in medians.values())} models timed interleaved on {threads} thread(s) "
        f"in {time.perf_counter() - started:.1f}s")
    return {"median_ms": medians, "repeats": repeats, "warmup": warmup, "threads": threads, "load_average": load,
            "missing": missing, "protocol": "round-robin, one process, after training"}
