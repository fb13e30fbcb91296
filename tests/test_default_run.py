"""Acceptance: `tricklab run` with no arguments trains the embedded default (MNIST-1D, the paper's CNN) to at
least 93% test accuracy (the paper reports 94% for this CNN), shows progress and prints a summary table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_default_run_reaches_93_percent(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "tricklab", "run", "--out", str(tmp_path / "run")],
                       capture_output=True, text=True, timeout=900, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 6000
    assert summary["test"]["accuracy"] >= 0.93, summary["test"]["accuracy"]
    assert "[train] step" in r.stderr  # progress while it trains
    assert "test accuracy" in r.stdout and "run folder" in r.stdout
