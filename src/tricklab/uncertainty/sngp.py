"""SNGP: spectral-normalised neural Gaussian process (Liu, Lin, Padhy, Tran, Bedrax-Weiss & Lakshminarayanan,
"Simple and Principled Uncertainty Estimation with Deterministic Deep Learning via Distance Awareness",
NeurIPS 2020, arXiv:2006.10108).

Two changes make a deterministic network distance aware:

1. **Spectral normalisation of the body** (paper section 3.2): every weight ``W`` is rescaled to
   ``W * min(1, c / ||W||_2)`` (``c`` the norm bound, 0.95 by default as in the paper's code), with ``||W||_2``
   estimated by power iteration (Miyato et al. 2018). In a residual body ``h + g(h)`` with ``Lip(g) <= c < 1``
   this bounds the distortion of distances from both sides, so the hidden space keeps track of how far an input
   is from the training data. (For a body without residual connections it only bounds the Lipschitz constant.)
   For a convolution, ``||W||_2`` is that of the reshaped (out, in * k) weight matrix, as in ``torch.nn.utils.
   spectral_norm``: an estimate of the operator norm, not the exact one.
2. **A random-feature GP output layer** (paper eq. 7-9): the dense output becomes a GP approximated by D random
   Fourier features ``phi(h) = sqrt(2 / D) cos(W h / l + b)``, ``W ~ N(0, I)``, ``b ~ U(0, 2 pi)`` fixed (Rahimi &
   Recht 2007, the RBF kernel with lengthscale l), logits ``beta^T phi(h)``. After training, a Laplace
   approximation gives the posterior covariance of ``beta``: with the Gaussian likelihood of the paper's code,
   ``Sigma = ridge * (ridge I + sum_i phi_i phi_i^T)^-1`` over the training set, one pass in eval mode
   (:func:`fit_covariance`; the paper accumulates during the last epoch instead). Predictions use the mean-field
   approximation ``logits / sqrt(1 + lambda var(x))``, ``var(x) = phi(x)^T Sigma phi(x)``, ``lambda = pi / 8``.

:class:`RandomFeatureGP` returns plain logits while training and, in eval mode once the covariance is fitted,
the mean-field logits, so any evaluation code gets the calibrated prediction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from tricklab.errors import UserError

__all__ = [
    "RandomFeatureGP",
    "SpectralNormBound",
    "fit_covariance",
    "mean_field_logits",
    "random_features",
    "sngp_model",
    "spectral_normalize",
]


# -------------------------------------------------------------------------------- spectral normalisation
class SpectralNormBound(nn.Module):
    """Parametrisation ``W -> W * min(1, bound / sigma)``, ``sigma`` the power-iteration estimate of ``||W||_2``
    on the weight reshaped to (out, -1). ``u``, ``v`` are buffers, updated (without gradient) by
    ``n_power_iterations`` steps at every training-mode forward; ``sigma = u^T W v`` carries the gradient."""

    def __init__(self, weight: Tensor, bound: float = 0.95, n_power_iterations: int = 1, eps: float = 1e-12) -> None:
        super().__init__()
        if not (isinstance(bound, (int, float)) and bound > 0 and math.isfinite(bound)):
            raise UserError(f"spectral norm bound must be a positive number, got {bound!r}")
        if isinstance(n_power_iterations, bool) or not isinstance(n_power_iterations, int) or n_power_iterations < 1:
            raise UserError(f"n_power_iterations must be a positive int, got {n_power_iterations!r}")
        self.bound, self.n_power_iterations, self.eps = float(bound), n_power_iterations, eps
        w = weight.detach().flatten(1)
        g = torch.Generator().manual_seed(0)  # fixed start: the parametrisation itself draws no global random numbers
        u = F.normalize(torch.randn(w.shape[0], generator=g, dtype=w.dtype), dim=0, eps=eps).to(w.device)
        v = F.normalize(torch.randn(w.shape[1], generator=g, dtype=w.dtype), dim=0, eps=eps).to(w.device)
        self.register_buffer("u", u)
        self.register_buffer("v", v)
        self._power(w, 15)  # converge once at registration, as torch's spectral_norm does

    @torch.no_grad()
    def _power(self, w: Tensor, n: int) -> None:
        for _ in range(n):
            self.v.copy_(F.normalize(w.T @ self.u, dim=0, eps=self.eps))
            self.u.copy_(F.normalize(w @ self.v, dim=0, eps=self.eps))

    def sigma(self, weight: Tensor) -> Tensor:
        """``u^T W v`` (gradient through ``W`` only)."""
        return torch.dot(self.u, weight.flatten(1) @ self.v)

    def forward(self, weight: Tensor) -> Tensor:
        if self.training:
            self._power(weight.detach().flatten(1), self.n_power_iterations)
        sigma = self.sigma(weight)
        # W / max(1, sigma / c): only weights whose norm exceeds the bound are scaled down
        return weight / torch.clamp(sigma / self.bound, min=1.0)


def spectral_normalize(model: nn.Module, bound: float = 0.95, n_power_iterations: int = 1,
                       types: Sequence[type[nn.Module]] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d),
                       exclude: Sequence[nn.Module] = ()) -> nn.Module:
    """Register :class:`SpectralNormBound` on the ``weight`` of every module of ``types`` in ``model`` (in place,
    through ``torch.nn.utils.parametrize``), except the modules in ``exclude``. Returns ``model``."""
    skip = {id(m) for m in exclude}
    count = 0
    for m in list(model.modules()):
        if isinstance(m, tuple(types)) and id(m) not in skip and not parametrize.is_parametrized(m, "weight"):
            parametrize.register_parametrization(m, "weight", SpectralNormBound(m.weight, bound, n_power_iterations))
            count += 1
    if count == 0:
        raise UserError(f"spectral_normalize found no layer of types {[t.__name__ for t in types]} in "
                        f"{type(model).__name__}")
    return model


# ----------------------------------------------------------------------------------- random-feature GP
def random_features(h: Tensor, weight: Tensor, bias: Tensor, lengthscale: float) -> Tensor:
    """``sqrt(2 / D) cos(h W^T / l + b)`` (B, D) for hidden ``h`` (B, H), ``W`` (D, H) ~ N(0, 1), ``b`` (D,) ~
    U(0, 2 pi): ``phi(h)^T phi(h')`` approximates the RBF kernel ``exp(-||h - h'||^2 / (2 l^2))``."""
    d = weight.shape[0]
    return math.sqrt(2.0 / d) * torch.cos(F.linear(h, weight) / lengthscale + bias)


def mean_field_logits(logits: Tensor, variance: Tensor, factor: float = math.pi / 8) -> Tensor:
    """``logits / sqrt(1 + factor * var)`` (B, C) for per-example variances (B,) (SNGP, paper eq. 10 / the
    probit approximation of E[softmax] with lambda = pi / 8)."""
    return logits / torch.sqrt(1.0 + factor * variance).unsqueeze(-1)


class RandomFeatureGP(nn.Module):
    """GP output layer by random Fourier features with a Laplace posterior covariance (SNGP).

    Args:
        in_features: hidden size H of the body.
        num_classes: outputs C.
        num_features: random features D (the paper uses 1024).
        lengthscale: RBF lengthscale l; None: ``sqrt(H)`` when ``normalize_input`` (unit-variance features, so
            typical squared distances are ~ H), else 1.
        normalize_input: LayerNorm (no affine) on the hidden input, as the paper's code offers.
        ridge: prior precision of ``beta`` (the ridge penalty of the Laplace approximation).
        mean_field_factor: lambda of the mean-field logits; 0 or less turns the adjustment off.
    """

    def __init__(self, in_features: int, num_classes: int, num_features: int = 1024, lengthscale: float | None = None,
                 normalize_input: bool = True, ridge: float = 1.0, mean_field_factor: float = math.pi / 8,
                 seed: int = 0) -> None:
        super().__init__()
        for name, v in (("in_features", in_features), ("num_classes", num_classes), ("num_features", num_features)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise UserError(f"RandomFeatureGP {name} must be a positive int, got {v!r}")
        if not ridge > 0:
            raise UserError(f"ridge must be positive, got {ridge!r}")
        self.lengthscale = float(lengthscale) if lengthscale is not None else (
            math.sqrt(in_features) if normalize_input else 1.0)
        if not self.lengthscale > 0:
            raise UserError(f"lengthscale must be positive, got {lengthscale!r}")
        self.normalize_input, self.ridge, self.mean_field_factor = normalize_input, float(ridge), mean_field_factor
        g = torch.Generator().manual_seed(seed)  # fixed features, drawn without touching the global RNG
        self.register_buffer("feature_weight", torch.randn(num_features, in_features, generator=g))
        self.register_buffer("feature_bias", torch.rand(num_features, generator=g) * 2 * math.pi)
        self.output = nn.Linear(num_features, num_classes)
        self.register_buffer("precision", self.ridge * torch.eye(num_features))
        self.register_buffer("covariance", torch.zeros(num_features, num_features))
        self.register_buffer("covariance_ready", torch.tensor(False))
        self.accumulating = False

    def features(self, h: Tensor) -> Tensor:
        if self.normalize_input:
            h = F.layer_norm(h, h.shape[-1:])
        return random_features(h, self.feature_weight.to(h.dtype), self.feature_bias.to(h.dtype), self.lengthscale)

    def reset_precision(self) -> None:
        self.precision.copy_(self.ridge * torch.eye(self.precision.shape[0], dtype=self.precision.dtype,
                                                    device=self.precision.device))
        self.covariance_ready.fill_(False)

    @torch.no_grad()
    def update_covariance(self) -> None:
        """``Sigma = ridge * P^-1`` from the accumulated precision ``P`` (Cholesky inverse)."""
        chol = torch.linalg.cholesky(self.precision.double())
        self.covariance.copy_((self.ridge * torch.cholesky_inverse(chol)).to(self.covariance.dtype))
        self.covariance_ready.fill_(True)

    def variance(self, phi: Tensor) -> Tensor:
        """``phi^T Sigma phi`` (B,) for features (B, D)."""
        return ((phi @ self.covariance.to(phi.dtype)) * phi).sum(-1)

    def predict(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior-mean logits (B, C) and predictive variances (B,) (zeros before :func:`fit_covariance`)."""
        phi = self.features(h)
        logits = self.output(phi)
        var = self.variance(phi) if bool(self.covariance_ready) else torch.zeros(h.shape[0], dtype=h.dtype,
                                                                                 device=h.device)
        return logits, var

    def forward(self, h: Tensor) -> Tensor:
        phi = self.features(h)
        if self.accumulating:
            with torch.no_grad():
                self.precision.add_(phi.detach().T.to(self.precision.dtype) @ phi.detach().to(self.precision.dtype))
        logits = self.output(phi)
        if not self.training and bool(self.covariance_ready) and self.mean_field_factor > 0:
            return mean_field_logits(logits, self.variance(phi), self.mean_field_factor)
        return logits

    def extra_repr(self) -> str:
        d, h = self.feature_weight.shape
        return (f"in_features={h}, num_features={d}, num_classes={self.output.out_features}, "
                f"lengthscale={self.lengthscale:.4g}, normalize_input={self.normalize_input}, ridge={self.ridge}")


