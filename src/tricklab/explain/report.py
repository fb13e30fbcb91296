"""The ``tricklab explain RUN_DIR`` page: attributions of a trained run's test examples, drawn as heat maps over
the inputs (1-D signals and images), with each method's deletion / insertion scores.

A run folder (written by ``tricklab run``) holds ``recipe.yaml`` and ``model.safetensors`` (and
``model.eval.safetensors`` when a weight averager supplied the evaluation weights; those are the ones explained,
as they are the ones the run's test metrics describe). The data set is the recipe's task name (every
classification task is named after its data set) unless ``dataset`` says otherwise, loaded with the recipe's
``data.data_dir`` and ``data.args``.

The page (``index.html``, self-contained, inline SVG drawn by matplotlib) shows, per method: the heat maps,
mean deletion and insertion curves, and the areas under them with 95% bootstrap intervals over the examples;
``scores.json`` next to it holds the same numbers. Explained class: the model's prediction. Baselines: the zero
input for integrated gradients, DeepLIFT and the deletion / insertion reference; ``background`` training inputs
(seeded draw) for the SHAP methods.
"""

from __future__ import annotations

import html
import io
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors.torch import load_file
from torch import Tensor, nn

from tricklab.data import load_dataset
from tricklab.errors import UserError
from tricklab.explain.faithfulness import faithfulness_scores
from tricklab.explain.methods import ATTRIBUTIONS, DEFAULT_METHODS, attribute
from tricklab.models import build_model

__all__ = ["explain_run", "load_run", "recipe_task", "LoadedRun", "bootstrap_interval", "heatmap_figure"]


@dataclass
class LoadedRun:
    """A trained run, ready to explain: the model (evaluation mode), its data set and its recipe."""

    model: nn.Module
    data: Any  # tricklab.data.ArrayDataset
    recipe: dict[str, Any]
    weights: Path


