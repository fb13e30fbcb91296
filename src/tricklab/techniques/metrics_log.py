"""JSONL metric log: one JSON object per metrics row, appended and flushed as training goes.

On resume the file is rewritten (atomically) from the checkpoint's history, so rows logged after the
checkpoint by the killed run do not appear twice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, TextIO

from tricklab.train.checkpoint import atomic_write_text
from tricklab.techniques.registry import register_technique
from tricklab.train.state import TrainState
from tricklab.train.technique import Technique


@register_technique
class MetricsLog(Technique):
    """Append every metrics row to ``metrics.jsonl`` in the run folder (or ``path``)."""

    name: ClassVar[str] = "metrics_log"
    reads = frozenset({"log_row"})  # writes each row after every technique that adds keys to it
    main_process_only: ClassVar[bool] = True

    def __init__(self, path: str | None = None) -> None:
        self.path = path
        self._file: TextIO | None = None

    def _path(self, state: TrainState) -> Path:
        if self.path is not None:
            return Path(self.path)
        if state.run_dir is None:
            raise ValueError("metrics_log needs a path: pass path=... or give the trainer a run_dir")
        return state.run_dir / "metrics.jsonl"

    def on_fit_start(self, state: TrainState) -> None:
        path = self._path(state)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "w", encoding="utf-8")  # noqa: SIM115 - kept open for the whole run

    def on_checkpoint_load(self, state: TrainState) -> None:
        path = self._path(state)
        if self._file is not None:
            self._file.close()
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in state.history))
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115

    def on_log(self, state: TrainState) -> None:
        if self._file is not None:
            self._file.write(json.dumps(state.history[-1]) + "\n")
            self._file.flush()

    def on_fit_end(self, state: TrainState) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def state_dict(self) -> dict[str, Any]:
        return {}
