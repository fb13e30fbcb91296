"""Mixup technique: replays the functional core with its own generator, soft targets, the num_classes check,
the conflict with CutMix, training-only application and exact resume.

References: tricklab.data.augment.mixup / sample_mixup (themselves checked against NumPy eq. 1 of Zhang et al.
2018 and scipy.stats.beta in tests/data/test_augment.py), replayed with a generator seeded like the
technique's in the documented draw order (apply coin, lam, pairing); F.cross_entropy with probability targets
computed by hand as -sum(q log softmax(z)) for the loss; gradients via that hand-written loss.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from augment_helpers import check_eval_untouched, check_resume_is_exact, check_state_dict, fit, replay_mixer
from torch import nn

from tricklab.data import augment as A
from tricklab.errors import ConfigError, ConflictError
from tricklab.techniques.cutmix import CutMix
from tricklab.techniques.mixup import Mixup
from tricklab.train import plan

# ---------------------------------------------------------------------------------------------- helpers
def replay(raw: list[tuple[torch.Tensor, torch.Tensor]], alpha: float, prob: float,
           seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Mixup's draws replayed on the raw batches: A.mixup with 3 classes when the apply coin says so."""
    return replay_mixer(raw, lambda x, y, lam, perm, g: A.mixup(x, y, lam, perm, 3), alpha, prob, seed)


# ------------------------------------------------------------------------------------------------ tests
def test_declarations_and_defaults() -> None:
    t = Mixup(num_classes=3)
    assert (t.name, t.alpha, t.prob, t.seed) == ("mixup", 0.2, 1.0, 0)
    assert t.writes == {"batch.inputs.mixed", "batch.targets"} and t.reads == {"batch.targets"}
    assert set(t.handled_events()) == {"fit_start", "batch_start"}
    plan([t])


@pytest.mark.parametrize("prob", [1.0, 0.5])
def test_batches_equal_the_functional_core_replayed(prob: float) -> None:
    _, probe = fit(Mixup(alpha=0.4, num_classes=3, prob=prob, seed=5), 9)
    expected = replay(probe.raw, 0.4, prob, seed=5)
    mixed = 0
    for (x, y), (ex, ey), (rx, _) in zip(probe.seen, expected, probe.raw):
        assert torch.equal(x, ex) and torch.equal(y, ey)
        assert y.shape == (8, 3) and y.dtype == torch.float32
        torch.testing.assert_close(y.sum(-1), torch.ones(8))  # soft targets, each row sums to one
        mixed += not torch.equal(x, rx)
    assert mixed == 9 if prob == 1.0 else 0 < mixed < 9


def test_prob_zero_keeps_inputs_and_gives_one_hot_targets() -> None:
    """Reference: identity on inputs; targets np.eye-style one-hot rows (one_hot_targets, tested in data)."""
    _, probe = fit(Mixup(num_classes=3, prob=0.0), 4)
    for (x, y), (rx, ry) in zip(probe.seen, probe.raw):
        assert torch.equal(x, rx) and torch.equal(y, A.one_hot_targets(ry, 3))


def test_soft_target_loss_and_gradient_match_a_hand_written_cross_entropy() -> None:
    """Reference: -sum_c q_c log softmax(z)_c averaged over the batch, written out; the trainer's default loss
    F.cross_entropy accepts the mixed probability targets and gives the same value and gradient."""
    t = Mixup(alpha=1.0, num_classes=3)
    _, probe = fit(t, 1)
    x, q = probe.seen[0]
    lin = nn.Linear(40, 3)
    z = lin(x)
    (g_torch,) = torch.autograd.grad(F.cross_entropy(z, q), lin.weight)
    z = lin(x)
    manual = -(q * torch.log_softmax(z, -1)).sum(-1).mean()
    (g_manual,) = torch.autograd.grad(manual, lin.weight)
    torch.testing.assert_close(F.cross_entropy(lin(x), q), manual)
    torch.testing.assert_close(g_torch, g_manual)


def test_num_classes_is_required_at_fit_start() -> None:
    with pytest.raises(ConfigError, match="num_classes"):
        fit(Mixup(), 1)


def test_conflicts_with_cutmix() -> None:
    with pytest.raises(ConflictError) as err:
        plan([Mixup(num_classes=3), CutMix(num_classes=3)])
    assert "mixup" in str(err.value) and "cutmix" in str(err.value)


def test_only_in_training() -> None:
    check_eval_untouched(lambda: Mixup(num_classes=3), (24, 40))


def test_resume_is_exact(tmp_path: Path) -> None:
    check_resume_is_exact(lambda: Mixup(alpha=1.0, num_classes=3, prob=0.7), tmp_path, (24, 40))


def test_state_dict_round_trip() -> None:
    check_state_dict(lambda: Mixup(num_classes=3))


@pytest.mark.parametrize("kwargs", [{"alpha": 0.0}, {"alpha": -1.0}, {"prob": 1.5}, {"num_classes": 1},
                                    {"num_classes": 2.5}, {"seed": 1.0}])
def test_invalid_args(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Mixup(**kwargs)


def test_bad_targets_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="class indices"):
        fit(Mixup(num_classes=2), 1)  # labels go up to 2
