"""The lab's Python API (``tricklab.run`` / ``tricklab.ablate``, tricklab/lab/api.py).

Reference: the command line on the same recipe and seeds. Both go through the same plan, runner, store and
analysis; on the CPU a run is deterministic for its seed, so every quality metric's paired difference, its
95% interval and its p-value must be equal to the last bit. Timing metrics (and so the Holm family that
includes them) depend on the machine's load and are compared for presence only."""

from __future__ import annotations

import contextlib
import io
import math
from pathlib import Path

import numpy as np
import pytest

import tricklab
from tricklab.errors import ConfigError
from tricklab.lab.ablate import collect
from tricklab.lab.api import TABLE_COLUMNS, build_recipe, reference_of, verdict_rows


def cli(*args: str) -> tuple[int, str, str]:
    from tricklab.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def _write_csv(path: Path, n: int = 240) -> None:
    """Three classes from two of four Gaussian features."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4))
    label = np.where(x[:, 0] + x[:, 1] > 0.5, "high", np.where(x[:, 0] - x[:, 1] > 0, "mid", "low"))
    path.write_text("a,b,c,d,label\n" + "".join(f"{r[0]:.4f},{r[1]:.4f},{r[2]:.4f},{r[3]:.4f},{c}\n"
                                                  for r, c in zip(x, label)))


def _recipe(folder: Path) -> Path:
    _write_csv(folder / "points.csv")
    recipe = folder / "points.yaml"
    recipe.write_text(f"data: {{format: csv, path: {folder / 'points.csv'}, target: label}}\n"
                      "model: {name: mlp, args: {hidden: 16}}\nbudget: {steps: 40}\nbatch_size: 32\n"
                      "eval_every: 20\nlog_every: 20\nthreads: 1\nseeds: [0, 1]\n")
    return recipe


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a == b or (math.isnan(a) and math.isnan(b))


@pytest.mark.slow  # an ablation in worker processes (about a minute on 2 shared cores)
def test_the_api_gives_the_cli_verdict_numbers(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path)
    code, _, err = cli("ablate", str(recipe), "--techniques", "label_smoothing:eps=0.2", "--seeds", "2", "--jobs",
                       "2", "--out", str(tmp_path / "cli"))
    assert code == 0, err
    said: list[str] = []
    result = tricklab.ablate(recipe, techniques=[("label_smoothing", {"eps": 0.2})], seeds=2, jobs=2,
                             out=tmp_path / "api", say=said.append)
    assert result.variants == ["baseline", "label_smoothing(eps=0.2)"]
    assert result.report == tmp_path / "api" / "report.html" and result.report.is_file()
    assert {p.name for p in result.cards} == {"label_smoothing_eps=0.2_.md", "label_smoothing_eps=0.2_.json"}
    assert any("[6/6]" in line for line in said)  # 2 variants x 2 seeds + 2 control runs, reported as they end

    table = result.table  # a DataFrame when pandas is installed (it is, with the tables extra)
    pd = pytest.importorskip("pandas")
    assert isinstance(table, pd.DataFrame) and tuple(table.columns) == TABLE_COLUMNS and result.table_note is None
    rows = {(r["variant"], r["metric"]): r for r in table.to_dict("records")}
    reference = {(r["variant"], r["metric"]): r for r in verdict_rows(collect(tmp_path / "cli")[0])}
    assert set(rows) == set(reference)
    quality = [k for k in reference if result.summary.metric(k[1]).kind == "quality"]
    assert {"accuracy", "macro_f1", "nll", "ece"} <= {k[1] for k in quality}
    for key in quality:
        for col in ("baseline_mean", "variant_mean", "mean_diff", "ci_low", "ci_high", "p_value"):
            assert _same(rows[key][col], reference[key][col]), (key, col, rows[key][col], reference[key][col])
    assert result.verdicts()["label_smoothing(eps=0.2)"]["accuracy"] in ("helps", "hurts", "no clear effect",
                                                                       "identical")

    # resume: the same call again runs nothing and reads the same store
    again: list[str] = []
    second = tricklab.ablate(recipe, techniques=["label_smoothing:eps=0.2"], seeds=2, out=tmp_path / "api",
                             say=again.append)
    assert any("6 of 6 runs already finished" in line for line in again)
    assert second.summary.paired == result.summary.paired


def test_run_takes_a_mapping_with_keyword_overrides(tmp_path: Path) -> None:
    _write_csv(tmp_path / "points.csv")
    result = tricklab.run({"data": {"path": str(tmp_path / "points.csv"), "target": "label"}}, out=tmp_path / "r",
                          budget={"steps": 5}, threads=1, progress=False, optimizer__lr=0.005, eval_every=None)
    saved = (tmp_path / "r" / "recipe.yaml").read_text()
    assert result.summary.steps == 5 and result.summary.model == "mlp" and "lr: 0.005" in saved
    assert result.summary.test.value("accuracy") is not None


def test_recipe_arguments_and_their_errors(tmp_path: Path) -> None:
    r = build_recipe(data={"path": "x.csv", "target": "y"}, task_kind="regression", budget=100,
                     overrides=["optimizer.lr=0.003"])
    assert (r.task, r.model.name, r.task_args, r.budget.steps, r.optimizer.lr) == \
        ("files", "mlp", {"kind": "regression"}, 100, 0.003)
    assert build_recipe(data="wine").task == "wine"
    assert build_recipe(model="mymod:make", data="mymod:load").data.args == {"code": "mymod:load"}
    assert reference_of(build_recipe, "model") == "tricklab.lab.api:build_recipe"

    def local_factory() -> None:
        return None

    with pytest.raises(ConfigError, match="cannot be imported by the worker processes"):
        reference_of(local_factory, "model")
    with pytest.raises(ConfigError, match="techniques: expected"):
        tricklab.ablate(techniques=[3], out=tmp_path / "x")
    with pytest.raises(ConfigError, match="unknown key 'optimiser'"):
        build_recipe(optimiser__lr=0.1)
