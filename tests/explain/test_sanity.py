"""Sanity check helpers. References: scipy.stats.spearmanr (average ranks for ties) per example; the model's
own parameters before and after (randomized_copy must not touch the original, must change every reset layer,
and must leave the global RNG where it was)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from explain_helpers import cnn2d, paper_cnn
from tricklab.errors import UserError
from tricklab.explain import randomized_copy, spearman_per_example, vanilla_gradient


def test_spearman_matches_scipy_with_ties() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randint(-3, 4, (5, 2, 6), generator=g).double()  # many ties
    b = torch.randn(5, 2, 6, generator=g, dtype=torch.float64)
    for absolute in (False, True):
        got = spearman_per_example(a, b, absolute=absolute)
        for i in range(5):
            x, y = a[i].flatten().numpy(), b[i].flatten().numpy()
            if absolute:
                x, y = np.abs(x), np.abs(y)
            assert float(got[i]) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert float(spearman_per_example(b, b)[0]) == pytest.approx(1.0)
    assert float(spearman_per_example(b, -b, absolute=False)[0]) == pytest.approx(-1.0)


def test_randomized_copy_changes_weights_and_explanations_but_not_the_original() -> None:
    m = cnn2d()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    rng_before = torch.get_rng_state()
    r = randomized_copy(m, seed=3)
    assert torch.equal(torch.get_rng_state(), rng_before)
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k])
    changed = [k for k, v in r.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])]
    assert any("features.0.weight" in k for k in changed) and any("fc.weight" in k for k in changed)
    # same seed, same copy
    for (k, v), (_, w) in zip(r.state_dict().items(), randomized_copy(m, seed=3).state_dict().items()):
        assert torch.equal(v, w), k
    # cascading variant: only the named layers
    top = randomized_copy(m, seed=3, layers=["fc"])
    assert torch.equal(top.features[0].weight, m.features[0].weight)
    assert not torch.equal(top.fc.weight, m.fc.weight)
    x = torch.randn(4, 1, 12, 12)
    rho = spearman_per_example(vanilla_gradient(m, x, 0), vanilla_gradient(r, x, 0))
    assert float(rho.abs().max()) < 0.9


def test_errors() -> None:
    with pytest.raises(UserError, match="no layer named"):
        randomized_copy(paper_cnn(), layers=["conv9"])
    with pytest.raises(UserError, match="one shape"):
        spearman_per_example(torch.rand(2, 3), torch.rand(2, 4))
