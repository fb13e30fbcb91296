"""Technique cards: one markdown page and one JSON file per technique of an ablation.

A card states what was measured for one technique against the baseline, in the setting it was measured in,
and a verdict sentence assembled only from the verdicts the statistics produced. Negative results ("hurts",
"no clear effect") are written exactly like positive ones: a card is a record, not an advertisement.
Numbers are copied from the summary of ``tricklab.lab.stats.ablation_summary``; nothing is recomputed here,
and with one seed the interval is reported as not computable rather than filled in.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from tricklab.train.checkpoint import atomic_write_text

#: Verdict strings the statistics module produces; anything else is shown verbatim but styled as unclear.
VERDICTS: tuple[str, ...] = ("helps", "hurts", "no clear effect", "cannot tell (1 seed)")

_SETTING_KEYS: tuple[str, ...] = ("task", "model", "budget", "seeds", "machine", "recipe_hash")


# ------------------------------------------------------------------------------------------- formatting
def format_value(value: Any, fmt: str | None = None, signed: bool = False) -> str:
    """``value`` with the metric's format spec (``".4f"``); ``"n/a"`` for None or NaN.

    The spec comes from the summary, so it may not suit the value (``"d"`` on a float mean of
    integer counts); such values fall back to 4 significant digits instead of raising while a report is
    being written.
    """
    if value is None:
        return "n/a"
    if isinstance(value, (list, tuple)):  # e.g. one equal-time T per seed
        return ", ".join(format_value(v, fmt, signed) for v in value) if value else "n/a"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    spec = fmt or ".4g"
    sign = "+" if signed else ""
    if spec.endswith("d"):
        # a mean of integer counts is a float; show it whole when it is whole, else with decimals
        if float(value).is_integer():
            return format(int(value), sign + spec)
        spec = ".4g"
    try:
        return format(value, sign + spec)
    except (ValueError, TypeError):
        return format(float(value), sign + ".4g")


def format_p(p: float | None) -> str:
    """A p-value, with very small ones shown as a bound because their digits carry no information."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "n/a"
    if p < 1e-4:
        return "<1e-4"
    return format(p, ".3g")


def format_effect(diff: float | None, low: float | None, high: float | None, fmt: str | None) -> str:
    """``"+0.0012 [-0.0030, 0.0050]"``, or ``"+0.0012 (interval cannot be computed)"`` without bounds."""
    if diff is None:
        return "n/a"
    head = format_value(diff, fmt, signed=True)
    if low is None or high is None:
        return f"{head} (interval cannot be computed)"
    return f"{head} [{format_value(low, fmt)}, {format_value(high, fmt)}]"


