"""Progress display: plain periodic lines (logs, CI) or a rich bar; both write to the given stream.
Reference: the trainer's history rows (each printed line carries that row's step and loss)."""

from __future__ import annotations

import io
import re

import torch
from torch import nn

from tricklab.data import InMemoryLoader
from tricklab.techniques import EarlyStopping, Progress
from tricklab.techniques.progress import _fmt
from tricklab.train import Trainer


def _fit(progress, max_steps=6, **kw):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 4, generator=g), torch.randint(0, 3, (32,), generator=g)
    model = nn.Linear(4, 3)
    return Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), InMemoryLoader(x, y, 8, seed=0),
                   techniques=[progress, *kw.pop("techniques", [])], max_steps=max_steps, log_every=2,
                   **kw).fit()


def test_plain_mode_prints_a_line_per_row() -> None:
    out = io.StringIO()
    st = _fit(Progress(every_seconds=0.0, stream=out, rich=False))
    lines = out.getvalue().splitlines()
    assert len(lines) == len(st.history) == 3
    for line, row in zip(lines, st.history):
        assert line.startswith("[train] step ") and f"step {row['step']}/6" in line
        m = re.search(r"train_loss ([0-9.e+-]+)", line)
        assert m and float(m.group(1)) == float(f"{row['train_loss']:.4g}")


def test_plain_mode_throttles_but_always_prints_evaluations() -> None:
    out = io.StringIO()
    g = torch.Generator().manual_seed(1)
    ex, ey = torch.randn(8, 4, generator=g), torch.randint(0, 3, (8,), generator=g)
    _fit(Progress(every_seconds=3600.0, stream=out, rich=False), eval_data=(ex, ey), eval_every=3)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and all("eval_accuracy" in line for line in lines)
    assert "step 3/6" in lines[0] and "step 6/6" in lines[1]


def test_stop_reason_is_printed() -> None:
    out = io.StringIO()
    g = torch.Generator().manual_seed(1)
    ex, ey = torch.randn(8, 4, generator=g), torch.randint(0, 3, (8,), generator=g)
    _fit(Progress(every_seconds=3600.0, stream=out, rich=False), max_steps=50, eval_data=(ex, ey),
         eval_every=1, techniques=[EarlyStopping(metric="loss", mode="min", patience=1, min_delta=100.0)])
    assert "early stopping" in out.getvalue()


def test_rich_mode_writes_to_the_stream() -> None:
    out = io.StringIO()
    progress = Progress(stream=out, rich=True)
    st = _fit(progress, max_steps=4)
    text = out.getvalue()
    assert text.strip() and "train" in text and "4/4" in text
    assert progress._bar is None  # stopped at fit_end
    assert st.step == 4


def test_auto_mode_uses_plain_lines_when_not_a_tty() -> None:
    out = io.StringIO()  # isatty() is False
    _fit(Progress(every_seconds=0.0, stream=out))
    assert out.getvalue().startswith("[train] step")


def test_fmt() -> None:
    row = {"step": 5, "train_loss": 0.123456, "lr": 0.1, "seconds": 2.26, "eval_accuracy": 0.5}
    assert _fmt(row, 10) == "step 5/10 | train_loss 0.1235 | eval_accuracy 0.5 | lr 0.1 | 2.3s"
    assert _fmt({"step": 1}) == "step 1 | 0.0s"


def test_stateless_round_trip() -> None:
    assert Progress().state_dict() == {}
    Progress().load_state_dict({})
