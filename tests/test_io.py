"""tricklab.io: atomic writes give files the permissions open() would (0666 minus the umask) or keep those of
the file they replace; output to a pipe whose reader has gone is silenced, never raised.

Reference for the modes: a file created with the built-in open() under the same umask."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tricklab.io import PipeSafeStream, atomic_write_text, write_safely


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_new_files_get_the_mode_open_gives(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "report.html", "x")
        with open(tmp_path / "reference", "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    mode = (tmp_path / "report.html").stat().st_mode & 0o777
    assert mode == (tmp_path / "reference").stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_rewrite_keeps_the_mode_of_the_file_it_replaces(tmp_path: Path) -> None:
    path = tmp_path / "card.md"
    atomic_write_text(path, "one")
    path.chmod(0o600)
    atomic_write_text(path, "two")
    assert path.read_text() == "two" and path.stat().st_mode & 0o777 == 0o600


CHILD = """
import sys, time
from tricklab.io import PipeSafeStream, write_safely
out = PipeSafeStream(sys.stdout)
for i in range(2000):
    out.write(f"line {i}\\n")
    out.flush()
write_safely(sys.stderr, "still running\\n")
print("the end", file=sys.stderr)
"""


def test_a_closed_pipe_is_silenced(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    assert proc.stdout is not None and proc.stdout.readline() == "line 0\n"
    proc.stdout.close()  # `| head -1`
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "BrokenPipeError" not in err and "the end" in err


def test_other_errors_still_raise(tmp_path: Path) -> None:
    class Full:
        def write(self, text: str) -> int:
            raise OSError(28, "No space left on device")

        def flush(self) -> None:
            pass

    with pytest.raises(OSError, match="No space"):
        write_safely(Full(), "x")  # type: ignore[arg-type]
    with pytest.raises(OSError, match="No space"):
        PipeSafeStream(Full()).write("x")  # type: ignore[arg-type]
