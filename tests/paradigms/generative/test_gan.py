"""GAN parts against references: the Frechet distance against the NumPy/SciPy closed form
(``scipy.linalg.sqrtm``) on Gaussians, the 1-D formula, a finite-difference gradient check (torch.autograd.gradcheck)
and the moments of samples; the losses against torch's binary cross-entropy (outputs and gradients)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tricklab.errors import ConfigError
from tricklab.paradigms.generative.gan import (
    DCGANDiscriminator,
    DCGANGenerator,
    discriminator_loss,
    frechet_distance,
    gaussian_stats,
    generator_loss,
)


def _spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T + 0.1 * np.eye(d)


def test_frechet_distance_equals_scipy_closed_form() -> None:
    linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(0)
    for d in (1, 3, 8):
        mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
        s1, s2 = _spd(rng, d), _spd(rng, d)
        ref = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
        ours = frechet_distance(*(torch.from_numpy(a) for a in (mu1, s1, mu2, s2)))
        assert ours.item() == pytest.approx(ref, rel=1e-8, abs=1e-8)
    # 1-D: (m1 - m2)^2 + (sigma1 - sigma2)^2
    one = frechet_distance(torch.tensor([1.0]).double(), torch.tensor([[4.0]]).double(),
                           torch.tensor([-0.5]).double(), torch.tensor([[0.25]]).double())
    assert one.item() == pytest.approx(1.5**2 + (2.0 - 0.5) ** 2)
    s = torch.from_numpy(_spd(rng, 4))
    assert frechet_distance(torch.zeros(4).double(), s, torch.zeros(4).double(), s).item() == \
        pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_gradients_match_finite_differences() -> None:
    g = torch.Generator().manual_seed(1)
    mu1 = torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True)
    mu2 = torch.randn(3, generator=g, dtype=torch.float64)
    a = torch.randn(3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, 3, generator=g, dtype=torch.float64)

    def fd(mu1: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        eye = 0.5 * torch.eye(3, dtype=torch.float64)
        return frechet_distance(mu1, a @ a.T + eye, mu2, b @ b.T + eye)

    assert torch.autograd.gradcheck(fd, (mu1, a))
    (g_mu,) = torch.autograd.grad(fd(mu1, a), mu1)
    torch.testing.assert_close(g_mu, 2 * (mu1 - mu2).detach())


def test_gaussian_stats_equal_numpy_and_sampled_distance_approaches_the_true_one() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(50, 4))
    mu, cov = gaussian_stats(torch.from_numpy(x))
    np.testing.assert_allclose(mu.numpy(), x.mean(0))
    np.testing.assert_allclose(cov.numpy(), np.cov(x, rowvar=False))
    s1, s2 = _spd(rng, 3), _spd(rng, 3)
    m1, m2 = np.zeros(3), np.ones(3)
    true = frechet_distance(*(torch.from_numpy(v) for v in (m1, s1, m2, s2))).item()
    xs = torch.from_numpy(rng.multivariate_normal(m1, s1, 100_000))
    ys = torch.from_numpy(rng.multivariate_normal(m2, s2, 100_000))
    est = frechet_distance(*gaussian_stats(xs), *gaussian_stats(ys)).item()
    assert est == pytest.approx(true, rel=0.03)  # sampling error of 1e5 draws, well inside 3%
    with pytest.raises(ConfigError, match="features"):
        gaussian_stats(torch.zeros(1, 3))


def test_losses_equal_binary_cross_entropy_with_gradients() -> None:
    g = torch.Generator().manual_seed(3)
    real = torch.randn(8, generator=g, dtype=torch.float64, requires_grad=True)
    fake = torch.randn(8, generator=g, dtype=torch.float64, requires_grad=True)
    ours = discriminator_loss(real, fake)
    ref = F.binary_cross_entropy_with_logits(real, torch.ones_like(real)) + \
        F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
    torch.testing.assert_close(ours, ref)
    for x, y in zip(torch.autograd.grad(ours, (real, fake)), torch.autograd.grad(ref, (real, fake))):
        torch.testing.assert_close(x, y)
    ours_g = generator_loss(fake)
    ref_g = F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))
    torch.testing.assert_close(ours_g, ref_g)
    torch.testing.assert_close(torch.autograd.grad(ours_g, fake)[0], torch.autograd.grad(ref_g, fake)[0])


@pytest.mark.parametrize("spectral", [False, True])
def test_dcgan_shapes_and_one_discriminator_step_lowers_its_loss(spectral: bool) -> None:
    torch.manual_seed(0)
    gen, disc = DCGANGenerator(latent_dim=8, width=8), DCGANDiscriminator(width=8, spectral=spectral)
    fake = gen(torch.randn(16, 8))
    assert fake.shape == (16, 1, 28, 28) and 0 <= fake.min() and fake.max() <= 1
    real = torch.rand(16, 1, 28, 28)
    opt = torch.optim.SGD(disc.parameters(), lr=0.05)
    disc.eval()  # fixed spectral-norm estimate while comparing the two losses
    before = discriminator_loss(disc(real), disc(fake.detach()))
    disc.train()
    loss = discriminator_loss(disc(real), disc(fake.detach()))
    opt.zero_grad()
    loss.backward()
    assert all(p.grad is not None for p in disc.parameters())
    opt.step()
    disc.eval()
    assert discriminator_loss(disc(real), disc(fake.detach())) < before
    (g_loss := generator_loss(disc(gen(torch.randn(4, 8))))).backward()
    assert torch.isfinite(g_loss) and all(p.grad is not None for p in gen.parameters())
