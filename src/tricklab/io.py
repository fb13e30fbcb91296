"""Atomic file writes, and output that survives a reader going away.

Atomic writes: a crash, a SIGKILL or a full disk leaves the old file or the new one, never a mix. Each write
goes to a temporary file in the same folder, is flushed and fsynced, then renamed over the target
(``os.replace`` is atomic on POSIX and Windows), and the folder is fsynced so the rename itself survives a
power loss. Checkpoints, run summaries, reports and cards are all written through here. The new file gets
the permissions ``open()`` would give it (``0666`` minus the umask, so usually ``0644``), or keeps those of
the file it replaces: ``mkstemp`` alone would leave reports and cards readable by their owner only.

Closed pipes: ``tricklab run ... | head`` closes the pipe after ten lines; the next write raises
``BrokenPipeError`` (Python ignores SIGPIPE, so the write fails instead of killing the process). Output is a
side show: :func:`write_safely` and :class:`PipeSafeStream` point the stream at ``/dev/null`` after the first
such failure, so training goes on and the interpreter's final flush does not fail either.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Any, TextIO

__all__ = ["PipeSafeStream", "atomic_write_bytes", "atomic_write_text", "is_broken_pipe", "new_file_mode",
           "silence_stream", "write_safely"]


def _fsync_dir(folder: Path) -> None:
    # a folder cannot be opened for fsync on some platforms (Windows); the rename is still atomic there
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    # Linux reports the umask in /proc without changing it; os.umask can only be read by setting it, which
    # races with other threads creating files, so it is the fallback
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode(path: str | os.PathLike[str]) -> int:
    """The permission bits a rewrite of ``path`` gets: those of the existing file, else ``0666 & ~umask``."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        return 0o666 & ~_umask()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` (parents created) so that a crash leaves the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = new_file_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """:func:`atomic_write_bytes` of ``text`` encoded as UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


# ----------------------------------------------------------------------------------------------- pipes
def is_broken_pipe(error: BaseException) -> bool:
    """True for a write to a pipe (or socket) whose reader has gone."""
    return isinstance(error, BrokenPipeError) or (isinstance(error, OSError) and error.errno == errno.EPIPE)


def silence_stream(stream: Any) -> None:
    """Point ``stream``'s file descriptor at ``/dev/null`` (the reader went away): later writes, and the
    flush of whatever is still buffered, then succeed and go nowhere. A stream without a descriptor is left
    alone."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def write_safely(stream: TextIO, text: str, flush: bool = True) -> bool:
    """Write ``text`` to ``stream``; a closed pipe silences the stream instead of raising. Returns whether the
    stream still has a reader."""
    try:
        stream.write(text)
        if flush:
            stream.flush()
        return True
    except OSError as e:
        if not is_broken_pipe(e):
            raise
        silence_stream(stream)
        return False


class PipeSafeStream:
    """A text stream wrapper whose ``write`` and ``flush`` survive a closed pipe (see the module docstring);
    every other attribute is the wrapped stream's, so rich and ``print`` treat it as the stream itself."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.broken = False

    @property
    def wrapped(self) -> TextIO:
        return self._stream

    def _guard(self, e: OSError) -> None:
        if not is_broken_pipe(e):
            raise e
        self.broken = True
        silence_stream(self._stream)

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError as e:
            self._guard(e)
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as e:
            self._guard(e)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)
