"""SAM technique: a Trainer run with ``SAMTechnique`` equals a hand-written SAM loop (plain torch formulas
e_w = rho g/||g||, ASAM rho |w|^2 g/|| |w| g ||; same batches, same model init) -- with a plain optimizer and
with a ``tricklab.optim.SAM`` optimizer -- and the declarations put SAM where the other techniques need it."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tricklab.data import InMemoryLoader
from tricklab.errors import ConfigError
from tricklab.optim import SAM
from tricklab.techniques import GradAccumulation, GradClip, NanGuard
from tricklab.techniques.grad_centralization import GradCentralization
from tricklab.techniques.sam import SAMTechnique
from tricklab.train import Technique, Trainer, plan

STEPS = 6


def _setup() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(48, 5, generator=g), torch.randint(0, 3, (48,), generator=g)
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)), x, y


def _hand_sam(model: nn.Module, x: torch.Tensor, y: torch.Tensor, rho: float, adaptive: bool) -> nn.Module:
    """The reference loop: g at w; e = rho T^2 g / ||T g|| (T = |w| for ASAM, else 1); g' at w + e; w back;
    SGD(momentum) step with g'."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loader = InMemoryLoader(x, y, 8, seed=0)
    params = list(model.parameters())
    step = 0
    while step < STEPS:
        for xb, yb in loader:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb), yb).backward()
            with torch.no_grad():
                t = [p.abs() if adaptive else torch.ones_like(p) for p in params]
                norm = torch.sqrt(sum(((ti * p.grad) ** 2).sum() for ti, p in zip(t, params)))
                e = [rho * ti * ti * p.grad / (norm + 1e-12) for ti, p in zip(t, params)]
                w = [p.clone() for p in params]
                for p, ei in zip(params, e):
                    p.add_(ei)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb), yb).backward()
            with torch.no_grad():
                for p, wi in zip(params, w):
                    p.copy_(wi)
            opt.step()
            step += 1
            if step == STEPS:
                break
    return model


@pytest.mark.parametrize("adaptive", [False, True])
@pytest.mark.parametrize("with_sam_optimizer", [False, True])
def test_trainer_equals_hand_written_sam_loop(adaptive: bool, with_sam_optimizer: bool) -> None:
    model, x, y = _setup()
    ref = _hand_sam(copy.deepcopy(model), x, y, rho=0.2, adaptive=adaptive)
    if with_sam_optimizer:
        opt = SAM(model.parameters(), torch.optim.SGD, rho=0.2, adaptive=adaptive, lr=0.1, momentum=0.9)
        tech = SAMTechnique()
    else:
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        tech = SAMTechnique(rho=0.2, adaptive=adaptive)
    Trainer(model, opt, InMemoryLoader(x, y, 8, seed=0), techniques=[tech], max_steps=STEPS).fit()
    for a, b in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-6, atol=1e-7)
    # and SAM is not plain SGD here: the plain run ends elsewhere
    plain, _, _ = _setup()
    Trainer(plain, torch.optim.SGD(plain.parameters(), lr=0.1, momentum=0.9), InMemoryLoader(x, y, 8, seed=0),
            max_steps=STEPS).fit()
    assert not torch.allclose(next(plain.parameters()), next(model.parameters()), atol=1e-5)


class SkipAll(Technique):
    name = "skip_all"

    def on_before_step(self, state) -> None:
        state.skip_step = True


def test_skipped_step_restores_the_perturbed_weights() -> None:
    """Reference: the initial weights (every step skipped -> the model must not drift to w + e_w)."""
    model, x, y = _setup()
    w0 = [p.detach().clone() for p in model.parameters()]
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.5, lr=0.1)
    Trainer(model, opt, InMemoryLoader(x, y, 8, seed=0), techniques=[SAMTechnique(), SkipAll()], max_steps=3).fit()
    assert not opt.pending
    for p, w in zip(model.parameters(), w0):
        assert torch.equal(p.detach(), w)


def test_sam_optimizer_without_technique_is_refused_with_a_clear_message() -> None:
    model, x, y = _setup()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=0.1)
    with pytest.raises(RuntimeError, match="'sam' technique"):
        Trainer(model, opt, InMemoryLoader(x, y, 8, seed=0), max_steps=1).fit()


def test_refuses_gradient_accumulation_and_double_rho() -> None:
    model, x, y = _setup()
    with pytest.raises(ConfigError):
        Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), InMemoryLoader(x, y, 8, seed=0),
                techniques=[SAMTechnique(), GradAccumulation(steps=2)], max_steps=2).fit()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=0.1)
    with pytest.raises(ConfigError):
        Trainer(model, opt, InMemoryLoader(x, y, 8, seed=0), techniques=[SAMTechnique(rho=0.1)], max_steps=1).fit()


def test_order_sam_first_so_later_techniques_see_the_sam_gradients() -> None:
    p = plan([NanGuard(), GradClip(), GradCentralization(), SAMTechnique()])
    order = [p.names[i] for i in p.order["after_backward"]]
    assert order == ["sam", "grad_centralization", "grad_clip", "nan_guard"]


def test_declarations_and_stateless() -> None:
    assert SAMTechnique.name == "sam" and "optimizer" in SAMTechnique.writes
    assert SAMTechnique().state_dict() == {}
    SAMTechnique().load_state_dict({})
    with pytest.raises(ValueError):
        SAMTechnique(rho=-0.1)
