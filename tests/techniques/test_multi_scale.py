"""Multi-scale technique (tricklab.techniques.multi_scale) and its functional core (tricklab.data.multiscale).

References: F.interpolate (bilinear, align_corners=False, antialias when shrinking) for the resize; the closed
forms of the cycle and progressive schedules; the uninterrupted run for exact resume; the raw evaluation inputs
(training-only); a loop over sizes written out for accuracy_at_sizes.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tricklab.data import InMemoryLoader
from tricklab.data.multiscale import accuracy_at_sizes, choose_size, resize_images
from tricklab.techniques import TECHNIQUES, GradAccumulation
from tricklab.techniques.multi_scale import MultiScale
from tricklab.techniques.random_shift import RandomShift
from tricklab.train import Technique, Trainer, plan
from tricklab.train.checkpoint import save_checkpoint
from tricklab.train.state import TrainState


class Probe(Technique):
    """Records the batch before the augmentations and as the model sees it."""

    name = "probe"
    # declares no read of the inputs: a reader of batch.inputs would be ordered after every input stage
    before = frozenset({"multi_scale", "random_shift"})

    def __init__(self) -> None:
        self.raw: list[torch.Tensor] = []
        self.seen: list[torch.Tensor] = []

    def on_batch_start(self, state: TrainState) -> None:
        self.raw.append(state.inputs.clone())

    def on_forward(self, state: TrainState) -> None:
        self.seen.append(state.inputs.clone())


class PoolNet(nn.Module):
    """conv3x3 - ReLU - global average pool - linear: accepts any size; records its evaluation inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)
        self.eval_inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            self.eval_inputs.append(x.clone())
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def fit(technique: Technique, steps: int, resume_from: Path | None = None, eval_every: int | None = None,
        extra: tuple[Technique, ...] = ()) -> tuple[Trainer, Probe]:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(24, 1, 12, 12, generator=g), torch.randint(0, 3, (24,), generator=g)
    model = PoolNet()
    probe = Probe()
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), InMemoryLoader(x, y, 8, seed=0),
                      techniques=[technique, probe, *extra], max_steps=steps,
                      eval_data=(x, y) if eval_every else None, eval_every=eval_every)
    trainer.fit(resume_from=resume_from)
    return trainer, probe


def reference_resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if size == x.shape[-1]:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=size < x.shape[-1])


def test_registered_declarations_and_order() -> None:
    assert TECHNIQUES.get("multi_scale") is MultiScale
    t = MultiScale()
    assert t.writes == {"batch.inputs.geometric"} and set(t.handled_events()) == {"fit_start", "batch_start"}
    p = plan([TECHNIQUES.get("mixup")(num_classes=3), t, RandomShift()])
    assert p.describe().splitlines()[-1] == "batch_start: random_shift -> multi_scale -> mixup"
    assert t.state_dict() == {}


@pytest.mark.parametrize("schedule,every", [("random", 1), ("random", 2), ("cycle", 1), ("progressive", 1)])
def test_batches_equal_the_resize_of_the_drawn_size(schedule: str, every: int) -> None:
    t = MultiScale(sizes=(8, 12, 16), schedule=schedule, every=every, seed=3)
    _, probe = fit(t, 9)
    sizes = []
    for step, (raw, seen) in enumerate(zip(probe.raw, probe.seen)):
        size = seen.shape[-1]
        sizes.append(size)
        assert seen.shape[-2] == size and size in (8, 12, 16)
        torch.testing.assert_close(seen, reference_resize(raw, size), rtol=0, atol=0)
        assert size == t.size_at(step)
    if schedule == "cycle":
        assert sizes == [8, 12, 16] * 3
    if schedule == "progressive":
        assert sizes == [8] * 3 + [12] * 3 + [16] * 3
    if schedule == "random" and every == 2:
        assert all(sizes[i] == sizes[i + 1] for i in range(0, 8, 2))


@pytest.mark.parametrize("accum", [1, 3])
def test_progressive_reads_the_step_budget_of_an_epoch_budget(accum: int) -> None:
    """Reference: the closed form epochs x batches per epoch / accumulation steps (24 examples, batch 8)."""
    t, probe = MultiScale(sizes=(8, 12), schedule="progressive"), Probe()
    model = PoolNet()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(24, 1, 12, 12, generator=g), torch.randint(0, 3, (24,), generator=g)
    Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), InMemoryLoader(x, y, 8, seed=0),
            techniques=[t, probe, GradAccumulation(steps=accum)], max_epochs=2).fit()
    assert t.total_steps == 2 * 3 // accum
    # every micro-batch of the first half of the optimizer steps at 8 px, the rest at 12 px
    assert [s.shape[-1] for s in probe.seen] == [8] * 3 + [12] * 3


