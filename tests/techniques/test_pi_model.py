"""The Pi-model (Laine & Aila 2017).

References: the unsupervised term ``(1/(C B)) sum_i ||softmax(a_i) - softmax(b_i)||^2`` and its gradients written
in NumPy (float64) from the softmax Jacobian ``diag(p) - p p^T``; the ramp ``exp(-5 (1 - t/T)^2)`` by hand; in the
trainer, the term recomputed from the model's own forward (torch's module call, in training mode) on the weak view
drawn with a fresh generator of the same seed.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from tricklab.data.loader import InMemoryLoader
from tricklab.data.views import weak_view
from tricklab.techniques.pi_model import PiModel, pi_consistency
from tricklab.train import Trainer


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _numpy_term_and_grads(a: np.ndarray, b: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    n, c = a.shape
    pa, pb = _softmax(a), _softmax(b)
    value = float(((pa - pb) ** 2).sum() / (n * c))
    ga, gb = np.zeros_like(a), np.zeros_like(b)
    for i in range(n):
        d = 2.0 * (pa[i] - pb[i]) / (n * c)  # dL/dp_a = d, dL/dp_b = -d
        ga[i] = (np.diag(pa[i]) - np.outer(pa[i], pa[i])) @ d  # softmax Jacobian (symmetric)
        gb[i] = -(np.diag(pb[i]) - np.outer(pb[i], pb[i])) @ d
    return value, ga, gb


def test_consistency_term_and_its_gradients_match_numpy() -> None:
    g = torch.Generator().manual_seed(0)
    a = (torch.randn(7, 5, generator=g, dtype=torch.float64) * 2).requires_grad_(True)
    b = (torch.randn(7, 5, generator=g, dtype=torch.float64) * 2).requires_grad_(True)
    value, ga, gb = _numpy_term_and_grads(a.detach().numpy(), b.detach().numpy())
    loss = pi_consistency(a, b)
    assert float(loss.detach()) == pytest.approx(value, rel=1e-12)
    da, db = torch.autograd.grad(loss, (a, b))
    np.testing.assert_allclose(da.numpy(), ga, rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(db.numpy(), gb, rtol=1e-10, atol=1e-15)  # Algorithm 1: both passes get gradient
    loss_sg = pi_consistency(a, b, stop_gradient=True)
    da_sg, = torch.autograd.grad(loss_sg, (a,))
    np.testing.assert_allclose(da_sg.numpy(), ga, rtol=1e-10, atol=1e-15)
    assert torch.autograd.grad(loss_sg, (b,), allow_unused=True)[0] is None  # b is a constant
    assert float(pi_consistency(a[:0], b[:0]).detach()) == 0.0
    with pytest.raises(ValueError, match="shape"):
        pi_consistency(a, b[:3])


def _fit(technique: PiModel, steps: int = 3) -> tuple[nn.Module, Trainer]:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(24, 1, 12, generator=g)
    y = torch.randint(0, 3, (24,), generator=g)
    y[::2] = -100
    model = nn.Sequential(nn.Conv1d(1, 4, 3, padding=1), nn.BatchNorm1d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(48, 3))
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), InMemoryLoader(x, y, 8, seed=0),
                      techniques=[technique], max_steps=steps, log_every=1)
    trainer.fit()
    return model, trainer


def test_in_the_trainer_it_adds_the_ramped_term_of_a_second_pass_and_keeps_the_batchnorm_statistics() -> None:
    seen: list[tuple[float, float]] = []
    ramp = 4

    class Spy(PiModel):
        def on_loss(self, state):
            before = state.loss.detach().clone()
            gen = torch.Generator()
            gen.set_state(self.generator.get_state())  # the same weak view the technique will draw
            x2 = weak_view(state.inputs.cpu(), gen)
            twin = copy.deepcopy(state.raw_model).train()  # torch's module call on a copy: buffers untouched
            with torch.no_grad():
                other = twin(x2)
                term = (state.outputs.softmax(-1) - other.softmax(-1)).pow(2).sum() / state.outputs.numel()
            running = state.raw_model[1].running_mean.clone()
            super().on_loss(state)
            assert torch.equal(state.raw_model[1].running_mean, running)  # the second pass moved no statistics
            w = 3.0 * (math.exp(-5 * (1 - state.step / ramp) ** 2) if state.step < ramp else 1.0)
            seen.append((float(state.loss.detach() - before), w * float(term)))

    _fit(Spy(weight=3.0, rampup_steps=ramp, seed=5))
    assert len(seen) == 3 and all(want > 1e-5 for _, want in seen)
    for got, want in seen:
        assert got == pytest.approx(want, abs=1e-6)  # float32 loss minus loss: ~1e-7 of the ~1 loss


def test_gradient_reaches_the_parameters_through_both_passes() -> None:
    pi = PiModel(weight=1.0, seed=1)
    model, trainer = _fit(pi, steps=1)
    state = trainer.state
    x = state.inputs
    # d/dtheta of the term with both passes live differs from the one with the second pass as a constant
    out = model(x)
    live = pi_consistency(out, pi.second_pass(state, weak_view(x, torch.Generator().manual_seed(2))))
    g_live = torch.autograd.grad(live, model[4].weight)[0]
    out = model(x)
    const = pi_consistency(out, pi.second_pass(state, weak_view(x, torch.Generator().manual_seed(2))), True)
    g_const = torch.autograd.grad(const, model[4].weight)[0]
    assert float(live.detach()) == pytest.approx(float(const.detach())) and not torch.allclose(g_live, g_const)


def test_bad_arguments_and_state_round_trip() -> None:
    with pytest.raises(ValueError, match="weight"):
        PiModel(weight=-1.0)
    with pytest.raises(ValueError, match="on must be"):
        PiModel(on="labelled")
    a = PiModel(seed=3)
    torch.rand(2, generator=a.generator)
    b = PiModel(seed=9)
    b.load_state_dict(a.state_dict())
    assert torch.equal(torch.rand(3, generator=a.generator), torch.rand(3, generator=b.generator))
