"""The ablation store: round trip, claim/reset semantics, concurrent writers from several processes, and
SIGKILL at random moments (the store stays consistent: a run is 'done' with all its step rows or not done).

References: SQLite's own ``PRAGMA integrity_check`` (https://sqlite.org/pragma.html#pragma_integrity_check)
judges the file; the stored values are compared with the exact Python values written (floats bit for bit).
"""

from __future__ import annotations

import math
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tricklab.lab.store import RunRow, Store

SRC = Path(__file__).resolve().parents[2] / "src"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _history(key: str, n: int) -> list[dict]:
    # deterministic from the run key, so the parent can regenerate exactly what a child process wrote
    rng = random.Random(key)
    rows = []
    for s in range(1, n + 1):
        row = {"step": s, "epoch": s // 100, "seconds": round(s * 0.0123456789, 6), "lr": rng.random() * 1e-2,
               "train_loss": rng.random() * 3}
        if s % 10 == 0:
            row.update({"eval_accuracy": rng.random(), "eval_nll": rng.expovariate(1.0), "eval_ece": rng.random()})
        rows.append(row)
    return rows


def test_round_trip_of_a_run_with_history(tmp_path: Path) -> None:
    store = Store.in_folder(tmp_path / "abl")
    assert (tmp_path / "abl" / "store.sqlite").is_file()
    recipe = {"task": "mnist1d", "model": {"name": "cnn", "args": {"channels": 8}}, "lr": 0.01, "seeds": [0, 1]}
    env = {"torch": "2.x", "threads": 1}
    # floats that a lossy encoding would change: repr round-trip, a subnormal, +-inf and NaN
    summary = {"test": {"accuracy": 0.1 + 0.2, "nll": math.pi, "tiny": 5e-324, "big": 1.7976931348623157e308,
                        "per_class_f1": [1 / 3, 2 / 3]},
               "inf": math.inf, "ninf": -math.inf, "nan": math.nan, "convergence": None, "steps": 30}
    history = _history("r", 30)
    shuffled = history[::-1]  # steps() must return them ordered by step whatever order they were given in

    rid = store.claim("baseline/seed0", "baseline", "abc123", 0, recipe)
    store.finish(rid, env, summary, shuffled)

    row = store.get("baseline/seed0")
    assert isinstance(row, RunRow)
    assert (row.id, row.run_key, row.variant, row.recipe_hash, row.seed, row.status) == (
        rid, "baseline/seed0", "baseline", "abc123", 0, "done")
    assert row.recipe == recipe and row.env == env and row.error is None
    assert row.finished is not None and row.finished >= row.started
    s = row.summary
    assert s["test"]["accuracy"] == 0.30000000000000004 and s["test"]["nll"] == math.pi
    assert s["test"]["tiny"] == 5e-324 and s["test"]["big"] == 1.7976931348623157e308
    assert s["test"]["per_class_f1"] == [1 / 3, 2 / 3]
    assert s["inf"] == math.inf and s["ninf"] == -math.inf and math.isnan(s["nan"]) and s["convergence"] is None
    assert store.steps(rid) == history  # every key, every float bit for bit
    assert store.get("nope") is None

    store.set_meta("variants", ["ema", "mixup"])
    store.set_meta("variants", ["mixup", "ema"])  # replaces
    assert store.get_meta("variants") == ["mixup", "ema"]
    assert store.get_meta("missing", default={"x": 1}) == {"x": 1}
    store.close()
    with pytest.raises(ValueError, match="closed"):
        store.get("baseline/seed0")

    # a second connection sees the same data, and the file is in WAL mode
    with Store(tmp_path / "abl" / "store.sqlite") as again:
        assert again.steps(rid) == history and again.integrity_ok()
    con = sqlite3.connect(tmp_path / "abl" / "store.sqlite")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()


