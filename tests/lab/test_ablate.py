"""`tricklab ablate`: planning, bad input (exit 2), the kill-and-rerun guarantee, runs/report/cards commands."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tricklab.errors import ConfigError, ConflictError, UnknownNameError, UserError
from tricklab.cli import parse_budget, parse_technique, parse_variant, plan_ablation
from tricklab.lab.ablate import load_base

TINY = ["--budget", "60", "eval_every=30", "log_every=10"]


def cli(*args: str) -> tuple[int, str, str]:
    from tricklab.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def test_plan_has_baseline_then_each_technique_and_combos() -> None:
    plan = plan_ablation(load_base(None, []), ["ema:decay=0.99", "grad_clip"], ["ema+grad_clip"], [0, 1], "200")
    names = [v.name for v in plan.variants]
    assert names == ["baseline", "ema(decay=0.99)", "grad_clip", "ema(decay=0.99)+grad_clip"]
    assert all(v.recipe.budget.steps == 200 for v in plan.variants)  # equal budget
    assert [t.name for t in plan.variants[3].recipe.techniques] == ["ema", "grad_clip"]
    # every argument is recorded, defaults included (EMA's signature: decay=0.999, warmup=True, every=1)
    assert plan.variants[1].recipe.techniques[0].args == {"decay": 0.99, "warmup": True, "every": 1}
    assert len({v.recipe.hash() for v in plan.variants}) == 4


def test_control_runs_only_where_a_timing_difference_is_judged() -> None:
    """The baseline runs a second time per seed (the training-time noise floor) when variants are compared at a
    step or epoch budget; not at a wall-clock budget, nor for the baseline alone (several seeds of one recipe)."""
    base = load_base(None, [])
    assert plan_ablation(base, ["grad_clip"], [], [0, 1], "200").control
    assert not plan_ablation(base, ["grad_clip"], [], [0, 1], "5s").control
    alone = plan_ablation(base, [], [], [0, 1, 2], "200")
    assert [v.name for v in alone.variants] == ["baseline"] and not alone.control


@pytest.mark.parametrize(("text", "expected"), [("6000", {"steps": 6000}), ("10epochs", {"epochs": 10}),
                                                ("90s", {"seconds": 90.0}), ("2.5s", {"seconds": 2.5})])
def test_parse_budget(text: str, expected: dict) -> None:
    assert parse_budget(text) == expected


@pytest.mark.parametrize("text", ["0", "-5", "abc", "1.5steps", "3 weeks", "0s"])
def test_impossible_budget_is_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="--budget"):
        parse_budget(text)


def test_bad_input_exits_2(tmp_path: Path) -> None:
    code, _, err = cli("ablate", "--techniques", "emma", "--out", str(tmp_path / "a"))
    assert code == 2 and "unknown technique 'emma'" in err and "'ema'" in err
    code, _, err = cli("ablate", "--budget", "-3", "--out", str(tmp_path / "b"))
    assert code == 2 and "--budget" in err
    code, _, err = cli("ablate", "--seeds", "0", "--out", str(tmp_path / "c"))
    assert code == 2 and "--seeds" in err
    code, _, err = cli("ablate", "--techniques", "ema:decay=fast", "--out", str(tmp_path / "d"))
    assert code == 2 and "decay" in err and "expected a number" in err
    assert not any((tmp_path / n).exists() for n in "abcd")
    assert parse_technique("ema:decay=0.5").args == {"decay": 0.5}
    with pytest.raises(UnknownNameError):
        plan_ablation(load_base(None, []), ["nope"], [], [0])
    with pytest.raises(ConflictError):  # a combination that writes one exclusive slot twice
        plan_ablation(load_base(None, []), ["ema", "ema:decay=0.9"], ["ema+ema:decay=0.9"], [0])


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def _ablate_cmd(out: Path, techniques: str = "ema,label_smoothing") -> list[str]:
    return [sys.executable, "-m", "tricklab", "ablate", *TINY, "--seeds", "2", "--jobs", "2",
            "--techniques", techniques, "--out", str(out)]


def _done_runs(store: Path) -> dict[str, float]:
    if not store.exists():
        return {}
    con = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=30)
    try:
        return dict(con.execute("SELECT run_key, started FROM runs WHERE status = 'done'").fetchall())
    except sqlite3.OperationalError:
        return {}
    finally:
        con.close()


def _wait_until_gone(group: int, timeout: float = 120.0) -> None:
    """Wait until no live process of the process group ``group`` is left (zombies, whose parent is gone and
    which no init may reap in a container, count as gone)."""
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue  # the process ended while being read
            if fields[0] != "Z" and int(fields[2]) == group:  # fields: state, ppid, pgrp, ...
                alive.append(stat.parent.name)
        if not alive:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"the killed ablation's workers {alive} still run {timeout:.0f} s after its driver died")
        time.sleep(0.05)


def test_sigkill_halfway_then_rerun_finishes_without_redoing(tmp_path: Path, browser) -> None:
    out = tmp_path / "abl"
    store = out / "store.sqlite"
    proc = subprocess.Popen(_ablate_cmd(out), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    deadline = time.monotonic() + 300
    while len(_done_runs(store)) < 2:  # 8 runs in all (6 and 2 control runs): kill once a quarter is done
        if proc.poll() is not None:
            pytest.fail(f"ablation ended before the kill (rc {proc.returncode}): {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("ablation made no progress")
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # the driver only: its workers die with it (parent-death signal)
    proc.wait()
    # a worker killed inside the fsync of its last commit dies only when the fsync returns: its run may then be
    # in the write-ahead log (kept, and seen by the rerun) though not yet in the index other readers use; count
    # the finished runs once every process of the ablation is gone
    _wait_until_gone(proc.pid)
    finished_before = _done_runs(store)
    assert 2 <= len(finished_before) < 8
    con = sqlite3.connect(store)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    time.sleep(0.5)
    assert _done_runs(store) == finished_before  # no orphan worker kept writing

    r = subprocess.run(_ablate_cmd(out), env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert f"{len(finished_before)} of 8 runs already finished" in r.stdout, r.stdout
    assert "taking over the lock of process" in r.stderr  # the killed driver's lock, left behind
    after = _done_runs(store)
    assert len(after) == 8
    for key, started in finished_before.items():
        assert after[key] == started  # finished runs were not redone
    assert (out / "report.html").is_file() and (out / "cards" / "ema.md").is_file()
    rendered, expected, console = browser.plots(out / "report.html")  # the real report opens in Chromium
    assert rendered == expected >= 8 and console == []

    # another ablation into the same folder is refused
    r = subprocess.run(_ablate_cmd(out, "grad_clip"), env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "another ablation" in r.stderr, r.stderr
    differs = r.stderr.split("what differs:")[1].split(". Choose another")[0]  # the budget is the same
    assert "the techniques and variants (baseline, ema, label_smoothing in the store; baseline, grad_clip now)" \
        in differs and "budget" not in differs

    # the store commands
    code, text, _ = cli("runs", str(out))
    assert code == 0 and text.count("done") == 8
    (out / "report.html").unlink()
    code, text, _ = cli("report", str(out))
    assert code == 0 and (out / "report.html").is_file()
    code, text, _ = cli("cards", str(out), "--to", str(tmp_path / "cards"))
    assert code == 0 and (tmp_path / "cards" / "label_smoothing.json").is_file()
    shutil.rmtree(out / "cards")
    code, text, _ = cli("cards", str(out))  # by default into the ablation folder, never ./docs/cards
    assert code == 0 and (out / "cards" / "label_smoothing.json").is_file() and str(out / "cards") in text


def test_one_seed_says_no_interval(tmp_path: Path) -> None:
    code, text, err = cli("ablate", *TINY, "--seeds", "1", "--jobs", "1", "--techniques", "grad_clip",
                          "--out", str(tmp_path / "one"))
    assert code == 0, err
    assert "intervals cannot be computed" in text
    card = (tmp_path / "one" / "cards" / "grad_clip.md").read_text()
    assert "cannot" in card


def test_store_commands_on_a_missing_folder(tmp_path: Path) -> None:
    for cmd in ("runs", "report", "cards"):
        code, _, err = cli(cmd, str(tmp_path / "none"))
        assert code == 2 and "store" in err


def test_variants_change_recipe_keys_at_equal_budget() -> None:
    plan = plan_ablation(load_base(None, []), [], [], [0], "100",
                     ["big_batch:batch_size=1000;optimizer.lr=0.02", "sgd:optimizer.name=sgd"])
    names = [v.name for v in plan.variants]
    assert names == ["baseline", "big_batch", "sgd"]
    assert plan.variants[1].recipe.batch_size == 1000 and plan.variants[1].recipe.optimizer.lr == 0.02
    assert plan.variants[2].recipe.optimizer.name == "sgd"
    assert all(v.recipe.budget.steps == 100 for v in plan.variants)
    with pytest.raises(ConfigError, match="equal budget"):
        plan_ablation(load_base(None, []), [], [], [0], None, ["long:budget.steps=99999"])
    with pytest.raises(ConfigError, match="NAME:key=value"):
        parse_variant("nocolon")
    with pytest.raises(UnknownNameError):
        plan_ablation(load_base(None, []), [], [], [0], None, ["x:optimizer.name=adamx"])


def test_existing_folder_message_names_what_differs(tmp_path: Path) -> None:
    from tricklab.lab.ablate import _todo
    from tricklab.lab.store import Store

    out = tmp_path / "abl"
    out.mkdir()
    plan = plan_ablation(load_base(None, []), ["ema"], [], [0, 1], "200")
    _todo(plan, out, out / "store.sqlite")
    # only the budget differs: the message says the budget, not the techniques
    with pytest.raises(UserError) as err:
        _todo(plan_ablation(load_base(None, []), ["ema"], [], [0, 1], "300"), out, out / "store.sqlite")
    differs = str(err.value).split("what differs: ")[1].split(". Choose")[0]
    assert differs.startswith("the budget (") and "techniques" not in differs
    # more seeds extend the same ablation
    assert len(_todo(plan_ablation(load_base(None, []), ["ema"], [], [0, 1, 2], "200"), out, out / "store.sqlite"))
    # a store written before technique defaults entered recipes: same names, same budget, other hashes
    old = tmp_path / "old"
    old.mkdir()
    with Store(old / "store.sqlite") as store:
        store.set_meta("ablation_id", "0123456789abcdef")
        store.set_meta("variants", ["baseline", "ema"])
        store.set_meta("baseline_recipe", plan.baseline.to_dict())
        legacy = plan.variants[1].recipe.to_dict()
        legacy["techniques"] = [{"name": "ema", "args": {}}]
        store.claim("k", "ema", "h", 0, legacy)
    with pytest.raises(UserError) as err:
        _todo(plan, old, old / "store.sqlite")
    assert "variant 'ema'" in str(err.value) and "technique defaults" in str(err.value)
    assert "techniques.ema.decay: (not set) (in the store) vs 0.999 (now)" in str(err.value)


def test_a_loop_tasks_setting_shows_the_loops_own_length(tmp_path: Path) -> None:
    """A loop task gets its length from task_args (with its config's defaults), not from the recipe's budget: the
    report's setting must say what the runs did (reference: the config dataclass built by hand)."""
    from tricklab.lab.ablate import _setting
    from tricklab.lab.store import Store
    from tricklab.paradigms.selfsup.run import SelfSupConfig

    with Store(tmp_path / "store.sqlite") as store:
        store.set_meta("baseline_recipe", {"task": "selfsup", "task_args": {"steps": 7}, "budget": {"steps": 6000},
                                           "eval_every": 123})
        setting = _setting(store, [])
    assert setting.budget == {"steps": 7} and setting.eval_every == SelfSupConfig().eval_every
    assert setting.model is None and setting.where() == "selfsup"
    with Store(tmp_path / "plain.sqlite") as store:  # a trainer task keeps the recipe's own budget
        store.set_meta("baseline_recipe", {"task": "mnist1d", "model": {"name": "mlp"}, "budget": {"steps": 50},
                                           "eval_every": 25})
        plain = _setting(store, [])
    assert plain.budget == {"steps": 50} and plain.eval_every == 25 and plain.where() == "mnist1d/mlp"