def _read_recipe(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "recipe.yaml"
    if not path.is_file():
        raise UserError(f"{run_dir} holds no run: recipe.yaml is missing (train one with `tricklab run ... --out DIR`)")
    try:
        recipe = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(recipe, dict) or not isinstance(recipe.get("model"), dict) or "task" not in recipe:
        raise UserError(f"{path}: expected a resolved recipe with 'task' and 'model' keys")
    return recipe


def recipe_task(run_dir: str | Path) -> str:
    """The task name in ``RUN_DIR/recipe.yaml`` (the CLI maps it to its data set through the lab's tasks)."""
    return str(_read_recipe(Path(run_dir))["task"])


def load_run(run_dir: str | Path, dataset: str | None = None) -> LoadedRun:
    """Build the run's model with :func:`tricklab.models.build_model`, load its final (or evaluation) weights,
    and load its data set."""
    run_dir = Path(run_dir)
    recipe = _read_recipe(run_dir)
    weights = run_dir / "model.eval.safetensors"
    if not weights.is_file():
        weights = run_dir / "model.safetensors"
    if not weights.is_file():
        raise UserError(f"{run_dir} has no model.safetensors: the run did not finish (resume it with --resume)")
    data_cfg = recipe.get("data") or {}
    name = dataset or str(recipe["task"])
    data = load_dataset(name, data_dir=data_cfg.get("data_dir"), **(data_cfg.get("args") or {}))
    if not hasattr(data, "x_test"):
        raise UserError(f"explain: data set {name!r} is not an array data set (graphs and token sequences are not "
                        f"supported); pass dataset= for a task named differently from its data set")
    if not data.x_test.is_floating_point():
        raise UserError(f"explain: data set {name!r} has integer inputs (tokens); attributions need real inputs")
    model = build_model(recipe["model"]["name"], data.input_shape, data.num_classes,
                        **(recipe["model"].get("args") or {}))
    state = load_file(str(weights))
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise UserError(f"{weights} does not fit the model the recipe builds: {e}") from None
    model.eval()
    return LoadedRun(model, data, recipe, weights)


def bootstrap_interval(values: Sequence[float], confidence: float = 0.95, resamples: int = 10_000,
                       seed: int = 0) -> tuple[float, float, float]:
    """Mean and percentile bootstrap interval of the mean (seeded); NaN bounds for fewer than 2 values."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return math.nan, math.nan, math.nan
    if v.size < 2:
        return float(v.mean()), math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(resamples, v.size))].mean(1)
    lo, hi = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(v.mean()), float(lo), float(hi)


# ------------------------------------------------------------------------------------------------ drawing
def _svg(fig: Any) -> str:
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": "tricklab-explain", "svg.fonttype": "none"}):
        fig.savefig(buf, format="svg", metadata={"Creator": None, "Date": None, "Format": None, "Type": None})
    text = buf.getvalue()
    start = text.find("<svg")
    if start < 0:
        raise RuntimeError("matplotlib produced no <svg> element")
    return text[start:].strip()


def _figure(width: float, height: float) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise UserError(f"the explain page draws with matplotlib, which cannot be imported ({e}): "
                        f'pip install "tricklab[plots]"') from None
    return Figure(figsize=(width, height), layout="constrained")


def _draw_one(ax: Any, x: np.ndarray, a: np.ndarray | None) -> None:
    """One panel: a 1-D signal (line over a coloured strip) or an image (grey, with a translucent overlay)."""
    signal = x.squeeze()
    if signal.ndim == 1:
        if a is not None:
            strip = a.reshape(-1, signal.shape[0]).sum(0)
            lim = float(np.abs(strip).max()) or 1.0
            lo, hi = float(signal.min()), float(signal.max())
            pad = 0.1 * (hi - lo or 1.0)
            ax.imshow(strip[None, :], aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim,
                      extent=(-0.5, signal.shape[0] - 0.5, lo - pad, hi + pad))
        ax.plot(np.arange(signal.shape[0]), signal, color="black", linewidth=1.0)
    else:
        img = signal if signal.ndim == 2 else signal.mean(0)
        if a is None:
            ax.imshow(img, cmap="gray")
        else:
            m = a.reshape(-1, *img.shape).sum(0)
            lim = float(np.abs(m).max()) or 1.0
            ax.imshow(img, cmap="gray")
            # opacity grows with |attribution|: the image shows through where the map is near 0
            ax.imshow(m, cmap="RdBu_r", vmin=-lim, vmax=lim, alpha=0.9 * np.sqrt(np.abs(m) / lim))
    ax.set_xticks([])
    ax.set_yticks([])


def heatmap_figure(inputs: Tensor, maps: dict[str, Tensor], titles: Sequence[str] | None = None) -> str:
    """SVG grid: one row per example, the input then one column per method (red: evidence for the explained
    class, blue: against; each panel scaled to its own largest magnitude; over an image the colour's opacity
    grows with the magnitude, so the image shows where the map is near 0)."""
    n, cols = inputs.shape[0], 1 + len(maps)
    fig = _figure(1.6 * cols, 1.3 * n + 0.3)
    axes = fig.subplots(n, cols, squeeze=False)
    xs = inputs.detach().cpu().numpy()
    for i in range(n):
        _draw_one(axes[i, 0], xs[i], None)
        if titles is not None:
            axes[i, 0].set_ylabel(titles[i], fontsize=6)
        for j, (name, a) in enumerate(maps.items(), start=1):
            _draw_one(axes[i, j], xs[i], a[i].detach().cpu().numpy())
            if i == 0:
                axes[i, j].set_title(name.replace("_", " "), fontsize=7)
    axes[0, 0].set_title("input", fontsize=7)
    return _svg(fig)


def _curves_figure(curves: dict[str, dict[str, np.ndarray]]) -> str:
    fig = _figure(9.0, 3.2)
    ax_d, ax_i = fig.subplots(1, 2)
    for name, c in curves.items():
        f = np.linspace(0, 1, c["deletion"].shape[1])
        style = {"linestyle": "--", "color": "grey"} if name == "random" else {}
        ax_d.plot(f, c["deletion"].mean(0), label=name.replace("_", " "), **style)
        ax_i.plot(f, c["insertion"].mean(0), label=name.replace("_", " "), **style)
    ax_d.set(title="deletion (lower area is better)", xlabel="fraction of features removed",
             ylabel="probability of the class")
    ax_i.set(title="insertion (higher area is better)", xlabel="fraction of features inserted")
    ax_i.legend(fontsize=7, loc="lower right")
    return _svg(fig)


# ------------------------------------------------------------------------------------------------ the page
def _check_methods(methods: Sequence[str] | None) -> list[str]:
    chosen = list(DEFAULT_METHODS) if not methods else [str(m).lower() for m in methods]
    for m in chosen:
        ATTRIBUTIONS.get(m)  # unknown name -> UnknownNameError listing the methods
    if len(set(chosen)) != len(chosen):
        raise UserError(f"explain: a method is named twice in {chosen}")
    return chosen


def _fmt(mean: float, lo: float, hi: float) -> str:
    if math.isnan(lo):
        return f"{mean:.3f}"
    return f"{mean:.3f} [{lo:.3f}, {hi:.3f}]"


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def explain_run(run_dir: str | Path, methods: Sequence[str] | None = None, examples: int = 8,
                out: str | Path | None = None, *, dataset: str | None = None, seed: int = 0, steps: int = 20,
                background: int = 32, progress: Callable[[str], None] | None = None) -> Path:
    """Explain ``examples`` test examples of the run in ``run_dir`` with ``methods`` (names from
    :data:`~tricklab.explain.methods.ATTRIBUTIONS`; all by default) and write ``index.html`` and
    ``scores.json`` into ``out`` (default ``RUN_DIR/explain``). Returns the page's path.

    ``seed`` picks the examples, the background sample and the random draws; ``steps`` is the resolution of
    the deletion / insertion curves; ``progress`` receives one line per method.
    """
    if isinstance(examples, bool) or not isinstance(examples, int) or examples < 1:
        raise UserError(f"explain: --examples must be an int >= 1, got {examples!r}")
    chosen = _check_methods(methods)
    run_dir = Path(run_dir)
    run = load_run(run_dir, dataset)
    out_dir = Path(out) if out is not None else run_dir / "explain"
    out_dir.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda _msg: None)

    g = torch.Generator().manual_seed(seed)
    data = run.data
    pick = torch.randperm(data.num_test, generator=g)[: min(examples, data.num_test)].sort().values
    x, y = data.x_test[pick], data.y_test[pick]
    bg = data.x_train[torch.randperm(data.num_train, generator=g)[: min(background, data.num_train)]]
    model = run.model
    with torch.no_grad():
        probs = model(x).softmax(1)
    pred = probs.argmax(1)
    names = data.class_names or [str(c) for c in range(data.num_classes)]
    titles = [f"#{int(i)}: {names[int(t)]} -> {names[int(p)]}" for i, t, p in zip(pick, y, pred)]

    maps: dict[str, Tensor] = {}
    rows: list[dict[str, Any]] = []
    curves: dict[str, dict[str, np.ndarray]] = {}
    for k, name in enumerate(chosen):
        say(f"explain: {name} ({k + 1}/{len(chosen)}) on {x.shape[0]} examples")
        t0 = time.perf_counter()
        a = attribute(name, model, x, pred, background=bg, generator=torch.Generator().manual_seed(seed + 1 + k))
        seconds = time.perf_counter() - t0
        scores = faithfulness_scores(model, x, a, pred, steps=steps)
        maps[name] = a
        curves[name] = {"deletion": scores["deletion_curve"].numpy(), "insertion": scores["insertion_curve"].numpy()}
        row: dict[str, Any] = {"method": name, "label": ATTRIBUTIONS.get(name).label,
                               "seconds_per_example": seconds / x.shape[0]}
        for key in ("deletion_auc", "insertion_auc", "insertion_minus_deletion"):
            vals = scores[key].tolist()
            mean, lo, hi = bootstrap_interval(vals, seed=seed)
            row[key] = {"mean": mean, "ci_low": lo, "ci_high": hi, "per_example": vals}
        rows.append(row)

    say("explain: drawing")
    heat = heatmap_figure(x, maps, titles)
    curve_svg = _curves_figure(curves)
    meta = {"run_dir": str(run_dir), "weights": run.weights.name, "task": run.recipe.get("task"),
            "model": run.recipe["model"].get("name"), "examples": [int(i) for i in pick],
            "labels": [int(v) for v in y], "predicted": [int(v) for v in pred],
            "probability": [float(probs[i, pred[i]]) for i in range(len(pred))], "seed": seed, "steps": steps,
            "background": int(bg.shape[0]), "reference": "zero input", "interval": "95% bootstrap over examples"}
    _atomic_write(out_dir / "scores.json", json.dumps({"meta": meta, "methods": rows}, indent=2))
    page = out_dir / "index.html"
    _atomic_write(page, _page(meta, rows, heat, curve_svg))
    return page


def _page(meta: dict[str, Any], rows: list[dict[str, Any]], heat: str, curves: str) -> str:
    e = html.escape
    best_del = min(rows, key=lambda r: r["deletion_auc"]["mean"])["method"]
    best_ins = max(rows, key=lambda r: r["insertion_auc"]["mean"])["method"]
    table = "".join(
        f"<tr><td>{e(r['method'])}</td><td>{e(r['label'])}</td>"
        f"<td>{_fmt(r['deletion_auc']['mean'], r['deletion_auc']['ci_low'], r['deletion_auc']['ci_high'])}</td>"
        f"<td>{_fmt(r['insertion_auc']['mean'], r['insertion_auc']['ci_low'], r['insertion_auc']['ci_high'])}</td>"
        f"<td>{r['seconds_per_example'] * 1000:.1f}</td></tr>"
        for r in rows)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>tricklab explain: {e(str(meta['task']))}</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}
svg{{max-width:100%;height:auto}}</style></head>
<body>
<h1>Explanations: {e(str(meta['task']))} / {e(str(meta['model']))}</h1>
<p>Run <code>{e(meta['run_dir'])}</code> (weights <code>{e(meta['weights'])}</code>); {len(meta['examples'])} test
examples drawn with seed {meta['seed']}; the explained class is the model's prediction. Reference input for the
path methods and the deletion / insertion metrics: {e(meta['reference'])}; SHAP background: {meta['background']}
training inputs.</p>
<h2>Faithfulness</h2>
<p>Deletion: the probability of the explained class as the most important features (by each method) are set to
the reference, {meta['steps']} steps; lower area is more faithful. Insertion: the same features put into the
reference; higher area is more faithful. Mean and {e(meta['interval'])}. Most faithful here: deletion
<b>{e(best_del)}</b>, insertion <b>{e(best_ins)}</b>.</p>
<table><tr><th>method</th><th>what</th><th>deletion AUC</th><th>insertion AUC</th><th>ms per example</th></tr>
{table}</table>
<figure>{curves}<figcaption>Mean deletion and insertion curves over the examples (dashed: random
ranking).</figcaption></figure>
<h2>Heat maps</h2>
<p>Red: evidence for the explained class, blue: against; each panel is scaled to its own largest magnitude.
Rows: example index, true label -> predicted label.</p>
<figure>{heat}</figure>
</body></html>
"""
