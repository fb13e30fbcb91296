"""What an RL run reports to the lab: declared metrics and the result of one run.

Each number is a ``MetricSpec`` (``tricklab.evaluate.declared``), so the lab takes these lists as they are when it
registers a run function as a ``LoopTask``; ``ParadigmResult`` is the shape the lab's ``loop_result`` reads
(``metrics``, ``history``, ``extras``). Episode return is the headline metric; timings are shown without a
verdict because they are measured while other work shares the cores.
"""

from __future__ import annotations


from tricklab.evaluate.declared import MetricSpec, ParadigmResult  # noqa: F401 (re-exported: rl runs import it here)




#: metrics every gymnasium run (PPO, SAC, Rainbow, preferences) reports
EPISODE_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("episode_return", "Evaluation episode return (final policy)", True, fmt=".2f"),
    MetricSpec("mean_eval_return", "Evaluation return averaged over the run (area under the curve)", True,
               fmt=".2f"),
    MetricSpec("train_return", "Training episode return, last 100 episodes", True, fmt=".2f"),
    MetricSpec("env_steps", "Environment steps", True, unit="steps", verdict=False, fmt=",.0f"),
    MetricSpec("episodes", "Training episodes", True, unit="episodes", verdict=False, fmt=",.0f"),
    MetricSpec("train_seconds", "Training time (evaluation excluded)", False, unit="s", verdict=False, fmt=".1f"),
    MetricSpec("seconds_per_100k_steps", "Training time per 100k environment steps", False, unit="s",
               verdict=False, fmt=".1f"),
)

#: extra metrics of the preference run: how the learned reward did, in the true reward's terms
PREFERENCE_METRICS: tuple[MetricSpec, ...] = EPISODE_METRICS + (
    MetricSpec("labels", "Preference labels used", False, verdict=False, fmt=",.0f"),
    MetricSpec("reward_model_accuracy", "Reward model agreement with the true preferences (held-out pairs)", True,
               fmt=".3f"),
)

#: AlphaZero reports win rates (a draw counts one half)
ALPHAZERO_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("win_rate_random", "Score against a random player (win 1, draw 1/2)", True, fmt=".3f"),
    MetricSpec("win_rate_minimax", "Score against depth-limited minimax (win 1, draw 1/2)", True, fmt=".3f"),
    MetricSpec("loss_rate_minimax", "Losses against depth-limited minimax", False, fmt=".3f"),
    MetricSpec("self_play_games", "Self-play games", True, unit="games", verdict=False, fmt=",.0f"),
    MetricSpec("train_seconds", "Training time (evaluation excluded)", False, unit="s", verdict=False, fmt=".1f"),
)
