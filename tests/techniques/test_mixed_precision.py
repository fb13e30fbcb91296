"""Mixed precision: the loss-scale schedule vs torch.amp.GradScaler, the finiteness check, bf16 autocast on
the CPU, and the dynamic loss-scaling path of the trainer (forced on for an fp32 model on the CPU)."""

from __future__ import annotations

import contextlib
import copy
import math

import pytest
import torch
from torch import nn

from tricklab.data import InMemoryLoader
from tricklab.techniques import MixedPrecision
from tricklab.techniques.mixed_precision import grads_are_finite, update_scale
from tricklab.train import Technique, Trainer


def _data(n: int = 64, d: int = 6, c: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    w = torch.randn(d, c, generator=g)
    return x, (x @ w).argmax(-1)  # learnable labels


# ------------------------------------------------------------------------------------ functional core
@pytest.mark.parametrize("pattern", [
    [True] * 7,
    [True, False, True, True, True, True, False, False, True, True, True],
    [False, False, False, True, True, True, True],
])
def test_update_scale_follows_torch_grad_scaler(pattern: list[bool]) -> None:
    """Reference: a real torch.amp.GradScaler('cpu') driven with the same finite/inf pattern."""
    growth_interval = 3
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_factor=2.0, backoff_factor=0.5,
                                  growth_interval=growth_interval)
    w = nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([w], lr=0.0)
    scale, tracker = 1024.0, 0
    for finite in pattern:
        scaler.scale((w * 2.0).sum()).backward()
        if not finite:
            w.grad[1] = float("inf")
        scaler.step(opt)
        scaler.update()
        opt.zero_grad()
        scale, tracker = update_scale(scale, tracker, finite, 2.0, 0.5, growth_interval)
        assert scale == scaler.get_scale()
        assert tracker == scaler._get_growth_tracker()


def test_update_scale_documented_rule() -> None:
    """Reference: GradScaler's documented rule written out (backoff on inf, growth after N finite)."""
    assert update_scale(8.0, 5, False, 2.0, 0.5, 10) == (4.0, 0)
    assert update_scale(8.0, 8, True, 2.0, 0.5, 10) == (8.0, 9)
    assert update_scale(8.0, 9, True, 2.0, 0.5, 10) == (16.0, 0)
    assert update_scale(8.0, 0, True, 3.0, 0.25, 1) == (24.0, 0)


@pytest.mark.parametrize("bad", [None, float("inf"), float("-inf"), float("nan")])
def test_grads_are_finite(bad) -> None:
    """Reference: torch.isfinite over every entry, one tensor at a time (the slow path)."""
    grads = [torch.randn(3, 4), torch.randn(5), None, torch.randn(2, 2).to(torch.bfloat16)]
    if bad is not None:
        grads[1][2] = bad
    slow = all(bool(torch.isfinite(g).all()) for g in grads if g is not None)
    assert grads_are_finite(grads) is slow is (bad is None)


def test_grads_are_finite_large_finite_values_and_empty() -> None:
    # entries near the float32 max are finite although their squared norm overflows; the check must
    # not call them non-finite (that would skip good steps and shrink the scale for nothing)
    big = [torch.full((4,), 3e38)]
    assert bool(torch.isfinite(big[0]).all())
    assert grads_are_finite(big)
    assert grads_are_finite([])
    assert grads_are_finite([None])


# ------------------------------------------------------------------------------------ bf16 autocast
class DtypeProbe(Technique):
    name = "dtype_probe"

    def __init__(self) -> None:
        self.dtypes: list[torch.dtype] = []

    def on_loss(self, state) -> None:
        self.dtypes.append(state.outputs.dtype)


@pytest.mark.parametrize("dtype", ["auto", "bfloat16", "bf16"])
def test_bf16_autocast_on_cpu_outputs_bf16_and_loss_falls(dtype: str) -> None:
    torch.manual_seed(0)
    x, y = _data()
    model = nn.Linear(6, 3)
    probe, mp = DtypeProbe(), MixedPrecision(dtype=dtype)
    st = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.5), InMemoryLoader(x, y, 16, seed=0),
                 techniques=[mp, probe], max_steps=60, log_every=10).fit()
    assert probe.dtypes and all(d == torch.bfloat16 for d in probe.dtypes)
    assert mp.dtype == torch.bfloat16 and not mp.scaling and st.grad_scale == 1.0
    assert model.weight.dtype == torch.float32  # master weights stay fp32
    losses = [r["train_loss"] for r in st.history]
    assert losses[-1] < 0.7 * losses[0]


def test_forward_context_autocasts_a_linear() -> None:
    """Reference: torch.autocast('cpu', bfloat16) documents Linear outputs in bfloat16."""
    mp = MixedPrecision(dtype="bfloat16")
    lin = nn.Linear(4, 2)
    with mp.on_forward(None):
        out = lin(torch.randn(3, 4))
    assert out.dtype == torch.bfloat16
    assert lin(torch.randn(3, 4)).dtype == torch.float32


