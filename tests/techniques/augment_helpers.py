"""Shared harness of the augmentation-technique tests (test_mixup, test_cutmix, test_mix, test_cutout,
test_random_erasing, test_random_shift, test_random_flip).

A tiny linear classifier is trained for a few steps on seeded random data with the technique under test and a
:class:`Probe` that records each batch before any augmentation and as the model sees it; the tests replay the
technique's functional core (tricklab.data.augment, itself checked against NumPy in tests/data/test_augment.py)
on the recorded raw batches with a generator seeded like the technique's. The shared checks:

* :func:`check_resume_is_exact`: reference, the uninterrupted run (same augmented batches, torch.equal weights);
* :func:`check_state_dict`: reference, the technique's own generator stream (same next draws after a reload);
* :func:`check_eval_untouched`: reference, the raw evaluation inputs (augmentation is training-only).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch
from torch import nn

from tricklab.data import InMemoryLoader
from tricklab.data import augment as A
from tricklab.train import Technique, Trainer
from tricklab.train.checkpoint import flatten_state, save_checkpoint, unflatten_state
from tricklab.train.state import TrainState

Batch = tuple[torch.Tensor, torch.Tensor]  # (inputs, targets)

AUGMENTERS = frozenset({"mixup", "cutmix", "mix", "cutout", "random_erasing", "random_shift", "random_flip"})


class Probe(Technique):
    """Test probe: the batch before any augmentation (batch_start, first) and as the model sees it (forward)."""

    name = "probe"
    reads = frozenset({"batch.inputs", "batch.targets"})
    before = AUGMENTERS

    def __init__(self) -> None:
        self.raw: list[Batch] = []
        self.seen: list[Batch] = []

    def on_batch_start(self, state: TrainState) -> None:
        self.raw.append((state.inputs.clone(), state.targets.clone()))

    def on_forward(self, state: TrainState) -> None:
        self.seen.append((state.inputs.clone(), state.targets.clone()))


class Net(nn.Module):
    """A linear classifier that records the inputs it gets in eval mode."""

    def __init__(self, features: int, classes: int = 3) -> None:
        super().__init__()
        self.lin = nn.Linear(features, classes)
        self.eval_inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            self.eval_inputs.append(x.clone())
        return self.lin(x.flatten(1))


def data(shape: tuple[int, ...] = (24, 40), seed: int = 0) -> Batch:
    """Seeded standard-normal inputs of ``shape`` and labels in {0, 1, 2}."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g), torch.randint(0, 3, (shape[0],), generator=g)


def fit(technique: Technique, steps: int, shape: tuple[int, ...] = (24, 40), resume_from: Path | None = None,
        eval_every: int | None = None, extra: Sequence[Technique] = ()) -> tuple[Trainer, Probe]:
    """Train :class:`Net` for ``steps`` SGD steps of batch 8 with ``technique``, a :class:`Probe` and ``extra``."""
    torch.manual_seed(0)
    x, y = data(shape)
    model = Net(math.prod(shape[1:]))
    probe = Probe()
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), InMemoryLoader(x, y, 8, seed=0),
                      techniques=[technique, probe, *extra], max_steps=steps,
                      eval_data=(x, y) if eval_every else None, eval_every=eval_every)
    trainer.fit(resume_from=resume_from)
    return trainer, probe


def check_resume_is_exact(make: Callable[[], Technique], tmp_path: Path, shape: tuple[int, ...]) -> None:
    """A fit of 7 steps equals a fit of 4 steps, a checkpoint (safetensors + JSON), then 3 more steps:
    same augmented inputs and targets at every step, same final weights (3 batches per epoch: resumes mid-epoch)."""
    full_trainer, full = fit(make(), 7, shape)
    first_trainer, first = fit(make(), 4, shape)
    save_checkpoint(tmp_path, 4, first_trainer.state_dict())
    second_trainer, second = fit(make(), 7, shape, resume_from=tmp_path)
    seen = first.seen + second.seen
    assert len(seen) == len(full.seen) == 7
    for (xa, ya), (xb, yb) in zip(full.seen, seen):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    for pa, pb in zip(full_trainer.state.model.parameters(), second_trainer.state.model.parameters()):
        assert torch.equal(pa, pb)


def check_state_dict(make: Callable[[], Technique]) -> None:
    """state_dict is the generator state (uint8); a fresh instance loaded with it draws the same next values."""
    t = make()
    torch.rand(5, generator=t.generator)  # move the stream on
    sd = t.state_dict()
    assert set(sd) == {"generator"} and sd["generator"].dtype == torch.uint8
    fresh = make()
    fresh.load_state_dict(sd)
    assert torch.equal(fresh.state_dict()["generator"], sd["generator"])
    assert torch.equal(torch.rand(4, generator=fresh.generator), torch.rand(4, generator=t.generator))
    flat = unflatten_state(*flatten_state(sd))  # survives the checkpoint format
    assert torch.equal(flat["generator"], sd["generator"])
    with pytest.raises(ValueError, match="generator"):
        fresh.load_state_dict({"gen": sd["generator"]})
    with pytest.raises(ValueError, match="seed"):
        type(t)(seed=-1)  # type: ignore[call-arg]


def check_eval_untouched(make: Callable[[], Technique], shape: tuple[int, ...]) -> None:
    """batch_start is training-only: evaluation sees the raw inputs."""
    trainer, probe = fit(make(), 3, shape, eval_every=3)
    x, _ = data(shape)
    assert trainer.state.model.eval_inputs and torch.equal(torch.cat(trainer.state.model.eval_inputs), x)
    assert len(probe.seen) == 3


#: mixes one batch given (x, y, lam, perm, generator) -> (mixed x, soft targets): the functional core replayed
Mixer = Callable[[torch.Tensor, torch.Tensor, float, torch.Tensor, torch.Generator], Batch]


def replay_mixer(raw: list[Batch], mix: Mixer, alpha: float, prob: float, seed: int = 0,
                 num_classes: int = 3) -> list[Batch]:
    """The batches a Mixup / CutMix technique should produce from ``raw``, drawing in its documented order:
    apply coin, lam ~ Beta(alpha, alpha) (A.sample_mixup), pairing, then whatever ``mix`` draws (CutMix's box)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for x, y in raw:
        apply = bool(torch.rand((), generator=g) < prob)
        lam = A.sample_mixup(g, alpha)
        perm = torch.randperm(x.shape[0], generator=g)
        out.append(mix(x, y, lam, perm, g) if apply else (x, A.one_hot_targets(y, num_classes)))
    return out
