"""Replay buffers: uniform, prioritized (sum tree), and an n-step accumulator that feeds either.

A transition is (s, a, r, s', discount) with ``discount = gamma^m * (1 - terminated)`` for an m-step reward
sum r; the learner's target is r + discount * V(s'). Storing the discount makes 1-step and n-step transitions,
terminations and time-limit truncations one format.

Prioritized replay (Schaul et al. 2016): transition i is drawn with probability P(i) = p_i^alpha / sum_k p_k^alpha
and weighted by w_i = (N * P(i))^-beta / max_k w_k (the max over the buffer: the smallest priority), where p_i is
the last |TD error| (+ eps) and new transitions get the largest priority seen so far. A sum tree keeps the
prefix sums so drawing and updating cost O(log N); here both are vectorized over the batch (one NumPy step per
tree level).

Every buffer has ``state_dict`` / ``load_state_dict`` with its contents, so a checkpoint resumes exactly.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
import torch

_FIELDS = ("obs", "actions", "rewards", "next_obs", "discounts")


class ReplayBuffer:
    """Ring buffer of transitions; arrays are allocated at the first ``add`` from the shapes seen."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.pos = 0
        self.size = 0
        self.data: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return self.size

    def _allocate(self, obs: np.ndarray, actions: np.ndarray) -> None:
        self.data = {
            "obs": np.zeros((self.capacity, *obs.shape[1:]), dtype=np.float32),
            "next_obs": np.zeros((self.capacity, *obs.shape[1:]), dtype=np.float32),
            "actions": np.zeros((self.capacity, *actions.shape[1:]), dtype=actions.dtype),
            "rewards": np.zeros(self.capacity, dtype=np.float32),
            "discounts": np.zeros(self.capacity, dtype=np.float32),
        }

    def add(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, next_obs: np.ndarray,
            discounts: np.ndarray) -> np.ndarray:
        """Add a batch of transitions (leading dimension B); returns the slots they went to."""
        obs = np.asarray(obs)
        actions = np.asarray(actions)
        if not self.data:
            self._allocate(obs, actions)
        n = obs.shape[0]
        idx = (self.pos + np.arange(n)) % self.capacity
        self.data["obs"][idx] = obs
        self.data["next_obs"][idx] = next_obs
        self.data["actions"][idx] = actions
        self.data["rewards"][idx] = rewards
        self.data["discounts"][idx] = discounts
        self.pos = int((self.pos + n) % self.capacity)
        self.size = int(min(self.size + n, self.capacity))
        return idx

    def get(self, idx: np.ndarray) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(self.data[k][idx]) for k in _FIELDS}

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, Any]:
        """Uniform draw with replacement; ``weights`` are ones so the learner needs no branch."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        idx = rng.integers(0, self.size, size=batch_size)
        out: dict[str, Any] = self.get(idx)
        out["indices"] = idx
        out["weights"] = torch.ones(batch_size)
        return out

    def state_dict(self) -> dict[str, Any]:
        # only the filled part: an almost empty 1M-slot buffer stays small on disk
        return {"capacity": self.capacity, "pos": self.pos, "size": self.size,
                "data": {k: v[: self.size].copy() for k, v in self.data.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["capacity"]) != self.capacity:
            raise ValueError(f"checkpoint buffer capacity {state['capacity']} != {self.capacity}")
        self.pos, self.size = int(state["pos"]), int(state["size"])
        self.data = {}
        if state["data"]:
            for k, v in state["data"].items():
                arr = np.zeros((self.capacity, *v.shape[1:]), dtype=v.dtype)
                arr[: self.size] = v
                self.data[k] = arr


class SumTree:
    """A complete binary tree over ``capacity`` leaves (rounded up to a power of two) holding prefix sums.

    Node 1 is the root; node i has children 2i and 2i+1; leaf j is node ``leaves + j``."""

    def __init__(self, capacity: int) -> None:
        self.capacity = int(capacity)
        self.leaves = 1 << max(0, (self.capacity - 1).bit_length())
        self.depth = self.leaves.bit_length() - 1
        self.tree = np.zeros(2 * self.leaves, dtype=np.float64)

    @property
    def total(self) -> float:
        return float(self.tree[1])

    def get(self, idx: np.ndarray) -> np.ndarray:
        return self.tree[self.leaves + np.asarray(idx)]

    def update(self, idx: np.ndarray, values: np.ndarray) -> None:
        """Set leaves ``idx`` to ``values`` (later duplicates win) and recompute their ancestors exactly."""
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.capacity):
            raise IndexError(f"sum tree index out of range [0, {self.capacity})")
        if np.any(values < 0) or not np.all(np.isfinite(values)):
            raise ValueError("sum tree values must be finite and >= 0")
        if idx.size == 0:
            return
        nodes = self.leaves + idx
        self.tree[nodes] = values
        # each parent is recomputed from its two children (not incremented), so no rounding drift builds up;
        # a parent listed twice gets the same value twice, which is harmless (and cheaper than np.unique)
        for _ in range(self.depth):
            nodes = nodes // 2
            self.tree[nodes] = self.tree[2 * nodes] + self.tree[2 * nodes + 1]

    def find(self, prefix: np.ndarray) -> np.ndarray:
        """Leaf index j of each prefix value v in [0, total): sum(leaves[:j]) <= v < sum(leaves[:j+1])."""
        v = np.asarray(prefix, dtype=np.float64).copy()
        nodes = np.ones(v.shape, dtype=np.int64)
        for _ in range(self.depth):
            left = 2 * nodes
            left_sum = self.tree[left]
            right = v >= left_sum
            v = np.where(right, v - left_sum, v)
            nodes = np.where(right, left + 1, left)
        leaf = nodes - self.leaves
        # rounding can step past the last non-empty leaf when v is within an ulp of the total
        return np.minimum(leaf, self.capacity - 1)

    def state_dict(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "tree": self.tree.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["capacity"]) != self.capacity:
            raise ValueError(f"checkpoint sum tree capacity {state['capacity']} != {self.capacity}")
        self.tree = np.asarray(state["tree"], dtype=np.float64).copy()


class PrioritizedReplayBuffer(ReplayBuffer):
    """Proportional prioritized replay: P(i) = p_i^alpha / sum p^alpha, IS weights normalized by the max."""

    def __init__(self, capacity: int, alpha: float = 0.6, eps: float = 1e-6) -> None:
        super().__init__(capacity)
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        self.alpha = float(alpha)
        self.eps = float(eps)
        self.tree = SumTree(capacity)
        self.max_priority = 1.0  # raw |delta| scale; new transitions get max_priority^alpha

    def add(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, next_obs: np.ndarray,
            discounts: np.ndarray) -> np.ndarray:
        idx = super().add(obs, actions, rewards, next_obs, discounts)
        self.tree.update(idx, np.full(idx.shape, self.max_priority**self.alpha))
        return idx

    def sample(self, batch_size: int, rng: np.random.Generator, beta: float = 0.4,
               stratified: bool = True) -> dict[str, Any]:
        """Draw ``batch_size`` transitions with P(i) proportional to priority.

        ``stratified`` splits [0, total) into equal segments and draws one value in each (lower variance, the
        same marginal probabilities); otherwise the values are independent uniforms."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        total = self.tree.total
        if stratified:
            u = (np.arange(batch_size) + rng.random(batch_size)) / batch_size
        else:
            u = rng.random(batch_size)
        idx = self.tree.find(u * total)
        probs = self.tree.get(idx) / total
        p_min = self.tree.tree[self.tree.leaves: self.tree.leaves + self.size].min() / total
        # w_i / max_k w_k = (N P(i))^-beta / (N P_min)^-beta = (P(i) / P_min)^-beta
        weights = (probs / p_min) ** (-beta)
        out: dict[str, Any] = self.get(idx)
        out["indices"] = idx
        out["weights"] = torch.from_numpy(weights.astype(np.float32))
        return out

    def update_priorities(self, idx: np.ndarray, td_errors: np.ndarray) -> None:
        """p_i = |delta_i| + eps, stored as p_i^alpha; keeps the running max for new transitions."""
        p = np.abs(np.asarray(td_errors, dtype=np.float64)) + self.eps
        self.max_priority = max(self.max_priority, float(p.max()))
        self.tree.update(idx, p**self.alpha)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update({"tree": self.tree.state_dict(), "max_priority": self.max_priority})
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.tree.load_state_dict(state["tree"])
        self.max_priority = float(state["max_priority"])


