"""The 10-armed bandit testbed (Sutton & Barto 2018, section 2.3) as a task with its own loop: the worked
example of a :class:`~tricklab.lab.tasks.LoopTask` (``docs/task-kinds.md``).

Each of ``runs`` independent problems draws true action values ``q*(a) ~ N(0, 1)`` for ``arms`` arms; at every
step an epsilon-greedy agent pulls the arm with the largest estimate ``Q(a)`` (ties broken at random) or, with
probability ``epsilon``, a uniformly random arm, receives ``R ~ N(q*(a), 1)`` and updates the sample average
``Q(a) += (R - Q(a)) / N(a)`` (eq. 2.3). The runs are simulated together as arrays. Sutton & Barto's Figure
2.2 (2000 runs, 1000 steps): epsilon 0.1 reaches an average reward near 1.4 and picks the optimal arm about 80%
of the time by step 1000; the greedy agent (epsilon 0) stays near 1.0 and about a third.

Reported: ``mean_reward`` (per step, all steps and runs), ``optimal_action`` (the fraction of steps that pulled
the best arm) and ``regret`` (the mean of ``max_a q*(a) - q*(A_t)``, lower is better).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tricklab.errors import ConfigError
from tricklab.lab.metrics import RUN_METRICS, MetricInfo

__all__ = ["BANDIT_METRICS", "BanditConfig", "BanditResult", "run_bandit"]

BANDIT_METRICS: tuple[MetricInfo, ...] = (
    MetricInfo("mean_reward", "Mean reward per step", True),
    MetricInfo("optimal_action", "Optimal-action rate", True),
    MetricInfo("regret", "Mean regret per step", False),
    *(m for m in RUN_METRICS if m.key == "train_seconds"),
)


@dataclass
class BanditConfig:
    """The testbed and the agent: ``arms``, ``steps`` per run, ``runs`` independent problems averaged,
    ``epsilon`` (exploration probability), ``initial_value`` (Q_1 of every arm; 5 with epsilon 0 is the
    optimistic agent of section 2.6), ``log_every`` (steps per history row)."""

    arms: int = 10
    steps: int = 1000
    runs: int = 200
    epsilon: float = 0.1
    initial_value: float = 0.0
    log_every: int = 50

    def __post_init__(self) -> None:
        for name, low in (("arms", 2), ("steps", 1), ("runs", 1), ("log_every", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ConfigError(f"task_args.{name} must be an integer >= {low}, got {v!r}")
        if isinstance(self.epsilon, bool) or not 0.0 <= float(self.epsilon) <= 1.0:
            raise ConfigError(f"task_args.epsilon must be a probability in [0, 1], got {self.epsilon!r}")


@dataclass
class BanditResult:
    """Final metrics, history rows (``step``, ``seconds`` and the window's metrics) and extras."""

    metrics: dict[str, float]
    history: list[dict[str, Any]]
    extras: dict[str, Any] = field(default_factory=dict)


def _window_row(step: int, start: float, rewards: list[np.ndarray], optimal: list[np.ndarray]) -> dict[str, Any]:
    return {"step": step, "seconds": round(time.perf_counter() - start, 6),
            "mean_reward": float(np.mean(rewards)), "optimal_action": float(np.mean(optimal))}


def run_bandit(config: BanditConfig, *, seed: int, run_dir: Path | None = None,
               progress: Callable[[dict[str, Any]], None] | None = None) -> BanditResult:
    """Simulate ``config.runs`` epsilon-greedy agents for ``config.steps`` steps (seeded with ``seed``)."""
    rng = np.random.default_rng(seed)
    n, k = config.runs, config.arms
    q_true = rng.normal(0.0, 1.0, (n, k))
    best = q_true.argmax(axis=1)
    q_est = np.full((n, k), float(config.initial_value))
    pulls = np.zeros((n, k))
    rows = np.arange(n)
    total_reward = total_optimal = total_regret = 0.0
    history: list[dict[str, Any]] = []
    win_r: list[np.ndarray] = []
    win_o: list[np.ndarray] = []
    start = time.perf_counter()
    for t in range(1, config.steps + 1):
        ties = rng.random((n, k))
        ties[q_est < q_est.max(axis=1, keepdims=True)] = -1.0  # random choice among the maximal estimates
        action = np.where(rng.random(n) < config.epsilon, rng.integers(0, k, n), ties.argmax(axis=1))
        reward = rng.normal(q_true[rows, action], 1.0)
        pulls[rows, action] += 1
        q_est[rows, action] += (reward - q_est[rows, action]) / pulls[rows, action]
        optimal = (action == best).astype(float)
        total_reward += reward.sum()
        total_optimal += optimal.sum()
        total_regret += (q_true[rows, best] - q_true[rows, action]).sum()
        win_r.append(reward)
        win_o.append(optimal)
        if t % config.log_every == 0 or t == config.steps:
            history.append(_window_row(t, start, win_r, win_o))
            win_r, win_o = [], []
            if progress is not None:
                progress(history[-1])
    count = n * config.steps
    metrics = {"mean_reward": float(total_reward / count), "optimal_action": float(total_optimal / count),
               "regret": float(total_regret / count)}
    return BanditResult(metrics, history, {"arms": k, "runs": n, "steps": config.steps})
