"""``tensorboard_log`` read back with TensorBoard's own reader (``EventAccumulator``). References: the
trainer's ``state.history`` (every logged row, value for value, at its step, as float32), the run folder's
``recipe.yaml`` (the text and hyperparameters), and an uninterrupted run (a resumed run shows each step once)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from tricklab.data import InMemoryLoader
from tricklab.lab.recipe import load_recipe
from tricklab.lab.runner import run
from tricklab.techniques import Checkpointing
from tricklab.train import Trainer

ROOT = Path(__file__).resolve().parents[2]
TINY = ["budget.steps=20", "eval_every=10", "log_every=5", "eval_batch_size=500", "threads=1", "progress=false"]


def _run(tmp_path: Path, techniques: str):
    recipe = load_recipe(ROOT / "recipes" / "mnist1d-cnn-paper.yaml", [*TINY, f"techniques=[{techniques}]"])
    return run(recipe, out=tmp_path / "run")


def test_tensorboard_events_hold_the_metrics_per_step_and_the_recipe(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = _run(tmp_path, "tensorboard_log")
    history = result.trainer.state.history
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    for key in ("train_loss", "eval_accuracy", "lr"):
        logged = [(e.step, e.value) for e in events.Scalars(key)]
        # event files store float32: compare with the history rounded the same way
        assert logged == [(r["step"], float(torch.tensor(r[key], dtype=torch.float32))) for r in history if key in r]
    assert "recipe/text_summary" in events.Tags()["tensors"]
    text = events.Tensors("recipe/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "optimizer.lr: 0.01" in text and "budget.steps: 20" in text
    hparams = events.PluginTagToContent("hparams")
    assert "_hparams_/session_start_info" in hparams


def _trainer(log_dir: Path, ckpt: Path, seed: int) -> Trainer:
    from tricklab.techniques import TensorboardLog

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(48, 4, generator=g), torch.randint(0, 3, (48,), generator=g)
    torch.manual_seed(seed)
    model = nn.Linear(4, 3)
    return Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), InMemoryLoader(x, y, 8, seed=0),
                   techniques=[TensorboardLog(log_dir=str(log_dir)), Checkpointing(every_steps=3, folder=str(ckpt))],
                   log_every=1, max_steps=6)


def test_a_resumed_run_shows_each_step_once_in_tensorboard(tmp_path: Path) -> None:
    """Reference: an uninterrupted run's scalars. The interrupted run logged steps 1-6 before the 'kill'; the
    resumed run (from the step-3 checkpoint) purges steps 4-6 and writes them again."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    full = _trainer(tmp_path / "full", tmp_path / "c1", 0).fit()
    _trainer(tmp_path / "tb", tmp_path / "c2", 0).fit()  # the first attempt: all six steps logged
    _trainer(tmp_path / "tb", tmp_path / "c2", 1).fit(resume_from=tmp_path / "c2" / "step-00000003.json")
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    steps = [e.step for e in events.Scalars("train_loss")]
    assert steps == [1, 2, 3, 4, 5, 6]
    reference = [float(torch.tensor(r["train_loss"], dtype=torch.float32)) for r in full.history]
    assert [e.value for e in events.Scalars("train_loss")] == reference
