"""Early stopping: stop when an evaluation metric has not improved for ``patience`` evaluations.

Improvement means better than the best so far by more than ``min_delta``. With ``restore_best`` the weights
of the best evaluation are put back at the end of training.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from tricklab.techniques.registry import register_technique
from tricklab.train.state import TrainState
from tricklab.train.technique import Technique


@register_technique
class EarlyStopping(Technique):
    """Stop training when ``metric`` stops improving for ``patience`` evaluations."""

    name: ClassVar[str] = "early_stopping"
    # reads the weights that were evaluated (eval_weights: at eval_end it runs before a weight averager swaps
    # them back out, so a kept "best" copy is what scored); restore_best writes the weights and their
    # normalisation statistics at fit_end
    reads = frozenset({"eval_weights", "eval_metrics"})
    writes = frozenset({"stop", "params", "norm_stats"})

    def __init__(self, metric: str = "accuracy", mode: str = "max", patience: int = 5, min_delta: float = 0.0,
                 restore_best: bool = False) -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"early_stopping mode must be 'max' or 'min', got {mode!r}")
        if not isinstance(patience, int) or patience < 1:
            raise ValueError(f"early_stopping patience must be a positive integer, got {patience!r}")
        self.metric, self.mode, self.patience = metric, mode, patience
        self.min_delta = float(min_delta)
        self.restore_best = bool(restore_best)
        self.best = -math.inf if mode == "max" else math.inf
        self.best_step = -1
        self.bad_evals = 0
        self.best_weights: dict[str, torch.Tensor] = {}

    def _improved(self, value: float) -> bool:
        return value > self.best + self.min_delta if self.mode == "max" else value < self.best - self.min_delta

    def on_eval_end(self, state: TrainState) -> None:
        if self.metric not in state.eval_metrics:
            raise ValueError(
                f"early_stopping watches {self.metric!r}, but the evaluation gives {sorted(state.eval_metrics)}"
            )
        value = float(state.eval_metrics[self.metric])
        if self._improved(value):
            self.best, self.best_step, self.bad_evals = value, state.step, 0
            if self.restore_best:
                # eval_end may run with averaged weights swapped in by another technique; what we keep is
                # whatever was just evaluated, which is what scored `value`
                self.best_weights = {k: v.detach().clone() for k, v in state.raw_model.state_dict().items()}
        else:
            self.bad_evals += 1
            if self.bad_evals >= self.patience:
                state.should_stop = True
                state.stop_reason = (f"early stopping: {self.metric} did not improve for {self.patience} "
                                     f"evaluations (best {self.best:.6g} at step {self.best_step})")

    def on_fit_end(self, state: TrainState) -> None:
        if self.restore_best and self.best_weights:
            state.raw_model.load_state_dict(self.best_weights)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step, "bad_evals": self.bad_evals,
                "best_weights": dict(self.best_weights)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_step = float(state["best"]), int(state["best_step"])
        self.bad_evals = int(state["bad_evals"])
        self.best_weights = dict(state["best_weights"])
