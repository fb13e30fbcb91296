"""Checkpointing: files every N steps, keep_last, loadable with load_checkpoint, and exact resume.

Reference for resume: the uninterrupted run (same seed, same recipe); the resumed run must end with
torch.equal weights, optimizer state and EMA shadow (CPU, SGD with momentum, shuffling, dropout, a crash
in the middle of an epoch after the last checkpoint).
"""

from __future__ import annotations

import pytest
import torch
from crash_helpers import Crash, Crasher
from torch import nn

from tricklab.data import InMemoryLoader
from tricklab.techniques import EMA, Checkpointing
from tricklab.train import Trainer
from tricklab.train.checkpoint import list_checkpoints, load_checkpoint


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(40, 5, generator=g), torch.randint(0, 3, (40,), generator=g)


def _trainer(folder, extra=(), max_steps=17, every=4, keep_last=2, model_seed=0):
    torch.manual_seed(model_seed)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = _data()
    ema = EMA(decay=0.9)
    techniques = [ema, *extra]
    if folder is not None:
        techniques.append(Checkpointing(every_steps=every, keep_last=keep_last, folder=str(folder)))
    torch.manual_seed(123)  # the global RNG (dropout) starts from the same state in every run
    trainer = Trainer(model, opt, InMemoryLoader(x, y, 8, seed=5, shuffle=True), techniques=techniques,
                      max_steps=max_steps, eval_data=(x, y), eval_every=3, log_every=2)
    return trainer, model, opt, ema


def test_files_every_n_steps_and_keep_last(tmp_path) -> None:
    trainer, *_ = _trainer(tmp_path, max_steps=10, every=3, keep_last=2)
    ck = trainer.techniques[-1]
    trainer.fit()
    # saved at 3, 6, 9 and at the end (10); only the newest 2 remain, each with its tensor file
    assert [int(p.stem.split("-")[1]) for p in list_checkpoints(tmp_path)] == [9, 10]
    assert [p.rsplit("step-", 1)[1] for p in ck.saved] == [f"{s:08d}.json" for s in (3, 6, 9, 10)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "step-00000009.json", "step-00000009.safetensors", "step-00000010.json", "step-00000010.safetensors"]


def test_no_extra_save_at_fit_end_when_the_last_step_was_saved(tmp_path) -> None:
    trainer, *_ = _trainer(tmp_path, max_steps=8, every=4, keep_last=5)
    trainer.fit()
    assert [int(p.stem.split("-")[1]) for p in list_checkpoints(tmp_path)] == [4, 8]


def test_checkpoint_loads_and_holds_the_trainer_state(tmp_path) -> None:
    trainer, model, opt, ema = _trainer(tmp_path, max_steps=8, every=4)
    trainer.fit()
    state = load_checkpoint(list_checkpoints(tmp_path)[-1])
    assert state["step"] == 8 and state["loader"]["epoch"] == 1 and state["loader"]["batch_index"] == 3
    for k, v in model.state_dict().items():
        assert torch.equal(state["model"][k], v)
    assert all(torch.equal(a, b) for a, b in zip(state["techniques"]["ema"]["shadow"], ema.shadow))
    assert state["techniques"]["checkpointing"] == {}
    assert [r["step"] for r in state["history"]] == [2, 3, 4, 6, 8]


def test_run_dir_default_folder_and_missing_folder_error(tmp_path) -> None:
    torch.manual_seed(0)
    x, y = _data()
    model = nn.Linear(5, 3)
    Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), InMemoryLoader(x, y, 8),
            techniques=[Checkpointing(every_steps=2)], max_steps=2, run_dir=tmp_path).fit()
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step-00000002.json"]
    t = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), InMemoryLoader(x, y, 8),
                techniques=[Checkpointing(every_steps=1)], max_steps=2)
    with pytest.raises(ValueError, match="folder"):
        t.fit()


def test_resume_mid_epoch_is_bit_identical_to_uninterrupted_run(tmp_path) -> None:
    # uninterrupted reference
    ref_trainer, ref_model, ref_opt, ref_ema = _trainer(None)
    ref_trainer.fit()

    # a run that checkpoints every 4 steps and dies after step 14 (last checkpoint: step 12, which is
    # batch 2 of epoch 2: 5 batches per epoch, so mid-epoch)
    crashed, *_ = _trainer(tmp_path, extra=[Crasher(14)])
    with pytest.raises(Crash):
        crashed.fit()
    assert [int(p.stem.split("-")[1]) for p in list_checkpoints(tmp_path)] == [8, 12]
    assert load_checkpoint(list_checkpoints(tmp_path)[-1])["loader"]["batch_index"] == 2

    # a fresh process: new model init, new optimizer, new loader, a different global RNG state
    resumed, model, opt, ema = _trainer(tmp_path, model_seed=99)
    torch.manual_seed(7)
    st = resumed.fit(resume_from=tmp_path)
    assert st.resumed_from.endswith("step-00000012.json")
    assert st.step == 17
    for (k, a), b in zip(model.state_dict().items(), ref_model.state_dict().values()):
        assert torch.equal(a, b), k
    for a, b in zip(ema.shadow, ref_ema.shadow):
        assert torch.equal(a, b)
    assert ema.num_updates == ref_ema.num_updates == 17
    for a, b in zip(opt.state_dict()["state"].values(), ref_opt.state_dict()["state"].values()):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])
    # the history has no duplicate or missing rows, and the evaluations agree
    assert [r["step"] for r in st.history] == [r["step"] for r in ref_trainer.state.history]
    for a, b in zip(st.history, ref_trainer.state.history):
        assert a.get("eval_loss") == b.get("eval_loss")


def test_resume_from_a_checkpoint_file(tmp_path) -> None:
    ref_trainer, ref_model, *_ = _trainer(None, max_steps=10)
    ref_trainer.fit()
    first, *_ = _trainer(tmp_path, max_steps=10, extra=[Crasher(9)], keep_last=5)
    with pytest.raises(Crash):
        first.fit()
    resumed, model, *_ = _trainer(tmp_path, max_steps=10, model_seed=3)
    resumed.fit(resume_from=list_checkpoints(tmp_path)[0])  # step 4
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), ref_model.parameters()))


@pytest.mark.parametrize("kwargs", [{"every_steps": 0}, {"keep_last": 0}, {"every_steps": 2.0}])
def test_invalid_args(kwargs) -> None:
    with pytest.raises(ValueError):
        Checkpointing(**kwargs)


def test_state_dict_round_trip() -> None:
    c = Checkpointing()
    assert c.state_dict() == {}
    Checkpointing().load_state_dict(c.state_dict())
