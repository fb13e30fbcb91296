"""Deep ensembles (Lakshminarayanan, Pritzel & Blundell, NeurIPS 2017, arXiv:1612.01474), vectorised.

M copies of one architecture, each initialised with its own seed and trained on the same loss; the prediction
is the average of their distributions, ``p(y | x) = (1/M) sum_m softmax(f_m(x))`` (paper section 2.4).

:class:`VmapEnsemble` trains all M members *in one model*: the members' parameters are stacked along a leading
member axis (``torch.func.stack_module_state``) and one forward ``vmap``s ``torch.func.functional_call`` of a
stateless copy of the architecture over that axis, so a training step is one (batched) forward, one backward
and one optimizer step over M-stacked tensors instead of M of each. :class:`SequentialEnsemble` is the plain
reference: a ``ModuleList`` called member by member.

The two are the same computation: with the loss :func:`ensemble_loss` (the *sum* over members of each member's
mean loss, so member m's gradient is exactly the gradient it would get trained alone) and an elementwise
optimizer (SGD, Adam, AdamW, ... update each parameter entry from its own gradient history), every member
follows the trajectory it would follow as a separate model. Not elementwise, hence not equivalent: gradient
clipping by a global norm (it would mix the members' norms; clip per member instead), LARS/LAMB trust ratios and
other per-tensor statistics, which see an (M, ...) tensor as one. Batch norm works: its running statistics are
stacked buffers, updated per member inside ``vmap``. Dropout draws independent masks per member
(``randomness="different"``).

Members see the same batch by default (diversity comes from the initialisation, which the paper and Fort et al.
2019 found to be the main source); ``forward(x)`` also accepts per-member batches (M, B, ...) with
``per_member_inputs=True`` (e.g. independent shuffles).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from tricklab.errors import ConfigError, UserError

__all__ = [
    "SequentialEnsemble",
    "VmapEnsemble",
    "ensemble_log_probs",
    "ensemble_loss",
    "ensemble_predict_fn",
    "make_members",
]


def make_members(factory: Callable[[], nn.Module], seeds: Sequence[int]) -> list[nn.Module]:
    """One model per seed: ``torch.manual_seed(seed); factory()``. The global RNG is restored afterwards, so
    building an ensemble does not change what the caller's code draws next."""
    if len(seeds) < 1:
        raise ConfigError("an ensemble needs at least one seed (one member per seed)")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"ensemble seeds must be distinct (equal seeds give identical members), got {list(seeds)}")
    members = []
    with torch.random.fork_rng(devices=[]):
        for s in seeds:
            torch.manual_seed(int(s))
            members.append(factory())
    return members


def _aliases(module: nn.Module) -> dict[str, str]:
    """``{name: canonical name}`` over every parameter and buffer name, tied ones mapped to the first name."""
    first: dict[int, str] = {}
    out: dict[str, str] = {}
    for n, t in [*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False)]:
        out[n] = first.setdefault(id(t), n)
    return out


def _key(name: str) -> str:
    # parameter names may not contain "."; "__" keeps them readable in the state dict
    return name.replace(".", "__")


