"""Log a run to TensorBoard event files: every metrics row as scalars at its step, and the resolved recipe as
hyperparameters (the HParams dashboard) and as text.

The events go to ``log_dir`` (default: ``tensorboard`` inside the run folder), written with torch's
``SummaryWriter`` (the ``tensorboard`` package must be installed: extra ``tensorboard``). TensorBoard has no
artifact store: the model file stays in the run folder beside the events (``model.safetensors``). A resumed
run opens its writer with ``purge_step`` = the checkpoint's step + 1, so the events the killed run wrote after
the checkpoint are dropped by TensorBoard's reader instead of showing twice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

from tricklab.errors import ConfigError
from tricklab.techniques._tracking import numeric_items, run_parameters
from tricklab.techniques.registry import register_technique
from tricklab.train.state import TrainState
from tricklab.train.technique import Technique

__all__ = ["TensorboardLog"]


def _hparam(value: Any) -> Any:
    """HParams take numbers, strings and booleans; anything else (None) is shown as text."""
    return value if isinstance(value, (bool, int, float, str)) else json.dumps(value)


@register_technique
class TensorboardLog(Technique):
    """Write the metrics per step and the recipe of a run as TensorBoard events."""

    name: ClassVar[str] = "tensorboard_log"
    reads = frozenset({"log_row"})  # every row after the techniques that add keys to it
    main_process_only: ClassVar[bool] = True

    def __init__(self, log_dir: str | None = None, params: dict[str, Any] | None = None) -> None:
        self.log_dir, self.params = log_dir, dict(params or {})
        self._writer: Any = None
        self._purge_step: int | None = None

    def _dir(self, state: TrainState) -> Path:
        if self.log_dir is not None:
            return Path(self.log_dir)
        if state.run_dir is None:
            raise ValueError("tensorboard_log needs log_dir=... or a trainer with a run_dir "
                             "(default run_dir/tensorboard)")
        return Path(state.run_dir) / "tensorboard"

    def _open(self, state: TrainState) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
            from torch.utils.tensorboard.summary import hparams
        except ImportError as e:
            raise ConfigError("tensorboard_log needs TensorBoard: pip install 'tricklab[tensorboard]'") from e
        self._writer = SummaryWriter(str(self._dir(state)), purge_step=self._purge_step)
        if self._purge_step is not None:
            return  # the recipe was written when the run started
        params = {k: _hparam(v) for k, v in run_parameters(state, self.params).items()}
        # the HParams dashboard: the recipe, and the metrics to show against it (read from the scalars)
        for summary in hparams(params, {"eval_accuracy": 0.0, "train_loss": 0.0}):
            self._writer.file_writer.add_summary(summary)
        text = "\n".join(f"    {k}: {v}" for k, v in params.items())  # indented: markdown code block
        self._writer.add_text("recipe", text, global_step=0)

    def on_checkpoint_load(self, state: TrainState) -> None:
        self._purge_step = state.step + 1

    def on_log(self, state: TrainState) -> None:
        if self._writer is None:
            self._open(state)
        row = state.history[-1]
        for key, value in numeric_items(row).items():
            self._writer.add_scalar(key, value, global_step=int(row["step"]))
        self._writer.flush()

    def on_fit_end(self, state: TrainState) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def state_dict(self) -> dict[str, Any]:
        return {}
