"""What the lab measures: one :class:`MetricInfo` per metric, saying where a run summary holds it, which way is
better, how to show it and whether it enters the verdict.

The ablation analysis, the report, the cards and the verdict table all work from this description, so a task
that declares metrics of its own (a regression task's MSE, an RL task's episode return) only has to list
``MetricInfo`` objects: nothing downstream looks a metric up by a hard-coded name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["BINARY_METRICS", "EXTRA_TEST_METRICS", "KINDS", "METRICS", "MULTILABEL_METRICS", "REGRESSION_METRICS",
           "RUN_METRICS", "SOURCES", "MetricInfo", "as_metric_info", "extra_test_metric", "metrics_from_dicts",
           "explain_metric", "primary_metric", "robust_metric"]

#: Where a metric's value is read from in a run summary: an evaluation of the test split, of the validation
#: split, of the final trained weights (beside averaged ones), the run as a whole (time, size, steps), the
#: robustness evaluation of the test split (attacks, noise), the faithfulness of attributions (``explain``),
#: or a further test set the data set defines (``"extra:<name>"``).
SOURCES: tuple[str, ...] = ("test", "val", "trained_weights", "run", "robust", "explain")

#: What a metric measures. ``timing`` metrics depend on the machine's load (they may earn a verdict only when
#: the difference exceeds the noise between identical runs); ``size`` and ``steps`` are deterministic counts.
KINDS: tuple[str, ...] = ("quality", "timing", "size", "steps")


@dataclass(frozen=True)
class MetricInfo:
    """One metric of an ablation.

    ``key`` identifies it in summaries, cards and reports (``"accuracy"``, ``"extra:len64:accuracy"``);
    ``name`` is its name inside ``source`` (the key of an evaluation dict, or a run-level metric of
    :meth:`tricklab.lab.summary.RunSummary.run_metrics`). ``fmt`` is a ``format()`` spec for its values.
    ``judged=False`` shows the metric with its interval but gives it no verdict. ``optional`` metrics are
    listed only when some run of the ablation has them (bits per token exists only for per-token tasks).
    """

    key: str
    label: str
    higher_is_better: bool
    fmt: str = ".4f"
    unit: str = ""
    source: str = "test"
    name: str = ""
    kind: str = "quality"
    judged: bool = True
    optional: bool = False

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", self.key)
        if self.source not in SOURCES and not self.source.startswith("extra:"):
            raise ValueError(f"metric {self.key!r}: source must be one of {SOURCES} or 'extra:<name>', "
                             f"got {self.source!r}")
        if self.kind not in KINDS:
            raise ValueError(f"metric {self.key!r}: kind must be one of {KINDS}, got {self.kind!r}")

    def to_dict(self) -> dict[str, Any]:
        """The JSON form a run summary records its declared metrics in."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MetricInfo:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def direction(self) -> str:
        """``"higher"`` or ``"lower"``: which way is better."""
        return "higher" if self.higher_is_better else "lower"

    @property
    def arrow(self) -> str:
        return "↑" if self.higher_is_better else "↓"


#: The metrics of a classification or per-token task, in report order (the first is the headline metric).
METRICS: tuple[MetricInfo, ...] = (
    MetricInfo("accuracy", "Test accuracy", True),
    MetricInfo("macro_f1", "Test macro F1", True),
    MetricInfo("nll", "Test NLL", False),
    MetricInfo("ece", "Test ECE", False),
    MetricInfo("brier", "Test Brier score", False),
    MetricInfo("train_seconds", "Training time (s)", False, ".2f", unit="s", source="run", kind="timing"),
    MetricInfo("latency_ms", "Inference latency, median (ms)", False, ".3f", unit="ms", source="run",
               kind="timing"),
    MetricInfo("parameters", "Parameters", False, ",.0f", source="run", kind="size"),
    MetricInfo("model_size_bytes", "Model size (bytes)", False, ",.0f", unit="bytes", source="run", kind="size"),
    MetricInfo("steps_to_target", "Steps to target accuracy", False, ",.0f", unit="steps", source="run",
               kind="steps"),
    # the training's energy and carbon estimate (tricklab.evaluate.energy, CPU time x a stated power per core):
    # shown with its interval, no verdict (it follows training time); absent from runs stored before it existed
    MetricInfo("energy_wh", "Training energy (Wh, estimate)", False, ".4f", unit="Wh", source="run", kind="timing",
               judged=False, optional=True),
    MetricInfo("co2e_g", "Training carbon (g CO2e, estimate)", False, ".4f", unit="g", source="run", kind="timing",
               judged=False, optional=True),
    # how sparse the trained model is (pruning): its parameters that are not exactly zero, and the fraction of
    # zero weights in its linear/conv layers (a description, no verdict); absent from runs stored before them
    MetricInfo("nonzero_parameters", "Non-zero parameters", False, ",.0f", source="run", kind="size",
               optional=True),
    MetricInfo("weight_sparsity", "Weight sparsity (fraction of zero linear/conv weights)", True, ".3f",
               source="run", kind="size", judged=False, optional=True),
    # per-token tasks only (language models): bits per token, nll / ln 2
    MetricInfo("bpc", "Test bits per token (per character for text)", False, optional=True),
)

