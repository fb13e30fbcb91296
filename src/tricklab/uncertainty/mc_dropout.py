"""Monte Carlo dropout (Gal & Ghahramani, "Dropout as a Bayesian Approximation", ICML 2016, arXiv:1506.02142).

A network trained with dropout is an approximate variational posterior over its weights; keeping dropout on at
test time and averaging T stochastic passes approximates the predictive distribution

    p(y | x) ~= (1/T) sum_t softmax(f(x; W_t)),   W_t = W * mask_t           (paper eq. 8 for classification)

Only the dropout layers switch to training mode: batch norm must keep using its running statistics (in train
mode it would normalise with the test batch's statistics and update its buffers). :func:`mc_dropout_mode`
does exactly that, for any ``nn.Module``, and restores every module's mode afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.modules.dropout import _DropoutNd

from tricklab.errors import UserError
from tricklab.layers.dropout import DropBlock, DropPath, ShakeoutLinear
from tricklab.uncertainty.scores import expected_entropy, mutual_information, predictive_entropy

__all__ = ["DROPOUT_TYPES", "MCPrediction", "dropout_modules", "mc_dropout_mode", "mc_dropout_predict"]

#: Module types switched to train mode: every torch dropout (Dropout, Dropout1d/2d/3d, AlphaDropout,
#: FeatureAlphaDropout derive from _DropoutNd) and tricklab's DropBlock, DropPath and Shakeout.
DROPOUT_TYPES: tuple[type[nn.Module], ...] = (_DropoutNd, DropBlock, DropPath, ShakeoutLinear)


def dropout_modules(model: nn.Module, extra_types: Sequence[type[nn.Module]] = ()) -> list[nn.Module]:
    """The dropout modules of ``model`` (instances of :data:`DROPOUT_TYPES` or ``extra_types``)."""
    types = DROPOUT_TYPES + tuple(extra_types)
    return [m for m in model.modules() if isinstance(m, types)]


@contextlib.contextmanager
def mc_dropout_mode(model: nn.Module, extra_types: Sequence[type[nn.Module]] = ()) -> Iterator[nn.Module]:
    """Within the block the model is in ``eval()`` mode except its dropout modules, which are in ``train()``
    mode; on exit every module gets back the mode it had. Raises UserError when the model has no dropout."""
    drops = dropout_modules(model, extra_types)
    if not drops:
        raise UserError(
            f"MC dropout needs dropout layers, but {type(model).__name__} has none (looked for "
            f"{', '.join(t.__name__ for t in DROPOUT_TYPES + tuple(extra_types))}); add nn.Dropout to the model "
            f"or pass its dropout class in extra_types"
        )
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    for m in drops:
        m.train()
    try:
        yield model
    finally:
        for m, was in modes:
            m.training = was


@dataclass(frozen=True)
class MCPrediction:
    """Result of :func:`mc_dropout_predict`: ``sample_probs`` (T, N, C) and the summaries of the samples."""

    sample_probs: Tensor

    @property
    def probs(self) -> Tensor:
        """Predictive distribution (N, C): the mean of the T passes' softmax outputs."""
        return self.sample_probs.mean(0)

    @property
    def log_probs(self) -> Tensor:
        """``log`` of :attr:`probs` (N, C), floored at the smallest normal float: usable as logits."""
        p = self.probs
        return p.clamp_min(torch.finfo(p.dtype).tiny).log()

    @property
    def predictive_entropy(self) -> Tensor:
        return predictive_entropy(self.sample_probs)

    @property
    def expected_entropy(self) -> Tensor:
        return expected_entropy(self.sample_probs)

    @property
    def mutual_information(self) -> Tensor:
        """BALD score (N,): disagreement between passes (epistemic uncertainty)."""
        return mutual_information(self.sample_probs)


@torch.no_grad()
def mc_dropout_predict(model: nn.Module, inputs: Tensor, samples: int = 20, batch_size: int = 1000,
                       extra_types: Sequence[type[nn.Module]] = ()) -> MCPrediction:
    """``samples`` stochastic passes with only dropout active; returns their softmax outputs (T, N, C) in
    float64 on the CPU. Each batch of ``inputs`` is passed ``samples`` times in a row (the RNG is the global one,
    as for ``nn.Dropout``: seed it for reproducible draws)."""
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise UserError(f"samples must be a positive int (number of stochastic passes), got {samples!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"batch_size must be a positive int, got {batch_size!r}")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    chunks = []
    with mc_dropout_mode(model, extra_types):
        for i in range(0, len(inputs), batch_size):
            xb = inputs[i : i + batch_size].to(device)
            chunks.append(torch.stack([torch.softmax(model(xb).to(torch.float64), -1).cpu()
                                       for _ in range(samples)]))
    return MCPrediction(torch.cat(chunks, dim=1))
