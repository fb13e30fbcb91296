"""Monte Carlo gradient estimators of ``grad_theta E_{z ~ q_theta}[f(z)]`` (survey: Mohamed et al., JMLR 2020).

* Score function / REINFORCE (Williams 1992): ``grad = E[(f(z) - b) grad_theta log q_theta(z)]``, unbiased for
  any baseline b that does not depend on z (``E[grad log q] = 0``). Baselines here: none, a constant, or the
  leave-one-out mean of the other samples' f (Kool et al. 2019), which is independent of z_i and so keeps the
  estimator unbiased while removing most of f's offset.
* Pathwise / reparameterization (Kingma & Welling 2014; Rezende et al. 2014): ``z = g(theta, eps)``,
  ``grad = E_eps[grad_theta f(g(theta, eps))]``; needs a differentiable f and a reparameterizable q
  (``Distribution.rsample``).

:func:`reinforce_grads` and :func:`pathwise_grads` return one gradient estimate per sample, (n, P) with the
parameters flattened and concatenated, so the caller can average them (the estimator) or measure their variance;
:func:`reinforce_surrogate` is the scalar whose autograd gradient is the REINFORCE estimate, for training loops.
Discrete latents with a biased but low-variance pathwise gradient: ``torch.nn.functional.gumbel_softmax``
(Jang et al. 2017), exposed as :func:`gumbel_softmax` rather than re-implemented.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Distribution
from torch.func import jacfwd

from tricklab.errors import ConfigError

__all__ = ["BASELINES", "gumbel_softmax", "pathwise_grads", "reinforce_grads", "reinforce_surrogate"]

BASELINES: tuple[str, ...] = ("none", "loo")

gumbel_softmax = F.gumbel_softmax


def _baseline(fz: Tensor, baseline: str | float) -> Tensor:
    """b per sample: 0, a constant, or the leave-one-out mean ``(sum_j f_j - f_i) / (n - 1)``."""
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return torch.full_like(fz, float(baseline))
    if baseline == "none":
        return torch.zeros_like(fz)
    if baseline == "loo":
        n = fz.shape[0]
        if n < 2:
            raise ConfigError("baseline 'loo' needs num_samples >= 2 (it averages the other samples)")
        return (fz.sum(0, keepdim=True) - fz) / (n - 1)
    raise ConfigError(f"baseline must be one of {BASELINES} or a number, got {baseline!r}")


def _check_n(num_samples: int) -> None:
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ConfigError(f"num_samples must be a positive int, got {num_samples!r}")


def _flat(jacs: Sequence[Tensor], n: int) -> Tensor:
    return torch.cat([j.reshape(n, -1) for j in jacs], dim=1)


def reinforce_surrogate(log_prob: Tensor, fz: Tensor, baseline: str | float = "none") -> Tensor:
    """``mean_i (f_i - b_i).detach() * log q(z_i)``: its gradient is the REINFORCE estimate.
    ``log_prob``, ``fz``: (n,) for n samples drawn without gradient."""
    fz = fz.detach()
    return ((fz - _baseline(fz, baseline)) * log_prob).mean()


def reinforce_grads(f: Callable[[Tensor], Tensor], params: Sequence[Tensor],
                    make_dist: Callable[..., Distribution], num_samples: int, baseline: str | float = "none",
                    ) -> Tensor:
    """Per-sample score-function estimates, (n, P): row i is ``(f(z_i) - b_i) grad_theta log q_theta(z_i)``.

    ``make_dist(*params)`` builds q; ``f`` maps samples (n, ...) to values (n,). Samples are drawn with torch's
    global generator (seed it for reproducibility).
    """
    _check_n(num_samples)
    with torch.no_grad():
        z = make_dist(*params).sample((num_samples,))
        fz = f(z)
    w = fz - _baseline(fz, baseline)
    # d log q(z_i) / d theta for each sample i: the (n, P) Jacobian of the (n,) log-densities, in forward mode
    # (P Jacobian-vector products over the batch, O(n P); reverse mode would need n passes, O(n^2))
    jacs = jacfwd(lambda *ps: make_dist(*ps).log_prob(z), argnums=tuple(range(len(params))))(*params)
    return w[:, None] * _flat(jacs, num_samples)


def pathwise_grads(f: Callable[[Tensor], Tensor], params: Sequence[Tensor],
                   make_dist: Callable[..., Distribution], num_samples: int) -> Tensor:
    """Per-sample reparameterization estimates, (n, P): row i is ``grad_theta f(g(theta, eps_i))``.
    The noise is drawn once (torch's global generator) and held fixed while differentiating.
    ``f`` must be a torch function of z that torch.func can differentiate (no in-place tricks, no .item())."""
    _check_n(num_samples)
    if not make_dist(*params).has_rsample:
        raise ConfigError("the pathwise estimator needs a reparameterizable distribution (has_rsample); "
                          "use reinforce_grads or a relaxation such as gumbel_softmax for discrete latents")

    def values(*ps: Tensor) -> Tensor:
        return f(make_dist(*ps).rsample((num_samples,)))

    # forward mode, P tangents; randomness="same": one draw of eps shared by every tangent direction
    jacs = jacfwd(values, argnums=tuple(range(len(params))), randomness="same")(*params)
    return _flat(jacs, num_samples)
