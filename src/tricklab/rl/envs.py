"""Gymnasium environments: vector envs, episode bookkeeping, evaluation on separate envs, and env state capture.

Every env here is a gymnasium ``SyncVectorEnv`` in ``SAME_STEP`` autoreset mode: when a sub-env's episode ends,
``step`` returns the first observation of the next episode and puts the true last observation in
``info["final_obs"]``, so a bootstrap after a time-limit truncation can use V(s_T) (Pardo et al. 2018).
Sync, not async: each run uses one core, and a process per sub-env would only add IPC.

Seeding: the training envs are reset once with ``seed, seed + 1, ...``; after that each sub-env's own
``np_random`` drives its resets, so the stream never depends on the agent. Evaluation uses fresh envs seeded from
``(eval_seed, index)`` and never touches the training envs or the agent's RNGs, so evaluating more or less often
cannot change a run.

``capture_env_state`` / ``restore_env_state`` save what a classic-control env needs to continue exactly: the
plain attributes of every wrapper layer and of the base env (physics state, step counters, flags) and the
``np_random`` bit-generator state. Objects (spaces, renderers, specs) are skipped: they hold no episode state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from tricklab.errors import ConfigError, UserError

CLASSIC_CONTROL = ("CartPole-v1", "Acrobot-v1", "MountainCar-v0", "Pendulum-v1", "MountainCarContinuous-v0")


def gym() -> Any:
    """Import gymnasium or say which extra installs it."""
    try:
        import gymnasium
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise UserError("tricklab.rl needs gymnasium: pip install 'tricklab[rl]'") from e
    return gymnasium


def check_env_id(env_id: str, field: str = "env_id") -> None:
    """Refuse an env id gymnasium does not know, listing the classic-control ones (no download needed)."""
    g = gym()
    if env_id not in g.registry:
        raise ConfigError(f"{field}={env_id!r} is not a registered gymnasium environment; "
                          f"classic-control choices: {', '.join(CLASSIC_CONTROL)}")


def make_vector_env(env_id: str, num_envs: int, seed: int) -> Any:
    """A ``SyncVectorEnv`` of ``num_envs`` copies, SAME_STEP autoreset, reset with seeds seed..seed+n-1.

    Returns the env; its first observations are in ``env.first_obs`` (shape [num_envs, *obs_shape])."""
    g = gym()
    check_env_id(env_id)
    env = g.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync",
                     vector_kwargs={"autoreset_mode": g.vector.AutoresetMode.SAME_STEP})
    obs, _ = env.reset(seed=seed)
    env.first_obs = obs
    return env


def env_spaces(env_id: str) -> tuple[Any, Any]:
    """(single observation space, single action space) of ``env_id``."""
    g = gym()
    check_env_id(env_id)
    env = g.make(env_id)
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()


def is_discrete(space: Any) -> bool:
    return isinstance(space, gym().spaces.Discrete)


# ------------------------------------------------------------------------------------------ state capture
_PLAIN = (bool, int, float, str, type(None), np.ndarray, np.generic)


def _plain(value: Any) -> bool:
    if isinstance(value, _PLAIN):
        return True
    if isinstance(value, (tuple, list)):
        return all(_plain(v) for v in value)
    return False


def _layers(env: Any) -> list[Any]:
    out = [env]
    while hasattr(out[-1], "env"):
        out.append(out[-1].env)
    return out


def capture_env_state(vec_env: Any) -> list[list[dict[str, Any]]]:
    """Per sub-env, per wrapper layer (outermost first): its plain attributes, and the base env's RNG state."""
    states = []
    for sub in vec_env.envs:
        layers = []
        for layer in _layers(sub):
            attrs = {k: (v.copy() if isinstance(v, np.ndarray) else v)
                     for k, v in vars(layer).items() if not k.startswith("__") and _plain(v)}
            rng = layer.__dict__.get("_np_random")
            entry: dict[str, Any] = {"attrs": attrs}
            if rng is not None:
                entry["rng"] = rng.bit_generator.state
            layers.append(entry)
        states.append(layers)
    return states


