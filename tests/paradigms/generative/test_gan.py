"""GAN parts against references: the Frechet distance against the NumPy/SciPy closed form
(``scipy.linalg.sqrtm``) on Gaussians, the 1-D formula, a finite-difference gradient check (torch.autograd.gradcheck)
and the moments of samples; the losses against torch's binary cross-entropy (outputs and gradients). WGAN-GP's
gradient penalty against closed forms: a linear critic (gradient w everywhere), a quadratic critic (input gradient
A x_hat written out, outputs and parameter gradients without a double backward), and per-example input gradients
of the DCGAN critic from torch.func.vmap(grad)."""

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
    gradient_penalty,
    wgan_critic_loss,
    wgan_generator_loss,
)
from tricklab.paradigms.generative.paradigm import GANConfig


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


# ------------------------------------------------------------------------------------------------ WGAN-GP
class _Linear(torch.nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(d, dtype=torch.float64))
        self.b = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w + self.b


class _Quadratic(torch.nn.Module):
    """f(x) = x^T A x / 2 with A = M + M^T symmetric: grad_x f = A x in closed form."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.m = torch.nn.Parameter(torch.randn(d, d, dtype=torch.float64) / d**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.m + self.m.T
        return 0.5 * torch.einsum("bi,ij,bj->b", x, a, x)


def test_gradient_penalty_of_a_linear_critic_equals_the_closed_form() -> None:
    torch.manual_seed(0)
    critic = _Linear(12)
    real, fake = torch.randn(5, 3, 4, dtype=torch.float64), torch.randn(5, 3, 4, dtype=torch.float64)
    gp = gradient_penalty(critic, real, fake, weight=10.0)
    w = critic.w.detach()
    # grad_x f = w at every x_hat: the penalty is 10 (|w| - 1)^2 whatever eps, its w-gradient 20 (|w| - 1) w / |w|
    torch.testing.assert_close(gp, 10.0 * (w.norm() - 1) ** 2)
    (g_w,) = torch.autograd.grad(gp, critic.w)
    torch.testing.assert_close(g_w, 20.0 * (w.norm() - 1) * w / w.norm())


def test_gradient_penalty_of_a_quadratic_critic_equals_the_formula_outputs_and_gradients() -> None:
    torch.manual_seed(1)
    critic = _Quadratic(6)
    real, fake = torch.randn(7, 6, dtype=torch.float64), torch.randn(7, 6, dtype=torch.float64)
    eps = torch.rand(7, dtype=torch.float64)
    gp = gradient_penalty(critic, real, fake, weight=3.0, eps=eps)
    # reference: the input gradient written in closed form, A x_hat, so no double backward is involved
    x_hat = eps[:, None] * real + (1 - eps[:, None]) * fake
    a = critic.m + critic.m.T
    ref = 3.0 * ((x_hat @ a).norm(dim=1) - 1).pow(2).mean()
    torch.testing.assert_close(gp, ref)
    (g_ours,) = torch.autograd.grad(gp, critic.m)
    (g_ref,) = torch.autograd.grad(ref, critic.m)
    torch.testing.assert_close(g_ours, g_ref)


def test_gradient_penalty_on_the_dcgan_critic_equals_per_example_gradients() -> None:
    from torch.func import functional_call, grad, vmap

    torch.manual_seed(2)
    critic = DCGANDiscriminator(width=4).double()
    real, fake = torch.rand(4, 1, 28, 28, dtype=torch.float64), torch.rand(4, 1, 28, 28, dtype=torch.float64)
    eps = torch.rand(4, dtype=torch.float64)
    gp = gradient_penalty(critic, real, fake, weight=10.0, eps=eps)
    x_hat = eps.view(-1, 1, 1, 1) * real + (1 - eps.view(-1, 1, 1, 1)) * fake
    params = dict(critic.named_parameters())

    def one(x: torch.Tensor) -> torch.Tensor:  # the critic on one example, as torch.func sees it
        return functional_call(critic, params, (x.unsqueeze(0),)).squeeze(0)

    per_example = vmap(grad(one))(x_hat)  # (B, 1, 28, 28): each example's own input gradient
    ref = 10.0 * (per_example.flatten(1).norm(dim=1) - 1).pow(2).mean()
    torch.testing.assert_close(gp, ref)
    gp.backward()  # the double backward reaches the critic's weights
    for name, p in critic.named_parameters():
        # grad_x f = W_0^T D_0 W_2^T D_1 w_5 with D the LeakyReLU slopes: piecewise constant in the biases, so the
        # penalty's bias gradients are zero and its weight gradients are not
        if name.endswith("bias"):
            assert p.grad is None or not p.grad.any(), name
        else:
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.any(), name


def test_wgan_losses_and_config() -> None:
    real, fake = torch.tensor([1.0, 3.0]), torch.tensor([-1.0, 0.5])
    torch.testing.assert_close(wgan_critic_loss(real, fake), torch.tensor(-0.25 - 2.0))
    torch.testing.assert_close(wgan_generator_loss(fake), torch.tensor(0.25))
    with pytest.raises(ValueError, match="same shape"):
        gradient_penalty(DCGANDiscriminator(width=4), torch.rand(2, 1, 28, 28), torch.rand(3, 1, 28, 28))
    with pytest.raises(ConfigError, match="loss"):
        GANConfig(loss="hinge")
    with pytest.raises(ConfigError, match="spectral"):
        GANConfig(loss="wgan-gp", spectral=True)
