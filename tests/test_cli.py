"""The `tricklab` command: bad input exits 2 with a message naming the problem, no traceback; training
failures exit 1 saying where the log is; `list` prints every registry."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path



def tricklab(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI in this process (fast); `test_run_writes_the_run_folder` runs the real command."""
    import contextlib
    import io

    from tricklab.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def tricklab_subprocess(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "tricklab", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def assert_bad_input(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("task: mnist1d\nmodel:\n  name: cnn\n  args: {channels: 25\nseed: 1\n")
    assert_bad_input(tricklab("run", str(recipe), "--out", str(tmp_path / "o")), "malformed YAML", "line")


def test_unknown_names_suggest_the_closest(tmp_path: Path) -> None:
    assert_bad_input(tricklab("run", "model.name=cnnn", "--out", str(tmp_path / "a")), "unknown model 'cnnn'",
                     "did you mean 'cnn'")
    assert_bad_input(tricklab("run", "techniques=emma", "--out", str(tmp_path / "b")), "unknown technique",
                     "'ema'")
    assert_bad_input(tricklab("run", "optimizer.name=adamm", "--out", str(tmp_path / "c")), "'adam'")
    assert_bad_input(tricklab("run", "budgett.steps=3", "--out", str(tmp_path / "d")), "unknown key 'budgett'",
                     "did you mean 'budget'")


def test_wrong_argument_types(tmp_path: Path) -> None:
    assert_bad_input(tricklab("run", "optimizer.lr=fast", "--out", str(tmp_path / "a")), "optimizer.lr",
                     "expected a number")
    assert_bad_input(tricklab("run", "techniques=[{name: ema, args: {decay: slow}}]", "--out", str(tmp_path / "b")),
                     "decay", "expected a number")
    assert_bad_input(tricklab("run", "techniques=[{name: ema, args: {decy: 0.9}}]", "--out", str(tmp_path / "c")),
                     "no argument 'decy'", "decay=")
    assert_bad_input(tricklab("run", "budget.steps=-5", "--out", str(tmp_path / "d")), "budget.steps")


def test_conflicting_techniques_are_refused_naming_both(tmp_path: Path) -> None:
    # two weight averagers: both write the exclusive eval_weights slot
    r = tricklab("run", "techniques=[{name: ema, args: {decay: 0.99}}, {name: ema, args: {decay: 0.9}}]",
                 "--out", str(tmp_path / "a"))
    assert_bad_input(r, "techniques 'ema' and 'ema#2' conflict", "eval_weights")
    assert not (tmp_path / "a").exists()  # refused before anything ran


def test_missing_data_folder(tmp_path: Path) -> None:
    r = tricklab("run", "task=fashion-mnist", "--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"))
    assert_bad_input(r, "dataset-fashion-mnist", "--data-dir", str(tmp_path / "nowhere"))


def test_missing_recipe_file_and_bad_override(tmp_path: Path) -> None:
    assert_bad_input(tricklab("run", str(tmp_path / "none.yaml")), "does not exist")
    assert_bad_input(tricklab("run", "--out", str(tmp_path / "x"), "--nonsense"), "unrecognized arguments")


def test_existing_run_folder_needs_resume(tmp_path: Path) -> None:
    out = tmp_path / "run"
    ok = tricklab("run", "budget.steps=5", "eval_every=5", "progress=false", "--out", str(out))
    assert ok.returncode == 0, ok.stderr
    assert_bad_input(tricklab("run", "budget.steps=5", "--out", str(out)), "already holds a run", "--resume")
    assert_bad_input(tricklab("run", "budget.steps=6", "--out", str(out), "--resume"), "recipe differs")


def test_divergence_exits_1_with_message(tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = tricklab("run", "optimizer.name=sgd", "optimizer.lr=1e30", "budget.steps=50",
                 "techniques=[{name: nan_guard, args: {max_consecutive: 2}}]", "progress=false", "--out", str(out))
    assert r.returncode == 1, r.stderr
    assert "training failed" in r.stderr and "non-finite" in r.stderr and str(out) in r.stderr
    assert "Traceback" not in r.stderr


def test_list_prints_every_registry() -> None:
    r = tricklab_subprocess("list")
    assert r.returncode == 0, r.stderr
    for word in ("tasks", "mnist1d", "models", "cnn", "optimizers", "adamw", "schedules", "cosine", "techniques",
                 "ema", "grad_clip", "datasets", "fashion-mnist"):
        assert word in r.stdout


def test_run_writes_the_run_folder(tmp_path: Path) -> None:
    import json

    out = tmp_path / "run"
    r = tricklab_subprocess("run", "budget.steps=40", "eval_every=20", "log_every=10", "progress=true",
                            "--out", str(out))
    assert r.returncode == 0, r.stderr
    for name in ("recipe.yaml", "env.json", "metrics.jsonl", "summary.json", "model.safetensors"):
        assert (out / name).is_file(), name
    assert list((out / "checkpoints").glob("step-*.json"))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 40 and 0 <= summary["test"]["accuracy"] <= 1
    env = json.loads((out / "env.json").read_text())
    assert {"python", "torch", "tricklab", "cpu", "torch_threads", "dataset_fingerprint"} <= env.keys()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [10, 20, 30, 40]
    assert "test accuracy" in r.stdout  # the summary table
    assert "[train] step" in r.stderr  # progress lines when not a terminal
