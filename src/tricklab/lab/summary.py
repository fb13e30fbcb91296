"""The lab's data, typed: what one run measured (:class:`RunSummary`, written as ``summary.json`` and kept in the
store) and what an ablation found (:class:`AblationSummary`, read from the store by
:func:`tricklab.lab.analysis.ablation_summary`), with the setting it was measured in (:class:`AblationSetting`).

On disk the JSON keeps the layout it always had, so stores and cards written before these types existed still
read: every type has ``from_dict`` (lenient: keys that are missing in an old file become None) and
``to_dict`` (the exact layout the runner writes). Keys this version does not know are kept in ``other`` and
written back unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tricklab.lab.metrics import MetricInfo, metrics_from_dicts, primary_metric
from tricklab.lab.stats import Description, PairedDifference

__all__ = [
    "AblationSetting", "AblationSummary", "AttentionMaps", "Convergence", "Cost", "EqualTime", "Evaluation", "Latency",
    "NoiseFloor", "Reliability", "RunSummary", "SeededAttention", "SeededDetections", "SeededDiagnostics",
    "SeededImages", "SeededSample", "TextSample",
]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _opt(cls: Any, data: Any) -> Any:
    return None if data is None else cls.from_dict(data)


# ------------------------------------------------------------------------------------------------ one run
@dataclass(frozen=True)
class Reliability:
    """A reliability diagram (``tricklab.evaluate.reliability_diagram``): per confidence bin, the mean
    confidence and accuracy (None for an empty bin) and the number of samples."""

    bin_edges: list[float]
    confidence: list[float | None]
    accuracy: list[float | None]
    count: list[int]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Reliability:
        return cls(list(data.get("bin_edges") or []), list(data.get("confidence") or []),
                   list(data.get("accuracy") or []), list(data.get("count") or []))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_EVAL_STRUCTURED = ("per_class_f1", "confusion_matrix", "reliability")


@dataclass(frozen=True)
class Evaluation:
    """One evaluation of a model on one split: its scalar metrics by name (accuracy, macro_f1, nll, ece,
    brier, loss, bpc, or whatever the task's metric function returns) and the structured results."""

    values: dict[str, float | int | None]
    per_class_f1: list[float] | None = None
    confusion_matrix: list[list[int]] | None = None
    reliability: Reliability | None = None
    other: dict[str, Any] = field(default_factory=dict)

    def value(self, name: str) -> float | None:
        """The metric ``name`` as a float; None when absent or not a number."""
        v = self.values.get(name)
        return float(v) if _number(v) else None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Evaluation:
        values = {k: v for k, v in data.items() if k not in _EVAL_STRUCTURED and (v is None or _number(v))}
        other = {k: v for k, v in data.items() if k not in _EVAL_STRUCTURED and k not in values}
        return cls(values, data.get("per_class_f1"), data.get("confusion_matrix"),
                   _opt(Reliability, data.get("reliability")), other)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.values)
        for key in _EVAL_STRUCTURED:
            v = getattr(self, key)
            if v is not None:
                out[key] = v.to_dict() if isinstance(v, Reliability) else v
        out.update(self.other)
        return out


@dataclass(frozen=True)
class Latency:
    """Inference latency of one forward pass (``tricklab.evaluate.inference_latency``), milliseconds."""

    median_ms: float
    p90_ms: float | None = None
    mean_ms: float | None = None
    repeats: int | None = None
    batch_size: int | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Latency:
        return cls(data["median_ms"], data.get("p90_ms"), data.get("mean_ms"), data.get("repeats"),
                   data.get("batch_size"))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Cost:
    """What the trained model costs: parameters, bytes of its weights, inference latency, and how sparse it is:
    the parameters that are not exactly zero and the fraction of zero weights in its linear and convolution
    layers (``tricklab.compress.metrics``; None in summaries written before they were measured)."""

    parameters: int | None
    model_size_bytes: int | None
    inference_latency: Latency | None = None
    nonzero_parameters: int | None = None
    weight_sparsity: float | None = None


