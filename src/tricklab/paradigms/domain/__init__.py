"""Domain adaptation: gradient reversal and DANN (:mod:`.grl`), and ``run_dann`` (:mod:`.run`: source-only,
DANN, self-training) on the domain pairs made by code in :mod:`tricklab.data.domains`."""

from tricklab.paradigms.domain.grl import DomainClassifier, GradientReversal, dann_lambda, dann_loss, grad_reverse

__all__ = ["DomainClassifier", "GradientReversal", "dann_lambda", "dann_loss", "grad_reverse"]
