"""Improved precision and recall of a generative model (Kynkaenniemi et al., 2019), computed in the feature space
the caller chooses (for our GAN: the penultimate features of our own Fashion-MNIST classifier, so the numbers are
"classifier-based precision/recall (ours)", comparable between our runs only).

Each set of feature vectors ``Phi`` (N, F) stands for a manifold: the union of balls centred at each vector with
radius the distance to its k-th nearest neighbour inside the same set (the vector itself excluded),

    f(phi, Phi) = 1  if  ||phi - phi'|| <= ||phi' - NN_k(phi', Phi)||  for at least one phi' in Phi, else 0

(the paper's eq. 1). Then

    precision = mean over generated phi_g of f(phi_g, Phi_real)   (how many samples look real)
    recall    = mean over real phi_r of f(phi_r, Phi_gen)         (how much of the real data the samples cover)

The paper uses k = 3. Distances are computed in chunks of rows so memory stays O(chunk x N).
"""

from __future__ import annotations

import torch
from torch import Tensor

from tricklab.errors import ConfigError

__all__ = ["knn_radii", "manifold_coverage", "precision_recall"]


def _check_features(name: str, x: Tensor) -> None:
    if x.dim() != 2:
        raise ConfigError(f"{name} must be (N, F) feature vectors, got shape {tuple(x.shape)}")


def knn_radii(features: Tensor, k: int = 3, chunk: int = 1024) -> Tensor:
    """Distance from each row of ``features`` (N, F) to its k-th nearest other row, shape (N,)."""
    _check_features("features", features)
    n = features.shape[0]
    if not 1 <= k < n:
        raise ConfigError(f"k must be in 1..N-1 = 1..{n - 1} for {n} feature vectors, got {k}; "
                          "pass more vectors or a smaller k")
    x = features.double()
    out = []
    for i in range(0, n, chunk):
        d = torch.cdist(x[i : i + chunk], x)  # (c, N); the row's own distance 0 is the 1st smallest
        out.append(d.kthvalue(k + 1, dim=1).values)
    return torch.cat(out)


def manifold_coverage(queries: Tensor, support: Tensor, k: int = 3, chunk: int = 1024) -> float:
    """Fraction of ``queries`` (M, F) inside the k-NN manifold of ``support`` (N, F) (eq. 1 averaged)."""
    _check_features("queries", queries)
    _check_features("support", support)
    if queries.shape[1] != support.shape[1]:
        raise ConfigError(f"queries have {queries.shape[1]} features and support {support.shape[1]}: "
                          "both must come from the same feature extractor")
    radii = knn_radii(support, k, chunk)  # (N,)
    q, s = queries.double(), support.double()
    inside = 0
    for i in range(0, q.shape[0], chunk):
        d = torch.cdist(q[i : i + chunk], s)  # (c, N)
        inside += int((d <= radii[None, :]).any(dim=1).sum())
    return inside / q.shape[0]


def precision_recall(real: Tensor, fake: Tensor, k: int = 3) -> tuple[float, float]:
    """(precision, recall) of generated features ``fake`` against real features ``real``, both (N, F)."""
    return manifold_coverage(fake, real, k), manifold_coverage(real, fake, k)
