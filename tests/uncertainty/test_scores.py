"""Uncertainty scores. References: NumPy closed forms of entropy, BALD mutual information, max-softmax and the
free energy -T log sum exp(z / T); scipy.stats.entropy for the entropy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tricklab.errors import UserError
from tricklab.uncertainty.scores import (
    energy_score,
    entropy,
    expected_entropy,
    max_softmax_score,
    mean_probs,
    mutual_information,
    predictive_entropy,
)


def _samples(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(7, 5, 4, generator=g, dtype=torch.float64) * 2, -1)


def test_entropies_and_mutual_information_match_numpy() -> None:
    stats = pytest.importorskip("scipy.stats")
    p = _samples().numpy()
    pbar = p.mean(0)
    h_pred = -(pbar * np.log(pbar)).sum(-1)
    h_exp = (-(p * np.log(p)).sum(-1)).mean(0)
    s = torch.tensor(p)
    np.testing.assert_allclose(mean_probs(s).numpy(), pbar, rtol=1e-14)
    np.testing.assert_allclose(predictive_entropy(s).numpy(), h_pred, rtol=1e-12)
    np.testing.assert_allclose(expected_entropy(s).numpy(), h_exp, rtol=1e-12)
    np.testing.assert_allclose(mutual_information(s).numpy(), h_pred - h_exp, rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(entropy(torch.tensor(pbar)).numpy(), stats.entropy(pbar, axis=-1), rtol=1e-12)
    assert (mutual_information(s) >= 0).all()


def test_identical_samples_have_zero_mutual_information_and_zero_log_zero() -> None:
    p = torch.tensor([[1.0, 0.0], [0.5, 0.5]], dtype=torch.float64)
    torch.testing.assert_close(entropy(p), torch.tensor([0.0, np.log(2)], dtype=torch.float64))
    torch.testing.assert_close(mutual_information(p.expand(3, 2, 2)), torch.zeros(2, dtype=torch.float64))


def test_logit_scores_match_numpy() -> None:
    g = torch.Generator().manual_seed(1)
    z = torch.randn(6, 3, generator=g) * 3
    zn = z.double().numpy()
    p = np.exp(zn - zn.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(max_softmax_score(z).numpy(), -p.max(1), rtol=1e-12)
    for t in (1.0, 2.5):
        np.testing.assert_allclose(energy_score(z, t).numpy(), -t * np.log(np.exp(zn / t).sum(1)), rtol=1e-12)


def test_logits_passed_as_probabilities_are_refused() -> None:
    with pytest.raises(UserError, match="softmax"):
        entropy(torch.randn(4, 3))
    with pytest.raises(UserError, match=r"\(S, N, C\)"):
        mutual_information(torch.softmax(torch.randn(4, 3), -1))
    with pytest.raises(UserError, match="temperature"):
        energy_score(torch.randn(4, 3), 0.0)