@dataclass(frozen=True)
class Convergence:
    """When the run reached its target accuracy: ``step`` (and ``seconds``) interpolated between the two
    evaluations around the crossing when ``interpolated`` (see :func:`tricklab.lab.runner.steps_to_target`);
    ``step_evaluated`` is the first evaluation at the target and ``resolution`` the steps between
    evaluations. Summaries written before interpolation have only ``step`` (an evaluation step)."""

    step: int | float
    seconds: float | None = None
    value: float | None = None
    step_evaluated: int | None = None
    interpolated: bool | None = None
    resolution: int | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Convergence:
        return cls(data["step"], data.get("seconds"), data.get("value"), data.get("step_evaluated"),
                   data.get("interpolated"), data.get("resolution"))

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        # a summary written without interpolation keeps its three keys
        return {k: v for k, v in out.items() if v is not None or k in ("step", "seconds", "value")}


@dataclass(frozen=True)
class TextSample:
    """A language model's seeded continuation of a prompt, shown rather than measured."""

    prompt: str
    text: str
    temperature: float
    top_k: int | None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TextSample:
        return cls(data.get("prompt", ""), data.get("text", ""), data.get("temperature"), data.get("top_k"))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class AttentionMaps:
    """Attention rollout (Abnar & Zuidema 2020) of a few test images, shown rather than measured: ``images``
    (N, H, W) (first channel, rounded), ``maps`` (N, gh, gw) (each sums to 1), true ``labels`` and the model's
    ``predictions``."""

    method: str
    images: list[list[list[float]]]
    maps: list[list[list[float]]]
    labels: list[int]
    predictions: list[int]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AttentionMaps:
        return cls(data.get("method", ""), data.get("images", []), data.get("maps", []), data.get("labels", []),
                   data.get("predictions", []))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# the keys summary.json has always had, in the order the runner writes them
_RUN_KEYS = ("task", "model", "seed", "recipe_hash", "steps", "epochs_completed", "stop_reason", "train_seconds",
             "wall_seconds_this_process", "nonfinite_steps", "test", "val", "extra_tests", "test_trained_weights",
             "parameters", "model_size_bytes", "inference_latency", "convergence", "target_accuracy",
             "diagnostics", "sample", "task_kind", "metrics", "robustness", "extras", "energy", "faithfulness",
             "attention", "nonzero_parameters", "weight_sparsity")


