"""Learning from preferences (Christiano et al. 2017): a reward model trained from pairwise comparisons of
trajectory segments, and PPO on the learned reward.

Bradley-Terry model (eq. 1): with r_hat the model's per-step reward and sigma^i a segment,

    P[sigma^1 > sigma^2] = exp(R_hat^1) / (exp(R_hat^1) + exp(R_hat^2)) = sigmoid(R_hat^1 - R_hat^2),
    R_hat^i = sum_t r_hat(s^i_t, a^i_t),

fitted by the cross-entropy to the label mu = P(1 preferred) in {0, 1/2, 1} (eq. 2):

    loss = -mu log sigmoid(R_hat^1 - R_hat^2) - (1 - mu) log sigmoid(R_hat^2 - R_hat^1).

Labels come from a synthetic labeller that compares the segments' true returns (1/2 for a tie), optionally noisy:
with probability ``label_noise`` the answer is uniformly random (the error model of Christiano et al.). The
labeller is the only place the true reward enters training; it is also what every run is measured by.

Segments are ``segment_length`` consecutive steps of one env from the latest rollout. A segment may end early at
a termination (the episode is over: no more reward, so the sum runs over the steps that happened); a segment that
would cross a time-limit truncation or the end of the rollout is not used, because what follows is unknown.

Each PPO iteration: collect a rollout with the current r_hat as its reward; label new pairs from it (``initial_labels``
the first time, then ``labels_per_iteration``, until ``total_labels``); train the reward model; recompute that
rollout's rewards and advantages with the updated model; update PPO. Rewards reach PPO through its running reward
scaling (``norm_reward``), since the learned reward's scale is arbitrary.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from tricklab.errors import ConfigError
from tricklab.rl.common import (EvalSchedule, Progress, check_positive, check_unit, episode_metrics,
                                load_run_checkpoint, numpy_rng_from_state, numpy_rng_state, save_run_checkpoint)
from tricklab.rl.envs import env_spaces, is_discrete
from tricklab.rl.metrics import ParadigmResult
from tricklab.rl.networks import check_hidden, mlp, seeded
from tricklab.rl.ppo import PPO, PPOConfig

LABELLERS = ("perfect", "noisy")


def bradley_terry_loss(returns_1: torch.Tensor, returns_2: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy between the label mu = P(segment 1 preferred) and sigmoid(R_hat^1 - R_hat^2)."""
    return F.binary_cross_entropy_with_logits(returns_1 - returns_2, mu)


