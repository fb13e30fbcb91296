"""Run one recipe into a run folder, in three steps: set up (check, load, build everything once), fit (train),
summarize (evaluate and measure into a :class:`~tricklab.lab.summary.RunSummary`, then write the results).

Run folder layout: ``recipe.yaml`` (fully resolved), ``env.json``, ``metrics.jsonl``, ``summary.json``
(final metrics, :meth:`RunSummary.to_dict`), ``checkpoints/``, ``model.safetensors`` (final trained weights;
plus ``model.eval.safetensors`` when a weight averager supplies the evaluation weights).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as st_save

from tricklab.compress.metrics import nonzero_parameters, weight_sparsity
from tricklab.errors import CheckpointError, ConfigError, UserError
from tricklab.evaluate import count_parameters, inference_latency, model_size_bytes
from tricklab.evaluate.energy import EnergyEstimate, EnergyMeter
from tricklab.io import atomic_write_bytes, atomic_write_text, write_safely
from tricklab.lab.build import PreparedData, build_techniques, prepare_data, resolve_task, resolve_techniques, validate
from tricklab.lab.differences import describe_changes, recipe_changes
from tricklab.lab.kinds import ResolvedTask
from tricklab.lab.lock import folder_lock
from tricklab.lab.loops import run_loop
from tricklab.lab.recipe import Recipe, apply_override, load_recipe, parse_yaml, recipe_from_dict
from tricklab.lab.summary import AttentionMaps, Convergence, Cost, Evaluation, Latency, RunSummary, TextSample
from tricklab.lab.tasks import LoopTask, Task
from tricklab.models import build_model
from tricklab.models.generate import decode, encode, generate
from tricklab.models.vision.common import to_images
from tricklab.models.vision.vit import image_rollout
from tricklab.optim import create_optimizer
from tricklab.train import Trainer, distributed
from tricklab.train.checkpoint import list_checkpoints, load_checkpoint
from tricklab.train.reproducibility import environment_info, seed_everything
from tricklab.train.state import TrainState
from tricklab.train.technique import Technique

__all__ = ["CONCURRENT_RUNS_ENV", "RunResult", "RunSetup", "fit", "resume_recipe", "run", "saved_recipe", "set_up",
           "steps_to_target", "summarize", "verified_checkpoint"]

#: Set by the ablation's worker pool: how many runs share the machine, recorded in each run's env.json.
CONCURRENT_RUNS_ENV = "TRICKLAB_CONCURRENT_RUNS"


def say(message: str) -> None:
    """A line on stderr that a closed pipe cannot turn into an error."""
    write_safely(sys.stderr, message + "\n")


@dataclass
class RunResult:
    """A finished run: its folder, its summary, its metric history and (supervised runs) the trainer."""

    run_dir: Path
    summary: RunSummary
    trainer: Trainer | None
    history: list[dict[str, Any]] = field(default_factory=list)


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
    resolved: ResolvedTask | None = None  # the task's kind, loss, evaluation and declared metrics
    energy: EnergyEstimate | None = None  # this process's training energy, measured by fit


def run(recipe: Recipe, out: str | Path | None = None, resume: bool = False) -> RunResult:
    """Train ``recipe`` into ``out`` (created) and return the final summary; ``resume`` continues the run
    already in ``out`` from its newest valid checkpoint.

    Everything that can be refused is refused before any data is loaded or any file is touched: names,
    arguments and whether the techniques compose; a folder another process is writing (the folder lock); an
    unwritable folder; on resume, a recipe that differs from the run's and a folder without a checkpoint that
    verifies."""
    task = validate(recipe)
    recipe = resolve_techniques(recipe)
    run_dir = Path(out) if out is not None else _default_run_dir(recipe)
    if resume:
        _check_resumable(recipe, run_dir)
    with folder_lock(run_dir, "run folder", enabled=distributed.env_info().is_main):
        if isinstance(task, LoopTask):
            # a loop task checkpoints itself (run_dir/checkpoints) and verifies what it loads
            if not resume:
                _check_fresh(run_dir)
            summary, history = run_loop(recipe, task, run_dir, resume)
            return RunResult(run_dir=run_dir, summary=summary, trainer=None, history=history)
        checkpoint = verified_checkpoint(run_dir) if resume else None
        if not resume:
            _check_fresh(run_dir)
        return _train(recipe, task, run_dir, checkpoint)


def _train(recipe: Recipe, task: Task, run_dir: Path, checkpoint: Path | None) -> RunResult:
    """One supervised run with the trainer (every process under torchrun), its summary written by the main one."""
    info = distributed.init(recipe.device)
    try:
        setup = set_up(recipe, task, run_dir, info)
        state, wall = fit(setup, checkpoint)
        summary = summarize(setup, state, wall)
        if info.is_main:
            _save_weights(setup)
            atomic_write_text(run_dir / "summary.json", json.dumps(summary.to_dict(), indent=2))
            _record_load(run_dir, "load_average_end")
        distributed.barrier(info)
        return RunResult(run_dir=run_dir, summary=summary, trainer=setup.trainer, history=setup.trainer.state.history)
    finally:
        distributed.shutdown(info)


# ------------------------------------------------------------------------------------------------ setup
def _default_run_dir(recipe: Recipe) -> Path:
    return Path("runs") / f"{recipe.task}-{recipe.model.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def _check_fresh(run_dir: Path) -> None:
    if list_checkpoints(run_dir / "checkpoints") or (run_dir / "summary.json").exists():
        raise UserError(f"{run_dir} already holds a run; pass --resume to continue it, or choose another --out")


def saved_recipe(run_dir: Path) -> dict[str, Any]:
    """The recipe a run folder was started with (``recipe.yaml``), as a dict."""
    path = run_dir / "recipe.yaml"
    if not path.is_file():
        raise UserError(f"--resume: {run_dir} holds no run (no recipe.yaml); start it without --resume")
    data = parse_yaml(path.read_text(encoding="utf-8"), str(path))
    if not isinstance(data, dict):
        raise UserError(f"--resume: {path} is not a recipe (a YAML mapping)")
    return data


def resume_recipe(run_dir: Path, recipe_path: str | None, overrides: Sequence[str]) -> Recipe:
    """The recipe to resume the run in ``run_dir`` with: the one saved in the folder, with ``overrides``
    applied to it (or a recipe file with its overrides, when one is named). :func:`run` refuses it when it
    changes what the run computes or its seed; the progress display and the thread count may change."""
    if recipe_path is not None:
        return load_recipe(recipe_path, list(overrides))
    data = copy.deepcopy(saved_recipe(run_dir))
    for o in overrides:
        apply_override(data, o)
    return recipe_from_dict(data)


def _check_resumable(recipe: Recipe, run_dir: Path) -> None:
    """``--resume`` needs the recipe the run was started with (its hash and seed) and a checkpoint."""
    before = resolve_techniques(recipe_from_dict(saved_recipe(run_dir)))
    if (before.hash(), before.seed) != (recipe.hash(), recipe.seed):
        found = recipe_changes(before.to_dict(), recipe.to_dict())
        if before.seed != recipe.seed:
            found.insert(0, ("seed", before.seed, recipe.seed))
        raise UserError(
            f"--resume: the recipe differs from the one the run in {run_dir} was started with "
            f"({describe_changes(found, 'in the run', 'given')}); resume without overrides to continue it as "
            f"it was (see {run_dir / 'recipe.yaml'}), or start a new run into another --out"
        )
    if not list_checkpoints(run_dir / "checkpoints"):
        raise UserError(f"--resume: {run_dir / 'checkpoints'} holds no checkpoint to resume from")


def verified_checkpoint(run_dir: Path) -> Path:
    """The newest checkpoint of ``run_dir`` that loads and verifies, checked before anything is written
    (corrupt newer ones are reported and skipped); none is a :class:`UserError` naming every file tried."""
    folder = run_dir / "checkpoints"
    problems = []
    for path in reversed(list_checkpoints(folder)):
        try:
            load_checkpoint(path)
            return path
        except CheckpointError as e:
            problems.append(str(e))
            say(f"warning: {e}; falling back to the previous checkpoint")
    raise UserError(f"--resume: no valid checkpoint in {folder}: " + "; ".join(problems)
                    + f". Nothing in {run_dir} was changed; start the run again into another --out")


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
    resolved = resolve_task(task, recipe, data)
    seed_everything(recipe.seed, recipe.deterministic)
    model = build_model(recipe.model.name, data.input_shape, data.num_classes, **recipe.model.args).to(device)
    optimizer = create_optimizer(recipe.optimizer.name, model, lr=recipe.optimizer.lr,
                                 weight_decay=recipe.optimizer.weight_decay, **recipe.optimizer.args)
    wrapped = distributed.wrap(model, device, info)
    techniques = build_techniques(recipe, run_dir, data.num_classes)
    trainer = Trainer(
        wrapped, optimizer, data.loader, loss_fn=resolved.loss, techniques=techniques, eval_data=data.eval_data,
        eval_every=recipe.eval_every, eval_batch_size=recipe.eval_batch_size,
        metric_fn=resolved.metric_fn, predict_fn=data.predict_fn, max_steps=recipe.budget.steps,
        max_epochs=recipe.budget.epochs, max_seconds=recipe.budget.seconds, log_every=recipe.log_every,
        device=device, run_dir=run_dir, rank=info.rank, world_size=info.world_size,
    )
    return RunSetup(recipe, task, run_dir, info, device, data, model, techniques, trainer, resolved)


# -------------------------------------------------------------------------------------------------- fit
def _write_run_files(setup: RunSetup) -> None:
    recipe, run_dir = setup.recipe, setup.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "recipe.yaml", recipe.to_yaml())
    env = environment_info(setup.data.fingerprint)
    env.update({"world_size": setup.info.world_size, "recipe_hash": recipe.hash(), "seed": recipe.seed,
                "device": str(setup.device)})
    env.update({"concurrent_runs": int(os.environ.get(CONCURRENT_RUNS_ENV, "1")), "load_average_start": _load()})
    atomic_write_text(run_dir / "env.json", json.dumps(env, indent=2))


def _load() -> list[float] | None:
    # the 1-, 5- and 15-minute load averages: whether other work shared the cores while this run was timed
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _record_load(run_dir: Path, key: str) -> None:
    path = run_dir / "env.json"
    try:
        env = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    env[key] = _load()
    atomic_write_text(path, json.dumps(env, indent=2))


def fit(setup: RunSetup, resume: bool | Path = False) -> tuple[TrainState, float]:
    """Write the resolved recipe and environment, train (from ``resume``, a checkpoint file, or with
    ``resume=True`` the newest valid one); returns the final train state and this process's wall-clock
    seconds in ``fit``."""
    if setup.info.is_main:
        _write_run_files(setup)
    distributed.barrier(setup.info)
    wall0 = time.perf_counter()
    start = setup.run_dir / "checkpoints" if resume is True else resume or None
    # this process's CPU time x a stated power per core (docs/explain/energy.md): other work on a shared
    # machine stays out of the estimate; a resumed run counts the part it trained
    meter = EnergyMeter().start()
    state = setup.trainer.fit(resume_from=start)
    setup.energy = meter.stop()
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
        task_kind=setup.resolved.kind if setup.resolved else None,
        metrics=setup.resolved.metrics if setup.resolved else None,
    )
    if not setup.info.is_main:
        return summary
    return _main_process_measurements(setup, state, summary)


def _main_process_measurements(setup: RunSetup, state: TrainState, summary: RunSummary) -> RunSummary:
    recipe, data, model = setup.recipe, setup.data, setup.model
    example = data.latency_example(recipe.eval_batch_size, setup.device)
    cost = Cost(count_parameters(model), model_size_bytes(model),
                Latency.from_dict(inference_latency(model, example, repeats=20, warmup=3)),
                nonzero_parameters(model), weight_sparsity(model))
    reached = steps_to_target(state.history, recipe.target_accuracy, recipe.eval_every)
    # per-layer statistics over training, plotted in the report
    diagnostics = next((t.records for t in setup.techniques if t.name == "diagnostics"), None)
    sample = None
    if setup.task.sample_prompt and data.vocab:
        sample = _sample_text(model, setup.task.sample_prompt, data.vocab, data.input_shape[0], recipe.seed,
                              setup.device)
    return dataclasses.replace(summary, cost=cost, convergence=reached, target_accuracy=recipe.target_accuracy,
                               diagnostics=diagnostics, sample=sample,
                               robustness=_test_evaluation(setup, setup.recipe.robustness),
                               faithfulness=_test_evaluation(setup, setup.recipe.faithfulness),
                               energy=None if setup.energy is None else setup.energy.to_dict(),
                               attention=_attention_maps(setup))


def steps_to_target(history: Sequence[dict[str, Any]], target: float, eval_every: int | None,
                    key: str = "eval_accuracy") -> Convergence | None:
    """When the evaluated ``key`` first reached ``target``, interpolated linearly between the evaluation
    before (below the target) and the first one at or above it:

        step = s0 + (target - a0) / (a1 - a0) * (s1 - s0)      (seconds likewise)

    Evaluations are ``eval_every`` steps apart, so the first evaluation at the target only says the crossing
    happened in (s0, s1]; reporting s1 would give every run a multiple of ``eval_every`` and two runs that
    cross anywhere in the same interval a difference of exactly 0 (or 500, with no spread). The interpolated
    step is an estimate inside that interval (exact when accuracy rises linearly between the two
    evaluations); ``step_evaluated`` keeps s1 and ``resolution`` the spacing. A target reached at the first
    evaluation has nothing below it to interpolate from: its step is s1, marked not interpolated."""
    prev: dict[str, Any] | None = None
    for row in history:
        a1 = row.get(key)
        if not isinstance(a1, (int, float)) or isinstance(a1, bool) or math.isnan(a1):
            continue
        if a1 >= target:
            s1, t1 = row["step"], row.get("seconds")
            if prev is None:
                return Convergence(s1, t1, a1, step_evaluated=s1, interpolated=False, resolution=eval_every)
            f = (target - float(prev[key])) / (a1 - float(prev[key]))
            t0 = prev.get("seconds")
            seconds = None if t0 is None or t1 is None else t0 + f * (t1 - t0)
            return Convergence(prev["step"] + f * (s1 - prev["step"]), seconds, a1, step_evaluated=s1,
                               interpolated=True, resolution=eval_every)
        prev = row
    return None


def _evaluation_model(setup: RunSetup) -> torch.nn.Module:
    """The weights evaluation uses: a weight averager's (EMA, SWA) in a copy of the model, else the model."""
    for t in setup.techniques:
        if "eval_weights" in t.writes and hasattr(t, "averaged_state_dict"):
            model = copy.deepcopy(setup.model)
            model.load_state_dict(t.averaged_state_dict(setup.model))
            return model
    return setup.model


