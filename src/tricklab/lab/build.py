"""From a recipe to the objects a run needs: registry names checked, techniques built with checked arguments,
the task's data wrapped in a loader and evaluation splits.

:func:`check_recipe` looks at names and arguments only (nothing is loaded or built), so a typo is refused in
milliseconds; :func:`validate` also builds the techniques once and checks that they compose, which is what
planning an ablation needs before any run starts.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from tricklab.data import InMemoryLoader, load_dataset
from tricklab.data.files import parse_spec
from tricklab.data.files.code import check_code_spec, code_version, is_code_spec
from tricklab.data.files.common import Digest
from tricklab.data.graph import batch_graphs
from tricklab.data.graph_loaders import FullBatchGraphLoader, GraphBatchLoader, NeighborLoader
from tricklab.data.low_label import SemiSupervisedLoader, low_label_split
from tricklab.errors import ConfigError, DataError
from tricklab.lab.kinds import KINDS, ResolvedTask, TargetInfo, check_options, kind_for, resolve, token_cross_entropy
from tricklab.lab.metrics import explain_metric, robust_metric
from tricklab.lab.recipe import Recipe, TechniqueSpec, coerce
from tricklab.lab.tasks import TASKS, LoopTask, Task
from tricklab.models import check_model_arguments
from tricklab.optim import OPTIMIZERS
from tricklab.schedules import SCHEDULES
from tricklab.techniques import TECHNIQUES, Checkpointing, LRSchedule, MetricsLog, Progress
from tricklab.train import distributed
from tricklab.train.technique import Technique, plan

__all__ = ["PreparedData", "build_technique", "build_techniques", "check_recipe", "data_version", "prepare_data",
           "resolve_task", "resolve_techniques", "technique_arguments", "technique_defaults", "validate"]

# techniques the runner adds from dedicated recipe keys, so they are not listed under ``techniques``
_RUNNER_OWNED = {"checkpointing", "metrics_log", "progress", "lr_schedule"}


# ------------------------------------------------------------------------------------------- techniques
def technique_arguments(name: str, args: dict[str, Any] | None, where: str,
                        num_classes: int | None = None) -> tuple[type[Technique], dict[str, Any]]:
    """The registered class of technique ``name`` and ``args`` checked against its constructor's type
    hints (unknown names and arguments are refused with the closest names / the accepted arguments).

    A technique whose constructor takes ``num_classes`` (a target mixer that makes soft targets) gets the
    task's number of classes unless the recipe sets it.
    """
    cls = TECHNIQUES.get(name)
    params = {k: p for k, p in inspect.signature(cls.__init__).parameters.items() if k != "self"}
    hints = typing.get_type_hints(cls.__init__)
    args = dict(args or {})
    if num_classes is not None and "num_classes" in params and "num_classes" not in args:
        args["num_classes"] = num_classes
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    checked: dict[str, Any] = {}
    for key, value in args.items():
        if key in params and params[key].kind is not inspect.Parameter.VAR_KEYWORD:
            checked[key] = coerce(value, hints.get(key, Any), f"{where}.{key}")
        elif takes_kwargs:
            checked[key] = value
        else:
            accepted = ", ".join(f"{k}={p.default!r}" for k, p in params.items()
                                 if p.kind is not inspect.Parameter.VAR_KEYWORD)
            raise ConfigError(f"{where}: technique {name!r} has no argument {key!r}; it accepts: {accepted}")
    return cls, checked


def _recordable(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_recordable(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _recordable(v) for k, v in value.items())
    return False


def _plain(value: Any) -> Any:
    # YAML's safe dumper writes no tuples; a tuple default is recorded as the list it is read back as
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def technique_defaults(cls: type[Technique]) -> dict[str, Any]:
    """The constructor defaults of a technique that a recipe can record: plain values only, and not
    ``num_classes`` (it comes from the data set when the recipe leaves it out)."""
    out: dict[str, Any] = {}
    for k, p in inspect.signature(cls.__init__).parameters.items():
        if k in ("self", "num_classes") or p.kind in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL):
            continue
        if p.default is not inspect.Parameter.empty and _recordable(p.default):
            out[k] = _plain(p.default)
    return out


def resolve_techniques(recipe: Recipe) -> Recipe:
    """``recipe`` with every technique's arguments completed with its defaults (checked and coerced), so the
    resolved recipe, its hash, the report and the cards say which epsilon or decay was measured, and a
    changed default changes the hash. Resolving a resolved recipe changes nothing."""
    specs = []
    for i, spec in enumerate(recipe.techniques):
        cls, checked = technique_arguments(spec.name, spec.args, _where(i, spec))
        specs.append(TechniqueSpec(spec.name, {**technique_defaults(cls), **_plain(checked)}))
    return dataclasses.replace(recipe, techniques=specs)


def build_technique(name: str, args: dict[str, Any] | None, where: str, num_classes: int | None = None) -> Technique:
    """Build a registered technique, checking every argument first (see :func:`technique_arguments`)."""
    cls, checked = technique_arguments(name, args, where, num_classes)
    try:
        return cls(**checked)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from e


def _where(i: int, spec: TechniqueSpec) -> str:
    if spec.name.lower() in _RUNNER_OWNED:
        key = "schedule" if spec.name == "lr_schedule" else "checkpoint / log_every / progress"
        raise ConfigError(f"techniques[{i}]: {spec.name!r} is configured by its own recipe key ({key}), "
                          f"not under techniques")
    return f"techniques[{i}] ({spec.name})"


def build_techniques(recipe: Recipe, run_dir: Path | None, num_classes: int | None = None) -> list[Technique]:
    """The recipe's techniques, then those the runner owns: the schedule, and with a run folder checkpointing
    and the metrics log, and the progress display when asked for."""
    out = [build_technique(s.name, s.args, _where(i, s), num_classes) for i, s in enumerate(recipe.techniques)]
    if recipe.schedule.name != "constant":
        SCHEDULES.get(recipe.schedule.name)  # unknown name -> closest names
        try:
            out.append(LRSchedule(recipe.schedule.name, **recipe.schedule.args))
        except TypeError as e:
            raise ConfigError(f"schedule {recipe.schedule.name!r}: {e}") from e
    if run_dir is not None:
        out.append(Checkpointing(every_steps=recipe.checkpoint.every_steps, keep_last=recipe.checkpoint.keep_last))
        out.append(MetricsLog())
    if recipe.progress:
        out.append(Progress())
    return out


def _check_loop_task(recipe: Recipe, task: LoopTask) -> None:
    task.make_config(recipe)  # bad task_args are refused here
    if task.config is not None and recipe.techniques:
        raise ConfigError(f"task {task.name!r} runs its own loop: techniques do not apply to it; remove them "
                          f"(techniques=[]), and in an ablation compare settings with --techniques \"\" and "
                          f"--variant \"NAME:task_args.KEY=VALUE\"")
    for section in ("robustness", "faithfulness"):
        if getattr(recipe, section) is not None:
            raise ConfigError(f"{section}: task {task.name!r} runs its own loop; the {section} evaluation applies "
                              f"to classifiers trained by the lab")


def _check_task_args(recipe: Recipe, task: Task) -> None:
    """The kind's options, where the kind is known before the data is loaded (``auto`` without a stated kind
    is checked once the data says what it is)."""
    if _has_files(recipe) and task.dataset != "files":
        raise ConfigError(f"data: a file spec (format/path/train) reads your own data, but task {task.name!r} "
                          f"loads its own data set {task.dataset!r}; use task: files (or leave task out)")
    if is_code_spec(recipe.data.args):
        check_code_spec(recipe.data.args)  # the module imports, the attribute exists, code_args bind
    args = dict(recipe.task_args)
    stated = args.pop("kind", None)
    if stated is not None and stated not in KINDS:
        raise ConfigError(f"task_args.kind must be one of {sorted(k for k in KINDS if k != 'token')}, got {stated!r}")
    kind = stated or (None if task.kind == "auto" else task.kind)
    if kind is not None:
        check_options(kind, args)
    for section in ("robustness", "faithfulness"):
        if getattr(recipe, section) is not None and kind in ("token", "multilabel", "regression"):
            raise ConfigError(f"{section}: the {section} evaluation measures classifiers; task {task.name!r} "
                              f"is a {kind} task")


def _has_files(recipe: Recipe) -> bool:
    """Whether the recipe reads the user's data: files (format/path/train) or code (code: module:attribute)."""
    return any(k in recipe.data.args for k in ("format", "path", "train", "code"))


