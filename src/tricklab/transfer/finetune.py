"""Fine-tuning helpers that work on any nn.Module: freezing, trained-parameter counts, discriminative learning
rates.

Discriminative (layer-wise) learning rates follow Howard & Ruder, "Universal Language Model Fine-tuning for Text
Classification" (ULMFiT), ACL 2018, eq. (2)-(3): layer group l gets ``lr_l = lr_{l+1} / factor`` (they use
factor 2.6), so the top group trains at ``lr`` and earlier, more general layers move less.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from torch import nn

from tricklab.errors import ConfigError

__all__ = ["count_parameters", "discriminative_param_groups", "freeze_except"]


def freeze_except(model: nn.Module, keep: Iterable[str]) -> None:
    """``requires_grad=False`` on every parameter whose name does not start with one of ``keep``'s prefixes
    (an empty ``keep`` freezes everything)."""
    prefixes = tuple(keep)
    for name, p in model.named_parameters():
        p.requires_grad_(bool(prefixes) and name.startswith(prefixes))


def count_parameters(model: nn.Module) -> dict[str, int]:
    """``{"total": ..., "trainable": ...}``: element counts of all parameters and of those with requires_grad
    (shared parameters counted once)."""
    params = list(model.parameters())  # parameters() already yields a shared parameter once
    return {"total": sum(p.numel() for p in params),
            "trainable": sum(p.numel() for p in params if p.requires_grad)}


def discriminative_param_groups(model: nn.Module, groups: Sequence[Sequence[str]], lr: float,
                                factor: float = 2.6) -> list[dict[str, Any]]:
    """Optimizer param groups with ``lr / factor**(G - 1 - g)`` for group g of ``groups`` (name prefixes, from
    the input side to the output side), ULMFiT eq. (3). Parameters that match no prefix are refused (name them
    in a group), frozen parameters are left out."""
    if lr <= 0 or factor < 1:
        raise ConfigError(f"discriminative_param_groups needs lr > 0 and factor >= 1, got lr={lr}, factor={factor}")
    if not groups:
        raise ConfigError("discriminative_param_groups needs at least one group of name prefixes")
    out: list[dict[str, Any]] = [{"params": [], "lr": lr / factor ** (len(groups) - 1 - g)} for g in range(len(groups))]
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        hit = [g for g, prefixes in enumerate(groups) if name.startswith(tuple(prefixes))]
        if not hit:
            raise ConfigError(f"parameter {name!r} is in no group; add its prefix to one of {list(groups)}")
        out[hit[-1]]["params"].append(p)
    return [g for g in out if g["params"]]
