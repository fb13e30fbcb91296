"""Lookahead (Zhang, Lucas, Hinton and Ba, NeurIPS 2019): k steps forward, 1 step back.

Problem: an optimizer's fast weights oscillate along high-curvature directions, and its result depends a lot
on its hyper-parameters. Fix: keep slow weights phi beside the fast weights theta that any inner optimizer A
updates; every k inner steps interpolate and restart the fast weights from the result (Algorithm 1):

    theta_{t,i} = theta_{t,i-1} + A(L, theta_{t,i-1}, d)        i = 1..k   (inner steps)
    phi_{t+1}   = phi_t + alpha (theta_{t,k} - phi_t)                      (slow update, alpha in [0, 1])
    theta_{t+1,0} = phi_{t+1}                                              (fast weights reset)

phi_0 = theta_0 (a copy taken when the Lookahead is built). The inner optimizer's state (momenta) is kept
across the reset, as in the paper's default.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import Optimizer

from tricklab.optim._wrapper import WrappedOptimizer, build_base


CHUNK_NUMEL = 1 << 18  # elements per run of the CPU slow-weight sync (1 MB per float32 array)


class Lookahead(WrappedOptimizer):
    """Lookahead over any optimizer: slow weights ``phi += alpha * (theta - phi)`` every ``k`` steps.

    ``Lookahead(optimizer_instance, k=5, alpha=0.5)`` wraps an optimizer; ``Lookahead(params, base="adam",
    lr=...)`` builds the inner one (``base``: registry name, optimizer class or instance; the remaining
    keyword arguments go to it). ``state_dict()`` holds the inner optimizer's state and the slow weights.
    """

    def __init__(
        self,
        params: Iterable[Any] | Optimizer | None = None,
        base: str | type[Optimizer] | Optimizer | None = None,
        k: int = 5,
        alpha: float = 0.5,
        foreach: bool = True,
        **kwargs: Any,
    ) -> None:
        if not (isinstance(k, int) and k >= 1):
            raise ValueError(f"lookahead k must be a positive integer, got {k!r}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"lookahead alpha must be in [0, 1], got {alpha!r}")
        if isinstance(params, Optimizer):
            if base is not None:
                raise TypeError("Lookahead: give either an optimizer instance or params with base=, not both")
            params, base = None, params
        if base is None:
            raise TypeError("Lookahead needs the inner optimizer: an instance, or params and base=")
        inner = build_base(params, base, kwargs, "Lookahead")
        super().__init__(inner, {"k": k, "alpha": alpha, "foreach": foreach})
        self.k, self.alpha, self.foreach = k, alpha, foreach
        for group in self.param_groups:
            self._init_group(group)

    def _init_group(self, group: dict[str, Any]) -> None:
        # the step counter lives in the group, so the inner optimizer's state_dict carries it on resume
        group.setdefault("lookahead_step", 0)
        for p in group["params"]:
            if "slow" not in self.state[p]:
                self.state[p]["slow"] = p.detach().clone()  # phi_0 = theta_0

    @torch.no_grad()
    def sync(self, group: dict[str, Any]) -> None:
        """The slow update: phi += alpha (theta - phi); theta = phi (for every parameter of the group)."""
        self.sync_tensors(list(group["params"]))

    @torch.no_grad()
    def sync_tensors(self, fast: list[torch.Tensor]) -> None:
        """The slow update of the given parameters (lerp then copy)."""
        slow = [self.state[p]["slow"] for p in fast]
        if not self.foreach:
            for s, p in zip(slow, fast):
                s.lerp_(p, self.alpha)
                p.copy_(s)
            return
        if fast and not fast[0].device.type == "cpu":
            torch._foreach_lerp_(slow, fast, self.alpha)
            torch._foreach_copy_(fast, slow)
            return
        # on the CPU, lerp then copy over runs of about CHUNK_NUMEL elements keeps each run in the cache between
        # the two ops (two passes over all tensors stream them from memory twice), with one multi-tensor call
        # per run instead of one Python call per tensor
        start, n = 0, 0
        for i, p in enumerate(fast):
            n += p.numel()
            if n >= CHUNK_NUMEL or i == len(fast) - 1:
                torch._foreach_lerp_(slow[start:i + 1], fast[start:i + 1], self.alpha)
                torch._foreach_copy_(fast[start:i + 1], slow[start:i + 1])
                start, n = i + 1, 0

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = self.base.step(closure)
        self._after_inner_step()
        return loss

    def _after_inner_step(self) -> None:
        for group in self.param_groups:
            group["lookahead_step"] += 1
            if group["lookahead_step"] % self.k == 0:
                self.sync(group)
