"""Faults a user meets, reproduced, each with its clean outcome (issue 12, items 1-6): two processes writing
one folder, a resume with no valid checkpoint, a damaged store, an unwritable --out, a closed output pipe,
Ctrl-C during an ablation. Each test checks the exit status, the message, that no traceback is printed and
that the files a user had are intact."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tricklab.lab.lock import LOCK_NAME

RUN = ["budget.steps=20", "eval_every=10", "log_every=5", "checkpoint.every_steps=10", "progress=false"]
ABLATE_TINY = ["--budget", "40", "eval_every=20", "log_every=10", "--seeds", "2", "--jobs", "2",
               "--techniques", "grad_clip"]


def cli(*args: str) -> tuple[int, str, str]:
    """The command in this process (the imports are paid once)."""
    from tricklab.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", PYTHONPATH=os.pathsep.join(sys.path))


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "tricklab", *args]


def _clean(code: int, err: str, expected: int = 2) -> None:
    assert code == expected, err
    assert "Traceback" not in err


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _done(store: Path) -> dict[str, float]:
    con = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=30)
    try:
        return dict(con.execute("SELECT run_key, started FROM runs WHERE status = 'done'").fetchall())
    except sqlite3.OperationalError:
        return {}
    finally:
        con.close()


def _wait_for(predicate, proc: subprocess.Popen, what: str, timeout: float = 300) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"the process ended before {what} (rc {proc.returncode})")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {what} in {timeout} s")
        time.sleep(0.05)


# ------------------------------------------------------------------------- 5: a closed pipe, and a fixture
@pytest.fixture(scope="module")
def ablation(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny ablation, run as `tricklab ablate ... | head -1`: the pipe closes after one line and the
    ablation must finish all the same (item 5)."""
    out = tmp_path_factory.mktemp("abl") / "abl"
    proc = subprocess.Popen(_cmd("ablate", *ABLATE_TINY, "--out", str(out)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())
    assert proc.stdout is not None and proc.stdout.readline().startswith("ablation:")
    proc.stdout.close()  # `head -1` exits
    _, err = proc.communicate(timeout=600)
    _clean(proc.returncode, err, expected=0)
    assert len(_done(out / "store.sqlite")) == 6  # 2 variants x 2 seeds + 2 control runs
    assert (out / "report.html").is_file() and (out / "cards" / "grad_clip.json").is_file()
    return out


def test_a_closed_pipe_does_not_stop_an_ablation(ablation: Path) -> None:
    assert not (ablation / LOCK_NAME).exists()  # the lock was released


def test_a_closed_pipe_does_not_stop_a_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    # progress lines go to stderr, here the same pipe as stdout: `tricklab run ... 2>&1 | head -1`
    proc = subprocess.Popen(_cmd("run", "budget.steps=300", "eval_every=50", "log_every=10", "progress=true",
                                 "--out", str(out)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=_env())
    assert proc.stdout is not None and proc.stdout.readline()
    proc.stdout.close()
    assert proc.wait(timeout=300) == 0
    assert json.loads((out / "summary.json").read_text())["steps"] == 300
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 30


# ------------------------------------------------------------------------------------ 1: one writer per folder
def test_two_runs_into_one_folder(tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = subprocess.Popen(_cmd("run", "budget.steps=1500", "eval_every=500", "log_every=50", "progress=false",
                                  "--out", str(out)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env=_env())
    _wait_for(lambda: (out / LOCK_NAME).exists() and (out / LOCK_NAME).stat().st_size > 0, first, "the lock")
    code, _, err = cli("run", "budget.steps=1500", "progress=false", "--out", str(out))
    _clean(code, err)
    assert f"in use by process {first.pid}" in err and "choose another --out" in err
    _, first_err = first.communicate(timeout=300)
    assert first.returncode == 0, first_err
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]  # every line whole
    assert [r["step"] for r in rows] == list(range(50, 1501, 50))
    assert not (out / LOCK_NAME).exists()


# ------------------------------------------------------------------------- 2: a resume with no valid checkpoint
def test_failed_resume_changes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, _, err = cli("run", *RUN, "--out", str(out))
    assert code == 0, err
    (out / "summary.json").unlink()  # as if killed after its last checkpoint
    checkpoints = sorted((out / "checkpoints").glob("step-*.safetensors"))
    assert len(checkpoints) == 2
    for path in checkpoints:
        data = bytearray(path.read_bytes())
        data[-3] ^= 0xFF
        path.write_bytes(bytes(data))
    before = _snapshot(out)
    code, _, err = cli("run", "--out", str(out), "--resume")
    _clean(code, err)
    assert "no valid checkpoint" in err and "Nothing in" in err
    for path in checkpoints:
        assert path.stem in err
    assert _snapshot(out) == before  # metrics.jsonl, recipe.yaml, env.json: byte for byte as they were
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 4


# ------------------------------------------------------------------------------------ 3: a damaged store
def _damaged_copy(ablation: Path, tmp_path: Path, how: str) -> Path:
    folder = tmp_path / "abl"
    shutil.copytree(ablation, folder)
    store = folder / "store.sqlite"
    data = store.read_bytes()
    if how == "truncated":
        store.write_bytes(data[: len(data) // 3])
    else:  # overwritten header
        store.write_bytes(b"\0" * 100 + data[100:])
    return folder


@pytest.mark.parametrize("how", ["truncated", "header"])
def test_damaged_store_says_what_is_readable_and_how_to_rebuild(ablation: Path, tmp_path: Path, how: str) -> None:
    folder = _damaged_copy(ablation, tmp_path, how)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    for command in ("runs", "report", "cards"):
        r = subprocess.run(_cmd(command, str(folder)), capture_output=True, text=True, cwd=cwd, env=_env(),
                           timeout=300)
        _clean(r.returncode, r.stderr)
        assert "is damaged" in r.stderr and "--salvage" in r.stderr and "new --out" in r.stderr
        assert "run folders" in r.stderr  # the finished runs it can still rebuild from
    assert list(cwd.iterdir()) == []  # no tricklab-error.log in the current folder

    code, text, err = cli("runs", str(folder), "--salvage")
    assert code == 0, err
    assert text.count("done") == 6 and (folder / "store.sqlite.damaged").is_file()
    code, _, err = cli("report", str(folder))  # the rebuilt store reads like the original
    assert code == 0, err


def test_log_of_a_read_only_command_goes_to_the_temporary_folder(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    import argparse
    import tempfile

    from tricklab.cli import _log_failure, cmd_report

    monkeypatch.chdir(tmp_path)
    try:
        raise RuntimeError("boom")
    except RuntimeError as e:
        where = _log_failure(argparse.Namespace(func=cmd_report, dir=tmp_path), e)
    assert tempfile.gettempdir() in where and list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------ 4: an unwritable --out
def test_unwritable_out_is_refused_before_any_work(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    # a data folder that does not exist either: the --out check comes first, before any data is looked for
    code, _, err = cli("run", "task=fashion-mnist", "--data-dir", str(tmp_path / "nowhere"), "--out",
                       str(blocker / "run"))
    _clean(code, err)
    assert "cannot write into the run folder" in err and "dataset-fashion-mnist" not in err
    code, _, err = cli("ablate", *ABLATE_TINY, "--out", str(blocker / "abl"))
    _clean(code, err)
    assert "cannot write into the ablation folder" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder anyway")
def test_read_only_out_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        code, _, err = cli("run", *RUN, "--out", str(folder / "run"))
        _clean(code, err)
        assert "cannot write" in err and "Permission denied" in err
    finally:
        folder.chmod(0o755)


# ------------------------------------------------------------------------------------ 6: Ctrl-C during ablate
def test_ctrl_c_stops_the_workers_and_keeps_finished_runs(tmp_path: Path) -> None:
    out = tmp_path / "abl"
    store = out / "store.sqlite"
    proc = subprocess.Popen(_cmd("ablate", "--budget", "3000", "eval_every=1000", "--seeds", "2", "--jobs", "2",
                                 "--techniques", "grad_clip", "--out", str(out)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(), start_new_session=True)
    _wait_for(lambda: store.exists() and len(_done(store)) >= 1, proc, "a finished run", timeout=600)
    # a second ablation into the same folder meanwhile is refused, naming the process that holds it
    code, _, err = cli("ablate", "--budget", "3000", "eval_every=1000", "--seeds", "2", "--techniques",
                       "grad_clip", "--out", str(out))
    _clean(code, err)
    assert f"in use by process {proc.pid}" in err
    kept = _done(store)
    started = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the whole process group, workers included
    text, err = proc.communicate(timeout=120)
    elapsed = time.monotonic() - started
    _clean(proc.returncode, err, expected=130)
    assert elapsed < 15, f"took {elapsed:.1f} s to stop"
    assert "interrupted" in err and "interrupted: the runs in flight were stopped" in text and "are kept in" in text
    time.sleep(1.0)
    after = _done(store)
    assert set(kept) <= set(after) and all(after[k] == kept[k] for k in kept)  # finished runs untouched
    assert len(after) < 6  # the runs in flight were stopped, not waited for
    con = sqlite3.connect(store)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    assert not (out / LOCK_NAME).exists()
