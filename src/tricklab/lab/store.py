"""The ablation store: every run of an ablation, its recipe, environment, per-step history and summary, in one
SQLite file (stdlib ``sqlite3`` only).

Why SQLite in WAL mode: several worker processes write runs at the same time while a reader (the report) may
read; WAL lets readers proceed during a write, and every write here is one explicit ``BEGIN IMMEDIATE``
transaction, so writers queue on the database's single write lock instead of failing half-way. A process
killed at any moment (SIGKILL, power loss with ``synchronous=FULL``) leaves either the whole transaction or
none of it: a run is never 'done' without all of its step rows.

Schema::

    meta(key TEXT PRIMARY KEY, value TEXT)                  -- JSON values
    runs(id, run_key UNIQUE, variant, recipe_hash, seed, status, recipe, env, summary, started, finished, error)
    steps(id, run_id -> runs.id, step, seconds, metrics)    -- metrics: the whole history row as JSON

Values are stored as JSON text: ``json.dumps`` writes a Python float with ``repr`` (the shortest string that
reads back to the same double), so floats round-trip bit for bit; NaN and +-inf are written as the
``NaN``/``Infinity`` tokens that ``json.loads`` reads back.

Each process opens its own :class:`Store` (an sqlite3 connection must not cross a ``fork``/process boundary).
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

from tricklab.errors import UserError

__all__ = ["RunRow", "Store", "StoreDamaged", "STATUSES"]

STATUSES = ("running", "done", "failed")

_T = TypeVar("_T")

# busy_timeout makes SQLite itself wait up to 60 s for the write lock; the extra retries below cover the
# rare cases where SQLite returns SQLITE_BUSY without waiting (e.g. while another connection switches the
# journal mode or runs recovery after a crash).
_BUSY_TIMEOUT_MS = 60_000
_RETRIES = 8

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    run_key     TEXT NOT NULL UNIQUE,
    variant     TEXT NOT NULL,
    recipe_hash TEXT NOT NULL,
    seed        INTEGER NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed')),
    recipe      TEXT NOT NULL,
    env         TEXT,
    summary     TEXT,
    started     REAL NOT NULL,
    finished    REAL,
    error       TEXT
);
CREATE INDEX IF NOT EXISTS runs_variant ON runs(variant, seed);
CREATE TABLE IF NOT EXISTS steps (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id  INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step    INTEGER NOT NULL,
    seconds REAL,
    metrics TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS steps_run ON steps(run_id, step);
"""


def _json_default(obj: Any) -> Any:
    # numpy / torch scalars and arrays reach the store from metric code; .item()/.tolist() give the exact
    # Python float/int, so nothing is rounded on the way in
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot store a {type(obj).__name__} as JSON: {obj!r}")


def _dumps(value: Any) -> str:
    return json.dumps(value, default=_json_default, allow_nan=True)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


@dataclass
class RunRow:
    """One run as stored: ``status`` is 'running' (claimed, not finished: in progress or its process died),
    'done' (finished, summary and every step row present) or 'failed' (``error`` says why)."""

    id: int
    run_key: str
    variant: str
    recipe_hash: str
    seed: int
    status: str
    recipe: dict
    env: dict | None
    summary: dict | None
    started: float
    finished: float | None
    error: str | None


_RUN_COLUMNS = "id, run_key, variant, recipe_hash, seed, status, recipe, env, summary, started, finished, error"


def _row(r: tuple) -> RunRow:
    return RunRow(id=r[0], run_key=r[1], variant=r[2], recipe_hash=r[3], seed=r[4], status=r[5],
                  recipe=_loads(r[6]), env=_loads(r[7]), summary=_loads(r[8]), started=r[9], finished=r[10],
                  error=r[11])


class StoreDamaged(UserError):
    """The store file is not a readable SQLite database (truncated, overwritten, corrupt pages). The command
    line turns it into exit status 2 with the runs still readable and how to rebuild
    (:func:`tricklab.lab.salvage.damage_message`)."""

    def __init__(self, path: Path, detail: str) -> None:
        self.path = Path(path)
        self.detail = detail
        super().__init__(f"the ablation store {self.path} is damaged ({detail})")


