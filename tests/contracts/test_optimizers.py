"""Contract sweep over every name in tricklab.optim.OPTIMIZERS (torch's and ours): the loss falls on a small
problem, a state_dict round trip gives identical next steps (reference: the uninterrupted optimizer, compared
with torch.equal), and parameter groups are respected (a group with lr 0 does not move)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tricklab.optim import OPTIMIZERS, create_optimizer

NAMES = OPTIMIZERS.names()
# per-optimizer arguments for a 40-step toy problem (LARS's trust ratio shrinks the step by eta)
ARGS: dict[str, dict[str, Any]] = {
    "lookahead": {"base": "adam"},
    "sam": {"base": "sgd", "momentum": 0.9},
    "lars": {"trust_coefficient": 0.05},
    "sgd": {"momentum": 0.9},
}
LR: dict[str, float] = {"sgd": 0.05, "sam": 0.05, "lars": 1.0, "adagrad": 0.1, "lamb": 0.02, "ranger": 0.03}


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 6, generator=g)
    w = torch.randn(6, 3, generator=g)
    return x, (x @ w).argmax(-1)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.Tanh(), nn.Linear(16, 3))


def _build(name: str, model: nn.Module) -> torch.optim.Optimizer:
    return create_optimizer(name, model, lr=LR.get(name, 0.01), weight_decay=1e-4, **ARGS.get(name, {}))


def _step(opt: torch.optim.Optimizer, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    # a closure that zeroes, computes and backpropagates: the torch convention every optimizer accepts
    # (SAM calls it twice)
    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    return float(opt.step(closure).detach())


def test_registry_holds_torch_and_ours() -> None:
    assert {"sgd", "adam", "adamw", "radam", "nadam", "rmsprop", "adagrad",
            "lamb", "lars", "lookahead", "ranger", "sam"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_loss_falls(name: str) -> None:
    x, y = _data()
    model = _model()
    opt = _build(name, model)
    first = F.cross_entropy(model(x), y).item()
    for _ in range(40):
        _step(opt, model, x, y)
    last = F.cross_entropy(model(x), y).item()
    assert last < 0.8 * first, (first, last)
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_gives_identical_next_steps(name: str) -> None:
    x, y = _data()
    model = _model()
    opt = _build(name, model)
    for i in range(7):  # 7: Lookahead(k=5) is mid-cycle, and the next 3 steps cross a sync
        _step(opt, model, x[i * 16:(i + 1) * 16], y[i * 16:(i + 1) * 16])
    copy_model = copy.deepcopy(model)
    fresh = _build(name, copy_model)
    fresh.load_state_dict(copy.deepcopy(opt.state_dict()))
    for i in range(3):
        xb, yb = x[i * 32:(i + 1) * 32], y[i * 32:(i + 1) * 32]
        _step(opt, model, xb, yb)
        _step(fresh, copy_model, xb, yb)
        for a, b in zip(model.parameters(), copy_model.parameters()):
            assert torch.equal(a, b), (name, i)


@pytest.mark.parametrize("name", NAMES)
def test_param_groups_respected(name: str) -> None:
    x, y = _data()
    model = _model()
    frozen = list(model[0].parameters())
    before = [p.detach().clone() for p in frozen]
    other = [p for m in list(model)[1:] for p in m.parameters()]
    other_before = [p.detach().clone() for p in other]
    groups = [{"params": frozen, "lr": 0.0}, {"params": other}]
    opt = create_optimizer(name, groups, lr=LR.get(name, 0.01), weight_decay=1e-3, **ARGS.get(name, {}))
    for _ in range(6):
        _step(opt, model, x, y)
    for p, b in zip(frozen, before):
        assert torch.equal(p.detach(), b), name
    assert any(not torch.equal(p.detach(), b) for p, b in zip(other, other_before))
