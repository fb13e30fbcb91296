"""From a recipe to the objects a run needs: registry names checked, techniques built with checked arguments,
the task's data wrapped in a loader and evaluation splits.

:func:`check_recipe` looks at names and arguments only (nothing is loaded or built), so a typo is refused in
milliseconds; :func:`validate` also builds the techniques once and checks that they compose, which is what
planning an ablation needs before any run starts.
"""

from __future__ import annotations

import inspect
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tricklab.data import InMemoryLoader, load_dataset
from tricklab.data.graph import batch_graphs
from tricklab.data.graph_loaders import FullBatchGraphLoader, GraphBatchLoader, NeighborLoader
from tricklab.errors import ConfigError
from tricklab.lab.recipe import Recipe, TechniqueSpec, coerce
from tricklab.lab.tasks import TASKS, Task
from tricklab.models import MODELS
from tricklab.optim import OPTIMIZERS
from tricklab.schedules import SCHEDULES
from tricklab.techniques import TECHNIQUES, Checkpointing, LRSchedule, MetricsLog, Progress
from tricklab.train import distributed
from tricklab.train.technique import Technique, plan

__all__ = ["PreparedData", "build_technique", "build_techniques", "check_recipe", "prepare_data",
           "technique_arguments", "validate"]

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


def check_recipe(recipe: Recipe) -> Task:
    """Resolve every registry name and check every technique argument, without building anything."""
    task = TASKS.get(recipe.task)
    MODELS.get(recipe.model.name)
    OPTIMIZERS.get(recipe.optimizer.name)
    for i, spec in enumerate(recipe.techniques):
        technique_arguments(spec.name, spec.args, _where(i, spec))
    if recipe.schedule.name != "constant":
        SCHEDULES.get(recipe.schedule.name)
    return task


def validate(recipe: Recipe) -> Task:
    """:func:`check_recipe`, then build the techniques and check that they compose (no two write one
    exclusive slot), without loading data or training."""
    task = check_recipe(recipe)
    plan(build_techniques(recipe, None))
    return task


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


def prepare_data(task: Task, recipe: Recipe, info: distributed.DistInfo) -> PreparedData:
    """Load the task's data set and wrap it in a loader and evaluation splits for the trainer."""
    try:
        data = load_dataset(task.dataset, data_dir=recipe.data.data_dir, **{**task.dataset_args, **recipe.data.args})
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
    if recipe.data.val_fraction > 0:
        data = data.with_validation(recipe.data.val_fraction, seed=recipe.seed)
    loader = InMemoryLoader(data.x_train, data.y_train, recipe.batch_size // info.world_size,
                            seed=recipe.seed, rank=info.rank, world_size=info.world_size)
    val = (data.x_val, data.y_val) if data.x_val is not None else None
    test = (data.x_test, data.y_test)
    return PreparedData(loader, val or test, test, val, tuple(data.input_shape), data.num_classes,
                        data.fingerprint(), None, data.x_test, data.meta.get("extra_tests"), data.meta.get("vocab"))


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
