"""Shared plumbing of the attribution methods: argument checks, targets, evaluation mode, batched gradients.

Every method takes ``(model, inputs, target)``:

* ``model``: an ``nn.Module`` mapping a batch ``(B, *shape)`` to logits ``(B, C)``;
* ``inputs``: a float tensor ``(B, *shape)`` (one example is a batch of one);
* ``target``: the class explained per example: ``None`` (the model's prediction), an int (the same class for
  every example) or a sequence / ``(B,)`` tensor of class indices.

While a method runs the model is in evaluation mode (dropout off, BatchNorm on its running statistics);
:func:`eval_mode` restores every submodule's own ``training`` flag afterwards, also when the call raises.
Gradients are taken with ``torch.autograd.grad`` with respect to the inputs only, so the parameters' ``.grad``
fields are never touched.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from tricklab.errors import UserError

TargetLike = int | Sequence[int] | Tensor | None

#: default largest number of examples the model sees in one forward pass when a method expands the batch
#: (integration steps, noise samples, coalitions); lower it to bound memory, raise it for speed.
DEFAULT_BATCH_SIZE = 1024


def check_model(model: object, method: str) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise UserError(f"{method}: model must be a torch.nn.Module, got {type(model).__name__}")
    return model


def check_inputs(inputs: object, method: str) -> Tensor:
    """A floating-point batch ``(B, *shape)`` with B >= 1, detached from any graph."""
    if not isinstance(inputs, Tensor):
        raise UserError(f"{method}: inputs must be a torch.Tensor batch (B, ...), got {type(inputs).__name__}")
    if inputs.dim() < 1 or inputs.shape[0] < 1:
        raise UserError(f"{method}: inputs must have a batch dimension with at least one example, "
                        f"got shape {tuple(inputs.shape)}; use x.unsqueeze(0) for a single example")
    if not inputs.is_floating_point():
        raise UserError(f"{method}: inputs must be floating point (gradients need it), got {inputs.dtype}")
    return inputs.detach()


def check_positive_int(value: object, name: str, method: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"{method}: {name} must be an int >= {minimum}, got {value!r}")
    return value


def check_batch_size(batch_size: int | None, method: str) -> int:
    if batch_size is None:
        return DEFAULT_BATCH_SIZE
    return check_positive_int(batch_size, "batch_size", method)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in evaluation mode for the block; restore each submodule's own flag afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def logits_of(model: nn.Module, x: Tensor, method: str) -> Tensor:
    out = model(x)
    if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != x.shape[0]:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise UserError(f"{method}: the model must return logits of shape (B, C) for a batch of B = {x.shape[0]}, "
                        f"got {shape}")
    return out


def resolve_target(model: nn.Module, inputs: Tensor, target: TargetLike, method: str,
                   batch_size: int = DEFAULT_BATCH_SIZE) -> Tensor:
    """``(B,)`` int64 class indices: the given ones, or the model's predictions when ``target`` is None."""
    b = inputs.shape[0]
    if target is None:
        with torch.no_grad():
            preds = [logits_of(model, chunk, method).argmax(1) for chunk in inputs.split(batch_size)]
        return torch.cat(preds)
    if isinstance(target, bool):
        raise UserError(f"{method}: target must be a class index, a list of them or None, got {target!r}")
    if isinstance(target, int):
        return torch.full((b,), target, dtype=torch.long, device=inputs.device)
    t = torch.as_tensor(target, device=inputs.device)
    if t.dim() == 0:
        t = t.expand(b)
    if t.dtype.is_floating_point or t.dtype == torch.bool or t.shape != (b,):
        raise UserError(f"{method}: target must be None, an int or {b} integer class indices (one per example), "
                        f"got {t.dtype} of shape {tuple(t.shape)}")
    return t.long()


def check_target_range(target: Tensor, num_classes: int, method: str) -> None:
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= num_classes):
        raise UserError(f"{method}: target classes must lie in 0..{num_classes - 1}, got "
                        f"{sorted(set(target.tolist()))}")


def target_scores(logits: Tensor, target: Tensor, method: str) -> Tensor:
    """``logits[i, target[i]]`` for each row (``(N,)``)."""
    check_target_range(target, logits.shape[1], method)
    return logits.gather(1, target.view(-1, 1)).squeeze(1)


def input_gradients(model: nn.Module, x: Tensor, target: Tensor, method: str,
                    batch_size: int = DEFAULT_BATCH_SIZE) -> tuple[Tensor, Tensor]:
    """``d logit_target / d x`` for every row of ``x`` (same shape) and the scores themselves ``(N,)``.

    The rows are independent (the model is in evaluation mode), so the gradient of the summed scores with
    respect to the batch is the per-row gradient; chunks of ``batch_size`` rows bound the memory.
    """
    grads, scores = [], []
    for xc, tc in zip(x.split(batch_size), target.split(batch_size)):
        xc = xc.detach().requires_grad_(True)
        with torch.enable_grad():
            s = target_scores(logits_of(model, xc, method), tc, method)
            (g,) = torch.autograd.grad(s.sum(), xc)
        grads.append(g)
        scores.append(s.detach())
    return torch.cat(grads), torch.cat(scores)


def forward_scores(model: nn.Module, x: Tensor, target: Tensor, method: str,
                   batch_size: int = DEFAULT_BATCH_SIZE, probabilities: bool = False) -> Tensor:
    """Target logits (or softmax probabilities) for every row of ``x``, without gradients, in chunks."""
    out = []
    with torch.no_grad():
        for xc, tc in zip(x.split(batch_size), target.split(batch_size)):
            logits = logits_of(model, xc, method)
            if probabilities:
                logits = logits.softmax(1)
            out.append(target_scores(logits, tc, method))
    return torch.cat(out)


