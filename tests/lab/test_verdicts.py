"""From paired differences to verdicts: the Holm family, timing verdicts against the noise floor measured
between identical contenders, and identical rows shown as identical.

References: :func:`tricklab.lab.stats.holm` (tested against Holm's step-down procedure in test_stats.py) and
the paired t-test of :func:`tricklab.lab.stats.paired` (tested against scipy.stats.ttest_rel)."""

from __future__ import annotations

import random

import pytest

from tricklab.lab.analysis import StoredRun, summarize
from tricklab.lab.cards import card_data, card_markdown
from tricklab.lab.metrics import MetricInfo
from tricklab.lab.noise import CONTROL, COPY, latency_floor, training_time_floor
from tricklab.lab.stats import PairedDifference, holm, paired
from tricklab.lab.summary import AblationSetting, Cost, Evaluation, Latency, RunSummary
from tricklab.lab.verdicts import apply_verdicts, family

ACC = MetricInfo("accuracy", "accuracy", True)
TIME = MetricInfo("train_seconds", "training time", False, ".2f", unit="s", source="run", kind="timing")
SIZE = MetricInfo("parameters", "parameters", False, ",.0f", source="run", kind="size")
SHOWN = MetricInfo("brier", "Brier", False, judged=False)


def _d(mean: float, p: float | None, n: int = 3, std: float = 0.01) -> PairedDifference:
    verdict = "no clear effect" if p is None or p >= 0.05 else ("helps" if mean > 0 else "hurts")
    return PairedDifference(n, mean, std, mean - 0.01, mean + 0.01, 3.0, p, verdict)


def test_family_is_the_tested_judged_comparisons() -> None:
    table = {"a": {"accuracy": _d(0.02, 0.01), "train_seconds": _d(1.0, 0.02), "parameters": _d(5.0, 0.0, std=0.0),
                   "brier": _d(0.01, 0.01)},
             "b": {"accuracy": paired([1.0, 1.0], [1.0, 1.0], True), "train_seconds": _d(0.5, 0.3, n=1)}}
    # size counts, metrics shown but not judged, identical values and single seeds are not tested
    assert family(table, [ACC, TIME, SIZE, SHOWN]) == [("a", "accuracy"), ("a", "train_seconds")]


def test_verdicts_use_holm_and_keep_the_raw_p() -> None:
    ps = [0.004, 0.02, 0.03, 0.2]
    table = {f"t{i}": {"accuracy": _d(0.02, p)} for i, p in enumerate(ps)}
    out, size = apply_verdicts(table, [ACC], {}, alpha=0.05)
    assert size == 4
    adjusted = holm(ps)  # [0.016, 0.06, 0.06, 0.2]
    for i, p in enumerate(ps):
        d = out[f"t{i}"]["accuracy"]
        assert d.p_value == p and d.p_holm == pytest.approx(adjusted[i])
        assert d.verdict == ("helps" if adjusted[i] < 0.05 else "no clear effect")
    assert [out[f"t{i}"]["accuracy"].verdict for i in range(4)] == ["helps", "no clear effect", "no clear effect",
                                                                   "no clear effect"]
    assert "Holm" in out["t1"]["accuracy"].note  # its interval excluded 0: the note says why it is no effect


def test_timing_needs_a_difference_beyond_the_noise_floor() -> None:
    table = {"fast": {"train_seconds": _d(-2.0, 0.001)}, "noise": {"train_seconds": _d(0.4, 0.001)}}
    out, _ = apply_verdicts(table, [TIME], {"train_seconds": 0.5}, alpha=0.05)
    assert out["fast"]["train_seconds"].verdict == "helps"
    assert out["noise"]["train_seconds"].verdict == "within noise" and "0.5" in out["noise"]["train_seconds"].note
    out, _ = apply_verdicts(table, [TIME], {}, alpha=0.05)  # no floor measured: no timing verdict at all
    assert {row["train_seconds"].verdict for row in out.values()} == {"not judged"}


def _run(rid: int, variant: str, seed: int, acc: float, seconds: float, params: int = 5210) -> StoredRun:
    summary = RunSummary(train_seconds=seconds, test=Evaluation({"accuracy": acc}),
                         cost=Cost(params, 4 * params, Latency(3.0)))
    return StoredRun(rid, variant, seed, summary, history=[])


def _timing_ablation(rng: random.Random, effect: float) -> list[StoredRun]:
    """Baseline, its control run (the same recipe and seed again) and a technique whose training time is the
    baseline's plus ``effect`` seconds, with the same clock noise on every run (+-0.8 s)."""
    runs, rid = [], 0
    for seed in range(3):
        base = 10.0
        for variant, extra in (("baseline", 0.0), (CONTROL, 0.0), ("tech", effect)):
            rid += 1
            runs.append(_run(rid, variant, seed, 0.9 + 0.01 * seed, base + extra + rng.uniform(-0.8, 0.8)))
    return runs


