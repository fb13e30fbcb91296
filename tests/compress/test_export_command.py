"""`tricklab export RUN_DIR` end to end on a real (tiny) run. Reference: ONNX Runtime's outputs against
PyTorch's (export_run's own check, max_abs_diff <= 1e-5) and the int8 file's size against the fp32 one."""

from __future__ import annotations

from pathlib import Path

import pytest

from tricklab.cli import main

pytest.importorskip("onnxruntime")


def test_export_a_trained_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert main(["run", "task=digits", "model.name=mlp", "budget.steps=10", "techniques=[]", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["export", str(run)]) == 0
    lines = dict(line.split(": ", 1) for line in capsys.readouterr().out.strip().splitlines())
    assert Path(lines["path"]) == run / "model.onnx" and (run / "model.onnx").is_file()
    assert float(lines["max_abs_diff"]) <= 1e-5
    assert main(["export", str(run), "--format", "torch", "--quantize", "int8"]) == 0
    lines = dict(line.split(": ", 1) for line in capsys.readouterr().out.strip().splitlines())
    assert int(lines["bytes"]) < 0.35 * int(lines["fp32_bytes"])  # int8 weights: about a quarter of fp32


def test_export_refuses_what_it_cannot_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(tmp_path)]) == 2
    assert "recipe.yaml is missing" in capsys.readouterr().err
