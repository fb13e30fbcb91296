"""Statistics for ablations: the Student t distribution, t intervals over seeds, paired seed-by-seed
differences against the baseline and the verdict rule. Pure Python (``math`` only): scipy is a test oracle,
not a run-time dependency. The formulas and references are in ``docs/lab-statistics.md``.

What is measured and how runs are matched lives in :mod:`tricklab.lab.analysis`; this module only computes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Description", "PairedDifference", "describe", "paired", "t_cdf", "t_ppf"]

# ---------------------------------------------------------------------------------------------------------
# Student t distribution
# ---------------------------------------------------------------------------------------------------------

_FPMIN = 1e-300
_EPS = 1e-16
_MAXIT = 10_000


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function, evaluated with the modified Lentz method
    (Numerical Recipes, 3rd ed., section 6.4, ``betacf``):

        I_x(a,b) = x^a (1-x)^b / (a B(a,b)) * 1/(1+ d1/(1+ d2/(1+ ...)))
        d_{2m+1} = -(a+m)(a+b+m) x / ((a+2m)(a+2m+1)),   d_{2m} = m(b-m) x / ((a+2m-1)(a+2m))

    It converges fast for x < (a+1)/(a+b+2), in O(sqrt(max(a, b))) iterations."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _FPMIN else _FPMIN)
    h = d
    for m in range(1, _MAXIT + 1):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))  # even step d_{2m}
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _FPMIN else _FPMIN)
        c = 1.0 + aa / c
        c = c if abs(c) > _FPMIN else _FPMIN
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))  # odd step d_{2m+1}
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _FPMIN else _FPMIN)
        c = 1.0 + aa / c
        c = c if abs(c) > _FPMIN else _FPMIN
        de = d * c
        h *= de
        if abs(de - 1.0) <= _EPS:
            return h
    raise ArithmeticError(f"incomplete beta continued fraction did not converge (a={a}, b={b}, x={x})")


def _betai(a: float, b: float, x: float, y: float) -> float:
    """Regularized incomplete beta I_x(a, b), given both x and y = 1 - x (the caller computes y without
    cancellation). Uses the symmetry I_x(a,b) = 1 - I_{1-x}(b,a) to stay where the fraction converges."""
    if x <= 0.0:
        return 0.0
    if y <= 0.0:
        return 1.0
    # front factor x^a y^b / B(a,b), in logs so that large a, b do not overflow
    log_bt = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(y)
    bt = math.exp(log_bt)
    if x < (a + 1.0) / (a + b + 2.0):
        return bt * _betacf(a, b, x) / a
    return 1.0 - bt * _betacf(b, a, y) / b


def _check_df(df: float) -> float:
    df = float(df)
    if not df > 0.0:  # also rejects NaN
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    return df


def _t_tail2(x: float, df: float) -> float:
    """Two-sided tail P(|T| >= |x|) = I_{df/(df+x^2)}(df/2, 1/2) (Abramowitz & Stegun 26.7.1 with 26.5.27).

    Computed directly (not as 1 - cdf) so small p-values keep their relative precision."""
    if math.isinf(df):
        return math.erfc(abs(x) / math.sqrt(2.0))  # the t distribution tends to the standard normal
    if math.isinf(x):
        return 0.0
    x2 = x * x
    # z = df/(df+x^2) and 1 - z = x^2/(df+x^2), both without subtraction
    return _betai(df / 2.0, 0.5, df / (df + x2), x2 / (df + x2))


def t_cdf(x: float, df: float) -> float:
    """Student t CDF with ``df`` degrees of freedom (df > 0, may be fractional or inf):

        F(x) = 1 - 0.5 * I_{df/(df+x^2)}(df/2, 1/2)   for x >= 0,   F(x) = 1 - F(-x)   for x < 0,

    with I the regularized incomplete beta function (continued fraction, Numerical Recipes 6.4)."""
    df = _check_df(df)
    x = float(x)
    if math.isnan(x):
        return math.nan
    tail = 0.5 * _t_tail2(x, df)
    # the lower tail for x < 0 is returned as is, so t_cdf(-40, 3) keeps its digits
    return 1.0 - tail if x >= 0 else tail


def _t_pdf(x: float, df: float) -> float:
    # f(x) = Gamma((df+1)/2) / (sqrt(df pi) Gamma(df/2)) * (1 + x^2/df)^(-(df+1)/2)
    if math.isinf(df):
        return math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    log_c = math.lgamma((df + 1.0) / 2.0) - math.lgamma(df / 2.0) - 0.5 * math.log(df * math.pi)
    return math.exp(log_c - (df + 1.0) / 2.0 * math.log1p(x * x / df))


def t_ppf(q: float, df: float) -> float:
    """Inverse of :func:`t_cdf`: the x with F(x) = q, to a relative tolerance of 1e-12.

    Solved on the upper tail, S(x) = 1 - F(x) = 0.5 * I_{df/(df+x^2)}(df/2, 1/2) = 1 - q for q > 1/2 (and by
    symmetry x(q) = -x(1-q) for q < 1/2), so quantiles close to 0 or 1 do not lose digits to 1 - F(x).
    Newton steps x <- x + (S(x) - p) / f(x), kept inside a bracket that bisection shrinks whenever a
    step would leave it."""
    df = _check_df(df)
    q = float(q)
    if math.isnan(q) or not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], got {q}")
    if q == 0.0:
        return -math.inf
    if q == 1.0:
        return math.inf
    if q == 0.5:
        return 0.0
    if q < 0.5:
        return -_upper_quantile(q, df)
    return _upper_quantile(1.0 - q, df)  # exact: 1 - q is representable for q >= 1/2 (Sterbenz)


def _upper_quantile(p: float, df: float) -> float:
    """The x >= 0 with S(x) = P(T > x) = p, for 0 < p < 1/2."""

    def sf(x: float) -> float:
        return 0.5 * _t_tail2(x, df)

    lo, hi = 0.0, 1.0
    while sf(hi) > p:  # S decreases: grow the bracket until S(hi) <= p
        lo, hi = hi, hi * 2.0
        if math.isinf(hi):
            return math.inf
    x = 0.5 * (lo + hi)
    for _ in range(500):
        f = sf(x) - p
        if f == 0.0:
            return x
        if f > 0.0:  # S(x) > p: the root is right of x
            lo = x
        else:
            hi = x
        pdf = _t_pdf(x, df)
        step = f / pdf if pdf > 0.0 else math.inf
        new = x + step
        if not lo < new < hi:
            # bisect, geometrically when the bracket spans decades (heavy tails, df < 1)
            new = math.sqrt(lo * hi) if lo > 0.0 and hi > 4.0 * lo else 0.5 * (lo + hi)
        if abs(new - x) <= 1e-12 * max(abs(new), 1e-300) or hi - lo <= 1e-12 * hi:
            return new
        x = new
    return x


# ---------------------------------------------------------------------------------------------------------
# Intervals, paired differences, verdicts
# ---------------------------------------------------------------------------------------------------------


def _floats(values: Sequence[float], name: str) -> list[float]:
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{name} must be a sequence of numbers, got a string")
    out = [float(v) for v in values]
    if any(math.isnan(v) for v in out):
        raise ValueError(f"{name} contains NaN; leave missing values out instead")
    return out


def _mean_std(xs: list[float]) -> tuple[float, float | None]:
    n = len(xs)
    mean = math.fsum(xs) / n
    # sample standard deviation, ddof = 1: s = sqrt(sum (x_i - mean)^2 / (n - 1)); two-pass for accuracy
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1)) if n >= 2 else None
    return mean, std


def _check_confidence(confidence: float) -> float:
    confidence = float(confidence)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return confidence


@dataclass(frozen=True)
class Description:
    """Mean and Student-t interval of one metric over seeds (see :func:`describe`).

    ``missing`` counts the seeds that ran but have no usable value (the analysis fills it in); ``note`` says
    why the spread is unknown when there are fewer than 2 values."""

    n: int
    mean: float | None
    std: float | None
    ci_low: float | None
    ci_high: float | None
    half_width: float | None
    note: str | None = None
    missing: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class PairedDifference:
    """Paired comparison treatment - baseline over seeds (see :func:`paired`)."""

    n: int
    mean_diff: float | None
    std_diff: float | None
    ci_low: float | None
    ci_high: float | None
    t: float | None
    p_value: float | None
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        """``{"n", "mean_diff", "std_diff", "ci_low", "ci_high", "t", "p_value", "verdict"}``."""
        return dataclasses.asdict(self)

    @property
    def half_width(self) -> float | None:
        """Half the width of the (symmetric) interval; None without one."""
        if self.ci_low is None or self.ci_high is None:
            return None
        return (self.ci_high - self.ci_low) / 2


def describe(values: Sequence[float], confidence: float = 0.95) -> Description:
    """Mean and Student-t confidence interval over seeds:

        mean +- t_{(1+c)/2, n-1} * s / sqrt(n),   s the sample standard deviation (ddof = 1).

    With fewer than 2 values the spread is unknown, so std and the interval are None (never an invented
    number) and ``note`` says why."""
    confidence = _check_confidence(confidence)
    xs = _floats(values, "values")
    n = len(xs)
    if n == 0:
        return Description(0, None, None, None, None, None, note="no values")
    mean, std = _mean_std(xs)
    if std is None:
        return Description(n, mean, None, None, None, None, note="interval needs at least 2 seeds")
    half = t_ppf((1.0 + confidence) / 2.0, n - 1) * std / math.sqrt(n)
    return Description(n, mean, std, mean - half, mean + half, half)


def _verdict(ci_low: float, ci_high: float, higher_is_better: bool) -> str:
    # the interval of the difference treatment - baseline excludes 0: on the side where the metric improves
    # it helps, on the other side it hurts; an interval touching or containing 0 shows no clear effect
    if ci_low > 0.0:
        return "helps" if higher_is_better else "hurts"
    if ci_high < 0.0:
        return "hurts" if higher_is_better else "helps"
    return "no clear effect"


def paired(treatment: Sequence[float], baseline: Sequence[float], higher_is_better: bool,
           confidence: float = 0.95) -> PairedDifference:
    """Paired comparison over seeds: d_i = treatment_i - baseline_i (same seed i in both lists),

        mean_d +- t_{(1+c)/2, n-1} * s_d / sqrt(n),   t = mean_d / (s_d / sqrt(n)),
        p = P(|T_{n-1}| >= |t|) = I_{(n-1)/(n-1+t^2)}((n-1)/2, 1/2)   (two-sided paired t-test).

    Verdict: 'helps' when the interval excludes 0 on the improving side (above 0 when higher is better,
    below 0 otherwise), 'hurts' when it excludes 0 on the other side, else 'no clear effect'.

    Degenerate cases: with n < 2 the spread is unknown, so std/interval/t/p are None and the verdict is
    'cannot tell (1 seed)' (or '(0 seeds)'). When every difference is identical (s_d = 0): if they are all
    0, the interval is [0, 0], t = 0, p = 1.0, 'no clear effect'; otherwise the interval collapses to the
    mean, t = +-inf, p = 0.0 and the verdict follows the sign of the mean (the seeds agree exactly; whether
    that is meaningful is for the reader: it usually means a deterministic metric such as the parameter
    count)."""
    confidence = _check_confidence(confidence)
    tr, ba = _floats(treatment, "treatment"), _floats(baseline, "baseline")
    if len(tr) != len(ba):
        raise ValueError(f"paired needs one baseline value per treatment value (same seeds), "
                         f"got {len(tr)} and {len(ba)}")
    d = [a - b for a, b in zip(tr, ba)]
    n = len(d)
    if n < 2:
        return PairedDifference(n, d[0] if n else None, None, None, None, None, None,
                                f"cannot tell ({n} seed{'' if n == 1 else 's'})")
    mean, std = _mean_std(d)
    assert std is not None
    if std == 0.0:
        if mean == 0.0:
            return PairedDifference(n, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, "no clear effect")
        return PairedDifference(n, mean, 0.0, mean, mean, math.copysign(math.inf, mean), 0.0,
                                _verdict(mean, mean, higher_is_better))
    se = std / math.sqrt(n)
    half = t_ppf((1.0 + confidence) / 2.0, n - 1) * se
    t = mean / se
    p = _t_tail2(t, float(n - 1))
    lo, hi = mean - half, mean + half
    return PairedDifference(n, mean, std, lo, hi, t, p, _verdict(lo, hi, higher_is_better))
