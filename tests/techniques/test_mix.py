"""Mix technique (Mixup or CutMix per batch): replays the functional cores with its own generator, the switch
frequency, the num_classes check, conflicts, training-only application and exact resume.

References: tricklab.data.augment.mixup / cutmix / sample_mixup (checked against NumPy and scipy.stats.beta in
tests/data/test_augment.py), replayed with a generator seeded like the technique's in the documented draw order
(apply coin, switch coin, lam with the chosen alpha, pairing, box centre for CutMix).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from augment_helpers import check_eval_untouched, check_resume_is_exact, check_state_dict, fit

from tricklab.data import augment as A
from tricklab.errors import ConfigError, ConflictError
from tricklab.techniques.mix import Mix
from tricklab.techniques.mixup import Mixup
from tricklab.train import Technique, plan
from tricklab.train.state import TrainState

# ---------------------------------------------------------------------------------------------- helpers
def replay(raw: list[tuple[torch.Tensor, torch.Tensor]], t: Mix) -> tuple[list[tuple[torch.Tensor, torch.Tensor]],
                                                                           list[str | None]]:
    g = torch.Generator().manual_seed(t.seed)
    out, choices = [], []
    for x, y in raw:
        apply = bool(torch.rand((), generator=g) < t.prob)
        use_cutmix = bool(torch.rand((), generator=g) < t.switch_prob)
        lam = A.sample_mixup(g, t.cutmix_alpha if use_cutmix else t.mixup_alpha)
        perm = torch.randperm(x.shape[0], generator=g)
        if not apply:
            out.append((x, A.one_hot_targets(y, 3)))
            choices.append(None)
        elif use_cutmix:
            out.append(A.cutmix(x, y, lam, perm, g, num_classes=3)[:2])
            choices.append("cutmix")
        else:
            out.append(A.mixup(x, y, lam, perm, 3))
            choices.append("mixup")
    return out, choices


class ChoiceProbe(Technique):
    """Records Mix.last_choice after each batch_start (at forward)."""

    name = "choice_probe"

    def __init__(self, mix: Mix) -> None:
        self.mix = mix
        self.choices: list[str | None] = []

    def on_forward(self, state: TrainState) -> None:
        self.choices.append(self.mix.last_choice)


# ------------------------------------------------------------------------------------------------ tests
def test_declarations_and_defaults() -> None:
    t = Mix(num_classes=3)
    assert (t.name, t.mixup_alpha, t.cutmix_alpha, t.switch_prob, t.prob) == ("mix", 0.2, 1.0, 0.5, 1.0)
    assert t.writes == {"batch.inputs.mixed", "batch.targets"}
    assert set(t.handled_events()) == {"fit_start", "batch_start"}
    plan([t])


@pytest.mark.parametrize("shape", [(24, 40), (24, 1, 8, 8)])
@pytest.mark.parametrize("prob", [1.0, 0.6])
def test_batches_equal_the_functional_cores_replayed(shape: tuple[int, ...], prob: float) -> None:
    t = Mix(mixup_alpha=0.4, cutmix_alpha=1.0, switch_prob=0.5, num_classes=3, prob=prob, seed=2)
    choice = ChoiceProbe(t)
    _, probe = fit(t, 12, shape, extra=[choice])
    expected, choices = replay(probe.raw, t)
    assert choice.choices == choices
    for (xs, ys), (ex, ey) in zip(probe.seen, expected):
        assert torch.equal(xs, ex) and torch.equal(ys, ey)
        torch.testing.assert_close(ys.sum(-1), torch.ones(8))
    if prob == 1.0:
        assert {"mixup", "cutmix"} <= set(choices)  # both are used (12 fair coins)


@pytest.mark.parametrize("switch_prob,expected", [(0.0, {"mixup"}), (1.0, {"cutmix"})])
def test_switch_prob_extremes(switch_prob: float, expected: set[str]) -> None:
    t = Mix(num_classes=3, switch_prob=switch_prob)
    choice = ChoiceProbe(t)
    fit(t, 6, extra=[choice])
    assert set(choice.choices) == expected


def test_num_classes_is_required_at_fit_start() -> None:
    with pytest.raises(ConfigError, match="num_classes"):
        fit(Mix(), 1)


def test_conflicts_with_mixup() -> None:
    with pytest.raises(ConflictError) as err:
        plan([Mix(num_classes=3), Mixup(num_classes=3)])
    assert "mix'" in str(err.value) and "mixup" in str(err.value)


def test_only_in_training() -> None:
    check_eval_untouched(lambda: Mix(num_classes=3), (24, 40))


def test_resume_is_exact(tmp_path: Path) -> None:
    check_resume_is_exact(lambda: Mix(num_classes=3, prob=0.8), tmp_path, (24, 1, 8, 8))


def test_state_dict_round_trip() -> None:
    check_state_dict(lambda: Mix(num_classes=3))


@pytest.mark.parametrize("kwargs", [{"mixup_alpha": 0.0}, {"cutmix_alpha": -1.0}, {"switch_prob": 1.2},
                                    {"prob": -0.1}, {"num_classes": 1}, {"spatial_dims": 0}])
def test_invalid_args(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Mix(**kwargs)
