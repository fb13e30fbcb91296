"""Continual-learning metrics from the accuracy matrix R (T x T): R[i][j] is the test accuracy on task j after
training on tasks 0..i.

* average accuracy after task i (Chaudhry et al., 2018): A_i = mean_{j<=i} R[i][j]; the final one is A_{T-1};
* forgetting (Chaudhry et al., 2018, eq. 4): f_j = max_{l<T-1} R[l][j] - R[T-1][j], averaged over j < T-1;
* backward transfer (Lopez-Paz & Ranzato, 2017): BWT = mean_{j<T-1} R[T-1][j] - R[j][j].
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["average_accuracy", "forgetting", "backward_transfer"]


def _check(r: Sequence[Sequence[float]]) -> int:
    t = len(r)
    if t == 0 or any(len(row) != t for row in r):
        raise ValueError(f"the accuracy matrix must be square T x T with T >= 1, got {[len(row) for row in r]}")
    return t


def average_accuracy(r: Sequence[Sequence[float]], after: int | None = None) -> float:
    t = _check(r)
    i = t - 1 if after is None else after
    return sum(r[i][: i + 1]) / (i + 1)


def forgetting(r: Sequence[Sequence[float]]) -> float:
    t = _check(r)
    if t < 2:
        return 0.0
    return sum(max(r[lo][j] for lo in range(t - 1)) - r[t - 1][j] for j in range(t - 1)) / (t - 1)


def backward_transfer(r: Sequence[Sequence[float]]) -> float:
    t = _check(r)
    if t < 2:
        return 0.0
    return sum(r[t - 1][j] - r[j][j] for j in range(t - 1)) / (t - 1)
