"""`tricklab explain RUN_DIR` end to end: a real (tiny) `tricklab run`, then the page. Reference: the page's
scores.json against explain_run's own output layout (tests/explain/test_report.py checks its numbers against
faithfulness_scores); bad input exits 2 with a message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tricklab.cli import main

pytest.importorskip("matplotlib")


def test_explain_a_trained_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert main(["run", "task=digits", "model.name=mlp", "budget.steps=20", "--out", str(run)]) == 0
    capsys.readouterr()
    code = main(["explain", str(run), "--examples", "3", "--method", "gradient", "--method", "random",
                 "--out", str(tmp_path / "page")])
    out, err = capsys.readouterr()
    assert code == 0 and out.strip() == str(tmp_path / "page" / "index.html")
    assert "explain: gradient (1/2) on 3 examples" in err  # progress, one line per method
    scores = json.loads((tmp_path / "page" / "scores.json").read_text())
    assert [m["method"] for m in scores["methods"]] == ["gradient", "random"]
    assert len(scores["meta"]["examples"]) == 3


def test_explain_refuses_a_folder_without_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", str(tmp_path)]) == 2
    assert "recipe.yaml is missing" in capsys.readouterr().err
