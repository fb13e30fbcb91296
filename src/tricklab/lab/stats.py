"""Statistics for ablations: Student-t intervals over seeds, paired seed-by-seed differences against the
baseline, the verdict rule, and the equal-wall-clock comparison. Pure Python (``math`` only): scipy is a
test oracle, not a run-time dependency. The formulas and references are in ``docs/lab-statistics.md``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tricklab.lab.store import Store

__all__ = [
    "METRICS", "ablation_summary", "describe", "metric_value", "paired", "t_cdf", "t_ppf", "value_at_time",
]

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


def describe(values: Sequence[float], confidence: float = 0.95) -> dict:
    """Mean and Student-t confidence interval over seeds:

        mean +- t_{(1+c)/2, n-1} * s / sqrt(n),   s the sample standard deviation (ddof = 1).

    Returns ``{"n", "mean", "std", "ci_low", "ci_high", "half_width"}``; with fewer than 2 values the spread
    is unknown, so std and the interval are None (never an invented number) and ``"note"`` says why."""
    confidence = _check_confidence(confidence)
    xs = _floats(values, "values")
    n = len(xs)
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "ci_low": None, "ci_high": None, "half_width": None,
                "note": "no values"}
    mean, std = _mean_std(xs)
    if std is None:
        return {"n": n, "mean": mean, "std": None, "ci_low": None, "ci_high": None, "half_width": None,
                "note": "interval needs at least 2 seeds"}
    half = t_ppf((1.0 + confidence) / 2.0, n - 1) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half, "half_width": half}


def _verdict(ci_low: float, ci_high: float, higher_is_better: bool) -> str:
    # the interval of the difference treatment - baseline excludes 0: on the side where the metric improves
    # it helps, on the other side it hurts; an interval touching or containing 0 shows no clear effect
    if ci_low > 0.0:
        return "helps" if higher_is_better else "hurts"
    if ci_high < 0.0:
        return "hurts" if higher_is_better else "helps"
    return "no clear effect"


def paired(treatment: Sequence[float], baseline: Sequence[float], higher_is_better: bool,
           confidence: float = 0.95) -> dict:
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
    count).

    Returns ``{"n", "mean_diff", "std_diff", "ci_low", "ci_high", "t", "p_value", "verdict"}``."""
    confidence = _check_confidence(confidence)
    tr, ba = _floats(treatment, "treatment"), _floats(baseline, "baseline")
    if len(tr) != len(ba):
        raise ValueError(f"paired needs one baseline value per treatment value (same seeds), "
                         f"got {len(tr)} and {len(ba)}")
    d = [a - b for a, b in zip(tr, ba)]
    n = len(d)
    if n < 2:
        return {"n": n, "mean_diff": d[0] if n else None, "std_diff": None, "ci_low": None, "ci_high": None,
                "t": None, "p_value": None, "verdict": f"cannot tell ({n} seed{'' if n == 1 else 's'})"}
    mean, std = _mean_std(d)
    assert std is not None
    if std == 0.0:
        if mean == 0.0:
            return {"n": n, "mean_diff": 0.0, "std_diff": 0.0, "ci_low": 0.0, "ci_high": 0.0, "t": 0.0,
                    "p_value": 1.0, "verdict": "no clear effect"}
        return {"n": n, "mean_diff": mean, "std_diff": 0.0, "ci_low": mean, "ci_high": mean,
                "t": math.copysign(math.inf, mean), "p_value": 0.0,
                "verdict": _verdict(mean, mean, higher_is_better)}
    se = std / math.sqrt(n)
    half = t_ppf((1.0 + confidence) / 2.0, n - 1) * se
    t = mean / se
    p = _t_tail2(t, float(n - 1))
    lo, hi = mean - half, mean + half
    return {"n": n, "mean_diff": mean, "std_diff": std, "ci_low": lo, "ci_high": hi, "t": t, "p_value": p,
            "verdict": _verdict(lo, hi, higher_is_better)}


# ---------------------------------------------------------------------------------------------------------
# Metrics of a run
# ---------------------------------------------------------------------------------------------------------

