"""Distillation helpers: a teacher from a saved run, and FitNets hint training.

* :func:`load_teacher` builds the model of a finished run folder (``recipe.yaml`` + ``model.eval.safetensors`` or
  ``model.safetensors``, as ``tricklab run`` writes them), frozen and in evaluation mode. A pruned teacher's
  ``weight_mask`` buffers are restored with it. Self-distillation (born-again networks, Furlanello et al. 2018)
  is the same call with a teacher run of the student's own architecture.
* FitNets (Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015, eq. 3): a regressor ``r`` maps the
  student's guided layer ``v_g(x)`` to the shape of the teacher's hint layer ``u_h(x)`` and the student is
  trained on

      L_HT = 1/2 || u_h(x) - r(v_g(x)) ||^2

  (summed over features, averaged over the batch here). :func:`hint_loss` is that loss, :class:`HintRegressor`
  the regressor (a 1x1 convolution for feature maps, a linear layer for vectors) and :func:`capture` reads an
  intermediate output with a forward hook.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file
from torch import nn

from tricklab.compress.pruning import MASK, apply_masks_
from tricklab.compress.quantize import FakeQuant, convert, prepare
from tricklab.data import load_dataset
from tricklab.errors import UserError
from tricklab.models import build_model

__all__ = ["load_run_model", "load_teacher", "hint_loss", "HintRegressor", "capture"]


def _read_recipe(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "recipe.yaml"
    if not path.is_file():
        raise UserError(f"{run_dir} holds no run: recipe.yaml is missing (train one with "
                        f"`tricklab run RECIPE --out DIR` and pass DIR)")
    try:
        recipe = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(recipe, dict) or not isinstance(recipe.get("model"), dict) or "task" not in recipe:
        raise UserError(f"{path}: expected a resolved recipe with 'task' and 'model' keys")
    return recipe


def load_run_model(run_dir: str | Path, input_shape: tuple[int, ...] | None = None,
                   num_classes: int | None = None) -> tuple[nn.Module, Any]:
    """The trained model of a finished run folder (evaluation mode) and its data set (None when ``input_shape``
    and ``num_classes`` are given: the data set is then not loaded)."""
    run_dir = Path(run_dir)
    recipe = _read_recipe(run_dir)
    weights = run_dir / "model.eval.safetensors"
    if not weights.is_file():
        weights = run_dir / "model.safetensors"
    if not weights.is_file():
        raise UserError(f"{run_dir} has no model.safetensors: the run did not finish (resume it)")
    data = None
    if input_shape is None or num_classes is None:
        data_cfg = recipe.get("data") or {}
        data = load_dataset(str(recipe["task"]), data_dir=data_cfg.get("data_dir"), **(data_cfg.get("args") or {}))
        input_shape, num_classes = data.input_shape, data.num_classes
    model = build_model(recipe["model"]["name"], input_shape, num_classes, **(recipe["model"].get("args") or {}))
    state = load_file(str(weights))
    masks = {k[: -len(MASK) - 1]: v for k, v in state.items() if k.endswith("." + MASK)}
    if masks:  # a pruned model: register its mask buffers so the state dict fits
        apply_masks_(model, masks)
    if any(k.endswith(".weight_q") for k in state):  # an int8 model (the qat technique converts at the end)
        model = _int8_layout(model, {k[: -len(".weight_q")] for k in state if k.endswith(".weight_q")})
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise UserError(f"{weights} does not fit the model its recipe builds: {e}") from None
    return model.eval(), data


def _int8_layout(model: nn.Module, int8_layers: set[str]) -> nn.Module:
    """``model`` with the layers named in ``int8_layers`` replaced by empty ``Int8Layer`` s (their values come from
    the state dict loaded next): prepare, a placeholder input range, convert."""
    names = [n for n, m in model.named_modules() if n and n not in int8_layers
             and any(True for _ in m.parameters(recurse=False))]  # everything else stays float
    prepared = prepare(model, mode="minmax", skip=names, inplace=True)
    for m in prepared.modules():
        if isinstance(m, FakeQuant):
            m.input_min.fill_(0.0)
            m.input_max.fill_(1.0)
    return convert(prepared, inplace=True)


def load_teacher(run_dir: str | Path, input_shape: tuple[int, ...] | None = None,
                 num_classes: int | None = None) -> nn.Module:
    """The trained model of ``run_dir``, frozen (no gradients) and in evaluation mode.

    ``input_shape`` / ``num_classes`` default to those of the run's data set (loaded from its recipe)."""
    model, _ = load_run_model(run_dir, input_shape, num_classes)
    model.requires_grad_(False)
    return model


def hint_loss(student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
    """FitNets eq. 3: 1/2 ||u - r(v)||^2 per example (summed over all non-batch dimensions), batch mean.

    ``student_features`` is the regressor's output r(v_g(x)); ``teacher_features`` u_h(x) (detached)."""
    if student_features.shape != teacher_features.shape:
        raise ValueError(f"hint loss: the regressed student features {tuple(student_features.shape)} must have the "
                         f"teacher hint's shape {tuple(teacher_features.shape)}; size the HintRegressor to match")
    diff = (teacher_features.detach() - student_features).flatten(1)  # (B, D)
    return 0.5 * diff.square().sum(1).mean()


class HintRegressor(nn.Module):
    """r(v): a 1x1 convolution (feature maps (B, C, *spatial), 1-D or 2-D) or a linear map (vectors (B, C))
    from the student's ``in_channels`` to the teacher's ``out_channels``."""

    def __init__(self, in_channels: int, out_channels: int, dims: int = 0) -> None:
        super().__init__()
        if dims == 0:
            self.map: nn.Module = nn.Linear(in_channels, out_channels)
        elif dims in (1, 2):
            self.map = (nn.Conv1d if dims == 1 else nn.Conv2d)(in_channels, out_channels, 1)
        else:
            raise ValueError(f"HintRegressor dims must be 0 (vectors), 1 or 2 (feature maps), got {dims!r}")

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.map(v)


@contextlib.contextmanager
def capture(model: nn.Module, layer: str) -> Iterator[dict[str, torch.Tensor]]:
    """Within the block, ``out["features"]`` holds the output of ``model``'s submodule ``layer`` from the last
    forward (with its graph, for a loss)."""
    try:
        module = model.get_submodule(layer)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n]
        raise UserError(f"no layer {layer!r} in {type(model).__name__}; its layers: {names}") from None
    out: dict[str, torch.Tensor] = {}

    def hook(_m: nn.Module, _inp: Any, output: torch.Tensor) -> None:
        out["features"] = output

    handle = module.register_forward_hook(hook)
    try:
        yield out
    finally:
        handle.remove()
