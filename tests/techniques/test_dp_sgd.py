"""DP-SGD as a trainer technique: the gradients it leaves equal opacus' per-sample gradients (test-only oracle),
clipped to the norm bound in a Python loop, averaged, plus the Gaussian draws of the technique's seeded
generator; the noise has std sigma C / B (NumPy sample std); epsilon equals the RDP accountant's (itself equal to
opacus', tests/paradigms/test_federated.py); batch norm is refused with a message naming group norm; a run with it
trains and logs epsilon."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tricklab.data import InMemoryLoader
from tricklab.errors import ConfigError
from tricklab.optim.dp_sgd import dp_epsilon
from tricklab.techniques import DPSGD
from tricklab.train import Trainer, TrainState


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def _state(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batches: int = 10) -> TrainState:
    st = TrainState(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), loss_fn=F.cross_entropy,
                    device=torch.device("cpu"), history=[{}], batches_per_epoch=batches)
    st.inputs, st.targets = x, y
    F.cross_entropy(model(x), y).backward()  # what the trainer's backward leaves (the technique replaces it)
    return st


def test_step_equals_opacus_clipped_mean_plus_the_seeded_noise() -> None:
    opacus = pytest.importorskip("opacus", reason="opacus is the test-only oracle for per-sample gradients")
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (6,), generator=g)
    clip, sigma = 0.2, 0.7
    model = _net()
    tech = DPSGD(clip=clip, noise_multiplier=sigma, seed=5)
    st = _state(model, x, y)
    tech.on_fit_start(st)
    tech.on_after_backward(st)
    # reference: opacus' per-sample gradients, clipped example by example, summed; noise from the same seed
    gsm = opacus.GradSampleModule(_net(), loss_reduction="sum")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        F.cross_entropy(gsm(x), y, reduction="sum").backward()
    samples = [p.grad_sample for p in gsm._module.parameters()]
    total = [torch.zeros_like(s[0]) for s in samples]
    clipped = 0
    for i in range(6):
        norm = float(torch.sqrt(sum(s[i].pow(2).sum() for s in samples)))
        clipped += norm > clip
        for t, s in zip(total, samples):
            t += s[i] * min(1.0, clip / norm)
    assert clipped >= 3  # the clipping is active in this check
    gen = torch.Generator().manual_seed(5)
    for p, t in zip(model.parameters(), total):
        noise = torch.randn(t.shape, generator=gen, dtype=t.dtype) * (sigma * clip)
        torch.testing.assert_close(p.grad, (t + noise) / 6, rtol=1e-10, atol=1e-12)
    assert tech.steps == 1


def test_noise_std_is_sigma_clip_over_batch() -> None:
    torch.manual_seed(0)
    model = nn.Linear(200, 100).double()  # 20100 coordinates
    with torch.no_grad():
        model.weight.zero_()
        model.bias.zero_()
    x, y = torch.zeros(4, 200, dtype=torch.float64), torch.zeros(4, dtype=torch.long)
    tech = DPSGD(clip=2.0, noise_multiplier=1.5, seed=0)
    st = _state(model, x, y)
    tech.on_fit_start(st)
    tech.on_after_backward(st)
    # zero inputs: only the bias has a (clipped) per-example gradient; the weight's gradient is pure noise
    assert float(model.weight.grad.std()) == pytest.approx(1.5 * 2.0 / 4, rel=0.03)
    assert abs(float(model.weight.grad.mean())) < 0.02


def test_batch_norm_is_refused_with_group_norm_advice() -> None:
    model = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    st = TrainState(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), loss_fn=F.cross_entropy,
                    device=torch.device("cpu"), batches_per_epoch=4)
    with pytest.raises(ConfigError, match=r"batch norm \(1: BatchNorm1d\).*group norm"):
        DPSGD().on_fit_start(st)


@pytest.mark.parametrize("kw,field", [({"clip": 0.0}, "clip"), ({"noise_multiplier": -1.0}, "noise_multiplier"),
                                      ({"delta": 1.0}, "delta")])
def test_bad_arguments_are_refused(kw: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        DPSGD(**kw)


def test_trainer_run_trains_and_logs_the_accountants_epsilon() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 5, generator=g)
    y = (x[:, 0] > 0).long()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.GroupNorm(4, 16), nn.ReLU(), nn.Linear(16, 2))
    tech = DPSGD(clip=1.0, noise_multiplier=0.8, delta=1e-3, seed=1)
    loader = InMemoryLoader(x, y, batch_size=16, shuffle=True, seed=0)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.5), loader, techniques=[tech], max_steps=40,
                      log_every=10)
    before = F.cross_entropy(model(x), y).item()
    trainer.fit()
    assert F.cross_entropy(model(x), y).item() < before - 0.1
    assert tech.steps == 40
    logged = [r["dp_epsilon"] for r in trainer.state.history if "dp_epsilon" in r]
    assert logged and logged[-1] == pytest.approx(dp_epsilon(16 / 64, 0.8, 40, 1e-3))
