"""Run one recipe into a run folder: build everything from the registries, train, evaluate, write results.

Run folder layout: ``recipe.yaml`` (fully resolved), ``env.json``, ``metrics.jsonl``, ``summary.json``
(final metrics), ``checkpoints/``, ``model.safetensors`` (final trained weights; plus
``model.eval.safetensors`` when a weight averager supplies the evaluation weights).
"""

from __future__ import annotations

import inspect
import json
import time
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tricklab.errors import ConfigError, UserError
from tricklab.lab.recipe import Recipe, coerce
from tricklab.lab.tasks import TASKS, Task
from tricklab.train import distributed
from tricklab.train.checkpoint import atomic_write_bytes, atomic_write_text, list_checkpoints
from tricklab.train.reproducibility import environment_info, seed_everything
from tricklab.train.technique import Technique

# techniques the runner adds from dedicated recipe keys, so they are not listed under ``techniques``
_RUNNER_OWNED = {"checkpointing", "metrics_log", "progress", "lr_schedule"}


@dataclass
class RunResult:
    run_dir: Path
    summary: dict[str, Any]
    trainer: Any


def build_technique(name: str, args: dict[str, Any], where: str, num_classes: int | None = None) -> Technique:
    """Build a registered technique, checking every argument against its constructor's type hints.

    A technique whose constructor takes ``num_classes`` (a target mixer that makes soft targets) gets the
    task's number of classes unless the recipe sets it.
    """
    from tricklab.techniques import TECHNIQUES

    cls = TECHNIQUES.get(name)
    sig = inspect.signature(cls.__init__)
    hints = typing.get_type_hints(cls.__init__)
    params = {k: p for k, p in sig.parameters.items() if k != "self"}
    if num_classes is not None and "num_classes" in params and "num_classes" not in (args or {}):
        args = {**(args or {}), "num_classes": num_classes}
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    checked: dict[str, Any] = {}
    for key, value in (args or {}).items():
        if key not in params or params[key].kind is inspect.Parameter.VAR_KEYWORD:
            if takes_kwargs:
                checked[key] = value
                continue
            accepted = ", ".join(f"{k}={p.default!r}" for k, p in params.items()
                                 if p.kind is not inspect.Parameter.VAR_KEYWORD)
            raise ConfigError(f"{where}: technique {name!r} has no argument {key!r}; it accepts: {accepted}")
        checked[key] = coerce(value, hints.get(key, Any), f"{where}.{key}")
    try:
        return cls(**checked)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from e


def build_techniques(recipe: Recipe, run_dir: Path | None, num_classes: int | None = None) -> list[Technique]:
    out: list[Technique] = []
    for i, spec in enumerate(recipe.techniques):
        if spec.name.lower() in _RUNNER_OWNED:
            raise ConfigError(
                f"techniques[{i}]: {spec.name!r} is configured by its own recipe key "
                f"({'schedule' if spec.name == 'lr_schedule' else 'checkpoint / log_every / progress'}), "
                f"not under techniques"
            )
        out.append(build_technique(spec.name, spec.args, f"techniques[{i}] ({spec.name})", num_classes))
    if recipe.schedule.name != "constant":
        from tricklab.schedules import SCHEDULES
        from tricklab.techniques import LRSchedule

        SCHEDULES.get(recipe.schedule.name)  # unknown name -> closest names
        try:
            out.append(LRSchedule(recipe.schedule.name, **recipe.schedule.args))
        except TypeError as e:
            raise ConfigError(f"schedule {recipe.schedule.name!r}: {e}") from e
    if run_dir is not None:
        from tricklab.techniques import Checkpointing, MetricsLog

        out.append(Checkpointing(every_steps=recipe.checkpoint.every_steps, keep_last=recipe.checkpoint.keep_last))
        out.append(MetricsLog())
    if recipe.progress:
        from tricklab.techniques import Progress

        out.append(Progress())
    return out


def validate(recipe: Recipe) -> Task:
    """Resolve every registry name and check the composition without loading data or training."""
    from tricklab.models import MODELS
    from tricklab.optim import OPTIMIZERS
    from tricklab.train.technique import plan

    task = TASKS.get(recipe.task)
    MODELS.get(recipe.model.name)
    OPTIMIZERS.get(recipe.optimizer.name)
    plan(build_techniques(recipe, None))
    return task


