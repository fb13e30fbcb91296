"""The trainer against a plain hand-written PyTorch loop (the reference), and its budget and resume rules."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tricklab.data import InMemoryLoader
from tricklab.errors import ConfigError
from tricklab.techniques import EMA, Checkpointing, GradAccumulation
from tricklab.train import Trainer


def _data(n: int = 96, d: int = 5, c: int = 3):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    return x, y


def _model() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 3))


def test_trainer_equals_plain_loop_bit_for_bit() -> None:
    # reference: the simplest PyTorch loop over the same batches, the same global RNG (dropout)
    x, y = _data()
    ref = _model()
    opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    loader = InMemoryLoader(x, y, 16, seed=3)
    torch.manual_seed(5)
    for _ in range(2):  # 2 epochs of 6 batches
        for xb, yb in loader:
            loss = F.cross_entropy(ref(xb), yb)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    model = _model()
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
                      InMemoryLoader(x, y, 16, seed=3), max_epochs=2)
    torch.manual_seed(5)
    state = trainer.fit()
    assert state.step == 12 and state.epoch == 2
    for a, b in zip(ref.parameters(), model.parameters()):
        assert torch.equal(a, b)


def test_budget_steps_and_seconds() -> None:
    x, y = _data()
    model = _model()
    t = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), InMemoryLoader(x, y, 16), max_steps=7)
    assert t.fit().step == 7
    t = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), InMemoryLoader(x, y, 16), max_seconds=0.05)
    s = t.fit()
    assert s.step >= 1 and s.train_seconds >= 0.05


def test_missing_budget_is_refused() -> None:
    x, y = _data()
    model = _model()
    with pytest.raises(ConfigError, match="budget"):
        Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), InMemoryLoader(x, y, 16))


def test_gradient_accumulation_counts_optimizer_steps() -> None:
    x, y = _data()
    model = _model()
    t = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), InMemoryLoader(x, y, 16),
                techniques=[GradAccumulation(3)], max_steps=4)
    s = t.fit()
    assert s.step == 4 and s.micro_step == 12


def _run(tmp_path, steps: int, resume: bool, every: int = 1, accum: int = 2) -> nn.Module:
    x, y = _data()
    model = _model()
    trainer = Trainer(model, torch.optim.Adam(model.parameters(), lr=1e-2), InMemoryLoader(x, y, 16, seed=7),
                      techniques=[EMA(decay=0.9), GradAccumulation(accum), Checkpointing(every_steps=every)],
                      eval_data=(x, y), eval_every=2, max_steps=steps, run_dir=tmp_path)
    torch.manual_seed(11)
    trainer.fit(resume_from=tmp_path / "checkpoints" if resume else None)
    return model, trainer


@pytest.mark.parametrize("stop_at", [1, 3, 4, 5])
def test_resume_in_process_is_bit_identical(tmp_path, stop_at: int) -> None:
    # reference: one uninterrupted run of 8 optimizer steps (3 per epoch with accumulation 2 -> crosses epochs)
    full, full_tr = _run(tmp_path / "full", 8, resume=False)
    _run(tmp_path / "part", stop_at, resume=False)
    resumed, res_tr = _run(tmp_path / "part", 8, resume=True)
    for a, b in zip(full.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    ema_full, ema_res = full_tr.techniques[0].shadow, res_tr.techniques[0].shadow
    assert all(torch.equal(a, b) for a, b in zip(ema_full, ema_res))
    assert full_tr.state.history == res_tr.state.history or [
        {k: v for k, v in r.items() if k != "seconds"} for r in full_tr.state.history
    ] == [{k: v for k, v in r.items() if k != "seconds"} for r in res_tr.state.history]


def test_streaming_loader_trains_like_the_in_memory_loader() -> None:
    # reference: the same run over InMemoryLoader; StreamingLoader draws the same batches through DataLoader
    from torch.utils.data import TensorDataset

    from tricklab.data import StreamingLoader

    x, y = _data()
    results = []
    for loader in (InMemoryLoader(x, y, 16, seed=4), StreamingLoader(TensorDataset(x, y), 16, seed=4)):
        model = _model()
        torch.manual_seed(2)
        Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), loader, max_steps=9).fit()
        results.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*results))
