"""Shared machinery for optimizers that wrap another one (Lookahead, Ranger, SAM).

A wrapper must *share* the inner optimizer's parameter groups rather than copy them: a learning-rate
scheduler or the ``lr_schedule`` technique writes ``group["lr"]`` on the wrapper and the inner step must
see it. ``torch.optim.Optimizer.__init__`` builds its own group list, so the wrapper runs it on a
throwaway parameter (to get torch's hook dictionaries and step patching, whatever the torch version) and
then points ``param_groups`` at the inner optimizer's list through a property.

The wrapper's own per-parameter state (slow weights, saved weights) lives in ``self.state``; its
``state_dict`` nests the inner optimizer's (torch's format) beside its own, keyed by parameter index in
group order exactly as torch keys optimizer state, so it loads into a fresh wrapper over a copied model.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
from torch.optim import Optimizer


def resolve_base(base: Any) -> Any:
    """A registry name (``"adam"``) becomes the registered class; classes and instances pass through."""
    if isinstance(base, str):
        from tricklab.optim import OPTIMIZERS  # late: the registry module imports this one

        return OPTIMIZERS.get(base)
    return base


def build_base(params: Any, base: Any, kwargs: dict[str, Any], who: str) -> Optimizer:
    """The inner optimizer: ``base`` itself when it is an instance, else ``base(params, **kwargs)``."""
    base = resolve_base(base)
    if isinstance(base, Optimizer):
        if kwargs:
            raise TypeError(f"{who}: arguments {sorted(kwargs)} are for building the inner optimizer, but an "
                            f"optimizer instance was given")
        if params is not None:
            given = {id(p) for p in _flatten(params)}
            have = {id(p) for g in base.param_groups for p in g["params"]}
            if given != have:
                raise ValueError(f"{who}: params differ from the parameters of the given optimizer instance")
        return base
    if not (isinstance(base, type) and issubclass(base, Optimizer)):
        raise TypeError(f"{who}: base must be an optimizer class, instance or registry name, got {base!r}")
    if params is None:
        raise TypeError(f"{who}: params are required to build {base.__name__}")
    return base(params, **kwargs)


def _flatten(params: Any) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    for item in params:
        if isinstance(item, dict):
            ps = item["params"]
            out.extend([ps] if isinstance(ps, torch.Tensor) else list(ps))
        else:
            out.append(item)
    return out


class WrappedOptimizer(Optimizer):
    """Base class: an optimizer whose step delegates to ``self.base`` and whose groups are ``base``'s."""

    base: Optimizer

    def __init__(self, base: Optimizer, defaults: dict[str, Any]) -> None:
        # torch's __init__ on a throwaway parameter: sets hook dicts, patches step for profiling/hooks
        super().__init__([torch.zeros(1, requires_grad=True)], dict(defaults))
        self.__dict__.pop("_own_param_groups", None)
        self.__dict__["base"] = base
        self.defaults = {**base.defaults, **defaults}
        self.state = defaultdict(dict)

    # the group list is always the inner optimizer's (its load_state_dict replaces the list object)
    @property  # type: ignore[override]
    def param_groups(self) -> list[dict[str, Any]]:
        base = self.__dict__.get("base")
        return base.param_groups if base is not None else self.__dict__["_own_param_groups"]

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        base = self.__dict__.get("base")
        if base is not None:
            base.param_groups = value
        else:
            self.__dict__["_own_param_groups"] = value

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        base = self.__dict__.get("base")
        if base is None:  # during torch's __init__ (the throwaway parameter)
            super().add_param_group(param_group)
        else:
            base.add_param_group(param_group)
            self._init_group(base.param_groups[-1])

    def _init_group(self, group: dict[str, Any]) -> None:
        """Set up a new group's wrapper state (override)."""

    def _params(self) -> list[torch.Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        index = {id(p): i for i, p in enumerate(self._params())}
        own = {index[id(p)]: dict(s) for p, s in self.state.items() if id(p) in index and s}
        return {"base": self.base.state_dict(), "state": own}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        params = self._params()
        own = state_dict["state"]
        if any(int(i) >= len(params) for i in own):
            raise ValueError("the saved wrapper state does not match the current parameters")
        self.base.load_state_dict(state_dict["base"])
        self.state = defaultdict(dict)
        for i, s in own.items():
            p = params[int(i)]
            self.state[p] = {
                k: (v.to(device=p.device, dtype=p.dtype).clone() if isinstance(v, torch.Tensor)
                    and v.is_floating_point() else v)
                for k, v in s.items()
            }

    # torch's pickling keeps only defaults/state/param_groups; a wrapper also needs its inner optimizer
    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base!r})"