def check_recipe(recipe: Recipe) -> Task | LoopTask:
    """Resolve every registry name and check every technique argument, without building anything."""
    task = TASKS.get(recipe.task)
    if isinstance(task, LoopTask):
        _check_loop_task(recipe, task)
        return task
    _check_task_args(recipe, task)
    check_model_arguments(recipe.model.name, recipe.model.args)
    OPTIMIZERS.get(recipe.optimizer.name)
    for i, spec in enumerate(recipe.techniques):
        technique_arguments(spec.name, spec.args, _where(i, spec))
    if recipe.schedule.name != "constant":
        SCHEDULES.get(recipe.schedule.name)
    return task


def validate(recipe: Recipe) -> Task | LoopTask:
    """:func:`check_recipe`, then build the techniques and check that they compose (no two write one
    exclusive slot), without loading data or training."""
    task = check_recipe(recipe)
    plan(build_techniques(recipe, None))
    return task


def data_version(recipe: Recipe) -> str | None:
    """A digest of the bytes of the user's files a recipe reads (its ``files`` data set), without parsing
    them; None for the built-in data sets (made by code or fixed files, named by the recipe alone).

    The recipe hash covers the file spec but not what the files hold, so an ablation keys its runs and its
    store by this digest too: a changed file is a different experiment, never a finished run to skip.
    """
    if not _has_files(recipe):
        return None
    if is_code_spec(recipe.data.args):  # the spec and the module's source file
        return code_version(recipe.data.args)
    fs = parse_spec(recipe.data.args, recipe.data.data_dir)
    digest = Digest(fs.canonical())
    for role, locations in sorted(fs.sources.items()):
        for key, path in sorted(locations.items()):
            if path.is_dir():
                digest.add_tree(f"{role}.{key}", path)
            else:
                digest.add_file(f"{role}.{key}", path)
    return digest.hexdigest()[:16]


