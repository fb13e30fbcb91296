"""Faithfulness of attributions as metrics of a trained run (issue 18 item 3): the recipe's ``faithfulness:``
section names attribution methods; after training, the lab explains ``examples`` test examples with each
method (the explained class is the model's prediction, the reference the zero input) and records the mean
deletion and insertion areas (Petsiuk et al. 2018, "RISE"; :mod:`tricklab.explain.faithfulness`):

    deletion AUC  = area under p(class | x, top-k% features set to the reference), k = 0..100%  (lower: better)
    insertion AUC = area under p(class | reference, top-k% features of x restored)               (higher: better)

so an ablation shows whether a technique makes the model's explanations more faithful, with intervals over seeds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from tricklab.errors import ConfigError, UnknownNameError
from tricklab.explain.faithfulness import faithfulness_scores
from tricklab.explain.methods import ATTRIBUTIONS, attribute

__all__ = ["FaithfulnessConfig"]


@dataclass
class FaithfulnessConfig:
    """``methods``: attribution methods (``tricklab list`` / :data:`ATTRIBUTIONS`); ``examples``: the first N test
    examples explained; ``steps``: points of each deletion / insertion curve; ``seed``: the random draws of
    sampling methods (SmoothGrad, GradientSHAP)."""

    methods: list[str] = field(default_factory=lambda: ["integrated_gradients", "gradient"])
    examples: int = 100
    steps: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.methods or len(set(self.methods)) != len(self.methods):
            raise ConfigError(f"faithfulness.methods must list distinct attribution methods, got {self.methods!r}")
        for name in self.methods:
            try:
                ATTRIBUTIONS.get(name)
            except UnknownNameError as e:
                raise ConfigError(f"faithfulness.methods: {e}") from None
        for name in ("examples", "steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (2 if name == "steps" else 1):
                raise ConfigError(f"faithfulness.{name} must be an integer >= {2 if name == 'steps' else 1}, "
                                  f"got {v!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"faithfulness.seed must be a non-negative integer, got {self.seed!r}")

    def metrics(self) -> list[tuple[str, str, bool]]:
        """(name, label, higher_is_better) of every number :meth:`evaluate` returns, in order."""
        out = []
        for m in self.methods:
            out += [(f"{m}_deletion_auc", f"Deletion AUC, {m} (faithfulness)", False),
                    (f"{m}_insertion_auc", f"Insertion AUC, {m} (faithfulness)", True)]
        return out

    def evaluate(self, model: nn.Module, x: Tensor, y: Tensor) -> dict[str, float]:
        """Mean deletion and insertion AUC of each method on the first ``examples`` of ``x`` (``y`` unused: the
        model's own prediction is explained). The model is put in eval mode and restored."""
        del y
        was_training = model.training
        model.eval()
        try:
            xb = x[: self.examples]
            with torch.no_grad():
                pred = model(xb).argmax(-1)
            out: dict[str, float] = {}
            for name in self.methods:
                gen = torch.Generator().manual_seed(self.seed)
                maps = attribute(name, model, xb, pred, generator=gen)
                scores = faithfulness_scores(model, xb, maps.detach(), pred, steps=self.steps)
                out[f"{name}_deletion_auc"] = float(scores["deletion_auc"].mean())
                out[f"{name}_insertion_auc"] = float(scores["insertion_auc"].mean())
            return out
        finally:
            model.train(was_training)
