"""Adversarial training technique (PGD training, Madry et al. 2018).

References:
- the batches the model trains on equal :func:`tricklab.robust.pgd` (itself checked against a slow per-example
  loop in tests/robust/test_attacks.py) replayed on the raw batch, against a copy of the weights taken at that
  step, with a generator seeded like the technique's;
- exact resume: the uninterrupted run (same adversarial batches, torch.equal weights);
- the effect: on two Gaussian blobs, a linear classifier trained on PGD examples keeps a higher accuracy under
  the same PGD attack than the one trained on clean inputs (the direction Madry et al. report).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from augment_helpers import Net, check_resume_is_exact, check_state_dict, fit
from torch import nn

from tricklab.data import InMemoryLoader
from tricklab.robust import pgd
from tricklab.techniques.adversarial_training import AdversarialTraining
from tricklab.techniques.lsuv import LSUV
from tricklab.techniques.mixup import Mixup
from tricklab.train import Technique, Trainer, plan
from tricklab.train.state import TrainState


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> object:
    # tiny tensors: one thread avoids thread hand-offs (and contention on a shared machine)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class WeightsProbe(Technique):
    """The raw batch and a copy of the weights at batch_start, before the attack."""

    name = "weights_probe"
    reads = frozenset({"batch.inputs", "batch.targets", "params"})
    before = frozenset({"adversarial_training"})

    def __init__(self) -> None:
        self.raw: list[tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]] = []

    def on_batch_start(self, state: TrainState) -> None:
        weights = {k: v.clone() for k, v in state.raw_model.state_dict().items()}
        self.raw.append((state.inputs.clone(), state.targets.clone(), weights))


def test_declarations_and_order() -> None:
    t = AdversarialTraining()
    assert (t.eps, t.steps, t.alpha, t.norm, t.random_start) == (0.1, 7, pytest.approx(2.5 * 0.1 / 7), "linf", True)
    assert t.writes == {"batch.inputs"} and set(t.handled_events()) == {"batch_start"}
    # after the mixers (it attacks the mixed batch against the mixed targets), before readers of the final inputs
    p = plan([LSUV(), t, Mixup(num_classes=3)])
    assert [p.names[i] for i in p.order["batch_start"]] == ["mixup", "adversarial_training", "lsuv"]
    for bad in ({"eps": 0}, {"steps": 0}, {"alpha": -1.0}, {"norm": "l1"}, {"clip": [1.0, 0.0]}):
        with pytest.raises(ValueError):
            AdversarialTraining(**bad)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_batches_equal_pgd_replayed(norm: str) -> None:
    t = AdversarialTraining(eps=0.3, steps=3, norm=norm, clip=[-2.0, 2.0], seed=5)
    probe = WeightsProbe()
    _, seen = fit(t, 5, extra=[probe])
    g = torch.Generator().manual_seed(5)
    assert len(probe.raw) == len(seen.seen) == 5
    for (rx, ry, weights), (x, y) in zip(probe.raw, seen.seen):
        model = Net(40)
        model.load_state_dict(weights)
        ref = pgd(model, rx, ry, 0.3, t.alpha, 3, norm=norm, clip=[-2.0, 2.0], loss_fn=F.cross_entropy, generator=g)
        assert torch.equal(x, ref) and torch.equal(y, ry)
        d = (x - rx.clamp(-2.0, 2.0)).flatten(1)  # clamping is 1-Lipschitz: still inside the ball
        size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
        assert float(size.max()) <= 0.3 + 1e-6 and float(size.max()) > 0.1  # inside the ball, and moved


def test_the_model_and_its_gradients_are_left_alone() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 3))
    model.train()
    state = TrainState(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), loss_fn=F.cross_entropy,
                       device=torch.device("cpu"))
    state.inputs, state.targets = torch.randn(16, 8), torch.randint(0, 3, (16,))
    buffers = [b.clone() for b in model.buffers()]
    AdversarialTraining(eps=0.5, steps=2).on_batch_start(state)
    assert all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(buffers, model.buffers()))  # the attack ran in eval mode


def test_resume_is_exact(tmp_path: Path) -> None:
    check_resume_is_exact(lambda: AdversarialTraining(eps=0.2, steps=2, seed=1), tmp_path, (24, 40))


def test_state_dict_round_trip() -> None:
    check_state_dict(lambda **kw: AdversarialTraining(**kw))


def _blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    # class means +-1 along the first axis; 19 noise axes where a standard model puts small, non-robust weights
    x = torch.randn(n, 20, generator=g) * 0.6
    x[:, 0] += y.float() * 2 - 1
    return x, y


def _robust_accuracy(adversarial: bool) -> float:
    torch.manual_seed(0)
    x, y = _blobs(512, 0)
    model = nn.Linear(20, 2)
    techniques = [AdversarialTraining(eps=0.25, steps=5)] if adversarial else []
    Trainer(model, torch.optim.SGD(model.parameters(), lr=0.5), InMemoryLoader(x, y, 64, seed=0),
            techniques=techniques, max_steps=300).fit()
    xt, yt = _blobs(1000, 1)
    adv = pgd(model, xt, yt, 0.25, 0.1, 10, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return float((model(adv).argmax(1) == yt).float().mean())


def test_pgd_training_raises_accuracy_under_pgd() -> None:
    standard, robust = _robust_accuracy(False), _robust_accuracy(True)
    assert robust > standard + 0.05, (standard, robust)  # measured: 0.795 -> 0.901
