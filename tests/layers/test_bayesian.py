"""Bayes-by-backprop layers. References: torch.distributions' closed-form ``kl_divergence(Normal, Normal)`` and
``log_prob`` (Normal, MixtureSameFamily); scipy quadrature of the KL to a scale-mixture prior; F.linear / F.conv
with an explicitly drawn weight sample (the slow simple path of the reparameterisation); the closed-form moments
``E[out] = x mu^T + b_mu`` and ``Var[out] = x^2 (sigma^2)^T + sigma_b^2`` of a Gaussian-weight layer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import distributions as D

from tricklab.errors import ConfigError
from tricklab.layers.bayesian import (
    BayesConv1d,
    BayesConv2d,
    BayesLinear,
    GaussianPrior,
    ScaleMixturePrior,
    bayes_conv,
    bayes_linear,
    gaussian_kl,
    mc_kl,
    sampling,
    softplus_sigma,
)


def _params(shape: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mu = (0.3 * torch.randn(shape, generator=g, dtype=torch.float64)).requires_grad_()
    rho = (torch.randn(shape, generator=g, dtype=torch.float64) - 2.0).requires_grad_()
    return mu, rho


@pytest.mark.parametrize("sigma_p", [1.0, 0.1])
def test_closed_form_kl_matches_torch_distributions(sigma_p: float) -> None:
    mu, rho = _params((5, 7))
    ours = gaussian_kl(mu, softplus_sigma(rho), 0.0, sigma_p)
    ref = D.kl_divergence(D.Normal(mu, F.softplus(rho)), D.Normal(torch.zeros_like(mu), sigma_p)).sum()
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    g_ours = torch.autograd.grad(ours, (mu, rho))
    g_ref = torch.autograd.grad(ref, (mu, rho))
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_layer_kl_is_the_closed_form_over_weights_and_bias() -> None:
    torch.manual_seed(0)
    layer = BayesLinear(6, 4, prior=GaussianPrior(0.5), rho_init=-3.0).double()
    with torch.no_grad():
        layer.weight_rho.add_(torch.randn_like(layer.weight_rho))
    ref = sum(D.kl_divergence(D.Normal(m, F.softplus(r)), D.Normal(torch.zeros_like(m), 0.5)).sum()
              for m, r in ((layer.weight_mu, layer.weight_rho), (layer.bias_mu, layer.bias_rho)))
    kl = layer.kl()
    torch.testing.assert_close(kl, ref, rtol=1e-12, atol=1e-12)
    grads = torch.autograd.grad(kl, list(layer.parameters()))
    grads_ref = torch.autograd.grad(ref, list(layer.parameters()))
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_mc_kl_converges_to_the_closed_form() -> None:
    """The mean of S one-sample estimates lies within 4 standard errors of the closed form (S = 100 and
    100,000), and the standard error at S = 100,000 is below 1% of it."""
    mu, rho = _params((3, 4), seed=1)
    sigma = softplus_sigma(rho)
    prior = GaussianPrior(1.0)
    exact = float(gaussian_kl(mu, sigma, 0.0, 1.0).detach())
    g = torch.Generator().manual_seed(0)
    for s in (100, 100_000):
        w = mu.detach() + sigma.detach() * torch.randn((s, *mu.shape), generator=g, dtype=torch.float64)
        est = mc_kl(w, mu.detach(), sigma.detach(), prior)  # (S,)
        se = float(est.std()) / math.sqrt(s)
        assert abs(float(est.mean()) - exact) < 4 * se, (s, float(est.mean()), exact, se)
    assert se < 0.01 * abs(exact) + 0.01  # the large-S run pins the value down

    # the gradient of the MC estimate (through w = mu + sigma eps) converges to the closed-form gradient
    eps = torch.randn((200_000, *mu.shape), generator=g, dtype=torch.float64)
    w = mu + softplus_sigma(rho) * eps
    est = mc_kl(w, mu, softplus_sigma(rho), prior).mean()
    g_mc = torch.autograd.grad(est, (mu, rho))
    g_exact = torch.autograd.grad(gaussian_kl(mu, softplus_sigma(rho), 0.0, 1.0), (mu, rho))
    for a, b in zip(g_mc, g_exact):
        torch.testing.assert_close(a, b, rtol=0.05, atol=0.02)


def test_log_probs_match_torch_distributions() -> None:
    g = torch.Generator().manual_seed(3)
    w = torch.randn(50, generator=g, dtype=torch.float64) * 2
    prior = ScaleMixturePrior(pi=0.25, sigma1=1.0, sigma2=math.exp(-6))
    mix = D.MixtureSameFamily(D.Categorical(torch.tensor([0.25, 0.75], dtype=torch.float64)),
                              D.Normal(torch.zeros(2, dtype=torch.float64),
                                       torch.tensor([1.0, math.exp(-6)], dtype=torch.float64)))
    torch.testing.assert_close(prior.log_prob(w), mix.log_prob(w), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(GaussianPrior(0.7).log_prob(w), D.Normal(0.0, 0.7).log_prob(w))
    mu, rho = _params((50,))
    sigma = softplus_sigma(rho)
    ref = (D.Normal(mu, sigma).log_prob(w) - mix.log_prob(w)).sum()
    torch.testing.assert_close(mc_kl(w, mu, sigma, prior), ref, rtol=1e-12, atol=1e-12)


def test_mc_kl_to_scale_mixture_converges_to_quadrature() -> None:
    """No closed form: the reference is scipy's numerical integral of q log(q / p) per weight."""
    integrate = pytest.importorskip("scipy.integrate")
    prior = ScaleMixturePrior(pi=0.5, sigma1=1.0, sigma2=math.exp(-2))
    mu = torch.tensor([0.0, 0.4, -1.0], dtype=torch.float64)
    sigma = torch.tensor([0.05, 0.3, 0.6], dtype=torch.float64)

    def kl_1d(m: float, s: float) -> float:
        def f(w: float) -> float:
            wt = torch.tensor([w], dtype=torch.float64)
            lq = float(D.Normal(m, s).log_prob(wt))
            return math.exp(lq) * (lq - float(prior.log_prob(wt)))

        return integrate.quad(f, m - 12 * s, m + 12 * s, limit=200)[0]

    exact = sum(kl_1d(float(m), float(s)) for m, s in zip(mu, sigma))
    g = torch.Generator().manual_seed(0)
    w = mu + sigma * torch.randn((200_000, 3), generator=g, dtype=torch.float64)
    est = mc_kl(w, mu, sigma, prior)
    se = float(est.std()) / math.sqrt(len(est))
    assert abs(float(est.mean()) - exact) < 4 * se, (float(est.mean()), exact, se)


