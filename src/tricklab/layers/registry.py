"""``LAYERS``: every layer of every family, gathered from the families' ``LAYER_SPECS``.

Importing this module imports every family module (pure torch, no optional dependency). The contract test
(tests/contracts/test_layers.py) sweeps it; ``tricklab list layers`` prints it.
"""

from __future__ import annotations

import importlib

from tricklab.layers.spec import LayerSpec
from tricklab.registry import Registry

#: family modules under tricklab.layers that declare LAYER_SPECS, in documentation order
FAMILIES: tuple[str, ...] = (
    "activations", "norms", "init", "conv", "deform", "dropout", "attention", "positional", "halting",
    "recurrent", "ssm", "graph", "bayesian",
)

LAYERS: Registry[LayerSpec] = Registry("layer")


def _collect() -> None:
    for family in FAMILIES:
        try:
            module = importlib.import_module(f"tricklab.layers.{family}")
        except ModuleNotFoundError as e:
            if e.name == f"tricklab.layers.{family}":
                continue  # family not written yet
            raise
        for spec in getattr(module, "LAYER_SPECS", ()):
            LAYERS.register(spec.name, spec, summary=f"[{spec.family}] {spec.summary}")


_collect()

__all__ = ["FAMILIES", "LAYERS", "LayerSpec"]
