"""The trainer, its events and state, the technique contract, checkpoints and reproducibility."""

from tricklab.train.events import EVENTS, EXCLUSIVE_SLOTS, PIPELINES, SLOT_TABLE, SLOTS, Slot
from tricklab.train.state import TrainState
from tricklab.train.technique import Plan, Technique, plan
from tricklab.train.trainer import Trainer, default_metrics

__all__ = ["EVENTS", "EXCLUSIVE_SLOTS", "PIPELINES", "SLOTS", "SLOT_TABLE", "Plan", "Slot", "Technique",
           "TrainState", "Trainer", "default_metrics", "plan"]
