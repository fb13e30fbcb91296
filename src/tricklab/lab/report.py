"""The ablation report: one self-contained HTML page built from an ablation summary and the runs' curves.

The page must open years later on a machine without network, so it references nothing outside itself: the
styles and the one small script are inline, and every plot is an inline SVG drawn by matplotlib (the
``tricklab[plots]`` extra, imported only here, when a report is written). A Content-Security-Policy meta tag
makes the browser refuse any external fetch, so a stray reference shows up as a console error in the browser
test instead of silently working while online.

Inputs (numbers are taken as given; nothing statistical is recomputed here):

- ``summary``: the dict of ``tricklab.lab.stats.ablation_summary`` (variants with the baseline first, metric
  descriptions, per-variant means and intervals, paired differences with verdicts, equal-time comparison,
  per-class F1, reliability bins);
- ``curves``: ``{variant: [[row, ...] per seed]}``, the metric rows of each run (``step``, ``seconds``,
  ``train_loss``, and ``eval_accuracy`` on evaluation rows);
- ``setting``: task, model, budget, seeds, machine, recipe hash and the baseline recipe.
"""

from __future__ import annotations

import html
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tricklab.errors import UserError
from tricklab.lab.cards import format_effect, format_p, format_value
from tricklab.train.checkpoint import atomic_write_text

if TYPE_CHECKING:  # matplotlib is an optional extra; only the type checker imports it here
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Cell background per verdict; "no clear effect" and "cannot tell" share grey because neither is evidence.
VERDICT_COLOURS: dict[str, str] = {
    "helps": "#c6efce",
    "hurts": "#ffc7ce",
    "no clear effect": "#e4e4e4",
    "cannot tell (1 seed)": "#e4e4e4",
}
_UNKNOWN_COLOUR = "#e4e4e4"
# stronger versions of the same hues for markers in the plots, where pale fills would be invisible
_VERDICT_MARKERS: dict[str, str] = {"helps": "#1b7f3b", "hurts": "#c62828"}
_UNCLEAR_MARKER = "#7a7a7a"

#: The ``data-plot`` names of the figures a full summary produces, in page order.
PLOT_NAMES: tuple[str, ...] = (
    "verdict", "train-loss-vs-step", "eval-accuracy-vs-step", "train-loss-vs-seconds",
    "eval-accuracy-vs-seconds", "reliability", "pareto", "per-class-f1",
)

_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
            "#bcbd22", "#17becf")


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


# ------------------------------------------------------------------------------------------- matplotlib
def _matplotlib() -> Any:
    """Import matplotlib on first use, headless, or tell the user which extra to install."""
    try:
        import matplotlib
    except ImportError as exc:
        raise UserError('the ablation report draws its plots with matplotlib, which is not installed; '
                        'install it with: pip install "tricklab[plots]"') from exc
    # Agg: no display is needed (or present on servers); SVG output does not depend on the backend anyway
    matplotlib.use("Agg")
    return matplotlib


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    # a bare Figure, not pyplot: no global figure registry to leak into when a report fails half-way
    return Figure(figsize=(width, height), layout="constrained")


def _svg(fig: Figure) -> str:
    """The figure as an inline ``<svg>`` element: no XML prolog or DOCTYPE (invalid inside HTML) and no
    metadata block (its Dublin Core URLs would be the only http references left in the page)."""
    mpl = _matplotlib()
    buf = io.StringIO()
    # a fixed hash salt gives the same element ids on every run, so the same summary gives the same page;
    # fonttype "none" keeps text as text (smaller, searchable) instead of glyph paths
    with mpl.rc_context({"svg.hashsalt": "tricklab-report", "svg.fonttype": "none"}):
        fig.savefig(buf, format="svg", metadata={"Creator": None, "Date": None, "Format": None, "Type": None})
    text = buf.getvalue()
    start = text.find("<svg")
    if start < 0:  # would mean matplotlib changed its output; fail loudly rather than emit a broken page
        raise RuntimeError("matplotlib produced no <svg> element")
    return text[start:].strip()


def _mpl_text(text: Any) -> str:
    # a "$" in a variant name would switch matplotlib into mathtext and can fail to parse
    return str(text).replace("$", r"\$")


def _colour(i: int) -> str:
    return _PALETTE[i % len(_PALETTE)]


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


