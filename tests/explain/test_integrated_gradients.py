"""Integrated gradients. References: captum 0.9.0's IntegratedGradients with the same quadrature method and
number of steps; NumPy's Gauss-Legendre nodes (exactness on polynomials); completeness (the paper's
Proposition 1) on a smooth model, where the residual must fall below 1% of |S(x) - S(x')| at 64 steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from explain_helpers import cnn2d, paper_cnn, smooth_mlp
from tricklab.errors import UserError
from tricklab.explain import completeness_residual, integrated_gradients
from tricklab.explain.integrated_gradients import IG_METHODS, quadrature

captum_attr = pytest.importorskip("captum.attr")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:captum")


@pytest.mark.parametrize("method", IG_METHODS)
def test_matches_captum_on_a_2d_cnn(method: str) -> None:
    m = cnn2d()
    g = torch.Generator().manual_seed(0)
    x, base = torch.randn(3, 1, 12, 12, generator=g), torch.randn(3, 1, 12, 12, generator=g)
    t = torch.tensor([0, 2, 4])
    ours, res = integrated_gradients(m, x, t, baselines=base, steps=24, method=method, return_residual=True)
    ref, delta = captum_attr.IntegratedGradients(m).attribute(x, base, target=t, n_steps=24, method=method,
                                                              return_convergence_delta=True)
    if method == "riemann_trapezoid":
        # captum 0.9.0 weights the 24 points of a grid of spacing 1/23 by 1/24 (ends halved), so its weights sum
        # to 23/24; ours are the trapezoid rule's 1/23. The two differ by exactly 24/23.
        ref = ref * 24 / 23
        delta = captum_attr.IntegratedGradients(m).compute_convergence_delta(ref, base, x, target=t)
    scale = float(ref.abs().max())
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5 * scale)
    torch.testing.assert_close(res, delta.to(res.dtype), rtol=1e-3, atol=1e-5 * scale)


def test_matches_captum_on_the_paper_cnn_with_a_scalar_baseline() -> None:
    m = paper_cnn()
    x = torch.randn(4, 40, generator=torch.Generator().manual_seed(1))
    ours = integrated_gradients(m, x, 3, baselines=0.5, steps=50, batch_size=37)
    ref = captum_attr.IntegratedGradients(m).attribute(x, 0.5, target=3, n_steps=50)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_completeness_within_one_percent_at_64_steps_on_a_smooth_model(seed: int) -> None:
    m = smooth_mlp(seed)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 6, generator=g, dtype=torch.float64) * 2
    m = m.double()
    t = m(x).argmax(1)
    attr, res = integrated_gradients(m, x, t, steps=64, return_residual=True)
    with torch.no_grad():
        delta = m(x).gather(1, t[:, None])[:, 0] - m(torch.zeros_like(x)).gather(1, t[:, None])[:, 0]
    # the residual reported is sum(attr) - delta, and it is under 1% of |delta|
    torch.testing.assert_close(res, attr.sum(1) - delta)
    assert bool((res.abs() <= 0.01 * delta.abs()).all()), (res / delta).abs().max()
    # a 4-step right Riemann sum is visibly worse: the residual measures the quadrature error
    _, coarse = integrated_gradients(m, x, t, steps=4, method="riemann_right", return_residual=True)
    assert float(coarse.abs().mean()) > float(res.abs().mean())


def test_gauss_legendre_nodes_integrate_polynomials_exactly() -> None:
    a, w = quadrature("gausslegendre", 5)
    for degree in range(10):  # exact up to degree 2n - 1 = 9
        assert float((w * a**degree).sum()) == pytest.approx(1.0 / (degree + 1), rel=1e-12)
    for method in IG_METHODS:
        a, w = quadrature(method, 7)
        assert float(w.sum()) == pytest.approx(1.0) and a.min() >= 0 and a.max() <= 1
    np.testing.assert_allclose(quadrature("riemann_trapezoid", 3)[1], [0.25, 0.5, 0.25])


def test_completeness_residual_function_and_errors() -> None:
    m = smooth_mlp().double()
    x = torch.randn(3, 6, dtype=torch.float64)
    t = torch.tensor([0, 1, 2])
    base = torch.zeros_like(x)
    attr = integrated_gradients(m, x, t, steps=64)
    with torch.no_grad():
        delta = (m(x) - m(base)).gather(1, t[:, None])[:, 0]
    torch.testing.assert_close(completeness_residual(m, x, base, t, attr), attr.sum(1) - delta)
    with pytest.raises(UserError, match="unknown method"):
        integrated_gradients(m, x, t, method="simpson")
    with pytest.raises(UserError, match="does not match inputs"):
        integrated_gradients(m, x, t, baselines=torch.zeros(2, 5))
    with pytest.raises(UserError, match="steps"):
        integrated_gradients(m, x, t, steps=0)