# ------------------------------------------------------------------------------------------------- data
@dataclass
class PreparedData:
    """What the trainer needs from a task's data, whatever its kind (arrays, one graph, many graphs)."""

    loader: Any
    eval_data: Any  # evaluated during training: the validation split when there is one, else the test split
    test_data: Any
    val_data: Any | None
    input_shape: tuple[int, ...]
    num_classes: int
    fingerprint: str
    predict_fn: Any = None  # (model, data) -> (logits, targets) for data the trainer cannot slice
    example: Any = None  # one input for the latency measurement
    extra_tests: dict[str, Any] | None = None  # name -> (inputs, targets): further test sets, e.g. longer inputs
    vocab: list[str] | None = None  # token strings of a text data set (to encode prompts and decode samples)
    meta: dict[str, Any] = field(default_factory=dict)  # the data set's meta (target kind, fitted weights...)
    train_targets: Any = None  # the training targets of array data (to fit balanced class weights)

    def latency_example(self, batch_size: int, device: torch.device) -> Any:
        if isinstance(self.example, torch.Tensor):
            return self.example[:batch_size].to(device)
        return self.example.to(device)


def _node_predict(model: torch.nn.Module, data: tuple[Any, str]) -> tuple[torch.Tensor, torch.Tensor]:
    graph, split = data
    mask = graph.masks[split]
    return model(graph)[mask], graph.y[mask]


def _graph_predict(model: torch.nn.Module, graph: Any) -> tuple[torch.Tensor, torch.Tensor]:
    return model(graph), graph.y


# a kind stated in task_args -> how the files loader reads the targets (classification: as the data say)
_TARGET_KIND = {"binary": "binary", "multilabel": "multilabel", "regression": "regression"}


def _dataset_args(task: Task, recipe: Recipe) -> dict[str, Any]:
    args = {**task.dataset_args, **recipe.data.args}
    if task.dataset == "files":
        stated = recipe.task_args.get("kind")
        if stated in _TARGET_KIND and "target_kind" not in args:
            args["target_kind"] = _TARGET_KIND[stated]  # integer prices are a regression target, not classes
        if recipe.data.val_fraction > 0 and "val_fraction" not in args:
            args["val_fraction"] = recipe.data.val_fraction  # the loader's split: stratified and recorded
    return args


def prepare_data(task: Task, recipe: Recipe, info: distributed.DistInfo) -> PreparedData:
    """Load the task's data set and wrap it in a loader and evaluation splits for the trainer."""
    try:
        data = load_dataset(task.dataset, data_dir=recipe.data.data_dir, **_dataset_args(task, recipe))
    except TypeError as e:
        raise ConfigError(f"data.args: {e}") from e
    if hasattr(data, "x_train"):  # ArrayDataset
        return _array_data(data, recipe, info)
    if recipe.data.val_fraction > 0:
        raise ConfigError(f"data.val_fraction: task {task.name!r} has its own validation split; leave it at 0")
    if data.task == "node":
        if info.world_size > 1:
            raise ConfigError(f"task {task.name!r} trains on one whole graph per step: run it in one process")
        return _node_data(data, recipe)
    loader = GraphBatchLoader(data.split_graphs("train"), recipe.batch_size // info.world_size, seed=recipe.seed,
                              rank=info.rank, world_size=info.world_size)
    val = batch_graphs(data.split_graphs("val")) if "val" in data.splits else None
    test = batch_graphs(data.split_graphs("test"))
    return PreparedData(loader, val or test, test, val, (data.num_features,), data.num_classes, data.fingerprint(),
                        _graph_predict, test)


