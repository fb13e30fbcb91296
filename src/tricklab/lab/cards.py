"""Technique cards: one markdown page and one JSON file per technique of an ablation.

A card states what was measured for one technique against the baseline, in the setting it was measured in,
and a verdict sentence assembled only from the verdicts the statistics produced. Negative results ("hurts",
"no clear effect") are written exactly like positive ones: a card is a record, not an advertisement.
Numbers are copied from the :class:`~tricklab.lab.summary.AblationSummary`; nothing is recomputed here, and
with one seed the interval is reported as not computable rather than filled in.

:class:`Card` is the card's data; ``Card.to_dict`` is the JSON file and ``Card.from_dict`` reads any card
written so far (the committed ones under ``docs/cards/`` included).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tricklab.io import atomic_write_text
from tricklab.lab.format import format_effect, format_p, format_value, safe_name
from tricklab.lab.stats import PairedDifference
from tricklab.lab.summary import AblationSetting, AblationSummary, EqualTime, paired_from_dict

__all__ = ["VERDICTS", "Card", "Effect", "TargetReached", "card_data", "card_json", "card_markdown", "verdict_sentence",
           "write_cards"]

#: Verdict strings the statistics module produces; anything else is shown verbatim but styled as unclear.
VERDICTS: tuple[str, ...] = ("helps", "hurts", "no clear effect", "cannot tell (1 seed)")

_PAIRED_KEYS = ("n", "mean_diff", "std_diff", "ci_low", "ci_high", "t", "p_value", "verdict")


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

    def effect_text(self) -> str:
        d = self.difference
        return "n/a" if d is None else format_effect(d.mean_diff, d.ci_low, d.ci_high, self.fmt)

    def to_dict(self) -> dict[str, Any]:
        d = self.difference
        out = {"metric": self.metric, "label": self.label, "higher_is_better": self.higher_is_better,
               "fmt": self.fmt, "baseline_mean": self.baseline_mean, "baseline_half_width": self.baseline_half_width,
               "technique_mean": self.technique_mean, "technique_half_width": self.technique_half_width}
        out.update({k: None if d is None else getattr(d, k) for k in _PAIRED_KEYS})
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
        return {
            "variant": self.variant, "baseline": self.baseline, "setting": self.setting.card_dict(),
            "seeds": list(self.seeds), "n_seeds": self.n_seeds, "intervals_computable": self.intervals_computable,
            "effects": [e.to_dict() for e in self.effects],
            "equal_time": None if self.equal_time is None else self.equal_time.to_dict(),
            "averaging": None if self.averaging is None else {k: d.to_dict() for k, d in self.averaging.items()},
            "target_reached": {k: {"reached": t.reached, "seeds": t.seeds} for k, t in self.target_reached.items()},
            "verdict_sentence": verdict_sentence(self),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Card:
        eq, avg, reached = data.get("equal_time"), data.get("averaging"), data.get("target_reached") or {}
        return cls(
            data["variant"], data["baseline"], AblationSetting.from_dict(data.get("setting") or {}),
            list(data.get("seeds") or []), [Effect.from_dict(e) for e in data.get("effects") or []],
            None if eq is None else EqualTime.from_dict(eq),
            None if avg is None else {k: paired_from_dict(v) for k, v in avg.items()},
            {k: TargetReached(v.get("reached", 0), v.get("seeds", 0)) for k, v in reached.items()},
        )


def _effect(summary: AblationSummary, variant: str, key: str) -> Effect:
    m = summary.metric(key)
    assert m is not None
    base, tech = summary.describe(summary.baseline, key), summary.describe(variant, key)
    return Effect(m.key, m.label, m.higher_is_better, m.fmt,
                  None if base is None else base.mean, None if base is None else base.half_width,
                  None if tech is None else tech.mean, None if tech is None else tech.half_width,
                  summary.difference(variant, key))


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
    )


def verdict_sentence(card: Card) -> str:
    """One sentence of the measured verdicts, e.g. ``On mnist1d/cnn over 3 seeds, ema: test accuracy no
    clear effect (+0.0012 [-0.0030, 0.0050]); ...``. Only verdicts and numbers already in ``card`` are used."""
    n = card.n_seeds
    clauses = [f"{e.label} not measured" if e.verdict is None else f"{e.label} {e.verdict} ({e.effect_text()})"
               for e in card.effects]
    seeds = f"{n} seed" + ("" if n == 1 else "s")
    text = f"On {card.setting.where()} over {seeds}, {card.variant}: " + "; ".join(clauses) + "."
    eq = card.equal_time
    if eq is not None:
        d = eq.difference
        text += (f" At equal training time ({format_value(eq.seconds, '.1f')} s), accuracy "
                 f"{d.verdict} ({format_effect(d.mean_diff, d.ci_low, d.ci_high, card.fmt('accuracy'))}).")
    if n < 2:
        text += " With one seed the confidence intervals cannot be computed; run more seeds for a verdict."
    return text


def _md_escape(text: str) -> str:
    # a pipe inside a cell would split the markdown table row
    return str(text).replace("|", "\\|")


def _md_row(cells: tuple[Any, ...]) -> str:
    return "| " + " | ".join(_md_escape(c) for c in cells) + " |"


def _setting_lines(setting: AblationSetting) -> list[str]:
    lines = []
    for key, value in setting.card_dict().items():
        shown = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)
        lines.append(f"- **{key}**: {_md_escape(shown)}")
    return lines


def _effects_lines(card: Card) -> list[str]:
    lines = ["## Measured effects", "",
             "| metric | better | baseline mean | technique mean | difference [95% CI] | p-value | verdict |",
             "|---|---|---|---|---|---|---|"]
    for e in card.effects:
        better = {True: "higher", False: "lower"}.get(e.higher_is_better, "?")
        p = None if e.difference is None else e.difference.p_value
        lines.append(_md_row((e.label, better, format_value(e.baseline_mean, e.fmt),
                              format_value(e.technique_mean, e.fmt), e.effect_text(), format_p(p),
                              e.verdict or "not measured")))
    b, t = card.target_reached.get(card.baseline), card.target_reached.get(card.variant)
    if b is not None and t is not None:
        lines += ["", f"Target accuracy reached (steps to target above): {card.baseline} in {b.reached} "
                      f"of {b.seeds} seeds, {card.variant} in {t.reached} of {t.seeds}."]
    return lines


def _equal_time_lines(card: Card) -> list[str]:
    lines = ["## Accuracy at equal training time", ""]
    eq = card.equal_time
    if eq is None:
        return [*lines, "Not measured."]
    d = eq.difference
    return [*lines, f"Evaluation accuracy of both after {format_value(eq.seconds, '.1f')} s of training "
                    f"(n = {d.n}):", "",
            f"- difference: {format_effect(d.mean_diff, d.ci_low, d.ci_high, card.fmt('accuracy'))}",
            f"- p-value: {format_p(d.p_value)}",
            f"- verdict: {d.verdict}"]


def _averaging_lines(card: Card) -> list[str]:
    if not card.averaging:
        return []
    lines = ["", "## Averaged weights against the same run's final weights", "",
             "Paired by seed within each run: evaluation with the averaged weights minus evaluation with the "
             "final trained weights.", "", "| metric | difference [95% CI] | p-value | verdict |", "|---|---|---|---|"]
    for key, d in card.averaging.items():
        lines.append(f"| {key} | {format_effect(d.mean_diff, d.ci_low, d.ci_high, card.fmt(key, None))} "
                     f"| {format_p(d.p_value)} | {d.verdict} |")
    return lines


def card_markdown(card: Card) -> str:
    """The human-readable card of one variant (what ``<variant>.md`` holds)."""
    lines = [f"# Technique card: {card.variant}", "",
             f"Measured against the baseline `{card.baseline}` at equal budget, paired by seed.", "",
             "## Setting", "", *_setting_lines(card.setting), "", "## Verdict", "", verdict_sentence(card), ""]
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
