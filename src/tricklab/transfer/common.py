"""Pieces shared by the run functions of this package: the run result, config checks, data loading."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from tricklab.data.datasets import load_dataset
from tricklab.errors import ConfigError
# the one run-result shape of the paradigms (metrics, history, extras); shared, not redefined
from tricklab.uncertainty.paradigm import ParadigmResult

__all__ = ["DATASETS", "ParadigmResult", "Progress", "check", "load_arrays"]

Progress = Callable[[dict[str, Any]], None]
DATASETS = ("mnist1d", "fashion-mnist")


def check(cond: bool, name: str, valid: str, value: object) -> None:
    """Raise a ConfigError naming the field, its valid range and the value it got."""
    if not cond:
        raise ConfigError(f"{name} must be {valid}, got {value!r}")


def pos_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def pos_num(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0


def load_arrays(dataset: str, train_limit: int | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
    """(x_train, y_train, x_test, y_test, num_classes); ``train_limit`` keeps the first that many training
    examples (a fixed subset, the same for every seed)."""
    check(dataset in DATASETS, "dataset", f"one of {DATASETS}", dataset)
    ds = load_dataset(dataset)
    x, y = ds.x_train, ds.y_train
    if train_limit is not None:
        x, y = x[:train_limit], y[:train_limit]
    return x, y, ds.x_test, ds.y_test, ds.num_classes
