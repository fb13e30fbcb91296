"""Stochastic Weight Averaging (Izmailov et al. 2018): evaluate with the equal-weight mean of late iterates.

From ``start_step`` on, every ``every`` optimizer steps, theta_swa <- (n theta_swa + theta) / (n + 1) (the
running form of the plain mean of the n + 1 snapshots; the same update as torch.optim.swa_utils.AveragedModel).
Averaged weights come with BatchNorm statistics that belong to other weights, so before each evaluation the
running statistics are recomputed for the averaged weights (the update_bn step of the paper): reset, then
cumulative averages (momentum None) over up to ``bn_batches`` training batches in train mode, without gradients.
Evaluation swaps the averaged weights and the recomputed statistics in at ``eval_start`` and restores the
trained weights and buffers exactly at ``eval_end``.

SWA does not own the learning rate: the paper's schedule (constant, linear down to swa_lr, constant while
averaging) is the ``swa`` schedule in tricklab.schedules; use it (or any schedule) through the recipe's
``schedule`` key.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from tricklab.errors import ConfigError
from tricklab.techniques.registry import register_technique
from tricklab.train.state import TrainState
from tricklab.train.technique import Technique


@torch.no_grad()
def swa_update_(averages: list[torch.Tensor], params: list[torch.Tensor], n: int) -> None:
    """In place: avg <- (n avg + p) / (n + 1) for every pair, where ``n`` snapshots are already averaged.

    With n = 0 the average becomes a copy of the parameters."""
    if not averages:
        return
    current = [p.detach() for p in params]
    if n == 0:
        torch._foreach_copy_(averages, current)
        return
    # (n avg + p)/(n+1) = avg + (p - avg)/(n+1) = lerp(avg, p, 1/(n+1)): one fused foreach op, no n*avg overflow
    torch._foreach_lerp_(averages, current, 1.0 / (n + 1))


def _float_params(model: nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.dtype.is_floating_point]


def _bn_modules(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recompute_bn_(model: nn.Module, batches: Any, device: torch.device | str | None = None) -> int:
    """Recompute BatchNorm running statistics of ``model`` on ``batches`` (inputs, or (inputs, targets) pairs),
    as torch.optim.swa_utils.update_bn does: reset, momentum None (cumulative mean over batches), train-mode
    forward passes. Restores each module's momentum and the model's mode. Returns the number of batches used."""
    bns = _bn_modules(model)
    if not bns:
        return 0
    momenta = {}
    for m in bns:
        m.reset_running_stats()
        momenta[m] = m.momentum
        m.momentum = None
    was_training = model.training
    model.train()
    used = 0
    try:
        for batch in batches:
            x = batch[0] if isinstance(batch, (list, tuple)) else batch
            if device is not None:
                x = x.to(device)
            model(x)
            used += 1
    finally:
        for m, mom in momenta.items():
            m.momentum = mom
        model.train(was_training)
    return used


@register_technique
class SWA(Technique):
    """Stochastic weight averaging: evaluate with the mean of late weights, BatchNorm statistics recomputed."""

    name: ClassVar[str] = "swa"
    # swaps the average and its recomputed BatchNorm statistics in at eval_start, the trained ones back at
    # eval_end; with swa_lr it also sets the learning rate (declared per instance in __init__)
    reads = frozenset({"params", "skip_step", "accum_steps"})
    writes = frozenset({"eval_weights", "norm_stats"})
    # with swa_lr it sets the learning rate from the start step on, over a schedule owner: both write the
    # exclusive lr slot by design (composes_with), and the data flow of one slot with two writers cannot say
    # which goes first, so the order is named: the schedule sets the lr, then SWA anneals from it
    composes_with = frozenset({"lr_schedule"})
    after = frozenset({"lr_schedule"})

    def __init__(self, start_step: int | None = None, start_fraction: float = 0.75, every: int = 1,
                 bn_batches: int | None = 50, swa_lr: float | None = None, anneal_steps: int = 0) -> None:
        if start_step is not None and (not isinstance(start_step, int) or start_step < 0):
            raise ValueError(f"swa start_step must be a non-negative integer, got {start_step!r}")
        if not 0.0 <= start_fraction < 1.0:
            raise ValueError(f"swa start_fraction must be in [0, 1), got {start_fraction!r}")
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"swa every must be a positive integer, got {every!r}")
        if bn_batches is not None and (not isinstance(bn_batches, int) or bn_batches < 1):
            raise ValueError(f"swa bn_batches must be a positive integer or None (all), got {bn_batches!r}")
        if swa_lr is not None and not swa_lr > 0:
            raise ValueError(f"swa swa_lr must be positive or None, got {swa_lr!r}")
        if not isinstance(anneal_steps, int) or anneal_steps < 0:
            raise ValueError(f"swa anneal_steps must be a non-negative integer, got {anneal_steps!r}")
        self.swa_lr = None if swa_lr is None else float(swa_lr)
        self.anneal_steps = anneal_steps
        if self.swa_lr is not None:
            # only an SWA that sets the learning rate reads and writes the lr slot
            self.declare(reads=self.reads | {"lr"}, writes=self.writes | {"lr"})
        self._start_lrs: list[float] | None = None  # each group's lr when the SWA phase began (for annealing)
        self.start_step = start_step
        self.start_fraction = float(start_fraction)
        self.every = every
        self.bn_batches = bn_batches
        self.n_averaged = 0
        self.average: list[torch.Tensor] = []
        self._start: int | None = start_step
        self._backup: tuple[list[torch.Tensor], dict[str, torch.Tensor]] | None = None
        # BatchNorm buffers recomputed for the average of `_bn_for` snapshots (reused until the next update)
        self._bn_cache: dict[str, torch.Tensor] | None = None
        self._bn_for = -1

    # ------------------------------------------------------------------------------------------- set-up
    def resolve_start(self, state: TrainState) -> int:
        """The step after which the first snapshot is taken: start_step, else start_fraction of the budget."""
        if self.start_step is not None:
            return self.start_step
        total = state.planned_steps()
        if total is None:
            raise ValueError("swa needs start_step when the budget is wall-clock seconds")
        return int(self.start_fraction * total)

    def on_fit_start(self, state: TrainState) -> None:
        self._start = self.resolve_start(state)
        self.average = [p.detach().clone() for p in _float_params(state.raw_model)]
        self.n_averaged = 0
        self._start_lrs = None
        self._bn_cache, self._bn_for = None, -1

    def on_before_step(self, state: TrainState) -> None:
        """From the start step on, the SWA learning rate (Izmailov et al. 2018): constant ``swa_lr``, reached
        by a linear anneal from the lr in force at the start over ``anneal_steps`` steps (as torch's SWALR)."""
        if self.swa_lr is None or self._start is None or state.step < self._start:
            return
        groups = state.optimizer.param_groups
        if self._start_lrs is None:
            self._start_lrs = [float(g["lr"]) for g in groups]
        t = 1.0 if self.anneal_steps == 0 else min(1.0, (state.step - self._start + 1) / self.anneal_steps)
        for g, lr0 in zip(groups, self._start_lrs):
            g["lr"] = lr0 + (self.swa_lr - lr0) * t

    def on_after_step(self, state: TrainState) -> None:
        assert self._start is not None
        # state.step counts the step just taken: snapshots at start, start + every, start + 2 every, ...
        if state.skip_step or state.step < self._start or (state.step - self._start) % self.every:
            return
        swa_update_(self.average, _float_params(state.raw_model), self.n_averaged)
        self.n_averaged += 1

    # ---------------------------------------------------------------------------------------- evaluation
    def _bn_batches(self, state: TrainState) -> list[torch.Tensor]:
        """Up to bn_batches training batches in a fixed order (the loader's epoch-0 permutation), read
        without moving the loader's position."""
        if state.train_batches is None:
            raise ConfigError("swa recomputes BatchNorm statistics from the training batches "
                              "(state.train_batches): run it in a Trainer, or call recompute_bn_ yourself")
        return state.train_batches(self.bn_batches)

    @torch.no_grad()
    def on_eval_start(self, state: TrainState) -> None:
        if self.n_averaged == 0:
            return  # nothing averaged yet: evaluate the trained weights as they are
        model = state.raw_model
        params = _float_params(model)
        buffers = {k: v.detach().clone() for k, v in model.named_buffers()}
        self._backup = ([p.detach().clone() for p in params], buffers)
        torch._foreach_copy_(params, self.average)
        if not _bn_modules(model):
            return
        if self._bn_for != self.n_averaged:
            # fork the RNG: dropout in these passes must not shift the training stream (exact resume)
            devices = [state.device] if state.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                recompute_bn_(model, self._bn_batches(state), state.device)
            self._bn_cache = {k: v.detach().clone() for k, v in model.named_buffers()}
            self._bn_for = self.n_averaged
        else:
            assert self._bn_cache is not None
            for k, v in model.named_buffers():
                v.copy_(self._bn_cache[k])

    @torch.no_grad()
    def on_eval_end(self, state: TrainState) -> None:
        if self._backup is None:
            return
        params, buffers = self._backup
        model = state.raw_model
        torch._foreach_copy_(_float_params(model), params)
        for k, v in model.named_buffers():
            v.copy_(buffers[k])
        self._backup = None

    def averaged_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The model's state dict with the averaged parameters, and the BatchNorm buffers recomputed for them
        when an evaluation since the last update computed them (the runner evaluates before saving). Before
        the first snapshot: the trained weights."""
        sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if self.n_averaged == 0:
            return sd
        names = [n for n, p in model.named_parameters() if p.dtype.is_floating_point]
        for n, avg in zip(names, self.average):
            sd[n] = avg.detach().clone()
        if self._bn_cache is not None and self._bn_for == self.n_averaged:
            sd.update({k: v.clone() for k, v in self._bn_cache.items() if k in sd})
        return sd

    # ------------------------------------------------------------------------------------------- resume
    def state_dict(self) -> dict[str, Any]:
        return {"n_averaged": self.n_averaged, "average": list(self.average), "start": self._start,
                "start_lrs": self._start_lrs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.n_averaged = int(state["n_averaged"])
        self._start = None if state["start"] is None else int(state["start"])
        lrs = state.get("start_lrs")
        self._start_lrs = None if lrs is None else [float(x) for x in lrs]
        self._bn_cache, self._bn_for = None, -1
        if not self.average:
            self.average = [t.detach().clone() for t in state["average"]]
            return
        if len(state["average"]) != len(self.average):
            raise ValueError(f"swa state has {len(state['average'])} tensors, the model has {len(self.average)}")
        with torch.no_grad():
            for dst, src in zip(self.average, state["average"]):
                dst.copy_(src)
