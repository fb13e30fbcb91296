"""LSUV technique: runs lsuv_init_ once, on the first batch of a fresh run, through tricklab.train.Trainer;
never on a resumed run; state_dict round trip.

References: each layer's output variance on the first batch, recomputed by an independent eval-mode forward
with hooks (must be within tol of 1: Mishkin & Matas 2016, Algorithm 1); for resume, the uninterrupted run
(the resumed run must end with torch.equal weights).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tricklab.data import InMemoryLoader
from tricklab.layers.init import weight_layers
from tricklab.techniques import Checkpointing
from tricklab.techniques.lsuv import LSUV
from tricklab.train import Technique, Trainer, plan
from tricklab.train.checkpoint import flatten_state, unflatten_state


class FirstForwardProbe(Technique):
    """Test probe: the parameters and the batch as the model sees them in each step's forward."""

    name = "first_forward_probe"
    reads = frozenset({"params", "batch.inputs"})

    def __init__(self) -> None:
        self.params: list[list[torch.Tensor]] = []
        self.inputs: list[torch.Tensor] = []

    def on_forward(self, state) -> None:
        self.params.append([p.detach().clone() for p in state.raw_model.parameters()])
        self.inputs.append(state.inputs.detach().clone())


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(48, 6, generator=g) * 4.0, torch.randint(0, 3, (48,), generator=g)


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3))


def _output_vars(model: nn.Module, x: torch.Tensor) -> list[float]:
    out: list[float] = []
    hs = [m.register_forward_hook(lambda _m, _i, o: out.append(float(o.var(correction=0))))
          for _, m in weight_layers(model)]
    model.eval()
    with torch.no_grad():
        model(x)
    model.train()
    for h in hs:
        h.remove()
    return out


def test_lsuv_initialises_on_the_first_batch_only() -> None:
    """Reference: an independent forward of the step-0 weights on the step-0 batch: every Linear output has
    variance within tol of 1. Later steps see the optimizer's weights, not a re-initialisation."""
    model = _model()
    x, y = _data()
    lsuv, probe = LSUV(tol=0.05), FirstForwardProbe()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    trainer = Trainer(model, opt, InMemoryLoader(x, y, 16, seed=1), techniques=[lsuv, probe], max_steps=4)
    assert trainer.plan.order["batch_start"] == (0,)  # LSUV (writes params) runs before the probe reads them
    trainer.fit()
    assert lsuv.done and len(lsuv.results) == 3 and all(r["converged"] for r in lsuv.results)

    ref = _model()
    with torch.no_grad():
        for p, v in zip(ref.parameters(), probe.params[0]):
            p.copy_(v)
    for var in _output_vars(ref, probe.inputs[0]):
        assert abs(var - 1.0) < 0.05
    # the initial (default) weights were replaced, and only once: step 1 starts from SGD's update of step 0
    assert not torch.equal(probe.params[0][0], _model().state_dict()["0.weight"])
    assert all(torch.count_nonzero(b) == 0 for b in probe.params[0][1::2])  # LSUV zeros the biases
    for later in probe.params[1:]:
        assert not any(torch.count_nonzero(b) == 0 for b in later[1::2])  # trained, not re-initialised


def test_lsuv_does_not_run_on_a_resumed_run(tmp_path) -> None:
    """Reference: the uninterrupted 6-step run; a run stopped at step 3 and resumed by a fresh process (new
    model init, new LSUV instance) must end with identical weights, so LSUV did not re-initialise."""
    x, y = _data()

    def make(max_steps: int, folder=None, seed: int = 0) -> tuple[Trainer, nn.Module, LSUV]:
        model, lsuv = _model(seed), LSUV()
        techniques: list[Technique] = [lsuv]
        if folder is not None:
            techniques.append(Checkpointing(every_steps=1, folder=str(folder)))
        torch.manual_seed(123)
        t = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
                    InMemoryLoader(x, y, 16, seed=1), techniques=techniques, max_steps=max_steps)
        return t, model, lsuv

    ref_trainer, ref_model, _ = make(6)
    ref_trainer.fit()
    first, _, lsuv1 = make(3, tmp_path)
    first.fit()
    assert lsuv1.done
    resumed, model, lsuv2 = make(6, tmp_path, seed=99)
    resumed.fit(resume_from=tmp_path)
    assert lsuv2.done and lsuv2.results == lsuv1.results
    for (k, a), b in zip(model.state_dict().items(), ref_model.state_dict().values()):
        assert torch.equal(a, b), k


def test_lsuv_skips_when_resumed_without_done_flag() -> None:
    """A run that is not fresh (resumed, or step > 0) keeps its weights even if the flag says not done."""
    from types import SimpleNamespace

    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    for state in (SimpleNamespace(step=5, resumed_from=None, raw_model=model, inputs=torch.randn(4, 6),
                                  world_size=1),
                  SimpleNamespace(step=0, resumed_from="x", raw_model=model, inputs=torch.randn(4, 6),
                                  world_size=1)):
        t = LSUV()
        t.on_batch_start(state)
        assert t.done and t.results == []
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_lsuv_state_dict_round_trip() -> None:
    model = _model()
    x, y = _data()
    t = LSUV()
    Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), InMemoryLoader(x, y, 16, seed=0), techniques=[t],
            max_steps=1).fit()
    sd = t.state_dict()
    fresh = LSUV()
    fresh.load_state_dict(unflatten_state(*flatten_state(sd)))  # through the checkpoint format
    assert fresh.state_dict() == sd and fresh.done


def test_lsuv_declarations_and_bad_arguments() -> None:
    assert LSUV.writes == frozenset({"params", "rng"})
    plan([LSUV()])
    for kwargs in ({"tol": 0}, {"tol": -1.0}, {"max_iters": 0}, {"max_iters": 2.5}, {"tol": True}):
        with pytest.raises(ValueError):
            LSUV(**kwargs)
