"""Optimizers by registry name, and ``create_optimizer`` with parameter-group rules.

Torch's own optimizers come through the registry as they are (never re-implemented). Parameter groups: with
``no_decay_norm_and_bias`` (the default), biases and normalisation weights (every parameter with fewer than
2 dimensions) get no weight decay, since decaying a scale or shift does not regularise the function class
the way decaying a weight matrix does (Loshchilov and Hutter 2019 apply decay to weights only).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from tricklab.errors import ConfigError
from tricklab.registry import Registry

OPTIMIZERS: Registry[type[torch.optim.Optimizer]] = Registry("optimizer")
for _name, _cls in (
    ("sgd", torch.optim.SGD),
    ("adam", torch.optim.Adam),
    ("adamw", torch.optim.AdamW),
    ("radam", torch.optim.RAdam),
    ("nadam", torch.optim.NAdam),
    ("rmsprop", torch.optim.RMSprop),
    ("adagrad", torch.optim.Adagrad),
):
    OPTIMIZERS.register(_name, _cls, summary=f"torch.optim.{_cls.__name__}")


def param_groups(model: nn.Module, weight_decay: float, no_decay_norm_and_bias: bool = True) -> list[dict[str, Any]]:
    """Split trainable parameters into a decayed group (matrices, kernels) and an undecayed one (ndim < 2)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (no_decay if (no_decay_norm_and_bias and p.ndim < 2) else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return [g for g in groups if g["params"]]


def create_optimizer(
    name: str,
    model_or_params: nn.Module | Iterable[Any],
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    no_decay_norm_and_bias: bool = True,
    **kwargs: Any,
) -> torch.optim.Optimizer:
    """Build the registered optimizer ``name`` over a model (with parameter-group rules) or parameters."""
    cls = OPTIMIZERS.get(name)
    if isinstance(model_or_params, nn.Module):
        params: Any = param_groups(model_or_params, weight_decay, no_decay_norm_and_bias)
    else:
        params = list(model_or_params)
    try:
        return cls(params, lr=lr, weight_decay=weight_decay, **kwargs)
    except TypeError as e:
        import inspect

        accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "params")]
        raise ConfigError(f"optimizer {name!r}: {e}. Accepted arguments: {accepted}") from e
    except ValueError as e:
        raise ConfigError(f"optimizer {name!r}: {e}") from e


__all__ = ["OPTIMIZERS", "create_optimizer", "param_groups"]
