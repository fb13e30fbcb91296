"""Task kinds with declared metrics: recipes that name a kind and a user's files, the loss and evaluation of
each kind, tasks with their own loop, and ``tricklab ablate`` end to end on a regression read from a CSV and
on the bandit loop task, with the verdict direction each metric declares.

References: scikit-learn's ``compute_class_weight("balanced")`` for the class weights; the BCE ``pos_weight``
negatives/positives computed in NumPy; ``F.cross_entropy`` / ``F.huber_loss`` for the losses; the committed
technique cards (written before task kinds existed) for the recipe hash of the main ablation; Sutton & Barto
(2018) Figure 2.2 for the direction of the bandit result (epsilon 0.1 beats greedy on reward and optimal
actions).
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tricklab.errors import ConfigError, TrainingError
from tricklab.lab.ablate import load_base
from tricklab.lab.build import PreparedData, check_recipe, resolve_task
from tricklab.lab.kinds import KINDS, kind_for, token_cross_entropy
from tricklab.lab.metrics import METRICS, REGRESSION_METRICS, MetricInfo
from tricklab.lab.recipe import load_recipe, recipe_from_dict
from tricklab.lab.noise import CONTROL
from tricklab.lab.runner import run
from tricklab.lab.tasks import TASKS, LoopResult, LoopTask

ROOT = Path(__file__).resolve().parents[2]
FAST = ["progress=false", "threads=1"]


def done_rows(text: str) -> list[list[str]]:
    """The cells of the finished runs in a ``tricklab runs`` table."""
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in text.splitlines() if line.startswith("│")]
    return [r for r in rows if "done" in r]


def cli(*args: str) -> tuple[int, str, str]:
    from tricklab.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


# ---------------------------------------------------------------------------------------------- recipes
def test_recipe_short_forms_name_the_kind_and_the_files() -> None:
    r = recipe_from_dict({"task": {"kind": "regression", "loss": "huber"},
                          "data": {"format": "csv", "path": "x.csv", "target": "price", "val_fraction": 0.2}})
    assert (r.task, r.task_args, r.model.name) == ("files", {"kind": "regression", "loss": "huber"}, "mlp")
    assert r.data.args == {"format": "csv", "path": "x.csv", "target": "price"} and r.data.val_fraction == 0.2
    assert recipe_from_dict(r.to_dict()) == r  # the resolved form reads back to the same recipe
    r2 = load_recipe(None, ["task=files", "task.kind=binary", "data.args.path=y.csv"])
    assert r2.task == "files" and r2.task_args == {"kind": "binary"}
    assert r.hash() != recipe_from_dict({**r.to_dict(), "task_args": {"kind": "regression"}}).hash()


def test_old_recipes_keep_their_hash() -> None:
    """The committed cards of the main ablation were written before task_args and robustness existed."""
    card = json.loads((ROOT / "docs" / "cards" / "mnist1d-main" / "ema.json").read_text())
    assert load_base(None, []).hash() == card["setting"]["recipe_hash"]
    with_robustness = load_base(None, ["robustness={eps: 0.1}"])
    assert with_robustness.robustness is not None and with_robustness.hash() != card["setting"]["recipe_hash"]


def test_bad_kinds_and_options_are_refused_before_anything_runs() -> None:
    for overrides, match in [(["task_args.kind=ranking"], "task_args.kind"),
                             (["task_args.loss=huber"], "not an option of a classification task"),
                             (["task=files", "task_args.kind=regression", "task_args.loss=cubic"], "loss"),
                             (["data.args.format=csv", "data.args.path=x.csv"], "task: files"),
                             (["task=shakespeare-char", "robustness={eps: 0.1}"], "robustness"),
                             (["task=bandit", "techniques=[ema]"], "own loop"),
                             (["task=bandit", "task_args.epsilon=2"], "epsilon"),
                             (["task=bandit", "task_args.arms_typo=3"], "arms_typo")]:
        with pytest.raises(ConfigError, match=match):
            check_recipe(load_recipe(None, overrides))


def test_kind_for_reads_the_data_or_checks_the_stated_kind() -> None:
    assert kind_for("auto", None, {"target_kind": "regression"}, 1, "files") == "regression"
    assert kind_for("auto", None, {"target_kind": "multiclass", "task": "token-lm"}, 50, "files") == "token"
    assert kind_for("classification", "binary", {}, 2, "breast-cancer") == "binary"
    with pytest.raises(ConfigError, match="data.target_kind"):
        kind_for("classification", "binary", {}, 10, "mnist1d")
    with pytest.raises(ConfigError, match="does not fit"):
        kind_for("auto", "regression", {"target_kind": "multilabel"}, 4, "files")


# --------------------------------------------------------------------------------------- losses, metrics
def _prepared(num_outputs: int, meta: dict[str, Any], y: torch.Tensor | None = None) -> PreparedData:
    return PreparedData(None, None, None, None, (4,), num_outputs, "fp", meta=meta, train_targets=y)


def test_existing_tasks_train_and_evaluate_exactly_as_before() -> None:
    """The classification and per-token paths keep the task's own loss function object and evaluation, so
    every stored number of the old tasks is reproduced (checked in full by tests/reference/regenerate_cards.py
    on the committed cards)."""
    mnist = resolve_task(TASKS.get("mnist1d"), load_recipe(None, []), _prepared(10, {}))
    assert mnist.loss is F.cross_entropy and mnist.metrics == METRICS and mnist.kind == "classification"
    lm = resolve_task(TASKS.get("shakespeare-char"), load_recipe(None, ["task=shakespeare-char"]), _prepared(30, {}))
    assert lm.loss is token_cross_entropy and lm.kind == "token"
    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(50, 10, generator=g), torch.randint(0, 10, (50,), generator=g)
    assert mnist.metric_fn(logits, y) == TASKS.get("mnist1d").metric_fn(10)(logits, y)


def test_balanced_class_weights_match_sklearn() -> None:
    utils = pytest.importorskip("sklearn.utils.class_weight")
    y = torch.tensor([0] * 30 + [1] * 10 + [2] * 5)
    recipe = load_recipe(None, ["task=wine", "task_args.class_weights=balanced"])
    resolved = resolve_task(TASKS.get("wine"), recipe, _prepared(3, {}, y))
    ref = utils.compute_class_weight("balanced", classes=np.arange(3), y=y.numpy())
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(8, 3, generator=g, requires_grad=True)
    t = torch.randint(0, 3, (8,), generator=g)
    got = resolved.loss(logits, t)
    want = F.cross_entropy(logits, t, weight=torch.tensor(ref, dtype=torch.float32))
    assert torch.allclose(got, want)
    (ga,) = torch.autograd.grad(got, logits)
    (gb,) = torch.autograd.grad(want, logits)
    assert torch.allclose(ga, gb)


def test_multilabel_pos_weight_and_regression_losses() -> None:
    y = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 0, 1], [1, 0, 0]], dtype=torch.float32)
    recipe = load_recipe(None, ["task=files", "task_args.pos_weight=balanced"])
    ml = resolve_task(TASKS.get("files"), recipe, _prepared(3, {"target_kind": "multilabel"}, y))
    pos = y.numpy().sum(0)
    ref = torch.tensor((len(y) - pos) / pos, dtype=torch.float32)  # negatives / positives per label
    z = torch.randn(4, 3, requires_grad=True)
    assert torch.allclose(ml.loss(z, y), F.binary_cross_entropy_with_logits(z, y, pos_weight=ref))
    assert ml.kind == "multilabel" and ml.metrics[0].key == "micro_f1"
    huber = load_recipe(None, ["task=files", "task_args.loss=huber", "task_args.huber_delta=0.5"])
    reg = resolve_task(TASKS.get("files"), huber, _prepared(1, {"target_kind": "regression"}))
    out, t = torch.randn(6, 1, requires_grad=True), torch.randn(6)  # (N, 1) outputs against (N,) targets
    assert torch.allclose(reg.loss(out, t), F.huber_loss(out[:, 0], t, delta=0.5))
    assert reg.metrics == REGRESSION_METRICS and not reg.metrics[0].higher_is_better
    # standardised targets: metrics in the target's units (MSE scales by std^2)
    scaled = resolve_task(TASKS.get("files"), load_recipe(None, ["task=files"]), _prepared(
        1, {"target_kind": "regression", "target_standardized": True, "target_std": [3.0], "target_mean": [1.0]}))
    m = scaled.metric_fn(out.detach(), t)
    assert m["mse"] == pytest.approx(9 * float(F.mse_loss(out.detach()[:, 0], t)), rel=1e-6)


# ------------------------------------------------------------------------------------------- own loops
def _toy_loop(config: Any, *, seed: int, run_dir: Path, progress: Any) -> Any:
    class Result:  # the shape of a paradigm's ParadigmResult (metrics, history, extras)
        metrics = {"score": float(seed) + 0.5, "steps_taken": np.float32(3)}
        history = [{"step": 1, "seconds": 0.1, "score": 0.2}, {"step": 3, "seconds": 0.3, "score": 0.5}]
        extras = {"grid": [[1, 2], [3, 4]]}
    for row in Result.history:
        progress(row)
    return Result()


def test_a_loop_task_runs_into_the_same_run_folder_and_summary(tmp_path: Path) -> None:
    metrics = (MetricInfo("score", "Score", True), MetricInfo("steps_taken", "Steps", False, judged=False))
    task = LoopTask("toy-loop", "a toy", _toy_loop, metrics)
    TASKS.register(task.name, task)
    try:
        result = run(load_recipe(None, ["task=toy-loop", "techniques=[]", "seed=2", *FAST]), out=tmp_path / "r")
    finally:
        TASKS._items.pop("toy-loop")
        TASKS._summaries.pop("toy-loop")
    s = result.summary
    assert s.task_kind == "loop" and s.metrics == metrics and s.test.value("score") == 2.5
    assert s.test.value("steps_taken") == 3.0 and s.extras == {"grid": [[1, 2], [3, 4]]} and s.steps == 3
    assert result.history[1] == {"step": 3, "seconds": 0.3, "eval_score": 0.5}  # the trainer's curve key
    on_disk = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert on_disk["test"]["score"] == 2.5 and on_disk["metrics"][0]["key"] == "score"
    logged = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert logged == [{"step": 1, "seconds": 0.1, "score": 0.2}, {"step": 3, "seconds": 0.3, "score": 0.5}]
    assert (tmp_path / "r" / "recipe.yaml").is_file() and (tmp_path / "r" / "env.json").is_file()


def test_a_loop_that_misses_a_declared_metric_fails_clearly(tmp_path: Path) -> None:
    task = LoopTask("toy-missing", "a toy", lambda cfg, **kw: LoopResult({"other": 1.0}),
                    (MetricInfo("score", "Score", True),))
    with pytest.raises(TrainingError, match="declared metric"):
        task.run(load_recipe(None, ["task=bandit"]), seed=0, run_dir=tmp_path, progress=lambda row: None)


# -------------------------------------------------------------------------------------- end to end (CLI)
def _write_csv(path: Path, n: int = 240, seed: int = 0, tweak: bool = False) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    colour = rng.choice(["red", "green", "blue"], size=n)
    price = np.rint(500 + 80 * x[:, 0] - 40 * x[:, 1] + 25 * (colour == "red") + rng.normal(0, 5, n)).astype(int)
    lines = ["a,b,c,d,colour,price"] + [f"{r[0]:.4f},{r[1]:.4f},{r[2]:.4f},{r[3]:.4f},{c},{p}"
                                        for r, c, p in zip(x, colour, price)]
    text = "\n".join(lines) + "\n"
    if tweak:  # one byte: the last digit of the last price
        text = text[:-2] + str((int(text[-2]) + 1) % 10) + "\n"
    path.write_text(text)


def _regression_recipe(folder: Path, csv: str) -> Path:
    recipe = folder / f"{csv}.yaml"
    recipe.write_text(
        f"task: {{kind: regression}}\n"
        f"data: {{format: csv, path: {folder / csv}, target: price, standardize_target: true}}\n"
        "optimizer: {name: adam, lr: 0.00001}\nbudget: {steps: 150}\nbatch_size: 32\neval_every: 50\n"
        "log_every: 50\nthreads: 1\nseeds: [0, 1]\n")
    return recipe


def test_a_csv_regression_runs_through_ablate_with_lower_is_better_verdicts(tmp_path: Path) -> None:
    """Integer prices would be read as classes; task: {kind: regression} reads them as a regression target.
    A learning rate that trains (1e-2) against one that barely moves (1e-5): MSE falls ('helps' with a negative
    difference, lower is better) and R^2 rises ('helps' with a positive one). Three seeds: with two, the
    Holm-adjusted p-values over the verdict table cannot fall below 0.05 however large the effect."""
    _write_csv(tmp_path / "houses.csv")
    out = tmp_path / "ablation"
    code, stdout, err = cli("ablate", str(_regression_recipe(tmp_path, "houses.csv")), "--techniques", "",
                            "--variant", "trained:optimizer.lr=0.01", "--seeds", "3", "--jobs", "2", "--out", str(out))
    assert code == 0, err + stdout
    assert "test mse" in stdout
    card = json.loads((out / "cards" / "trained.json").read_text())
    effects = {e["metric"]: e for e in card["effects"]}
    assert list(effects)[:4] == ["mse", "rmse", "mae", "r2"] and "accuracy" not in effects
    assert effects["mse"]["higher_is_better"] is False and effects["mse"]["mean_diff"] < 0
    assert effects["mse"]["verdict"] == "helps" and effects["rmse"]["verdict"] == "helps"
    assert effects["r2"]["mean_diff"] > 0 and effects["r2"]["verdict"] == "helps"
    assert effects["mse"]["technique_mean"] < 0.2 * effects["mse"]["baseline_mean"]
    assert card["equal_time"]["key"] == "eval_mse"
    report = (out / "report.html").read_text()
    assert "MSE vs training time" in report and 'data-plot="eval-mse-vs-step"' in report

    # versioning: every run records the data fingerprint; a CSV one byte different is other data
    code, listed, _ = cli("runs", str(out), "--width", "64")
    fingerprints = {r[-1] for r in done_rows(listed)}
    assert code == 0 and len(done_rows(listed)) == 9  # 2 variants x 3 seeds, and the 3 control runs
    assert len(fingerprints) == 1 and len(next(iter(fingerprints))) == 64
    fp_a = fingerprints.pop()
    _write_csv(tmp_path / "houses2.csv", tweak=True)
    assert (tmp_path / "houses.csv").read_bytes() != (tmp_path / "houses2.csv").read_bytes()
    second = _regression_recipe(tmp_path, "houses2.csv")
    code, _, err = cli("ablate", str(second), "--techniques", "", "--seeds", "1", "--jobs", "1", "--out", str(out),
                       "data.args.path=" + str(tmp_path / "houses2.csv"))
    assert code == 2 and "the data files changed" in err  # nothing of the old data is reused or mixed in
    out2 = tmp_path / "ablation2"
    code, _, err = cli("ablate", str(second), "--techniques", "", "--seeds", "1", "--jobs", "1", "--out", str(out2))
    assert code == 0, err
    code, both, _ = cli("runs", str(out), str(out2))  # 16 characters of each fingerprint
    # 9 runs of the first store and the second's baseline (alone, so without a control run)
    assert code == 0 and len({r[-1] for r in done_rows(both)}) == 2 and len(done_rows(both)) == 10
    code, only_a, _ = cli("runs", str(out), str(out2), "--data-fingerprint", fp_a[:12])
    rows = done_rows(only_a)
    assert code == 0 and len(rows) == 9 and {r[-1] for r in rows} == {fp_a[:16]}  # the first store's runs
    recipe_hash = json.loads((out / "cards" / "trained.json").read_text())["setting"]["recipe_hash"]
    code, base_only, _ = cli("runs", str(out), "--recipe-hash", recipe_hash)
    # the baseline's recipe: its three runs and the three control runs (the same recipe, run again)
    assert code == 0 and sorted(r[0] for r in done_rows(base_only)) == ["baseline"] * 3 + [CONTROL] * 3


def test_the_bandit_loop_task_runs_through_ablate(tmp_path: Path) -> None:
    """Greedy (epsilon 0) against epsilon 0.1: more reward and optimal actions (higher is better, 'helps'),
    less regret (lower is better: a negative difference that 'helps')."""
    out = tmp_path / "bandit"
    code, stdout, err = cli("ablate", "task=bandit", "task_args={epsilon: 0.0, runs: 400, steps: 500}",
                            "--techniques", "", "--variant", "explore:task_args.epsilon=0.1", "--seeds", "3",
                            "--jobs", "1", "--out", str(out))
    assert code == 0, err + stdout
    card = json.loads((out / "cards" / "explore.json").read_text())
    effects = {e["metric"]: e for e in card["effects"]}
    assert set(effects) == {"mean_reward", "optimal_action", "regret", "train_seconds"}
    assert effects["regret"]["higher_is_better"] is False and effects["regret"]["mean_diff"] < 0
    assert effects["regret"]["verdict"] == "helps" and effects["mean_reward"]["verdict"] == "helps"
    assert effects["optimal_action"]["verdict"] == "helps"
    assert card["setting"]["model"] is None and card["setting"]["task"] == "bandit"
    assert "Mean reward per step vs training time" in (out / "report.html").read_text()


def test_list_tasks_shows_kind_and_metrics() -> None:
    code, out, _ = cli("list", "tasks")
    assert code == 0
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") > 3}
    assert "classification" in rows["mnist1d"] and "accuracy ↑" in rows["mnist1d"] and "nll ↓" in rows["mnist1d"]
    assert "loop" in rows["bandit"] and "regret ↓" in rows["bandit"]
    assert "auto" in rows["files"]
    assert "mse ↓" in rows["regression"] and "r2 ↑" in rows["regression"] and "bpc ↓" in rows["token"]
    assert set(KINDS) <= set(rows)


# ------------------------------------------------------------------------------ binary and multi-label files
def test_binary_and_multilabel_runs_from_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5))
    label = np.where(x[:, 0] + 0.3 * rng.normal(size=300) > 1.0, "yes", "no")  # about 16% positives
    rows = ["f0,f1,f2,f3,f4,label"] + [",".join(f"{v:.4f}" for v in r) + f",{lab}" for r, lab in zip(x, label)]
    (tmp_path / "b.csv").write_text("\n".join(rows) + "\n")
    # quoted: YAML reads a bare yes as true
    spec = f"data={{format: csv, path: {tmp_path / 'b.csv'}, target: label, positive_label: 'yes'}}"
    binary = load_recipe(None, ["task={kind: binary, class_weights: balanced}", "model=mlp", spec,
                                "budget.steps=60", "eval_every=30", "batch_size=50", *FAST])
    s = run(binary, out=tmp_path / "binary").summary
    assert s.task_kind == "binary" and [m.key for m in s.metrics[:4]] == ["f1", "auroc", "precision", "recall"]
    assert 0.5 < s.test.value("auroc") <= 1.0 and s.test.value("f1") is not None

    ind = (rng.random((200, 3)) < [0.5, 0.3, 0.1]).astype(np.int64)
    feats = np.concatenate([ind + 0.3 * rng.normal(size=(200, 3)), rng.normal(size=(200, 2))], axis=1)
    np.savez(tmp_path / "m.npz", x=feats.astype(np.float32), y=ind)
    multilabel = load_recipe(None, ["task=files", "model=mlp", f"data={{format: npz, path: {tmp_path / 'm.npz'}}}",
                                    "task_args.pos_weight=balanced", "budget.steps=80", "eval_every=40",
                                    "batch_size=40", *FAST])
    m = run(multilabel, out=tmp_path / "multilabel").summary
    assert m.task == "files" and m.task_kind == "multilabel"  # the kind read from the (N, 3) 0/1 targets
    assert m.metrics[0].key == "micro_f1" and len(m.test.per_class_f1) == 3
    assert 0.0 <= m.test.value("hamming_loss") <= 1.0 and m.test.value("subset_accuracy") is not None


def test_a_paradigms_metric_specs_are_declared_metrics() -> None:
    """A paradigm declares ``MetricSpec(key, label, higher_is_better, unit, verdict, fmt)`` (the shape of
    ``tricklab.evaluate.declared.MetricSpec``); a LoopTask takes such a list as its metrics."""
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Spec:  # the same fields as tricklab.evaluate.declared.MetricSpec
        key: str
        label: str
        higher_is_better: bool
        unit: str = ""
        verdict: bool = True
        fmt: str = ".4f"

    task = LoopTask("p", "a paradigm", _toy_loop, (Spec("return", "Mean return", True, fmt=".1f"),
                                                  Spec("wall", "Wall time", False, unit="s", verdict=False)))
    ret, wall = task.metrics
    assert (ret.key, ret.higher_is_better, ret.fmt, ret.judged, ret.kind) == ("return", True, ".1f", True, "quality")
    assert (wall.unit, wall.judged, wall.kind, wall.direction) == ("s", False, "timing", "lower")
    with pytest.raises(TypeError, match="key, label and higher_is_better"):
        LoopTask("q", "bad", _toy_loop, ("score",))
