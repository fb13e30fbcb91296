"""A saved lab run as the backbone of a new task: rebuild the run's model from its resolved recipe, load its
trained weights (the final ``model.safetensors``, the weight averager's ``model.eval.safetensors``, or a training
checkpoint), and give it a new head for the new classes.

A run folder written by ``tricklab run`` holds ``recipe.yaml`` (the resolved recipe: model name and arguments,
task, data arguments), ``model.safetensors`` (final weights) and ``checkpoints/step-*.json`` + ``.safetensors``
(the trainer's atomic, checksummed checkpoints, whose ``model`` entry is the model's state dict). The model is
rebuilt with :func:`tricklab.models.build_model` for the input shape and class count of the run's data set (the
task name, as for every classification task, unless ``dataset`` says otherwise); every tensor must fit
(``load_state_dict(strict=True)``), so a wrong folder is refused rather than half-loaded.

:func:`replace_head` swaps the output layer (by default the last ``nn.Linear`` in module order) for a fresh one
with ``num_classes`` outputs; the rest is the pretrained backbone, ready for ``freeze_except``, gradual unfreezing,
``inject_adapters`` or ``inject_lora``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file
from torch import nn

from tricklab.data.datasets import load_dataset
from tricklab.errors import CheckpointError, ConfigError, UserError
from tricklab.models import build_model
from tricklab.train.checkpoint import list_checkpoints, load_checkpoint

__all__ = ["SavedRun", "backbone_from_run", "load_run_model", "replace_head"]

WEIGHTS = ("final", "eval", "checkpoint")


@dataclass
class SavedRun:
    """The rebuilt model with its weights, the recipe it was trained with, and where the weights came from."""

    model: nn.Module
    recipe: dict[str, Any]
    weights: Path
    input_shape: tuple[int, ...]
    num_classes: int


def _recipe(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "recipe.yaml"
    if not path.is_file():
        raise UserError(f"{run_dir} is not a run folder: no recipe.yaml (give a folder written by `tricklab run`)")
    try:
        recipe = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(recipe, dict) or not isinstance(recipe.get("model"), dict) or "task" not in recipe:
        raise UserError(f"{path}: expected a resolved recipe with 'task' and 'model' keys")
    return recipe


def _state(run_dir: Path, weights: str, checkpoint: str | Path | None) -> tuple[dict[str, torch.Tensor], Path]:
    if weights == "checkpoint":
        if checkpoint is not None:
            path = Path(checkpoint)
            path = path if path.is_absolute() or path.exists() else run_dir / "checkpoints" / path
        else:
            found = list_checkpoints(run_dir / "checkpoints")
            if not found:
                raise UserError(f"{run_dir / 'checkpoints'} holds no checkpoint; use weights='final'")
            path = found[-1]
        try:
            return load_checkpoint(path)["model"], path  # verified (both SHA-256 sums) before use
        except KeyError:
            raise CheckpointError(f"checkpoint {path} has no 'model' entry: not a trainer checkpoint") from None
    path = run_dir / ("model.eval.safetensors" if weights == "eval" else "model.safetensors")
    if not path.is_file():
        raise UserError(f"{path} is missing: the run did not finish (resume it with --resume, or load a training "
                        f"checkpoint with weights='checkpoint')")
    return load_file(str(path)), path


def load_run_model(run_dir: str | Path, *, weights: str = "final", checkpoint: str | Path | None = None,
                   dataset: str | None = None) -> SavedRun:
    """Rebuild the model of the run in ``run_dir`` and load its weights: ``weights`` is "final"
    (``model.safetensors``), "eval" (``model.eval.safetensors``, a weight averager's) or "checkpoint" (the newest
    verified training checkpoint, or the one named by ``checkpoint``: a path or a file name in ``checkpoints/``)."""
    if weights not in WEIGHTS:
        raise ConfigError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    if checkpoint is not None and weights != "checkpoint":
        raise ConfigError("checkpoint= names a training checkpoint: pass weights='checkpoint' with it")
    run_dir = Path(run_dir)
    recipe = _recipe(run_dir)
    state, path = _state(run_dir, weights, checkpoint)
    data_cfg = recipe.get("data") or {}
    data = load_dataset(dataset or str(recipe["task"]), data_dir=data_cfg.get("data_dir"),
                        **(data_cfg.get("args") or {}))
    model = build_model(recipe["model"]["name"], data.input_shape, data.num_classes,
                        **(recipe["model"].get("args") or {}))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise UserError(f"{path} does not fit the model {recipe['model']['name']!r} the recipe builds: {e}") from None
    return SavedRun(model, recipe, path, tuple(data.input_shape), int(data.num_classes))


def replace_head(model: nn.Module, num_classes: int, head: str | None = None) -> str:
    """Replace the linear layer ``head`` (a module name; default: the last ``nn.Linear`` of ``model``) by a fresh
    ``nn.Linear(in_features, num_classes)`` on the same device and dtype, in place; returns its name."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
    modules = dict(model.named_modules())
    if head is None:
        linear = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
        if not linear:
            raise ConfigError("replace_head: the model has no nn.Linear layer; name the head with head=...")
        head = linear[-1]
    old = modules.get(head)
    if not isinstance(old, nn.Linear):
        raise ConfigError(f"replace_head: {head!r} is not an nn.Linear of the model (linear layers: "
                          f"{[n for n, m in modules.items() if isinstance(m, nn.Linear)]})")
    new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None).to(old.weight.device, old.weight.dtype)
    parent, _, child = head.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)
    return head


def backbone_from_run(run_dir: str | Path, num_classes: int, *, head: str | None = None, weights: str = "final",
                      checkpoint: str | Path | None = None, dataset: str | None = None) -> nn.Module:
    """The saved run's model with a new ``num_classes``-way head: the backbone for fine-tuning, adapters or LoRA."""
    model = load_run_model(run_dir, weights=weights, checkpoint=checkpoint, dataset=dataset).model
    replace_head(model, num_classes, head)
    return model
