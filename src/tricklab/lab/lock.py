"""One writer per folder: a run folder or an ablation folder is locked while a process writes into it.

Two ``tricklab run --out X`` at once would both write ``X/metrics.jsonl`` and the checkpoints, and leave a
mix. The lock is the file ``X/.tricklab.lock``, held with ``flock`` (the kernel releases it when the holder
exits, however it exits) and holding the holder's pid, host, start time and command, so the second process
can say who holds the folder. A lock file whose ``flock`` is free but which still names a holder was left by
a process that died without cleaning up: it is taken over, with a message. Taking the lock is also the check
that the folder can be written at all, before any data is loaded.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tricklab.errors import UserError

__all__ = ["LOCK_NAME", "FolderLock", "Holder", "folder_lock"]

LOCK_NAME = ".tricklab.lock"


@dataclass(frozen=True)
class Holder:
    """Who holds (or held) a lock."""

    pid: int
    host: str
    started: float
    command: str

    @classmethod
    def me(cls) -> Holder:
        return cls(os.getpid(), socket.gethostname(), time.time(), " ".join(sys.argv) or "python")

    @classmethod
    def parse(cls, text: str) -> Holder | None:
        try:
            d = json.loads(text)
            return cls(int(d["pid"]), str(d["host"]), float(d["started"]), str(d.get("command", "")))
        except (ValueError, KeyError, TypeError):
            return None

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"process {self.pid} on {self.host} (since {since}: {self.command})"


def _read(fd: int) -> Holder | None:
    text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
    return Holder.parse(text) if text.strip() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class FolderLock:
    """The lock of ``folder`` (created if missing); ``what`` names the folder in messages ("run folder").

    ``acquire`` raises :class:`UserError` when another live process holds it, or when the folder cannot be
    created or written (an unwritable ``--out`` is refused here, before any work). ``release`` removes the
    lock file, and the folder too when this lock created it and nothing else was written into it.
    """

    def __init__(self, folder: str | os.PathLike[str], what: str = "folder",
                 say: Callable[[str], Any] | None = None) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.what = what
        self.say = say or (lambda m: print(m, file=sys.stderr, flush=True))
        self._fd: int | None = None
        self._created = False

    def _unwritable(self, e: OSError) -> UserError:
        return UserError(f"cannot write into the {self.what} {self.folder}: {e.strerror or e}; "
                         f"choose a --out you can write to")

    def _open(self) -> int:
        """Open and flock the lock file; the inode check catches a file the previous holder unlinked between
        our open and our flock (we would hold a lock on a file nobody else can see)."""
        for _ in range(20):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise self._unwritable(e) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read(fd)
                os.close(fd)
                raise UserError(f"the {self.what} {self.folder} is in use by "
                                f"{holder.describe() if holder else 'another process'}; wait for it to finish, "
                                f"or choose another --out") from None
            except OSError:  # no flock on this file system: fall back on the recorded pid
                holder = _read(fd)
                if holder and holder.host == socket.gethostname() and holder.pid != os.getpid() \
                        and _alive(holder.pid):
                    os.close(fd)
                    raise UserError(f"the {self.what} {self.folder} is in use by {holder.describe()}") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return fd
            os.close(fd)
        raise UserError(f"could not lock the {self.what} {self.folder}: its lock file keeps changing")

    def acquire(self) -> FolderLock:
        if self._fd is not None:
            return self
        self._created = not self.folder.exists()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise self._unwritable(e) from None
        fd = self._open()
        previous = _read(fd)
        if previous is not None and previous.pid != os.getpid():
            self.say(f"tricklab: taking over the lock of {previous.describe()}, which is no longer running "
                     f"({self.path} was left behind)")
        me = json.dumps(dataclass_dict(Holder.me())).encode()
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, me, 0)
            os.fsync(fd)
        except OSError as e:
            os.close(fd)
            raise self._unwritable(e) from None
        self._fd = fd
        return self

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                os.unlink(self.path)
        with contextlib.suppress(OSError):
            os.close(fd)  # closing the last descriptor releases the flock
        if self._created:
            with contextlib.suppress(OSError):
                self.folder.rmdir()  # only when empty: a run that failed before writing anything

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def dataclass_dict(holder: Holder) -> dict[str, Any]:
    return {"pid": holder.pid, "host": holder.host, "started": holder.started, "command": holder.command}


def folder_lock(folder: str | os.PathLike[str], what: str, enabled: bool = True
                ) -> contextlib.AbstractContextManager[Any]:
    """:class:`FolderLock` as a context manager, or a no-op when ``enabled`` is False (the other ranks of a
    distributed run: rank 0 holds the lock for all of them)."""
    return FolderLock(folder, what) if enabled else contextlib.nullcontext()
