"""Exact resume: a `tricklab run` killed with SIGKILL and resumed with --resume ends bit-identical to the
uninterrupted run (EMA and gradient accumulation on, checkpoints every step, kills mid-epoch and at epoch
ends); a corrupted newest checkpoint is refused and the previous good one is used.

Reference: the same command run once without interruption, in the same environment (same thread count).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

# 4000 samples / batch 100 = 40 micro-batches per epoch; accumulation 2 -> 20 optimizer steps per epoch
ARGS = ["run", "budget.steps=70", "eval_every=10", "log_every=5", "checkpoint.every_steps=1",
        "checkpoint.keep_last=3", "progress=false",
        "techniques=[{name: ema, args: {decay: 0.95}}, {name: grad_accumulation, args: {steps: 2}}, grad_clip]"]


def _cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tricklab", *ARGS, "--out", str(out), *extra]


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def _newest_step(out: Path) -> int:
    folder = out / "checkpoints"
    steps = [int(p.stem.split("-")[1]) for p in folder.glob("step-*.json")] if folder.is_dir() else []
    return max(steps, default=0)


def _kill_after(out: Path, step: int) -> None:
    proc = subprocess.Popen(_cmd(out), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while _newest_step(out) < step:
        if proc.poll() is not None:
            pytest.fail(f"run ended before it could be killed (rc {proc.returncode}): {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("run did not reach the kill step in time")
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def _rows(out: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    r = subprocess.run(_cmd(out), env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return out


def _assert_identical(a: Path, b: Path) -> None:
    for name in ("model.safetensors", "model.eval.safetensors"):
        ta, tb = load_file(a / name), load_file(b / name)
        assert ta.keys() == tb.keys()
        for k in ta:
            assert ta[k].dtype == tb[k].dtype and bool((ta[k] == tb[k]).all()), f"{name}:{k} differs"
    assert _rows(a) == _rows(b)  # same metric rows, none duplicated by the killed run


@pytest.mark.parametrize("kill_step", [7, 20, 33])  # mid-epoch, at an epoch end, mid-epoch of a later epoch
def test_sigkill_then_resume_is_bit_identical(tmp_path: Path, reference: Path, kill_step: int) -> None:
    out = tmp_path / "run"
    _kill_after(out, kill_step)
    assert not (out / "summary.json").exists()
    r = subprocess.run(_cmd(out, "--resume"), env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "resumed at step" in r.stderr
    _assert_identical(reference, out)


def test_corrupt_checkpoint_falls_back_to_previous(tmp_path: Path, reference: Path) -> None:
    out = tmp_path / "run"
    _kill_after(out, 15)
    newest = max((out / "checkpoints").glob("step-*.safetensors"))
    data = bytearray(newest.read_bytes())
    data[-3] ^= 0xFF  # one corrupt byte in the tensor data
    newest.write_bytes(bytes(data))
    r = subprocess.run(_cmd(out, "--resume"), env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "checksum" in r.stderr and "falling back to the previous checkpoint" in r.stderr
    assert newest.stem in r.stderr
    _assert_identical(reference, out)
