"""Bayes by backprop (Blundell et al., ICML 2015, arXiv:1505.05424): the ELBO, its per-batch scaling, and the
predictive distribution of a network built from :mod:`tricklab.layers.bayesian` layers.

**The objective.** Over the whole training set D of N examples the variational free energy is
``F = KL[q(w) || P(w)] - sum_{i=1..N} E_q[log p(y_i | x_i, w)]`` (paper eq. 1). Split into M = N / B mini-batches,
the paper assigns each batch a share ``pi_i`` of the KL with ``sum_i pi_i = 1`` (eq. 8-9):
``F_i = pi_i KL - sum_{j in batch i} log p(y_j | x_j, w)``. Dividing by B to work with a *mean* NLL (the scale
of the usual cross-entropy, so learning rates carry over):

    uniform pi_i = 1 / M:   loss_i = mean_batch NLL + KL / N
    Blundell et al.'s pi_i = 2^(M - i) / (2^M - 1) (i = 1..M within an epoch):   loss_i = mean NLL + pi_i KL / B

Both sum over an epoch to F / B. A ``kl_weight`` multiplies the KL term (1 = the ELBO; below 1 is the "cold"
or tempered posterior some practitioners use; it is not the ELBO and is reported as such).

:class:`ELBOLoss` is a ``loss_fn`` for :class:`tricklab.train.Trainer` (uniform weighting: the Trainer does not
tell a loss which batch of the epoch it is on); :func:`minibatch_kl_weight` gives either weighting for one's own
loop. :func:`to_bayesian` turns the Linear/Conv layers of any model into Bayesian ones initialised at the
model's weights; :func:`bayes_predict` averages the softmax over weight samples.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tricklab.errors import ConfigError, UserError
from tricklab.layers.bayesian import (
    BayesConv1d,
    BayesConv2d,
    BayesLayer,
    BayesLinear,
    KLMode,
    Prior,
    bayes_layers,
    sampling,
)

__all__ = ["ELBOLoss", "bayes_predict", "elbo_loss", "kl_divergence", "minibatch_kl_weight", "to_bayesian"]


def kl_divergence(model: nn.Module) -> Tensor:
    """Sum of ``layer.kl()`` over the model's Bayesian layers (a scalar with gradient)."""
    layers = list(bayes_layers(model))
    if not layers:
        raise UserError(f"{type(model).__name__} has no Bayesian layer (BayesLinear / BayesConv*); build it with "
                        f"tricklab.layers.bayesian or convert it with to_bayesian(model)")
    return torch.stack([m.kl() for m in layers]).sum()


def minibatch_kl_weight(batch_index: int, num_batches: int, scheme: str = "uniform") -> float:
    """The KL share ``pi_i`` of batch ``batch_index`` (0-based) of ``num_batches``: ``1 / M`` ("uniform") or
    ``2^(M - i) / (2^M - 1)`` with i = batch_index + 1 ("blundell", paper eq. 9: early batches weigh the prior
    more). Both sum to 1 over an epoch."""
    if not (isinstance(num_batches, int) and num_batches >= 1 and 0 <= batch_index < num_batches):
        raise UserError(f"need 0 <= batch_index < num_batches, got {batch_index} and {num_batches}")
    if scheme == "uniform":
        return 1.0 / num_batches
    if scheme == "blundell":
        m, i = num_batches, batch_index + 1
        # 2^(M-i) / (2^M - 1) = 2^(-i) / (1 - 2^(-M)): no overflow for large M
        return 2.0 ** (-i) / (1.0 - 2.0 ** (-m))
    raise UserError(f"KL weighting scheme must be 'uniform' or 'blundell', got {scheme!r}")


def elbo_loss(logits: Tensor, targets: Tensor, kl: Tensor, num_train: int, kl_weight: float = 1.0,
              nll_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy) -> Tensor:
    """``mean NLL + kl_weight * KL / N`` for one mini-batch (uniform KL share; see the module docstring)."""
    if isinstance(num_train, bool) or not isinstance(num_train, int) or num_train < 1:
        raise UserError(f"num_train (the training-set size N) must be a positive int, got {num_train!r}")
    return nll_fn(logits, targets) + kl_weight * kl / num_train