# fmt is a format spec for format(value, fmt)
METRICS: list[dict[str, Any]] = [
    {"key": "accuracy", "label": "Test accuracy", "higher_is_better": True, "fmt": ".4f"},
    {"key": "macro_f1", "label": "Test macro F1", "higher_is_better": True, "fmt": ".4f"},
    {"key": "nll", "label": "Test NLL", "higher_is_better": False, "fmt": ".4f"},
    {"key": "ece", "label": "Test ECE", "higher_is_better": False, "fmt": ".4f"},
    {"key": "brier", "label": "Test Brier score", "higher_is_better": False, "fmt": ".4f"},
    {"key": "train_seconds", "label": "Training time (s)", "higher_is_better": False, "fmt": ".2f"},
    {"key": "latency_ms", "label": "Inference latency, median (ms)", "higher_is_better": False, "fmt": ".3f"},
    {"key": "parameters", "label": "Parameters", "higher_is_better": False, "fmt": ",.0f"},
    {"key": "model_size_bytes", "label": "Model size (bytes)", "higher_is_better": False, "fmt": ",.0f"},
    {"key": "steps_to_target", "label": "Steps to target accuracy", "higher_is_better": False, "fmt": ",.0f"},
    # per-token tasks only (language models): bits per token, nll / ln 2
    {"key": "bpc", "label": "Test bits per token (per character for text)", "higher_is_better": False, "fmt": ".4f", "optional": True},
]

#: metrics on a data set's further test sets (summary["extra_tests"][name]), keyed "extra:<name>:<metric>"
EXTRA_METRICS: tuple[str, ...] = ("accuracy",)

# where each metric sits in a run's summary.json (see tricklab.lab.runner.run)
_PATHS: dict[str, tuple[str, ...]] = {
    "accuracy": ("test", "accuracy"),
    "macro_f1": ("test", "macro_f1"),
    "nll": ("test", "nll"),
    "ece": ("test", "ece"),
    "brier": ("test", "brier"),
    "train_seconds": ("train_seconds",),
    "latency_ms": ("inference_latency", "median_ms"),
    "parameters": ("parameters",),
    "model_size_bytes": ("model_size_bytes",),
    "steps_to_target": ("convergence", "step"),
    "bpc": ("test", "bpc"),
}


def metric_value(summary: Mapping[str, Any], key: str) -> float | None:
    """The value of metric ``key`` (one of :data:`METRICS`) in a run's summary.json dict; None when the run
    does not have it (e.g. ``steps_to_target`` when the target accuracy was never reached)."""
    if key.startswith("extra:"):
        path: tuple[str, ...] = ("extra_tests", *key.split(":")[1:])
    elif key not in _PATHS:
        raise KeyError(f"unknown metric {key!r}; known: {', '.join(_PATHS)}")
    else:
        path = _PATHS[key]
    node: Any = summary
    for part in path:
        if not isinstance(node, Mapping) or node.get(part) is None:
            return None
        node = node[part]
    if isinstance(node, bool) or not isinstance(node, (int, float)):
        return None
    return float(node)


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


# ---------------------------------------------------------------------------------------------------------
# The ablation summary
# ---------------------------------------------------------------------------------------------------------


def _usable(x: float | None) -> bool:
    # a NaN metric (e.g. the NLL of a diverged run) cannot enter a mean; it is counted as missing
    return x is not None and not math.isnan(x)


