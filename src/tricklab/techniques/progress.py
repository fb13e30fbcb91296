"""Progress display: a rich progress bar on a terminal, plain periodic lines otherwise (logs, CI)."""

from __future__ import annotations

import sys
import time
from typing import Any, ClassVar, TextIO

from tricklab.techniques.registry import register_technique
from tricklab.train.state import TrainState
from tricklab.train.technique import Technique


def _fmt(row: dict[str, Any], total: int | None = None) -> str:
    parts = [f"step {row['step']}" + (f"/{total}" if total else "")]
    for key in ("train_loss", "eval_loss", "eval_accuracy", "lr"):
        if key in row and row[key] is not None:
            parts.append(f"{key} {row[key]:.4g}")
    parts.append(f"{row.get('seconds', 0.0):.1f}s")
    return " | ".join(parts)


@register_technique
class Progress(Technique):
    """Show training progress: a live bar on a TTY, else a line at most every ``every_seconds``."""

    name: ClassVar[str] = "progress"
    reads = frozenset({"log_row", "stop", "accum_steps"})
    main_process_only: ClassVar[bool] = True

    def __init__(self, every_seconds: float = 5.0, stream: TextIO | None = None, rich: bool | None = None) -> None:
        self.every_seconds = float(every_seconds)
        self.stream = stream
        self.rich = rich
        self._bar: Any = None
        self._task: Any = None
        self._last_print = 0.0
        self._total: int | None = None

    def _out(self) -> TextIO:
        return self.stream if self.stream is not None else sys.stderr

    def on_fit_start(self, state: TrainState) -> None:
        self._total = state.planned_steps()
        use_rich = self.rich if self.rich is not None else self._out().isatty()
        if use_rich:
            # imported here: `import tricklab` loads no display library (tests/test_import.py)
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as Bar

            self._bar = Bar(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                            TextColumn("{task.fields[info]}"), console=Console(file=self._out()), transient=False)
            self._bar.start()
            self._task = self._bar.add_task("train", total=self._total, info="")
        self._last_print = time.monotonic()

    def on_checkpoint_load(self, state: TrainState) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=state.step)

    def on_after_step(self, state: TrainState) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=state.step)

    def on_log(self, state: TrainState) -> None:
        row = state.history[-1]
        if self._bar is not None:
            self._bar.update(self._task, info=_fmt(row))
            return
        now = time.monotonic()
        if now - self._last_print >= self.every_seconds or any(k.startswith("eval_") for k in row):
            print(f"[train] {_fmt(row, self._total)}", file=self._out(), flush=True)
            self._last_print = now

    def on_fit_end(self, state: TrainState) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=state.step)
            self._bar.stop()
            self._bar = None
        if state.stop_reason:
            print(state.stop_reason, file=self._out())

    def state_dict(self) -> dict[str, Any]:
        return {}
