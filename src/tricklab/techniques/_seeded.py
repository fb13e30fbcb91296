"""Shared parts of the augmentation techniques (mixup.py, cutmix.py, mix.py, cutout.py, random_erasing.py,
random_shift.py, random_flip.py).

* :class:`SeededTechnique`: draws only from its own generator, saved in its state for exact resume.
* :class:`InputAugmentation`: a per-example transform of the inputs; a subclass writes its stage of the input
  pipeline (``batch.inputs.geometric`` or ``batch.inputs.erased``), which runs it before the batch mixers.
* :class:`BatchMixer`: mixes pairs of examples of a batch (stage ``batch.inputs.mixed``) and makes soft
  ``(B, C)`` targets.
* the argument checks they share (each error names the technique and the argument).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from tricklab.data.augment import sample_mixup, soft_targets
from tricklab.errors import ConfigError
from tricklab.train.state import TrainState
from tricklab.train.technique import Technique

__all__ = ["BatchMixer", "InputAugmentation", "SeededTechnique", "check_alpha", "check_num_classes",
           "check_prob", "check_spatial_dims", "require_num_classes"]


class SeededTechnique(Technique):
    """A technique that draws only from its own ``torch.Generator``, seeded with ``seed`` at construction.

    It never touches the global RNG, so adding it does not change any other random draw of the run; its
    state is the generator state (a uint8 tensor), so a resumed run draws exactly what an uninterrupted one
    would. Under DDP every rank holds the same stream (the same draws for its own local batch).
    """

    def __init__(self, seed: int = 0) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"{self.name} seed must be a non-negative int, got {seed!r}")
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        g = state.get("generator") if isinstance(state, dict) else None
        if not isinstance(g, torch.Tensor) or g.dtype != torch.uint8 or set(state) != {"generator"}:
            raise ValueError(
                f"{self.name} state must be {{'generator': uint8 tensor}} (from state_dict()), got "
                f"{sorted(state) if isinstance(state, dict) else type(state).__name__}"
            )
        self.generator.set_state(g.detach().cpu().clone())

    def _coin(self, prob: float) -> bool:
        """One draw per batch whatever ``prob`` is, so the stream does not depend on it being 0 or 1."""
        return bool(torch.rand((), generator=self.generator) < prob)


def check_alpha(alpha: float, name: str) -> float:
    """A Beta(alpha, alpha) concentration: a positive finite number."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < float("inf"):
        raise ValueError(f"{name} must be a positive number (Beta(alpha, alpha)), got {alpha!r}; use prob=0 to disable")
    return float(alpha)


def check_prob(prob: float, name: str) -> float:
    """A probability in [0, 1]."""
    if isinstance(prob, bool) or not isinstance(prob, (int, float)) or not 0.0 <= prob <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {prob!r}")
    return float(prob)


def check_num_classes(num_classes: int | None, name: str) -> int | None:
    """None (filled in later, e.g. by the lab runner) or an int >= 2."""
    if num_classes is None:
        return None
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"{name} num_classes must be an int >= 2, got {num_classes!r}")
    return num_classes


def check_spatial_dims(spatial_dims: int | None, name: str) -> int | None:
    """1 (signals), 2 (images) or None (inferred from each batch's shape)."""
    if spatial_dims is not None and spatial_dims not in (1, 2):
        raise ValueError(f"{name} spatial_dims must be 1, 2 or None (inferred), got {spatial_dims!r}")
    return spatial_dims


def require_num_classes(technique: Technique, num_classes: int | None) -> int:
    """The mixers' fit-start check: soft targets need the number of classes."""
    if num_classes is None:
        raise ConfigError(
            f"technique {technique.name!r} makes soft (B, C) targets and needs the number of classes: pass "
            f"num_classes=<C> (the lab runner fills it in from the task)"
        )
    return num_classes


class InputAugmentation(SeededTechnique):
    """A per-example transform of the inputs (targets untouched). Subclasses declare their stage of the input
    pipeline in ``writes``: ``batch.inputs.geometric`` (flip, shift) or ``batch.inputs.erased`` (cutout, random
    erasing, on the final geometry); both run before the batch mixers (``batch.inputs.mixed``), as in a data
    pipeline: per-sample transforms, then mixing in the collate step."""


class BatchMixer(SeededTechnique):
    """Mixes pairs of examples of a batch into soft ``(B, C)`` targets; needs ``num_classes`` at fit start.

    ``prob``: the probability that a batch is mixed at all (an unmixed batch still gets soft targets).
    Subclasses define ``on_batch_start``.
    """

    reads = frozenset({"batch.targets"})
    writes = frozenset({"batch.inputs.mixed", "batch.targets"})

    def __init__(self, seed: int = 0, *, num_classes: int | None = None, prob: float = 1.0) -> None:
        super().__init__(seed)
        self.num_classes = check_num_classes(num_classes, self.name)
        self.prob = check_prob(prob, f"{self.name} prob")

    def on_fit_start(self, state: TrainState) -> None:
        require_num_classes(self, self.num_classes)

    def _draw_pairing(self, batch_size: int, alpha: float) -> tuple[float, Tensor]:
        """lam ~ Beta(alpha, alpha), then the pairing perm (a permutation of the B examples), in that order."""
        lam = sample_mixup(self.generator, alpha)
        perm = torch.randperm(batch_size, generator=self.generator)
        return lam, perm

    def _leave_unmixed(self, state: TrainState) -> None:
        """Unmixed batches still get soft targets so the loss sees one target format."""
        x = state.inputs
        state.targets = soft_targets(state.targets, x.shape[0], self.num_classes, x.dtype)
