"""Figures a person would rather see than read: attention rollout over test images, detections drawn on images.

matplotlib (the ``plots`` extra) is imported inside each function, so importing this module costs nothing.
Both write SVG (any suffix matplotlib knows works).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["draw_detection", "plot_attention_rollout", "plot_detections"]


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("plotting needs matplotlib: pip install 'tricklab[plots]'") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_attention_rollout(images: Tensor, maps: Tensor, path: str | Path, titles: Sequence[str] | None = None
                           ) -> Path:
    """One column per image: the image (top) and the rollout relevance map upsampled to the image and overlaid
    (bottom). images (N, C, H, W) or (N, H, W); maps (N, gh, gw) from ``rollout_maps``."""
    plt = _pyplot()
    imgs = images if images.dim() == 3 else images[:, 0]
    n = imgs.shape[0]
    up = F.interpolate(maps[:, None].float(), size=imgs.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    fig, axes = plt.subplots(2, n, figsize=(1.8 * n, 3.8), squeeze=False)
    for i in range(n):
        axes[0, i].imshow(imgs[i].detach().cpu(), cmap="gray")
        axes[1, i].imshow(imgs[i].detach().cpu(), cmap="gray")
        axes[1, i].imshow(up[i].detach().cpu(), cmap="inferno", alpha=0.6)
        if titles is not None:
            axes[0, i].set_title(titles[i], fontsize=7)
        for a in axes[:, i]:
            a.axis("off")
    fig.suptitle("attention rollout (Abnar & Zuidema 2020): class-token relevance", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_detections(examples: Sequence[dict[str, Any]], path: str | Path, class_names: Sequence[str] | None = None,
                    title: str = "true boxes (green), predictions (red, dashed)") -> Path:
    """Images with boxes: each example a dict with "image" (H, W), "true_boxes" / "pred_boxes" (xyxy pixels),
    "true_labels" / "pred_labels" and "pred_scores" (lists or tensors)."""
    plt = _pyplot()
    n = len(examples)
    cols = (n + 1) // 2 if n > 1 else 1
    fig, axes = plt.subplots(2 if n > 1 else 1, cols, figsize=(2.6 * cols, 5.4 if n > 1 else 2.8), squeeze=False)
    for a in axes.flat:
        a.axis("off")
    for a, e in zip(axes.flat, examples):
        draw_detection(a, e, class_names)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def draw_detection(ax: Any, example: dict[str, Any], class_names: Sequence[str] | None = None) -> None:
    """One example on a matplotlib Axes: the image, true boxes (green) and predictions (red, dashed, class and
    score). Boxes are xyxy in pixels with pixel centres at integer coordinates, so an edge is drawn half a pixel
    outside. Shared by :func:`plot_detections` and the lab report's detection figure."""
    from matplotlib.patches import Rectangle

    ax.imshow(torch.as_tensor(example["image"], dtype=torch.float32), cmap="gray", vmin=0, vmax=1)
    for b in example["true_boxes"]:
        x0, y0, x1, y1 = (float(v) for v in b)
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="lime", lw=1.2))
    for b, lab, s in zip(example["pred_boxes"], example["pred_labels"], example["pred_scores"]):
        x0, y0, x1, y1 = (float(v) for v in b)
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="red", lw=1.0,
                               ls="--"))
        name = class_names[int(lab)][:7] if class_names is not None else str(int(lab))
        ax.text(x0, y0 - 1, f"{name} {float(s):.2f}".replace("$", r"\$"), color="red", fontsize=6)