# ------------------------------------------------------------------------------------------------ plots
def _plot_verdicts(summary: dict[str, Any]) -> str | None:
    """A forest plot: per metric, each technique's paired difference with its 95% interval, coloured by
    verdict. One panel per metric because the metrics have different units."""
    from matplotlib.ticker import MaxNLocator

    techniques = list(summary["variants"])[1:]
    metrics = list(summary.get("metrics", []))
    paired = summary.get("paired", {})
    if not techniques or not metrics:
        return None
    ncols = min(5, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    fig = _new_figure(2.7 * ncols, 0.45 * len(techniques) * nrows + 1.2 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for idx, metric in enumerate(metrics):
        ax = axes[idx // ncols][idx % ncols]
        key = metric["key"]
        for row, tech in enumerate(techniques):
            d = paired.get(tech, {}).get(key)
            if not d or not _finite(d.get("mean_diff")):
                continue
            colour = _VERDICT_MARKERS.get(d.get("verdict"), _UNCLEAR_MARKER)
            y = len(techniques) - 1 - row
            if _finite(d.get("ci_low")) and _finite(d.get("ci_high")):
                ax.plot([d["ci_low"], d["ci_high"]], [y, y], color=colour, linewidth=2)
            ax.plot([d["mean_diff"]], [y], "o", color=colour)
        ax.axvline(0.0, color="black", linewidth=0.8)
        ax.set_yticks(range(len(techniques)))
        ax.set_yticklabels([_mpl_text(t) for t in reversed(techniques)] if idx % ncols == 0 else [])
        ax.set_ylim(-0.6, len(techniques) - 0.4)
        better = "higher" if metric.get("higher_is_better") else "lower"
        ax.set_title(_mpl_text(f"{metric.get('label', key)}\n({better} is better)"), fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4))  # narrow panels: more ticks would overlap
        ax.margins(x=0.15)  # keep points that sit on the data limits off the frame
        ax.grid(axis="x", alpha=0.3)
    for idx in range(len(metrics), nrows * ncols):
        axes[idx // ncols][idx % ncols].set_visible(False)
    fig.suptitle("technique − baseline (paired by seed), 95% CI; green helps, red hurts, grey unclear",
                 fontsize=10)
    return _svg(fig)


def _run_series(run: Sequence[dict[str, Any]], xkey: str, ykey: str) -> tuple[list[float], list[float]]:
    """The (x, y) points of one run where both are numbers, sorted by x with repeated x dropped
    (interpolation needs strictly increasing x)."""
    pts = sorted((float(r[xkey]), float(r[ykey])) for r in run if _finite(r.get(xkey)) and _finite(r.get(ykey)))
    xs: list[float] = []
    ys: list[float] = []
    for x, y in pts:
        if xs and x <= xs[-1]:
            continue
        xs.append(x)
        ys.append(y)
    return xs, ys


def _aggregate(series: list[tuple[list[float], list[float]]]) -> tuple[Any, Any, Any, Any] | None:
    """Mean, min and max over seeds on a common x grid.

    Seeds log at the same steps, so on the step axis the grid is usually those steps exactly; wall-clock
    seconds differ per seed, so there the curves are interpolated onto a grid spanning the time range all
    seeds cover (extrapolating a finished run would invent data)."""
    import numpy as np

    series = [(x, y) for x, y in series if x]
    if not series:
        return None
    if all(x == series[0][0] for x, _ in series):
        grid = np.asarray(series[0][0])
        ys = np.asarray([y for _, y in series])
    else:
        lo = max(x[0] for x, _ in series)
        hi = min(x[-1] for x, _ in series)
        if not hi > lo:
            return None
        grid = np.linspace(lo, hi, 120)
        ys = np.asarray([np.interp(grid, x, y) for x, y in series])
    return grid, ys.mean(axis=0), ys.min(axis=0), ys.max(axis=0)


def _plot_curve(summary: dict[str, Any], curves: dict[str, Any], xkey: str, ykey: str,
                xlabel: str, ylabel: str) -> str | None:
    fig = _new_figure(7.0, 4.0)
    ax: Axes = fig.subplots()
    drawn = False
    for i, variant in enumerate(summary["variants"]):
        runs = curves.get(variant) or []
        agg = _aggregate([_run_series(run, xkey, ykey) for run in runs])
        if agg is None:
            continue
        grid, mean, low, high = agg
        colour = _colour(i)
        ax.plot(grid, mean, color=colour, label=_mpl_text(f"{variant} ({len(runs)} seeds)"), linewidth=1.6)
        if len(runs) > 1:
            ax.fill_between(grid, low, high, color=colour, alpha=0.18, linewidth=0)
        drawn = True
    if not drawn:
        return None
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{ylabel} vs {xlabel}: mean over seeds, band = min–max", fontsize=10)
    return _svg(fig)


def _plot_reliability(summary: dict[str, Any]) -> str | None:
    """One reliability diagram per variant: accuracy in each confidence bin against the diagonal of
    perfect calibration; bars below the diagonal mean over-confidence."""
    rel = summary.get("reliability") or {}
    variants = [v for v in summary["variants"] if v in rel]
    if not variants:
        return None
    ncols = min(4, len(variants))
    nrows = math.ceil(len(variants) / ncols)
    fig = _new_figure(3.0 * ncols, 3.0 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    ece = {v: summary.get("per_variant", {}).get(v, {}).get("ece", {}).get("mean") for v in variants}
    for idx, variant in enumerate(variants):
        ax = axes[idx // ncols][idx % ncols]
        r = rel[variant]
        edges = [float(e) for e in r.get("bin_edges", [])]
        accs = r.get("accuracy") or []
        confs = r.get("confidence") or []
        for b in range(min(len(edges) - 1, len(accs))):
            if not _finite(accs[b]):
                continue  # an empty bin has no accuracy; drawing 0 would look like a failure
            ax.bar(edges[b], accs[b], width=edges[b + 1] - edges[b], align="edge",
                   color=_colour(summary["variants"].index(variant)), alpha=0.75, edgecolor="white")
            if b < len(confs) and _finite(confs[b]):
                ax.plot([edges[b], edges[b + 1]], [confs[b], confs[b]], color="black", linewidth=0.8)
        ax.plot([0, 1], [0, 1], linestyle="--", color="black", linewidth=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        title = variant if not _finite(ece[variant]) else f"{variant} (ECE {ece[variant]:.3f})"
        ax.set_title(_mpl_text(title), fontsize=9)
        ax.set_xlabel("confidence", fontsize=8)
        ax.set_ylabel("accuracy", fontsize=8)
        ax.tick_params(labelsize=7)
    for idx in range(len(variants), nrows * ncols):
        axes[idx // ncols][idx % ncols].set_visible(False)
    fig.suptitle("reliability: bars = accuracy per confidence bin, ticks = mean confidence, dashed = perfect",
                 fontsize=9)
    return _svg(fig)


def pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """Names of the points not dominated by another: no other is at least as fast *and* at least as
    accurate while strictly better on one. ``points`` maps name to (seconds, accuracy); sorted by time."""
    front = []
    for name, (t, a) in points.items():
        dominated = any((t2 <= t and a2 >= a) and (t2 < t or a2 > a)
                        for other, (t2, a2) in points.items() if other != name)
        if not dominated:
            front.append(name)
    return sorted(front, key=lambda n: points[n][0])


def _plot_pareto(summary: dict[str, Any]) -> str | None:
    per = summary.get("per_variant", {})
    points: dict[str, tuple[float, float]] = {}
    for v in summary["variants"]:
        t = per.get(v, {}).get("train_seconds", {}).get("mean")
        a = per.get(v, {}).get("accuracy", {}).get("mean")
        if _finite(t) and _finite(a):
            points[v] = (float(t), float(a))
    if not points:
        return None
    front = pareto_front(points)
    fig = _new_figure(7.0, 4.5)
    ax: Axes = fig.subplots()
    for i, v in enumerate(summary["variants"]):
        if v not in points:
            continue
        t, a = points[v]
        ts, acs = per[v]["train_seconds"], per[v]["accuracy"]

        def err(stat: dict[str, Any], centre: float) -> Any:
            lo, hi = stat.get("ci_low"), stat.get("ci_high")
            return [[centre - lo], [hi - centre]] if _finite(lo) and _finite(hi) else None

        on_front = v in front
        ax.errorbar([t], [a], xerr=err(ts, t), yerr=err(acs, a), fmt="o", color=_colour(i), capsize=3,
                    markersize=9 if on_front else 6, markeredgecolor="black" if on_front else _colour(i),
                    markeredgewidth=1.5 if on_front else 0.5, label=_mpl_text(v + (" (Pareto)" if on_front else "")))
        # alternate label sides so that variants with near-equal points do not print over each other
        ax.annotate(_mpl_text(v), (t, a), textcoords="offset points", xytext=(6, 6 if i % 2 == 0 else -12),
                    fontsize=8)
    if len(front) > 1:
        ax.plot([points[n][0] for n in front], [points[n][1] for n in front], color="black", linewidth=1,
                linestyle=":", zorder=0)
    ax.set_xlabel("training time (s, mean over seeds)")
    ax.set_ylabel("test accuracy (mean over seeds)")
    ax.set_title("accuracy vs training time, 95% CI; outlined = Pareto front (faster or more accurate)",
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _svg(fig)


def _plot_per_class_f1(summary: dict[str, Any]) -> str | None:
    f1 = summary.get("per_class_f1") or {}
    variants = [v for v in summary["variants"] if f1.get(v)]
    if not variants:
        return None
    n_classes = max(len(f1[v]) for v in variants)
    width = 0.8 / len(variants)
    fig = _new_figure(max(7.0, 0.6 * n_classes * max(1, len(variants) / 2)), 4.0)
    ax: Axes = fig.subplots()
    for j, v in enumerate(variants):
        i = summary["variants"].index(v)
        xs = [c - 0.4 + width * (j + 0.5) for c in range(len(f1[v]))]
        ys = [float(y) if _finite(y) else 0.0 for y in f1[v]]
        ax.bar(xs, ys, width=width, color=_colour(i), label=_mpl_text(v))
    ax.set_xticks(range(n_classes))
    ax.set_xlabel("class")
    ax.set_ylabel("F1 (mean over seeds)")
    ax.set_ylim(0, 1.05)
    ax.set_title("per-class F1", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncols=min(4, len(variants)))
    return _svg(fig)


# ------------------------------------------------------------------------------------------------- html
_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5rem auto; max-width: 1300px;
       color: #222; padding: 0 1rem; }
h1 { font-size: 1.6rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.6rem 0; font-size: 0.85rem; }
th, td { border: 1px solid #bbb; padding: 0.25rem 0.5rem; text-align: right; white-space: nowrap; }
th { background: #f2f2f2; } td.name, th.name { text-align: left; font-weight: 600; }
.scroll { overflow-x: auto; }
.note { background: #fff4d6; border-left: 4px solid #e0a800; padding: 0.5rem 0.8rem; }
.missing { color: #777; font-style: italic; }
figure.plot { margin: 1rem 0; } figure.plot svg { max-width: 100%; height: auto; }
figcaption { font-size: 0.85rem; color: #555; }
dl.setting { display: grid; grid-template-columns: max-content auto; gap: 0.2rem 1rem; }
dl.setting dt { font-weight: 600; } dl.setting dd { margin: 0; font-family: monospace; }
pre { background: #f7f7f7; padding: 0.6rem; overflow-x: auto; font-size: 0.8rem; }
.legend span { display: inline-block; padding: 0.1rem 0.5rem; margin-right: 0.4rem; border: 1px solid #bbb; }
"""

# Counts the figures whose plot actually rendered as an <svg> element; the browser test compares it to the
# number of figures so that a figure with a broken or missing drawing fails it.
_SCRIPT = """
window.addEventListener("load", function () {
  var figures = document.querySelectorAll("figure.plot");
  var rendered = 0;
  figures.forEach(function (f) { if (f.querySelector("svg")) { rendered += 1; } });
  document.body.dataset.plotsExpected = String(figures.length);
  document.body.dataset.plotsRendered = String(rendered);
});
"""

# default-src 'none': the page may load nothing from anywhere; inline style and the inline script above
# are the only things it runs
_CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"


def _figure(name: str, svg: str | None, caption: str) -> str:
    if svg is None:
        return f'<p class="missing">No data for the {_e(name)} plot in this ablation.</p>'
    return (f'<figure class="plot" data-plot="{_e(name)}">{svg}'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _metric_header(metric: dict[str, Any]) -> str:
    arrow = "↑" if metric.get("higher_is_better") else "↓"
    better = "higher" if metric.get("higher_is_better") else "lower"
    return f'<th title="{_e(better)} is better">{_e(metric.get("label", metric["key"]))} {arrow}</th>'


def _verdict_cell(d: dict[str, Any] | None, fmt: str | None) -> str:
    if not d:
        return f'<td class="verdict" data-verdict="none" title="not measured" style="background-color:{_UNKNOWN_COLOUR}">n/a</td>'
    verdict = str(d.get("verdict"))
    colour = VERDICT_COLOURS.get(verdict, _UNKNOWN_COLOUR)
    tip = f"{verdict}; n = {d.get('n')}, p = {format_p(d.get('p_value'))}"
    text = format_effect(d.get("mean_diff"), d.get("ci_low"), d.get("ci_high"), fmt)
    return (f'<td class="verdict" data-verdict="{_e(verdict)}" title="{_e(tip)}" '
            f'style="background-color:{colour}">{_e(text)}</td>')


def _verdict_table(summary: dict[str, Any]) -> str:
    metrics = summary.get("metrics", [])
    paired = summary.get("paired", {})
    head = '<tr><th class="name">technique</th>' + "".join(_metric_header(m) for m in metrics) + "</tr>"
    rows = []
    for tech in list(summary["variants"])[1:]:
        cells = "".join(_verdict_cell(paired.get(tech, {}).get(m["key"]), m.get("fmt")) for m in metrics)
        rows.append(f'<tr><td class="name">{_e(tech)}</td>{cells}</tr>')
    legend = "".join(f'<span style="background-color:{VERDICT_COLOURS[v]}">{_e(v)}</span>'
                     for v in ("helps", "hurts", "no clear effect"))
    return (f'<p class="legend">{legend} — cell: mean paired difference (technique − baseline) '
            f"[95% CI]; hover for verdict, n and p-value.</p>"
            f'<div class="scroll"><table class="verdicts">{head}{"".join(rows)}</table></div>')


def _per_variant_table(summary: dict[str, Any]) -> str:
    metrics = summary.get("metrics", [])
    per = summary.get("per_variant", {})
    head = '<tr><th class="name">variant</th><th>seeds</th>' + "".join(_metric_header(m) for m in metrics) + "</tr>"
    rows = []
    for v in summary["variants"]:
        cells = []
        for m in metrics:
            s = per.get(v, {}).get(m["key"]) or {}
            text = format_value(s.get("mean"), m.get("fmt"))
            if s.get("half_width") is not None:
                text += " ± " + format_value(s["half_width"], m.get("fmt"))
            cells.append(f"<td>{_e(text)}</td>")
        n = len(summary.get("seeds", {}).get(v, []) or [])
        rows.append(f'<tr><td class="name">{_e(v)}</td><td>{n}</td>{"".join(cells)}</tr>')
    return (f"<p>Mean over seeds ± half-width of the 95% confidence interval.</p>"
            f'<div class="scroll"><table class="per-variant">{head}{"".join(rows)}</table></div>')


def _equal_time_table(summary: dict[str, Any]) -> str:
    eq = summary.get("equal_time") or {}
    techniques = [t for t in list(summary["variants"])[1:] if t in eq]
    if not techniques:
        return '<p class="missing">No equal-time comparison in this ablation.</p>'
    fmt = next((m.get("fmt") for m in summary.get("metrics", []) if m["key"] == "accuracy"), ".4f")
    head = ('<tr><th class="name">technique</th><th>at time (s)</th><th>n</th>'
            "<th>accuracy difference [95% CI]</th><th>t</th><th>p-value</th><th>verdict</th></tr>")
    rows = []
    for t in techniques:
        d = eq[t]
        verdict = str(d.get("verdict"))
        colour = VERDICT_COLOURS.get(verdict, _UNKNOWN_COLOUR)
        rows.append(
            f'<tr><td class="name">{_e(t)}</td><td>{_e(format_value(d.get("seconds"), ".1f"))}</td>'
            f'<td>{_e(d.get("n"))}</td>'
            f'<td class="verdict" data-verdict="{_e(verdict)}" title="{_e(verdict)}" style="background-color:{colour}">'
            f'{_e(format_effect(d.get("mean_diff"), d.get("ci_low"), d.get("ci_high"), fmt))}</td>'
            f'<td>{_e(format_value(d.get("t"), ".3g"))}</td><td>{_e(format_p(d.get("p_value")))}</td>'
            f"<td>{_e(verdict)}</td></tr>")
    return ("<p>Evaluation accuracy of technique and baseline after the same wall-clock training time T, "
            "paired by seed: does the technique still pay off once its extra cost per step is counted?</p>"
            f'<div class="scroll"><table class="equal-time">{head}{"".join(rows)}</table></div>')


def _averaging_table(summary: dict[str, Any]) -> str:
    """Weight averagers (EMA, SWA): averaged weights minus the same runs' final trained weights, by seed."""
    avg = summary.get("averaging") or {}
    if not avg:
        return ""
    fmts = {m["key"]: m.get("fmt") for m in summary.get("metrics", [])}
    keys = [k for k in ("accuracy", "macro_f1", "nll", "ece", "brier") if any(k in avg[v] for v in avg)]
    head = '<tr><th class="name">variant</th>' + "".join(f"<th>{_e(k)}</th>" for k in keys) + "</tr>"
    rows = []
    for v in [x for x in summary["variants"] if x in avg]:
        cells = []
        for k in keys:
            d = avg[v].get(k) or {}
            verdict = str(d.get("verdict"))
            colour = VERDICT_COLOURS.get(verdict, _UNKNOWN_COLOUR)
            cells.append(f'<td class="verdict" data-verdict="{_e(verdict)}" title="{_e(verdict)}" '
                         f'style="background-color:{colour}">'
                         f'{_e(format_effect(d.get("mean_diff"), d.get("ci_low"), d.get("ci_high"), fmts.get(k)))}</td>')
        rows.append(f'<tr><td class="name">{_e(v)}</td>{"".join(cells)}</tr>')
    return ("<h2>Averaged weights against the same run's final weights</h2>"
            "<p>For techniques that evaluate with averaged weights: test metrics with the averaged weights minus "
            "the same runs' final trained weights, paired by seed, with the 95% interval.</p>"
            f'<div class="scroll"><table class="averaging">{head}{"".join(rows)}</table></div>')


def _setting_section(setting: dict[str, Any]) -> str:
    items = []
    for key in ("task", "model", "budget", "seeds", "machine", "recipe_hash"):
        if key not in setting:
            continue
        value = setting[key]
        shown = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)
        items.append(f"<dt>{_e(key)}</dt><dd>{_e(shown)}</dd>")
    out = f'<dl class="setting">{"".join(items)}</dl>'
    if setting.get("baseline_recipe") is not None:
        recipe = json.dumps(setting["baseline_recipe"], indent=2, sort_keys=True, default=str)
        out += f"<details><summary>baseline recipe</summary><pre>{_e(recipe)}</pre></details>"
    return out


def _seed_note(summary: dict[str, Any]) -> str:
    counts = {v: len(summary.get("seeds", {}).get(v, []) or []) for v in summary["variants"]}
    few = [v for v, n in counts.items() if n < 2]
    if not few:
        return ""
    who = "every variant" if len(few) == len(counts) else ", ".join(few)
    return (f'<p class="note seed-note">Fewer than 2 seeds for {_e(who)}: confidence intervals, t statistics and '
            "p-values cannot be computed, so no difference can be called an effect. "
            "Differences shown are single-run differences; run the ablation with more seeds.</p>")


def _samples_section(summary: dict[str, Any]) -> str:
    """Language models: each variant's text sample (first seed), shown rather than measured."""
    samples = summary.get("samples") or {}
    if not samples:
        return ""
    parts = ["<h2>Samples</h2>", "<p>A continuation of the prompt from each variant's first seed, sampled at the "
             "end of training (seeded; settings under each sample).</p>"]
    for v in summary["variants"]:
        smp = samples.get(v)
        if not smp:
            continue
        parts.append(f"<h3>{_e(v)}</h3><pre>{_e(smp.get('text', ''))}</pre>"
                     f"<p class=\"note\">seed {_e(smp.get('seed'))}, temperature {_e(smp.get('temperature'))}, "
                     f"top-k {_e(smp.get('top_k'))}, prompt {_e(repr(smp.get('prompt')))}</p>")
    return "\n".join(parts)


def _diagnostics_section(summary: dict[str, Any]) -> str:
    """Per-layer activation and gradient statistics of variants run with the diagnostics technique."""
    diagnostics = summary.get("diagnostics") or {}
    if not diagnostics:
        return ""
    from tricklab.lab.diagnostics_plots import diagnostic_figures

    parts = ["<h2>Training diagnostics</h2>"]
    for v in summary["variants"]:
        d = diagnostics.get(v)
        if not d:
            continue
        parts.append(f"<h3>{_e(v)} (seed {_e(d.get('seed'))})</h3>")
        for name, svg, caption in diagnostic_figures(d["records"]):
            parts.append(_figure(f"diagnostics-{v}-{name}", svg, caption))
    return "\n".join(parts)


def render_report(summary: dict[str, Any], curves: dict[str, Any], setting: dict[str, Any]) -> str:
    """The whole report as one HTML string (see the module docstring for the inputs)."""
    _matplotlib()  # fail with the install hint before any work
    task, model = setting.get("task", "?"), setting.get("model", "?")
    if isinstance(model, dict):
        model = model.get("name", "?")
    n_seeds = max((len(s or []) for s in summary.get("seeds", {}).values()), default=0)
    title = f"tricklab ablation: {task}/{model}, {len(summary['variants']) - 1} techniques, {n_seeds} seeds"

    curves = curves or {}
    plots = {
        "verdict": _plot_verdicts(summary),
        "train-loss-vs-step": _plot_curve(summary, curves, "step", "train_loss", "step", "train loss"),
        "eval-accuracy-vs-step": _plot_curve(summary, curves, "step", "eval_accuracy", "step", "eval accuracy"),
        "train-loss-vs-seconds": _plot_curve(summary, curves, "seconds", "train_loss", "training seconds",
                                             "train loss"),
        "eval-accuracy-vs-seconds": _plot_curve(summary, curves, "seconds", "eval_accuracy", "training seconds",
                                                "eval accuracy"),
        "reliability": _plot_reliability(summary),
        "pareto": _plot_pareto(summary),
        "per-class-f1": _plot_per_class_f1(summary),
    }
    body = [
        f"<h1>{_e(title)}</h1>",
        "<h2>Setting</h2>", _setting_section(setting),
        "<h2>Verdicts against the baseline</h2>",
        f"<p>Baseline: <b>{_e(summary['variants'][0])}</b>. Each technique is added alone to the baseline recipe "
        "and run with the same seeds and budget; differences are paired by seed.</p>",
        _seed_note(summary),
        _verdict_table(summary),
        _figure("verdict", plots["verdict"], "Paired differences with 95% intervals; an interval crossing 0 is "
                "no clear effect."),
        "<h2>Per-variant results</h2>", _per_variant_table(summary),
        "<h2>Learning curves</h2>",
        _figure("train-loss-vs-step", plots["train-loss-vs-step"], "Training loss against optimizer steps."),
        _figure("eval-accuracy-vs-step", plots["eval-accuracy-vs-step"], "Evaluation accuracy against steps."),
        _figure("train-loss-vs-seconds", plots["train-loss-vs-seconds"],
                "Training loss against wall-clock training time (seeds interpolated onto a shared time grid)."),
        _figure("eval-accuracy-vs-seconds", plots["eval-accuracy-vs-seconds"],
                "Evaluation accuracy against wall-clock training time."),
        "<h2>Calibration</h2>",
        _figure("reliability", plots["reliability"], "Reliability diagrams, one per variant."),
        "<h2>Accuracy vs training time</h2>",
        _figure("pareto", plots["pareto"], "A technique off the Pareto front is beaten on both time and accuracy "
                "by another variant."),
        "<h2>Accuracy at equal training time</h2>", _equal_time_table(summary),
        _averaging_table(summary),
        "<h2>Per-class F1</h2>",
        _figure("per-class-f1", plots["per-class-f1"], "F1 per class, mean over seeds."),
        _samples_section(summary),
        _diagnostics_section(summary),
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{_e(_CSP)}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(part for part in body if part)
            + f"\n<script>{_SCRIPT}</script>\n</body></html>\n")


def write_report(folder: Path, summary: dict[str, Any], curves: dict[str, Any], setting: dict[str, Any]) -> Path:
    """Render the report and write it to ``folder/report.html`` atomically; returns the path."""
    text = render_report(summary, curves, setting)  # render first: a failed render leaves the old report
    path = Path(folder) / "report.html"
    atomic_write_text(path, text)
    return path
