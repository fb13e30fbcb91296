"""The report's attention figure: each test image above its attention-rollout map overlaid on the image.

The maps (N, gh, gw) come from :func:`tricklab.models.vision.vit.image_rollout` through the run summary
(``RunSummary.attention``); each is drawn at the image's size with nearest-patch extent, so one coloured cell
is one patch token, as the model saw it.
"""

from __future__ import annotations

from tricklab.lab.plots import mpl_text, new_figure, svg
from tricklab.lab.summary import AttentionMaps

__all__ = ["attention_svg"]


def attention_svg(att: AttentionMaps, class_names: list[str] | None = None) -> str | None:
    """Two rows per figure: the images (title: true -> predicted class) and the rollout maps over them."""
    n = min(len(att.images), len(att.maps))
    if n == 0:
        return None
    fig = new_figure(1.5 * n, 3.4)
    axes = fig.subplots(2, n, squeeze=False)

    def name(c: int) -> str:
        return class_names[c] if class_names and 0 <= c < len(class_names) else str(c)

    for i in range(n):
        img = att.images[i]
        h, w = len(img), len(img[0])
        extent = (-0.5, w - 0.5, h - 0.5, -0.5)  # the map's cells cover the image exactly (patch grid)
        for ax in axes[:, i]:
            ax.imshow(img, cmap="gray", extent=extent)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[1, i].imshow(att.maps[i], cmap="inferno", alpha=0.6, extent=extent, interpolation="nearest")
        true, pred = att.labels[i] if i < len(att.labels) else -1, att.predictions[i] if i < len(
            att.predictions) else -1
        axes[0, i].set_title(mpl_text(f"{name(true)} -> {name(pred)}"), fontsize=7,
                             color="black" if true == pred else "red")
    return svg(fig)
