"""From paired differences to verdicts: multiple comparisons (Holm) and the noise floor of timing metrics.

An ablation compares several techniques on about ten metrics each. At the 95% level, one comparison in
twenty calls an effect where there is none, so a table of forty comparisons is expected to hold two false
"helps"/"hurts" even when no technique does anything. The verdicts therefore use Holm-adjusted p-values over
the *family* of comparisons of the verdict table: every (technique, judged metric) pair that was tested
(:func:`family`). The raw p-value and the unadjusted 95% interval stay visible beside the adjusted p-value.

Timing metrics (``MetricInfo.kind == "timing"``) depend on what else the machine was doing. They get a
verdict only when the mean difference exceeds the noise floor: the largest difference measured between two
*identical* contenders (the baseline against itself, :mod:`tricklab.lab.noise`). Without a measured floor
they get none ("not judged").

Not in the family: metrics shown but not judged, deterministic counts (``kind == "size"``: parameters, bytes,
whose difference is a fact, not an estimate), comparisons with fewer than two seeds, and identical values.
Equal-time and averaged-vs-final comparisons are secondary analyses, each adjusted within its own family.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from tricklab.lab.metrics import MetricInfo
from tricklab.lab.stats import PairedDifference, holm

__all__ = ["NOT_JUDGED", "WITHIN_NOISE", "adjust_family", "apply_verdicts", "family", "holm_verdict"]

#: The verdict of a timing difference no larger than the noise between identical contenders.
WITHIN_NOISE = "within noise"
#: The verdict of a metric shown with its interval but given no verdict.
NOT_JUDGED = "not judged"

Key = tuple[str, str]  # (variant, metric key)


def _tested(d: PairedDifference | None) -> bool:
    return d is not None and d.n >= 2 and d.p_value is not None and not d.identical and not d.constant


def family(paired: Mapping[str, Mapping[str, PairedDifference]], metrics: Sequence[MetricInfo]) -> list[Key]:
    """The (variant, metric) comparisons the verdict table tests, in table order."""
    out = []
    for v, row in paired.items():
        for m in metrics:
            if m.judged and m.kind != "size" and _tested(row.get(m.key)):
                out.append((v, m.key))
    return out


def holm_verdict(d: PairedDifference, p_holm: float, higher_is_better: bool, alpha: float) -> PairedDifference:
    """``d`` with its Holm-adjusted p-value and the verdict it gives: an effect in the direction of the mean
    when ``p_holm < alpha``, else 'no clear effect'."""
    if p_holm < alpha and d.mean_diff is not None and d.mean_diff != 0:
        better = (d.mean_diff > 0) == higher_is_better
        verdict = "helps" if better else "hurts"
    else:
        verdict = "no clear effect"
    note = d.note
    if verdict == "no clear effect" and d.verdict in ("helps", "hurts"):
        note = f"the interval excludes 0 but the Holm-adjusted p-value is {p_holm:.3g} (not below {alpha:g})"
    return dataclasses.replace(d, p_holm=p_holm, verdict=verdict, note=note)


def adjust_family(diffs: Mapping[Key, PairedDifference], directions: Mapping[Key, bool],
                  alpha: float) -> dict[Key, PairedDifference]:
    """Holm-adjust one family of tested comparisons and redo their verdicts (``directions``: higher is
    better, per comparison)."""
    keys = [k for k, d in diffs.items() if _tested(d)]
    adjusted = holm([diffs[k].p_value for k in keys])  # type: ignore[misc]
    out = dict(diffs)
    for k, p in zip(keys, adjusted):
        out[k] = holm_verdict(diffs[k], p, directions[k], alpha)
    return out


def _timing(d: PairedDifference, floor: float | None, unit: str) -> PairedDifference:
    if d.n < 2 or d.mean_diff is None or d.identical:
        return d
    if floor is None:
        return dataclasses.replace(d, verdict=NOT_JUDGED, note="no noise floor was measured for this metric")
    if abs(d.mean_diff) <= floor:
        return dataclasses.replace(d, verdict=WITHIN_NOISE,
                                   note=f"|difference| is within the noise floor ({floor:.3g} {unit})".strip())
    return d


def apply_verdicts(paired: Mapping[str, Mapping[str, PairedDifference]], metrics: Sequence[MetricInfo],
                   floors: Mapping[str, float], alpha: float) -> tuple[dict[str, dict[str, PairedDifference]], int]:
    """Every comparison's final verdict: Holm over :func:`family`, then the noise floor of timing metrics
    (``floors``: metric key -> the largest identical-contender difference). Returns the new table and the
    family size."""
    by_key = {m.key: m for m in metrics}
    members = family(paired, metrics)
    adjusted = adjust_family({k: paired[k[0]][k[1]] for k in members},
                             {k: by_key[k[1]].higher_is_better for k in members}, alpha)
    out: dict[str, dict[str, PairedDifference]] = {}
    for v, row in paired.items():
        out[v] = {}
        for key, d in row.items():
            d = adjusted.get((v, key), d)
            m = by_key.get(key)
            if m is not None and m.kind == "timing" and m.judged:
                d = _timing(d, floors.get(key), m.unit)
            out[v][key] = d
    return out, len(members)