@dataclass(frozen=True)
class RunSummary:
    """Everything one run measured (``run_dir/summary.json``, and the ``summary`` of its store row).

    ``cost``, ``convergence`` and ``target_accuracy`` are measured by the main process only (None in the
    other processes of a distributed run). ``diagnostics`` holds the records of the diagnostics technique
    when it ran; ``sample`` a language model's text sample.

    ``task_kind`` and ``metrics`` say what the run was and which metrics it declares (its task kind's, plus
    the robustness metrics when they were measured); summaries written before task kinds existed have
    neither and are read as classification runs with the default metrics. ``robustness`` holds the accuracies
    under attack and noise (source ``robust``); ``extras`` what a loop task returned beside its metrics.
    """

    task: str | None = None
    model: str | None = None
    seed: int | None = None
    recipe_hash: str | None = None
    steps: int | None = None
    epochs_completed: int | None = None
    stop_reason: str | None = None
    train_seconds: float | None = None
    wall_seconds_this_process: float | None = None
    nonfinite_steps: int = 0
    test: Evaluation = field(default_factory=lambda: Evaluation({}))
    val: Evaluation | None = None
    extra_tests: dict[str, Evaluation] = field(default_factory=dict)
    test_trained_weights: Evaluation | None = None
    cost: Cost | None = None
    convergence: Convergence | None = None
    target_accuracy: float | None = None
    diagnostics: dict[str, Any] | None = None
    sample: TextSample | None = None
    task_kind: str | None = None
    metrics: tuple[MetricInfo, ...] | None = None
    robustness: Evaluation | None = None
    faithfulness: Evaluation | None = None  # deletion / insertion areas of attributions (source ``explain``)
    extras: dict[str, Any] | None = None
    #: the training's energy and carbon estimate (tricklab.evaluate.energy.EnergyEstimate.to_dict(): the
    #: method, its stated figures and low/high bounds); None in summaries written before it was measured
    energy: dict[str, Any] | None = None
    #: attention rollout of a few test images (models with full-sequence attention: ViT, the hybrid)
    attention: AttentionMaps | None = None
    other: dict[str, Any] = field(default_factory=dict)

    # -- reading metrics ------------------------------------------------------------------------------------

    def evaluation(self, source: str) -> Evaluation | None:
        """The evaluation a metric source names: ``test``, ``val``, ``trained_weights`` or ``extra:<name>``."""
        if source == "test":
            return self.test
        if source == "val":
            return self.val
        if source == "trained_weights":
            return self.test_trained_weights
        if source == "robust":
            return self.robustness
        if source == "explain":
            return self.faithfulness
        if source.startswith("extra:"):
            return self.extra_tests.get(source[len("extra:"):])
        return None

    def run_metrics(self) -> dict[str, float | None]:
        """The run-level metrics (source ``"run"``): training time, latency, size, steps to the target, the
        training's energy and carbon estimate, and the model's non-zero parameters and weight sparsity."""
        cost, lat = self.cost, self.cost.inference_latency if self.cost else None
        return {
            "train_seconds": self.train_seconds,
            "latency_ms": lat.median_ms if lat else None,
            "parameters": cost.parameters if cost else None,
            "model_size_bytes": cost.model_size_bytes if cost else None,
            "steps_to_target": self.convergence.step if self.convergence else None,
            "energy_wh": self.energy.get("energy_wh") if self.energy else None,
            "co2e_g": self.energy.get("co2e_g") if self.energy else None,
            "nonzero_parameters": cost.nonzero_parameters if cost else None,
            "weight_sparsity": cost.weight_sparsity if cost else None,
        }

    def value(self, metric: MetricInfo) -> float | None:
        """The value of ``metric`` in this run as a float; None when the run does not have it (e.g. steps to
        target when the target was never reached). NaN (a diverged run's NLL) is returned as NaN."""
        return self.metric(metric.source, metric.name)

    def metric(self, source: str, name: str) -> float | None:
        if source == "run":
            v = self.run_metrics().get(name)
            return float(v) if _number(v) else None
        ev = self.evaluation(source)
        return None if ev is None else ev.value(name)

    # -- JSON -----------------------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSummary:
        """Read a ``summary.json`` dict, including those written before this type existed."""
        cost = None
        if any(k in data for k in ("parameters", "model_size_bytes", "inference_latency")):
            cost = Cost(data.get("parameters"), data.get("model_size_bytes"),
                        _opt(Latency, data.get("inference_latency")), data.get("nonzero_parameters"),
                        data.get("weight_sparsity"))
        return cls(
            test=Evaluation.from_dict(data.get("test") or {}),
            task=data.get("task"), model=data.get("model"), seed=data.get("seed"),
            recipe_hash=data.get("recipe_hash"), steps=data.get("steps"),
            epochs_completed=data.get("epochs_completed"), stop_reason=data.get("stop_reason"),
            train_seconds=data.get("train_seconds"), wall_seconds_this_process=data.get("wall_seconds_this_process"),
            nonfinite_steps=data.get("nonfinite_steps", 0), val=_opt(Evaluation, data.get("val")),
            extra_tests={k: Evaluation.from_dict(v) for k, v in (data.get("extra_tests") or {}).items()},
            test_trained_weights=_opt(Evaluation, data.get("test_trained_weights")), cost=cost,
            convergence=_opt(Convergence, data.get("convergence")), target_accuracy=data.get("target_accuracy"),
            diagnostics=data.get("diagnostics"), sample=_opt(TextSample, data.get("sample")),
            task_kind=data.get("task_kind"),
            metrics=None if data.get("metrics") is None else metrics_from_dicts(data["metrics"]),
            robustness=_opt(Evaluation, data.get("robustness")), extras=data.get("extras"),
            energy=data.get("energy"), faithfulness=_opt(Evaluation, data.get("faithfulness")),
            attention=_opt(AttentionMaps, data.get("attention")),
            other={k: v for k, v in data.items() if k not in _RUN_KEYS},
        )

    def to_dict(self) -> dict[str, Any]:
        """The ``summary.json`` layout: optional sections appear only when measured, as the runner always
        wrote them."""
        out: dict[str, Any] = {
            "task": self.task, "model": self.model, "seed": self.seed, "recipe_hash": self.recipe_hash,
            "steps": self.steps, "epochs_completed": self.epochs_completed, "stop_reason": self.stop_reason,
            "train_seconds": self.train_seconds, "wall_seconds_this_process": self.wall_seconds_this_process,
            "nonfinite_steps": self.nonfinite_steps, "test": self.test.to_dict(),
        }
        if self.val is not None:
            out["val"] = self.val.to_dict()
        if self.extra_tests:
            out["extra_tests"] = {k: v.to_dict() for k, v in self.extra_tests.items()}
        if self.test_trained_weights is not None:
            out["test_trained_weights"] = self.test_trained_weights.to_dict()
        if self.cost is not None:
            out["parameters"] = self.cost.parameters
            out["model_size_bytes"] = self.cost.model_size_bytes
            out["inference_latency"] = None if self.cost.inference_latency is None else \
                self.cost.inference_latency.to_dict()
            # measured since the sparsity metrics exist: absent keys stay absent, so old summaries round-trip
            for key in ("nonzero_parameters", "weight_sparsity"):
                if getattr(self.cost, key) is not None:
                    out[key] = getattr(self.cost, key)
            out["convergence"] = None if self.convergence is None else self.convergence.to_dict()
            out["target_accuracy"] = self.target_accuracy
        if self.diagnostics:
            out["diagnostics"] = self.diagnostics
        if self.sample is not None:
            out["sample"] = self.sample.to_dict()
        if self.task_kind is not None:
            out["task_kind"] = self.task_kind
        if self.metrics is not None:
            out["metrics"] = [m.to_dict() for m in self.metrics]
        if self.robustness is not None:
            out["robustness"] = self.robustness.to_dict()
        if self.faithfulness is not None:
            out["faithfulness"] = self.faithfulness.to_dict()
        if self.extras:
            out["extras"] = self.extras
        if self.energy is not None:
            out["energy"] = self.energy
        if self.attention is not None:
            out["attention"] = self.attention.to_dict()
        out.update(self.other)
        return out