class ELBOLoss:
    """``loss_fn(outputs, targets)`` for the Trainer: cross-entropy + ``kl_weight * KL(model) / num_train``.

    The KL is read from ``model``'s Bayesian layers after the forward (for Monte Carlo KL it uses the weights
    that forward sampled). ``last_nll`` / ``last_kl`` hold the two terms of the latest call (floats) for logging.
    """

    def __init__(self, model: nn.Module, num_train: int, kl_weight: float = 1.0,
                 nll_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy) -> None:
        if isinstance(num_train, bool) or not isinstance(num_train, int) or num_train < 1:
            raise ConfigError(f"ELBOLoss num_train must be the training-set size (a positive int), got {num_train!r}")
        if not (isinstance(kl_weight, (int, float)) and kl_weight >= 0):
            raise ConfigError(f"kl_weight must be a non-negative number, got {kl_weight!r}")
        if not any(True for _ in bayes_layers(model)):
            raise ConfigError(f"ELBOLoss: {type(model).__name__} has no Bayesian layer")
        self.model, self.num_train, self.kl_weight, self.nll_fn = model, num_train, float(kl_weight), nll_fn
        self.last_nll = float("nan")
        self.last_kl = float("nan")

    def __call__(self, outputs: Tensor, targets: Tensor) -> Tensor:
        nll = self.nll_fn(outputs, targets)
        kl = kl_divergence(self.model)
        self.last_nll, self.last_kl = float(nll.detach()), float(kl.detach())
        return nll + self.kl_weight * kl / self.num_train


def to_bayesian(model: nn.Module, prior: Prior | None = None, rho_init: float = -5.0, local_reparam: bool = False,
                kl_mode: KLMode = "auto", copy_model: bool = True) -> nn.Module:
    """Replace every ``nn.Linear``, ``nn.Conv1d`` and ``nn.Conv2d`` of ``model`` by its Bayesian counterpart with
    ``mu`` = the layer's current weights and ``sigma = softplus(rho_init)``. Returns the new model (a copy unless
    ``copy_model=False``)."""
    model = copy.deepcopy(model) if copy_model else model
    count = 0

    def convert(parent: nn.Module) -> None:
        nonlocal count
        for name, child in list(parent.named_children()):
            kw = {"prior": prior, "rho_init": rho_init, "local_reparam": local_reparam, "kl_mode": kl_mode}
            new: BayesLayer | None = None
            if type(child) is nn.Linear:
                new = BayesLinear(child.in_features, child.out_features, child.bias is not None, **kw)
            elif type(child) in (nn.Conv1d, nn.Conv2d):
                if child.padding_mode != "zeros":
                    raise UserError(f"to_bayesian: {name} uses padding_mode={child.padding_mode!r}; only 'zeros' "
                                    f"is supported")
                cls = BayesConv1d if type(child) is nn.Conv1d else BayesConv2d
                new = cls(child.in_channels, child.out_channels, child.kernel_size, child.stride, child.padding,
                          child.dilation, child.groups, child.bias is not None, **kw)
            if new is None:
                convert(child)
                continue
            with torch.no_grad():
                new.weight_mu.copy_(child.weight)
                if child.bias is not None:
                    new.bias_mu.copy_(child.bias)
            new.to(child.weight.device, child.weight.dtype)
            setattr(parent, name, new)
            count += 1

    convert(model)
    if count == 0:
        raise UserError(f"to_bayesian found no nn.Linear / nn.Conv1d / nn.Conv2d in {type(model).__name__}")
    return model


@torch.no_grad()
def bayes_predict(model: nn.Module, inputs: Tensor, samples: int = 20, batch_size: int = 1000) -> Tensor:
    """Softmax outputs (S, N, C) of ``samples`` weight draws, in eval mode (batch norm and dropout off) with the
    Bayesian layers sampling; float64 on the CPU. Average over dim 0 for the predictive distribution."""
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise UserError(f"samples must be a positive int, got {samples!r}")
    if not any(True for _ in bayes_layers(model)):
        raise UserError(f"{type(model).__name__} has no Bayesian layer to sample")
    was = model.training
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    chunks = []
    try:
        with sampling(model):
            for i in range(0, len(inputs), batch_size):
                xb = inputs[i : i + batch_size].to(device)
                chunks.append(torch.stack([torch.softmax(model(xb).double(), -1).cpu() for _ in range(samples)]))
    finally:
        model.train(was)
    return torch.cat(chunks, dim=1)
