"""Random-flip technique: replays the functional core with its own generator, vertical flips for images,
training-only application and exact resume.

References: tricklab.data.augment.random_flip (checked against np.flip in tests/data/test_augment.py),
replayed with a generator seeded like the technique's; np.flip again for the per-example check here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from augment_helpers import check_eval_untouched, check_resume_is_exact, check_state_dict, fit

from tricklab.data import augment as A
from tricklab.techniques.random_flip import RandomFlip
from tricklab.train import plan

# ------------------------------------------------------------------------------------------------ tests
def test_declarations_and_defaults() -> None:
    t = RandomFlip()
    assert (t.name, t.p, t.vertical) == ("random_flip", 0.5, False)
    assert t.writes == {"batch.inputs.geometric"} and set(t.handled_events()) == {"batch_start"}
    plan([t])


@pytest.mark.parametrize("shape,vertical", [((24, 40), False), ((24, 1, 8, 8), False), ((24, 2, 5, 7), True)])
def test_batches_equal_the_functional_core_replayed(shape: tuple[int, ...], vertical: bool) -> None:
    t = RandomFlip(p=0.5, vertical=vertical, seed=9)
    _, probe = fit(t, 6, shape)
    g = torch.Generator().manual_seed(9)
    for (x, y), (rx, ry) in zip(probe.seen, probe.raw):
        assert torch.equal(x, A.random_flip(rx, g, 0.5, vertical=vertical)) and torch.equal(y, ry)


def test_each_example_is_itself_or_its_reversal() -> None:
    """Reference: np.flip (1-D reversal), both outcomes occur."""
    _, probe = fit(RandomFlip(), 3)
    flipped = kept = 0
    for (x, _), (rx, _) in zip(probe.seen, probe.raw):
        for xi, ri in zip(x.numpy(), rx.numpy()):
            f, k = np.array_equal(xi, np.flip(ri)), np.array_equal(xi, ri)
            assert f or k
            flipped, kept = flipped + f, kept + k
    assert flipped and kept


def test_p_zero_is_identity_and_p_one_flips_all() -> None:
    _, probe = fit(RandomFlip(p=0.0), 2)
    assert all(torch.equal(x, rx) for (x, _), (rx, _) in zip(probe.seen, probe.raw))
    _, probe = fit(RandomFlip(p=1.0), 2)
    assert all(torch.equal(x, rx.flip(-1)) for (x, _), (rx, _) in zip(probe.seen, probe.raw))


def test_only_in_training() -> None:
    check_eval_untouched(lambda: RandomFlip(p=1.0), (24, 1, 8, 8))


def test_resume_is_exact(tmp_path: Path) -> None:
    check_resume_is_exact(lambda: RandomFlip(), tmp_path, (24, 40))


def test_state_dict_round_trip() -> None:
    check_state_dict(lambda: RandomFlip())


@pytest.mark.parametrize("kwargs,err", [({"p": 1.5}, ValueError), ({"vertical": 1}, TypeError),
                                        ({"vertical": True, "spatial_dims": 1}, ValueError)])
def test_invalid_args(kwargs: dict, err: type[Exception]) -> None:
    with pytest.raises(err):
        RandomFlip(**kwargs)


def test_vertical_flip_of_a_signal_is_refused_at_the_first_batch() -> None:
    with pytest.raises(ValueError, match="vertical"):
        fit(RandomFlip(vertical=True), 1)
