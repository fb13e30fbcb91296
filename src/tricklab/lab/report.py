"""The ablation report: one self-contained HTML page from an ablation summary and the runs' curves.

The page must open years later on a machine without network, so it references nothing outside itself: the
styles and the one small script are inline, and every plot is an inline SVG drawn by matplotlib (the
``tricklab[plots]`` extra, see :mod:`tricklab.lab.plots`). A Content-Security-Policy meta tag makes the
browser refuse any external fetch, so a stray reference shows up as a console error in the browser test
instead of silently working while online.

The page is the Jinja2 template ``templates/report.html.j2`` (shipped with the package), rendered with
autoescaping: every name and number is escaped, only the SVG drawings are inserted as markup. Inputs
(numbers are taken as given; nothing statistical is recomputed here):

- ``summary``: the :class:`~tricklab.lab.summary.AblationSummary` of the store;
- ``curves``: ``{variant: [[row, ...] per seed]}``, the metric rows of each run (``step``, ``seconds``,
  ``train_loss``, and ``eval_accuracy`` on evaluation rows);
- ``setting``: the :class:`~tricklab.lab.summary.AblationSetting` (task, model, budget, seeds, machine, recipe).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from tricklab.io import atomic_write_text
from tricklab.lab.diagnostics_plots import diagnostic_figures
from tricklab.lab.format import format_effect, format_p, format_value
from tricklab.lab.plots import (
    curve_svg,
    matplotlib_or_hint,
    pareto_front,
    pareto_svg,
    per_class_f1_svg,
    reliability_svg,
    verdicts_svg,
)
from tricklab.lab.stats import PairedDifference
from tricklab.lab.summary import AblationSetting, AblationSummary

__all__ = ["PLOT_NAMES", "VERDICT_COLOURS", "pareto_front", "render_report", "write_report"]

#: Cell background per verdict; "no clear effect" and "cannot tell" share grey because neither is evidence.
VERDICT_COLOURS: dict[str, str] = {
    "helps": "#c6efce",
    "hurts": "#ffc7ce",
    "no clear effect": "#e4e4e4",
    "cannot tell (1 seed)": "#e4e4e4",
}
_UNKNOWN_COLOUR = "#e4e4e4"

#: The ``data-plot`` names of the figures a full summary produces, in page order.
PLOT_NAMES: tuple[str, ...] = (
    "verdict", "train-loss-vs-step", "eval-accuracy-vs-step", "train-loss-vs-seconds",
    "eval-accuracy-vs-seconds", "reliability", "pareto", "per-class-f1",
)

# default-src 'none': the page may load nothing from anywhere; inline style and the inline script are the
# only things it runs
_CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"

_SETTING_KEYS = ("task", "model", "budget", "seeds", "machine", "recipe_hash")


def _effect(d: PairedDifference, fmt: str | None) -> str:
    return format_effect(d.mean_diff, d.ci_low, d.ci_high, fmt)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("tricklab.lab", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update({
        "value": format_value, "effect": _effect, "p": format_p, "repr": repr,
        "colour": lambda verdict: VERDICT_COLOURS.get(str(verdict), _UNKNOWN_COLOUR),
        "tojson_sorted": lambda obj: json.dumps(obj, indent=2, sort_keys=True, default=str),
    })
    return env


def _markup(svg: str | None) -> Markup | None:
    # the drawings are matplotlib's own SVG (text inside them is escaped by matplotlib), inserted as markup
    return None if svg is None else Markup(svg)


def _plots(summary: AblationSummary, curves: dict[str, Any]) -> dict[str, Markup | None]:
    v = summary.variants
    plots = {
        "verdict": verdicts_svg(summary),
        "train-loss-vs-step": curve_svg(v, curves, "step", "train_loss", "step", "train loss"),
        "eval-accuracy-vs-step": curve_svg(v, curves, "step", "eval_accuracy", "step", "eval accuracy"),
        "train-loss-vs-seconds": curve_svg(v, curves, "seconds", "train_loss", "training seconds", "train loss"),
        "eval-accuracy-vs-seconds": curve_svg(v, curves, "seconds", "eval_accuracy", "training seconds",
                                              "eval accuracy"),
        "reliability": reliability_svg(summary),
        "pareto": pareto_svg(summary),
        "per-class-f1": per_class_f1_svg(summary),
    }
    return {name: _markup(svg) for name, svg in plots.items()}


def _diagnostics(summary: AblationSummary) -> list[tuple[str, int, list[tuple[str, Markup | None, str]]]]:
    """Per variant run with the diagnostics technique: its seed and figures (name, svg, caption)."""
    out = []
    for v in summary.variants:
        d = summary.diagnostics.get(v)
        if d is not None:
            out.append((v, d.seed, [(name, _markup(svg), caption) for name, svg, caption in
                                    diagnostic_figures(d.records)]))
    return out


def _setting_items(setting: AblationSetting) -> list[tuple[str, str]]:
    items = []
    for key in _SETTING_KEYS:
        value = getattr(setting, key)
        items.append((key, json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)))
    return items


def _seed_note_for(summary: AblationSummary) -> str:
    """Who has fewer than 2 seeds ('' when every variant has at least 2)."""
    few = [v for v in summary.variants if summary.n_seeds(v) < 2]
    if not few:
        return ""
    return "every variant" if len(few) == len(summary.variants) else ", ".join(few)


def render_report(summary: AblationSummary, curves: dict[str, Any] | None, setting: AblationSetting) -> str:
    """The whole report as one HTML string (see the module docstring for the inputs)."""
    matplotlib_or_hint()  # fail with the install hint before any work
    if not summary.variants:
        raise ValueError("the ablation summary has no variants: nothing to report")
    n_seeds = max((len(s or []) for s in summary.seeds.values()), default=0)
    title = (f"tricklab ablation: {setting.task or '?'}/{setting.model or '?'}, {len(summary.techniques)} "
             f"techniques, {n_seeds} seeds")
    accuracy = summary.metric("accuracy")
    averaging_metrics = [m for m in summary.metrics if any(m.key in a for a in summary.averaging.values())]
    return _environment().get_template("report.html.j2").render(
        title=title, summary=summary, setting=setting, setting_items=_setting_items(setting),
        plots=_plots(summary, curves or {}), seed_note_for=_seed_note_for(summary),
        diagnostics=_diagnostics(summary), csp=_CSP, accuracy_fmt=accuracy.fmt if accuracy else ".4f",
        averaging_metrics=averaging_metrics,
    )


def write_report(folder: Path, summary: AblationSummary, curves: dict[str, Any] | None,
                 setting: AblationSetting) -> Path:
    """Render the report and write it to ``folder/report.html`` atomically; returns the path."""
    text = render_report(summary, curves, setting)  # render first: a failed render leaves the old report
    path = Path(folder) / "report.html"
    atomic_write_text(path, text)
    return path
