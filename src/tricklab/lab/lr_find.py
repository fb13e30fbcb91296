"""Learning-rate range test (Smith 2017, sec. 3.3): sweep the lr up exponentially, watch the loss.

One optimizer step per lr, lr_i = start * (end / start)^(i / (N - 1)). The batch loss is noisy, so it is
smoothed with a bias-corrected exponential moving average (as Adam corrects its moments):

    a_i = beta a_{i-1} + (1 - beta) loss_i,   a_{-1} = 0,    smoothed_i = a_i / (1 - beta^(i+1))

and the sweep stops once smoothed_i > diverge * min_{j<=i} smoothed_j (the loss has blown up). Suggestions, on
the smoothed curve up to the stop:

* ``steepest``: the lr where the loss falls fastest per decade, argmin_i d smoothed / d log lr (central
  differences, ``numpy.gradient`` on the non-uniform log grid), searched up to the lowest smoothed loss (past
  it the curve is divergence and noise, whose downward jumps are no advice);
* ``valley``: the middle of the descent into the minimum. With m = argmin smoothed, peak = max smoothed[:m+1]
  and drop = peak - smoothed[m], the descent starts at s, the last index before m where the loss is still
  within 10% of the drop from the peak; the suggestion is index s + (m - s) // 2, the geometric middle of
  [lr_s, lr_m] on the exponential grid. (fastai's 'valley' takes the middle of the longest decreasing
  subsequence; with beta = 0.98 a slow drift along the plateau is such a subsequence and pulls that point
  orders of magnitude too low, which the 10% rule ignores.)
* ``min_div10``: the lr of the lowest smoothed loss divided by 10 (the classic rule of thumb).

The model, the optimizer (state and lrs), the loader position and the global RNGs are restored afterwards, so
the test can run on a model about to be trained. Techniques and the schedule of the recipe are not applied:
the test measures the optimizer on the task's loss.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tricklab.data import InMemoryLoader, load_dataset
from tricklab.errors import ConfigError
from tricklab.io import atomic_write_text
from tricklab.lab.build import validate
from tricklab.lab.plots import matplotlib_or_hint
from tricklab.lab.recipe import Recipe
from tricklab.models import build_model
from tricklab.optim import create_optimizer
from tricklab.train.reproducibility import get_rng_state, seed_everything, set_rng_state

__all__ = ["SUGGESTIONS", "build_for_recipe", "lr_find", "lr_range_test", "suggest"]

#: The suggestions, in the order they are printed, with their names for people.
SUGGESTIONS: dict[str, str] = {"steepest": "steepest descent", "valley": "valley", "min_div10": "min loss / 10"}


def _check(start_lr: float, end_lr: float, num_steps: int, smooth: float, diverge: float) -> None:
    if not 0 < start_lr < end_lr:
        raise ConfigError(f"lr-find needs 0 < start_lr < end_lr, got {start_lr} and {end_lr}")
    if not isinstance(num_steps, int) or num_steps < 3:
        raise ConfigError(f"lr-find needs at least 3 steps, got {num_steps!r}")
    if not 0 <= smooth < 1:
        raise ConfigError(f"smooth must be in [0, 1), got {smooth}")
    if not diverge > 1:
        raise ConfigError(f"diverge must be greater than 1, got {diverge}")


def _descent_start(y: np.ndarray, m: int, tol: float = 0.1) -> int:
    """Last index before ``m`` whose loss is within ``tol`` of the drop from the pre-minimum peak."""
    peak = float(np.max(y[: m + 1]))
    level = y[m] + (1.0 - tol) * (peak - y[m])  # 90% of the way up from the minimum to the peak
    above = np.nonzero(y[:m] >= level)[0]
    return int(above[-1]) if len(above) else 0


def suggest(lrs: Any, smoothed: Any) -> dict[str, float | None]:
    """Suggested lrs from a smoothed loss curve (see the module docstring); None where there are too few
    finite points (fewer than 3)."""
    lrs = np.asarray(lrs, dtype=np.float64)
    y = np.asarray(smoothed, dtype=np.float64)
    ok = np.isfinite(y)
    if not ok.all():
        cut = int(np.argmin(ok))  # first non-finite point: the curve ends before it
        lrs, y = lrs[:cut], y[:cut]
    if len(y) < 3:
        return {"steepest": None, "valley": None, "min_div10": None}
    slope = np.gradient(y, np.log10(lrs))
    m = int(np.argmin(y))
    s = _descent_start(y, m)
    return {
        "steepest": float(lrs[int(np.argmin(slope[: m + 1]))]),
        "valley": float(lrs[s + (m - s) // 2]),
        "min_div10": float(max(lrs[m] / 10.0, lrs[0])),
    }


class _Snapshot:
    """Model weights and mode, optimizer state, loader position and global RNGs, to put back after the test."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, loader: Any) -> None:
        self.model, self.optimizer, self.loader = model, optimizer, loader
        self.model_state = copy.deepcopy(model.state_dict())
        self.optimizer_state = copy.deepcopy(optimizer.state_dict())
        self.loader_state = loader.state_dict() if hasattr(loader, "state_dict") else None
        self.rng = get_rng_state()
        self.training = model.training

    def restore(self) -> None:
        self.model.load_state_dict(self.model_state)
        self.optimizer.load_state_dict(self.optimizer_state)
        self.optimizer.zero_grad(set_to_none=True)
        if self.loader_state is not None:
            self.loader.load_state_dict(self.loader_state)
        set_rng_state(self.rng)
        self.model.train(self.training)


