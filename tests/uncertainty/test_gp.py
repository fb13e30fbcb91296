"""Exact GPs. Reference: scikit-learn's GaussianProcessRegressor with the same fixed kernel
(``ConstantKernel * RBF / Matern``, ``alpha`` = our noise, ``optimizer=None``): kernel matrices, posterior mean,
posterior standard deviation, log marginal likelihood, and its gradient w.r.t. the log hyperparameters
(``log_marginal_likelihood(theta, eval_gradient=True)`` with a WhiteKernel for the noise); sklearn's own
L-BFGS fit for the fitted marginal likelihood."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from tricklab.errors import UserError
from tricklab.uncertainty.gp import (
    CholeskyError,
    DeepKernelGP,
    ExactGP,
    GPClassifier,
    MaternKernel,
    RBFKernel,
    robust_cholesky,
)

gpr_mod = pytest.importorskip("sklearn.gaussian_process")
kernels = pytest.importorskip("sklearn.gaussian_process.kernels")


def _data(n: int = 40, d: int = 3, k: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, (n, d))
    y = np.sin(x @ rng.normal(size=(d,))) + 0.1 * rng.normal(size=n)
    if k is not None:
        y = np.stack([y * (j + 1) + j for j in range(k)], 1)
    xs = rng.uniform(-2.5, 2.5, (15, d))
    return x, y, xs


def _ours(kind: str, ls: float | list[float], s: float, nu: float = 2.5) -> RBFKernel | MaternKernel:
    ard = len(ls) if isinstance(ls, list) else None
    l0 = ls[0] if isinstance(ls, list) else ls
    f64 = torch.float64
    k = RBFKernel(l0, s, ard, dtype=f64) if kind == "rbf" else MaternKernel(nu, l0, s, ard, dtype=f64)
    if isinstance(ls, list):
        with torch.no_grad():
            k.log_lengthscale.copy_(torch.log(torch.tensor(ls, dtype=torch.float64)))
    return k


def _sk(kind: str, ls: float | list[float], s: float, nu: float = 2.5):  # noqa: ANN202
    base = kernels.RBF(ls) if kind == "rbf" else kernels.Matern(ls, nu=nu)
    return kernels.ConstantKernel(s) * base


CASES = [("rbf", 0.7, 1.3, 2.5), ("rbf", [0.5, 1.0, 2.0], 0.8, 2.5), ("matern", 0.9, 1.1, 0.5),
         ("matern", 1.2, 0.7, 1.5), ("matern", [0.6, 0.8, 1.5], 2.0, 2.5)]


@pytest.mark.parametrize("kind,ls,s,nu", CASES)
def test_kernel_matrices_match_sklearn(kind: str, ls: float | list[float], s: float, nu: float) -> None:
    x, _, xs = _data()
    ours = _ours(kind, ls, s, nu)(torch.tensor(x), torch.tensor(xs)).detach().numpy()
    np.testing.assert_allclose(ours, _sk(kind, ls, s, nu)(x, xs), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind,ls,s,nu", CASES)
@pytest.mark.parametrize("outputs", [None, 3])
def test_posterior_and_marginal_likelihood_match_sklearn(kind: str, ls: float | list[float], s: float, nu: float,
                                                         outputs: int | None) -> None:
    x, y, xs = _data(k=outputs)
    noise = 0.05
    ref = gpr_mod.GaussianProcessRegressor(_sk(kind, ls, s, nu), alpha=noise, optimizer=None).fit(x, y)
    mean_ref, std_ref = ref.predict(xs, return_std=True)
    gp = ExactGP(_ours(kind, ls, s, nu), noise=noise, num_outputs=outputs or 1, dtype=torch.float64)
    gp.set_data(torch.tensor(x), torch.tensor(y))
    with torch.no_grad():
        mean, var = gp.posterior(torch.tensor(xs))
        lml = float(gp.log_marginal_likelihood())
    np.testing.assert_allclose(mean.numpy(), mean_ref, rtol=1e-7, atol=1e-9)
    std = np.sqrt(var.numpy())
    # sklearn returns one std per output column for multi-output y (identical columns: the kernel is shared)
    np.testing.assert_allclose(std, std_ref if std_ref.ndim == 1 else std_ref[:, 0], rtol=1e-6, atol=1e-8)
    assert lml == pytest.approx(ref.log_marginal_likelihood_value_, rel=1e-9)
    assert gp.jitter_used == 0.0


@pytest.mark.parametrize("kind,nu", [("rbf", 2.5), ("matern", 1.5), ("matern", 0.5)])
def test_marginal_likelihood_gradient_matches_sklearn(kind: str, nu: float) -> None:
    x, y, _ = _data(n=30)
    ls, s, noise = 0.8, 1.4, 0.03
    sk_kernel = _sk(kind, ls, s, nu) + kernels.WhiteKernel(noise)
    ref = gpr_mod.GaussianProcessRegressor(sk_kernel, alpha=0.0, optimizer=None).fit(x, y)
    lml_ref, grad_ref = ref.log_marginal_likelihood(ref.kernel_.theta, eval_gradient=True)  # theta = log params
    gp = ExactGP(_ours(kind, ls, s, nu), noise=noise, dtype=torch.float64).set_data(torch.tensor(x), torch.tensor(y))
    lml = gp.log_marginal_likelihood()
    lml.backward()
    assert float(lml.detach()) == pytest.approx(lml_ref, rel=1e-9)
    ours = [float(gp.kernel.log_outputscale.grad), float(gp.kernel.log_lengthscale.grad[0]), float(gp.log_noise.grad)]
    np.testing.assert_allclose(ours, grad_ref, rtol=1e-6, atol=1e-8)


def test_fitting_reaches_sklearns_optimum() -> None:
    x, y, _ = _data(n=50, d=2, seed=3)
    start = kernels.ConstantKernel(1.0, (1e-5, 1e5)) * kernels.RBF(1.0, (1e-5, 1e5)) + kernels.WhiteKernel(
        0.1, (1e-8, 1e5))
    ref = gpr_mod.GaussianProcessRegressor(start, alpha=0.0, n_restarts_optimizer=0).fit(x, y)
    gp = ExactGP(RBFKernel(1.0, 1.0), noise=0.1).double()
    history = gp.fit(torch.tensor(x), torch.tensor(y), steps=200)
    lml = float(gp.log_marginal_likelihood().detach())
    assert history[-1] <= history[0]
    assert lml == pytest.approx(ref.log_marginal_likelihood_value_, rel=1e-5)


def test_cholesky_jitter_and_clear_failure() -> None:
    x = torch.zeros(5, 2, dtype=torch.float64)  # five identical inputs: K is rank one
    k = RBFKernel().double()(x)
    chol, jitter = robust_cholesky(k)
    assert jitter > 0
    torch.testing.assert_close(chol @ chol.T, k + jitter * torch.eye(5, dtype=torch.float64), rtol=1e-10,
                               atol=1e-12)
    with pytest.raises(CholeskyError, match="not positive definite"):
        robust_cholesky(-torch.eye(3, dtype=torch.float64))
    with pytest.raises(CholeskyError, match="NaN"):
        robust_cholesky(torch.full((2, 2), float("nan")))
    # a GP on duplicate points with a tiny noise still predicts, thanks to the jitter
    gp = ExactGP(RBFKernel(), noise=1e-300).double().set_data(x, torch.ones(5, dtype=torch.float64))
    with torch.no_grad():
        mean, _ = gp.posterior(x[:1])
    assert gp.jitter_used > 0 and float(mean) == pytest.approx(1.0, abs=1e-3)


def test_classifier_by_regression_matches_multi_output_sklearn_and_classifies() -> None:
    datasets = pytest.importorskip("sklearn.datasets")
    x, labels = datasets.make_blobs(300, n_features=2, centers=3, cluster_std=1.0, random_state=0)
    xt, yt = torch.tensor(x[:200]), torch.tensor(labels[:200])
    gp = GPClassifier(RBFKernel(1.5, 1.0, dtype=torch.float64), num_classes=3, noise=0.1, dtype=torch.float64)
    gp.set_labels(xt, yt)
    onehot = np.eye(3)[labels[:200]] - 1 / 3
    ref = gpr_mod.GaussianProcessRegressor(_sk("rbf", 1.5, 1.0), alpha=0.1, optimizer=None).fit(x[:200], onehot)
    with torch.no_grad():
        logits = gp(torch.tensor(x[200:]))
    np.testing.assert_allclose(logits.numpy(), ref.predict(x[200:]), rtol=1e-7, atol=1e-9)
    acc = float((logits.argmax(-1).numpy() == labels[200:]).mean())
    neighbors = pytest.importorskip("sklearn.neighbors")
    knn = neighbors.KNeighborsClassifier(5).fit(x[:200], labels[:200]).score(x[200:], labels[200:])
    assert acc >= knn - 0.02 and acc >= 0.85, (acc, knn)  # as good as a 5-NN baseline on overlapping blobs
    probs = gp.predict_proba(torch.tensor(x[200:]), temperature=0.1, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(probs.sum(-1), torch.ones(100, dtype=torch.float64))


def test_deep_kernel_with_identity_features_is_the_exact_gp() -> None:
    x, y, xs = _data()
    xt, yt, xst = torch.tensor(x), torch.tensor(y), torch.tensor(xs)
    gp = ExactGP(RBFKernel(0.7, 1.3, dtype=torch.float64), noise=0.05, dtype=torch.float64)
    dkl = DeepKernelGP(nn.Identity(), gp).set_data(xt, yt)
    lml = dkl.log_marginal_likelihood(xt, yt)
    ref = ExactGP(RBFKernel(0.7, 1.3, dtype=torch.float64), noise=0.05, dtype=torch.float64).set_data(xt, yt)
    torch.testing.assert_close(lml, ref.log_marginal_likelihood())
    with torch.no_grad():
        for a, b in zip(dkl.posterior(xst), ref.posterior(xst)):
            torch.testing.assert_close(a, b)


def test_deep_kernel_gradients_reach_the_network_and_training_raises_the_likelihood() -> None:
    """Reference for the gradient: torch.autograd.gradcheck (central finite differences, float64) of the marginal
    likelihood as a function of the network's weights; then 60 Adam steps raise the likelihood."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, generator=g, dtype=torch.float64)
    y = torch.sin(2 * x[:, 0]) + 0.05 * torch.randn(40, generator=g, dtype=torch.float64)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    dkl = DeepKernelGP(net, ExactGP(RBFKernel(1.0, 1.0, dtype=torch.float64), noise=0.1, dtype=torch.float64))
    w0 = net[0].weight.detach().clone().requires_grad_()

    def lml_of(w: torch.Tensor) -> torch.Tensor:
        h = net[2](torch.tanh(torch.nn.functional.linear(x, w, net[0].bias)))
        return dkl.gp.log_marginal_likelihood(h, y)

    assert torch.autograd.gradcheck(lml_of, (w0,), eps=1e-6, atol=1e-5, rtol=1e-4)
    lml = dkl.log_marginal_likelihood(x, y)
    (grad,) = torch.autograd.grad(lml, net[0].weight)
    (grad_ref,) = torch.autograd.grad(lml_of(w0), w0)
    torch.testing.assert_close(grad, grad_ref)
    before = float(lml.detach())
    history = dkl.fit(x, y, steps=60, batch_size=40, lr=0.05)
    after = float(dkl.log_marginal_likelihood(x, y).detach())
    assert after > before + 10 and history[-1] < history[0], (before, after)
    with torch.no_grad():
        mean, var = dkl.posterior(x[:5])
    assert mean.shape == (5,) and var.shape == (5,)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(UserError, match="nu"):
        MaternKernel(nu=2.0)
    with pytest.raises(UserError, match="lengthscale"):
        RBFKernel(lengthscale=-1.0)
    gp = ExactGP(RBFKernel())
    with pytest.raises(UserError, match="set_data"):
        gp.posterior(torch.zeros(2, 1))
    with pytest.raises(UserError, match="floating"):
        gp.set_data(torch.zeros(3, 1), torch.zeros(3, dtype=torch.long))
    with pytest.raises(UserError, match="ARD"):
        RBFKernel(ard_dims=3)(torch.zeros(2, 2))
    assert math.isfinite(float(ExactGP(RBFKernel()).set_data(torch.zeros(2, 1), torch.ones(2))
                               .log_marginal_likelihood().detach()))