def test_claim_reset_and_refusals(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite") as store:
        a = store.claim("a", "baseline", "h1", 0, {"v": 1})
        b = store.claim("b", "ema", "h2", 0, {"v": 2})
        assert a != b and store.get("a").status == "running" and store.get("a").finished is None
        started = store.get("a").started

        # re-claiming a running run (its process died) resets it and keeps its id
        time.sleep(0.01)
        assert store.claim("a", "baseline", "h1b", 3, {"v": 3}) == a
        r = store.get("a")
        assert (r.status, r.recipe_hash, r.seed, r.recipe) == ("running", "h1b", 3, {"v": 3})
        assert r.started > started

        # failed -> error kept until re-claimed; re-claim clears it
        store.fail(a, "CUDA out of memory")
        r = store.get("a")
        assert (r.status, r.error) == ("failed", "CUDA out of memory") and r.finished is not None
        assert store.claim("a", "baseline", "h1", 0, {"v": 1}) == a
        r = store.get("a")
        assert (r.status, r.error, r.finished, r.summary, r.env) == ("running", None, None, None, None)

        store.finish(a, {"e": 1}, {"n": 2}, [{"step": 1, "seconds": 0.5}, {"step": 2, "seconds": 1.0}])
        with pytest.raises(ValueError, match="already done"):
            store.claim("a", "baseline", "h1", 0, {"v": 1})
        with pytest.raises(ValueError, match="already done"):
            store.finish(a, {}, {}, [])
        with pytest.raises(ValueError, match="already done"):
            store.fail(a, "late")
        with pytest.raises(ValueError, match="no run"):
            store.finish(999, {}, {}, [])
        with pytest.raises(ValueError, match="'step'"):
            store.finish(b, {}, {}, [{"seconds": 1.0}])
        # the refusals changed nothing
        assert store.get("a").summary == {"n": 2} and len(store.steps(a)) == 2
        assert store.get("b").status == "running" and store.steps(b) == []

        store.claim("c", "ema", "h3", 1, {})
        store.fail(store.get("c").id, "boom")
        assert [r.run_key for r in store.runs()] == ["a", "b", "c"]
        assert [r.run_key for r in store.runs(status="done")] == ["a"]
        assert [r.run_key for r in store.runs(variant="ema")] == ["b", "c"]
        assert [r.run_key for r in store.runs(status="failed", variant="ema")] == ["c"]
        with pytest.raises(ValueError, match="status"):
            store.runs(status="finished")
        assert store.integrity_ok()


_WORKER = """
import sys, random
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from tricklab.lab.store import Store
import time
path, worker, n_runs, n_steps, go = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
store = Store(path)
while not Path(go).exists():  # start together, so the writers really contend
    time.sleep(0.005)
for i in range(n_runs):
    key = f"w{worker}-r{i}"
    rng = random.Random(key)
    history = [{"step": s, "seconds": s * 0.01, "loss": rng.random()} for s in range(n_steps)]
    rid = store.claim(key, f"v{worker}", "hash", i, {"worker": worker})
    store.finish(rid, {"pid": 0}, {"expected_steps": n_steps, "value": rng.random()}, history)
store.close()
"""


def test_four_processes_write_concurrently(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    Store(path).close()  # one process creates the schema; the workers each open their own Store
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, str(SRC), str(path), str(w), "25", "50", str(go)],
                              stderr=subprocess.PIPE, text=True) for w in range(4)]
    time.sleep(0.3)
    go.touch()
    for p in procs:
        _, err = p.communicate(timeout=50)
        assert p.returncode == 0, err

    with Store(path) as store:
        assert store.integrity_ok()
        runs = store.runs()
        assert len(runs) == 100 and all(r.status == "done" for r in runs)
        for r in runs:
            rng = random.Random(r.run_key)
            expected = [{"step": s, "seconds": s * 0.01, "loss": rng.random()} for s in range(50)]
            assert store.steps(r.id) == expected, r.run_key
            assert r.summary == {"expected_steps": 50, "value": rng.random()}
        assert sorted(r.variant for r in runs) == sorted(f"v{w}" for w in range(4) for _ in range(25))


_KILLED = """
import sys, random
sys.path.insert(0, sys.argv[1])
from tricklab.lab.store import Store
sys.path.insert(0, sys.argv[3])
from _history import _history as history
store = Store(sys.argv[2])
print("ready", flush=True)
rng = random.Random()
# first finish what an earlier, killed process left running (re-claiming an unfinished run)
todo = [r.run_key for r in store.runs(status="running")]
k = len(store.runs())
while True:
    if todo:
        key = todo.pop()
    else:
        key, k = f"run{k}", k + 1
    n = int(key[3:]) % 7 * 400 + 1500   # 1500 .. 3900 rows, a function of the key
    rid = store.claim(key, "v", "h", 0, {"key": key})
    rows = history(key, n)
    store.finish(rid, {}, {"expected_steps": n}, rows)
"""


