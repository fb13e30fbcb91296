"""Pseudo-labelling, mean teacher and FixMatch.

References: the papers' losses written out with a Python loop over examples and ``math`` (Lee 2013 eq. 15 with a
confidence mask; FixMatch eq. 2; mean teacher's softmax MSE / C), outputs and gradients compared in float64;
the ramps by hand; the teacher's EMA against the closed form ``alpha theta' + (1 - alpha) theta``; the teacher's
forward against a deep copy of the model loaded with the averaged weights (torch's own module call).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tricklab.data.loader import InMemoryLoader
from tricklab.techniques.fixmatch import FixMatch, fixmatch_loss
from tricklab.techniques.mean_teacher import MeanTeacher, consistency_mse, sigmoid_rampup
from tricklab.techniques.pseudo_label import PseudoLabel, linear_ramp, pseudo_label_loss
from tricklab.train import Trainer


def _slow_masked_ce(label_logits: torch.Tensor, logits: torch.Tensor, tau: float) -> torch.Tensor:
    total = logits.new_zeros(())
    for i in range(len(logits)):
        p = [math.exp(v) for v in label_logits[i].tolist()]
        z = sum(p)
        conf = max(p) / z
        if conf >= tau:
            c = max(range(len(p)), key=lambda k: p[k])
            total = total - torch.log_softmax(logits[i], 0)[c]
    return total / len(logits)


def test_pseudo_label_loss_matches_the_loop() -> None:
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(12, 4, generator=g, dtype=torch.float64) * 3).requires_grad_(True)
    loss, mask = pseudo_label_loss(logits, 0.8)
    ref = _slow_masked_ce(logits.detach(), logits, 0.8)
    assert 0 < int(mask.sum()) < 12  # the threshold bites both ways in this example
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(torch.autograd.grad(loss, logits)[0], torch.autograd.grad(ref, logits)[0])


def test_fixmatch_loss_matches_the_loop_and_the_weak_side_is_constant() -> None:
    g = torch.Generator().manual_seed(1)
    weak = (torch.randn(10, 3, generator=g, dtype=torch.float64) * 3).requires_grad_(True)
    strong = torch.randn(10, 3, generator=g, dtype=torch.float64, requires_grad=True)
    loss, _ = fixmatch_loss(weak, strong, 0.9)
    ref = _slow_masked_ce(weak.detach(), strong, 0.9)
    torch.testing.assert_close(loss, ref)
    gw, gs = torch.autograd.grad(loss, [weak, strong], allow_unused=True)
    assert gw is None or torch.count_nonzero(gw) == 0
    torch.testing.assert_close(gs, torch.autograd.grad(ref, strong)[0])


def test_consistency_mse_matches_the_formula() -> None:
    g = torch.Generator().manual_seed(2)
    s = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(5, 4, generator=g, dtype=torch.float64)
    ref = sum(((s[i].softmax(0) - t[i].softmax(0)) ** 2).sum() / 4 for i in range(5)) / 5
    out = consistency_mse(s, t)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(torch.autograd.grad(out, s)[0], torch.autograd.grad(ref, s)[0])


def test_ramps() -> None:
    assert [linear_ramp(t, 10, 20, 3.0) for t in (0, 9, 10, 15, 20, 99)] == [0.0, 0.0, 0.0, 1.5, 3.0, 3.0]
    assert linear_ramp(0, 0, 0, 2.0) == 2.0
    assert sigmoid_rampup(25, 100) == pytest.approx(math.exp(-5 * 0.75 ** 2))
    assert sigmoid_rampup(100, 100) == 1.0 and sigmoid_rampup(3, 0) == 1.0


def _fit(technique, steps: int = 4, unlabelled_every: int = 2):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 1, 12, generator=g)
    y = torch.randint(0, 3, (32,), generator=g)
    y[::unlabelled_every] = -100
    model = nn.Sequential(nn.Conv1d(1, 4, 3, padding=1), nn.BatchNorm1d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(48, 3))
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), InMemoryLoader(x, y, 8, seed=0),
                      techniques=[technique] if technique else [], max_steps=steps, log_every=1)
    trainer.fit()
    return model, trainer


def test_pseudo_label_adds_exactly_its_term_in_the_trainer() -> None:
    seen = []

    class Spy(PseudoLabel):
        def on_loss(self, state):
            before = state.loss.detach().clone()
            super().on_loss(state)
            u = state.targets == -100
            term, _ = pseudo_label_loss(state.outputs[u], self.threshold)
            seen.append(float((state.loss - before - self.weight * term).detach()))
            # the task loss ignored the unlabelled examples
            l_task = F.cross_entropy(state.outputs[~u], state.targets[~u])
            assert float(before) == pytest.approx(float(l_task.detach()))

    _fit(Spy(weight=2.0, threshold=0.0))
    assert seen and all(abs(v) < 1e-6 for v in seen)


def test_mean_teacher_follows_the_ema_and_its_forward_is_the_averaged_model() -> None:
    snapshots = []

    class Record(MeanTeacher):
        def on_after_step(self, state):
            snapshots.append([p.detach().clone() for p in state.raw_model.parameters()])
            super().on_after_step(state)

    mt = Record(weight=1.0, decay=0.6)
    model, trainer = _fit(mt)
    assert mt.num_updates == 4
    # theta'_n = d theta'_{n-1} + (1 - d) theta_n with d = min(0.6, 1 - 1/(n+1)); n = 0 copies the student
    expected = [p.clone() for p in snapshots[0]]
    for n, snap in enumerate(snapshots[1:], start=1):
        d = min(0.6, 1 - 1 / (n + 1))
        expected = [d * e + (1 - d) * s for e, s in zip(expected, snap)]
    for a, b in zip(mt.shadow, expected):
        torch.testing.assert_close(a, b)
    # the teacher's forward == a copy of the model holding the averaged weights, in training mode
    x = torch.randn(6, 1, 12)
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for p, s in zip(twin.parameters(), mt.shadow):
            p.copy_(s)
    running = model[1].running_mean.clone()
    torch.testing.assert_close(mt.teacher_logits(trainer.state, x), twin.train()(x))
    assert torch.equal(model[1].running_mean, running)  # the student's BatchNorm statistics did not move


def test_fixmatch_in_the_trainer_changes_the_loss_only_through_unlabelled_examples() -> None:
    fm = FixMatch(threshold=0.0)
    _fit(fm)
    seen = []

    class Spy(FixMatch):
        def on_loss(self, state):
            before = state.loss.detach().clone()
            super().on_loss(state)
            seen.append(float((state.loss - before).detach()))

    _fit(Spy(threshold=0.0))
    assert seen and all(v > 0 for v in seen)  # threshold 0: every unlabelled example contributes
    seen.clear()
    _fit(Spy(threshold=0.0), unlabelled_every=1000)  # only y[0] is unlabelled: batches without any add nothing
    assert seen.count(0.0) >= 1


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="threshold"):
        PseudoLabel(threshold=1.5)
    with pytest.raises(ValueError, match="on must be"):
        FixMatch(on="labelled")
    with pytest.raises(ValueError, match="decay"):
        MeanTeacher(decay=1.0)
    soft_targets = type("S", (), {"step": 0, "targets": torch.zeros(3, 2), "outputs": torch.zeros(3, 2)})()
    with pytest.raises(ValueError, match="-100"):  # soft (mixed) targets cannot mark unlabelled examples
        PseudoLabel().on_loss(soft_targets)
