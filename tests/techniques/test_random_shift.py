"""Random-shift technique: replays the functional core with its own generator, default shifts for MNIST-1D
and Fashion-MNIST shapes, both modes, training-only application and exact resume.

References: tricklab.data.augment.random_shift (checked against np.roll in tests/data/test_augment.py),
replayed with a generator seeded like the technique's; np.roll again for the per-example check here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from augment_helpers import check_eval_untouched, check_resume_is_exact, check_state_dict, fit

from tricklab.data import augment as A
from tricklab.techniques.mixup import Mixup
from tricklab.techniques.random_shift import RandomShift
from tricklab.train import plan

# ------------------------------------------------------------------------------------------------ tests
def test_declarations_and_defaults() -> None:
    t = RandomShift()
    assert (t.name, t.max_shift, t.mode) == ("random_shift", None, "zeros")
    assert t.writes == {"batch.inputs.geometric"} and set(t.handled_events()) == {"batch_start"}
    # runs before a batch mixer, derived from the input stages (geometric before mixed), not named
    p = plan([Mixup(num_classes=3), t])
    assert [p.names[i] for i in p.order["batch_start"]] == ["random_shift", "mixup"]
    plan([t])


@pytest.mark.parametrize("shape,max_shift", [((24, 40), None), ((24, 1, 28, 28), None), ((24, 2, 6, 6), [1, 2])])
@pytest.mark.parametrize("mode", ["zeros", "circular"])
def test_batches_equal_the_functional_core_replayed(shape: tuple[int, ...], max_shift: list[int] | None,
                                                    mode: str) -> None:
    t = RandomShift(max_shift=max_shift, mode=mode, seed=8)
    _, probe = fit(t, 6, shape)
    g = torch.Generator().manual_seed(8)
    for (x, y), (rx, ry) in zip(probe.seen, probe.raw):
        assert torch.equal(x, A.random_shift(rx, g, max_shift, mode=mode)) and torch.equal(y, ry)  # type: ignore[arg-type]


def test_circular_default_shift_is_a_roll_of_at_most_four_for_mnist1d() -> None:
    """Reference: np.roll; the default max_shift is round(0.1 * 40) = 4 positions."""
    _, probe = fit(RandomShift(mode="circular"), 3)
    for (x, _), (rx, _) in zip(probe.seen, probe.raw):
        for xi, ri in zip(x.numpy(), rx.numpy()):
            assert any(np.array_equal(xi, np.roll(ri, s)) for s in range(-4, 5))


def test_zero_shift_is_identity() -> None:
    _, probe = fit(RandomShift(max_shift=0), 3)
    assert all(torch.equal(x, rx) for (x, _), (rx, _) in zip(probe.seen, probe.raw))


def test_only_in_training() -> None:
    check_eval_untouched(lambda: RandomShift(), (24, 1, 8, 8))


def test_resume_is_exact(tmp_path: Path) -> None:
    check_resume_is_exact(lambda: RandomShift(), tmp_path, (24, 40))


def test_state_dict_round_trip() -> None:
    check_state_dict(lambda: RandomShift())


@pytest.mark.parametrize("kwargs,err", [({"max_shift": -1}, ValueError), ({"max_shift": 2.0}, ValueError),
                                        ({"max_shift": True}, TypeError), ({"mode": "reflect"}, ValueError),
                                        ({"spatial_dims": 0}, ValueError)])
def test_invalid_args(kwargs: dict, err: type[Exception]) -> None:
    with pytest.raises(err):
        RandomShift(**kwargs)


def test_shift_larger_than_the_signal_is_refused_at_the_first_batch() -> None:
    with pytest.raises(ValueError, match="smaller"):
        fit(RandomShift(max_shift=40), 1)