def safe_name(name: str) -> str:
    """A file-name-safe form of a variant name (combinations look like ``ema+grad_clip``)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.+=-]", "_", name)
    # "." and ".." would name a folder, not a file next to the others
    return cleaned if cleaned.strip(".") else f"_{cleaned}"


# ----------------------------------------------------------------------------------------- card content
def _seed_count(summary: dict[str, Any], variant: str) -> int:
    return len(summary.get("seeds", {}).get(variant, []) or [])


def _setting_part(setting: dict[str, Any]) -> dict[str, Any]:
    return {k: setting.get(k) for k in _SETTING_KEYS if k in setting}


def card_data(summary: dict[str, Any], setting: dict[str, Any], variant: str) -> dict[str, Any]:
    """The machine-readable card of one non-baseline ``variant`` (what ``<variant>.json`` holds)."""
    variants = list(summary["variants"])
    baseline = variants[0]
    per_variant = summary.get("per_variant", {})
    paired = summary.get("paired", {}).get(variant, {})
    effects: list[dict[str, Any]] = []
    for metric in summary.get("metrics", []):
        key = metric["key"]
        base = per_variant.get(baseline, {}).get(key, {})
        tech = per_variant.get(variant, {}).get(key, {})
        diff = paired.get(key)
        effects.append({
            "metric": key,
            "label": metric.get("label", key),
            "higher_is_better": metric.get("higher_is_better"),
            "fmt": metric.get("fmt"),
            "baseline_mean": base.get("mean"),
            "baseline_half_width": base.get("half_width"),
            "technique_mean": tech.get("mean"),
            "technique_half_width": tech.get("half_width"),
            # a metric the statistics could not pair (e.g. failed runs) is kept with no numbers, not dropped
            "n": None if diff is None else diff.get("n"),
            "mean_diff": None if diff is None else diff.get("mean_diff"),
            "std_diff": None if diff is None else diff.get("std_diff"),
            "ci_low": None if diff is None else diff.get("ci_low"),
            "ci_high": None if diff is None else diff.get("ci_high"),
            "t": None if diff is None else diff.get("t"),
            "p_value": None if diff is None else diff.get("p_value"),
            "verdict": None if diff is None else diff.get("verdict"),
        })
    equal_time = summary.get("equal_time", {}).get(variant)
    seeds = list(summary.get("seeds", {}).get(variant, []) or [])
    data: dict[str, Any] = {
        "variant": variant,
        "baseline": baseline,
        "setting": _setting_part(setting),
        "seeds": seeds,
        "n_seeds": len(seeds),
        "intervals_computable": len(seeds) >= 2,
        "effects": effects,
        "equal_time": None if equal_time is None else dict(equal_time),
        # averaged (evaluation) weights against the same runs' final trained weights, when it averages weights
        "averaging": summary.get("averaging", {}).get(variant),
        # how many seeds reached the target accuracy at all (a run that never reaches it has no step count)
        "target_reached": {
            name: {"reached": (per_variant.get(name, {}).get("steps_to_target") or {}).get("n", 0),
                   "seeds": len(summary.get("seeds", {}).get(name, []) or [])}
            for name in (baseline, variant)
        },
    }
    data["verdict_sentence"] = verdict_sentence(data)
    return data


def _where(setting: dict[str, Any]) -> str:
    task, model = setting.get("task"), setting.get("model")
    if isinstance(model, dict):  # a model spec rather than its name
        model = model.get("name")
    if task and model:
        return f"{task}/{model}"
    return str(task or model or "this setting")


def verdict_sentence(card: dict[str, Any]) -> str:
    """One sentence of the measured verdicts, e.g. ``On mnist1d/cnn over 3 seeds, ema: test accuracy no
    clear effect (+0.0012 [-0.0030, 0.0050]); ...``. Only verdicts and numbers already in ``card`` are used."""
    n = card["n_seeds"]
    clauses: list[str] = []
    for e in card["effects"]:
        if e["verdict"] is None:
            clauses.append(f"{e['label']} not measured")
            continue
        clauses.append(f"{e['label']} {e['verdict']} ({format_effect(e['mean_diff'], e['ci_low'], e['ci_high'], e['fmt'])})")
    seeds = f"{n} seed" + ("" if n == 1 else "s")
    text = f"On {_where(card['setting'])} over {seeds}, {card['variant']}: " + "; ".join(clauses) + "."
    eq = card.get("equal_time")
    if eq and eq.get("verdict") is not None:
        acc_fmt = next((e["fmt"] for e in card["effects"] if e["metric"] == "accuracy"), ".4f")
        text += (f" At equal training time ({format_value(eq.get('seconds'), '.1f')} s), accuracy "
                 f"{eq['verdict']} ({format_effect(eq.get('mean_diff'), eq.get('ci_low'), eq.get('ci_high'), acc_fmt)}).")
    if n < 2:
        text += " With one seed the confidence intervals cannot be computed; run more seeds for a verdict."
    return text


def _md_escape(text: str) -> str:
    # a pipe inside a cell would split the markdown table row
    return str(text).replace("|", "\\|")


def card_markdown(card: dict[str, Any]) -> str:
    """The human-readable card of one variant (what ``<variant>.md`` holds)."""
    s = card["setting"]
    lines = [f"# Technique card: {card['variant']}", "",
             f"Measured against the baseline `{card['baseline']}` at equal budget, paired by seed.", "",
             "## Setting", ""]
    for key in _SETTING_KEYS:
        if key not in s:
            continue
        value = s[key]
        shown = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)
        lines.append(f"- **{key}**: {_md_escape(shown)}")
    lines += ["", "## Verdict", "", card["verdict_sentence"], ""]
    if not card["intervals_computable"]:
        lines += ["> Only one seed: the confidence intervals, t statistics and p-values cannot be computed. "
                  "The differences below are single-run differences.", ""]
    lines += ["## Measured effects", "",
              "| metric | better | baseline mean | technique mean | difference [95% CI] | p-value | verdict |",
              "|---|---|---|---|---|---|---|"]
    for e in card["effects"]:
        better = {True: "higher", False: "lower"}.get(e["higher_is_better"], "?")
        lines.append("| " + " | ".join(_md_escape(c) for c in (
            e["label"], better, format_value(e["baseline_mean"], e["fmt"]), format_value(e["technique_mean"], e["fmt"]),
            format_effect(e["mean_diff"], e["ci_low"], e["ci_high"], e["fmt"]), format_p(e["p_value"]),
            e["verdict"] or "not measured")) + " |")
    reached = card.get("target_reached")
    if reached:
        b, t = reached.get(card["baseline"], {}), reached.get(card["variant"], {})
        lines += ["", f"Target accuracy reached (steps to target above): {card['baseline']} in {b.get('reached', 0)} "
                      f"of {b.get('seeds', 0)} seeds, {card['variant']} in {t.get('reached', 0)} of {t.get('seeds', 0)}."]
    lines += ["", "## Accuracy at equal training time", ""]
    eq = card.get("equal_time")
    if not eq:
        lines.append("Not measured.")
    else:
        acc_fmt = next((e["fmt"] for e in card["effects"] if e["metric"] == "accuracy"), ".4f")
        lines += [f"Evaluation accuracy of both after {format_value(eq.get('seconds'), '.1f')} s of training "
                  f"(n = {eq.get('n')}):", "",
                  f"- difference: {format_effect(eq.get('mean_diff'), eq.get('ci_low'), eq.get('ci_high'), acc_fmt)}",
                  f"- p-value: {format_p(eq.get('p_value'))}",
                  f"- verdict: {eq.get('verdict')}"]
    avg = card.get("averaging")
    if avg:
        fmts = {e["metric"]: e["fmt"] for e in card["effects"]}
        lines += ["", "## Averaged weights against the same run's final weights", "",
                  "Paired by seed within each run: evaluation with the averaged weights minus evaluation with the "
                  "final trained weights.", "", "| metric | difference [95% CI] | p-value | verdict |", "|---|---|---|---|"]
        for key, d in avg.items():
            lines.append(f"| {key} | {format_effect(d.get('mean_diff'), d.get('ci_low'), d.get('ci_high'), fmts.get(key))} "
                         f"| {format_p(d.get('p_value'))} | {d.get('verdict')} |")
    lines.append("")
    return "\n".join(lines)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_cards(summary: dict[str, Any], setting: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write ``<variant>.md`` and ``<variant>.json`` for every non-baseline variant; returns the paths."""
    out_dir = Path(out_dir)
    written: list[Path] = []
    for variant in list(summary["variants"])[1:]:
        card = card_data(summary, setting, variant)
        stem = safe_name(variant)
        md, js = out_dir / f"{stem}.md", out_dir / f"{stem}.json"
        atomic_write_text(md, card_markdown(card))
        # NaN/inf are not JSON: strict parsers would reject the whole file, so they are written as null
        atomic_write_text(js, json.dumps(_finite(card), indent=2, sort_keys=True, allow_nan=False) + "\n")
        written += [md, js]
    return written
