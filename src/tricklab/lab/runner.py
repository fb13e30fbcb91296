"""Run one recipe into a run folder, in three steps: set up (check, load, build everything once), fit (train),
summarize (evaluate and measure into a :class:`~tricklab.lab.summary.RunSummary`, then write the results).

Run folder layout: ``recipe.yaml`` (fully resolved), ``env.json``, ``metrics.jsonl``, ``summary.json``
(final metrics, :meth:`RunSummary.to_dict`), ``checkpoints/``, ``model.safetensors`` (final trained weights;
plus ``model.eval.safetensors`` when a weight averager supplies the evaluation weights).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
import torch
from safetensors.torch import save as st_save

from tricklab.errors import ConfigError, UserError
from tricklab.evaluate import convergence_speed, count_parameters, inference_latency, model_size_bytes
from tricklab.io import atomic_write_bytes, atomic_write_text
from tricklab.lab.build import PreparedData, build_techniques, check_recipe, prepare_data
from tricklab.lab.recipe import Recipe, parse_yaml, recipe_from_dict
from tricklab.lab.summary import Convergence, Cost, Evaluation, Latency, RunSummary, TextSample
from tricklab.lab.tasks import Task
from tricklab.models import build_model
from tricklab.models.generate import decode, encode, generate
from tricklab.optim import create_optimizer
from tricklab.train import Trainer, distributed
from tricklab.train.checkpoint import list_checkpoints
from tricklab.train.reproducibility import environment_info, seed_everything
from tricklab.train.state import TrainState
from tricklab.train.technique import Technique

__all__ = ["RunResult", "RunSetup", "fit", "run", "set_up", "summarize"]


@dataclass
class RunResult:
    run_dir: Path
    summary: RunSummary
    trainer: Trainer


@dataclass
class RunSetup:
    """Everything built for one run: each piece once, in the order that fixes the random streams (data, then
    the seed, then the model, the optimizer and the techniques)."""

    recipe: Recipe
    task: Task
    run_dir: Path
    info: distributed.DistInfo
    device: torch.device
    data: PreparedData
    model: torch.nn.Module
    techniques: list[Technique]
    trainer: Trainer


def run(recipe: Recipe, out: str | Path | None = None, resume: bool = False) -> RunResult:
    """Train ``recipe`` into ``out`` (created) and return the final summary; ``resume`` continues the run
    already in ``out`` from its newest valid checkpoint."""
    task = check_recipe(recipe)
    run_dir = Path(out) if out is not None else _default_run_dir(recipe)
    _check_run_folder(recipe, run_dir, resume)
    info = distributed.init(recipe.device)
    try:
        setup = set_up(recipe, task, run_dir, info)
        state, wall = fit(setup, resume)
        summary = summarize(setup, state, wall)
        if info.is_main:
            _save_weights(setup)
            atomic_write_text(run_dir / "summary.json", json.dumps(summary.to_dict(), indent=2))
        distributed.barrier(info)
        return RunResult(run_dir=run_dir, summary=summary, trainer=setup.trainer)
    finally:
        distributed.shutdown(info)


# ------------------------------------------------------------------------------------------------ setup
def _default_run_dir(recipe: Recipe) -> Path:
    return Path("runs") / f"{recipe.task}-{recipe.model.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def _check_run_folder(recipe: Recipe, run_dir: Path, resume: bool) -> None:
    """A new run needs a folder without a run; ``--resume`` needs the same recipe and a checkpoint."""
    if not resume:
        if list_checkpoints(run_dir / "checkpoints") or (run_dir / "summary.json").exists():
            raise UserError(f"{run_dir} already holds a run; pass --resume to continue it, or choose another --out")
        return
    if not (run_dir / "recipe.yaml").is_file():
        raise UserError(f"--resume: {run_dir} holds no run (no recipe.yaml); start it without --resume")
    saved = (run_dir / "recipe.yaml").read_text(encoding="utf-8")
    before = recipe_from_dict(parse_yaml(saved, str(run_dir / "recipe.yaml")))
    if (before.hash(), before.seed) != (recipe.hash(), recipe.seed):
        raise UserError(
            f"--resume: the recipe differs from the one the run in {run_dir} was started with; "
            f"resume with the same recipe and overrides (see {run_dir / 'recipe.yaml'})"
        )
    if not list_checkpoints(run_dir / "checkpoints"):
        raise UserError(f"--resume: {run_dir / 'checkpoints'} holds no checkpoint to resume from")


def _device(recipe: Recipe, info: distributed.DistInfo) -> torch.device:
    device = distributed.device_for(recipe.device, info)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {recipe.device!r} requested but CUDA is not available; use device=cpu")
    if recipe.batch_size % info.world_size:
        raise ConfigError(f"batch_size {recipe.batch_size} must be divisible by the {info.world_size} processes")
    return device


def set_up(recipe: Recipe, task: Task, run_dir: Path, info: distributed.DistInfo) -> RunSetup:
    """Load the data and build the model, optimizer, techniques (once) and trainer; the trainer refuses
    techniques that do not compose."""
    device = _device(recipe, info)
    if recipe.threads is not None:
        torch.set_num_threads(recipe.threads)
    data = prepare_data(task, recipe, info)
    seed_everything(recipe.seed, recipe.deterministic)
    model = build_model(recipe.model.name, data.input_shape, data.num_classes, **recipe.model.args).to(device)
    optimizer = create_optimizer(recipe.optimizer.name, model, lr=recipe.optimizer.lr,
                                 weight_decay=recipe.optimizer.weight_decay, **recipe.optimizer.args)
    wrapped = distributed.wrap(model, device, info)
    techniques = build_techniques(recipe, run_dir, data.num_classes)
    trainer = Trainer(
        wrapped, optimizer, data.loader, loss_fn=task.loss, techniques=techniques, eval_data=data.eval_data,
        eval_every=recipe.eval_every, eval_batch_size=recipe.eval_batch_size,
        metric_fn=task.metric_fn(data.num_classes), predict_fn=data.predict_fn, max_steps=recipe.budget.steps,
        max_epochs=recipe.budget.epochs, max_seconds=recipe.budget.seconds, log_every=recipe.log_every,
        device=device, run_dir=run_dir, rank=info.rank, world_size=info.world_size,
    )
    return RunSetup(recipe, task, run_dir, info, device, data, model, techniques, trainer)


# -------------------------------------------------------------------------------------------------- fit
def _write_run_files(setup: RunSetup) -> None:
    recipe, run_dir = setup.recipe, setup.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "recipe.yaml", recipe.to_yaml())
    env = environment_info(setup.data.fingerprint)
    env.update({"world_size": setup.info.world_size, "recipe_hash": recipe.hash(), "seed": recipe.seed,
                "device": str(setup.device)})
    atomic_write_text(run_dir / "env.json", json.dumps(env, indent=2))


def fit(setup: RunSetup, resume: bool = False) -> tuple[TrainState, float]:
    """Write the resolved recipe and environment, train (from the newest checkpoint with ``resume``);
    returns the final train state and this process's wall-clock seconds in ``fit``."""
    if setup.info.is_main:
        _write_run_files(setup)
    distributed.barrier(setup.info)
    wall0 = time.perf_counter()
    state = setup.trainer.fit(resume_from=setup.run_dir / "checkpoints" if resume else None)
    return state, time.perf_counter() - wall0


