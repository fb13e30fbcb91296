"""Knowledge distillation: NumPy closed form alpha T^2 sum_c p_c log(p_c / q_c) + (1 - alpha) CE (Hinton et al.
2015) for values and its analytic gradient alpha T (q - p) + (1 - alpha)(softmax(s) - y) per sample; torch's
F.kl_div(reduction="batchmean") for the soft term; the paper's high-temperature limit for the T^2 scaling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from loss_helpers import autograd, np_log_softmax, np_reduce, np_softmax

from tricklab.losses import DistillationLoss, distillation_loss


def np_distill(s, t, y, temperature, alpha, reduction="mean"):
    """Value and d(mean loss)/ds. The soft term's gradient is alpha T^2 * (1/T)(q - p) = alpha T (q - p) with
    q = softmax(s/T), p = softmax(t/T) (Hinton et al. section 2.1)."""
    n, c = s.shape
    logq, logp = np_log_softmax(s / temperature), np_log_softmax(t / temperature)
    kl = (np.exp(logp) * (logp - logq)).sum(1)
    onehot = np.eye(c)[y]
    ce = -(onehot * np_log_softmax(s)).sum(1)
    loss = alpha * temperature**2 * kl + (1 - alpha) * ce
    grad = (alpha * temperature * (np.exp(logq) - np.exp(logp)) + (1 - alpha) * (np_softmax(s) - onehot)) / n
    return np_reduce(loss, reduction), grad


def _logits(seed=0, n=5, c=4):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, c, generator=g, dtype=torch.float64) * 2
    t = torch.randn(n, c, generator=g, dtype=torch.float64) * 3
    return s, t, t.argmax(1)


@pytest.mark.parametrize("temperature,alpha", [(1.0, 0.5), (4.0, 0.9), (10.0, 1.0), (2.0, 0.0)])
def test_values_and_grads_match_numpy(temperature, alpha) -> None:
    s, t, y = _logits()
    for reduction in ("mean", "sum", "none"):
        ref, _ = np_distill(s.numpy(), t.numpy(), y.numpy(), temperature, alpha, reduction)
        np.testing.assert_allclose(distillation_loss(s, t, y, temperature, alpha, reduction).numpy(), ref,
                                   rtol=1e-12, atol=1e-14)
    _, (gs, gt) = autograd(lambda a, b: distillation_loss(a, b, y, temperature, alpha), (s, t), (0, 1))
    np.testing.assert_allclose(gs.numpy(), np_distill(s.numpy(), t.numpy(), y.numpy(), temperature, alpha)[1],
                               rtol=1e-10, atol=1e-14)
    assert torch.equal(gt, torch.zeros_like(gt))  # the teacher is a fixed target


def test_soft_term_equals_torch_kl_div_batchmean() -> None:
    """Reference: T^2 * F.kl_div(log_softmax(s/T), softmax(t/T), reduction="batchmean")."""
    s, t, _ = _logits(1)
    T = 3.0
    ref = T * T * F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1), reduction="batchmean")
    torch.testing.assert_close(distillation_loss(s, t, None, T, alpha=1.0), ref, rtol=1e-13, atol=1e-13)


def test_t_squared_keeps_gradient_magnitude_comparable_across_temperatures() -> None:
    """Hinton et al.: the soft gradient is (1/T)(q - p) ~ (s - t) / (C T^2) for large T and zero-mean logits,
    so without the T^2 factor it shrinks like 1/T^2; with it, it tends to (s - t) / C (per sample)."""
    s, t, _ = _logits(2, n=6, c=5)
    s, t = s - s.mean(1, keepdim=True), t - t.mean(1, keepdim=True)  # zero-mean logits, as the paper assumes
    temps = [4.0, 8.0, 16.0, 32.0]
    with_t2 = []
    for T in temps:
        _, (g,) = autograd(lambda a, T=T: distillation_loss(a, t, None, T, alpha=1.0), (s,), (0,))
        with_t2.append(float(g.norm()))
    without_t2 = [w / T**2 for w, T in zip(with_t2, temps)]
    assert max(with_t2) / min(with_t2) < 1.5  # comparable across an 8x range of T
    assert without_t2[0] / without_t2[-1] > 40  # vs ~64x shrinkage without the scaling
    _, (g_hi,) = autograd(lambda a: distillation_loss(a, t, None, 200.0, alpha=1.0), (s,), (0,))
    limit = (s - t) / (s.shape[1] * s.shape[0])  # (s - t) / C, averaged over the N samples
    torch.testing.assert_close(g_hi, limit, rtol=0.05, atol=1e-3)


def test_module_and_bad_inputs() -> None:
    s, t, y = _logits(3)
    torch.testing.assert_close(DistillationLoss(2.0, 0.3)(s, t, y), distillation_loss(s, t, y, 2.0, 0.3))
    with pytest.raises(ValueError, match="target"):
        distillation_loss(s, t, None, alpha=0.5)
    with pytest.raises(ValueError, match="alpha"):
        DistillationLoss(alpha=1.5)
    with pytest.raises(ValueError, match="temperature"):
        distillation_loss(s, t, y, temperature=0.0)
    with pytest.raises(ValueError, match="match"):
        distillation_loss(s, t[:, :3], y)