@torch.no_grad()
def fit_covariance(model: nn.Module, inputs: Tensor, batch_size: int = 1000) -> int:
    """One pass over the training ``inputs`` in eval mode accumulating ``P = ridge I + sum phi phi^T`` in every
    :class:`RandomFeatureGP` of ``model``, then ``Sigma = ridge P^-1``. Returns the number of GP layers updated."""
    gps = [m for m in model.modules() if isinstance(m, RandomFeatureGP)]
    if not gps:
        raise UserError(f"{type(model).__name__} has no RandomFeatureGP layer to fit a covariance for")
    was = model.training
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        for gp in gps:
            gp.reset_precision()
            gp.accumulating = True
        for i in range(0, len(inputs), batch_size):
            model(inputs[i : i + batch_size].to(device))
    finally:
        for gp in gps:
            gp.accumulating = False
        model.train(was)
    for gp in gps:
        gp.update_covariance()
    return len(gps)


def sngp_model(body: nn.Module, hidden: int, num_classes: int, bound: float = 0.95, **gp_kwargs: object) -> nn.Module:
    """``nn.Sequential(spectral_normalize(body, bound), RandomFeatureGP(hidden, num_classes, **gp_kwargs))``:
    turn any feature extractor with output (B, hidden) into an SNGP classifier."""
    return nn.Sequential(spectral_normalize(body, bound), RandomFeatureGP(hidden, num_classes, **gp_kwargs))  # type: ignore[arg-type]
