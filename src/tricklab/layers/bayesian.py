"""Bayes by backprop layers (Blundell, Cornebise, Kavukcuoglu & Wierstra, "Weight Uncertainty in Neural
Networks", ICML 2015, arXiv:1505.05424): linear and convolution layers whose weights are Gaussian random
variables ``w ~ q(w | theta) = N(mu, sigma^2)`` with ``sigma = softplus(rho) = log(1 + exp(rho))`` (paper
section 3.2), trained by minimising the variational free energy

    F(D, theta) = KL[q(w | theta) || P(w)] - E_q[log P(D | w)]                      (paper eq. 1)

Pieces, each a pure function plus a thin module:

* :class:`GaussianPrior` ``N(0, sigma^2)`` and :class:`ScaleMixturePrior`
  ``P(w) = pi N(0, sigma_1^2) + (1 - pi) N(0, sigma_2^2)`` (paper eq. 7), both with ``log_prob``.
* :func:`gaussian_kl`: the closed form ``KL[N(mu_q, s_q^2) || N(mu_p, s_p^2)] = log(s_p / s_q)
  + (s_q^2 + (mu_q - mu_p)^2) / (2 s_p^2) - 1/2`` summed over elements, used when the prior is Gaussian;
  :func:`mc_kl`: the one-sample Monte Carlo estimate ``log q(w | theta) - log P(w)`` at the sampled ``w``
  (paper eq. 2), used for the scale mixture, which has no closed form.
* :func:`bayes_linear` / :class:`BayesLinear`, :func:`bayes_conv` / :class:`BayesConv1d`,
  :class:`BayesConv2d`: forward with a weight sample ``w = mu + sigma * eps, eps ~ N(0, I)``
  (reparameterisation, paper section 3.2), or with the *local reparameterisation trick* (Kingma, Salimans &
  Welling 2015, arXiv:1506.02557): sample the pre-activations ``b ~ N(x mu^T, x^2 (sigma^2)^T)`` directly,
  which is exact for a factorised Gaussian posterior, decorrelates the noise across the examples of a batch
  (lower-variance gradients) and costs one extra matmul instead of a weight sample per example.

A layer samples in ``train()`` mode and when :func:`sampling` is on (the predictive distribution is an average
over samples), and uses the posterior mean ``mu`` in plain ``eval()`` mode (deterministic, so it traces and
compiles). ``layer.kl()`` returns the KL term of the layer; ``tricklab.uncertainty.bayes_by_backprop`` sums it
over a model and scales it into the ELBO.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tricklab.errors import ConfigError
from tricklab.layers.spec import LayerSpec

__all__ = [
    "LAYER_SPECS",
    "BayesConv1d",
    "BayesConv2d",
    "BayesLayer",
    "BayesLinear",
    "GaussianPrior",
    "ScaleMixturePrior",
    "bayes_conv",
    "bayes_layers",
    "bayes_linear",
    "gaussian_kl",
    "mc_kl",
    "normal_log_prob",
    "sampling",
    "softplus_sigma",
]

_LOG_2PI = math.log(2.0 * math.pi)
KLMode = Literal["auto", "closed", "mc"]


def _positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


# ------------------------------------------------------------------------------------------------ priors
def normal_log_prob(x: Tensor, mu: Tensor | float, sigma: Tensor | float) -> Tensor:
    """Elementwise ``log N(x; mu, sigma^2) = -log sigma - (x - mu)^2 / (2 sigma^2) - log(2 pi) / 2``."""
    sigma_t = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    return -torch.log(sigma_t) - (x - mu) ** 2 / (2.0 * sigma_t**2) - 0.5 * _LOG_2PI


@dataclass(frozen=True)
class GaussianPrior:
    """``P(w) = N(0, sigma^2)`` per weight; the KL to a Gaussian posterior has a closed form."""

    sigma: float = 1.0

    def __post_init__(self) -> None:
        _positive("GaussianPrior sigma", self.sigma)

    def log_prob(self, w: Tensor) -> Tensor:
        """Elementwise log density."""
        return normal_log_prob(w, 0.0, self.sigma)


@dataclass(frozen=True)
class ScaleMixturePrior:
    """``P(w) = pi N(0, sigma1^2) + (1 - pi) N(0, sigma2^2)`` (Blundell et al. 2015, eq. 7), with
    ``sigma1 > sigma2`` and ``sigma2 << 1``: a heavy tail plus a spike at zero. The paper's best MNIST
    settings had ``-log sigma1`` in {0, 1, 2} and ``-log sigma2`` in {6, 7, 8}, ``pi`` in {1/4, 1/2, 3/4}."""

    pi: float = 0.5
    sigma1: float = 1.0
    sigma2: float = math.exp(-6.0)

    def __post_init__(self) -> None:
        if isinstance(self.pi, bool) or not isinstance(self.pi, (int, float)) or not 0.0 < self.pi < 1.0:
            raise ConfigError(f"ScaleMixturePrior pi must be in (0, 1), got {self.pi!r}")
        _positive("ScaleMixturePrior sigma1", self.sigma1)
        _positive("ScaleMixturePrior sigma2", self.sigma2)

    def log_prob(self, w: Tensor) -> Tensor:
        """Elementwise ``log(pi N(w; 0, s1^2) + (1 - pi) N(w; 0, s2^2))``, computed with logsumexp so the
        narrow component does not underflow for large ``|w|``."""
        a = math.log(self.pi) + normal_log_prob(w, 0.0, self.sigma1)
        b = math.log1p(-self.pi) + normal_log_prob(w, 0.0, self.sigma2)
        return torch.logaddexp(a, b)


Prior = GaussianPrior | ScaleMixturePrior


# ------------------------------------------------------------------------------------------- functional
def softplus_sigma(rho: Tensor) -> Tensor:
    """``sigma = log(1 + exp(rho))`` (paper section 3.2): positive for any real ``rho``."""
    return F.softplus(rho)


def gaussian_kl(mu_q: Tensor, sigma_q: Tensor, mu_p: float | Tensor = 0.0, sigma_p: float | Tensor = 1.0) -> Tensor:
    """Closed-form ``sum KL[N(mu_q, sigma_q^2) || N(mu_p, sigma_p^2)]`` over all elements:

        KL = log(sigma_p / sigma_q) + (sigma_q^2 + (mu_q - mu_p)^2) / (2 sigma_p^2) - 1/2   per element.
    """
    sp = torch.as_tensor(sigma_p, dtype=mu_q.dtype, device=mu_q.device)
    kl = torch.log(sp) - torch.log(sigma_q) + (sigma_q**2 + (mu_q - mu_p) ** 2) / (2.0 * sp**2) - 0.5
    return kl.sum()


def mc_kl(w: Tensor, mu_q: Tensor, sigma_q: Tensor, prior: Prior) -> Tensor:
    """One-sample Monte Carlo KL ``sum [log q(w | mu, sigma) - log P(w)]`` at a sample ``w ~ q`` (Blundell et al.
    2015, eq. 2). Unbiased; its gradient flows through ``w = mu + sigma * eps`` and through ``q``'s parameters.
    ``w`` may carry leading sample dimensions (S, *mu.shape): the result is then one value per sample."""
    lq = normal_log_prob(w, mu_q, sigma_q)
    lp = prior.log_prob(w)
    extra = w.ndim - mu_q.ndim
    return (lq - lp).flatten(extra).sum(-1)


def _sample(mu: Tensor, sigma: Tensor, generator: torch.Generator | None) -> Tensor:
    eps = torch.randn(mu.shape, dtype=mu.dtype, device=mu.device, generator=generator)
    return mu + sigma * eps


def bayes_linear(
    x: Tensor,
    weight_mu: Tensor,
    weight_sigma: Tensor,
    bias_mu: Tensor | None = None,
    bias_sigma: Tensor | None = None,
    *,
    sample: bool = True,
    local_reparam: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Gaussian-weight linear map of ``x`` (..., in) with weights (out, in) ~ N(weight_mu, weight_sigma^2).

    Returns ``(out, w, b)``: ``out`` (..., out); ``w``, ``b`` the sampled weights (None when not sampled:
    ``sample=False`` uses the means, the local reparameterisation samples the outputs instead:
    ``out = x mu^T + sqrt(x^2 (sigma^2)^T + sigma_b^2) * eps``).
    """
    if not sample:
        return F.linear(x, weight_mu, bias_mu), None, None
    if local_reparam:
        mean = F.linear(x, weight_mu, bias_mu)
        var = F.linear(x * x, weight_sigma**2, None if bias_sigma is None else bias_sigma**2)
        eps = torch.randn(mean.shape, dtype=mean.dtype, device=mean.device, generator=generator)
        # var > 0 unless the input row is all zeros and there is no bias; the floor keeps sqrt differentiable
        return mean + torch.sqrt(var.clamp_min(1e-16)) * eps, None, None
    w = _sample(weight_mu, weight_sigma, generator)
    b = None if bias_mu is None else _sample(bias_mu, bias_sigma, generator)  # type: ignore[arg-type]
    return F.linear(x, w, b), w, b


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def bayes_conv(
    x: Tensor,
    weight_mu: Tensor,
    weight_sigma: Tensor,
    bias_mu: Tensor | None = None,
    bias_sigma: Tensor | None = None,
    *,
    stride: int | tuple[int, ...] = 1,
    padding: int | tuple[int, ...] | str = 0,
    dilation: int | tuple[int, ...] = 1,
    groups: int = 1,
    sample: bool = True,
    local_reparam: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Gaussian-weight convolution (1-, 2- or 3-D from the weight's rank: (out, in/groups, *kernel)).

    Same contract as :func:`bayes_linear`; the local reparameterisation samples each output position:
    ``out = conv(x, mu) + sqrt(conv(x^2, sigma^2) + sigma_b^2) * eps`` (Kingma et al. 2015; the noise is
    independent across positions, which is exact for the marginal of every output unit).
    """
    d = weight_mu.ndim - 2
    if d not in _CONV:
        raise ValueError(f"bayes_conv expects a weight of rank 3, 4 or 5, got shape {tuple(weight_mu.shape)}")
    conv = _CONV[d]
    kw = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    if not sample:
        return conv(x, weight_mu, bias_mu, **kw), None, None
    if local_reparam:
        mean = conv(x, weight_mu, bias_mu, **kw)
        var = conv(x * x, weight_sigma**2, None if bias_sigma is None else bias_sigma**2, **kw)
        eps = torch.randn(mean.shape, dtype=mean.dtype, device=mean.device, generator=generator)
        return mean + torch.sqrt(var.clamp_min(1e-16)) * eps, None, None
    w = _sample(weight_mu, weight_sigma, generator)
    b = None if bias_mu is None else _sample(bias_mu, bias_sigma, generator)  # type: ignore[arg-type]
    return conv(x, w, b, **kw), w, b


# ---------------------------------------------------------------------------------------------- modules
class BayesLayer(nn.Module):
    """Shared parameters and KL bookkeeping of the Gaussian variational layers.

    Parameters ``weight_mu``, ``weight_rho`` (and ``bias_mu``, ``bias_rho``); ``sigma = softplus(rho)``.
    ``kl_mode``: ``"auto"`` (closed form for a Gaussian prior, Monte Carlo otherwise), ``"closed"`` (only valid
    with a Gaussian prior) or ``"mc"``.
    """

    def __init__(self, weight_shape: tuple[int, ...], bias: bool, prior: Prior | None, rho_init: float,
                 local_reparam: bool, kl_mode: KLMode) -> None:
        super().__init__()
        prior = GaussianPrior(1.0) if prior is None else prior
        if not isinstance(prior, (GaussianPrior, ScaleMixturePrior)):
            raise ConfigError(f"prior must be a GaussianPrior or ScaleMixturePrior, got {type(prior).__name__}")
        if kl_mode not in ("auto", "closed", "mc"):
            raise ConfigError(f"kl_mode must be 'auto', 'closed' or 'mc', got {kl_mode!r}")
        if kl_mode == "closed" and not isinstance(prior, GaussianPrior):
            raise ConfigError("kl_mode='closed' needs a GaussianPrior: the KL to a scale-mixture prior has no "
                              "closed form; use kl_mode='mc' or 'auto'")
        if isinstance(rho_init, bool) or not isinstance(rho_init, (int, float)) or not math.isfinite(rho_init):
            raise ConfigError(f"rho_init must be a finite number (sigma = softplus(rho_init)), got {rho_init!r}")
        self.prior = prior
        self.rho_init = float(rho_init)
        self.local_reparam = bool(local_reparam)
        self.kl_mode = kl_mode
        self.sample_in_eval = False  # set by sampling(): draw weights in eval mode too
        self.weight_mu = nn.Parameter(torch.empty(weight_shape))
        self.weight_rho = nn.Parameter(torch.empty(weight_shape))
        if bias:
            self.bias_mu = nn.Parameter(torch.empty(weight_shape[0]))
            self.bias_rho = nn.Parameter(torch.empty(weight_shape[0]))
        else:
            self.register_parameter("bias_mu", None)
            self.register_parameter("bias_rho", None)
        self._last: tuple[Tensor, Tensor | None] | None = None  # weights sampled by the last forward
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Means as torch's Linear/Conv default (Kaiming-uniform, bound 1/sqrt(fan_in) for the bias); every
        ``rho`` at ``rho_init`` (``softplus(-5) = 0.0067``: start close to the deterministic network)."""
        nn.init.kaiming_uniform_(self.weight_mu, a=math.sqrt(5))
        nn.init.constant_(self.weight_rho, self.rho_init)
        if self.bias_mu is not None:
            fan_in = math.prod(self.weight_mu.shape[1:])
            bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            nn.init.uniform_(self.bias_mu, -bound, bound)
            nn.init.constant_(self.bias_rho, self.rho_init)

    @property
    def weight_sigma(self) -> Tensor:
        return softplus_sigma(self.weight_rho)

    @property
    def bias_sigma(self) -> Tensor | None:
        return None if self.bias_rho is None else softplus_sigma(self.bias_rho)

    @property
    def sampling_now(self) -> bool:
        return self.training or self.sample_in_eval

    @property
    def closed_form_kl(self) -> bool:
        return self.kl_mode == "closed" or (self.kl_mode == "auto" and isinstance(self.prior, GaussianPrior))

    def __getstate__(self) -> dict[str, object]:
        # the last sample is part of an autograd graph: not copyable (deepcopy, pickling), and not state
        state = dict(super().__getstate__())
        state["_last"] = None
        return state

    def _keep(self, w: Tensor | None, b: Tensor | None) -> None:
        # the MC KL needs the weights this forward used; closed-form KL does not depend on the sample
        self._last = None if (w is None or self.closed_form_kl) else (w, b)

    def kl(self) -> Tensor:
        """KL[q(w | theta) || P(w)] of this layer's weights and bias (a scalar with gradient).

        Closed form (:func:`gaussian_kl`) for a Gaussian prior; otherwise the one-sample Monte Carlo estimate
        (:func:`mc_kl`) at the weights of the last training forward, as in Blundell et al.'s Algorithm, or at a
        fresh sample when the forward drew none (local reparameterisation, evaluation)."""
        ws, bs = self.weight_sigma, self.bias_sigma
        if self.closed_form_kl:
            p = self.prior
            assert isinstance(p, GaussianPrior)
            out = gaussian_kl(self.weight_mu, ws, 0.0, p.sigma)
            if self.bias_mu is not None:
                out = out + gaussian_kl(self.bias_mu, bs, 0.0, p.sigma)  # type: ignore[arg-type]
            return out
        if self._last is not None:
            w, b = self._last
        else:
            w = _sample(self.weight_mu, ws, None)
            b = None if self.bias_mu is None else _sample(self.bias_mu, bs, None)  # type: ignore[arg-type]
        out = mc_kl(w, self.weight_mu, ws, self.prior)
        if b is not None:
            out = out + mc_kl(b, self.bias_mu, bs, self.prior)  # type: ignore[arg-type]
        return out

    def _base_repr(self) -> str:
        return f"prior={self.prior}, local_reparam={self.local_reparam}, kl_mode={self.kl_mode!r}"


class BayesLinear(BayesLayer):
    """Linear layer with Gaussian weights ``N(mu, softplus(rho)^2)`` (Bayes by backprop, Blundell et al. 2015).

    Input (..., in_features) -> output (..., out_features). Samples in train mode (or under
    :func:`sampling`), uses ``mu`` in eval mode.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, prior: Prior | None = None,
                 rho_init: float = -5.0, local_reparam: bool = False, kl_mode: KLMode = "auto") -> None:
        for name, v in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"BayesLinear {name} must be a positive int, got {v!r}")
        self.in_features, self.out_features = in_features, out_features
        super().__init__((out_features, in_features), bias, prior, rho_init, local_reparam, kl_mode)

    def forward(self, x: Tensor) -> Tensor:
        out, w, b = bayes_linear(x, self.weight_mu, self.weight_sigma, self.bias_mu, self.bias_sigma,
                                 sample=self.sampling_now, local_reparam=self.local_reparam)
        self._keep(w, b)
        return out

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, " + self._base_repr()


class _BayesConvNd(BayesLayer):
    _dim: int = 2

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, ...], stride: int = 1,
                 padding: int | str = 0, dilation: int = 1, groups: int = 1, bias: bool = True, *,
                 prior: Prior | None = None, rho_init: float = -5.0, local_reparam: bool = False,
                 kl_mode: KLMode = "auto") -> None:
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{type(self).__name__} {name} must be a positive int, got {v!r}")
        if in_channels % groups or out_channels % groups:
            raise ConfigError(f"{type(self).__name__}: in_channels ({in_channels}) and out_channels "
                              f"({out_channels}) must both be divisible by groups ({groups})")
        k = (kernel_size,) * self._dim if isinstance(kernel_size, int) else tuple(kernel_size)
        if len(k) != self._dim or any(not isinstance(s, int) or s < 1 for s in k):
            raise ConfigError(f"{type(self).__name__} kernel_size must be a positive int or {self._dim} of them, "
                              f"got {kernel_size!r}")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, k
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        super().__init__((out_channels, in_channels // groups, *k), bias, prior, rho_init, local_reparam, kl_mode)

    def forward(self, x: Tensor) -> Tensor:
        out, w, b = bayes_conv(x, self.weight_mu, self.weight_sigma, self.bias_mu, self.bias_sigma,
                               stride=self.stride, padding=self.padding, dilation=self.dilation,
                               groups=self.groups, sample=self.sampling_now, local_reparam=self.local_reparam)
        self._keep(w, b)
        return out

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, " + self._base_repr())


class BayesConv1d(_BayesConvNd):
    """Conv1d with Gaussian weights (Bayes by backprop): (B, C_in, L) -> (B, C_out, L_out)."""

    _dim = 1


class BayesConv2d(_BayesConvNd):
    """Conv2d with Gaussian weights (Bayes by backprop): (B, C_in, H, W) -> (B, C_out, H_out, W_out)."""

    _dim = 2


def bayes_layers(model: nn.Module) -> Iterator[BayesLayer]:
    """Every :class:`BayesLayer` inside ``model``."""
    return (m for m in model.modules() if isinstance(m, BayesLayer))


@contextlib.contextmanager
def sampling(model: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """Within the block, the model's Bayesian layers draw weights even in ``eval()`` mode (the other layers
    keep their mode: batch norm stays in eval), so repeated forwards sample the predictive distribution."""
    layers = list(bayes_layers(model))
    old = [m.sample_in_eval for m in layers]
    for m in layers:
        m.sample_in_eval = enabled
    try:
        yield model
    finally:
        for m, o in zip(layers, old):
            m.sample_in_eval = o


# --------------------------------------------------------------------------------------------- registry
def _vec(g: torch.Generator) -> tuple[Tensor, ...]:
    return (torch.randn(4, 6, generator=g),)


def _seq(g: torch.Generator) -> tuple[Tensor, ...]:
    return (torch.randn(2, 3, 10, generator=g),)


def _img(g: torch.Generator) -> tuple[Tensor, ...]:
    return (torch.randn(2, 3, 8, 8, generator=g),)


LAYER_SPECS: tuple[LayerSpec, ...] = (
    LayerSpec("bayes_linear", "bayesian", lambda: BayesLinear(6, 4), _vec,
              "Linear with Gaussian weights N(mu, softplus(rho)^2), Bayes by backprop (Blundell et al. 2015)."),
    LayerSpec("bayes_linear_lrt", "bayesian",
              lambda: BayesLinear(6, 4, prior=ScaleMixturePrior(), local_reparam=True), _vec,
              "BayesLinear with the local reparameterisation trick (Kingma et al. 2015), scale-mixture prior."),
    LayerSpec("bayes_conv1d", "bayesian", lambda: BayesConv1d(3, 4, 3, padding=1), _seq,
              "Conv1d with Gaussian weights, Bayes by backprop (Blundell et al. 2015)."),
    LayerSpec("bayes_conv2d", "bayesian", lambda: BayesConv2d(3, 4, 3, padding=1, local_reparam=True), _img,
              "Conv2d with Gaussian weights and local reparameterisation (Blundell 2015; Kingma 2015)."),
)
