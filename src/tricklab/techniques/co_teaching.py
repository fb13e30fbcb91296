"""Co-teaching for noisy labels (Han, Yao, Yu, Niu, Xu, Hu, Tsang & Sugiyama, "Co-teaching: Robust Training of
Deep Neural Networks with Extremely Noisy Labels", NeurIPS 2018, arXiv:1804.06872).

Networks memorise clean (easy) examples before noisy ones, so early in training the small-loss examples of a
batch are mostly correctly labelled. Co-teaching trains two networks f and g from different initialisations;
on every mini-batch each keeps the ``R(T)`` fraction of examples with its smallest loss, and each network is
updated on the examples its *peer* kept (Algorithm 1), so the two do not confirm their own selection errors:

    R(T) = 1 - min(T / T_k * tau, tau)       (tau: the forget rate, ideally the noise rate; T_k = 10 epochs)

Functional core: :func:`forget_rate` (the schedule, with the paper's code's optional exponent c:
``tau * min(T / T_k, 1)^c``) and :func:`co_teaching_loss` (the exchange of small-loss selections). The Technique
shell holds the peer network g and its optimizer: the trainer's model is f (trained, evaluated, checkpointed as
usual); at the ``loss`` event the shell runs g on the same batch, replaces f's loss with the loss on g's selection
and back-propagates g's loss on f's selection into g; g's optimizer steps at ``after_step``. g is a copy of f
with every layer re-initialised from the seed, its optimizer the same class and hyperparameters as f's (the
learning rate follows f's, so schedules apply to both). Costs one more forward and backward per step.
"""

from __future__ import annotations

import copy
import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tricklab.errors import ConfigError
from tricklab.train.state import TrainState
from tricklab.techniques.registry import register_technique
from tricklab.train.technique import Technique

__all__ = ["CoTeaching", "co_teaching_loss", "forget_rate", "reinitialize"]


def forget_rate(epoch: int, tau: float, num_gradual: int = 10, exponent: float = 1.0) -> float:
    """``tau * min(epoch / num_gradual, 1)^exponent``: the fraction of each batch to drop at ``epoch``
    (0-based, as the trainer counts), so ``R(T) = 1 - forget_rate``."""
    if num_gradual <= 0:
        return tau
    return tau * min(epoch / num_gradual, 1.0) ** exponent


def co_teaching_loss(logits_f: Tensor, logits_g: Tensor, targets: Tensor, rate: float) -> tuple[Tensor, Tensor]:
    """``(loss_f, loss_g)``: the mean cross-entropy of f on the ``N - floor(rate N)`` examples with the smallest
    loss under g, and of g on those with the smallest loss under f (Han et al. 2018, Algorithm 1, steps 4-6).
    ``targets`` are class indices (N,). At least one example is always kept."""
    if not 0.0 <= rate < 1.0:
        raise ConfigError(f"co-teaching forget rate must be in [0, 1), got {rate!r}")
    ce_f = F.cross_entropy(logits_f, targets, reduction="none")
    ce_g = F.cross_entropy(logits_g, targets, reduction="none")
    n = targets.shape[0]
    keep = max(1, n - math.floor(rate * n))
    # stable sort: equal losses keep their batch order, so the selection is deterministic
    idx_f = torch.argsort(ce_f.detach(), stable=True)[:keep]  # f's small-loss examples, taught to g
    idx_g = torch.argsort(ce_g.detach(), stable=True)[:keep]  # g's small-loss examples, taught to f
    return ce_f[idx_g].mean(), ce_g[idx_f].mean()


