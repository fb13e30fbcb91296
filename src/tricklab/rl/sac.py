"""Soft Actor-Critic (Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and Applications") for continuous actions.

Twin critics Q_1, Q_2 with Polyak-averaged targets, a tanh-squashed Gaussian actor, automatic entropy tuning:

    y        = r + gamma^n (1 - d) [min_i Q_targ,i(s', a') - alpha log pi(a'|s')],   a' ~ pi(.|s')
    L_Q      = 1/2 sum_i E[(Q_i(s, a) - y)^2]
    L_pi     = E[alpha log pi(a~|s) - min_i Q_i(s, a~)],                                a~ ~ pi(.|s) (reparameterized)
    L_alpha  = -E[log alpha (log pi(a~|s) + H_target)],   H_target = -dim(A)              (eq. 18)
    theta_targ <- tau theta + (1 - tau) theta_targ

The squashed action is a = scale * tanh(u) + bias with u ~ N(mu, sigma) (scale, bias map [-1, 1] to the env's
bounds), so by the change of variables (Appendix C, eq. 21)

    log pi(a|s) = log N(u; mu, sigma) - sum_j log(scale_j (1 - tanh(u_j)^2)),

with log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)) written in that stable form. Defaults follow
stable-baselines3's SAC (256-256 ReLU nets, lr 3e-4 for all three optimizers, batch 256, tau 0.005, gamma 0.99,
one gradient step per env step, 100 random steps first, alpha starting at 1, log std clamped to [-20, 2]).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from tricklab.errors import ConfigError
from tricklab.rl.buffers import ReplayBuffer
from tricklab.rl.common import (EvalSchedule, Progress, check_positive, check_unit, episode_metrics,
                                load_run_checkpoint, numpy_rng_from_state, numpy_rng_state, save_run_checkpoint,
                                train_env_seed)
from tricklab.rl.envs import (EpisodeTracker, capture_env_state, check_env_id, env_spaces, final_observations,
                              is_discrete, make_vector_env, restore_env_state)
from tricklab.rl.metrics import ParadigmResult
from tricklab.rl.networks import activation, check_hidden, mlp, seeded

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


def log1m_tanh_sq(u: torch.Tensor) -> torch.Tensor:
    """log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)): exact, and finite where tanh(u) rounds to +-1."""
    return 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))


def squashed_gaussian_log_prob(u: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor,
                               scale: torch.Tensor) -> torch.Tensor:
    """log pi(a) of a = scale * tanh(u) + bias, u ~ N(mean, exp(log_std)); inputs [B, A] (scale [A]) -> [B]."""
    normal = -0.5 * ((u - mean) / log_std.exp()).pow(2) - log_std - 0.5 * math.log(2.0 * math.pi)
    return (normal - log1m_tanh_sq(u) - torch.log(scale)).sum(-1)


class SquashedGaussianActor(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...], act: str, low: np.ndarray,
                 high: np.ndarray) -> None:
        super().__init__()
        self.torso = mlp(obs_dim, hidden, None, act)
        self.mu = nn.Linear(hidden[-1], act_dim)
        self.log_std = nn.Linear(hidden[-1], act_dim)
        self.register_buffer("scale", torch.as_tensor((high - low) / 2.0, dtype=torch.float32))
        self.register_buffer("bias", torch.as_tensor((high + low) / 2.0, dtype=torch.float32))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.torso(obs)
        return self.mu(h), self.log_std(h).clamp(LOG_STD_MIN, LOG_STD_MAX)

    def sample(self, obs: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterized draw a = scale tanh(mu + sigma eps) + bias and its log-prob."""
        mean, log_std = self(obs)
        u = mean + log_std.exp() * torch.randn(mean.shape, generator=gen)
        return self.scale * torch.tanh(u) + self.bias, squashed_gaussian_log_prob(u, mean, log_std, self.scale)

    def deterministic(self, obs: torch.Tensor) -> torch.Tensor:
        return self.scale * torch.tanh(self(obs)[0]) + self.bias


class TwinQ(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...], act: str) -> None:
        super().__init__()
        self.q1 = mlp(obs_dim + act_dim, hidden, 1, act)
        self.q2 = mlp(obs_dim + act_dim, hidden, 1, act)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([obs, action], -1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)


