"""SNGP. References: the largest singular value from torch.linalg.svdvals (and its autograd gradient) for the
spectral-norm bound; torch.nn.utils.parametrizations.spectral_norm for bound 1; the closed-form RBF kernel for
the random Fourier features; NumPy's ridge * inv(ridge I + Phi^T Phi) for the Laplace covariance and the
mean-field formula logits / sqrt(1 + pi/8 var)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from tricklab.errors import UserError
from tricklab.uncertainty.sngp import (
    RandomFeatureGP,
    SpectralNormBound,
    fit_covariance,
    mean_field_logits,
    random_features,
    sngp_model,
    spectral_normalize,
)


def _top_sv(w: torch.Tensor) -> torch.Tensor:
    return torch.linalg.svdvals(w.flatten(1))[0]


@pytest.mark.parametrize("scale,bound", [(3.0, 0.95), (0.05, 0.95), (2.0, 1.0)])
def test_spectral_bound_matches_svd_outputs_and_gradients(scale: float, bound: float) -> None:
    torch.manual_seed(0)
    w = (torch.randn(6, 4, 3, dtype=torch.float64) * scale).requires_grad_()
    sn = SpectralNormBound(w, bound=bound).double()
    sn.train()
    for _ in range(300):  # power iterations (training-mode forwards) converge u, v to the top singular pair
        sn(w.detach())
    sn.eval()  # then kept fixed
    out = sn(w)
    sigma = _top_sv(w)
    assert float(sn.sigma(w).detach()) == pytest.approx(float(sigma.detach()), rel=1e-6)
    ref = w * torch.clamp(bound / sigma, max=1.0)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-9)
    assert float(_top_sv(out.detach())) == pytest.approx(min(float(sigma.detach()), bound), rel=1e-6)
    g = torch.randn_like(out)
    (grad,) = torch.autograd.grad((out * g).sum(), w)
    (grad_ref,) = torch.autograd.grad((ref * g).sum(), w)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-5, atol=1e-8)


def test_bound_one_equals_torch_spectral_norm_after_convergence() -> None:
    torch.manual_seed(1)
    lin = nn.Linear(5, 7).double()
    with torch.no_grad():
        lin.weight.mul_(5)
    ref = nn.utils.parametrizations.spectral_norm(nn.Linear(5, 7).double(), n_power_iterations=50)
    ref.parametrizations.weight.original.data.copy_(lin.weight.data)
    ref.train()
    ref(torch.zeros(1, 5, dtype=torch.float64))  # 50 power iterations
    spectral_normalize(lin, bound=1.0)
    torch.testing.assert_close(lin.weight, ref.weight, rtol=1e-6, atol=1e-9)


def test_power_iteration_tracks_a_changing_weight_in_training_mode() -> None:
    torch.manual_seed(2)
    lin = spectral_normalize(nn.Linear(8, 8), bound=0.5)
    lin.train()
    with torch.no_grad():
        lin.parametrizations.weight.original.mul_(10)
    for _ in range(30):
        lin(torch.zeros(1, 8))
    assert float(_top_sv(lin.weight.detach())) == pytest.approx(0.5, rel=1e-3)


def test_random_features_approximate_the_rbf_kernel() -> None:
    g = torch.Generator().manual_seed(0)
    h = torch.randn(6, 3, generator=g, dtype=torch.float64)
    d, ls = 200_000, 1.5
    w = torch.randn(d, 3, generator=g, dtype=torch.float64)
    b = torch.rand(d, generator=g, dtype=torch.float64) * 2 * math.pi
    phi = random_features(h, w, b, ls)
    exact = torch.exp(-torch.cdist(h, h) ** 2 / (2 * ls**2))
    torch.testing.assert_close(phi @ phi.T, exact, atol=0.01, rtol=0)


def test_covariance_and_mean_field_logits_match_numpy() -> None:
    torch.manual_seed(0)
    gp = RandomFeatureGP(4, 3, num_features=32, ridge=0.5, normalize_input=False, lengthscale=2.0).double()
    x = torch.randn(50, 4, dtype=torch.float64)
    fit_covariance(gp, x, batch_size=16)
    phi = gp.features(x).detach().numpy()
    cov = 0.5 * np.linalg.inv(0.5 * np.eye(32) + phi.T @ phi)
    np.testing.assert_allclose(gp.covariance.numpy(), cov, rtol=1e-9, atol=1e-12)
    xt = torch.randn(7, 4, dtype=torch.float64) * 3
    phit = gp.features(xt).detach().numpy()
    var = np.einsum("bd,de,be->b", phit, cov, phit)
    logits = (phit @ gp.output.weight.detach().numpy().T + gp.output.bias.detach().numpy())
    gp.eval()
    with torch.no_grad():
        np.testing.assert_allclose(gp(xt).numpy(), logits / np.sqrt(1 + math.pi / 8 * var)[:, None], rtol=1e-9)
        mean, v = gp.predict(xt)
        np.testing.assert_allclose(v.numpy(), var, rtol=1e-9)
        np.testing.assert_allclose(mean_field_logits(mean, v).numpy(), gp(xt).numpy(), rtol=1e-12)
        gp.train()
        np.testing.assert_allclose(gp(xt).numpy(), logits, rtol=1e-9)  # training: plain logits


def test_variance_grows_away_from_the_training_data() -> None:
    torch.manual_seed(0)
    gp = RandomFeatureGP(2, 2, num_features=512, normalize_input=False, lengthscale=1.0).double()
    x = torch.randn(300, 2, dtype=torch.float64) * 0.5
    fit_covariance(gp, x)
    with torch.no_grad():
        _, v_in = gp.predict(x[:50])
        _, v_out = gp.predict(torch.full((50, 2), 6.0, dtype=torch.float64) + torch.randn(50, 2, dtype=torch.float64))
    assert float(v_out.mean()) > 20 * float(v_in.mean())


def test_sngp_model_trains_and_refuses_bad_input() -> None:
    torch.manual_seed(0)
    model = sngp_model(nn.Sequential(nn.Linear(4, 16), nn.ReLU()), 16, 3, num_features=64)
    assert sum(1 for m in model.modules() if isinstance(m, SpectralNormBound)) == 1
    x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    first = None
    for _ in range(50):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        first = first if first is not None else float(loss.detach())
    assert float(loss.detach()) < first
    assert fit_covariance(model, x) == 1
    with pytest.raises(UserError, match="no RandomFeatureGP"):
        fit_covariance(nn.Linear(2, 2), x)
    with pytest.raises(UserError, match="found no layer"):
        spectral_normalize(nn.ReLU())
    with pytest.raises(UserError, match="bound"):
        SpectralNormBound(torch.randn(2, 2), bound=0.0)
