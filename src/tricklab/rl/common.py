"""What every RL run loop shares: seeds, RNG state capture, checkpoints, the evaluation schedule, progress.

Seeds: from the run seed s, the training envs are reset with ``train_env_seed(s) + i``, the evaluation envs with
``eval_env_seed(s) + episode`` (the same episodes at every evaluation, so a learning curve compares like with
like), network initialization uses ``torch.manual_seed(s)`` inside a forked RNG, and sampling (actions, minibatch
order, replay draws, noise) uses the run's own ``torch.Generator`` / ``np.random.Generator``. No global RNG is
read or moved, so two runs in one process do not disturb each other.

Checkpoints go to ``run_dir/checkpoints`` through :mod:`tricklab.train.checkpoint` (safetensors + JSON, atomic,
checksummed); resuming refuses a checkpoint written with a different configuration, except for the budget.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tricklab.errors import ConfigError
from tricklab.rl.envs import EpisodeTracker, evaluate
from tricklab.train.checkpoint import load_latest, save_checkpoint

Progress = Callable[[dict[str, Any]], None]

#: fields a resumed run may change: the budget and how often it checkpoints
RESUMABLE_CHANGES = frozenset({"total_steps", "checkpoint_every", "self_play_games"})


def train_env_seed(seed: int) -> int:
    return seed * 1000


def eval_env_seed(seed: int) -> int:
    return 1_000_000 + seed * 1000


def numpy_rng_state(rng: np.random.Generator) -> dict[str, Any]:
    return rng.bit_generator.state


def numpy_rng_from_state(state: dict[str, Any]) -> np.random.Generator:
    rng = np.random.Generator(np.random.PCG64())
    rng.bit_generator.state = state
    return rng


def checkpoint_dir(run_dir: Path | None) -> Path | None:
    return None if run_dir is None else Path(run_dir) / "checkpoints"


def save_run_checkpoint(run_dir: Path, step: int, config: Any, state: dict[str, Any]) -> Path:
    """Write ``state`` (with the config it belongs to) as checkpoint ``step``; keeps the newest two."""
    payload = {"config": dataclasses.asdict(config), "state": state}
    return save_checkpoint(checkpoint_dir(run_dir), step, payload, keep_last=2)


def load_run_checkpoint(run_dir: Path | None, config: Any) -> dict[str, Any] | None:
    """The newest verified checkpoint's state, or None when there is none; refuses a different config."""
    folder = checkpoint_dir(run_dir)
    if folder is None:
        return None
    found = load_latest(folder)
    if found is None:
        return None
    path, payload = found
    saved, now = payload["config"], _jsonable(dataclasses.asdict(config))
    saved = _jsonable(saved)
    changed = sorted(k for k in set(saved) | set(now) if k not in RESUMABLE_CHANGES and saved.get(k) != now.get(k))
    if changed:
        diffs = "; ".join(f"{k}: checkpoint {saved.get(k)!r}, now {now.get(k)!r}" for k in changed)
        raise ConfigError(f"cannot resume from {path}: the configuration changed ({diffs}). Resume with the same "
                          f"configuration (only {', '.join(sorted(RESUMABLE_CHANGES))} may change), or start a "
                          f"new run_dir.")
    return payload["state"]


def _jsonable(d: Any) -> Any:
    # tuples and lists compare equal after a JSON round trip
    if isinstance(d, dict):
        return {k: _jsonable(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [_jsonable(v) for v in d]
    return d


def print_progress(prefix: str = "") -> Progress:
    """A progress callback that prints one compact line per report to stderr."""

    def show(row: dict[str, Any]) -> None:
        parts = []
        for k, v in row.items():
            if isinstance(v, float):
                parts.append(f"{k}={v:.4g}" if math.isfinite(v) else f"{k}={v}")
            else:
                parts.append(f"{k}={v}")
        print(prefix + " ".join(parts), file=sys.stderr, flush=True)

    return show


def mean_or_nan(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def check_positive(name: str, value: float, *, integer: bool = False, allow_zero: bool = False) -> None:
    ok = (value >= 0) if allow_zero else (value > 0)
    if integer and (not isinstance(value, int) or isinstance(value, bool)):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if not ok or (isinstance(value, float) and not math.isfinite(value)):
        raise ConfigError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")


def check_unit(name: str, value: float, *, closed: bool = True) -> None:
    ok = (0.0 <= value <= 1.0) if closed else (0.0 < value < 1.0)
    if not ok:
        raise ConfigError(f"{name} must be in {'[0, 1]' if closed else '(0, 1)'}, got {value!r}")


class EvalSchedule:
    """Evaluate when the step count crosses each multiple of ``every`` (and always at the end)."""

    def __init__(self, every: int, episodes: int, seed: int, env_id: str) -> None:
        self.every, self.episodes, self.seed, self.env_id = every, episodes, eval_env_seed(seed), env_id
        self.next = every if every > 0 else None
        self.returns: list[float] = []  # the mean of each evaluation so far
        self.seconds = 0.0

    def due(self, steps: int) -> bool:
        return self.next is not None and steps >= self.next

    def run(self, policy: Callable[[np.ndarray], np.ndarray], steps: int) -> float:
        t0 = time.perf_counter()
        value = float(np.mean(evaluate(policy, self.env_id, self.episodes, self.seed)))
        self.seconds += time.perf_counter() - t0
        self.returns.append(value)
        if self.next is not None:
            while self.next <= steps:
                self.next += self.every
        return value

    def state_dict(self) -> dict[str, Any]:
        return {"next": self.next, "returns": list(self.returns)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.next = state["next"]
        self.returns = [float(x) for x in state["returns"]]


def episode_metrics(final_return: float, schedule: EvalSchedule, tracker: EpisodeTracker, steps: int,
                    train_seconds: float) -> dict[str, float]:
    return {
        "episode_return": final_return,
        "mean_eval_return": mean_or_nan(schedule.returns),
        "train_return": tracker.recent_mean(100),
        "env_steps": float(steps),
        "episodes": float(len(tracker.finished_returns)),
        "train_seconds": train_seconds,
        "seconds_per_100k_steps": train_seconds / max(steps, 1) * 100_000,
    }
