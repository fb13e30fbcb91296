"""Ranger (Wright 2019): RAdam inside Lookahead, with gradient centralization.

Ranger combines three published pieces: RAdam (Liu et al., ICLR 2020) to rectify the variance of the
adaptive step early in training, Lookahead (Zhang et al. 2019; see ``lookahead.py``) for stability, and
gradient centralization (Yong et al. 2020; see ``centralize.py``) applied to each gradient before RAdam sees
it. Per step, with t counting inner steps:

    g <- g - mean_{dims > 0}(g)   for ndim > 1 tensors (GC)
    x <- x (1 - lr wd)            (decoupled weight decay, AdamW-style)
    RAdam: m, v as Adam; rho_inf = 2/(1-beta2) - 1, rho_t = rho_inf - 2 t beta2^t / (1 - beta2^t);
           rho_t > 5: x <- x - lr r_t m_hat / (sqrt(v_hat) + eps') with
                      r_t = sqrt((rho_t-4)(rho_t-2) rho_inf / ((rho_inf-4)(rho_inf-2) rho_t))
           else:      x <- x - lr m_hat  (un-adapted momentum step)
    every k steps: phi += alpha (x - phi); x = phi

The inner step is our ``RAdam`` (``radam.py``, ``decoupled_weight_decay=True``): the arithmetic of
``torch.optim.RAdam`` (threshold rho_t > 5, eps placement, weight decay), checked against it to rounding,
but each multi-tensor op in place on persistent buffers (torch's allocates its denominator every step,
which on the CPU alone took longer than pytorch_optimizer's whole Ranger step). Lookahead's slow-weight
sync is two in-place multi-tensor ops (lerp, copy). Defaults follow the original Ranger: betas
(0.95, 0.999), eps 1e-5, k 6, alpha 0.5.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from tricklab.optim.lookahead import Lookahead
from tricklab.optim.radam import RAdam


class Ranger(Lookahead):
    """Ranger: RAdam (decoupled weight decay) + Lookahead(k, alpha) + gradient centralization.

    ``foreach`` picks the multi-tensor or the per-tensor path for both RAdam and the Lookahead sync (the two
    give identical results). ``state_dict()`` nests the RAdam state (``step``, ``exp_avg``, ``exp_avg_sq``)
    beside the slow weights.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.95, 0.999),
        eps: float = 1e-5,
        weight_decay: float = 0.0,
        k: int = 6,
        alpha: float = 0.5,
        use_gc: bool = True,
        foreach: bool = True,
    ) -> None:
        inner = RAdam(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                      decoupled_weight_decay=True, foreach=foreach, centralize=use_gc)
        super().__init__(inner, k=k, alpha=alpha, foreach=foreach)
        self.use_gc = use_gc

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # GC runs inside the RAdam step (each gradient centralized just before its moments are updated: the
        # result of centralizing them all first, without another pass over memory). On a step that ends a
        # Lookahead period the slow-weight sync of each run of parameters follows its RAdam update while the run
        # is in the cache (the same operations on the same values as a separate sync afterwards); parameters
        # without a gradient, which RAdam skips, are synced after the step.
        self.base.centralize = self.use_gc
        syncing = [g for g in self.param_groups if (g["lookahead_step"] + 1) % self.k == 0]
        done: set[int] = set()
        if syncing:
            members = {id(p) for g in syncing for p in g["params"]}

            def after(ps: list[torch.Tensor]) -> None:
                sel = [p for p in ps if id(p) in members]
                self.sync_tensors(sel)
                done.update(id(p) for p in sel)

            self.base.after_update = after
        try:
            self.base.step()
        finally:
            self.base.after_update = None
        for group in self.param_groups:
            group["lookahead_step"] += 1
            if group["lookahead_step"] % self.k == 0:
                rest = [p for p in group["params"] if id(p) not in done]
                if rest:
                    self.sync_tensors(rest)
        return loss
