"""The page of a tuning study (or a technique search): one self-contained HTML file with the optimization
history, the parameter importances (Optuna's fANOVA evaluator) and the intermediate evaluations that the
pruner saw, each an inline matplotlib SVG (:mod:`tricklab.lab.plots`), and a table of every trial.

Everything is read from the study (its Optuna storage); nothing is recomputed from the runs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from markupsafe import Markup

from tricklab.io import atomic_write_text
from tricklab.lab.plots import PALETTE, matplotlib_or_hint, mpl_text, new_figure, svg
from tricklab.lab.report import _CSP, _environment

__all__ = ["history_svg", "importance_svg", "importances", "intermediate_svg", "trial_rows", "write_study_page"]

_STATE_COLOUR = {"COMPLETE": PALETTE[0], "PRUNED": "#9a9a9a", "FAIL": PALETTE[3]}


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _ran(trials: list[Any]) -> list[Any]:
    """Trials that ran (not skipped as conflicting or repeated, not interrupted)."""
    return [t for t in trials if not (t.user_attrs.get("conflict") or t.user_attrs.get("interrupted")
                                      or t.user_attrs.get("repeat_of") is not None)]


def history_svg(trials: list[Any], maximize: bool, label: str) -> str | None:
    """Objective per trial (pruned trials at their last evaluation), with the best so far as a step line."""
    ran = [t for t in _ran(trials) if t.state.name in ("COMPLETE", "PRUNED")]
    if not ran:
        return None
    fig = new_figure(7.5, 3.6)
    ax = fig.add_subplot()
    for state, marker in (("COMPLETE", "o"), ("PRUNED", "x")):
        pts = [(t.number, t.value if state == "COMPLETE" else _last(t)) for t in ran if t.state.name == state]
        pts = [(x, y) for x, y in pts if _finite(y)]
        if pts:
            ax.scatter(*zip(*pts), marker=marker, color=_STATE_COLOUR[state], label=state.lower(), zorder=3)
    best, xs, ys = None, [], []
    for t in sorted(ran, key=lambda t: t.number):
        if t.state.name == "COMPLETE" and _finite(t.value) and (best is None or (t.value > best) == maximize):
            best = t.value
        if best is not None:
            xs.append(t.number)
            ys.append(best)
    if xs:
        ax.step(xs, ys, where="post", color=PALETTE[1], label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(mpl_text(label))
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    return svg(fig)


def _last(trial: Any) -> float | None:
    steps = trial.intermediate_values
    return steps[max(steps)] if steps else None


def importances(study: Any) -> dict[str, float] | None:
    """fANOVA importances of the parameters (normalized to sum 1); None with fewer than 2 complete trials or
    parameters that never varied."""
    import optuna

    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if len(complete) < 2:
        return None
    try:
        return optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    except (RuntimeError, ValueError):  # e.g. a single distinct parameter value
        return None


def importance_svg(values: dict[str, float] | None) -> str | None:
    if not values:
        return None
    names = list(values)[::-1]
    fig = new_figure(7.5, 0.5 + 0.35 * len(names))
    ax = fig.add_subplot()
    ax.barh([mpl_text(n) for n in names], [values[n] for n in names], color=PALETTE[0])
    ax.set_xlabel("importance (fANOVA, share of the objective's variance)")
    ax.grid(axis="x", alpha=0.3)
    return svg(fig)


def intermediate_svg(trials: list[Any], label: str) -> str | None:
    """The evaluations each trial reported during training (what the pruner compared)."""
    runs = [t for t in _ran(trials) if t.intermediate_values]
    if not runs:
        return None
    fig = new_figure(7.5, 3.6)
    ax = fig.add_subplot()
    for t in runs:
        steps = sorted(t.intermediate_values)
        ax.plot(steps, [t.intermediate_values[s] for s in steps], color=_STATE_COLOUR.get(t.state.name, "#444"),
                alpha=0.7, lw=1.0, marker="x" if t.state.name == "PRUNED" else None, markevery=[-1])
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(mpl_text(f"eval {label}"))
    ax.set_title("blue: completed, grey with x: pruned", fontsize="small")
    ax.grid(alpha=0.3)
    return svg(fig)


def _note(t: Any) -> str:
    a = t.user_attrs
    if a.get("conflict"):
        return f"skipped: {a['conflict']}"
    if a.get("repeat_of") is not None:
        return f"same recipe as trial {a['repeat_of']}"
    if a.get("interrupted"):
        return "interrupted (driver stopped); retried"
    if a.get("retry_of") is not None:
        return f"retry of trial {a['retry_of']}"
    if a.get("error"):
        return f"failed: {a['error']}"
    if t.state.name == "PRUNED" and t.intermediate_values:
        return f"pruned at step {max(t.intermediate_values)}"
    return ""


def _short(v: Any) -> Any:
    return f"{v:.4g}" if isinstance(v, float) else v


def trial_rows(trials: list[Any], keys: list[str]) -> list[dict[str, Any]]:
    rows = []
    for t in trials:
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and \
            t.datetime_start else None
        rows.append({"number": t.number, "state": t.state.name.lower(), "value": t.value,
                     "params": [_short(t.params.get(k, "")) for k in keys], "seconds": seconds, "note": _note(t)})
    return rows


def write_study_page(path: Path, study: Any, title: str, objective: str, maximize: bool, keys: list[str],
                     sections: list[tuple[str, str]] | None = None) -> Path:
    """Render the study page to ``path`` (atomically); ``sections`` are (heading, preformatted text) blocks
    appended at the end (the best recipe, the confirmation command)."""
    matplotlib_or_hint("the tuning page")
    trials = study.get_trials(deepcopy=False)
    imp = importances(study)
    plots = {"history": history_svg(trials, maximize, objective), "importance": importance_svg(imp),
             "intermediate": intermediate_svg(trials, objective.split(" ", 1)[-1])}
    html = _environment().get_template("tune.html.j2").render(
        title=title, objective=objective, csp=_CSP, keys=keys, rows=trial_rows(trials, keys),
        plots={k: None if v is None else Markup(v) for k, v in plots.items()}, importances=imp or {},
        sections=sections or [], study_name=study.study_name,
        direction="higher" if maximize else "lower")
    atomic_write_text(path, html)
    return path