def test_random_sizes_cover_the_set_uniformly() -> None:
    t = MultiScale(sizes=(16, 20, 24, 28), seed=0)
    counts = Counter(t.size_at(s) for s in range(4000))
    assert set(counts) == {16, 20, 24, 28}
    assert all(abs(c / 4000 - 0.25) < 0.03 for c in counts.values()), counts
    assert [MultiScale(seed=1).size_at(s) for s in range(20)] != [t.size_at(s) for s in range(20)]


def test_only_in_training_evaluation_sees_the_raw_size() -> None:
    trainer, probe = fit(MultiScale(sizes=(8,)), 3, eval_every=3)
    assert all(s.shape[-1] == 8 for s in probe.seen)
    assert all(x.shape[-1] == 12 for x in trainer.state.model.eval_inputs)


def test_resume_is_exact(tmp_path: Path) -> None:
    make = lambda: MultiScale(sizes=(8, 10, 12, 14), seed=5)  # noqa: E731
    full_trainer, full = fit(make(), 7)
    first_trainer, first = fit(make(), 4)
    save_checkpoint(tmp_path, 4, first_trainer.state_dict())
    second_trainer, second = fit(make(), 7, resume_from=tmp_path)
    seen = first.seen + second.seen
    assert len(seen) == 7 and all(torch.equal(a, b) for a, b in zip(full.seen, seen))
    for pa, pb in zip(full_trainer.state.model.parameters(), second_trainer.state.model.parameters()):
        assert torch.equal(pa, pb)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="sizes"):
        MultiScale(sizes=[])
    with pytest.raises(ValueError, match="schedule"):
        MultiScale(schedule="sometimes")
    with pytest.raises(ValueError, match="every"):
        MultiScale(every=0)
    t = MultiScale()
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        Trainer(nn.Linear(4, 2), torch.optim.SGD(nn.Linear(4, 2).parameters(), lr=0.1),
                InMemoryLoader(torch.randn(8, 4, 1, 1, 1), torch.randint(0, 2, (8,)), 4, seed=0),
                techniques=[t], max_steps=1).fit()


# ------------------------------------------------------------------------------------------ functional core
def test_resize_images_against_interpolate() -> None:
    x = torch.rand(3, 2, 10, 14)
    torch.testing.assert_close(resize_images(x, 6), F.interpolate(x, size=(6, 6), mode="bilinear",
                                                                   align_corners=False, antialias=True))
    torch.testing.assert_close(resize_images(x, (20, 28), "bicubic"),
                               F.interpolate(x, size=(20, 28), mode="bicubic", align_corners=False))
    assert resize_images(x, (10, 14)) is x
    assert torch.equal(resize_images(x, 20, "nearest"), F.interpolate(x, size=(20, 20), mode="nearest"))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        resize_images(torch.rand(3, 1, 1, 1, 100), 8)
    # 1-D signals (B, L) and (B, C, L): linear resampling of the length
    s = torch.rand(4, 40)
    torch.testing.assert_close(resize_images(s, 30), F.interpolate(s[:, None], size=30, mode="linear",
                                                                   align_corners=False)[:, 0])
    assert resize_images(torch.rand(4, 2, 40), 50).shape == (4, 2, 50) and resize_images(s, 40) is s
    with pytest.raises(ValueError, match="bicubic"):
        resize_images(s, 30, "bicubic")


def test_choose_size_closed_forms() -> None:
    sizes = (16, 20, 24)
    assert [choose_size(sizes, s, schedule="cycle", every=2) for s in range(8)] == [16, 16, 20, 20, 24, 24, 16, 16]
    assert [choose_size(sizes, s, schedule="progressive", total_steps=6) for s in range(8)] == \
        [16, 16, 20, 20, 24, 24, 24, 24]
    with pytest.raises(ValueError, match="Generator"):
        choose_size(sizes, 0)
    with pytest.raises(ValueError, match="total_steps"):
        choose_size(sizes, 0, schedule="progressive")


def test_accuracy_at_sizes_equals_a_plain_loop() -> None:
    torch.manual_seed(0)
    model = PoolNet().eval()
    x, y = torch.randn(10, 1, 12, 12), torch.randint(0, 3, (10,))
    got = accuracy_at_sizes(model, x, y, [8, 12, 16], batch_size=4)
    for s in (8, 12, 16):
        with torch.no_grad():
            expected = float((model(reference_resize(x, s)).argmax(-1) == y).float().mean())
        assert got[s] == pytest.approx(expected)