def _step(model: nn.Module, optimizer: torch.optim.Optimizer, loader: Any,
          loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], device: torch.device) -> float:
    """One optimizer step on the loader's next batch (a new epoch when the last one is used up)."""
    if loader.batch_index >= len(loader):
        loader.start_next_epoch()
    x, y = loader.next_batch()
    loss = loss_fn(model(x.to(device)), y.to(device))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def _sweep(model: nn.Module, optimizer: torch.optim.Optimizer, loader: Any,
           loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], start_lr: float, end_lr: float,
           num_steps: int, smooth: float, diverge: float, device: torch.device
           ) -> tuple[list[float], list[float], list[float], bool]:
    """(lrs, losses, smoothed losses, stopped early) of the exponential sweep (module docstring)."""
    # keep the groups' lr ratios: group g gets lr_i * base_g / base_0
    bases = [float(g["lr"]) for g in optimizer.param_groups]
    ratios = [b / bases[0] if bases[0] > 0 else 1.0 for b in bases]
    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    avg, best = 0.0, math.inf
    model.train()
    for i in range(num_steps):
        lr = start_lr * (end_lr / start_lr) ** (i / (num_steps - 1))
        for g, r in zip(optimizer.param_groups, ratios):
            g["lr"] = lr * r
        value = _step(model, optimizer, loader, loss_fn, device)
        avg = smooth * avg + (1.0 - smooth) * value
        sm = avg / (1.0 - smooth ** (i + 1))  # bias correction: a_i underestimates early on (a_{-1} = 0)
        lrs.append(lr)
        losses.append(value)
        smoothed.append(sm)
        if not math.isfinite(sm) or (i > 0 and sm > diverge * best):
            return lrs, losses, smoothed, True
        best = min(best, sm)
    return lrs, losses, smoothed, False


def lr_range_test(model: nn.Module, optimizer: torch.optim.Optimizer, loader: Any,
                  loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *, start_lr: float = 1e-7,
                  end_lr: float = 10.0, num_steps: int = 100, smooth: float = 0.98, diverge: float = 4.0,
                  device: torch.device | str = "cpu") -> dict[str, Any]:
    """Run the sweep on ``model`` / ``optimizer`` with batches from ``loader`` (the InMemoryLoader position
    API), then restore all of them. Returns lrs, raw and smoothed losses (up to the stop) and suggestions."""
    _check(start_lr, end_lr, num_steps, smooth, diverge)
    snapshot = _Snapshot(model, optimizer, loader)
    try:
        lrs, losses, smoothed, stopped = _sweep(model, optimizer, loader, loss_fn, start_lr, end_lr, num_steps,
                                                smooth, diverge, torch.device(device))
    finally:
        snapshot.restore()
    # the point that triggered the stop is past the divergence: suggest from the curve before it
    usable = len(smoothed) - 1 if stopped else len(smoothed)
    return {
        "lrs": lrs, "losses": losses, "smoothed": smoothed, "stopped_early": stopped,
        "suggestions": suggest(lrs[:usable], smoothed[:usable]),
        "start_lr": start_lr, "end_lr": end_lr, "num_steps": num_steps, "smooth": smooth, "diverge": diverge,
    }


