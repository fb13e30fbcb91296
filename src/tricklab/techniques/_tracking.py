"""Shared parts of the experiment-tracking techniques (mlflow_log.py, tensorboard_log.py): the parameters of a
run (its resolved recipe, flattened to dotted keys) and the numbers of a metrics row."""

from __future__ import annotations

import contextlib
import json
import math
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from tricklab.train.state import TrainState

__all__ = ["flatten", "numeric_items", "run_parameters"]


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optimizer": {"lr": 0.01}}`` -> ``{"optimizer.lr": 0.01}``; lists (the techniques) become JSON text,
    empty mappings ``{}``; scalars stay as they are."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        elif isinstance(value, (dict, list, tuple)):
            out[name] = json.dumps(value, sort_keys=True)
        else:
            out[name] = value
    return out


def run_parameters(state: TrainState, params: dict[str, Any] | None) -> dict[str, Any]:
    """The run's resolved recipe (``recipe.yaml`` of the run folder, written before training starts) flattened,
    with ``params`` (given by the caller) on top."""
    recipe: dict[str, Any] = {}
    path = Path(state.run_dir) / "recipe.yaml" if state.run_dir is not None else None
    if path is not None and path.is_file():
        recipe = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return {**flatten(recipe), **flatten(dict(params or {}))}


def numeric_items(row: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a metrics row, ``step`` excepted (it is the x axis)."""
    return {k: float(v) for k, v in row.items() if k != "step" and isinstance(v, (int, float))
            and not isinstance(v, bool) and math.isfinite(float(v))}


@contextlib.contextmanager
def global_rngs_kept() -> Iterator[None]:
    """Run tracking-library code without moving the training's global RNGs: MLflow's client may draw from
    Python's ``random`` (retry jitter, generated names) on some calls, which would change every later random
    draw of the run and break exact resume. Python, NumPy and torch CPU states are restored afterwards."""
    py, npy, th = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
        torch.set_rng_state(th)
