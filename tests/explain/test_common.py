"""The shared plumbing of the attribution methods. References: the tensors and modules themselves (the target
resolution against the model's argmax, baseline broadcasting against torch's expand, per-submodule training
flags before and after)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from explain_helpers import cnn2d
from tricklab.errors import UserError
from tricklab.explain._common import (
    baseline_distribution,
    broadcast_baseline,
    eval_mode,
    find_layer,
    input_gradients,
    resolve_target,
)


def test_resolve_target_forms() -> None:
    m = cnn2d()
    x = torch.randn(5, 1, 12, 12)
    assert torch.equal(resolve_target(m, x, None, "t", batch_size=2), m(x).argmax(1))
    assert torch.equal(resolve_target(m, x, 3, "t"), torch.full((5,), 3))
    assert torch.equal(resolve_target(m, x, [0, 1, 2, 3, 4], "t"), torch.arange(5))
    assert torch.equal(resolve_target(m, x, torch.tensor(2), "t"), torch.full((5,), 2))
    for bad in (True, [0.5] * 5, torch.zeros(5, dtype=torch.bool), [1, 2]):
        with pytest.raises(UserError, match="target"):
            resolve_target(m, x, bad, "t")


def test_eval_mode_restores_each_flag_even_on_error() -> None:
    m = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5), nn.BatchNorm1d(2))
    m.train()
    m[1].eval()
    flags = [mod.training for mod in m.modules()]
    with pytest.raises(RuntimeError, match="inside"):
        with eval_mode(m):
            assert not any(mod.training for mod in m.modules())
            raise RuntimeError("inside")
    assert [mod.training for mod in m.modules()] == flags


def test_baselines() -> None:
    x = torch.randn(3, 2, 4)
    assert torch.equal(broadcast_baseline(None, x, "t"), torch.zeros_like(x))
    assert torch.equal(broadcast_baseline(0.5, x, "t"), torch.full_like(x, 0.5))
    one = torch.randn(2, 4)
    assert torch.equal(broadcast_baseline(one, x, "t"), one.expand_as(x))
    assert torch.equal(broadcast_baseline(one.unsqueeze(0), x, "t"), one.expand_as(x))
    with pytest.raises(UserError, match="does not match"):
        broadcast_baseline(torch.zeros(2, 2, 4), x, "t")
    assert baseline_distribution(None, x, "t").shape == (1, 2, 4)
    assert baseline_distribution(one, x, "t").shape == (1, 2, 4)
    assert baseline_distribution(torch.zeros(7, 2, 4), x, "t").shape == (7, 2, 4)


def test_input_gradients_match_per_row_autograd_and_logits_shape_is_checked() -> None:
    m = cnn2d()
    x = torch.randn(3, 1, 12, 12)
    t = torch.tensor([1, 0, 4])
    g, s = input_gradients(m, x, t, "t", batch_size=2)
    for i in range(3):
        xi = x[i:i + 1].clone().requires_grad_(True)
        (gi,) = torch.autograd.grad(m(xi)[0, t[i]], xi)
        torch.testing.assert_close(g[i], gi[0], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(s, m(x).gather(1, t[:, None])[:, 0].detach())
    with pytest.raises(UserError, match=r"logits of shape \(B, C\)"):
        input_gradients(nn.Identity(), x, t, "t")


def test_find_layer() -> None:
    m = cnn2d()
    assert find_layer(m, "features.0", "t") is m.features[0]
    assert find_layer(m, m.fc, "t") is m.fc
    with pytest.raises(UserError, match="not a submodule"):
        find_layer(m, nn.Linear(2, 2), "t")
    with pytest.raises(UserError, match="Did you mean 'features.0'"):
        find_layer(m, "feature.0", "t")
