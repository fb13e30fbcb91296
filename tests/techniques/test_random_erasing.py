"""Random-erasing technique: replays the functional core with its own generator, the paper's defaults,
order against other augmenters, training-only application and exact resume.

References: tricklab.data.augment.random_erasing (checked against slow-loop boxes, the paper's area and
aspect-ratio ranges and the next normal draws in tests/data/test_augment.py), replayed with a generator seeded
like the technique's.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from augment_helpers import check_eval_untouched, check_resume_is_exact, check_state_dict, fit

from tricklab.data import augment as A
from tricklab.techniques.cutmix import CutMix
from tricklab.techniques.random_erasing import RandomErasing
from tricklab.techniques.random_shift import RandomShift
from tricklab.train import plan

# ------------------------------------------------------------------------------------------------ tests
def test_declarations_defaults_and_order() -> None:
    t = RandomErasing()
    # Zhong et al. 2020: p = 0.5, s_l = 0.02, s_h = 0.4, r_1 = 0.3, random values
    assert (t.name, t.p, t.scale, t.ratio, t.fill) == ("random_erasing", 0.5, (0.02, 0.4), 0.3, "random")
    assert t.writes == {"batch.inputs.erased"} and set(t.handled_events()) == {"batch_start"}
    p = plan([CutMix(num_classes=3), t, RandomShift()])
    assert [p.names[i] for i in p.order["batch_start"]] == ["random_shift", "random_erasing", "cutmix"]


@pytest.mark.parametrize("shape", [(24, 40), (24, 1, 28, 28)])
@pytest.mark.parametrize("fill", ["random", 0.0])
def test_batches_equal_the_functional_core_replayed(shape: tuple[int, ...], fill: float | str) -> None:
    t = RandomErasing(p=0.7, fill=fill, seed=6)
    _, probe = fit(t, 6, shape)
    g = torch.Generator().manual_seed(6)
    erased = 0
    for (x, y), (rx, ry) in zip(probe.seen, probe.raw):
        assert torch.equal(x, A.random_erasing(rx, g, 0.7, fill=fill)) and torch.equal(y, ry)  # type: ignore[arg-type]
        erased += int((x != rx).flatten(1).any(1).sum())
    assert 0 < erased < 48


def test_p_zero_is_identity() -> None:
    _, probe = fit(RandomErasing(p=0.0), 3)
    assert all(torch.equal(x, rx) for (x, _), (rx, _) in zip(probe.seen, probe.raw))


def test_recipe_style_arguments() -> None:
    """The lab coerces tuples from YAML lists: scale given as a list works."""
    t = RandomErasing(scale=[0.1, 0.2], ratio=0.5, fill=1)
    assert t.scale == (0.1, 0.2) and t.fill == 1.0


def test_only_in_training() -> None:
    check_eval_untouched(lambda: RandomErasing(p=1.0), (24, 1, 8, 8))


def test_resume_is_exact(tmp_path: Path) -> None:
    check_resume_is_exact(lambda: RandomErasing(), tmp_path, (24, 1, 8, 8))


def test_state_dict_round_trip() -> None:
    check_state_dict(lambda: RandomErasing())


@pytest.mark.parametrize("kwargs", [{"p": 1.5}, {"scale": (0.4, 0.1)}, {"scale": (0.1,)}, {"scale": "ab"},
                                    {"ratio": 0.0}, {"ratio": 3.0}, {"fill": "noise"}, {"spatial_dims": 4}])
def test_invalid_args(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        RandomErasing(**kwargs)
