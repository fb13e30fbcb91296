"""Fairness penalty. References: NumPy closed forms of the soft demographic-parity and equalized-odds gaps;
their gradients against torch.autograd.gradcheck (finite differences, float64); in the trainer, the penalty
lowers the demographic-parity difference on the biased synthetic task compared with the same run without it
(same seed, same data order)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tricklab.data import InMemoryLoader, load_dataset
from tricklab.explain import fairness_report
from tricklab.models import build_model
from tricklab.techniques.fairness_penalty import FairnessPenalty, demographic_parity_penalty, equalized_odds_penalty
from tricklab.train import Trainer, plan


def _np_gap(p: np.ndarray, g: np.ndarray) -> float:
    means = [p[g == k].mean() for k in np.unique(g)]
    return max(means) - min(means) if len(means) > 1 else 0.0


def test_penalties_match_numpy_and_gradcheck() -> None:
    gen = torch.Generator().manual_seed(0)
    p = torch.rand(40, generator=gen, dtype=torch.float64, requires_grad=True)
    g = torch.randint(0, 3, (40,), generator=gen)
    y = torch.randint(0, 2, (40,), generator=gen)
    pn, gn, yn = p.detach().numpy(), g.numpy(), y.numpy()
    assert float(demographic_parity_penalty(p, g).detach()) == pytest.approx(_np_gap(pn, gn), abs=1e-12)
    eo = _np_gap(pn[yn == 1], gn[yn == 1]) + _np_gap(pn[yn == 0], gn[yn == 0])
    assert float(equalized_odds_penalty(p, y, g).detach()) == pytest.approx(eo, abs=1e-12)
    assert torch.autograd.gradcheck(lambda q: demographic_parity_penalty(q, g), (p,))
    assert torch.autograd.gradcheck(lambda q: equalized_odds_penalty(q, y, g), (p,))
    assert float(demographic_parity_penalty(p, torch.zeros(40, dtype=torch.long)).detach()) == 0.0  # one group: nothing


def test_on_loss_adds_weight_times_gap() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(16, 5, generator=gen)
    x[:, -1] = (torch.rand(16, generator=gen) < 0.5).float()
    y = torch.randint(0, 2, (16,), generator=gen)
    z = torch.randn(16, 2, generator=gen, requires_grad=True)
    base = F.cross_entropy(z, y)
    state = SimpleNamespace(inputs=x, targets=y, outputs=z, loss=base)
    FairnessPenalty(weight=2.5, kind="equalized_odds").on_loss(state)
    expected = base + 2.5 * equalized_odds_penalty(z.softmax(1)[:, 1], y, x[:, -1].long())
    torch.testing.assert_close(state.loss, expected)
    plan([FairnessPenalty()])


def _train(penalty: FairnessPenalty | None, steps: int = 300) -> dict:
    data = load_dataset("fair-synthetic", num_train=2000, num_test=2000, bias=0.8, seed=0)
    torch.manual_seed(0)
    model = build_model("mlp", data.input_shape, 2, hidden=32)
    Trainer(model, torch.optim.Adam(model.parameters(), lr=1e-2), InMemoryLoader(data.x_train, data.y_train, 200,
            seed=0), techniques=[penalty] if penalty else [], max_steps=steps).fit()
    with torch.no_grad():
        pred = model(data.x_test).argmax(1)
    return fairness_report(data.y_test, pred, data.x_test[:, -1].long())


def test_penalty_reduces_the_disparity_in_training() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        plain = _train(None)
        fair = _train(FairnessPenalty(weight=5.0))
    finally:
        torch.set_num_threads(threads)
    assert plain["demographic_parity_difference"] > 0.25
    assert fair["demographic_parity_difference"] < 0.5 * plain["demographic_parity_difference"]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="weight"):
        FairnessPenalty(weight=-1)
    with pytest.raises(ValueError, match="kind"):
        FairnessPenalty(kind="parity")
    state = SimpleNamespace(inputs=torch.randn(4, 3, 8), targets=torch.zeros(4, dtype=torch.long),
                            outputs=torch.randn(4, 2), loss=torch.zeros(()))
    with pytest.raises(ValueError, match="tabular"):
        FairnessPenalty().on_loss(state)
