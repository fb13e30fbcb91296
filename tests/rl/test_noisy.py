"""NoisyLinear against the factorized-noise formula of Fortunato et al. 2018 (eq. 10-11), written in NumPy, with
gradients of mu and sigma against the closed form; eval mode is the mean network."""

from __future__ import annotations

import numpy as np
import torch

from tricklab.rl.noisy import NoisyLinear


def test_noisy_linear_matches_formula_and_gradients() -> None:
    torch.manual_seed(0)
    layer = NoisyLinear(5, 3, sigma0=0.5).double()
    layer.reset_noise(torch.Generator().manual_seed(1))
    x = torch.randn(4, 5, dtype=torch.float64)
    y = layer(x)
    f_in, f_out = layer.eps_in.numpy(), layer.eps_out.numpy()
    w = layer.mu_w.detach().numpy() + layer.sigma_w.detach().numpy() * np.outer(f_out, f_in)
    b = layer.mu_b.detach().numpy() + layer.sigma_b.detach().numpy() * f_out
    np.testing.assert_allclose(y.detach().numpy(), x.numpy() @ w.T + b, rtol=1e-12)
    g = torch.randn(4, 3, dtype=torch.float64)
    (y * g).sum().backward()
    gw = g.numpy().T @ x.numpy()  # dL/dW
    np.testing.assert_allclose(layer.mu_w.grad.numpy(), gw, rtol=1e-12)
    np.testing.assert_allclose(layer.sigma_w.grad.numpy(), gw * np.outer(f_out, f_in), rtol=1e-12)
    np.testing.assert_allclose(layer.sigma_b.grad.numpy(), g.numpy().sum(0) * f_out, rtol=1e-12)
    # factorized noise: f(x) = sign(x) sqrt(|x|) of standard normals
    raw = torch.randn(5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    np.testing.assert_allclose(f_in, (raw.sign() * raw.abs().sqrt()).numpy(), rtol=1e-6)
    # initialization (section 3.2): sigma = sigma0 / sqrt(p), mu within 1/sqrt(p)
    assert torch.allclose(layer.sigma_w, torch.full_like(layer.sigma_w, 0.5 / np.sqrt(5)))
    assert layer.mu_w.abs().max() <= 1 / np.sqrt(5)
    layer.eval()
    np.testing.assert_allclose(layer(x).detach().numpy(),
                               x.numpy() @ layer.mu_w.detach().numpy().T + layer.mu_b.detach().numpy(), rtol=1e-12)
