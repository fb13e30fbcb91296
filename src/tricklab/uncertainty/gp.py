"""Exact Gaussian processes (Rasmussen & Williams, "Gaussian Processes for Machine Learning", MIT Press 2006,
chapters 2 and 5), as heads on raw inputs or on a network's features.

Model: ``f ~ GP(m, k)``, ``y = f(x) + e``, ``e ~ N(0, sigma_n^2)``. With ``K = k(X, X)``, ``L = chol(K + sigma_n^2
I)`` and ``alpha = L^T \\ (L \\ (y - m))`` (R&W Algorithm 2.1):

    posterior mean      mu(x*) = m + k(x*, X) alpha
    posterior variance  var(x*) = k(x*, x*) - ||L \\ k(X, x*)||^2              (of the latent f, noise excluded)
    log marginal lik.   log p(y | X) = -1/2 (y - m)^T alpha - sum_i log L_ii - n/2 log 2 pi       (R&W eq. 2.30)

Multi-output targets (N, K) share the kernel: K independent GPs whose log marginal likelihoods add (as in
scikit-learn's GaussianProcessRegressor). Hyperparameters (lengthscale, output scale, noise, constant mean) live
in log space and are fitted by maximising the log marginal likelihood (R&W section 5.4) with L-BFGS or Adam.

* Kernels: :class:`RBFKernel` ``s exp(-r^2 / 2)`` and :class:`MaternKernel` for nu in {1/2, 3/2, 5/2}
  (R&W eq. 4.14-4.17), ``r = ||(x - x') / l||``, optional per-dimension lengthscales (ARD).
* :func:`robust_cholesky`: Cholesky that retries with growing diagonal jitter and raises
  :class:`CholeskyError` with what to do when even the largest jitter fails.
* :class:`ExactGP`: regression head; :class:`GPClassifier` classification by regression on one-hot targets.
* :class:`DeepKernelGP`: deep kernel learning (Wilson, Hu, Salakhutdinov & Xing, AISTATS 2016, arXiv:1511.02222):
  the kernel acts on ``g(x; w)``, a network's features, and the network and kernel hyperparameters are trained
  jointly through the marginal likelihood (here on random mini-batches of the training set).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tricklab.errors import UserError

__all__ = [
    "CholeskyError",
    "DeepKernelGP",
    "ExactGP",
    "GPClassifier",
    "Kernel",
    "MaternKernel",
    "RBFKernel",
    "robust_cholesky",
]

_LOG_2PI = math.log(2.0 * math.pi)
_DIRECT_LIMIT = 1 << 22  # elements of the (n1, n2, d) difference tensor below which distances are exact


class CholeskyError(UserError):
    """The kernel matrix is not positive definite even with the largest jitter tried."""


def _pos(name: str, v: object) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise UserError(f"{name} must be a positive finite number, got {v!r}")
    return float(v)


def robust_cholesky(a: Tensor, jitter: float = 1e-6, max_tries: int = 6) -> tuple[Tensor, float]:
    """Lower Cholesky factor of the symmetric matrix ``a`` (n, n) and the jitter that was added to its diagonal.

    Tries ``a`` as given first (so results match an unjittered reference when it is positive definite), then
    ``a + j I`` with ``j = jitter * mean(diag a) * 10^k`` for k = 0 .. max_tries - 1. Raises
    :class:`CholeskyError` naming the size, the largest jitter and the usual causes when all fail."""
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise UserError(f"robust_cholesky expects a square matrix, got shape {tuple(a.shape)}")
    if not torch.isfinite(a).all():
        raise CholeskyError("the kernel matrix holds NaN or inf: the inputs or the hyperparameters are not finite "
                            "(a diverged fit? inputs with NaN?)")
    chol, info = torch.linalg.cholesky_ex(a)
    if int(info) == 0:
        return chol, 0.0
    scale = float(a.detach().diagonal().abs().mean()) or 1.0
    eye = torch.eye(a.shape[0], dtype=a.dtype, device=a.device)
    j = 0.0
    for k in range(max_tries):
        j = jitter * scale * 10.0**k
        chol, info = torch.linalg.cholesky_ex(a + j * eye)
        if int(info) == 0:
            return chol, j
    raise CholeskyError(
        f"the {a.shape[0]}x{a.shape[0]} kernel matrix is not positive definite, even with jitter {j:.3g} added to "
        f"its diagonal (mean diagonal {scale:.3g}). Usual causes: duplicate or near-duplicate inputs with too "
        f"little noise (raise the noise or its lower bound), a lengthscale so large that all points look alike, "
        f"or float32 round-off (use float64: model.double())"
    )


# ---------------------------------------------------------------------------------------------- kernels
class Kernel(nn.Module):
    """Stationary kernel ``s * g(r)``, ``r = ||(x - x') / l||``, with ``log l`` and ``log s`` as parameters."""

    def __init__(self, lengthscale: float = 1.0, outputscale: float = 1.0, ard_dims: int | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        _pos("lengthscale", lengthscale)
        _pos("outputscale", outputscale)
        if ard_dims is not None and (isinstance(ard_dims, bool) or not isinstance(ard_dims, int) or ard_dims < 1):
            raise UserError(f"ard_dims must be None or a positive int (one lengthscale per input), got {ard_dims!r}")
        # dtype=torch.float64 stores log l and log s exactly (.double() later would keep their float32 rounding)
        self.log_lengthscale = nn.Parameter(torch.full((ard_dims or 1,), math.log(lengthscale), dtype=dtype))
        self.log_outputscale = nn.Parameter(torch.tensor(math.log(outputscale), dtype=dtype))

    @property
    def lengthscale(self) -> Tensor:
        return self.log_lengthscale.exp()

    @property
    def outputscale(self) -> Tensor:
        return self.log_outputscale.exp()

    def sq_dist(self, x1: Tensor, x2: Tensor) -> Tensor:
        """``||(x1_i - x2_j) / l||^2`` (n1, n2): from explicit differences while the (n1, n2, d) difference tensor is
        small (no cancellation), else by ``|a|^2 + |b|^2 - 2 a.b`` clamped at 0 (round-off can make it negative)."""
        if x1.ndim != 2 or x2.ndim != 2 or x1.shape[1] != x2.shape[1]:
            raise UserError(f"kernel inputs must be (n, d) matrices with the same d, got {tuple(x1.shape)} and "
                            f"{tuple(x2.shape)}")
        ls = self.lengthscale.to(x1.dtype)
        if ls.numel() > 1 and ls.numel() != x1.shape[1]:
            raise UserError(f"the kernel has {ls.numel()} ARD lengthscales but the inputs have {x1.shape[1]} dims")
        a, b = x1 / ls, x2 / ls
        if a.shape[0] * b.shape[0] * a.shape[1] <= _DIRECT_LIMIT:
            return ((a.unsqueeze(1) - b.unsqueeze(0)) ** 2).sum(-1)
        d = (a * a).sum(-1, keepdim=True) - 2.0 * a @ b.T + (b * b).sum(-1)
        return d.clamp_min(0.0)

    def shape_fn(self, sq: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x1: Tensor, x2: Tensor | None = None) -> Tensor:
        """The kernel matrix ``k(x1, x2)`` (n1, n2); ``x2 = x1`` when omitted."""
        sq = self.sq_dist(x1, x1 if x2 is None else x2)
        return self.outputscale.to(x1.dtype) * self.shape_fn(sq)

    def diag(self, x: Tensor) -> Tensor:
        """``k(x_i, x_i)`` (n,) = the output scale for a stationary kernel."""
        return self.outputscale.to(x.dtype).expand(x.shape[0])


class RBFKernel(Kernel):
    """Squared exponential ``s exp(-r^2 / 2)`` (R&W eq. 4.9)."""

    def shape_fn(self, sq: Tensor) -> Tensor:
        return torch.exp(-0.5 * sq)


class MaternKernel(Kernel):
    """Matern with nu in {0.5, 1.5, 2.5} (R&W eq. 4.14, 4.16, 4.17):
    ``exp(-r)``, ``(1 + sqrt3 r) exp(-sqrt3 r)``, ``(1 + sqrt5 r + 5 r^2 / 3) exp(-sqrt5 r)``."""

    def __init__(self, nu: float = 2.5, lengthscale: float = 1.0, outputscale: float = 1.0,
                 ard_dims: int | None = None, dtype: torch.dtype | None = None) -> None:
        if nu not in (0.5, 1.5, 2.5):
            raise UserError(f"Matern nu must be 0.5, 1.5 or 2.5 (the closed forms), got {nu!r}")
        super().__init__(lengthscale, outputscale, ard_dims, dtype)
        self.nu = float(nu)

    def shape_fn(self, sq: Tensor) -> Tensor:
        # sqrt has an infinite derivative at 0; the floor makes its gradient 0 there (d sq / d theta is 0 too)
        r = torch.sqrt(sq.clamp_min(1e-30))
        if self.nu == 0.5:
            return torch.exp(-r)
        if self.nu == 1.5:
            c = math.sqrt(3.0) * r
            return (1.0 + c) * torch.exp(-c)
        c = math.sqrt(5.0) * r
        return (1.0 + c + c * c / 3.0) * torch.exp(-c)

    def extra_repr(self) -> str:
        return f"nu={self.nu}"


# ------------------------------------------------------------------------------------------- exact GP
class ExactGP(nn.Module):
    """Exact GP regression head on inputs (N, D), targets (N,) or (N, K).

    Args:
        kernel: a :class:`Kernel`.
        noise: initial observation-noise variance ``sigma_n^2``.
        learn_noise: fit the noise with the other hyperparameters.
        mean: ``"zero"`` or ``"constant"`` (one learned constant per output).
        noise_floor: the noise never goes below this (keeps K + sigma_n^2 I well conditioned while fitting).
        jitter / max_tries: see :func:`robust_cholesky`.
        dtype: of the hyperparameters (float64 is advised: GP algebra loses accuracy fast in float32).
    """

    def __init__(self, kernel: Kernel, noise: float = 1e-2, learn_noise: bool = True,
                 mean: Literal["zero", "constant"] = "zero", num_outputs: int = 1, noise_floor: float = 0.0,
                 jitter: float = 1e-6, max_tries: int = 6, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if not isinstance(kernel, Kernel):
            raise UserError(f"kernel must be a tricklab Kernel (RBFKernel, MaternKernel), got {type(kernel).__name__}")
        _pos("noise", noise)
        if mean not in ("zero", "constant"):
            raise UserError(f"mean must be 'zero' or 'constant', got {mean!r}")
        self.kernel = kernel
        self.log_noise = nn.Parameter(torch.tensor(math.log(noise), dtype=dtype), requires_grad=learn_noise)
        self.mean_kind = mean
        self.mean_constant = nn.Parameter(torch.zeros(num_outputs, dtype=dtype), requires_grad=mean == "constant")
        self.noise_floor = float(noise_floor)
        self.jitter, self.max_tries = float(jitter), int(max_tries)
        self.jitter_used = 0.0
        self.train_x: Tensor | None = None
        self.train_y: Tensor | None = None
        self._cache: tuple[tuple[int, ...], Tensor, Tensor] | None = None

    @property
    def noise(self) -> Tensor:
        return self.log_noise.exp() + self.noise_floor

    def set_data(self, x: Tensor, y: Tensor) -> ExactGP:
        """Condition on training inputs (N, D) and targets (N,) or (N, K)."""
        if x.ndim != 2:
            raise UserError(f"GP inputs must be (N, D), got {tuple(x.shape)}")
        if y.ndim not in (1, 2) or y.shape[0] != x.shape[0]:
            raise UserError(f"GP targets must be (N,) or (N, K) with N={x.shape[0]}, got {tuple(y.shape)}")
        if not y.dtype.is_floating_point:
            raise UserError(f"GP targets must be floating point (regression), got {y.dtype}")
        self.train_x, self.train_y = x, y
        self._cache = None
        return self

    def _targets(self, y: Tensor) -> Tensor:
        y2 = y.unsqueeze(-1) if y.ndim == 1 else y
        m = self.mean_constant.to(y.dtype) if self.mean_kind == "constant" else torch.zeros((), dtype=y.dtype)
        return y2 - m  # (N, K)

    def _chol(self, x: Tensor) -> Tensor:
        k = self.kernel(x) + self.noise.to(x.dtype) * torch.eye(x.shape[0], dtype=x.dtype, device=x.device)
        chol, self.jitter_used = robust_cholesky(k, self.jitter, self.max_tries)
        return chol

    def log_marginal_likelihood(self, x: Tensor | None = None, y: Tensor | None = None) -> Tensor:
        """``log p(y | X)`` summed over outputs (a scalar with gradient w.r.t. the hyperparameters)."""
        x = self.train_x if x is None else x
        y = self.train_y if y is None else y
        if x is None or y is None:
            raise UserError("no training data: call set_data(x, y) or pass x and y")
        r = self._targets(y)  # (N, K)
        chol = self._chol(x)
        alpha = torch.cholesky_solve(r, chol)  # (K + s^2 I)^-1 r
        n, k = r.shape
        return (-0.5 * (r * alpha).sum() - k * torch.log(chol.diagonal()).sum() - 0.5 * k * n * _LOG_2PI)

    def _state_key(self) -> tuple[int, ...]:
        return tuple(p._version for p in self.parameters()) + tuple(id(p) for p in self.parameters())

    def _factors(self) -> tuple[Tensor, Tensor]:
        if self.train_x is None or self.train_y is None:
            raise UserError("the GP has no training data: call set_data(x, y) (or fit) before predicting")
        key = self._state_key()
        if self._cache is None or self._cache[0] != key or torch.is_grad_enabled():
            chol = self._chol(self.train_x)
            alpha = torch.cholesky_solve(self._targets(self.train_y), chol)
            if torch.is_grad_enabled():
                return chol, alpha  # not cached: the graph must reach the current parameters
            self._cache = (key, chol, alpha)
        return self._cache[1], self._cache[2]

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior mean (M,) or (M, K) and variance (M,) of the latent f at test inputs (M, D)."""
        chol, alpha = self._factors()
        ks = self.kernel(self.train_x, x)  # (N, M)
        mean = ks.T @ alpha  # (M, K)
        if self.mean_kind == "constant":
            mean = mean + self.mean_constant.to(mean.dtype)
        v = torch.linalg.solve_triangular(chol, ks, upper=False)  # (N, M)
        var = (self.kernel.diag(x) - (v * v).sum(0)).clamp_min(0.0)
        if self.train_y is not None and self.train_y.ndim == 1:
            mean = mean.squeeze(-1)
        return mean, var

    def forward(self, x: Tensor) -> Tensor:
        """The posterior mean at ``x`` (the head's prediction)."""
        return self.posterior(x)[0]

    def fit(self, x: Tensor | None = None, y: Tensor | None = None, steps: int = 100, lr: float = 0.1,
            method: Literal["lbfgs", "adam"] = "lbfgs") -> list[float]:
        """Maximise the log marginal likelihood over the hyperparameters; returns ``-LML / N`` per step."""
        if x is not None and y is not None:
            self.set_data(x, y)
        assert self.train_x is not None
        n = self.train_x.shape[0]
        params = [p for p in self.parameters() if p.requires_grad]
        history: list[float] = []
        if method == "lbfgs":
            opt: torch.optim.Optimizer = torch.optim.LBFGS(params, lr=lr, max_iter=steps,
                                                           line_search_fn="strong_wolfe")

            def closure() -> Tensor:
                opt.zero_grad()
                loss = -self.log_marginal_likelihood() / n
                loss.backward()
                history.append(float(loss.detach()))
                return loss

            opt.step(closure)
        elif method == "adam":
            opt = torch.optim.Adam(params, lr=lr)
            for _ in range(steps):
                opt.zero_grad()
                loss = -self.log_marginal_likelihood() / n
                loss.backward()
                opt.step()
                history.append(float(loss.detach()))
        else:
            raise UserError(f"fit method must be 'lbfgs' or 'adam', got {method!r}")
        self._cache = None
        return history


class GPClassifier(ExactGP):
    """Classification by regression: K independent GP regressions on one-hot targets ``e_y - 1/C`` (centred).

    ``forward`` returns the posterior means (M, C) as logits; :meth:`predict_proba` averages
    ``softmax(f / temperature)`` over samples of the posterior marginals (fit the temperature on held-out data
    with :class:`~tricklab.uncertainty.temperature.TemperatureScaler` on the means, or by NLL)."""

    def __init__(self, kernel: Kernel, num_classes: int, **kwargs: object) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise UserError(f"num_classes must be an int >= 2, got {num_classes!r}")
        super().__init__(kernel, num_outputs=num_classes, **kwargs)  # type: ignore[arg-type]
        self.num_classes = num_classes

    def encode(self, labels: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        return F.one_hot(labels.long(), self.num_classes).to(dtype) - 1.0 / self.num_classes

    def set_labels(self, x: Tensor, labels: Tensor) -> GPClassifier:
        self.set_data(x, self.encode(labels, x.dtype))
        return self

    @torch.no_grad()
    def predict_proba(self, x: Tensor, temperature: float = 1.0, samples: int = 64,
                      generator: torch.Generator | None = None) -> Tensor:
        """``E_f[softmax(f / T)]`` (M, C) with ``f_c ~ N(mu_c, var)`` independent, by ``samples`` draws."""
        mean, var = self.posterior(x)
        eps = torch.randn((samples, *mean.shape), dtype=mean.dtype, generator=generator)
        f = mean + var.sqrt().unsqueeze(-1) * eps
        return torch.softmax(f / temperature, -1).mean(0)


# ------------------------------------------------------------------------------------ deep kernel learning
class DeepKernelGP(nn.Module):
    """Deep kernel learning (Wilson et al. 2016): an exact GP whose kernel acts on ``feature_extractor(x)``.

    ``gp`` is an :class:`ExactGP` (or :class:`GPClassifier`); training data are given as raw inputs and mapped
    through the extractor at every use, so gradients reach the network through the marginal likelihood."""

    def __init__(self, feature_extractor: nn.Module, gp: ExactGP) -> None:
        super().__init__()
        self.feature_extractor = feature_extractor
        self.gp = gp
        self.train_inputs: Tensor | None = None
        self.train_y: Tensor | None = None

    def set_data(self, x: Tensor, y: Tensor) -> DeepKernelGP:
        self.train_inputs, self.train_y = x, y
        return self

    def log_marginal_likelihood(self, x: Tensor, y: Tensor) -> Tensor:
        return self.gp.log_marginal_likelihood(self.feature_extractor(x), y)

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.train_inputs is None or self.train_y is None:
            raise UserError("DeepKernelGP has no training data: call set_data(x, y) or fit first")
        self.gp.set_data(self.feature_extractor(self.train_inputs), self.train_y)
        return self.gp.posterior(self.feature_extractor(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.posterior(x)[0]

    def fit(self, x: Tensor, y: Tensor, steps: int = 200, batch_size: int = 256, lr: float = 1e-2,
            seed: int = 0, progress: Callable[[int, float], None] | None = None) -> list[float]:
        """Adam on ``-LML(batch) / batch_size`` over random mini-batches (the stochastic approximation of the
        exact marginal likelihood; full-batch when ``batch_size >= N``). Conditions on (x, y) afterwards."""
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise UserError(f"steps must be a positive int, got {steps!r}")
        n = x.shape[0]
        g = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam([p for p in self.parameters() if p.requires_grad], lr=lr)
        history = []
        was = self.training
        self.train()
        for step in range(steps):
            idx = torch.randperm(n, generator=g)[: min(batch_size, n)].to(x.device)
            opt.zero_grad()
            loss = -self.log_marginal_likelihood(x[idx], y[idx]) / len(idx)
            loss.backward()
            opt.step()
            history.append(float(loss.detach()))
            if progress is not None:
                progress(step + 1, history[-1])
        self.train(was)
        self.set_data(x, y)
        return history