def _test_evaluation(setup: RunSetup, config: Any) -> Evaluation | None:
    """A recipe section's evaluation of the test split with the evaluation weights: ``robustness`` (accuracy
    under attacks and noise) or ``faithfulness`` (deletion / insertion areas of attributions); None if unset."""
    if config is None:
        return None
    x, y = setup.data.test_data
    return Evaluation(dict(config.evaluate(_evaluation_model(setup), x.to(setup.device), y.to(setup.device))))


def _attention_maps(setup: RunSetup, n: int = 6) -> AttentionMaps | None:
    """Attention rollout of the first ``n`` test images with the evaluation weights, for the report; None for
    models without full-sequence attention (everything but ViT-like models) and for non-image inputs."""
    model = _evaluation_model(setup)
    shape = getattr(model, "image_shape", None)  # (C, H, W) the vision models were built for
    test = setup.data.test_data
    if not hasattr(model, "forward_with_attention") or shape is None or not isinstance(test, tuple):
        return None  # graph tasks keep their test split in a Graph, not (inputs, targets)
    x, y = test
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor) or y.dim() != 1:
        return None
    images = to_images(x[:n], shape)
    out = image_rollout(model, images.to(setup.device))
    if out is None:
        return None
    logits, maps = out

    def rounded(t: torch.Tensor) -> list[Any]:
        return [[[round(float(v), 4) for v in row] for row in img] for img in t.cpu()]

    return AttentionMaps("attention rollout (Abnar & Zuidema 2020), heads averaged, residual included",
                         rounded(images[:, 0]), rounded(maps), [int(v) for v in y[:n]],
                         [int(v) for v in logits.argmax(-1).cpu()])


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
