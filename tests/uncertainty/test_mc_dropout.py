"""MC dropout. Reference: the slow simple path: the same network written with explicit ``F.dropout`` calls in
training mode and batch norm applied with its running statistics, drawing from the same seeded global RNG."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tricklab.errors import UserError
from tricklab.layers.dropout import DropBlock
from tricklab.uncertainty.mc_dropout import dropout_modules, mc_dropout_mode, mc_dropout_predict
from tricklab.uncertainty.scores import mutual_information, predictive_entropy


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 4))
    net.train()
    for _ in range(3):  # non-trivial running statistics
        net(torch.randn(32, 6) * 2 + 1)
    return net


def test_predictions_equal_explicit_dropout_with_bn_in_eval() -> None:
    net = _net()
    x = torch.randn(10, 6)
    bn_before = net[1].running_mean.clone(), net[1].running_var.clone()
    torch.manual_seed(123)
    pred = mc_dropout_predict(net, x, samples=5, batch_size=4)
    torch.manual_seed(123)
    ref = []
    with torch.no_grad():
        for i in range(0, 10, 4):
            xb = x[i : i + 4]
            passes = []
            for _ in range(5):
                h = F.linear(xb, net[0].weight, net[0].bias)
                h = F.batch_norm(h, net[1].running_mean, net[1].running_var, net[1].weight, net[1].bias,
                                 training=False, eps=net[1].eps)
                h = F.dropout(F.relu(h), 0.3, training=True)
                passes.append(torch.softmax(F.linear(h, net[4].weight, net[4].bias).double(), -1))
            ref.append(torch.stack(passes))
    ref_t = torch.cat(ref, dim=1)
    torch.testing.assert_close(pred.sample_probs, ref_t, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(pred.probs, ref_t.mean(0))
    torch.testing.assert_close(pred.mutual_information, mutual_information(ref_t))
    torch.testing.assert_close(pred.predictive_entropy, predictive_entropy(ref_t))
    torch.testing.assert_close(pred.log_probs.exp(), pred.probs)
    # batch norm did not update its statistics; the modes are restored
    torch.testing.assert_close(net[1].running_mean, bn_before[0])
    torch.testing.assert_close(net[1].running_var, bn_before[1])
    assert all(m.training for m in net.modules())


def test_only_dropout_modules_switch_and_modes_restore() -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), DropBlock(0.2, block_size=2), nn.Dropout2d(0.1))
    net.eval()
    assert len(dropout_modules(net)) == 2
    with mc_dropout_mode(net):
        assert [m.training for m in net] == [False, False, True, True]
    assert not any(m.training for m in net.modules())


def test_zero_dropout_gives_the_deterministic_prediction() -> None:
    net = _net()
    net[3].p = 0.0
    x = torch.randn(5, 6)
    pred = mc_dropout_predict(net, x, samples=3)
    net.eval()
    with torch.no_grad():
        det = torch.softmax(net(x).double(), -1)
    for t in range(3):
        torch.testing.assert_close(pred.sample_probs[t], det, rtol=1e-6, atol=1e-7)
    assert float(pred.mutual_information.max()) < 1e-9


def test_a_model_without_dropout_is_refused() -> None:
    with pytest.raises(UserError, match="no(ne)?.*dropout|has none"):
        mc_dropout_predict(nn.Linear(3, 2), torch.randn(2, 3))
    with pytest.raises(UserError, match="samples"):
        mc_dropout_predict(_net(), torch.randn(2, 6), samples=0)