class VmapEnsemble(nn.Module):
    """M members of one architecture trained and evaluated as one vectorised model.

    Args:
        members: M modules of identical structure (parameter and buffer names and shapes); their current
            values become the members' initial weights (copied; the modules themselves are not kept).

    ``forward(x)`` returns the members' outputs stacked: (M, B, ...). ``member(i)`` returns member i as an
    ordinary module (a copy holding its current weights) to evaluate alone.
    """

    def __init__(self, members: Sequence[nn.Module], per_member_inputs: bool = False) -> None:
        super().__init__()
        members = list(members)
        if not members:
            raise ConfigError("VmapEnsemble needs at least one member")
        ref = [(n, tuple(t.shape)) for n, t in members[0].state_dict().items()]
        for i, m in enumerate(members[1:], start=1):
            if [(n, tuple(t.shape)) for n, t in m.state_dict().items()] != ref:
                raise ConfigError(f"ensemble member {i} differs in structure from member 0 (parameter/buffer names "
                                  f"or shapes): a vmapped ensemble needs M copies of one architecture")
        self.num_members = len(members)
        m0 = members[0]
        # every name a tensor is reachable under -> the name stack_module_state keeps (tied weights share one)
        self._alias = _aliases(m0)
        self.per_member_inputs = bool(per_member_inputs)
        params, buffers = stack_module_state(members)  # {name: (M, *shape)}, detached copies
        self._param_names, self._buffer_names = list(params), list(buffers)
        self._param_set, self._buffer_set = set(params), set(buffers)
        for n, t in params.items():
            self.register_parameter(_key(n), nn.Parameter(t.detach().clone()))
        for n, t in buffers.items():
            self.register_buffer(_key(n), t.detach().clone())
        # a stateless copy of the architecture, kept out of the module tree (no parameters of its own)
        base = copy.deepcopy(members[0]).to("meta")
        object.__setattr__(self, "_base", base)
        # for member(i): a real module to load weights into, also outside the tree (it is not trained)
        object.__setattr__(self, "_template", copy.deepcopy(members[0]).requires_grad_(False))

    def _state(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Stacked tensors under every alias name, so functional_call needs no tie detection of its own."""
        params = {a: getattr(self, _key(n)) for a, n in self._alias.items() if n in self._param_set}
        buffers = {a: getattr(self, _key(n)) for a, n in self._alias.items() if n in self._buffer_set}
        return params, buffers

    def train(self, mode: bool = True) -> VmapEnsemble:
        super().train(mode)
        self._base.train(mode)  # the stateless copy decides batch norm / dropout behaviour
        return self

    def forward(self, x: Tensor, *args: Any) -> Tensor:
        params, buffers = self._state()
        base = self._base

        def one(p: dict[str, Tensor], b: dict[str, Tensor], xi: Tensor) -> Tensor:
            return functional_call(base, (p, b), (xi, *args), tie_weights=False)

        in_x = 0 if self.per_member_inputs else None
        if self.per_member_inputs and (x.ndim < 1 or x.shape[0] != self.num_members):
            raise UserError(f"per_member_inputs=True expects inputs (M={self.num_members}, B, ...), got "
                            f"{tuple(x.shape)}")
        return vmap(one, in_dims=(0, 0, in_x), randomness="different")(params, buffers, x)

    def member_state_dict(self, i: int) -> dict[str, Tensor]:
        """Member ``i``'s weights under the architecture's own names (loadable into one member model)."""
        if not 0 <= i < self.num_members:
            raise UserError(f"member index must be in [0, {self.num_members}), got {i}")
        params, buffers = self._state()
        return {n: t[i].detach().clone() for n, t in {**params, **buffers}.items()
                if n in self._template.state_dict()}

    def member(self, i: int) -> nn.Module:
        """Member ``i`` as an ordinary module (a copy: training it does not change the ensemble)."""
        m = copy.deepcopy(self._template)
        m.load_state_dict(self.member_state_dict(i))
        device = next(iter(self.parameters())).device
        return m.to(device).requires_grad_(True).train(self.training)

    def members(self) -> Iterator[nn.Module]:
        return (self.member(i) for i in range(self.num_members))

    def extra_repr(self) -> str:
        return f"num_members={self.num_members}, member={type(self._template).__name__}"


class SequentialEnsemble(nn.Module):
    """The reference path: M modules called one after the other; ``forward(x)`` stacks their outputs (M, B, ...)."""

    def __init__(self, members: Sequence[nn.Module], per_member_inputs: bool = False) -> None:
        super().__init__()
        if not members:
            raise ConfigError("SequentialEnsemble needs at least one member")
        self.members_list = nn.ModuleList(members)
        self.num_members = len(members)
        self.per_member_inputs = bool(per_member_inputs)

    def forward(self, x: Tensor, *args: Any) -> Tensor:
        if self.per_member_inputs:
            return torch.stack([m(x[i], *args) for i, m in enumerate(self.members_list)])
        return torch.stack([m(x, *args) for m in self.members_list])

    def member(self, i: int) -> nn.Module:
        return self.members_list[i]

    def members(self) -> Iterator[nn.Module]:
        return iter(self.members_list)


def ensemble_loss(outputs: Tensor, targets: Tensor,
                  loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
                  per_member_targets: bool = False) -> Tensor:
    """``sum_m loss_fn(outputs[m], targets)`` for outputs (M, B, C): each member gets exactly the gradient of
    its own mean loss (a mean over members would scale every gradient by 1/M and, with SGD, the step too).
    ``targets`` are shared (B, ...), or (M, B, ...) per member with ``per_member_targets=True``."""
    if outputs.ndim < 2:
        raise UserError(f"ensemble outputs must be (M, B, ...), got {tuple(outputs.shape)}")
    if per_member_targets and targets.shape[0] != outputs.shape[0]:
        raise UserError(f"per-member targets must lead with M={outputs.shape[0]}, got {tuple(targets.shape)}")
    return torch.stack([loss_fn(outputs[m], targets[m] if per_member_targets else targets)
                        for m in range(outputs.shape[0])]).sum()


def ensemble_log_probs(outputs: Tensor) -> Tensor:
    """``log (1/M) sum_m softmax(outputs[m])`` (B, C) from member logits (M, B, C): the ensemble's predictive
    distribution as log-probabilities (valid logits for any softmax-based metric)."""
    m = outputs.shape[0]
    z = outputs if outputs.dtype in (torch.float32, torch.float64) else outputs.float()  # half: up-cast
    return torch.logsumexp(torch.log_softmax(z, -1), dim=0) - math.log(m)


def ensemble_predict_fn(batch_size: int = 1000) -> Callable[[nn.Module, Any], tuple[Tensor, Tensor]]:
    """A ``predict_fn`` for :class:`tricklab.train.Trainer`: evaluates an ensemble on ``(inputs, targets)`` in
    batches and returns the ensemble's log-probabilities (N, C) and the targets."""

    def predict(model: nn.Module, data: Any) -> tuple[Tensor, Tensor]:
        x, y = data
        outs = [ensemble_log_probs(model(x[i : i + batch_size])) for i in range(0, len(x), batch_size)]
        return torch.cat(outs), y

    return predict
