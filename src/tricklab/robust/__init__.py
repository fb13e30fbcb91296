"""Robustness: adversarial attacks (FGSM, PGD under L-inf or L2), Gaussian input noise, and a robustness
evaluation that works on any classifier (``nn.Module`` from inputs to logits). See docs/robust.md."""

from __future__ import annotations

from tricklab.robust.attacks import NORMS, fgsm, pgd, project, set_eval_mode, uniform_ball
from tricklab.robust.evaluation import ATTACKS, RobustnessConfig
from tricklab.robust.noise import gaussian_noise, noise_accuracy

__all__ = ["ATTACKS", "NORMS", "RobustnessConfig", "fgsm", "gaussian_noise", "noise_accuracy", "pgd", "project",
           "set_eval_mode", "uniform_ball"]
