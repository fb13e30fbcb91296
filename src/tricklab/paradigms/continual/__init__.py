"""Continual learning: split and permuted task streams, EWC (and online EWC), reservoir replay, progressive
networks, and the accuracy-matrix metrics (average accuracy, forgetting, backward transfer)."""

from tricklab.paradigms.continual.ewc import EWC, diagonal_fisher
from tricklab.paradigms.continual.metrics import average_accuracy, backward_transfer, forgetting
from tricklab.paradigms.continual.progressive import ProgressiveNet
from tricklab.paradigms.continual.replay import ReservoirBuffer
from tricklab.paradigms.continual.streams import ContinualTask, permuted_stream, split_stream

__all__ = ["EWC", "diagonal_fisher", "average_accuracy", "backward_transfer", "forgetting", "ProgressiveNet",
           "ReservoirBuffer", "ContinualTask", "permuted_stream", "split_stream"]
