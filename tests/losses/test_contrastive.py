"""Contrastive and triplet losses. References: the NumPy closed form of Hadsell et al. (2006) eq. 4; a NumPy
brute-force loop for batch-hard mining (Hermans et al. 2017); torch's nn.TripletMarginLoss on the mined
triplets; NumPy central finite differences for gradients (float64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from loss_helpers import autograd, check_grads_fd, np_reduce

from tricklab.losses import BatchHardTripletLoss, ContrastiveLoss, TripletLoss
from tricklab.losses import batch_hard_mine, batch_hard_triplet_loss, contrastive_loss, triplet_margin_loss


def np_contrastive(x1, x2, y, margin=1.0, similar_label=0, reduction="mean"):
    """(1 - Y) D^2 / 2 + Y max(0, m - D)^2 / 2 with Y = 1 for dissimilar pairs (the paper's convention)."""
    d = np.sqrt(((x1 - x2) ** 2).sum(1))
    dissimilar = (y != similar_label).astype(np.float64)
    return np_reduce((1 - dissimilar) * 0.5 * d**2 + dissimilar * 0.5 * np.maximum(0, margin - d) ** 2, reduction)


def np_batch_hard(e, labels, margin=1.0, soft=False, squared=False, reduction="mean"):
    """Brute force: for each anchor loop over every other sample, keep the farthest positive and the closest
    negative; anchors lacking either are skipped (0 under "none", left out of the mean)."""
    n = len(labels)
    out, valid = np.zeros(n), np.zeros(n, bool)
    for a in range(n):
        hp, hn = -np.inf, np.inf
        for j in range(n):
            d = ((e[a] - e[j]) ** 2).sum()
            d = d if squared else np.sqrt(d)
            if j != a and labels[j] == labels[a]:
                hp = max(hp, d)
            elif labels[j] != labels[a]:
                hn = min(hn, d)
        if np.isfinite(hp) and np.isfinite(hn):
            valid[a] = True
            out[a] = np.log1p(np.exp(hp - hn)) if soft else max(0.0, hp - hn + margin)
    if reduction == "mean":
        return float(out.sum() / valid.sum())
    return np_reduce(out, reduction)


def _pairs(seed=0, n=6, d=3):
    g = torch.Generator().manual_seed(seed)
    x1 = torch.randn(n, d, generator=g, dtype=torch.float64) * 0.6
    x2 = torch.randn(n, d, generator=g, dtype=torch.float64) * 0.6
    return x1, x2, torch.tensor([0, 1] * (n // 2))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("similar_label", [0, 1])
def test_contrastive_matches_numpy(similar_label, reduction) -> None:
    x1, x2, y = _pairs()
    got = contrastive_loss(x1, x2, y, 1.5, similar_label, reduction)
    np.testing.assert_allclose(got.numpy(), np_contrastive(x1.numpy(), x2.numpy(), y.numpy(), 1.5, similar_label,
                                                           reduction), rtol=1e-12)
    check_grads_fd(lambda a, b, yy: np_contrastive(a, b, yy, 1.5, similar_label),
                   lambda a, b, yy: contrastive_loss(a, b, yy, 1.5, similar_label), (x1, x2, y), (0, 1))


def test_the_two_label_conventions_are_mirror_images() -> None:
    """similar_label=1 on labels y equals the paper's convention (similar_label=0) on 1 - y; bool labels too."""
    x1, x2, y = _pairs(1)
    torch.testing.assert_close(contrastive_loss(x1, x2, y, similar_label=1), contrastive_loss(x1, x2, 1 - y))
    torch.testing.assert_close(contrastive_loss(x1, x2, y.bool()), contrastive_loss(x1, x2, y.double()))


def test_contrastive_gradient_finite_for_identical_embeddings() -> None:
    """D = 0 for a dissimilar pair: the push term's gradient is -(m - D) dD/dx, undefined at 0 but must not be
    NaN; for a similar pair the gradient (x1 - x2) is exactly 0 (closed form)."""
    x = torch.ones(2, 3, dtype=torch.float64)
    _, (g,) = autograd(lambda a: contrastive_loss(a, x, torch.tensor([1, 0])), (x,), (0,))
    assert torch.isfinite(g).all() and torch.equal(g[1], torch.zeros(3, dtype=torch.float64))


def _embeddings(seed=0, n=10, d=4):
    g = torch.Generator().manual_seed(seed)
    e = torch.randn(n, d, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3, 3, 3])[:n]
    return e, labels


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("soft,squared", [(False, False), (True, False), (False, True)])
def test_batch_hard_matches_numpy_brute_force(soft, squared, reduction) -> None:
    e, labels = _embeddings()
    got = batch_hard_triplet_loss(e, labels, 1.0, soft, squared, reduction)
    ref = np_batch_hard(e.numpy(), labels.numpy(), 1.0, soft, squared, reduction)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12)
    check_grads_fd(lambda ee, ll: np_batch_hard(ee, ll, 1.0, soft, squared),
                   lambda ee, ll: batch_hard_triplet_loss(ee, ll, 1.0, soft, squared), (e, labels), (0,))


def test_batch_hard_equals_torch_triplet_margin_loss_on_the_mined_triplets() -> None:
    """Reference: nn.TripletMarginLoss (eps=0 so its distance is the plain Euclidean one) applied to
    (e, e[hardest positive], e[hardest negative]); values and gradients."""
    e, labels = _embeddings(1)
    pos, neg, valid = batch_hard_mine(e, labels)
    assert valid.all()
    ours, (g_ours,) = autograd(lambda x: batch_hard_triplet_loss(x, labels, margin=0.7), (e,), (0,))
    ref_fn = torch.nn.TripletMarginLoss(margin=0.7, eps=0.0)
    ref, (g_ref,) = autograd(lambda x: ref_fn(x, x[pos], x[neg]), (e,), (0,))
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-12, atol=1e-12)
    assert triplet_margin_loss is F.triplet_margin_loss  # the given-triplet form is torch's own
    torch.testing.assert_close(TripletLoss(margin=0.7, eps=0.0)(e, e[pos], e[neg]), ref)


