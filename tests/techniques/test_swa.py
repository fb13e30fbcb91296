"""SWA: functional core vs a NumPy mean, against torch.optim.swa_utils (AveragedModel, update_bn), eval swap,
resume state, and the conflict with EMA.

References: NumPy float64 equal-weight mean of recorded parameter snapshots (Izmailov et al. 2018, eq. of the
running average); torch.optim.swa_utils.AveragedModel.update_parameters on a twin plain loop;
torch.optim.swa_utils.update_bn on the same batches; torch.func.functional_call for the eval logits.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, update_bn

from tricklab.data import InMemoryLoader
from tricklab.data.loader import epoch_permutation
from tricklab.errors import ConflictError
from tricklab.techniques import EMA
from tricklab.techniques.swa import SWA, recompute_bn_, swa_update_
from tricklab.train import Technique, Trainer, TrainState, plan


def _data(n: int = 64, d: int = 5, c: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, c, (n,), generator=g)


def _bn_net() -> nn.Module:
    return nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


class ParamRecorder(Technique):
    """Test probe: parameter copies after every optimizer step (index = state.step)."""

    name = "param_recorder"
    reads = frozenset({"params"})

    def __init__(self) -> None:
        self.after: dict[int, list[torch.Tensor]] = {}

    def on_after_step(self, state) -> None:
        self.after[state.step] = [p.detach().clone() for p in state.raw_model.parameters()]


def test_swa_update_matches_numpy_mean_of_snapshots() -> None:
    """Reference: NumPy float64 np.mean over the k snapshots seen so far, after each update."""
    rng = np.random.default_rng(0)
    shapes = [(3, 4), (4,), (2, 2, 2)]
    avg = [torch.full(s, 123.0, dtype=torch.float64) for s in shapes]  # overwritten by the first update
    seen: list[list[np.ndarray]] = []
    for n in range(7):
        snap = [rng.standard_normal(s) for s in shapes]
        seen.append(snap)
        swa_update_(avg, [torch.tensor(p) for p in snap], n)
        for i, a in enumerate(avg):
            np.testing.assert_allclose(a.numpy(), np.mean([s[i] for s in seen], axis=0), rtol=1e-12, atol=1e-12)
    swa_update_([], [], 3)  # empty lists are a no-op


@pytest.mark.parametrize("start,every", [(3, 1), (2, 3)])
def test_swa_average_is_the_mean_of_the_recorded_trajectory(start: int, every: int) -> None:
    """Reference: NumPy mean of the probe's snapshots at steps start, start + every, ..."""
    torch.manual_seed(0)
    x, y = _data()
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    swa, rec = SWA(start_step=start, every=every), ParamRecorder()
    Trainer(model, torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9), InMemoryLoader(x, y, 16, seed=1),
            techniques=[swa, rec], max_steps=11).fit()
    picked = [s for s in range(1, 12) if s >= start and (s - start) % every == 0]
    assert swa.n_averaged == len(picked)
    for i, got in enumerate(swa.average):
        ref = np.mean([rec.after[s][i].numpy().astype(np.float64) for s in picked], axis=0)
        np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5, atol=1e-6)


def test_swa_equals_torch_averaged_model_on_a_twin_loop() -> None:
    """Reference: torch.optim.swa_utils.AveragedModel updated at the same steps of an identical plain loop."""
    torch.manual_seed(0)
    x, y = _data()
    model = _bn_net()
    twin = copy.deepcopy(model)
    swa = SWA(start_step=4, every=2)
    Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), InMemoryLoader(x, y, 16, seed=3),
            techniques=[swa], max_steps=13).fit()

    opt = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9)
    ref = AveragedModel(twin)
    loader = InMemoryLoader(x, y, 16, seed=3)
    for step in range(1, 14):
        if loader.batch_index >= len(loader):
            loader.start_next_epoch()
        bx, by = loader.next_batch()
        F.cross_entropy(twin(bx), by).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step >= 4 and (step - 4) % 2 == 0:
            ref.update_parameters(twin)
    assert int(ref.n_averaged) == swa.n_averaged == 5
    for got, want in zip(swa.average, ref.module.parameters()):
        torch.testing.assert_close(got, want.detach(), rtol=1e-6, atol=1e-7)


