"""EMA: functional core vs a NumPy closed form, warm-up schedule, trainer integration, eval swap, resume state.

References: NumPy float64 recurrence avg <- d*avg + (1-d)*p (the definition in Polyak & Juditsky 1992 /
TensorFlow's ExponentialMovingAverage), and the warm-up rule min(d, (1+n)/(10+n)) written out by hand.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from tricklab.data import InMemoryLoader
from tricklab.techniques import EMA, ema_update_
from tricklab.techniques.ema import ema_decay
from tricklab.train import Technique, Trainer


def _data(n: int = 64, d: int = 5, c: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = torch.randint(0, c, (n,), generator=g)
    return x, y


class ParamRecorder(Technique):
    """Test probe: copies of the parameters at fit start and after every optimizer step."""

    name = "param_recorder"
    reads = frozenset({"params"})

    def __init__(self) -> None:
        self.trajectory: list[list[torch.Tensor]] = []

    def on_fit_start(self, state) -> None:
        self.trajectory.append([p.detach().clone() for p in state.raw_model.parameters()])

    def on_after_step(self, state) -> None:
        self.trajectory.append([p.detach().clone() for p in state.raw_model.parameters()])


def test_ema_update_matches_numpy_recurrence_over_steps() -> None:
    """Reference: NumPy float64 closed form avg_t = d avg_{t-1} + (1-d) p_t, applied for 6 steps."""
    rng = np.random.default_rng(0)
    shapes = [(3, 4), (4,), (2, 2, 2)]
    avg_np = [rng.standard_normal(s) for s in shapes]
    avg = [torch.tensor(a, dtype=torch.float64) for a in avg_np]
    decay = 0.9
    for _ in range(6):
        p_np = [rng.standard_normal(s) for s in shapes]
        ema_update_(avg, [torch.tensor(p) for p in p_np], decay)
        avg_np = [decay * a + (1 - decay) * p for a, p in zip(avg_np, p_np)]
        for a, ref in zip(avg, avg_np):
            np.testing.assert_allclose(a.numpy(), ref, rtol=1e-12, atol=1e-12)


def test_ema_update_does_not_track_gradients_and_leaves_params_alone() -> None:
    p = torch.randn(4, requires_grad=True)
    before = p.detach().clone()
    avg = [torch.zeros(4)]
    ema_update_(avg, [p], 0.5)
    assert not avg[0].requires_grad
    torch.testing.assert_close(avg[0], 0.5 * before, rtol=0, atol=1e-7)  # reference: 0.5*0 + 0.5*p
    assert torch.equal(p.detach(), before)
    ema_update_([], [], 0.5)  # empty lists are a no-op


@pytest.mark.parametrize("n", [0, 1, 5, 50, 10_000])
def test_ema_decay_warmup_formula(n: int) -> None:
    """Reference: TensorFlow's ExponentialMovingAverage rule min(decay, (1 + n) / (10 + n))."""
    d = 0.999
    assert ema_decay(d, n, warmup=True) == pytest.approx(min(d, (1 + n) / (10 + n)), abs=0)
    assert ema_decay(d, n, warmup=False) == d


def test_ema_decay_warmup_reaches_the_cap() -> None:
    assert ema_decay(0.9, 0, True) == pytest.approx(0.1)
    assert ema_decay(0.9, 80, True) == pytest.approx(0.9)  # (81/90) = 0.9 exactly at n = 80
    assert ema_decay(0.9, 1000, True) == 0.9


@pytest.mark.parametrize("kwargs", [{"decay": 0.0}, {"decay": 1.0}, {"decay": -0.5}, {"every": 0},
                                    {"every": 1.5}])
def test_ema_invalid_args(kwargs) -> None:
    with pytest.raises(ValueError):
        EMA(**kwargs)


@pytest.mark.parametrize("warmup,every", [(True, 1), (False, 1), (True, 2)])
def test_ema_shadow_equals_hand_computed_ema_of_trajectory(warmup: bool, every: int) -> None:
    """Reference: the NumPy float64 EMA of the parameter trajectory recorded by a probe technique."""
    torch.manual_seed(0)
    x, y = _data()
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    ema, rec = EMA(decay=0.8, warmup=warmup, every=every), ParamRecorder()
    Trainer(model, opt, InMemoryLoader(x, y, 16, seed=1), techniques=[ema, rec], max_steps=9).fit()
    assert len(rec.trajectory) == 10

    shadow = [p.numpy().astype(np.float64) for p in rec.trajectory[0]]
    n = 0
    for step, params in enumerate(rec.trajectory[1:], start=1):
        if step % every:
            continue
        d = min(0.8, (1 + n) / (10 + n)) if warmup else 0.8
        shadow = [d * s + (1 - d) * p.numpy() for s, p in zip(shadow, params)]
        n += 1
    assert ema.num_updates == n
    for got, ref in zip(ema.shadow, shadow):
        np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5, atol=1e-6)
    # the averaged weights differ from the trained ones (otherwise the test proves nothing)
    assert not all(torch.allclose(s, p) for s, p in zip(ema.shadow, model.parameters()))


