"""Gradient centralization: ``centralize_`` against the NumPy mean subtraction of Yong et al. (eq. 3) and
against pytorch_optimizer's centralize_gradient (test-only oracle); the technique in the trainer hands
centralized gradients to the step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tricklab.data import InMemoryLoader
from tricklab.optim import centralize_
from tricklab.techniques import GradClip, MixedPrecision
from tricklab.techniques.grad_centralization import GradCentralization
from tricklab.train import Technique, Trainer, plan

SHAPES = [(6, 4), (6, 4), (5,), (3, 2, 4, 4), (7, 3), (3, 2, 4, 4), (1,)]


def _grads(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g) * 3 + 1 for s in SHAPES]


def test_matches_numpy_mean_subtraction_and_keeps_shapes() -> None:
    """Reference: NumPy g - g.mean(axis=dims > 0, keepdims) for ndim > 1; 1-d gradients unchanged."""
    grads = _grads()
    want = [g.double().numpy() - g.double().numpy().mean(axis=tuple(range(1, g.ndim)), keepdims=True)
            if g.ndim > 1 else g.double().numpy() for g in grads]
    centralize_(grads + [None])
    for g, w, s in zip(grads, want, SHAPES):
        assert tuple(g.shape) == s
        np.testing.assert_allclose(g.double().numpy(), w, rtol=1e-5, atol=1e-6)
        if g.ndim > 1:
            assert float(g.mean(dim=tuple(range(1, g.ndim))).abs().max()) < 1e-5


def test_stacked_same_shape_path_equals_per_tensor_path() -> None:
    """Reference: the one-tensor form g.sub_(g.mean(...)) applied to each tensor alone."""
    a, b = _grads(1), _grads(1)
    centralize_(a)
    for g in b:
        centralize_([g])
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_matches_pytorch_optimizer_centralize_gradient() -> None:
    """Reference: pytorch_optimizer.optimizer.gradient_centralization.centralize_gradient(gc_conv_only=False)."""
    mod = pytest.importorskip("pytorch_optimizer.optimizer.gradient_centralization")
    a, b = _grads(2), _grads(2)
    centralize_(a)
    for g in b:
        mod.centralize_gradient(g, gc_conv_only=False)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-6)


class Recorder(Technique):
    name = "recorder"
    reads = frozenset({"grads"})

    def __init__(self) -> None:
        self.row_means: list[float] = []

    def on_before_step(self, state) -> None:
        w = state.raw_model[0].weight.grad
        self.row_means.append(float(w.mean(dim=1).abs().max()))


def test_in_trainer_the_step_sees_centralized_gradients() -> None:
    """Reference: centralize_ applied by hand to the gradients of a second identical run without GC."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 5, generator=g), torch.randint(0, 3, (32,), generator=g)
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3))
    ref = __import__("copy").deepcopy(m)
    rec = Recorder()
    Trainer(m, torch.optim.SGD(m.parameters(), lr=0.1), InMemoryLoader(x, y, 8, seed=0),
            techniques=[GradCentralization(), rec], max_steps=4).fit()
    assert len(rec.row_means) == 4 and max(rec.row_means) < 1e-6
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    loader = InMemoryLoader(x, y, 8, seed=0)
    for xb, yb in loader:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(ref(xb), yb).backward()
        centralize_([p.grad for p in ref.parameters()])
        opt.step()
    for a, b in zip(m.parameters(), ref.parameters()):
        assert torch.equal(a, b)


def test_declarations_order_and_stateless() -> None:
    p = plan([GradClip(), GradCentralization()])
    assert [p.names[i] for i in p.order["after_backward"]] == ["grad_centralization", "grad_clip"]
    assert GradCentralization.reads == {"skip_step"} and GradCentralization.writes == {"grads.transformed"}
    # after the loss scaler's check of the raw gradients, derived from the gradient stages (no names)
    p = plan([GradCentralization(), MixedPrecision()])
    assert [p.names[i] for i in p.order["after_backward"]] == ["mixed_precision", "grad_centralization"]
    assert not GradCentralization.after and not GradCentralization.before
    assert GradCentralization().state_dict() == {}
