"""Running statistics for observation and reward normalization (float64, exact batch merging).

``RunningMeanStd`` merges a batch's moments into the running ones with Chan et al.'s parallel formula:

    delta = mean_b - mean,  n' = n + n_b,
    mean' = mean + delta * n_b / n',
    M2'   = M2 + M2_b + delta^2 * n * n_b / n'       (var = M2 / n)

so the result equals the mean and (population) variance of everything seen, whatever the batch sizes.

Observation normalization: x -> clip((x - mean) / sqrt(var + eps), -clip, clip), statistics updated from the
observations the agent collects (never from evaluation episodes).

Reward scaling (Engstrom et al. 2020, "Implementation Matters"): keep each env's discounted return
R_t = gamma * R_{t-1} + r_t (reset at episode ends), track its variance, and divide rewards by its standard
deviation, r -> clip(r / sqrt(var(R) + eps)). No mean is subtracted: shifting rewards changes what an agent that
can end its episode prefers.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class RunningMeanStd:
    """Mean and population variance of every sample seen so far, per feature."""

    def __init__(self, shape: tuple[int, ...] = ()) -> None:
        self.mean = np.zeros(shape, dtype=np.float64)
        self.var = np.ones(shape, dtype=np.float64)
        self.count = 0.0

    def update(self, batch: np.ndarray) -> None:
        """Merge a batch [n, *shape] into the running moments."""
        batch = np.asarray(batch, dtype=np.float64).reshape(-1, *self.mean.shape)
        n_b = batch.shape[0]
        if n_b == 0:
            return
        mean_b = batch.mean(axis=0)
        var_b = batch.var(axis=0)
        if self.count == 0:
            self.mean, self.var, self.count = mean_b, var_b, float(n_b)
            return
        n = self.count
        total = n + n_b
        delta = mean_b - self.mean
        m2 = self.var * n + var_b * n_b + delta**2 * n * n_b / total
        self.mean = self.mean + delta * n_b / total
        self.var = m2 / total
        self.count = total

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.copy(), "var": self.var.copy(), "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mean = np.asarray(state["mean"], dtype=np.float64).copy()
        self.var = np.asarray(state["var"], dtype=np.float64).copy()
        self.count = float(state["count"])


class ObservationNormalizer:
    """(x - mean) / sqrt(var + eps), clipped; ``enabled=False`` passes observations through (as float32)."""

    def __init__(self, shape: tuple[int, ...], enabled: bool = True, clip: float = 10.0, eps: float = 1e-8) -> None:
        self.enabled = enabled
        self.clip = clip
        self.eps = eps
        self.stats = RunningMeanStd(shape)

    def update(self, obs: np.ndarray) -> None:
        if self.enabled:
            self.stats.update(obs)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        if not self.enabled:
            return np.asarray(obs, dtype=np.float32)
        out = (np.asarray(obs, dtype=np.float64) - self.stats.mean) / np.sqrt(self.stats.var + self.eps)
        return np.clip(out, -self.clip, self.clip).astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        return self.stats.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stats.load_state_dict(state)


class RewardScaler:
    """Divide rewards by the running standard deviation of each env's discounted return."""

    def __init__(self, num_envs: int, gamma: float, enabled: bool = True, clip: float = 10.0,
                 eps: float = 1e-8) -> None:
        self.enabled = enabled
        self.gamma = gamma
        self.clip = clip
        self.eps = eps
        self.stats = RunningMeanStd(())
        self.returns = np.zeros(num_envs, dtype=np.float64)

    def __call__(self, rewards: np.ndarray, dones: np.ndarray) -> np.ndarray:
        """Scale one step's rewards [num_envs] (updating the statistics); ``dones`` end the discounted sums."""
        rewards = np.asarray(rewards, dtype=np.float64)
        if not self.enabled:
            return rewards.astype(np.float32)
        self.returns = self.returns * self.gamma + rewards
        self.stats.update(self.returns)
        self.returns[np.asarray(dones, dtype=bool)] = 0.0
        out = rewards / np.sqrt(self.stats.var + self.eps)
        return np.clip(out, -self.clip, self.clip).astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        return {"stats": self.stats.state_dict(), "returns": self.returns.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stats.load_state_dict(state["stats"])
        self.returns = np.asarray(state["returns"], dtype=np.float64).copy()
