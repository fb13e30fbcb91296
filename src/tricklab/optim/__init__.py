"""Optimizers by registry name, and ``create_optimizer`` with parameter-group rules.

Torch's own optimizers come through the registry as they are (never re-implemented); ours live one per file
(``lamb.py``, ``lars.py``, ``lookahead.py``, ``ranger.py``, ``sam.py``) beside the gradient transform
``centralize.py``. Wrappers (``lookahead``, ``sam``) take ``base=<registry name>`` for the inner optimizer.

Parameter groups built from a model (see ``param_groups``):

* ``no_decay_norm_and_bias`` (default on): biases and normalisation weights (every parameter with fewer than
  2 dimensions) get no weight decay, since decaying a scale or shift does not regularise the function class
  the way decaying a weight matrix does (Loshchilov and Hutter 2019 apply decay to weights only).
* ``layer_decay`` (layer-wise learning-rate decay for fine-tuning, Clark et al. 2020 / Bao et al. 2022):
  the model's *layers* are its top-level child modules that hold trainable parameters, in registration
  order, preceded by the parameters registered directly on the root module (if any; e.g. a ViT's cls token)
  as the earliest layer. The last layer gets ``lr``; a layer ``d`` positions before it gets
  ``lr * layer_decay ** d``.
* ``lr_groups`` (discriminative learning rates, Howard and Ruder 2018): ``{name prefix: multiplier}``; a
  parameter whose dotted name equals a prefix or starts with ``prefix + "."`` has its lr multiplied by it
  (the longest matching prefix wins). Multipliers from both rules multiply.

Parameters that end up with the same (weight decay, lr) share one group.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from tricklab.errors import ConfigError
from tricklab.optim.centralize import centralize_
from tricklab.optim.lamb import LAMB
from tricklab.optim.lars import LARS
from tricklab.optim.lookahead import Lookahead
from tricklab.optim.ranger import Ranger
from tricklab.optim.sam import SAM, sam_perturbation
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
for _name, _cls in (("lamb", LAMB), ("lars", LARS), ("lookahead", Lookahead), ("ranger", Ranger), ("sam", SAM)):
    OPTIMIZERS.register(_name, _cls)

#: optimizers that wrap another one named by the ``base`` argument
WRAPPERS = frozenset({"lookahead", "sam"})


def _layer_depths(model: nn.Module) -> dict[int, int]:
    """id(parameter) -> depth (0 for the last layer), by the layer grouping of the module docstring."""
    layers: list[list[nn.Parameter]] = []
    own = [p for p in model.parameters(recurse=False) if p.requires_grad]
    if own:
        layers.append(own)
    for child in model.children():
        ps = [p for p in child.parameters() if p.requires_grad]
        if ps:
            layers.append(ps)
    depths: dict[int, int] = {}
    for i, ps in enumerate(layers):
        for p in ps:
            depths.setdefault(id(p), len(layers) - 1 - i)  # a shared parameter counts in its first layer
    return depths


def _prefix_multiplier(name: str, lr_groups: dict[str, float], used: set[str]) -> float:
    best = None
    for prefix in lr_groups:
        if (name == prefix or name.startswith(prefix.rstrip(".") + ".")) and (best is None or len(prefix) > len(best)):
            best = prefix
    if best is None:
        return 1.0
    used.add(best)
    return float(lr_groups[best])


def param_groups(
    model: nn.Module,
    weight_decay: float,
    no_decay_norm_and_bias: bool = True,
    lr: float | None = None,
    layer_decay: float | None = None,
    lr_groups: dict[str, float] | None = None,
) -> list[dict[str, Any]]:
    """Split trainable parameters into groups by weight decay (ndim < 2 undecayed) and lr multiplier.

    Without ``layer_decay`` / ``lr_groups`` this is the decayed group then the undecayed one (no ``lr``
    key). With either, each group also carries ``lr`` = ``lr`` x its multiplier (and ``lr_scale``).
    """
    if layer_decay is not None and not layer_decay > 0:
        raise ConfigError(f"layer_decay must be positive, got {layer_decay!r}")
    depths = _layer_depths(model) if layer_decay is not None else {}
    used: set[str] = set()
    groups: dict[tuple[bool, float], dict[str, Any]] = {}
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        undecayed = no_decay_norm_and_bias and p.ndim < 2
        wd = 0.0 if undecayed else weight_decay
        mult = 1.0
        if layer_decay is not None:
            mult *= layer_decay ** depths[id(p)]
        if lr_groups:
            mult *= _prefix_multiplier(name, lr_groups, used)
        key = (undecayed, mult)
        if key not in groups:
            groups[key] = {"params": [], "weight_decay": wd}
            if layer_decay is not None or lr_groups:
                if lr is None:
                    raise ConfigError("param_groups needs lr to apply layer_decay / lr_groups")
                groups[key].update(lr=lr * mult, lr_scale=mult)
        groups[key]["params"].append(p)
    if lr_groups:
        unused = sorted(set(lr_groups) - used)
        if unused:
            raise ConfigError(f"lr_groups prefix(es) {unused} match no trainable parameter name; names look like "
                              f"{[n for n, _ in list(model.named_parameters())[:4]]}")
    # decayed groups first, then undecayed (the historical order); within each, first-seen order
    return [g for k, g in groups.items() if not k[0]] + [g for k, g in groups.items() if k[0]]


def create_optimizer(
    name: str,
    model_or_params: nn.Module | Iterable[Any],
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    no_decay_norm_and_bias: bool = True,
    layer_decay: float | None = None,
    lr_groups: dict[str, float] | None = None,
    **kwargs: Any,
) -> torch.optim.Optimizer:
    """Build the registered optimizer ``name`` over a model (with parameter-group rules) or parameters.

    Wrappers name their inner optimizer: ``create_optimizer("lookahead", model, base="adam", k=5, alpha=0.5)``,
    ``create_optimizer("sam", model, base="sgd", rho=0.05, momentum=0.9)``; ``lr`` / ``weight_decay`` and
    the other keyword arguments not used by the wrapper go to the inner optimizer.
    """
    key = str(name).lower()
    cls = OPTIMIZERS.get(key)
    if key in WRAPPERS:
        base = kwargs.get("base")
        if base is None:
            raise ConfigError(f"optimizer {name!r} wraps another optimizer: name it with base=, e.g. base='adam'")
        if isinstance(base, str):
            if base.lower() in WRAPPERS:
                raise ConfigError(f"optimizer {name!r}: base={base!r} is itself a wrapper; name a plain optimizer")
            kwargs["base"] = OPTIMIZERS.get(base)
    if isinstance(model_or_params, nn.Module):
        params: Any = param_groups(model_or_params, weight_decay, no_decay_norm_and_bias, lr=lr,
                                   layer_decay=layer_decay, lr_groups=lr_groups)
    else:
        if layer_decay is not None or lr_groups:
            raise ConfigError("layer_decay and lr_groups need a model (parameter names and layers), not bare "
                              "parameters")
        params = list(model_or_params)
    try:
        return cls(params, lr=lr, weight_decay=weight_decay, **kwargs)
    except TypeError as e:
        import inspect

        accepted = [p for p in inspect.signature(cls.__init__).parameters
                    if p not in ("self", "params", "kwargs")]
        raise ConfigError(f"optimizer {name!r}: {e}. Accepted arguments: {accepted}") from e
    except ValueError as e:
        raise ConfigError(f"optimizer {name!r}: {e}") from e


__all__ = ["LAMB", "LARS", "OPTIMIZERS", "SAM", "WRAPPERS", "Lookahead", "Ranger", "centralize_",
           "create_optimizer", "param_groups", "sam_perturbation"]