# ------------------------------------------------------------------------------------------- an ablation
@dataclass(frozen=True)
class EqualTime:
    """Evaluation accuracy of technique and baseline after the same wall-clock training time, paired by seed:
    per seed T = min(training seconds of both runs); ``seconds`` and ``seeds`` list the pairs formed."""

    difference: PairedDifference
    seconds: list[float]
    seeds: list[int]
    key: str = "eval_accuracy"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EqualTime:
        return cls(paired_from_dict(data), list(data.get("seconds") or []), list(data.get("seeds") or []),
                   data.get("key", "eval_accuracy"))

    def to_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "seeds": self.seeds, "key": self.key, **self.difference.to_dict()}


def paired_from_dict(data: Mapping[str, Any]) -> PairedDifference:
    """A :class:`PairedDifference` from its JSON form (a card's effect, averaging or equal-time entry)."""
    return PairedDifference(data.get("n", 0), data.get("mean_diff"), data.get("std_diff"), data.get("ci_low"),
                            data.get("ci_high"), data.get("t"), data.get("p_value"), data.get("verdict") or "n/a",
                            data.get("p_holm"), data.get("note"))


@dataclass(frozen=True)
class NoiseFloor:
    """The noise floor of one timing metric (:mod:`tricklab.lab.noise`): per seed, an identical contender
    minus the baseline (``differences``), its largest absolute value (``floor``), the floor relative to the
    baseline's mean, and how it was measured (``method``)."""

    key: str
    differences: list[float]
    seeds: list[int]
    floor: float
    relative: float | None
    method: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NoiseFloor:
        return cls(data["key"], list(data.get("differences") or []), list(data.get("seeds") or []),
                   data["floor"], data.get("relative"), data.get("method", ""))


