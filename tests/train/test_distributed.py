"""Multi-process training under ``torchrun`` (DDP, gloo on the CPU) against one process.

References:
* the one-process run of the same recipe with the same *global* batch (``batch_size=100``): the loader's
  sharding rule gives rank r of W the slice ``[r*B:(r+1)*B]`` of each global batch, and DDP averages the
  gradients, so 2 ranks x 50 samples take the same steps as 1 process x 100 up to float summation order;
* the uninterrupted DDP run, for a DDP run resumed from its checkpoint (resume is exact, so bit-identical).

The CLI is launched exactly as a user would (``python -m torch.distributed.run --standalone --nproc-per-node 2
-m tricklab run ...``). Measured on the 2-core CPU dev machine (torch 2.13, OMP_NUM_THREADS=1), MNIST-1D +
paper CNN, Adam lr 1e-2, 60 steps: max |w_ddp - w_single| = 2.0e-6 over all 5,210 weights (not bit-equal:
gradients of two 50-sample halves are summed by the all-reduce instead of within one 100-sample backward).
The tolerance below (atol 5e-5, rtol 1e-4) leaves a 25x margin over that. The whole module takes ~35 s.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from tricklab.train import distributed

safetensors_torch = pytest.importorskip("safetensors.torch")
pytest.importorskip("mnist1d")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("torch.distributed with the gloo backend is not available", allow_module_level=True)

# measured max abs difference DDP (2 x 50) vs one process (1 x 100) after 60 Adam steps: 2.0e-6
ATOL, RTOL = 5e-5, 1e-4
STEPS = 60
RECIPE = [f"budget.steps={STEPS}", "batch_size=100", "eval_every=30", "progress=false",
          "checkpoint.every_steps=30"]
TIMEOUT = 240  # seconds per launched command; a healthy one takes 5-15 s here

# Run under torchrun instead of `-m tricklab` to record, per rank, every file a rank opens for writing or
# moves into place (atomic writes are mkstemp + os.replace), then run the real CLI.
_TRACER = textwrap.dedent(
    """
    import builtins, os, sys
    _log = os.path.join(os.environ["TRACE_DIR"], "writes-rank" + os.environ.get("RANK", "0") + ".txt")
    _open, _replace, _osopen = builtins.open, os.replace, os.open

    def _note(path):
        with _open(_log, "a", encoding="utf-8") as f:
            f.write(os.path.abspath(os.fspath(path)) + "\\n")

    def open(file, mode="r", *a, **k):
        if isinstance(file, (str, bytes, os.PathLike)) and any(c in mode for c in "wax+"):
            _note(file)
        return _open(file, mode, *a, **k)

    def replace(src, dst, *a, **k):
        _note(dst)
        return _replace(src, dst, *a, **k)

    def osopen(path, flags, *a, **k):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            _note(path)
        return _osopen(path, flags, *a, **k)

    builtins.open, os.replace, os.open = open, replace, osopen
    from tricklab.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def _env(cache: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)  # a test run under torchrun itself must not leak its rank into the children
    env.update(TRICKLAB_CACHE=str(cache), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    return env


def _launch(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``args``; on a non-zero exit or a timeout fail with the command's stdout and stderr."""
    # own session: on timeout the whole group (torchrun and its workers) is killed, not just torchrun
    proc = subprocess.Popen(args, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"timed out after {TIMEOUT}s: {' '.join(args)}\n--- stdout\n{out}\n--- stderr\n{err}")
    if proc.returncode != 0:
        pytest.fail(f"exit {proc.returncode}: {' '.join(args)}\n--- stdout\n{out}\n--- stderr\n{err}")
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return safetensors_torch.load_file(str(run_dir / "model.safetensors"))


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("ddp")
    cache = Path(os.environ.get("TRICKLAB_CACHE") or root / "cache")
    env = _env(cache)
    ddp, single, resumed, trace = root / "ddp", root / "single", root / "resumed", root / "trace"
    trace.mkdir()
    # one process first: it also fills the shared data cache, so the two ranks only read it
    single_proc = _launch([sys.executable, "-m", "tricklab", "run", *RECIPE, "--out", str(single)], env, root)
    ddp_proc = _launch(_torchrun("-m", "tricklab", "run", *RECIPE, "--out", str(ddp)), env, root)

    # interrupted run: the DDP run as it stood after its step-30 checkpoint, then resumed under torchrun
    shutil.copytree(ddp, resumed)
    for name in ("summary.json", "model.safetensors", "checkpoints/step-00000060.json",
                 "checkpoints/step-00000060.safetensors"):
        (resumed / name).unlink()
    tracer = root / "trace_writes.py"
    tracer.write_text(_TRACER)
    resume_proc = _launch(_torchrun(str(tracer), "run", *RECIPE, "--out", str(resumed), "--resume"),
                          _env(cache, TRACE_DIR=str(trace)), root)
    return {"ddp": ddp, "single": single, "resumed": resumed, "trace": trace,
            "ddp_proc": ddp_proc, "single_proc": single_proc, "resume_proc": resume_proc}


def test_ddp_two_ranks_match_one_process_with_the_same_global_batch(runs: dict) -> None:
    ddp, single = runs["ddp"], runs["single"]
    assert json.loads((ddp / "env.json").read_text())["world_size"] == 2
    assert json.loads((single / "env.json").read_text())["world_size"] == 1
    a, b = _weights(ddp), _weights(single)
    assert sorted(a) == sorted(b)
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=ATOL, rtol=RTOL, msg=lambda m, k=k: f"{k}: {m} (max {diff:.3g})")
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (ddp, single))
    assert sa["steps"] == sb["steps"] == STEPS
    assert sa["test"]["accuracy"] == pytest.approx(sb["test"]["accuracy"], abs=2e-3)  # <= 2 of 1000 flipped
    # the same steps were logged and evaluated
    assert [r["step"] for r in _rows(ddp)] == [r["step"] for r in _rows(single)] == [30, 50, 60]