def test_weight_sample_path_equals_explicit_linear_and_conv() -> None:
    g = torch.Generator().manual_seed(4)
    x = torch.randn(5, 6, generator=g)
    mu, sig = torch.randn(3, 6, generator=g), torch.rand(3, 6, generator=g)
    bmu, bsig = torch.randn(3, generator=g), torch.rand(3, generator=g)
    out, w, b = bayes_linear(x, mu, sig, bmu, bsig, generator=torch.Generator().manual_seed(9))
    g2 = torch.Generator().manual_seed(9)
    w_ref = mu + sig * torch.randn(3, 6, generator=g2)
    b_ref = bmu + bsig * torch.randn(3, generator=g2)
    torch.testing.assert_close(w, w_ref)
    torch.testing.assert_close(b, b_ref)
    torch.testing.assert_close(out, F.linear(x, w_ref, b_ref))

    xc = torch.randn(2, 3, 9, generator=g)
    cm, cs = torch.randn(4, 3, 3, generator=g), torch.rand(4, 3, 3, generator=g)
    out, w, _ = bayes_conv(xc, cm, cs, None, None, padding=1, stride=2, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(out, F.conv1d(xc, w, None, padding=1, stride=2))
    torch.testing.assert_close(w, cm + cs * torch.randn(4, 3, 3, generator=torch.Generator().manual_seed(1)))


@pytest.mark.parametrize("local_reparam", [False, True])
def test_output_moments_and_gradients_match_the_closed_form(local_reparam: bool) -> None:
    """E[out] = x mu^T + b_mu, Var[out] = x^2 (sigma^2)^T + sigma_b^2, and the gradient of E[out^2] w.r.t.
    rho is 2 sigma sigma'(rho) x^2 (sigma' = sigmoid); both paths estimate them without bias."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 4, generator=g, dtype=torch.float64)
    mu = torch.randn(2, 4, generator=g, dtype=torch.float64, requires_grad=True)
    rho = (torch.randn(2, 4, generator=g, dtype=torch.float64) - 1).requires_grad_()
    bmu = torch.randn(2, generator=g, dtype=torch.float64)
    brho = torch.randn(2, generator=g, dtype=torch.float64)
    s = 100_000
    xs = x.expand(s, 4)  # one draw per row: the LRT samples per output row, the weight path per call
    if local_reparam:
        out, _, _ = bayes_linear(xs, mu, softplus_sigma(rho), bmu, softplus_sigma(brho), local_reparam=True,
                                 generator=g)
    else:
        # the weight-sample path draws one weight per call: vectorise S calls with a batched weight sample
        eps = torch.randn(s, 2, 4, generator=g, dtype=torch.float64)
        w = mu + softplus_sigma(rho) * eps
        b = bmu + softplus_sigma(brho) * torch.randn(s, 2, generator=g, dtype=torch.float64)
        out = torch.einsum("si,soi->so", xs, w) + b
    mean_ref = (F.linear(x, mu, bmu)).detach()[0]
    var_ref = (F.linear(x * x, softplus_sigma(rho) ** 2, softplus_sigma(brho) ** 2)).detach()[0]
    torch.testing.assert_close(out.detach().mean(0), mean_ref, atol=4 * float(var_ref.max().sqrt()) / s**0.5,
                               rtol=0)
    torch.testing.assert_close(out.detach().var(0), var_ref, rtol=0.03, atol=0)
    (grad_rho,) = torch.autograd.grad((out**2).mean(0).sum(), rho)
    sig = softplus_sigma(rho).detach()
    expected = 2 * sig * torch.sigmoid(rho.detach()) * (x * x).expand(2, 4)
    torch.testing.assert_close(grad_rho, expected, rtol=0.06, atol=0.02 * float(expected.abs().max()))


def test_lrt_conv_variance_is_conv_of_squares() -> None:
    g = torch.Generator().manual_seed(6)
    x = torch.randn(1, 2, 6, 6, generator=g, dtype=torch.float64)
    mu, sig = torch.randn(3, 2, 3, 3, generator=g, dtype=torch.float64), torch.rand(3, 2, 3, 3, generator=g,
                                                                                    dtype=torch.float64)
    xs = x.expand(20_000, 2, 6, 6)
    out, _, _ = bayes_conv(xs, mu, sig, None, None, padding=1, local_reparam=True, generator=g)
    var_ref = F.conv2d(x * x, sig**2, padding=1)[0]
    torch.testing.assert_close(out.var(0), var_ref, rtol=0.06, atol=1e-6)
    torch.testing.assert_close(out.mean(0), F.conv2d(x, mu, padding=1)[0], rtol=0,
                               atol=5 * float(var_ref.max().sqrt()) / 20_000**0.5)


def test_modes_eval_is_the_mean_and_sampling_draws() -> None:
    torch.manual_seed(0)
    layer = BayesConv1d(2, 3, 3, padding=1, rho_init=-1.0)
    x = torch.randn(4, 2, 7)
    layer.eval()
    ref = F.conv1d(x, layer.weight_mu, layer.bias_mu, padding=1)
    torch.testing.assert_close(layer(x), ref)
    torch.testing.assert_close(layer(x), layer(x))
    with sampling(layer):
        a, b = layer(x), layer(x)
    assert not torch.allclose(a, b)
    assert layer.sample_in_eval is False
    torch.testing.assert_close(layer(x), ref)
    layer.train()
    assert not torch.allclose(layer(x), layer(x))


def test_mc_kl_uses_the_forward_sample() -> None:
    """With a scale-mixture prior the layer's KL is log q(w) - log p(w) at the weights its forward used."""
    torch.manual_seed(0)
    prior = ScaleMixturePrior()
    layer = BayesConv2d(2, 2, 3, prior=prior, rho_init=-2.0)
    torch.manual_seed(7)
    layer(torch.randn(1, 2, 5, 5))
    torch.manual_seed(7)
    torch.randn(1, 2, 5, 5)  # same draws as above: input, then weight eps, then bias eps
    w = layer.weight_mu + layer.weight_sigma * torch.randn(layer.weight_mu.shape)
    b = layer.bias_mu + layer.bias_sigma * torch.randn(layer.bias_mu.shape)
    ref = (D.Normal(layer.weight_mu, layer.weight_sigma).log_prob(w) - prior.log_prob(w)).sum() + (
        D.Normal(layer.bias_mu, layer.bias_sigma).log_prob(b) - prior.log_prob(b)).sum()
    kl = layer.kl()
    torch.testing.assert_close(kl, ref)
    grads = torch.autograd.grad(kl, [layer.weight_mu, layer.weight_rho])
    grads_ref = torch.autograd.grad(ref, [layer.weight_mu, layer.weight_rho])
    for a, b_ in zip(grads, grads_ref):
        torch.testing.assert_close(a, b_)


def test_bad_arguments_are_refused_with_clear_errors() -> None:
    with pytest.raises(ConfigError, match="closed form"):
        BayesLinear(3, 2, prior=ScaleMixturePrior(), kl_mode="closed")
    with pytest.raises(ConfigError, match="pi"):
        ScaleMixturePrior(pi=1.0)
    with pytest.raises(ConfigError, match="sigma"):
        GaussianPrior(0.0)
    with pytest.raises(ConfigError, match="in_features"):
        BayesLinear(0, 2)
    with pytest.raises(ConfigError, match="divisible"):
        BayesConv2d(3, 4, 3, groups=2)
    with pytest.raises(ConfigError, match="kl_mode"):
        BayesLinear(3, 2, kl_mode="exact")  # type: ignore[arg-type]


def test_reparameterised_training_reduces_the_elbo_on_a_toy_regression() -> None:
    """A smoke check with a number: 200 Adam steps of NLL + KL / N on y = 2x fit the slope."""
    torch.manual_seed(0)
    x = torch.linspace(-1, 1, 64).unsqueeze(1)
    y = 2 * x + 0.05 * torch.randn_like(x)
    layer = BayesLinear(1, 1, rho_init=-3.0)
    opt = torch.optim.Adam(layer.parameters(), lr=0.05)
    for _ in range(200):
        opt.zero_grad()
        loss = F.mse_loss(layer(x), y) / (2 * 0.05**2) + layer.kl() / len(x)
        loss.backward()
        opt.step()
    assert float(layer.weight_mu.detach()) == pytest.approx(2.0, abs=0.1)
    assert np.isfinite(float(layer.kl().detach()))


def test_a_layer_holding_its_last_sample_can_be_deep_copied() -> None:
    import copy

    layer = BayesLinear(3, 2, prior=ScaleMixturePrior())
    layer(torch.randn(4, 3))  # keeps the sampled weights (part of the autograd graph) for the MC KL
    clone = copy.deepcopy(layer)
    torch.testing.assert_close(clone.weight_mu, layer.weight_mu)
    assert clone._last is None and layer._last is not None
