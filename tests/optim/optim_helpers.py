"""Shared helpers for the optimizer tests: identical parameter sets and seeded gradient streams."""

from __future__ import annotations

from collections.abc import Callable

import torch

SHAPES = [(8, 5), (8,), (3, 8), (3,), (4, 2, 3), (6,)]


def make_params(seed: int = 0, shapes: list[tuple[int, ...]] = SHAPES) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g, dtype=torch.float64 if False else torch.float32))
            for s in shapes]


def clone_params(params: list[torch.nn.Parameter]) -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(p.detach().clone()) for p in params]


def feed(opts_params: list[tuple[torch.optim.Optimizer, list[torch.nn.Parameter]]], steps: int, seed: int = 1,
         grad_scale: float = 1.0, check: Callable[[int], None] | None = None) -> None:
    """Step each optimizer ``steps`` times with the same seeded gradients (cloned per optimizer: some
    optimizers, e.g. pytorch_optimizer's LARS and every GC user, change .grad in place)."""
    g = torch.Generator().manual_seed(seed)
    ref = opts_params[0][1]
    for t in range(steps):
        grads = [torch.randn(p.shape, generator=g) * grad_scale for p in ref]
        for opt, params in opts_params:
            for p, gr in zip(params, grads):
                p.grad = gr.clone()
            opt.step()
        if check is not None:
            check(t)


def assert_close(a: list[torch.Tensor], b: list[torch.Tensor], rtol: float = 1e-5, atol: float = 1e-6) -> None:
    for x, y in zip(a, b):
        torch.testing.assert_close(x.detach(), y.detach(), rtol=rtol, atol=atol)


def assert_equal(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    for x, y in zip(a, b):
        assert torch.equal(x.detach(), y.detach()), (x - y).abs().max()