class NStepAccumulator:
    """Turns each env's stream of 1-step transitions into n-step ones (Sutton & Barto 7.1).

    ``push`` takes one vector-env step and returns the n-step transitions that became complete: the oldest
    pending step of each env once it has n rewards behind it, and every pending step of an env whose episode
    just ended (with the shorter sum, and discount 0 after a termination, gamma^m after a truncation)."""

    def __init__(self, num_envs: int, n: int, gamma: float) -> None:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        self.n, self.gamma, self.num_envs = n, gamma, num_envs
        self.pending: list[deque[tuple[np.ndarray, np.ndarray, float]]] = [deque() for _ in range(num_envs)]

    def _emit(self, env: int, next_obs: np.ndarray, terminated: bool, out: list[tuple]) -> None:
        obs0, act0, _ = self.pending[env][0]
        g, disc = 0.0, 1.0
        for _, _, r in self.pending[env]:
            g += disc * r
            disc *= self.gamma
        out.append((obs0, act0, g, next_obs, 0.0 if terminated else disc))
        self.pending[env].popleft()

    def push(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, next_obs: np.ndarray,
             terminated: np.ndarray, truncated: np.ndarray) -> dict[str, np.ndarray] | None:
        """One step of every env; ``next_obs`` must be the true s_{t+1} (final observation at an episode end)."""
        out: list[tuple] = []
        for i in range(self.num_envs):
            self.pending[i].append((np.array(obs[i], copy=True), np.array(actions[i], copy=True),
                                    float(rewards[i])))
            if terminated[i] or truncated[i]:
                while self.pending[i]:
                    self._emit(i, next_obs[i], bool(terminated[i]), out)
            elif len(self.pending[i]) == self.n:
                self._emit(i, next_obs[i], False, out)
        if not out:
            return None
        return {
            "obs": np.stack([t[0] for t in out]),
            "actions": np.stack([t[1] for t in out]),
            "rewards": np.array([t[2] for t in out], dtype=np.float32),
            "next_obs": np.stack([t[3] for t in out]),
            "discounts": np.array([t[4] for t in out], dtype=np.float32),
        }

    def state_dict(self) -> dict[str, Any]:
        return {"pending": [[[o, a, r] for o, a, r in q] for q in self.pending]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pending = [deque((np.asarray(o), np.asarray(a), float(r)) for o, a, r in q) for q in state["pending"]]