def test_float16_on_cpu_raises_value_error() -> None:
    x, y = _data()
    model = nn.Linear(6, 3)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), InMemoryLoader(x, y, 16, seed=0),
                      techniques=[MixedPrecision(dtype="float16")], max_steps=2)
    with pytest.raises(ValueError, match="bfloat16"):
        trainer.fit()


def test_unknown_dtype_raises() -> None:
    with pytest.raises(ValueError, match="dtype"):
        MixedPrecision(dtype="float8")


# -------------------------------------------------------------------------- forced loss-scaling path
class ForcedScaling(MixedPrecision):
    """Simulates fp16 on the CPU: dynamic loss scaling on, autocast off (so an fp32 reference exists)."""

    def on_fit_start(self, state) -> None:
        super().on_fit_start(state)
        self.scaling = True
        state.grad_scale = self.scale

    def on_forward(self, state):
        return contextlib.nullcontext()


class GradProbe(Technique):
    name = "grad_probe"
    reads = frozenset({"grads"})
    after = frozenset({"mixed_precision"})

    def __init__(self, bad_steps: set[int] = frozenset()) -> None:
        self.grads: list[list[torch.Tensor]] = []
        self.scales: list[float] = []
        self.weights: list[list[torch.Tensor]] = []
        self.bad_steps = bad_steps

    def on_loss(self, state) -> None:
        if state.step + 1 in self.bad_steps:
            state.loss = state.loss * float("inf")

    def on_after_backward(self, state) -> None:
        self.grads.append([p.grad.detach().clone() for p in state.raw_model.parameters()])

    def on_after_step(self, state) -> None:
        self.scales.append(state.grad_scale)
        self.weights.append([p.detach().clone() for p in state.raw_model.parameters()])


def _run(model, techniques, steps=6, accum=None):
    x, y = _data()
    return Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
                   InMemoryLoader(x, y, 16, seed=2), techniques=techniques, max_steps=steps).fit()


@pytest.mark.parametrize("init_scale", [2.0**10, 3.0])
def test_trainer_unscales_gradients(init_scale: float) -> None:
    """Reference: the unscaled fp32 run (no MixedPrecision). Grads equal after the trainer divides by S."""
    torch.manual_seed(0)
    ref_model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    model = copy.deepcopy(ref_model)
    ref_probe, probe = GradProbe(), GradProbe()
    mp = ForcedScaling(init_scale=init_scale, growth_interval=4)
    _run(ref_model, [ref_probe])
    st = _run(model, [mp, probe])
    for g, r in zip(probe.grads, ref_probe.grads):
        for a, b in zip(g, r):
            if math.log2(init_scale).is_integer():
                assert torch.equal(a, b)  # a power-of-two scale is exact
            else:
                torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    for a, b in zip(model.parameters(), ref_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    # the scale grew once after growth_interval = 4 finite steps
    assert probe.scales == [init_scale] * 3 + [2 * init_scale] * 3
    assert st.grad_scale == mp.scale == 2 * init_scale


def test_inf_gradient_skips_the_step_and_halves_the_scale() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    mp = ForcedScaling(init_scale=256.0, growth_interval=100)
    probe = GradProbe(bad_steps={3})
    st = _run(model, [mp, probe])
    assert probe.scales == [256.0, 256.0, 128.0, 128.0, 128.0, 128.0]
    assert mp.skipped == 1 and mp.tracker == 3
    assert all(torch.equal(a, b) for a, b in zip(probe.weights[1], probe.weights[2]))  # step 3 skipped
    assert not all(torch.equal(a, b) for a, b in zip(probe.weights[2], probe.weights[3]))
    assert "nonfinite_steps" not in st.counters  # an expected overflow, not a NaN-guard event
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_state_dict_round_trip_and_checkpoint_load_restores_grad_scale() -> None:
    mp = MixedPrecision(init_scale=64.0)
    mp.scale, mp.tracker, mp.skipped = 16.0, 7, 2
    fresh = MixedPrecision()
    fresh.load_state_dict(mp.state_dict())
    assert fresh.state_dict() == {"scale": 16.0, "tracker": 7, "skipped": 2}
    fresh.scaling = True

    class S:
        grad_scale = 1.0

    fresh.on_checkpoint_load(S)
    assert S.grad_scale == 16.0


def test_grads_are_finite_fp16_large_finite() -> None:
    """fp16 grads whose 2-norm exceeds the fp16 max (65504) are still finite (reference: torch.isfinite)."""
    g = [torch.full((100,), 60000.0, dtype=torch.float16), torch.ones(3, dtype=torch.bfloat16)]
    assert all(bool(torch.isfinite(t).all()) for t in g)
    assert grads_are_finite(g)
    g[1][0] = float("nan")
    assert not grads_are_finite(g)
