"""A technique that simulates a killed process, for the exact-resume tests (checkpointing, metrics log,
DropBlock schedule): it raises :class:`Crash` right after optimizer step ``at``."""

from __future__ import annotations

from tricklab.train import Technique
from tricklab.train.state import TrainState


class Crash(Exception):
    """Raised by :class:`Crasher`; tests expect it with ``pytest.raises(Crash)``."""


class Crasher(Technique):
    """Simulates a killed process: raises after optimizer step ``at``."""

    name = "crasher"

    def __init__(self, at: int) -> None:
        self.at = at

    def on_after_step(self, state: TrainState) -> None:
        if state.step == self.at:
            raise Crash
