"""create_optimizer's parameter-group rules (no decay on biases and norms, layer-wise lr decay, lr_groups by
name prefix) and wrapper construction. References: the closed forms lr * layer_decay**depth and
lr * multiplier, checked parameter by parameter."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tricklab.errors import ConfigError, UnknownNameError
from tricklab.optim import LAMB, SAM, Lookahead, create_optimizer


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.cls = nn.Parameter(torch.zeros(1, 4))  # on the root: the earliest layer
        self.embed = nn.Linear(3, 4)
        self.act = nn.ReLU()  # no parameters: not a layer
        self.block = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
        self.head = nn.Linear(4, 2)


def _lr_of(opt: torch.optim.Optimizer) -> dict[int, tuple[float, float]]:
    return {id(p): (g["lr"], g["weight_decay"]) for g in opt.param_groups for p in g["params"]}


def test_no_decay_on_bias_and_norm_and_default_groups_unchanged() -> None:
    net = Net()
    opt = create_optimizer("adamw", net, lr=0.1, weight_decay=0.05)
    assert len(opt.param_groups) == 2 and opt.param_groups[0]["weight_decay"] == 0.05
    got = _lr_of(opt)
    for name, p in net.named_parameters():
        assert got[id(p)][1] == (0.0 if p.ndim < 2 else 0.05), name
        assert got[id(p)][0] == 0.1
    opt = create_optimizer("adamw", net, lr=0.1, weight_decay=0.05, no_decay_norm_and_bias=False)
    assert all(wd == 0.05 for _, wd in _lr_of(opt).values())


def test_layer_decay_multipliers() -> None:
    """Reference: lr * 0.5**depth with layers [root params, embed, block, head] (ReLU holds none):
    head 1, block 0.5, embed 0.25, cls 0.125."""
    net = Net()
    opt = create_optimizer("adam", net, lr=0.8, weight_decay=0.01, layer_decay=0.5)
    got = _lr_of(opt)
    want = {"cls": 0.1, "embed": 0.2, "block": 0.4, "head": 0.8}
    for name, p in net.named_parameters():
        lr, wd = got[id(p)]
        assert lr == pytest.approx(want[name.split(".")[0]]), name
        assert wd == (0.0 if p.ndim < 2 else 0.01)
    assert all("lr_scale" in g for g in opt.param_groups)


def test_lr_groups_longest_prefix_and_combined_with_layer_decay() -> None:
    """Reference: lr * multiplier of the longest matching prefix (times the layer-decay factor)."""
    net = Net()
    opt = create_optimizer("sgd", net, lr=1.0, lr_groups={"block": 0.1, "block.1": 0.01, "head.bias": 3.0})
    got = _lr_of(opt)
    assert got[id(net.block[0].weight)][0] == pytest.approx(0.1)
    assert got[id(net.block[1].weight)][0] == pytest.approx(0.01)
    assert got[id(net.head.bias)][0] == pytest.approx(3.0)
    assert got[id(net.head.weight)][0] == pytest.approx(1.0)
    assert got[id(net.embed.weight)][0] == pytest.approx(1.0)
    opt = create_optimizer("sgd", net, lr=1.0, layer_decay=0.5, lr_groups={"head": 2.0})
    got = _lr_of(opt)
    assert got[id(net.head.weight)][0] == pytest.approx(2.0)
    assert got[id(net.block[0].weight)][0] == pytest.approx(0.5)
    # "embe" is not a dotted prefix of "embed.weight": a typo is refused, not silently ignored
    with pytest.raises(ConfigError, match="match no"):
        create_optimizer("sgd", net, lr=1.0, lr_groups={"embe": 2.0})


def test_rules_need_a_model() -> None:
    with pytest.raises(ConfigError):
        create_optimizer("sgd", Net().parameters(), lr=0.1, layer_decay=0.5)


def test_wrappers_and_ours_by_name() -> None:
    net = Net()
    la = create_optimizer("lookahead", net, lr=0.01, base="adam", k=5, alpha=0.5)
    assert isinstance(la, Lookahead) and isinstance(la.base, torch.optim.Adam) and la.k == 5
    assert la.base.param_groups[0]["lr"] == 0.01
    sam = create_optimizer("sam", net, lr=0.01, base="sgd", rho=0.1, momentum=0.9)
    assert isinstance(sam, SAM) and isinstance(sam.base, torch.optim.SGD)
    assert sam.param_groups[0]["rho"] == 0.1 and sam.param_groups[0]["momentum"] == 0.9
    assert isinstance(create_optimizer("lamb", net, lr=0.01), LAMB)
    with pytest.raises(ConfigError, match="base"):
        create_optimizer("lookahead", net, lr=0.01)
    with pytest.raises(ConfigError, match="wrapper"):
        create_optimizer("sam", net, lr=0.01, base="lookahead")
    with pytest.raises(UnknownNameError):
        create_optimizer("sam", net, lr=0.01, base="adma")
    with pytest.raises(ConfigError, match="Accepted"):
        create_optimizer("lamb", net, lr=0.01, bogus=1)
