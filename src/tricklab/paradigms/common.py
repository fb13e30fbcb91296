"""Pieces shared by the paradigms: the run result, config validation, the MNIST-1D arrays pooled by class, a small
MLP, atomic JSON writes and a seeded generator helper."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tricklab.evaluate.declared import ParadigmResult
from tricklab.data import load_dataset
from tricklab.errors import ConfigError

__all__ = ["ParadigmResult", "Progress", "check", "pos_int", "mnist1d_arrays", "flat_arrays", "mlp", "write_json",
           "accuracy"]

Progress = Callable[[dict[str, Any]], None]




def check(cond: bool, name: str, valid: str, value: object) -> None:
    """Raise a ConfigError naming the field, its valid range and the value it got."""
    if not cond:
        raise ConfigError(f"{name} must be {valid}, got {value!r}")


def pos_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def pos_num(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0


def mnist1d_arrays(pool: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """MNIST-1D (4000 train / 1000 test, length 40) as (x_train, y_train, x_test, y_test); with ``pool`` the
    train and test splits are concatenated into (x, y, empty, empty) for settings that split by class."""
    ds = load_dataset("mnist1d")
    if pool:
        x, y = torch.cat([ds.x_train, ds.x_test]), torch.cat([ds.y_train, ds.y_test])
        return x, y, x[:0], y[:0]
    return ds.x_train, ds.y_train, ds.x_test, ds.y_test


def flat_arrays(name: str, pool: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Like :func:`mnist1d_arrays` for any registered classification set, inputs flattened to (N, D) (e.g. the 8x8
    ``digits`` to 64 features, ``fashion-mnist`` to 784)."""
    ds = load_dataset(name)
    xtr, xte = ds.x_train.flatten(1).float(), ds.x_test.flatten(1).float()
    if pool:
        x, y = torch.cat([xtr, xte]), torch.cat([ds.y_train, ds.y_test])
        return x, y, x[:0], y[:0]
    return xtr, ds.y_train, xte, ds.y_test


def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear-ReLU stack ``sizes[0] -> ... -> sizes[-1]`` (no norm layers: per-example functional calls and
    per-sample gradients stay exact)."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


@torch.no_grad()
def accuracy(logits: Tensor, y: Tensor) -> float:
    return float((logits.argmax(-1) == y).double().mean())


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON atomically (temp file in the same folder, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
