"""Checkpointing: write the trainer's whole state every ``every_steps`` optimizer steps, keep the last K.

The trainer fires ``checkpoint_save`` at the end of each optimizer step, when every state is consistent
(see ``tricklab.train.events``); the files are written atomically and verified on load
(``tricklab.train.checkpoint``). Only the main process writes under DDP.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from tricklab.techniques.registry import register_technique
from tricklab.train.checkpoint import save_checkpoint
from tricklab.train.state import TrainState
from tricklab.train.technique import Technique


@register_technique
class Checkpointing(Technique):
    """Save a resumable checkpoint every ``every_steps`` steps and at the end; keep the newest ``keep_last``."""

    name: ClassVar[str] = "checkpointing"
    # The final checkpoint (fit_end) must hold the trained weights the saved optimizer state belongs to, so it
    # runs before early stopping puts the best weights back at fit_end. The data flow cannot say it: declared
    # as a reader of params (its snapshot reads the whole state), the writer-before-reader rule would run it
    # *after* the restore, the order every other reader of params needs (diagnostics after LSUV's init).
    before: ClassVar[frozenset[str]] = frozenset({"early_stopping"})
    main_process_only: ClassVar[bool] = True

    def __init__(self, every_steps: int = 500, keep_last: int = 3, folder: str | None = None) -> None:
        if not isinstance(every_steps, int) or every_steps < 1:
            raise ValueError(f"checkpointing every_steps must be a positive integer, got {every_steps!r}")
        if not isinstance(keep_last, int) or keep_last < 1:
            raise ValueError(f"checkpointing keep_last must be a positive integer, got {keep_last!r}")
        self.every_steps = every_steps
        self.keep_last = keep_last
        self.folder = folder
        self.last_saved_step = -1
        self.saved: list[str] = []

    def _folder(self, state: TrainState) -> Path:
        if self.folder is not None:
            return Path(self.folder)
        if state.run_dir is None:
            raise ValueError("checkpointing needs a folder: pass folder=... or give the trainer a run_dir")
        return state.run_dir / "checkpoints"

    def save(self, state: TrainState) -> Path:
        if state.snapshot is None:
            raise ValueError("checkpointing needs the trainer's snapshot (state.snapshot): run it in a Trainer")
        path = save_checkpoint(self._folder(state), state.step, state.snapshot(), keep_last=self.keep_last)
        self.last_saved_step = state.step
        self.saved.append(str(path))
        return path

    def on_checkpoint_save(self, state: TrainState) -> None:
        if state.step % self.every_steps == 0:
            self.save(state)

    def on_fit_end(self, state: TrainState) -> None:
        if state.step != self.last_saved_step and state.at_accumulation_boundary():
            self.save(state)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
