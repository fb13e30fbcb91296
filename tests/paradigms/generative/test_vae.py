"""VAE core against references: the analytic KL against ``torch.distributions.kl_divergence`` (outputs and
gradients), the likelihoods against ``torch.distributions`` / a float64 NumPy brute force, the IWAE bound
against its definition and its monotonicity in k on a trained model (Burda et al. 2016, theorem 1)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.distributions import Bernoulli, Independent, Normal, kl_divergence

from tricklab.errors import ConfigError
from tricklab.paradigms.generative.vae import (
    VAE,
    bernoulli_log_likelihood,
    bits_per_dim,
    discretized_logistic_log_likelihood,
    elbo,
    gaussian_kl,
    iwae_bound,
    log_normal,
)


def test_gaussian_kl_equals_torch_kl_divergence_with_gradients() -> None:
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(5, 7, generator=g, dtype=torch.float64, requires_grad=True)
    logvar = torch.randn(5, 7, generator=g, dtype=torch.float64, requires_grad=True)
    ours = gaussian_kl(mu, logvar)
    q = Independent(Normal(mu, torch.exp(0.5 * logvar)), 1)
    p = Independent(Normal(torch.zeros_like(mu), torch.ones_like(mu)), 1)
    ref = kl_divergence(q, p)
    torch.testing.assert_close(ours, ref)
    w = torch.randn(5, generator=g, dtype=torch.float64)
    g_ours = torch.autograd.grad((ours * w).sum(), (mu, logvar))
    g_ref = torch.autograd.grad((ref * w).sum(), (mu, logvar))
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b)


def test_log_normal_and_bernoulli_equal_torch_distributions() -> None:
    g = torch.Generator().manual_seed(1)
    z, mu, logvar = (torch.randn(3, 4, 6, generator=g, dtype=torch.float64) for _ in range(3))
    ref = Independent(Normal(mu, torch.exp(0.5 * logvar)), 1).log_prob(z)
    torch.testing.assert_close(log_normal(z, mu, logvar), ref)
    x = (torch.rand(4, 10, generator=g) > 0.5).double()
    logits = torch.randn(3, 4, 10, generator=g, dtype=torch.float64, requires_grad=True)
    ours = bernoulli_log_likelihood(x, logits)
    ref = Bernoulli(logits=logits).log_prob(x.expand_as(logits)).sum(-1)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(torch.autograd.grad(ours.sum(), logits)[0],
                               torch.autograd.grad(ref.sum(), logits)[0])


def _logistic_cdf(x: np.ndarray, m: np.ndarray, s: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(x - m) / s))


def test_discretized_logistic_sums_to_one_and_matches_numpy_brute_force() -> None:
    levels = 256
    x = torch.arange(levels, dtype=torch.float64).div(levels - 1).view(levels, 1)  # every level, one pixel
    for mean, log_scale in ((0.3, math.log(0.05)), (0.99, math.log(0.002)), (0.0, math.log(0.5)), (0.5, -7.0)):
        m = torch.full((levels, 1), mean, dtype=torch.float64)
        ls = torch.full((levels, 1), log_scale, dtype=torch.float64)
        ll = discretized_logistic_log_likelihood(x, m, ls)
        # the 256 probabilities of one pixel are a distribution
        assert abs(torch.logsumexp(ll, 0).item()) < 1e-9
        # NumPy brute force in float64: CDF differences, open-ended first and last bins; right of the mean the
        # same mass as survival-function differences (1 - F), which keeps its digits where F is near 1
        xn, h, s = x.numpy()[:, 0], 0.5 / (levels - 1), math.exp(log_scale)
        k = np.arange(levels)
        upper = np.where(k == levels - 1, 1.0, _logistic_cdf(xn + h, mean, s))
        lower = np.where(k == 0, 0.0, _logistic_cdf(xn - h, mean, s))
        sf_lo = np.where(k == 0, 1.0, _logistic_cdf(-(xn - h), -mean, s))
        sf_hi = np.where(k == levels - 1, 0.0, _logistic_cdf(-(xn + h), -mean, s))
        mass = np.where(xn - h > mean, sf_lo - sf_hi, upper - lower)
        ref = np.log(np.maximum(mass, 1e-300))
        ok = ref > -600  # where float64 differences still resolve
        np.testing.assert_allclose(ll.numpy()[ok], ref[ok], rtol=1e-6, atol=1e-8)


def test_discretized_logistic_gradient_matches_naive_float64_formula() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randint(1, 255, (4, 9), generator=g).double() / 255
    mean = torch.rand(4, 9, generator=g, dtype=torch.float64).requires_grad_()
    ls = (torch.rand(4, 9, generator=g, dtype=torch.float64) * 2 - 4).requires_grad_()
    ours = discretized_logistic_log_likelihood(x, mean, ls)
    h = 0.5 / 255
    naive = torch.log(torch.sigmoid((x + h - mean) / ls.exp()) - torch.sigmoid((x - h - mean) / ls.exp())).sum(-1)
    torch.testing.assert_close(ours, naive)
    for a, b in zip(torch.autograd.grad(ours.sum(), (mean, ls)), torch.autograd.grad(naive.sum(), (mean, ls))):
        torch.testing.assert_close(a, b)


def test_elbo_analytic_kl_equals_monte_carlo_and_iwae_k1_is_the_elbo_sample() -> None:
    g = torch.Generator().manual_seed(3)
    mu = torch.randn(2, 3, generator=g, dtype=torch.float64)
    logvar = torch.randn(2, 3, generator=g, dtype=torch.float64) * 0.3
    log_px_z = torch.randn(1, 2, generator=g, dtype=torch.float64)
    z = mu + torch.exp(0.5 * logvar) * torch.randn(1, 2, 3, generator=g, dtype=torch.float64)
    zero = torch.zeros_like(mu)
    # k = 1: log w = log p(x|z) + log p(z) - log q(z|x), the single-sample ELBO estimate
    expected = log_px_z[0] + log_normal(z[0], zero, zero) - log_normal(z[0], mu, logvar)
    torch.testing.assert_close(iwae_bound(log_px_z, z, mu, logvar), expected)
    # Monte Carlo mean of log q - log p over 200k samples equals the analytic KL (tolerance: 5 standard errors)
    zs = mu + torch.exp(0.5 * logvar) * torch.randn(200_000, 2, 3, generator=g, dtype=torch.float64)
    d = log_normal(zs, mu, logvar) - log_normal(zs, zero, zero)
    se = d.std(0) / math.sqrt(zs.shape[0])
    assert ((d.mean(0) - gaussian_kl(mu, logvar)).abs() < 5 * se).all()
    torch.testing.assert_close(elbo(log_px_z[0], mu, logvar, beta=2.0),
                               log_px_z[0] - 2.0 * gaussian_kl(mu, logvar))


def _binary_data(n: int, d: int, seed: int) -> torch.Tensor:
    """Binary vectors near 4 prototypes (10% of bits flipped): a small set a tiny VAE fits in seconds."""
    g = torch.Generator().manual_seed(seed)
    protos = (torch.rand(4, d, generator=g) > 0.5).float()
    x = protos[torch.randint(0, 4, (n,), generator=g)]
    flip = torch.rand(n, d, generator=g) < 0.1
    return torch.where(flip, 1 - x, x)


def test_iwae_bound_increases_with_k_on_a_trained_model() -> None:
    torch.manual_seed(0)
    x = _binary_data(512, 16, seed=0)
    model = VAE(input_dim=16, latent_dim=2, hidden=32)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(600):
        loss = model(x).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.manual_seed(1)
    with torch.no_grad():
        bounds = {k: torch.stack([model.iwae(x, k) for _ in range(20)]).mean(0) for k in (1, 5, 50)}
    # paired over examples: L_5 - L_1 and L_50 - L_5 are positive beyond 4 standard errors of the mean
    for lo, hi in ((1, 5), (5, 50)):
        diff = bounds[hi] - bounds[lo]
        assert diff.mean() > 4 * diff.std() / math.sqrt(len(diff)), (lo, hi, diff.mean().item())


def test_bits_per_dim_formula() -> None:
    # a uniform distribution over 256 levels in each of D dims: log p = -D ln 256 -> exactly 8 bits per dim
    assert bits_per_dim(-784 * math.log(256), 784) == pytest.approx(8.0)
    ll = torch.tensor([-500.0, -1000.0])
    torch.testing.assert_close(bits_per_dim(ll, 100), torch.from_numpy(-ll.numpy() / (100 * np.log(2))).float())
    with pytest.raises(ConfigError, match="dims"):
        bits_per_dim(ll, 0)


def test_vae_logistic_decoder_trains_and_bad_config_is_refused() -> None:
    torch.manual_seed(0)
    x = torch.randint(0, 256, (64, 12)).float() / 255
    model = VAE(input_dim=12, latent_dim=2, hidden=16, decoder="logistic")
    loss0 = model(x).mean()
    loss0.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.sample(3).shape == (3, 12) and model.reconstruct(x).shape == x.shape
    with pytest.raises(ConfigError, match="decoder"):
        VAE(decoder="gaussian-ish")
    with pytest.raises(ConfigError, match="beta"):
        VAE(beta=0.0)
