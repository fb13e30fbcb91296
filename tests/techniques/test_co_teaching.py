"""Co-teaching technique. References: a NumPy implementation of one exchange of small-loss selections (Han et al.
2018, Algorithm 1); a hand-written two-network co-teaching loop (the slow simple path) that the Trainer run with
the technique must reproduce weight for weight, for both networks; plain cross-entropy training when nothing is
forgotten."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tricklab.data import InMemoryLoader
from tricklab.errors import ConfigError
from tricklab.techniques import GradAccumulation
from tricklab.techniques.co_teaching import CoTeaching, co_teaching_loss, forget_rate, reinitialize
from tricklab.train import Trainer


def _np_ce(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    return np.log(np.exp(z).sum(1)) - z[np.arange(len(y)), y]


def test_exchange_of_small_loss_selections_matches_numpy() -> None:
    g = torch.Generator().manual_seed(0)
    zf = torch.randn(10, 3, generator=g, dtype=torch.float64, requires_grad=True)
    zg = torch.randn(10, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 3, (10,), generator=g)
    loss_f, loss_g = co_teaching_loss(zf, zg, y, rate=0.35)  # keep 10 - floor(3.5) = 7
    ce_f, ce_g = _np_ce(zf.detach().numpy(), y.numpy()), _np_ce(zg.detach().numpy(), y.numpy())
    keep_f, keep_g = np.argsort(ce_f, kind="stable")[:7], np.argsort(ce_g, kind="stable")[:7]
    assert float(loss_f.detach()) == pytest.approx(ce_f[keep_g].mean(), rel=1e-12)  # f learns on g's picks
    assert float(loss_g.detach()) == pytest.approx(ce_g[keep_f].mean(), rel=1e-12)
    (grad_f,) = torch.autograd.grad(loss_f, zf)
    assert set(np.nonzero(grad_f.abs().sum(1).numpy())[0]) == set(keep_g.tolist())


def test_forget_rate_schedule() -> None:
    assert [forget_rate(e, 0.4, 10) for e in (0, 5, 10, 30)] == pytest.approx([0.0, 0.2, 0.4, 0.4])
    assert forget_rate(5, 0.4, 10, exponent=2.0) == pytest.approx(0.1)
    assert forget_rate(0, 0.3, 0) == 0.3


def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))


def test_trainer_run_equals_a_hand_written_co_teaching_loop() -> None:
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(40, 4, generator=g), torch.randint(0, 3, (40,), generator=g)
    steps, bs = 12, 10  # 3 epochs of 4 batches; forget rate ramps over num_gradual=2 epochs
    torch.manual_seed(0)
    f = _model()
    technique = CoTeaching(forget_rate=0.3, num_gradual=2, seed=7)
    Trainer(f, torch.optim.SGD(f.parameters(), lr=0.2, momentum=0.9), InMemoryLoader(x, y, bs, seed=3),
            techniques=[technique], max_steps=steps).fit()

    torch.manual_seed(0)
    f_ref = _model()
    torch.manual_seed(7)
    g_ref = _model()  # constructing the model under seed 7 = re-initialising a copy under seed 7
    opt_f = torch.optim.SGD(f_ref.parameters(), lr=0.2, momentum=0.9)
    opt_g = torch.optim.SGD(g_ref.parameters(), lr=0.2, momentum=0.9)
    loader = InMemoryLoader(x, y, bs, seed=3)
    step = 0
    while step < steps:
        epoch = loader.epoch
        for xb, yb in loader:
            rate = 0.3 * min(epoch / 2, 1.0)
            ce_f = F.cross_entropy(f_ref(xb), yb, reduction="none")
            ce_g = F.cross_entropy(g_ref(xb), yb, reduction="none")
            keep = len(yb) - int(np.floor(rate * len(yb)))
            sel_f = torch.argsort(ce_f.detach(), stable=True)[:keep]
            sel_g = torch.argsort(ce_g.detach(), stable=True)[:keep]
            opt_f.zero_grad()
            opt_g.zero_grad()
            ce_f[sel_g].mean().backward()
            ce_g[sel_f].mean().backward()
            opt_f.step()
            opt_g.step()
            step += 1
    for a, b in zip(f.parameters(), f_ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(technique.peer.parameters(), g_ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_nothing_forgotten_trains_the_main_network_like_cross_entropy() -> None:
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(30, 4, generator=g), torch.randint(0, 3, (30,), generator=g)
    finals = []
    for techniques in ([CoTeaching(forget_rate=0.0)], []):
        torch.manual_seed(0)
        model = _model()
        Trainer(model, torch.optim.Adam(model.parameters(), lr=0.01), InMemoryLoader(x, y, 10, seed=0),
                techniques=techniques, max_steps=6).fit()
        finals.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*finals):
        torch.testing.assert_close(a, b)


def test_state_restores_the_peer_and_its_optimizer() -> None:
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(20, 4, generator=g), torch.randint(0, 3, (20,), generator=g)
    torch.manual_seed(0)
    model = _model()
    t = CoTeaching(forget_rate=0.2, num_gradual=1)
    Trainer(model, torch.optim.Adam(model.parameters(), lr=0.01), InMemoryLoader(x, y, 5, seed=0),
            techniques=[t], max_steps=5).fit()
    sd = t.state_dict()
    fresh = CoTeaching(forget_rate=0.2, num_gradual=1)
    fresh.load_state_dict(copy.deepcopy(sd))  # before fit_start: kept until the peer exists
    m2 = _model()
    state = type("S", (), {"accum_steps": 1, "raw_model": m2, "optimizer": torch.optim.Adam(m2.parameters())})()
    fresh.on_fit_start(state)  # builds the peer, then loads the saved peer weights and optimizer state
    for a, b in zip(fresh.peer.parameters(), t.peer.parameters()):
        torch.testing.assert_close(a, b)
    saved, loaded = t.peer_optimizer.state_dict()["state"], fresh.peer_optimizer.state_dict()["state"]
    assert saved.keys() == loaded.keys()
    for k in saved:
        torch.testing.assert_close(loaded[k]["exp_avg"], saved[k]["exp_avg"])


def test_refusals() -> None:
    with pytest.raises(ConfigError, match="forget_rate"):
        CoTeaching(forget_rate=1.0)
    with pytest.raises(ConfigError, match="num_gradual"):
        CoTeaching(num_gradual=-1)
    g = torch.Generator().manual_seed(6)
    x, y = torch.randn(8, 4, generator=g), torch.randint(0, 3, (8,), generator=g)
    model = _model()
    with pytest.raises(ConfigError, match="grad_accumulation"):
        Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), InMemoryLoader(x, y, 4, seed=0),
                techniques=[GradAccumulation(steps=2), CoTeaching()], max_steps=2).fit()


def test_reinitialize_leaves_the_caller_rng_alone() -> None:
    torch.manual_seed(3)
    m = _model()
    expected = torch.rand(2)
    torch.manual_seed(3)
    m = _model()
    before = [p.detach().clone() for p in m.parameters()]
    reinitialize(m, 9)
    torch.testing.assert_close(torch.rand(2), expected)
    assert not torch.equal(before[0], m[0].weight)
