"""Variational autoencoder (Kingma & Welling, 2014): a Gaussian encoder q(z|x) = N(mu(x), diag sigma^2(x)), a
standard normal prior p(z) = N(0, I), and a decoder p(x|z) that is either Bernoulli (binary pixels) or a
discretized logistic over 256 levels (8-bit pixels, Kingma et al. 2016 / Salimans et al. 2017).

Functional core (usable in any loop):

* :func:`gaussian_kl` - the analytic KL(q || N(0, I)) of the paper's appendix B,
  ``-KL = 1/2 sum_j (1 + log sigma_j^2 - mu_j^2 - sigma_j^2)``;
* :func:`bernoulli_log_likelihood`, :func:`discretized_logistic_log_likelihood` - log p(x|z) per example;
* :func:`elbo` - ``E_q[log p(x|z)] - beta * KL`` with one reparameterized sample (beta = 1: the ELBO; beta > 1:
  beta-VAE, Higgins et al. 2017);
* :func:`iwae_bound` - the importance-weighted bound of Burda et al. (2016), eq. 8:
  ``L_k = E[log (1/k) sum_i p(x, z_i) / q(z_i | x)]``, which is the ELBO at k = 1 and increases with k towards
  log p(x);
* :func:`bits_per_dim` - ``-log p(x) / (D ln 2)``.

:class:`VAE` is the thin nn.Module shell: MLP encoder and decoder for flat inputs (28x28 = 784 for
Fashion-MNIST); ``forward(x)`` returns the per-example negative ELBO (nats), so the supervised trainer can
minimise its mean.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tricklab.errors import ConfigError

__all__ = [
    "DECODERS",
    "VAE",
    "bernoulli_log_likelihood",
    "bits_per_dim",
    "discretized_logistic_log_likelihood",
    "elbo",
    "gaussian_kl",
    "iwae_bound",
    "log_normal",
]

DECODERS: tuple[str, ...] = ("bernoulli", "logistic")
_LOG_2PI = math.log(2.0 * math.pi)


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, diag exp(logvar)) || N(0, I)) per example, summed over the last dimension (nats).

    Kingma & Welling (2014), appendix B: ``KL = -1/2 sum_j (1 + log sigma_j^2 - mu_j^2 - sigma_j^2)``.
    Shapes: mu, logvar (..., J) -> (...).
    """
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)


