"""How much a timing metric moves when nothing changes: the noise floor, measured between identical
contenders, against which timing differences are judged (:mod:`tricklab.lab.verdicts`).

* Training time: every ablation (with a step or epoch budget) trains the baseline recipe a second time for
  each seed, the *control* run (variant :data:`CONTROL`): the same recipe and seed, so the same model and the
  same work. Its training time minus the baseline's, seed by seed, is what the clock says about two identical
  runs on this machine under this load.
* Inference latency: after the runs, the latency pass (:mod:`tricklab.lab.latency`) times every variant's
  trained model and a second copy of the baseline model interleaved in one process; the copy minus the
  baseline, seed by seed, is the floor.

The floor is the largest absolute difference between identical contenders over the seeds: a timing
difference whose mean is no larger is noise as far as this measurement can tell. The control's quality
metrics are shown too: with deterministic training they equal the baseline's, and a difference there says
the runs are not reproducible.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from tricklab.lab.summary import Cost, Latency, NoiseFloor, RunSummary

__all__ = ["CONTROL", "COPY", "LATENCY_PASS", "NoiseFloor", "floor_from", "latency_floor", "training_time_floor",
           "with_pass_latency"]

#: The control variant: the baseline recipe and seed, run a second time.
CONTROL = "baseline-repeat"
#: The second copy of the baseline model in the latency pass.
COPY = "baseline-copy"
#: The store meta key of the latency pass's measurements.
LATENCY_PASS = "latency_pass"


def floor_from(key: str, pairs: Mapping[int, tuple[float, float]], method: str, spread: float = 0.0
               ) -> NoiseFloor | None:
    """The floor from ``{seed: (identical contender, baseline)}``: the largest absolute difference, or
    ``spread`` (another difference between identical contenders) when larger; None without a pair."""
    pairs = {s: p for s, p in pairs.items() if all(isinstance(x, (int, float)) and math.isfinite(x) for x in p)}
    if not pairs:
        return None
    seeds = sorted(pairs)
    diffs = [pairs[s][0] - pairs[s][1] for s in seeds]
    floor = max(max(abs(d) for d in diffs), spread)
    base = math.fsum(pairs[s][1] for s in seeds) / len(seeds)
    return NoiseFloor(key, diffs, seeds, floor, floor / base if base else None, method)


def training_time_floor(control: Mapping[int, RunSummary], base: Mapping[int, RunSummary]) -> NoiseFloor | None:
    """Training seconds of the control run minus the baseline's, per seed both have; or, when every baseline
    and control run made the same number of steps, the spread of all their training times if larger."""
    pairs = {s: (control[s].train_seconds, base[s].train_seconds) for s in control if s in base
             and control[s].train_seconds is not None and base[s].train_seconds is not None}
    runs = [r for r in (*control.values(), *base.values()) if r.train_seconds is not None]
    same_work = len({r.steps for r in runs}) == 1
    seconds = [float(r.train_seconds) for r in runs]  # type: ignore[arg-type]
    spread = max(seconds) - min(seconds) if same_work and len(seconds) > 1 else 0.0
    return floor_from("train_seconds", pairs, "the baseline recipe trained twice with each seed (the control "
                                              "runs, spread over the schedule): the largest difference in "
                                              "training seconds between two of these identical runs (the same "
                                              "seed" + (", or any two: every one made the same steps)"
                                                        if same_work else ")"), spread)


def latency_floor(measured: Mapping[str, Any] | None) -> NoiseFloor | None:
    """Latency of the baseline's second copy minus the baseline, per seed, from the latency pass."""
    if not measured:
        return None
    pairs = {}
    for seed, row in (measured.get("median_ms") or {}).items():
        if COPY in row and "baseline" in row:
            pairs[int(seed)] = (row[COPY], row["baseline"])
    return floor_from("latency_ms", pairs, "two copies of the baseline model timed interleaved in the latency "
                                           "pass, median of the copy minus median of the baseline")


def with_pass_latency(summary: RunSummary, variant: str, seed: int, measured: Mapping[str, Any] | None
                      ) -> RunSummary:
    """``summary`` with its inference latency replaced by the latency pass's measurement (None when the pass
    did not time this run: a latency measured inside the run, beside other runs, is not comparable with the
    interleaved ones)."""
    if not measured:
        return summary
    ms = (measured.get("median_ms") or {}).get(str(seed), {}).get(variant)
    cost = summary.cost or Cost(None, None)
    latency = None if ms is None else Latency(float(ms), repeats=measured.get("repeats"),
                                              batch_size=(cost.inference_latency.batch_size
                                                          if cost.inference_latency else None))
    return dataclasses.replace(summary, cost=dataclasses.replace(cost, inference_latency=latency))