# ------------------------------------------------------------------------------------------- summarize
def summarize(setup: RunSetup, state: TrainState, wall_seconds: float) -> RunSummary:
    """Evaluate the trained model on every split and, in the main process, measure its cost, convergence,
    diagnostics and (language models) a text sample."""
    recipe, trainer, data = setup.recipe, setup.trainer, setup.data
    test = Evaluation.from_dict(trainer.evaluate(data.test_data))
    val = None if data.val_data is None else Evaluation.from_dict(trainer.evaluate(data.val_data))
    # further test sets the data set defines (e.g. longer sequences, to measure extrapolation)
    extra = {name: Evaluation.from_dict(trainer.evaluate(split)) for name, split in (data.extra_tests or {}).items()}
    trained = None
    if any("eval_weights" in t.writes for t in setup.techniques):
        # the same run's final trained weights, to measure what the averaging itself bought
        trained = Evaluation.from_dict(trainer.evaluate_trained_weights(data.test_data))
    summary = RunSummary(
        task=recipe.task, model=recipe.model.name, seed=recipe.seed, recipe_hash=recipe.hash(), steps=state.step,
        epochs_completed=state.epoch, stop_reason=state.stop_reason, train_seconds=state.train_seconds,
        wall_seconds_this_process=wall_seconds, nonfinite_steps=state.counters.get("nonfinite_steps", 0),
        test=test, val=val, extra_tests=extra, test_trained_weights=trained,
    )
    if not setup.info.is_main:
        return summary
    return _main_process_measurements(setup, state, summary)


def _main_process_measurements(setup: RunSetup, state: TrainState, summary: RunSummary) -> RunSummary:
    recipe, data, model = setup.recipe, setup.data, setup.model
    example = data.latency_example(recipe.eval_batch_size, setup.device)
    cost = Cost(count_parameters(model), model_size_bytes(model),
                Latency.from_dict(inference_latency(model, example, repeats=20, warmup=3)))
    evaluated = [r for r in state.history if "eval_accuracy" in r]
    reached = convergence_speed(evaluated, "eval_accuracy", recipe.target_accuracy) if evaluated else None
    # per-layer statistics over training, plotted in the report
    diagnostics = next((t.records for t in setup.techniques if t.name == "diagnostics"), None)
    sample = None
    if setup.task.sample_prompt and data.vocab:
        sample = _sample_text(model, setup.task.sample_prompt, data.vocab, data.input_shape[0], recipe.seed,
                              setup.device)
    return dataclasses.replace(summary, cost=cost, convergence=None if reached is None else Convergence.from_dict(
        reached), target_accuracy=recipe.target_accuracy, diagnostics=diagnostics, sample=sample)


def _sample_text(model: torch.nn.Module, prompt: str, vocab: list[str], block_size: int, seed: int,
                 device: torch.device, length: int = 300) -> TextSample:
    """A seeded continuation of ``prompt`` (temperature 0.8, top-k 10) for the report: what the model learned,
    shown rather than measured."""
    temperature, top_k = 0.8, 10
    ids = encode(prompt, vocab).unsqueeze(0).to(device)
    out = generate(model, ids, length, temperature=temperature, top_k=top_k,
                   generator=torch.Generator(device=device).manual_seed(seed), block_size=block_size)
    return TextSample(prompt, decode(out[0].cpu(), vocab), temperature, top_k)


def _weights_blob(state_dict: dict[str, torch.Tensor]) -> bytes:
    return st_save({k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()})


def _save_weights(setup: RunSetup) -> None:
    """The final trained weights, and the evaluation weights of a weight averager beside them."""
    atomic_write_bytes(setup.run_dir / "model.safetensors", _weights_blob(setup.model.state_dict()))
    for t in setup.techniques:
        if "eval_weights" in t.writes and hasattr(t, "averaged_state_dict"):
            atomic_write_bytes(setup.run_dir / "model.eval.safetensors",
                               _weights_blob(t.averaged_state_dict(setup.model)))