def _default_run_dir(recipe: Recipe) -> Path:
    return Path("runs") / f"{recipe.task}-{recipe.model.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def run(recipe: Recipe, out: str | Path | None = None, resume: bool = False) -> RunResult:
    """Train ``recipe`` into ``out`` (created) and return the final summary; ``resume`` continues the run
    already in ``out`` from its newest valid checkpoint."""
    from tricklab.evaluate import convergence_speed, count_parameters, inference_latency, model_size_bytes
    from tricklab.models import build_model
    from tricklab.optim import create_optimizer
    from tricklab.train import Trainer

    task = validate(recipe)
    run_dir = Path(out) if out is not None else _default_run_dir(recipe)
    recipe_text = recipe.to_yaml()
    if resume:
        if not (run_dir / "recipe.yaml").is_file():
            raise UserError(f"--resume: {run_dir} holds no run (no recipe.yaml); start it without --resume")
        saved = (run_dir / "recipe.yaml").read_text(encoding="utf-8")
        from tricklab.lab.recipe import recipe_from_dict, parse_yaml

        before = recipe_from_dict(parse_yaml(saved, str(run_dir / "recipe.yaml")))
        if (before.hash(), before.seed) != (recipe.hash(), recipe.seed):
            raise UserError(
                f"--resume: the recipe differs from the one the run in {run_dir} was started with; "
                f"resume with the same recipe and overrides (see {run_dir / 'recipe.yaml'})"
            )
        if not list_checkpoints(run_dir / "checkpoints"):
            raise UserError(f"--resume: {run_dir / 'checkpoints'} holds no checkpoint to resume from")
    elif list_checkpoints(run_dir / "checkpoints") or (run_dir / "summary.json").exists():
        raise UserError(f"{run_dir} already holds a run; pass --resume to continue it, or choose another --out")

    info = distributed.init(recipe.device)
    try:
        device = distributed.device_for(recipe.device, info)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device: {recipe.device!r} requested but CUDA is not available; use device=cpu")
        if recipe.batch_size % info.world_size:
            raise ConfigError(f"batch_size {recipe.batch_size} must be divisible by the {info.world_size} processes")

        if recipe.threads is not None:
            torch.set_num_threads(recipe.threads)
        data = prepare_data(task, recipe, info)

        seed_everything(recipe.seed, recipe.deterministic)
        model = build_model(recipe.model.name, data.input_shape, data.num_classes, **recipe.model.args).to(device)
        optimizer = create_optimizer(recipe.optimizer.name, model, lr=recipe.optimizer.lr,
                                     weight_decay=recipe.optimizer.weight_decay, **recipe.optimizer.args)
        wrapped = distributed.wrap(model, device, info)
        loader = data.loader
        techniques = build_techniques(recipe, run_dir, data.num_classes)
        trainer = Trainer(
            wrapped, optimizer, loader, loss_fn=task.loss, techniques=techniques, eval_data=data.eval_data,
            eval_every=recipe.eval_every, eval_batch_size=recipe.eval_batch_size,
            metric_fn=task.metric_fn(data.num_classes), predict_fn=data.predict_fn, max_steps=recipe.budget.steps,
            max_epochs=recipe.budget.epochs, max_seconds=recipe.budget.seconds, log_every=recipe.log_every,
            device=device, run_dir=run_dir, rank=info.rank, world_size=info.world_size,
        )
        if info.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(run_dir / "recipe.yaml", recipe_text)
            env = environment_info(data.fingerprint)
            env.update({"world_size": info.world_size, "recipe_hash": recipe.hash(), "seed": recipe.seed,
                        "device": str(device)})
            atomic_write_text(run_dir / "env.json", json.dumps(env, indent=2))
        distributed.barrier(info)

        wall0 = time.perf_counter()
        state = trainer.fit(resume_from=run_dir / "checkpoints" if resume else None)
        wall = time.perf_counter() - wall0

        test = trainer.evaluate(data.test_data)
        summary: dict[str, Any] = {
            "task": recipe.task, "model": recipe.model.name, "seed": recipe.seed, "recipe_hash": recipe.hash(),
            "steps": state.step, "epochs_completed": state.epoch, "stop_reason": state.stop_reason,
            "train_seconds": state.train_seconds, "wall_seconds_this_process": wall,
            "nonfinite_steps": state.counters.get("nonfinite_steps", 0),
            "test": test,
        }
        if data.val_data is not None:
            summary["val"] = trainer.evaluate(data.val_data)
        if data.extra_tests:
            # further test sets the data set defines (e.g. longer sequences, to measure extrapolation)
            summary["extra_tests"] = {name: trainer.evaluate(split) for name, split in data.extra_tests.items()}
        if any("eval_weights" in t.writes for t in techniques):
            # the same run's final trained weights, to measure what the averaging itself bought
            summary["test_trained_weights"] = trainer.evaluate_trained_weights(data.test_data)
        if info.is_main:
            summary["parameters"] = count_parameters(model)
            summary["model_size_bytes"] = model_size_bytes(model)
            example = data.latency_example(recipe.eval_batch_size, device)
            summary["inference_latency"] = inference_latency(model, example, repeats=20, warmup=3)
            evaluated = [r for r in state.history if "eval_accuracy" in r]
            summary["convergence"] = (convergence_speed(evaluated, "eval_accuracy", recipe.target_accuracy)
                                      if evaluated else None)
            summary["target_accuracy"] = recipe.target_accuracy
            for t in techniques:
                if t.name == "diagnostics":  # per-layer statistics over training, plotted in the report
                    summary["diagnostics"] = t.records
            if task.sample_prompt and data.vocab:
                summary["sample"] = _sample_text(model, task.sample_prompt, data.vocab, data.input_shape[0],
                                                 recipe.seed, device)
            _save_weights(run_dir, model, trainer)
            atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
        distributed.barrier(info)
        return RunResult(run_dir=run_dir, summary=summary, trainer=trainer)
    finally:
        distributed.shutdown(info)


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
    from tricklab.data import InMemoryLoader, load_dataset

    try:
        data = load_dataset(task.dataset, data_dir=recipe.data.data_dir, **{**task.dataset_args, **recipe.data.args})
    except TypeError as e:
        raise ConfigError(f"data.args: {e}") from e
    if hasattr(data, "x_train"):  # ArrayDataset
        if recipe.data.val_fraction > 0:
            data = data.with_validation(recipe.data.val_fraction, seed=recipe.seed)
        loader = InMemoryLoader(data.x_train, data.y_train, recipe.batch_size // info.world_size,
                                seed=recipe.seed, rank=info.rank, world_size=info.world_size)
        val = (data.x_val, data.y_val) if data.x_val is not None else None
        test = (data.x_test, data.y_test)
        return PreparedData(loader, val or test, test, val, tuple(data.input_shape), data.num_classes,
                            data.fingerprint(), None, data.x_test, data.meta.get("extra_tests"),
                            data.meta.get("vocab"))
    from tricklab.data.graph import batch_graphs
    from tricklab.data.graph_loaders import FullBatchGraphLoader, GraphBatchLoader, NeighborLoader

    if recipe.data.val_fraction > 0:
        raise ConfigError(f"data.val_fraction: task {task.name!r} has its own validation split; leave it at 0")
    if data.task == "node":
        if info.world_size > 1:
            raise ConfigError(f"task {task.name!r} trains on one whole graph per step: run it in one process")
        graph = data.graph
        val = (graph, "val") if "val" in graph.masks else None
        test = (graph, "test")
        if recipe.data.fanouts:
            loader: Any = NeighborLoader(graph, "train", recipe.batch_size, recipe.data.fanouts, seed=recipe.seed)
        else:
            loader = FullBatchGraphLoader(graph, "train")
        return PreparedData(loader, val or test, test, val, (data.num_features,),
                            data.num_classes, data.fingerprint(), _node_predict, graph)
    loader = GraphBatchLoader(data.split_graphs("train"), recipe.batch_size // info.world_size, seed=recipe.seed,
                              rank=info.rank, world_size=info.world_size)
    val = batch_graphs(data.split_graphs("val")) if "val" in data.splits else None
    test = batch_graphs(data.split_graphs("test"))
    return PreparedData(loader, val or test, test, val, (data.num_features,), data.num_classes, data.fingerprint(),
                        _graph_predict, test)


