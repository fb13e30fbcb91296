"""Noisy linear layer with factorized Gaussian noise (Fortunato et al. 2018, "Noisy Networks for Exploration").

    y = (mu_w + sigma_w * eps_w) x + (mu_b + sigma_b * eps_b),
    eps_w[i, j] = f(eps_out[i]) * f(eps_in[j]),  eps_b = f(eps_out),  f(x) = sign(x) * sqrt(|x|)

Initialization (section 3.2, factorized case): mu ~ U[-1/sqrt(p), 1/sqrt(p)], sigma = sigma0 / sqrt(p), p the
number of inputs, sigma0 = 0.5. The noise is drawn by ``reset_noise(generator)`` (once per learner step and per
acting step, as in Rainbow), from an explicit generator so nothing touches the global RNG. In eval mode, or with
``noise=False``, the layer is the mean network: mu only.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def scaled_noise(size: int, generator: torch.Generator | None) -> torch.Tensor:
    """f(x) = sign(x) sqrt(|x|) of standard normal draws."""
    x = torch.randn(size, generator=generator)
    return x.sign() * x.abs().sqrt()


def noisy_linear(x: torch.Tensor, mu_w: torch.Tensor, sigma_w: torch.Tensor, mu_b: torch.Tensor,
                 sigma_b: torch.Tensor, eps_in: torch.Tensor, eps_out: torch.Tensor) -> torch.Tensor:
    """The functional core: a linear map with weights mu + sigma * (eps_out outer eps_in)."""
    weight = mu_w + sigma_w * torch.outer(eps_out, eps_in)
    bias = mu_b + sigma_b * eps_out
    return F.linear(x, weight, bias)


class NoisyLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, sigma0: float = 0.5) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        bound = 1.0 / math.sqrt(in_features)
        self.mu_w = nn.Parameter(torch.empty(out_features, in_features).uniform_(-bound, bound))
        self.mu_b = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound))
        self.sigma_w = nn.Parameter(torch.full((out_features, in_features), sigma0 / math.sqrt(in_features)))
        self.sigma_b = nn.Parameter(torch.full((out_features,), sigma0 / math.sqrt(in_features)))
        self.register_buffer("eps_in", torch.zeros(in_features))
        self.register_buffer("eps_out", torch.zeros(out_features))
        self.noise = True

    def reset_noise(self, generator: torch.Generator | None = None) -> None:
        self.eps_in.copy_(scaled_noise(self.in_features, generator))
        self.eps_out.copy_(scaled_noise(self.out_features, generator))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.noise:
            return noisy_linear(x, self.mu_w, self.sigma_w, self.mu_b, self.sigma_b, self.eps_in, self.eps_out)
        return F.linear(x, self.mu_w, self.mu_b)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"
