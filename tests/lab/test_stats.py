"""Ablation statistics: the Student t distribution, intervals, paired tests and verdicts.

References: scipy.stats.t (cdf, ppf, interval) and scipy.stats.ttest_rel as oracles; closed forms of the t
distribution for df = 1 (Cauchy: F(x) = 1/2 + atan(x)/pi) and df = 2 (F(x) = 1/2 + x / (2 sqrt(2 + x^2))).
The ablation summary built from a store is tested in test_analysis.py.
"""

from __future__ import annotations

import math

import pytest
from scipy import stats as ss

from tricklab.lab.stats import Description, describe, paired, t_cdf, t_ppf

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
    assert d.n == n and d.mean == pytest.approx(mean, rel=1e-14)
    assert d.std == pytest.approx(ss.tstd(values), rel=1e-12)
    assert d.ci_low == pytest.approx(lo, rel=1e-11) and d.ci_high == pytest.approx(hi, rel=1e-11)
    assert d.half_width == pytest.approx((hi - lo) / 2, rel=1e-11)
    assert d.note is None and d.missing == 0


def test_one_seed_gives_no_interval() -> None:
    d = describe([0.9])
    assert d == Description(1, 0.9, None, None, None, None, note="interval needs at least 2 seeds")
    assert describe([]).mean is None
    p = paired([0.9], [0.8], higher_is_better=True)
    assert p.n == 1 and p.mean_diff == pytest.approx(0.1)
    assert (p.std_diff, p.ci_low, p.ci_high, p.t, p.p_value) == (None,) * 5
    assert p.verdict == "cannot tell (1 seed)"
    assert paired([], [], True).verdict == "cannot tell (0 seeds)"
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
    assert p.n == n
    assert p.t == pytest.approx(float(ref.statistic), rel=1e-10)
    assert p.p_value == pytest.approx(float(ref.pvalue), rel=1e-9)
    assert p.mean_diff == pytest.approx(sum(diffs) / n, rel=1e-12, abs=1e-15)
    assert p.std_diff == pytest.approx(ss.tstd(diffs), rel=1e-12)
    assert p.ci_low == pytest.approx(lo, rel=1e-10) and p.ci_high == pytest.approx(hi, rel=1e-10)
    # the verdict agrees with the interval
    expected = "helps" if lo > 0 else "hurts" if hi < 0 else "no clear effect"
    assert p.verdict == expected


def test_verdicts_follow_the_metric_direction() -> None:
    up = [0.03, 0.02, 0.04]  # differences clearly above 0 (mean 0.03, sd 0.01, CI [0.0052, 0.0548])
    base = [1.0, 1.0, 1.0]
    tr = [b + d for b, d in zip(base, up)]
    assert paired(tr, base, higher_is_better=True).verdict == "helps"  # accuracy went up
    assert paired(tr, base, higher_is_better=False).verdict == "hurts"  # NLL went up
    tr_down = [b - d for b, d in zip(base, up)]
    assert paired(tr_down, base, higher_is_better=True).verdict == "hurts"
    assert paired(tr_down, base, higher_is_better=False).verdict == "helps"
    noisy = paired([1.1, 0.9, 1.05], base, higher_is_better=True)
    assert noisy.ci_low < 0 < noisy.ci_high and noisy.verdict == "no clear effect"

    same = paired([5210, 5210, 5210], [5210, 5210, 5210], higher_is_better=False)
    assert (same.std_diff, same.ci_low, same.ci_high, same.p_value, same.verdict) == (
        0.0, 0.0, 0.0, 1.0, "no clear effect")
    bigger = paired([21432, 21432], [21000, 21000], higher_is_better=False)  # deterministic metric
    assert (bigger.mean_diff, bigger.ci_low, bigger.ci_high, bigger.t, bigger.p_value) == (
        432.0, 432.0, 432.0, math.inf, 0.0)
    assert bigger.verdict == "hurts"
    smaller = paired([100.0, 100.0], [120.0, 120.0], higher_is_better=False)
    assert smaller.t == -math.inf and smaller.verdict == "helps"