def test_recompute_bn_equals_torch_update_bn() -> None:
    """Reference: torch.optim.swa_utils.update_bn on a deep copy with the same batches."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.Dropout(0.0), nn.Linear(6, 4), nn.BatchNorm1d(4))
    model.eval()
    batches = [torch.randn(10, 5) * 3 + 1 for _ in range(4)]
    ref = copy.deepcopy(model)
    assert recompute_bn_(model, batches) == 4
    update_bn([(b, torch.zeros(len(b))) for b in batches], ref)
    for (k, a), (_, b) in zip(model.named_buffers(), ref.named_buffers()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=k)
    assert not model.training  # mode restored
    assert model[1].momentum == 0.1  # momentum restored


def test_swa_eval_uses_averaged_weights_and_recomputed_bn_then_restores_exactly() -> None:
    """References: update_bn on a copy holding the averaged weights over the same training batches, and
    functional_call with those weights and buffers for the logits; restore checked bit for bit."""
    torch.manual_seed(0)
    x, y = _data(96)
    ex, ey = _data(32, seed=5)
    model = _bn_net()
    swa, rec = SWA(start_step=2, every=1, bn_batches=3), ParamRecorder()
    seen = []

    def metric_fn(logits, targets):
        # called between eval_start and eval_end: the model holds the averaged weights and recomputed BN now
        seen.append((logits.clone(), {k: v.detach().clone() for k, v in model.state_dict().items()},
                     [a.clone() for a in swa.average]))
        return {"loss": float(F.cross_entropy(logits, targets)), "accuracy": 0.0}

    trained_buffers = []

    class BufferProbe(Technique):
        name = "buffer_probe"

        def on_after_step(self, state) -> None:
            trained_buffers.append({k: v.clone() for k, v in model.named_buffers()})

    loader = InMemoryLoader(x, y, 16, seed=1)
    Trainer(model, torch.optim.SGD(model.parameters(), lr=0.3), loader, techniques=[swa, rec, BufferProbe()],
            max_steps=6, eval_data=(ex, ey), eval_every=3, metric_fn=metric_fn).fit()
    assert len(seen) == 2
    perm = epoch_permutation(len(x), 1, 0)
    bn_batches = [x[perm[i * 16:(i + 1) * 16]] for i in range(3)]
    names = [n for n, _ in model.named_parameters()]
    for logits, sd, avg in seen:
        ref = copy.deepcopy(model)
        with torch.no_grad():
            for p, a in zip(ref.parameters(), avg):
                p.copy_(a)
        update_bn(bn_batches, ref)
        for n, a in zip(names, avg):
            assert torch.equal(sd[n], a)
        for k, v in ref.named_buffers():
            torch.testing.assert_close(sd[k], v, rtol=1e-6, atol=1e-7, msg=k)
        with torch.no_grad():
            want = torch.func.functional_call(model.eval(), sd, (ex,))
        model.train()
        torch.testing.assert_close(logits, want)
    # trained weights and buffers are back bit for bit, and differ from the averaged ones
    for p, r in zip(model.parameters(), rec.after[6]):
        assert torch.equal(p.detach(), r)
    for k, v in model.named_buffers():
        assert torch.equal(v, trained_buffers[-1][k]), k
    assert not all(torch.equal(p, a) for p, a in zip(model.parameters(), swa.average))
    assert loader.epoch == 1 and loader.batch_index == 0  # 6 batches of 6 per epoch: recompute did not move it
    # averaged_state_dict: averaged parameters + the BN buffers recomputed for them
    sd = swa.averaged_state_dict(model)
    for n, a in zip(names, swa.average):
        assert torch.equal(sd[n], a)
    assert torch.equal(sd["1.running_mean"], seen[-1][1]["1.running_mean"])


def test_swa_before_start_evaluates_trained_weights() -> None:
    model = nn.Linear(4, 2)
    swa = SWA(start_step=100)
    state = SimpleNamespace(raw_model=model, max_steps=10, skip_step=False, step=1)
    swa.on_fit_start(state)
    with torch.no_grad():
        model.weight.add_(1.0)
    swa.on_after_step(state)
    assert swa.n_averaged == 0
    before = [p.detach().clone() for p in model.parameters()]
    swa.on_eval_start(state)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    swa.on_eval_end(state)
    assert all(torch.equal(a, b) for a, b in zip(swa.averaged_state_dict(model).values(), model.state_dict().values()))


def test_swa_skipped_steps_and_start_resolution() -> None:
    model = nn.Linear(3, 2)
    swa = SWA(start_fraction=0.5)
    state = TrainState(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), loss_fn=F.cross_entropy,
                       device=torch.device("cpu"), max_steps=10, skip_step=True, step=6)
    swa.on_fit_start(state)
    assert swa._start == 5
    swa.on_after_step(state)
    assert swa.n_averaged == 0  # skipped step
    state.skip_step = False
    swa.on_after_step(state)
    assert swa.n_averaged == 1
    # epoch budget: 0.5 * 2 epochs * 4 batches = step 4
    s2 = TrainState(model=model, optimizer=state.optimizer, loss_fn=F.cross_entropy, device=torch.device("cpu"),
                    max_epochs=2, batches_per_epoch=4)
    assert SWA(start_fraction=0.5).resolve_start(s2) == 4
    s3 = TrainState(model=model, optimizer=state.optimizer, loss_fn=F.cross_entropy, device=torch.device("cpu"),
                    max_seconds=5.0, batches_per_epoch=4)
    with pytest.raises(ValueError, match="start_step"):
        SWA().resolve_start(s3)


@pytest.mark.parametrize("kwargs", [{"start_step": -1}, {"start_fraction": 1.0}, {"every": 0},
                                    {"bn_batches": 0}, {"every": 1.5}])
def test_swa_invalid_args(kwargs) -> None:
    with pytest.raises(ValueError):
        SWA(**kwargs)


def test_swa_recompute_does_not_shift_the_training_rng() -> None:
    """With dropout, the BN recompute's forward passes draw random numbers; they run under a forked RNG, so a
    run that evaluates ends with exactly the weights of one that does not (reference: the run without eval)."""
    x, y = _data(64)
    finals = []
    for eval_data in (None, _data(16, seed=9)):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 3))
        Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), InMemoryLoader(x, y, 16, seed=0),
                techniques=[SWA(start_step=1)], max_steps=8, eval_data=eval_data, eval_every=2).fit()
        finals.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*finals))


def test_swa_state_dict_round_trip() -> None:
    torch.manual_seed(0)
    x, y = _data()
    model = nn.Linear(5, 3)
    swa = SWA(start_step=1)
    Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), InMemoryLoader(x, y, 16, seed=0),
            techniques=[swa], max_steps=4).fit()
    sd = swa.state_dict()
    assert sd["n_averaged"] == 4 and sd["start"] == 1
    other = SWA(start_step=1)
    other.on_fit_start(SimpleNamespace(raw_model=nn.Linear(5, 3), max_steps=4))
    other.load_state_dict(sd)
    assert other.n_averaged == 4 and all(torch.equal(a, b) for a, b in zip(other.average, swa.average))
    fresh = SWA()
    fresh.load_state_dict(sd)
    sd["average"][0].add_(1.0)  # the loaded copy does not alias the source
    assert not torch.equal(fresh.average[0], sd["average"][0])
    wrong = SWA()
    two = nn.Sequential(nn.Linear(5, 3), nn.Linear(3, 3))
    wrong.on_fit_start(TrainState(model=two, optimizer=torch.optim.SGD(two.parameters(), lr=0.1),
                                  loss_fn=F.cross_entropy, device=torch.device("cpu"), max_steps=4))
    with pytest.raises(ValueError, match="tensors"):
        wrong.load_state_dict(sd)


def test_ema_and_swa_are_refused_together_naming_both() -> None:
    with pytest.raises(ConflictError) as info:
        plan([EMA(), SWA()])
    msg = str(info.value)
    assert "'ema'" in msg and "'swa'" in msg and "eval_weights" in msg
    model = nn.Linear(2, 2)
    with pytest.raises(ConflictError, match="swa"):
        Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1),
                InMemoryLoader(torch.randn(8, 2), torch.zeros(8, dtype=torch.long), 4),
                techniques=[SWA(), EMA()], max_steps=1)


class LrRecorder(Technique):
    """Reads the learning rate each step actually used (after_step sees the lr of the step just taken)."""

    name = "lr_recorder"
    reads = frozenset({"lr"})

    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_after_step(self, state) -> None:
        self.lrs.append(float(state.optimizer.param_groups[0]["lr"]))


def test_swa_lr_anneals_linearly_then_stays_constant() -> None:
    # reference: the closed form of torch's SWALR linear anneal, lr_t = lr0 + (swa_lr - lr0) * min(1, k / A)
    # for the k-th step of the SWA phase (k = 1, 2, ...), lr0 the rate in force when the phase starts
    x, y = _data()
    model = nn.Linear(5, 3)
    rec = LrRecorder()
    Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), InMemoryLoader(x, y, 16, seed=0),
            techniques=[SWA(start_step=4, swa_lr=0.02, anneal_steps=3), rec], max_steps=10).fit()
    lr0, swa_lr = 0.1, 0.02
    expected = [0.1] * 4 + [lr0 + (swa_lr - lr0) * min(1.0, k / 3) for k in range(1, 7)]
    assert rec.lrs == pytest.approx(expected, rel=1e-12)


def test_swa_lr_overrides_a_schedule_owner_without_conflict() -> None:
    from tricklab.techniques import LRSchedule

    x, y = _data()
    model = nn.Linear(5, 3)
    swa, sched, rec = SWA(start_step=5, swa_lr=0.05), LRSchedule("cosine"), LrRecorder()
    p = plan([swa, sched, rec])  # both write lr: allowed, SWA composes with the schedule owner
    order = [p.names[i] for i in p.order["before_step"]]
    assert order.index("lr_schedule") < order.index("swa")
    Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), InMemoryLoader(x, y, 16, seed=0),
            techniques=[swa, sched, rec], max_steps=8).fit()
    import math

    cosine = [0.1 * 0.5 * (1 + math.cos(math.pi * t / 8)) for t in range(5)]
    assert rec.lrs[:5] == pytest.approx(cosine, rel=1e-12) and rec.lrs[5:] == pytest.approx([0.05] * 3)
    # without swa_lr SWA does not touch the learning rate, so it declares no lr write
    assert "lr" not in SWA().writes and "lr" in swa.writes
