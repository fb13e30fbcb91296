"""DP-SGD (Abadi et al., 2016) with per-sample gradients from ``torch.func`` and a Renyi-DP accountant for the
sampled Gaussian mechanism (Mironov, 2017; Mironov, Talwar & Zhang, 2019).

Step (Abadi et al., Algorithm 1): per-example gradients g_i, clipped to norm C: g_i / max(1, ||g_i|| / C); their
sum plus N(0, sigma^2 C^2 I), divided by the expected batch size.

Accountant: a step with Poisson sampling rate q and noise multiplier sigma is (alpha, eps_alpha)-RDP with
eps_alpha = log(A_alpha) / (alpha - 1), where for integer alpha (Mironov et al. 2019, Sec. 3.3)
    A_alpha = sum_{k=0}^{alpha} C(alpha, k) (1-q)^{alpha-k} q^k exp((k^2 - k) / (2 sigma^2)),
and for fractional alpha A_alpha = A_0 + A_1 with z_0 = sigma^2 log(1/q - 1) + 1/2,
    A_0 = sum_k C(alpha, k) q^k (1-q)^{alpha-k} exp((k^2-k)/(2 sigma^2)) erfc((k - z_0)/(sqrt(2) sigma)) / 2,
    A_1 = sum_k C(alpha, k) q^{alpha-k} (1-q)^k exp(((alpha-k)^2-(alpha-k))/(2 sigma^2))
          erfc((z_0 - (alpha-k))/(sqrt(2) sigma)) / 2.
RDP composes additively over T steps; the conversion to (eps, delta) is Balle et al. (2020), Theorem 21:
    eps = min_alpha T eps_alpha + log((alpha-1)/alpha) - (log delta + log alpha) / (alpha - 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

__all__ = ["DEFAULT_ORDERS", "per_sample_grads", "clip_and_noise", "rdp_sampled_gaussian", "epsilon_from_rdp",
           "dp_epsilon", "noise_for_epsilon"]

# The orders searched by the conversion (1.1 .. 10.9 in steps of 0.1, then 12 .. 63).
DEFAULT_ORDERS: tuple[float, ...] = tuple([1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)))


def per_sample_grads(model: nn.Module, params: dict[str, Tensor], x: Tensor, y: Tensor,
                     loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy) -> dict[str, Tensor]:
    """Gradients of the loss of each example alone: dict of (B, *param.shape), via vmap(grad). ``loss_fn``
    gets the model's output and the target of one example as a batch of one ((1, ...) each); the model must
    treat examples independently (no batch norm)."""
    def loss(p: dict[str, Tensor], xi: Tensor, yi: Tensor) -> Tensor:
        return loss_fn(functional_call(model, p, (xi.unsqueeze(0),)), yi.unsqueeze(0))

    # randomness="different": dropout in the model draws a mask of its own for each example
    return vmap(grad(loss), in_dims=(None, 0, 0), randomness="different")(params, x, y)


def clip_and_noise(grads: dict[str, Tensor], clip: float, sigma: float, expected_batch: float,
                   gen: torch.Generator | None = None) -> dict[str, Tensor]:
    """Clip each example's full gradient (all parameters together) to norm ``clip``, sum, add N(0, (sigma clip)^2)
    to every coordinate, divide by ``expected_batch`` (Poisson sampling: the mean batch size, not the drawn one)."""
    norms = torch.sqrt(sum(g.flatten(1).pow(2).sum(1) for g in grads.values()))  # (B,)
    factor = (clip / (norms + 1e-12)).clamp(max=1.0)
    out = {}
    for k, g in grads.items():
        s = torch.einsum("b,b...->...", factor, g)
        noise = torch.randn(s.shape, generator=gen, dtype=s.dtype) * (sigma * clip)
        out[k] = (s + noise) / expected_batch
    return out


def _log_add(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    hi, lo = max(a, b), min(a, b)
    return hi + math.log1p(math.exp(lo - hi))


def _log_sub(a: float, b: float) -> float:
    """log(exp(a) - exp(b)) for a >= b."""
    if b == -math.inf:
        return a
    if a == b:
        return -math.inf
    return a + math.log(-math.expm1(b - a))


def _log_erfc(x: float) -> float:
    v = math.erfc(x)
    if v > 0:
        return math.log(v)
    # asymptotic expansion for large x: erfc(x) ~ exp(-x^2) / (x sqrt(pi)) (1 - 1/(2x^2) + 3/(4x^4))
    return -x * x - math.log(x) - 0.5 * math.log(math.pi) + math.log1p(-0.5 / x**2 + 0.75 / x**4)


def _log_a_int(q: float, sigma: float, alpha: int) -> float:
    out = -math.inf
    for k in range(alpha + 1):
        log_binom = math.lgamma(alpha + 1) - math.lgamma(k + 1) - math.lgamma(alpha - k + 1)
        term = log_binom + k * math.log(q) + (alpha - k) * math.log1p(-q) + (k * k - k) / (2 * sigma**2)
        out = _log_add(out, term)
    return out


def _log_a_frac(q: float, sigma: float, alpha: float) -> float:
    log_a0, log_a1 = -math.inf, -math.inf
    z0 = sigma**2 * math.log(1 / q - 1) + 0.5
    coef, k = 1.0, 0  # C(alpha, k), updated by C(alpha, k+1) = C(alpha, k) (alpha - k) / (k + 1)
    while True:
        j = alpha - k
        log_c = math.log(abs(coef))
        s0 = (log_c + k * math.log(q) + j * math.log1p(-q) + (k * k - k) / (2 * sigma**2)
              + math.log(0.5) + _log_erfc((k - z0) / (math.sqrt(2) * sigma)))
        s1 = (log_c + j * math.log(q) + k * math.log1p(-q) + (j * j - j) / (2 * sigma**2)
              + math.log(0.5) + _log_erfc((z0 - j) / (math.sqrt(2) * sigma)))
        if coef > 0:
            log_a0, log_a1 = _log_add(log_a0, s0), _log_add(log_a1, s1)
        else:
            log_a0, log_a1 = _log_sub(log_a0, s0), _log_sub(log_a1, s1)
        if max(s0, s1) < -30:  # the remaining terms no longer change the sum in float64
            return _log_add(log_a0, log_a1)
        coef *= (alpha - k) / (k + 1)
        k += 1


def rdp_sampled_gaussian(q: float, sigma: float, steps: int, orders: Sequence[float] = DEFAULT_ORDERS) -> list[float]:
    """RDP eps_alpha of ``steps`` compositions of the sampled Gaussian mechanism, one per order."""
    if not 0 <= q <= 1:
        raise ValueError(f"sample rate q must be in [0, 1], got {q}")
    if sigma <= 0:
        raise ValueError(f"noise multiplier sigma must be > 0, got {sigma}")
    out = []
    for a in orders:
        if q == 0:
            r = 0.0
        elif q == 1.0:
            r = a / (2 * sigma**2)  # the Gaussian mechanism without sampling
        elif float(a).is_integer():
            r = _log_a_int(q, sigma, int(a)) / (a - 1)
        else:
            r = _log_a_frac(q, sigma, float(a)) / (a - 1)
        out.append(r * steps)
    return out


def epsilon_from_rdp(rdp: Sequence[float], delta: float, orders: Sequence[float] = DEFAULT_ORDERS
                     ) -> tuple[float, float]:
    """(eps, best order) by Balle et al. (2020) Thm 21 (see the module docstring)."""
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    best = (math.inf, math.nan)
    for r, a in zip(rdp, orders):
        eps = r + math.log((a - 1) / a) - (math.log(delta) + math.log(a)) / (a - 1)
        if eps < best[0]:
            best = (max(eps, 0.0), a)
    return best


def dp_epsilon(q: float, sigma: float, steps: int, delta: float,
               orders: Sequence[float] = DEFAULT_ORDERS) -> float:
    """epsilon spent by ``steps`` DP-SGD steps with sampling rate ``q`` and noise multiplier ``sigma``."""
    return epsilon_from_rdp(rdp_sampled_gaussian(q, sigma, steps, orders), delta, orders)[0]


def noise_for_epsilon(target: float, q: float, steps: int, delta: float, tol: float = 1e-3) -> float:
    """The smallest noise multiplier (to ``tol``) whose epsilon after ``steps`` is at most ``target``
    (bisection; epsilon falls as sigma grows)."""
    lo, hi = 0.05, 1.0
    while dp_epsilon(q, hi, steps, delta) > target:
        hi *= 2
        if hi > 1e4:
            raise ValueError(f"no noise multiplier reaches epsilon {target} in {steps} steps at q={q}")
    while hi - lo > tol:
        mid = (lo + hi) / 2
        if dp_epsilon(q, mid, steps, delta) > target:
            lo = mid
        else:
            hi = mid
    return hi
