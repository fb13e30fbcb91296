"""Gradient clipping: the technique's result equals torch's clip_grad_norm_ / clip_grad_value_ on a copy,
and the NumPy closed form g * min(1, c / ||g||) with ||g|| the norm of all gradients concatenated."""

from __future__ import annotations

import copy
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tricklab.data import InMemoryLoader
from tricklab.techniques import GradClip
from tricklab.train import Technique, Trainer, TrainState


def _model_with_grads(scale: float, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))
    for p in m.parameters():
        p.grad = torch.randn_like(p) * scale
    return m


def _copy(model: nn.Module) -> nn.Module:
    """A deep copy with the gradients too (deepcopy does not copy .grad)."""
    ref = copy.deepcopy(model)
    for q, p in zip(ref.parameters(), model.parameters()):
        q.grad = None if p.grad is None else p.grad.clone()
    return ref


def _state(model: nn.Module) -> TrainState:
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return TrainState(model=model, optimizer=opt, loss_fn=F.cross_entropy, device=torch.device("cpu"),
                      history=[{}])


def _grads(m: nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in m.parameters()]


@pytest.mark.parametrize("scale", [0.01, 10.0])
@pytest.mark.parametrize("norm_type", [2.0, 1.0, float("inf")])
def test_norm_clip_matches_torch_and_numpy(scale: float, norm_type: float) -> None:
    """References: torch.nn.utils.clip_grad_norm_ on a deep copy; NumPy g * min(1, c/(||g||_p + 1e-6))."""
    m = _model_with_grads(scale)
    ref = _copy(m)
    g_np = [p.grad.double().numpy() for p in m.parameters()]
    clip = GradClip(max_norm=1.0, norm_type=norm_type)
    st = _state(m)
    clip.on_after_backward(st)
    ref_norm = torch.nn.utils.clip_grad_norm_(list(ref.parameters()), 1.0, norm_type=norm_type)
    for a, b in zip(_grads(m), _grads(ref)):
        assert torch.equal(a, b)
    flat = np.concatenate([g.ravel() for g in g_np])
    total = np.abs(flat).max() if norm_type == float("inf") else (np.abs(flat) ** norm_type).sum() ** (1 / norm_type)
    coef = min(1.0, 1.0 / (total + 1e-6))
    for got, g in zip(_grads(m), g_np):
        np.testing.assert_allclose(got.numpy(), g * coef, rtol=1e-5, atol=1e-7)
    # the reported norm is the pre-clip norm
    clip.on_log(st)
    assert st.history[-1]["grad_norm"] == pytest.approx(float(ref_norm))
    assert st.history[-1]["grad_norm"] == pytest.approx(total, rel=1e-5)
    assert clip.last_norm == pytest.approx(total, rel=1e-5)
    if scale > 1:  # big gradients come out with the target norm
        new = np.concatenate([g.numpy().ravel() for g in _grads(m)])
        inf = norm_type == float("inf")
        new_norm = np.abs(new).max() if inf else (np.abs(new) ** norm_type).sum() ** (1 / norm_type)
        assert new_norm == pytest.approx(1.0, rel=1e-4)


def test_value_clip_matches_torch_and_numpy() -> None:
    """References: torch.nn.utils.clip_grad_value_ on a copy; NumPy np.clip(g, -c, c)."""
    m = _model_with_grads(1.0)
    ref = _copy(m)
    g_np = [p.grad.numpy().copy() for p in m.parameters()]
    GradClip(max_norm=None, max_value=0.3).on_after_backward(_state(m))
    torch.nn.utils.clip_grad_value_(list(ref.parameters()), 0.3)
    for a, b, g in zip(_grads(m), _grads(ref), g_np):
        assert torch.equal(a, b)
        np.testing.assert_array_equal(a.numpy(), np.clip(g, -0.3, 0.3))


def test_value_then_norm_clip_matches_torch_in_that_order() -> None:
    """Reference: clip_grad_value_ then clip_grad_norm_ (the documented order) on a copy."""
    m = _model_with_grads(3.0)
    ref = _copy(m)
    GradClip(max_norm=0.5, max_value=1.0).on_after_backward(_state(m))
    torch.nn.utils.clip_grad_value_(list(ref.parameters()), 1.0)
    torch.nn.utils.clip_grad_norm_(list(ref.parameters()), 0.5)
    for a, b in zip(_grads(m), _grads(ref)):
        assert torch.equal(a, b)


def test_params_without_grad_are_ignored() -> None:
    m = nn.Linear(3, 2)
    st = _state(m)
    GradClip().on_after_backward(st)  # no gradients at all: nothing to do
    m.weight.grad = torch.full_like(m.weight, 10.0)  # bias has no grad
    GradClip(max_norm=1.0).on_after_backward(st)
    assert m.bias.grad is None
    assert float(m.weight.grad.norm()) == pytest.approx(1.0, rel=1e-4)


class GradRecorder(Technique):
    name = "grad_recorder"
    reads = frozenset({"grads"})
    after = frozenset({"grad_clip"})

    def __init__(self) -> None:
        self.norms: list[float] = []

    def on_before_step(self, state) -> None:
        grads = [p.grad for p in state.raw_model.parameters()]
        self.norms.append(float(torch.linalg.vector_norm(torch.cat([g.ravel() for g in grads]))))


def test_in_trainer_grads_seen_by_the_step_are_clipped_and_grad_norm_is_logged() -> None:
    """Reference: the global 2-norm (torch.linalg.vector_norm of the concatenation) is <= max_norm."""
    torch.manual_seed(0)
    x, y = torch.randn(32, 4) * 20, torch.randint(0, 3, (32,))
    m = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))
    rec = GradRecorder()
    st = Trainer(m, torch.optim.SGD(m.parameters(), lr=0.01), InMemoryLoader(x, y, 8, seed=0),
                 techniques=[rec, GradClip(max_norm=0.1)], max_steps=4, log_every=2).fit()
    assert len(rec.norms) == 4
    assert all(n <= 0.1 * (1 + 1e-5) for n in rec.norms)
    assert [r["step"] for r in st.history] == [2, 4]
    assert all("grad_norm" in r and r["grad_norm"] > 0.1 for r in st.history)  # pre-clip norm logged


@pytest.mark.parametrize("kwargs", [{"max_norm": None, "max_value": None}, {"max_norm": 0.0},
                                    {"max_norm": -1.0}, {"max_value": 0.0}, {"max_norm": None, "max_value": -2},
                                    {"max_norm": float("nan")}])
def test_invalid_args_raise_value_error(kwargs) -> None:
    with pytest.raises(ValueError):
        GradClip(**kwargs)


def test_stateless_round_trip() -> None:
    assert GradClip().state_dict() == {}
    GradClip().load_state_dict({})