#: Metrics of a data set's further test sets (``summary.extra_tests[name]``), one per set and name here.
EXTRA_TEST_METRICS: tuple[str, ...] = ("accuracy",)


def extra_test_metric(test_set: str, base: MetricInfo) -> MetricInfo:
    """``base`` (a test-split metric) measured on the further test set ``test_set`` (e.g. sequences longer
    than in training), keyed ``"extra:<test_set>:<name>"``."""
    return MetricInfo(f"extra:{test_set}:{base.name}", f"{test_set} {base.name}", base.higher_is_better, base.fmt,
                      unit=base.unit, source=f"extra:{test_set}", name=base.name, kind=base.kind, judged=base.judged)


#: What every trained model is measured on besides its task's quality metrics (time, latency, size).
RUN_METRICS: tuple[MetricInfo, ...] = tuple(m for m in METRICS if m.key in (
    "train_seconds", "latency_ms", "parameters", "model_size_bytes", "energy_wh", "co2e_g", "nonzero_parameters",
    "weight_sparsity"))
_BY_KEY = {m.key: m for m in METRICS}

#: Binary classification (two logits, class 1 positive): the positive class's F1 first, then ranking and
#: the usual classification metrics (accuracy misleads on imbalanced data, so it is not the headline).
BINARY_METRICS: tuple[MetricInfo, ...] = (
    MetricInfo("f1", "Test F1 (positive class)", True),
    MetricInfo("auroc", "Test ROC AUC", True),
    MetricInfo("precision", "Test precision (positive class)", True),
    MetricInfo("recall", "Test recall (positive class)", True),
    _BY_KEY["accuracy"], _BY_KEY["macro_f1"], _BY_KEY["nll"], _BY_KEY["ece"], _BY_KEY["brier"],
    *RUN_METRICS, _BY_KEY["steps_to_target"],
)

#: Multi-label classification (one sigmoid per label).
MULTILABEL_METRICS: tuple[MetricInfo, ...] = (
    MetricInfo("micro_f1", "Test micro F1", True),
    MetricInfo("macro_f1", "Test macro F1 (over labels)", True),
    MetricInfo("subset_accuracy", "Test subset accuracy (exact label set)", True),
    MetricInfo("hamming_loss", "Test Hamming loss", False),
    MetricInfo("bce", "Test BCE", False),
    *RUN_METRICS,
)

#: Regression, in the target's own units (a standardised target is scaled back first).
REGRESSION_METRICS: tuple[MetricInfo, ...] = (
    MetricInfo("mse", "Test MSE", False, ".6g"),
    MetricInfo("rmse", "Test RMSE", False, ".6g"),
    MetricInfo("mae", "Test MAE", False, ".6g"),
    MetricInfo("r2", "Test R²", True),
    *RUN_METRICS,
)


def explain_metric(name: str, label: str, higher_is_better: bool) -> MetricInfo:
    """A faithfulness area of an attribution method (``integrated_gradients_deletion_auc``)."""
    return MetricInfo(f"explain:{name}", label, higher_is_better, source="explain", name=name)


def robust_metric(name: str, label: str) -> MetricInfo:
    """An accuracy measured by the robustness evaluation (``fgsm_accuracy``, ``noise_accuracy_0.1``)."""
    return MetricInfo(f"robust:{name}", label, True, source="robust", name=name)


_TIME_UNITS = frozenset({"s", "ms", "seconds"})


def as_metric_info(metric: Any) -> MetricInfo:
    """A :class:`MetricInfo` from itself or from a paradigm's declared metric (any object with ``key``,
    ``label``, ``higher_is_better`` and optionally ``unit``, ``verdict`` and ``fmt``, as
    ``tricklab.evaluate.declared.MetricSpec``); a metric in seconds or milliseconds is a timing metric."""
    if isinstance(metric, MetricInfo):
        return metric
    try:
        key, label, higher = metric.key, metric.label, metric.higher_is_better
    except AttributeError:
        raise TypeError(f"a declared metric needs key, label and higher_is_better, got {metric!r}") from None
    unit = getattr(metric, "unit", "") or ""
    return MetricInfo(key, label, bool(higher), getattr(metric, "fmt", ".4f"), unit=unit,
                      kind="timing" if unit in _TIME_UNITS else "quality",
                      judged=bool(getattr(metric, "verdict", True)))


def metrics_from_dicts(items: Iterable[Mapping[str, Any]]) -> tuple[MetricInfo, ...]:
    """Declared metrics as a run summary records them (:meth:`MetricInfo.to_dict`)."""
    return tuple(MetricInfo.from_dict(d) for d in items)


def primary_metric(metrics: Sequence[MetricInfo]) -> MetricInfo | None:
    """The headline metric of a list: its first judged quality metric of the test split (accuracy for a
    classifier, the MSE of a regression), or None."""
    return next((m for m in metrics if m.kind == "quality" and m.source == "test" and m.judged), None)