@dataclass
class SACConfig:
    """SAC settings; defaults are stable-baselines3's SAC defaults. ``total_steps`` counts env steps."""

    env_id: str = "Pendulum-v1"
    total_steps: int = 20_000
    num_envs: int = 1
    buffer_size: int = 1_000_000
    learning_starts: int = 100
    batch_size: int = 256
    lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005
    gradient_steps: int = 1
    init_alpha: float = 1.0
    auto_alpha: bool = True
    target_entropy: float | None = None
    hidden: tuple[int, ...] = (256, 256)
    activation: str = "relu"
    eval_every: int = 2_000
    eval_episodes: int = 10
    log_every: int = 1_000
    checkpoint_every: int = 0

    def __post_init__(self) -> None:
        check_env_id(self.env_id)
        _, space = env_spaces(self.env_id)
        if is_discrete(space):
            raise ConfigError(f"env_id={self.env_id!r} has discrete actions; SAC here needs a continuous (Box) "
                              f"action space, e.g. Pendulum-v1 or MountainCarContinuous-v0 (use PPO or Rainbow)")
        for name in ("total_steps", "num_envs", "buffer_size", "batch_size", "gradient_steps", "eval_episodes",
                     "log_every"):
            check_positive(name, getattr(self, name), integer=True)
        for name in ("learning_starts", "eval_every", "checkpoint_every"):
            check_positive(name, getattr(self, name), integer=True, allow_zero=True)
        check_positive("lr", self.lr)
        check_unit("gamma", self.gamma)
        check_unit("tau", self.tau)
        check_positive("init_alpha", self.init_alpha)
        self.hidden = tuple(self.hidden)
        check_hidden(self.hidden, "hidden")
        activation(self.activation)