def test_ema_skipped_steps_do_not_update() -> None:
    """A skipped optimizer step (state.skip_step) leaves the shadow and the update count unchanged."""
    model = nn.Linear(3, 2)
    ema = EMA(decay=0.5, warmup=False)
    state = SimpleNamespace(raw_model=model, skip_step=False, step=1)
    ema.on_fit_start(state)
    with torch.no_grad():
        model.weight.add_(1.0)
    state.skip_step = True
    ema.on_after_step(state)
    assert ema.num_updates == 0
    assert not torch.equal(ema.shadow[0], model.weight)
    state.skip_step = False
    before = ema.shadow[0].clone()
    ema.on_after_step(state)
    # reference: closed form 0.5 * old + 0.5 * new
    torch.testing.assert_close(ema.shadow[0], 0.5 * before + 0.5 * model.weight.detach())


def test_ema_eval_uses_averaged_weights_and_restores_trained_weights_exactly() -> None:
    """Reference: logits of torch.func.functional_call with the shadow tensors; restore checked bit-exactly."""
    torch.manual_seed(0)
    x, y = _data()
    ex, ey = _data(32, seed=5)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    ema, rec = EMA(decay=0.9, warmup=False), ParamRecorder()
    seen: list[tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]] = []

    def metric_fn(logits, targets):
        # called between eval_start and eval_end: the model must hold the shadow weights now
        seen.append((logits.clone(), [p.detach().clone() for p in model.parameters()],
                     [s.clone() for s in ema.shadow]))
        return {"loss": float(torch.nn.functional.cross_entropy(logits, targets)), "accuracy": 0.0}

    Trainer(model, opt, InMemoryLoader(x, y, 16, seed=1), techniques=[ema, rec], max_steps=6,
            eval_data=(ex, ey), eval_every=3, metric_fn=metric_fn).fit()
    assert len(seen) == 2
    names = [n for n, _ in model.named_parameters()]
    for logits, params_during_eval, shadow in seen:
        for p, s in zip(params_during_eval, shadow):
            assert torch.equal(p, s)
        with torch.no_grad():
            ref = torch.func.functional_call(model, dict(zip(names, shadow)), (ex,))
        torch.testing.assert_close(logits, ref)
    # after each evaluation the trained weights are back, bit for bit: the final weights equal the
    # probe's record after the last step, and they differ from the averaged ones
    for p, rec_p in zip(model.parameters(), rec.trajectory[-1]):
        assert torch.equal(p.detach(), rec_p)
    assert not all(torch.equal(p, s) for p, s in zip(model.parameters(), ema.shadow))


def test_ema_eval_swap_unit() -> None:
    model = nn.Linear(4, 2)
    trained = [p.detach().clone() for p in model.parameters()]
    ema = EMA(decay=0.5)
    state = SimpleNamespace(raw_model=model)
    ema.on_fit_start(state)
    ema.shadow = [torch.full_like(s, 7.0) for s in ema.shadow]
    ema.on_eval_start(state)
    assert all(torch.equal(p, torch.full_like(p, 7.0)) for p in model.parameters())
    ema.on_eval_end(state)
    assert all(torch.equal(p, t) for p, t in zip(model.parameters(), trained))
    ema.on_eval_end(state)  # a second restore is a no-op
    assert all(torch.equal(p, t) for p, t in zip(model.parameters(), trained))


def test_ema_averaged_state_dict_keeps_buffers() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ema = EMA(decay=0.5)
    ema.on_fit_start(SimpleNamespace(raw_model=model))
    ema.shadow = [s + 1.0 for s in ema.shadow]
    sd = ema.averaged_state_dict(model)
    assert sd.keys() == model.state_dict().keys()
    for n, p in model.named_parameters():
        assert torch.equal(sd[n], p.detach() + 1.0)
    assert torch.equal(sd["1.running_var"], model[1].running_var)


def test_ema_state_dict_round_trip() -> None:
    torch.manual_seed(0)
    x, y = _data()
    model = nn.Linear(5, 3)
    ema = EMA(decay=0.7)
    Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), InMemoryLoader(x, y, 16, seed=0),
            techniques=[ema], max_steps=4).fit()
    sd = ema.state_dict()
    # into an instance set up for the same model
    other = EMA(decay=0.7)
    other.on_fit_start(SimpleNamespace(raw_model=nn.Linear(5, 3)))
    other.load_state_dict(sd)
    assert other.num_updates == ema.num_updates == 4
    assert all(torch.equal(a, b) for a, b in zip(other.shadow, ema.shadow))
    # into a fresh instance (no fit yet: e.g. loading averaged weights for evaluation)
    fresh = EMA(decay=0.7)
    fresh.load_state_dict(sd)
    assert all(torch.equal(a, b) for a, b in zip(fresh.shadow, ema.shadow))
    sd["shadow"][0].add_(1.0)  # the loaded copy does not alias the source
    assert not torch.equal(fresh.shadow[0], sd["shadow"][0])
    # a mismatched model is refused
    wrong = EMA()
    wrong.on_fit_start(SimpleNamespace(raw_model=nn.Sequential(nn.Linear(5, 3), nn.Linear(3, 3))))
    with pytest.raises(ValueError, match="tensors"):
        wrong.load_state_dict(sd)
