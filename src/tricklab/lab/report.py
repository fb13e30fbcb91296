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
from tricklab.lab.attention_plots import attention_svg
from tricklab.lab.image_plots import detections_svg, image_rows_svg
from tricklab.lab.diagnostics_plots import diagnostic_figures
from tricklab.lab.differences import recipe_changes, show
from tricklab.lab.format import format_difference, format_p, format_value
from tricklab.lab.plots import (
    curve_svg,
    matplotlib_or_hint,
    pareto_front,
    pareto_svg,
    per_class_f1_svg,
    reliability_svg,
    robustness_svg,
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
    "identical": "#f4f4f4",
    "within noise": "#e4e4e4",
    "not judged": "#e4e4e4",
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

_SETTING_KEYS = ("task", "model", "budget", "seeds", "machine", "recipe_hash", "eval_every")


def _effect(d: PairedDifference, fmt: str | None) -> str:
    return format_difference(d, fmt)


def _effect_lines(d: PairedDifference, fmt: str | None) -> Markup:
    """A verdict cell: the mean difference, and its interval on a line of its own (a narrow column)."""
    text = format_difference(d, fmt)
    if text.endswith(" in every run"):
        return Markup('{} <span class="ci">in every run</span>').format(text[: -len(" in every run")])
    head, sep, interval = text.partition(" [")
    if not sep:
        return Markup("{}").format(text)
    return Markup('{} <span class="ci">[{}</span>').format(head, interval)


def _breakable(name: str) -> Markup:
    """A variant name that may wrap after ``_``, ``+``, ``(`` or ``,`` (a narrow first column)."""
    return Markup("").join(Markup("{}<wbr>").format(part) if part in "_+(," else Markup("{}").format(part)
                           for part in name)


def _tip(d: PairedDifference) -> str:
    tip = f"{d.verdict}; n = {d.n}, p = {format_p(d.p_value)}, Holm p = {format_p(d.p_holm)}"
    return tip + (f"; {d.note}" if d.note else "")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("tricklab.lab", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update({
        "value": format_value, "effect": _effect, "effect_lines": _effect_lines, "tip": _tip,
        "breakable": _breakable, "p": format_p, "repr": repr,
        "colour": lambda verdict: VERDICT_COLOURS.get(str(verdict), _UNKNOWN_COLOUR),
        "tojson_sorted": lambda obj: json.dumps(obj, indent=2, sort_keys=True, default=str),
    })
    return env


def _markup(svg: str | None) -> Markup | None:
    # the drawings are matplotlib's own SVG (text inside them is escaped by matplotlib), inserted as markup
    return None if svg is None else Markup(svg)


def _headline_name(summary: AblationSummary) -> str:
    """The headline metric's name in the evaluation rows (``accuracy``, ``mse``, ``mean_reward``)."""
    return "accuracy" if summary.primary is None else summary.primary.name


def _headline_title(summary: AblationSummary) -> str:
    """The headline metric for section titles: "Accuracy", "MSE", "Mean reward per step"."""
    head = summary.primary
    if head is None or head.key == "accuracy":
        return "Accuracy"
    return head.label.removeprefix("Test ")


def _plots(summary: AblationSummary, curves: dict[str, Any]) -> dict[str, Markup | None]:
    """The figures by role; the two evaluation curves follow the headline metric (``eval_accuracy`` for a
    classifier). Their page names are set in the template."""
    v = summary.variants
    head = _headline_name(summary)
    shown = f"eval {head.replace('_', ' ')}"
    plots = {
        "verdict": verdicts_svg(summary),
        "train-loss-vs-step": curve_svg(v, curves, "step", "train_loss", "step", "train loss"),
        "eval-accuracy-vs-step": curve_svg(v, curves, "step", f"eval_{head}", "step", shown),
        "train-loss-vs-seconds": curve_svg(v, curves, "seconds", "train_loss", "training seconds", "train loss"),
        "eval-accuracy-vs-seconds": curve_svg(v, curves, "seconds", f"eval_{head}", "training seconds", shown),
        "reliability": reliability_svg(summary),
        "pareto": pareto_svg(summary),
        "per-class-f1": per_class_f1_svg(summary),
        "robustness": robustness_svg(summary),
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


def _attention(summary: AblationSummary) -> list[tuple[str, int, Markup | None]]:
    """Per variant with attention maps (ViT-like models): its seed and the rollout figure."""
    return [(v, a.seed, _markup(attention_svg(a.attention))) for v in summary.variants
            if (a := summary.attention.get(v)) is not None]


def _detections(summary: AblationSummary) -> list[tuple[str, int, Markup | None]]:
    """Per detection variant: its seed and the example images with true and predicted boxes."""
    return [(v, d.seed, _markup(detections_svg(d.examples))) for v in summary.variants
            if (d := summary.detections.get(v)) is not None]


def _images(summary: AblationSummary) -> list[tuple[str, int, Markup | None]]:
    """Per generative variant: its seed and its image rows (originals, reconstructions, samples)."""
    return [(v, i.seed, _markup(image_rows_svg(i.rows))) for v in summary.variants
            if (i := summary.images.get(v)) is not None]


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


def _changes(summary: AblationSummary) -> list[tuple[str, list[tuple[str, str, str]]]]:
    base = summary.recipes.get(summary.baseline)
    out = []
    for v in summary.techniques:
        mine = summary.recipes.get(v)
        if base and mine:
            out.append((v, [(k, show(a), show(b)) for k, a, b in recipe_changes(base, mine)]))
    return out


def _steps_note(summary: AblationSummary, setting: AblationSetting) -> str | None:
    if summary.metric("steps_to_target") is None or not setting.eval_every:
        return None
    every = setting.eval_every
    return (f"Steps to target: the runs were evaluated every {every} steps. Each run's step is interpolated "
            f"linearly between the last evaluation below the target and the first at or above it, an estimate "
            f"inside that {every}-step interval (exact only if accuracy rises linearly there); without the "
            f"interpolation every run would count a multiple of {every} and small differences would show as "
            f"0 or {every} with no spread.")


def render_report(summary: AblationSummary, curves: dict[str, Any] | None, setting: AblationSetting) -> str:
    """The whole report as one HTML string (see the module docstring for the inputs)."""
    matplotlib_or_hint()  # fail with the install hint before any work
    if not summary.variants:
        raise ValueError("the ablation summary has no variants: nothing to report")
    n_seeds = max((len(s or []) for s in summary.seeds.values()), default=0)
    title = (f"tricklab ablation: {setting.where()}, {len(summary.techniques)} "
             f"techniques, {n_seeds} seeds")
    head = summary.primary
    averaging_metrics = [m for m in summary.metrics if any(m.key in a for a in summary.averaging.values())]
    return _environment().get_template("report.html.j2").render(
        title=title, summary=summary, setting=setting, setting_items=_setting_items(setting),
        plots=_plots(summary, curves or {}), seed_note_for=_seed_note_for(summary),
        diagnostics=_diagnostics(summary), attention=_attention(summary),
        detections=_detections(summary), images=_images(summary), csp=_CSP,
        accuracy_fmt=head.fmt if head else ".4f",
        averaging_metrics=averaging_metrics, changes=_changes(summary), timing_notes=setting.timing_note(),
        steps_note=_steps_note(summary, setting), head_name=_headline_name(summary),
        head_text=_headline_name(summary).replace("_", " "), head_title=_headline_title(summary),
    )


def write_report(folder: Path, summary: AblationSummary, curves: dict[str, Any] | None,
                 setting: AblationSetting) -> Path:
    """Render the report and write it to ``folder/report.html`` atomically; returns the path."""
    text = render_report(summary, curves, setting)  # render first: a failed render leaves the old report
    path = Path(folder) / "report.html"
    atomic_write_text(path, text)
    return path