def test_only_rank_0_writes_files(runs: dict) -> None:
    ddp = runs["ddp"]
    files = sorted(str(p.relative_to(ddp)) for p in ddp.rglob("*") if p.is_file())
    assert files == ["checkpoints/step-00000030.json", "checkpoints/step-00000030.safetensors",
                     "checkpoints/step-00000060.json", "checkpoints/step-00000060.safetensors",
                     "env.json", "metrics.jsonl", "model.safetensors", "recipe.yaml", "summary.json"]
    rows = _rows(ddp)
    assert [r["step"] for r in rows] == [30, 50, 60]  # one writer: no duplicated or interleaved rows
    assert runs["ddp_proc"].stdout.count("run folder:") == 1  # one summary table, printed by rank 0
    # the traced resume run: rank 1 opened nothing for writing in the run folder; rank 0 wrote the outputs
    resumed = runs["resumed"].resolve()
    trace = runs["trace"]
    written = {r: [Path(line) for line in (trace / f"writes-rank{r}.txt").read_text().splitlines()]
               if (trace / f"writes-rank{r}.txt").exists() else [] for r in (0, 1)}
    in_run = {r: {p for p in paths if p.is_relative_to(resumed)} for r, paths in written.items()}
    assert in_run[1] == set(), f"rank 1 wrote {sorted(map(str, in_run[1]))}"
    assert {resumed / "summary.json", resumed / "model.safetensors", resumed / "metrics.jsonl",
            resumed / "checkpoints" / "step-00000060.json"} <= in_run[0]


def test_ddp_resume_from_checkpoint_is_exact(runs: dict) -> None:
    ddp, resumed = runs["ddp"], runs["resumed"]
    a, b = _weights(ddp), _weights(resumed)
    assert sorted(a) == sorted(b)
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k}: max diff {float((a[k] - b[k]).abs().max()):.3g}"
    s = json.loads((resumed / "summary.json").read_text())
    assert s["steps"] == STEPS
    assert s["test"] == json.loads((ddp / "summary.json").read_text())["test"]
    # metrics.jsonl was rebuilt from the checkpoint's history, then continued: no duplicated rows
    ra, rb = _rows(ddp), _rows(resumed)
    assert [r["step"] for r in rb] == [30, 50, 60]
    for x, y in zip(ra, rb):
        assert {k: v for k, v in x.items() if k != "seconds"} == {k: v for k, v in y.items() if k != "seconds"}


# --------------------------------------------------------------------------- the collective helpers
_HELPERS = textwrap.dedent(
    """
    import json, os, sys
    import torch, torch.distributed as dist
    from tricklab.train import distributed
    info = distributed.init("cpu")
    r = info.rank
    out = {
        "info": [info.rank, info.world_size, info.enabled, info.is_main],
        "any_one": distributed.any_rank(r == 1),
        "any_none": distributed.any_rank(False),
        "mean": float(distributed.mean_over_ranks(torch.tensor(float(r + 1)))),
    }
    with open(os.path.join(sys.argv[1], f"rank{r}.json"), "w") as f:
        json.dump(out, f)
    distributed.barrier(info)
    distributed.shutdown(info)
    """
)


def test_collective_helpers_agree_across_ranks(tmp_path: Path) -> None:
    script = tmp_path / "helpers.py"
    script.write_text(_HELPERS)
    _launch(_torchrun(str(script), str(tmp_path)), _env(tmp_path / "cache"), tmp_path)
    got = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert got[0]["info"] == [0, 2, True, True] and got[1]["info"] == [1, 2, True, False]
    for g in got:
        assert g["any_one"] is True and g["any_none"] is False  # a flag raised on rank 1 only reaches both
        assert g["mean"] == 1.5  # (1 + 2) / 2


def test_helpers_are_identity_in_one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    info = distributed.env_info()
    assert (info.rank, info.world_size, info.enabled, info.is_main) == (0, 1, False, True)
    assert distributed.init("cpu") == info and not torch.distributed.is_initialized()
    assert distributed.any_rank(True) is True and distributed.any_rank(False) is False
    x = torch.tensor(3.0)
    assert distributed.mean_over_ranks(x) is x
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.env_info() == distributed.DistInfo(rank=1, world_size=4, local_rank=1)
    assert distributed.device_for("cpu", distributed.env_info()) == torch.device("cpu")
