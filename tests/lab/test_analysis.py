"""The ablation summary read from a store: matching by seed, missing values, variant order, paired
differences, the equal-time comparison, per-class F1 and reliability, checked against numbers computed by
hand with the closed forms of the t distribution for df = 2: t_{q,2} = a sqrt(2 / (1 - a^2)), a = 2q - 1,
and the two-sided p = 1 - |t| / sqrt(2 + t^2)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tricklab.lab.analysis import StoredRun, ablation_summary, summarize, value_at_time
from tricklab.lab.metrics import METRICS, MetricInfo
from tricklab.lab.stats import holm
from tricklab.lab.store import Store
from tricklab.lab.summary import Convergence, Cost, Evaluation, Latency, Reliability, RunSummary


def _t2_quantile(q: float) -> float:
    a = 2 * q - 1
    return a * math.sqrt(2 / (1 - a * a))


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
    test = Evaluation({"accuracy": acc, "macro_f1": acc - 0.01, "nll": nll, "ece": ece, "brier": 0.5},
                      per_class_f1=f1, reliability=Reliability([0.0, 0.5, 1.0], [], [], [int(acc * 100), 1]))
    run = RunSummary(train_seconds=seconds, test=test, cost=Cost(5210, size, Latency(5.0)),
                     convergence=None if conv is None else Convergence(conv))
    return run.to_dict()  # the store holds summary.json dicts


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

    assert out.variants == ["baseline", "mixup", "ema"]
    # bits per character is listed only when some run has it (language models); these runs are classifiers;
    # the energy estimate and the sparsity metrics likewise (these hand-made summaries have none)
    assert out.metrics == [m for m in METRICS if m.key not in ("bpc", "energy_wh", "co2e_g", "nonzero_parameters",
                                                                "weight_sparsity")]
    assert out.seeds == {"baseline": [0, 1, 2], "mixup": [0, 1], "ema": [0, 1, 2]}

    t2 = _t2_quantile(0.975)  # t_{0.975, 2} = 4.302652729749464 (closed form, df = 2)
    acc = out.per_variant["baseline"]["accuracy"]
    # mean 0.82, sd 0.02, half width = t2 * 0.02 / sqrt(3)
    assert acc.n == 3 and acc.mean == pytest.approx(0.82) and acc.std == pytest.approx(0.02)
    assert acc.half_width == pytest.approx(t2 * 0.02 / math.sqrt(3), rel=1e-9)
    assert acc.missing == 0
    # steps_to_target: seed 0 never reached the target -> left out, counted as missing
    stt = out.per_variant["baseline"]["steps_to_target"]
    assert (stt.n, stt.mean, stt.missing, stt.ci_low) == (2, 300.0, 1, 300.0)
    assert out.per_variant["mixup"]["steps_to_target"].n == 0

    # ema - baseline accuracy: d = (0.03, 0.02, 0.04): mean 0.03, sd 0.01, t = 0.03 / (0.01 / sqrt 3),
    # p = 1 - t / sqrt(2 + t^2) (df = 2), CI 0.03 +- t2 * 0.01 / sqrt(3) = [0.0052, 0.0548] -> helps
    pa = out.paired["ema"]["accuracy"]
    t = 0.03 / (0.01 / math.sqrt(3))
    assert pa.n == 3 and pa.mean_diff == pytest.approx(0.03) and pa.std_diff == pytest.approx(0.01)
    assert pa.t == pytest.approx(t, rel=1e-9)
    assert pa.p_value == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-9)
    assert pa.ci_low == pytest.approx(0.03 - t2 * 0.01 / math.sqrt(3), rel=1e-9)
    assert pa.ci_low > 0  # the unadjusted interval excludes 0 ...
    # NLL (lower is better): d = (-0.1, -0.08, -0.12), CI = -0.1 +- t2 * 0.02 / sqrt 3 = [-0.150, -0.050]
    pn = out.paired["ema"]["nll"]
    assert pn.mean_diff == pytest.approx(-0.1) and pn.ci_high == pytest.approx(
        -0.1 + t2 * 0.02 / math.sqrt(3), rel=1e-9)
    # ... but the verdicts are Holm-adjusted over the family of tested comparisons: accuracy, macro-F1, NLL and
    # ECE of ema (3 seeds) and of mixup (2 seeds); Brier and latency are identical in every run, training
    # time, model size and steps to target differ by the same amount on every seed (nothing to test), and
    # parameters are a deterministic count: 8 comparisons
    family = [(v, k) for v in ("mixup", "ema") for k in ("accuracy", "macro_f1", "nll", "ece")]
    assert out.family_size == len(family)
    adjusted = holm([out.paired[v][k].p_value for v, k in family])
    for (v, k), p_holm in zip(family, adjusted):
        assert out.paired[v][k].p_holm == pytest.approx(p_holm, rel=1e-12), (v, k)
    # ECE went up, d = (0.03, 0.025, 0.035): t = 0.03 / (0.005 / sqrt 3), raw p = 1 - t / sqrt(2 + t^2) ~ 0.0091,
    # the smallest of the 8: Holm p = 8 * 0.0091 ~ 0.073 > 0.05, so no comparison of the table is an effect
    pe = out.paired["ema"]["ece"]
    t_ece = 0.03 / (0.005 / math.sqrt(3))
    assert pe.p_value == pytest.approx(1 - t_ece / math.sqrt(2 + t_ece ** 2), rel=1e-9)
    assert pe.p_holm == pytest.approx(8 * pe.p_value, rel=1e-9) and pe.ci_low > 0
    assert pe.verdict == "no clear effect" and "Holm" in pe.note
    assert {out.paired[v][k].verdict for v, k in family} == {"no clear effect"}
    # parameters identical -> "identical" (no test, no p-value); model size +432 bytes on every seed -> hurts
    assert (out.paired["ema"]["parameters"].p_value, out.paired["ema"]["parameters"].verdict) == (None, "identical")
    ps = out.paired["ema"]["model_size_bytes"]
    assert (ps.mean_diff, ps.p_value, ps.verdict) == (432.0, 0.0, "hurts")
    # timing metrics without a control run have no noise floor: no verdict
    assert out.paired["ema"]["train_seconds"].verdict == "not judged" and out.noise == {}
    assert out.paired["ema"]["latency_ms"].verdict == "identical"
    # steps to target: only seeds 1 and 2 have it in both: d = (200 - 300, 200 - 300)
    assert out.paired["ema"]["steps_to_target"].n == 2
    assert out.paired["ema"]["steps_to_target"].mean_diff == -100.0
    # mixup: seeds 0, 1 only (seed 2 is still running): d = (0.01, -0.02)
    pm = out.paired["mixup"]["accuracy"]
    assert pm.n == 2 and pm.mean_diff == pytest.approx(-0.005) and pm.verdict == "no clear effect"
    assert "baseline" not in out.paired

    # equal time: ema trained 4.9999996 s, the baseline 10 s -> T = 4.9999996 per seed; ema's last eval
    # (logged at 5.0 after rounding) vs the baseline's eval at 4.0 s: d = (0.10, 0.09, 0.11)
    et = out.equal_time["ema"]
    assert et.seconds == [4.9999996] * 3 and et.seeds == [0, 1, 2]
    d = et.difference
    assert d.mean_diff == pytest.approx(0.10) and d.std_diff == pytest.approx(0.01)
    assert d.ci_low == pytest.approx(0.10 - t2 * 0.01 / math.sqrt(3), rel=1e-9)
    assert d.verdict == "helps" and d.p_holm == d.p_value  # its own family: the one comparison that was formed
    # mixup trained longer (12 s) -> T = 10 s, mixup's eval at 12 s is too late: no pair can be formed
    assert out.equal_time["mixup"].difference.n == 0 and out.equal_time["mixup"].seeds == []

    # per-class F1 averaged over seeds: baseline [(0.5+0.6+0.7)/3, (0.7+0.8+0.9)/3]
    assert out.per_class_f1["baseline"] == pytest.approx([0.6, 0.8])
    assert out.per_class_f1["ema"] == pytest.approx([0.7, 0.9])
    # reliability of the first (lowest) seed
    assert out.reliability["baseline"].count == [80, 1]
    assert out.reliability["ema"].count == [83, 1]


def test_ablation_summary_variant_order_without_meta(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite") as store:
        for key, variant in [("z/0", "zeta"), ("b/0", "base"), ("a/0", "alpha")]:
            store.finish(store.claim(key, variant, "h", 0, {}), {}, _summary(0.5, 1.0, 0.1, 1.0, 10, [0.5], None),
                         [])
        # a rerun of zeta seed 0 under another run key (e.g. a changed recipe): the newest done run is used
        store.finish(store.claim("z/0-rerun", "zeta", "h2", 0, {}), {},
                     _summary(0.7, 1.0, 0.1, 1.0, 10, [0.5], None), [])
        out = ablation_summary(store, baseline="base")
    assert out.variants == ["base", "zeta", "alpha"]  # baseline first, then first-seen order
    assert out.seeds["zeta"] == [0] and out.per_variant["zeta"]["accuracy"].mean == 0.7
    assert out.paired["zeta"]["accuracy"].verdict == "cannot tell (1 seed)"
    assert out.equal_time["zeta"].difference.n == 0  # no history -> nothing evaluated at any time


# -- pure functions on runs built in memory --------------------------------------------------------------------


def _run(rid: int, variant: str, seed: int, test: dict[str, float], trained: dict[str, float] | None = None,
         seconds: float = 1.0) -> StoredRun:
    summary = RunSummary(train_seconds=seconds, test=Evaluation(test),
                         test_trained_weights=None if trained is None else Evaluation(trained))
    return StoredRun(rid, variant, seed, summary, history=[])


def test_averaged_weights_against_final_weights_by_seed() -> None:
    # EMA runs record both; the difference is paired within each run: d = (0.02, 0.021, 0.019) for accuracy,
    # mean 0.02, sd 0.001
    runs = [_run(i, "baseline", i, {"accuracy": 0.8, "nll": 1.0}) for i in range(3)]
    runs += [_run(10 + i, "ema", i, {"accuracy": a, "nll": 1.0}, {"accuracy": a - d, "nll": 1.0})
             for i, (a, d) in enumerate([(0.85, 0.02), (0.86, 0.021), (0.87, 0.019)])]
    out = summarize(runs)
    assert set(out.averaging) == {"ema"}  # the baseline recorded no trained weights
    acc = out.averaging["ema"]["accuracy"]
    t2 = _t2_quantile(0.975)
    assert acc.n == 3 and acc.mean_diff == pytest.approx(0.02)
    assert acc.ci_low == pytest.approx(0.02 - t2 * 0.001 / math.sqrt(3), rel=1e-9) and acc.verdict == "helps"
    assert out.averaging["ema"]["nll"].verdict == "identical"  # d = 0 on every seed
    assert "steps_to_target" not in out.averaging["ema"]  # run-level metrics are not averaged weights


def test_a_declared_lower_is_better_metric_and_one_shown_but_not_judged() -> None:
    # a task-declared metric (MSE, lower is better) reads from the test evaluation like accuracy does
    mse = MetricInfo("mse", "Test MSE", higher_is_better=False, unit="squared units")
    shown = MetricInfo("r2", "Test R^2", higher_is_better=True, judged=False)
    runs = [_run(i, "baseline", i, {"mse": 1.0 + 0.01 * i, "r2": 0.5}) for i in range(3)]
    runs += [_run(10 + i, "wd", i, {"mse": 0.8 + 0.01 * i + 0.001 * i * i, "r2": 0.6 + 0.01 * i}) for i in range(3)]
    from tricklab.lab import analysis

    by_variant = analysis.latest_by_seed(runs)
    d = analysis.paired_metric(by_variant["wd"], by_variant["baseline"], mse, 0.95)
    # d = (-0.2, -0.199, -0.196): a lower MSE helps
    assert d.mean_diff == pytest.approx((-0.2 - 0.199 - 0.196) / 3) and d.verdict == "helps"
    r2 = analysis.paired_metric(by_variant["wd"], by_variant["baseline"], shown, 0.95)
    assert r2.verdict == "not judged" and r2.ci_low is not None and r2.ci_low > 0  # interval kept, no verdict


def test_newest_run_of_a_seed_wins_and_nan_counts_as_missing() -> None:
    runs = [_run(1, "baseline", 0, {"accuracy": 0.5, "nll": math.nan}), _run(2, "baseline", 0, {"accuracy": 0.7}),
            _run(3, "baseline", 1, {"accuracy": 0.9, "nll": math.nan})]
    out = summarize(runs)
    assert out.per_variant["baseline"]["accuracy"].mean == pytest.approx(0.8)  # (0.7 + 0.9) / 2
    nll = out.per_variant["baseline"]["nll"]
    assert (nll.n, nll.missing, nll.mean) == (0, 2, None)
