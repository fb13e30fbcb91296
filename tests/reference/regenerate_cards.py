"""Check that committed technique cards regenerate from their command with the same numbers.

For each card folder named on the command line (``docs/cards/<folder>``), the script reads the command listed
for it in ``docs/cards/README.md``, runs it with ``--out`` pointed at a temporary folder (``--jobs`` and
``threads`` as given here; neither enters the recipe hash), and compares every card JSON it writes with the
committed one:

* every number that does not depend on the clock, exactly (``--rtol`` loosens this): baseline and technique
  means and half-widths, paired differences with their intervals, t, p, n, the averaged-vs-final comparison,
  target-reached counts, seeds and the recipe hash;
* every verdict of those numbers;
* timing numbers are left out, because they change from run to run on any machine: training time and
  inference latency (their means, differences and verdicts), the equal-time comparison (its time T and the
  accuracies at T depend on how fast each run was), the machine description and the verdict sentence (which
  quotes the timing numbers).

It prints the accuracy, NLL and ECE rows of each card (mean difference and 95% interval, committed and
regenerated), then every other difference, and exits 1 when any number differs (2 when a folder has no
runnable command). Run from the repository root, e.g.::

    PYTHONPATH=src python tests/reference/regenerate_cards.py mnist1d-main averaging one-cycle --jobs 2

``--keep DIR`` keeps the regenerated ablation folders (store, report, cards) under DIR instead of a
temporary folder.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CARDS = ROOT / "docs" / "cards"

#: metrics measured with the clock: their numbers and verdicts change between identical runs
TIMING_METRICS = frozenset({"train_seconds", "latency_ms"})
#: top-level card keys that depend on the clock or the machine, or only restate other fields
SKIPPED_KEYS = frozenset({"equal_time", "verdict_sentence"})
SKIPPED_SETTING_KEYS = frozenset({"machine"})
KEY_METRICS = ("accuracy", "nll", "ece")


def commands(readme: Path = CARDS / "README.md") -> dict[str, str]:
    """folder -> the command cell of its row in the README table (markdown, with backticks)."""
    out: dict[str, str] = {}
    for line in readme.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\|\s*\[([^\]]+)\]\([^)]*\)\s*\|.*\|\s*(.+?)\s*\|\s*$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def runnable(cell: str) -> list[str]:
    """The argument list of a cell that holds exactly one complete ``tricklab ablate`` command."""
    parts = re.findall(r"`([^`]+)`", cell)
    outside = re.sub(r"`[^`]+`", "", cell).strip()
    if len(parts) != 1 or outside or not parts[0].startswith("tricklab ablate "):
        raise ValueError(f"not one complete `tricklab ablate ...` command: {cell}")
    return shlex.split(parts[0])[1:]


def with_out(args: list[str], out: Path, jobs: int, threads: int) -> list[str]:
    """``args`` with ``--out`` and ``--jobs`` replaced and a ``threads=`` override added."""
    cleaned: list[str] = []
    skip = False
    for a in args:
        if skip:
            skip = False
            continue
        if a in ("--out", "--jobs"):
            skip = True
            continue
        if a.startswith(("--out=", "--jobs=")):
            continue
        cleaned.append(a)
    return [*cleaned, "--out", str(out), "--jobs", str(jobs), f"threads={threads}"]


def leaves(obj: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """(path, value) of every scalar in a JSON value; list items are addressed by index."""
    if isinstance(obj, dict):
        for k in sorted(obj):
            yield from leaves(obj[k], (*path, str(k)))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from leaves(v, (*path, str(i)))
    else:
        yield path, obj


def comparable(card: dict[str, Any]) -> dict[tuple[str, ...], Any]:
    """The clock-free part of a card JSON, flattened: effects are keyed by metric name, not list position."""
    body = {k: v for k, v in card.items() if k not in SKIPPED_KEYS and k != "effects"}
    body["setting"] = {k: v for k, v in (card.get("setting") or {}).items() if k not in SKIPPED_SETTING_KEYS}
    body["effects"] = {e["metric"]: e for e in card.get("effects", []) if e["metric"] not in TIMING_METRICS}
    return dict(leaves(body))


def same(a: Any, b: Any, rtol: float) -> bool:
    if isinstance(a, bool) or isinstance(b, bool) or not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return a == b
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or math.isclose(a, b, rel_tol=rtol, abs_tol=0.0)


def compare(old: dict[str, Any], new: dict[str, Any], rtol: float) -> tuple[int, list[tuple[str, Any, Any]]]:
    """(number of values compared, [(path, committed, regenerated)] that differ)."""
    a, b = comparable(old), comparable(new)
    diffs = [(".".join(p), a.get(p, "<absent>"), b.get(p, "<absent>"))
             for p in sorted(set(a) | set(b)) if not same(a.get(p, "<absent>"), b.get(p, "<absent>"), rtol)]
    return len(set(a) | set(b)), diffs


def fmt(x: Any) -> str:
    return f"{x:+.6f}" if isinstance(x, float) else str(x)


def key_rows(card: str, old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    rows = []
    by_metric = {e["metric"]: e for e in new.get("effects", [])}
    for e in old.get("effects", []):
        if e["metric"] not in KEY_METRICS:
            continue
        n = by_metric.get(e["metric"], {})
        committed = f"{fmt(e['mean_diff'])} [{fmt(e['ci_low'])}, {fmt(e['ci_high'])}]"
        regenerated = f"{fmt(n.get('mean_diff'))} [{fmt(n.get('ci_low'))}, {fmt(n.get('ci_high'))}]"
        mark = "same" if committed == regenerated and e["verdict"] == n.get("verdict") else "DIFFERS"
        rows.append(f"{card:<28} {e['metric']:<9} {committed:<38} {regenerated:<38} {mark}")
    return rows


def check_folder(folder: str, cell: str, work: Path, jobs: int, threads: int, rtol: float) -> int:
    """Regenerate one folder and compare; returns the number of differing values (-1: not runnable)."""
    try:
        args = runnable(cell)
    except ValueError as e:
        print(f"{folder}: cannot regenerate automatically ({e})")
        return -1
    out = work / folder
    cmd = [sys.executable, "-m", "tricklab", *with_out(args, out, jobs, threads)]
    print(f"{folder}: {shlex.join(cmd[2:])}", flush=True)
    started = time.perf_counter()
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        print(f"{folder}: the command failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
        return -1
    print(f"{folder}: ran in {time.perf_counter() - started:.0f} s", flush=True)
    committed = sorted((CARDS / folder).glob("*.json"))
    regenerated = {p.name for p in (out / "cards").glob("*.json")}
    differing = 0
    header = f"{'card':<28} {'metric':<9} {'committed: diff [95% CI]':<38} {'regenerated: diff [95% CI]':<38}"
    print(header + "\n" + "-" * len(header))
    others: list[str] = []
    total = 0
    for path in committed:
        card = f"{folder}/{path.stem}"
        if path.name not in regenerated:
            others.append(f"{card}: no regenerated card")
            differing += 1
            continue
        old = json.loads(path.read_text(encoding="utf-8"))
        new = json.loads((out / "cards" / path.name).read_text(encoding="utf-8"))
        for row in key_rows(card, old, new):
            print(row)
        n, diffs = compare(old, new, rtol)
        total += n
        differing += len(diffs)
        others += [f"{card}: {p}: committed {a!r}, regenerated {b!r}" for p, a, b in diffs]
    for name in sorted(regenerated - {p.name for p in committed}):
        others.append(f"{folder}/{name}: regenerated but not committed")
        differing += 1
    print(f"{folder}: {total} clock-free values compared in {len(committed)} cards, {differing} differ")
    for line in others:
        print("  " + line)
    return differing


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folders", nargs="+", help="card folders under docs/cards (e.g. mnist1d-main averaging)")
    p.add_argument("--jobs", type=int, default=2, help="worker processes per ablation (default 2)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    p.add_argument("--rtol", type=float, default=0.0, help="relative tolerance for numbers (default 0: exact)")
    p.add_argument("--keep", type=Path, default=None, help="keep the regenerated folders here")
    args = p.parse_args(argv)
    cells = commands()
    unknown = [f for f in args.folders if f not in cells]
    if unknown:
        print(f"no command for {', '.join(unknown)} in {CARDS / 'README.md'}; known: {', '.join(cells)}")
        return 2
    with tempfile.TemporaryDirectory(prefix="regenerate-cards-") as tmp:
        work = args.keep if args.keep is not None else Path(tmp)
        results = {f: check_folder(f, cells[f], work, args.jobs, args.threads, args.rtol) for f in args.folders}
    print("\nsummary:")
    for folder, n in results.items():
        print(f"  {folder:<28} " + ("not run" if n < 0 else "same numbers" if n == 0 else f"{n} values differ"))
    if any(n < 0 for n in results.values()):
        return 2
    return 1 if any(n > 0 for n in results.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
