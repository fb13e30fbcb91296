"""``fashion-mnist-rot40`` and the split by group.

References: ``numpy.rot90`` (counter-clockwise quarter turns of the last two axes) for every turned image; the label
rule ``garment + 10 k`` recomputed from which of the four numpy rotations matches; set algebra for the split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tricklab.data import load_dataset
from tricklab.data.datasets.fashion_rotations import rotate_classes
from tricklab.data.low_label import group_class_split
from tricklab.errors import DataError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def test_rotations_match_numpy_and_labels_follow_the_turn() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 6, 6, generator=g)
    y = torch.randint(0, 10, (64,), generator=g)
    xr, yr = rotate_classes(x, y, torch.Generator().manual_seed(5))
    assert set(torch.div(yr, 10, rounding_mode="floor").tolist()) == {0, 1, 2, 3}  # all four turns occur
    for i in range(64):
        k = int(yr[i]) // 10
        assert int(yr[i]) % 10 == int(y[i])
        np.testing.assert_array_equal(xr[i].numpy(), np.rot90(x[i].numpy(), k, axes=(1, 2)))
    xr2, yr2 = rotate_classes(x, y, torch.Generator().manual_seed(5))
    assert torch.equal(xr, xr2) and torch.equal(yr, yr2)  # seeded
    with pytest.raises(DataError, match="square"):
        rotate_classes(torch.rand(2, 1, 4, 5), torch.zeros(2, dtype=torch.long), g)


def test_group_split_keeps_each_group_on_one_side() -> None:
    groups = [c % 10 for c in range(40)]
    train, test = group_class_split(groups, 5, seed=0)
    assert len(train) == len(test) == 20 and sorted(train + test) == list(range(40))
    assert {groups[c] for c in train}.isdisjoint({groups[c] for c in test})
    assert group_class_split(groups, 5, seed=0) == (train, test)
    with pytest.raises(DataError, match="num_train"):
        group_class_split(groups, 10, seed=0)
    with pytest.raises(DataError, match="numbered"):
        group_class_split([0, 2, 2], 1, seed=0)


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason=f"{FASHION_DIR} absent (apt-get install dataset-fashion-mnist)")
def test_real_rot40_has_forty_classes_and_the_same_images() -> None:
    base, ds = load_dataset("fashion-mnist"), load_dataset("fashion-mnist-rot40")
    assert ds.num_classes == 40 and ds.x_train.shape == base.x_train.shape
    counts = torch.bincount(ds.y_train, minlength=40)
    assert int(counts.min()) > 1300 and torch.equal(ds.y_train % 10, base.y_train)
    k = ds.y_test // 10
    for q in range(4):  # every test image is its original turned by k quarter turns
        idx = (k == q).nonzero().flatten()[:5]
        torch.testing.assert_close(ds.x_test[idx], torch.rot90(base.x_test[idx], q, dims=(-2, -1)), rtol=0, atol=0)
    assert ds.meta["class_group"] == [c % 10 for c in range(40)]
