"""Bottleneck adapters and fine-tuning helpers.

References: the adapter's closed form ``h + W_up relu(W_down h + b_down) + b_up`` (Houlsby et al. 2019, sec. 2.1)
evaluated in NumPy float64, with its input gradient by hand (``G + (G W_up * 1[pre > 0]) W_down``); the frozen
layer itself (torch built-in) for the identity at initialisation; ULMFiT's lr_l = lr / factor^(G-1-l).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from tricklab.errors import ConfigError
from tricklab.transfer import (BottleneckAdapter, count_parameters, discriminative_param_groups, freeze_except,
                               inject_adapters)


def test_adapter_matches_the_numpy_closed_form_outputs_and_gradients() -> None:
    torch.manual_seed(0)
    ad = BottleneckAdapter(6, 3).double()
    nn.init.normal_(ad.up.weight)
    nn.init.normal_(ad.up.bias)
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    g = torch.randn(4, 6, dtype=torch.float64)
    y = ad(x)
    (gx,) = torch.autograd.grad((y * g).sum(), [x])
    xn, gn = x.detach().numpy(), g.numpy()
    wd, bd = ad.down.weight.detach().numpy(), ad.down.bias.detach().numpy()
    wu, bu = ad.up.weight.detach().numpy(), ad.up.bias.detach().numpy()
    pre = xn @ wd.T + bd
    ref = xn + np.maximum(pre, 0) @ wu.T + bu
    ref_gx = gn + ((gn @ wu) * (pre > 0)) @ wd
    np.testing.assert_allclose(y.detach().numpy(), ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gx.numpy(), ref_gx, rtol=1e-12, atol=1e-12)


def test_channel_dim_adapter_is_pointwise_over_positions() -> None:
    torch.manual_seed(0)
    ad = BottleneckAdapter(4, 2, channel_dim=1).double()
    nn.init.normal_(ad.up.weight)
    x = torch.randn(2, 4, 7, dtype=torch.float64)
    ref = BottleneckAdapter(4, 2).double()
    ref.load_state_dict(ad.state_dict())
    torch.testing.assert_close(ad(x), ref(x.transpose(1, 2)).transpose(1, 2))  # same bottleneck at each position


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv1d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(40, 8), nn.ReLU(),
                         nn.Linear(8, 3)).double()


def test_injected_adapters_start_as_the_identity_and_only_they_train() -> None:
    torch.manual_seed(0)
    net = _net()
    ref = copy.deepcopy(net)
    total = count_parameters(net)["total"]
    inject_adapters(net, ["0", "3"], bottleneck=2, trainable=["5."])
    x = torch.randn(5, 1, 10, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(net(x), ref(x), rtol=0, atol=0)
    (g1,) = torch.autograd.grad(net(x).sum(), [x])
    (g2,) = torch.autograd.grad(ref(x).sum(), [x])
    torch.testing.assert_close(g1, g2)
    adapters = (4 * 2 + 2 + 2 * 4 + 4) + (8 * 2 + 2 + 2 * 8 + 8)
    assert count_parameters(net) == {"total": total + adapters, "trainable": adapters + 8 * 3 + 3}
    assert {n for n, p in net.named_parameters() if not p.requires_grad} == {
        "0.layer.weight", "0.layer.bias", "3.layer.weight", "3.layer.bias"}


def test_discriminative_learning_rates_follow_ulmfit() -> None:
    net = _net()
    groups = discriminative_param_groups(net, [["0."], ["3."], ["5."]], lr=1.0, factor=2.0)
    assert [g["lr"] for g in groups] == [0.25, 0.5, 1.0]
    assert [len(g["params"]) for g in groups] == [2, 2, 2]
    freeze_except(net, ["5."])
    assert [g["lr"] for g in discriminative_param_groups(net, [["0."], ["3."], ["5."]], lr=1.0)] == [1.0]
    with pytest.raises(ConfigError, match="in no group"):
        discriminative_param_groups(_net(), [["0."]], lr=1.0)


def test_bad_targets_are_refused() -> None:
    with pytest.raises(ConfigError, match="unknown target"):
        inject_adapters(_net(), ["9"])
    with pytest.raises(ConfigError, match="ReLU"):
        inject_adapters(_net(), ["1"])
