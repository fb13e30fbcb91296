"""The lab from Python: :func:`run` and :func:`ablate`, as ``tricklab.run`` / ``tricklab.ablate``.

They do what ``tricklab run`` and ``tricklab ablate`` do, through the same functions (recipe loading and
overrides, :func:`~tricklab.lab.ablate.make_plan`, :func:`~tricklab.lab.ablate.run_ablation`,
:func:`~tricklab.lab.ablate.write_outputs`): the same store in ``out``, the same report and cards, and the
same resume (calling :func:`ablate` again with the same arguments runs only what is missing; more seeds
extend it). What a notebook adds is the argument forms::

    import tricklab
    result = tricklab.ablate(data={"path": "houses.csv", "target": "price"}, task_kind="regression",
                             techniques=["ema", "swa"], seeds=3, budget=500, out="runs/houses")
    result.table            # the verdict table: a pandas DataFrame (a list of dicts without pandas)
    result.report           # runs/houses/report.html

A model or a data function may be given as the object itself when it lives in an importable module (the
runs execute in worker processes, which import it again by its ``module:attribute`` reference).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tricklab.errors import ConfigError
from tricklab.lab.ablate import DEFAULT_TECHNIQUES, load_base, make_plan, run_ablation, write_outputs
from tricklab.lab.grammar import parse_budget, parse_combo, parse_technique, parse_variant
from tricklab.lab.recipe import EMBEDDED, Recipe, TechniqueSpec, apply_override, load_recipe, recipe_from_dict
from tricklab.lab.runner import RunResult
from tricklab.lab.runner import run as run_recipe
from tricklab.lab.summary import AblationSummary
from tricklab.plugins import is_reference

__all__ = ["AblationResult", "ablate", "reference_of", "run", "verdict_rows"]

#: the columns of :attr:`AblationResult.table`, one row per (variant, metric)
TABLE_COLUMNS = ("variant", "metric", "label", "higher_is_better", "judged", "n", "baseline_mean", "variant_mean",
                 "mean_diff", "ci_low", "ci_high", "half_width", "p_value", "p_holm", "verdict")


@dataclass
class AblationResult:
    """What :func:`ablate` returns.

    ``summary`` is the typed :class:`~tricklab.lab.summary.AblationSummary` (per variant and metric: the
    description over seeds and the paired difference against the baseline); ``table`` the verdict table, one
    row per (variant, metric) with the columns of :data:`TABLE_COLUMNS`, as a pandas DataFrame when pandas is
    installed, else a list of dicts (``table_note`` then says so); ``report`` the HTML report and ``cards``
    the technique cards (Markdown and JSON) written from the store in ``out``.
    """

    summary: AblationSummary
    table: Any
    report: Path
    cards: list[Path]
    out: Path
    table_note: str | None = None
    variants: list[str] = field(default_factory=list)

    def verdicts(self) -> dict[str, dict[str, str]]:
        """variant -> metric -> verdict ("helps", "hurts", "no clear effect", ...), for judged metrics."""
        return {v: {k: p.verdict for k, p in self.summary.paired.get(v, {}).items()
                    if (m := self.summary.metric(k)) is not None and m.judged}
                for v in self.summary.techniques}


# ------------------------------------------------------------------------------------------- references
def reference_of(obj: Any, what: str) -> str:
    """``module:qualname`` of a function or class a worker process can import again; a string is returned as
    it is. An object defined in ``__main__`` (a notebook cell, a script) or inside a function has no such
    reference: a ConfigError says to move it into a module."""
    if isinstance(obj, str):
        return obj
    module, name = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not module or not name or not callable(obj):
        raise ConfigError(f"{what}: expected a name, a module:attribute reference or a function/class, got "
                          f"{type(obj).__name__}")
    ref = f"{module}:{name}"
    if module == "__main__" or "<locals>" in name or not is_reference(ref):
        raise ConfigError(f"{what}: {name!r} is defined in {module} and cannot be imported by the worker "
                          f"processes that run the recipe; put it in a module (mycode.py beside the notebook) and "
                          f"pass it from there, or name it as 'mycode:{name.split('.')[-1]}'")
    return ref


# ----------------------------------------------------------------------------------------------- recipes
def _recipe_dict(recipe: Any) -> dict[str, Any]:
    """The recipe as a plain dict (file, embedded name, mapping, Recipe; None: the ablation baseline)."""
    if recipe is None:
        return load_base(None, []).to_dict()
    if isinstance(recipe, Recipe):
        return recipe.to_dict()
    if isinstance(recipe, Mapping):
        return copy.deepcopy(dict(recipe))
    if isinstance(recipe, (str, Path)):
        if str(recipe) in EMBEDDED and not Path(recipe).exists():
            return copy.deepcopy(EMBEDDED[str(recipe)])
        return load_recipe(recipe).to_dict()
    raise ConfigError(f"recipe: expected a YAML file, an embedded recipe name, a mapping or a Recipe, got "
                      f"{type(recipe).__name__}")


def _set(data: dict[str, Any], key: str, value: Any) -> None:
    """Set a dotted key (``optimizer.lr``; ``optimizer__lr`` from a keyword argument) to a Python value."""
    parts = key.replace("__", ".").split(".")
    node = data
    for p in parts[:-1]:
        if isinstance(node.get(p), str) and p in ("model", "optimizer", "schedule"):
            node[p] = {"name": node[p]}
        if not isinstance(node.get(p), dict):
            node[p] = {}
        node = node[p]
    node[parts[-1]] = value


def _data_spec(data: Any) -> tuple[str | None, dict[str, Any] | None]:
    """``data=`` as (task, file or code spec): a registered task / data set name, a file or folder path, a
    ``module:attribute`` reference or function, or a spec mapping."""
    if isinstance(data, Mapping):
        return None, dict(data)
    if isinstance(data, Path) or (isinstance(data, str) and Path(data).exists()):
        return None, {"path": str(data)}
    if callable(data) or is_reference(data):
        return None, {"code": reference_of(data, "data")}
    if isinstance(data, str):
        return data, None
    raise ConfigError(f"data: expected a task or data set name, a file or folder path, a module:attribute "
                      f"reference or a spec mapping, got {type(data).__name__}")


def _names_model(recipe: Any) -> bool:
    """Whether the user's recipe chose a model (a file or Recipe does; an embedded one or a mapping without
    ``model`` does not)."""
    if recipe is None or (isinstance(recipe, str) and recipe in EMBEDDED and not Path(recipe).exists()):
        return False
    return not isinstance(recipe, Mapping) or "model" in recipe


def _apply_model_data(d: dict[str, Any], model: Any, data: Any, task_kind: str | None, keep_model: bool) -> None:
    if data is not None:
        task, spec = _data_spec(data)
        if spec is not None:
            d["task"] = "files"
            d["data"] = {k: v for k, v in (d.get("data") or {}).items() if k in ("data_dir", "val_fraction")}
            d["data"].update(spec)
            if model is None and not keep_model:
                d["model"] = {"name": "mlp"}  # the files task's model, unless one is chosen
        else:
            d["task"] = task
    if model is not None:
        d["model"] = model if isinstance(model, Mapping) else {"name": reference_of(model, "model")}
    if task_kind is not None:
        _set(d, "task_args.kind", task_kind)


def build_recipe(recipe: Any = None, *, model: Any = None, data: Any = None, task_kind: str | None = None,
                 overrides: Sequence[str] | Mapping[str, Any] = (), **keys: Any) -> Recipe:
    """The :class:`Recipe` the API's arguments describe: ``recipe`` (file, embedded name, mapping, Recipe or
    None), then ``model``, ``data`` and ``task_kind``, then ``overrides`` (``"key=value"`` strings parsed as
    on the command line, or a mapping of dotted keys to values) and keyword arguments (``optimizer__lr=1e-3``
    sets ``optimizer.lr``)."""
    d = _recipe_dict(recipe)
    _apply_model_data(d, model, data, task_kind, _names_model(recipe))
    if isinstance(overrides, Mapping):
        keys = {**overrides, **keys}
    else:
        for o in overrides:
            apply_override(d, o)
    for k, v in keys.items():
        _set(d, k, v)
    return recipe_from_dict(d)


# -------------------------------------------------------------------------------------------------- run
def run(recipe: Any = None, out: str | Path | None = None, *, model: Any = None, data: Any = None,
        task_kind: str | None = None, resume: bool = False, overrides: Sequence[str] | Mapping[str, Any] = (),
        **keys: Any) -> RunResult:
    """Train one recipe into ``out``, as ``tricklab run``; returns the :class:`~tricklab.lab.runner.RunResult`
    (``summary``: the typed :class:`~tricklab.lab.summary.RunSummary`, ``run_dir``, ``history``, ``trainer``).
    ``recipe`` is a YAML file, an embedded recipe name (default ``mnist1d-cnn``), a mapping or a Recipe;
    see :func:`build_recipe` for the other arguments."""
    base = "mnist1d-cnn" if recipe is None else recipe
    return run_recipe(build_recipe(base, model=model, data=data, task_kind=task_kind, overrides=overrides, **keys),
                      out=out, resume=resume)


# ----------------------------------------------------------------------------------------------- ablate
def _technique(t: Any) -> TechniqueSpec:
    if isinstance(t, TechniqueSpec):
        return t
    if isinstance(t, str):
        return parse_technique(t)
    if isinstance(t, Mapping) and "name" in t:
        return TechniqueSpec(str(t["name"]), dict(t.get("args") or {}))
    if isinstance(t, tuple) and len(t) == 2 and isinstance(t[1], Mapping):
        return TechniqueSpec(reference_of(t[0], "techniques"), dict(t[1]))
    if inspect.isclass(t):
        return TechniqueSpec(reference_of(t, "techniques"))
    raise ConfigError(f"techniques: expected 'name', 'name:key=value', (name, {{args}}) or {{name:, args:}}, "
                      f"got {t!r}")


def _seeds(seeds: int | Sequence[int] | None, recipe: Recipe) -> list[int]:
    if seeds is None:
        return list(recipe.seeds)
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ConfigError(f"seeds must be at least 1, got {seeds}")
        return list(range(seeds))
    return [int(s) for s in seeds]


def _budget(budget: int | str | Mapping[str, Any] | None) -> dict[str, Any] | None:
    if budget is None or isinstance(budget, Mapping):
        return None if budget is None else dict(budget)
    return parse_budget(str(budget))


def ablate(recipe: Any = None, *, model: Any = None, data: Any = None, task_kind: str | None = None,
           techniques: Sequence[Any] | None = None, combos: Sequence[str] = (), variants: Sequence[str] = (),
           seeds: int | Sequence[int] | None = None, budget: int | str | Mapping[str, Any] | None = None,
           out: str | Path = "runs/ablation", jobs: int = 1, quiet: bool = False,
           say: Callable[[str], Any] | None = None, overrides: Sequence[str] | Mapping[str, Any] = (),
           **keys: Any) -> AblationResult:
    """Run the baseline and each technique added to it over ``seeds`` at an equal ``budget``, as ``tricklab
    ablate``; returns an :class:`AblationResult`. ``techniques`` are names, ``name:key=value`` strings,
    ``(name, args)`` pairs or ``{name:, args:}`` mappings (default: label smoothing, mixup, EMA and gradient
    clipping, as the CLI); ``combos`` (``"a+b"``) and ``variants`` (``"NAME:key=value;key=value"``) use the
    command-line grammar. ``seeds`` is a count (0..N-1) or a list; ``budget`` steps (int), ``"10epochs"``,
    ``"90s"`` or a mapping. Progress lines go to ``say`` (default ``print``; nothing when ``quiet``)."""
    base = build_recipe(recipe, model=model, data=data, task_kind=task_kind, overrides=overrides, **keys)
    if jobs < 1:
        raise ConfigError(f"jobs must be at least 1, got {jobs}")
    listed = [_technique(t) for t in (techniques if techniques is not None else
                                      ([] if variants else DEFAULT_TECHNIQUES))]
    plan = make_plan(base, listed, [parse_combo(c, listed) for c in combos], _seeds(seeds, base), _budget(budget),
                     [parse_variant(v) for v in variants])
    out = Path(out)
    speak = say if say is not None else ((lambda _m: None) if quiet else print)
    summary = run_ablation(plan, out, jobs=jobs, say=speak)
    report, cards = write_outputs(out, out / "cards")
    table, note = verdict_table(summary)
    return AblationResult(summary, table, report, cards, out, note, [v.name for v in plan.variants])


# ------------------------------------------------------------------------------------------------ table
def verdict_rows(summary: AblationSummary) -> list[dict[str, Any]]:
    """One dict per (variant, metric) with the columns of :data:`TABLE_COLUMNS`: the baseline's and the
    variant's means over seeds, the paired difference variant - baseline with its 95% interval, p-values
    (raw and Holm-adjusted) and the verdict, exactly as the report and the cards state them."""
    rows = []
    for v in summary.techniques:
        for m in summary.metrics:
            p = summary.difference(v, m.key)
            if p is None:
                continue
            base, mine = summary.describe(summary.baseline, m.key), summary.describe(v, m.key)
            half = None if p.ci_low is None or p.ci_high is None else (p.ci_high - p.ci_low) / 2
            rows.append({"variant": v, "metric": m.key, "label": m.label, "higher_is_better": m.higher_is_better,
                         "judged": m.judged, "n": p.n, "baseline_mean": base.mean if base else None,
                         "variant_mean": mine.mean if mine else None, "mean_diff": p.mean_diff,
                         "ci_low": p.ci_low, "ci_high": p.ci_high, "half_width": half, "p_value": p.p_value,
                         "p_holm": p.p_holm, "verdict": p.verdict})
    return rows


def verdict_table(summary: AblationSummary) -> tuple[Any, str | None]:
    """(:func:`verdict_rows` as a pandas DataFrame, None), or (the rows, a note) when pandas is missing."""
    rows = verdict_rows(summary)
    try:
        import pandas as pd  # optional: the "tables" extra
    except ImportError:
        return rows, ('pandas is not installed, so the table is a list of dicts; pip install "tricklab[tables]" '
                      "for a DataFrame")
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS)), None

