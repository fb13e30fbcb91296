"""Reinforcement learning: gymnasium environments, normalizers, GAE, replay buffers, PPO, SAC, Rainbow DQN,
AlphaZero and learning from preferences. Each algorithm has a config dataclass and a ``run_<algo>`` function that
returns a :class:`~tricklab.rl.metrics.ParadigmResult` (episode return as the metric). gymnasium is the ``rl``
extra; it is imported only when an environment is made."""

from tricklab.rl.metrics import ALPHAZERO_METRICS, EPISODE_METRICS, PREFERENCE_METRICS, MetricSpec, ParadigmResult

__all__ = ["ALPHAZERO_METRICS", "EPISODE_METRICS", "PREFERENCE_METRICS", "MetricSpec", "ParadigmResult"]
