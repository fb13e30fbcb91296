"""CutMix technique: replays the functional core with its own generator, pasted-area targets, the
num_classes check, the conflict with Mixup, training-only application and exact resume.

References: tricklab.data.augment.cutmix / sample_mixup (checked against NumPy slice pasting, exact pixel
counts and scipy.stats.beta in tests/data/test_augment.py), replayed with a generator seeded like the
technique's in the documented draw order (apply coin, lam, pairing, box centre).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from augment_helpers import check_eval_untouched, check_resume_is_exact, check_state_dict, fit, replay_mixer

from tricklab.data import augment as A
from tricklab.errors import ConfigError, ConflictError
from tricklab.techniques.cutmix import CutMix
from tricklab.techniques.mixup import Mixup
from tricklab.train import plan

# ---------------------------------------------------------------------------------------------- helpers
def replay(raw: list[tuple[torch.Tensor, torch.Tensor]], alpha: float, prob: float,
           seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """CutMix's draws replayed on the raw batches: A.cutmix with 3 classes (then its box centre draw)."""
    return replay_mixer(raw, lambda x, y, lam, perm, g: A.cutmix(x, y, lam, perm, g, num_classes=3)[:2], alpha,
                        prob, seed)


SHAPES = [(24, 40), (24, 1, 8, 8)]  # MNIST-1D-like signals and small images


# ------------------------------------------------------------------------------------------------ tests
def test_declarations_and_defaults() -> None:
    t = CutMix(num_classes=3)
    assert (t.name, t.alpha, t.prob, t.seed) == ("cutmix", 1.0, 1.0, 0)
    assert t.writes == {"batch.inputs.mixed", "batch.targets"}
    assert set(t.handled_events()) == {"fit_start", "batch_start"}
    plan([t])


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("prob", [1.0, 0.5])
def test_batches_equal_the_functional_core_replayed(shape: tuple[int, ...], prob: float) -> None:
    t = CutMix(alpha=1.0, num_classes=3, prob=prob, seed=3)
    _, probe = fit(t, 9, shape)
    for (x, y), (ex, ey) in zip(probe.seen, replay(probe.raw, 1.0, prob, seed=3)):
        assert torch.equal(x, ex) and torch.equal(y, ey)
        torch.testing.assert_close(y.sum(-1), torch.ones(8))


def test_targets_follow_the_last_pasted_box() -> None:
    """Reference: the area fraction of last_box counted as changed pixels (random inputs: a pasted pixel always
    changes), and the closed form (1 - frac) onehot(y) + frac onehot(y[perm]) with perm replayed."""
    t = CutMix(num_classes=3, seed=1)
    _, probe = fit(t, 1, (24, 1, 8, 8))
    (rx, ry), (x, y) = probe.raw[0], probe.seen[0]
    assert t.last_box is not None
    g = torch.Generator().manual_seed(1)
    torch.rand((), generator=g)
    A.sample_mixup(g, 1.0)
    perm = torch.randperm(8, generator=g)
    area = math.prod(hi - lo for lo, hi in t.last_box)
    changed = (x != rx).flatten(1).sum(1)
    assert torch.equal(changed, torch.where(perm == torch.arange(8), 0, area))
    frac = area / 64
    expected = (1 - frac) * A.one_hot_targets(ry, 3) + frac * A.one_hot_targets(ry[perm], 3)
    torch.testing.assert_close(y, expected)


def test_num_classes_is_required_at_fit_start() -> None:
    with pytest.raises(ConfigError, match="num_classes"):
        fit(CutMix(), 1)


def test_conflicts_with_mixup() -> None:
    with pytest.raises(ConflictError) as err:
        plan([CutMix(num_classes=3), Mixup(num_classes=3)])
    assert "mixup" in str(err.value) and "cutmix" in str(err.value)


def test_only_in_training() -> None:
    check_eval_untouched(lambda: CutMix(num_classes=3), (24, 1, 8, 8))


def test_resume_is_exact(tmp_path: Path) -> None:
    check_resume_is_exact(lambda: CutMix(num_classes=3, prob=0.7), tmp_path, (24, 1, 8, 8))


def test_state_dict_round_trip() -> None:
    check_state_dict(lambda: CutMix(num_classes=3))


@pytest.mark.parametrize("kwargs", [{"alpha": 0.0}, {"prob": -0.5}, {"num_classes": 0}, {"spatial_dims": 3}])
def test_invalid_args(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        CutMix(**kwargs)


def test_inputs_without_spatial_layout_are_refused() -> None:
    with pytest.raises(ValueError, match="spatial"):
        fit(CutMix(num_classes=3), 1, (24, 1, 1, 2, 4))