def restore_env_state(vec_env: Any, states: list[list[dict[str, Any]]]) -> None:
    """Inverse of :func:`capture_env_state` on an env made by the same :func:`make_vector_env` call."""
    if len(states) != len(vec_env.envs):
        raise UserError(f"checkpoint has {len(states)} environments, the run has {len(vec_env.envs)}")
    for sub, layer_states in zip(vec_env.envs, states):
        layers = _layers(sub)
        if len(layers) != len(layer_states):
            raise UserError("checkpoint's environment wrappers differ from this run's (gymnasium version?)")
        for layer, entry in zip(layers, layer_states):
            for k, v in entry["attrs"].items():
                # JSON turns tuples into lists; the env code only indexes them, but keep arrays as arrays
                setattr(layer, k, v.copy() if isinstance(v, np.ndarray) else v)
            if "rng" in entry:
                rng = np.random.Generator(np.random.PCG64())
                rng.bit_generator.state = entry["rng"]
                layer._np_random = rng


# ---------------------------------------------------------------------------------------- bookkeeping
class EpisodeTracker:
    """Running return and length of each sub-env's current episode; the finished ones in order."""

    def __init__(self, num_envs: int) -> None:
        self.returns = np.zeros(num_envs, dtype=np.float64)
        self.lengths = np.zeros(num_envs, dtype=np.int64)
        self.finished_returns: list[float] = []
        self.finished_lengths: list[int] = []

    def step(self, rewards: np.ndarray, dones: np.ndarray) -> list[float]:
        """Add one step's (true) rewards; returns the returns of the episodes that ended at this step."""
        self.returns += rewards
        self.lengths += 1
        ended = []
        for i in np.flatnonzero(dones):
            ended.append(float(self.returns[i]))
            self.finished_returns.append(float(self.returns[i]))
            self.finished_lengths.append(int(self.lengths[i]))
            self.returns[i] = 0.0
            self.lengths[i] = 0
        return ended

    def recent_mean(self, n: int = 100) -> float:
        tail = self.finished_returns[-n:]
        return float(np.mean(tail)) if tail else float("nan")

    def state_dict(self) -> dict[str, Any]:
        return {"returns": self.returns.copy(), "lengths": self.lengths.copy(),
                "finished_returns": list(self.finished_returns), "finished_lengths": list(self.finished_lengths)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.returns = np.asarray(state["returns"], dtype=np.float64).copy()
        self.lengths = np.asarray(state["lengths"], dtype=np.int64).copy()
        self.finished_returns = [float(x) for x in state["finished_returns"]]
        self.finished_lengths = [int(x) for x in state["finished_lengths"]]


def final_observations(next_obs: np.ndarray, dones: np.ndarray, infos: dict[str, Any]) -> np.ndarray:
    """The true s_{t+1} of every sub-env: ``next_obs`` where the episode goes on, ``final_obs`` where it ended."""
    real = np.array(next_obs, copy=True)
    if dones.any():
        finals = infos["final_obs"]
        for i in np.flatnonzero(dones):
            real[i] = finals[i]
    return real


def evaluate(policy: Callable[[np.ndarray], np.ndarray], env_id: str, episodes: int, seed: int) -> list[float]:
    """Returns of ``episodes`` episodes of ``policy`` (batch of observations -> batch of actions).

    The episodes run on their own envs (one per episode, stepped together), seeded ``seed + i``; the training
    envs and RNGs are untouched. Rewards are the env's true rewards, whatever the agent trains on."""
    g = gym()
    envs = [g.make(env_id) for _ in range(episodes)]
    obs = np.stack([e.reset(seed=seed + i)[0] for i, e in enumerate(envs)])
    returns = np.zeros(episodes)
    alive = np.ones(episodes, dtype=bool)
    while alive.any():
        idx = np.flatnonzero(alive)
        actions = policy(obs[idx])
        for j, i in enumerate(idx):
            o, r, term, trunc, _ = envs[i].step(actions[j])
            returns[i] += float(r)
            obs[i] = o
            if term or trunc:
                alive[i] = False
    for e in envs:
        e.close()
    return [float(r) for r in returns]
