"""Contract sweep over tricklab.losses.LOSSES: every entry is an nn.Module class with a one-line summary and a
classmethod ``example(generator)``; on its example it gives a finite scalar for "mean" and "sum", the declared
shape for "none" (whose sum / mean equal the reduced values, the definition of the reductions), gradients
that reach every trainable input and are finite, rejects an unknown reduction, and its value falls when the
trainable inputs are optimised as free parameters for a few Adam steps."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tricklab.losses import LOSSES, LossExample

NAMES = LOSSES.names()


def _example(name: str, seed: int = 0) -> LossExample:
    ex = LOSSES.get(name).example(torch.Generator().manual_seed(seed))
    assert isinstance(ex, LossExample)
    return ex


def test_registry_covers_the_families() -> None:
    assert {"focal", "binary_focal", "soft_dice", "contrastive", "triplet_margin", "batch_hard_triplet", "nt_xent",
            "info_nce", "distillation", "label_smoothing_ce", "soft_bootstrap", "hard_bootstrap"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_declarations(name: str) -> None:
    cls = LOSSES.get(name)
    assert isinstance(cls, type) and issubclass(cls, nn.Module)
    assert LOSSES.summary(name), f"{name} needs a one-line summary"
    ex = _example(name)
    assert ex.trainable and all(ex.args[i].is_floating_point() for i in ex.trainable)


@pytest.mark.parametrize("name", NAMES)
def test_reductions_and_gradients(name: str) -> None:
    ex = _example(name)
    cls = LOSSES.get(name)
    args = [a.clone().requires_grad_(i in ex.trainable) for i, a in enumerate(ex.args)]
    out = {r: cls(**ex.kwargs, reduction=r)(*args) for r in ("mean", "sum", "none")}
    for r in ("mean", "sum"):
        assert out[r].ndim == 0 and torch.isfinite(out[r]), (r, out[r])
    assert tuple(out["none"].shape) == ex.none_shape
    assert torch.isfinite(out["none"]).all()
    torch.testing.assert_close(out["sum"], out["none"].sum())
    # (batch_hard_triplet averages over valid anchors only; every anchor of its example is valid)
    torch.testing.assert_close(out["mean"], out["none"].mean())
    grads = torch.autograd.grad(out["mean"], [args[i] for i in ex.trainable])
    for i, g in zip(ex.trainable, grads):
        assert torch.isfinite(g).all(), f"{name}: non-finite gradient for input {i}"
        assert g.abs().sum() > 0, f"{name}: no gradient reaches input {i}"
    with pytest.raises(ValueError):
        cls(**ex.kwargs, reduction="average")


@pytest.mark.parametrize("name", NAMES)
def test_loss_falls_when_optimising_the_inputs(name: str) -> None:
    ex = _example(name, seed=1)
    loss_fn = LOSSES.get(name)(**ex.kwargs)
    params = {i: nn.Parameter(ex.args[i].clone()) for i in ex.trainable}
    opt = torch.optim.Adam(params.values(), lr=0.05)

    def value() -> torch.Tensor:
        return loss_fn(*[params.get(i, a) for i, a in enumerate(ex.args)])

    with torch.no_grad():
        first = float(value())
    for _ in range(30):
        opt.zero_grad()
        loss = value()
        loss.backward()
        opt.step()
    with torch.no_grad():
        last = float(value())
    assert torch.isfinite(torch.tensor(last))
    assert last < first - 1e-3 * max(1.0, abs(first)), (name, first, last)