@dataclass(frozen=True)
class SeededSample:
    """A variant's text sample and the seed of the run it came from (its first seed)."""

    seed: int
    sample: TextSample


@dataclass(frozen=True)
class SeededAttention:
    """A variant's attention rollout figure data and the seed of the run it came from (its first seed)."""

    seed: int
    attention: AttentionMaps


@dataclass(frozen=True)
class SeededDetections:
    """A detection variant's example images with true and predicted boxes (a loop task's ``extras["examples"]``:
    dicts with "image", "true_boxes", "true_labels", "pred_boxes", "pred_labels", "pred_scores"; boxes xyxy in
    pixels) and the seed of the run they came from (its first seed)."""

    seed: int
    examples: list[dict[str, Any]]


@dataclass(frozen=True)
class SeededImages:
    """A generative variant's image grids (a loop task's ``extras``: "originals", "reconstructions", "samples",
    each a list of (H, W) grids with values in [0, 1]) and the seed of the run they came from (its first seed)."""

    seed: int
    rows: dict[str, list[list[list[float]]]]


@dataclass(frozen=True)
class SeededDiagnostics:
    """A variant's diagnostics records and the seed of the run they came from (its first seed)."""

    seed: int
    records: dict[str, Any]


@dataclass(frozen=True)
class AblationSummary:
    """What an ablation found, per variant and metric; built by :func:`tricklab.lab.analysis.ablation_summary`.

    ``variants`` lists the baseline first. ``per_variant[v][key]`` describes metric ``key`` over the seeds of
    ``v``; ``paired[v][key]`` is the paired difference ``v - baseline`` (every variant but the baseline);
    ``averaging[v][key]`` the averaged weights against the same runs' final weights (weight averagers only).
    ``per_class_f1`` is averaged over seeds; ``reliability``, ``samples``, ``diagnostics``, ``attention``,
    ``detections`` and ``images`` come from each variant's first seed.
    """

    variants: list[str]
    metrics: list[MetricInfo]
    seeds: dict[str, list[int]]
    per_variant: dict[str, dict[str, Description]]
    paired: dict[str, dict[str, PairedDifference]]
    equal_time: dict[str, EqualTime] = field(default_factory=dict)
    per_class_f1: dict[str, list[float] | None] = field(default_factory=dict)
    reliability: dict[str, Reliability | None] = field(default_factory=dict)
    averaging: dict[str, dict[str, PairedDifference]] = field(default_factory=dict)
    samples: dict[str, SeededSample] = field(default_factory=dict)
    diagnostics: dict[str, SeededDiagnostics] = field(default_factory=dict)
    attention: dict[str, SeededAttention] = field(default_factory=dict)
    detections: dict[str, SeededDetections] = field(default_factory=dict)
    images: dict[str, SeededImages] = field(default_factory=dict)
    #: timing metric key -> its noise floor between identical contenders
    noise: dict[str, NoiseFloor] = field(default_factory=dict)
    #: the control run (the baseline again, same seeds) minus the baseline, per metric: what an identical
    #: comparison gives
    control: dict[str, PairedDifference] = field(default_factory=dict)
    #: how many comparisons the verdicts were Holm-adjusted over, at 1 - ``confidence``
    family_size: int = 0
    confidence: float = 0.95
    #: each variant's resolved recipe (from its first seed's run)
    recipes: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def baseline(self) -> str:
        return self.variants[0]

    @property
    def techniques(self) -> list[str]:
        """Every variant compared against the baseline, in order."""
        return self.variants[1:]

    def metric(self, key: str) -> MetricInfo | None:
        return next((m for m in self.metrics if m.key == key), None)

    @property
    def primary(self) -> MetricInfo | None:
        """The headline metric (accuracy for a classifier, MSE for a regression, a loop task's first)."""
        return primary_metric(self.metrics)

    @property
    def robust_metrics(self) -> list[MetricInfo]:
        """The metrics of the robustness evaluation (attacks and noise), when it ran."""
        return [m for m in self.metrics if m.source == "robust"]

    def n_seeds(self, variant: str) -> int:
        return len(self.seeds.get(variant) or [])

    def describe(self, variant: str, key: str) -> Description | None:
        return self.per_variant.get(variant, {}).get(key)

    def difference(self, variant: str, key: str) -> PairedDifference | None:
        return self.paired.get(variant, {}).get(key)