def reinitialize(model: nn.Module, seed: int) -> nn.Module:
    """Call ``reset_parameters()`` on every submodule that has it, with the global RNG seeded by ``seed`` inside
    a forked RNG state (the caller's random stream is unchanged). Returns ``model``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in model.modules():
            reset = getattr(m, "reset_parameters", None)
            if callable(reset):
                reset()
    return model


@register_technique
class CoTeaching(Technique):
    """Co-teaching: two networks teach each other their small-loss examples (Han et al. 2018)."""

    name: ClassVar[str] = "co_teaching"
    # the peer network and its optimizer are its own state (not the trainer's model or optimizer); on the
    # trainer's side it replaces the task loss with f's loss on the examples g ranked small-loss
    reads = frozenset({"batch.inputs", "batch.outputs", "batch.targets", "accum_steps", "lr", "skip_step"})
    # rng: the peer's forward pass draws from the global RNG (dropout), like the model's own
    writes = frozenset({"loss_fn", "rng"})

    def __init__(self, forget_rate: float = 0.2, num_gradual: int = 10, exponent: float = 1.0,
                 seed: int = 1) -> None:
        if isinstance(forget_rate, bool) or not isinstance(forget_rate, (int, float)) or not 0 <= forget_rate < 1:
            raise ConfigError(f"co_teaching forget_rate (the expected noise rate) must be in [0, 1), "
                              f"got {forget_rate!r}")
        if isinstance(num_gradual, bool) or not isinstance(num_gradual, int) or num_gradual < 0:
            raise ConfigError(f"co_teaching num_gradual (epochs T_k of the linear ramp) must be an int >= 0, "
                              f"got {num_gradual!r}")
        if not (isinstance(exponent, (int, float)) and exponent > 0):
            raise ConfigError(f"co_teaching exponent must be positive, got {exponent!r}")
        self.tau, self.num_gradual, self.exponent, self.seed = float(forget_rate), num_gradual, float(exponent), seed
        self.peer: nn.Module | None = None
        self.peer_optimizer: torch.optim.Optimizer | None = None
        self._pending: dict[str, Any] | None = None
        self.last_rate = 0.0

    # -------------------------------------------------------------------------------------------- events
    def on_fit_start(self, state: TrainState) -> None:
        self.peer = reinitialize(copy.deepcopy(state.raw_model), self.seed).train()
        opt = state.optimizer
        if len(opt.param_groups) != 1:
            raise ConfigError("co_teaching copies the optimizer for its peer network and supports one parameter "
                              f"group, got {len(opt.param_groups)}")
        hyper = {k: v for k, v in opt.param_groups[0].items() if k != "params"}
        self.peer_optimizer = type(opt)(self.peer.parameters(), **hyper)
        if self._pending is not None:
            self._load(self._pending)
            self._pending = None

    def on_loss(self, state: TrainState) -> None:
        assert self.peer is not None and self.peer_optimizer is not None, "co_teaching: fit_start did not run"
        if state.accum_steps != 1:  # checked here: accumulation techniques set it at their own fit_start
            raise ConfigError("co_teaching updates its peer network once per batch: it cannot run with "
                              "grad_accumulation (steps > 1)")
        if state.targets.is_floating_point():
            raise ConfigError("co_teaching ranks examples by their loss on class-index labels; it cannot run "
                              "after a target mixer (mixup, cutmix) that makes soft targets")
        self.last_rate = forget_rate(state.epoch, self.tau, self.num_gradual, self.exponent)
        self.peer.train(state.raw_model.training)
        logits_g = self.peer(state.inputs)
        loss_f, loss_g = co_teaching_loss(state.outputs, logits_g, state.targets, self.last_rate)
        state.loss = loss_f
        self.peer_optimizer.zero_grad(set_to_none=True)
        loss_g.backward()  # the peer's graph is separate from f's: only g's gradients are filled

    def on_after_step(self, state: TrainState) -> None:
        assert self.peer_optimizer is not None
        for group in self.peer_optimizer.param_groups:
            group["lr"] = state.optimizer.param_groups[0]["lr"]  # schedules drive both networks
        if not state.skip_step:
            self.peer_optimizer.step()
        self.peer_optimizer.zero_grad(set_to_none=True)

    # -------------------------------------------------------------------------------------------- resume
    def state_dict(self) -> dict[str, Any]:
        if self.peer is None or self.peer_optimizer is None:
            return dict(self._pending) if self._pending is not None else {}
        return {"peer": {k: v.detach().clone() for k, v in self.peer.state_dict().items()},
                "peer_optimizer": copy.deepcopy(self.peer_optimizer.state_dict())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        if set(state) != {"peer", "peer_optimizer"}:
            raise ValueError(f"co_teaching state needs keys 'peer' and 'peer_optimizer', got {sorted(state)}")
        if self.peer is None:
            self._pending = state  # restored at fit_start, once the peer network exists
        else:
            self._load(state)

    def _load(self, state: dict[str, Any]) -> None:
        assert self.peer is not None and self.peer_optimizer is not None
        self.peer.load_state_dict(state["peer"])
        self.peer_optimizer.load_state_dict(state["peer_optimizer"])

    def __repr__(self) -> str:
        return (f"CoTeaching(forget_rate={self.tau}, num_gradual={self.num_gradual}, exponent={self.exponent}, "
                f"seed={self.seed})")
