"""Early stopping: stop when an evaluation metric has not improved for ``patience`` evaluations.

Improvement means better than the best so far by more than ``min_delta``. With ``restore_best`` the weights
of the best evaluation are put back at the end of training.

``second_metric`` watches two metrics at once with the rule of Velickovic et al.'s GAT code (``execute_cora.py``
of PetarV-/GAT; the paper: "early stopping strategy on both the cross-entropy loss and accuracy ... with a
patience of 100 epochs"): an evaluation where either metric is at least as good as its best so far (ties count)
resets the patience counter and updates that metric's best; the kept weights are those of the last evaluation
where *both* were at least as good as their bests.
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
                 restore_best: bool = False, second_metric: str | None = None, second_mode: str = "max") -> None:
        if mode not in ("max", "min") or second_mode not in ("max", "min"):
            raise ValueError(f"early_stopping mode and second_mode must be 'max' or 'min', got {mode!r}, "
                             f"{second_mode!r}")
        if not isinstance(patience, int) or patience < 1:
            raise ValueError(f"early_stopping patience must be a positive integer, got {patience!r}")
        self.metric, self.mode, self.patience = metric, mode, patience
        self.min_delta = float(min_delta)
        self.restore_best = bool(restore_best)
        self.best = -math.inf if mode == "max" else math.inf
        self.best_step = -1
        self.bad_evals = 0
        self.best_weights: dict[str, torch.Tensor] = {}
        self.second_metric, self.second_mode = second_metric, second_mode
        self.second_best = -math.inf if second_mode == "max" else math.inf

    def _improved(self, value: float) -> bool:
        return value > self.best + self.min_delta if self.mode == "max" else value < self.best - self.min_delta

    def on_eval_end(self, state: TrainState) -> None:
        if self.metric not in state.eval_metrics:
            raise ValueError(
                f"early_stopping watches {self.metric!r}, but the evaluation gives {sorted(state.eval_metrics)}"
            )
        value = float(state.eval_metrics[self.metric])
        if self.second_metric is not None:
            self._both(state, value)
            return
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

    def _both(self, state: TrainState, value: float) -> None:
        """Velickovic et al.'s rule over ``metric`` and ``second_metric`` (see the module docstring)."""
        if self.second_metric not in state.eval_metrics:
            raise ValueError(f"early_stopping watches {self.second_metric!r} (second_metric), but the evaluation "
                             f"gives {sorted(state.eval_metrics)}")
        second = float(state.eval_metrics[self.second_metric])

        def at_least(v: float, best: float, mode: str) -> bool:
            return v >= best + self.min_delta if mode == "max" else v <= best - self.min_delta

        ok1, ok2 = at_least(value, self.best, self.mode), at_least(second, self.second_best, self.second_mode)
        if ok1 or ok2:
            if ok1 and ok2:
                self.best_step = state.step
                if self.restore_best:
                    self.best_weights = {k: v.detach().clone() for k, v in state.raw_model.state_dict().items()}
            self.best = max(self.best, value) if self.mode == "max" else min(self.best, value)
            self.second_best = (max(self.second_best, second) if self.second_mode == "max"
                                else min(self.second_best, second))
            self.bad_evals = 0
        else:
            self.bad_evals += 1
            if self.bad_evals >= self.patience:
                state.should_stop = True
                state.stop_reason = (f"early stopping: neither {self.metric} nor {self.second_metric} improved for "
                                     f"{self.patience} evaluations (best {self.best:.6g} and {self.second_best:.6g}; "
                                     f"kept weights from step {self.best_step})")

    def on_fit_end(self, state: TrainState) -> None:
        if self.restore_best and self.best_weights:
            state.raw_model.load_state_dict(self.best_weights)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step, "bad_evals": self.bad_evals,
                "best_weights": dict(self.best_weights), "second_best": self.second_best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_step = float(state["best"]), int(state["best_step"])
        self.bad_evals = int(state["bad_evals"])
        self.best_weights = dict(state["best_weights"])
        self.second_best = float(state.get("second_best", self.second_best))
