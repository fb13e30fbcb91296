"""The folder lock: one writer per run or ablation folder, the holder named, stale locks of dead processes
taken over, an unwritable folder refused before any work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tricklab.errors import UserError
from tricklab.lab.lock import LOCK_NAME, FolderLock

HOLD = """
import sys, time
from tricklab.lab.lock import FolderLock
with FolderLock(sys.argv[1], "run folder"):
    print("held", flush=True)
    time.sleep(60)
"""


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))


def _holder(folder: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True, env=_env())
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_second_process_is_refused_naming_the_holder(tmp_path: Path) -> None:
    proc = _holder(tmp_path / "run")
    try:
        with pytest.raises(UserError) as err:
            FolderLock(tmp_path / "run", "run folder").acquire()
        assert f"process {proc.pid}" in str(err.value) and "in use" in str(err.value)
        assert "choose another --out" in str(err.value)
    finally:
        proc.kill()
        proc.wait()
    # the kernel released the flock with the process: the folder can be taken (with a takeover message)
    said: list[str] = []
    with FolderLock(tmp_path / "run", "run folder", say=said.append):
        pass
    assert said and f"process {proc.pid}" in said[0] and "no longer running" in said[0]


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    pid = _dead_pid()
    (folder / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": "elsewhere", "started": time.time(),
                                                "command": "tricklab run --out run"}))
    said: list[str] = []
    lock = FolderLock(folder, "run folder", say=said.append).acquire()
    held = json.loads((folder / LOCK_NAME).read_text())
    assert held["pid"] == os.getpid() and held["command"]
    assert len(said) == 1 and f"process {pid} on elsewhere" in said[0] and "taking over" in said[0]
    lock.release()
    assert not (folder / LOCK_NAME).exists() and folder.is_dir()  # released; the existing folder stays


def test_release_removes_a_folder_the_lock_created_when_nothing_was_written(tmp_path: Path) -> None:
    with FolderLock(tmp_path / "new"):
        assert (tmp_path / "new" / LOCK_NAME).is_file()
    assert not (tmp_path / "new").exists()
    with FolderLock(tmp_path / "kept"):
        (tmp_path / "kept" / "metrics.jsonl").write_text("{}\n")
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["metrics.jsonl"]


def test_unwritable_folder_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    with pytest.raises(UserError, match="cannot write into the run folder"):
        FolderLock(blocker / "run", "run folder").acquire()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder anyway")
def test_read_only_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(UserError, match="Permission denied"):
            FolderLock(folder, "ablation folder").acquire()
    finally:
        folder.chmod(0o755)