class SAC:
    def __init__(self, config: SACConfig, seed: int) -> None:
        self.config = c = config
        obs_space, space = env_spaces(c.env_id)
        self.obs_dim, self.act_dim = int(np.prod(obs_space.shape)), int(np.prod(space.shape))
        self.low, self.high = np.asarray(space.low, np.float32), np.asarray(space.high, np.float32)
        self.env = make_vector_env(c.env_id, c.num_envs, train_env_seed(seed))
        with seeded(seed):
            self.actor = SquashedGaussianActor(self.obs_dim, self.act_dim, c.hidden, c.activation, self.low,
                                               self.high)
            self.critic = TwinQ(self.obs_dim, self.act_dim, c.hidden, c.activation)
        self.target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.tensor(math.log(c.init_alpha), requires_grad=True)
        self.target_entropy = float(-self.act_dim if c.target_entropy is None else c.target_entropy)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=c.lr, foreach=True)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=c.lr, foreach=True)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=c.lr, foreach=True)
        self.buffer = ReplayBuffer(c.buffer_size)
        self.gen = torch.Generator().manual_seed(seed + 7919)
        self.rng = np.random.default_rng(seed + 104729)
        self.tracker = EpisodeTracker(c.num_envs)
        self.obs = np.asarray(self.env.first_obs, dtype=np.float32)
        self.steps = 0
        self.updates = 0

    def policy(self, obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.actor.deterministic(torch.as_tensor(obs, dtype=torch.float32)).numpy()

    def act(self) -> np.ndarray:
        if self.steps < self.config.learning_starts:
            return self.rng.uniform(self.low, self.high, size=(self.config.num_envs, self.act_dim)).astype(np.float32)
        with torch.no_grad():
            return self.actor.sample(torch.as_tensor(self.obs), self.gen)[0].numpy()

    def env_step(self) -> None:
        actions = self.act()
        next_obs, reward, term, trunc, info = self.env.step(actions)
        done = np.logical_or(term, trunc)
        real_next = final_observations(next_obs, done, info)
        self.tracker.step(reward, done)
        # a time-limit cut keeps its bootstrap (discount gamma); only a termination zeroes it
        self.buffer.add(self.obs, actions, reward, real_next, self.config.gamma * (1.0 - term.astype(np.float32)))
        self.obs = np.asarray(next_obs, dtype=np.float32)
        self.steps += self.config.num_envs

    def update(self) -> dict[str, float]:
        c = self.config
        batch = self.buffer.sample(c.batch_size, self.rng)
        obs, actions, rewards = batch["obs"], batch["actions"], batch["rewards"]
        next_obs, discounts = batch["next_obs"], batch["discounts"]
        pi_actions, logp = self.actor.sample(obs, self.gen)
        alpha = self.log_alpha.exp().detach()
        alpha_loss = torch.zeros(())
        if c.auto_alpha:
            alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
            self.alpha_opt.zero_grad(set_to_none=True)
            alpha_loss.backward()
            self.alpha_opt.step()
        with torch.no_grad():
            next_a, next_logp = self.actor.sample(next_obs, self.gen)
            tq1, tq2 = self.target(next_obs, next_a)
            y = rewards + discounts * (torch.min(tq1, tq2) - alpha * next_logp)
        q1, q2 = self.critic(obs, actions)
        critic_loss = 0.5 * (F.mse_loss(q1, y) + F.mse_loss(q2, y))
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        # the actor's loss goes through the (just updated) critic; only the actor's optimizer steps on it
        pq1, pq2 = self.critic(obs, pi_actions)
        actor_loss = (alpha * logp - torch.min(pq1, pq2)).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()
        with torch.no_grad():
            for p, tp in zip(self.critic.parameters(), self.target.parameters()):
                tp.lerp_(p, c.tau)
        self.updates += 1
        return {"critic_loss": critic_loss.item(), "actor_loss": actor_loss.item(), "alpha": alpha.item(),
                "alpha_loss": alpha_loss.item(), "entropy": -logp.mean().item()}

    def state_dict(self) -> dict[str, Any]:
        return {"actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
                "target": self.target.state_dict(), "log_alpha": self.log_alpha.detach().clone(),
                "actor_opt": self.actor_opt.state_dict(), "critic_opt": self.critic_opt.state_dict(),
                "alpha_opt": self.alpha_opt.state_dict(), "buffer": self.buffer.state_dict(),
                "gen": self.gen.get_state(), "rng": numpy_rng_state(self.rng), "tracker": self.tracker.state_dict(),
                "obs": self.obs.copy(), "steps": self.steps, "updates": self.updates,
                "env": capture_env_state(self.env)}

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.actor.load_state_dict(s["actor"])
        self.critic.load_state_dict(s["critic"])
        self.target.load_state_dict(s["target"])
        with torch.no_grad():
            self.log_alpha.copy_(s["log_alpha"])
        self.actor_opt.load_state_dict(s["actor_opt"])
        self.critic_opt.load_state_dict(s["critic_opt"])
        self.alpha_opt.load_state_dict(s["alpha_opt"])
        self.buffer.load_state_dict(s["buffer"])
        self.gen.set_state(s["gen"])
        self.rng = numpy_rng_from_state(s["rng"])
        self.tracker.load_state_dict(s["tracker"])
        self.obs = np.asarray(s["obs"], dtype=np.float32).copy()
        self.steps, self.updates = int(s["steps"]), int(s["updates"])
        restore_env_state(self.env, s["env"])


def run_sac(config: SACConfig, *, seed: int, run_dir: Path | None = None, progress: Progress | None = None,
            resume: bool = False) -> ParadigmResult:
    """Train SAC for ``config.total_steps`` env steps; checkpoints (buffer included) every ``checkpoint_every``
    env steps when ``run_dir`` is given; ``resume=True`` continues from the newest one exactly."""
    c = config
    agent = SAC(c, seed)
    schedule = EvalSchedule(c.eval_every, c.eval_episodes, seed, c.env_id)
    history: list[dict[str, Any]] = []
    train_seconds = 0.0
    if resume:
        state = load_run_checkpoint(run_dir, c)
        if state is not None:
            agent.load_state_dict(state["agent"])
            schedule.load_state_dict(state["schedule"])
            history, train_seconds = state["history"], float(state["train_seconds"])
    info: dict[str, float] = {}
    next_log = (agent.steps // c.log_every + 1) * c.log_every
    next_ckpt = (agent.steps // c.checkpoint_every + 1) * c.checkpoint_every if c.checkpoint_every else None
    while agent.steps < c.total_steps:
        t0 = time.perf_counter()
        agent.env_step()
        if agent.steps >= c.learning_starts:
            for _ in range(c.gradient_steps * c.num_envs):
                info = agent.update()
        train_seconds += time.perf_counter() - t0
        last = agent.steps >= c.total_steps
        evaluate_now = schedule.due(agent.steps) or last
        if agent.steps >= next_log or evaluate_now:
            row: dict[str, Any] = {"step": agent.steps, "seconds": train_seconds,
                                   "train_return": agent.tracker.recent_mean(20), **info}
            if evaluate_now:
                row["eval_return"] = schedule.run(agent.policy, agent.steps)
            history.append(row)
            next_log = (agent.steps // c.log_every + 1) * c.log_every
            if progress is not None:
                progress(row)
        if run_dir is not None and next_ckpt is not None and (agent.steps >= next_ckpt or last):
            save_run_checkpoint(run_dir, agent.steps, c, {"agent": agent.state_dict(),
                                                          "schedule": schedule.state_dict(), "history": history,
                                                          "train_seconds": train_seconds})
            next_ckpt = (agent.steps // c.checkpoint_every + 1) * c.checkpoint_every
    agent.env.close()
    final = schedule.returns[-1] if schedule.returns else float("nan")
    return ParadigmResult(metrics=episode_metrics(final, schedule, agent.tracker, agent.steps, train_seconds),
                          history=history, extras={"algorithm": "sac", "env_id": c.env_id,
                                                   "eval_seconds": schedule.seconds,
                                                   "eval_returns": list(schedule.returns)})
