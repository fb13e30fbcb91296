"""Figures of the lab as inline SVG: the matplotlib-to-SVG helpers and the report's plots.

matplotlib is the ``tricklab[plots]`` extra, imported on first use (:func:`matplotlib_or_hint` says which
extra to install). Figures are bare ``Figure`` objects, never pyplot, so nothing leaks into a global figure
registry when a report fails half-way; the SVG text is deterministic (fixed hash salt, no date), so the same
summary gives the same page.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from tricklab.errors import UserError
from tricklab.lab.stats import Description
from tricklab.lab.summary import AblationSummary

if TYPE_CHECKING:  # matplotlib is an optional extra; only the type checker imports it here
    from matplotlib.figure import Figure

__all__ = [
    "PALETTE", "colour", "curve_svg", "finite", "matplotlib_or_hint", "mpl_text", "new_figure", "pareto_front",
    "pareto_svg", "per_class_f1_svg", "reliability_svg", "svg", "verdicts_svg",
]

# stronger versions of the verdict hues for markers in the plots, where pale fills would be invisible
_VERDICT_MARKERS: dict[str, str] = {"helps": "#1b7f3b", "hurts": "#c62828"}
_UNCLEAR_MARKER = "#7a7a7a"

PALETTE: tuple[str, ...] = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                            "#bcbd22", "#17becf")


# ------------------------------------------------------------------------------------------- helpers
def matplotlib_or_hint(what: str = "the ablation report") -> Any:
    """Import matplotlib, headless, or tell the user which extra to install."""
    try:
        import matplotlib
    except ImportError as exc:
        raise UserError(f'{what} draws its plots with matplotlib, which is not installed; '
                        'install it with: pip install "tricklab[plots]"') from exc
    # Agg: no display is needed (or present on servers); SVG output does not depend on the backend anyway
    matplotlib.use("Agg")
    return matplotlib


def new_figure(width: float, height: float) -> Figure:
    """A bare matplotlib Figure (not pyplot) with constrained layout."""
    matplotlib_or_hint()
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def svg(fig: Figure) -> str:
    """The figure as an inline ``<svg>`` element: no XML prolog or DOCTYPE (invalid inside HTML) and no
    metadata block (its Dublin Core URLs would be the only http references left in the page)."""
    mpl = matplotlib_or_hint()
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


def mpl_text(text: Any) -> str:
    """``text`` safe for matplotlib: a "$" in a variant name would switch on mathtext and can fail to parse."""
    return str(text).replace("$", r"\$")


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _hide_unused(axes: Any, used: int, ncols: int) -> None:
    nrows = len(axes)
    for idx in range(used, nrows * ncols):
        axes[idx // ncols][idx % ncols].set_visible(False)


# ------------------------------------------------------------------------------------------- verdicts
def verdicts_svg(summary: AblationSummary) -> str | None:
    """A forest plot: per metric, each technique's paired difference with its 95% interval, coloured by
    verdict. One panel per metric because the metrics have different units."""
    from matplotlib.ticker import MaxNLocator

    techniques, metrics = summary.techniques, summary.metrics
    if not techniques or not metrics:
        return None
    ncols = min(5, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    fig = new_figure(2.7 * ncols, 0.45 * len(techniques) * nrows + 1.2 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for idx, metric in enumerate(metrics):
        ax = axes[idx // ncols][idx % ncols]
        for row, tech in enumerate(techniques):
            d = summary.difference(tech, metric.key)
            if d is None or not finite(d.mean_diff):
                continue
            c = _VERDICT_MARKERS.get(d.verdict, _UNCLEAR_MARKER)
            y = len(techniques) - 1 - row
            if finite(d.ci_low) and finite(d.ci_high):
                ax.plot([d.ci_low, d.ci_high], [y, y], color=c, linewidth=2)
            ax.plot([d.mean_diff], [y], "o", color=c)
        ax.axvline(0.0, color="black", linewidth=0.8)
        ax.set_yticks(range(len(techniques)))
        ax.set_yticklabels([mpl_text(t) for t in reversed(techniques)] if idx % ncols == 0 else [])
        ax.set_ylim(-0.6, len(techniques) - 0.4)
        ax.set_title(mpl_text(f"{metric.label}\n({metric.direction} is better)"), fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4))  # narrow panels: more ticks would overlap
        ax.margins(x=0.15)  # keep points that sit on the data limits off the frame
        ax.grid(axis="x", alpha=0.3)
    _hide_unused(axes, len(metrics), ncols)
    fig.suptitle("technique − baseline (paired by seed), 95% CI; green helps, red hurts, grey unclear",
                 fontsize=10)
    return svg(fig)


# ------------------------------------------------------------------------------------------- curves
def run_series(run: Sequence[dict[str, Any]], xkey: str, ykey: str) -> tuple[list[float], list[float]]:
    """The (x, y) points of one run where both are numbers, sorted by x with repeated x dropped
    (interpolation needs strictly increasing x)."""
    pts = sorted((float(r[xkey]), float(r[ykey])) for r in run if finite(r.get(xkey)) and finite(r.get(ykey)))
    xs: list[float] = []
    ys: list[float] = []
    for x, y in pts:
        if xs and x <= xs[-1]:
            continue
        xs.append(x)
        ys.append(y)
    return xs, ys


def aggregate(series: list[tuple[list[float], list[float]]]) -> tuple[Any, Any, Any, Any] | None:
    """Mean, min and max over seeds on a common x grid.

    Seeds log at the same steps, so on the step axis the grid is usually those steps exactly; wall-clock
    seconds differ per seed, so there the curves are interpolated onto a grid spanning the time range all
    seeds cover (extrapolating a finished run would invent data)."""
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


def curve_svg(variants: Sequence[str], curves: dict[str, Any], xkey: str, ykey: str, xlabel: str,
              ylabel: str) -> str | None:
    """One line per variant (mean over seeds) with a min-max band; None when no run has the data."""
    fig = new_figure(7.0, 4.0)
    ax = fig.subplots()
    drawn = False
    for i, variant in enumerate(variants):
        runs = curves.get(variant) or []
        agg = aggregate([run_series(run, xkey, ykey) for run in runs])
        if agg is None:
            continue
        grid, mean, low, high = agg
        ax.plot(grid, mean, color=colour(i), label=mpl_text(f"{variant} ({len(runs)} seeds)"), linewidth=1.6)
        if len(runs) > 1:
            ax.fill_between(grid, low, high, color=colour(i), alpha=0.18, linewidth=0)
        drawn = True
    if not drawn:
        return None
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{ylabel} vs {xlabel}: mean over seeds, band = min–max", fontsize=10)
    return svg(fig)


# ------------------------------------------------------------------------------------------- calibration
def _reliability_panel(ax: Any, summary: AblationSummary, variant: str) -> None:
    r = summary.reliability[variant]
    assert r is not None
    edges = [float(e) for e in r.bin_edges]
    for b in range(min(len(edges) - 1, len(r.accuracy))):
        acc = r.accuracy[b]
        if not finite(acc):
            continue  # an empty bin has no accuracy; drawing 0 would look like a failure
        ax.bar(edges[b], acc, width=edges[b + 1] - edges[b], align="edge",
               color=colour(summary.variants.index(variant)), alpha=0.75, edgecolor="white")
        if b < len(r.confidence) and finite(r.confidence[b]):
            ax.plot([edges[b], edges[b + 1]], [r.confidence[b], r.confidence[b]], color="black", linewidth=0.8)
    ax.plot([0, 1], [0, 1], linestyle="--", color="black", linewidth=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ece = summary.describe(variant, "ece")
    mean = None if ece is None else ece.mean
    ax.set_title(mpl_text(variant if not finite(mean) else f"{variant} (ECE {mean:.3f})"), fontsize=9)
    ax.set_xlabel("confidence", fontsize=8)
    ax.set_ylabel("accuracy", fontsize=8)
    ax.tick_params(labelsize=7)


def reliability_svg(summary: AblationSummary) -> str | None:
    """One reliability diagram per variant: accuracy in each confidence bin against the diagonal of
    perfect calibration; bars below the diagonal mean over-confidence."""
    variants = [v for v in summary.variants if summary.reliability.get(v) is not None]
    if not variants:
        return None
    ncols = min(4, len(variants))
    nrows = math.ceil(len(variants) / ncols)
    fig = new_figure(3.0 * ncols, 3.0 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for idx, variant in enumerate(variants):
        _reliability_panel(axes[idx // ncols][idx % ncols], summary, variant)
    _hide_unused(axes, len(variants), ncols)
    fig.suptitle("reliability: bars = accuracy per confidence bin, ticks = mean confidence, dashed = perfect",
                 fontsize=9)
    return svg(fig)


# ------------------------------------------------------------------------------------------- pareto
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


def _error(stat: Description, centre: float) -> Any:
    lo, hi = stat.ci_low, stat.ci_high
    return [[centre - lo], [hi - centre]] if finite(lo) and finite(hi) else None


def pareto_svg(summary: AblationSummary) -> str | None:
    """Test accuracy against training time per variant, with 95% intervals; the Pareto front outlined."""
    stats = {v: (summary.describe(v, "train_seconds"), summary.describe(v, "accuracy")) for v in summary.variants}
    points = {v: (float(t.mean), float(a.mean)) for v, (t, a) in stats.items()
              if t is not None and a is not None and finite(t.mean) and finite(a.mean)}
    if not points:
        return None
    front = pareto_front(points)
    fig = new_figure(7.0, 4.5)
    ax = fig.subplots()
    for i, v in enumerate(summary.variants):
        if v not in points:
            continue
        (t, a), (ts, acs) = points[v], stats[v]
        on = v in front
        ax.errorbar([t], [a], xerr=_error(ts, t), yerr=_error(acs, a), fmt="o", color=colour(i), capsize=3,
                    markersize=9 if on else 6, markeredgecolor="black" if on else colour(i),
                    markeredgewidth=1.5 if on else 0.5, label=mpl_text(v + (" (Pareto)" if on else "")))
        # alternate label sides so that variants with near-equal points do not print over each other
        ax.annotate(mpl_text(v), (t, a), textcoords="offset points", xytext=(6, 6 if i % 2 == 0 else -12),
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
    return svg(fig)


# ------------------------------------------------------------------------------------------- per class
def per_class_f1_svg(summary: AblationSummary) -> str | None:
    """Grouped bars: F1 per class, mean over seeds, one bar per variant."""
    f1 = {v: summary.per_class_f1.get(v) for v in summary.variants}
    variants = [v for v in summary.variants if f1[v]]
    if not variants:
        return None
    n_classes = max(len(f1[v] or []) for v in variants)
    width = 0.8 / len(variants)
    fig = new_figure(max(7.0, 0.6 * n_classes * max(1, len(variants) / 2)), 4.0)
    ax = fig.subplots()
    for j, v in enumerate(variants):
        values = f1[v] or []
        xs = [c - 0.4 + width * (j + 0.5) for c in range(len(values))]
        ys = [float(y) if finite(y) else 0.0 for y in values]
        ax.bar(xs, ys, width=width, color=colour(summary.variants.index(v)), label=mpl_text(v))
    ax.set_xticks(range(n_classes))
    ax.set_xlabel("class")
    ax.set_ylabel("F1 (mean over seeds)")
    ax.set_ylim(0, 1.05)
    ax.set_title("per-class F1", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncols=min(4, len(variants)))
    return svg(fig)
