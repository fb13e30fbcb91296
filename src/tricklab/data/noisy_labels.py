"""Noisy-label views of a data set: flip an exact fraction of the training labels, reproducibly from a seed.

Two kinds, as in the label-noise literature (e.g. Han et al. 2018, "Co-teaching", section 4; Patrini et al.
2017):

* **symmetric**: ``round(fraction * N)`` examples, chosen uniformly without replacement, each get a label drawn
  uniformly from the *other* C - 1 classes (transition matrix ``T = (1 - e) I + e / (C - 1) (11^T - I)``).
* **class-dependent**: class c flips a fraction ``e_c`` of its examples (one fraction for all classes, or one per
  class), to ``mapping[c]`` (default: the next class, ``c -> c + 1 mod C``, Han et al.'s *pair flipping*) or to a
  class drawn from row c of a transition matrix (diagonal ignored). The per-class counts are apportioned by
  largest remainders, so every class flips ``floor`` or ``ceil`` of ``e_c n_c`` and, with one fraction for all
  classes, the total is exactly ``round(e N)``.

"Exact" means the number of changed labels is the stated one: a flip never keeps its class. All draws come from a
private ``torch.Generator`` seeded with ``seed`` (the global RNG is untouched). Only training labels change; the
validation and test sets stay clean.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from tricklab.data.base import ArrayDataset
from tricklab.errors import DataError

__all__ = ["NoisyLabels", "class_dependent_noise", "symmetric_noise", "with_noisy_labels"]


@dataclass(frozen=True)
class NoisyLabels:
    """Noisy labels (N,) int64, the mask of flipped examples (N,) bool, and what was done."""

    labels: Tensor
    flipped: Tensor
    kind: str
    requested: float | tuple[float, ...]
    seed: int

    @property
    def num_flipped(self) -> int:
        return int(self.flipped.sum())

    @property
    def fraction(self) -> float:
        """Flipped fraction actually applied: num_flipped / N."""
        return self.num_flipped / max(1, self.flipped.numel())

    def describe(self) -> dict[str, object]:
        return {"kind": self.kind, "requested": self.requested, "seed": self.seed,
                "num_flipped": self.num_flipped, "fraction": self.fraction}


def _check(labels: Tensor, num_classes: int) -> Tensor:
    if not isinstance(labels, Tensor) or labels.ndim != 1 or labels.dtype.is_floating_point:
        raise DataError(f"labels must be a 1-D integer tensor of class indices, got "
                        f"{getattr(labels, 'shape', type(labels).__name__)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise DataError(f"num_classes must be an int >= 2 (a label can only flip to another class), got "
                        f"{num_classes!r}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise DataError(f"labels must lie in [0, {num_classes - 1}], got [{int(labels.min())}, {int(labels.max())}]")
    return labels.long().cpu()


def _fraction(name: str, f: object) -> float:
    if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0.0 <= float(f) <= 1.0 or math.isnan(f):
        raise DataError(f"{name} must be a fraction in [0, 1], got {f!r}")
    return float(f)


def _seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise DataError(f"seed must be an int, got {seed!r}")
    return seed


def symmetric_noise(labels: Tensor, fraction: float, num_classes: int, seed: int = 0) -> NoisyLabels:
    """Flip exactly ``round(fraction * N)`` labels, each to a uniformly drawn different class."""
    y = _check(labels, num_classes)
    fraction, seed = _fraction("fraction", fraction), _seed(seed)
    g = torch.Generator().manual_seed(seed)
    n = y.numel()
    k = round(fraction * n)
    idx = torch.randperm(n, generator=g)[:k]
    # y + U{1..C-1} mod C is uniform over the C - 1 other classes
    shift = torch.randint(1, num_classes, (k,), generator=g)
    noisy = y.clone()
    noisy[idx] = (y[idx] + shift) % num_classes
    flipped = torch.zeros(n, dtype=torch.bool)
    flipped[idx] = True
    return NoisyLabels(noisy, flipped, "symmetric", fraction, seed)


def _apportion(targets: list[float], total: int | None) -> list[int]:
    """Integers within 1 of each target (floor or ceil); with ``total``, summing exactly to it (largest
    remainders, ties to the lower class index)."""
    floors = [math.floor(t + 1e-9) for t in targets]
    if total is None:
        return [round(t) for t in targets]
    left = total - sum(floors)
    order = sorted(range(len(targets)), key=lambda i: (-(targets[i] - floors[i]), i))
    for i in order[: max(0, left)]:
        floors[i] += 1
    return floors


def class_dependent_noise(labels: Tensor, fraction: float | Sequence[float], num_classes: int, seed: int = 0,
                          mapping: Sequence[int] | None = None,
                          transition: Tensor | Sequence[Sequence[float]] | None = None) -> NoisyLabels:
    """Flip, in each class c, the apportioned count of ``fraction[c] * n_c`` examples (see module docs) to
    ``mapping[c]`` (default ``(c + 1) % C``) or, with ``transition`` (C, C), to a class drawn from row c's
    off-diagonal entries."""
    y = _check(labels, num_classes)
    seed = _seed(seed)
    c = num_classes
    if isinstance(fraction, (int, float)) and not isinstance(fraction, bool):
        fracs = [_fraction("fraction", fraction)] * c
        single = True
    else:
        fracs = [_fraction(f"fraction[{i}]", f) for i, f in enumerate(fraction)]
        if len(fracs) != c:
            raise DataError(f"class-dependent noise needs one fraction per class ({c}), got {len(fracs)}")
        single = False
    if mapping is not None and transition is not None:
        raise DataError("give either mapping (a fixed target class per class) or transition (a matrix), not both")
    if mapping is None and transition is None:
        mapping = [(i + 1) % c for i in range(c)]
    if mapping is not None:
        mapping = [int(m) for m in mapping]
        if len(mapping) != c or any(not 0 <= m < c for m in mapping):
            raise DataError(f"mapping must give a class in [0, {c - 1}] for each of the {c} classes, got {mapping}")
        bad = [i for i, m in enumerate(mapping) if m == i and fracs[i] > 0]
        if bad:
            raise DataError(f"mapping sends class(es) {bad} to themselves: a flip must change the label")
        off = None
    else:
        t = torch.as_tensor(transition, dtype=torch.float64)
        if t.shape != (c, c) or (t < 0).any():
            raise DataError(f"transition must be a non-negative ({c}, {c}) matrix, got shape {tuple(t.shape)}")
        off = t * (1 - torch.eye(c, dtype=torch.float64))
        empty = [i for i in range(c) if fracs[i] > 0 and float(off[i].sum()) == 0]
        if empty:
            raise DataError(f"transition rows {empty} have no off-diagonal mass: those classes cannot flip")
    counts_c = torch.bincount(y, minlength=c).tolist()
    targets = [fracs[i] * counts_c[i] for i in range(c)]
    flips = _apportion(targets, round(fracs[0] * y.numel()) if single else None)
    flips = [min(f, counts_c[i]) for i, f in enumerate(flips)]
    g = torch.Generator().manual_seed(seed)
    noisy = y.clone()
    flipped = torch.zeros(y.numel(), dtype=torch.bool)
    for cls in range(c):
        members = torch.nonzero(y == cls).reshape(-1)
        chosen = members[torch.randperm(members.numel(), generator=g)[: flips[cls]]]
        if chosen.numel() == 0:
            continue
        if off is None:
            noisy[chosen] = mapping[cls]  # type: ignore[index]
        else:
            noisy[chosen] = torch.multinomial(off[cls], chosen.numel(), replacement=True, generator=g)
        flipped[chosen] = True
    requested: float | tuple[float, ...] = fracs[0] if single else tuple(fracs)
    return NoisyLabels(noisy, flipped, "class_dependent", requested, seed)


def with_noisy_labels(ds: ArrayDataset, kind: str, fraction: float | Sequence[float], seed: int = 0,
                      **kwargs: object) -> tuple[ArrayDataset, NoisyLabels]:
    """A copy of ``ds`` whose training labels carry ``kind`` noise ("symmetric" or "class_dependent"), and the
    :class:`NoisyLabels` record (flip mask included, to measure how a method treats the flipped examples)."""
    if kind == "symmetric":
        if kwargs:
            raise DataError(f"symmetric noise takes no options, got {sorted(kwargs)}")
        if not isinstance(fraction, (int, float)):
            raise DataError("symmetric noise takes one fraction for all classes")
        noise = symmetric_noise(ds.y_train, fraction, ds.num_classes, seed)
    elif kind == "class_dependent":
        noise = class_dependent_noise(ds.y_train, fraction, ds.num_classes, seed, **kwargs)  # type: ignore[arg-type]
    else:
        raise DataError(f"unknown label-noise kind {kind!r}; choose 'symmetric' or 'class_dependent'")
    meta = dict(ds.meta, label_noise=noise.describe())
    return dataclasses.replace(ds, y_train=noise.labels.to(ds.y_train.device), meta=meta), noise