def log_normal(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """log N(z; mu, diag exp(logvar)) summed over the last dimension. Shapes broadcast; (..., J) -> (...)."""
    return -0.5 * (_LOG_2PI + logvar + (z - mu).pow(2) * torch.exp(-logvar)).sum(-1)


def bernoulli_log_likelihood(x: Tensor, logits: Tensor) -> Tensor:
    """log p(x | logits) of independent Bernoulli pixels, summed over all but the first dimension.

    ``x`` in {0, 1} (a continuous x in [0, 1] gives the cross-entropy, not a likelihood). Shapes (B, ...) ->
    (B,); logits may carry extra leading sample dimensions, e.g. (k, B, D) with x (B, D) -> (k, B).
    """
    ll = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none")
    return ll.flatten(start_dim=ll.dim() - x.dim() + 1).sum(-1)


def discretized_logistic_log_likelihood(x: Tensor, mean: Tensor, log_scale: Tensor, levels: int = 256) -> Tensor:
    """log P(x) of a logistic(mean, exp(log_scale)) discretized into ``levels`` bins on [0, 1], summed per example.

    ``x`` holds the levels k / (levels - 1). Bin k covers [x - h, x + h] with h = 1 / (2 (levels - 1)); the
    first bin extends to -inf and the last to +inf, so the probabilities of the ``levels`` values sum to one
    (Salimans et al. 2017, eq. 2, with one logistic instead of a mixture). Shapes as in
    :func:`bernoulli_log_likelihood`.
    """
    h = 0.5 / (levels - 1)
    nd = x.dim()
    x = x.expand_as(mean)
    inv_s = torch.exp(-log_scale)
    plus = (x - mean + h) * inv_s
    minus = (x - mean - h) * inv_s
    log_cdf_plus = F.logsigmoid(plus)  # log sigma(plus): the first bin
    log_sf_minus = -F.softplus(minus)  # log (1 - sigma(minus)): the last bin
    # log(sigma(plus) - sigma(minus)) = log sigma(plus) + log(1 - exp(log sigma(minus) - log sigma(plus)));
    # when both are far in the same tail use the mirrored form, which avoids 1 - 1 cancellation.
    log_mid_left = log_cdf_plus + torch.log(-torch.expm1(F.logsigmoid(minus) - log_cdf_plus).clamp(max=-1e-30))
    log_mid_right = log_sf_minus + torch.log(
        -torch.expm1(-F.softplus(plus) - log_sf_minus).clamp(max=-1e-30))
    log_mid = torch.where(minus > 0, log_mid_right, log_mid_left)
    first = x < h  # level 0
    last = x > 1.0 - h  # level levels - 1
    ll = torch.where(first, log_cdf_plus, torch.where(last, log_sf_minus, log_mid))
    return ll.flatten(start_dim=ll.dim() - nd + 1).sum(-1)


def elbo(log_px_z: Tensor, mu: Tensor, logvar: Tensor, beta: float = 1.0) -> Tensor:
    """Per-example ELBO ``log p(x | z) - beta * KL(q(z|x) || p(z))`` with the analytic KL (Kingma & Welling eq. 10).
    beta = 1 is the VAE bound; beta > 1 the beta-VAE objective (Higgins et al. 2017, eq. 4)."""
    return log_px_z - beta * gaussian_kl(mu, logvar)


def iwae_bound(log_px_z: Tensor, z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """Importance-weighted bound per example from k samples (Burda et al. 2016, eq. 8).

    ``log_px_z``: (k, B) log p(x | z_i); ``z``: (k, B, J) samples of q; ``mu``, ``logvar``: (B, J).
    Returns (B,) ``logsumexp_i [log p(x|z_i) + log p(z_i) - log q(z_i|x)] - log k``.
    """
    log_w = log_px_z + log_normal(z, torch.zeros_like(mu), torch.zeros_like(logvar)) - log_normal(z, mu, logvar)
    return torch.logsumexp(log_w, dim=0) - math.log(z.shape[0])


def bits_per_dim(log_likelihood: Tensor | float, dims: int) -> Tensor | float:
    """``-log p(x) / (D ln 2)``: nats of the whole example turned into bits per dimension."""
    if dims < 1:
        raise ConfigError(f"dims must be a positive int (the number of dimensions of one example), got {dims}")
    return -log_likelihood / (dims * math.log(2.0))


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class VAE(nn.Module):
    """MLP VAE on flat inputs of ``input_dim``. ``decoder``: "bernoulli" (x in {0, 1}) or "logistic"
    (x = k / 255, one learned log-scale per pixel, as a per-dimension parameter rather than an output).

    ``forward(x)`` returns the per-example negative ELBO (B,) in nats with one reparameterized sample;
    :meth:`iwae` the k-sample bound; :meth:`sample` decoded means of prior samples.
    """

    def __init__(self, input_dim: int = 784, latent_dim: int = 32, hidden: int = 256, decoder: str = "bernoulli",
                 beta: float = 1.0) -> None:
        super().__init__()
        if decoder not in DECODERS:
            raise ConfigError(f"decoder must be one of {DECODERS}, got {decoder!r}")
        for name, v in (("input_dim", input_dim), ("latent_dim", latent_dim), ("hidden", hidden)):
            if not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} must be a positive int, got {v!r}")
        if not beta > 0:
            raise ConfigError(f"beta must be > 0 (1 is the VAE, > 1 a beta-VAE), got {beta!r}")
        self.input_dim, self.latent_dim, self.decoder_kind, self.beta = input_dim, latent_dim, decoder, beta
        self.encoder = _mlp([input_dim, hidden, hidden, 2 * latent_dim])
        self.decoder = _mlp([latent_dim, hidden, hidden, input_dim])
        # logistic decoder: a per-pixel log scale, started at log(1/32) so the first steps are not all noise
        self.log_scale = nn.Parameter(torch.full((input_dim,), math.log(1 / 32))) if decoder == "logistic" else None

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, D) -> mu, logvar, each (B, J)."""
        mu, logvar = self.encoder(x.flatten(1)).chunk(2, dim=-1)
        return mu, logvar

    def log_px_z(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x | z): x (B, D), z (..., B, J) -> (..., B)."""
        out = self.decoder(z)
        x = x.flatten(1)
        if self.decoder_kind == "bernoulli":
            return bernoulli_log_likelihood(x, out)
        assert self.log_scale is not None
        mean = torch.sigmoid(out)  # pixel means stay in [0, 1]
        return discretized_logistic_log_likelihood(x, mean, self.log_scale.clamp(min=-7.0).expand_as(mean))

    def forward(self, x: Tensor) -> Tensor:
        """Per-example negative (beta-)ELBO, (B,), one sample z = mu + sigma * eps (the reparameterization)."""
        mu, logvar = self.encode(x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        return -elbo(self.log_px_z(x, z), mu, logvar, self.beta)

    def iwae(self, x: Tensor, k: int) -> Tensor:
        """The k-sample importance-weighted bound per example, (B,) nats."""
        mu, logvar = self.encode(x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn((k, *mu.shape), dtype=mu.dtype, device=mu.device)
        return iwae_bound(self.log_px_z(x, z), z, mu, logvar)

    def reconstruct(self, x: Tensor) -> Tensor:
        """Decoded mean at z = mu(x), shaped like x."""
        mu, _ = self.encode(x)
        return torch.sigmoid(self.decoder(mu)).view_as(x)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Decoded means of n prior samples, (n, D)."""
        p = next(self.parameters())
        z = torch.randn((n, self.latent_dim), generator=generator, dtype=p.dtype, device=p.device)
        return torch.sigmoid(self.decoder(z))
