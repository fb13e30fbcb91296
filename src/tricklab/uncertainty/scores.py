"""Uncertainty scores of a predictive distribution, for one forward pass or a stack of samples.

Shapes: ``logits`` / ``probs`` (N, C) for one prediction; ``sample_probs`` (S, N, C) for S stochastic
predictions (MC dropout passes, ensemble members, weight samples). Every score is per example (N,), float64 for
the entropies (so two small entropies subtract without cancellation), and follows one convention:

    **higher = more uncertain = more likely out of distribution**

so that any of them can be handed to :func:`tricklab.uncertainty.ood.auroc` as an OOD score.

* predictive entropy ``H[E_s p_s] = -sum_c pbar_c log pbar_c`` (total uncertainty);
* expected entropy ``E_s H[p_s]`` (aleatoric part);
* mutual information ``I[y; w | x] = H[E_s p_s] - E_s H[p_s] >= 0`` (epistemic part; BALD, Houlsby et al. 2011,
  arXiv:1112.5745; Gal, Islam & Ghahramani 2017 for MC dropout);
* max-softmax ``-max_c p_c`` (Hendrycks & Gimpel 2017, arXiv:1610.02136; negated to fit the convention);
* energy ``E(x) = -T logsumexp(z / T)`` (Liu, Wang, Owens & Li 2020, arXiv:2010.03759): lower for
  in-distribution inputs, so the energy itself is the OOD score.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tricklab.errors import UserError

__all__ = [
    "entropy",
    "energy_score",
    "expected_entropy",
    "max_softmax_score",
    "mean_probs",
    "mutual_information",
    "predictive_entropy",
]


def _check_probs(p: object, ndim: int, name: str) -> Tensor:
    if not isinstance(p, Tensor) or not p.dtype.is_floating_point:
        raise UserError(f"{name} must be a floating torch.Tensor of probabilities, got {type(p).__name__}")
    if p.ndim != ndim:
        shape = "(N, C)" if ndim == 2 else "(S, N, C)"
        raise UserError(f"{name} must have shape {shape}, got {tuple(p.shape)}")
    p = p.detach().to(torch.float64)
    if p.numel() and (float(p.min()) < -1e-6 or (p.sum(-1) - 1).abs().max() > 1e-3):
        raise UserError(f"{name} must hold probabilities (non-negative, each row summing to 1); pass "
                        f"softmax(logits), not logits")
    return p


def entropy(probs: Tensor) -> Tensor:
    """``-sum_c p_c log p_c`` per row of ``probs`` (N, C) -> (N,), float64; ``0 log 0 = 0``."""
    p = _check_probs(probs, 2, "probs")
    return -torch.special.xlogy(p, p).sum(-1)


def mean_probs(sample_probs: Tensor) -> Tensor:
    """The predictive distribution ``E_s p_s`` (N, C) of samples (S, N, C) (Bayesian model average)."""
    return _check_probs(sample_probs, 3, "sample_probs").mean(0)


def predictive_entropy(sample_probs: Tensor) -> Tensor:
    """``H[E_s p_s]`` (N,): entropy of the averaged prediction (total uncertainty)."""
    return entropy(mean_probs(sample_probs))


def expected_entropy(sample_probs: Tensor) -> Tensor:
    """``E_s H[p_s]`` (N,): average entropy of the individual samples (aleatoric uncertainty)."""
    p = _check_probs(sample_probs, 3, "sample_probs")
    return -torch.special.xlogy(p, p).sum(-1).mean(0)


def mutual_information(sample_probs: Tensor) -> Tensor:
    """BALD ``I[y; w | x] = H[E_s p_s] - E_s H[p_s]`` (N,) (Houlsby et al. 2011): how much the samples
    disagree; 0 when all samples agree. Clamped at 0 against round-off (it is >= 0 by Jensen's inequality)."""
    return (predictive_entropy(sample_probs) - expected_entropy(sample_probs)).clamp_min(0.0)


def max_softmax_score(logits: Tensor) -> Tensor:
    """``-max_c softmax(z)_c`` (N,): the maximum-softmax-probability baseline (Hendrycks & Gimpel 2017),
    negated so that higher means more likely out of distribution."""
    if not isinstance(logits, Tensor) or logits.ndim != 2:
        raise UserError(f"logits must be a (N, C) tensor, got {getattr(logits, 'shape', type(logits).__name__)}")
    return -torch.softmax(logits.detach().to(torch.float64), -1).amax(-1)


def energy_score(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Free energy ``E(x) = -T logsumexp(z / T)`` (N,) (Liu et al. 2020, eq. 1 with the classifier's logits):
    lower for in-distribution inputs, so higher means more likely out of distribution."""
    if not isinstance(logits, Tensor) or logits.ndim != 2:
        raise UserError(f"logits must be a (N, C) tensor, got {getattr(logits, 'shape', type(logits).__name__)}")
    if not temperature > 0:
        raise UserError(f"energy temperature must be positive, got {temperature!r}")
    z = logits.detach().to(torch.float64)
    return -temperature * torch.logsumexp(z / temperature, dim=-1)
