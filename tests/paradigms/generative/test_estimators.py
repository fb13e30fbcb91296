"""Gradient estimators against closed forms. Objective: E_{z ~ N(mu, diag sigma^2)} sum_d (z_d - c_d)^2
= sum_d (mu_d - c_d)^2 + sigma_d^2, so the exact gradient is 2 (mu - c) for mu and 2 sigma^2 for log sigma;
and a Bernoulli objective with an exact gradient for REINFORCE on a discrete latent. Unbiasedness is checked
per coordinate within 5 Monte Carlo standard errors (n = 20,000 samples; a false failure has probability about
6e-7 per coordinate); the per-sample rows are checked against the closed-form score and path derivatives."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor
from torch.distributions import Bernoulli, Independent, Normal

from tricklab.errors import ConfigError
from tricklab.paradigms.generative.estimators import pathwise_grads, reinforce_grads, reinforce_surrogate

MU = torch.tensor([0.5, -1.0], dtype=torch.float64)
LOG_SIGMA = torch.tensor([0.0, -0.5], dtype=torch.float64)
C = torch.tensor([3.0, 2.0], dtype=torch.float64)
N = 20_000


def gaussian(mu: Tensor, log_sigma: Tensor) -> Independent:
    return Independent(Normal(mu, log_sigma.exp()), 1)


def quadratic(z: Tensor) -> Tensor:
    return (z - C).pow(2).sum(-1)


def exact_gradient() -> Tensor:
    return torch.cat([2 * (MU - C), 2 * torch.exp(2 * LOG_SIGMA)])


def assert_unbiased(rows: Tensor, exact: Tensor, z_tol: float = 5.0) -> None:
    mean, se = rows.mean(0), rows.std(0) / math.sqrt(rows.shape[0])
    assert ((mean - exact).abs() <= z_tol * se).all(), (mean, exact, se)


@pytest.mark.parametrize("estimator", ["reinforce", "reinforce_loo", "reinforce_const", "pathwise"])
def test_estimators_are_unbiased_on_a_gaussian_quadratic(estimator: str) -> None:
    torch.manual_seed(0)
    params = [MU.clone(), LOG_SIGMA.clone()]
    if estimator == "pathwise":
        rows = pathwise_grads(quadratic, params, gaussian, N)
    else:
        baseline = {"reinforce": "none", "reinforce_loo": "loo", "reinforce_const": 10.0}[estimator]
        rows = reinforce_grads(quadratic, params, gaussian, N, baseline=baseline)
    assert rows.shape == (N, 4)
    assert_unbiased(rows, exact_gradient())


def test_rows_equal_the_closed_form_score_and_path_derivatives() -> None:
    sigma = LOG_SIGMA.exp()
    torch.manual_seed(1)
    rows = reinforce_grads(quadratic, [MU, LOG_SIGMA], gaussian, 50)
    torch.manual_seed(1)
    z = gaussian(MU, LOG_SIGMA).sample((50,))
    # d log N(z; mu, sigma) / d mu = (z - mu) / sigma^2;  / d log sigma = (z - mu)^2 / sigma^2 - 1
    score = torch.cat([(z - MU) / sigma**2, (z - MU) ** 2 / sigma**2 - 1], dim=1)
    torch.testing.assert_close(rows, quadratic(z)[:, None] * score)
    torch.manual_seed(2)
    rows = pathwise_grads(quadratic, [MU, LOG_SIGMA], gaussian, 50)
    torch.manual_seed(2)
    eps = torch.randn(50, 2, dtype=torch.float64)
    z = MU + sigma * eps
    # z = mu + sigma eps: d f / d mu = 2 (z - c); d f / d log sigma = 2 (z - c) sigma eps
    torch.testing.assert_close(rows, torch.cat([2 * (z - C), 2 * (z - C) * sigma * eps], dim=1))


def test_baselines_and_pathwise_cut_the_variance() -> None:
    torch.manual_seed(3)
    params = [MU, LOG_SIGMA]
    var = {name: fn().var(0).sum().item() for name, fn in {
        "none": lambda: reinforce_grads(quadratic, params, gaussian, 4000),
        "loo": lambda: reinforce_grads(quadratic, params, gaussian, 4000, baseline="loo"),
        "pathwise": lambda: pathwise_grads(quadratic, params, gaussian, 4000)}.items()}
    # with c far from mu, f has a large offset that the baseline removes (measured: about 3480, 810 and 52;
    # the margins below are several times the sampling error of a variance from 4000 samples)
    assert var["pathwise"] < var["loo"] / 5 and var["loo"] < var["none"] / 2, var


def test_reinforce_on_a_bernoulli_latent_and_the_surrogate() -> None:
    # E_{z ~ Bern(sigmoid(a))} (z - 0.45)^2 = p 0.55^2 + (1 - p) 0.45^2; d/da = p (1 - p)(0.55^2 - 0.45^2)
    a = torch.tensor([0.3], dtype=torch.float64)
    p = torch.sigmoid(a)
    exact = p * (1 - p) * (0.55**2 - 0.45**2)

    def f(z: Tensor) -> Tensor:
        return (z - 0.45).pow(2).sum(-1)

    def bern(a: Tensor) -> Independent:
        return Independent(Bernoulli(logits=a), 1)

    torch.manual_seed(4)
    for baseline in ("none", "loo"):
        assert_unbiased(reinforce_grads(f, [a], bern, N, baseline=baseline), exact)
    # the surrogate's autograd gradient equals the mean of the per-sample rows
    torch.manual_seed(5)
    rows = reinforce_grads(f, [a], bern, 100, baseline="loo")
    torch.manual_seed(5)
    a_ = a.clone().requires_grad_()
    z = bern(a_).sample((100,))
    (g,) = torch.autograd.grad(reinforce_surrogate(bern(a_).log_prob(z), f(z), "loo"), a_)
    torch.testing.assert_close(g, rows.mean(0))
    with pytest.raises(ConfigError, match="rsample"):
        pathwise_grads(f, [a], bern, 10)
    with pytest.raises(ConfigError, match="baseline"):
        reinforce_grads(f, [a], bern, 10, baseline="mean")
    with pytest.raises(ConfigError, match="num_samples"):
        reinforce_grads(f, [a], bern, 1, baseline="loo")
