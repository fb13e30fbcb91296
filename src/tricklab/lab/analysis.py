"""From the store to an :class:`~tricklab.lab.summary.AblationSummary`: which runs are compared, which metrics,
and every interval, paired difference, equal-time comparison and averaged-vs-final comparison.

:func:`ablation_summary` reads the store once (:func:`read_runs`); everything after that is a short pure
function of the runs, so each step can be tested on runs built in memory. The statistics themselves are in
:mod:`tricklab.lab.stats`; the rules (matching, missing values, equal time) are in ``docs/lab-statistics.md``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tricklab.lab.metrics import EXTRA_TEST_METRICS, METRICS, MetricInfo, extra_test_metric, primary_metric
from tricklab.lab.noise import CONTROL, LATENCY_PASS, NoiseFloor, latency_floor, training_time_floor, with_pass_latency
from tricklab.lab.stats import Description, PairedDifference, describe, paired
from tricklab.lab.store import Store
from tricklab.lab.summary import (
    AblationSummary,
    EqualTime,
    Reliability,
    RunSummary,
    SeededAttention,
    SeededDetections,
    SeededDiagnostics,
    SeededImages,
    SeededSample,
)
from tricklab.lab.verdicts import adjust_family, apply_verdicts

__all__ = ["StoredRun", "ablation_summary", "declared_metrics", "headline_curve", "read_runs", "summarize",
           "value_at_time"]

#: runs of one variant, by seed
Runs = Mapping[int, "StoredRun"]


@dataclass(frozen=True)
class StoredRun:
    """A finished run as the analysis sees it: its summary (typed) and its metric history."""

    id: int
    variant: str
    seed: int
    summary: RunSummary
    history: list[dict[str, Any]]
    env: dict[str, Any] | None = None
    recipe: dict[str, Any] | None = None


def read_runs(store: Store) -> list[StoredRun]:
    """Every 'done' run of ``store`` with its history, ordered by id (oldest first)."""
    return [StoredRun(r.id, r.variant, r.seed, RunSummary.from_dict(r.summary or {}), store.steps(r.id), r.env,
                      r.recipe) for r in store.runs(status="done")]


def ablation_summary(store: Store, baseline: str = "baseline", confidence: float = 0.95) -> AblationSummary:
    """Everything a report needs, read from the 'done' runs of ``store`` (see :func:`summarize`)."""
    return summarize(read_runs(store), store.get_meta("variants") or [], baseline, confidence,
                     store.get_meta(LATENCY_PASS))


def summarize(runs: Sequence[StoredRun], listed: Sequence[str] = (), baseline: str = "baseline",
              confidence: float = 0.95, latency: Mapping[str, Any] | None = None) -> AblationSummary:
    """The ablation summary of ``runs`` (baseline first, then the ``listed`` variants, then any other in the
    order first seen).

    Runs are matched by seed; when a (variant, seed) has several runs the newest (highest id) is used.
    Missing values (a metric absent from a summary or NaN, the target never reached) are left out: ``n``
    counts the seeds that have the value and ``missing`` the seeds that do not. The control runs
    (:data:`~tricklab.lab.noise.CONTROL`) are not a variant: they give the training-time noise floor.
    ``latency`` (the store's latency pass) replaces every run's own latency measurement. Verdicts are
    Holm-adjusted and timing verdicts need a difference beyond the noise floor (:mod:`tricklab.lab.verdicts`).
    """
    runs = [dataclasses.replace(r, summary=with_pass_latency(r.summary, r.variant, r.seed, latency)) for r in runs]
    control = latest_by_seed(r for r in runs if r.variant == CONTROL).get(CONTROL, {})
    by_variant = latest_by_seed(r for r in runs if r.variant != CONTROL)
    variants = variant_order(baseline, listed, list(by_variant))
    groups = {v: by_variant.get(v, {}) for v in variants}
    metrics = metrics_for([r.summary for rs in groups.values() for r in rs.values()])
    base = groups[baseline]
    others = variants[1:]
    alpha = 1.0 - confidence
    floors = noise_floors(control, base, latency)
    raw = {v: {m.key: paired_metric(groups[v], base, m, confidence) for m in metrics} for v in others}
    verdicts, family_size = apply_verdicts(raw, metrics, {k: f.floor for k, f in floors.items()}, alpha)
    key, higher = headline_curve(metrics)
    return AblationSummary(
        variants=variants,
        metrics=metrics,
        seeds={v: sorted(groups[v]) for v in variants},
        per_variant={v: {m.key: describe_metric(groups[v], m, confidence) for m in metrics} for v in variants},
        paired=verdicts,
        equal_time=_holm_equal_time(
            {v: equal_time(groups[v], base, confidence, key, higher) for v in others}, alpha, higher),
        per_class_f1={v: mean_per_class_f1(v, groups[v]) for v in variants},
        reliability={v: first_reliability(groups[v]) for v in variants},
        averaging=_holm_averaging({v: a for v in variants
                                   if (a := averaged_vs_final(groups[v], metrics, confidence)) is not None},
                                  metrics, alpha),
        samples={v: s for v in variants if (s := first_sample(groups[v])) is not None},
        diagnostics={v: d for v in variants if (d := first_diagnostics(groups[v])) is not None},
        attention={v: a for v in variants if (a := first_attention(groups[v])) is not None},
        detections={v: d for v in variants if (d := first_detections(groups[v])) is not None},
        images={v: i for v in variants if (i := first_images(groups[v])) is not None},
        noise=floors,
        control={m.key: paired_metric(control, base, m, confidence) for m in metrics} if control else {},
        family_size=family_size,
        confidence=confidence,
        recipes={v: first.recipe for v in variants if (first := _first(groups[v])) is not None and first.recipe},
    )


# ---------------------------------------------------------------------------------- noise and families
def noise_floors(control: Runs, base: Runs, latency: Mapping[str, Any] | None) -> dict[str, NoiseFloor]:
    """The noise floor of each timing metric that has one: training time from the control runs, latency
    from the latency pass (:mod:`tricklab.lab.noise`)."""
    found = {"train_seconds": training_time_floor({s: r.summary for s, r in control.items()},
                                                  {s: r.summary for s, r in base.items()}),
             "latency_ms": latency_floor(latency)}
    return {k: f for k, f in found.items() if f is not None}


def _holm_equal_time(eq: dict[str, EqualTime], alpha: float, higher_is_better: bool = True
                     ) -> dict[str, EqualTime]:
    # a secondary analysis: one comparison per technique, adjusted within its own family
    adjusted = adjust_family({(v, "eq"): e.difference for v, e in eq.items()},
                             {(v, "eq"): higher_is_better for v in eq}, alpha)
    return {v: dataclasses.replace(e, difference=adjusted[(v, "eq")]) for v, e in eq.items()}


def _holm_averaging(avg: dict[str, dict[str, PairedDifference]], metrics: Sequence[MetricInfo], alpha: float
                    ) -> dict[str, dict[str, PairedDifference]]:
    better = {m.key: m.higher_is_better for m in metrics}
    judged_keys = {m.key for m in metrics if m.judged}
    diffs = {(v, k): d for v, row in avg.items() for k, d in row.items() if k in judged_keys}
    adjusted = adjust_family(diffs, {k: better[k[1]] for k in diffs}, alpha)
    return {v: {k: adjusted.get((v, k), d) for k, d in row.items()} for v, row in avg.items()}


# ------------------------------------------------------------------------------------ which runs, which metrics
def latest_by_seed(runs: Iterable[StoredRun]) -> dict[str, dict[int, StoredRun]]:
    """variant -> seed -> run, variants in the order first seen; the newest run of a (variant, seed) wins."""
    out: dict[str, dict[int, StoredRun]] = {}
    for r in sorted(runs, key=lambda r: r.id):
        out.setdefault(r.variant, {})[r.seed] = r
    return out


def variant_order(baseline: str, listed: Iterable[str], seen: Iterable[str]) -> list[str]:
    """The baseline, then the listed variants, then any other variant that has runs."""
    out = [baseline]
    for v in [*listed, *seen]:
        if v not in out:
            out.append(v)
    return out


def _natural(name: str) -> list[Any]:
    # natural order, so len64 comes before len128
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def declared_metrics(summaries: Sequence[RunSummary]) -> list[MetricInfo]:
    """The metrics the runs declare, in the order first declared (a summary written before task kinds
    existed declares the default classification metrics)."""
    out: dict[str, MetricInfo] = {}
    for declared in [s.metrics or METRICS for s in summaries] or [METRICS]:
        for m in declared:
            out.setdefault(m.key, m)
    return list(out.values())


def metrics_for(summaries: Sequence[RunSummary]) -> list[MetricInfo]:
    """The declared metrics, optional ones only where some run has them, then each further test set's."""
    declared = declared_metrics(summaries)
    out = [m for m in declared if not m.optional or any(s.value(m) is not None for s in summaries)]
    test_sets = sorted({name for s in summaries for name in s.extra_tests}, key=_natural)
    by_name = {m.name: m for m in declared if m.source == "test"}
    return out + [extra_test_metric(t, by_name[k]) for t in test_sets for k in EXTRA_TEST_METRICS if k in by_name]


def headline_curve(metrics: Sequence[MetricInfo]) -> tuple[str, bool]:
    """The history key of the headline metric's evaluations (``eval_accuracy`` for a classifier,
    ``eval_mse`` for a regression) and whether higher is better."""
    p = primary_metric(metrics)
    return ("eval_accuracy", True) if p is None else (f"eval_{p.name}", p.higher_is_better)


def _usable(x: float | None) -> bool:
    # a NaN metric (e.g. the NLL of a diverged run) cannot enter a mean; it is counted as missing
    return x is not None and not math.isnan(x)


# ----------------------------------------------------------------------------------------- per variant
def describe_metric(runs: Runs, metric: MetricInfo, confidence: float) -> Description:
    """Mean and interval of ``metric`` over the seeds of one variant; seeds without a usable value are
    counted in ``missing``."""
    values = [runs[s].summary.value(metric) for s in sorted(runs)]
    present = [x for x in values if _usable(x)]
    return dataclasses.replace(describe(present, confidence), missing=len(values) - len(present))


def paired_metric(runs: Runs, base: Runs, metric: MetricInfo, confidence: float) -> PairedDifference:
    """``metric`` of a variant minus the baseline's, paired over the seeds where both have a usable value."""
    tr: list[float] = []
    ba: list[float] = []
    for s in sorted(runs):
        if s not in base:
            continue
        a, b = runs[s].summary.value(metric), base[s].summary.value(metric)
        if _usable(a) and _usable(b):
            tr.append(a)  # type: ignore[arg-type]
            ba.append(b)  # type: ignore[arg-type]
    return judged(paired(tr, ba, metric.higher_is_better, confidence), metric)


def judged(d: PairedDifference, metric: MetricInfo) -> PairedDifference:
    """``d`` with no verdict when ``metric`` is shown but not judged (its interval still stands)."""
    if metric.judged or d.n < 2:
        return d
    return dataclasses.replace(d, verdict="not judged")


# The trainer writes row["seconds"] rounded to 6 decimals (round(train_seconds, 6)) while summary
# train_seconds is unrounded, so a run's own last evaluation can sit up to 0.5e-6 s after its train_seconds.
_SECONDS_ROUNDING = 5e-7


def value_at_time(history: Sequence[Mapping[str, Any]], seconds: float, key: str = "eval_accuracy",
                  tolerance: float = _SECONDS_ROUNDING) -> float | None:
    """The value of ``key`` in the last history row (in history order) that has it and whose
    ``row["seconds"] <= seconds + tolerance`` (the tolerance absorbs the 6-decimal rounding of the logged
    seconds); None when no such row exists (nothing evaluated by then)."""
    out: float | None = None
    limit = float(seconds) + tolerance
    for row in history:
        s, v = row.get("seconds"), row.get(key)
        if s is None or v is None or isinstance(v, bool):
            continue
        if float(s) <= limit and not math.isnan(float(v)):
            out = float(v)
    return out


def equal_time(runs: Runs, base: Runs, confidence: float, key: str = "eval_accuracy",
               higher_is_better: bool = True) -> EqualTime:
    """Per common seed, T = min(training seconds of both runs); ``key`` of both at T, paired by seed."""
    seconds: list[float] = []
    used: list[int] = []
    tr: list[float] = []
    ba: list[float] = []
    for s in sorted(runs):
        if s not in base:
            continue
        ta, tb = runs[s].summary.train_seconds, base[s].summary.train_seconds
        if ta is None or tb is None:
            continue
        t = min(ta, tb)
        a, b = value_at_time(runs[s].history, t, key), value_at_time(base[s].history, t, key)
        if a is None or b is None:
            continue
        seconds.append(t)
        used.append(s)
        tr.append(a)
        ba.append(b)
    return EqualTime(paired(tr, ba, higher_is_better, confidence), seconds, used, key)


def mean_per_class_f1(variant: str, runs: Runs) -> list[float] | None:
    """Per-class F1 averaged over the seeds that have it; None when none has."""
    lists = [runs[s].summary.test.per_class_f1 for s in sorted(runs)]
    lists = [x for x in lists if x is not None]
    if not lists:
        return None
    if len({len(x) for x in lists}) != 1:
        raise ValueError(f"variant {variant!r}: per-class F1 lists of different lengths across seeds")
    return [math.fsum(float(x[i]) for x in lists) / len(lists) for i in range(len(lists[0]))]


def _first(runs: Runs) -> StoredRun | None:
    return runs[min(runs)] if runs else None


def first_reliability(runs: Runs) -> Reliability | None:
    first = _first(runs)
    return first.summary.test.reliability if first else None


def first_sample(runs: Runs) -> SeededSample | None:
    """A language model's text sample, from the variant's first seed."""
    first = _first(runs)
    if first is None or first.summary.sample is None:
        return None
    return SeededSample(first.seed, first.summary.sample)


def first_diagnostics(runs: Runs) -> SeededDiagnostics | None:
    """The diagnostics technique's records, from the variant's first seed."""
    first = _first(runs)
    if first is None or not first.summary.diagnostics:
        return None
    return SeededDiagnostics(first.seed, first.summary.diagnostics)


def first_attention(runs: Runs) -> SeededAttention | None:
    """The attention rollout of a few test images, from the variant's first seed (ViT-like models only)."""
    first = _first(runs)
    if first is None or first.summary.attention is None:
        return None
    return SeededAttention(first.seed, first.summary.attention)


_BOX_KEYS = frozenset({"image", "true_boxes", "pred_boxes", "pred_labels", "pred_scores"})


def first_detections(runs: Runs) -> SeededDetections | None:
    """A detection loop task's example images with boxes (``extras["examples"]``), from the first seed."""
    first = _first(runs)
    examples = None if first is None or not first.summary.extras else first.summary.extras.get("examples")
    if not isinstance(examples, list) or not examples or not all(
            isinstance(e, dict) and _BOX_KEYS <= set(e) for e in examples):
        return None
    return SeededDetections(first.seed, examples)


IMAGE_ROWS = ("originals", "reconstructions", "samples")  # the order the report draws them in


def _is_grid_list(value: Any) -> bool:
    """A non-empty list of (H, W) grids of numbers: what the generative loop tasks store as images."""
    return (isinstance(value, list) and bool(value) and all(
        isinstance(g, list) and g and all(isinstance(r, list) and r and all(isinstance(v, (int, float)) for v in r)
                                          for r in g) for g in value))


def first_images(runs: Runs) -> SeededImages | None:
    """A generative loop task's image grids (``extras`` "originals" / "reconstructions" / "samples"), from the
    first seed."""
    first = _first(runs)
    extras = None if first is None else first.summary.extras
    if not extras:
        return None
    rows = {k: extras[k] for k in IMAGE_ROWS if _is_grid_list(extras.get(k))}
    return SeededImages(first.seed, rows) if rows else None


def averaged_vs_final(runs: Runs, metrics: Sequence[MetricInfo], confidence: float
                      ) -> dict[str, PairedDifference] | None:
    """Weight averaging (EMA, SWA): each test metric with the averaged weights against the same run's final
    trained weights, seed by seed; None when no run recorded its trained weights."""
    with_final = [r.summary for r in (runs[s] for s in sorted(runs))
                  if r.summary.test_trained_weights is not None and r.summary.test_trained_weights.values]
    if not with_final:
        return None
    out: dict[str, PairedDifference] = {}
    for m in metrics:
        if m.source != "test" or m.optional:
            continue
        pairs = [(s.metric("test", m.name), s.metric("trained_weights", m.name)) for s in with_final]
        pairs = [(a, b) for a, b in pairs if _usable(a) and _usable(b)]
        out[m.key] = judged(paired([a for a, _ in pairs], [b for _, b in pairs], m.higher_is_better, confidence),
                            m)
    return out
