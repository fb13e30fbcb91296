"""Ablation statistics: the Student t distribution, intervals, paired tests, verdicts and the ablation summary.

References: scipy.stats.t (cdf, ppf, interval) and scipy.stats.ttest_rel as oracles; closed forms of the t
distribution for df = 1 (Cauchy: F(x) = 1/2 + atan(x)/pi) and df = 2 (F(x) = 1/2 + x / (2 sqrt(2 + x^2)),
hence the two-sided p = 1 - |t| / sqrt(2 + t^2) and the quantile x(q) = a sqrt(2 / (1 - a^2)), a = 2q - 1)
for the hand-computed ablation numbers.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from scipy import stats as ss

from tricklab.lab.stats import (
    METRICS, ablation_summary, describe, metric_value, paired, t_cdf, t_ppf, value_at_time,
)
from tricklab.lab.store import Store

DFS = [*range(1, 51), 0.5, 2.5, 1000]
XS = [-1e6, -200.0, -40.0, -8.0, -3.0, -1.5, -0.3, 0.0, 0.3, 1.0, 2.2, 5.0, 12.0, 40.0, 200.0, 1e6]
QS = [1e-12, 1e-8, 1e-4, 1e-3, 0.025, 0.05, 0.1, 0.3, 0.5, 0.7, 0.9, 0.95, 0.975, 0.999, 1 - 1e-6, 1 - 1e-10]


def _t2_quantile(q: float) -> float:
    a = 2 * q - 1
    return a * math.sqrt(2 / (1 - a * a))


@pytest.mark.parametrize("df", DFS)
def test_t_cdf_matches_scipy(df: float) -> None:
    for x in XS:
        ref = float(ss.t.cdf(x, df))
        got = t_cdf(x, df)
        assert got == pytest.approx(ref, abs=1e-13), (x, df)
        if x < 0:  # the lower tail keeps its relative precision (not computed as 1 - something)
            assert got == pytest.approx(ref, rel=1e-10), (x, df)


def test_t_cdf_closed_forms_near_zero() -> None:
    # near x = 0 the closed forms are the sharper reference (scipy's stdtr is off by ~1.6e-9 at df=1,
    # x=1e-8); F - 1/2 keeps its relative precision
    for x in [1e-8, 1e-4, 0.01, 0.5, 3.0]:
        assert t_cdf(x, 1) - 0.5 == pytest.approx(math.atan(x) / math.pi, rel=1e-7)
        assert t_cdf(x, 2) - 0.5 == pytest.approx(x / (2 * math.sqrt(2 + x * x)), rel=1e-7)
    assert t_cdf(0.0, 7) == 0.5 and t_cdf(math.inf, 3) == 1.0 and t_cdf(-math.inf, 3) == 0.0
    # df = inf is the standard normal
    assert t_cdf(1.959963984540054, math.inf) == pytest.approx(0.975, abs=1e-15)
    with pytest.raises(ValueError):
        t_cdf(1.0, 0)


@pytest.mark.parametrize("df", DFS)
def test_t_ppf_matches_scipy_and_inverts_t_cdf(df: float) -> None:
    for q in QS:
        ref = float(ss.t.ppf(q, df))
        got = t_ppf(q, df)
        assert got == pytest.approx(ref, rel=1e-10, abs=1e-300), (q, df)
        if 1e-4 <= q <= 1 - 1e-4:
            assert t_cdf(got, df) == pytest.approx(q, rel=1e-12), (q, df)


def test_t_ppf_edges() -> None:
    assert t_ppf(0.5, 3) == 0.0 and t_ppf(0.0, 3) == -math.inf and t_ppf(1.0, 3) == math.inf
    assert t_ppf(0.975, 2) == pytest.approx(_t2_quantile(0.975), rel=1e-13)
    assert t_ppf(0.025, 9) == pytest.approx(-t_ppf(0.975, 9), rel=1e-13)  # symmetry (1 - 0.975 != 0.025 exactly)
    for bad in (-0.1, 1.1, math.nan):
        with pytest.raises(ValueError):
            t_ppf(bad, 3)


@pytest.mark.parametrize("values,confidence", [
    ([0.81, 0.83, 0.80], 0.95),
    ([1.0, 2.0], 0.95),
    ([0.5, 0.51, 0.49, 0.55, 0.47, 0.5, 0.52, 0.53, 0.5, 0.48], 0.95),
    ([3.0, -1.0, 2.5, 7.25, 0.125], 0.9),
    ([12.5, 12.5, 12.5, 13.0], 0.99),
])
def test_describe_matches_scipy_t_interval(values: list[float], confidence: float) -> None:
    n = len(values)
    mean = sum(values) / n
    sem = ss.sem(values)  # ddof = 1
    lo, hi = ss.t.interval(confidence, n - 1, loc=mean, scale=sem)
    d = describe(values, confidence)
    assert d["n"] == n and d["mean"] == pytest.approx(mean, rel=1e-14)
    assert d["std"] == pytest.approx(ss.tstd(values), rel=1e-12)
    assert d["ci_low"] == pytest.approx(lo, rel=1e-11) and d["ci_high"] == pytest.approx(hi, rel=1e-11)
    assert d["half_width"] == pytest.approx((hi - lo) / 2, rel=1e-11)
    assert "note" not in d


def test_one_seed_gives_no_interval() -> None:
    d = describe([0.9])
    assert d == {"n": 1, "mean": 0.9, "std": None, "ci_low": None, "ci_high": None, "half_width": None,
                 "note": "interval needs at least 2 seeds"}
    assert describe([])["mean"] is None
    p = paired([0.9], [0.8], higher_is_better=True)
    assert p["n"] == 1 and p["mean_diff"] == pytest.approx(0.1)
    assert (p["std_diff"], p["ci_low"], p["ci_high"], p["t"], p["p_value"]) == (None,) * 5
    assert p["verdict"] == "cannot tell (1 seed)"
    assert paired([], [], True)["verdict"] == "cannot tell (0 seeds)"
    with pytest.raises(ValueError, match="same seeds"):
        paired([1.0, 2.0], [1.0], True)
    with pytest.raises(ValueError, match="NaN"):
        describe([1.0, math.nan])


@pytest.mark.parametrize("treatment,baseline", [
    ([0.83, 0.84, 0.88], [0.80, 0.82, 0.84]),
    ([0.71, 0.69, 0.74, 0.70, 0.72], [0.70, 0.70, 0.71, 0.69, 0.73]),
    ([1.2, 0.9], [1.0, 1.0]),
    ([5.0, 3.0, 4.0, 6.5, 2.0, 4.25, 3.5, 5.5], [4.0, 3.5, 3.0, 6.0, 2.5, 4.0, 3.0, 5.0]),
])
def test_paired_matches_scipy_ttest_rel_and_interval(treatment: list[float], baseline: list[float]) -> None:
    ref = ss.ttest_rel(treatment, baseline)
    diffs = [a - b for a, b in zip(treatment, baseline)]
    n = len(diffs)
    lo, hi = ss.t.interval(0.95, n - 1, loc=sum(diffs) / n, scale=ss.sem(diffs))
    p = paired(treatment, baseline, higher_is_better=True)
    assert p["n"] == n
    assert p["t"] == pytest.approx(float(ref.statistic), rel=1e-10)
    assert p["p_value"] == pytest.approx(float(ref.pvalue), rel=1e-9)
    assert p["mean_diff"] == pytest.approx(sum(diffs) / n, rel=1e-12, abs=1e-15)
    assert p["std_diff"] == pytest.approx(ss.tstd(diffs), rel=1e-12)
    assert p["ci_low"] == pytest.approx(lo, rel=1e-10) and p["ci_high"] == pytest.approx(hi, rel=1e-10)
    # the verdict agrees with the interval
    expected = "helps" if lo > 0 else "hurts" if hi < 0 else "no clear effect"
    assert p["verdict"] == expected


def test_verdicts_follow_the_metric_direction() -> None:
    up = [0.03, 0.02, 0.04]  # differences clearly above 0 (mean 0.03, sd 0.01, CI [0.0052, 0.0548])
    base = [1.0, 1.0, 1.0]
    tr = [b + d for b, d in zip(base, up)]
    assert paired(tr, base, higher_is_better=True)["verdict"] == "helps"  # accuracy went up
    assert paired(tr, base, higher_is_better=False)["verdict"] == "hurts"  # NLL went up
    tr_down = [b - d for b, d in zip(base, up)]
    assert paired(tr_down, base, higher_is_better=True)["verdict"] == "hurts"
    assert paired(tr_down, base, higher_is_better=False)["verdict"] == "helps"
    noisy = paired([1.1, 0.9, 1.05], base, higher_is_better=True)
    assert noisy["ci_low"] < 0 < noisy["ci_high"] and noisy["verdict"] == "no clear effect"

    same = paired([5210, 5210, 5210], [5210, 5210, 5210], higher_is_better=False)
    assert (same["std_diff"], same["ci_low"], same["ci_high"], same["p_value"], same["verdict"]) == (
        0.0, 0.0, 0.0, 1.0, "no clear effect")
    bigger = paired([21432, 21432], [21000, 21000], higher_is_better=False)  # deterministic metric
    assert (bigger["mean_diff"], bigger["ci_low"], bigger["ci_high"], bigger["t"], bigger["p_value"]) == (
        432.0, 432.0, 432.0, math.inf, 0.0)
    assert bigger["verdict"] == "hurts"
    smaller = paired([100.0, 100.0], [120.0, 120.0], higher_is_better=False)
    assert smaller["t"] == -math.inf and smaller["verdict"] == "helps"


def test_metric_value_reads_a_real_summary_layout() -> None:
    # the layout written by tricklab.lab.runner.run (summary.json)
    summary = {"train_seconds": 12.5, "parameters": 5210, "model_size_bytes": 21432,
               "test": {"accuracy": 0.471, "macro_f1": 0.4576, "nll": 1.3629, "ece": 0.117, "brier": 0.648},
               "inference_latency": {"median_ms": 5.29, "p90_ms": 8.2}, "convergence": None}
    expected = {"accuracy": 0.471, "macro_f1": 0.4576, "nll": 1.3629, "ece": 0.117, "brier": 0.648,
                "train_seconds": 12.5, "latency_ms": 5.29, "parameters": 5210.0, "model_size_bytes": 21432.0,
                "steps_to_target": None, "bpc": None}
    assert [m["key"] for m in METRICS] == list(expected)
    assert {m["key"]: metric_value(summary, m["key"]) for m in METRICS} == expected
    assert metric_value({**summary, "convergence": {"step": 300, "seconds": 1.5, "value": 0.91}},
                        "steps_to_target") == 300.0
    assert metric_value({}, "accuracy") is None
    # language models: bits per character; further test sets: "extra:<name>:<metric>"
    assert metric_value({"test": {"bpc": 1.75}}, "bpc") == 1.75
    assert metric_value({"extra_tests": {"len256": {"accuracy": 0.5}}}, "extra:len256:accuracy") == 0.5
    assert metric_value(summary, "extra:len256:accuracy") is None
    with pytest.raises(KeyError):
        metric_value(summary, "acc")
    assert [m["key"] for m in METRICS if m["higher_is_better"]] == ["accuracy", "macro_f1"]


def test_value_at_time() -> None:
    h = [{"step": 1, "seconds": 0.5, "train_loss": 2.0},
         {"step": 2, "seconds": 1.0, "eval_accuracy": 0.3},
         {"step": 3, "seconds": 1.5, "train_loss": 1.0},
         {"step": 4, "seconds": 2.0, "eval_accuracy": 0.5}]
    assert value_at_time(h, 0.9) is None  # nothing evaluated yet
    assert value_at_time(h, 1.0) == 0.3
    assert value_at_time(h, 1.99) == 0.3
    assert value_at_time(h, 5.0) == 0.5
    # logged seconds are round(train_seconds, 6): a run's own last row may sit 0.4e-6 s after train_seconds
    assert value_at_time(h, 1.9999996) == 0.5
    assert value_at_time(h, 1.999998) == 0.3
    assert value_at_time(h, 1.9999996, tolerance=0.0) == 0.3
    assert value_at_time(h, 2.0, key="train_loss") == 1.0


# -- ablation summary on a store with hand-computable numbers ------------------------------------------------


def _summary(acc: float, nll: float, ece: float, seconds: float, size: int, f1: list[float],
             conv: int | None) -> dict:
    return {"train_seconds": seconds, "parameters": 5210, "model_size_bytes": size,
            "test": {"accuracy": acc, "macro_f1": acc - 0.01, "nll": nll, "ece": ece, "brier": 0.5,
                     "per_class_f1": f1, "reliability": {"bin_edges": [0.0, 0.5, 1.0], "count": [int(acc * 100), 1]}},
            "inference_latency": {"median_ms": 5.0}, "convergence": None if conv is None else {"step": conv}}


def _hist(seconds: list[float], accs: list[float]) -> list[dict]:
    return [{"step": 100 * (i + 1), "seconds": s, "eval_accuracy": a} for i, (s, a) in enumerate(zip(seconds, accs))]


def _fill(store: Store) -> None:
    def add(variant: str, seed: int, summary: dict, history: list[dict]) -> None:
        rid = store.claim(f"{variant}/{seed}", variant, "h", seed, {"variant": variant})
        store.finish(rid, {}, summary, history)

    # written out of order on purpose: variant order comes from meta, seeds are sorted
    store.set_meta("variants", ["mixup", "ema"])
    base_accs = [0.80, 0.82, 0.84]
    ema = {"acc": [0.83, 0.84, 0.88], "nll": [0.9, 1.02, 1.08], "ece": [0.08, 0.085, 0.105]}
    for seed in (2, 0, 1):
        add("ema", seed, _summary(ema["acc"][seed], ema["nll"][seed], ema["ece"][seed], 4.9999996, 21432,
                                  [0.6 + 0.1 * seed, 0.9], 200),
            # rounded like the trainer: round(4.9999996, 6) = 5.0 for the last row
            _hist([1.0, 3.0, 5.0], [0.5, 0.6, [0.70, 0.71, 0.75][seed]]))
        add("baseline", seed, _summary(base_accs[seed], [1.0, 1.1, 1.2][seed], [0.05, 0.06, 0.07][seed], 10.0,
                                       21000, [0.5 + 0.1 * seed, 0.7 + 0.1 * seed], None if seed == 0 else 300),
            _hist([2.0, 4.0, 6.0, 8.0, 10.0], [0.4, [0.60, 0.62, 0.64][seed], 0.7, 0.8, 0.85]))
    add("mixup", 0, _summary(0.81, 1.0, 0.05, 12.0, 21000, [0.5, 0.5], None), _hist([12.0], [0.8]))
    add("mixup", 1, _summary(0.80, 1.0, 0.05, 12.0, 21000, [0.5, 0.5], None), _hist([12.0], [0.8]))
    # ignored: not done
    store.claim("mixup/2", "mixup", "h", 2, {})
    store.fail(store.claim("ema/9", "ema", "h", 9, {}), "diverged")


def test_ablation_summary_hand_computed(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite") as store:
        _fill(store)
        out = ablation_summary(store)

    assert out["variants"] == ["baseline", "mixup", "ema"]
    # bits per character is listed only when some run has it (language models); these runs are classifiers
    assert out["metrics"] == [m for m in METRICS if m["key"] != "bpc"]
    assert out["seeds"] == {"baseline": [0, 1, 2], "mixup": [0, 1], "ema": [0, 1, 2]}

    t2 = _t2_quantile(0.975)  # t_{0.975, 2} = 4.302652729749464 (closed form, df = 2)
    acc = out["per_variant"]["baseline"]["accuracy"]
    # mean 0.82, sd 0.02, half width = t2 * 0.02 / sqrt(3)
    assert acc["n"] == 3 and acc["mean"] == pytest.approx(0.82) and acc["std"] == pytest.approx(0.02)
    assert acc["half_width"] == pytest.approx(t2 * 0.02 / math.sqrt(3), rel=1e-9)
    assert acc["missing"] == 0
    # steps_to_target: seed 0 never reached the target -> left out, counted as missing
    stt = out["per_variant"]["baseline"]["steps_to_target"]
    assert (stt["n"], stt["mean"], stt["missing"], stt["ci_low"]) == (2, 300.0, 1, 300.0)
    assert out["per_variant"]["mixup"]["steps_to_target"]["n"] == 0

    # ema - baseline accuracy: d = (0.03, 0.02, 0.04): mean 0.03, sd 0.01, t = 0.03 / (0.01 / sqrt 3),
    # p = 1 - t / sqrt(2 + t^2) (df = 2), CI 0.03 +- t2 * 0.01 / sqrt(3) = [0.0052, 0.0548] -> helps
    pa = out["paired"]["ema"]["accuracy"]
    t = 0.03 / (0.01 / math.sqrt(3))
    assert pa["n"] == 3 and pa["mean_diff"] == pytest.approx(0.03) and pa["std_diff"] == pytest.approx(0.01)
    assert pa["t"] == pytest.approx(t, rel=1e-9)
    assert pa["p_value"] == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-9)
    assert pa["ci_low"] == pytest.approx(0.03 - t2 * 0.01 / math.sqrt(3), rel=1e-9)
    assert pa["verdict"] == "helps"
    # NLL (lower is better): d = (-0.1, -0.08, -0.12), CI = -0.1 +- t2 * 0.02 / sqrt 3 = [-0.150, -0.050]
    pn = out["paired"]["ema"]["nll"]
    assert pn["mean_diff"] == pytest.approx(-0.1) and pn["ci_high"] == pytest.approx(
        -0.1 + t2 * 0.02 / math.sqrt(3), rel=1e-9)
    assert pn["verdict"] == "helps"
    # ECE (lower is better) went up: d = (0.03, 0.025, 0.035) -> hurts
    assert out["paired"]["ema"]["ece"]["verdict"] == "hurts"
    # parameters identical -> no clear effect with p = 1; model size +432 bytes on every seed -> hurts
    assert (out["paired"]["ema"]["parameters"]["p_value"], out["paired"]["ema"]["parameters"]["verdict"]) == (
        1.0, "no clear effect")
    ps = out["paired"]["ema"]["model_size_bytes"]
    assert (ps["mean_diff"], ps["p_value"], ps["verdict"]) == (432.0, 0.0, "hurts")
    # steps to target: only seeds 1 and 2 have it in both: d = (200 - 300, 200 - 300)
    assert out["paired"]["ema"]["steps_to_target"]["n"] == 2
    assert out["paired"]["ema"]["steps_to_target"]["mean_diff"] == -100.0
    # mixup: seeds 0, 1 only (seed 2 is still running): d = (0.01, -0.02)
    pm = out["paired"]["mixup"]["accuracy"]
    assert pm["n"] == 2 and pm["mean_diff"] == pytest.approx(-0.005) and pm["verdict"] == "no clear effect"
    assert "baseline" not in out["paired"]

    # equal time: ema trained 4.9999996 s, the baseline 10 s -> T = 4.9999996 per seed; ema's last eval
    # (logged at 5.0 after rounding) vs the baseline's eval at 4.0 s: d = (0.10, 0.09, 0.11)
    et = out["equal_time"]["ema"]
    assert et["seconds"] == [4.9999996] * 3 and et["seeds"] == [0, 1, 2]
    assert et["mean_diff"] == pytest.approx(0.10) and et["std_diff"] == pytest.approx(0.01)
    assert et["ci_low"] == pytest.approx(0.10 - t2 * 0.01 / math.sqrt(3), rel=1e-9)
    assert et["verdict"] == "helps"
    # mixup trained longer (12 s) -> T = 10 s, mixup's eval at 12 s is too late: no pair can be formed
    assert out["equal_time"]["mixup"]["n"] == 0 and out["equal_time"]["mixup"]["seeds"] == []

    # per-class F1 averaged over seeds: baseline [(0.5+0.6+0.7)/3, (0.7+0.8+0.9)/3]
    assert out["per_class_f1"]["baseline"] == pytest.approx([0.6, 0.8])
    assert out["per_class_f1"]["ema"] == pytest.approx([0.7, 0.9])
    # reliability of the first (lowest) seed
    assert out["reliability"]["baseline"]["count"] == [80, 1]
    assert out["reliability"]["ema"]["count"] == [83, 1]


def test_ablation_summary_variant_order_without_meta(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite") as store:
        for key, variant in [("z/0", "zeta"), ("b/0", "base"), ("a/0", "alpha")]:
            store.finish(store.claim(key, variant, "h", 0, {}), {}, _summary(0.5, 1.0, 0.1, 1.0, 10, [0.5], None),
                         [])
        # a rerun of zeta seed 0 under another run key (e.g. a changed recipe): the newest done run is used
        store.finish(store.claim("z/0-rerun", "zeta", "h2", 0, {}), {},
                     _summary(0.7, 1.0, 0.1, 1.0, 10, [0.5], None), [])
        out = ablation_summary(store, baseline="base")
    assert out["variants"] == ["base", "zeta", "alpha"]  # baseline first, then first-seen order
    assert out["seeds"]["zeta"] == [0] and out["per_variant"]["zeta"]["accuracy"]["mean"] == 0.7
    assert out["paired"]["zeta"]["accuracy"]["verdict"] == "cannot tell (1 seed)"
    assert out["equal_time"]["zeta"]["n"] == 0  # no history -> nothing evaluated at any time