def broadcast_baseline(baseline: Tensor | float | None, inputs: Tensor, method: str,
                       name: str = "baselines") -> Tensor:
    """One reference input per example ``(B, *shape)``: None -> zeros, a number, one example ``shape`` or
    ``(1, *shape)``, or ``(B, *shape)``."""
    if baseline is None:
        return torch.zeros_like(inputs)
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return torch.full_like(inputs, float(baseline))
    if not isinstance(baseline, Tensor):
        raise UserError(f"{method}: {name} must be None, a number or a tensor, got {type(baseline).__name__}")
    b = baseline.detach().to(device=inputs.device, dtype=inputs.dtype)
    if b.shape == inputs.shape[1:]:
        b = b.unsqueeze(0)
    try:
        return b.expand_as(inputs).contiguous()
    except RuntimeError:
        raise UserError(f"{method}: {name} of shape {tuple(baseline.shape)} does not match inputs "
                        f"{tuple(inputs.shape)}: give one example {tuple(inputs.shape[1:])}, (1, ...) or one per "
                        f"example {tuple(inputs.shape)}") from None


def baseline_distribution(baselines: Tensor | float | None, inputs: Tensor, method: str) -> Tensor:
    """A set of reference inputs ``(N, *shape)`` for the SHAP methods: None -> one zero input."""
    if baselines is None:
        return torch.zeros((1, *inputs.shape[1:]), dtype=inputs.dtype, device=inputs.device)
    if isinstance(baselines, (int, float)) and not isinstance(baselines, bool):
        return torch.full((1, *inputs.shape[1:]), float(baselines), dtype=inputs.dtype, device=inputs.device)
    if not isinstance(baselines, Tensor):
        raise UserError(f"{method}: baselines must be None, a number or a tensor (N, ...), got "
                        f"{type(baselines).__name__}")
    b = baselines.detach().to(device=inputs.device, dtype=inputs.dtype)
    if b.shape == inputs.shape[1:]:
        b = b.unsqueeze(0)
    if b.shape[1:] != inputs.shape[1:] or b.shape[0] < 1:
        shape = ", ".join(map(str, inputs.shape[1:]))
        raise UserError(f"{method}: baselines must be a set of reference inputs (N, {shape}) with N >= 1, got "
                        f"{tuple(baselines.shape)}")
    return b


def find_layer(model: nn.Module, layer: str | nn.Module, method: str) -> nn.Module:
    """The submodule named ``layer`` (a dotted name from ``model.named_modules()``) or ``layer`` itself."""
    if isinstance(layer, nn.Module):
        if not any(m is layer for m in model.modules()):
            raise UserError(f"{method}: the given layer {type(layer).__name__} is not a submodule of the model")
        return layer
    modules = dict(model.named_modules())
    if not isinstance(layer, str) or layer not in modules or layer == "":
        names = [n for n in modules if n]
        close = difflib.get_close_matches(str(layer), names, n=3, cutoff=0.4)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        convs = [n for n, m in modules.items() if isinstance(m, (nn.Conv1d, nn.Conv2d))]
        raise UserError(f"{method}: the model has no layer named {layer!r}.{hint} Its conv layers: "
                        f"{', '.join(convs) or '(none)'}; every name: {', '.join(names)}")
    return modules[layer]


_BLOCK_TAIL = (nn.BatchNorm1d, nn.BatchNorm2d, nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.ReLU6)


def last_conv_layer(model: nn.Module) -> str:
    """Grad-CAM's default layer: the rectified output of the last convolutional block.

    That is the last ``Conv1d`` / ``Conv2d`` in ``model.named_modules()`` order, extended through the norm and
    activation modules that directly follow it in the same ``nn.Sequential`` (conv - BN - ReLU -> the ReLU; an
    activation wrapped with a regularizer, ``Sequential(ReLU, DropBlock)``, counts as one). When the conv sits in
    a residual block (an ancestor with a ``shortcut`` or ``downsample`` child), the block itself: its output is
    the rectified sum. A model that applies its activation as a function (``torch.relu(self.conv3(h))``) gives
    the conv itself.
    """
    named = list(model.named_modules())
    convs = [i for i, (_, m) in enumerate(named) if isinstance(m, (nn.Conv1d, nn.Conv2d))]
    if not convs:
        raise UserError("the model has no Conv1d/Conv2d layer: name the layer to explain explicitly")
    name = named[convs[-1]][0]
    modules = dict(named)
    # inside a residual block (a module with a shortcut / downsample branch): the block's output, after the sum
    parts = name.split(".")
    for depth in range(len(parts) - 1, 0, -1):
        ancestor = ".".join(parts[:depth])
        if any(key in modules[ancestor]._modules for key in ("shortcut", "downsample")):
            return ancestor
    parent_name, _, child = name.rpartition(".")
    parent = modules.get(parent_name)
    if isinstance(parent, nn.Sequential):
        keys = list(parent._modules)
        for key in keys[keys.index(child) + 1:]:
            sub = parent._modules[key]
            first = sub[0] if isinstance(sub, nn.Sequential) and len(sub) else sub
            if not isinstance(first, _BLOCK_TAIL):
                break
            name = f"{parent_name}.{key}" if parent_name else key
    return name


def chunked(fn: Callable[[Tensor], Tensor], x: Tensor, batch_size: int) -> Tensor:
    return torch.cat([fn(c) for c in x.split(batch_size)])


def per_example_sum(t: Tensor) -> Tensor:
    """Sum over every dimension but the batch: ``(B, ...) -> (B,)``."""
    return t.reshape(t.shape[0], -1).sum(1)
