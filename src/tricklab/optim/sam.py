"""Sharpness-aware minimization (Foret, Kleiner, Mobahi and Neyshabur, ICLR 2021) and adaptive SAM
(Kwon, Kim, Park and Choi, ICML 2021).

Problem: the training loss alone does not prefer flat minima, and sharp minima generalise worse. Fix:
minimise the worst loss in a rho-ball around the weights, min_w max_{||e|| <= rho} L(w + e). Its first-order
solution (eq. 2 of Foret et al.) is

    e_w = rho * g / ||g||                           g = grad L(w), ||.|| over all parameters together

and the update uses the gradient taken at the perturbed point: g_SAM = grad L(w + e_w); w <- base(w, g_SAM).
Adaptive SAM makes the ball scale-invariant with T_w = diag(|w|) (eq. 8 of Kwon et al.):

    e_w = rho * T_w^2 g / ||T_w g||

Each step therefore needs two forward/backward passes:
``first_step()`` (save w, w <- w + e_w), recompute the gradients, ``second_step()`` (w <- saved w, base step).
We restore w by copying the saved weights instead of subtracting e_w, which gives back w exactly (w + e - e
can differ from w in the last bit) and survives a non-finite e_w.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch.optim import Optimizer

from tricklab.optim._wrapper import WrappedOptimizer, build_base

#: added to ||g|| so that a zero gradient gives e_w = 0 instead of 0/0 (as in the reference implementation)
NORM_EPS = 1e-12


@torch.no_grad()
def sam_perturbation(
    params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], rho: float | Sequence[float],
    adaptive: bool | Sequence[bool] = False, foreach: bool = True,
) -> list[torch.Tensor]:
    """e_w for each tensor: rho * g / ||g|| (SAM) or rho * w^2 g / ||w g|| (ASAM, T_w = |w|).

    The norm is global, over all given tensors; ``rho`` and ``adaptive`` may be per tensor (per group).
    """
    n = len(params)
    rhos = [float(rho)] * n if isinstance(rho, (int, float)) else [float(r) for r in rho]
    ada = [bool(adaptive)] * n if isinstance(adaptive, bool) else [bool(a) for a in adaptive]
    if n == 0:
        return []
    dirs, scales = _direction_and_scale(params, grads, rhos, ada, foreach)
    if foreach:
        return list(torch._foreach_mul(dirs, scales))
    return [d * c for d, c in zip(dirs, scales)]


def _direction_and_scale(
    params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], rhos: list[float], ada: list[bool],
    foreach: bool, scratch: Sequence[torch.Tensor] | None = None,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """e_w = scale_i * direction_i with direction g (SAM) or T_w^2 g (ASAM) and scale_i = rho_i / ||T g||
    (0-d tensors: no host sync). Non-adaptive directions are the gradients themselves (not copies).

    ASAM computes w g (whose norm is || |w| g ||, the sign does not count) and then w (w g) = |w|^2 g, so no
    |w| is materialised; ``scratch`` (one tensor per adaptive parameter, in order) receives them, else they
    are allocated.
    """
    n = len(params)
    rho_t = torch.tensor(rhos, dtype=grads[0].dtype, device=grads[0].device)
    idx = [i for i in range(n) if ada[i]]
    tg = list(grads)
    if idx:  # w g, into the scratch buffers when given
        ws, gs = [params[i] for i in idx], [grads[i] for i in idx]
        if scratch is not None:
            prod = list(scratch)
            if foreach:
                torch._foreach_copy_(prod, ws)
                torch._foreach_mul_(prod, gs)
            else:
                for t, w, g in zip(prod, ws, gs):
                    torch.mul(w, g, out=t)
        else:
            prod = list(torch._foreach_mul(ws, gs)) if foreach else [w * g for w, g in zip(ws, gs)]
        for j, t in zip(idx, prod):
            tg[j] = t
    norms = torch._foreach_norm(tg) if foreach else [torch.linalg.vector_norm(t) for t in tg]
    norm = torch.linalg.vector_norm(torch.stack(list(norms)))
    scales = list((rho_t / (norm + NORM_EPS)).unbind())
    if idx:  # T_w^2 g = w (w g), in place
        if foreach:
            torch._foreach_mul_([tg[i] for i in idx], [params[i] for i in idx])
        else:
            for i in idx:
                tg[i].mul_(params[i])
    return tg, scales


class SAM(WrappedOptimizer):
    """SAM / adaptive SAM around any base optimizer.

    ``SAM(params, base, rho=0.05, adaptive=False, **kw)``: ``base`` is an optimizer class (built as
    ``base(params, **kw)``), a registry name, or an optimizer instance over the same parameters. Use either

    * ``first_step(zero_grad=True)``; recompute loss and backward; ``second_step()`` -- or
    * ``step(closure)`` with a closure that zeroes the gradients, computes the loss, calls backward and
      returns the loss (it is called twice: at w and at w + e_w); returns the loss at w.

    ``step()`` without a closure finishes a pending ``first_step`` (so ``first_step()``, backward,
    ``step()`` also works, as inside the trainer with the ``sam`` technique).
    """

    def __init__(
        self,
        params: Iterable[Any] | None,
        base: str | type[Optimizer] | Optimizer,
        rho: float = 0.05,
        adaptive: bool = False,
        foreach: bool = True,
        **kwargs: Any,
    ) -> None:
        if not rho >= 0.0:
            raise ValueError(f"SAM rho must be non-negative, got {rho!r}")
        inner = build_base(params, base, kwargs, "SAM")
        super().__init__(inner, {"rho": rho, "adaptive": adaptive})
        self.foreach = foreach
        for group in self.param_groups:
            self._init_group(group)

    def _init_group(self, group: dict[str, Any]) -> None:
        group.setdefault("rho", self.defaults["rho"])
        group.setdefault("adaptive", self.defaults["adaptive"])

    @property
    def pending(self) -> bool:
        """True between ``first_step`` and ``second_step`` / ``restore`` (weights are perturbed)."""
        return bool(self.__dict__.get("_pending"))

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """Save w and move to w + e_w, using the gradients now in ``.grad`` (taken at w)."""
        if self.pending:
            raise RuntimeError("SAM.first_step called twice without second_step / restore in between")
        params, grads, rhos, ada = [], [], [], []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    params.append(p)
                    grads.append(p.grad)
                    rhos.append(group["rho"])
                    ada.append(group["adaptive"])
        if not params:
            return
        # ASAM's directions go into buffers kept between steps (fresh ones each step cost page faults on the CPU)
        work = self.__dict__.setdefault("_work", {})
        scratch = [work[p] if p in work else work.setdefault(p, torch.empty_like(p))
                   for p, a in zip(params, ada) if a]
        dirs, scales = _direction_and_scale(params, grads, rhos, ada, self.foreach, scratch)
        # saved weights go into buffers kept between steps (a fresh copy each step costs page faults on the
        # CPU); e_w = scale * direction is added without materialising it
        saved = self.__dict__.setdefault("_saved", {})
        bufs = [saved[p] if p in saved else saved.setdefault(p, torch.empty_like(p)) for p in params]
        if self.foreach:
            torch._foreach_copy_(bufs, params)
            torch._foreach_addcmul_(params, dirs, scales)
        else:
            for p, b, d, c in zip(params, bufs, dirs, scales):
                b.copy_(p)
                p.addcmul_(d, c)
        self.__dict__["_pending"] = params
        if zero_grad:
            self.zero_grad(set_to_none=True)

    @torch.no_grad()
    def restore(self) -> None:
        """Put the saved weights w back (undo ``first_step``) without stepping."""
        params = self.__dict__.pop("_pending", None)
        if not params:
            return
        saved = [self._saved[p] for p in params]
        if self.foreach:
            torch._foreach_copy_(params, saved)
        else:
            for p, b in zip(params, saved):
                p.copy_(b)

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Back to w, then the base optimizer's step with the gradients taken at w + e_w."""
        self.restore()
        self.base.step()
        if zero_grad:
            self.zero_grad(set_to_none=True)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        if closure is None:
            if not self.pending:
                raise RuntimeError(
                    "SAM.step() needs a closure (it evaluates the loss twice), or a first_step() before it; "
                    "in the tricklab trainer add the 'sam' technique"
                )
            self.second_step()
            return None
        with torch.enable_grad():
            loss = closure()
        self.first_step(zero_grad=True)
        with torch.enable_grad():
            closure()
        self.second_step()
        return loss