def _damage(e: sqlite3.DatabaseError) -> bool:
    # "file is not a database", "database disk image is malformed": the plain DatabaseError class; its
    # subclasses are a busy database, a constraint, an interface misuse, which are not damage
    return type(e) is sqlite3.DatabaseError


def _is_busy(e: sqlite3.OperationalError) -> bool:
    msg = str(e).lower()
    return "locked" in msg or "busy" in msg


class Store:
    """An ablation store in one SQLite file (see the module docstring for the schema and guarantees)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        # isolation_level=None: the sqlite3 module opens no implicit transactions, every write below says
        # BEGIN IMMEDIATE itself (takes the write lock up front, so two writers never deadlock upgrading a
        # read lock to a write lock)
        self._conn: sqlite3.Connection | None = sqlite3.connect(
            str(self.path), timeout=_BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            mode = self._retry(lambda: self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"{self.path}: could not switch to WAL journal mode (got {mode!r})")
            # FULL: WAL is fsynced at every commit, so a committed run survives power loss, not only SIGKILL
            self._conn.execute("PRAGMA synchronous = FULL")
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._write(lambda c: [c.execute(s) for s in _SCHEMA.split(";") if s.strip()])
        except BaseException:
            self._conn.close()
            self._conn = None
            raise

    @classmethod
    def in_folder(cls, folder: str | Path) -> Store:
        """The store ``folder/store.sqlite`` (the folder is created if missing)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        return cls(folder / "store.sqlite")

    # -- plumbing ------------------------------------------------------------------------------------------

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ValueError(f"store {self.path} is closed")
        return self._conn

    def _retry(self, fn: Callable[[], _T]) -> _T:
        delay = 0.05
        for attempt in range(_RETRIES):
            try:
                return fn()
            except sqlite3.DatabaseError as e:
                if _damage(e):
                    raise StoreDamaged(self.path, str(e)) from e
                if not isinstance(e, sqlite3.OperationalError):
                    raise
                if not _is_busy(e) or attempt == _RETRIES - 1:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        raise AssertionError("unreachable")

    def _write(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``fn`` inside one BEGIN IMMEDIATE ... COMMIT; roll back on any error; retry when locked."""

        def attempt() -> _T:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                out = fn(db)
                db.execute("COMMIT")
                return out
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

        return self._retry(attempt)

    # -- meta ----------------------------------------------------------------------------------------------

    def set_meta(self, key: str, value: Any) -> None:
        """Store ``value`` (anything JSON can hold) under ``key``, replacing any previous value."""
        text = _dumps(value)
        self._write(lambda c: c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, text)))

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self._retry(lambda: self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone())
        return default if row is None else _loads(row[0])

    # -- runs ----------------------------------------------------------------------------------------------

    def claim(self, run_key: str, variant: str, recipe_hash: str, seed: int, recipe: dict) -> int:
        """Mark ``run_key`` as running and return its id: a new row, or an existing 'running'/'failed' row
        reset (its step rows deleted, summary/env/error cleared, a new start time).

        Raises:
            ValueError: the run is already 'done' (its results are kept; use another run_key to rerun it).
        """
        recipe_text = _dumps(recipe)

        def tx(c: sqlite3.Connection) -> int:
            now = time.time()
            row = c.execute("SELECT id, status FROM runs WHERE run_key = ?", (run_key,)).fetchone()
            if row is None:
                cur = c.execute(
                    "INSERT INTO runs(run_key, variant, recipe_hash, seed, status, recipe, started) "
                    "VALUES (?, ?, ?, ?, 'running', ?, ?)",
                    (run_key, variant, recipe_hash, int(seed), recipe_text, now))
                return int(cur.lastrowid)
            run_id, status = row
            if status == "done":
                raise ValueError(f"run {run_key!r} is already done (id {run_id}); its results are kept")
            c.execute("DELETE FROM steps WHERE run_id = ?", (run_id,))
            c.execute(
                "UPDATE runs SET variant = ?, recipe_hash = ?, seed = ?, status = 'running', recipe = ?, "
                "env = NULL, summary = NULL, started = ?, finished = NULL, error = NULL WHERE id = ?",
                (variant, recipe_hash, int(seed), recipe_text, now, run_id))
            return int(run_id)

        return self._write(tx)

    def finish(self, run_id: int, env: dict, summary: dict, history: list[dict]) -> None:
        """Record a finished run in ONE transaction: every history row (which must hold an integer
        ``"step"``), the summary and environment, status 'done'. A crash part-way leaves the run 'running'
        with no step rows written.

        Raises:
            ValueError: no such run, the run is already 'done', or a history row has no ``"step"``.
        """
        rows = []
        for i, r in enumerate(history):
            if "step" not in r:
                raise ValueError(f"history row {i} has no 'step': {r!r}")
            seconds = r.get("seconds")
            rows.append((run_id, int(r["step"]), None if seconds is None else float(seconds), _dumps(r)))
        env_text, summary_text = _dumps(env), _dumps(summary)

        def tx(c: sqlite3.Connection) -> None:
            row = c.execute("SELECT status, run_key FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise ValueError(f"no run with id {run_id}")
            if row[0] == "done":
                raise ValueError(f"run {row[1]!r} (id {run_id}) is already done")
            # a run re-claimed in between had its steps deleted by claim; deleting here as well keeps
            # finish from ever leaving two copies of a history
            c.execute("DELETE FROM steps WHERE run_id = ?", (run_id,))
            c.executemany("INSERT INTO steps(run_id, step, seconds, metrics) VALUES (?, ?, ?, ?)", rows)
            c.execute("UPDATE runs SET status = 'done', env = ?, summary = ?, finished = ?, error = NULL "
                      "WHERE id = ?", (env_text, summary_text, time.time(), run_id))

        self._write(tx)

    def fail(self, run_id: int, error: str) -> None:
        """Mark a run 'failed' with ``error`` (it can be claimed again).

        Raises:
            ValueError: no such run, or the run is already 'done'.
        """

        def tx(c: sqlite3.Connection) -> None:
            row = c.execute("SELECT status, run_key FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise ValueError(f"no run with id {run_id}")
            if row[0] == "done":
                raise ValueError(f"run {row[1]!r} (id {run_id}) is already done; it cannot fail")
            c.execute("UPDATE runs SET status = 'failed', error = ?, finished = ? WHERE id = ?",
                      (str(error), time.time(), run_id))

        self._write(tx)

    def get(self, run_key: str) -> RunRow | None:
        row = self._retry(lambda: self._db.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_key = ?", (run_key,)).fetchone())
        return None if row is None else _row(row)

    def runs(self, status: str | None = None, variant: str | None = None) -> list[RunRow]:
        """The runs, optionally only those with ``status`` and/or ``variant``, ordered by id."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        where, args = [], []
        if status is not None:
            where.append("status = ?")
            args.append(status)
        if variant is not None:
            where.append("variant = ?")
            args.append(variant)
        sql = f"SELECT {_RUN_COLUMNS} FROM runs" + (" WHERE " + " AND ".join(where) if where else "")
        rows = self._retry(lambda: self._db.execute(sql + " ORDER BY id", args).fetchall())
        return [_row(r) for r in rows]

    def steps(self, run_id: int) -> list[dict]:
        """The history rows of a run, as given to :meth:`finish`, ordered by step (ties in written order)."""
        rows = self._retry(lambda: self._db.execute(
            "SELECT metrics FROM steps WHERE run_id = ? ORDER BY step, id", (run_id,)).fetchall())
        return [json.loads(r[0]) for r in rows]

    def integrity_ok(self) -> bool:
        """True when SQLite's ``PRAGMA integrity_check`` reports 'ok' and no step row points at a missing
        run (``PRAGMA foreign_key_check`` is empty)."""
        check = self._retry(lambda: self._db.execute("PRAGMA integrity_check").fetchall())
        if [tuple(r) for r in check] != [("ok",)]:
            return False
        return not self._retry(lambda: self._db.execute("PRAGMA foreign_key_check").fetchall())

    # -- lifetime ------------------------------------------------------------------------------------------

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