def test_batch_hard_skips_anchors_without_positive_or_negative() -> None:
    e, _ = _embeddings(2, n=5)
    labels = torch.tensor([0, 0, 1, 1, 2])  # anchor 4 has no positive
    none = batch_hard_triplet_loss(e, labels, reduction="none")
    assert none[4] == 0
    ref = np_batch_hard(e.numpy(), labels.numpy())
    assert float(batch_hard_triplet_loss(e, labels)) == pytest.approx(ref, rel=1e-12)
    assert float(batch_hard_triplet_loss(e, labels)) == pytest.approx(float(none[:4].mean()), rel=1e-12)
    with pytest.raises(ValueError, match="P x K"):
        batch_hard_triplet_loss(e, torch.arange(5))
    with pytest.raises(ValueError, match="P x K"):
        batch_hard_triplet_loss(e, torch.zeros(5, dtype=torch.long))


def test_batch_hard_gradient_finite_for_duplicate_embeddings() -> None:
    e = torch.tensor([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    _, (g,) = autograd(lambda x: batch_hard_triplet_loss(x, torch.tensor([0, 0, 1, 1]), margin=2.0), (e,), (0,))
    assert torch.isfinite(g).all()


def test_modules_and_bad_inputs() -> None:
    x1, x2, y = _pairs(3)
    torch.testing.assert_close(ContrastiveLoss(2.0, 1, "sum")(x1, x2, y), contrastive_loss(x1, x2, y, 2.0, 1, "sum"))
    e, labels = _embeddings(3)
    torch.testing.assert_close(BatchHardTripletLoss(0.3, soft=True)(e, labels),
                               batch_hard_triplet_loss(e, labels, 0.3, soft=True))
    with pytest.raises(ValueError, match="0 or 1"):
        contrastive_loss(x1, x2, y + 2)
    with pytest.raises(ValueError, match="similar_label"):
        ContrastiveLoss(similar_label=2)
    with pytest.raises(ValueError, match="margin"):
        contrastive_loss(x1, x2, y, margin=-1.0)
    with pytest.raises(ValueError, match="equal shapes"):
        contrastive_loss(x1, x2[:, :2], y)
    with pytest.raises(ValueError, match="integer"):
        batch_hard_triplet_loss(e, labels.double())
