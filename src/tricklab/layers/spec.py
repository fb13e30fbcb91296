"""What a layer family declares so that the layer contract test (tests/contracts/test_layers.py) can sweep it.

Every family module (``activations.py``, ``norms.py``, ``conv.py``, ...) ends with a tuple ``LAYER_SPECS`` of
:class:`LayerSpec`; :mod:`tricklab.layers.registry` gathers them into one registry, ``LAYERS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class LayerSpec:
    """One registered layer: how to build a small instance and a batch of example inputs for it.

    Attributes:
        name: registry name, unique over all families (e.g. ``"mish"``, ``"deform_conv2d"``).
        family: the module it lives in (``"activations"``, ``"conv"``, ...).
        build: returns a fresh, small instance (seeded by the caller with ``torch.manual_seed``).
        example: ``example(generator) -> tuple of positional inputs`` for ``forward``, small (<= ~10k numbers).
        summary: one line for ``tricklab list layers``.
        compile: False only where torch.compile cannot trace the layer; the reason goes in ``compile_note``.
        compile_note: why ``compile`` is False.
        grad_inputs: indices of the example inputs that are floating point and should receive gradients.
    """

    name: str
    family: str
    build: Callable[[], nn.Module]
    example: Callable[[torch.Generator], tuple[torch.Tensor, ...]]
    summary: str
    compile: bool = True
    compile_note: str = ""
    grad_inputs: tuple[int, ...] = (0,)