def test_no_timing_verdict_that_an_identical_comparison_would_also_give() -> None:
    # the identical comparison (the control run against the baseline), judged by the same rule, never gets a
    # verdict: its mean difference cannot exceed the floor, the largest of its own per-seed differences
    rng = random.Random(0)
    false, raw = 0, 0
    for _ in range(400):
        out = summarize(_timing_ablation(rng, 0.0))
        floor = out.noise["train_seconds"].floor
        judged, _ = apply_verdicts({"control": {"train_seconds": out.control["train_seconds"]}}, [TIME],
                                   {"train_seconds": floor}, alpha=0.05)
        assert judged["control"]["train_seconds"].verdict in ("within noise", "no clear effect")
        # a technique that changes nothing: a false verdict needs a consistent difference beyond the floor
        d = out.paired["tech"]["train_seconds"]
        false += d.verdict in ("helps", "hurts")
        raw += d.ci_low > 0 or d.ci_high < 0
    # measured with this seed: 0.4% false verdicts against 4.6% for the bare 95% interval (1000 draws)
    assert false <= 0.02 * 400 and raw >= 2 * max(false, 1)
    for _ in range(50):  # a real 5 s slowdown is always found
        out = summarize(_timing_ablation(rng, 5.0))
        assert out.paired["tech"]["train_seconds"].verdict == "hurts"
    assert "control" in out.noise["train_seconds"].method and CONTROL not in out.variants


def test_noise_floors_by_hand() -> None:
    control = {0: RunSummary(train_seconds=10.5, steps=100), 1: RunSummary(train_seconds=9.0, steps=100)}
    base = {0: RunSummary(train_seconds=10.0, steps=100), 1: RunSummary(train_seconds=10.0, steps=100),
            2: RunSummary(train_seconds=9.0, steps=100)}
    f = training_time_floor(control, base)
    # per seed: 10.5 - 10 = 0.5, 9 - 10 = -1; every run made 100 steps, so any two are identical contenders:
    # the spread 10.5 - 9.0 = 1.5 is the floor
    assert f is not None and f.differences == [0.5, -1.0] and f.seeds == [0, 1] and f.floor == 1.5
    assert f.relative == pytest.approx(1.5 / 10.0) and "any two" in f.method
    # runs of different lengths (early stopping) are compared seed by seed only
    base[2] = RunSummary(train_seconds=5.0, steps=50)
    f = training_time_floor(control, base)
    assert f is not None and f.floor == 1.0 and "any two" not in f.method
    measured = {"median_ms": {"0": {"baseline": 3.0, COPY: 3.2, "ema": 9.0}, "1": {"baseline": 3.1, COPY: 2.9}}}
    lf = latency_floor(measured)
    assert lf is not None and lf.differences == pytest.approx([0.2, -0.2]) and lf.floor == pytest.approx(0.2)
    assert latency_floor(None) is None and training_time_floor({}, base) is None


def test_pass_latency_replaces_the_in_run_measurement() -> None:
    runs = [_run(1, "baseline", 0, 0.9, 10.0), _run(2, "baseline", 1, 0.9, 10.0), _run(3, "ema", 0, 0.9, 10.0),
            _run(4, "ema", 1, 0.9, 10.0)]
    measured = {"median_ms": {"0": {"baseline": 3.0, COPY: 3.1, "ema": 3.05}, "1": {"baseline": 3.2, COPY: 3.0}},
                "repeats": 30}
    out = summarize(runs, latency=measured)
    # ema seed 1 was not timed in the pass: missing, not mixed with the in-run number (3.0 for every run)
    assert out.per_variant["ema"]["latency_ms"].n == 1 and out.per_variant["ema"]["latency_ms"].missing == 1
    assert out.per_variant["baseline"]["latency_ms"].mean == pytest.approx(3.1)
    assert out.noise["latency_ms"].floor == pytest.approx(0.2)


def test_identical_rows_read_as_identical() -> None:
    runs = [_run(i, v, s, 0.9 + 0.01 * s + (0.001 * s if v == "tech" else 0), 10.0)
            for i, (v, s) in enumerate([(v, s) for v in ("baseline", "tech") for s in range(3)])]
    out = summarize(runs)
    d = out.paired["tech"]["parameters"]
    assert d.verdict == "identical" and d.p_value is None
    card = card_data(out, AblationSetting(task="t", model="m", eval_every=500), "tech")
    md = card_markdown(card)
    assert "| identical in every run | n/a | n/a | identical |" in md
    assert "+0 [0, 0]" not in md and "p=1" not in md
    assert "evaluated every 500 steps" in md
