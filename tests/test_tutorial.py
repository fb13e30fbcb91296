"""docs/tutorial.md cannot rot: every code block of the page runs here, in order, in a fresh folder, with tiny
budgets (the Python blocks through ``tricklab.ablate`` with the budget and seeds replaced, the command lines
through ``tricklab.cli.main`` with ``--budget`` and ``--seeds`` replaced). What is checked: every block runs, the
ablations end with a report and a verdict row per technique and metric the page promises."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

import tricklab.lab.api as api

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "tutorial.md"
TINY = {"budget": 12, "seeds": 1, "jobs": 2}


def blocks(text: str) -> list[tuple[str, str]]:
    """(language, code) of every fenced block, in order."""
    return [(m.group(1), m.group(2)) for m in re.finditer(r"```(\w+)\n(.*?)```", text, re.S)]


def run_command(line: str) -> tuple[int, str, str]:
    from tricklab.cli import main

    args = shlex.split(line.replace("\\\n", " "))
    assert args[0] == "tricklab"
    args = args[1:]
    for flag, value in (("--budget", str(TINY["budget"])), ("--seeds", str(TINY["seeds"]))):
        args[args.index(flag) + 1] = value
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([*args, "--jobs", str(TINY["jobs"])])
    return code, out.getvalue(), err.getvalue()


@pytest.mark.slow  # four ablations with worker processes: about three minutes on 2 shared cores
def test_every_block_of_the_tutorial_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pandas")
    pytest.importorskip("PIL")
    monkeypatch.chdir(tmp_path)
    real = api.ablate
    results: list[Any] = []

    def tiny_ablate(*args: Any, **kwargs: Any) -> Any:
        results.append(real(*args, **{**kwargs, **TINY, "quiet": True}))
        return results[-1]

    monkeypatch.setattr(api, "ablate", tiny_ablate)
    found = blocks(TUTORIAL.read_text(encoding="utf-8"))
    assert [lang for lang, _ in found] == ["python", "python", "bash", "python", "python", "bash"]
    namespace: dict[str, Any] = {}
    for lang, code in found:
        if lang == "python":
            with contextlib.redirect_stdout(io.StringIO()):
                exec(compile(code, str(TUTORIAL), "exec"), namespace)  # noqa: S102 - the page's own code
        else:
            status, out, err = run_command(code)
            assert status == 0, err + out
            assert "report:" in out

    houses, stripes = results
    assert houses.variants == ["baseline", "ema", "swa", "weight_penalty(l2=0.001)"] and houses.report.is_file()
    assert {"mse", "rmse", "mae", "r2"} <= set(houses.table["metric"])
    assert stripes.variants == ["baseline", "label_smoothing", "mixup"] and stripes.report.is_file()
    assert set(stripes.table.query("metric == 'accuracy'")["variant"]) == {"label_smoothing", "mixup"}
    for folder in ("runs/houses-cli", "runs/stripes-cli"):
        assert (tmp_path / folder / "report.html").is_file()
