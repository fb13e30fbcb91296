"""Knowledge distillation (Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network", NIPS 2014
Deep Learning Workshop, arXiv:1503.02531, 2015).

A small student trained on hard labels learns nothing of how the teacher ranks the wrong classes. Soften both
distributions with a temperature T and match them:

    L = alpha T^2 KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) CE(s, y)

The soft term's gradient with respect to a student logit is ``(1/T)(q_i - p_i)`` (section 2.1), which for large
T behaves like ``(s_i - t_i) / (C T^2)`` (zero-mean logits); multiplying by T^2 keeps its size roughly constant
when T changes, so ``alpha`` keeps its meaning across temperatures. The teacher is a fixed target: its logits
are detached.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tricklab.losses._common import LossExample, check_float, check_positive, check_reduction, reduce


def _check_alpha(alpha: float) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"distillation alpha (weight of the soft term) must be in [0, 1], got {alpha!r}")
    return float(alpha)


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    target: torch.Tensor | None = None,
    temperature: float = 4.0,
    alpha: float = 0.9,
    reduction: str = "mean",
) -> torch.Tensor:
    """Hinton et al.'s distillation loss.

    Args:
        student_logits: (N, C) or (N, C, d1, ...).
        teacher_logits: same shape; detached (the teacher is not trained by this loss).
        target: hard labels (N, ...) or probabilities for the cross-entropy term; required when alpha < 1.
        temperature: T > 0 used for both softmaxes of the soft term (the CE term uses T = 1).
        alpha: weight of the soft term; 1 - alpha weighs the cross-entropy.
        reduction: "mean" (per-sample KL summed over classes, then averaged: torch's "batchmean"), "sum" or
            "none" (N, d1, ...).
    """
    check_float("student_logits", student_logits, min_ndim=2)
    check_float("teacher_logits", teacher_logits, min_ndim=2)
    check_reduction(reduction)
    t = check_positive("temperature", temperature)
    alpha = _check_alpha(alpha)
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(f"teacher logits {tuple(teacher_logits.shape)} must match student logits "
                         f"{tuple(student_logits.shape)}")
    log_q = F.log_softmax(student_logits / t, dim=1)
    log_p = F.log_softmax(teacher_logits.detach() / t, dim=1)
    # KL(p_teacher || q_student) = sum_c p_c (log p_c - log q_c), per sample
    kl = F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(1)
    loss = (alpha * t * t) * kl
    if alpha < 1.0:
        if target is None:
            raise ValueError("distillation with alpha < 1 needs the hard targets for its cross-entropy term; "
                             "pass target=..., or alpha=1.0 for the soft term alone")
        loss = loss + (1.0 - alpha) * F.cross_entropy(student_logits, target, reduction="none")
    return reduce(loss, reduction)


class DistillationLoss(nn.Module):
    """Knowledge distillation alpha T^2 KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) CE (Hinton et al. 2015)."""

    def __init__(self, temperature: float = 4.0, alpha: float = 0.9, reduction: str = "mean") -> None:
        super().__init__()
        self.temperature = check_positive("temperature", temperature)
        self.alpha = _check_alpha(alpha)
        self.reduction = check_reduction(reduction)

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                target: torch.Tensor | None = None) -> torch.Tensor:
        return distillation_loss(student_logits, teacher_logits, target, self.temperature, self.alpha, self.reduction)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, alpha={self.alpha}, reduction={self.reduction!r}"

    @classmethod
    def example(cls, generator: torch.Generator) -> LossExample:
        student = torch.randn(6, 4, generator=generator)
        teacher = 2 * torch.randn(6, 4, generator=generator)
        target = teacher.argmax(1)
        return LossExample((student, teacher, target), {"temperature": 2.0, "alpha": 0.7}, (0,), (6,))