def _check_after_kill(path: Path, full: bool = True) -> tuple[int, int]:
    """Every run is 'done' with exactly the step rows it wrote, or 'running' with none. ``full`` compares
    every row through Store.steps; otherwise the row counts come from a plain SQL query (cheap enough to
    run after each of the kills)."""
    with Store(path) as store:
        assert store.integrity_ok()
        con = sqlite3.connect(path)
        counts = dict(con.execute("SELECT run_id, COUNT(*) FROM steps GROUP BY run_id").fetchall())
        con.close()
        done = running = 0
        for r in store.runs():
            if r.status == "done":
                n = r.summary["expected_steps"]
                assert counts.get(r.id, 0) == n, (r.run_key, counts.get(r.id, 0), n)
                if full:
                    assert store.steps(r.id) == _history(r.run_key, n), r.run_key
                done += 1
            else:
                assert r.status == "running" and r.summary is None and r.finished is None, r
                assert counts.get(r.id, 0) == 0  # no partial history of an unfinished run
                running += 1
        return done, running


def test_sigkill_at_random_moments_leaves_a_consistent_store(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    # the child regenerates histories with the very function the checks use
    (tmp_path / "_history.py").write_text(
        "import random\n" + __import__("inspect").getsource(_history), encoding="utf-8")
    rng = random.Random(1234)
    unfinished_seen = 0
    for _ in range(5):
        proc = subprocess.Popen([sys.executable, "-c", _KILLED, str(SRC), str(path), str(tmp_path)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = proc.stdout.readline()
        assert line.strip() == "ready", proc.stderr.read()
        time.sleep(rng.uniform(0.05, 0.5))
        assert proc.poll() is None, proc.stderr.read()  # still working when killed
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()
        assert proc.returncode == -signal.SIGKILL
        done, running = _check_after_kill(path, full=False)
        unfinished_seen += running

    done, running = _check_after_kill(path)
    assert done >= 1  # the children did finish runs between kills
    # each kill almost always lands inside a run's claim..finish window (history building + the big insert
    # take nearly all of the loop); across 5 kills at least one unfinished run must have been seen
    assert unfinished_seen >= 1

    # re-claiming the unfinished runs works, and finishing them makes them complete
    with Store(path) as store:
        for r in store.runs(status="running"):
            assert store.claim(r.run_key, "v", "h", 0, {"key": r.run_key}) == r.id
            store.finish(r.id, {}, {"expected_steps": 100}, _history(r.run_key, 100))
        assert store.runs(status="running") == []
    done_after, running_after = _check_after_kill(path)
    assert (done_after, running_after) == (done + running, 0)


_OLD_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, run_key TEXT NOT NULL UNIQUE, variant TEXT NOT NULL,
    recipe_hash TEXT NOT NULL, seed INTEGER NOT NULL, status TEXT NOT NULL, recipe TEXT NOT NULL, env TEXT,
    summary TEXT, started REAL NOT NULL, finished REAL, error TEXT);
CREATE TABLE steps (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id INTEGER NOT NULL REFERENCES runs(id),
    step INTEGER NOT NULL, seconds REAL, metrics TEXT NOT NULL);
"""


def test_versions_are_recorded_and_old_stores_migrate(tmp_path: Path) -> None:
    """A store written before the data_fingerprint column existed gets it on open, filled in from each run's
    environment; runs are listed by recipe-hash and data-fingerprint prefixes (matched literally)."""
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(_OLD_SCHEMA)
    db.execute("INSERT INTO runs(run_key, variant, recipe_hash, seed, status, recipe, env, summary, started) "
               "VALUES ('h1:0', 'baseline', 'h1aaaa', 0, 'done', '{}', '{\"dataset_fingerprint\": \"fp%one\"}', "
               "'{}', 1.0)")
    db.execute("INSERT INTO runs(run_key, variant, recipe_hash, seed, status, recipe, started) "
               "VALUES ('h2:0', 'ema', 'h2bbbb', 0, 'running', '{}', 2.0)")
    db.commit()
    db.close()
    with Store(path) as store:
        rows = store.runs()
        assert [r.data_fingerprint for r in rows] == ["fp%one", None]
        assert [r.variant for r in store.runs(data_fingerprint="fp%")] == ["baseline"]
        assert store.runs(data_fingerprint="fp_") == []  # '_' is not a wildcard
        assert [r.variant for r in store.runs(recipe_hash="h2")] == ["ema"]
        store.finish(rows[1].id, {"dataset_fingerprint": "fp-two"}, {}, [{"step": 1}])
        assert store.get("h2:0").data_fingerprint == "fp-two"
        assert store.integrity_ok()
        store.claim("h2:1", "ema", "h2bbbb", 1, {})
        assert store.get("h2:1").data_fingerprint is None  # known once the run finishes
    with Store(path) as again:  # opening a migrated store changes nothing
        assert [r.data_fingerprint for r in again.runs()] == ["fp%one", "fp-two", None]
