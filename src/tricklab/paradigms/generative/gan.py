"""A small DCGAN (Radford et al., 2016) for 28x28 images, the GAN losses (Goodfellow et al., 2014) and the
Frechet distance between Gaussians fitted to features (the formula behind FID, Heusel et al. 2017; computed in
the feature space the caller chooses, so a number from our own classifier is "Frechet distance (ours)", not FID).

Losses, with D returning logits l and sigma the logistic function:

* discriminator: ``-log sigma(l_real) - log(1 - sigma(l_fake)) = softplus(-l_real) + softplus(l_fake)``
  (Goodfellow et al. eq. 1, the minimax value negated);
* generator, non-saturating: ``-log sigma(l_fake) = softplus(-l_fake)`` (section 3 of the paper: strong
  gradients early, when D rejects the samples easily).

Frechet distance between N(mu_1, S_1) and N(mu_2, S_2) (Dowson & Landau 1982):
``d^2 = |mu_1 - mu_2|^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2})``; the trace of the matrix square root is computed as
``sum_i sqrt(lambda_i)`` of the symmetric PSD matrix ``S_1^{1/2} S_2 S_1^{1/2}`` (same eigenvalues as S_1 S_2).

Optional stabilisation: spectral normalization of the discriminator's layers (Miyato et al., 2018), with
torch's own ``torch.nn.utils.parametrizations.spectral_norm``; or WGAN-GP (Gulrajani et al., 2017, Algorithm 1):
the discriminator becomes a critic f with unbounded scores, trained on

    L_critic = E f(x_fake) - E f(x_real) + lambda E (||grad_x f(x_hat)||_2 - 1)^2,
    x_hat = eps x_real + (1 - eps) x_fake,  eps ~ U[0, 1] per example,

(the penalty keeps f near 1-Lipschitz, so the first two terms estimate the Wasserstein-1 distance) and the
generator on ``L_G = -E f(x_fake)``; lambda = 10, n_critic = 5 critic steps per generator step, Adam (1e-4,
beta = (0, 0.9)) in the paper.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from tricklab.errors import ConfigError

__all__ = [
    "DCGANDiscriminator",
    "DCGANGenerator",
    "discriminator_loss",
    "frechet_distance",
    "gaussian_stats",
    "generator_loss",
    "gradient_penalty",
    "wgan_critic_loss",
    "wgan_generator_loss",
]


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Mean of ``softplus(-l_real)`` plus mean of ``softplus(l_fake)`` (the binary cross-entropy of D)."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_loss(fake_logits: Tensor) -> Tensor:
    """Non-saturating generator loss, mean of ``softplus(-l_fake) = -log D(G(z))``."""
    return F.softplus(-fake_logits).mean()


def wgan_critic_loss(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """WGAN critic loss without its penalty: ``mean f(x_fake) - mean f(x_real)``."""
    return fake_scores.mean() - real_scores.mean()


def wgan_generator_loss(fake_scores: Tensor) -> Tensor:
    """WGAN generator loss ``-mean f(x_fake)``."""
    return -fake_scores.mean()


def gradient_penalty(critic: nn.Module, real: Tensor, fake: Tensor, weight: float = 10.0,
                     eps: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
    """WGAN-GP's penalty ``weight * mean_i (||grad_x f(x_hat_i)||_2 - 1)^2`` on x_hat = eps x_real + (1 - eps)
    x_fake (module docstring). ``eps`` (B,) defaults to U[0, 1) draws from ``generator``; ``fake`` is detached.
    The input gradient is taken with ``create_graph=True`` so that the penalty trains the critic's parameters
    (a double backward)."""
    if real.shape != fake.shape:
        raise ValueError(f"real {tuple(real.shape)} and fake {tuple(fake.shape)} batches must have the same shape")
    if eps is None:
        eps = torch.rand(real.shape[0], generator=generator, device=real.device, dtype=real.dtype)
    e = eps.view(-1, *([1] * (real.dim() - 1)))
    x_hat = (e * real.detach() + (1 - e) * fake.detach()).requires_grad_(True)
    scores = critic(x_hat)
    # the sum's gradient wrt x_hat is each example's own gradient: example i's score depends on x_hat_i only
    (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    norms = grad.flatten(1).norm(dim=1)
    return float(weight) * (norms - 1.0).pow(2).mean()


def gaussian_stats(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean (F,) and unbiased covariance (F, F) of features (N, F), in float64."""
    if features.dim() != 2 or features.shape[0] < 2:
        raise ConfigError(f"features must be (N, F) with N >= 2, got shape {tuple(features.shape)}")
    x = features.double()
    mu = x.mean(0)
    xc = x - mu
    return mu, xc.T @ xc / (x.shape[0] - 1)


def _sqrtm_psd(s: Tensor) -> Tensor:
    vals, vecs = torch.linalg.eigh(s)
    return (vecs * vals.clamp(min=0).sqrt()) @ vecs.T


def frechet_distance(mu1: Tensor, s1: Tensor, mu2: Tensor, s2: Tensor) -> Tensor:
    """Squared Frechet (2-Wasserstein) distance between two Gaussians (module docstring); differentiable."""
    root1 = _sqrtm_psd(s1)
    m = root1 @ s2 @ root1
    tr_cross = torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0).sqrt().sum()
    return (mu1 - mu2).pow(2).sum() + torch.trace(s1) + torch.trace(s2) - 2 * tr_cross


class DCGANGenerator(nn.Module):
    """z (B, latent) -> images (B, 1, 28, 28) in [0, 1]: Linear -> 128x7x7 -> ConvT(4, 2, 1) 64x14x14 ->
    ConvT(4, 2, 1) 1x28x28 -> sigmoid; batch norm and ReLU between (the DCGAN paper's guidelines)."""

    def __init__(self, latent_dim: int = 64, width: int = 64) -> None:
        super().__init__()
        if latent_dim < 1 or width < 1:
            raise ConfigError(f"latent_dim and width must be >= 1, got {latent_dim}, {width}")
        self.latent_dim = latent_dim
        self.fc = nn.Sequential(nn.Linear(latent_dim, 2 * width * 7 * 7), nn.BatchNorm1d(2 * width * 7 * 7),
                                nn.ReLU())
        self.net = nn.Sequential(nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.BatchNorm2d(width), nn.ReLU(),
                                 nn.ConvTranspose2d(width, 1, 4, 2, 1))
        self.width = width

    def forward(self, z: Tensor) -> Tensor:
        return torch.sigmoid(self.net(self.fc(z).view(-1, 2 * self.width, 7, 7)))


class DCGANDiscriminator(nn.Module):
    """images (B, 1, 28, 28) -> logits (B,): Conv(4, 2, 1) -> LeakyReLU(0.2) -> Conv(4, 2, 1) -> LeakyReLU ->
    Linear. ``spectral=True`` wraps every layer in spectral normalization (no batch norm then)."""

    def __init__(self, width: int = 64, spectral: bool = False) -> None:
        super().__init__()
        wrap = spectral_norm if spectral else (lambda m: m)
        self.net = nn.Sequential(wrap(nn.Conv2d(1, width, 4, 2, 1)), nn.LeakyReLU(0.2),
                                 wrap(nn.Conv2d(width, 2 * width, 4, 2, 1)), nn.LeakyReLU(0.2), nn.Flatten(),
                                 wrap(nn.Linear(2 * width * 7 * 7, 1)))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(-1)