def _array_data(data: Any, recipe: Recipe, info: distributed.DistInfo) -> PreparedData:
    if recipe.data.val_fraction > 0 and data.meta.get("source") != "files":  # files: the loader split it
        data = data.with_validation(recipe.data.val_fraction, seed=recipe.seed)
    val = (data.x_val, data.y_val) if data.x_val is not None else None
    test = (data.x_test, data.y_test)
    if recipe.data.labels_per_class is not None or recipe.data.unlabelled_ratio is not None:
        loader, train_targets = _low_label_loader(data, recipe, info)
    else:
        loader = InMemoryLoader(data.x_train, data.y_train, recipe.batch_size // info.world_size,
                                seed=recipe.seed, rank=info.rank, world_size=info.world_size)
        train_targets = data.y_train
    return PreparedData(loader, val or test, test, val, tuple(data.input_shape), data.num_classes,
                        data.fingerprint(), None, data.x_test, data.meta.get("extra_tests"), data.meta.get("vocab"),
                        dict(data.meta), train_targets)


def _low_label_loader(data: Any, recipe: Recipe, info: distributed.DistInfo) -> tuple[SemiSupervisedLoader, Any]:
    """k labels per class (seeded by the recipe's seed), the rest unlabelled; the labelled targets are the
    training targets the task sees (e.g. for balanced class weights)."""
    k, mu = recipe.data.labels_per_class, recipe.data.unlabelled_ratio
    if k is None:
        raise ConfigError("data.unlabelled_ratio is set but data.labels_per_class is not: set "
                          "data.labels_per_class=K to keep K labels per class (the ratio only applies then)")
    for name, value in (("labels_per_class", k), ("unlabelled_ratio", mu)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"data.{name} must be a positive integer, got {value!r}")
    y = data.y_train
    if y.ndim != 1 or y.is_floating_point():
        raise ConfigError(f"data.labels_per_class needs class labels (N,) of a classification task, got targets "
                          f"of shape {tuple(y.shape)} and dtype {y.dtype}")
    if info.world_size > 1:
        raise ConfigError("data.labels_per_class: low-label training runs in one process (the labelled set is "
                          "too small to shard); run it without torchrun")
    if recipe.batch_size > k * data.num_classes:
        raise ConfigError(f"batch_size {recipe.batch_size} is the number of labelled examples per batch and exceeds "
                          f"the {k * data.num_classes} labelled examples (data.labels_per_class={k} x "
                          f"{data.num_classes} classes): lower batch_size or raise data.labels_per_class")
    try:
        split = low_label_split(y, k, recipe.seed, data.num_classes)
    except DataError as e:
        raise ConfigError(f"data.labels_per_class={k}: {e}") from None
    loader = SemiSupervisedLoader(data.x_train[split.labelled], y[split.labelled], data.x_train[split.unlabelled],
                                  recipe.batch_size, 7 if mu is None else mu, seed=recipe.seed)
    return loader, y[split.labelled]


def _node_data(data: Any, recipe: Recipe) -> PreparedData:
    graph = data.graph
    val = (graph, "val") if "val" in graph.masks else None
    test = (graph, "test")
    if recipe.data.fanouts:
        loader: Any = NeighborLoader(graph, "train", recipe.batch_size, recipe.data.fanouts, seed=recipe.seed)
    else:
        loader = FullBatchGraphLoader(graph, "train")
    return PreparedData(loader, val or test, test, val, (data.num_features,), data.num_classes, data.fingerprint(),
                        _node_predict, graph)


# ------------------------------------------------------------------------------------------------- kind
def resolve_task(task: Task, recipe: Recipe, data: PreparedData) -> ResolvedTask:
    """The task's kind for the loaded data (its own, the data's for ``auto``, or the one ``task_args``
    states), with the loss, the evaluation and the declared metrics (plus the robustness metrics when the
    recipe asks for them)."""
    args = dict(recipe.task_args)
    kind = kind_for(task.kind, args.pop("kind", None), data.meta, data.num_classes, task.name)
    default_loss = token_cross_entropy if kind == "token" else F.cross_entropy
    resolved = resolve(kind, args, TargetInfo(data.num_classes, data.meta, data.train_targets), default_loss)
    metrics = task.declared_metrics(kind)
    if recipe.robustness is not None:
        if kind not in ("classification", "binary") or data.predict_fn is not None:
            raise ConfigError(f"robustness: the attacks and noise evaluation measure classifiers of array inputs; "
                              f"task {task.name!r} is a {kind} task"
                              + (" on a graph" if data.predict_fn is not None else ""))
        metrics = (*metrics, *(robust_metric(name, label) for name, label in recipe.robustness.metrics()))
    if recipe.faithfulness is not None:
        if kind not in ("classification", "binary") or data.predict_fn is not None:
            graph = " on a graph" if data.predict_fn is not None else ""
            raise ConfigError(f"faithfulness: attributions are measured on classifiers of array inputs; task "
                              f"{task.name!r} is a {kind} task{graph}")
        metrics = (*metrics, *(explain_metric(*m) for m in recipe.faithfulness.metrics()))
    return dataclasses.replace(resolved, metrics=metrics)
