"""JSONL metric log: one JSON object per history row; on resume the file is rewritten from the
checkpoint's history, so rows written after the checkpoint by a killed run do not appear twice.
Reference: the trainer's own ``state.history`` (the file must equal it row for row)."""

from __future__ import annotations

import json

import pytest
import torch
from crash_helpers import Crash, Crasher
from torch import nn

from tricklab.data import InMemoryLoader
from tricklab.techniques import Checkpointing, MetricsLog
from tricklab.train import Technique, Trainer


def _trainer(run_dir, extra=(), max_steps=12, path=None):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 4, generator=g), torch.randint(0, 3, (32,), generator=g)
    model = nn.Linear(4, 3)
    techniques = [MetricsLog(path=path), Checkpointing(every_steps=4, keep_last=2), *extra]
    return Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), InMemoryLoader(x, y, 8, seed=1),
                   techniques=techniques, max_steps=max_steps, log_every=2, eval_data=(x, y), eval_every=3,
                   run_dir=run_dir)


def _rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_rows_are_json_lines_equal_to_history(tmp_path) -> None:
    st = _trainer(tmp_path).fit()
    rows = _rows(tmp_path / "metrics.jsonl")
    assert rows == st.history
    assert [r["step"] for r in rows] == [2, 3, 4, 6, 8, 9, 10, 12]
    assert all("train_loss" in r and "lr" in r for r in rows)
    assert all("eval_accuracy" in r for r in rows if r["step"] % 3 == 0)


def test_rows_are_flushed_as_training_goes(tmp_path) -> None:
    class Peek(Technique):
        name = "peek"
        after = frozenset({"metrics_log"})

        def __init__(self) -> None:
            self.counts: list[int] = []

        def on_log(self, state) -> None:
            self.counts.append(len((tmp_path / "metrics.jsonl").read_text().splitlines()))

    peek = Peek()
    _trainer(tmp_path, extra=[peek], max_steps=6).fit()
    assert peek.counts == [1, 2, 3, 4]


def test_resume_rewrites_the_file_without_duplicates(tmp_path) -> None:
    with pytest.raises(Crash):
        _trainer(tmp_path, extra=[Crasher(11)]).fit()  # last checkpoint at step 8, rows up to 10 written
    before = _rows(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in before] == [2, 3, 4, 6, 8, 9, 10]
    st = _trainer(tmp_path).fit(resume_from=tmp_path / "checkpoints")
    rows = _rows(tmp_path / "metrics.jsonl")
    steps = [r["step"] for r in rows]
    assert steps == [2, 3, 4, 6, 8, 9, 10, 12] and len(set(steps)) == len(steps)
    assert rows == st.history
    # reference: the rows up to the checkpoint are the ones the first run wrote, unchanged
    assert rows[:5] == before[:5]


def test_explicit_path_and_missing_path_error(tmp_path) -> None:
    target = tmp_path / "sub" / "log.jsonl"
    st = _trainer(tmp_path, max_steps=4, path=str(target)).fit()
    assert _rows(target) == st.history
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    t = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1),
                InMemoryLoader(torch.randn(8, 4), torch.zeros(8, dtype=torch.long), 4),
                techniques=[MetricsLog()], max_steps=1)
    with pytest.raises(ValueError, match="path"):
        t.fit()


def test_stateless_round_trip() -> None:
    assert MetricsLog().state_dict() == {}
    MetricsLog().load_state_dict({})