def build_for_recipe(recipe: Recipe) -> tuple[nn.Module, torch.optim.Optimizer, Any, Any, torch.device]:
    """Model, optimizer, training loader, loss and device as ``tricklab.lab.runner.set_up`` builds them
    (one process)."""
    task = validate(recipe)
    device = torch.device(recipe.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {recipe.device!r} requested but CUDA is not available; use device=cpu")
    if recipe.threads is not None:
        torch.set_num_threads(recipe.threads)
    data = load_dataset(task.dataset, data_dir=recipe.data.data_dir, **task.dataset_args)
    if recipe.data.val_fraction > 0:
        data = data.with_validation(recipe.data.val_fraction, seed=recipe.seed)
    seed_everything(recipe.seed, recipe.deterministic)
    model = build_model(recipe.model.name, data.input_shape, data.num_classes, **recipe.model.args).to(device)
    optimizer = create_optimizer(recipe.optimizer.name, model, lr=recipe.optimizer.lr,
                                 weight_decay=recipe.optimizer.weight_decay, **recipe.optimizer.args)
    loader = InMemoryLoader(data.x_train, data.y_train, recipe.batch_size, seed=recipe.seed)
    return model, optimizer, loader, task.loss, device


def _plot(result: dict[str, Any], out_dir: Path) -> list[Path]:
    matplotlib_or_hint("the learning-rate range test")  # headless Agg, or the install hint
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    ax.plot(result["lrs"], result["losses"], color="#bbbbbb", lw=0.8, label="batch loss")
    ax.plot(result["lrs"], result["smoothed"], color="#1f5fa8", lw=1.8, label="smoothed loss")
    marks = {"steepest": ("#d62728", "v"), "valley": ("#2ca02c", "o"), "min_div10": ("#9467bd", "s")}
    for key, lr in result["suggestions"].items():
        if lr is None:
            continue
        i = int(np.argmin(np.abs(np.log(result["lrs"]) - math.log(lr))))
        color, marker = marks[key]
        ax.plot([lr], [result["smoothed"][i]], marker=marker, color=color, ms=8, ls="none",
                label=f"{key}: {lr:.2e}")
    finite = [v for v in result["smoothed"] if math.isfinite(v)]
    if finite:  # keep the diverged tail from squashing the curve
        lo, hi = min(finite), min(max(finite), 4 * result["diverge"] * min(finite))
        ax.set_ylim(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo) + 1e-12)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title("learning-rate range test")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths = [out_dir / "lr_find.png", out_dir / "lr_find.svg"]
    for p in paths:
        fig.savefig(p)
    plt.close(fig)
    return paths


def _json_safe(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None  # strict JSON has no inf / nan
    if isinstance(v, list):
        return [_json_safe(x) for x in v]
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    return v


def lr_find(recipe: Recipe, out_dir: str | Path, start_lr: float = 1e-7, end_lr: float = 10.0,
            num_steps: int = 100, smooth: float = 0.98, diverge: float = 4.0) -> dict[str, Any]:
    """Range test on the recipe's model, optimizer and training data; writes ``lr_find.json``,
    ``lr_find.png`` and ``lr_find.svg`` into ``out_dir`` and returns the result (see :func:`lr_range_test`)."""
    _check(start_lr, end_lr, num_steps, smooth, diverge)
    model, optimizer, loader, loss_fn, device = build_for_recipe(recipe)
    result = lr_range_test(model, optimizer, loader, loss_fn, start_lr=start_lr, end_lr=end_lr,
                           num_steps=num_steps, smooth=smooth, diverge=diverge, device=device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result["recipe"] = recipe.to_dict()
    result["recipe_hash"] = recipe.hash()
    result["files"] = [str(p) for p in _plot(result, out)]
    atomic_write_text(out / "lr_find.json", json.dumps(_json_safe(result), indent=2))
    return result
