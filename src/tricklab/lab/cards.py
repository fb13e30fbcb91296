"""Technique cards: one markdown page and one JSON file per technique of an ablation.

A card states what was measured for one technique against the baseline, in the setting it was measured in,
and a verdict sentence assembled only from the verdicts the statistics produced. Negative results ("hurts",
"no clear effect") are written exactly like positive ones: a card is a record, not an advertisement.
Numbers are copied from the :class:`~tricklab.lab.summary.AblationSummary`; nothing is recomputed here, and
with one seed the interval is reported as not computable rather than filled in.

:class:`Card` is the card's data; ``Card.to_dict`` is the JSON file and ``Card.from_dict`` reads any card
written so far (the committed ones under ``docs/cards/`` included). Cards of format 2 (``"format": 2``) also
record what the variant changes against the baseline (every technique argument, defaults included), the
Holm-adjusted p-value of each verdict, the noise floors of the timing metrics and how the runs shared the
machine; a card of format 1 (no ``"format"`` key) reads back and is written again exactly as it was.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tricklab.io import atomic_write_text
from tricklab.lab.differences import MISSING, recipe_changes, show
from tricklab.lab.format import format_difference, format_effect, format_p, format_value, safe_name
from tricklab.lab.stats import PairedDifference
from tricklab.lab.summary import AblationSetting, AblationSummary, EqualTime, NoiseFloor, paired_from_dict

__all__ = ["VERDICTS", "Card", "Effect", "TargetReached", "card_data", "card_json", "card_markdown", "verdict_sentence",
           "write_cards"]

#: Verdict strings the statistics produce; anything else is shown verbatim but styled as unclear.
VERDICTS: tuple[str, ...] = ("helps", "hurts", "no clear effect", "identical", "within noise", "not judged",
                             "cannot tell (1 seed)")

#: The card format this version writes (format 1: cards written before Holm, noise floors and changes).
FORMAT = 2

_PAIRED_KEYS = ("n", "mean_diff", "std_diff", "ci_low", "ci_high", "t", "p_value", "verdict")
_PAIRED_KEYS_2 = (*_PAIRED_KEYS, "p_holm", "note")


def _paired_dict(d: PairedDifference, version: int) -> dict[str, Any]:
    out = d.to_dict()
    return out if version >= 2 else {k: out[k] for k in _PAIRED_KEYS}


@dataclass(frozen=True)
class Effect:
    """One metric of a card: both means with their half-widths and the paired difference (None when the
    statistics could not pair it, e.g. failed runs: the metric is kept with no numbers, not dropped)."""

    metric: str
    label: str
    higher_is_better: bool
    fmt: str | None
    baseline_mean: float | None
    baseline_half_width: float | None
    technique_mean: float | None
    technique_half_width: float | None
    difference: PairedDifference | None

    @property
    def verdict(self) -> str | None:
        return None if self.difference is None else self.difference.verdict

    def effect_text(self, version: int = FORMAT) -> str:
        d = self.difference
        if d is None:
            return "n/a"
        if version >= 2:
            return format_difference(d, self.fmt)
        return format_effect(d.mean_diff, d.ci_low, d.ci_high, self.fmt)

    def to_dict(self, version: int = FORMAT) -> dict[str, Any]:
        d = self.difference
        out = {"metric": self.metric, "label": self.label, "higher_is_better": self.higher_is_better,
               "fmt": self.fmt, "baseline_mean": self.baseline_mean, "baseline_half_width": self.baseline_half_width,
               "technique_mean": self.technique_mean, "technique_half_width": self.technique_half_width}
        keys = _PAIRED_KEYS_2 if version >= 2 else _PAIRED_KEYS
        out.update({k: None if d is None else getattr(d, k) for k in keys})
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Effect:
        diff = None if data.get("verdict") is None else paired_from_dict(data)
        return cls(data["metric"], data.get("label", data["metric"]), data.get("higher_is_better"), data.get("fmt"),
                   data.get("baseline_mean"), data.get("baseline_half_width"), data.get("technique_mean"),
                   data.get("technique_half_width"), diff)


@dataclass(frozen=True)
class TargetReached:
    """How many seeds reached the target accuracy at all (a run that never reaches it has no step count)."""

    reached: int
    seeds: int


@dataclass(frozen=True)
class Card:
    """The measured effect of one technique against the baseline (what ``<variant>.json`` holds)."""

    variant: str
    baseline: str
    setting: AblationSetting
    seeds: list[int]
    effects: list[Effect]
    equal_time: EqualTime | None = None
    # averaged (evaluation) weights against the same runs' final trained weights, when it averages weights
    averaging: dict[str, PairedDifference] | None = None
    target_reached: dict[str, TargetReached] = field(default_factory=dict)
    version: int = FORMAT
    #: [dotted key, baseline value, this variant's value] for every recipe key the variant changes
    changes: list[list[Any]] = field(default_factory=list)
    #: the variant's techniques with every argument (defaults included)
    techniques: list[dict[str, Any]] = field(default_factory=list)
    #: timing metric key -> its noise floor
    noise: dict[str, NoiseFloor] = field(default_factory=dict)
    #: how many comparisons the verdicts were Holm-adjusted over
    family_size: int | None = None
    confidence: float = 0.95

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    @property
    def intervals_computable(self) -> bool:
        return self.n_seeds >= 2

    def effect(self, metric: str) -> Effect | None:
        return next((e for e in self.effects if e.metric == metric), None)

    def fmt(self, metric: str, default: str | None = ".4f") -> str | None:
        e = self.effect(metric)
        return default if e is None else e.fmt

    def to_dict(self) -> dict[str, Any]:
        v = self.version
        out = {
            "variant": self.variant, "baseline": self.baseline, "setting": self.setting.card_dict(),
            "seeds": list(self.seeds), "n_seeds": self.n_seeds, "intervals_computable": self.intervals_computable,
            "effects": [e.to_dict(v) for e in self.effects],
            "equal_time": None if self.equal_time is None else {
                "seconds": self.equal_time.seconds, "seeds": self.equal_time.seeds, "key": self.equal_time.key,
                **_paired_dict(self.equal_time.difference, v)},
            "averaging": None if self.averaging is None else {k: _paired_dict(d, v) for k, d in self.averaging.items()},
            "target_reached": {k: {"reached": t.reached, "seeds": t.seeds} for k, t in self.target_reached.items()},
            "verdict_sentence": verdict_sentence(self),
        }
        if v < 2:
            out["setting"] = {k: out["setting"][k] for k in _SETTING_KEYS_1}
            return out
        out.update({"format": v, "changes": self.changes, "techniques": self.techniques,
                    "noise": {k: f.to_dict() for k, f in self.noise.items()}, "family_size": self.family_size,
                    "confidence": self.confidence})
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Card:
        eq, avg, reached = data.get("equal_time"), data.get("averaging"), data.get("target_reached") or {}
        return cls(
            data["variant"], data["baseline"], AblationSetting.from_dict(data.get("setting") or {}),
            list(data.get("seeds") or []), [Effect.from_dict(e) for e in data.get("effects") or []],
            None if eq is None else EqualTime.from_dict(eq),
            None if avg is None else {k: paired_from_dict(v) for k, v in avg.items()},
            {k: TargetReached(v.get("reached", 0), v.get("seeds", 0)) for k, v in reached.items()},
            version=data.get("format", 1), changes=[list(c) for c in data.get("changes") or []],
            techniques=list(data.get("techniques") or []),
            noise={k: NoiseFloor.from_dict(f) for k, f in (data.get("noise") or {}).items()},
            family_size=data.get("family_size"), confidence=data.get("confidence", 0.95),
        )


#: the setting keys of a format-1 card
_SETTING_KEYS_1 = ("task", "model", "budget", "seeds", "machine", "recipe_hash")


def _effect(summary: AblationSummary, variant: str, key: str) -> Effect:
    m = summary.metric(key)
    assert m is not None
    base, tech = summary.describe(summary.baseline, key), summary.describe(variant, key)
    return Effect(m.key, m.label, m.higher_is_better, m.fmt,
                  None if base is None else base.mean, None if base is None else base.half_width,
                  None if tech is None else tech.mean, None if tech is None else tech.half_width,
                  summary.difference(variant, key))


def _changes(summary: AblationSummary, variant: str) -> list[list[Any]]:
    base, mine = summary.recipes.get(summary.baseline), summary.recipes.get(variant)
    if not base or not mine:
        return []
    return [[k, None if a is MISSING else a, None if b is MISSING else b] for k, a, b in recipe_changes(base, mine)]


def card_data(summary: AblationSummary, setting: AblationSetting, variant: str) -> Card:
    """The card of one non-baseline ``variant``."""
    baseline = summary.baseline

    def reached(name: str) -> TargetReached:
        d = summary.describe(name, "steps_to_target")
        return TargetReached(0 if d is None else d.n, summary.n_seeds(name))

    return Card(
        variant=variant, baseline=baseline, setting=setting, seeds=list(summary.seeds.get(variant) or []),
        effects=[_effect(summary, variant, m.key) for m in summary.metrics],
        equal_time=summary.equal_time.get(variant), averaging=summary.averaging.get(variant),
        target_reached={name: reached(name) for name in (baseline, variant)},
        changes=_changes(summary, variant),
        techniques=list((summary.recipes.get(variant) or {}).get("techniques") or []),
        noise=dict(summary.noise), family_size=summary.family_size, confidence=summary.confidence,
    )


def changes_text(changes: list[list[Any]]) -> str:
    """``label_smoothing, label_smoothing eps=0.1; schedule.name=one_cycle``: a variant's changes in a few
    words."""
    parts = []
    for key, _, value in changes:
        path = key.split(".")
        if path[0] == "techniques" and len(path) == 2:
            parts.append(path[1] if value else f"no {path[1]}")
        elif path[0] == "techniques":
            parts.append(f"{path[1]} {'.'.join(path[2:])}={show(value)}")
        else:
            parts.append(f"{key}={show(value)}")
    return "; ".join(parts)


def verdict_sentence(card: Card) -> str:
    """One sentence of the measured verdicts, e.g. ``On mnist1d/cnn over 3 seeds, ema: test accuracy no
    clear effect (+0.0012 [-0.0030, 0.0050]); ...``. Only verdicts and numbers already in ``card`` are used."""
    n, v = card.n_seeds, card.version
    clauses = [f"{e.label} not measured" if e.verdict is None else f"{e.label} {e.verdict} ({e.effect_text(v)})"
               for e in card.effects]
    seeds = f"{n} seed" + ("" if n == 1 else "s")
    what = f" ({changes_text(card.changes)})" if v >= 2 and card.changes else ""
    text = f"On {card.setting.where()} over {seeds}, {card.variant}{what}: " + "; ".join(clauses) + "."
    eq = card.equal_time
    if eq is not None:
        d = eq.difference
        shown = format_difference(d, card.fmt("accuracy")) if v >= 2 else \
            format_effect(d.mean_diff, d.ci_low, d.ci_high, card.fmt("accuracy"))
        text += f" At equal training time ({format_value(eq.seconds, '.1f')} s), accuracy {d.verdict} ({shown})."
    if n < 2:
        text += " With one seed the confidence intervals cannot be computed; run more seeds for a verdict."
    elif v >= 2 and card.family_size:
        text += f" Verdicts are Holm-adjusted over {card.family_size} comparisons."
    return text


def _md_escape(text: str) -> str:
    # a pipe inside a cell would split the markdown table row
    return str(text).replace("|", "\\|")


def _md_row(cells: tuple[Any, ...]) -> str:
    return "| " + " | ".join(_md_escape(c) for c in cells) + " |"


def _setting_lines(setting: AblationSetting) -> list[str]:
    lines = []
    for key, value in setting.card_dict().items():
        if key == "contention":  # said in words under the effects
            continue
        shown = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)
        lines.append(f"- **{key}**: {_md_escape(shown)}")
    return lines


def _changes_lines(card: Card) -> list[str]:
    lines = ["## What this variant changes", ""]
    if not card.changes:
        return [*lines, "No recipe key differs from the baseline's (or the store did not record the recipes).", ""]
    lines += ["Every recipe key that differs from the baseline, with every technique argument (defaults "
              "included):", "", "| key | baseline | this variant |", "|---|---|---|"]
    lines += [_md_row((f"`{k}`", "(not set)" if a is None else show(a), "(not set)" if b is None else show(b)))
              for k, a, b in card.changes]
    return [*lines, ""]


def _effects_lines(card: Card) -> list[str]:
    lines = ["## Measured effects", "",
             "| metric | better | baseline mean | technique mean | difference [95% CI] | p-value | Holm p | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for e in card.effects:
        better = {True: "higher", False: "lower"}.get(e.higher_is_better, "?")
        d = e.difference
        lines.append(_md_row((e.label, better, format_value(e.baseline_mean, e.fmt),
                              format_value(e.technique_mean, e.fmt), e.effect_text(),
                              format_p(None if d is None else d.p_value), format_p(None if d is None else d.p_holm),
                              e.verdict or "not measured")))
    b, t = card.target_reached.get(card.baseline), card.target_reached.get(card.variant)
    if b is not None and t is not None:
        lines += ["", f"Target accuracy reached (steps to target above): {card.baseline} in {b.reached} "
                      f"of {b.seeds} seeds, {card.variant} in {t.reached} of {t.seeds}."]
    return [*lines, "", *_notes(card)]


def _noise_text(card: Card, key: str, label: str, unit: str) -> str | None:
    f = card.noise.get(key)
    if f is None:
        return None
    rel = "" if f.relative is None else f" ({f.relative:.1%} of the baseline's mean)"
    return f"{label} ±{f.floor:.3g} {unit}{rel}: {f.method}"


def _notes(card: Card) -> list[str]:
    notes = []
    if card.family_size:
        notes.append(f"Verdicts use Holm-adjusted p-values (\"Holm p\") over the {card.family_size} comparisons "
                     f"(technique x judged metric) of this ablation, at the {card.confidence:.0%} level; the raw "
                     f"p-value and the unadjusted {card.confidence:.0%} interval are shown beside them.")
    floors = [t for t in (_noise_text(card, "train_seconds", "training time", "s"),
                          _noise_text(card, "latency_ms", "inference latency", "ms")) if t]
    notes.append("Noise floors, the largest difference between identical contenders: " + "; ".join(floors)
                 + ". A timing difference gets a verdict only when its mean exceeds the floor."
                 if floors else "No noise floor was measured: timing metrics get no verdict.")
    every = card.setting.eval_every
    if every:
        notes.append(f"Steps to target: runs were evaluated every {every} steps; each run's step is interpolated "
                     f"linearly between the last evaluation below the target and the first at or above it (an "
                     f"estimate inside that {every}-step interval; exact only if accuracy rises linearly there).")
    timing = card.setting.timing_note()
    if timing:
        notes.append(timing)
    return [f"- {n}" for n in notes]


def _equal_time_lines(card: Card) -> list[str]:
    lines = ["## Accuracy at equal training time", ""]
    eq = card.equal_time
    if eq is None:
        return [*lines, "Not measured."]
    d = eq.difference
    return [*lines, f"Evaluation accuracy of both after {format_value(eq.seconds, '.1f')} s of training "
                    f"(n = {d.n}):", "",
            f"- difference: {format_difference(d, card.fmt('accuracy'))}",
            f"- p-value: {format_p(d.p_value)} (Holm-adjusted over the techniques: {format_p(d.p_holm)})",
            f"- verdict: {d.verdict}"]


def _averaging_lines(card: Card) -> list[str]:
    if not card.averaging:
        return []
    lines = ["", "## Averaged weights against the same run's final weights", "",
             "Paired by seed within each run: evaluation with the averaged weights minus evaluation with the "
             "final trained weights.", "", "| metric | difference [95% CI] | p-value | Holm p | verdict |",
             "|---|---|---|---|---|"]
    for key, d in card.averaging.items():
        lines.append(f"| {key} | {format_difference(d, card.fmt(key, None))} "
                     f"| {format_p(d.p_value)} | {format_p(d.p_holm)} | {d.verdict} |")
    return lines


def card_markdown(card: Card) -> str:
    """The human-readable card of one variant (what ``<variant>.md`` holds)."""
    lines = [f"# Technique card: {card.variant}", "",
             f"Measured against the baseline `{card.baseline}` at equal budget, paired by seed.", "",
             "## Setting", "", *_setting_lines(card.setting), "", *_changes_lines(card),
             "## Verdict", "", verdict_sentence(card), ""]
    if not card.intervals_computable:
        lines += ["> Only one seed: the confidence intervals, t statistics and p-values cannot be computed. "
                  "The differences below are single-run differences.", ""]
    lines += [*_effects_lines(card), "", *_equal_time_lines(card), *_averaging_lines(card), ""]
    return "\n".join(lines)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def card_json(card: Card) -> str:
    # NaN/inf are not JSON: strict parsers would reject the whole file, so they are written as null
    return json.dumps(_finite(card.to_dict()), indent=2, sort_keys=True, allow_nan=False) + "\n"


def write_cards(summary: AblationSummary, setting: AblationSetting, out_dir: Path) -> list[Path]:
    """Write ``<variant>.md`` and ``<variant>.json`` for every non-baseline variant; returns the paths."""
    out_dir = Path(out_dir)
    written: list[Path] = []
    for variant in summary.techniques:
        card = card_data(summary, setting, variant)
        stem = safe_name(variant)
        md, js = out_dir / f"{stem}.md", out_dir / f"{stem}.json"
        atomic_write_text(md, card_markdown(card))
        atomic_write_text(js, card_json(card))
        written += [md, js]
    return written
