"""Gradient accumulation: k micro-batches of size b step like one batch of k*b.

Reference: the plain run without accumulation on batches of k*b. With ``InMemoryLoader`` (same seed,
drop_last, n divisible by k*b) batch j of size k*b is perm[j*k*b:(j+1)*k*b], which is exactly the
concatenation of the k consecutive micro-batches j*k .. j*k+k-1 of size b; the test checks that first.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tricklab.data import InMemoryLoader
from tricklab.techniques import GradAccumulation
from tricklab.train import Technique, Trainer


def _data(n: int = 96, d: int = 6, c: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, c, (n,), generator=g)


class GradRecorder(Technique):
    """Test probe: the complete gradients at each after_backward."""

    name = "grad_recorder"
    reads = frozenset({"grads"})

    def __init__(self) -> None:
        self.grads: list[list[torch.Tensor]] = []
        self.steps_seen: list[int] = []

    def on_after_backward(self, state) -> None:
        self.grads.append([p.grad.detach().clone() for p in state.raw_model.parameters()])
        self.steps_seen.append(state.micro_step)


def test_loader_big_batch_is_concatenation_of_micro_batches() -> None:
    x, y = _data()
    k, b = 3, 8
    big, small = InMemoryLoader(x, y, k * b, seed=7), InMemoryLoader(x, y, b, seed=7)
    for _epoch in range(2):
        for _ in range(len(big)):
            bx, by = big.next_batch()
            parts = [small.next_batch() for _ in range(k)]
            assert torch.equal(bx, torch.cat([p[0] for p in parts]))
            assert torch.equal(by, torch.cat([p[1] for p in parts]))
        assert small.batch_index == len(small)
        big.start_next_epoch()
        small.start_next_epoch()


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 4))


@pytest.mark.parametrize("k,b,momentum", [(2, 8, 0.0), (3, 8, 0.9), (4, 6, 0.0)])
def test_accumulation_matches_one_big_batch(k: int, b: int, momentum: float) -> None:
    """Reference: the same model trained without accumulation on batches of k*b (SGD), 2+ epochs."""
    x, y = _data()
    steps = 2 * (len(x) // (k * b)) + 1  # crosses epoch boundaries
    ref_model = _model()
    acc_model = copy.deepcopy(ref_model)
    ref_rec, acc_rec = GradRecorder(), GradRecorder()
    Trainer(ref_model, torch.optim.SGD(ref_model.parameters(), lr=0.1, momentum=momentum),
            InMemoryLoader(x, y, k * b, seed=3), techniques=[ref_rec], max_steps=steps).fit()
    acc = Trainer(acc_model, torch.optim.SGD(acc_model.parameters(), lr=0.1, momentum=momentum),
                  InMemoryLoader(x, y, b, seed=3), techniques=[GradAccumulation(k), acc_rec], max_steps=steps)
    state = acc.fit()
    assert state.step == steps and state.micro_step == steps * k
    # after_backward fires once per optimizer step, after the k-th micro-batch
    assert acc_rec.steps_seen == [k * (i + 1) for i in range(steps)]
    for g_ref, g_acc in zip(ref_rec.grads, acc_rec.grads):
        for a, r in zip(g_acc, g_ref):
            torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-6)
    for p_acc, p_ref in zip(acc_model.parameters(), ref_model.parameters()):
        torch.testing.assert_close(p_acc, p_ref, rtol=1e-6, atol=1e-6)
    # the comparison is not vacuous: training moved the weights
    assert not torch.allclose(ref_model[0].weight, _model()[0].weight)


def test_accumulation_steps_one_is_plain_training() -> None:
    x, y = _data()
    a, b = _model(), _model()
    Trainer(a, torch.optim.SGD(a.parameters(), lr=0.1), InMemoryLoader(x, y, 8, seed=0), max_steps=5).fit()
    Trainer(b, torch.optim.SGD(b.parameters(), lr=0.1), InMemoryLoader(x, y, 8, seed=0),
            techniques=[GradAccumulation(1)], max_steps=5).fit()
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_fit_start_sets_accum_steps() -> None:
    x, y = _data()
    m = _model()
    t = Trainer(m, torch.optim.SGD(m.parameters(), lr=0.1), InMemoryLoader(x, y, 8, seed=0),
                techniques=[GradAccumulation(3)], max_steps=1)
    assert t.state.accum_steps == 1
    t.fit()
    assert t.state.accum_steps == 3


@pytest.mark.parametrize("steps", [0, -1, 2.0, "2"])
def test_invalid_steps(steps) -> None:
    with pytest.raises(ValueError):
        GradAccumulation(steps)


def test_stateless_round_trip() -> None:
    g = GradAccumulation(4)
    assert g.state_dict() == {}
    GradAccumulation(4).load_state_dict(g.state_dict())
    with pytest.raises(ValueError):
        g.load_state_dict({"unexpected": 1})
