"""Figures of the ``diagnostics`` technique's records (``run_dir/diagnostics.json``) for the report.

:func:`diagnostic_figures` turns one run's records into inline SVG figures: per-layer activation std over
steps, dead-unit fraction over steps, per-layer gradient norm over steps (log scale) and the activation
histograms of the last recorded step. matplotlib (the ``plots`` extra) draws them, headless, with the figure
helpers of :mod:`tricklab.lab.plots` so that the SVG is deterministic and embeddable.
"""

from __future__ import annotations

import math
from typing import Any

from tricklab.lab.plots import mpl_text, new_figure, svg

__all__ = ["diagnostic_figures"]

_MAX_LINES = 12  # more lines than this in one axes become unreadable; the rest are subsampled evenly
_MAX_HISTS = 16


def _check(records: Any) -> None:
    if not isinstance(records, dict) or not {"steps", "layers", "params"} <= set(records):
        raise ValueError("diagnostic_figures expects the records dict of the diagnostics technique (keys 'steps', "
                         "'layers', 'params'), e.g. json.loads(Path(run_dir, 'diagnostics.json').read_text())")


def _pick(names: list[str], limit: int) -> list[str]:
    """At most ``limit`` names, evenly spread and always keeping the first and the last (input and output)."""
    if len(names) <= limit:
        return names
    idx = sorted({round(i * (len(names) - 1) / (limit - 1)) for i in range(limit)})
    return [names[i] for i in idx]


def _finite_xy(steps: list[Any], values: list[Any], positive: bool = False) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for s, v in zip(steps, values):
        if isinstance(v, (int, float)) and math.isfinite(v) and (v > 0 or not positive):
            xs.append(float(s))
            ys.append(float(v))
    return xs, ys


def _lines(name: str, series: dict[str, tuple[list[Any], list[Any]]], ylabel: str, caption: str,
           log: bool = False, ylim: tuple[float, float] | None = None) -> tuple[str, str, str] | None:
    drawn = {k: _finite_xy(s, v, positive=log) for k, (s, v) in series.items()}
    drawn = {k: xy for k, xy in drawn.items() if xy[0]}
    if not drawn:
        return None
    from matplotlib import colormaps

    fig = new_figure(6.4, 3.6)
    ax = fig.subplots()
    cmap = colormaps["viridis"]
    for i, (label, (xs, ys)) in enumerate(drawn.items()):
        # colour by depth (dark = input side, yellow = output side): trends with depth read at a glance
        colour = cmap(0.9 * i / max(1, len(drawn) - 1))
        ax.plot(xs, ys, marker="o", markersize=2.5, linewidth=1.2, color=colour, label=mpl_text(label))
    if log:
        ax.set_yscale("log")
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=6, ncols=2 if len(drawn) > 6 else 1, loc="best")
    return name, svg(fig), caption


def _histograms(records: dict[str, Any]) -> tuple[str, str, str] | None:
    layers = records["layers"]
    names = _pick([k for k, v in layers.items() if v.get("hist_counts")], _MAX_HISTS)
    if not names:
        return None
    ncols = min(4, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig = new_figure(2.2 * ncols, 1.8 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, name in enumerate(names):
        ax = axes[i // ncols][i % ncols]
        entry = layers[name]
        counts = entry["hist_counts"][-1]
        lo, hi = entry["hist_range"][-1]
        if not (math.isfinite(lo) and math.isfinite(hi)) or not counts:
            ax.set_axis_off()
            continue
        width = (hi - lo) / len(counts)
        ax.bar([lo + (j + 0.5) * width for j in range(len(counts))], counts, width=width, color="#4c72b0")
        ax.set_title(mpl_text(f"{name} ({entry.get('kind', '')})"), fontsize=7)
        ax.tick_params(labelsize=6)
    for j in range(len(names), nrows * ncols):
        axes[j // ncols][j % ncols].set_axis_off()
    step = layers[names[0]]["steps"][-1]
    return ("activation_histograms", svg(fig),
            f"Activation histograms at step {step} (the last record), one panel per layer output; bins span "
            f"each layer's own min..max.")


def diagnostic_figures(records: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(name, svg_text, caption)`` for each figure the records support, in this order:

    * ``activation_std``: per-layer output std over steps (collapsing to 0 = vanishing signal);
    * ``dead_fraction``: fraction of dead ReLU-family units over steps (only if such layers were recorded);
    * ``grad_norm``: gradient norm of each weight over steps, log scale;
    * ``activation_histograms``: histograms of every layer's output at the last recorded step.
    Figures without data (e.g. no parameter received a gradient) are left out.
    """
    _check(records)
    layers: dict[str, Any] = records["layers"]
    params: dict[str, Any] = records["params"]
    out: list[tuple[str, str, str] | None] = []
    names = _pick(list(layers), _MAX_LINES)
    out.append(_lines("activation_std", {n: (layers[n]["steps"], layers[n]["std"]) for n in names},
                      "activation std",
                      "Standard deviation of each layer's output over training steps; a std shrinking layer after "
                      "layer means the signal vanishes with depth, a growing one that it explodes.", log=True))
    dead = _pick([n for n in layers if layers[n].get("dead_fraction")], _MAX_LINES)
    out.append(_lines("dead_fraction", {n: (layers[n]["steps"], layers[n]["dead_fraction"]) for n in dead},
                      "dead-unit fraction",
                      "Fraction of units of each ReLU-family layer that are <= 0 for every example of the batch "
                      "(dead units get no gradient).", ylim=(-0.02, 1.02)))
    weights = [n for n in params if n.endswith("weight")] or list(params)
    weights = _pick(weights, _MAX_LINES)
    out.append(_lines("grad_norm", {n: (params[n]["steps"], params[n]["grad_norm"]) for n in weights},
                      "gradient L2 norm",
                      "Gradient norm of each weight over training steps (log scale); orders of magnitude between "
                      "the first and the last layer flag vanishing or exploding gradients.", log=True))
    out.append(_histograms(records))
    return [f for f in out if f is not None]
