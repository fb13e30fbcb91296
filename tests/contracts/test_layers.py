"""Contract sweep over every registered layer (tricklab.layers.registry.LAYERS).

For each layer: a small instance on its example inputs gives finite outputs of a stable shape; backpropagating
the sum of its outputs reaches every trainable parameter with a finite gradient (and the floating inputs it
names); and torch.compile (backend "aot_eager": Dynamo tracing + AOTAutograd, without compiling kernels, so
the sweep stays fast on 2 CPU cores) gives the eager outputs and gradients. Reference: the layer's own eager
forward and backward.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from tricklab.layers.registry import LAYERS

NAMES = LAYERS.names()


def _tensors(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _tensors(o)]
    return []


def _build(name: str) -> tuple[torch.nn.Module, tuple[Any, ...]]:
    spec = LAYERS.get(name)
    torch.manual_seed(0)
    layer = spec.build()
    inputs = spec.example(torch.Generator().manual_seed(0))
    assert isinstance(inputs, tuple), f"{name}: example() must return a tuple of inputs"
    return layer, inputs


def test_registry_covers_the_families() -> None:
    families = {LAYERS.get(n).family for n in NAMES}
    assert len(NAMES) >= 10, NAMES
    assert {"graph"} <= families


@pytest.mark.parametrize("name", NAMES)
def test_forward_backward_reaches_every_parameter(name: str) -> None:
    spec = LAYERS.get(name)
    layer, inputs = _build(name)
    layer.train()
    inputs = tuple(x.detach().clone().requires_grad_(True) if i in spec.grad_inputs and x.is_floating_point()
                   else x for i, x in enumerate(inputs))
    outs = _tensors(layer(*inputs))
    assert outs, f"{name}: forward returned no tensor"
    floats = [o for o in outs if o.is_floating_point()]
    assert floats, f"{name}: no floating output to differentiate"
    for o in floats:
        assert torch.isfinite(o).all(), f"{name}: non-finite output"
    sum(o.sum() for o in floats).backward()
    for pname, p in layer.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{name}: parameter {pname} got no gradient"
            assert torch.isfinite(p.grad).all(), f"{name}: parameter {pname} has a non-finite gradient"
    for i in spec.grad_inputs:
        x = inputs[i]
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            assert x.grad is not None and torch.isfinite(x.grad).all(), f"{name}: input {i} got no finite gradient"


@pytest.mark.parametrize("name", NAMES)
def test_torch_compile_matches_eager(name: str) -> None:
    spec = LAYERS.get(name)
    if not spec.compile:
        assert spec.compile_note, f"{name}: compile=False needs a compile_note saying why"
        pytest.skip(spec.compile_note)
    layer, inputs = _build(name)
    layer.eval()  # stochastic layers are deterministic in eval, so both paths must agree
    torch._dynamo.reset()
    compiled = torch.compile(layer, backend="aot_eager")
    with torch.no_grad():
        eager = _tensors(layer(*inputs))
        traced = _tensors(compiled(*inputs))
    assert len(eager) == len(traced)
    for a, b in zip(eager, traced):
        assert a.shape == b.shape
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
