"""What the lab measures: one :class:`MetricInfo` per metric, saying where a run summary holds it, which way is
better, how to show it and whether it enters the verdict.

The ablation analysis, the report, the cards and the verdict table all work from this description, so a task
that declares metrics of its own (a regression task's MSE, an RL task's episode return) only has to list
``MetricInfo`` objects: nothing downstream looks a metric up by a hard-coded name.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EXTRA_TEST_METRICS", "KINDS", "METRICS", "SOURCES", "MetricInfo", "extra_test_metric"]

#: Where a metric's value is read from in a run summary: an evaluation of the test split, of the validation
#: split, of the final trained weights (beside averaged ones), the run as a whole (time, size, steps), or a
#: further test set the data set defines (``"extra:<name>"``).
SOURCES: tuple[str, ...] = ("test", "val", "trained_weights", "run")

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

    @property
    def direction(self) -> str:
        """``"higher"`` or ``"lower"``: which way is better."""
        return "higher" if self.higher_is_better else "lower"

    @property
    def arrow(self) -> str:
        return "↑" if self.higher_is_better else "↓"


#: The metrics of a classification or per-token task, in report order.
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
