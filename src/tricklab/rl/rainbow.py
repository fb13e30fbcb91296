"""Rainbow DQN (Hessel et al. 2018) with each of its six components switchable, so they can be ablated one by one:

* **double** Q-learning (van Hasselt et al. 2016): the online net picks a* = argmax_a Q(s', a), the target net
  values it, instead of max_a Q_targ(s', a);
* **dueling** heads (Wang et al. 2016): Q(s, a) = V(s) + A(s, a) - mean_a' A(s, a') (on the logits of each atom
  when distributional, as in the Rainbow paper, eq. in section 3);
* **prioritized** replay (Schaul et al. 2016): :class:`~tricklab.rl.buffers.PrioritizedReplayBuffer`, alpha 0.5,
  beta annealed from 0.4 to 1 over the run, priorities = the per-sample loss;
* **n-step** returns (Sutton 1988): r_t + gamma r_{t+1} + ... + gamma^(n-1) r_{t+n-1} + gamma^n Q(s_{t+n});
* **distributional** C51 (Bellemare et al. 2017): a categorical over ``atoms`` support points in [v_min, v_max],
  trained by cross-entropy to the projected target (:func:`~tricklab.rl.distributional.project_distribution`);
* **noisy** nets (Fortunato et al. 2018): the head's linear layers are :class:`~tricklab.rl.noisy.NoisyLinear`
  and exploration is by their noise (epsilon = 0); without them, epsilon-greedy with a linear decay.

With every component off this is DQN (Mnih et al. 2015) with a Huber loss and a hard-copied target network.
Evaluation is greedy with the noise switched off (the mean network).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from tricklab.errors import ConfigError
from tricklab.rl.buffers import NStepAccumulator, PrioritizedReplayBuffer, ReplayBuffer
from tricklab.rl.common import (EvalSchedule, Progress, check_positive, check_unit, episode_metrics,
                                load_run_checkpoint, numpy_rng_from_state, numpy_rng_state, save_run_checkpoint,
                                train_env_seed)
from tricklab.rl.distributional import project_distribution, support
from tricklab.rl.envs import (EpisodeTracker, capture_env_state, check_env_id, env_spaces, final_observations,
                              is_discrete, make_vector_env, restore_env_state)
from tricklab.rl.metrics import ParadigmResult
from tricklab.rl.networks import check_hidden, seeded
from tricklab.rl.noisy import NoisyLinear


@dataclass
class RainbowConfig:
    """Rainbow settings for small discrete-action envs. The support [v_min, v_max] must cover the discounted
    returns (CartPole: 0 to 1 / (1 - gamma) = 100)."""

    env_id: str = "CartPole-v1"
    total_steps: int = 50_000
    num_envs: int = 1
    double: bool = True
    dueling: bool = True
    prioritized: bool = True
    n_step: int = 3
    distributional: bool = True
    noisy: bool = True
    atoms: int = 51
    v_min: float = 0.0
    v_max: float = 100.0
    buffer_size: int = 50_000
    batch_size: int = 64
    lr: float = 1e-3
    adam_eps: float = 1.5e-4
    gamma: float = 0.99
    learning_starts: int = 1_000
    train_every: int = 1
    target_update: int = 500
    alpha: float = 0.5
    beta0: float = 0.4
    noisy_sigma0: float = 0.5
    eps_start: float = 1.0
    eps_end: float = 0.05
    eps_fraction: float = 0.2
    hidden: tuple[int, ...] = (64, 64)
    max_grad_norm: float = 10.0
    eval_every: int = 5_000
    eval_episodes: int = 10
    log_every: int = 1_000
    checkpoint_every: int = 0

    def __post_init__(self) -> None:
        check_env_id(self.env_id)
        _, space = env_spaces(self.env_id)
        if not is_discrete(space):
            raise ConfigError(f"env_id={self.env_id!r} has continuous actions; Rainbow needs a discrete action "
                              f"space (CartPole-v1, Acrobot-v1, MountainCar-v0); use SAC or PPO")
        for name in ("total_steps", "num_envs", "n_step", "atoms", "buffer_size", "batch_size", "train_every",
                     "target_update", "eval_episodes", "log_every"):
            check_positive(name, getattr(self, name), integer=True)
        for name in ("learning_starts", "eval_every", "checkpoint_every"):
            check_positive(name, getattr(self, name), integer=True, allow_zero=True)
        if self.distributional and (self.atoms < 2 or not self.v_max > self.v_min):
            raise ConfigError(f"C51 needs atoms >= 2 and v_max > v_min, got atoms={self.atoms}, "
                              f"v_min={self.v_min}, v_max={self.v_max}")
        for name in ("lr", "adam_eps", "max_grad_norm", "noisy_sigma0"):
            check_positive(name, getattr(self, name))
        for name in ("gamma", "alpha", "beta0", "eps_start", "eps_end", "eps_fraction"):
            check_unit(name, getattr(self, name))
        self.hidden = tuple(self.hidden)
        check_hidden(self.hidden, "hidden")
        if len(self.hidden) < 2:
            raise ConfigError(f"hidden needs at least two widths (a torso layer and a head layer), got "
                              f"{list(self.hidden)}")


class QNetwork(nn.Module):
    """Torso (plain linear layers) then a head (noisy or plain), dueling or not, atoms or scalars per action."""

    def __init__(self, obs_dim: int, n_actions: int, hidden: tuple[int, ...], dueling: bool, atoms: int,
                 noisy: bool, sigma0: float) -> None:
        super().__init__()
        self.n_actions, self.atoms, self.dueling = n_actions, atoms, dueling
        layers: list[nn.Module] = []
        last = obs_dim
        for h in hidden[:-1]:
            layers += [nn.Linear(last, h), nn.ReLU()]
            last = h

        def lin(i: int, o: int) -> nn.Module:
            return NoisyLinear(i, o, sigma0) if noisy else nn.Linear(i, o)

        self.torso = nn.Sequential(*layers)
        h = hidden[-1]
        self.adv = nn.Sequential(lin(last, h), nn.ReLU(), lin(h, n_actions * atoms))
        self.val = nn.Sequential(lin(last, h), nn.ReLU(), lin(h, atoms)) if dueling else None
        # looked up once: reset_noise runs every step
        self.noisy_layers = [m for m in self.modules() if isinstance(m, NoisyLinear)]

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """[B, A, atoms] logits (atoms = 1: Q values in the last slot)."""
        x = self.torso(obs)
        adv = self.adv(x).view(-1, self.n_actions, self.atoms)
        if self.val is None:
            return adv
        return self.val(x).view(-1, 1, self.atoms) + adv - adv.mean(1, keepdim=True)

    def reset_noise(self, gen: torch.Generator) -> None:
        for m in self.noisy_layers:
            m.reset_noise(gen)


def dqn_targets(q_next_online: torch.Tensor, q_next_target: torch.Tensor, rewards: torch.Tensor,
                discounts: torch.Tensor, double: bool) -> torch.Tensor:
    """y = r + discount * Q_targ(s', a*) with a* from the online net (double) or the target net (max)."""
    a_star = (q_next_online if double else q_next_target).argmax(1, keepdim=True)
    return rewards + discounts * q_next_target.gather(1, a_star).squeeze(1)


class Rainbow:
    def __init__(self, config: RainbowConfig, seed: int) -> None:
        self.config = c = config
        obs_space, space = env_spaces(c.env_id)
        self.obs_dim, self.n_actions = int(np.prod(obs_space.shape)), int(space.n)
        self.env = make_vector_env(c.env_id, c.num_envs, train_env_seed(seed))
        atoms = c.atoms if c.distributional else 1
        with seeded(seed):
            self.net = QNetwork(self.obs_dim, self.n_actions, c.hidden, c.dueling, atoms, c.noisy, c.noisy_sigma0)
        self.target = copy.deepcopy(self.net).requires_grad_(False)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=c.lr, eps=c.adam_eps, foreach=True)
        self.z = support(c.v_min, c.v_max, c.atoms) if c.distributional else None
        self.buffer: ReplayBuffer = (PrioritizedReplayBuffer(c.buffer_size, c.alpha) if c.prioritized
                                     else ReplayBuffer(c.buffer_size))
        self.nstep = NStepAccumulator(c.num_envs, c.n_step, c.gamma)
        self.gen = torch.Generator().manual_seed(seed + 7919)
        self.rng = np.random.default_rng(seed + 104729)
        self.tracker = EpisodeTracker(c.num_envs)
        self.obs = np.asarray(self.env.first_obs, dtype=np.float32)
        self.steps = 0
        self.updates = 0
        if c.noisy:
            self.net.reset_noise(self.gen)
            self.target.reset_noise(self.gen)

    # ------------------------------------------------------------------------------------------- acting
    def q_values(self, logits: torch.Tensor) -> torch.Tensor:
        """[B, A] expected values: sum_j z_j softmax(logits)_j, or the scalar head."""
        if self.z is None:
            return logits.squeeze(-1)
        return (logits.softmax(-1) * self.z).sum(-1)

    def epsilon(self) -> float:
        c = self.config
        if c.noisy:
            return 0.0
        frac = min(1.0, self.steps / max(1.0, c.eps_fraction * c.total_steps))
        return c.eps_start + frac * (c.eps_end - c.eps_start)

    def policy(self, obs: np.ndarray) -> np.ndarray:
        """Greedy actions of the mean network (noise off) for evaluation."""
        self.net.eval()
        try:
            with torch.no_grad():
                return self.q_values(self.net(torch.as_tensor(obs, dtype=torch.float32))).argmax(-1).numpy()
        finally:
            self.net.train()

    def act(self) -> np.ndarray:
        c = self.config
        if self.steps < c.learning_starts and not c.noisy:
            return self.rng.integers(0, self.n_actions, size=c.num_envs)
        if c.noisy:
            self.net.reset_noise(self.gen)
        with torch.no_grad():
            greedy = self.q_values(self.net(torch.as_tensor(self.obs))).argmax(-1).numpy()
        eps = self.epsilon()
        if eps > 0:
            explore = self.rng.random(c.num_envs) < eps
            greedy = np.where(explore, self.rng.integers(0, self.n_actions, size=c.num_envs), greedy)
        return greedy

    def env_step(self) -> None:
        actions = self.act()
        next_obs, reward, term, trunc, info = self.env.step(actions)
        done = np.logical_or(term, trunc)
        real_next = final_observations(next_obs, done, info)
        self.tracker.step(reward, done)
        ready = self.nstep.push(self.obs, actions, reward, real_next, term, trunc)
        if ready is not None:
            self.buffer.add(ready["obs"], ready["actions"], ready["rewards"], ready["next_obs"], ready["discounts"])
        self.obs = np.asarray(next_obs, dtype=np.float32)
        self.steps += self.config.num_envs

    # ------------------------------------------------------------------------------------------ learning
    def beta(self) -> float:
        c = self.config
        return c.beta0 + min(1.0, self.steps / c.total_steps) * (1.0 - c.beta0)

    def update(self) -> dict[str, float]:
        c = self.config
        if c.prioritized:
            batch = self.buffer.sample(c.batch_size, self.rng, beta=self.beta())
        else:
            batch = self.buffer.sample(c.batch_size, self.rng)
        obs, actions = batch["obs"], batch["actions"].long()
        rewards, next_obs, discounts, weights = batch["rewards"], batch["next_obs"], batch["discounts"], \
            batch["weights"]
        if c.noisy:
            self.net.reset_noise(self.gen)
            self.target.reset_noise(self.gen)
        B = obs.shape[0]
        if c.double:
            # one online pass over s and s' (same noise): the s' half only picks a*, so it is detached
            both = self.net(torch.cat([obs, next_obs]))  # [2B, A, atoms]
            logits, next_online = both[:B], both[B:].detach()
        else:
            logits = self.net(obs)
        with torch.no_grad():
            next_target = self.target(next_obs)
            if not c.double:
                next_online = next_target
            if self.z is None:
                y = dqn_targets(next_online.squeeze(-1), next_target.squeeze(-1), rewards, discounts, c.double)
            else:
                a_star = self.q_values(next_online).argmax(1)
                p_next = next_target.softmax(-1)[torch.arange(len(a_star)), a_star]
                m = project_distribution(p_next, rewards, discounts, self.z)
        chosen = logits[torch.arange(B), actions]  # [B, atoms]
        if self.z is None:
            td = y - chosen.squeeze(-1)
            per_sample = F.huber_loss(chosen.squeeze(-1), y, reduction="none")
            priority = td.detach().abs()
        else:
            per_sample = -(m * chosen.log_softmax(-1)).sum(-1)  # cross-entropy to the projected target
            priority = per_sample.detach()
        loss = (weights * per_sample).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.net.parameters(), c.max_grad_norm, foreach=True)
        self.opt.step()
        if c.prioritized:
            self.buffer.update_priorities(batch["indices"], priority.numpy())
        self.updates += 1
        if self.updates % c.target_update == 0:
            self.target.load_state_dict(self.net.state_dict())
        return {"loss": loss.item(), "epsilon": self.epsilon()}

    # --------------------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "target": self.target.state_dict(), "opt": self.opt.state_dict(),
                "buffer": self.buffer.state_dict(), "nstep": self.nstep.state_dict(), "gen": self.gen.get_state(),
                "rng": numpy_rng_state(self.rng), "tracker": self.tracker.state_dict(), "obs": self.obs.copy(),
                "steps": self.steps, "updates": self.updates, "env": capture_env_state(self.env)}

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.net.load_state_dict(s["net"])
        self.target.load_state_dict(s["target"])
        self.opt.load_state_dict(s["opt"])
        self.buffer.load_state_dict(s["buffer"])
        self.nstep.load_state_dict(s["nstep"])
        self.gen.set_state(s["gen"])
        self.rng = numpy_rng_from_state(s["rng"])
        self.tracker.load_state_dict(s["tracker"])
        self.obs = np.asarray(s["obs"], dtype=np.float32).copy()
        self.steps, self.updates = int(s["steps"]), int(s["updates"])
        restore_env_state(self.env, s["env"])


