"""LSUV (Mishkin & Matas 2016): data-dependent init on the first training batch.

The functional core is :func:`tricklab.layers.init.lsuv_init_` (orthogonal init, then each Linear/Conv layer
rescaled in forward order until its output variance on the batch is 1). The technique runs it once, at the first
``batch_start`` of a fresh run, on that batch; a resumed run (whose weights come from the checkpoint) never
re-initialises: ``done`` is part of the checkpointed state.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from tricklab.layers.init import lsuv_init_
from tricklab.techniques.registry import register_technique
from tricklab.train.state import TrainState
from tricklab.train.technique import Technique


@register_technique
class LSUV(Technique):
    """Layer-sequential unit-variance init on the first batch (Mishkin & Matas 2016)."""

    name: ClassVar[str] = "lsuv"
    reads = frozenset({"batch.inputs"})  # the batch as the model will see it (after every augmentation)
    writes = frozenset({"params", "rng"})  # the orthogonal init draws from torch's global generator

    def __init__(self, tol: float = 0.1, max_iters: int = 10, orthogonal: bool = True) -> None:
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol > 0:
            raise ValueError(f"lsuv tol must be a positive number (e.g. 0.1), got {tol!r}")
        if isinstance(max_iters, bool) or not isinstance(max_iters, int) or max_iters < 1:
            raise ValueError(f"lsuv max_iters must be a positive int, got {max_iters!r}")
        self.tol = float(tol)
        self.max_iters = max_iters
        self.orthogonal = bool(orthogonal)
        self.done = False
        self.results: list[dict[str, Any]] = []

    def on_batch_start(self, state: TrainState) -> None:
        if self.done:
            return
        self.done = True
        if state.step != 0 or state.resumed_from is not None:
            return  # the weights already come from training; re-initialising them would destroy it
        model = state.raw_model
        self.results = lsuv_init_(model, state.inputs, tol=self.tol, max_iters=self.max_iters,
                                  orthogonal=self.orthogonal)
        if state.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            # each rank saw its own shard: take rank 0's weights so every replica starts identical (as DDP
            # itself does at construction)
            with torch.no_grad():
                for p in model.parameters():
                    torch.distributed.broadcast(p.data, src=0)

    def state_dict(self) -> dict[str, Any]:
        return {"done": self.done, "results": [dict(r) for r in self.results]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.done = bool(state["done"])
        self.results = [dict(r) for r in state.get("results", [])]