def synthetic_labels(true_1: np.ndarray, true_2: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """mu = 1 if segment 1's true return is higher, 0 if lower, 1/2 if equal; with probability ``noise`` a
    uniformly random 0 or 1 instead."""
    mu = np.where(true_1 > true_2, 1.0, np.where(true_1 < true_2, 0.0, 0.5))
    if noise > 0:
        flip = rng.random(len(mu)) < noise
        mu = np.where(flip, rng.integers(0, 2, size=len(mu)).astype(np.float64), mu)
    return mu.astype(np.float32)


class RewardModel(nn.Module):
    """r_hat(s, a): an MLP on the observation and the action (one-hot when discrete)."""

    def __init__(self, obs_dim: int, action_space: Any, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.discrete = is_discrete(action_space)
        self.n_act = int(action_space.n) if self.discrete else int(np.prod(action_space.shape))
        self.net = mlp(obs_dim + self.n_act, hidden, 1, "relu")

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        a = F.one_hot(actions.long(), self.n_act).to(obs.dtype) if self.discrete else actions.to(obs.dtype)
        return self.net(torch.cat([obs, a], -1)).squeeze(-1)

    def segment_returns(self, obs: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """sum_t mask_t r_hat(s_t, a_t) over [..., T] segments."""
        return (self(obs, actions) * mask).sum(-1)


def sample_segments(rollout: dict[str, Any], count: int, length: int, rng: np.random.Generator,
                    max_tries: int = 20) -> dict[str, np.ndarray]:
    """Up to ``count`` segments of at most ``length`` steps from a rollout's raw arrays [T, N, ...]."""
    obs, actions, rewards = rollout["raw_obs"], rollout["env_actions"], rollout["true_rewards"]
    term, done = rollout["terminated"], rollout["dones"]
    T, N = rewards.shape
    out_obs = np.zeros((count, length, *obs.shape[2:]), dtype=np.float32)
    out_act = np.zeros((count, length, *actions.shape[2:]), dtype=actions.dtype)
    out_mask = np.zeros((count, length), dtype=np.float32)
    out_ret = np.zeros(count)
    got = 0
    for _ in range(count * max_tries):
        if got == count:
            break
        t0, i = int(rng.integers(0, T)), int(rng.integers(0, N))
        steps = 0
        ok = False
        for t in range(t0, min(t0 + length, T)):
            steps += 1
            if done[t, i]:
                ok = bool(term[t, i])  # ended by a termination: a complete segment; by truncation: unusable
                break
        else:
            ok = steps == length  # full length inside the rollout
        if not ok:
            continue
        sl = slice(t0, t0 + steps)
        out_obs[got, :steps] = obs[sl, i]
        out_act[got, :steps] = actions[sl, i]
        out_mask[got, :steps] = 1.0
        out_ret[got] = rewards[sl, i].sum()
        got += 1
    return {"obs": out_obs[:got], "actions": out_act[:got], "mask": out_mask[:got], "returns": out_ret[:got]}


@dataclass
class PreferenceConfig:
    """PPO (``ppo``: its env, budget and evaluation settings) on a reward learned from ``total_labels``
    synthetic preferences."""

    ppo: PPOConfig = field(default_factory=lambda: PPOConfig(norm_reward=True))
    labeller: str = "perfect"
    label_noise: float = 0.1
    segment_length: int = 25
    total_labels: int = 1_000
    initial_labels: int = 200
    labels_per_iteration: int = 50
    heldout_pairs: int = 50
    hidden: tuple[int, ...] = (64, 64)
    reward_lr: float = 1e-3
    reward_weight_decay: float = 1e-5
    reward_steps: int = 200
    reward_batch: int = 64
    checkpoint_every: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.ppo, dict):
            self.ppo = PPOConfig(**self.ppo)
        if self.labeller not in LABELLERS:
            raise ConfigError(f"labeller={self.labeller!r} is unknown; choose one of {', '.join(LABELLERS)}")
        check_unit("label_noise", self.label_noise)
        for name in ("segment_length", "total_labels", "initial_labels", "reward_steps", "reward_batch"):
            check_positive(name, getattr(self, name), integer=True)
        for name in ("labels_per_iteration", "heldout_pairs", "checkpoint_every"):
            check_positive(name, getattr(self, name), integer=True, allow_zero=True)
        if self.initial_labels > self.total_labels:
            raise ConfigError(f"initial_labels={self.initial_labels} exceeds total_labels={self.total_labels}")
        check_positive("reward_lr", self.reward_lr)
        check_positive("reward_weight_decay", self.reward_weight_decay, allow_zero=True)
        self.hidden = tuple(self.hidden)
        check_hidden(self.hidden, "hidden")
        if self.segment_length > self.ppo.n_steps:
            raise ConfigError(f"segment_length={self.segment_length} exceeds the rollout length ppo.n_steps="
                              f"{self.ppo.n_steps}: segments come from one rollout")


class PreferenceLearner:
    def __init__(self, config: PreferenceConfig, seed: int) -> None:
        self.config = c = config
        obs_space, act_space = env_spaces(c.ppo.env_id)
        with seeded(seed + 1):
            self.model = RewardModel(int(np.prod(obs_space.shape)), act_space, c.hidden)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=c.reward_lr, weight_decay=c.reward_weight_decay,
                                     foreach=True)
        self.rng = np.random.default_rng(seed + 31337)
        self.gen = torch.Generator().manual_seed(seed + 4242)
        self.noise = c.label_noise if c.labeller == "noisy" else 0.0
        self.pairs: dict[str, np.ndarray] = {}
        self.heldout: dict[str, np.ndarray] = {}
        self.labels = 0

    def reward(self, obs: np.ndarray, actions: np.ndarray, next_obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.model(torch.as_tensor(obs, dtype=torch.float32), torch.as_tensor(actions)).numpy()

    def _pairs(self, rollout: dict[str, Any], n: int) -> dict[str, np.ndarray]:
        seg = sample_segments(rollout, 2 * n, self.config.segment_length, self.rng)
        m = len(seg["returns"]) // 2
        split = {k: v[: 2 * m].reshape(m, 2, *v.shape[1:]) for k, v in seg.items()}
        split["true_mu"] = synthetic_labels(split["returns"][:, 0], split["returns"][:, 1], 0.0, self.rng)
        return split

    def add_labels(self, rollout: dict[str, Any]) -> int:
        """Label new pairs from ``rollout`` (and held-out pairs for measuring); returns how many were added."""
        c = self.config
        want = c.initial_labels if self.labels == 0 else c.labels_per_iteration
        want = min(want, c.total_labels - self.labels)
        if want <= 0:
            return 0
        new = self._pairs(rollout, want)
        new["mu"] = synthetic_labels(new["returns"][:, 0], new["returns"][:, 1], self.noise, self.rng)
        self.pairs = new if not self.pairs else {k: np.concatenate([self.pairs[k], new[k]]) for k in new}
        self.labels += len(new["mu"])
        if c.heldout_pairs:
            held = self._pairs(rollout, max(1, c.heldout_pairs * want // c.total_labels))
            self.heldout = held if not self.heldout else {k: np.concatenate([self.heldout[k], held[k]]) for k in held}
        return len(new["mu"])

    def train(self) -> float:
        c = self.config
        n = len(self.pairs["mu"])
        losses = []
        for _ in range(c.reward_steps):
            idx = torch.randint(0, n, (min(c.reward_batch, n),), generator=self.gen).numpy()
            obs = torch.from_numpy(self.pairs["obs"][idx])
            act = torch.from_numpy(self.pairs["actions"][idx])
            mask = torch.from_numpy(self.pairs["mask"][idx])
            R = self.model.segment_returns(obs, act, mask)  # [B, 2]
            loss = bradley_terry_loss(R[:, 0], R[:, 1], torch.from_numpy(self.pairs["mu"][idx]))
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            losses.append(loss.item())
        return float(np.mean(losses))

    def accuracy(self) -> float:
        """How often the model orders held-out pairs as their true returns do (ties in the truth left out)."""
        if not self.heldout or len(self.heldout["true_mu"]) == 0:
            return float("nan")
        h = self.heldout
        with torch.no_grad():
            R = self.model.segment_returns(torch.from_numpy(h["obs"]), torch.from_numpy(h["actions"]),
                                           torch.from_numpy(h["mask"])).numpy()
        decided = h["true_mu"] != 0.5
        if not decided.any():
            return float("nan")
        return float(((R[:, 0] > R[:, 1]) == (h["true_mu"] == 1.0))[decided].mean())

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict(), "rng": numpy_rng_state(self.rng),
                "gen": self.gen.get_state(), "pairs": self.pairs, "heldout": self.heldout, "labels": self.labels}

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.model.load_state_dict(s["model"])
        self.opt.load_state_dict(s["opt"])
        self.rng = numpy_rng_from_state(s["rng"])
        self.gen.set_state(s["gen"])
        self.pairs, self.heldout, self.labels = dict(s["pairs"]), dict(s["heldout"]), int(s["labels"])


def run_preferences(config: PreferenceConfig, *, seed: int, run_dir: Path | None = None,
                    progress: Progress | None = None, resume: bool = False) -> ParadigmResult:
    """PPO on a reward model learned from synthetic preferences; metrics are in the env's true reward."""
    c, pc = config, config.ppo
    learner = PreferenceLearner(c, seed)
    agent = PPO(pc, seed, reward_fn=learner.reward)
    schedule = EvalSchedule(pc.eval_every, pc.eval_episodes, seed, pc.env_id)
    history: list[dict[str, Any]] = []
    train_seconds = 0.0
    if resume:
        state = load_run_checkpoint(run_dir, c)
        if state is not None:
            agent.load_state_dict(state["agent"])
            learner.load_state_dict(state["learner"])
            schedule.load_state_dict(state["schedule"])
            history, train_seconds = state["history"], float(state["train_seconds"])
    rm_loss = float("nan")
    while agent.iteration < agent.num_iterations:
        t0 = time.perf_counter()
        rollout = agent.collect()
        added = learner.add_labels(rollout)
        T, N = rollout["true_rewards"].shape
        if added:
            rm_loss = learner.train()
        learned = learner.reward(rollout["raw_obs"].reshape(T * N, -1),
                                 rollout["env_actions"].reshape(T * N, *rollout["env_actions"].shape[2:]), None)
        if added:
            # the rollout was rewarded by the model before this update: recompute with the updated one
            agent.relabel(rollout, learned.reshape(T, N))
        info = agent.update(rollout)
        train_seconds += time.perf_counter() - t0
        row: dict[str, Any] = {"step": agent.steps, "seconds": train_seconds, "iteration": agent.iteration,
                               "train_return": agent.tracker.recent_mean(20), "labels": learner.labels,
                               "reward_model_loss": rm_loss, "reward_model_accuracy": learner.accuracy(),
                               "learned_reward_mean": float(learned.mean()),
                               **info}
        last = agent.iteration == agent.num_iterations
        if schedule.due(agent.steps) or last:
            row["eval_return"] = schedule.run(agent.policy, agent.steps)
        history.append(row)
        if run_dir is not None and c.checkpoint_every and (agent.iteration % c.checkpoint_every == 0 or last):
            save_run_checkpoint(run_dir, agent.iteration, c, {
                "agent": agent.state_dict(), "learner": learner.state_dict(), "schedule": schedule.state_dict(),
                "history": history, "train_seconds": train_seconds})
        if progress is not None:
            progress(row)
    agent.env.close()
    final = schedule.returns[-1] if schedule.returns else float("nan")
    metrics = episode_metrics(final, schedule, agent.tracker, agent.steps, train_seconds)
    metrics.update({"labels": float(learner.labels), "reward_model_accuracy": learner.accuracy()})
    return ParadigmResult(metrics=metrics, history=history,
                          extras={"algorithm": "ppo-preferences", "env_id": pc.env_id, "labeller": c.labeller,
                                  "label_noise": learner.noise, "eval_returns": list(schedule.returns),
                                  "config": dataclasses.asdict(c)})
