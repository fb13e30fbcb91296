"""The report's image figures of loop tasks.

* :func:`detections_svg`: example test images with their true boxes (green) and the predictions the model is
  confident in (red, dashed, with class and score), from a detection loop task's ``extras["examples"]``. Boxes
  are xyxy in pixels, pixel centres at integer coordinates, so a box edge is drawn half a pixel outside.
* :func:`image_rows_svg`: a generative loop task's image grids, one row per kind (originals, reconstructions,
  samples), from its ``extras``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from tricklab.lab.plots import mpl_text, new_figure, svg
from tricklab.models.vision.plots import draw_detection

__all__ = ["detections_svg", "image_rows_svg"]


def detections_svg(examples: Sequence[dict[str, Any]], class_names: Sequence[str] | None = None,
                   limit: int = 8) -> str | None:
    """Up to ``limit`` examples in rows of four, each drawn by
    :func:`tricklab.models.vision.plots.draw_detection`."""
    shown = list(examples)[:limit]
    if not shown:
        return None
    cols = min(4, len(shown))
    rows = math.ceil(len(shown) / cols)
    fig = new_figure(2.4 * cols, 2.5 * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, e in zip(axes.flat, shown):
        draw_detection(ax, e, class_names)
    return svg(fig)


def image_rows_svg(rows: dict[str, Sequence[Any]], limit: int = 16) -> str | None:
    """One row of at most ``limit`` grey images (values in [0, 1]) per named kind, labelled on the left."""
    rows = {k: list(v)[:limit] for k, v in rows.items() if v}
    if not rows:
        return None
    cols = max(len(v) for v in rows.values())
    fig = new_figure(0.75 * cols + 0.9, 0.85 * len(rows) + 0.2)
    axes = fig.subplots(len(rows), cols, squeeze=False)
    for r, (kind, images) in enumerate(rows.items()):
        for c in range(cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(images):
                ax.imshow(images[c], cmap="gray", vmin=0, vmax=1)
            else:
                ax.axis("off")
        axes[r, 0].set_ylabel(mpl_text(kind), fontsize=7)
    return svg(fig)
