"""Proximal Policy Optimization (Schulman et al. 2017) with the implementation details that matter
(Engstrom et al. 2020; Huang et al. 2022, "The 37 implementation details of PPO").

Loss on a minibatch, with r_t = pi(a_t|s_t) / pi_old(a_t|s_t) and advantages A_t from GAE (normalized per
minibatch when ``norm_adv``):

    L_clip = E[max(-A_t r_t, -A_t clip(r_t, 1 - eps, 1 + eps))]                  (eq. 7, as a loss)
    L_V    = 1/2 E[(V(s_t) - R_t)^2], or with value clipping
             1/2 E[max((V - R)^2, (V_old + clip(V - V_old, -eps_v, eps_v) - R)^2)]
    L      = L_clip + c_v L_V - c_e H[pi(.|s_t)]                                  (eq. 9)

Each rollout of ``n_steps`` per env is used for ``epochs`` passes in shuffled minibatches; the learning rate
optionally falls linearly to 0 over the run; gradients are clipped by global norm. Observations and rewards can be
normalized with running statistics (:mod:`tricklab.rl.normalize`). Discrete actions use a categorical policy;
continuous ones a diagonal Gaussian with a state-independent log std, sampled unbounded and clipped to the
action bounds only when sent to the env.

``run_ppo`` is the lab-facing run function; :class:`PPO` is the agent, reused by learning from preferences
(``reward_fn`` replaces the env's reward for training; the true reward is still what gets reported).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tricklab.errors import ConfigError
from tricklab.rl.common import (EvalSchedule, Progress, check_positive, check_unit, episode_metrics,
                                load_run_checkpoint, save_run_checkpoint, train_env_seed)
from tricklab.rl.envs import (EpisodeTracker, capture_env_state, check_env_id, env_spaces, final_observations,
                              is_discrete, make_vector_env, restore_env_state)
from tricklab.rl.metrics import ParadigmResult
from tricklab.rl.networks import activation, check_hidden, mlp, seeded
from tricklab.rl.normalize import ObservationNormalizer, RewardScaler
from tricklab.rl.returns import gae

RewardFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass
class PPOConfig:
    """PPO settings. Defaults are stable-baselines3's PPO defaults (n_steps 2048 over 1 env, minibatch 64,
    10 epochs, lr 3e-4, gamma 0.99, lambda 0.95, clip 0.2, no entropy bonus, value coefficient 0.5, gradient norm
    0.5, separate 64-64 tanh actor and critic with orthogonal init), so a comparison at equal steps is like with
    like; ``total_steps`` is the budget in environment steps (summed over the vector env)."""

    env_id: str = "CartPole-v1"
    total_steps: int = 100_000
    num_envs: int = 1
    n_steps: int = 2048
    epochs: int = 10
    minibatch_size: int = 64
    lr: float = 3e-4
    anneal_lr: bool = False
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_coef: float = 0.2
    value_clip: float | None = None
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    norm_adv: bool = True
    norm_obs: bool = False
    norm_reward: bool = False
    hidden: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    log_std_init: float = 0.0
    target_kl: float | None = None
    eval_every: int = 10_000
    eval_episodes: int = 10
    checkpoint_every: int = 0

    def __post_init__(self) -> None:
        check_env_id(self.env_id)
        for name in ("total_steps", "num_envs", "n_steps", "epochs", "minibatch_size", "eval_episodes"):
            check_positive(name, getattr(self, name), integer=True)
        for name in ("eval_every", "checkpoint_every"):
            check_positive(name, getattr(self, name), integer=True, allow_zero=True)
        if self.minibatch_size > self.num_envs * self.n_steps:
            raise ConfigError(f"minibatch_size={self.minibatch_size} exceeds the rollout size num_envs * n_steps = "
                              f"{self.num_envs * self.n_steps}; lower it or collect more steps per rollout")
        check_positive("lr", self.lr)
        check_unit("gamma", self.gamma)
        check_unit("gae_lambda", self.gae_lambda)
        check_positive("clip_coef", self.clip_coef)
        if self.value_clip is not None:
            check_positive("value_clip", self.value_clip)
        check_positive("ent_coef", self.ent_coef, allow_zero=True)
        check_positive("vf_coef", self.vf_coef, allow_zero=True)
        check_positive("max_grad_norm", self.max_grad_norm)
        if self.target_kl is not None:
            check_positive("target_kl", self.target_kl)
        self.hidden = tuple(self.hidden)
        check_hidden(self.hidden, "hidden")
        activation(self.activation)


class ActorCritic(nn.Module):
    """Separate actor and critic MLPs (no shared torso), orthogonal init: policy head gain 0.01, value head 1."""

    def __init__(self, obs_dim: int, action_space: Any, hidden: tuple[int, ...], act: str,
                 log_std_init: float = 0.0) -> None:
        super().__init__()
        self.discrete = is_discrete(action_space)
        out = int(action_space.n) if self.discrete else int(np.prod(action_space.shape))
        self.actor = mlp(obs_dim, hidden, out, act, ortho=True, out_gain=0.01)
        self.critic = mlp(obs_dim, hidden, 1, act, ortho=True, out_gain=1.0)
        if not self.discrete:
            self.log_std = nn.Parameter(torch.full((out,), float(log_std_init)))

    def dist_params(self, obs: torch.Tensor) -> torch.Tensor:
        """Log-probabilities [B, A] of a discrete policy, or the Gaussian's mean [B, A]."""
        out = self.actor(obs)
        return torch.log_softmax(out, -1) if self.discrete else out

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs).squeeze(-1)

    def log_prob(self, params: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """log pi(a|s) [B] (written out rather than via torch.distributions: this sits on the per-step path)."""
        if self.discrete:
            return params.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
        log_std = self.log_std.expand_as(params)
        z = (actions - params) / log_std.exp()
        return (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)

    def entropy(self, params: torch.Tensor) -> torch.Tensor:
        if self.discrete:
            return -(params.exp() * params).sum(-1)
        return (0.5 + 0.5 * math.log(2 * math.pi) + self.log_std).sum().expand(params.shape[0])

    def sample(self, params: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Draw actions from the run's own generator (inverse CDF for categorical), never the global RNG."""
        if self.discrete:
            u = torch.rand(params.shape[0], 1, generator=gen)
            cdf = params.exp().cumsum(-1)
            return (cdf < u).sum(-1).clamp(max=params.shape[-1] - 1)
        return params + self.log_std.exp() * torch.randn(params.shape, generator=gen)

    def deterministic(self, obs: torch.Tensor) -> torch.Tensor:
        out = self.actor(obs)
        return out.argmax(-1) if self.discrete else out


def ppo_loss(new_logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, values: torch.Tensor,
             old_values: torch.Tensor, returns: torch.Tensor, entropy: torch.Tensor, clip_coef: float,
             value_clip: float | None, vf_coef: float, ent_coef: float) -> tuple[torch.Tensor, dict[str, float]]:
    """The functional core: clipped surrogate + (clipped) value loss - entropy bonus, all [B] inputs."""
    log_ratio = new_logp - old_logp
    ratio = log_ratio.exp()
    pg = torch.max(-adv * ratio, -adv * ratio.clamp(1.0 - clip_coef, 1.0 + clip_coef)).mean()
    if value_clip is None:
        v_loss = 0.5 * (values - returns).pow(2).mean()
    else:
        clipped = old_values + (values - old_values).clamp(-value_clip, value_clip)
        v_loss = 0.5 * torch.max((values - returns).pow(2), (clipped - returns).pow(2)).mean()
    ent = entropy.mean()
    loss = pg + vf_coef * v_loss - ent_coef * ent
    with torch.no_grad():
        # k3 estimator of KL(old || new) (Schulman 2020): (r - 1) - log r, unbiased and >= 0
        approx_kl = ((ratio - 1.0) - log_ratio).mean().item()
        clipfrac = ((ratio - 1.0).abs() > clip_coef).float().mean().item()
    return loss, {"policy_loss": pg.item(), "value_loss": v_loss.item(), "entropy": ent.item(),
                  "approx_kl": approx_kl, "clipfrac": clipfrac}


class PPO:
    """The agent and its training state: networks, optimizer, envs, normalizers, RNGs, counters."""

    def __init__(self, config: PPOConfig, seed: int, reward_fn: RewardFn | None = None) -> None:
        self.config = c = config
        self.seed = seed
        self.reward_fn = reward_fn
        obs_space, self.action_space = env_spaces(c.env_id)
        self.obs_shape = obs_space.shape
        self.env = make_vector_env(c.env_id, c.num_envs, train_env_seed(seed))
        with seeded(seed):
            self.net = ActorCritic(int(np.prod(self.obs_shape)), self.action_space, c.hidden, c.activation,
                                   c.log_std_init)
        # eps 1e-5 as in the PPO baselines and SB3
        self.opt = torch.optim.Adam(self.net.parameters(), lr=c.lr, eps=1e-5, foreach=True)
        self.gen = torch.Generator().manual_seed(seed + 7919)
        self.obs_norm = ObservationNormalizer(self.obs_shape, enabled=c.norm_obs)
        self.rew_scale = RewardScaler(c.num_envs, c.gamma, enabled=c.norm_reward)
        self.tracker = EpisodeTracker(c.num_envs)
        self.obs = np.asarray(self.env.first_obs, dtype=np.float64)
        self.obs_norm.update(self.obs)
        self.steps = 0
        self.iteration = 0
        self.num_iterations = math.ceil(c.total_steps / (c.num_envs * c.n_steps))
        if not self.net.discrete:
            self.low = np.asarray(self.action_space.low)
            self.high = np.asarray(self.action_space.high)

    # ------------------------------------------------------------------------------------------- acting
    def env_actions(self, actions: torch.Tensor) -> np.ndarray:
        a = actions.numpy()
        return a if self.net.discrete else np.clip(a, self.low, self.high)

    def policy(self, obs: np.ndarray) -> np.ndarray:
        """Deterministic actions for evaluation (argmax, or the Gaussian's mean clipped to the bounds)."""
        with torch.no_grad():
            x = torch.as_tensor(self.obs_norm(obs)).reshape(len(obs), -1)
            return self.env_actions(self.net.deterministic(x))

    def collect(self) -> dict[str, Any]:
        """One rollout of n_steps per env. Returns tensors [T, N, ...] and the raw observations."""
        c, T, N = self.config, self.config.n_steps, self.config.num_envs
        obs_dim = int(np.prod(self.obs_shape))
        buf_obs = torch.zeros(T, N, obs_dim)
        act_shape = () if self.net.discrete else self.action_space.shape
        buf_act = torch.zeros((T, N, *act_shape), dtype=torch.long if self.net.discrete else torch.float32)
        buf_logp, buf_val, buf_rew = torch.zeros(T, N), torch.zeros(T, N), torch.zeros(T, N)
        buf_term, buf_done, buf_next_val = torch.zeros(T, N), torch.zeros(T, N), torch.zeros(T, N)
        raw_obs = np.zeros((T, N, *self.obs_shape))
        raw_next = np.zeros((T, N, *self.obs_shape))
        true_rew = np.zeros((T, N))
        env_act = np.zeros((T, N, *act_shape), dtype=np.int64 if self.net.discrete else np.float64)
        for t in range(T):
            x = torch.as_tensor(self.obs_norm(self.obs)).reshape(N, -1)
            with torch.no_grad():
                params = self.net.dist_params(x)
                action = self.net.sample(params, self.gen)
                logp = self.net.log_prob(params, action)
                value = self.net.value(x)
            next_obs, reward, term, trunc, info = self.env.step(self.env_actions(action))
            done = np.logical_or(term, trunc)
            real_next = final_observations(next_obs, done, info)
            self.tracker.step(reward, done)
            raw_obs[t], raw_next[t], true_rew[t] = self.obs, real_next, reward
            env_act[t] = self.env_actions(action)
            train_rew = reward if self.reward_fn is None else self.reward_fn(self.obs, env_act[t], real_next)
            buf_rew[t] = torch.as_tensor(self.rew_scale(train_rew, done))
            buf_obs[t], buf_act[t], buf_logp[t], buf_val[t] = x, action, logp, value
            buf_term[t] = torch.as_tensor(term, dtype=torch.float32)
            buf_done[t] = torch.as_tensor(done, dtype=torch.float32)
            if trunc.any():
                # a time-limit cut: bootstrap from V(s_T) of the true last observation (not from the reset one)
                idx = np.flatnonzero(trunc)
                with torch.no_grad():
                    xt = torch.as_tensor(self.obs_norm(real_next[idx])).reshape(len(idx), -1)
                    buf_next_val[t, torch.as_tensor(idx)] = self.net.value(xt)
            self.obs = np.asarray(next_obs, dtype=np.float64)
            self.obs_norm.update(self.obs)
            self.steps += N
        with torch.no_grad():
            last_val = self.net.value(torch.as_tensor(self.obs_norm(self.obs)).reshape(N, -1))
        # V(s_{t+1}): the next row's value where the episode went on, the truncation value where it ended
        following = torch.cat([buf_val[1:], last_val[None]], 0)
        next_val = torch.where(buf_done.bool(), buf_next_val, following)
        adv, ret = gae(buf_rew, buf_val, next_val, buf_term, buf_done, c.gamma, c.gae_lambda)
        return {"obs": buf_obs, "actions": buf_act, "logp": buf_logp, "values": buf_val, "advantages": adv,
                "returns": ret, "next_values": next_val, "raw_obs": raw_obs, "raw_next_obs": raw_next,
                "env_actions": env_act, "true_rewards": true_rew,
                "terminated": buf_term.numpy().astype(bool), "dones": buf_done.numpy().astype(bool)}

    def relabel(self, rollout: dict[str, Any], rewards: np.ndarray) -> None:
        """Replace a collected rollout's training rewards [T, N] (e.g. by a reward model updated since) and recompute
        its advantages; rewards are scaled with the current statistics, which this does not update."""
        r = np.asarray(rewards, dtype=np.float64)
        if self.rew_scale.enabled:
            r = np.clip(r / np.sqrt(self.rew_scale.stats.var + self.rew_scale.eps), -self.rew_scale.clip,
                        self.rew_scale.clip)
        c = self.config
        term = torch.as_tensor(rollout["terminated"], dtype=torch.float32)
        done = torch.as_tensor(rollout["dones"], dtype=torch.float32)
        rollout["advantages"], rollout["returns"] = gae(torch.as_tensor(r, dtype=torch.float32), rollout["values"],
                                                        rollout["next_values"], term, done, c.gamma, c.gae_lambda)

    # ------------------------------------------------------------------------------------------ learning
    def update(self, rollout: dict[str, Any]) -> dict[str, float]:
        c = self.config
        if c.anneal_lr:
            # linear decay to 0 over the run: lr_k = lr (1 - k / K) for iteration k = 0..K-1
            for group in self.opt.param_groups:
                group["lr"] = c.lr * (1.0 - self.iteration / self.num_iterations)
        obs = rollout["obs"].reshape(-1, rollout["obs"].shape[-1])
        actions = rollout["actions"].reshape(-1, *rollout["actions"].shape[2:])
        logp, values = rollout["logp"].reshape(-1), rollout["values"].reshape(-1)
        adv_all, returns = rollout["advantages"].reshape(-1), rollout["returns"].reshape(-1)
        B = obs.shape[0]
        stats: dict[str, list[float]] = {}
        stop = False
        for _ in range(c.epochs):
            perm = torch.randperm(B, generator=self.gen)
            for start in range(0, B, c.minibatch_size):
                mb = perm[start: start + c.minibatch_size]
                params = self.net.dist_params(obs[mb])
                new_logp = self.net.log_prob(params, actions[mb])
                adv = adv_all[mb]
                if c.norm_adv and len(mb) > 1:
                    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                loss, info = ppo_loss(new_logp, logp[mb], adv, self.net.value(obs[mb]), values[mb], returns[mb],
                                      self.net.entropy(params), c.clip_coef, c.value_clip, c.vf_coef, c.ent_coef)
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self.net.parameters(), c.max_grad_norm, foreach=True)
                self.opt.step()
                for k, v in info.items():
                    stats.setdefault(k, []).append(v)
                if c.target_kl is not None and info["approx_kl"] > 1.5 * c.target_kl:
                    stop = True  # early stop of the epochs (as SB3 does) when the policy moved too far
                    break
            if stop:
                break
        self.iteration += 1
        var_y = returns.var().item()
        explained = float("nan") if var_y == 0 else 1.0 - (returns - values).var().item() / var_y
        out = {k: float(np.mean(v)) for k, v in stats.items()}
        out.update({"explained_variance": explained, "lr": self.opt.param_groups[0]["lr"]})
        return out

    # --------------------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict(), "gen": self.gen.get_state(),
                "obs_norm": self.obs_norm.state_dict(), "rew_scale": self.rew_scale.state_dict(),
                "tracker": self.tracker.state_dict(), "obs": self.obs.copy(), "steps": self.steps,
                "iteration": self.iteration, "env": capture_env_state(self.env)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
        self.gen.set_state(state["gen"])
        self.obs_norm.load_state_dict(state["obs_norm"])
        self.rew_scale.load_state_dict(state["rew_scale"])
        self.tracker.load_state_dict(state["tracker"])
        self.obs = np.asarray(state["obs"], dtype=np.float64).copy()
        self.steps, self.iteration = int(state["steps"]), int(state["iteration"])
        restore_env_state(self.env, state["env"])


def run_ppo(config: PPOConfig, *, seed: int, run_dir: Path | None = None, progress: Progress | None = None,
            resume: bool = False) -> ParadigmResult:
    """Train PPO for ``config.total_steps`` environment steps; evaluate on separate envs; return the metrics.

    With ``run_dir`` and ``checkpoint_every`` > 0, a checkpoint is written every that many rollouts (and at the
    end); ``resume=True`` continues from the newest one, bit-identically on the CPU."""
    agent = PPO(config, seed)
    schedule = EvalSchedule(config.eval_every, config.eval_episodes, seed, config.env_id)
    history: list[dict[str, Any]] = []
    train_seconds = 0.0
    if resume:
        state = load_run_checkpoint(run_dir, config)
        if state is not None:
            agent.load_state_dict(state["agent"])
            schedule.load_state_dict(state["schedule"])
            history, train_seconds = state["history"], float(state["train_seconds"])
    while agent.iteration < agent.num_iterations:
        t0 = time.perf_counter()
        rollout = agent.collect()
        info = agent.update(rollout)
        train_seconds += time.perf_counter() - t0
        row: dict[str, Any] = {"step": agent.steps, "seconds": train_seconds, "iteration": agent.iteration,
                               "train_return": agent.tracker.recent_mean(20), **info}
        last = agent.iteration == agent.num_iterations
        if schedule.due(agent.steps) or last:
            row["eval_return"] = schedule.run(agent.policy, agent.steps)
        history.append(row)
        if run_dir is not None and config.checkpoint_every and (
                agent.iteration % config.checkpoint_every == 0 or last):
            save_run_checkpoint(run_dir, agent.iteration, config,
                                {"agent": agent.state_dict(), "schedule": schedule.state_dict(),
                                 "history": history, "train_seconds": train_seconds})
        if progress is not None:
            progress(row)
    agent.env.close()
    final = schedule.returns[-1] if schedule.returns else float("nan")
    return ParadigmResult(
        metrics=episode_metrics(final, schedule, agent.tracker, agent.steps, train_seconds),
        history=history,
        extras={"algorithm": "ppo", "env_id": config.env_id, "eval_seconds": schedule.seconds,
                "eval_returns": list(schedule.returns)},
    )
