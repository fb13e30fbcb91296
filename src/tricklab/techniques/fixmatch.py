"""FixMatch (Sohn et al. 2020): consistency between a weak and a strong view of unlabelled examples, through
confident pseudo-labels.

Sohn et al., "FixMatch: Simplifying Semi-Supervised Learning with Consistency and Confidence", NeurIPS 2020,
eq. (2): ``l_u = (1 / (mu B)) sum_b 1[max q_b >= tau] H(argmax q_b, p_model(y | A(u_b)))`` with
``q_b = p_model(y | alpha(u_b))`` on the weakly augmented view (a constant) and ``A`` the strong augmentation;
``loss = l_s + lambda_u l_u`` (lambda_u = 1, tau = 0.95 in the paper).

Weak view: flip (images) and shift by up to 1/8; strong view: crop-resize, intensity or amplitude jitter, noise,
erasing (``tricklab.data.views``), both drawn from this technique's own generator. Both views go through the
model in one extra forward (in training mode, so BatchNorm sees them, as in the paper's interleaved batch).
Unlabelled examples: targets ``-100`` (or every example with ``on="all"``).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from tricklab.techniques._seeded import SeededTechnique
from tricklab.techniques.pseudo_label import _check_common, confident_pseudo_labels, unlabelled_mask
from tricklab.techniques.registry import register_technique
from tricklab.train.state import TrainState
from tricklab.data.views import strong_view, weak_view

__all__ = ["FixMatch", "fixmatch_loss"]


def fixmatch_loss(logits_weak: Tensor, logits_strong: Tensor, threshold: float = 0.95) -> tuple[Tensor, Tensor]:
    """Eq. (2): masked cross-entropy of the strong view's logits against the weak view's confident argmax,
    averaged over all N unlabelled examples; returns (loss, mask). No gradient flows through ``logits_weak``."""
    if logits_weak.shape != logits_strong.shape:
        raise ValueError(f"weak and strong logits differ in shape: {tuple(logits_weak.shape)} vs "
                         f"{tuple(logits_strong.shape)}")
    if logits_strong.shape[0] == 0:
        return logits_strong.sum() * 0.0, torch.zeros(0, dtype=torch.bool, device=logits_strong.device)
    labels, mask = confident_pseudo_labels(logits_weak, threshold)
    ce = F.cross_entropy(logits_strong, labels, reduction="none")
    return (ce * mask.to(ce.dtype)).mean(), mask


@register_technique
class FixMatch(SeededTechnique):
    """Add lambda_u * FixMatch's masked weak-to-strong pseudo-label loss on the batch's unlabelled examples."""

    name: ClassVar[str] = "fixmatch"
    reads = frozenset({"batch.inputs", "batch.targets"})
    # one extra forward in training mode: BatchNorm statistics move, dropout draws from the global RNG
    writes = frozenset({"loss", "norm_stats", "rng"})

    def __init__(self, weight: float = 1.0, threshold: float = 0.95, on: str = "unlabelled", seed: int = 0) -> None:
        super().__init__(seed)
        _check_common("fixmatch", weight, threshold, on)
        self.weight, self.threshold, self.on = float(weight), float(threshold), on

    def on_loss(self, state: TrainState) -> None:
        mask = unlabelled_mask(state.targets, self.on)
        u = state.inputs[mask]
        if u.shape[0] == 0 or self.weight == 0.0:
            return
        views = torch.cat([weak_view(u.cpu(), self.generator), strong_view(u.cpu(), self.generator)]).to(u)
        logits_weak, logits_strong = state.model(views).chunk(2)
        term, _ = fixmatch_loss(logits_weak.detach(), logits_strong, self.threshold)
        state.loss = state.loss + self.weight * term
