"""Train/validation/test splits: the user's own files, or seeded splits carved out of one source.

A carved split takes ``ceil(fraction * n)`` items of the whole source (the rounding the scikit-learn sets of
this project use). For class targets the cut is stratified: each class gives its share ``fraction * n_c``,
rounded down, and the items still owed go to the classes with the largest remainders (largest-remainder
apportionment), never taking a class's last training item. Regression and multi-label targets are cut at
random. Either way the draw is ``numpy.random.default_rng(seed)`` (PCG64, stable across NumPy versions) and
every part keeps the source's item order.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tricklab.data.files.common import Part
from tricklab.errors import ConfigError, DataError

__all__ = ["assign_splits", "carve", "label_codes", "stratified_take"]

DEFAULT_TEST_FRACTION = 0.2


def label_codes(y: Any) -> np.ndarray:
    """Integer codes of 1-D label values (any hashable values), in order of first appearance."""
    seen: dict[Any, int] = {}
    return np.array([seen.setdefault(v, len(seen)) for v in np.asarray(y, dtype=object).tolist()], dtype=np.int64)


def stratified_take(codes: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``k`` items drawn so each class gives its proportional share (largest remainder)."""
    n = len(codes)
    classes, counts = np.unique(codes, return_counts=True)
    quota = k * counts / n
    take = np.floor(quota).astype(np.int64)
    room = counts - 1  # keep at least one item of every class on the training side
    take = np.minimum(take, room)
    owed = k - int(take.sum())
    order = np.lexsort((np.arange(len(classes)), -(quota - np.floor(quota))))  # largest remainder first
    while owed > 0:
        moved = False
        for j in order:
            if owed == 0:
                break
            if take[j] < room[j]:
                take[j] += 1
                owed -= 1
                moved = True
        if not moved:
            break  # every class is down to one item: take no more
    # items of each class, in source order, without one pass over all items per class
    members = np.split(np.argsort(codes, kind="stable"), np.cumsum(counts)[:-1])
    chosen = [rng.permutation(m)[:t] for m, t in zip(members, take) if t > 0]
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def carve(part: Part, k: int, codes: np.ndarray | None, rng: np.random.Generator) -> tuple[Part, Part, np.ndarray]:
    """Split ``part`` into (rest, taken) with ``k`` items taken; returns the taken indices too."""
    n = len(part)
    if codes is not None:
        taken = stratified_take(codes, k, rng)
    else:
        taken = np.sort(rng.permutation(n)[:k])
    mask = np.ones(n, dtype=bool)
    mask[taken] = False
    return part.take(np.flatnonzero(mask)), part.take(taken), taken


def assign_splits(sources: dict[str, Part], stratify_by: Any | None, opts: dict[str, Any],
                  stratify: bool) -> tuple[dict[str, Part], dict[str, Any]]:
    """Turn the parts a reader found into train/val/test parts, carving what no file gave.

    ``stratify_by(part) -> codes`` gives per-item class codes for a stratified cut (None: random cut).
    Returns the parts and the split record for ``meta["split"]``.
    """
    test_f, val_f = opts.get("test_fraction"), opts.get("val_fraction")
    if "test" in sources and test_f is not None:
        raise ConfigError("data.test_fraction is set but a test file is given: the test split is that file; "
                          "drop test_fraction")
    if "val" in sources and val_f is not None:
        raise ConfigError("data.val_fraction is set but a val file is given: the validation split is that file; "
                          "drop val_fraction")
    if "test" not in sources and test_f == 0.0:
        raise ConfigError("data.test_fraction is 0 and no test file is given: every data set needs a test split")
    pool = sources["all"] if "all" in sources else sources["train"]
    n = len(pool)
    carve_test = "test" not in sources
    carve_val = "val" not in sources and bool(val_f)
    test_f = DEFAULT_TEST_FRACTION if test_f is None else test_f
    out = {role: p for role, p in sources.items() if role != "all"}
    record: dict[str, Any] = {"seed": int(opts["seed"]), "sources": {}}
    rows: dict[str, list[int]] = {}
    if carve_test or carve_val:
        cut = (test_f if carve_test else 0.0) + (val_f if carve_val else 0.0)
        k_test = max(1, math.ceil(test_f * n)) if carve_test else 0
        k_val = max(1, math.ceil(val_f * n)) if carve_val else 0
        if k_test + k_val >= n or cut >= 1.0:
            raise DataError(f"{pool.file}: {n} item(s) cannot give a test split of {k_test} and a validation "
                            f"split of {k_val} with any left to train on; lower the fractions or add data")
        codes = stratify_by(pool) if (stratify and stratify_by is not None) else None
        rng = np.random.default_rng(int(opts["seed"]))
        rest, rest_idx = pool, np.arange(n)
        for role, k in (("test", k_test), ("val", k_val)):
            if k == 0:
                continue
            rest, taken, idx = carve(rest, k, None if codes is None else codes[rest_idx], rng)
            if len(taken) == 0:
                raise DataError(f"{pool.file}: a stratified {role} split found no class with an item to spare "
                                "(each class has a single item left for training); set stratify: false or add "
                                "data")
            out[role] = taken
            rows[role] = pool.rows[rest_idx[idx]].tolist()
            keep = np.ones(len(rest_idx), dtype=bool)
            keep[idx] = False
            rest_idx = rest_idx[keep]
        out["train"] = rest
        rows["train"] = pool.rows[rest_idx].tolist()
        record["method"] = "stratified" if codes is not None else "random"
        record["test_fraction"] = test_f if carve_test else None
        record["val_fraction"] = val_f if carve_val else None
        record["carved"] = [r for r in ("test", "val") if r in rows]
        record["rows"] = rows
    else:
        record["method"] = "files"
    for role in ("train", "val", "test"):
        if role in out:
            record["sources"][role] = out[role].file
    record["sizes"] = {role: len(out[role]) for role in ("train", "val", "test") if role in out}
    if record["method"] == "files":
        record["test_fraction"] = record["val_fraction"] = None
    return out, record
