"""A damaged ablation store: say which runs can still be read, and rebuild the store from what survives.

A store can be damaged by a full disk, a copy cut short, a file system that lied about ``fsync``, or a
person. Every finished run survives twice: as a row of the store and as its run folder
(``runs/<variant>/seed-<s>/`` with ``recipe.yaml``, ``env.json``, ``summary.json`` and ``metrics.jsonl``,
all written atomically). :func:`salvage` (``tricklab runs DIR --salvage``) reads every row the damaged file
still gives, fills in the finished runs it lost from their run folders, writes a new store beside it, keeps
the damaged file as ``store.sqlite.damaged`` and moves the new one into place. Re-running the same
``tricklab ablate`` command then redoes only what is still missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tricklab.errors import UserError
from tricklab.lab.build import resolve_techniques
from tricklab.lab.format import safe_name
from tricklab.lab.lock import FolderLock
from tricklab.lab.noise import CONTROL
from tricklab.lab.recipe import recipe_from_dict
from tricklab.lab.store import Store

__all__ = ["Readable", "SalvagedRun", "damage_message", "read_damaged", "salvage"]

_RUN_COLUMNS = "id, run_key, variant, recipe_hash, seed, status, recipe, env, summary"


@dataclass(frozen=True)
class SalvagedRun:
    """A finished run recovered whole: its store fields and its metric history."""

    run_key: str
    variant: str
    recipe_hash: str
    seed: int
    recipe: dict[str, Any]
    env: dict[str, Any]
    summary: dict[str, Any]
    history: list[dict[str, Any]]
    source: str  # "store" or the run folder it was read from


@dataclass
class Readable:
    """What a damaged store still gives: finished runs read whole, the meta values, and how many rows (or
    the whole table) could not be read."""

    runs: list[SalvagedRun] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    unreadable: int = 0
    table_unreadable: bool = False


def _connect(path: Path) -> sqlite3.Connection:
    # read-only: looking at a damaged file must not change it (nor create a fresh, empty database)
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)


def _rows(con: sqlite3.Connection, readable: Readable) -> Iterator[tuple]:
    """Every runs row SQLite can read: one scan, or row by row when the scan breaks on a damaged page."""
    try:
        yield from con.execute(f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY id").fetchall()
        return
    except sqlite3.DatabaseError:
        pass
    misses, rowid = 0, 0
    while misses < 200:  # ids are AUTOINCREMENT from 1: 200 unreadable ids in a row end the search
        rowid += 1
        try:
            row = con.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", (rowid,)).fetchone()
        except sqlite3.DatabaseError:
            readable.unreadable += 1
            misses += 1
            continue
        misses = 0 if row is not None else misses + 1
        if row is not None:
            yield row


def _meta(con: sqlite3.Connection) -> dict[str, Any]:
    try:
        return {k: json.loads(v) for k, v in con.execute("SELECT key, value FROM meta").fetchall()}
    except (sqlite3.DatabaseError, ValueError):
        return {}


def read_damaged(path: Path) -> Readable:
    """The finished runs and meta values a damaged store file still gives (read-only)."""
    readable = Readable()
    try:
        con = _connect(path)
    except sqlite3.Error:
        readable.table_unreadable = True
        return readable
    try:
        readable.meta = _meta(con)
        for r in _rows(con, readable):
            if r[5] != "done":
                continue
            try:
                steps = [json.loads(m) for (m,) in con.execute(
                    "SELECT metrics FROM steps WHERE run_id = ? ORDER BY step, id", (r[0],)).fetchall()]
                readable.runs.append(SalvagedRun(r[1], r[2], r[3], int(r[4]), json.loads(r[6]), json.loads(r[7]),
                                                 json.loads(r[8]), steps, "store"))
            except (sqlite3.DatabaseError, ValueError, TypeError):
                readable.unreadable += 1
    except sqlite3.DatabaseError:
        readable.table_unreadable = True
    finally:
        con.close()
    return readable


def _from_folder(run_dir: Path, names: dict[str, str]) -> SalvagedRun | None:
    """A finished run read back from its run folder (None when any of its files is missing or unreadable)."""
    try:
        recipe = resolve_techniques(recipe_from_dict(yaml.safe_load((run_dir / "recipe.yaml").read_text())))
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
        env = json.loads((run_dir / "env.json").read_text(encoding="utf-8"))
        history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
                   if line.strip()]
    except (OSError, ValueError, UserError, yaml.YAMLError):
        return None
    variant = names.get(run_dir.parent.name, run_dir.parent.name)
    key = f"{recipe.hash()}:{recipe.seed}" + (":repeat" if variant == CONTROL else "")  # as ablate keys them
    return SalvagedRun(key, variant, recipe.hash(), recipe.seed, recipe.to_dict(), env, summary, history,
                       str(run_dir))


def _folder_runs(folder: Path, readable: Readable, skip_readable: bool = True) -> list[SalvagedRun]:
    """The finished runs in ``folder/runs`` (those the store still gives left out with ``skip_readable``)."""
    names = {safe_name(v): v for v in readable.meta.get("variants") or []}
    have = {r.run_key for r in readable.runs} if skip_readable else set()
    out = []
    for summary in sorted((folder / "runs").glob("*/seed-*/summary.json")):
        run = _from_folder(summary.parent, names)
        if run is not None and run.run_key not in have:
            have.add(run.run_key)
            out.append(run)
    return out


def _listing(runs: list[SalvagedRun]) -> str:
    by_variant: dict[str, list[int]] = {}
    for r in runs:
        by_variant.setdefault(r.variant, []).append(r.seed)
    return ", ".join(f"{v} (seed{'s' if len(s) > 1 else ''} {', '.join(map(str, sorted(s)))})"
                     for v, s in by_variant.items())


def damage_message(path: Path, detail: str) -> str:
    """What the command line says about a damaged store: what is wrong, which runs can still be read (from
    the file, and from the run folders beside it), and how to rebuild."""
    folder = Path(path).parent
    readable = read_damaged(Path(path))
    recovered = _folder_runs(folder, readable, skip_readable=False)
    if readable.table_unreadable and not readable.runs:
        in_store = "no run can be read from it"
    else:
        in_store = (f"{len(readable.runs)} finished run(s) can still be read from it"
                    + (f": {_listing(readable.runs)}" if readable.runs else "")
                    + (f" ({readable.unreadable} row(s) unreadable)" if readable.unreadable else ""))
    folders = (f"; the run folders under {folder / 'runs'} hold {len(recovered)} finished run(s): "
               f"{_listing(recovered)}" if recovered else "")
    return (f"the ablation store {path} is damaged ({detail}): {in_store}{folders}. To rebuild it: "
            f"`tricklab runs {folder} --salvage` writes a new store from every readable run (the damaged file "
            f"is kept as store.sqlite.damaged), then rerun the same `tricklab ablate ... --out {folder}` to redo "
            f"the missing runs; or rerun the ablation into a new --out")


def _write_store(path: Path, meta: dict[str, Any], runs: list[SalvagedRun]) -> None:
    store = Store(path)
    try:
        for k, v in meta.items():
            store.set_meta(k, v)
        for r in runs:
            run_id = store.claim(r.run_key, r.variant, r.recipe_hash, r.seed, r.recipe)
            store.finish(run_id, r.env, r.summary, r.history)
    finally:
        store.close()


def salvage(folder: Path, say: Callable[[str], Any] = print) -> tuple[int, int, Path]:
    """Rebuild ``folder/store.sqlite`` from what survives (see the module docstring); returns (runs from the
    store, runs from run folders, where the damaged file was kept)."""
    path = Path(folder) / "store.sqlite"
    if not path.exists():
        raise UserError(f"{folder} holds no ablation store (store.sqlite) to salvage")
    with FolderLock(folder, "ablation folder"):
        readable = read_damaged(path)
        extra = _folder_runs(Path(folder), readable)
        tmp = path.with_name(f"store.sqlite.salvage-{os.getpid()}")
        for p in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        _write_store(tmp, readable.meta, readable.runs + extra)
        kept = path.with_name("store.sqlite.damaged" + ("" if not path.with_name("store.sqlite.damaged").exists()
                                                        else f"-{time.strftime('%Y%m%d-%H%M%S')}"))
        for suffix in ("-wal", "-shm"):  # the damaged file's journal belongs with it
            if Path(f"{path}{suffix}").exists():
                os.replace(f"{path}{suffix}", f"{kept}{suffix}")
        os.replace(path, kept)
        os.replace(tmp, path)
    say(f"salvaged {len(readable.runs)} run(s) from the store and {len(extra)} from run folders into {path}; "
        f"the damaged file is kept as {kept}")
    return len(readable.runs), len(extra), kept