def ablation_summary(store: Store, baseline: str = "baseline", confidence: float = 0.95) -> dict:
    """Everything a report needs, read from the 'done' runs of ``store`` (see docs/lab-statistics.md).

    Runs are matched by seed; when a (variant, seed) has several done runs the newest (highest id) is used.
    Missing values (a metric absent from a summary or NaN, the target never reached) are left out: ``n`` counts
    the seeds that have the value and ``"missing"`` the done seeds that do not.
    """
    done = store.runs(status="done")
    by_variant: dict[str, dict[int, Any]] = {}
    first_seen: list[str] = []
    for r in done:
        if r.variant not in by_variant:
            by_variant[r.variant] = {}
            first_seen.append(r.variant)
        by_variant[r.variant][r.seed] = r  # ordered by id: the newest run of a seed wins

    listed = store.get_meta("variants") or []
    variants = [baseline]
    for v in list(listed) + first_seen:
        if v not in variants:
            variants.append(v)

    all_runs = [r for runs in by_variant.values() for r in runs.values()]
    # optional metrics only where some run has them (bits per character for language models); further test
    # sets (e.g. longer sequences) become metrics of their own
    metrics = [dict(m) for m in METRICS
               if not m.get("optional") or any(metric_value(r.summary or {}, m["key"]) is not None for r in all_runs)]
    # natural order, so len64 comes before len128
    extra_names = sorted({n for r in all_runs for n in ((r.summary or {}).get("extra_tests") or {})},
                         key=lambda n: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", n)])
    for name in extra_names:
        for k in EXTRA_METRICS:
            metrics.append({"key": f"extra:{name}:{k}", "label": f"{name} {k}", "higher_is_better": True,
                            "fmt": ".4f"})
    seeds = {v: sorted(by_variant.get(v, {})) for v in variants}
    base_runs = by_variant.get(baseline, {})

    per_variant: dict[str, dict[str, dict]] = {}
    for v in variants:
        runs = by_variant.get(v, {})
        per_variant[v] = {}
        for m in metrics:
            vals = [metric_value(runs[s].summary or {}, m["key"]) for s in seeds[v]]
            present = [x for x in vals if _usable(x)]
            per_variant[v][m["key"]] = {**describe(present, confidence), "missing": len(vals) - len(present)}

    histories: dict[int, list[dict]] = {}

    def history(run: Any) -> list[dict]:
        if run.id not in histories:
            histories[run.id] = store.steps(run.id)
        return histories[run.id]

    paired_out: dict[str, dict[str, dict]] = {}
    equal_time: dict[str, dict] = {}
    for v in variants:
        if v == baseline:
            continue
        runs = by_variant.get(v, {})
        common = [s for s in seeds[v] if s in base_runs]
        paired_out[v] = {}
        for m in metrics:
            tr: list[float] = []
            ba: list[float] = []
            for s in common:
                a = metric_value(runs[s].summary or {}, m["key"])
                b = metric_value(base_runs[s].summary or {}, m["key"])
                if _usable(a) and _usable(b):
                    tr.append(a)
                    ba.append(b)
            paired_out[v][m["key"]] = paired(tr, ba, m["higher_is_better"], confidence)

        # equal wall-clock time: per seed T = min(train_seconds of both runs); compare eval accuracy at T
        t_list: list[float] = []
        used: list[int] = []
        tr, ba = [], []
        for s in common:
            ta = metric_value(runs[s].summary or {}, "train_seconds")
            tb = metric_value(base_runs[s].summary or {}, "train_seconds")
            if ta is None or tb is None:
                continue
            t = min(ta, tb)
            a = value_at_time(history(runs[s]), t)
            b = value_at_time(history(base_runs[s]), t)
            if a is None or b is None:
                continue
            t_list.append(t)
            used.append(s)
            tr.append(a)
            ba.append(b)
        equal_time[v] = {"seconds": t_list, "seeds": used, "key": "eval_accuracy",
                         **paired(tr, ba, True, confidence)}

    per_class: dict[str, list[float] | None] = {}
    reliability: dict[str, dict | None] = {}
    samples: dict[str, dict] = {}  # language models: the first seed's text sample
    diagnostics: dict[str, dict] = {}  # the diagnostics technique's records, first seed
    for v in variants:
        runs = by_variant.get(v, {})
        lists = [((runs[s].summary or {}).get("test") or {}).get("per_class_f1") for s in seeds[v]]
        lists = [x for x in lists if x is not None]
        if lists:
            if len({len(x) for x in lists}) != 1:
                raise ValueError(f"variant {v!r}: per-class F1 lists of different lengths across seeds")
            per_class[v] = [math.fsum(float(x[i]) for x in lists) / len(lists) for i in range(len(lists[0]))]
        else:
            per_class[v] = None
        first = runs[seeds[v][0]] if seeds[v] else None
        reliability[v] = ((first.summary or {}).get("test") or {}).get("reliability") if first else None
        if first is not None and (first.summary or {}).get("sample"):
            samples[v] = {"seed": seeds[v][0], **first.summary["sample"]}
        if first is not None and (first.summary or {}).get("diagnostics"):
            diagnostics[v] = {"seed": seeds[v][0], "records": first.summary["diagnostics"]}

    # weight averaging (EMA, SWA): the averaged weights against the same run's final trained weights, seed by
    # seed; only runs whose summary holds both (the runner records "test_trained_weights" for them)
    averaging: dict[str, dict[str, dict]] = {}
    for v in variants:
        runs = by_variant.get(v, {})
        pairs = [((runs[s].summary or {}).get("test") or {}, (runs[s].summary or {}).get("test_trained_weights"))
                 for s in seeds[v]]
        pairs = [(a, b) for a, b in pairs if b]
        if not pairs:
            continue
        averaging[v] = {}
        for m in metrics:
            if m["key"] not in ("accuracy", "macro_f1", "nll", "ece", "brier"):
                continue
            av = [float(a[m["key"]]) for a, b in pairs if _usable(a.get(m["key"])) and _usable(b.get(m["key"]))]
            tw = [float(b[m["key"]]) for a, b in pairs if _usable(a.get(m["key"])) and _usable(b.get(m["key"]))]
            averaging[v][m["key"]] = paired(av, tw, m["higher_is_better"], confidence)

    return {"variants": variants, "metrics": metrics, "seeds": seeds, "per_variant": per_variant,
            "paired": paired_out, "equal_time": equal_time, "per_class_f1": per_class,
            "reliability": reliability, "averaging": averaging, "samples": samples,
            "diagnostics": diagnostics}
