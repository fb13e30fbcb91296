"""NT-Xent and InfoNCE: NumPy loops of SimCLR eq. 1 and CPC eq. 4 (cosine similarity / temperature) for values,
NumPy central finite differences for gradients (float64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from loss_helpers import check_grads_fd, np_reduce

from tricklab.losses import InfoNCELoss, NTXentLoss, info_nce, nt_xent


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def np_nt_xent(z1, z2, tau=0.5, reduction="mean"):
    """l(i, j) = -log exp(s_ij / tau) / sum_{k != i} exp(s_ik / tau), for all 2N views i."""
    z = _unit(np.concatenate([z1, z2]))
    n2 = len(z)
    out = np.zeros(n2)
    for i in range(n2):
        j = (i + n2 // 2) % n2
        s = np.array([z[i] @ z[k] / tau for k in range(n2)])
        out[i] = -(s[j] - np.log(sum(np.exp(s[k]) for k in range(n2) if k != i)))
    return np_reduce(out, reduction)


def np_info_nce(q, kp, kn=None, tau=0.1, reduction="mean", normalize=True):
    """-log exp(q.k+ / tau) / (exp(q.k+ / tau) + sum_j exp(q.k-_j / tau)); without kn the negatives are the
    other queries' positive keys."""
    if normalize:
        q, kp = _unit(q), _unit(kp)
        kn = None if kn is None else _unit(kn)
    out = np.zeros(len(q))
    for i in range(len(q)):
        if kn is None:
            negs = [kp[j] for j in range(len(q)) if j != i]
        else:
            negs = list(kn) if kn.ndim == 2 else list(kn[i])
        s = np.array([q[i] @ kp[i]] + [q[i] @ k for k in negs]) / tau
        out[i] = -(s[0] - np.log(np.exp(s).sum()))
    return np_reduce(out, reduction)


def _views(seed=0, n=4, d=5):
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(n, d, generator=g, dtype=torch.float64)
    return z1, z1 + 0.7 * torch.randn(n, d, generator=g, dtype=torch.float64), g


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("tau", [0.1, 0.5, 2.0])
def test_nt_xent_matches_numpy(tau, reduction) -> None:
    z1, z2, _ = _views()
    np.testing.assert_allclose(nt_xent(z1, z2, tau, reduction).numpy(),
                               np_nt_xent(z1.numpy(), z2.numpy(), tau, reduction), rtol=1e-11)


def test_nt_xent_grads_match_numpy_finite_differences() -> None:
    z1, z2, _ = _views(1, n=3, d=4)
    check_grads_fd(lambda a, b: np_nt_xent(a, b, 0.5), lambda a, b: nt_xent(a, b, 0.5), (z1, z2), (0, 1))


@pytest.mark.parametrize("neg_kind", ["none", "shared", "per_query"])
@pytest.mark.parametrize("normalize", [True, False])
def test_info_nce_matches_numpy(neg_kind, normalize) -> None:
    q, kp, g = _views(2)
    kn = {"none": None, "shared": torch.randn(6, 5, generator=g, dtype=torch.float64),
          "per_query": torch.randn(4, 3, 5, generator=g, dtype=torch.float64)}[neg_kind]
    tau = 0.5 if normalize else 5.0
    for reduction in ("mean", "sum", "none"):
        np.testing.assert_allclose(
            info_nce(q, kp, kn, tau, reduction, normalize).numpy(),
            np_info_nce(q.numpy(), kp.numpy(), None if kn is None else kn.numpy(), tau, reduction, normalize),
            rtol=1e-11)
    args = (q, kp) if kn is None else (q, kp, kn)
    check_grads_fd(lambda *a: np_info_nce(*(a if len(a) == 3 else (*a, None)), tau=tau, normalize=normalize),
                   lambda *a: info_nce(*(a if len(a) == 3 else (*a, None)), temperature=tau, normalize=normalize),
                   args, tuple(range(len(args))))


def test_matching_views_give_lower_loss_than_random_ones() -> None:
    """Sanity of the objective: identical views (cosine 1 with the positive) score lower than unrelated ones."""
    z1, _, g = _views(3, n=8)
    assert nt_xent(z1, z1.clone(), 0.2) < nt_xent(z1, torch.randn(8, 5, generator=g, dtype=torch.float64), 0.2)


def test_modules_and_bad_inputs() -> None:
    z1, z2, _ = _views(4)
    torch.testing.assert_close(NTXentLoss(0.3, "sum")(z1, z2), nt_xent(z1, z2, 0.3, "sum"))
    torch.testing.assert_close(InfoNCELoss(0.2)(z1, z2), info_nce(z1, z2, temperature=0.2))
    with pytest.raises(ValueError, match="temperature"):
        nt_xent(z1, z2, 0.0)
    with pytest.raises(ValueError, match="equal shapes"):
        nt_xent(z1, z2[:3])
    with pytest.raises(ValueError, match="negative_keys"):
        info_nce(z1, z2, torch.randn(6, 4, dtype=torch.float64))
    with pytest.raises(TypeError, match="floating-point"):
        info_nce(z1.long(), z2)
