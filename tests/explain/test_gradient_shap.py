"""GradientSHAP. References: captum 0.9.0's GradientShap with a fixed seed: captum draws the baseline indices
with numpy.random.choice, the input noise with torch.normal and the path points with numpy.random.uniform (in
that order); the test reproduces those draws from the same seeds and hands them to ours as GradientShapDraws.
And the expectation: with many samples the estimate satisfies completeness against the mean baseline output."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from explain_helpers import cnn2d, paper_cnn, smooth_mlp
from tricklab.errors import UserError
from tricklab.explain import GradientShapDraws, gradient_shap

captum_attr = pytest.importorskip("captum.attr")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:captum")


def _captum_draws(seed: int, b: int, n: int, num_baselines: int, stdev: float,
                  shape: tuple[int, ...]) -> GradientShapDraws:
    """The random numbers captum 0.9.0's GradientShap consumes after np.random.seed(seed), torch.manual_seed(seed)
    (NoiseTunnel draws baselines, then noise; InputBaselineXGradient then draws the path points)."""
    np.random.seed(seed)
    torch.manual_seed(seed)
    idx = torch.tensor(np.random.choice(num_baselines, n * b)).view(b, n)
    noise = torch.normal(0, torch.tensor(stdev).repeat((b * n, *shape))).view(b, n, *shape)
    alphas = torch.tensor(np.random.uniform(0.0, 1.0, b * n), dtype=torch.float32).view(b, n)
    return GradientShapDraws(idx, alphas, noise)


@pytest.mark.parametrize("stdev", [0.0, 0.1])
def test_matches_captum_with_a_fixed_seed(stdev: float) -> None:
    m = cnn2d()
    g = torch.Generator().manual_seed(0)
    x, refs = torch.randn(3, 1, 12, 12, generator=g), torch.randn(5, 1, 12, 12, generator=g)
    t = torch.tensor([0, 2, 4])
    np.random.seed(7)
    torch.manual_seed(7)
    ref = captum_attr.GradientShap(m).attribute(x, baselines=refs, target=t, n_samples=9, stdevs=stdev)
    ours = gradient_shap(m, x, t, baselines=refs, draws=_captum_draws(7, 3, 9, 5, stdev, (1, 12, 12)))
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-7)


def test_matches_captum_on_the_paper_cnn() -> None:
    m = paper_cnn()
    g = torch.Generator().manual_seed(1)
    x, refs = torch.randn(4, 40, generator=g), torch.randn(8, 40, generator=g)
    np.random.seed(3)
    torch.manual_seed(3)
    ref = captum_attr.GradientShap(m).attribute(x, baselines=refs, target=6, n_samples=12)
    ours = gradient_shap(m, x, 6, baselines=refs, draws=_captum_draws(3, 4, 12, 8, 0.0, (40,)), batch_size=5)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-7)


def test_own_draws_are_seeded_and_complete_in_expectation() -> None:
    m = smooth_mlp().double()
    g = torch.Generator().manual_seed(2)
    x, refs = torch.randn(4, 6, generator=g, dtype=torch.float64), torch.randn(3, 6, generator=g,
                                                                              dtype=torch.float64)
    t = torch.tensor([0, 1, 2, 0])
    a1 = gradient_shap(m, x, t, baselines=refs, samples=20000, generator=torch.Generator().manual_seed(5))
    a2 = gradient_shap(m, x, t, baselines=refs, samples=20000, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a1, a2, rtol=0, atol=0)
    with torch.no_grad():
        expected = m(x).gather(1, t[:, None])[:, 0] - m(refs)[:, t].mean(0)
    # Monte Carlo error of 20000 samples: well under 2% of the output difference on this smooth model
    torch.testing.assert_close(a1.sum(1), expected, rtol=0.02, atol=0.02 * float(expected.abs().max()))


def test_bad_draws_are_refused() -> None:
    m = smooth_mlp()
    x = torch.randn(2, 6)
    bad = GradientShapDraws(torch.zeros(3, 4, dtype=torch.long), torch.rand(3, 4))
    with pytest.raises(UserError, match="draws must hold"):
        gradient_shap(m, x, 0, draws=bad)
    with pytest.raises(UserError, match="stdev"):
        gradient_shap(m, x, 0, stdev=-0.1)
    with pytest.raises(UserError, match=r"baselines must be a set"):
        gradient_shap(m, x, 0, baselines=torch.zeros(3, 5))
