"""Cutout technique: replays the functional core with its own generator, default sizes for MNIST-1D and
Fashion-MNIST shapes, order against other augmenters, training-only application and exact resume.

References: tricklab.data.augment.cutout (checked against a slow NumPy loop that zeroes each box in
tests/data/test_augment.py), replayed with a generator seeded like the technique's.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from augment_helpers import check_eval_untouched, check_resume_is_exact, check_state_dict, fit

from tricklab.data import augment as A
from tricklab.techniques.cutout import Cutout
from tricklab.techniques.mixup import Mixup
from tricklab.techniques.random_flip import RandomFlip
from tricklab.train import plan

# ------------------------------------------------------------------------------------------------ tests
def test_declarations_and_order() -> None:
    t = Cutout()
    assert (t.name, t.size, t.prob, t.fill) == ("cutout", None, 1.0, 0.0)
    assert t.writes == {"batch.inputs.erased"} and set(t.handled_events()) == {"batch_start"}
    # geometric transforms first, then cutout, then batch mixing (whatever the list order)
    p = plan([Mixup(num_classes=3), t, RandomFlip()])
    assert [p.names[i] for i in p.order["batch_start"]] == ["random_flip", "cutout", "mixup"]


@pytest.mark.parametrize("shape,size,side", [((24, 40), None, 10), ((24, 1, 28, 28), None, 7), ((24, 40), 0.5, 20),
                                             ((24, 2, 8, 8), 3, 3)])
def test_batches_equal_the_functional_core_replayed(shape: tuple[int, ...], size: int | float | None,
                                                    side: int) -> None:
    """Default size: CUTOUT_FRACTION (0.25) of each side, 10 of 40 and 7x7 of 28x28."""
    t = Cutout(size=size, prob=0.8, seed=4)
    _, probe = fit(t, 6, shape)
    g = torch.Generator().manual_seed(4)
    for (x, y), (rx, ry) in zip(probe.seen, probe.raw):
        assert torch.equal(x, A.cutout(rx, g, size, p=0.8)) and torch.equal(y, ry)
        zeros = (x == 0).flatten(1).sum(1) // (shape[1] if len(shape) == 4 else 1)
        d = 2 if len(shape) == 4 else 1
        assert zeros.max() == side**d  # some box falls fully inside; none is larger


def test_prob_zero_is_identity() -> None:
    _, probe = fit(Cutout(prob=0.0), 3)
    assert all(torch.equal(x, rx) for (x, _), (rx, _) in zip(probe.seen, probe.raw))


def test_only_in_training() -> None:
    check_eval_untouched(lambda: Cutout(), (24, 1, 8, 8))


def test_resume_is_exact(tmp_path: Path) -> None:
    check_resume_is_exact(lambda: Cutout(prob=0.6), tmp_path, (24, 40))


def test_state_dict_round_trip() -> None:
    check_state_dict(lambda: Cutout())


@pytest.mark.parametrize("kwargs,err", [({"size": 0}, ValueError), ({"size": 1.5}, ValueError),
                                        ({"size": True}, TypeError), ({"prob": 2.0}, ValueError),
                                        ({"fill": "x"}, TypeError), ({"spatial_dims": 3}, ValueError)])
def test_invalid_args(kwargs: dict, err: type[Exception]) -> None:
    with pytest.raises(err):
        Cutout(**kwargs)
