"""A robustness evaluation of a classifier: accuracy under FGSM, under PGD and under Gaussian noise of several
sigmas, as one validated configuration (the recipe's ``robustness:`` section) and one call.

Metric names (the keys :meth:`RobustnessConfig.evaluate` returns): ``fgsm_accuracy``, ``pgd_accuracy`` and
``noise_accuracy_<sigma>`` (``noise_accuracy_0.1``), each the top-1 accuracy on the perturbed inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from tricklab.errors import ConfigError
from tricklab.robust.attacks import NORMS, fgsm, pgd, set_eval_mode
from tricklab.robust.noise import noise_accuracy

__all__ = ["ATTACKS", "RobustnessConfig"]

ATTACKS = ("fgsm", "pgd")


def _positive(name: str, value: Any, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise ConfigError(f"robustness.{name} must be a {'non-negative' if allow_zero else 'positive'} number, "
                          f"got {value!r}")


@dataclass
class RobustnessConfig:
    """How to measure robustness (all distances in input units).

    ``eps``: radius of the attacks' ball; ``norm``: ``linf`` or ``l2`` (PGD; FGSM is L-inf only);
    ``attacks``: any of ``fgsm``, ``pgd``; ``pgd_steps`` and ``pgd_alpha`` (default ``2.5 * eps / steps``, Madry
    et al.'s choice, so a step can cross the ball), ``random_start`` for PGD; ``noise_sigmas``: standard
    deviations of additive Gaussian noise; ``clip``: the valid input range ``[low, high]`` or null;
    ``max_examples``: evaluate on the first N test examples (null: all); ``seed``: the random start and noise.
    """

    eps: float = 0.1
    norm: str = "linf"
    attacks: list[str] = field(default_factory=lambda: list(ATTACKS))
    pgd_steps: int = 10
    pgd_alpha: float | None = None
    random_start: bool = True
    noise_sigmas: list[float] = field(default_factory=lambda: [0.1, 0.3, 0.5])
    clip: list[float] | None = None
    max_examples: int | None = None
    batch_size: int = 500
    seed: int = 0

    def __post_init__(self) -> None:
        _positive("eps", self.eps)
        if self.norm not in NORMS:
            raise ConfigError(f"robustness.norm must be one of {list(NORMS)}, got {self.norm!r}")
        bad = [a for a in self.attacks if a not in ATTACKS]
        if bad or len(set(self.attacks)) != len(self.attacks):
            raise ConfigError(f"robustness.attacks must list distinct attacks of {list(ATTACKS)}, got {self.attacks!r}")
        if "fgsm" in self.attacks and self.norm != "linf":
            raise ConfigError("robustness: FGSM is an L-inf attack; with norm l2 list attacks: [pgd]")
        if isinstance(self.pgd_steps, bool) or not isinstance(self.pgd_steps, int) or self.pgd_steps < 1:
            raise ConfigError(f"robustness.pgd_steps must be a positive integer, got {self.pgd_steps!r}")
        if self.pgd_alpha is not None:
            _positive("pgd_alpha", self.pgd_alpha)
        for s in self.noise_sigmas:
            _positive("noise_sigmas[]", s)
        if len({float(s) for s in self.noise_sigmas}) != len(self.noise_sigmas):
            raise ConfigError(f"robustness.noise_sigmas must be distinct, got {self.noise_sigmas!r}")
        if self.clip is not None and (len(self.clip) != 2 or not float(self.clip[0]) < float(self.clip[1])):
            raise ConfigError(f"robustness.clip must be [low, high] with low < high, or null; got {self.clip!r}")
        for name in ("max_examples", "batch_size"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ConfigError(f"robustness.{name} must be a positive integer, got {v!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"robustness.seed must be a non-negative integer, got {self.seed!r}")
        if not self.attacks and not self.noise_sigmas:
            raise ConfigError("robustness: nothing to measure; list attacks and/or noise_sigmas")

    @property
    def alpha(self) -> float:
        """The PGD step: ``pgd_alpha``, else ``2.5 * eps / pgd_steps``."""
        return float(self.pgd_alpha) if self.pgd_alpha is not None else 2.5 * float(self.eps) / self.pgd_steps

    def metrics(self) -> list[tuple[str, str]]:
        """(name, label) of every number :meth:`evaluate` returns, in order."""
        ball = f"{'L∞' if self.norm == 'linf' else 'L2'} ε={self.eps:g}"
        out = []
        if "fgsm" in self.attacks:
            out.append(("fgsm_accuracy", f"FGSM accuracy (ε={self.eps:g})"))
        if "pgd" in self.attacks:
            out.append(("pgd_accuracy", f"PGD-{self.pgd_steps} accuracy ({ball})"))
        out += [(f"noise_accuracy_{float(s):g}", f"Accuracy under noise σ={float(s):g}") for s in self.noise_sigmas]
        return out

    def evaluate(self, model: nn.Module, x: Tensor, y: Tensor) -> dict[str, float]:
        """Accuracy of ``model`` under each attack and noise level on ``(x, y)`` (the first ``max_examples``),
        in batches of ``batch_size``; the model's modes and parameters' gradients are left as they were."""
        if self.max_examples is not None:
            x, y = x[: self.max_examples], y[: self.max_examples]
        out: dict[str, float] = {}
        gen = torch.Generator().manual_seed(self.seed)
        for attack in self.attacks:
            correct = 0
            for i in range(0, len(x), self.batch_size):
                xb, yb = x[i:i + self.batch_size], y[i:i + self.batch_size]
                if attack == "fgsm":
                    adv = fgsm(model, xb, yb, float(self.eps), clip=self.clip)
                else:
                    adv = pgd(model, xb, yb, float(self.eps), self.alpha, self.pgd_steps,
                              random_start=self.random_start, norm=self.norm, clip=self.clip, generator=gen)
                with torch.no_grad(), set_eval_mode(model):
                    correct += int((model(adv).argmax(-1) == yb).sum())
            out[f"{attack}_accuracy"] = correct / len(x)
        noise = noise_accuracy(model, x, y, [float(s) for s in self.noise_sigmas],
                               generator=torch.Generator().manual_seed(self.seed + 1), clip=self.clip,
                               batch_size=self.batch_size)
        out.update({f"noise_accuracy_{s:g}": acc for s, acc in noise.items()})
        return out
