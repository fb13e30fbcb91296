"""Mixup or CutMix, chosen per batch (the combination popularised by timm's ``Mixup(switch_prob=...)``).

Mixup and CutMix both own ``batch.targets``, so the trainer refuses them together; this technique is the
supported way to use both: each batch is CutMix-ed with probability ``switch_prob`` and Mixup-ed otherwise.
"""

from __future__ import annotations

from typing import ClassVar

from tricklab.data.augment import cutmix, infer_spatial_dims, mixup
from tricklab.techniques._seeded import BatchMixer, check_alpha, check_prob, check_spatial_dims
from tricklab.techniques.registry import register_technique
from tricklab.train.state import TrainState


@register_technique
class Mix(BatchMixer):
    """Per batch, CutMix with probability switch_prob, else Mixup (each with its own Beta alpha)."""

    name: ClassVar[str] = "mix"

    def __init__(self, mixup_alpha: float = 0.2, cutmix_alpha: float = 1.0, switch_prob: float = 0.5,
                 num_classes: int | None = None, prob: float = 1.0, spatial_dims: int | None = None,
                 seed: int = 0) -> None:
        super().__init__(seed, num_classes=num_classes, prob=prob)
        self.mixup_alpha = check_alpha(mixup_alpha, "mix mixup_alpha")
        self.cutmix_alpha = check_alpha(cutmix_alpha, "mix cutmix_alpha")
        self.switch_prob = check_prob(switch_prob, "mix switch_prob")
        self.spatial_dims = check_spatial_dims(spatial_dims, "mix")
        self.last_choice: str | None = None  # "mixup", "cutmix" or None (batch left alone), for inspection

    def on_batch_start(self, state: TrainState) -> None:
        x = state.inputs
        # draws per batch, in order: apply coin, switch coin, lam (with the chosen alpha), pairing, then
        # (CutMix, when applied) the box centre
        apply = self._coin(self.prob)
        use_cutmix = self._coin(self.switch_prob)
        if use_cutmix:
            infer_spatial_dims(x, self.spatial_dims)
        lam, perm = self._draw_pairing(x.shape[0], self.cutmix_alpha if use_cutmix else self.mixup_alpha)
        if not apply:
            self._leave_unmixed(state)
            self.last_choice = None
        elif use_cutmix:
            state.inputs, state.targets, _ = cutmix(
                x, state.targets, lam, perm, self.generator, num_classes=self.num_classes,
                spatial_dims=self.spatial_dims,
            )
            self.last_choice = "cutmix"
        else:
            state.inputs, state.targets = mixup(x, state.targets, lam, perm, self.num_classes)
            self.last_choice = "mixup"

    def __repr__(self) -> str:
        return (f"Mix(mixup_alpha={self.mixup_alpha}, cutmix_alpha={self.cutmix_alpha}, "
                f"switch_prob={self.switch_prob}, num_classes={self.num_classes}, prob={self.prob}, seed={self.seed})")
