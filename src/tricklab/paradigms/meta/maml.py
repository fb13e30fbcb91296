"""Model-agnostic meta-learning (Finn et al., 2017) with ``torch.func``: second-order MAML, first-order MAML and
the adaptation both share.

Inner loop (Finn et al. eq. 1), ``steps`` times on the support set S:  theta' = theta - alpha grad_theta L_S(theta).
Meta-objective (eq. 2-3): min_theta sum_tasks L_Q(theta'(theta)). Second-order MAML backpropagates through the
inner gradients (Hessian-vector products); first-order MAML treats grad L_S as a constant, so the meta-gradient is
grad L_Q evaluated at theta'.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad

__all__ = ["Params", "adapt", "init_params", "maml_query_loss", "task_loss"]

Params = dict[str, Tensor]


def task_loss(model: nn.Module, params: Params, x: Tensor, y: Tensor,
              loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy) -> Tensor:
    """``loss_fn`` of ``model`` called with ``params`` in place of its own."""
    return loss_fn(functional_call(model, params, (x,)), y)


def adapt(model: nn.Module, params: Params, x: Tensor, y: Tensor, inner_lr: float, steps: int,
          first_order: bool = False) -> Params:
    """``steps`` gradient steps of size ``inner_lr`` on (x, y) from ``params``. With ``first_order`` the inner
    gradients are cut from the graph (FOMAML); otherwise the result stays differentiable in ``params`` to second
    order."""
    if first_order:
        # The inner gradients are constants here, so plain autograd on detached copies does (about 2x faster than
        # torch.func.grad on a small MLP); theta' = theta - lr * g keeps the identity path to theta for FOMAML.
        for _ in range(steps):
            leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
            with torch.enable_grad():
                g = torch.autograd.grad(task_loss(model, leaves, x, y), list(leaves.values()))
            params = {k: v - inner_lr * gi for (k, v), gi in zip(params.items(), g)}
        return params
    g_fn = grad(lambda p: task_loss(model, p, x, y))
    for _ in range(steps):
        g = g_fn(params)
        params = {k: v - inner_lr * g[k] for k, v in params.items()}
    return params


def maml_query_loss(model: nn.Module, params: Params, xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor,
                    inner_lr: float, steps: int, first_order: bool = False) -> tuple[Tensor, Tensor]:
    """(query loss after adaptation on the support set, query logits): its gradient w.r.t. ``params`` is the
    MAML meta-gradient of one task (FOMAML's with ``first_order``)."""
    adapted = adapt(model, params, xs, ys, inner_lr, steps, first_order)
    logits = functional_call(model, adapted, (xq,))
    return F.cross_entropy(logits, yq), logits


def init_params(model: nn.Module) -> Params:
    """The model's parameters as a dict of leaf tensors that require grad (the meta-parameters theta)."""
    return {k: v.detach().clone().requires_grad_(True) for k, v in model.named_parameters()}