def _sample_text(model: torch.nn.Module, prompt: str, vocab: list[str], block_size: int, seed: int,
                 device: torch.device, length: int = 300) -> dict[str, Any]:
    """A seeded continuation of ``prompt`` (temperature 0.8, top-k 10) for the report: what the model learned,
    shown rather than measured."""
    from tricklab.models.generate import decode, encode, generate

    temperature, top_k = 0.8, 10
    ids = encode(prompt, vocab).unsqueeze(0).to(device)
    out = generate(model, ids, length, temperature=temperature, top_k=top_k,
                   generator=torch.Generator(device=device).manual_seed(seed), block_size=block_size)
    return {"prompt": prompt, "text": decode(out[0].cpu(), vocab), "temperature": temperature, "top_k": top_k}


def _save_weights(run_dir: Path, model: torch.nn.Module, trainer: Any) -> None:
    from safetensors.torch import save as st_save

    def blob(sd: dict[str, torch.Tensor]) -> bytes:
        return st_save({k: v.detach().cpu().contiguous().clone() for k, v in sd.items()})

    atomic_write_bytes(run_dir / "model.safetensors", blob(model.state_dict()))
    for t in trainer.techniques:
        if "eval_weights" in t.writes and hasattr(t, "averaged_state_dict"):
            atomic_write_bytes(run_dir / "model.eval.safetensors", blob(t.averaged_state_dict(model)))
