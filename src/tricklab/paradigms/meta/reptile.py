"""Reptile (Nichol, Achiam & Schulman, 2018): a first-order meta-learner without a query set.

Per task: k steps of SGD on the task from theta give phi (here on the episode's support + query examples, the
paper's "train on the task"); the meta-update moves theta toward the adapted weights,
theta <- theta + epsilon * mean_tasks(phi - theta)  (Algorithm 2, batched version).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tricklab.paradigms.meta.maml import Params, adapt

__all__ = ["reptile_step"]


@torch.no_grad()
def reptile_step(model: nn.Module, params: Params, tasks: list[tuple[Tensor, Tensor]], inner_lr: float,
                 inner_steps: int, epsilon: float) -> Params:
    """One batched Reptile meta-update of ``params`` over ``tasks`` ((x, y) each); returns new parameters."""
    deltas = {k: torch.zeros_like(v) for k, v in params.items()}
    for x, y in tasks:
        with torch.enable_grad():
            phi = adapt(model, {k: v.detach() for k, v in params.items()}, x, y, inner_lr, inner_steps,
                        first_order=True)
        for k in deltas:
            deltas[k] += phi[k].detach() - params[k]
    return {k: (v + epsilon * deltas[k] / len(tasks)).detach() for k, v in params.items()}
