"""LoRA: low-rank adaptation of linear and convolution layers, with merge-back for inference.

Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022, eq. (3): a frozen weight
``W0`` (out, in) is adapted by a rank-r update ``W = W0 + (alpha / r) B A`` with ``A`` (r, in) and ``B`` (out, r);
``h = W0 x + (alpha / r) B A x``. ``A`` starts random (Kaiming-uniform, as the paper's reference code) and ``B``
starts at zero, so the adapted layer equals the base layer at the start of training.

Convolutions: ``A`` is a convolution with the base's kernel, stride, padding and dilation from ``in`` to ``r``
channels and ``B`` a 1x1 (pointwise) convolution from ``r`` to ``out``; since convolution is linear in its
weight, this equals one convolution with ``delta = einsum('or,ri...->oi...', B, A)`` (what merging adds).
Grouped convolutions are refused (the low-rank product would mix groups).

``merge_lora`` folds ``(alpha / r) B A`` into the base weight (no extra cost at inference); ``unmerge_lora`` takes
it out again, so training can resume.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tricklab.errors import ConfigError
from tricklab.transfer.finetune import freeze_except

__all__ = ["LoRAConv", "LoRALinear", "inject_lora", "lora_delta", "merge_lora", "unmerge_lora"]

_CONV_FN = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def _check_rank_alpha(rank: int, alpha: float, dropout: float) -> None:
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise ConfigError(f"LoRA rank must be a positive integer, got {rank!r}")
    if not (isinstance(alpha, (int, float)) and alpha > 0):
        raise ConfigError(f"LoRA alpha must be a positive number, got {alpha!r}")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"LoRA dropout must be in [0, 1), got {dropout!r}")


def lora_delta(a: Tensor, b: Tensor, scaling: float) -> Tensor:
    """The weight update ``scaling * B A``: linear ``a`` (r, in), ``b`` (out, r) -> (out, in); convolution
    ``a`` (r, in, *k), ``b`` (out, r, 1, ...) -> (out, in, *k)."""
    return scaling * torch.einsum("or,ri...->oi...", b.flatten(1), a)


class _LoRABase(nn.Module):
    base: nn.Module
    lora_a: nn.Parameter
    lora_b: nn.Parameter

    def __init__(self, base: nn.Module, rank: int, alpha: float, dropout: float) -> None:
        super().__init__()
        _check_rank_alpha(rank, alpha, dropout)
        self.base = base
        self.rank = rank
        self.alpha = float(alpha)
        self.scaling = self.alpha / rank
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        for p in self.base.parameters():
            p.requires_grad_(False)  # the base is frozen: only A and B train

    def delta_weight(self) -> Tensor:
        """``(alpha / r) B A`` in the shape of the base weight."""
        return lora_delta(self.lora_a, self.lora_b, self.scaling)

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into the base weight (idempotent)."""
        if not self.merged:
            self.base.weight.add_(self.delta_weight().to(self.base.weight.dtype))
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Take the update out of the base weight again (idempotent)."""
        if self.merged:
            self.base.weight.sub_(self.delta_weight().to(self.base.weight.dtype))
            self.merged = False

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha}, merged={self.merged}"


class LoRALinear(_LoRABase):
    """``base(x) + (alpha / r) B A dropout(x)`` around a frozen ``nn.Linear``."""

    def __init__(self, base: nn.Linear, rank: int = 4, alpha: float = 8.0, dropout: float = 0.0) -> None:
        if not isinstance(base, nn.Linear):
            raise ConfigError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}")
        super().__init__(base, rank, alpha, dropout)
        w = base.weight
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, dtype=w.dtype, device=w.device))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, dtype=w.dtype, device=w.device))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # as nn.Linear's own init

    def forward(self, x: Tensor) -> Tensor:
        out = self.base(x)
        if self.merged:
            return out
        # (..., in) -> (..., r) -> (..., out)
        return out + self.scaling * F.linear(F.linear(self.dropout(x), self.lora_a), self.lora_b)


class LoRAConv(_LoRABase):
    """LoRA around a frozen ``nn.Conv1d`` / ``nn.Conv2d`` / ``nn.Conv3d`` (groups = 1, zero padding mode)."""

    def __init__(self, base: nn.Conv1d | nn.Conv2d | nn.Conv3d, rank: int = 4, alpha: float = 8.0,
                 dropout: float = 0.0) -> None:
        if not isinstance(base, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            raise ConfigError(f"LoRAConv wraps an nn.Conv1d/2d/3d, got {type(base).__name__}")
        if base.groups != 1 or base.padding_mode != "zeros":
            raise ConfigError(f"LoRAConv supports groups=1 and padding_mode='zeros', got groups={base.groups}, "
                              f"padding_mode={base.padding_mode!r}; leave this layer out of the targets")
        super().__init__(base, rank, alpha, dropout)
        w = base.weight  # (out, in, *k)
        nd = w.ndim - 2
        self._conv = _CONV_FN[nd]
        self.lora_a = nn.Parameter(torch.empty(rank, *w.shape[1:], dtype=w.dtype, device=w.device))
        self.lora_b = nn.Parameter(torch.zeros(w.shape[0], rank, *([1] * nd), dtype=w.dtype, device=w.device))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    def forward(self, x: Tensor) -> Tensor:
        out = self.base(x)
        if self.merged:
            return out
        b = self.base
        # (N, in, *L) -> (N, r, *L') with the base's geometry, then pointwise r -> out
        h = self._conv(self.dropout(x), self.lora_a, None, b.stride, b.padding, b.dilation)
        return out + self.scaling * self._conv(h, self.lora_b)


Target = Callable[[str, nn.Module], bool] | Iterable[str] | None


def _selector(targets: Target, kinds: tuple[type[nn.Module], ...]) -> Callable[[str, nn.Module], bool]:
    if targets is None:
        return lambda name, m: isinstance(m, kinds)
    if callable(targets):
        return targets
    names = set(targets)
    return lambda name, m: name in names


def _set_child(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def inject_lora(model: nn.Module, targets: Target = None, *, rank: int = 4, alpha: float = 8.0,
                dropout: float = 0.0, trainable: Iterable[str] = ()) -> list[str]:
    """Replace the target layers of ``model`` (in place) by LoRA wrappers and freeze everything else.

    Args:
        targets: module names (``model.named_modules()`` names), a predicate ``(name, module) -> bool``, or None
            for every ``nn.Linear`` and ungrouped ``nn.Conv1d/2d/3d``.
        rank, alpha, dropout: r, alpha (the update is scaled by alpha / r) and dropout on the LoRA path.
        trainable: parameter-name prefixes (names after injection: a wrapped layer's own weight is
            ``<name>.base.weight``) left trainable besides the LoRA factors, e.g. a new head ``"fc"``.

    Returns the names of the wrapped modules. Raises ConfigError when nothing matched or a target is not a
    linear or convolution layer.
    """
    kinds = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
    select = _selector(targets, kinds)
    wrapped = tuple(n + "." for n, m in model.named_modules() if isinstance(m, _LoRABase))
    chosen = [(n, m) for n, m in model.named_modules() if n and select(n, m)
              and not isinstance(m, _LoRABase) and not n.startswith(wrapped)]  # never wrap a layer twice
    if targets is None:  # the default leaves grouped (depthwise) convolutions alone
        chosen = [(n, m) for n, m in chosen if isinstance(m, nn.Linear) or m.groups == 1]
    if not chosen:
        raise ConfigError(f"inject_lora: no module matched {targets!r}; names: "
                          f"{[n for n, _ in model.named_modules() if n][:20]}")
    for name, m in chosen:
        if isinstance(m, nn.Linear):
            _set_child(model, name, LoRALinear(m, rank, alpha, dropout))
        elif isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            _set_child(model, name, LoRAConv(m, rank, alpha, dropout))
        else:
            raise ConfigError(f"inject_lora: {name!r} is a {type(m).__name__}; LoRA wraps Linear and Conv layers")
    lora_names = [n for n, _ in model.named_parameters() if n.rsplit(".", 1)[-1] in ("lora_a", "lora_b")]
    freeze_except(model, [*trainable, *lora_names])
    return [n for n, _ in chosen]


def merge_lora(model: nn.Module) -> int:
    """Merge every LoRA layer of ``model`` into its base weight; returns how many were merged."""
    layers = [m for m in model.modules() if isinstance(m, _LoRABase)]
    for m in layers:
        m.merge()
    return len(layers)


def unmerge_lora(model: nn.Module) -> int:
    """Undo :func:`merge_lora`; returns how many layers were unmerged."""
    layers = [m for m in model.modules() if isinstance(m, _LoRABase)]
    for m in layers:
        m.unmerge()
    return len(layers)