_SETTING_KEYS = ("task", "model", "budget", "seeds", "machine", "recipe_hash", "eval_every", "contention")


@dataclass(frozen=True)
class AblationSetting:
    """Where an ablation was measured: task, model, budget, seeds, machine, the baseline recipe and its hash,
    how many of its runs are done, the steps between evaluations (the resolution of step counts) and how the
    runs shared the machine (``contention``, see :func:`tricklab.lab.ablate.contention`)."""

    task: str | None = None
    model: str | None = None
    budget: dict[str, Any] | None = None
    seeds: list[int] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)
    recipe_hash: str | None = None
    baseline_recipe: dict[str, Any] | None = None
    runs_done: int = 0
    runs_total: int = 0
    contention: dict[str, Any] | None = None
    eval_every: int | None = None

    def where(self) -> str:
        """``task/model`` for sentences and titles."""
        if self.task and self.model:
            return f"{self.task}/{self.model}"
        return str(self.task or self.model or "this setting")

    def card_dict(self) -> dict[str, Any]:
        """The part of the setting a technique card records (the baseline recipe is in the store)."""
        return {k: getattr(self, k) for k in _SETTING_KEYS}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AblationSetting:
        model = data.get("model")
        if isinstance(model, Mapping):  # a model spec rather than its name
            model = model.get("name")
        return cls(data.get("task"), model, data.get("budget"), list(data.get("seeds") or []),
                   dict(data.get("machine") or {}), data.get("recipe_hash"), data.get("baseline_recipe"),
                   data.get("runs_done", 0), data.get("runs_total", 0), data.get("contention"),
                   data.get("eval_every"))

    def timing_note(self) -> str | None:
        """A sentence on how the runs shared the machine while they were timed; None when not recorded."""
        c = self.contention or {}
        if c.get("shared") is None:
            return None
        runs, threads, cpus = c.get("concurrent_runs") or 1, c.get("threads_per_run") or 1, c.get("cpu_count")
        lo, hi = c.get("load_average_min"), c.get("load_average_max")
        load = "" if hi is None else f"; the 1-minute load average during the runs was {lo:g} to {hi:g}"
        text = (f"Runs were timed {runs} at a time with {threads} thread{'s' if threads > 1 else ''} each on "
                f"{cpus} CPUs{load}: ")
        text += ("they shared the machine, so training times include that contention." if c["shared"]
                 else "each run had its cores to itself.")
        lp = c.get("latency_pass")
        if lp:
            lp_load = lp.get("load_average")
            text += (f" Inference latency was measured after training in one process, the models interleaved, "
                     f"on {lp.get('threads')} thread" + ("" if lp_load is None else
                                                         f" (load average {lp_load[0]:g} at the time)") + ".")
        return text