def run_rainbow(config: RainbowConfig, *, seed: int, run_dir: Path | None = None, progress: Progress | None = None,
                resume: bool = False) -> ParadigmResult:
    """Train for ``config.total_steps`` env steps, one gradient step every ``train_every`` env steps after
    ``learning_starts``; checkpoints (replay buffer, priorities and pending n-step transitions included) every
    ``checkpoint_every`` env steps when ``run_dir`` is given; ``resume=True`` continues exactly."""
    c = config
    agent = Rainbow(c, seed)
    schedule = EvalSchedule(c.eval_every, c.eval_episodes, seed, c.env_id)
    history: list[dict[str, Any]] = []
    train_seconds = 0.0
    # CPU time of this process in the same spans: unlike wall-clock, it does not grow when other work shares the cores
    train_cpu_seconds = 0.0
    if resume:
        state = load_run_checkpoint(run_dir, c)
        if state is not None:
            agent.load_state_dict(state["agent"])
            schedule.load_state_dict(state["schedule"])
            history, train_seconds = state["history"], float(state["train_seconds"])
            train_cpu_seconds = float(state.get("train_cpu_seconds", 0.0))
    info: dict[str, float] = {}
    next_log = (agent.steps // c.log_every + 1) * c.log_every
    next_ckpt = (agent.steps // c.checkpoint_every + 1) * c.checkpoint_every if c.checkpoint_every else None
    while agent.steps < c.total_steps:
        t0, c0 = time.perf_counter(), time.process_time()
        agent.env_step()
        if agent.steps >= c.learning_starts and len(agent.buffer) >= c.batch_size \
                and agent.steps % c.train_every < c.num_envs:
            info = agent.update()
        train_seconds += time.perf_counter() - t0
        train_cpu_seconds += time.process_time() - c0
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
                                                          "train_seconds": train_seconds,
                                                          "train_cpu_seconds": train_cpu_seconds})
            next_ckpt = (agent.steps // c.checkpoint_every + 1) * c.checkpoint_every
    agent.env.close()
    final = schedule.returns[-1] if schedule.returns else float("nan")
    components = {k: getattr(c, k) for k in ("double", "dueling", "prioritized", "distributional", "noisy")}
    components["n_step"] = c.n_step
    return ParadigmResult(metrics=episode_metrics(final, schedule, agent.tracker, agent.steps, train_seconds),
                          history=history, extras={"algorithm": "rainbow", "env_id": c.env_id,
                                                   "components": components, "eval_seconds": schedule.seconds,
                                                   "train_cpu_seconds": train_cpu_seconds,
                                                   "eval_returns": list(schedule.returns)})
